//! The flowpin lab: the talk's whole first hop, in network namespaces.
//!
//! clients → a router spreading flows over **two LBs by ECMP** (L4 hash) →
//! each LB running `xdp_lb` (Maglev + LRU, server_id routing) → 5 backend
//! hosts, each its own process in its own namespace and cgroup, running
//! `xdp_decap` and its own `sockops_server_id` instance (server role, its own
//! server_id) and a TCP server of long-lived streams. The clients run the
//! sock_ops program in the client role. Replies go straight back (DSR).
//!
//! For each scenario, twice (server_id routing on and off, the order
//! alternating between scenarios), with fresh LBs and fresh connections, it
//! counts long-lived connections to backends that stayed healthy which
//! broke (reset or stalled). Each run checks what it claims: both LBs carry
//! VIP packets before LB1 leaves ECMP and only LB2 after (packets per LB are
//! printed), and with server_id routing on, packets were routed by it
//! (`sid_routed > 0`); otherwise the run fails. Then it measures the cost of
//! the sock_ops program on short connect-request-close connections, in
//! paired rounds. The lab fails when a connection to a healthy backend
//! broke with server_id routing on, or a CRR transaction failed — and when
//! a scenario built to break connections without server_id (declared:
//! `expects_breaks_without_server_id`, the ring changes) broke none
//! without it: then the lab no longer sees breaks, and its zeros prove
//! nothing.
//!
//! Then the floods (`flood.rs`, issue 23): a SYN flood and a UDP flood
//! from spoofed sources while a backend joins the ring; established flows
//! must survive with and without server_id, and the LBs evict no
//! confirmed connection-table entry (`--only flood` runs just them).
//!
//! Then the fleet section (`fleet/`): the same data path run by
//! `flowpin-node lb` / `flowpin-node backend` processes on a real etcd, 3
//! LBs, its own twelve scenarios (the last four are the health checks':
//! `hung`, `port closed`, `cut`, `recovers`, see `fleet/health.rs`; with
//! them, the probing's CPU per LB node, `fleet/health_cost.rs`;
//! `--fleet-only` runs only it, `--no-fleet`
//! skips it; `FLOWPIN_LAB_FLEET_SCENARIOS="agent,client role"` runs only
//! the fleet scenarios whose name contains one of these). The lab builds `flowpin-node` through cargo first, in its own
//! profile (`fleet/node_bin.rs`).
//!
//! Coverage: every scenario by default; `--first-look` (what
//! `./scripts/lab.sh` passes, under 3 minutes) the ring changes of both
//! sections, the drain, the fleet without its 30 s registry outage;
//! `--quick` (what CI runs through `scripts/test.sh`): one ring-change
//! scenario and the fleet's LB replacement with 200 connections, the
//! others with 60, a 1 s CRR check, the fleet with a 5 s registry outage.
//!
//! Run as root: `cargo run --release --example lab [-- --json]`.
//! Everything it creates (namespaces, cgroups, XDP links, processes) is
//! removed on exit, also on Ctrl-C; before it says "clean" it looks for
//! each namespace, cgroup and process it made and for new bpffs pins.

mod backend;
mod control;
mod fleet;
mod flood;
mod flood_gen;
mod hosts;
mod proto;
mod run;
mod scenarios_state;
mod topo;
mod workload;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use flowpin_bpf_progs::xdp_attach::XdpLink;
use flowpin_bpf_progs::xdp_lb::{Backend, Proto, Vip, VipFlags, XdpLb, XdpLbConfig};
use flowpin_tcp_opt::ServerId;
use serde::Serialize;

use crate::backend::{BackendArgs, BackendProcess};
use crate::hosts::Cgroups;
use crate::run::{both_modes, Coverage, Run, Tally};
use crate::topo::Topology;
use crate::workload::{CrrResult, Streams};
use flowpin_testing::CgroupMembership;

