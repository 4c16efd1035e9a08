//! The fleet's traffic scenarios: long-lived connections from the clients
//! (sock_ops client role) through the router's ECMP over 3 `flowpin-node lb`
//! processes to the backends, while the fleet changes under them.
//!
//! Every run starts from the same state — all 3 LBs in the router's ECMP,
//! backends 1-4 registered by their `flowpin-node backend` processes,
//! backend 5's server up without a node — sets
//! the VIP's `server_id` flag in the registry (on or off), opens the
//! connections, does the scenario's change, keeps pinging 2.8 s (a ping
//! unanswered 2.5 s is a stall) and counts connections to healthy backends
//! that broke (reset or stalled). `digests_agree`: all three LBs have one
//! ring digest for the VIP at the end.
//!
//! Only `LB replaced (state lost) + backend added` is built to break
//! connections without server_id (the LB set and the backend set change
//! together: a new LB with an empty connection table and a grown ring
//! meets flows it never saw); the lab fails if it breaks none there.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::Serialize;

use super::health::{self, HealthRun};
use super::{digests_agree, vip_name, Fleet, LBS, LEASE_TTL_SECS};
use crate::run::{self, Coverage, Tally};
use crate::topo;
use crate::workload::Streams;
use crate::{check_interrupted, pause, Created};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The backends registered at the start of every run.
const BASE: [usize; 4] = [0, 1, 2, 3];
/// The backend added in the registry-outage and LB-replaced scenarios.
const SPARE: usize = 4;
/// The backend that crashes.
const CRASHED: usize = 3;
/// The backend that drains.
const DRAINED: usize = 2;
/// The backend whose agent restarts / is upgraded.
const AGENT: usize = 1;
/// How long no agent (or no `node client`) runs in a restart.
const NO_AGENT: Duration = Duration::from_millis(1000);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Crash,
    RegistryDown,
    RollingLbRestart,
    Drain,
    LbReplaced,
    AgentRestarted,
    AgentUpgraded,
    ClientRoleRestarted,
    Hung,
    PortClosed,
    PathCut,
    Recovers,
}

impl Kind {
    const ALL: [Kind; 12] = [
        Kind::Crash,
        Kind::RegistryDown,
        Kind::RollingLbRestart,
        Kind::Drain,
        Kind::LbReplaced,
        Kind::AgentRestarted,
        Kind::AgentUpgraded,
        Kind::ClientRoleRestarted,
        Kind::Hung,
        Kind::PortClosed,
        Kind::PathCut,
        Kind::Recovers,
    ];

