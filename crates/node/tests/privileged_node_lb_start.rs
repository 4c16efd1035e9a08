//! Privileged (root): how `flowpin-node lb` starts, reloads and exits, each
//! trap of issue 20 reproduced in namespaces made by the test, against a
//! real etcd (`LocalEtcd`).
//!
//! - a metrics port in use: a clear error, nothing attached, nothing pinned;
//! - a second node on one pin_dir: refused while the first runs;
//! - `on_exit = "remove"`: SIGTERM and SIGINT leave no pin and no XDP program;
//! - config vs pins: a new xdp_mode / interface is attached again (maps and
//!   VIPs kept), a new ring_size is refused naming the field and the
//!   command, with nothing changed;
//! - SIGHUP says which fields it applied and which wait for a restart; a
//!   broken file counts a failed reload;
//! - native XDP_TX into a veth peer without XDP: the deployment warning and
//!   `flowpin_interface_tx_dropped_total` rising, logged.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowpin_bpf_progs::xdp_lb::XdpLb;
use flowpin_node::status::LbStatus;
use flowpin_registry::{
    BackendSpec, Proto, Registry, RegistryConfig, ServerId, Vip, VipFlags, VipSpec,
};
use flowpin_testing::{require_bpf, unique_name, NetNs, VethPair};

mod node_rig;
use node_rig::http_get;
use node_rig::lb::{mac, runtime, start_etcd, write_lb_toml, LbToml};

/// A node process with its stderr in a file.
struct Node {
    child: Option<Child>,
    log: PathBuf,
}

