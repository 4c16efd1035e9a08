//! The harness side of one strategy's run: a network namespace, the server
//! processes of 1 + N releases, and the load (short TCP connections and
//! long-lived UDP flows) with its counters.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowpin::sk_reuseport::ReuseportGroup;
use flowpin_testing::NetNs;

use crate::{Args, Res, Strategy, IP};

/// What one strategy's run counted.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counts {
    pub(crate) refused: u64,
    pub(crate) reset: u64,
    pub(crate) timeouts: u64,
    pub(crate) misrouted: u64,
    pub(crate) lost: u64,
    pub(crate) tcp_ok: u64,
    pub(crate) udp_sent: u64,
    pub(crate) udp_replies: u64,
    /// CPU time of all server processes of the run (user + system), ms.
    pub(crate) server_cpu_ms: f64,
    /// fd-passing-forwarder: latency of each forwarded packet, ns.
    pub(crate) forward_latency_ns: Vec<u64>,
}

#[derive(Default)]
struct Shared {
    refused: AtomicU64,
    reset: AtomicU64,
    timeouts: AtomicU64,
    tcp_ok: AtomicU64,
    stop: AtomicBool,
    alive: Mutex<HashSet<u32>>,
    server_cpu_us: AtomicU64,
    forward_latency_ns: Mutex<Vec<u64>>,
}

struct Server {
    label: u32,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

/// What every server process of one strategy's run shares.
struct Trial<'a> {
    args: &'a Args,
    strategy: Strategy,
    ns: &'a NetNs,
    port: u16,
    pin: &'a Path,
}

