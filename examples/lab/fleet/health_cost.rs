//! What health probing costs each LB node (issue 21: "probing 100 backends
//! × 3 VIPs at 1 s from 3 LBs costs ≤ 2 % of a core per LB node").
//!
//! 3 extra VIPs of their own (`10.100.0.3`, ports 9101–9103: the traffic
//! rings are not touched) with 100 backends each: 100 tunnel addresses,
//! 25 on each of the 4 backend hosts every traffic run starts with (a
//! local route `10.2.<j>.64/27` on `lo`, in the agent's pinned
//! `xdp_decap`: their agents are started first), the VIP on those hosts'
//! `lo` and a listener per port there. Each LB probes them through its
//! `probe_encap` like the real backends (TCP connect, 1 s, rise 2, fall 3).
//!
//! Per LB, over [`WINDOW`] without health checks (the VIPs and backends in
//! the rings already) and again with all 300 targets up:
//! - the `flowpin-node lb` process: every thread's `sum_exec_runtime`
//!   (`/proc/<pid>/task/*/schedstat`);
//! - the LB's receive processing: its interface's NAPI thread. Both ends of
//!   the LB's link run threaded NAPI with TSO off for the measurement (veth
//!   takes the NAPI path for a socket's segments only without TSO), so the
//!   router's and the backends' work runs on the router's NAPI threads, not
//!   on the LB's, and the LB's receive on its own; both are restored after.
//!
//! The probing cost is the difference, printed per LB and in the JSON as
//! `health_probe_cost.probe_cpu_pct_per_lb`. It runs with the health rows
//! (not in the first look; with `FLOWPIN_LAB_FLEET_SCENARIOS`, when one of
//! `hung`, `port closed`, `cut`, `recovers` or `probe cost` is named) and
//! takes about 25 s.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use flowpin_bpf_progs::netdev::{offload, set_offload, Offload};
use flowpin_bpf_progs::xdp_decap::XdpDecap;
use flowpin_registry::health::HealthCheck;
use flowpin_registry::{BackendSpec, Proto, ServerId, Vip, VipFlags, VipSpec};
use flowpin_testing::{
    enable_threaded_napi, process_cpu_ns, set_threaded_napi, thread_cpu_ns, NetNs,
};
use serde::Serialize;

use super::{progress, status, Fleet};
use crate::run::Coverage;
use crate::topo;
use crate::{check_interrupted, pause, Created};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The row's name (what `FLOWPIN_LAB_FLEET_SCENARIOS` matches).
pub(crate) const NAME: &str = "health probe cost: 100 backends x 3 VIPs at 1 s from 3 LBs";
/// The target per LB node, % of one core.
pub(crate) const TARGET_PCT: f64 = 2.0;
/// Each measurement window.
const WINDOW: Duration = Duration::from_secs(6);
const VIP_ADDR: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 3);
const PORTS: [u16; 3] = [9101, 9102, 9103];
/// The backend hosts serving the 100 backends: the ones every traffic run
/// starts with (`traffic::BASE`), so their agents keep running after.
const HOSTS: [usize; 4] = [0, 1, 2, 3];
/// Tunnel addresses per backend host (100 backends).
const PER_HOST: usize = 25;
const INTERVAL_MS: u64 = 1000;

/// Tunnel address `k` of backend host `j`.
fn tunnel(j: usize, k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 2, j as u8 + 1, 64 + k as u8)
}

fn vips() -> Vec<Vip> {
    PORTS
        .iter()
        .map(|p| Vip::new(VIP_ADDR.into(), *p, Proto::Tcp))
        .collect()
}

/// What the measurement found (the JSON's `health_probe_cost`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProbeCost {
    pub(crate) backends: usize,
    pub(crate) vips: usize,
    pub(crate) interval_ms: u64,
    /// Probing's cost per LB node: (process + LB-side NAPI) with the checks
    /// − without, % of one core.
    pub(crate) probe_cpu_pct_per_lb: Vec<f64>,
    /// Of which the `flowpin-node lb` process.
    pub(crate) process_cpu_pct_per_lb: Vec<f64>,
    /// Of which the LB interface's NAPI thread (receive processing).
    pub(crate) napi_cpu_pct_per_lb: Vec<f64>,
    /// Without health checks (process + NAPI), % of one core.
    pub(crate) baseline_cpu_pct_per_lb: Vec<f64>,
    /// Probes each LB ran per second in the window (300 expected).
    pub(crate) probes_per_s_per_lb: Vec<f64>,
    pub(crate) window_s: f64,
    pub(crate) target_pct: f64,
    pub(crate) within_target: bool,
    /// The profile `flowpin-node` was built with (`release` or `dev`): the
    /// target is judged on a release build only (a dev build's user-space
    /// cost is several times an operator's).
    pub(crate) node_profile: &'static str,
}

