//! The seam, without root and without clang: snapshot → desired, desired →
//! reconcile on an `LbState`, and the same tables as the node's former
//! planner ([`super::old_plan`]) on the same inputs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use flowpin_lb_core::{LbConfig, LbState, MAX_WEIGHT};
use proptest::prelude::*;

use super::old_plan::{self, Step};
use super::*;
use crate::keys::KeyLayout;
use crate::model::{Proto, VipSpec};
use crate::validate::{build, RawEntry};
use flowpin_tcp_opt::ServerId;

const A: BackendState = BackendState::Active;
const D: BackendState = BackendState::Draining;

fn key() -> Vip {
    Vip::new("10.100.0.1".parse().expect("ip"), 8080, Proto::Tcp)
}

fn addr(i: u8) -> IpAddr {
    format!("10.2.{i}.2").parse().expect("ip")
}

/// One backend: (host number, state, weight, with a server_id).
type B = (u8, BackendState, u32, bool);

fn entry(vip: Vip, flags: VipFlags, backends: &[B]) -> VipEntry {
    let backends = backends
        .iter()
        .map(|&(i, state, weight, sid)| {
            let id = if sid {
                ServerId::new(1000 + u32::from(i))
            } else {
                None
            };
            let mut b = BackendSpec::new(addr(i), weight, id);
            b.state = state;
            (addr(i), b)
        })
        .collect();
    VipEntry {
        spec: VipSpec::new(vip, flags),
        backends,
        health: Default::default(),
    }
}

/// The old planner's test snapshot: one VIP, weight 100, server_ids 100x.
fn snap(backends: &[(u8, BackendState)], server_id: bool) -> Snapshot {
    let bs: Vec<B> = backends.iter().map(|&(i, s)| (i, s, 100, true)).collect();
    let flags = VipFlags::NONE.with(VipFlags::SERVER_ID, server_id);
    let mut vips = BTreeMap::new();
    vips.insert(key(), entry(key(), flags, &bs));
    Snapshot {
        revision: 7,
        vips,
        ..Snapshot::default()
    }
}

fn small() -> LbState {
    LbState::new(&LbConfig::default().ring_size(251))
}

/// Reconciles `state` to `snap` the library's way; returns the plan's
/// operation count.
fn reconcile(state: &mut LbState, snap: &Snapshot) -> usize {
    let plan = state.reconcile(&desired_of(snap)).expect("reconcile");
    let n = plan.ops.len();
    state.commit(plan);
    n
}

/// Everything the kernel tables say about each VIP, by address (VIP ids
/// and backend indices aside).
type Tables = BTreeMap<
    Vip,
    (
        VipFlags,
        Vec<Backend>,
        BTreeSet<IpAddr>,
        Vec<Option<IpAddr>>,
        BTreeMap<u32, IpAddr>,
    ),
>;

fn tables(st: &LbState) -> Tables {
    st.vips()
        .map(|v| {
            let backends = st.backends(v).expect("vip").to_vec();
            let draining = backends
                .iter()
                .filter(|b| st.is_draining(v, b.addr))
                .map(|b| b.addr)
                .collect();
            let sid = st.server_id_addrs(v).into_iter().collect();
            (
                *v,
                (
                    st.vip_flags(v).expect("vip"),
                    backends,
                    draining,
                    st.ring_addrs(v),
                    sid,
                ),
            )
        })
        .collect()
}

fn stamp(s: &mut Snapshot, i: u8, at: u64) {
    let e = s.vips.get_mut(&key()).expect("vip");
    e.backends.get_mut(&addr(i)).expect("backend").updated_at_ms = Some(at);
}