type Error = Box<dyn std::error::Error + Send + Sync>;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[derive(Parser, Debug)]
#[command(about = "flowpin lab: ECMP over two XDP load balancers, server_id routing, DSR backends")]
struct Args {
    /// Print one JSON object on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Long-lived connections per run.
    #[arg(long, default_value_t = 500)]
    connections: usize,
    /// Seconds of connect-request-close traffic per side of the CRR
    /// measurement, split over the paired rounds.
    #[arg(long, default_value_t = 10.0)]
    crr_secs: f64,
    /// Paired CRR rounds (each pair: with and without sock_ops, order
    /// alternating); the ratio is the median of the per-pair ratios. Many
    /// short pairs: load from outside the lab changes over seconds, so
    /// short adjacent rounds see the same load.
    #[arg(long, default_value_t = 48)]
    crr_pairs: u32,
    /// Only the CRR measurement (no failure scenarios).
    #[arg(long)]
    crr_only: bool,
    /// Seconds, not minutes: one ring-change scenario (both modes) with
    /// 200 connections, the others with 60, and a 1 s CRR check; fails on
    /// any broken invariant (what CI runs).
    #[arg(long)]
    quick: bool,
    /// The main job's first look (`./scripts/lab.sh` passes it): a
    /// representative subset of the scenarios, under 3 minutes (see the
    /// README). Without it, every scenario runs.
    #[arg(long, overrides_with = "all")]
    first_look: bool,
    /// Every scenario (the default; overrides an earlier `--first-look`:
    /// `./scripts/lab.sh --all`).
    #[arg(long, overrides_with = "first_look")]
    all: bool,
    /// Only the fleet section (etcd, 3 `flowpin-node lb` and 5
    /// `flowpin-node backend` processes): convergence, idle CPU, its
    /// traffic scenarios (`FLOWPIN_LAB_FLEET_SCENARIOS="agent,client role"`:
    /// only those whose name contains one of these). The lab builds `flowpin-node` through cargo
    /// (`FLOWPIN_NODE=<path>` runs that binary instead).
    #[arg(long)]
    fleet_only: bool,
    /// Skip the fleet section (it runs after the other scenarios by default).
    #[arg(long)]
    no_fleet: bool,
    /// Only the scenarios of the classic half whose name contains this
    /// text (e.g. `--only flood`); no CRR measurement, no fleet.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Internal: the backend process runs only its TCP server.
    #[arg(long, hide = true)]
    serve_only: bool,
    /// Internal: run as backend process `<index> <netns path> <cgroup path>`.
    #[arg(long, num_args = 3, hide = true)]
    backend_child: Option<Vec<String>>,
    /// Internal: run as an LB control process (see control.rs).
    #[arg(long, num_args = 7, hide = true)]
    lb_control: Option<Vec<String>>,
}

impl Args {
    /// Which scenarios this run covers (`--quick` wins over `--first-look`).
    fn coverage(&self) -> Coverage {
        if self.quick {
            Coverage::Quick
        } else if self.first_look {
            Coverage::FirstLook
        } else {
            Coverage::All
        }
    }
}

/// One scenario's result, as printed in the JSON.
#[derive(Debug, Serialize)]
struct ScenarioResult {
    name: &'static str,
    connections: usize,
    broken_with_server_id: usize,
    broken_without_server_id: usize,
    /// The scenario is built to break connections without server_id (a
    /// ring change meeting connection-table misses): the lab fails if
    /// none broke ([`run::blind`]).
    expects_breaks_without_server_id: bool,
    /// Packets the LBs' programs dropped over the scenario (both runs).
    packets_dropped_by_lb: u64,
    /// The flood rows' figures ([`flood::FloodFigures`]).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    flood: Option<flood::FloodFigures>,
    #[serde(skip)]
    detail_with: RunDetail,
    #[serde(skip)]
    detail_without: RunDetail,
}

