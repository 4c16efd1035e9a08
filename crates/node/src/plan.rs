//! Snapshot → plan: what an LB must change so its tables hold what a
//! registry snapshot says. Pure (no kernel, no etcd): the LB's current
//! view in, an ordered list of steps out; `lb.rs` applies them with
//! `XdpLb`'s own calls (`add_vip`, `set_backends`, `drain_backend`, ...),
//! each of which writes only the ring slots that change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hasher;
use std::net::IpAddr;

use flowpin_bpf_progs::xdp_lb::{Backend, LbState, Vip, VipFlags};
use flowpin_registry::{BackendState, Snapshot, VipEntry};

/// The newest `updated_at_ms` (the writer's clock at the etcd write) among
/// the entries of `snap` that are new or differ from `prev` (the last
/// snapshot applied): the etcd change a map write of `snap` carries out.
/// `None` if no changed entry has a timestamp (removals and values written
/// before the field existed have none).
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

/// What the LB holds for one VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipView {
    /// Its flags.
    pub flags: VipFlags,
    /// Its backends, in the order they were set.
    pub backends: Vec<Backend>,
    /// Those draining.
    pub draining: BTreeSet<IpAddr>,
}

/// The LB's current tables, as the control state knows them.
pub type LbView = HashMap<Vip, VipView>;

/// Reads the view out of an `LbState`.
pub fn view_of(state: &LbState) -> LbView {
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
pub enum Step {
    /// Remove a VIP the registry no longer has (or whose flags changed).
    RemoveVip(Vip),
    /// Add a VIP.
    AddVip(Vip, VipFlags),
    /// Drain a backend (it leaves the ring; server_id and the connection
    /// table keep its flows).
    Drain(Vip, IpAddr),
    /// Set the backend list (only changed ring slots are written; a
    /// backend draining before stays draining).
    SetBackends(Vip, Vec<Backend>),
    /// Put a backend back into the ring.
    Undrain(Vip, IpAddr),
}

/// The registry's VIP, as an `xdp_lb` VIP (the same type: the suite has one).
pub fn lb_vip(key: &Vip) -> Vip {
    *key
}

/// The registry's flags, as `xdp_lb` flags (the same type: the suite has one).
pub fn lb_flags(f: &VipFlags) -> VipFlags {
    *f
}

/// What a snapshot says one VIP should hold (backends ordered by address,
/// so every LB builds the same ring).
pub fn desired(entry: &VipEntry) -> VipView {
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
        flags: lb_flags(&entry.spec.flags),
        backends,
        draining,
    }
}