#[test]
fn every_backend_state_weight_and_server_id_reaches_the_desired_state() {
    let s = Snapshot {
        vips: [(
            key(),
            entry(
                key(),
                VipFlags::SERVER_ID,
                &[
                    (3, A, 0, true),
                    (1, D, 30_000, false),
                    (2, A, MAX_WEIGHT, true),
                    (4, D, 0, true),
                ],
            ),
        )]
        .into(),
        ..Snapshot::default()
    };
    let d = desired_of(&s);
    assert_eq!(d.vips.len(), 1);
    let v = &d.vips[&key()];
    assert_eq!(v.flags, VipFlags::SERVER_ID);
    // Address order, weights as registered (0 included), server_id or none.
    assert_eq!(
        v.backends,
        vec![
            Backend::new(addr(1)).weight(30_000).without_server_id(),
            Backend::new(addr(2))
                .weight(MAX_WEIGHT)
                .server_id(ServerId::new(1002).expect("id")),
            Backend::new(addr(3))
                .weight(0)
                .server_id(ServerId::new(1003).expect("id")),
            Backend::new(addr(4))
                .weight(0)
                .server_id(ServerId::new(1004).expect("id")),
        ]
    );
    // Draining: exactly the Draining ones, whatever their weight.
    assert_eq!(v.draining, [addr(1), addr(4)].into());
    assert_eq!(
        backend_of(&s.vips[&key()].backends[&addr(1)]).server_id,
        None
    );

    // On an LbState: only backend 2 takes new flows (1 and 4 drain, 3 has
    // weight 0), every server_id route stays, every backend is listed.
    let mut st = small();
    reconcile(&mut st, &s);
    assert!(st.ring_addrs(&key()).iter().all(|a| *a == Some(addr(2))));
    assert_eq!(
        st.server_id_addrs(&key()),
        [(1002, addr(2)), (1003, addr(3)), (1004, addr(4))].into()
    );
    assert_eq!(st.backends(&key()).map(<[Backend]>::len), Some(4));
    assert!(st.is_draining(&key(), addr(1)) && !st.is_draining(&key(), addr(3)));
    // Backend 1 turns active: it returns with its weight (30 000 of 95 536,
    // 79 of 251 slots), backend 3 (weight 0) still owns nothing.
    let mut back = s.clone();
    back.vips
        .get_mut(&key())
        .expect("vip")
        .backends
        .get_mut(&addr(1))
        .expect("b")
        .state = A;
    reconcile(&mut st, &back);
    let ring = st.ring_addrs(&key());
    let owned = |i| ring.iter().filter(|a| **a == Some(addr(i))).count();
    assert_eq!((owned(1), owned(2), owned(3), owned(4)), (79, 172, 0, 0));
    assert_eq!(st.desired(), desired_of(&back));
}

#[test]
fn vip_flags_reach_the_desired_state_and_change_in_place() {
    let udp = Vip::new("10.100.0.2".parse().expect("ip"), 0, Proto::Udp);
    let flags = VipFlags::PORT_AGNOSTIC | VipFlags::QUIC | VipFlags::SKIP_LRU_UDP;
    let mut s = snap(&[(1, A)], true);
    s.vips.insert(udp, entry(udp, flags, &[(2, A, 1, true)]));
    let d = desired_of(&s);
    assert_eq!(d.vips[&key()].flags, VipFlags::SERVER_ID);
    assert_eq!(d.vips[&udp].flags, flags);
    let mut st = small();
    reconcile(&mut st, &s);
    assert_eq!(st.vip_flags(&udp), Some(flags));
    let id = st.vip_id(&key());
    let ring = st.ring_addrs(&key());
    // server_id off: the VIP keeps its id and ring (the old planner
    // removed and re-added it); the flags change.
    let mut off = s.clone();
    off.vips.get_mut(&key()).expect("vip").spec.flags = VipFlags::NONE;
    let want = desired_of(&off);
    assert_eq!(
        changes(&st.desired(), &want),
        vec![VipChange::Flags {
            vip: key(),
            from: VipFlags::SERVER_ID,
            to: VipFlags::NONE
        }]
    );
    reconcile(&mut st, &off);
    assert_eq!(st.vip_flags(&key()), Some(VipFlags::NONE));
    assert_eq!(st.vip_id(&key()), id);
    assert_eq!(st.ring_addrs(&key()), ring);
    // The old planner's steps for the same change, and the same tables.
    let mut old = small();
    old_plan::sync(&mut old, &s);
    let steps = old_plan::sync(&mut old, &off);
    assert_eq!(steps[0], Step::RemoveVip(key()));
    assert_eq!(steps[1], Step::AddVip(key(), VipFlags::NONE));
    assert_eq!(tables(&old), tables(&st));
}

