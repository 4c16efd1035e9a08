//! Scenarios of a data path that outlives its control process (issue 11):
//! both LBs are driven by `lb-control` processes ([`crate::control`]) that
//! pin their state, so an LB's control side can crash, restart and upgrade
//! the program while the connection table and the ring stay in the kernel.
//!
//! - `LB control process killed (SIGKILL) and restarted`: LB1's controller
//!   is killed mid-stream; a new process reopens the pins and then adds a
//!   backend on both LBs.
//! - `xdp_lb upgraded in place`: both LBs load this build's program against
//!   their pinned maps and swap it into their pinned links under load.
//! - `backend drained, then removed after its connections closed`: backend
//!   4 is drained on both LBs (new flows elsewhere, its flows stay); new
//!   connections are opened and checked to avoid it; the connections opened
//!   before keep pinging 4 s after the drain (longer than a stall takes to
//!   show) and close; then it is removed.

use std::time::Duration;

use crate::control::{LbControl, PinDirs};
use crate::run::{Run, Tally};
use crate::topo::{self, Topology};
use crate::workload::{Streams, STALL_AFTER};
use crate::{pause, Error, RunDetail, INITIAL_RING, REMOVED, SPARE};

/// How long the connections opened before the drain keep pinging after
/// it: clearly longer than [`STALL_AFTER`], so a stall the drain caused is
/// recorded before they finish.
const OLD_STREAMS_AFTER_DRAIN: Duration = STALL_AFTER.saturating_add(Duration::from_millis(1500));

/// One of the scenarios of this module.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StateScenario {
    ControlKilled,
    Upgraded,
    Drained,
}

impl StateScenario {
    pub(crate) const ALL: [StateScenario; 3] = [
        StateScenario::ControlKilled,
        StateScenario::Upgraded,
        StateScenario::Drained,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            StateScenario::ControlKilled => "LB control process killed (SIGKILL) and restarted",
            StateScenario::Upgraded => "xdp_lb upgraded in place",
            StateScenario::Drained => "backend drained, then removed after its connections closed",
        }
    }

    /// None of them is built to break connections without server_id: the
    /// connection table survives every one (that is what they show).
    pub(crate) fn expects_breaks_without_server_id(self) -> bool {
        match self {
            StateScenario::ControlKilled | StateScenario::Upgraded | StateScenario::Drained => {
                false
            }
        }
    }

    /// In the main job's first look: the drain (a ring change under
    /// traffic that must break nothing, and new flows avoiding the backend).
    pub(crate) fn in_first_look(self) -> bool {
        matches!(self, StateScenario::Drained)
    }
}

fn ring_cmd(ring: &[usize]) -> String {
    let v: Vec<String> = ring.iter().map(usize::to_string).collect();
    format!("ring {}", v.join(","))
}

