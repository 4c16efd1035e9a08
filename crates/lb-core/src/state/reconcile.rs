//! Reconcile: a control plane states every VIP, its flags and its backends
//! (weights, server_ids, drains) and gets the one plan that takes the
//! kernel there from whatever it holds now.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use super::{Commit, LbState, Plan, Result, RingUpdate};
use crate::{Backend, LbError, Vip, VipCid, VipFlags};

/// What a control plane wants the load balancer to hold: every VIP with
/// its flags and backends. Build with [`Desired::new`] and
/// [`Desired::vip`], or take the current one with [`LbState::desired`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Every VIP and what it should hold. VIPs not listed are removed.
    pub vips: BTreeMap<Vip, DesiredVip>,
}

/// What one VIP should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVip {
    /// Its flags.
    pub flags: VipFlags,
    /// Its backends, in Maglev fill order: the ring depends on the order
    /// (ties go to the earlier backend), so every load balancer of a VIP
    /// must list them alike (e.g. sorted by address).
    pub backends: Vec<Backend>,
    /// The listed backends that drain: out of the ring (no new flows),
    /// still reachable by server_id and the connection table.
    pub draining: BTreeSet<IpAddr>,
    /// Its connection-ID layout (QUIC VIPs; default [`VipCid::Any`]).
    pub cid: VipCid,
}

impl Desired {
    /// No VIP.
    pub fn new() -> Desired {
        Desired::default()
    }

    /// With `vip` holding `want` (replacing what it held before).
    #[must_use]
    pub fn vip(mut self, vip: Vip, want: DesiredVip) -> Desired {
        self.vips.insert(vip, want);
        self
    }
}

impl DesiredVip {
    /// A VIP with `flags` and no backends yet.
    pub fn new(flags: VipFlags) -> DesiredVip {
        DesiredVip {
            flags,
            backends: Vec::new(),
            draining: BTreeSet::new(),
            cid: VipCid::Any,
        }
    }

    /// With `cid` as its connection-ID layout.
    #[must_use]
    pub fn cid(mut self, cid: VipCid) -> DesiredVip {
        self.cid = cid;
        self
    }

    /// With `backend` appended (in the ring).
    #[must_use]
    pub fn backend(mut self, backend: Backend) -> DesiredVip {
        self.backends.push(backend);
        self
    }

    /// With `backend` appended, draining.
    #[must_use]
    pub fn draining_backend(mut self, backend: Backend) -> DesiredVip {
        self.draining.insert(backend.addr);
        self.backends.push(backend);
        self
    }
}

impl LbState {
    /// What the state holds, as a [`Desired`]: reconciling to it plans no
    /// operation.
    pub fn desired(&self) -> Desired {
        let vips = self
            .vips
            .iter()
            .map(|(vip, st)| {
                let want = DesiredVip {
                    flags: st.flags,
                    backends: st.backends.clone(),
                    draining: st.draining.iter().copied().collect(),
                    cid: st.cid.clone(),
                };
                (*vip, want)
            })
            .collect();
        Desired { vips }
    }

    /// Plans taking the kernel from this state to `desired`, as one plan
    /// (apply it, then [`commit`](Self::commit) it, like any other):
    ///
    /// 1. VIPs whose flags differ get them in place
    ///    ([`set_vip_flags`](Self::set_vip_flags): id, counters and
    ///    connections stay);
    /// 2. VIPs not desired are removed ([`remove_vip`](Self::remove_vip)),
    ///    freeing their ids and backend indices first;
    /// 3. in `desired`'s order, new VIPs are added and every VIP whose
    ///    backends, weights, server_ids or drains differ gets them in one
    ///    backend change (only the ring slots whose backend changes are
    ///    written, [`Maglev::diff`](flowpin_maglev::Maglev::diff)).
    ///
    /// Each part is planned against the state the parts before it leave,
    /// so the concatenated operations follow the ordering rules of the
    /// [module docs](super) after every single one, and undoing them in
    /// reverse ([`apply`](crate::apply) on a failure) restores the previous
    /// configuration. Nothing to change: no operation. Fails, planning
    /// nothing, if any part is invalid (the first error is returned).
    ///
    /// A backend address keeps its global index while some VIP lists it
    /// throughout; one that only a removed VIP listed and a new VIP lists
    /// takes the oldest free index (first in, first out), possibly another, like
    /// the same changes made one by one.
    pub fn reconcile(&self, desired: &Desired) -> Result<Plan> {
        let mut scratch = self.clone();
        let mut ops = Vec::new();
        let mut update = RingUpdate::default();
        let mut step = |scratch: &mut LbState, plan: Result<Plan>| -> Result<()> {
            let mut plan = plan?;
            ops.append(&mut plan.ops);
            update.add(plan.update);
            scratch.commit(plan);
            Ok(())
        };
        let mut current: Vec<(Vip, VipFlags)> =
            self.vips.iter().map(|(v, s)| (*v, s.flags)).collect();
        current.sort_unstable_by_key(|(v, _)| *v);
        for (vip, flags) in &current {
            match desired.vips.get(vip) {
                Some(want) if want.flags != *flags => {
                    let plan = scratch.set_vip_flags(vip, want.flags);
                    step(&mut scratch, plan)?;
                }
                _ => {}
            }
        }
        for (vip, _) in &current {
            if !desired.vips.contains_key(vip) {
                let plan = scratch.remove_vip(vip);
                step(&mut scratch, plan)?;
            }
        }
        for (vip, want) in &desired.vips {
            if let Some(a) = want
                .draining
                .iter()
                .find(|a| !want.backends.iter().any(|b| b.addr == **a))
            {
                return Err(LbError::InvalidBackends {
                    vip: *vip,
                    why: format!("{a} is draining but not a listed backend"),
                });
            }
            if !scratch.vips.contains_key(vip) {
                let plan = scratch.add_vip(*vip, want.flags);
                step(&mut scratch, plan)?;
            }
            if scratch.vips.get(vip).is_some_and(|st| st.cid != want.cid) {
                let plan = scratch.set_vip_cid(vip, want.cid.clone());
                step(&mut scratch, plan)?;
            }
            let draining: HashSet<IpAddr> = want.draining.iter().copied().collect();
            let same = scratch
                .vips
                .get(vip)
                .is_some_and(|st| st.backends == want.backends && st.draining == draining);
            if !same {
                let plan = scratch.plan_set(vip, &want.backends, draining);
                step(&mut scratch, plan)?;
            }
        }
        Ok(Plan {
            ops,
            update,
            vip_id: None,
            commit: Commit::Replace(Box::new(scratch)),
        })
    }
}
