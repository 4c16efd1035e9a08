//! The prober's CPU cost: 100 backends × 3 VIPs, TCP connect every 1 s
//! (300 probes a second), for `SECS` seconds (first argument, default 10).
//!
//! The backends are loopback listeners (127.0.1.1 ..= 127.0.1.100, ports
//! 18080 ..= 18082) drained by their own thread; the prober runs alone on
//! a current-thread tokio runtime, and that thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`) is what is printed. It is an upper bound of
//! the prober's own cost: on loopback the receiving side's kernel work runs
//! on the sending thread too. Target (issue 21): ≤ 2 % of a core.
//!
//! ```text
//! cargo run --release -p flowpin-health --example prober_cpu -- 10
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowpin_bpf_abi::vip::{Proto, Vip};
use flowpin_health::{DirectRoutes, Health, HealthCheck, Prober};
use nix::time::{clock_gettime, ClockId};

const BACKENDS: u8 = 100;
const PORTS: [u16; 3] = [18080, 18081, 18082];

fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// This thread's (user, system) CPU time.
fn thread_user_sys() -> (Duration, Duration) {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_THREAD)
        .map(|u| {
            let d = |t: nix::sys::time::TimeVal| {
                Duration::from_micros(
                    u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                        + u64::try_from(t.tv_usec()).unwrap_or(0),
                )
            };
            (d(u.user_time()), d(u.system_time()))
        })
        .unwrap_or_default()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10);
    let backends: Vec<IpAddr> = (1..=BACKENDS)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 1, i)))
        .collect();
    let mut listeners = Vec::new();
    for b in &backends {
        for p in PORTS {
            let l = std::net::TcpListener::bind((*b, p))?;
            l.set_nonblocking(true)?;
            listeners.push(l);
        }
    }
    std::thread::spawn(move || loop {
        let mut idle = true;
        for l in &listeners {
            while let Ok(c) = l.accept() {
                drop(c);
                idle = false;
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(5));
        }
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (cpu, wall, up, probes, user, sys) = rt.block_on(async {
        let prober = Prober::new(Arc::new(DirectRoutes));
        let check = HealthCheck::tcp().timing(Duration::from_secs(1), Duration::from_millis(500));
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
        let (c0, us0, w0) = (thread_cpu(), thread_user_sys(), Instant::now());
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (cpu, wall) = (thread_cpu() - c0, w0.elapsed());
        let us1 = thread_user_sys();
        let (user, sys) = (us1.0 - us0.0, us1.1 - us0.1);
        let st = prober.status();
        let up = st.backends.iter().filter(|b| b.state == Health::Up).count();
        let probes = st.backends.iter().map(|b| b.probes).sum::<u64>() - probes0;
        Ok::<_, Box<dyn std::error::Error>>((cpu, wall, up, probes, user, sys))
    })?;
    let share = cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
    println!(
        "prober: {} backends x {} VIPs at 1 s: {probes} probes in {:.1} s, {up} up; CPU {:.1} ms = {share:.2} % of a core (target <= 2 %)",
        BACKENDS,
        PORTS.len(),
        wall.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0,
    );
    println!(
        "  user {:.1} ms, kernel {:.1} ms (the kernel share includes the loopback listeners' side of every handshake)",
        user.as_secs_f64() * 1000.0,
        sys.as_secs_f64() * 1000.0
    );
    if up != usize::from(BACKENDS) * PORTS.len() {
        return Err(format!(
            "only {up} of {} targets up",
            usize::from(BACKENDS) * PORTS.len()
        )
        .into());
    }
    Ok(())
}
