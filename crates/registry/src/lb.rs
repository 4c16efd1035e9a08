//! The seam between the registry and the load balancer (cargo feature
//! `lb`): a validated [`Snapshot`] in, the [`Desired`] state of
//! `flowpin-lb-core` out, which any control plane hands to
//! [`LbState::reconcile`](flowpin_lb_core::LbState::reconcile) (or to
//! `XdpLb::reconcile` of `flowpin-bpf-progs`, which applies the plan to the
//! kernel maps). Pure: no etcd, no kernel, no clang.
//!
//! ```
//! use flowpin_lb_core::{LbConfig, LbState};
//! use flowpin_registry::lb::desired_of;
//! use flowpin_registry::{BackendSpec, BackendState, Proto, ServerId, Snapshot, Vip, VipEntry, VipFlags, VipSpec};
//!
//! let vip = Vip::new("10.0.0.1".parse()?, 80, Proto::Tcp);
//! let mut snap = Snapshot::default();
//! let mut entry = VipEntry { spec: VipSpec::new(vip, VipFlags::SERVER_ID), backends: Default::default(), health: Default::default() };
//! for (i, state) in [(2u8, BackendState::Active), (3, BackendState::Draining)] {
//!     let addr = format!("10.1.0.{i}").parse()?;
//!     let mut b = BackendSpec::new(addr, 100, ServerId::new(u32::from(i)));
//!     b.state = state;
//!     entry.backends.insert(addr, b);
//! }
//! snap.vips.insert(vip, entry);
//!
//! let mut state = LbState::new(&LbConfig::default().ring_size(251));
//! let plan = state.reconcile(&desired_of(&snap))?; // apply plan.ops to the maps, then:
//! state.commit(plan);
//! assert!(state.is_draining(&vip, "10.1.0.3".parse()?));
//! assert!(state.reconcile(&desired_of(&snap))?.ops.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What a snapshot means for the load balancer:
//!
//! - every VIP of [`Snapshot::vips`] with its flags (a flag change is made
//!   in place by the reconcile: the VIP keeps its id, counters and flows);
//! - its backends in address order (every LB of the fleet fills its Maglev
//!   ring in the same order, so all build the same ring), each with its
//!   weight as registered (one rule, [`flowpin_lb_core::weight`]:
//!   `0..=MAX_WEIGHT`, 0 = no new flows) and its server_id if it has one;
//! - [`BackendState::Draining`] backends listed but draining: out of the
//!   ring, still reachable by server_id and the connection table, and back
//!   with their weight when they turn active again;
//! - health ([`crate::health`]): a backend the live LBs' verdicts (strict
//!   majority) find down is draining; one they find down for the check's
//!   `down_ms` is left out; one that reports itself unhealthy is draining;
//! - entries the registry rejected ([`Snapshot::rejected`], counted in
//!   [`Snapshot::reject_counts`]) are not in [`Snapshot::vips`] and so never
//!   reach the desired state.
//!
//! A snapshot from [`SnapshotWatch`](crate::SnapshotWatch) holds only
//! validated entries; a hand-built one that breaks the registry's rules
//! (e.g. a weight above `MAX_WEIGHT`) makes the reconcile fail, planning
//! nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hasher;
use std::net::IpAddr;

pub use flowpin_lb_core::{Backend, Desired, DesiredVip};

use crate::health::{self, Effective, QuorumRule};
use crate::model::{BackendSpec, BackendState, Snapshot, Vip, VipEntry, VipFlags};

#[cfg(test)]
mod old_plan;
#[cfg(test)]
mod tests;

/// The load balancer's backend for a registered one: its address, weight
/// and server_id (drain state is the VIP's, see [`desired_vip`]).
pub fn backend_of(spec: &BackendSpec) -> Backend {
    Backend {
        server_id: spec.server_id,
        ..Backend::new(spec.addr).weight(spec.weight)
    }
}

/// What one VIP of a snapshot should hold: its flags, its backends in
/// address order, the draining ones marked, health applied with the
/// fleet's quorum rule ([`QuorumRule::Majority`]).
pub fn desired_vip(entry: &VipEntry) -> DesiredVip {
    desired_vip_with(entry, &QuorumRule::Majority)
}

