//! The fleet section of the lab: the data path run by `flowpin-node`
//! processes on the etcd registry, the registry as the only source of truth.
//!
//! A real etcd (`LocalEtcd`, temporary data directory removed on exit) in
//! its own network namespace, reached from the root namespace, where the
//! `flowpin-node` processes run, over a veth pair on a private /30 (the
//! lab's one topology builder, `topo.rs`, makes it with the rest), the
//! lab's network with **3** LB hosts behind the router's ECMP,
//! each running a `flowpin-node lb` process (pinned `xdp_lb`, `on_exit = "keep"`),
//! 5 backend hosts, each in its own namespace and cgroup with the lab's TCP
//! server of long-lived streams and a `flowpin-node backend` process (xdp_decap,
//! sock_ops server role with its allocated server_id, lease, drain on
//! SIGTERM; its `xdp_decap` and sock_ops pinned, so a restarted or upgraded
//! agent reopens them), and the clients with the sock_ops client role run
//! by a `flowpin-node client` process (pinned too).
//!
//! It measures:
//! - `convergence_ms`: an etcd change (drain / undrain / add / remove of one
//!   of 100 synthetic backends of a second VIP) until every LB's ring digest
//!   (its `/status`, [`flowpin_node::status::LbStatus`]) matches at the new
//!   revision, over 24 changes;
//! - `lb_idle_cpu_percent`: CPU of one idle `flowpin-node lb` from `/proc/<pid>/stat`;
//! - the health-check scenarios (`health.rs`, issue 21): an HTTP check on
//!   the VIP (1 s × fall 3, set for these scenarios only) while a backend's
//!   service hangs, closes its port, recovers, or one LB's path to it is cut;
//! - `health_probe_cost` (`health_cost.rs`, with the health rows): what
//!   probing 100 backends × 3 VIPs at 1 s costs each LB node, % of a core;
//! - the traffic scenarios (`traffic.rs`), each with and without server_id
//!   (the VIP's `server_id` flag in the registry), counting broken
//!   connections to healthy backends and whether all digests agree at the end.

mod agent;
mod health;
mod health_cost;
mod node_bin;
mod traffic;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowpin_bpf_progs::xdp_lb::XdpLb;
use flowpin_node::status::{LbStatus, RingDigest};
use flowpin_registry::local_etcd::{LocalEtcd, LocalEtcdOptions};
use flowpin_registry::{
    BackendSpec, BackendState, Proto, Registry, RegistryConfig, ServerId, Vip, VipFlags, VipSpec,
};
use flowpin_testing::unique_name;
use serde::Serialize;

use crate::backend::BackendProcess;
use crate::hosts::Cgroups;
use crate::run::Coverage;
use crate::topo::{self, mac_text, Topology};
use crate::{check_interrupted, pause, Created};
use flowpin_testing::CgroupMembership;

pub(crate) use node_bin::node_binary;

pub(crate) use traffic::{print_table, FleetScenario};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// LB nodes in the fleet.
pub(crate) const LBS: usize = 3;
/// Synthetic backends registered for the convergence measurement.
const SYNTH_BACKENDS: usize = 100;
/// Registry changes measured.
const CHANGES: usize = 24;
/// Lease TTL of the `flowpin-node backend` processes.
pub(crate) const LEASE_TTL_SECS: u64 = 3;
/// The VIP of the convergence measurement (synthetic backends only).
const SYNTH_VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 2);

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
}

/// What the fleet section reports.
#[derive(Debug, Serialize)]
pub(crate) struct FleetReport {
    pub(crate) convergence_ms: Percentiles,
    pub(crate) convergence_changes: usize,
    /// Digests agreed at the end of the convergence measurement.
    pub(crate) convergence_digests_agree: bool,
    pub(crate) lb_idle_cpu_percent: f64,
    pub(crate) lb_idle_secs: f64,
    /// What health probing costs each LB node (`health_cost.rs`), with the
    /// health rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) health_probe_cost: Option<health_cost::ProbeCost>,
    pub(crate) scenarios: Vec<FleetScenario>,
}

/// Sets the child's parent-death signal to SIGKILL: a node process never
/// outlives the lab, even if the lab itself is killed.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A `flowpin-node` process (lb or backend) with its config and log; killed on drop.
pub(crate) struct NodeProc {
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    role: &'static str,
}

