//! The oracle of the seam's tests: the node's former planner
//! (`crates/node/src/plan.rs` until issue 18, item 2), which read an
//! `LbView` out of the `LbState`, diffed it with the snapshot into steps and
//! fed each step back into the `LbState`. Test-only: the library reconciles
//! instead ([`super::desired_of`] + `LbState::reconcile`), and the tests
//! check that both end in the same tables on the same inputs.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use flowpin_lb_core::{Backend, LbState, Vip, VipFlags};

use crate::model::{BackendState, Snapshot, VipEntry};

/// What the LB holds for one VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VipView {
    pub(super) flags: VipFlags,
    pub(super) backends: Vec<Backend>,
    pub(super) draining: BTreeSet<IpAddr>,
}

/// The LB's current tables, as the control state knows them.
pub(super) type LbView = HashMap<Vip, VipView>;

/// Reads the view out of an `LbState`.
pub(super) fn view_of(state: &LbState) -> LbView {
    state
        .vips()
        .map(|vip| {
            let backends = state
                .backends(vip)
                .map(<[Backend]>::to_vec)
                .unwrap_or_default();
            let draining = backends
                .iter()
                .filter(|b| state.is_draining(vip, b.addr))
                .map(|b| b.addr)
                .collect();
            let flags = state.vip_flags(vip).unwrap_or(VipFlags::NONE);
            (
                *vip,
                VipView {
                    flags,
                    backends,
                    draining,
                },
            )
        })
        .collect()
}

/// One step, in the order the plan lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    RemoveVip(Vip),
    AddVip(Vip, VipFlags),
    Drain(Vip, IpAddr),
    SetBackends(Vip, Vec<Backend>),
    Undrain(Vip, IpAddr),
}

/// What a snapshot says one VIP should hold (backends ordered by address).
pub(super) fn desired(entry: &VipEntry) -> VipView {
    let backends = entry
        .backends
        .values()
        .map(|b| Backend {
            server_id: b.server_id,
            ..Backend::new(b.addr).weight(b.weight)
        })
        .collect();
    let draining = entry
        .backends
        .values()
        .filter(|b| b.state == BackendState::Draining)
        .map(|b| b.addr)
        .collect();
    VipView {
        flags: entry.spec.flags,
        backends,
        draining,
    }
}

/// The steps taking `current` to what `snap` says (verbatim the old rules:
/// a flag change removes and re-adds the VIP; per VIP drain listed
/// backends, set the list, drain new ones, undrain returning ones).
pub(super) fn plan(current: &LbView, snap: &Snapshot) -> Vec<Step> {
    let mut steps = Vec::new();
    let want: Vec<(Vip, VipView)> = snap.vips.iter().map(|(k, e)| (*k, desired(e))).collect();
    let wanted: HashMap<Vip, &VipView> = want.iter().map(|(v, w)| (*v, w)).collect();
    for (vip, have) in current {
        match wanted.get(vip) {
            None => steps.push(Step::RemoveVip(*vip)),
            Some(w) if w.flags != have.flags => steps.push(Step::RemoveVip(*vip)),
            Some(_) => {}
        }
    }
    let empty = VipView {
        flags: VipFlags::NONE,
        backends: Vec::new(),
        draining: BTreeSet::new(),
    };
    for (vip, w) in &want {
        let have = match current.get(vip) {
            Some(h) if h.flags == w.flags => h,
            _ => {
                steps.push(Step::AddVip(*vip, w.flags));
                &empty
            }
        };
        let listed: BTreeSet<IpAddr> = have.backends.iter().map(|b| b.addr).collect();
        let still: BTreeSet<IpAddr> = w.backends.iter().map(|b| b.addr).collect();
        for addr in w.draining.difference(&have.draining) {
            if listed.contains(addr) && still.contains(addr) {
                steps.push(Step::Drain(*vip, *addr));
            }
        }
        if have.backends != w.backends {
            steps.push(Step::SetBackends(*vip, w.backends.clone()));
        }
        for addr in w.draining.difference(&have.draining) {
            if !listed.contains(addr) {
                steps.push(Step::Drain(*vip, *addr));
            }
        }
        for addr in have.draining.difference(&w.draining) {
            if still.contains(addr) {
                steps.push(Step::Undrain(*vip, *addr));
            }
        }
    }
    steps
}

/// Applies steps to an `LbState` one by one, as the node did against the
/// kernel.
pub(super) fn apply(state: &mut LbState, steps: &[Step]) {
    for s in steps {
        let p = match s {
            Step::RemoveVip(v) => state.remove_vip(v),
            Step::AddVip(v, f) => state.add_vip(*v, *f),
            Step::Drain(v, a) => state.drain_backend(v, *a),
            Step::SetBackends(v, b) => state.set_backends(v, b),
            Step::Undrain(v, a) => state.undrain_backend(v, *a),
        }
        .expect("plan step valid");
        state.commit(p);
    }
}

/// Plans and applies `snap` the old way.
pub(super) fn sync(state: &mut LbState, snap: &Snapshot) -> Vec<Step> {
    let steps = plan(&view_of(state), snap);
    apply(state, &steps);
    steps
}