/// [`desired_vip`] under a given quorum rule: a backend the health
/// verdicts drain is a draining backend (out of the ring, reachable by
/// server_id and the connection table, back with its weight when it
/// passes); one they remove is left out ([`crate::health`]).
pub fn desired_vip_with(entry: &VipEntry, rule: &QuorumRule) -> DesiredVip {
    let mut want = DesiredVip::new(entry.spec.flags);
    // `backends` is a BTreeMap by address: address order.
    for b in entry.backends.values() {
        let state = match health::effective(entry, b.addr, rule) {
            Effective::Removed => continue,
            Effective::Drained => BackendState::Draining,
            Effective::Healthy => b.state,
        };
        want = match state {
            BackendState::Active => want.backend(backend_of(b)),
            BackendState::Draining => want.draining_backend(backend_of(b)),
        };
    }
    want
}

/// What the load balancer should hold for `snap`: every VIP with its flags
/// and backends, health verdicts applied by the fleet's quorum (see the
/// [module docs](self) and [`crate::health`]). Reconcile to it.
pub fn desired_of(snap: &Snapshot) -> Desired {
    desired_of_with(snap, &QuorumRule::Majority)
}

/// [`desired_of`] under a given quorum rule ([`QuorumRule::Local`] for a
/// single LB that decides alone).
pub fn desired_of_with(snap: &Snapshot, rule: &QuorumRule) -> Desired {
    Desired {
        vips: snap
            .vips
            .iter()
            .map(|(vip, entry)| (*vip, desired_vip_with(entry, rule)))
            .collect(),
    }
}

/// The newest `updated_at_ms` (the writer's clock at the etcd write) among
/// the entries of `snap` that are new or differ from `prev` (the VIPs of
/// the last snapshot applied): the etcd change a map write of `snap`
/// carries out, for a change → map write metric. `None` if no changed
/// entry has a timestamp (removals and values written before the field
/// existed have none).
pub fn latest_change_ms(prev: &BTreeMap<Vip, VipEntry>, snap: &Snapshot) -> Option<u64> {
    let mut latest: Option<u64> = None;
    for (key, entry) in &snap.vips {
        let before = prev.get(key);
        if before.map(|e| &e.spec) != Some(&entry.spec) {
            latest = latest.max(entry.spec.updated_at_ms);
        }
        for (addr, b) in &entry.backends {
            if before.and_then(|e| e.backends.get(addr)) != Some(b) {
                latest = latest.max(b.updated_at_ms);
            }
        }
    }
    latest
}

/// A digest of a VIP's ring as a load balancer holds it
/// ([`LbState::ring_addrs`](flowpin_lb_core::LbState::ring_addrs)):
/// SipHash-1-3 (fixed zero key) over the slot count and every slot's
/// backend address (16 bytes, IPv4 mapped; an empty slot hashes as 16 zero
/// bytes), slot by slot. Two LBs with the same digest send every new flow
/// of the VIP to the same backend: compare them to check a fleet agrees.
pub fn ring_digest(slots: &[Option<IpAddr>]) -> u64 {
    let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
    h.write_u64(slots.len() as u64);
    for s in slots {
        let bytes = match s {
            None => [0u8; 16],
            Some(IpAddr::V4(a)) => a.to_ipv6_mapped().octets(),
            Some(IpAddr::V6(a)) => a.octets(),
        };
        h.write(&bytes);
    }
    h.finish()
}

/// What a reconcile changes for one VIP, for logs: [`changes`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VipChange {
    /// A new VIP.
    Added {
        /// The VIP.
        vip: Vip,
        /// Its flags.
        flags: VipFlags,
        /// Its backends, draining ones included.
        backends: usize,
        /// Of those, how many drain.
        draining: usize,
    },
    /// A VIP no longer desired.
    Removed {
        /// The VIP.
        vip: Vip,
    },
    /// A VIP's flags (changed in place).
    Flags {
        /// The VIP.
        vip: Vip,
        /// The flags it had.
        from: VipFlags,
        /// The flags it gets.
        to: VipFlags,
    },
    /// A VIP's backends.
    Backends {
        /// The VIP.
        vip: Vip,
        /// Backends added.
        added: Vec<IpAddr>,
        /// Backends removed.
        removed: Vec<IpAddr>,
        /// Backends whose weight or server_id changes.
        changed: Vec<IpAddr>,
        /// Listed backends that start draining (new ones included).
        drained: Vec<IpAddr>,
        /// Backends that were draining and turn active.
        undrained: Vec<IpAddr>,
    },
}

