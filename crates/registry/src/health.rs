//! Health verdicts the fleet agrees on.
//!
//! # What is stored (all under `routing/`, so in every snapshot)
//!
//! | key | value | written by | lease |
//! |---|---|---|---|
//! | `routing/health/{proto}/{vip}/{port}` | [`HealthCheck`] JSON | operator ([`Registry::put_health_check`](crate::Registry::put_health_check)) | none |
//! | `routing/verdicts/{proto}/{vip}/{port}/{backend}/{lb}` | [`Verdict`] JSON | each LB ([`HealthReporter`](crate::HealthReporter)) | the LB's |
//! | `routing/selfhealth/{proto}/{vip}/{port}/{backend}` | [`SelfReport`] JSON | the backend's agent ([`Registration::report_health`](crate::Registration::report_health)) | the backend's |
//!
//! A check that fails [`HealthCheck::validate_for`] (or a verdict or report
//! that does not parse) is rejected ([`RejectKind::BadHealthCheck`], with
//! the reason) and never applied: the VIP is then not health-checked.
//!
//! # The quorum rule ([`effective`])
//!
//! Verdicts live under their LB's lease, so the verdicts present in a
//! snapshot are exactly those of the **live LBs that have a verdict** on the
//! backend (an LB that died takes its verdicts with it; one that has not
//! decided yet, state unknown, writes none). With `n` such verdicts, `d`
//! of them down and `x` of those down *and expired*:
//!
//! - [`Effective::Removed`] if `2x > n`: a strict majority has seen it
//!   down for the check's `down_ms`; it leaves the VIP's backends (and the
//!   ring) until it passes again;
//! - else [`Effective::Drained`] if `2d > n`, or the backend reported
//!   itself unhealthy: drained, i.e. out of the ring for new flows, still
//!   reached by server_id and the connection table, back with its weight
//!   when it passes (a hung service may recover; a dead one loses its
//!   flows either way);
//! - else [`Effective::Healthy`] (also when `n = 0`: no information never
//!   drains). A tie (`2d = n`) keeps the backend: one LB with a broken path
//!   to it cannot take it out of the fleet's rings.
//!
//! Without a check on the VIP, verdicts are ignored (a self-report still
//! drains). [`QuorumRule::Local`] (a single LB) counts only that LB's own
//! verdict.
//!
//! # An LB's loop
//!
//! ```text
//! prober.set_targets(targets_of(&snap))?;       // on every snapshot
//! publish_verdicts(&prober, &reporter).await?;  // a task: verdicts on every change
//! reconcile(desired_of(&snap));                 // the fleet's decision, never the LB's own
//! for d in disagreements(&snap, lb) { … }       // metrics (HealthMetrics::set_disagreement), status
//! fleet_status(&snap, lb, &rule, &prober.status()) // for /status and the CLI
//! ```
//!
//! # Why every LB applies the same change at the same revision
//!
//! [`effective`] is a pure function of the snapshot: no local clock, no
//! local probe result. "Down long enough to leave the ring" is not decided
//! by comparing `since_ms` with a local clock (LBs' clocks and snapshot
//! arrival times differ): each LB sets `expired` in its own verdict when
//! *its* damped state has been down for `down_ms`, and that write is a
//! registry revision. The removal happens at the revision where a strict
//! majority of verdicts carries `expired`, on every LB alike, so the Maglev
//! rings (and their digests) stay equal.

use std::collections::BTreeMap;
use std::net::IpAddr;

pub use crate::health_fleet::{
    fleet_status, publish_verdicts, targets_of, verdicts_of, FleetBackend,
};
pub use flowpin_health::{Health, HealthCheck, HealthConfigError, ProbeKind};
use serde::{Deserialize, Serialize};

use crate::keys::{valid_host, KeyKind};
use crate::model::{RejectKind, Snapshot, Vip, VipEntry};
use crate::validate::Invalid;

/// One LB's verdict on one backend of one VIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// Passing (its damped state is up) or failing (down).
    pub up: bool,
    /// Down for at least the check's `down_ms` on this LB.
    #[serde(default)]
    pub expired: bool,
    /// Why the last probe failed (a `FailReason` name), for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix ms of this LB's last state change, for operators (never used
    /// to decide: see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
}

impl Verdict {
    /// The verdict of a damped state (`None` for [`Health::Unknown`]: no
    /// verdict is written before one is reached).
    pub fn of(state: Health, expired: bool) -> Option<Verdict> {
        let up = match state {
            Health::Unknown => return None,
            Health::Up => true,
            Health::Down => false,
        };
        Some(Verdict {
            up,
            expired: !up && expired,
            reason: None,
            since_ms: None,
        })
    }
}

/// A backend's own report on its service (a local check command or HTTP
/// endpoint on the backend host, run by its agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfReport {
    /// Whether the service is fit for new flows.
    pub healthy: bool,
    /// Why not, for operators.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Unix ms of the write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_ms: Option<u64>,
}

/// A VIP's health check and the verdicts on its backends, as in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VipHealth {
    /// The check (None: not health-checked).
    pub check: Option<HealthCheck>,
    /// Verdicts by backend, then LB.
    pub verdicts: BTreeMap<IpAddr, BTreeMap<String, Verdict>>,
    /// The backends' own reports.
    pub self_reports: BTreeMap<IpAddr, SelfReport>,
}

/// What the fleet does with a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effective {
    /// In the ring (as registered).
    Healthy,
    /// Out of the ring for new flows; its flows keep going.
    Drained,
    /// Not a backend of the VIP until it passes again.
    Removed,
}