impl ProbeCost {
    /// The summary line.
    pub(crate) fn line(&self) -> String {
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        format!(
            "Health probing cost per LB node ({} backends x {} VIPs at {} ms, {} probes/s each): {} % of a core (process {} + NAPI {}; target <= {TARGET_PCT} %: {})\n",
            self.backends,
            self.vips,
            self.interval_ms,
            list(&self.probes_per_s_per_lb),
            list(&self.probe_cpu_pct_per_lb),
            list(&self.process_cpu_pct_per_lb),
            list(&self.napi_cpu_pct_per_lb),
            match (self.node_profile, self.within_target) {
                ("release", true) => "met",
                ("release", false) => "NOT met",
                _ => "not judged: dev build of flowpin-node, run the lab with --release",
            },
        )
    }
}

/// Whether this run measures it (see the module docs).
pub(crate) fn selected(coverage: Coverage) -> bool {
    if coverage == Coverage::FirstLook {
        return false;
    }
    let only: Vec<String> = std::env::var("FLOWPIN_LAB_FLEET_SCENARIOS")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    only.is_empty()
        || only.iter().any(|o| {
            ["hung", "port closed", "cut", "recovers", "probe cost"]
                .iter()
                .any(|k| o.contains(k) || (!o.is_empty() && NAME.contains(o.as_str())))
        })
}

/// One end of an LB's link, switched to threaded NAPI without TSO.
struct LinkEnd<'a> {
    ns: &'a NetNs,
    dev: String,
    /// TSO was on: switch it back on after.
    tso_was_on: bool,
    threaded: bool,
}

impl<'a> LinkEnd<'a> {
    /// Switches `dev` in `ns`; with `napi`, the pids of the NAPI threads
    /// that appeared (at least one, or an error).
    fn switch(ns: &'a NetNs, dev: &str, napi: bool) -> Result<(LinkEnd<'a>, Vec<u32>), Error> {
        let mut end = LinkEnd {
            ns,
            dev: dev.to_string(),
            tso_was_on: false,
            threaded: false,
        };
        let d = end.dev.clone();
        // Off already where XDP runs on either end of a veth (the kernel
        // drops the peer's software GSO then): nothing to switch.
        if ns.run(move || offload(&d, Offload::Tso))?? {
            let d = end.dev.clone();
            ns.run(move || set_offload(&d, Offload::Tso, false))??;
            end.tso_was_on = true;
        }
        // Switched back off on drop even when no NAPI thread appears.
        end.threaded = true;
        let threads = if napi {
            enable_threaded_napi(ns, dev)?
        } else {
            set_threaded_napi(ns, dev, true)?;
            Vec::new()
        };
        Ok((end, threads))
    }
}

impl Drop for LinkEnd<'_> {
    fn drop(&mut self) {
        if self.threaded {
            let _ = set_threaded_napi(self.ns, &self.dev, false);
        }
        if self.tso_was_on {
            let d = self.dev.clone();
            let _ = self.ns.run(move || set_offload(&d, Offload::Tso, true));
        }
    }
}

/// What the measurement set up; dropping it undoes it (best effort).
struct Setup<'a> {
    f: &'a Fleet,
    routes: Vec<usize>,
    vip_on_lo: Vec<usize>,
    decap: Vec<(XdpDecap, Vec<IpAddr>)>,
    listeners: Vec<(std::sync::Arc<TcpListener>, std::thread::JoinHandle<()>)>,
    registration: Option<flowpin_registry::Registration>,
    vips: bool,
    checks: bool,
    links: Vec<LinkEnd<'a>>,
}

impl Drop for Setup<'_> {
    fn drop(&mut self) {
        let f = self.f;
        self.links.clear();
        if self.checks {
            for v in vips() {
                let _ = f.rt.block_on(f.reg.delete_health_check(&v));
            }
        }
        if let Some(r) = self.registration.take() {
            let _ = f.rt.block_on(r.deregister());
        }
        if self.vips {
            for v in vips() {
                let _ = f.rt.block_on(f.reg.delete_vip(&v));
            }
        }
        for (l, t) in self.listeners.drain(..) {
            // Wakes the blocked accept with an error: the thread ends.
            let _ = nix::sys::socket::shutdown(l.as_raw_fd(), nix::sys::socket::Shutdown::Both);
            let _ = t.join();
        }
        for (d, addrs) in &self.decap {
            for a in addrs {
                let _ = d.remove_tunnel_addr(*a);
            }
        }
        for &j in &self.vip_on_lo {
            let _ = f.topo.backends[j].ip(&["addr", "del", &format!("{VIP_ADDR}/32"), "dev", "lo"]);
        }
        for &j in &self.routes {
            let _ = f.topo.backends[j].ip(&["route", "del", "local", &net(j), "dev", "lo"]);
        }
    }
}