impl ScenarioResult {
    /// The row of a scenario run in both modes.
    fn new(
        name: &'static str,
        connections: usize,
        expects_breaks_without_server_id: bool,
        (with, detail_with): (usize, RunDetail),
        (without, detail_without): (usize, RunDetail),
    ) -> Self {
        ScenarioResult {
            name,
            connections,
            broken_with_server_id: with,
            broken_without_server_id: without,
            expects_breaks_without_server_id,
            packets_dropped_by_lb: detail_with.lb_drops + detail_without.lb_drops,
            flood: None,
            detail_with,
            detail_without,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct RunDetail {
    healthy: usize,
    reset: usize,
    stalled: usize,
    sid_routed: u64,
    /// VIP packets per LB in the window before LB1 left ECMP.
    lb_packets_before: Option<[u64; topo::LBS]>,
    /// VIP packets per LB in the window after LB1 left ECMP (from 200 ms after).
    lb_packets_after: Option<[u64; topo::LBS]>,
    lb_drops: u64,
}

#[derive(Debug, Serialize)]
struct CrrReport {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

impl From<CrrResult> for CrrReport {
    fn from(c: CrrResult) -> Self {
        CrrReport {
            rps: c.rps,
            p50_us: c.p50_us,
            p99_us: c.p99_us,
            errors: c.errors,
        }
    }
}

#[derive(Debug, Serialize)]
struct LabReport {
    scenarios: Vec<ScenarioResult>,
    crr_ratio: f64,
    crr_ratio_min: f64,
    crr_ratio_max: f64,
    crr_pairs: u32,
    crr_with_sockops: CrrReport,
    crr_without_sockops: CrrReport,
}

#[derive(Debug, Clone, Copy)]
enum Scenario {
    AddBackendThenLbOut,
    RemoveBackendThenLbOut,
    LbOutAndBack,
    LbRestartedWhileBackendAdded,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::AddBackendThenLbOut => "backend added, then LB1 out of ECMP",
            Scenario::RemoveBackendThenLbOut => "backend removed, then LB1 out of ECMP",
            Scenario::LbOutAndBack => "LB1 out of ECMP and back",
            Scenario::LbRestartedWhileBackendAdded => {
                "LB1 out, backend added, LB1 state lost (new machine)+back"
            }
        }
    }

    /// Built to break connections without server_id: the ring changes
    /// while flows land on an LB whose connection table never saw them.
    /// (Removing a backend moves ~0.5 % of the healthy flows' slots, 0-2
    /// connections here: too few to require.)
    fn expects_breaks_without_server_id(self) -> bool {
        match self {
            Scenario::AddBackendThenLbOut | Scenario::LbRestartedWhileBackendAdded => true,
            Scenario::RemoveBackendThenLbOut | Scenario::LbOutAndBack => false,
        }
    }

    /// In the main job's first look: both ring changes that break
    /// connections without server_id.
    fn in_first_look(self) -> bool {
        self.expects_breaks_without_server_id()
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!(
        "[lab {:>6.1}s] {}",
        START.with(|s| s.elapsed().as_secs_f64()),
        msg.as_ref()
    );
}

thread_local! {
    static START: Instant = Instant::now();
}

/// Sleeps `d`, returning early with an error on Ctrl-C.
fn pause(d: Duration) -> Result<(), Error> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn check_interrupted() -> Result<(), Error> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Err("interrupted (Ctrl-C): cleaning up".into());
    }
    Ok(())
}

fn vip() -> Vip {
    Vip::new(IpAddr::V4(topo::VIP), topo::VIP_PORT, Proto::Tcp)
}

fn backends(indices: &[usize]) -> Vec<Backend> {
    indices
        .iter()
        .map(|&j| {
            Backend::new(IpAddr::V4(topo::backend_addr(j)))
                .server_id(ServerId::new(topo::server_id(j)).expect("non-zero server_id"))
        })
        .collect()
}

/// One LB host: its program and the link attaching it.
struct LbHost {
    lb: XdpLb,
    _link: XdpLink,
}

fn start_lbs(
    topo: &Topology,
    server_id_routing: bool,
    ring: &[usize],
) -> Result<Vec<LbHost>, Error> {
    (0..topo::LBS)
        .map(|i| start_lb(topo, i, server_id_routing, ring))
        .collect()
}

/// Loads and attaches a fresh `xdp_lb` (empty connection table) on LB `i`.
fn start_lb(
    topo: &Topology,
    i: usize,
    server_id_routing: bool,
    ring: &[usize],
) -> Result<LbHost, Error> {
    let config = XdpLbConfig::default()
        .local_mac(topo.lb_mac[i])
        .next_hop_mac(topo.router_mac_to_lb[i])
        // Outer sources differ per LB, inside 10.200.0.0/16, varying per flow.
        .tunnel_src_v4((std::net::Ipv4Addr::new(10, 200 + i as u8, 0, 0), 16))
        // veth has no RSS: a flow's packets land on either CPU. One table
        // shared by both CPUs models a NIC that keeps each flow on one CPU,
        // so "broken without server_id" counts ECMP + ring changes only.
        .conn_table_shared(true);
    let mut lb = XdpLb::load(config)?;
    let flags = if server_id_routing {
        VipFlags::SERVER_ID
    } else {
        VipFlags::NONE
    };
    lb.add_vip(vip(), flags)?;
    lb.set_backends(&vip(), &backends(ring))?;
    let link = {
        let lb_ref = &lb;
        topo.lbs[i].run(move || lb_ref.attach(topo::LB_IF))??
    };
    Ok(LbHost { lb, _link: link })
}

fn set_ring(lbs: &mut [LbHost], ring: &[usize]) -> Result<(), Error> {
    for h in lbs.iter_mut() {
        h.lb.set_backends(&vip(), &backends(ring))?;
    }
    Ok(())
}

/// VIP packets each LB has seen so far.
fn lb_packets(lbs: &[LbHost]) -> Result<[u64; topo::LBS], Error> {
    let mut out = [0; topo::LBS];
    for (o, h) in out.iter_mut().zip(lbs) {
        *o = h.lb.vip_stats(&vip())?.packets;
    }
    Ok(out)
}

fn delta(a: [u64; topo::LBS], b: [u64; topo::LBS]) -> [u64; topo::LBS] {
    let mut d = [0; topo::LBS];
    for i in 0..topo::LBS {
        d[i] = b[i].saturating_sub(a[i]);
    }
    d
}

const INITIAL_RING: [usize; 4] = [0, 1, 2, 3];
const SPARE: usize = 4;
const REMOVED: usize = 3;

fn run_once(
    topo: &Topology,
    scenario: Scenario,
    server_id_routing: bool,
    n: usize,
) -> Result<(usize, RunDetail), Error> {
    let run = Run::classic(topo, scenario.name(), server_id_routing)?;
    let mut lbs = start_lbs(topo, server_id_routing, &INITIAL_RING)?;
    run.progress("fresh LBs attached, both in ECMP");
    let streams = match Streams::open(&topo.client, n) {
        Ok(s) => s,
        Err(e) => {
            for (i, h) in lbs.iter().enumerate() {
                eprintln!("LB{} stats: {:?}", i + 1, h.lb.stats());
            }
            if std::env::var_os("LAB_HOLD").is_some() {
                eprintln!("LAB_HOLD: holding 120 s for inspection");
                pause(Duration::from_secs(120))?;
            }
            return Err(e);
        }
    };
    run.progress(format!("{n} long-lived connections streaming"));
    let at_open = lb_packets(&lbs)?;
    pause(Duration::from_millis(1000))?;
    let mut unhealthy: Option<u16> = None;
    match scenario {
        Scenario::AddBackendThenLbOut => {
            let ring: Vec<usize> = INITIAL_RING.iter().copied().chain([SPARE]).collect();
            set_ring(&mut lbs, &ring)?;
            run.progress("backend 5 added to the ring on both LBs");
        }
        Scenario::RemoveBackendThenLbOut => {
            let ring: Vec<usize> = INITIAL_RING
                .iter()
                .copied()
                .filter(|&j| j != REMOVED)
                .collect();
            set_ring(&mut lbs, &ring)?;
            unhealthy = Some(REMOVED as u16);
            run.progress("backend 4 removed from the ring on both LBs");
        }
        Scenario::LbOutAndBack | Scenario::LbRestartedWhileBackendAdded => {}
    }
    pause(Duration::from_millis(1000))?;
    let before_out = lb_packets(&lbs)?;
    topo.set_ecmp(&[false, true])?;
    run.progress("LB1 taken out of ECMP");
    pause(Duration::from_millis(200))?;
    let settled = lb_packets(&lbs)?;
    pause(Duration::from_millis(1300))?;
    let after_out = lb_packets(&lbs)?;
    let (lb_before, lb_after) = (delta(at_open, before_out), delta(settled, after_out));
    run.progress(format!(
        "VIP packets per LB: before LB1 left {lb_before:?}, after {lb_after:?}"
    ));
    // ECMP really moved the flows: both LBs carried some before, only LB2 after.
    if lb_before.contains(&0) || lb_after[0] != 0 || lb_after[1] == 0 {
        return Err(format!(
            "{}: ECMP did not move the flows as the scenario says (VIP packets per LB before LB1 left {lb_before:?}, after {lb_after:?})",
            scenario.name()
        )
        .into());
    }
    match scenario {
        Scenario::LbOutAndBack => {
            topo.set_ecmp(&[true, true])?;
            run.progress("LB1 back in ECMP");
            pause(Duration::from_millis(1500))?;
        }
        Scenario::LbRestartedWhileBackendAdded => {
            // Maintenance: while LB1 is out, capacity grows; LB1 restarts
            // (its connection table is gone) with the new ring and comes back.
            let ring: Vec<usize> = INITIAL_RING.iter().copied().chain([SPARE]).collect();
            set_ring(&mut lbs[1..], &ring)?;
            run.progress("backend 5 added to the ring on LB2");
            drop(lbs.remove(0)); // detach the old instance first: one XDP program per interface
            lbs.insert(0, start_lb(topo, 0, server_id_routing, &ring)?);
            run.progress("LB1 restarted with the new ring (empty connection table)");
            pause(Duration::from_millis(500))?;
            topo.set_ecmp(&[true, true])?;
            run.progress("LB1 back in ECMP");
            pause(Duration::from_millis(1500))?;
        }
        _ => {}
    }
    // Long enough for a stalled ping to be detected.
    pause(Duration::from_millis(2800))?;
    let reports = streams.finish();
    let sid_routed: u64 = lbs
        .iter()
        .filter_map(|h| h.lb.vip_stats(&vip()).ok())
        .map(|s| s.sid_routed)
        .sum();
    let lb_drops: u64 = lbs
        .iter()
        .filter_map(|h| h.lb.global_stats().ok())
        .map(|s| control::dropped(&s))
        .sum();
    drop(lbs);
    let t = Tally::of(&reports, unhealthy);
    run.require(&reports, sid_routed)?;
    let detail = RunDetail {
        healthy: t.healthy,
        reset: t.reset,
        stalled: t.stalled,
        sid_routed,
        lb_packets_before: Some(lb_before),
        lb_packets_after: Some(lb_after),
        lb_drops,
    };
    run.progress(format!(
        "done: {} of {} connections to healthy backends broke ({} reset, {} stalled)",
        t.broken(),
        t.healthy,
        t.reset,
        t.stalled
    ));
    Ok((t.broken(), detail))
}

/// What the lab created, to check after teardown that none of it is left.
#[derive(Default)]
struct Created {
    netns: Vec<PathBuf>,
    cgroups: Vec<PathBuf>,
    pids: Vec<u32>,
    bpffs_before: Vec<PathBuf>,
}

fn bpffs_entries() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("/sys/fs/bpf")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

impl Created {
    /// Looks for everything the lab made: namespaces, cgroups, processes,
    /// pins. (XDP and sock_ops links die with their namespace, interface or
    /// cgroup, and the lab pins nothing: a new bpffs entry is a leftover.)
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for n in &self.netns {
            if n.exists() {
                left.push(format!("network namespace {}", n.display()));
            }
        }
        for c in &self.cgroups {
            if c.exists() {
                left.push(format!("cgroup {}", c.display()));
            }
        }
        for pid in &self.pids {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false);
            if alive {
                left.push(format!("backend process {pid}"));
            }
        }
        for e in bpffs_entries() {
            if !self.bpffs_before.contains(&e)
                && e.file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f.contains("lab"))
            {
                left.push(format!("bpffs pin {}", e.display()));
            }
        }
        left
    }
}

