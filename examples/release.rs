//! Zero-downtime release harness: four ways to release a server, measured
//! side by side under the same load, in a network namespace this program
//! creates.
//!
//! A TCP echo and a UDP echo service share one port. A load generator keeps
//! opening short TCP connections (connect, request, reply, close) and holds
//! 1,000 long-lived UDP flows. Then 20 releases in a row: each starts a NEW
//! PROCESS (this binary re-executed in server mode) that takes over while
//! the old one exits.
//!
//! | strategy | how the new process takes over |
//! |---|---|
//! | `naive` | the old process stops, then the new one binds |
//! | `reuseport` | plain `SO_REUSEPORT`: the new one binds beside the old one, the old one closes |
//! | `fd-passing` | the old process hands its sockets over a Unix socket (`SCM_RIGHTS`) |
//! | `flowpin` | `flowpin-sk-reuseport`: join the pinned group, add a generation, flip, old one drains |
//!
//! Counted per strategy: refused and reset TCP connections, timeouts, UDP
//! replies from the wrong generation (every reply carries the generation
//! that answered; "wrong" = not the generation that owns the flow while that
//! one still runs), and lost UDP packets. A second table compares UDP
//! throughput of a flowpin group (one socket per CPU, steered by CPU) with
//! one socket read by one thread.
//!
//! ```text
//! cargo run --release --example release            # tables
//! cargo run --release --example release -- --json  # one JSON object
//! cargo run --release --example release -- --releases 5 --strategies flowpin,naive
//! ```
//! Needs root (network namespaces, BPF).

use std::collections::HashSet;
use std::error::Error;
use std::io::{BufRead, BufReader, ErrorKind, IoSlice, IoSliceMut, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use flowpin_bpf_progs::testing::{enter_netns, NetNs};
use flowpin_sk_reuseport::{bind_reuseport, GroupConfig, Proto, ReuseportGroup, SelectMode};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const STRATEGIES: [&str; 4] = ["naive", "reuseport", "fd-passing", "flowpin"];
const IP: &str = "127.0.0.1";
const UDP_SOCKETS_PER_PROCESS: usize = 2;

#[derive(Parser, Debug, Clone)]
#[command(about = "Zero-downtime release harness: naive / reuseport / fd-passing / flowpin")]
struct Args {
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Releases in a row per strategy.
    #[arg(long, default_value_t = 20)]
    releases: u32,
    /// Long-lived UDP flows.
    #[arg(long, default_value_t = 1000)]
    udp_flows: usize,
    /// Each UDP flow sends one packet per this many milliseconds.
    #[arg(long, default_value_t = 100)]
    udp_period_ms: u64,
    /// Pause between releases (ms).
    #[arg(long, default_value_t = 300)]
    interval_ms: u64,
    /// How long an old process keeps serving its UDP flows after the handover (ms).
    #[arg(long, default_value_t = 150)]
    drain_ms: u64,
    /// Strategies to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = STRATEGIES.map(String::from))]
    strategies: Vec<String>,
    /// Seconds per receiver for the UDP throughput table, split over 8
    /// alternating rounds (0 = skip the table).
    #[arg(long, default_value_t = 8)]
    throughput_secs: u64,
    /// Offered load of each UDP throughput sender, datagrams/s (open loop:
    /// above what one reader takes, so the readers are what is measured).
    #[arg(long, default_value_t = 1_000_000.0)]
    udp_offered_pps: f64,

    // ---- server mode (this binary re-executed by the harness) ----
    #[arg(long, hide = true)]
    serve: Option<String>,
    #[arg(long, hide = true, default_value_t = 0)]
    label: u32,
    #[arg(long, hide = true)]
    netns: Option<PathBuf>,
    #[arg(long, hide = true, default_value_t = 0)]
    port: u16,
    #[arg(long, hide = true)]
    pin: Option<PathBuf>,
    #[arg(long, hide = true)]
    ctl: Option<PathBuf>,
    #[arg(long, hide = true)]
    takeover: Option<PathBuf>,
    #[arg(long, hide = true)]
    first: bool,
}

fn main() {
    let args = Args::parse();
    let r = if args.serve.is_some() {
        serve(&args)
    } else {
        harness(&args)
    };
    if let Err(e) = r {
        eprintln!("release: {e}");
        std::process::exit(1);
    }
}

// ======================================================================
// Server mode
// ======================================================================

struct Sockets {
    tcp: TcpListener,
    udp: Vec<UdpSocket>,
}

fn bind_plain(addr: SocketAddr) -> Res<Sockets> {
    // The old process has just exited; retry while the port is still held.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = (|| -> std::io::Result<Sockets> {
            let t = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            t.set_reuse_address(true)?;
            t.bind(&addr.into())?;
            t.listen(1024)?;
            let u = UdpSocket::bind(addr)?;
            Ok(Sockets {
                tcp: t.into(),
                udp: vec![u],
            })
        })();
        match r {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => return Err(format!("bind {addr}: {e}").into()),
        }
    }
}