    fn name(self, quick: bool) -> &'static str {
        match self {
            Kind::Crash => "backend crashed (SIGKILL)",
            Kind::RegistryDown if quick => "registry down 5 s (quick), then a backend added",
            Kind::RegistryDown => "registry down 30 s, then a backend added",
            Kind::RollingLbRestart => "rolling restart of all 3 LB nodes",
            Kind::Drain => "backend drained on SIGTERM",
            Kind::LbReplaced => "LB replaced (state lost) + backend added",
            Kind::AgentRestarted => "backend agent restarted (decap and sock_ops pinned)",
            Kind::AgentUpgraded => "backend agent upgraded",
            Kind::ClientRoleRestarted => "client role restarted",
            Kind::Hung => "service hung (SIGSTOP) on one backend, its agent alive",
            Kind::PortClosed => "service stopped, port closed, agent alive",
            Kind::PathCut => "tunnel path from one LB to one backend cut",
            Kind::Recovers => "service recovers (hung, then SIGCONT)",
        }
    }

    /// Built to break connections without server_id: only the LB set and
    /// the backend set changing together does it here. In the others the
    /// LBs keep their connection tables (pinned across restarts) and the
    /// router's ECMP stays; a replaced LB (new machine: no pins) meets
    /// flows it never saw just as the ring grew.
    fn expects_breaks_without_server_id(self) -> bool {
        match self {
            Kind::LbReplaced => true,
            Kind::Crash
            | Kind::RegistryDown
            | Kind::RollingLbRestart
            | Kind::Drain
            | Kind::AgentRestarted
            | Kind::AgentUpgraded
            | Kind::ClientRoleRestarted
            | Kind::Hung
            | Kind::PortClosed
            | Kind::PathCut
            | Kind::Recovers => false,
        }
    }

    /// In the main job's first look (under 3 min): the LB-side events.
    /// The 30 s registry outage, the agent / client-role restarts and the
    /// health-check rows run with `--all` (and `--quick`, in the tests).
    fn in_first_look(self) -> bool {
        matches!(
            self,
            Kind::Crash | Kind::RollingLbRestart | Kind::Drain | Kind::LbReplaced
        )
    }

    /// What `event_ms` measures, and its target in ms if it has one.
    fn timing(self) -> (&'static str, Option<f64>) {
        match self {
            Kind::Crash => (
                "SIGKILL until every LB dropped the backend (lease expiry)",
                Some((LEASE_TTL_SECS as f64 + 1.0) * 1000.0),
            ),
            Kind::RegistryDown => (
                "etcd restarted until every LB has the added backend, digests equal",
                None,
            ),
            Kind::RollingLbRestart => ("the 3 restarts, each until its HTTP port answers", None),
            Kind::Drain => (
                "SIGTERM until the node drained and exited (clients closing gracefully)",
                None,
            ),
            Kind::LbReplaced => (
                "LB1's node stopped until its replacement and every LB have the added backend",
                None,
            ),
            Kind::AgentRestarted => (
                "backend 2's agent SIGKILLed, 1 s without it, until the new one registered",
                None,
            ),
            Kind::AgentUpgraded => (
                "backend 2's agent handed over (SIGUSR2), 1 s without it, until the new build registered",
                None,
            ),
            Kind::ClientRoleRestarted => (
                "node client SIGKILLed, 1 s without it, until the new one answers",
                None,
            ),
            Kind::Hung | Kind::PortClosed => (
                "service failed until every LB drained the backend (health check 1 s x fall 3)",
                Some(health::DETECT_TARGET_MS),
            ),
            Kind::PathCut => (
                "LB1 -> backend 4 cut until LB1 reports it down against the quorum",
                None,
            ),
            Kind::Recovers => (
                "SIGCONT until every LB has the backend back in the ring",
                None,
            ),
        }
    }
}

/// One run (server_id on or off).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Run {
    pub(crate) healthy: usize,
    pub(crate) reset: usize,
    pub(crate) stalled: usize,
    /// Closed gracefully by the client (drain).
    pub(crate) closed_gracefully: usize,
    pub(crate) sid_routed: u64,
    pub(crate) digests_agree: bool,
    pub(crate) event_ms: f64,
    /// Agent scenarios: packets the LBs sent to the restarted agent's
    /// backend from just before the agent stopped until after the new one
    /// registered, those its pinned `xdp_decap` decapsulated, the
    /// difference (lost at the backend) and the clients' TCP
    /// retransmissions meanwhile.
    pub(crate) backend_packets: Option<BackendPackets>,
    /// What did not happen as the scenario says (empty: all did).
    pub(crate) problems: Vec<String>,
    /// Health scenarios: digests agreed at the end, before the failed
    /// service was restored.
    #[serde(skip)]
    pub(crate) digests_agree_before_restore: bool,
    /// Health scenarios: what they measured.
    pub(crate) health: Option<HealthRun>,
}

/// Packets around an agent restart (see [`Run::backend_packets`]).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct BackendPackets {
    pub(crate) sent_by_lbs: u64,
    pub(crate) decapsulated: u64,
    pub(crate) lost: u64,
    pub(crate) client_retransmits: u64,
}

