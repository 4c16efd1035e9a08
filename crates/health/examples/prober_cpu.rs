//! The prober's CPU cost on the LB node: 100 backends × 3 VIPs, TCP connect
//! every 1 s (300 probes a second), for `SECS` seconds (first argument,
//! default 10). Needs root (two network namespaces).
//!
//! The prober runs alone on a current-thread tokio runtime in an "LB"
//! namespace; the backends (100 addresses, `10.77.1.1 ..= 10.77.1.100`, a
//! listener on ports 18080 ..= 18082 each) are in a "backend" namespace
//! behind a veth pair. Both veth ends run **threaded NAPI** (GRO on, so veth
//! uses NAPI; `/sys/class/net/<dev>/threaded` = 1), so each side's receive
//! processing runs on its own kernel thread, `napi/<dev>-<id>`:
//!
//! - **LB node** = the prober thread (user + kernel: socket, connect and
//!   the SYN's transmit, close and its RST) + the LB-side NAPI thread
//!   (SYN-ACK receive, the ACK it sends back);
//! - **backend side** (not the LB's) = the backend-side NAPI thread (SYN,
//!   ACK, RST receive, SYN-ACK transmit) + the accepting threads.
//!
//! Every figure is the thread's `sum_exec_runtime` (`/proc/<pid>/task/<tid>/schedstat`,
//! ns). Target (issue 21): the LB node's share ≤ 2 % of a core. Without
//! `CONFIG_IRQ_TIME_ACCOUNTING`, softirqs of other traffic that run when a
//! thread re-enables bottom halves are charged to that thread: on a busy
//! machine the figures are upper bounds.
//!
//! ```text
//! cargo run --release -p flowpin-health --example prober_cpu -- 10
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowpin_bpf_abi::vip::{Proto, Vip};
use flowpin_bpf_progs::netdev::{set_offload, Offload};
use flowpin_health::metrics::HealthMetrics;
use flowpin_health::{DirectRoutes, Health, HealthCheck, Prober};
use flowpin_testing::{enable_threaded_napi, thread_cpu_ns, NetNs, VethPair};

type Error = Box<dyn std::error::Error + Send + Sync>;

const BACKENDS: u8 = 100;
const PORTS: [u16; 3] = [18080, 18081, 18082];

/// The calling thread's (user, kernel) time, µs (`getrusage(RUSAGE_THREAD)`).
fn thread_user_sys() -> (u64, u64) {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_THREAD)
        .map(|u| {
            let us = |t: nix::sys::time::TimeVal| {
                u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                    + u64::try_from(t.tv_usec()).unwrap_or(0)
            };
            (us(u.user_time()), us(u.system_time()))
        })
        .unwrap_or_default()
}

fn gettid() -> u32 {
    u32::try_from(nix::unistd::gettid().as_raw()).unwrap_or(0)
}

fn sum_ns(threads: &[(u32, u32)]) -> u64 {
    threads
        .iter()
        .map(|(p, t)| thread_cpu_ns(*p, *t).unwrap_or(0))
        .sum()
}

/// NAPI receive on `dev` in `ns`, threaded; the NAPI threads' pids. veth
/// receives with NAPI when GRO is on, and only takes that path for a
/// socket's TCP segments when the sending end has no TSO (`veth_xmit`,
/// `veth_skb_is_eligible_for_gro`): both ends get GRO on and TSO off.
fn threaded_napi(ns: &NetNs, dev: &str) -> Result<Vec<u32>, Error> {
    let d = dev.to_string();
    ns.run(move || {
        set_offload(&d, Offload::Tso, false)?;
        set_offload(&d, Offload::Gro, true)
    })??;
    Ok(enable_threaded_napi(ns, dev)?)
}

struct Figures {
    wall: Duration,
    probes: u64,
    up: usize,
    prober_ns: u64,
    prober_user_us: u64,
    prober_sys_us: u64,
    lb_napi_ns: u64,
    be_napi_ns: u64,
    be_accept_ns: u64,
}