fn bind_group(addr: SocketAddr) -> Res<Sockets> {
    let tcp: TcpListener = bind_reuseport(addr, Proto::Tcp)?.into();
    let mut udp = Vec::new();
    for _ in 0..UDP_SOCKETS_PER_PROCESS {
        let s: UdpSocket = bind_reuseport(addr, Proto::Udp)?.into();
        udp.push(s);
    }
    Ok(Sockets { tcp, udp })
}

/// fd-passing: receive the predecessor's sockets (TCP listener first).
fn take_over(path: &Path) -> Res<Sockets> {
    let s = UnixStream::connect(path)?;
    let mut buf = [0u8; 16];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 8]);
    let msg = nix::sys::socket::recvmsg::<()>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(v) = c {
            for fd in v {
                // SAFETY: the kernel just installed this fd in our table for us
                // (SCM_RIGHTS); nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    let mut it = fds.into_iter();
    let tcp = TcpListener::from(it.next().ok_or("no TCP listener received")?);
    let udp: Vec<UdpSocket> = it.map(UdpSocket::from).collect();
    if udp.is_empty() {
        return Err("no UDP socket received".into());
    }
    Ok(Sockets { tcp, udp })
}

fn hand_over(ctl: &UnixListener, socks: &Sockets) -> Res<()> {
    let (conn, _) = ctl.accept()?;
    let mut fds = vec![socks.tcp.as_raw_fd()];
    fds.extend(socks.udp.iter().map(|u| u.as_raw_fd()));
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(
        conn.as_raw_fd(),
        &[IoSlice::new(b"fds")],
        &cmsg,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

struct Flags {
    accepting: AtomicBool,
    udp_quit_now: AtomicBool,
    udp_quit_when_empty: AtomicBool,
}

fn serve_tcp(
    l: TcpListener,
    label: u32,
    flags: Arc<Flags>,
) -> std::thread::JoinHandle<TcpListener> {
    std::thread::spawn(move || {
        let _ = l.set_nonblocking(true);
        while flags.accepting.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                    let mut b = [0u8; 64];
                    if let Ok(n) = s.read(&mut b) {
                        let mut reply = format!("{label}:").into_bytes();
                        reply.extend_from_slice(&b[..n]);
                        let _ = s.write_all(&reply);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        l
    })
}

fn serve_udp(u: UdpSocket, label: u32, flags: Arc<Flags>) -> std::thread::JoinHandle<UdpSocket> {
    std::thread::spawn(move || {
        let _ = u.set_read_timeout(Some(Duration::from_millis(20)));
        let mut b = [0u8; 64];
        let echo = |u: &UdpSocket, n: usize, b: &[u8], from| {
            let mut reply = [0u8; 8];
            reply[..4].copy_from_slice(&label.to_be_bytes());
            let k = n.min(4);
            reply[4..4 + k].copy_from_slice(&b[..k]);
            let _ = u.send_to(&reply, from);
        };
        loop {
            if flags.udp_quit_now.load(Ordering::Relaxed) {
                break;
            }
            if flags.udp_quit_when_empty.load(Ordering::Relaxed) {
                // Answer what is queued now, then close.
                let _ = u.set_nonblocking(true);
                while let Ok((n, from)) = u.recv_from(&mut b) {
                    echo(&u, n, &b, from);
                }
                break;
            }
            if let Ok((n, from)) = u.recv_from(&mut b) {
                echo(&u, n, &b, from);
            }
        }
        u
    })
}

fn say(line: &str) -> Res<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{line}")?;
    o.flush()?;
    Ok(())
}

fn serve(args: &Args) -> Res<()> {
    let strategy = args.serve.clone().unwrap_or_default();
    if let Some(ns) = &args.netns {
        // setns on the main thread before any other thread exists, so every
        // thread of this process lives in the namespace. (Not `ip netns exec`:
        // it remounts /sys, hiding the bpffs at /sys/fs/bpf.)
        enter_netns(ns, &ns.display().to_string())?;
    }
    let addr: SocketAddr = SocketAddr::new(IP.parse()?, args.port);
    let label = args.label;
    let mut groups: Option<(ReuseportGroup, ReuseportGroup)> = None;
    let mut gens = None;
    let socks = match strategy.as_str() {
        "naive" => bind_plain(addr)?,
        "reuseport" => bind_group(addr)?,
        "fd-passing" => match &args.takeover {
            Some(p) => take_over(p)?,
            None => bind_group(addr)?,
        },
        "flowpin" => {
            let pin = args.pin.clone().ok_or("flowpin needs --pin")?;
            let (tg, ug) = if args.first {
                let mut tc = GroupConfig::new(pin.join("tcp"));
                tc.tcp_mode = SelectMode::Hash;
                let mut uc = GroupConfig::new(pin.join("udp"));
                uc.flow_table_size = 16_384;
                (
                    ReuseportGroup::create(addr, Proto::Tcp, tc)?,
                    ReuseportGroup::create(addr, Proto::Udp, uc)?,
                )
            } else {
                (
                    ReuseportGroup::join(pin.join("tcp"))?,
                    ReuseportGroup::join(pin.join("udp"))?,
                )
            };
            let s = bind_group(addr)?;
            // Bound but not in the maps: this process gets nothing yet (warm-up).
            let tgen = tg.add_generation(&[&s.tcp])?;
            let ugen = ug.add_generation(&s.udp)?;
            ug.activate(ugen)?;
            tg.activate(tgen)?;
            gens = Some((tgen, ugen));
            groups = Some((tg, ug));
            s
        }
        other => return Err(format!("unknown strategy {other}").into()),
    };
    let flags = Arc::new(Flags {
        accepting: AtomicBool::new(true),
        udp_quit_now: AtomicBool::new(false),
        udp_quit_when_empty: AtomicBool::new(false),
    });
    let ctl = match &args.ctl {
        Some(p) => Some(UnixListener::bind(p)?),
        None => None,
    };
    // fd-passing hands over the very same sockets, so keep raw copies for the handover.
    let tcp_t = serve_tcp(socks.tcp.try_clone()?, label, flags.clone());
    let mut udp_t = Vec::new();
    for u in &socks.udp {
        udp_t.push(serve_udp(u.try_clone()?, label, flags.clone()));
    }
    say("READY")?;

    let stdin = std::io::stdin();
    let mut line = String::new();
    let mut next = || -> Res<String> {
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Err("harness closed stdin".into());
        }
        Ok(line.trim().to_string())
    };

    let mut cmd = next()?;
    if cmd == "handover" {
        let ctl = ctl.as_ref().ok_or("handover without --ctl")?;
        hand_over(ctl, &socks)?;
        // The successor owns the sockets now: stop reading and accepting at once.
        flags.udp_quit_now.store(true, Ordering::Relaxed);
        flags.accepting.store(false, Ordering::Relaxed);
        say("HANDED")?;
        cmd = next()?;
    }
    if cmd != "stop" {
        return Err(format!("expected stop, got {cmd}").into());
    }
    // Old UDP flows stay with us while we drain (flowpin keeps them here; the
    // others can't tell flows apart).
    // (fd-passing: we no longer read them, but we still run, draining our
    // TCP connections and holding the UDP flows' state, for as long.)
    if strategy != "naive" {
        std::thread::sleep(Duration::from_millis(args.drain_ms));
    }
    say("CLOSING")?;
    if next()? != "ok" {
        return Err("expected ok".into());
    }
    if let (Some((tg, ug)), Some((tgen, ugen))) = (&groups, gens) {
        // Take our UDP sockets out of the map: our flows re-home to the live
        // generation, and we answer what is already queued before closing.
        // (The last process of the run is still live: nobody to hand over to.)
        if ug.live()? != Some(ugen) {
            ug.remove(ugen)?;
            // Packets that picked our sockets just before the removal may
            // still be on their way to our queues (other CPUs, RCU): keep
            // serving a moment, then answer the rest and close.
            std::thread::sleep(Duration::from_millis(20));
        }
        if tg.live()? != Some(tgen) {
            tg.retire(tgen)?;
        }
    }
    flags.udp_quit_when_empty.store(true, Ordering::Relaxed);
    for t in udp_t {
        let _ = t.join();
    }
    flags.accepting.store(false, Ordering::Relaxed);
    let _ = tcp_t.join();
    drop(socks); // closing the listener: flowpin migrates its queue; plain reuseport resets it
    if let Some(p) = &args.ctl {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

// ======================================================================
// Harness
// ======================================================================

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    refused: u64,
    reset: u64,
    timeouts: u64,
    misrouted: u64,
    lost: u64,
    tcp_ok: u64,
    udp_sent: u64,
    udp_replies: u64,
}

#[derive(Default)]
struct Shared {
    refused: AtomicU64,
    reset: AtomicU64,
    timeouts: AtomicU64,
    tcp_ok: AtomicU64,
    stop: AtomicBool,
    alive: Mutex<HashSet<u32>>,
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
    strategy: &'a str,
    ns: &'a NetNs,
    port: u16,
    pin: &'a Path,
}

impl Server {
    fn spawn(t: &Trial<'_>, label: u32, first: bool, takeover: Option<&Path>) -> Res<Server> {
        let Trial {
            args,
            strategy,
            ns,
            port,
            pin,
        } = *t;
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.args([
            "--serve",
            strategy,
            "--label",
            &label.to_string(),
            "--port",
            &port.to_string(),
        ])
        .arg("--netns")
        .arg(ns.path())
        .arg("--pin")
        .arg(pin)
        .args(["--drain-ms", &args.drain_ms.to_string()]);
        if first {
            cmd.arg("--first");
        }
        if strategy == "fd-passing" {
            cmd.arg("--ctl").arg(ctl_path(pin, label));
        }
        if let Some(t) = takeover {
            cmd.arg("--takeover").arg(t);
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

    /// Stops the server: it drains, says CLOSING; we mark it gone and let it close.
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
        Ok(())
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

/// The UDP flows: every `period` each flow sends one packet `[seq u32]`;
/// replies are `[label u32][seq u32]`.
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
    let mut drain = |socks: &[UdpSocket], owner: &mut [u32], c: &mut Counts| -> Res<()> {
        let alive = sh.alive.lock().map_err(|_| "poisoned")?.clone();
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
                } else if !alive.contains(&label) {
                    // A late reply from a generation that has closed: delivered right at the time.
                } else if alive.contains(&o) {
                    c.misrouted += 1;
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
        for chunk in socks.chunks(per_step) {
            let t0 = Instant::now();
            for s in chunk {
                c.udp_sent += 1;
                let _ = s.send(&seq.to_be_bytes());
            }
            drain(&socks, &mut owner, &mut c)?;
            if let Some(rest) = step.checked_sub(t0.elapsed()) {
                std::thread::sleep(rest);
            }
        }
    }
    // Late replies.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1000) && c.udp_replies < c.udp_sent {
        drain(&socks, &mut owner, &mut c)?;
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

fn run_strategy(args: &Args, strategy: &str, port: u16) -> Res<Counts> {
    let t0 = Instant::now();
    let ns = NetNs::new(&format!("rel{}", &strategy[..2]))?;
    ns.sysctl("net.ipv4.tcp_migrate_req", "0")?; // kernel default; flowpin's group sets it to 1
    let addr = SocketAddr::new(IP.parse()?, port);
    let pin = PathBuf::from(format!(
        "/sys/fs/bpf/flowpin-release-{}-{strategy}",
        std::process::id()
    ));
    if strategy == "flowpin" {
        flowpin_sk_reuseport::ensure_bpffs()?;
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
            debug(t0, &format!("{strategy}: release {label}"));
            if strategy == "naive" {
                cur.stop(&sh)?;
                sh.alive.lock().map_err(|_| "poisoned")?.insert(label);
                cur = Server::spawn(&trial, label, false, None)?;
                cur.expect("READY")?;
                continue;
            }
            sh.alive.lock().map_err(|_| "poisoned")?.insert(label);
            let takeover = (strategy == "fd-passing").then(|| ctl_path(&pin, cur.label));
            let mut next = Server::spawn(&trial, label, false, takeover.as_deref())?;
            if strategy == "fd-passing" {
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
        Ok(c)
    })();
    sh.stop.store(true, Ordering::Relaxed);
    for label in 1..=args.releases + 1 {
        let _ = std::fs::remove_file(ctl_path(&pin, label));
    }
    if strategy == "flowpin" {
        let _ = ReuseportGroup::remove_pins(pin.join("tcp"));
        let _ = ReuseportGroup::remove_pins(pin.join("udp"));
        let _ = std::fs::remove_dir(&pin);
    }
    res
}

// ---------------------------------------------------------------- throughput

fn pin_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// Packets per second received by `readers` (socket, cpu) while one sender
/// per CPU floods the port for `secs`.
fn measure_pps(
    ns: &NetNs,
    addr: SocketAddr,
    readers: &[(Arc<UdpSocket>, Option<usize>)],
    ncpu: usize,
    secs: f64,
    offered_pps: f64,
) -> Res<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for (s, cpu) in readers.iter().cloned() {
        let (stop, count) = (stop.clone(), count.clone());
        hs.push(std::thread::spawn(move || {
            if let Some(c) = cpu {
                pin_cpu(c);
            }
            let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
            let mut b = [0u8; 2048];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if s.recv(&mut b).is_ok() {
                    n += 1;
                }
            }
            count.fetch_add(n, Ordering::Relaxed);
        }));
    }
    let mut senders = Vec::new();
    for cpu in 0..ncpu {
        let stop = stop.clone();
        senders.push(ns.spawn(move || {
            pin_cpu(cpu);
            // Connected: the route is looked up once, not per datagram, so
            // the senders (which share the 2 CPUs) leave more to the readers.
            let Ok(s) = UdpSocket::bind((IP, 0)) else {
                return;
            };
            if s.connect(addr).is_err() {
                return;
            }
            // UDP GSO: one send() of 64 x 64 bytes leaves as 64 datagrams
            // (UDP_SEGMENT), so generating load costs the 2 shared CPUs little
            // and the receivers are what is measured. The kernel splits the
            // batch before the socket queue; every datagram is counted.
            use nix::sys::socket::{setsockopt, sockopt::UdpGsoSegment};
            let gso = setsockopt(&s, UdpGsoSegment, &64).is_ok();
            // Open loop at a fixed offered rate (more than one reader can
            // take): a sender that is ahead sleeps instead of spinning, so it
            // does not steal the CPU time the readers are measured on.
            let payload = [0x5au8; 64 * 64];
            let t0 = Instant::now();
            let mut sent = 0f64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..8 {
                    if gso {
                        let _ = s.send(&payload);
                    } else {
                        for chunk in payload.chunks(64) {
                            let _ = s.send(chunk);
                        }
                    }
                }
                sent += 8.0 * 64.0;
                let due = Duration::from_secs_f64(sent / offered_pps);
                if let Some(ahead) = due.checked_sub(t0.elapsed()) {
                    std::thread::sleep(ahead);
                }
            }
        })?);
    }
    std::thread::sleep(Duration::from_millis(300)); // warm-up, not counted
    let before = count.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let el = t0.elapsed().as_secs_f64();
    for h in senders {
        let _ = h.join();
    }
    for h in hs {
        let _ = h.join();
    }
    // Readers count up to the stop; the 300 ms warm-up is counted too, so
    // scale by the whole run for an honest rate.
    let total = count.load(Ordering::Relaxed) - before;
    Ok(total as f64 / (el + 0.3))
}

struct Throughput {
    /// Median packets/s of one socket read by one thread.
    single: f64,
    /// Median packets/s of the group.
    group: f64,
    /// Median of the per-round ratios group / single.
    ratio: f64,
    ncpu: usize,
}

fn throughput(secs: u64, offered_pps: f64) -> Res<Throughput> {
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(64);
    let ns = NetNs::new("reltp")?;
    // Baseline: one socket, one reader thread.
    let a1: SocketAddr = SocketAddr::new(IP.parse()?, 9101);
    let single = ns.run(move || UdpSocket::bind(a1))??;
    let single_readers = vec![(Arc::new(single), None)];
    // The group: one socket per CPU, steered by CPU, each read by a thread on that CPU.
    let a2: SocketAddr = SocketAddr::new(IP.parse()?, 9102);
    let pin = PathBuf::from(format!(
        "/sys/fs/bpf/flowpin-release-tp-{}",
        std::process::id()
    ));
    let (group, socks) = ns.run(move || -> Res<(ReuseportGroup, Vec<UdpSocket>)> {
        let mut c = GroupConfig::new(&pin);
        c.udp_mode = SelectMode::Cpu;
        c.unpin_on_drop = true;
        let g = ReuseportGroup::create(a2, Proto::Udp, c)?;
        let socks: Vec<UdpSocket> = (0..ncpu)
            .map(|_| bind_reuseport(a2, Proto::Udp).map(UdpSocket::from))
            .collect::<Result<_, _>>()?;
        let gen = g.add_generation(&socks)?;
        g.activate(gen)?;
        Ok((g, socks))
    })??;
    let group_readers: Vec<_> = socks
        .into_iter()
        .enumerate()
        .map(|(i, s)| (Arc::new(s), Some(i)))
        .collect();
    // Alternate the two in paired rounds (ABBA) so drift hits both alike;
    // report the median of each and the median of the per-round ratios.
    const ROUNDS: usize = 8;
    let each = secs as f64 / ROUNDS as f64;
    let (mut singles, mut groups, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (s, g) = if round % 2 == 0 {
            let s = measure_pps(&ns, a1, &single_readers, ncpu, each, offered_pps)?;
            (
                s,
                measure_pps(&ns, a2, &group_readers, ncpu, each, offered_pps)?,
            )
        } else {
            let g = measure_pps(&ns, a2, &group_readers, ncpu, each, offered_pps)?;
            (
                measure_pps(&ns, a1, &single_readers, ncpu, each, offered_pps)?,
                g,
            )
        };
        singles.push(s);
        groups.push(g);
        ratios.push(g / s.max(1.0));
    }
    drop(group);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let single = median(&mut singles);
    let grouped = median(&mut groups);
    let ratio = median(&mut ratios);
    Ok(Throughput {
        single,
        group: grouped,
        ratio,
        ncpu,
    })
}

// ---------------------------------------------------------------- output

fn harness(args: &Args) -> Res<()> {
    if !(args.udp_offered_pps.is_finite() && args.udp_offered_pps >= 1.0) {
        return Err(format!(
            "--udp-offered-pps {} must be a rate of at least 1 datagram/s",
            args.udp_offered_pps
        )
        .into());
    }
    for s in &args.strategies {
        if !STRATEGIES.contains(&s.as_str()) {
            return Err(format!("unknown strategy {s} (known: {STRATEGIES:?})").into());
        }
    }
    let t0 = Instant::now();
    let mut results = Vec::new();
    for (i, s) in STRATEGIES
        .iter()
        .filter(|s| args.strategies.iter().any(|x| x == *s))
        .enumerate()
    {
        if !args.json {
            eprintln!("running {s}: {} releases ...", args.releases);
        }
        let c = run_strategy(args, s, 9000 + i as u16)?;
        results.push((*s, c));
    }
    let tp = if args.throughput_secs > 0 {
        if !args.json {
            eprintln!(
                "measuring UDP throughput ({} s each) ...",
                args.throughput_secs
            );
        }
        Some(throughput(args.throughput_secs, args.udp_offered_pps)?)
    } else {
        None
    };
    let ratio = tp.as_ref().map(|t| t.ratio);
    if args.json {
        let mut out = String::from("{");
        for (i, (s, c)) in results.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!(
                "\"{s}\": {{\"refused\": {}, \"reset\": {}, \"timeouts\": {}, \"misrouted\": {}, \"lost\": {}}}",
                c.refused, c.reset, c.timeouts, c.misrouted, c.lost
            ));
        }
        let r = ratio.map_or("null".to_string(), |r| format!("{r:.3}"));
        out.push_str(&format!(
            "{}\"udp_throughput_ratio\": {r}}}",
            if results.is_empty() { "" } else { ", " }
        ));
        println!("{out}");
        return Ok(());
    }
    println!(
        "\n{} releases per strategy, each a new process; load: short TCP connections (2 clients) + {} UDP flows (1 packet / {} ms each)\n",
        args.releases, args.udp_flows, args.udp_period_ms
    );
    println!(
        "| {:<10} | {:>7} | {:>5} | {:>8} | {:>9} | {:>6} | {:>8} | {:>9} |",
        "strategy", "refused", "reset", "timeouts", "misrouted", "lost", "tcp ok", "udp sent"
    );
    println!(
        "|{:-<12}|{:->9}|{:->7}|{:->10}|{:->11}|{:->8}|{:->10}|{:->11}|",
        "", "", "", "", "", "", "", ""
    );
    for (s, c) in &results {
        println!(
            "| {:<10} | {:>7} | {:>5} | {:>8} | {:>9} | {:>6} | {:>8} | {:>9} |",
            s, c.refused, c.reset, c.timeouts, c.misrouted, c.lost, c.tcp_ok, c.udp_sent
        );
    }
    if let Some(t) = tp {
        println!(
            "\nUDP throughput: {} senders (one per CPU) offering {:.0} datagrams/s each (UDP GSO, 64 x 64-byte datagrams per send), readers recv() one datagram per call, {} s each in 8 alternating rounds (medians)\n",
            t.ncpu, args.udp_offered_pps, args.throughput_secs
        );
        println!("| {:<44} | {:>12} |", "receiver", "packets/s");
        println!("|{:-<46}|{:->14}|", "", "");
        println!(
            "| {:<44} | {:>12.0} |",
            "one socket, one thread (baseline)", t.single
        );
        println!(
            "| {:<44} | {:>12.0} |",
            format!("flowpin group: {} sockets steered by CPU", t.ncpu),
            t.group
        );
        println!(
            "| {:<44} | {:>11.2}x |",
            "ratio (median of per-round ratios)", t.ratio
        );
    }
    eprintln!("\ntotal time {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