/// One fleet scenario's row.
#[derive(Debug, Serialize)]
pub(crate) struct FleetScenario {
    pub(crate) name: &'static str,
    pub(crate) connections: usize,
    pub(crate) broken_with_server_id: usize,
    pub(crate) broken_without_server_id: usize,
    /// Built to break connections without server_id: the lab fails if
    /// none broke ([`run::blind`]).
    pub(crate) expects_breaks_without_server_id: bool,
    /// Both runs ended with one ring digest on all LBs.
    pub(crate) digests_agree: bool,
    /// What `event_ms` measures.
    pub(crate) event: &'static str,
    pub(crate) event_ms_with_server_id: f64,
    pub(crate) event_ms_without_server_id: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) event_target_ms: Option<f64>,
    /// Agent restarts: packets lost at the backend while no agent ran
    /// (LB-sent − decapsulated), both runs summed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) backend_packets_lost: Option<u64>,
    /// Agent restarts: the clients' TCP retransmissions meanwhile, both
    /// runs summed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client_retransmits: Option<u64>,
    /// Agent restarts: per run (with, without server_id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) backend_packets: Option<[BackendPackets; 2]>,
    /// `hung`, `port closed`, `recovers`: failure until every LB drained
    /// the backend, the slower of the two runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) detect_ms: Option<f64>,
    /// New connections that hit the failed backend before detection, both
    /// runs summed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failed_new_connections: Option<u64>,
    /// `cut`: the LBs (1-based) reported as disagreeing with the quorum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) disagreeing_lbs: Option<Vec<usize>>,
    /// Health scenarios: per run (with, without server_id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) health: Option<[HealthRun; 2]>,
    #[serde(skip)]
    runs: [Run; 2],
}

impl FleetScenario {
    /// The per-run lines under the table.
    pub(crate) fn detail_lines(&self) -> String {
        let mut out = String::new();
        for (mode, r) in [("with", &self.runs[0]), ("without", &self.runs[1])] {
            out.push_str(&format!(
                "  {:<52} {:<8} healthy {:>4}  reset {:>3}  stalled {:>3}  closed {:>3}  sid-routed pkts {:>7}  digests agree {}  {:.0} ms: {}{}\n",
                self.name,
                mode,
                r.healthy,
                r.reset,
                r.stalled,
                r.closed_gracefully,
                r.sid_routed,
                r.digests_agree,
                r.event_ms,
                self.event,
                if r.problems.is_empty() {
                    String::new()
                } else {
                    format!("  PROBLEMS: {}", r.problems.join("; "))
                }
            ));
            if let Some(h) = &r.health {
                out.push_str(&format!(
                    "  {:<52} {:<8} health: {}\n",
                    "",
                    mode,
                    serde_json::to_string(h).unwrap_or_default()
                ));
            }
            if let Some(p) = &r.backend_packets {
                out.push_str(&format!(
                    "  {:<52} {:<8} backend 2: {} packets sent by the LBs, {} decapsulated, {} lost; client TCP retransmissions {}\n",
                    "", mode, p.sent_by_lbs, p.decapsulated, p.lost, p.client_retransmits
                ));
            }
        }
        out
    }

    /// Why this row fails the lab (empty: it passes).
    pub(crate) fn failures(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.broken_with_server_id > 0 {
            v.push(format!(
                "{}: {} connections to healthy backends broke with server_id",
                self.name, self.broken_with_server_id
            ));
        }
        if !self.digests_agree {
            v.push(format!("{}: LB ring digests differ at the end", self.name));
        }
        v.extend(run::blind(
            self.name,
            self.expects_breaks_without_server_id,
            self.broken_without_server_id,
            self.runs[1].healthy,
        ));
        for (mode, r) in [("with", &self.runs[0]), ("without", &self.runs[1])] {
            for p in &r.problems {
                v.push(format!("{} ({mode} server_id): {p}", self.name));
            }
        }
        v
    }
}

