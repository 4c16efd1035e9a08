//! One socket for every port of 10.0.0.0/24, through `sk_lookup`, and the
//! bind() pitfall turned around.
//!
//! In a network namespace it creates (10.0.0.0/24 and 10.1.0.0/16 routed
//! locally on `lo`, AnyIP), this program:
//!
//! 1. binds one TCP listener and one UDP socket to 127.0.0.1, adds one TCP
//!    and one UDP binding `10.0.0.0/24, any port → "any"`, and checks that
//!    connections and datagrams to addresses and ports all over the /24
//!    reach those sockets (any miss fails the run: `--quick` is the CI check);
//! 2. measures connect-request-close (CRR) rate with the program attached
//!    over without, for a destination that matches a binding (steered to
//!    the one socket, against a listener bound there the ordinary way) and
//!    one that does not (a plain listener; the program runs and finds
//!    nothing). Each round runs four blocks, attached/detached in ABBA order
//!    (BAAB on odd rounds), each block the hit then the miss destination,
//!    the thread (client and server) pinned to one CPU (`--cpu`, default the
//!    last); the ratio is the median over rounds, printed with the min and
//!    max of the per-round ratios and the load average;
//! 3. sets up `--addrs` (2,000) addresses × 10 ports both ways: with bind()
//!    (one listening socket each, plain binds, the fast path) and with
//!    sk_lookup bindings (`bind_many`: host prefixes, one batch update of
//!    the program's hash) to the one socket; prints
//!    sockets, kernel memory (`Slab` in /proc/meminfo before/after), set-up
//!    time and p99 of a new connection to a random one of them.
//!
//! ```text
//! cargo run --release --example any_port            # table
//! cargo run --release --example any_port -- --json   # table, then one JSON line
//! cargo run --release --example any_port -- --quick  # CI: small sizes, invariants only matter
//! ```
//! Needs root. All traffic stays inside the namespace.

use std::error::Error;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use flowpin::sk_lookup::{Binding, Dispatcher, Label, Port, Prefix, Proto};
use flowpin_testing::{unique_name, NetNs};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

#[derive(Parser, Debug)]
#[command(about = "One socket for every port of a /24 with sk_lookup, against bind()")]
struct Args {
    /// Small sizes for CI; fails on a broken invariant.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// Rounds of the CRR comparison (each: 4 blocks, ABBA or BAAB).
    #[arg(long, default_value_t = 40)]
    rounds: usize,
    /// Connections per destination per block.
    #[arg(long, default_value_t = 400)]
    conns: usize,
    /// CPU the CRR thread (client and server) is pinned to; default: the last.
    #[arg(long)]
    cpu: Option<usize>,
    /// Leave the CRR thread to the scheduler (no pinning).
    #[arg(long, conflicts_with = "cpu")]
    no_pin: bool,
    /// Addresses of the set-up comparison (× 10 ports).
    #[arg(long, default_value_t = 2000)]
    addrs: usize,
}

const PORTS_PER_ADDR: u16 = 10;
/// Set-ups per side in the set-up comparison (the best is the figure).
const SETUP_REPS: usize = 3;

/// One connect-request-close against `l`: connect, 1 byte each way, close.
fn crr(dst: SocketAddr, l: &TcpListener) -> Res<Duration> {
    let t = Instant::now();
    let mut c = TcpStream::connect(dst)?;
    let (mut s, _) = l.accept()?;
    c.write_all(b"q")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    s.write_all(b"r")?;
    c.read_exact(&mut b)?;
    drop(s);
    drop(c);
    Ok(t.elapsed())
}