/// Runs `s` once; returns the broken connections to healthy backends and the details.
pub(crate) fn run_once(
    topo: &Topology,
    s: StateScenario,
    server_id_routing: bool,
    n: usize,
) -> Result<(usize, RunDetail), Error> {
    let run = Run::classic(topo, s.name(), server_id_routing)?;
    let pins = PinDirs::new();
    let mut ctl = Vec::new();
    for i in 0..topo::LBS {
        ctl.push(LbControl::start(
            topo,
            i,
            &pins.0[i],
            false,
            server_id_routing,
        )?);
    }
    run.progress("2 LB control processes loaded, pinned and attached xdp_lb");
    let mut streams = Some(Streams::open(&topo.client, n)?);
    run.progress(format!("{n} long-lived connections streaming"));
    pause(Duration::from_millis(1000))?;
    let mut reports = Vec::new();
    match s {
        StateScenario::ControlKilled => {
            ctl.remove(0).kill();
            run.progress("LB1 control process killed (SIGKILL); its xdp_lb keeps forwarding");
            pause(Duration::from_millis(500))?;
            let again = LbControl::start(topo, 0, &pins.0[0], true, server_id_routing)?;
            run.progress(format!(
                "new LB1 control process reopened the pinned state in {:.1} ms",
                again.ready_ms
            ));
            ctl.insert(0, again);
            let ring: Vec<usize> = INITIAL_RING.iter().copied().chain([SPARE]).collect();
            for c in &mut ctl {
                c.cmd(&ring_cmd(&ring))?;
            }
            run.progress("backend 5 added on both LBs (LB1 by its new controller)");
            pause(Duration::from_millis(1500))?;
        }
        StateScenario::Upgraded => {
            for (i, c) in ctl.iter_mut().enumerate() {
                let ids = c.cmd("upgrade")?;
                let mut w = ids.split_whitespace();
                let (old, new) = (w.next().unwrap_or("?"), w.next().unwrap_or("?"));
                if old == new {
                    return Err(format!("LB{}: the link still runs program {old}", i + 1).into());
                }
                run.progress(format!(
                    "LB{}: program {old} -> {new} swapped into its pinned link (bpf_link_update)",
                    i + 1
                ));
            }
            pause(Duration::from_millis(1500))?;
        }
        StateScenario::Drained => {
            for c in &mut ctl {
                c.cmd(&format!("drain {REMOVED}"))?;
            }
            let drained_at = std::time::Instant::now();
            run.progress("backend 4 drained on both LBs");
            pause(Duration::from_millis(1000))?;
            let fresh = Streams::open(&topo.client, n / 5)?;
            // The old streams live clearly longer than STALL_AFTER after
            // the drain: a ping the drain left unanswered is seen as a stall.
            pause(
                (drained_at + OLD_STREAMS_AFTER_DRAIN)
                    .saturating_duration_since(std::time::Instant::now()),
            )?;
            let old = streams.take().ok_or("streams already finished")?.finish();
            let on_drained = old
                .iter()
                .filter(|r| usize::from(r.backend) == REMOVED)
                .count();
            let on_drained_broken = Tally::of(
                &old.iter()
                    .filter(|r| usize::from(r.backend) == REMOVED)
                    .copied()
                    .collect::<Vec<_>>(),
                None,
            );
            run.progress(format!(
                "the {} connections opened before closed {:.1} s after the drain (a stall shows after {:.1} s); {on_drained} were on the draining backend ({} of them broke while it drained)",
                old.len(),
                drained_at.elapsed().as_secs_f64(),
                STALL_AFTER.as_secs_f64(),
                on_drained_broken.broken()
            ));
            pause(Duration::from_millis(300))?;
            for c in &mut ctl {
                c.cmd(&format!("remove {REMOVED}"))?;
            }
            run.progress("backend 4 removed on both LBs");
            pause(Duration::from_millis(2800))?;
            let later = fresh.finish();
            let misplaced = later
                .iter()
                .filter(|r| usize::from(r.backend) == REMOVED)
                .count();
            run.progress(format!(
                "{} connections opened while draining: {misplaced} reached the draining backend (expected 0)",
                later.len()
            ));
            if misplaced > 0 {
                return Err(format!(
                    "{misplaced} new connections reached the draining backend: drain is broken"
                )
                .into());
            }
            reports.extend(old);
            reports.extend(later);
        }
    }
    if let Some(st) = streams.take() {
        // Long enough for a stalled ping to be detected.
        pause(Duration::from_millis(2800))?;
        reports = st.finish();
    }
    let (mut drops, mut sid_routed) = (0, 0);
    for c in &mut ctl {
        let (d, r) = c.stats()?;
        drops += d;
        sid_routed += r;
    }
    drop(ctl);
    drop(pins);
    let t = Tally::of(&reports, None);
    run.require(&reports, sid_routed)?;
    run.progress(format!(
        "done: {} of {} connections broke ({} reset, {} stalled); the LBs dropped {drops} packets",
        t.broken(),
        t.healthy,
        t.reset,
        t.stalled
    ));
    Ok((
        t.broken(),
        RunDetail {
            healthy: t.healthy,
            reset: t.reset,
            stalled: t.stalled,
            sid_routed,
            lb_drops: drops,
            lb_packets_before: None,
            lb_packets_after: None,
        },
    ))
}
