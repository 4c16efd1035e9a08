//! The rig of the node's privileged tests (shared by the test files).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowpin_bpf_progs::process::CommandCgroupExt;
use flowpin_bpf_progs::sockops_server_id::ServerIdOps;
use flowpin_bpf_progs::xdp_decap::XdpDecap;
use flowpin_bpf_progs::xdp_lb::{Backend, XdpLb, XdpLbConfig, XdpLink};
use flowpin_bpf_progs::xdp_pass::XdpPass;
use flowpin_node::backend::BackendStatus;
use flowpin_registry::local_etcd::LocalEtcd;
use flowpin_registry::{Proto, Registry, Vip, VipFlags, VipSpec};
use flowpin_testing::{unique_name, Cgroup, NetNs, RoutedLb, RoutedLbConfig};
use nix::sys::signal::Signal;

pub(crate) mod lb;

pub(crate) const VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
pub(crate) const PORT: u16 = 8080;
pub(crate) const MAC_LB: [u8; 6] = [0x02, 0x5e, 0, 0, 2, 2];
pub(crate) const MAC_RTR: [u8; 6] = [0x02, 0x5e, 0, 0, 2, 1];
const ECHO_ENV: &str = "FLOWPIN_NODE_TEST_ECHO";

/// In the re-executed test binary: an echo server on `PORT`, forever.
pub(crate) fn maybe_serve_echo() {
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

pub(crate) struct Rig {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) etcd: LocalEtcd,
    pub(crate) reg: Registry,
    pub(crate) prefix: String,
    pub(crate) lb: XdpLb,
    _pass: XdpPass,
    _links: Vec<XdpLink>,
    pub(crate) net: RoutedLb,
    pub(crate) subnet: u8,
    pub(crate) cg: Cgroup,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) pins: Vec<PathBuf>,
    pub(crate) children: Vec<Child>,
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

pub(crate) fn vip_key() -> Vip {
    Vip::new(VIP.into(), PORT, Proto::Tcp)
}

pub(crate) fn lb_vip() -> flowpin_bpf_progs::xdp_lb::Vip {
    flowpin_bpf_progs::xdp_lb::Vip::new(VIP.into(), PORT, flowpin_bpf_progs::xdp_lb::Proto::Tcp)
}

impl Rig {
    /// `subnet`: one per test (`10.<subnet>.x.y`); `backends` hosts.
    pub(crate) fn new(tag: &str, subnet: u8, backends: usize) -> Rig {
        let rt = lb::runtime();
        let etcd = lb::start_etcd(&rt);
        let prefix = format!("/{}", unique_name(tag));
        let reg = lb::connect(&rt, etcd.endpoint(), &prefix);
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

    pub(crate) fn subnet(&self) -> u8 {
        self.subnet
    }

    pub(crate) fn backend_addr(&self, j: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, self.subnet, 10 + j as u8, 2))
    }

    /// Packets the LB sent to the VIP's backend.
    pub(crate) fn lb_packets(&self) -> u64 {
        self.lb.vip_stats(&lb_vip()).unwrap().packets
    }

    /// Writes a backend config `name.toml`; returns (path, port file, pin dir).
    pub(crate) fn config(
        &mut self,
        name: &str,
        host: &str,
        j: usize,
        extra: &str,
    ) -> (PathBuf, PathBuf, PathBuf) {
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

    /// Starts the echo server in backend 0's namespace and the backend
    /// cgroup: this test binary run again for `test` (which must call
    /// [`maybe_serve_echo`] first).
    pub(crate) fn echo_server(&mut self, test: &str) {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
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
pub(crate) struct Agent {
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
    pub(crate) fn start(config: &Path, log: PathBuf) -> Agent {
        let _ = std::fs::remove_file(config.with_extension("port"));
        let f = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
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

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn signal(&self, s: Signal) {
        if let Some(c) = &self.child {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), s).unwrap();
        }
    }

    /// Waits for the exit; its status code.
    pub(crate) fn wait(&mut self, limit: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "the agent did not exit within {limit:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

pub(crate) fn http_get(port: u16, path: &str) -> Option<String> {
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

/// Waits until the agent's `/status` says `registered`.
pub(crate) fn wait_registered(
    agent: &mut Agent,
    port_file: &Path,
    limit: Duration,
) -> (u16, BackendStatus) {
    let deadline = Instant::now() + limit;
    loop {
        assert!(
            agent.running(),
            "the agent exited; its log:\n{}",
            agent.log()
        );
        assert!(
            Instant::now() < deadline,
            "not registered within {limit:?}; log:\n{}",
            agent.log()
        );
        if let Some(port) = std::fs::read_to_string(port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok())
        {
            if let Some(s) = http_get(port, "/status")
                .and_then(|b| serde_json::from_str::<BackendStatus>(&b).ok())
            {
                if s.registered {
                    return (port, s);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The registered backends of the VIP: address → server_id.
pub(crate) fn registered(rig: &Rig) -> Vec<(IpAddr, Option<u32>, u32)> {
    let w = rig.rt.block_on(rig.reg.watch()).unwrap();
    let snap = w.current();
    snap.backends(&vip_key())
        .map(|b| {
            b.values()
                .map(|s| (s.addr, s.server_id.map(u32::from), s.weight))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn tcp_retrans(cl: &NetNs) -> u64 {
    let snmp = cl
        .run(|| std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap())
        .unwrap();
    let tcp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Tcp:")).collect();
    let names: Vec<&str> = tcp[0].split_whitespace().collect();
    let vals: Vec<&str> = tcp[1].split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RetransSegs").unwrap();
    vals[i].parse().unwrap()
}

pub(crate) fn decap_ipip(pin_dir: &Path) -> u64 {
    XdpDecap::open_pinned(pin_dir.join("decap"))
        .unwrap()
        .stats()
        .unwrap()
        .decap_ipip
}

/// A ping-pong connection from the client namespace through the tunnel.
pub(crate) struct Pinger {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) rounds: Arc<AtomicU64>,
    pub(crate) handle: std::thread::JoinHandle<Result<(), String>>,
}

impl Pinger {
    pub(crate) fn start(cl: &NetNs) -> Pinger {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s2, r2) = (stop.clone(), rounds.clone());
        let handle = cl
            .spawn(move || {
                let mut c = TcpStream::connect_timeout(
                    &SocketAddr::from((VIP, PORT)),
                    Duration::from_secs(3),
                )
                .map_err(|e| format!("connect: {e}"))?;
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 64];
                while !s2.load(Ordering::Relaxed) {
                    c.write_all(&[7u8; 64]).map_err(|e| format!("write: {e}"))?;
                    c.read_exact(&mut buf)
                        .map_err(|e| format!("read (a stall over 2 s): {e}"))?;
                    r2.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(())
            })
            .unwrap();
        Pinger {
            stop,
            rounds,
            handle,
        }
    }

    pub(crate) fn finish(self) -> (u64, Result<(), String>) {
        self.stop.store(true, Ordering::Relaxed);
        let r = self.handle.join().unwrap();
        (self.rounds.load(Ordering::Relaxed), r)
    }
}