/// Prints the fleet rows in the lab table's columns.
pub(crate) fn print_table(rows: &[FleetScenario], to_stderr: bool) {
    let mut out = String::from(
        "\nFleet: the data path run by node processes on etcd (3 LBs, 5 backends), broken connections to healthy backends:\n\n",
    );
    out.push_str(&format!(
        "{:<52} {:>11} {:>16} {:>19} {:>8}\n",
        "scenario", "connections", "with server_id", "without server_id", "digests"
    ));
    for s in rows {
        let pct = |b: usize, r: &Run| {
            if r.healthy == 0 {
                0.0
            } else {
                100.0 * b as f64 / r.healthy as f64
            }
        };
        out.push_str(&format!(
            "{:<52} {:>11} {:>8} ({:>4.1}%) {:>11} ({:>4.1}%) {:>8}{}\n",
            s.name,
            s.connections,
            s.broken_with_server_id,
            pct(s.broken_with_server_id, &s.runs[0]),
            s.broken_without_server_id,
            pct(s.broken_without_server_id, &s.runs[1]),
            if s.digests_agree { "agree" } else { "DIFFER" },
            if s.expects_breaks_without_server_id {
                "  *"
            } else {
                ""
            },
        ));
    }
    if rows.iter().any(|s| s.expects_breaks_without_server_id) {
        out.push_str(
            "  (* built to break connections without server_id: the lab fails if none broke)\n",
        );
    }
    for s in rows {
        out.push_str(&format!(
            "  {:<52} {}: {:.0} ms with server_id, {:.0} ms without{}\n",
            s.name,
            s.event,
            s.event_ms_with_server_id,
            s.event_ms_without_server_id,
            s.event_target_ms
                .map(|t| format!(" (target ≤ {t:.0} ms)"))
                .unwrap_or_default()
        ));
    }
    if to_stderr {
        eprint!("{out}");
    } else {
        print!("{out}");
    }
}

/// Brings the fleet to the state every run starts from.
///
/// A server's listener must exist after the sock_ops program is attached
/// (the program asks for SYN-ACK option writing on the listener), so a
/// backend whose node (re)starts gets a fresh server once the node has
/// registered (it attaches sock_ops before registering).
fn reset_state(f: &mut Fleet, created: &mut Created) -> Result<(), Error> {
    f.topo.set_ecmp(&[true; LBS])?;
    if f.backends[SPARE].node.is_some()
        && !f.stop_backend_node(SPARE, Signal::SIGTERM, Duration::from_secs(12))
    {
        return Err("the spare backend's node did not drain and exit on SIGTERM".into());
    }
    for &j in &BASE {
        if !f.backend_node_running(j) {
            f.backends[j].server = None;
            f.start_backend_node(j, created)?;
        }
    }
    f.wait_backends(&BASE, 0, Duration::from_secs(20))?;
    for j in 0..topo::BACKENDS {
        f.start_server(j, created)?;
    }
    Ok(())
}