fn main() -> Result<(), Error> {
    let secs: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10);
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "prober_cpu needs root (it makes two network namespaces and a veth pair)".into(),
        );
    }
    let lb = NetNs::new("pcl")?;
    let be = NetNs::new("pcb")?;
    // Short, per-run names: the NAPI threads are `napi/<dev>-<id>` (15 chars).
    let tag = std::process::id() & 0xffff;
    let (lb_dev, be_dev) = (format!("l{tag:04x}"), format!("b{tag:04x}"));
    let _veth = VethPair::new(&lb, &lb_dev, &be, &be_dev)?;
    lb.ip(&["addr", "add", "10.77.0.1/24", "dev", &lb_dev])?;
    lb.ip(&["route", "add", "10.77.1.0/24", "via", "10.77.0.2"])?;
    be.ip(&["addr", "add", "10.77.0.2/24", "dev", &be_dev])?;
    be.ip(&["route", "add", "local", "10.77.1.0/24", "dev", "lo"])?;
    let lb_napi = threaded_napi(&lb, &lb_dev)?;
    let be_napi = threaded_napi(&be, &be_dev)?;

    // The backends: one blocking accept loop per port, on every address.
    let pid = std::process::id();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    for port in PORTS {
        let l = be.run(move || std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))??;
        let tx = tid_tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send(gettid());
            while let Ok(c) = l.accept() {
                drop(c);
            }
        });
    }
    let accept_tids: Vec<(u32, u32)> = (0..PORTS.len())
        .map(|_| tid_rx.recv().map(|t| (pid, t)))
        .collect::<Result<_, _>>()?;
    let napi = |v: &[u32]| v.iter().map(|p| (*p, *p)).collect::<Vec<_>>();
    let (lb_napi, be_napi) = (napi(&lb_napi), napi(&be_napi));

    let backends: Vec<IpAddr> = (1..=BACKENDS)
        .map(|i| IpAddr::V4(Ipv4Addr::new(10, 77, 1, i)))
        .collect();
    let run = lb.spawn(move || -> Result<Figures, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let me = (pid, gettid());
        rt.block_on(async {
            // With metrics, as `flowpin-node lb` runs it.
            let prober = Prober::with_metrics(Arc::new(DirectRoutes), HealthMetrics::new());
            let check =
                HealthCheck::tcp().timing(Duration::from_secs(1), Duration::from_millis(500));
            let vips: Vec<Vip> = PORTS
                .iter()
                .map(|p| Vip::new(IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1)), *p, Proto::Tcp))
                .collect();
            let targets: Vec<_> = vips
                .iter()
                .flat_map(|v| backends.iter().map(|b| (*v, *b, check.clone())))
                .collect();
            prober.set_targets(targets)?;
            // One interval to spread the first probes, then measure.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let probes0: u64 = prober.status().backends.iter().map(|b| b.probes).sum();
            let mark = |t: &[(u32, u32)]| sum_ns(t);
            let (p0, (u0, s0)) = (mark(&[me]), thread_user_sys());
            let (l0, b0, a0) = (mark(&lb_napi), mark(&be_napi), mark(&accept_tids));
            let w0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let wall = w0.elapsed();
            let (p1, (u1, s1)) = (mark(&[me]), thread_user_sys());
            let (l1, b1, a1) = (mark(&lb_napi), mark(&be_napi), mark(&accept_tids));
            let st = prober.status();
            Ok(Figures {
                wall,
                probes: st.backends.iter().map(|b| b.probes).sum::<u64>() - probes0,
                up: st.backends.iter().filter(|b| b.state == Health::Up).count(),
                prober_ns: p1 - p0,
                prober_user_us: u1 - u0,
                prober_sys_us: s1 - s0,
                lb_napi_ns: l1 - l0,
                be_napi_ns: b1 - b0,
                be_accept_ns: a1 - a0,
            })
        })
    })?;
    let f = run.join().map_err(|_| "the prober thread panicked")??;
    let pct = |ns: u64| ns as f64 / 1e9 / f.wall.as_secs_f64() * 100.0;
    let ms = |ns: u64| ns as f64 / 1e6;
    let per = |ns: u64| ns as f64 / 1e3 / f.probes.max(1) as f64;
    let lb_ns = f.prober_ns + f.lb_napi_ns;
    let be_ns = f.be_napi_ns + f.be_accept_ns;
    println!(
        "prober: {BACKENDS} backends x {} VIPs at 1 s over a veth (backends in their own netns, threaded NAPI): {} probes in {:.1} s, {} up",
        PORTS.len(),
        f.probes,
        f.wall.as_secs_f64(),
        f.up
    );
    println!(
        "  own process (prober thread): {:.1} ms = {:.2} % of a core (user {:.1} ms, kernel {:.1} ms), {:.1} us/probe",
        ms(f.prober_ns),
        pct(f.prober_ns),
        f.prober_user_us as f64 / 1e3,
        f.prober_sys_us as f64 / 1e3,
        per(f.prober_ns)
    );
    println!(
        "  LB-side receive (NAPI thread of {lb_dev}): {:.1} ms = {:.2} % of a core, {:.1} us/probe",
        ms(f.lb_napi_ns),
        pct(f.lb_napi_ns),
        per(f.lb_napi_ns)
    );
    println!(
        "  LB node total: {:.2} % of a core (target <= 2 %){}",
        pct(lb_ns),
        if pct(lb_ns) <= 2.0 {
            ""
        } else {
            "  OVER TARGET"
        }
    );
    println!(
        "  backend side (not the LB's): NAPI thread of {be_dev} {:.1} ms + accept threads {:.1} ms = {:.2} % of a core",
        ms(f.be_napi_ns),
        ms(f.be_accept_ns),
        pct(be_ns)
    );
    let want = usize::from(BACKENDS) * PORTS.len();
    if f.up != want {
        return Err(format!("only {} of {want} targets up", f.up).into());
    }
    Ok(())
}