/// The steps taking `current` to what `snap` says. Empty when they agree.
///
/// Order per VIP: backends that start draining are drained while still
/// listed (they leave the ring before anything else moves), then the list
/// is set (added / removed / re-weighted backends), then new backends that
/// are already draining are drained and returning ones undrained.
pub fn plan(current: &LbView, snap: &Snapshot) -> Vec<Step> {
    let mut steps = Vec::new();
    // In the snapshot's (sorted) order, so every LB plans the same steps.
    let want: Vec<(Vip, VipView)> = snap
        .vips
        .iter()
        .map(|(k, e)| (lb_vip(k), desired(e)))
        .collect();
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

/// A digest of a VIP's ring as the LB holds it: SipHash-1-3 (fixed zero
/// key) over every slot's backend address (16 bytes, IPv4 mapped; an empty
/// slot hashes as 16 zero bytes), slot by slot. Two LBs with the same
/// digest send every new flow of the VIP to the same backend.
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

#[cfg(test)]
mod tests {
    use super::*;
    use flowpin_bpf_progs::xdp_lb::XdpLbConfig;
    use flowpin_registry::{BackendSpec, Proto, ServerId, VipSpec};
    use std::collections::BTreeMap;

    fn key() -> Vip {
        Vip::new("10.100.0.1".parse().expect("ip"), 8080, Proto::Tcp)
    }

    fn snap(backends: &[(u8, BackendState)], server_id: bool) -> Snapshot {
        let spec = VipSpec::new(key(), VipFlags::NONE.with(VipFlags::SERVER_ID, server_id));
        let backends = backends
            .iter()
            .map(|&(i, state)| {
                let addr: IpAddr = format!("10.2.{i}.2").parse().expect("ip");
                let mut b = BackendSpec::new(addr, 100, ServerId::new(1000 + u32::from(i)));
                b.state = state;
                (addr, b)
            })
            .collect();
        let mut vips = BTreeMap::new();
        vips.insert(key(), VipEntry { spec, backends });
        Snapshot {
            revision: 7,
            vips,
            ..Snapshot::default()
        }
    }

    fn addr(i: u8) -> IpAddr {
        format!("10.2.{i}.2").parse().expect("ip")
    }

    /// Applies steps to an in-memory `LbState` (the sans-IO core XdpLb
    /// uses), as `lb.rs` does against the kernel.
    fn apply(state: &mut LbState, steps: &[Step]) {
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

    fn sync(st: &mut LbState, s: &Snapshot) {
        let steps = plan(&view_of(st), s);
        apply(st, &steps);
    }

    fn small() -> LbState {
        LbState::new(&XdpLbConfig::default().ring_size(251).lb_config())
    }

    const A: BackendState = BackendState::Active;
    const D: BackendState = BackendState::Draining;

    fn stamp(s: &mut Snapshot, i: u8, at: u64) {
        let e = s.vips.get_mut(&key()).expect("vip");
        e.backends.get_mut(&addr(i)).expect("backend").updated_at_ms = Some(at);
    }

    #[test]
    fn latest_change_is_the_newest_stamp_of_the_changed_entries_only() {
        let mut before = snap(&[(1, A), (2, A)], true);
        stamp(&mut before, 1, 1_000);
        stamp(&mut before, 2, 2_000);
        // Nothing applied yet: every entry is new; the VIP has no stamp.
        assert_eq!(latest_change_ms(&BTreeMap::new(), &before), Some(2_000));
        // Backend 1 drained at 1 500: the unchanged backend 2 (2 000) does
        // not count.
        let mut after = snap(&[(1, D), (2, A)], true);
        stamp(&mut after, 1, 1_500);
        stamp(&mut after, 2, 2_000);
        assert_eq!(latest_change_ms(&before.vips, &after), Some(1_500));
        // Nothing changed, or only a removal: no stamp.
        assert_eq!(latest_change_ms(&after.vips, &after), None);
        let mut removed = snap(&[(2, A)], true);
        stamp(&mut removed, 2, 2_000);
        assert_eq!(latest_change_ms(&after.vips, &removed), None);
        // A VIP flag change carries the VIP's stamp.
        let mut flags = after.clone();
        let e = flags.vips.get_mut(&key()).expect("vip");
        e.spec.flags.set(VipFlags::SERVER_ID, false);
        e.spec.updated_at_ms = Some(3_000);
        assert_eq!(latest_change_ms(&after.vips, &flags), Some(3_000));
    }

    #[test]
    fn empty_snapshot_on_empty_lb_is_no_step() {
        assert!(plan(&LbView::new(), &Snapshot::default()).is_empty());
    }

    #[test]
    fn new_vip_is_added_then_its_backends_set_in_address_order() {
        let s = snap(&[(3, A), (1, A), (2, A)], true);
        let steps = plan(&LbView::new(), &s);
        let vip = lb_vip(&key());
        assert_eq!(steps[0], Step::AddVip(vip, VipFlags::SERVER_ID));
        let Step::SetBackends(_, b) = &steps[1] else {
            panic!("expected SetBackends, got {:?}", steps[1]);
        };
        assert_eq!(
            b.iter().map(|b| b.addr).collect::<Vec<_>>(),
            vec![addr(1), addr(2), addr(3)]
        );
        assert_eq!(b[0].server_id, ServerId::new(1001));
        assert_eq!(steps.len(), 2);
    }

    #[test]
    fn applied_plan_converges_and_replanning_is_empty() {
        let mut st = small();
        let sequence = [
            snap(&[(1, A), (2, A), (3, A)], true),
            snap(&[(1, A), (2, D), (3, A)], true),
            snap(&[(1, A), (2, D), (3, A), (4, D)], true),
            snap(&[(1, A), (3, A), (4, A)], true),
            snap(&[(1, A), (3, A), (4, A)], false),
            Snapshot::default(),
        ];
        for s in &sequence {
            let steps = plan(&view_of(&st), s);
            apply(&mut st, &steps);
            let v = view_of(&st);
            let want: LbView = s
                .vips
                .iter()
                .map(|(k, e)| (lb_vip(k), desired(e)))
                .collect();
            assert_eq!(v, want, "after {steps:?}");
            assert!(plan(&v, s).is_empty(), "second plan not empty");
        }
    }

    #[test]
    fn drain_of_a_listed_backend_is_one_drain_step_and_keeps_it_listed() {
        let mut st = small();
        sync(&mut st, &snap(&[(1, A), (2, A)], true));
        let before = st.ring_addrs(&lb_vip(&key()));
        let steps = plan(&view_of(&st), &snap(&[(1, A), (2, D)], true));
        assert_eq!(steps, vec![Step::Drain(lb_vip(&key()), addr(2))]);
        apply(&mut st, &steps);
        let after = st.ring_addrs(&lb_vip(&key()));
        assert!(
            after.iter().all(|s| *s == Some(addr(1))),
            "drained backend left the ring"
        );
        assert!(before.contains(&Some(addr(2))));
        assert_eq!(
            st.server_id_addrs(&lb_vip(&key())).get(&1002),
            Some(&addr(2))
        );
    }

    #[test]
    fn flag_change_recreates_the_vip() {
        let mut st = small();
        sync(&mut st, &snap(&[(1, A)], true));
        let steps = plan(&view_of(&st), &snap(&[(1, A)], false));
        let vip = lb_vip(&key());
        assert_eq!(steps[0], Step::RemoveVip(vip));
        assert_eq!(steps[1], Step::AddVip(vip, VipFlags::NONE));
    }

    #[test]
    fn digest_depends_on_every_slot_and_the_length() {
        let a = [Some(addr(1)), Some(addr(2)), None];
        let mut b = a;
        b[2] = Some(addr(1));
        assert_ne!(ring_digest(&a), ring_digest(&b));
        assert_ne!(ring_digest(&a[..2]), ring_digest(&a));
        assert_eq!(ring_digest(&a), ring_digest(&a.clone()));
    }

    #[test]
    fn two_lbs_from_the_same_snapshots_hold_the_same_digest() {
        let s1 = snap(&[(1, A), (2, A), (3, A)], true);
        let s2 = snap(&[(1, A), (3, A), (4, A), (5, D)], true);
        let mut a = small();
        let mut b = small();
        sync(&mut a, &s1);
        sync(&mut a, &s2);
        sync(&mut b, &s2);
        let vip = lb_vip(&key());
        assert_eq!(
            ring_digest(&a.ring_addrs(&vip)),
            ring_digest(&b.ring_addrs(&vip))
        );
    }
}