fn run_once(
    f: &mut Fleet,
    kind: Kind,
    server_id: bool,
    n: usize,
    quick: bool,
    created: &mut Created,
) -> Result<Run, Error> {
    let scenario = run::Run::fleet(kind.name(quick), server_id);
    reset_state(f, created)?;
    f.set_server_id(server_id)?;
    let is_health = matches!(
        kind,
        Kind::Hung | Kind::PortClosed | Kind::PathCut | Kind::Recovers
    );
    // The probing's CPU: each LB idle (no connections yet) without and with the
    // health check, once (the hung scenario's run with server_id).
    let idle_without = if kind == Kind::Hung && server_id {
        Some(f.idle_cpu()?)
    } else {
        None
    };
    let cpu = if is_health {
        Some(f.health_on(&BASE)?)
    } else {
        None
    };
    let idle_with = if idle_without.is_some() {
        Some(f.idle_cpu()?)
    } else {
        None
    };
    let sid0 = f.sid_routed();
    let streams = Streams::open(&f.topo.client, n)?;
    scenario.progress(format!(
        "{n} long-lived connections streaming through {LBS} flowpin-node lb"
    ));
    pause(Duration::from_millis(1000))?;
    let mut run = Run::default();
    let mut unhealthy: Option<u16> = None;
    match kind {
        Kind::Hung | Kind::Recovers => {
            let pid = f.backends[CRASHED]
                .server
                .as_ref()
                .ok_or("no server")?
                .pid();
            let t0 = Instant::now();
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGSTOP)?;
            unhealthy = Some(CRASHED as u16);
            scenario.progress("backend 4's service SIGSTOPped (its agent alive)");
            let (ms, failed, total) = f.detect_drain(CRASHED, t0, Duration::from_secs(15))?;
            run.event_ms = ms;
            scenario.progress(format!(
                "every LB drained backend 4 after {ms:.0} ms; {failed} of {total} new connections failed meanwhile"
            ));
            let mut h = HealthRun {
                detect_ms: Some(ms),
                failed_new_connections: Some(failed),
                new_connections: Some(total),
                ..HealthRun::default()
            };
            if ms > health::DETECT_TARGET_MS {
                run.problems.push(format!(
                    "backend 4 drained after {ms:.0} ms, over {:.0} ms",
                    health::DETECT_TARGET_MS
                ));
            }
            if kind == Kind::Recovers {
                let t1 = Instant::now();
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGCONT)?;
                f.wait_recovered(&BASE)?;
                let rms = t1.elapsed().as_secs_f64() * 1000.0;
                run.event_ms = rms;
                h.recover_ms = Some(rms);
                scenario.progress(format!(
                    "SIGCONT: backend 4 back in every LB's ring after {rms:.0} ms"
                ));
            }
            run.health = Some(h);
        }
        Kind::PortClosed => {
            let t0 = Instant::now();
            if let Some(mut s) = f.backends[CRASHED].server.take() {
                s.kill();
            }
            unhealthy = Some(CRASHED as u16);
            scenario.progress("backend 4's service killed: port closed, its agent alive");
            let (ms, failed, total) = f.detect_drain(CRASHED, t0, Duration::from_secs(15))?;
            run.event_ms = ms;
            scenario.progress(format!(
                "every LB drained backend 4 after {ms:.0} ms; {failed} of {total} new connections failed meanwhile"
            ));
            if ms > health::DETECT_TARGET_MS {
                run.problems.push(format!(
                    "backend 4 drained after {ms:.0} ms, over {:.0} ms",
                    health::DETECT_TARGET_MS
                ));
            }
            run.health = Some(HealthRun {
                detect_ms: Some(ms),
                failed_new_connections: Some(failed),
                new_connections: Some(total),
                ..HealthRun::default()
            });
        }
        Kind::PathCut => {
            let t0 = Instant::now();
            f.cut_path(0, CRASHED, true)?;
            scenario.progress("LB1 -> backend 4 cut (router blackhole for LB1's own packets)");
            let r = f.wait_disagreement(0, CRASHED, t0);
            // The quorum had its verdicts for 2 more intervals.
            let kept = r.is_ok() && {
                let _ = pause(Duration::from_millis(2 * health::INTERVAL_MS));
                f.kept_everywhere(&BASE)
            };
            let lbs = f.disagreeing(CRASHED);
            f.cut_path(0, CRASHED, false)?;
            run.event_ms = r?;
            scenario.progress(format!(
                "LB1 saw backend 4 down after {:.0} ms; disagreeing LBs {lbs:?}; kept in every ring: {kept}",
                run.event_ms
            ));
            if !kept {
                run.problems
                    .push("backend 4 left the ring although only LB1's path was cut".into());
            }
            if lbs != [1] {
                run.problems
                    .push(format!("disagreeing LBs {lbs:?}, expected [1]"));
            }
            run.health = Some(HealthRun {
                disagreeing_lbs: Some(lbs),
                kept_in_ring: Some(kept),
                ..HealthRun::default()
            });
        }
        Kind::Crash => {
            let t0 = Instant::now();
            if let Some(mut n) = f.backends[CRASHED].node.take() {
                n.signal(Signal::SIGKILL);
                n.wait_exit(Duration::from_secs(2));
            }
            if let Some(mut s) = f.backends[CRASHED].server.take() {
                s.kill();
            }
            unhealthy = Some(CRASHED as u16);
            scenario.progress("backend 4 host crashed: flowpin-node backend and server SIGKILLed");
            let want: Vec<usize> = BASE.iter().copied().filter(|&j| j != CRASHED).collect();
            f.wait_backends(&want, 0, Duration::from_secs(LEASE_TTL_SECS + 10))?;
            run.event_ms = t0.elapsed().as_secs_f64() * 1000.0;
            scenario.progress(format!(
                "every LB dropped backend 4 after {:.0} ms (lease TTL {LEASE_TTL_SECS} s)",
                run.event_ms
            ));
            let target = (LEASE_TTL_SECS as f64 + 1.0) * 1000.0;
            if run.event_ms > target {
                run.problems.push(format!(
                    "the crashed backend left the LBs after {:.0} ms, over TTL + 1 s = {target:.0} ms",
                    run.event_ms
                ));
            }
        }
        Kind::RegistryDown => {
            let outage = Duration::from_secs(if quick { 5 } else { 30 });
            f.etcd.kill();
            scenario.progress(format!(
                "etcd killed (data directory kept) for {} s",
                outage.as_secs()
            ));
            pause(outage)?;
            for (i, lb) in f.lbs.iter_mut().enumerate() {
                if !lb.proc_.running() {
                    run.problems.push(format!(
                        "flowpin-node lb {} exited while etcd was down",
                        i + 1
                    ));
                }
            }
            f.rt.block_on(f.etcd.restart())?;
            let t0 = Instant::now();
            scenario.progress("etcd restarted on its data; backend 5's node started");
            // A fresh server after the node's sock_ops (see reset_state).
            f.backends[SPARE].server = None;
            f.start_backend_node(SPARE, created)?;
            let mut want = BASE.to_vec();
            want.push(SPARE);
            f.wait_backends(&want, 0, Duration::from_secs(30))?;
            run.event_ms = t0.elapsed().as_secs_f64() * 1000.0;
            f.start_server(SPARE, created)?;
            scenario.progress(format!(
                "all LBs converged on 5 backends {:.0} ms after etcd came back",
                run.event_ms
            ));
        }
        Kind::RollingLbRestart => {
            let t0 = Instant::now();
            for i in 0..LBS {
                check_interrupted()?;
                let sig = if i % 2 == 0 {
                    Signal::SIGTERM
                } else {
                    Signal::SIGKILL
                };
                let reopened = f.restart_lb(i, sig, created)?;
                scenario.progress(format!(
                    "flowpin-node lb {} restarted after {sig}; reopened its pins: {reopened}",
                    i + 1
                ));
                if !reopened {
                    run.problems.push(format!(
                        "flowpin-node lb {} did not reopen its pinned data path",
                        i + 1
                    ));
                }
                pause(Duration::from_millis(300))?;
            }
            run.event_ms = t0.elapsed().as_secs_f64() * 1000.0;
            f.wait_backends(&BASE, 0, Duration::from_secs(10))?;
        }
        Kind::Drain => {
            let t0 = Instant::now();
            if let Some(n) = f.backends[DRAINED].node.as_mut() {
                n.signal(Signal::SIGTERM);
            }
            f.wait_backends(&BASE, 1, Duration::from_secs(10))?;
            scenario.progress(format!(
                "backend 3 draining on every LB after {:.0} ms; its flows keep flowing 1 s",
                t0.elapsed().as_secs_f64() * 1000.0
            ));
            pause(Duration::from_millis(1000))?;
            streams.close_to(DRAINED as u16);
            scenario.progress("clients close their connections to backend 3 (FIN)");
            let exited = f.backends[DRAINED]
                .node
                .take()
                .is_some_and(|mut n| n.wait_exit(Duration::from_secs(12)));
            run.event_ms = t0.elapsed().as_secs_f64() * 1000.0;
            if !exited {
                run.problems.push(
                    "backend 3's node did not drain and exit successfully within 12 s".into(),
                );
            }
            let want: Vec<usize> = BASE.iter().copied().filter(|&j| j != DRAINED).collect();
            f.wait_backends(&want, 0, Duration::from_secs(10))?;
            scenario.progress(format!(
                "backend 3 drained, deregistered and gone from every LB after {:.0} ms",
                run.event_ms
            ));
        }
        Kind::LbReplaced => {
            // Maintenance: LB1 leaves ECMP (its flows move to LB2 and LB3,
            // which share its ring), its machine is replaced (node stopped,
            // pins removed: the connection table is gone) while capacity
            // grows (backend 5 registers), and the new LB1 comes back.
            f.topo.set_ecmp(&[false, true, true])?;
            scenario.progress("LB1 taken out of ECMP");
            pause(Duration::from_millis(500))?;
            let t0 = Instant::now();
            f.retire_lb(0)?;
            scenario.progress("LB1's flowpin-node lb stopped and its pins removed (state lost)");
            // A fresh server after the node's sock_ops (see reset_state).
            f.backends[SPARE].server = None;
            f.start_backend_node(SPARE, created)?;
            scenario.progress("backend 5's node started (registers backend 5)");
            let reopened = f.start_lb(0, created)?;
            if reopened {
                run.problems.push(
                    "the replaced LB1 reopened pins: its state was not lost as the scenario says"
                        .into(),
                );
            }
            let mut want = BASE.to_vec();
            want.push(SPARE);
            f.wait_backends(&want, 0, Duration::from_secs(30))?;
            run.event_ms = t0.elapsed().as_secs_f64() * 1000.0;
            f.start_server(SPARE, created)?;
            scenario.progress(format!(
                "a new LB1 (fresh program, empty connection table) and every LB have 5 backends after {:.0} ms",
                run.event_ms
            ));
            pause(Duration::from_millis(500))?;
            f.topo.set_ecmp(&[true; LBS])?;
            scenario.progress("LB1 back in ECMP");
            pause(Duration::from_millis(1500))?;
        }
        Kind::AgentRestarted | Kind::AgentUpgraded => {
            let (sig, binary, how) = if kind == Kind::AgentRestarted {
                (Signal::SIGKILL, f.node.clone(), "SIGKILLed")
            } else {
                (
                    Signal::SIGUSR2,
                    f.upgraded_binary()?,
                    "handed over (SIGUSR2) to a new build",
                )
            };
            let before = f.loss_counters(AGENT)?;
            let t0 = Instant::now();
            let reopened = f.restart_agent(AGENT, sig, &binary, NO_AGENT, created)?;
            run.event_ms = t0.elapsed().as_secs_f64() * 1000.0;
            scenario.progress(format!(
                "backend 2's agent {how}, {} ms without an agent; the new one registered after {:.0} ms, reopened its pins: {reopened}",
                NO_AGENT.as_millis(),
                run.event_ms
            ));
            if !reopened {
                run.problems
                    .push("the new agent did not reopen the pinned data path".into());
            }
            pause(Duration::from_millis(1000))?;
            let after = f.loss_counters(AGENT)?;
            let (sent, got, lost, retrans) = after.since(&before);
            scenario.progress(format!(
                "backend 2: the LBs sent {sent} packets, its pinned xdp_decap decapsulated {got}: {lost} lost; client TCP retransmissions {retrans}"
            ));
            if lost > 0 {
                run.problems.push(format!(
                    "{lost} packets lost at backend 2 during its agent's restart"
                ));
            }
            if sent == 0 {
                run.problems.push(
                    "no packet reached backend 2 during the restart: nothing measured".into(),
                );
            }
            run.backend_packets = Some(BackendPackets {
                sent_by_lbs: sent,
                decapsulated: got,
                lost,
                client_retransmits: retrans,
            });
            f.wait_backends(&BASE, 0, Duration::from_secs(10))?;
        }
        Kind::ClientRoleRestarted => {
            let echoed0 = f.client.echoed();
            let sid0 = f.sid_routed();
            let t0 = Instant::now();
            f.client.proc_.stop(Signal::SIGKILL, Duration::from_secs(5));
            pause(NO_AGENT)?;
            let (echoed1, sid1) = (f.client.echoed(), f.sid_routed_since(&sid0));
            let node = f.node.clone();
            let reopened = f.client.start(&node, created)?;
            run.event_ms = t0.elapsed().as_secs_f64() * 1000.0;
            scenario.progress(format!(
                "node client SIGKILLed; in {} ms without it the clients echoed {} packets, the LBs routed {} by server_id; the new one reopened its pins: {reopened}",
                NO_AGENT.as_millis(),
                echoed1 - echoed0,
                sid1
            ));
            if !reopened {
                run.problems
                    .push("the new node client did not reopen its pinned program".into());
            }
            if server_id && sid1 == 0 {
                run.problems
                    .push("no packet was routed by server_id while no node client ran".into());
            }
        }
    }
    // Long enough for a stalled ping to be detected.
    pause(Duration::from_millis(2800))?;
    let reports = streams.finish();
    if let (Some(m), Some(h)) = (&cpu, run.health.as_mut()) {
        h.lb_cpu_percent = f.cpu_since(m);
        h.lb_idle_cpu_percent_without_health = idle_without;
        h.lb_idle_cpu_percent_with_health = idle_with;
    }
    if is_health {
        // Back to the state every run starts from, then no health check.
        if let Some(s) = f.backends[CRASHED].server.as_ref() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.pid() as i32), Signal::SIGCONT);
        }
        f.start_server(CRASHED, created)?;
        run.digests_agree_before_restore = digests_agree(&f.lbs, &vip_name(topo::VIP));
        f.wait_recovered(&BASE)?;
        f.health_off()?;
    }
    run.sid_routed = f.sid_routed_since(&sid0);
    run.digests_agree = digests_agree(&f.lbs, &vip_name(topo::VIP))
        && (!is_health || run.digests_agree_before_restore);
    let t = Tally::of(&reports, unhealthy);
    (run.healthy, run.reset, run.stalled) = (t.healthy, t.reset, t.stalled);
    run.closed_gracefully = reports.iter().filter(|r| r.closed).count();
    run.problems
        .extend(scenario.check(&reports, run.sid_routed)?);
    scenario.progress(format!(
        "done: {} of {} connections to healthy backends broke ({} reset, {} stalled); digests agree: {}",
        run.reset + run.stalled,
        run.healthy,
        run.reset,
        run.stalled,
        run.digests_agree
    ));
    Ok(run)
}