fn lab(args: &Args, created: &mut Created) -> Result<LabReport, Error> {
    created.bpffs_before = bpffs_entries();
    progress("building namespaces: client, router, 2 LBs, 5 backends");
    let topo = Topology::build(topo::LBS, false)?;
    created.netns.extend(topo.netns_paths());
    topo.tune_client_for_tcp()?;

    progress("cgroups: one per backend host, one for the clients");
    let cgroups = Cgroups::build("", created)?;
    let (client_cg, be_cgs, client_ops) = (&cgroups.client, &cgroups.backends, &cgroups.client_ops);
    // This process (the clients' host) joins the client cgroup; backends move to their own.
    let _in_client_cg = CgroupMembership::join(client_cg)?;
    let client_link = client_ops.attach(client_cg.path())?;

    progress("starting 5 backend processes (xdp_decap + sock_ops server role + TCP server)");
    let mut procs = Vec::new();
    for (j, (ns, cg)) in topo.backends.iter().zip(be_cgs).enumerate() {
        check_interrupted()?;
        let p = BackendProcess::start(j, ns, cg.path())?;
        created.pids.push(p.pid());
        procs.push(p);
    }

    let mut scenarios = Vec::new();
    let all = [
        Scenario::AddBackendThenLbOut,
        Scenario::RemoveBackendThenLbOut,
        Scenario::LbOutAndBack,
        Scenario::LbRestartedWhileBackendAdded,
    ];
    let coverage = args.coverage();
    let picked = |name: &str| args.only.as_deref().is_none_or(|t| name.contains(t));
    let chosen: Vec<Scenario> = match coverage {
        _ if args.crr_only => Vec::new(),
        Coverage::Quick => all[..1].to_vec(),
        Coverage::FirstLook => all.into_iter().filter(|s| s.in_first_look()).collect(),
        Coverage::All => all.to_vec(),
    };
    let chosen: Vec<Scenario> = chosen.into_iter().filter(|s| picked(s.name())).collect();
    for (k, &scenario) in chosen.iter().enumerate() {
        let expects = scenario.expects_breaks_without_server_id();
        let n = run::connections(args.connections, coverage, expects);
        let (with, without) = both_modes(k, |sid| run_once(&topo, scenario, sid, n))?;
        scenarios.push(ScenarioResult::new(
            scenario.name(),
            n,
            expects,
            with,
            without,
        ));
    }
    let state = scenarios_state::StateScenario::ALL
        .into_iter()
        .filter(|s| !args.crr_only && (coverage != Coverage::FirstLook || s.in_first_look()))
        .filter(|s| picked(s.name()));
    for scenario in state {
        let expects = scenario.expects_breaks_without_server_id();
        let n = run::connections(args.connections, coverage, expects);
        // With server_id first, always (as these rows were measured).
        let with = scenarios_state::run_once(&topo, scenario, true, n)?;
        let without = scenarios_state::run_once(&topo, scenario, false, n)?;
        scenarios.push(ScenarioResult::new(
            scenario.name(),
            n,
            expects,
            with,
            without,
        ));
    }

    // Floods (issue 23): every coverage but the first look and CI.
    let floods = flood::FloodScenario::ALL.into_iter().filter(|s| {
        !args.crr_only
            && (coverage == Coverage::All || (coverage == Coverage::FirstLook && s.in_first_look()))
            && picked(s.name())
    });
    for (k, scenario) in floods.enumerate() {
        let n = args.connections;
        let ((w, dw, fw), (wo, dwo, fwo)) =
            both_modes(k, |sid| flood::run_once(&topo, scenario, sid, n))?;
        let mut row = ScenarioResult::new(scenario.name(), n, false, (w, dw), (wo, dwo));
        row.flood = Some(flood::FloodFigures::of(&fw, &fwo));
        scenarios.push(row);
    }

    // Cost of the sock_ops program on short connections, same run, same path.
    let dur = Duration::from_secs_f64(args.crr_secs);
    let pairs = if args.only.is_some() {
        0
    } else {
        args.crr_pairs.max(1)
    };
    topo.set_ecmp(&[true, true])?;
    let lbs = start_lbs(&topo, true, &INITIAL_RING)?;
    // Paired rounds, the order alternating (with, without, without, with,
    // ...), so drift (other load, TIME_WAIT build-up) hits both sides
    // alike. After every switch of the programs a short warm-up run is
    // discarded (attach/detach, first connections of a new state), and the
    // client threads are pinned one per CPU. The ratio is the median of the
    // per-pair rate ratios; the table shows the means over all rounds.
    let per_round = dur / pairs.max(1);
    let warmup = Duration::from_millis(50).min(per_round);
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut ratios = Vec::new();
    let mut client_link = Some(client_link);
    for round in 0..pairs {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let mut pair = [CrrResult::default(); 2];
        for (k, on) in order.into_iter().enumerate() {
            check_interrupted()?;
            if on != client_link.is_some() {
                client_link = if on {
                    Some(client_ops.attach(client_cg.path())?)
                } else {
                    None
                };
                for p in procs.iter_mut() {
                    p.set_sockops(on)?;
                }
            }
            workload::crr(&topo.client, 2, warmup)?; // not counted
            pair[k] = workload::crr(&topo.client, 2, per_round)?;
        }
        let (w, wo) = if order[0] {
            (pair[0], pair[1])
        } else {
            (pair[1], pair[0])
        };
        if std::env::var_os("LAB_CRR_DEBUG").is_some() {
            progress(format!(
                "CRR pair {}/{pairs}: with {:.0} req/s, without {:.0} req/s",
                round + 1,
                w.rps,
                wo.rps
            ));
        }
        if wo.rps > 0.0 {
            ratios.push(w.rps / wo.rps);
        }
        with.push(w);
        without.push(wo);
    }
    drop(client_link);
    ratios.sort_by(f64::total_cmp);
    let crr_ratio = match ratios.len() {
        0 => 0.0,
        n if n % 2 == 1 => ratios[n / 2],
        n => (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0,
    };
    let crr_ratio_range = (
        ratios.first().copied().unwrap_or(0.0),
        ratios.last().copied().unwrap_or(0.0),
    );
    let with = CrrResult::merge(&with);
    let without = CrrResult::merge(&without);
    drop(lbs);

    progress("tearing down");
    drop(procs);
    Ok(LabReport {
        crr_ratio,
        crr_ratio_min: crr_ratio_range.0,
        crr_ratio_max: crr_ratio_range.1,
        crr_pairs: pairs,
        scenarios,
        crr_with_sockops: with.into(),
        crr_without_sockops: without.into(),
    })
}

fn print_table(r: &LabReport, to_stderr: bool) {
    let mut out = String::new();
    out.push_str("\nConnections to healthy backends broken (reset or stalled), per scenario:\n\n");
    out.push_str(&format!(
        "{:<58} {:>11} {:>16} {:>19}\n",
        "scenario", "connections", "with server_id", "without server_id"
    ));
    for s in &r.scenarios {
        let pct = |b: usize, d: &RunDetail| {
            if d.healthy == 0 {
                0.0
            } else {
                100.0 * b as f64 / d.healthy as f64
            }
        };
        out.push_str(&format!(
            "{:<58} {:>11} {:>8} ({:>4.1}%) {:>11} ({:>4.1}%){}\n",
            s.name,
            s.connections,
            s.broken_with_server_id,
            pct(s.broken_with_server_id, &s.detail_with),
            s.broken_without_server_id,
            pct(s.broken_without_server_id, &s.detail_without),
            if s.expects_breaks_without_server_id {
                " *"
            } else {
                ""
            },
        ));
    }
    out.push_str("\n(counted over connections whose backend stayed healthy; reset / stalled / packets routed by server_id;\n * built to break connections without server_id: the lab fails if none broke)\n");
    for s in &r.scenarios {
        for (mode, d) in [("with", &s.detail_with), ("without", &s.detail_without)] {
            out.push_str(&format!(
                "  {:<58} {:<8} healthy {:>4}  reset {:>4}  stalled {:>4}  sid-routed pkts {:>7}  LB drops {:>5}{}\n",
                s.name, mode, d.healthy, d.reset, d.stalled, d.sid_routed, d.lb_drops,
                match (d.lb_packets_before, d.lb_packets_after) {
                    (Some(b), Some(a)) => format!("  VIP pkts per LB before/after LB1 out {b:?} / {a:?}"),
                    _ => String::new(),
                }
            ));
        }
    }
    for s in &r.scenarios {
        if let Some(f) = &s.flood {
            out.push_str(&flood::table_line(s.name, f));
        }
    }
    out.push_str(&format!(
        "\nShort connections (connect-request-close), same path:\n\n{:<22} {:>10} {:>10} {:>10} {:>7}\n",
        "", "req/s", "p50 µs", "p99 µs", "errors"
    ));
    for (name, c) in [
        ("with sock_ops", &r.crr_with_sockops),
        ("without sock_ops", &r.crr_without_sockops),
    ] {
        out.push_str(&format!(
            "{:<22} {:>10.0} {:>10.0} {:>10.0} {:>7}\n",
            name, c.rps, c.p50_us, c.p99_us, c.errors
        ));
    }
    out.push_str(&format!(
        "ratio (with / without, median of {} paired rounds): {:.3} (per-pair range {:.3} .. {:.3})\n",
        r.crr_pairs, r.crr_ratio, r.crr_ratio_min, r.crr_ratio_max
    ));
    if to_stderr {
        eprint!("{out}");
    } else {
        print!("{out}");
    }
}

/// The lab's JSON: the fleet's rows join `scenarios`, its figures the top level.
fn report_json(r: &LabReport, fleet: Option<&fleet::FleetReport>) -> serde_json::Result<String> {
    let mut v = serde_json::to_value(r)?;
    if let (Some(f), Some(obj)) = (fleet, v.as_object_mut()) {
        if let Some(rows) = obj.get_mut("scenarios").and_then(|s| s.as_array_mut()) {
            for s in &f.scenarios {
                rows.push(serde_json::to_value(s)?);
            }
        }
        if let serde_json::Value::Object(top) = serde_json::to_value(f)? {
            for (k, x) in top {
                if k != "scenarios" {
                    obj.insert(k, x);
                }
            }
        }
    }
    serde_json::to_string(&v)
}

/// Why the lab fails (empty: it passes), each reason on its own: a
/// connection to a healthy backend broken with server_id; a scenario
/// built to break connections without server_id that broke none (the lab
/// is blind to breaks); the fleet's failures; failed CRR transactions.
fn failures(report: &LabReport, fleet: Option<&fleet::FleetReport>) -> Vec<String> {
    let mut v = Vec::new();
    for s in &report.scenarios {
        if s.broken_with_server_id > 0 {
            v.push(format!(
                "{}: {} connections to healthy backends broke with server_id routing",
                s.name, s.broken_with_server_id
            ));
        }
        v.extend(run::blind(
            s.name,
            s.expects_breaks_without_server_id,
            s.broken_without_server_id,
            s.detail_without.healthy,
        ));
        if let Some(f) = &s.flood {
            v.extend(flood::failures(s.name, s.broken_without_server_id, f));
        }
    }
    if let Some(f) = fleet {
        v.extend(
            fleet::failures(f)
                .into_iter()
                .map(|x| format!("fleet: {x}")),
        );
    }
    let errors = report.crr_with_sockops.errors + report.crr_without_sockops.errors;
    if errors > 0 {
        v.push(format!("{errors} CRR transactions failed"));
    }
    v
}

/// The exit of a child process of the lab (`--lb-control`, `--backend-child`).
fn child_exit(role: &str, r: Result<(), Error>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{role}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(a) = &args.lb_control {
        let Some(parsed) = control::ControlArgs::parse(a) else {
            eprintln!("bad --lb-control arguments");
            return ExitCode::from(2);
        };
        return child_exit("lb-control", control::child_main(parsed));
    }
    if let Some(child) = &args.backend_child {
        let parsed = (|| -> Option<BackendArgs> {
            Some(BackendArgs {
                index: child.first()?.parse().ok()?,
                netns: PathBuf::from(child.get(1)?),
                cgroup: PathBuf::from(child.get(2)?),
                serve_only: args.serve_only,
            })
        })();
        let Some(parsed) = parsed else {
            eprintln!("bad --backend-child arguments");
            return ExitCode::from(2);
        };
        return child_exit("backend", backend::child_main(parsed));
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the lab creates network namespaces, cgroups and BPF programs: run it as root");
        return ExitCode::from(2);
    }
    if let Err(e) = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::Relaxed)) {
        eprintln!("cannot install the Ctrl-C handler: {e}");
        return ExitCode::FAILURE;
    }
    if args.quick {
        args.connections = 60;
        args.crr_secs = 1.0;
        args.crr_pairs = 2;
    }
    // The fleet runs `flowpin-node`: built (or found up to date) by cargo
    // before anything else, so a build error costs no lab run.
    let wants_fleet = args.fleet_only || (!args.crr_only && !args.no_fleet && args.only.is_none());
    let node = match wants_fleet.then(fleet::node_binary).transpose() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("lab failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let (true, Some(node)) = (args.fleet_only, &node) {
        return fleet::main(args.json, args.coverage(), args.connections, node.clone());
    }
    let mut created = Created::default();
    let result = lab(&args, &mut created);
    // The fleet section: node processes on etcd, after the other scenarios.
    let fleet = match (&result, node) {
        (Ok(_), Some(node)) => Some(fleet::run(
            args.coverage(),
            args.connections,
            node,
            &mut created,
        )),
        _ => None,
    };
    // Everything is dropped now: look for what is left before saying so.
    let left = created.leftovers();
    if !left.is_empty() {
        eprintln!("lab failed: left behind: {}", left.join(", "));
        return ExitCode::FAILURE;
    }
    let fleet = match fleet.transpose() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("lab failed: fleet: {e}");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(report) => {
            print_table(&report, args.json);
            if let Some(f) = &fleet {
                fleet::print_table(&f.scenarios, args.json);
                fleet::print_summary(f, args.json);
            }
            if args.json {
                match report_json(&report, fleet.as_ref()) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("JSON: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            progress(format!(
                "clean: checked {} namespaces, {} cgroups, {} backend processes and bpffs: nothing left behind",
                created.netns.len(),
                created.cgroups.len(),
                created.pids.len()
            ));
            let failures = failures(&report, fleet.as_ref());
            for f in &failures {
                eprintln!("lab failed: {f}");
            }
            if !failures.is_empty() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lab failed: {e}");
            ExitCode::FAILURE
        }
    }
}