impl Server {
    fn spawn(t: &Trial<'_>, label: u32, first: bool, takeover: Option<&Path>) -> Res<Server> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.args([
            "--serve",
            t.strategy.name(),
            "--label",
            &label.to_string(),
            "--port",
            &t.port.to_string(),
        ])
        .arg("--netns")
        .arg(t.ns.path())
        .arg("--pin")
        .arg(t.pin)
        .args(["--drain-ms", &t.args.drain_ms.to_string()]);
        if first {
            cmd.arg("--first");
        }
        if t.strategy.passes_fds() {
            cmd.arg("--ctl").arg(ctl_path(t.pin, label));
        }
        if let Some(p) = takeover {
            cmd.arg("--takeover").arg(p);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Ok(Server {
            label,
            child,
            stdin,
            lines: rx,
        })
    }

    fn expect(&mut self, what: &str) -> Res<()> {
        match self.lines.recv_timeout(Duration::from_secs(10)) {
            Ok(l) if l == what => Ok(()),
            Ok(l) => Err(format!("server {}: expected {what}, got {l}", self.label).into()),
            Err(_) => {
                let st = self.child.try_wait()?;
                Err(format!("server {}: no {what} (exit status {st:?})", self.label).into())
            }
        }
    }

    fn send(&mut self, l: &str) -> Res<()> {
        writeln!(self.stdin, "{l}")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// Stops the server: it drains, says CLOSING; we mark it gone and let it
    /// close; it reports its CPU time (and forwarded-packet latencies).
    fn stop(mut self, shared: &Shared) -> Res<()> {
        self.send("stop")?;
        self.expect("CLOSING")?;
        shared
            .alive
            .lock()
            .map_err(|_| "poisoned")?
            .remove(&self.label);
        self.send("ok")?;
        let st = self.child.wait()?;
        if !st.success() {
            return Err(format!("server {} exited with {st}", self.label).into());
        }
        // The reader thread ends at the child's end of stdout.
        let mut cpu = false;
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            if let Some(v) = l.strip_prefix("CPU ") {
                shared
                    .server_cpu_us
                    .fetch_add(v.parse()?, Ordering::Relaxed);
                cpu = true;
            } else if let Some(v) = l.strip_prefix("FWDLAT ") {
                let mut all = shared.forward_latency_ns.lock().map_err(|_| "poisoned")?;
                for x in v.split(',').filter(|x| !x.is_empty()) {
                    all.push(x.parse()?);
                }
            } else {
                return Err(format!("server {}: unexpected line {l:?}", self.label).into());
            }
        }
        if !cpu {
            return Err(format!("server {}: no CPU report", self.label).into());
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Error paths: leave no server process behind. (After `stop` the
        // child has exited and been reaped: this is a no-op then.)
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn ctl_path(pin: &Path, label: u32) -> PathBuf {
    PathBuf::from(format!(
        "/tmp/{}-ctl-{label}.sock",
        pin.file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("flowpin-release")
    ))
}

fn tcp_worker(addr: SocketAddr, sh: Arc<Shared>) {
    while !sh.stop.load(Ordering::Relaxed) {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) => match e.kind() {
                ErrorKind::ConnectionRefused => sh.refused.fetch_add(1, Ordering::Relaxed),
                ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                    sh.timeouts.fetch_add(1, Ordering::Relaxed)
                }
                _ => sh.reset.fetch_add(1, Ordering::Relaxed),
            },
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut b = [0u8; 64];
                let r = s.write_all(b"req").and_then(|_| s.read(&mut b));
                match r {
                    Ok(n) if n > 0 && b[..n].ends_with(b"req") => {
                        sh.tcp_ok.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(_) => sh.reset.fetch_add(1, Ordering::Relaxed), // closed without a reply
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        sh.timeouts.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        sh.refused.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(_) => sh.reset.fetch_add(1, Ordering::Relaxed),
                }
            }
        };
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The UDP flows: every `period` each flow sends one packet
/// `[seq u32][cid u32]` (`cid` = the label that owns the flow, echoed like a
/// QUIC connection ID); replies are `[label u32][seq u32]`.
fn udp_worker(addr: SocketAddr, flows: usize, period: Duration, sh: Arc<Shared>) -> Res<Counts> {
    let mut socks = Vec::with_capacity(flows);
    for _ in 0..flows {
        let s = UdpSocket::bind((IP, 0))?;
        s.connect(addr)?;
        s.set_nonblocking(true)?;
        socks.push(s);
    }
    let mut owner = vec![0u32; flows];
    let mut c = Counts::default();
    let mut seq = 0u32;
    let mut b = [0u8; 16];
    let mut drain = |socks: &[UdpSocket],
                     owner: &mut [u32],
                     c: &mut Counts,
                     seq_now: u32|
     -> Res<()> {
        for (i, s) in socks.iter().enumerate() {
            while let Ok(n) = s.recv(&mut b) {
                if n < 8 {
                    continue;
                }
                c.udp_replies += 1;
                let label = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                let o = owner[i];
                if o == 0 || o == label {
                    owner[i] = label;
                    continue;
                }
                // A reply from another process than the owner: judged with
                // the processes alive now (not a snapshot: the harness marks
                // a process gone before it lets it close, and marks a new one
                // alive before it starts, so this view is never behind the
                // reply being judged).
                let alive = sh.alive.lock().map_err(|_| "poisoned")?;
                if !alive.contains(&label) {
                    // A late reply from a process that has closed.
                } else if alive.contains(&o) {
                    c.misrouted += 1;
                    if std::env::var_os("FLOWPIN_RELEASE_DEBUG").is_some() {
                        let seq = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                        eprintln!("misrouted: flow {i} owner {o} reply from {label} (seq {seq}, now {seq_now}), alive {alive:?}");
                    }
                } else {
                    owner[i] = label; // the owner is gone: the flow moved on legitimately
                }
            }
        }
        Ok(())
    };
    // Paced: the flows' packets are spread over the period in 5 ms steps
    // (a burst of 1,000 would overflow the server's receive buffer by itself).
    let step = Duration::from_millis(5);
    let steps = (period.as_millis() / step.as_millis()).max(1) as usize;
    let per_step = flows.div_ceil(steps);
    while !sh.stop.load(Ordering::Relaxed) {
        seq += 1;
        for (k, chunk) in socks.chunks(per_step).enumerate() {
            let t0 = Instant::now();
            for (j, s) in chunk.iter().enumerate() {
                c.udp_sent += 1;
                let mut req = [0u8; 8];
                req[..4].copy_from_slice(&seq.to_be_bytes());
                req[4..].copy_from_slice(&owner[k * per_step + j].to_be_bytes());
                let _ = s.send(&req);
            }
            drain(&socks, &mut owner, &mut c, seq)?;
            if let Some(rest) = step.checked_sub(t0.elapsed()) {
                std::thread::sleep(rest);
            }
        }
    }
    // Late replies.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1000) && c.udp_replies < c.udp_sent {
        drain(&socks, &mut owner, &mut c, seq)?;
        std::thread::sleep(Duration::from_millis(10));
    }
    c.lost = c.udp_sent.saturating_sub(c.udp_replies);
    Ok(c)
}

fn debug(t0: Instant, what: &str) {
    if std::env::var_os("FLOWPIN_RELEASE_DEBUG").is_some() {
        eprintln!("[{:8.3}] {what}", t0.elapsed().as_secs_f64());
    }
}

/// One strategy: a fresh namespace, 1 + `args.releases` server processes
/// under load, the counts.
pub(crate) fn run_strategy(args: &Args, strategy: Strategy, port: u16) -> Res<Counts> {
    let t0 = Instant::now();
    let ns = NetNs::new(&format!("rel{}", port % 100))?;
    // As an operator who knows the kernel would run plain reuseport: closing
    // a listener migrates its queued requests to the rest of the group
    // instead of resetting them. Only the labelled row runs without it.
    let migrate = if strategy == Strategy::ReuseportNoMigrate {
        "0"
    } else {
        "1"
    };
    ns.sysctl("net.ipv4.tcp_migrate_req", migrate)?;
    let addr = SocketAddr::new(IP.parse()?, port);
    let pin = PathBuf::from(format!(
        "/sys/fs/bpf/flowpin-release-{}-{}",
        std::process::id(),
        strategy.name()
    ));
    if strategy == Strategy::Flowpin {
        flowpin::sk_reuseport::ensure_bpffs()?;
        std::fs::create_dir_all(&pin)?;
    }
    let sh = Arc::new(Shared::default());
    let trial = Trial {
        args,
        strategy,
        ns: &ns,
        port,
        pin: &pin,
    };
    let res = (|| -> Res<Counts> {
        sh.alive.lock().map_err(|_| "poisoned")?.insert(1);
        let mut cur = Server::spawn(&trial, 1, true, None)?;
        cur.expect("READY")?;
        let mut tcp = Vec::new();
        for _ in 0..2 {
            let sh2 = sh.clone();
            tcp.push(ns.spawn(move || tcp_worker(addr, sh2))?);
        }
        let (flows, period, sh2) = (
            args.udp_flows,
            Duration::from_millis(args.udp_period_ms),
            sh.clone(),
        );
        let udp = ns.spawn(move || udp_worker(addr, flows, period, sh2))?;
        std::thread::sleep(Duration::from_millis(500));
        for r in 0..args.releases {
            std::thread::sleep(Duration::from_millis(args.interval_ms));
            let label = r + 2;
            debug(t0, &format!("{}: release {label}", strategy.name()));
            if strategy == Strategy::Naive {
                cur.stop(&sh)?;
                sh.alive.lock().map_err(|_| "poisoned")?.insert(label);
                cur = Server::spawn(&trial, label, false, None)?;
                cur.expect("READY")?;
                continue;
            }
            sh.alive.lock().map_err(|_| "poisoned")?.insert(label);
            let takeover = strategy.passes_fds().then(|| ctl_path(&pin, cur.label));
            let mut next = Server::spawn(&trial, label, false, takeover.as_deref())?;
            if strategy.passes_fds() {
                cur.send("handover")?;
                cur.expect("HANDED")?;
            }
            next.expect("READY")?;
            let old = std::mem::replace(&mut cur, next);
            old.stop(&sh)?;
        }
        std::thread::sleep(Duration::from_millis(500));
        debug(t0, "stopping the load");
        sh.stop.store(true, Ordering::Relaxed);
        for t in tcp {
            let _ = t.join();
        }
        debug(t0, "TCP clients stopped");
        let mut c = udp.join().map_err(|_| "UDP load generator panicked")??;
        debug(t0, "UDP flows stopped");
        cur.stop(&sh)?;
        debug(t0, "last server stopped");
        if std::env::var_os("FLOWPIN_RELEASE_DEBUG").is_some() {
            let snmp = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
            for l in snmp.lines().filter(|l| l.starts_with("Udp:")) {
                eprintln!("{l}");
            }
        }
        c.refused = sh.refused.load(Ordering::Relaxed);
        c.reset = sh.reset.load(Ordering::Relaxed);
        c.timeouts = sh.timeouts.load(Ordering::Relaxed);
        c.tcp_ok = sh.tcp_ok.load(Ordering::Relaxed);
        c.server_cpu_ms = sh.server_cpu_us.load(Ordering::Relaxed) as f64 / 1000.0;
        c.forward_latency_ns =
            std::mem::take(&mut *sh.forward_latency_ns.lock().map_err(|_| "poisoned")?);
        Ok(c)
    })();
    sh.stop.store(true, Ordering::Relaxed);
    for label in 1..=args.releases + 1 {
        let _ = std::fs::remove_file(ctl_path(&pin, label));
    }
    if strategy == Strategy::Flowpin {
        let _ = ReuseportGroup::remove_pins(pin.join("tcp"));
        let _ = ReuseportGroup::remove_pins(pin.join("udp"));
        let _ = std::fs::remove_dir(&pin);
    }
    res
}
