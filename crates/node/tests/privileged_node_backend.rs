//! Privileged (root): `flowpin-node backend` against a real etcd
//! (`LocalEtcd`), in namespaces and a cgroup made for the test.
//!
//! The rig: `flowpin_testing::RoutedLb` (client, router, an LB namespace
//! with `xdp_lb` loaded by the test, backend namespaces with the VIP on
//! `lo`), an echo server in the backend's namespace and cgroup. The LB
//! encapsulates to the backend: without `xdp_decap` nothing reaches the
//! server, so a connection that lives through agent restarts proves the
//! pinned programs kept working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowpin_bpf_progs::process::CommandCgroupExt;
use flowpin_bpf_progs::sockops_server_id::{ServerIdOps, SockopsLink};
use flowpin_bpf_progs::xdp_decap::XdpDecap;
use flowpin_bpf_progs::link::Link;
use flowpin_node::backend::BackendStatus;
use flowpin_registry::local_etcd::LocalEtcd;
use flowpin_registry::{Proto, Registry, RegistryConfig, Vip, VipFlags, VipSpec};
use flowpin_bpf_progs::xdp_lb::{Backend, XdpLb, XdpLbConfig, XdpLink};
use flowpin_bpf_progs::xdp_pass::XdpPass;
use flowpin_testing::{require_bpf, unique_name, Cgroup, NetNs, RoutedLb, RoutedLbConfig};
use nix::sys::signal::Signal;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
const PORT: u16 = 8080;
const MAC_LB: [u8; 6] = [0x02, 0x5e, 0, 0, 2, 2];
const MAC_RTR: [u8; 6] = [0x02, 0x5e, 0, 0, 2, 1];
const ECHO_ENV: &str = "FLOWPIN_NODE_TEST_ECHO";