/// Whose verdicts count.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum QuorumRule {
    /// A strict majority of the live LBs that have a verdict (see the
    /// module docs). The fleet's rule.
    #[default]
    Majority,
    /// Only this LB's own verdict (a single LB, no fleet).
    Local {
        /// The LB's identity (its verdict keys' last segment).
        lb: String,
    },
}

/// The effective state of `backend` of the VIP `entry` under `rule`.
pub fn effective(entry: &VipEntry, backend: IpAddr, rule: &QuorumRule) -> Effective {
    let h = &entry.health;
    let self_down = h.self_reports.get(&backend).is_some_and(|r| !r.healthy);
    let quorum = match &h.check {
        None => Effective::Healthy,
        Some(_) => quorum_of(h.verdicts.get(&backend), rule),
    };
    match quorum {
        Effective::Healthy if self_down => Effective::Drained,
        q => q,
    }
}

/// The verdicts' decision alone (no self-report).
fn quorum_of(verdicts: Option<&BTreeMap<String, Verdict>>, rule: &QuorumRule) -> Effective {
    let Some(verdicts) = verdicts else {
        return Effective::Healthy;
    };
    let counted: Vec<&Verdict> = match rule {
        QuorumRule::Majority => verdicts.values().collect(),
        QuorumRule::Local { lb } => verdicts.get(lb).into_iter().collect(),
    };
    let n = counted.len();
    let down = counted.iter().filter(|v| !v.up).count();
    let expired = counted.iter().filter(|v| !v.up && v.expired).count();
    if 2 * expired > n {
        Effective::Removed
    } else if 2 * down > n {
        Effective::Drained
    } else {
        Effective::Healthy
    }
}

/// An LB whose own verdict differs from the fleet's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disagreement {
    /// The VIP.
    pub vip: Vip,
    /// The backend.
    pub backend: IpAddr,
    /// This LB's verdict: up?
    pub mine_up: bool,
    /// What the quorum of verdicts decided.
    pub fleet: Effective,
}

/// Where `lb`'s verdicts disagree with the majority of verdicts (up while
/// the fleet drains or removes the backend, or down while the fleet keeps
/// it): the LB reports these (metric, status) and applies the fleet's
/// decision, never its own.
pub fn disagreements(snap: &Snapshot, lb: &str) -> Vec<Disagreement> {
    let mut out = Vec::new();
    for (vip, entry) in &snap.vips {
        if entry.health.check.is_none() {
            continue;
        }
        for (backend, verdicts) in &entry.health.verdicts {
            let Some(mine) = verdicts.get(lb) else {
                continue;
            };
            let fleet = quorum_of(Some(verdicts), &QuorumRule::Majority);
            if mine.up != (fleet == Effective::Healthy) {
                out.push(Disagreement {
                    vip: *vip,
                    backend: *backend,
                    mine_up: mine.up,
                    fleet,
                });
            }
        }
    }
    out
}

/// Folds one health entry into the VIPs (called by validation, after the
/// VIPs and backends). A check of an unknown VIP is rejected; verdicts and
/// reports of an unknown VIP are dropped (they leave with their lease).
pub(crate) fn apply(
    vips: &mut BTreeMap<Vip, VipEntry>,
    kind: KeyKind,
    value: &[u8],
) -> Result<(), Invalid> {
    let bad = |m: String| (RejectKind::BadHealthCheck, m);
    match kind {
        KeyKind::HealthCheck(vip) => {
            let check = parse_check(&vip, value)?;
            let Some(entry) = vips.get_mut(&vip) else {
                return Err((
                    RejectKind::UnknownVip,
                    format!("health check of VIP {vip}, which is not in the registry"),
                ));
            };
            entry.health.check = Some(check);
        }
        KeyKind::Verdict(vip, backend, lb) => {
            let v: Verdict = serde_json::from_slice(value)
                .map_err(|e| bad(format!("not a verdict JSON value: {e}")))?;
            if let Some(entry) = vips.get_mut(&vip) {
                entry
                    .health
                    .verdicts
                    .entry(backend)
                    .or_default()
                    .insert(lb, v);
            }
        }
        KeyKind::SelfHealth(vip, backend) => {
            let r: SelfReport = serde_json::from_slice(value)
                .map_err(|e| bad(format!("not a self-report JSON value: {e}")))?;
            if let Some(entry) = vips.get_mut(&vip) {
                entry.health.self_reports.insert(backend, r);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Parses and checks a health check stored for `vip`.
pub(crate) fn parse_check(vip: &Vip, value: &[u8]) -> Result<HealthCheck, Invalid> {
    let check: HealthCheck = serde_json::from_slice(value).map_err(|e| {
        (
            RejectKind::BadHealthCheck,
            format!("not a health check JSON value: {e}"),
        )
    })?;
    check_for(vip, &check)?;
    Ok(check)
}

/// Checks `check` against `vip`.
pub(crate) fn check_for(vip: &Vip, check: &HealthCheck) -> Result<(), Invalid> {
    check.validate_for(vip.proto, vip.port).map_err(|e| {
        (
            RejectKind::BadHealthCheck,
            format!("health check of VIP {vip}: {e}"),
        )
    })
}

/// Checks an LB identity for verdict keys.
pub(crate) fn check_lb(lb: &str) -> Result<(), crate::Error> {
    if valid_host(lb) {
        Ok(())
    } else {
        Err(crate::Error::BadHost {
            host: lb.to_string(),
        })
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