fn net(j: usize) -> String {
    format!("{}/27", tunnel(j, 0))
}

/// Per LB: (process ns, NAPI ns).
fn mark(f: &Fleet, napi: &[Vec<u32>]) -> Result<Vec<(u64, u64)>, Error> {
    f.lbs
        .iter()
        .zip(napi)
        .map(|(n, threads)| {
            let pid = n.proc_.pid().ok_or("an LB is gone")?;
            Ok((
                process_cpu_ns(pid).unwrap_or(0),
                threads
                    .iter()
                    .map(|t| thread_cpu_ns(*t, *t).unwrap_or(0))
                    .sum(),
            ))
        })
        .collect()
}

/// Per LB: (process %, NAPI %) of one core between `a` and `b`.
fn shares(a: &[(u64, u64)], b: &[(u64, u64)], secs: f64) -> Vec<(f64, f64)> {
    let pct = |x: u64, y: u64| y.saturating_sub(x) as f64 / 1e9 / secs * 100.0;
    a.iter()
        .zip(b)
        .map(|(a, b)| (pct(a.0, b.0), pct(a.1, b.1)))
        .collect()
}

/// Probes each LB ran of the extra VIPs' targets, and how many are up.
fn probes(f: &Fleet) -> Vec<(u64, usize)> {
    let names: Vec<String> = PORTS
        .iter()
        .map(|p| format!("{VIP_ADDR}:{p}/tcp"))
        .collect();
    f.lbs
        .iter()
        .map(|n| {
            status(n.port).map_or((0, 0), |s| {
                let mine = s.health.iter().filter(|h| names.contains(&h.vip));
                let (mut p, mut up) = (0, 0);
                for h in mine {
                    p += h.probes;
                    up += usize::from(h.state == "up");
                }
                (p, up)
            })
        })
        .collect()
}