/// In the re-executed test binary: an echo server on `PORT`, forever.
fn maybe_serve_echo() {
    if std::env::var_os(ECHO_ENV).is_none() {
        return;
    }
    let l = TcpListener::bind(("0.0.0.0", PORT)).expect("bind echo");
    println!("listening");
    for s in l.incoming().flatten() {
        std::thread::spawn(move || {
            let mut s = s;
            let mut buf = [0u8; 256];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    std::process::exit(0);
}

struct Rig {
    rt: tokio::runtime::Runtime,
    etcd: LocalEtcd,
    reg: Registry,
    prefix: String,
    lb: XdpLb,
    _pass: XdpPass,
    _links: Vec<XdpLink>,
    net: RoutedLb,
    subnet: u8,
    cg: Cgroup,
    dir: tempfile::TempDir,
    pins: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in &self.pins {
            let _ = XdpDecap::unpin(p.join("decap"));
            let _ = ServerIdOps::unpin(p.join("sockops"));
            let _ = std::fs::remove_dir(p);
        }
    }
}

fn vip_key() -> Vip {
    Vip::new(VIP.into(), PORT, Proto::Tcp)
}

fn lb_vip() -> flowpin_bpf_progs::xdp_lb::Vip {
    flowpin_bpf_progs::xdp_lb::Vip::new(VIP.into(), PORT, flowpin_bpf_progs::xdp_lb::Proto::Tcp)
}

impl Rig {
    /// `subnet`: one per test (`10.<subnet>.x.y`); `backends` hosts.
    fn new(tag: &str, subnet: u8, backends: usize) -> Rig {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let etcd = rt
            .block_on(LocalEtcd::start())
            .expect("etcd (as root a missing etcd is a failure: apt-get install etcd-server)");
        let prefix = format!("/{}", unique_name(tag));
        let reg = rt
            .block_on(Registry::connect(RegistryConfig::new(
                [etcd.endpoint()],
                &prefix,
            )))
            .unwrap();
        rt.block_on(reg.put_vip(&VipSpec::new(vip_key(), VipFlags::SERVER_ID)))
            .unwrap();
        let cfg = RoutedLbConfig {
            subnet,
            vip: VIP,
            lb_mac: MAC_LB,
            router_mac: MAC_RTR,
        };
        let net = RoutedLb::new(tag, &cfg, backends).expect("routed topology");
        let mut lb = XdpLb::load(
            XdpLbConfig::default()
                .local_mac(MAC_LB)
                .next_hop_mac(MAC_RTR)
                .lru_memory_bytes(1 << 20),
        )
        .unwrap();
        lb.add_vip(lb_vip(), flowpin_bpf_progs::xdp_lb::VipFlags::NONE)
            .unwrap();
        lb.set_backends(
            &lb_vip(),
            &[Backend::new(IpAddr::V4(cfg.backend_addr(0))).without_server_id()],
        )
        .unwrap();
        let mut links = vec![net.lb.run(|| lb.attach("l0")).unwrap().unwrap()];
        // Native XDP_TX on a veth needs an XDP program on its peer.
        let pass = XdpPass::load(Default::default()).unwrap();
        links.push(net.router.run(|| pass.attach("rl")).unwrap().unwrap());
        let cg = Cgroup::new(&format!("{tag}cg")).unwrap();
        Rig {
            rt,
            etcd,
            reg,
            prefix,
            lb,
            _pass: pass,
            _links: links,
            net,
            subnet,
            cg,
            dir: tempfile::tempdir().unwrap(),
            pins: Vec::new(),
            children: Vec::new(),
        }
    }

    fn subnet(&self) -> u8 {
        self.subnet
    }

    fn backend_addr(&self, j: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, self.subnet, 10 + j as u8, 2))
    }

    /// Packets the LB sent to the VIP's backend.
    fn lb_packets(&self) -> u64 {
        self.lb.vip_stats(&lb_vip()).unwrap().packets
    }

    /// Writes a backend config `name.toml`; returns (path, port file, pin dir).
    fn config(&mut self, name: &str, host: &str, j: usize, extra: &str) -> (PathBuf, PathBuf, PathBuf) {
        let address = format!("10.{}.{}.2", self.subnet(), 10 + j);
        let pin_dir = Path::new("/sys/fs/bpf").join(unique_name(&format!("nbe-{name}")));
        self.pins.push(pin_dir.clone());
        let port_file = self.dir.path().join(format!("{name}.port"));
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[registry]\nendpoints = [\"{ep}\"]\nprefix = \"{prefix}\"\n\n[backend]\nhost = \"{host}\"\naddress = \"{address}\"\ninterface = \"b0\"\nnetns = \"{ns}\"\ncgroup = \"{cg}\"\nlease_ttl_secs = 3\ndrain_timeout_secs = 5\npin_dir = \"{pins}\"\nvips = [{{ addr = \"{VIP}\", port = {PORT} }}]\n{extra}\n[metrics]\nlisten = \"127.0.0.1:0\"\nport_file = \"{pf}\"\n",
                ep = self.etcd.endpoint(),
                prefix = self.prefix,
                ns = self.net.backends[j].path().display(),
                cg = self.cg.path().display(),
                pins = pin_dir.display(),
                pf = port_file.display(),
            ),
        )
        .unwrap();
        (path, port_file, pin_dir)
    }

    fn echo_server(&mut self) {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "privileged_backend_agent_restart_and_upgrade_lose_nothing", "--nocapture", "--test-threads=1"])
            .env(ECHO_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        cmd.in_netns(self.net.backends[0].path()).unwrap();
        cmd.in_cgroup(self.cg.path()).unwrap();
        let mut child = cmd.spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while out.read_line(&mut line).unwrap() > 0 && !line.contains("listening") {
            line.clear();
        }
        assert!(line.contains("listening"), "the echo server did not start");
        self.children.push(child);
    }
}