/// Runs every scenario `coverage` takes twice (server_id on and off, the
/// order alternating).
pub(crate) fn run_all(
    f: &mut Fleet,
    coverage: Coverage,
    connections: usize,
    created: &mut Created,
) -> Result<Vec<FleetScenario>, Error> {
    let quick = coverage == Coverage::Quick;
    // FLOWPIN_LAB_FLEET_SCENARIOS="agent,client role": only the scenarios
    // whose name contains one of these (for work on one of them).
    let only: Vec<String> = std::env::var("FLOWPIN_LAB_FLEET_SCENARIOS")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let kinds = Kind::ALL
        .into_iter()
        .filter(|k| coverage != Coverage::FirstLook || k.in_first_look())
        .filter(|k| only.is_empty() || only.iter().any(|o| k.name(quick).contains(o.as_str())));
    let mut rows = Vec::new();
    for (k, kind) in kinds.enumerate() {
        let expects = kind.expects_breaks_without_server_id();
        let n = run::connections(connections, coverage, expects);
        let (with, without) = run::both_modes(k, |sid| run_once(f, kind, sid, n, quick, created))?;
        let (event, target) = kind.timing();
        rows.push(FleetScenario {
            name: kind.name(quick),
            connections: n,
            broken_with_server_id: with.reset + with.stalled,
            broken_without_server_id: without.reset + without.stalled,
            expects_breaks_without_server_id: expects,
            digests_agree: with.digests_agree && without.digests_agree,
            event,
            event_ms_with_server_id: with.event_ms,
            event_ms_without_server_id: without.event_ms,
            event_target_ms: target,
            backend_packets_lost: with
                .backend_packets
                .zip(without.backend_packets)
                .map(|(a, b)| a.lost + b.lost),
            client_retransmits: with
                .backend_packets
                .zip(without.backend_packets)
                .map(|(a, b)| a.client_retransmits + b.client_retransmits),
            backend_packets: with
                .backend_packets
                .zip(without.backend_packets)
                .map(|(a, b)| [a, b]),
            detect_ms: with
                .health
                .as_ref()
                .zip(without.health.as_ref())
                .and_then(|(a, b)| Some(a.detect_ms?.max(b.detect_ms?))),
            failed_new_connections: with
                .health
                .as_ref()
                .zip(without.health.as_ref())
                .and_then(|(a, b)| Some(a.failed_new_connections? + b.failed_new_connections?)),
            disagreeing_lbs: with.health.as_ref().and_then(|h| h.disagreeing_lbs.clone()),
            health: with
                .health
                .clone()
                .zip(without.health.clone())
                .map(|(a, b)| [a, b]),
            runs: [with, without],
        });
    }
    Ok(rows)
}