/// Measures it (see the module docs); undoes what it set up (the agents
/// of [`HOSTS`] it started keep running: every traffic run starts with them).
pub(crate) fn measure(f: &mut Fleet, created: &mut Created) -> Result<ProbeCost, Error> {
    for &j in &HOSTS {
        f.start_backend_node(j, created)?;
    }
    f.wait_backends(&HOSTS, 0, Duration::from_secs(20))?;
    let f: &Fleet = f;
    let mut s = Setup {
        f,
        routes: Vec::new(),
        vip_on_lo: Vec::new(),
        decap: Vec::new(),
        listeners: Vec::new(),
        registration: None,
        vips: false,
        checks: false,
        links: Vec::new(),
    };
    let hosts = HOSTS.len();
    let total = hosts * PER_HOST;
    progress(format!(
        "{NAME}: {total} tunnel addresses on {hosts} backend hosts, listeners on {VIP_ADDR} ports {PORTS:?}"
    ));
    for &j in &HOSTS {
        let be = &f.topo.backends[j];
        be.ip(&["route", "add", "local", &net(j), "dev", "lo"])?;
        s.routes.push(j);
        be.ip(&["addr", "add", &format!("{VIP_ADDR}/32"), "dev", "lo"])?;
        s.vip_on_lo.push(j);
        let decap = XdpDecap::open_pinned(f.backends[j].pin_dir.join("decap"))?;
        let mut added = Vec::new();
        for k in 0..PER_HOST {
            let a = IpAddr::V4(tunnel(j, k));
            decap.add_tunnel_addr(a)?;
            added.push(a);
        }
        s.decap.push((decap, added));
        for port in PORTS {
            let l = std::sync::Arc::new(be.run(move || TcpListener::bind((VIP_ADDR, port)))??);
            let l2 = l.clone();
            let t = std::thread::spawn(move || {
                while let Ok((c, _)) = l2.accept() {
                    drop(c);
                }
            });
            s.listeners.push((l, t));
        }
    }
    let entries: Vec<(Vip, BackendSpec)> = vips()
        .into_iter()
        .flat_map(|v| {
            (0..total).map(move |b| {
                let a = tunnel(HOSTS[b / PER_HOST], b % PER_HOST);
                (
                    v,
                    BackendSpec::new(a.into(), 100, ServerId::new(3000 + b as u32)),
                )
            })
        })
        .collect();
    f.rt.block_on(async {
        for v in vips() {
            f.reg.put_vip(&VipSpec::new(v, VipFlags::NONE)).await?;
        }
        Ok::<_, flowpin_registry::Error>(())
    })?;
    s.vips = true;
    let reg = f.rt.block_on(async {
        let h = f.reg.register(Duration::from_secs(30)).await?;
        // One VIP's backends per transaction (etcd caps its operations).
        for chunk in entries.chunks(total) {
            h.add_backends(chunk).await?;
        }
        Ok::<_, flowpin_registry::Error>(h)
    })?;
    s.registration = Some(reg);
    wait(f, "every LB has the 3 VIPs with 100 backends each", |n| {
        status(n.port).is_some_and(|st| {
            PORTS.iter().all(|p| {
                st.vips
                    .get(&format!("{VIP_ADDR}:{p}/tcp"))
                    .is_some_and(|v| v.backends == total)
            })
        })
    })?;

    // Threaded NAPI, TSO off: both ends of every LB's link. The LB end's
    // NAPI threads are the ones that appear when it is switched.
    let mut napi = Vec::new();
    for (i, ns) in f.topo.lbs.iter().enumerate() {
        let (end, new) =
            LinkEnd::switch(ns, topo::LB_IF, true).map_err(|e| format!("LB {}: {e}", i + 1))?;
        s.links.push(end);
        napi.push(new);
        let (end, _) = LinkEnd::switch(&f.topo.router, &format!("r-lb{}", i + 1), false)?;
        s.links.push(end);
    }

    progress(format!(
        "baseline: {} s without health checks on the 3 VIPs",
        WINDOW.as_secs()
    ));
    let (a, t0) = (mark(f, &napi)?, Instant::now());
    pause(WINDOW)?;
    let base = shares(&a, &mark(f, &napi)?, t0.elapsed().as_secs_f64());

    let check: HealthCheck = serde_json::from_value(serde_json::json!({
        "probe": { "kind": "tcp" },
        "interval_ms": INTERVAL_MS,
        "timeout_ms": 500,
        "rise": 2,
        "fall": 3,
        "down_ms": 0,
    }))?;
    f.rt.block_on(async {
        for v in vips() {
            f.reg.put_health_check(&v, &check).await?;
        }
        Ok::<_, flowpin_registry::Error>(())
    })?;
    s.checks = true;
    wait(f, "every LB has all 300 targets up", |n| {
        status(n.port).is_some_and(|st| {
            st.health
                .iter()
                .filter(|h| h.vip.starts_with(&format!("{VIP_ADDR}:")) && h.state == "up")
                .count()
                == total * PORTS.len()
        })
    })?;
    // One interval for the verdicts' writes to settle.
    pause(Duration::from_millis(INTERVAL_MS))?;
    progress(format!(
        "probing: {} s with {} targets up on every LB",
        WINDOW.as_secs(),
        total * PORTS.len()
    ));
    let p0 = probes(f);
    let (a, t0) = (mark(f, &napi)?, Instant::now());
    pause(WINDOW)?;
    let b = mark(f, &napi)?;
    let secs = t0.elapsed().as_secs_f64();
    let with = shares(&a, &b, secs);
    let p1 = probes(f);
    if let Some((i, (_, up))) = p1
        .iter()
        .enumerate()
        .find(|(_, (_, up))| *up != total * PORTS.len())
    {
        return Err(format!(
            "LB {}: {up} of {} targets up after the window",
            i + 1,
            total * PORTS.len()
        )
        .into());
    }
    drop(s);

    let process: Vec<f64> = with
        .iter()
        .zip(&base)
        .map(|(w, b)| (w.0 - b.0).max(0.0))
        .collect();
    let napi_pct: Vec<f64> = with
        .iter()
        .zip(&base)
        .map(|(w, b)| (w.1 - b.1).max(0.0))
        .collect();
    let cost: Vec<f64> = process.iter().zip(&napi_pct).map(|(a, b)| a + b).collect();
    let r = ProbeCost {
        backends: total,
        vips: PORTS.len(),
        interval_ms: INTERVAL_MS,
        within_target: cost.iter().all(|c| *c <= TARGET_PCT),
        probe_cpu_pct_per_lb: cost,
        process_cpu_pct_per_lb: process,
        napi_cpu_pct_per_lb: napi_pct,
        baseline_cpu_pct_per_lb: base.iter().map(|(a, b)| a + b).collect(),
        probes_per_s_per_lb: p0
            .iter()
            .zip(&p1)
            .map(|(a, b)| b.0.saturating_sub(a.0) as f64 / secs.max(1e-3))
            .collect(),
        window_s: secs,
        target_pct: TARGET_PCT,
        node_profile: super::node_bin::profile(),
    };
    progress(r.line().trim_end());
    Ok(r)
}

/// Waits (≤ 20 s) until `ok` holds for every LB.
fn wait(f: &Fleet, what: &str, ok: impl Fn(&super::LbNode) -> bool) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f.lbs.iter().all(&ok) {
        if Instant::now() > deadline {
            return Err(format!("{NAME}: not within 20 s: {what}").into());
        }
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}