impl NodeProc {
    fn spawn(
        node: &Path,
        role: &'static str,
        config: PathBuf,
        log: PathBuf,
        created: &mut Created,
    ) -> Result<Self, Error> {
        let logf = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut cmd = Command::new(node);
        cmd.args([role, "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf);
        die_with_parent(&mut cmd);
        let child = cmd.spawn()?;
        created.pids.push(child.id());
        Ok(NodeProc {
            child: Some(child),
            config,
            log,
            role,
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `sig` and waits up to `limit` for the exit; SIGKILL after that.
    /// Returns whether it exited successfully on its own.
    fn stop(&mut self, sig: nix::sys::signal::Signal, limit: Duration) -> bool {
        self.signal(sig);
        self.wait_exit(limit)
    }

    /// Sends `sig`.
    pub(crate) fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Waits up to `limit` for the exit, SIGKILL after that; whether it
    /// exited successfully on its own.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let l: Vec<&str> = t.lines().collect();
        l[l.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `flowpin-node lb` process, its pins and its HTTP port; unpinned on drop.
pub(crate) struct LbNode {
    proc_: NodeProc,
    pin_dir: PathBuf,
    port_file: PathBuf,
    port: u16,
}

impl Drop for LbNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.proc_.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = XdpLb::unpin(&self.pin_dir);
        // The node's lock directory beside the pins (one node per pin_dir).
        let _ = std::fs::remove_dir(flowpin_node::pin_lock::lock_path(&self.pin_dir));
    }
}

impl LbNode {
    /// (Re)starts the process and waits for its HTTP port.
    fn start(&mut self, node: &Path, created: &mut Created) -> Result<(), Error> {
        let _ = std::fs::remove_file(&self.port_file);
        self.proc_ = NodeProc::spawn(
            node,
            "lb",
            self.proc_.config.clone(),
            self.proc_.log.clone(),
            created,
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        self.port = loop {
            if let Some(p) = std::fs::read_to_string(&self.port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break p;
            }
            if Instant::now() > deadline || !self.proc_.running() {
                return Err(format!(
                    "flowpin-node lb did not start; its log:\n{}",
                    self.proc_.log_tail()
                )
                .into());
            }
            check_interrupted()?;
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(())
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// The LB's `/status` (`None`: it did not answer, or not with an `LbStatus`).
pub(crate) fn status(port: u16) -> Option<LbStatus> {
    serde_json::from_str(&http_get(port, "/status")?).ok()
}

/// Packets routed by server_id on the LB (its `/metrics`).
fn sid_routed(port: u16) -> u64 {
    http_get(port, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("flowpin_lb_server_id_total{") && l.contains("route=\"routed\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// The growth of per-LB counters from `before` to `now`; a counter that
/// went down was reset (an LB replaced with its pins removed), so its whole
/// value is new. Summing first and subtracting would hide a replaced LB's
/// new packets behind the count it lost.
fn sid_routed_delta(before: &[u64], now: &[u64]) -> u64 {
    now.iter()
        .enumerate()
        .map(|(i, n)| match before.get(i) {
            Some(b) if n >= b => n - b,
            _ => *n,
        })
        .sum()
}

fn vip_name(addr: Ipv4Addr) -> String {
    format!("{addr}:{}/tcp", topo::VIP_PORT)
}

/// `(revision, digest of the VIP)` of every LB, once all answered.
fn digests(lbs: &[LbNode], vip: &str) -> Option<Vec<(i64, RingDigest)>> {
    lbs.iter()
        .map(|n| {
            let s = status(n.port)?;
            Some((s.revision, s.vips.get(vip)?.digest))
        })
        .collect()
}

/// Every LB answers with one digest for `vip`.
pub(crate) fn digests_agree(lbs: &[LbNode], vip: &str) -> bool {
    digests(lbs, vip).is_some_and(|d| d.windows(2).all(|w| w[0].1 == w[1].1))
}

/// Waits until every LB is at `rev` or later with one digest; returns when.
fn wait_agree(lbs: &[LbNode], vip: &str, rev: i64, limit: Duration) -> Result<Instant, Error> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(d) = digests(lbs, vip) {
            if d.iter().all(|(r, _)| *r >= rev) && d.windows(2).all(|w| w[0].1 == w[1].1) {
                return Ok(Instant::now());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "LBs did not agree on revision {rev} within {limit:?}: {:?}",
                digests(lbs, vip)
            )
            .into());
        }
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn cpu_ticks(pid: u32) -> Result<u64, Error> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at state.
    let rest = s.rsplit_once(')').ok_or("bad /proc/pid/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    Ok(f.get(11).ok_or("utime")?.parse::<u64>()? + f.get(12).ok_or("stime")?.parse::<u64>()?)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) fn progress(msg: impl std::fmt::Display) {
    crate::progress(format!("[fleet] {msg}"));
}

/// One backend host: the lab's TCP server in its namespace and cgroup, and
/// its `flowpin-node backend` process.
pub(crate) struct BackendHost {
    pub(crate) server: Option<BackendProcess>,
    pub(crate) node: Option<NodeProc>,
    config: PathBuf,
    log: PathBuf,
    /// The agent's pins (`decap/`, `sockops/`).
    pin_dir: PathBuf,
    /// The agent's metrics port file.
    port_file: PathBuf,
}

/// Everything the fleet runs. Field order is drop order: processes first,
/// then etcd, then the client's cgroup membership and programs, cgroups,
/// namespaces.
pub(crate) struct Fleet {
    pub(crate) lbs: Vec<LbNode>,
    pub(crate) backends: Vec<BackendHost>,
    pub(crate) reg: Registry,
    pub(crate) etcd: LocalEtcd,
    pub(crate) rt: tokio::runtime::Runtime,
    /// `flowpin-node client` on the clients' cgroup.
    pub(crate) client: agent::ClientNode,
    membership: Option<CgroupMembership>,
    cgroups: Cgroups,
    pub(crate) topo: Topology,
    node: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.lbs.clear();
        for b in &mut self.backends {
            b.node = None;
            b.server = None;
            agent::unpin_all(&b.pin_dir);
        }
        self.etcd.kill();
        if let Some(mut c) = self.client.proc_.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.membership = None;
    }
}

impl Fleet {
    fn build(node: PathBuf, created: &mut Created) -> Result<Fleet, Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        progress("namespaces: client, router, 3 LB hosts, 5 backend hosts, etcd's (over a veth on a private /30)");
        let topo = Topology::build(LBS, true)?;
        created.netns.extend(topo.netns_paths());
        topo.tune_client_for_tcp()?;
        let etcd_ns = topo
            .etcd
            .as_ref()
            .ok_or("the topology has no etcd namespace")?;
        progress("etcd in its own namespace (temporary data directory)");
        let etcd = rt.block_on(LocalEtcd::start_with(LocalEtcdOptions::in_netns(
            etcd_ns.ns.name(),
            etcd_ns.addr,
        )))?;
        progress(format!("etcd serves on {}", etcd.endpoint()));
        let prefix = format!("/{}", unique_name("fleet"));
        let reg = rt.block_on(Registry::connect(RegistryConfig::new(
            [etcd.endpoint()],
            &prefix,
        )))?;
        rt.block_on(reg.put_vip(&VipSpec::new(
            Vip::new(topo::VIP.into(), topo::VIP_PORT, Proto::Tcp),
            VipFlags::SERVER_ID,
        )))?;
        let tmp = tempfile::tempdir()?;

        // Node processes start before the lab joins the client cgroup; the
        // ones restarted later are in it, and are gone before it is removed.
        progress("3 flowpin-node lb processes (pinned xdp_lb, on_exit = keep)");
        let mut lbs = Vec::new();
        for i in 0..LBS {
            let pin_dir =
                Path::new("/sys/fs/bpf").join(unique_name(&format!("fleet-lab-lb{}", i + 1)));
            let port_file = tmp.path().join(format!("lb{}.port", i + 1));
            let config = tmp.path().join(format!("lb{}.toml", i + 1));
            std::fs::write(
                &config,
                format!(
                    "[registry]\nendpoints = [\"{ep}\"]\nprefix = \"{prefix}\"\n\n[lb]\ninterface = \"{ifc}\"\nnetns = \"{ns}\"\npin_dir = \"{pins}\"\nlocal_mac = \"{l}\"\nnext_hop_mac = \"{r}\"\ntunnel_src_v4 = \"10.{t}.0.0/16\"\nconn_table_shared = true\nlru_memory_mib = 4\non_exit = \"keep\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\nport_file = \"{pf}\"\n",
                    ep = etcd.endpoint(),
                    ifc = topo::LB_IF,
                    ns = topo.lbs[i].path().display(),
                    pins = pin_dir.display(),
                    l = mac_text(topo.lb_mac[i]),
                    r = mac_text(topo.router_mac_to_lb[i]),
                    t = 200 + i,
                    pf = port_file.display(),
                ),
            )?;
            let log = tmp.path().join(format!("lb{}.log", i + 1));
            let mut n = LbNode {
                proc_: NodeProc {
                    child: None,
                    config,
                    log,
                    role: "lb",
                },
                pin_dir,
                port_file,
                port: 0,
            };
            n.start(&node, created)?;
            lbs.push(n);
        }

        progress("cgroups: one per backend host, one for the clients (sock_ops client role)");
        let cgroups = Cgroups::build("f", created)?;
        let mut backends = Vec::new();
        for (j, cg) in cgroups.backends.iter().enumerate() {
            let config = tmp.path().join(format!("be{}.toml", j + 1));
            let pin_dir = agent::pin_dir(&format!("be{}", j + 1));
            let port_file = tmp.path().join(format!("be{}.port", j + 1));
            std::fs::write(
                &config,
                format!(
                    "[registry]\nendpoints = [\"{ep}\"]\nprefix = \"{prefix}\"\n\n[backend]\nhost = \"be{h}.fleet-lab\"\naddress = \"{a}\"\ninterface = \"{ifc}\"\nnetns = \"{ns}\"\ncgroup = \"{cg}\"\nlease_ttl_secs = {LEASE_TTL_SECS}\ndrain_timeout_secs = 10\npin_dir = \"{pins}\"\nvips = [{{ addr = \"{vip}\", port = {port} }}]\n\n[metrics]\nlisten = \"127.0.0.1:0\"\nport_file = \"{pf}\"\n",
                    pins = pin_dir.display(),
                    pf = port_file.display(),
                    ep = etcd.endpoint(),
                    h = j + 1,
                    a = topo::backend_addr(j),
                    ifc = topo::BE_IF,
                    ns = topo.backends[j].path().display(),
                    cg = cg.path().display(),
                    vip = topo::VIP,
                    port = topo::VIP_PORT,
                ),
            )?;
            backends.push(BackendHost {
                server: None,
                node: None,
                config,
                log: tmp.path().join(format!("be{}.log", j + 1)),
                pin_dir,
                port_file,
            });
        }
        progress("flowpin-node client: the sock_ops client role (pinned) on the clients' cgroup");
        let mut client = agent::ClientNode::new(tmp.path(), cgroups.client.path())?;
        client.start(&node, created)?;
        let mut fleet = Fleet {
            lbs,
            backends,
            reg,
            etcd,
            rt,
            client,
            membership: None,
            cgroups,
            topo,
            node,
            _tmp: tmp,
        };
        fleet.membership = Some(CgroupMembership::join(&fleet.cgroups.client)?);
        Ok(fleet)
    }

    /// Starts backend `j`'s TCP server if it is not running.
    pub(crate) fn start_server(&mut self, j: usize, created: &mut Created) -> Result<(), Error> {
        if self.backends[j].server.is_none() {
            let p = BackendProcess::start_server_only(
                j,
                &self.topo.backends[j],
                self.cgroups.backends[j].path(),
            )?;
            created.pids.push(p.pid());
            self.backends[j].server = Some(p);
        }
        Ok(())
    }

    /// Whether backend `j`'s `flowpin-node backend` runs.
    pub(crate) fn backend_node_running(&mut self, j: usize) -> bool {
        self.backends[j]
            .node
            .as_mut()
            .is_some_and(NodeProc::running)
    }

    /// Starts backend `j`'s `flowpin-node backend` if it is not running.
    pub(crate) fn start_backend_node(
        &mut self,
        j: usize,
        created: &mut Created,
    ) -> Result<(), Error> {
        let running = self.backends[j]
            .node
            .as_mut()
            .is_some_and(NodeProc::running);
        if !running {
            let b = &self.backends[j];
            let p = NodeProc::spawn(
                &self.node,
                "backend",
                b.config.clone(),
                b.log.clone(),
                created,
            )?;
            self.backends[j].node = Some(p);
        }
        Ok(())
    }

    /// The backend addresses every LB has for the VIP (`None` if one LB
    /// does not answer), with the number draining.
    pub(crate) fn lb_backends(&self) -> Option<Vec<(Vec<IpAddr>, usize)>> {
        let vip = vip_name(topo::VIP);
        self.lbs
            .iter()
            .map(|n| {
                let s = status(n.port)?;
                // An LB without the VIP (yet) has no backends for it.
                Some(s.vips.get(&vip).map_or((Vec::new(), 0), |v| {
                    let mut addrs = v.backend_addrs.clone();
                    addrs.sort();
                    (addrs, v.draining)
                }))
            })
            .collect()
    }

    /// Waits until every LB has exactly backends `want` for the VIP, with
    /// `draining` of them draining, and one digest. Returns the time waited.
    pub(crate) fn wait_backends(
        &self,
        want: &[usize],
        draining: usize,
        limit: Duration,
    ) -> Result<Duration, Error> {
        let mut want_addrs: Vec<IpAddr> = want
            .iter()
            .map(|&j| IpAddr::V4(topo::backend_addr(j)))
            .collect();
        want_addrs.sort();
        let t0 = Instant::now();
        loop {
            if let Some(all) = self.lb_backends() {
                if all.iter().all(|(a, d)| *a == want_addrs && *d == draining)
                    && digests_agree(&self.lbs, &vip_name(topo::VIP))
                {
                    return Ok(t0.elapsed());
                }
            }
            if t0.elapsed() > limit {
                let logs: Vec<String> = self
                    .backends
                    .iter()
                    .enumerate()
                    .filter_map(|(j, b)| {
                        b.node
                            .as_ref()
                            .map(|n| format!("be{} ({}):\n{}", j + 1, n.role, n.log_tail()))
                    })
                    .collect();
                return Err(format!(
                    "LBs did not reach backends {want_addrs:?} ({draining} draining) within {limit:?}: {:?}\n{}",
                    self.lb_backends(),
                    logs.join("\n")
                )
                .into());
            }
            check_interrupted()?;
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sets the VIP's `server_id` flag in the registry and waits for the LBs.
    pub(crate) fn set_server_id(&self, on: bool) -> Result<(), Error> {
        let key = Vip::new(topo::VIP.into(), topo::VIP_PORT, Proto::Tcp);
        let rev = self.rt.block_on(self.reg.put_vip(&VipSpec::new(
            key,
            VipFlags::NONE.with(VipFlags::SERVER_ID, on),
        )))?;
        wait_agree(
            &self.lbs,
            &vip_name(topo::VIP),
            rev,
            Duration::from_secs(10),
        )?;
        Ok(())
    }

    /// Packets routed by server_id, per LB (in `self.lbs` order).
    pub(crate) fn sid_routed(&self) -> Vec<u64> {
        self.lbs.iter().map(|n| sid_routed(n.port)).collect()
    }

    /// Packets routed by server_id since `before` (a [`Fleet::sid_routed`]),
    /// summed over the LBs. An LB whose counter went down was replaced with
    /// its state (the pinned counters) lost: all of its count is new.
    pub(crate) fn sid_routed_since(&self, before: &[u64]) -> u64 {
        sid_routed_delta(before, &self.sid_routed())
    }

    /// Restarts LB `i` after `sig` (it reopens its pins); returns whether
    /// its `/status` says it reopened them.
    pub(crate) fn restart_lb(
        &mut self,
        i: usize,
        sig: nix::sys::signal::Signal,
        created: &mut Created,
    ) -> Result<bool, Error> {
        self.lbs[i].proc_.stop(sig, Duration::from_secs(5));
        let node = self.node.clone();
        self.lbs[i].start(&node, created)?;
        Ok(status(self.lbs[i].port).is_some_and(|s| s.reopened))
    }

    /// Retires LB `i` as a machine that is replaced: its node stops
    /// (SIGTERM) and its pins go, and with them its `xdp_lb` and connection
    /// table. [`Fleet::start_lb`] brings up the replacement.
    pub(crate) fn retire_lb(&mut self, i: usize) -> Result<(), Error> {
        self.lbs[i]
            .proc_
            .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(5));
        XdpLb::unpin(&self.lbs[i].pin_dir)?;
        Ok(())
    }

    /// Starts LB `i`'s node (after [`Fleet::retire_lb`]); returns whether
    /// its `/status` says it reopened pins.
    pub(crate) fn start_lb(&mut self, i: usize, created: &mut Created) -> Result<bool, Error> {
        let node = self.node.clone();
        self.lbs[i].start(&node, created)?;
        Ok(status(self.lbs[i].port).is_some_and(|s| s.reopened))
    }

    /// SIGTERM to backend `j`'s node, waiting up to `limit`; whether it
    /// exited successfully (drained and deregistered).
    pub(crate) fn stop_backend_node(
        &mut self,
        j: usize,
        sig: nix::sys::signal::Signal,
        limit: Duration,
    ) -> bool {
        self.backends[j]
            .node
            .take()
            .is_some_and(|mut n| n.stop(sig, limit))
    }
}

/// Convergence over `CHANGES` registry changes on a VIP with
/// `SYNTH_BACKENDS` synthetic backends; returns sorted milliseconds and
/// whether the digests agree at the end.
fn convergence(f: &Fleet) -> Result<(Vec<f64>, bool), Error> {
    let key = Vip::new(SYNTH_VIP.into(), topo::VIP_PORT, Proto::Tcp);
    let vip = vip_name(SYNTH_VIP);
    let addr =
        |j: usize| -> IpAddr { Ipv4Addr::new(10, 3, (j / 200) as u8, (j % 200) as u8 + 2).into() };
    let sid = |j: usize| ServerId::new(2000 + j as u32);
    // `rev0` is the revision of the lab's own last write: a watch started
    // now reads the store's revision, which writes outside `routing/` (the
    // LBs' QUIC-LB acknowledgements, server_id claims) move past the last
    // routing change an LB's watch has seen (CI: LBs at 8, a new watch at 9).
    let (host, rev0) = f.rt.block_on(async {
        f.reg
            .put_vip(&VipSpec::new(key, VipFlags::SERVER_ID))
            .await?;
        let h = f.reg.register(Duration::from_secs(30)).await?;
        let entries: Vec<_> = (0..SYNTH_BACKENDS)
            .map(|j| (key, BackendSpec::new(addr(j), 100, sid(j))))
            .collect();
        let rev = h.add_backends(&entries).await?;
        Ok::<_, flowpin_registry::Error>((h, rev))
    })?;
    let mut watch = f.rt.block_on(f.reg.watch())?;
    wait_agree(&f.lbs, &vip, rev0, Duration::from_secs(20))?;

    progress(format!(
        "{CHANGES} registry changes on a VIP with {SYNTH_BACKENDS} backends, each until all 3 ring digests match"
    ));
    let mut ms = Vec::new();
    for c in 0..CHANGES {
        check_interrupted()?;
        let r = c / 4;
        let t0 = Instant::now();
        let rev = f.rt.block_on(async {
            match c % 4 {
                0 => host.set_state(&key, addr(r), BackendState::Draining).await,
                1 => host.set_state(&key, addr(r), BackendState::Active).await,
                2 => {
                    let b =
                        BackendSpec::new(addr(SYNTH_BACKENDS + r), 100, sid(SYNTH_BACKENDS + r));
                    host.add_backend(&key, &b).await
                }
                _ => {
                    host.remove_backend(&key, addr(SYNTH_BACKENDS + r)).await?;
                    // The revision of the delete: the first snapshot without it.
                    let gone = addr(SYNTH_BACKENDS + r);
                    let snap = watch
                        .wait_for(|s| s.backends(&key).is_some_and(|b| !b.contains_key(&gone)))
                        .await;
                    Ok(snap.map_or(0, |s| s.revision))
                }
            }
        })?;
        let t1 = wait_agree(&f.lbs, &vip, rev, Duration::from_secs(10))?;
        ms.push((t1 - t0).as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let agree = digests_agree(&f.lbs, &vip);
    // The synthetic VIP leaves: the traffic scenarios see only the real one.
    f.rt.block_on(async {
        host.deregister().await?;
        f.reg.delete_vip(&key).await
    })?;
    Ok((ms, agree))
}

/// Runs the fleet section with the `flowpin-node` binary `node`
/// ([`node_binary`]); everything it made is registered in `created`.
pub(crate) fn run(
    coverage: Coverage,
    connections: usize,
    node: PathBuf,
    created: &mut Created,
) -> Result<FleetReport, Error> {
    let mut f = Fleet::build(node, created)?;
    let (ms, agree) = convergence(&f)?;
    progress(format!(
        "convergence p50 {:.1} ms, p99 {:.1} ms over {} changes; digests agree: {agree}",
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.len()
    ));

    let idle = if coverage == Coverage::Quick {
        3.0
    } else {
        5.0
    };
    progress(format!("idle CPU of flowpin-node lb 1 over {idle} s"));
    let pid = f.lbs[0].proc_.pid().ok_or("lb 1 gone")?;
    let a = cpu_ticks(pid)?;
    pause(Duration::from_secs_f64(idle))?;
    let b = cpu_ticks(pid)?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (b - a) as f64 / hz / idle * 100.0;

    let health_probe_cost = health_cost::selected(coverage)
        .then(|| health_cost::measure(&mut f, created))
        .transpose()?;
    let scenarios = traffic::run_all(&mut f, coverage, connections, created)?;
    progress("tearing down the fleet");
    drop(f);
    Ok(FleetReport {
        convergence_ms: Percentiles {
            p50: percentile(&ms, 0.5),
            p99: percentile(&ms, 0.99),
        },
        convergence_changes: ms.len(),
        convergence_digests_agree: agree,
        lb_idle_cpu_percent: cpu,
        lb_idle_secs: idle,
        health_probe_cost,
        scenarios,
    })
}

/// Prints the fleet's summary lines.
pub(crate) fn print_summary(r: &FleetReport, to_stderr: bool) {
    let mut out = format!(
        "\nFleet (etcd + 3 flowpin-node lb + 5 flowpin-node backend): convergence p50 {:.1} ms, p99 {:.1} ms over {} changes (3 LBs, {SYNTH_BACKENDS} backends), digests agree: {}; idle flowpin-node lb CPU {:.2} % over {} s\n",
        r.convergence_ms.p50,
        r.convergence_ms.p99,
        r.convergence_changes,
        r.convergence_digests_agree,
        r.lb_idle_cpu_percent,
        r.lb_idle_secs
    );
    for s in &r.scenarios {
        out.push_str(&s.detail_lines());
    }
    if let Some(c) = &r.health_probe_cost {
        out.push_str(&c.line());
    }
    if to_stderr {
        eprint!("{out}");
    } else {
        print!("{out}");
    }
}

/// What fails the fleet section: digests that disagree, a broken connection
/// with server_id, none broken without it where the scenario is built to
/// break some, a time over its target.
pub(crate) fn failures(r: &FleetReport) -> Vec<String> {
    let mut v = Vec::new();
    if !r.convergence_digests_agree {
        v.push("LB ring digests differ after the convergence changes".to_string());
    }
    for s in &r.scenarios {
        v.extend(s.failures());
    }
    v
}

/// `lab --fleet-only`: runs the fleet section with the `flowpin-node`
/// binary `node` and prints its report.
pub(crate) fn main(
    json: bool,
    coverage: Coverage,
    connections: usize,
    node: PathBuf,
) -> std::process::ExitCode {
    let mut created = Created {
        bpffs_before: crate::bpffs_entries(),
        ..Created::default()
    };
    let result = run(coverage, connections, node, &mut created);
    let left = created.leftovers();
    if !left.is_empty() {
        eprintln!("fleet failed: left behind: {}", left.join(", "));
        return std::process::ExitCode::FAILURE;
    }
    match result {
        Ok(r) => {
            traffic::print_table(&r.scenarios, json);
            print_summary(&r, json);
            if json {
                match serde_json::to_string(&r) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("JSON: {e}");
                        return std::process::ExitCode::FAILURE;
                    }
                }
            }
            crate::progress(format!(
                "clean: checked {} namespaces, {} cgroups, {} processes and bpffs: nothing left behind",
                created.netns.len(),
                created.cgroups.len(),
                created.pids.len()
            ));
            let fails = failures(&r);
            if fails.is_empty() {
                std::process::ExitCode::SUCCESS
            } else {
                eprintln!("fleet failed: {}", fails.join("; "));
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("fleet failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sid_routed_delta;

    #[test]
    fn a_replaced_lbs_new_count_is_not_hidden_by_what_it_lost() {
        // LB1 counted 600 before it was replaced (pins removed), then 300.
        assert_eq!(sid_routed_delta(&[600, 200, 200], &[300, 250, 260]), 410);
        // No LB replaced: the plain growth.
        assert_eq!(sid_routed_delta(&[10, 20], &[15, 20]), 5);
        // An LB that was not there before counts whole.
        assert_eq!(sid_routed_delta(&[10], &[10, 7]), 7);
    }
}