/// Seconds of wall-clock time `n` CRRs take.
fn crr_secs(dst: SocketAddr, l: &TcpListener, n: usize) -> Res<f64> {
    let t = Instant::now();
    for _ in 0..n {
        crr(dst, l)?;
    }
    Ok(t.elapsed().as_secs_f64())
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// (min, max) of the per-round ratios.
fn spread(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Pins the calling thread to `cpu` (if given) and gives it nice -20, so
/// that the other work of a shared machine takes less of its CPU (the same
/// for both sides of the comparison).
fn pin_to(cpu: Option<usize>) -> Res<()> {
    // SAFETY: setpriority on the calling thread (who = 0) with plain integers.
    if unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, -20) } != 0 {
        return Err(format!(
            "setpriority(-20) for the CRR thread: {}",
            std::io::Error::last_os_error()
        )
        .into());
    }
    if let Some(c) = cpu {
        let mut set = nix::sched::CpuSet::new();
        set.set(c)?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .map_err(|e| format!("pinning the CRR thread to CPU {c}: {e}"))?;
    }
    Ok(())
}

/// The three load averages of /proc/loadavg, as text.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Kernel memory of a BPF map as the kernel accounts it (`memlock:` of its
/// fdinfo), in KiB.
fn map_kib(m: &impl std::os::fd::AsFd) -> u64 {
    use std::os::fd::AsRawFd;
    let fd = m.as_fd().as_raw_fd();
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .map_or(0, |b| b / 1024)
}

fn slab_kb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("Slab:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn nofile_max() -> Res<u64> {
    let mut lim = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct into a live local.
    if unsafe { nix::libc::getrlimit(nix::libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()).into());
    }
    Ok(lim.rlim_max)
}

/// A forked child holding bind() sockets `from..to`; killed on drop.
struct Binder {
    pid: nix::unistd::Pid,
    ready: std::fs::File,
}

impl Binder {
    fn wait_bound(&self) -> Res<()> {
        let mut b = [0u8; 1];
        (&self.ready).read_exact(&mut b)?;
        if b[0] != b'k' {
            return Err("the binder child failed to bind its sockets".into());
        }
        Ok(())
    }
}

impl Drop for Binder {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

fn fork_binder(ns: &NetNs, from: usize, to: usize) -> Res<Binder> {
    let (r, w) = nix::unistd::pipe()?;
    // SAFETY: no other thread of this process runs at this point (the
    // namespace threads are joined), and the child only makes syscalls and
    // small allocations before it blocks and is killed.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            drop(r);
            let mut w = std::fs::File::from(w);
            let ok = ns.enter_current_thread().is_ok() && {
                let v: Result<Vec<TcpListener>, _> = (from..to)
                    .map(|k| {
                        TcpListener::bind(SocketAddrV4::new(
                            setup_addr(k / 10),
                            setup_port((k % 10) as u16),
                        ))
                    })
                    .collect();
                let ok = v.is_ok();
                std::mem::forget(v);
                ok
            };
            let _ = w.write_all(if ok { b"k" } else { b"e" });
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        nix::unistd::ForkResult::Parent { child } => Ok(Binder {
            pid: child,
            ready: std::fs::File::from(r),
        }),
    }
}

fn set_nofile(n: u64) -> Res<()> {
    let lim = nix::libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit reads one rlimit struct from a live local.
    if unsafe { nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!(
            "setrlimit(NOFILE, {n}): {}",
            std::io::Error::last_os_error()
        )
        .into());
    }
    Ok(())
}

/// 10.1.0.0/16 address number `i`.
fn setup_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8)
}

fn setup_port(j: u16) -> u16 {
    20_000 + j
}

struct Pins(PathBuf);
impl Drop for Pins {
    fn drop(&mut self) {
        let _ = Dispatcher::remove(&self.0);
    }
}

fn check_invariants(ns: &NetNs, tcp: &TcpListener, udp: &UdpSocket) -> Res<usize> {
    let mut checked = 0;
    for host in [1u8, 77, 254] {
        for port in [1u16, 80, 443, 8080, 65535] {
            let dst = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, host), port));
            ns.run(|| -> Res<()> {
                crr(dst, tcp)
                    .map_err(|e| format!("TCP to {dst} did not reach the one socket: {e}"))?;
                let tx = UdpSocket::bind("127.0.0.1:0")?;
                tx.send_to(b"d", dst)?;
                let mut b = [0u8; 4];
                udp.recv_from(&mut b)
                    .map_err(|e| format!("UDP to {dst} did not reach the one socket: {e}"))?;
                Ok(())
            })??;
            checked += 1;
        }
    }
    Ok(checked)
}