impl Node {
    fn spawn(config: &Path, log: &Path) -> Node {
        let f = std::fs::File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_flowpin-node"))
            .args(["lb", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("spawn flowpin-node lb");
        Node {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit on its own; its status.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let c = self.child.as_mut().expect("child");
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = c.try_wait().expect("try_wait") {
                self.child = None;
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "node still running:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&mut self, sig: nix::sys::signal::Signal) {
        let c = self.child.as_ref().expect("child");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig).expect("kill");
    }

    fn wait_log(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let l = self.log();
            if l.contains(needle) {
                return l;
            }
            assert!(Instant::now() < deadline, "no {needle:?} in the log:\n{l}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Removes the pins on every exit path.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = XdpLb::unpin(&self.0);
        // A node killed with SIGKILL leaves its (empty) lock directory.
        let _ = std::fs::remove_dir(flowpin_node::pin_lock::lock_path(&self.0));
    }
}

fn port_of(port_file: &Path) -> Option<u16> {
    std::fs::read_to_string(port_file)
        .ok()
        .and_then(|p| p.trim().parse().ok())
}

/// Waits for a status with revision ≥ `rev`.
fn wait_status(port_file: &Path, rev: i64) -> LbStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no status at revision {rev}");
        if let Some(body) = port_of(port_file).and_then(|p| http_get(p, "/status")) {
            let s: LbStatus = serde_json::from_str(&body).expect("status json");
            if s.revision >= rev {
                return s;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether `dev` in `ns` has an XDP program (any mode).
fn has_xdp(ns: &NetNs, dev: &str) -> bool {
    let out = ns
        .ip(&["-json", "link", "show", "dev", dev])
        .expect("ip link");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip json");
    v[0].get("xdp").is_some()
}

struct Lab {
    lbns: NetNs,
    rtr: NetNs,
    _veth: VethPair,
    dir: tempfile::TempDir,
    pins: Pins,
}

impl Lab {
    fn new() -> Lab {
        let lbns = NetNs::new("slb").expect("netns");
        let rtr = NetNs::new("srt").expect("netns");
        let veth = VethPair::new(&lbns, "eth0", &rtr, "r0").expect("veth");
        let pins = Pins(Path::new("/sys/fs/bpf").join(unique_name("node-start")));
        Lab {
            lbns,
            rtr,
            _veth: veth,
            dir: tempfile::tempdir().expect("tempdir"),
            pins,
        }
    }

    fn pin_dir(&self) -> &Path {
        &self.pins.0
    }

    fn port_file(&self) -> PathBuf {
        self.dir.path().join("port")
    }

    /// Writes `name.toml`: `lb` lines are appended to `[lb]`.
    fn config(&self, name: &str, endpoint: &str, listen: &str, lb: &str) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.toml"));
        write_lb_toml(
            &p,
            &LbToml {
                endpoint,
                prefix: &format!("/{}", unique_name("start")),
                lbns: &self.lbns,
                rtr: &self.rtr,
                pin_dir: self.pin_dir(),
                lb_lines: &format!(
                    "tunnel_src_v4 = \"10.200.0.0/16\"\nconn_table_shared = true\nlru_memory_mib = 1\nring_size = 4093\n{lb}"
                ),
                listen,
                port_file: &self.port_file(),
            },
        );
        p
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }
}

/// No etcd is needed to start: the node retries the registry while it runs.
const NO_ETCD: &str = "http://127.0.0.1:9";

#[test]
fn privileged_lb_metrics_port_in_use_attaches_nothing() {
    if !require_bpf("privileged_lb_metrics_port_in_use_attaches_nothing") {
        return;
    }
    let lab = Lab::new();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().expect("addr").to_string();
    let cfg = lab.config(
        "busy",
        NO_ETCD,
        &listen,
        "xdp_mode = \"generic\"\non_exit = \"remove\"",
    );
    let mut n = Node::spawn(&cfg, &lab.log("busy"));
    let st = n.wait_exit(Duration::from_secs(20));
    assert!(!st.success(), "must fail:\n{}", n.log());
    let log = n.log();
    assert!(
        log.contains(&format!("metrics.listen {listen}")) && log.contains("nothing was attached"),
        "{log}"
    );
    assert!(
        !lab.pin_dir().exists(),
        "pins made although the port was taken"
    );
    assert!(
        !has_xdp(&lab.lbns, "eth0"),
        "xdp attached although the port was taken"
    );
    // An interface that does not exist: the same, named.
    let cfg = lab.config("noif", NO_ETCD, "127.0.0.1:0", "").to_path_buf();
    let text = std::fs::read_to_string(&cfg)
        .expect("read")
        .replace("interface = \"eth0\"", "interface = \"nosuch0\"");
    std::fs::write(&cfg, text).expect("write");
    let mut n = Node::spawn(&cfg, &lab.log("noif"));
    assert!(!n.wait_exit(Duration::from_secs(20)).success());
    assert!(n.log().contains("lb.interface nosuch0"), "{}", n.log());
    assert!(!lab.pin_dir().exists());
}

#[test]
fn privileged_lb_second_node_on_one_pin_dir_is_refused_and_remove_holds() {
    if !require_bpf("privileged_lb_second_node_on_one_pin_dir_is_refused_and_remove_holds") {
        return;
    }
    let lab = Lab::new();
    let cfg = lab.config(
        "one",
        NO_ETCD,
        "127.0.0.1:0",
        "xdp_mode = \"generic\"\non_exit = \"remove\"",
    );
    let mut first = Node::spawn(&cfg, &lab.log("one"));
    wait_status(&lab.port_file(), 0);
    assert!(has_xdp(&lab.lbns, "eth0"));
    let cfg2 = lab.config("two", NO_ETCD, "127.0.0.1:0", "xdp_mode = \"generic\"");
    let mut second = Node::spawn(&cfg2, &lab.log("two"));
    assert!(!second.wait_exit(Duration::from_secs(20)).success());
    assert!(
        second.log().contains("in use by another `flowpin-node lb`"),
        "{}",
        second.log()
    );
    // The first one is untouched and still answers.
    assert!(first
        .child
        .as_mut()
        .expect("child")
        .try_wait()
        .expect("wait")
        .is_none());
    assert!(http_get(port_of(&lab.port_file()).expect("port"), "/status").is_some());
    // on_exit = "remove" on SIGTERM: no pin, no program.
    first.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        first.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        first.log()
    );
    assert!(!lab.pin_dir().exists(), "pins left:\n{}", first.log());
    assert!(!has_xdp(&lab.lbns, "eth0"), "xdp left attached");
    // The lock went with it: a new node starts; SIGINT removes too.
    std::fs::remove_file(lab.port_file()).expect("port file");
    let mut third = Node::spawn(&cfg, &lab.log("three"));
    wait_status(&lab.port_file(), 0);
    assert!(has_xdp(&lab.lbns, "eth0"));
    third.signal(nix::sys::signal::Signal::SIGINT);
    assert!(
        third.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        third.log()
    );
    assert!(!lab.pin_dir().exists());
    assert!(!has_xdp(&lab.lbns, "eth0"));
}

#[test]
fn privileged_lb_config_vs_pins_sighup_and_tx_drops() {
    if !require_bpf("privileged_lb_config_vs_pins_sighup_and_tx_drops") {
        return;
    }
    let rt = runtime();
    let etcd = start_etcd(&rt);
    let lab = Lab::new();
    let ep = etcd.endpoint();
    let generic = lab.config("generic", &ep, "127.0.0.1:0", "xdp_mode = \"generic\"");
    let prefix = std::fs::read_to_string(&generic)
        .expect("read")
        .lines()
        .find_map(|l| {
            l.strip_prefix("prefix = \"")
                .map(|p| p.trim_end_matches('"').to_string())
        })
        .expect("prefix");
    let reg = rt
        .block_on(Registry::connect(RegistryConfig::new(
            [ep.clone()],
            &prefix,
        )))
        .expect("registry");
    let vip = Vip::new("10.100.0.1".parse().expect("ip"), 8080, Proto::Udp);
    // The revision of the last write: what a node that applied it reports
    // (a new watch's revision also moves with writes outside `routing/`).
    let (host, rev) = rt
        .block_on(async {
            reg.put_vip(&VipSpec::new(vip, VipFlags::NONE)).await?;
            let h = reg.register(Duration::from_secs(30)).await?;
            let rev = h
                .add_backend(
                    &vip,
                    &BackendSpec::new("10.2.1.2".parse().expect("ip"), 100, ServerId::new(1001)),
                )
                .await?;
            Ok::<_, flowpin_registry::Error>((h, rev))
        })
        .expect("registry writes");
    let vip_name = "10.100.0.1:8080/udp";

    // 1. Generic; then SIGHUP with a runtime field and a restart field.
    let mut n = Node::spawn(&generic, &lab.log("generic"));
    let s = wait_status(&lab.port_file(), rev);
    assert_eq!(s.xdp_mode, "generic");
    let digest = s.vips[vip_name].digest;
    let port = port_of(&lab.port_file()).expect("port");
    // Metric names and labels, exactly.
    let m = http_get(port, "/metrics").expect("metrics");
    for line in [
        "flowpin_lb_vip_packets_total{vip_addr=\"10.100.0.1\",vip_port=\"8080\",proto=\"udp\"} 0",
        "flowpin_lb_xdp_mode{interface=\"eth0\",mode=\"generic\"} 1",
        &format!("flowpin_build_info{{version=\"{}\",role=\"lb\"}} 1", env!("CARGO_PKG_VERSION")),
        &format!("flowpin_lb_ring_digest_info{{vip_addr=\"10.100.0.1\",vip_port=\"8080\",proto=\"udp\",digest=\"{digest}\"}} 1"),
        "flowpin_registry_change_to_map_write_seconds_count 0",
        "flowpin_interface_tx_dropped_total{interface=\"eth0\"} 0",
    ] {
        assert!(m.lines().any(|l| l == line), "no line {line:?}:\n{m}");
    }
    for name in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(m.lines().any(|l| l.starts_with(name)), "no {name}:\n{m}");
    }
    assert_eq!(m.matches("# EOF").count(), 1, "{m}");
    assert_eq!(http_get(port, "/readyz").as_deref(), Some("ready\n"));
    assert_eq!(http_get(port, "/healthz").as_deref(), Some("ok\n"));
    // A change while the node runs is a propagation time.
    let rev2 = rt
        .block_on(host.add_backend(
            &vip,
            &BackendSpec::new("10.2.2.2".parse().expect("ip"), 100, ServerId::new(1002)),
        ))
        .expect("registry change");
    let s = wait_status(&lab.port_file(), rev2);
    let digest = s.vips[vip_name].digest;
    let m = http_get(port, "/metrics").expect("metrics");
    assert_eq!(
        metric(&m, "flowpin_registry_change_to_map_write_seconds_count "),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        m.matches("flowpin_lb_ring_digest_info{").count(),
        1,
        "one digest series per VIP:\n{m}"
    );
    let text = std::fs::read_to_string(&generic).expect("read");
    std::fs::write(
        &generic,
        text.replace("10.200.0.0/16", "10.201.0.0/16")
            .replace("xdp_mode = \"generic\"", "xdp_mode = \"native\""),
    )
    .expect("write");
    n.signal(nix::sys::signal::Signal::SIGHUP);
    let log = n.wait_log("SIGHUP: configuration reloaded", Duration::from_secs(10));
    assert!(
        log.contains(
            r#"applied=["lb.tunnel_src_v4"] on_restart=["lb.xdp_mode"] needs_new_pins=[]"#
        ),
        "{log}"
    );
    // A broken file: refused, counted.
    std::fs::write(&generic, "not toml [").expect("write");
    n.signal(nix::sys::signal::Signal::SIGHUP);
    n.wait_log("SIGHUP: new config rejected", Duration::from_secs(10));
    let port = port_of(&lab.port_file()).expect("port");
    let m = http_get(port, "/metrics").expect("metrics");
    assert_eq!(
        metric(&m, "flowpin_node_config_reloads_total{result=\"success\"} "),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "flowpin_node_config_reloads_total{result=\"failure\"} "),
        Some(1.0),
        "{m}"
    );
    n.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(n.wait_exit(Duration::from_secs(20)).success());
    assert!(lab.pin_dir().join("meta").exists(), "on_exit = keep");

    // 2. A new ring size: refused, named, nothing changed.
    std::fs::remove_file(lab.port_file()).expect("port file");
    let ring = lab.config("ring", &ep, "127.0.0.1:0", "xdp_mode = \"generic\"");
    let text = std::fs::read_to_string(&ring)
        .expect("read")
        .replace("4093", "1009");
    let text = text.replace(
        &text
            .lines()
            .find(|l| l.starts_with("prefix"))
            .expect("prefix")
            .to_string(),
        &format!("prefix = \"{prefix}\""),
    );
    std::fs::write(&ring, text).expect("write");
    let mut n = Node::spawn(&ring, &lab.log("ring"));
    assert!(!n.wait_exit(Duration::from_secs(20)).success());
    let log = n.log();
    assert!(
        log.contains("lb.ring_size: config 1009, pinned data path 4093")
            && log.contains(&format!("rm -r {}", lab.pin_dir().display())),
        "{log}"
    );
    assert!(
        has_xdp(&lab.lbns, "eth0"),
        "the refused start detached the data path"
    );

    // 3. Native: attached again as configured, VIP state kept; the veth peer
    // has no XDP program, so XDP_TX drops and the node says so.
    let native = lab.config("native", &ep, "127.0.0.1:0", "xdp_mode = \"native\"");
    let text = std::fs::read_to_string(&native).expect("read");
    let text = text.replace(
        &text
            .lines()
            .find(|l| l.starts_with("prefix"))
            .expect("prefix")
            .to_string(),
        &format!("prefix = \"{prefix}\""),
    );
    std::fs::write(&native, text).expect("write");
    let n = Node::spawn(&native, &lab.log("native"));
    let s = wait_status(&lab.port_file(), rev2);
    assert_eq!(s.xdp_mode, "native", "{}", n.log());
    assert!(s.reopened);
    assert_eq!(
        s.vips[vip_name].digest, digest,
        "VIP state lost by the re-attach"
    );
    let log = n.log();
    assert!(
        log.contains("lb.xdp_mode: config native, pinned link generic"),
        "{log}"
    );
    assert!(
        log.contains("veth_peer_without_xdp") && log.contains("veth peer r0"),
        "{log}"
    );
    lab.lbns
        .ip(&["addr", "add", "10.0.0.1/24", "dev", "eth0"])
        .expect("addr");
    lab.rtr
        .ip(&["addr", "add", "10.0.0.2/24", "dev", "r0"])
        .expect("addr");
    lab.rtr
        .ip(&["route", "add", "10.100.0.0/16", "via", "10.0.0.1"])
        .expect("route");
    lab.rtr
        .run(|| {
            let s = UdpSocket::bind("10.0.0.2:0").expect("udp");
            for _ in 0..50 {
                let _ = s.send_to(b"hello", "10.100.0.1:8080");
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .expect("send in netns");
    let port = port_of(&lab.port_file()).expect("port");
    let m = http_get(port, "/metrics").expect("metrics");
    let dropped = metric(
        &m,
        "flowpin_interface_tx_dropped_total{interface=\"eth0\"} ",
    )
    .unwrap_or(0.0);
    assert!(dropped >= 40.0, "tx drops not exported ({dropped}):\n{m}");
    assert_eq!(
        metric(
            &m,
            "flowpin_node_deployment_warning{check=\"veth_peer_without_xdp\"} "
        ),
        Some(1.0),
        "{m}"
    );
    let log = n.wait_log(
        "frames on transmit while xdp_lb handled",
        Duration::from_secs(12),
    );
    assert!(log.contains("eth0 dropped "), "{log}");
    drop(n);

    // 4. Another interface: attached there instead, VIP state kept.
    let _veth1 = VethPair::new(&lab.lbns, "eth1", &lab.rtr, "r1").expect("veth");
    std::fs::remove_file(lab.port_file()).expect("port file");
    let text = std::fs::read_to_string(&native)
        .expect("read")
        .replace("interface = \"eth0\"", "interface = \"eth1\"")
        .replace(&mac(&lab.lbns, "eth0"), &mac(&lab.lbns, "eth1"))
        .replace("xdp_mode = \"native\"", "xdp_mode = \"generic\"");
    std::fs::write(&native, text).expect("write");
    let n = Node::spawn(&native, &lab.log("eth1"));
    let s = wait_status(&lab.port_file(), rev2);
    assert_eq!(
        s.vips[vip_name].digest, digest,
        "VIP state lost by the move"
    );
    assert_eq!(s.xdp_mode, "generic");
    assert!(
        n.log()
            .contains("lb.interface/lb.netns: the pinned link is on ifindex"),
        "{}",
        n.log()
    );
    assert!(has_xdp(&lab.lbns, "eth1"));
    assert!(
        !has_xdp(&lab.lbns, "eth0"),
        "still attached to the old interface"
    );
    drop(n);
    drop(host);
}

/// A config that follows `file` instead of etcd.
fn file_config(lab: &Lab, name: &str, file: &Path) -> PathBuf {
    let p = lab.config(name, NO_ETCD, "127.0.0.1:0", "xdp_mode = \"generic\"");
    let text: String = std::fs::read_to_string(&p)
        .expect("read")
        .lines()
        .filter(|l| !l.starts_with("endpoints") && !l.starts_with("prefix"))
        .map(|l| {
            if l == "[registry]" {
                format!("[registry]\nfile = \"{}\"\n", file.display())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&p, text).expect("write");
    p
}

const VIPS: &str = r#"
[[vips]]
addr = "10.100.0.1"
port = 8080
server_id = true
[[vips.backends]]
addr = "10.2.1.2"
server_id = 1001
[[vips.backends]]
addr = "10.2.2.2"
server_id = 1002
"#;

#[test]
fn privileged_lb_follows_a_registry_file_without_etcd() {
    if !require_bpf("privileged_lb_follows_a_registry_file_without_etcd") {
        return;
    }
    let lab = Lab::new();
    let vips = lab.dir.path().join("vips.toml");
    std::fs::write(&vips, VIPS).expect("write");
    let cfg = file_config(&lab, "file", &vips);
    let n = Node::spawn(&cfg, &lab.log("file"));
    let vip_name = "10.100.0.1:8080/tcp";
    let s = wait_status(&lab.port_file(), 1);
    assert_eq!(s.vips[vip_name].backends, 2, "{s:?}\n{}", n.log());
    assert!(s.registry_connected);
    // Edited: the maps follow.
    let more = format!("{VIPS}[[vips.backends]]\naddr = \"10.2.3.2\"\nstate = \"draining\"\n");
    std::fs::write(&vips, &more).expect("write");
    let s = wait_status(&lab.port_file(), 2);
    assert_eq!(s.vips[vip_name].backends, 3, "{s:?}");
    assert_eq!(s.vips[vip_name].draining, 1, "{s:?}");
    {
        let lb = XdpLb::open_pinned(lab.pin_dir()).expect("open_pinned");
        let vip = flowpin_registry::Vip::new("10.100.0.1".parse().expect("ip"), 8080, Proto::Tcp);
        assert_eq!(lb.backends(&vip).expect("VIP").len(), 3);
    }
    // Broken: refused with the reason, the last good state kept.
    std::fs::write(&vips, more.replace("server_id = 1002", "server_id = 1001")).expect("write");
    let log = n.wait_log("registry file refused", Duration::from_secs(10));
    assert!(log.contains("server_id 1001 is also 10.2.1.2's"), "{log}");
    std::thread::sleep(Duration::from_millis(1500));
    let s = wait_status(&lab.port_file(), 2);
    assert_eq!((s.revision, s.vips[vip_name].backends), (2, 3), "{s:?}");
    drop(n);
    // A broken file at start: the node does not start.
    std::fs::remove_file(lab.port_file()).expect("port file");
    let mut n = Node::spawn(&cfg, &lab.log("file2"));
    assert!(!n.wait_exit(Duration::from_secs(20)).success());
    assert!(
        n.log()
            .contains(&format!("registry.file {}", vips.display())),
        "{}",
        n.log()
    );
}