#[test]
fn bad_entries_never_reach_the_desired_state() {
    let l = KeyLayout::new("/t").expect("prefix");
    let udp = Vip::new("10.0.0.2".parse().expect("ip"), 53, Proto::Udp);
    let mut raw = BTreeMap::new();
    let mut put = |k: String, v: &str, rev: i64| {
        let e = RawEntry {
            value: v.as_bytes().to_vec(),
            create_revision: rev,
            mod_revision: rev,
        };
        raw.insert(k.into_bytes(), e);
    };
    put(
        l.vip(&key()),
        r#"{"addr":"10.100.0.1","port":8080,"proto":"tcp","flags":{"server_id":true}}"#,
        1,
    );
    put(
        l.vip(&udp),
        r#"{"addr":"10.0.0.2","port":53,"proto":"udp","flags":{"server_id":true}}"#,
        1,
    );
    put(
        l.backend(&key(), addr(1)),
        r#"{"addr":"10.2.1.2","weight":5,"server_id":9}"#,
        2,
    );
    put(
        l.backend(&key(), addr(2)),
        r#"{"addr":"10.2.2.2","weight":0,"state":"draining"}"#,
        2,
    );
    for (i, bad) in [
        (
            3,
            format!(r#"{{"addr":"10.2.3.2","weight":{}}}"#, MAX_WEIGHT + 1),
        ),
        (4, r#"{"addr":"10.2.9.2","weight":1}"#.to_string()),
        (
            5,
            r#"{"addr":"10.2.5.2","weight":1,"server_id":9}"#.to_string(),
        ),
        (6, "{not json".to_string()),
    ] {
        put(l.backend(&key(), addr(i)), &bad, 3);
    }
    put(
        l.backend(&udp, addr(7)),
        r#"{"addr":"10.2.7.2","weight":1}"#,
        3,
    );
    put(
        format!("{}routing/vips/tcp/10.0.0.9/080", l.prefix()),
        "{}",
        3,
    );
    let (vips, rejected) = build(&l, &raw);
    assert_eq!(rejected.len(), 7, "{rejected:?}");
    let s = Snapshot {
        revision: 3,
        vips,
        rejected,
        ..Snapshot::default()
    };
    let d = desired_of(&s);
    assert_eq!(d.vips.keys().copied().collect::<Vec<_>>(), vec![key()]);
    let v = &d.vips[&key()];
    assert_eq!(
        v.backends.iter().map(|b| b.addr).collect::<Vec<_>>(),
        vec![addr(1), addr(2)]
    );
    assert_eq!(v.backends[1].weight, 0, "weight 0 is valid");
    let mut st = small();
    reconcile(&mut st, &s);
    assert!(st.ring_addrs(&key()).iter().all(|a| *a == Some(addr(1))));
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
fn empty_snapshot_on_empty_lb_is_no_operation() {
    let d = desired_of(&Snapshot::default());
    assert!(d.vips.is_empty());
    assert!(small().reconcile(&d).expect("plan").ops.is_empty());
    assert!(changes(&small().desired(), &d).is_empty());
    assert!(old_plan::plan(&old_plan::LbView::new(), &Snapshot::default()).is_empty());
}

#[test]
fn new_vip_is_added_with_its_backends_in_address_order() {
    let s = snap(&[(3, A), (1, A), (2, A)], true);
    let mut st = small();
    let want = desired_of(&s);
    assert_eq!(
        changes(&st.desired(), &want),
        vec![VipChange::Added {
            vip: key(),
            flags: VipFlags::SERVER_ID,
            backends: 3,
            draining: 0
        }]
    );
    let plan = st.reconcile(&want).expect("plan");
    assert_eq!(plan.update.backends_added, 3);
    assert_eq!(plan.update.slots_changed, 251);
    st.commit(plan);
    let b = st.backends(&key()).expect("vip");
    assert_eq!(
        b.iter().map(|b| b.addr).collect::<Vec<_>>(),
        vec![addr(1), addr(2), addr(3)]
    );
    assert_eq!(b[0].server_id, ServerId::new(1001));
    // The old planner: add the VIP, then set its backends in the same order.
    let steps = old_plan::plan(&old_plan::LbView::new(), &s);
    assert_eq!(steps[0], Step::AddVip(key(), VipFlags::SERVER_ID));
    assert!(matches!(&steps[1], Step::SetBackends(_, ob) if ob.as_slice() == b));
    assert_eq!(steps.len(), 2);
}

/// The sequence of the old planner's convergence test, with a weight-0
/// backend and a second VIP.
fn sequence() -> Vec<Snapshot> {
    let mut seq = vec![
        snap(&[(1, A), (2, A), (3, A)], true),
        snap(&[(1, A), (2, D), (3, A)], true),
        snap(&[(1, A), (2, D), (3, A), (4, D)], true),
        snap(&[(1, A), (3, A), (4, A)], true),
        snap(&[(1, A), (3, A), (4, A)], false),
    ];
    let mut w0 = snap(&[(1, A), (3, A), (4, A)], false);
    w0.vips
        .get_mut(&key())
        .expect("vip")
        .backends
        .get_mut(&addr(3))
        .expect("b")
        .weight = 0;
    let other = Vip::new("10.100.0.9".parse().expect("ip"), 443, Proto::Tcp);
    w0.vips.insert(
        other,
        entry(other, VipFlags::NONE, &[(4, A, 2, true), (5, D, 1, false)]),
    );
    seq.push(w0);
    seq.push(Snapshot::default());
    seq
}

#[test]
fn reconcile_converges_to_the_old_planners_tables_and_replanning_is_empty() {
    let mut st = small();
    let mut old = small();
    for s in &sequence() {
        let before = st.desired();
        let n = reconcile(&mut st, s);
        let steps = old_plan::sync(&mut old, s);
        assert_eq!(n == 0, steps.is_empty(), "{steps:?}");
        assert_eq!(
            changes(&before, &desired_of(s)).is_empty(),
            steps.is_empty()
        );
        assert_eq!(st.desired(), desired_of(s));
        assert_eq!(tables(&st), tables(&old), "after {steps:?}");
        assert!(
            st.reconcile(&desired_of(s)).expect("plan").ops.is_empty(),
            "second plan not empty"
        );
        assert!(old_plan::plan(&old_plan::view_of(&old), s).is_empty());
    }
}

#[test]
fn drain_of_a_listed_backend_keeps_it_listed_and_its_route() {
    let mut st = small();
    reconcile(&mut st, &snap(&[(1, A), (2, A)], true));
    let before = st.ring_addrs(&key());
    assert!(before.contains(&Some(addr(2))));
    let s = snap(&[(1, A), (2, D)], true);
    let want = desired_of(&s);
    assert_eq!(
        changes(&st.desired(), &want),
        vec![VipChange::Backends {
            vip: key(),
            added: vec![],
            removed: vec![],
            changed: vec![],
            drained: vec![addr(2)],
            undrained: vec![],
        }]
    );
    let plan = st.reconcile(&want).expect("plan");
    assert_eq!(
        (plan.update.backends_added, plan.update.backends_removed),
        (0, 0)
    );
    // Only the slots backend 2 owned are written.
    let owned = before.iter().filter(|a| **a == Some(addr(2))).count() as u32;
    assert_eq!(plan.update.slots_changed, owned);
    st.commit(plan);
    assert!(
        st.ring_addrs(&key()).iter().all(|s| *s == Some(addr(1))),
        "drained backend left the ring"
    );
    assert_eq!(st.server_id_addrs(&key()).get(&1002), Some(&addr(2)));
    assert_eq!(st.backends(&key()).map(<[Backend]>::len), Some(2));
    // The old planner: one drain step, same tables.
    let mut old = small();
    old_plan::sync(&mut old, &snap(&[(1, A), (2, A)], true));
    assert_eq!(
        old_plan::sync(&mut old, &s),
        vec![Step::Drain(key(), addr(2))]
    );
    assert_eq!(tables(&old), tables(&st));
}

#[test]
fn changes_name_every_kind_and_display_them() {
    let mut st = small();
    reconcile(&mut st, &snap(&[(1, A), (2, D), (3, A)], true));
    let mut s = snap(&[(2, A), (3, A), (4, D)], true);
    s.vips
        .get_mut(&key())
        .expect("vip")
        .backends
        .get_mut(&addr(3))
        .expect("b")
        .weight = 5;
    let c = changes(&st.desired(), &desired_of(&s));
    assert_eq!(
        c,
        vec![VipChange::Backends {
            vip: key(),
            added: vec![addr(4)],
            removed: vec![addr(1)],
            changed: vec![addr(3)],
            drained: vec![addr(4)],
            undrained: vec![addr(2)],
        }]
    );
    assert_eq!(
        c[0].to_string(),
        "backends of 10.100.0.1:8080/tcp: add [10.2.4.2] remove [10.2.1.2] re-weight [10.2.3.2] drain [10.2.4.2] undrain [10.2.2.2]"
    );
    let gone = changes(&st.desired(), &Desired::new());
    assert_eq!(gone, vec![VipChange::Removed { vip: key() }]);
    assert_eq!(gone[0].to_string(), "remove VIP 10.100.0.1:8080/tcp");
}

#[test]
fn digest_depends_on_every_slot_and_the_length() {
    let a = [Some(addr(1)), Some(addr(2)), None];
    let mut b = a;
    b[2] = Some(addr(1));
    assert_ne!(ring_digest(&a), ring_digest(&b));
    assert_ne!(ring_digest(&a[..2]), ring_digest(&a));
    assert_eq!(ring_digest(&a), ring_digest(&a.clone()));
    // An IPv4 address hashes as its IPv6-mapped form.
    let v6: IpAddr = "::ffff:10.2.1.2".parse().expect("ip");
    assert_eq!(ring_digest(&[Some(addr(1))]), ring_digest(&[Some(v6)]));
}

#[test]
fn two_lbs_from_the_same_snapshots_hold_the_same_digest() {
    let s1 = snap(&[(1, A), (2, A), (3, A)], true);
    let s2 = snap(&[(1, A), (3, A), (4, A), (5, D)], true);
    let mut a = small();
    let mut b = small();
    reconcile(&mut a, &s1);
    reconcile(&mut a, &s2);
    reconcile(&mut b, &s2);
    assert_eq!(
        ring_digest(&a.ring_addrs(&key())),
        ring_digest(&b.ring_addrs(&key()))
    );
}

fn any_snapshot() -> impl Strategy<Value = Snapshot> {
    let vip = (0u8..3, any::<bool>());
    // server_id by host (an address has one server_id on every VIP, as the
    // registry's validation enforces): hosts 3 and 6 have none.
    let backend = (1u8..8, any::<bool>(), 0u32..4);
    proptest::collection::vec((vip, proptest::collection::vec(backend, 0..6)), 0..3).prop_map(
        |vs| {
            let mut vips = BTreeMap::new();
            for ((n, sid), bs) in vs {
                let vip = Vip::new(IpAddr::from([10, 100, 0, n + 1]), 80, Proto::Tcp);
                let bs: Vec<B> = bs
                    .into_iter()
                    .map(|(i, d, w)| (i, if d { D } else { A }, w, i % 3 != 0))
                    .collect();
                vips.insert(
                    vip,
                    entry(vip, VipFlags::NONE.with(VipFlags::SERVER_ID, sid), &bs),
                );
            }
            Snapshot {
                vips,
                ..Snapshot::default()
            }
        },
    )
}

proptest! {
    /// From any sequence of snapshots (weights 0..4, drains, server_ids on
    /// and off, VIPs coming and going, flags flipping), reconciling to
    /// `desired_of` ends in the tables the old planner's steps built.
    #[test]
    fn reconcile_matches_the_old_planner(seq in proptest::collection::vec(any_snapshot(), 1..6)) {
        let mut st = small();
        let mut old = small();
        for s in &seq {
            reconcile(&mut st, s);
            old_plan::sync(&mut old, s);
            prop_assert_eq!(tables(&st), tables(&old));
            prop_assert_eq!(st.desired(), desired_of(s));
        }
    }
}