fn main() -> Res<()> {
    let mut a = Args::parse();
    if a.quick {
        a.rounds = a.rounds.min(2);
        a.conns = a.conns.min(100);
        a.addrs = a.addrs.min(200);
    }
    let ns = NetNs::new("anyport")?;
    ns.ip(&["route", "add", "local", "10.0.0.0/24", "dev", "lo"])?;
    ns.ip(&["route", "add", "local", "10.1.0.0/16", "dev", "lo"])?;
    let pins = Pins(PathBuf::from("/sys/fs/bpf").join(unique_name("anyport")));
    let d = Dispatcher::create(&pins.0, Default::default())?;
    let any = Label::new("any")?;
    let slash24: Prefix = "10.0.0.0/24".parse()?;

    // 1. One socket, one binding per protocol, every port.
    let (tcp, udp) = ns.run(|| -> Res<(TcpListener, UdpSocket)> {
        let u = UdpSocket::bind("127.0.0.1:0")?;
        u.set_read_timeout(Some(Duration::from_secs(1)))?;
        Ok((TcpListener::bind("127.0.0.1:0")?, u))
    })??;
    d.bind(Binding::new(Proto::Tcp, slash24, Port::Any), &any)?;
    d.bind(Binding::new(Proto::Udp, slash24, Port::Any), &any)?;
    d.register(&any, &tcp)?;
    d.register(&any, &udp)?;
    let link = d.attach_link(ns.path().as_path())?;
    let checked = check_invariants(&ns, &tcp, &udp)?;
    let st = d.label_stats(&any)?;
    if st.redirected != 2 * checked as u64 || st.errors != 0 {
        return Err(format!("stats disagree with the {checked} checks: {st:?}").into());
    }
    drop(link);

    // 2. CRR with the program over without: ABBA blocks per round (BAAB on
    //    odd rounds), hit and miss back to back in each block, the measuring
    //    thread pinned to one CPU; per-round ratio = time without / time with
    //    for the same number of connections; median and spread over rounds.
    let hit_dst: SocketAddr = "10.0.0.5:8080".parse()?;
    let (plain_hit, plain_miss) = ns.run(|| -> Res<(TcpListener, TcpListener)> {
        Ok((
            TcpListener::bind(hit_dst)?,
            TcpListener::bind("127.0.0.1:0")?,
        ))
    })??;
    let miss_dst = plain_miss.local_addr()?;
    let cpu = match a.cpu {
        _ if a.no_pin => None,
        Some(c) => Some(c),
        None => std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() - 1),
    };
    // Warm-up (both paths, caches, the listeners' accept queues).
    ns.run(|| -> Res<()> {
        pin_to(cpu)?;
        crr_secs(hit_dst, &plain_hit, a.conns)?;
        crr_secs(miss_dst, &plain_miss, a.conns)?;
        Ok(())
    })??;
    let (mut hit, mut miss) = (Vec::new(), Vec::new());
    for r in 0..a.rounds {
        let order = if r % 2 == 0 {
            [true, false, false, true]
        } else {
            [false, true, true, false]
        };
        // Seconds spent, [without, with] × [hit, miss].
        let mut spent = [[0.0f64; 2]; 2];
        for on in order {
            let link = if on {
                Some(d.attach_link(ns.path().as_path())?)
            } else {
                None
            };
            let (h, m) = ns.run(|| -> Res<(f64, f64)> {
                pin_to(cpu)?;
                // With the program the hit destination is steered to `tcp`;
                // without, the plain listener bound there answers.
                let h = crr_secs(hit_dst, if on { &tcp } else { &plain_hit }, a.conns)?;
                let m = crr_secs(miss_dst, &plain_miss, a.conns)?;
                Ok((h, m))
            })??;
            spent[usize::from(on)][0] += h;
            spent[usize::from(on)][1] += m;
            drop(link);
        }
        // Rate with / rate without = time without / time with.
        hit.push(spent[0][0] / spent[1][0]);
        miss.push(spent[0][1] / spent[1][1]);
    }
    // The program's own cost per run, as the kernel counts it, in a block
    // of its own after the rounds (run-time stats add two clock reads to
    // every run: kept out of the ratios).
    let stats_fd = flowpin::bpf::sk_lookup::enable_run_time_stats()?;
    let link = d.attach_link(ns.path().as_path())?;
    let prog_ns = ns.run(|| -> Res<[(u64, u64); 2]> {
        pin_to(cpu)?;
        let s0 = d.kernel().run_stats()?;
        crr_secs(hit_dst, &tcp, a.conns)?;
        let s1 = d.kernel().run_stats()?;
        crr_secs(miss_dst, &plain_miss, a.conns)?;
        let s2 = d.kernel().run_stats()?;
        Ok([(s0, s1), (s1, s2)].map(|(x, y)| (y.runs - x.runs, y.run_time_ns - x.run_time_ns)))
    })??;
    drop(link);
    drop(stats_fd);
    let per_run = |(runs, ns): (u64, u64)| {
        if runs == 0 {
            f64::NAN
        } else {
            ns as f64 / runs as f64
        }
    };
    let (prog_hit_ns, prog_miss_ns) = (per_run(prog_ns[0]), per_run(prog_ns[1]));
    let (hit_spread, miss_spread) = (spread(&hit), spread(&miss));
    let (crr_hit, crr_miss) = (median(hit), median(miss));
    let load = loadavg();

    // 3. Set-up of addrs × 10 ports: bind() against bindings.
    let n = a.addrs * PORTS_PER_ADDR as usize;
    // Sockets are fds: past this process's fd limit (20,000 here; raising
    // it needs CAP_SYS_RESOURCE), a forked child binds the rest and holds them.
    let limit = nofile_max()?;
    set_nofile(limit)?;
    let mine = n.min(limit.saturating_sub(512) as usize);
    // Each side sets up `reps` times (torn down in between); the figure is
    // the best, all are printed. Memory: the first set-up.
    let reps = if a.quick { 1 } else { SETUP_REPS };
    let mut bind_times = Vec::new();
    let mut bind_mem = 0;
    let mut kept = None;
    for rep in 0..reps {
        // The previous set-up's sockets (and binder child) go first.
        drop(kept.take());
        let slab0 = slab_kb();
        let t = Instant::now();
        let child = if mine < n {
            Some(fork_binder(&ns, mine, n)?)
        } else {
            None
        };
        let socks = ns.run(|| -> Res<Vec<TcpListener>> {
            let mut v = Vec::with_capacity(mine);
            for k in 0..mine {
                let l = TcpListener::bind(SocketAddrV4::new(
                    setup_addr(k / 10),
                    setup_port((k % 10) as u16),
                ))?;
                v.push(l);
            }
            Ok(v)
        })??;
        if let Some(c) = &child {
            c.wait_bound()?;
        }
        bind_times.push(t.elapsed());
        if rep == 0 {
            bind_mem = slab_kb().saturating_sub(slab0);
        }
        kept = Some((socks, child));
    }
    let (socks, child) = kept.ok_or("no set-up round ran")?;
    let bind_setup = bind_times.iter().min().copied().unwrap_or_default();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let samples = (if a.quick { 200 } else { 2000 }).min(n);
    // The parent's sockets (the child's cannot be accepted here).
    let picks: Vec<usize> = (0..samples)
        .map(|_| (next() % mine as u64) as usize)
        .collect();
    let bind_p99 = ns.run(|| -> Res<Duration> {
        let mut lat = Vec::new();
        for &k in &picks {
            let dst = SocketAddrV4::new(setup_addr(k / 10), setup_port((k % 10) as u16));
            lat.push(crr(dst.into(), &socks[k])?);
        }
        Ok(p99(lat))
    })??;
    drop(socks);
    drop(child);

    let set = Label::new("set")?;
    let bindings: Vec<(Binding, Label)> = (0..a.addrs)
        .flat_map(|i| (0..PORTS_PER_ADDR).map(move |j| (i, j)))
        .map(|(i, j)| {
            let b = Binding::new(
                Proto::Tcp,
                Prefix::host(setup_addr(i).into()),
                Port::new(setup_port(j)).expect("ports start at 20000"),
            );
            (b, set.clone())
        })
        .collect();
    let keys: Vec<Binding> = bindings.iter().map(|(b, _)| *b).collect();
    let mut skl_times = Vec::new();
    let (mut skl_mem, mut skl_maps) = (0, 0);
    for rep in 0..reps {
        if rep > 0 {
            d.unbind_many(&keys)?;
        }
        let slab1 = slab_kb();
        let t = Instant::now();
        d.bind_many(&bindings)?;
        skl_times.push(t.elapsed());
        if rep == 0 {
            skl_mem = slab_kb().saturating_sub(slab1);
            skl_maps = map_kib(d.kernel().hosts_map()) + map_kib(d.kernel().bindings_map());
        }
    }
    let setup = skl_times.iter().min().copied().unwrap_or_default();
    d.register(&set, &tcp)?;
    let link = d.attach_link(ns.path().as_path())?;
    let skl_p99 = ns.run(|| -> Res<Duration> {
        let mut lat = Vec::new();
        for &k in &picks {
            let dst = SocketAddrV4::new(setup_addr(k / 10), setup_port((k % 10) as u16));
            lat.push(crr(dst.into(), &tcp)?);
        }
        Ok(p99(lat))
    })??;
    drop(link);
    if d.label_stats(&set)?.redirected != samples as u64 {
        return Err("a connection of the set-up comparison missed the one socket".into());
    }

    println!("any_port: {checked} (address, port) pairs of 10.0.0.0/24 reached one TCP and one UDP socket");
    println!(
        "CRR, program attached / not ({} rounds × ABBA blocks × {} conns, pinned to CPU {}, nice -20, median [min–max]): matching destination {crr_hit:.3} [{:.3}–{:.3}], non-matching {crr_miss:.3} [{:.3}–{:.3}]; load average {load}",
        a.rounds,
        a.conns,
        cpu.map_or("-".to_string(), |c| c.to_string()),
        hit_spread.0,
        hit_spread.1,
        miss_spread.0,
        miss_spread.1
    );
    println!(
        "sk_lookup program run time (kernel bpf_stats): {prog_hit_ns:.0} ns per matching lookup, {prog_miss_ns:.0} ns per non-matching one"
    );
    println!();
    println!(
        "{} addresses × {PORTS_PER_ADDR} ports        | bind()      | sk_lookup",
        a.addrs
    );
    println!("--------------------------------|-------------|------------");
    println!("sockets                         | {n:>11} | {:>10}", 1);
    println!("bindings                        | {:>11} | {:>10}", "-", n);
    println!(
        "kernel memory (Slab delta)      | {:>8} KiB | {:>6} KiB",
        bind_mem, skl_mem
    );
    println!(
        "BPF map memory (fdinfo memlock) |           - | {:>6} KiB",
        skl_maps
    );
    println!(
        "set-up time (best of {reps})         | {:>8.1} ms | {:>7.1} ms",
        ms(bind_setup),
        ms(setup)
    );
    println!(
        "p99 new connection (CRR)        | {:>8.1} µs | {:>7.1} µs",
        us(bind_p99),
        us(skl_p99)
    );
    let all = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.1}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "set-up times, ms: bind() {}; sk_lookup {}",
        all(&bind_times),
        all(&skl_times)
    );
    println!("(for all ports of 10.0.0.0/24: bind() would need 254 × 65535 sockets; sk_lookup 1 socket, 1 binding per protocol)");
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "crr_ratio_hit": crr_hit,
                "crr_ratio_miss": crr_miss,
                "setup_ms": ms(setup),
                "sockets_bind": n,
                "sockets_sk_lookup": 1,
            })
        );
    }
    drop(d);
    drop(pins);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
