//! The glue between an LB's prober and the fleet: what to probe, what to
//! publish, and the status to show (re-exported from [`crate::health`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use flowpin_health::{BackendStatus, Health, HealthCheck, HealthStatus, Prober};
use serde::Serialize;

use crate::health::{effective, Effective, QuorumRule, Verdict};
use crate::health_reporter::HealthReporter;
use crate::model::{Snapshot, Vip};

/// What an LB probes for `snap`: every backend of every VIP with a health
/// check, whatever its effective state (a drained or removed backend keeps
/// being probed, so it can come back).
pub fn targets_of(snap: &Snapshot) -> Vec<(Vip, IpAddr, HealthCheck)> {
    let mut out = Vec::new();
    for (vip, entry) in &snap.vips {
        if let Some(check) = &entry.health.check {
            for addr in entry.backends.keys() {
                out.push((*vip, *addr, check.clone()));
            }
        }
    }
    out
}

/// The verdicts to publish for a prober's status: every backend whose
/// damped state is decided (unknown ones publish nothing), with its expiry
/// and the last failure reason.
pub fn verdicts_of(status: &HealthStatus) -> BTreeMap<(Vip, IpAddr), Verdict> {
    status
        .backends
        .iter()
        .filter_map(|b| {
            let mut v = Verdict::of(b.state, b.expired)?;
            if !v.up {
                v.reason = b.last_failure.map(|r| r.as_str().to_string());
            }
            v.since_ms = b.since_ms;
            Some(((b.vip, b.backend), v))
        })
        .collect()
}

/// Publishes `prober`'s verdicts through `reporter` now and after every
/// change of a backend's state or expiry, until the prober is dropped or a
/// write fails (the error is returned; call again to go on).
pub async fn publish_verdicts(prober: &Prober, reporter: &HealthReporter) -> crate::Result<()> {
    let mut changes = prober.changes();
    loop {
        reporter.publish(&verdicts_of(&prober.status())).await?;
        if changes.changed().await.is_err() {
            return Ok(());
        }
    }
}

/// One backend in an LB's health status: its own verdict next to the fleet's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FleetBackend {
    /// The VIP.
    pub vip: Vip,
    /// The backend.
    pub backend: IpAddr,
    /// This LB's damped state.
    pub mine: Health,
    /// What the fleet applies (quorum of verdicts and the backend's own report).
    pub fleet: Effective,
    /// Live LBs with a verdict on it.
    pub verdicts: usize,
    /// This LB's verdict differs from the quorum of verdicts.
    pub disagrees: bool,
    /// The backend reported itself unhealthy.
    pub self_reported_down: bool,
    /// This LB's probe details.
    pub probe: Option<BackendStatus>,
}

/// An LB's health status (for `/status` and the CLI): every health-checked
/// backend of `snap` with this LB's (`lb`) verdict and the fleet's decision
/// under `rule`.
pub fn fleet_status(
    snap: &Snapshot,
    lb: &str,
    rule: &QuorumRule,
    mine: &HealthStatus,
) -> Vec<FleetBackend> {
    let mut out = Vec::new();
    for (vip, entry) in &snap.vips {
        if entry.health.check.is_none() {
            continue;
        }
        for addr in entry.backends.keys() {
            let probe = mine.get(vip, *addr).cloned();
            let verdicts = entry.health.verdicts.get(addr);
            // Our prober's state; else our verdict as stored (e.g. just restarted).
            let stored =
                verdicts.and_then(|v| v.get(lb)).map(
                    |v| {
                        if v.up {
                            Health::Up
                        } else {
                            Health::Down
                        }
                    },
                );
            let state = probe
                .as_ref()
                .map(|p| p.state)
                .or(stored)
                .unwrap_or(Health::Unknown);
            let quorum = effective(
                &crate::model::VipEntry {
                    health: crate::health::VipHealth {
                        self_reports: BTreeMap::new(),
                        ..entry.health.clone()
                    },
                    ..entry.clone()
                },
                *addr,
                &QuorumRule::Majority,
            );
            let disagrees = match state {
                Health::Unknown => false,
                Health::Up => quorum != Effective::Healthy,
                Health::Down => quorum == Effective::Healthy,
            };
            out.push(FleetBackend {
                vip: *vip,
                backend: *addr,
                mine: state,
                fleet: effective(entry, *addr, rule),
                verdicts: verdicts.map_or(0, BTreeMap::len),
                disagrees,
                self_reported_down: entry
                    .health
                    .self_reports
                    .get(addr)
                    .is_some_and(|r| !r.healthy),
                probe,
            });
        }
    }
    out
}
