//! The setup the LB node tests share: a runtime, a local etcd and a
//! registry under a fresh prefix, the LB and router namespaces joined by a
//! veth, an `lb.toml` for them, and the cleanup of a node and its pins.

use std::path::{Path, PathBuf};
use std::process::Child;

use flowpin_bpf_progs::xdp_lb::XdpLb;
use flowpin_registry::local_etcd::LocalEtcd;
use flowpin_registry::{Registry, RegistryConfig};
use flowpin_testing::{unique_name, NetNs, VethPair};

/// A multi-thread runtime with one worker (for the registry client).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A local etcd (as root a missing etcd is a failure).
pub(crate) fn start_etcd(rt: &tokio::runtime::Runtime) -> LocalEtcd {
    rt.block_on(LocalEtcd::start())
        .expect("etcd (as root a missing etcd is a failure: apt-get install etcd-server)")
}

/// A registry client on `endpoint` under `prefix`.
pub(crate) fn connect(rt: &tokio::runtime::Runtime, endpoint: String, prefix: &str) -> Registry {
    rt.block_on(Registry::connect(RegistryConfig::new([endpoint], prefix)))
        .expect("registry")
}

/// The MAC address of `dev` in `ns`, as `ip` prints it.
pub(crate) fn mac(ns: &NetNs, dev: &str) -> String {
    let out = ns
        .ip(&["-json", "link", "show", "dev", dev])
        .expect("ip link");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip json");
    v[0]["address"].as_str().expect("mac").to_string()
}

/// What an `lb.toml` of the tests says.
pub(crate) struct LbToml<'a> {
    /// The etcd endpoint.
    pub(crate) endpoint: &'a str,
    /// The registry prefix.
    pub(crate) prefix: &'a str,
    /// The LB's namespace (its `eth0` is the interface).
    pub(crate) lbns: &'a NetNs,
    /// The router's namespace (its `r0`'s MAC is the next hop).
    pub(crate) rtr: &'a NetNs,
    /// `lb.pin_dir`.
    pub(crate) pin_dir: &'a Path,
    /// Appended to `[lb]`.
    pub(crate) lb_lines: &'a str,
    /// `metrics.listen`.
    pub(crate) listen: &'a str,
    /// `metrics.port_file`.
    pub(crate) port_file: &'a Path,
}

/// Writes `t` as TOML to `path`.
pub(crate) fn write_lb_toml(path: &Path, t: &LbToml<'_>) {
    std::fs::write(
        path,
        format!(
            r#"
[registry]
endpoints = ["{ep}"]
prefix = "{prefix}"

[lb]
interface = "eth0"
netns = "{ns}"
pin_dir = "{pins}"
local_mac = "{lmac}"
next_hop_mac = "{rmac}"
{lb_lines}

[metrics]
listen = "{listen}"
port_file = "{pf}"
"#,
            ep = t.endpoint,
            prefix = t.prefix,
            ns = t.lbns.path().display(),
            pins = t.pin_dir.display(),
            lmac = mac(t.lbns, "eth0"),
            rmac = mac(t.rtr, "r0"),
            lb_lines = t.lb_lines,
            listen = t.listen,
            pf = t.port_file.display(),
        ),
    )
    .expect("write config");
}

/// Kills the node (if started) and removes the pins on every exit path.
pub(crate) struct LbCleanup {
    pub(crate) child: Option<Child>,
    pub(crate) pin_dir: PathBuf,
}

impl LbCleanup {
    /// Nothing started yet; `pin_dir` is removed at the end.
    pub(crate) fn new(pin_dir: &Path) -> LbCleanup {
        LbCleanup {
            child: None,
            pin_dir: pin_dir.to_path_buf(),
        }
    }
}

impl Drop for LbCleanup {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = XdpLb::unpin(&self.pin_dir);
        // A node killed with SIGKILL leaves its (empty) lock directory.
        let _ = std::fs::remove_dir(flowpin_node::pin_lock::lock_path(&self.pin_dir));
    }
}

/// An LB node's test setup. Fields are dropped in this order: the files,
/// the veth, the namespaces, the registry client, etcd, the runtime.
pub(crate) struct LbLab {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) veth: VethPair,
    pub(crate) rtr: NetNs,
    pub(crate) lbns: NetNs,
    pub(crate) reg: Registry,
    pub(crate) prefix: String,
    pub(crate) etcd: LocalEtcd,
    pub(crate) rt: tokio::runtime::Runtime,
    /// `/sys/fs/bpf/<unique>` (not created).
    pub(crate) pin_dir: PathBuf,
    /// Where the node writes its metrics port.
    pub(crate) port_file: PathBuf,
    /// `lb.toml`: the registry, `eth0` in the LB namespace, `r0`'s MAC
    /// as next hop, `lb_lines` appended to `[lb]`, metrics on a free port.
    pub(crate) config: PathBuf,
}

impl LbLab {
    /// Starts etcd, connects, makes the namespaces and writes `lb.toml`.
    /// `tags` (each made unique): the registry prefix, the LB's namespace,
    /// the router's namespace, the pin directory under `/sys/fs/bpf`.
    pub(crate) fn new(tags: [&str; 4], lb_lines: &str) -> LbLab {
        let [prefix_tag, lbns_tag, rtr_tag, pins_tag] = tags;
        let rt = runtime();
        let etcd = start_etcd(&rt);
        let prefix = format!("/{}", unique_name(prefix_tag));
        let reg = connect(&rt, etcd.endpoint(), &prefix);
        let lbns = NetNs::new(lbns_tag).expect("netns");
        let rtr = NetNs::new(rtr_tag).expect("netns");
        let veth = VethPair::new(&lbns, "eth0", &rtr, "r0").expect("veth");
        let dir = tempfile::tempdir().expect("tempdir");
        let pin_dir = Path::new("/sys/fs/bpf").join(unique_name(pins_tag));
        let port_file = dir.path().join("port");
        let config = dir.path().join("lb.toml");
        write_lb_toml(
            &config,
            &LbToml {
                endpoint: &etcd.endpoint(),
                prefix: &prefix,
                lbns: &lbns,
                rtr: &rtr,
                pin_dir: &pin_dir,
                lb_lines,
                listen: "127.0.0.1:0",
                port_file: &port_file,
            },
        );
        LbLab {
            dir,
            veth,
            rtr,
            lbns,
            reg,
            prefix,
            etcd,
            rt,
            pin_dir,
            port_file,
            config,
        }
    }
}