/// A running agent, its log in a file.
struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Agent {
    fn start(config: &Path, log: PathBuf) -> Agent {
        let _ = std::fs::remove_file(config.with_extension("port"));
        let f = std::fs::File::options().create(true).append(true).open(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_flowpin-node"))
            .args(["backend", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        Agent {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, s: Signal) {
        if let Some(c) = &self.child {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), s).unwrap();
        }
    }

    /// Waits for the exit; its status code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("the agent did not exit within {limit:?}; its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Waits until the agent's `/status` says `registered`.
fn wait_registered(agent: &mut Agent, port_file: &Path, limit: Duration) -> (u16, BackendStatus) {
    let deadline = Instant::now() + limit;
    loop {
        assert!(agent.running(), "the agent exited; its log:\n{}", agent.log());
        assert!(Instant::now() < deadline, "not registered within {limit:?}; log:\n{}", agent.log());
        if let Some(port) = std::fs::read_to_string(port_file).ok().and_then(|p| p.trim().parse::<u16>().ok()) {
            if let Some(s) = http_get(port, "/status").and_then(|b| serde_json::from_str::<BackendStatus>(&b).ok()) {
                if s.registered {
                    return (port, s);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The registered backends of the VIP: address → server_id.
fn registered(rig: &Rig) -> Vec<(IpAddr, Option<u32>, u32)> {
    let w = rig.rt.block_on(rig.reg.watch()).unwrap();
    let snap = w.current();
    snap.backends(&vip_key())
        .map(|b| b.values().map(|s| (s.addr, s.server_id.map(u32::from), s.weight)).collect())
        .unwrap_or_default()
}

fn tcp_retrans(cl: &NetNs) -> u64 {
    let snmp = cl
        .run(|| std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap())
        .unwrap();
    let tcp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Tcp:")).collect();
    let names: Vec<&str> = tcp[0].split_whitespace().collect();
    let vals: Vec<&str> = tcp[1].split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RetransSegs").unwrap();
    vals[i].parse().unwrap()
}

fn decap_ipip(pin_dir: &Path) -> u64 {
    XdpDecap::open_pinned(pin_dir.join("decap")).unwrap().stats().unwrap().decap_ipip
}

/// A ping-pong connection from the client namespace through the tunnel.
struct Pinger {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<Result<(), String>>,
}

impl Pinger {
    fn start(cl: &NetNs) -> Pinger {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s2, r2) = (stop.clone(), rounds.clone());
        let handle = cl
            .spawn(move || {
                let mut c = TcpStream::connect_timeout(&SocketAddr::from((VIP, PORT)), Duration::from_secs(3))
                    .map_err(|e| format!("connect: {e}"))?;
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 64];
                while !s2.load(Ordering::Relaxed) {
                    c.write_all(&[7u8; 64]).map_err(|e| format!("write: {e}"))?;
                    c.read_exact(&mut buf).map_err(|e| format!("read (a stall over 2 s): {e}"))?;
                    r2.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(())
            })
            .unwrap();
        Pinger { stop, rounds, handle }
    }

    fn finish(self) -> (u64, Result<(), String>) {
        self.stop.store(true, Ordering::Relaxed);
        let r = self.handle.join().unwrap();
        (self.rounds.load(Ordering::Relaxed), r)
    }
}

#[test]
fn privileged_backend_agent_restart_and_upgrade_lose_nothing() {
    maybe_serve_echo();
    if !require_bpf("privileged_backend_agent_restart_and_upgrade_lose_nothing") {
        return;
    }
    let mut rig = Rig::new("nbr", 112, 1);
    let (cfg, pf, pins) = rig.config("a", "be1.test", 0, "");
    let log = rig.dir.path().join("a.log");
    let mut a = Agent::start(&cfg, log.clone());
    let (_, st) = wait_registered(&mut a, &pf, Duration::from_secs(20));
    assert!(!st.reopened);
    let sid = st.server_id.expect("a server_id");
    rig.echo_server();
    let p = Pinger::start(&rig.net.client);
    std::thread::sleep(Duration::from_millis(500));
    let (d0, t0, r0) = (decap_ipip(&pins), rig.lb_packets(), tcp_retrans(&rig.net.client));
    let ops_prog = SockopsLink::from_pinned(pins.join("sockops/link")).unwrap().program_id().unwrap();

    // 1. The agent crashes (SIGKILL): the pinned programs keep working.
    a.signal(Signal::SIGKILL);
    a.wait(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!p.handle.is_finished(), "the connection broke while no agent ran");
    let mut b = Agent::start(&cfg, log.clone());
    let (_, st) = wait_registered(&mut b, &pf, Duration::from_secs(20));
    assert!(st.reopened, "the restarted agent reopened the pins");
    assert_eq!(st.server_id, Some(sid), "the same server_id after a restart");
    // 2. Hand-over (SIGUSR2) and a new agent (an upgrade: it swaps its
    //    programs into the pinned links).
    b.signal(Signal::SIGUSR2);
    assert_eq!(b.wait(Duration::from_secs(5)), Some(0));
    std::thread::sleep(Duration::from_millis(500));
    let mut c = Agent::start(&cfg, log.clone());
    let (port, st) = wait_registered(&mut c, &pf, Duration::from_secs(20));
    assert!(st.reopened);
    assert_eq!(st.server_id, Some(sid));
    std::thread::sleep(Duration::from_millis(500));
    let (rounds, r) = p.finish();
    r.expect("the connection through the agent restarts");
    assert!(rounds > 100, "only {rounds} round trips");
    std::thread::sleep(Duration::from_millis(200));
    let (d1, t1, r1) = (decap_ipip(&pins), rig.lb_packets(), tcp_retrans(&rig.net.client));
    assert_eq!(
        d1 - d0,
        t1 - t0,
        "every packet the LB sent was decapsulated at the backend (0 lost)"
    );
    assert_eq!(r1 - r0, 0, "no TCP retransmission at the client");
    let new_prog = SockopsLink::from_pinned(pins.join("sockops/link")).unwrap().program_id().unwrap();
    assert_ne!(new_prog, ops_prog, "the upgrade swapped the sock_ops program in place");
    // New connections still get the server_id in their SYN-ACK.
    let ops = ServerIdOps::open_pinned(pins.join("sockops")).unwrap();
    let w0 = ops.stats().unwrap().server.written;
    let p2 = Pinger::start(&rig.net.client);
    std::thread::sleep(Duration::from_millis(200));
    p2.finish().1.unwrap();
    assert_eq!(ops.stats().unwrap().server.written, w0 + 1);
    assert_eq!(registered(&rig), vec![(rig.backend_addr(0), Some(sid), 100)]);
    let metrics = http_get(port, "/metrics").unwrap();
    assert!(metrics.contains("flowpin_backend_registered 1"), "{metrics}");
    assert!(metrics.contains("flowpin_backend_decap_packets_total{form=\"ipip\"}"), "{metrics}");
    // SIGTERM: drain (no connection left), deregister, remove the pins.
    drop(ops);
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait(Duration::from_secs(10)), Some(0), "{}", c.log());
    assert!(!pins.join("decap").exists() && !pins.join("sockops").exists());
    assert!(registered(&rig).is_empty());
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("swapped in this build's program"), "{log_text}");
}

#[test]
fn privileged_backend_reasserts_deleted_key_and_reloads_on_sighup() {
    if !require_bpf("privileged_backend_reasserts_deleted_key_and_reloads_on_sighup") {
        return;
    }
    let mut rig = Rig::new("nbk", 113, 1);
    let (cfg, pf, _) = rig.config("a", "be1.test", 0, "");
    let mut a = Agent::start(&cfg, rig.dir.path().join("a.log"));
    let (port, _) = wait_registered(&mut a, &pf, Duration::from_secs(20));
    // Delete the key behind the agent's back.
    let key = rig.reg.layout().backend(&vip_key(), rig.backend_addr(0));
    let mut etcd = rig.reg.etcd();
    let n = rig.rt.block_on(etcd.delete(key.clone(), None)).unwrap().deleted();
    assert_eq!(n, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while registered(&rig).is_empty() {
        assert!(Instant::now() < deadline, "the key was not re-asserted; log:\n{}", a.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(a.log().contains("re-asserting"), "{}", a.log());
    assert!(http_get(port, "/metrics").unwrap().contains("flowpin_backend_reasserted_keys_total 1"));

    // A broken config on SIGHUP is refused, the running one kept.
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, good.replace("[backend]", "[backend\n")).unwrap();
    a.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(a.running(), "SIGHUP with a broken file killed the agent:\n{}", a.log());
    assert!(a.log().contains("SIGHUP: new config refused, keeping the running one"), "{}", a.log());
    // A field fixed at start is refused too.
    std::fs::write(&cfg, good.replace("10.113.10.2", "10.113.10.3")).unwrap();
    a.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(a.log().contains("backend.address"), "{}", a.log());
    assert_eq!(registered(&rig)[0].2, 100);
    // A good one is applied and says what.
    std::fs::write(&cfg, good.replace("lease_ttl_secs = 3", "lease_ttl_secs = 3\nweight = 50")).unwrap();
    a.signal(Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while registered(&rig).first().map(|r| r.2) != Some(50)
        || !a.log().contains("SIGHUP: configuration reloaded and applied")
    {
        assert!(Instant::now() < deadline, "weight not applied; log:\n{}", a.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(a.log().contains("backend.weight 100 -> 50"), "{}", a.log());
    let m = http_get(port, "/metrics").unwrap();
    assert!(m.contains("flowpin_backend_config_reloads_total{result=\"refused\"} 2"), "{m}");
    assert!(m.contains("flowpin_backend_config_reloads_total{result=\"applied\"} 1"), "{m}");
}

#[test]
fn privileged_backend_duplicate_host_is_refused() {
    if !require_bpf("privileged_backend_duplicate_host_is_refused") {
        return;
    }
    let mut rig = Rig::new("nbd", 114, 2);
    // Backend 1 is another machine configured with backend 0's host name.
    let (cfg1, pf1, _) = rig.config("a", "be1.test", 0, "");
    let (cfg2, pf2, pins2) = rig.config("b", "be1.test", 1, "");
    let mut a = Agent::start(&cfg1, rig.dir.path().join("a.log"));
    let (port1, _) = wait_registered(&mut a, &pf1, Duration::from_secs(20));
    let mut b = Agent::start(&cfg2, rig.dir.path().join("b.log"));
    let code = b.wait(Duration::from_secs(20));
    assert!(code.is_some_and(|c| c != 0), "the duplicate exited {code:?}");
    let log = b.log();
    assert!(log.contains("already served by another node"), "{log}");
    assert!(!log.contains("registered: LBs route to this host"), "{log}");
    assert!(!pf2.exists() || std::fs::read_to_string(&pf2).is_ok());
    assert!(!pins2.join("decap").exists(), "the refused agent left its pins");
    // The first one is untouched.
    assert!(a.running());
    assert_eq!(registered(&rig).len(), 1);
    let st: BackendStatus = serde_json::from_str(&http_get(port1, "/status").unwrap()).unwrap();
    assert!(st.conflicts.is_empty(), "{:?}", st.conflicts);
}

#[test]
fn privileged_backend_waits_for_etcd() {
    if !require_bpf("privileged_backend_waits_for_etcd") {
        return;
    }
    let mut rig = Rig::new("nbw", 115, 1);
    let (cfg, pf, _) = rig.config("a", "be1.test", 0, "");
    rig.etcd.kill();
    let mut a = Agent::start(&cfg, rig.dir.path().join("a.log"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(a.running(), "the agent gave up while etcd was down:\n{}", a.log());
    let log = a.log();
    assert!(log.contains("etcd is not reachable at"), "{log}");
    assert!(log.contains("retrying in"), "{log}");
    assert!(!log.contains("Status {"), "a raw tonic dump: {log}");
    rig.rt.block_on(rig.etcd.restart()).unwrap();
    wait_registered(&mut a, &pf, Duration::from_secs(20));
    assert_eq!(registered(&rig).len(), 1);
}

#[test]
fn backend_config_with_a_duplicate_vip_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("be.toml");
    std::fs::write(
        &cfg,
        "[registry]\nendpoints = [\"http://127.0.0.1:1\"]\nprefix = \"/x\"\n\n[backend]\nhost = \"h\"\naddress = \"10.9.0.2\"\ninterface = \"eth0\"\ncgroup = \"/sys/fs/cgroup/x\"\nvips = [{ addr = \"10.100.0.1\", port = 80 }, { addr = \"10.100.0.1\", port = 80 }]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flowpin-node"))
        .args(["backend", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tcp:10.100.0.1:80 is listed twice"), "{err}");
    assert!(!err.contains("etcd"), "{err}");
}