/// The name of a VIP in logs and metrics: `addr:port/proto`, lower case
/// (e.g. `10.100.0.1:8080/tcp`).
pub fn vip_name(v: &Vip) -> String {
    format!("{}:{}/{:?}", v.addr, v.port, v.proto).to_lowercase()
}

impl fmt::Display for VipChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, what: &str, addrs: &[IpAddr]) -> fmt::Result {
            if addrs.is_empty() {
                return Ok(());
            }
            let shown: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
            write!(f, " {what} [{}]", shown.join(", "))
        }
        match self {
            VipChange::Added {
                vip,
                flags,
                backends,
                draining,
            } => write!(
                f,
                "add VIP {} flags {:#x} with {backends} backends ({draining} draining)",
                vip_name(vip),
                flags.bits()
            ),
            VipChange::Removed { vip } => write!(f, "remove VIP {}", vip_name(vip)),
            VipChange::Flags { vip, from, to } => write!(
                f,
                "VIP {} flags {:#x} -> {:#x}",
                vip_name(vip),
                from.bits(),
                to.bits()
            ),
            VipChange::Backends {
                vip,
                added,
                removed,
                changed,
                drained,
                undrained,
            } => {
                write!(f, "backends of {}:", vip_name(vip))?;
                list(f, "add", added)?;
                list(f, "remove", removed)?;
                list(f, "re-weight", changed)?;
                list(f, "drain", drained)?;
                list(f, "undrain", undrained)?;
                if [added, removed, changed, drained, undrained]
                    .iter()
                    .all(|l| l.is_empty())
                {
                    f.write_str(" reorder")?;
                }
                Ok(())
            }
        }
    }
}

/// What taking a load balancer from `current` (e.g.
/// [`LbState::desired`](flowpin_lb_core::LbState::desired)) to `next`
/// changes, per VIP, in the reconcile's order: flag changes, removed VIPs,
/// then in `next`'s order new VIPs and backend changes. For logs only (the
/// reconcile plans the map operations); empty exactly when the two are
/// equal.
pub fn changes(current: &Desired, next: &Desired) -> Vec<VipChange> {
    let mut out = Vec::new();
    for (vip, have) in &current.vips {
        if let Some(want) = next.vips.get(vip).filter(|w| w.flags != have.flags) {
            out.push(VipChange::Flags {
                vip: *vip,
                from: have.flags,
                to: want.flags,
            });
        }
    }
    for vip in current.vips.keys() {
        if !next.vips.contains_key(vip) {
            out.push(VipChange::Removed { vip: *vip });
        }
    }
    for (vip, want) in &next.vips {
        let Some(have) = current.vips.get(vip) else {
            out.push(VipChange::Added {
                vip: *vip,
                flags: want.flags,
                backends: want.backends.len(),
                draining: want.draining.len(),
            });
            continue;
        };
        if have.backends == want.backends && have.draining == want.draining {
            continue;
        }
        let old: BTreeMap<IpAddr, &Backend> = have.backends.iter().map(|b| (b.addr, b)).collect();
        let new: BTreeMap<IpAddr, &Backend> = want.backends.iter().map(|b| (b.addr, b)).collect();
        let addrs = |m: &BTreeMap<IpAddr, &Backend>, keep: &dyn Fn(&IpAddr) -> bool| {
            m.keys().copied().filter(|a| keep(a)).collect::<Vec<_>>()
        };
        out.push(VipChange::Backends {
            vip: *vip,
            added: addrs(&new, &|a| !old.contains_key(a)),
            removed: addrs(&old, &|a| !new.contains_key(a)),
            changed: addrs(&new, &|a| old.get(a).is_some_and(|b| *b != new[a])),
            drained: want.draining.difference(&have.draining).copied().collect(),
            undrained: have
                .draining
                .difference(&want.draining)
                .filter(|a| new.contains_key(a))
                .copied()
                .collect(),
        });
    }
    out
}
