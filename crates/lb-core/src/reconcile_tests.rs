//! `LbState::reconcile` against the fake kernel: from any state to any
//! desired state, the maps end up as if the desired state had been built
//! from scratch (compared by meaning: VIP ids and backend indices may be
//! allocated differently), every operation keeps the ordering rules, an
//! unchanged desired state plans nothing, and a failure at any operation
//! leaves kernel and state unchanged.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use flowpin_bpf_abi::lb;
use flowpin_tcp_opt::ServerId;
use proptest::prelude::*;

use crate::fake_maps::{config, contents, ring_of, step, vip, FakeMaps};
use crate::{
    apply, Backend, Desired, DesiredVip, LbError, LbState, MapOp, Proto, Slot, Vip, VipFlags,
    VipKey,
};

/// The candidate VIPs: two sharing an address (one ICMP entry), a
/// port-agnostic UDP one, two IPv6 ones.
fn vips() -> [Vip; 5] {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    [
        Vip::new(ip("192.0.2.1"), 80, Proto::Tcp),
        Vip::new(ip("192.0.2.1"), 443, Proto::Tcp),
        Vip::new(ip("192.0.2.2"), 0, Proto::Udp),
        Vip::new(ip("2001:db8::1"), 443, Proto::Udp),
        Vip::new(ip("2001:db8::1"), 80, Proto::Tcp),
    ]
}

/// The candidate backends: six IPv4, two IPv6 (an IPv6 VIP takes only these).
fn backend_addr(i: usize) -> IpAddr {
    if i < 6 {
        format!("10.0.0.{}", i + 1).parse().expect("ip")
    } else {
        format!("fd00::{}", i - 5).parse().expect("ip")
    }
}

/// A valid flag set for `vip`, picked by `choice`.
fn flags_for(vip: &Vip, choice: u8) -> VipFlags {
    match (vip.proto, vip.port) {
        (Proto::Tcp, _) => VipFlags::NONE.with(VipFlags::SERVER_ID, choice % 2 == 1),
        (Proto::Udp, port) => VipFlags::NONE
            .with(VipFlags::PORT_AGNOSTIC, port == 0)
            .with(VipFlags::QUIC, choice & 1 != 0)
            .with(VipFlags::SKIP_LRU_UDP, choice & 2 != 0),
    }
}

/// One backend's settings: weight, server_id choice (none, 100 + i,
/// 200 + i: unique within a VIP), draining.
type BackendSpec = (u32, u8, bool);
/// One VIP's settings: flag choice, backends (indices, in list order).
type VipSpec = (u8, Vec<usize>, Vec<BackendSpec>);

fn weight() -> impl Strategy<Value = u32> {
    prop_oneof![6 => 1u32..=4, 2 => Just(0u32), 1 => Just(100u32)]
}

fn vip_spec() -> impl Strategy<Value = VipSpec> {
    (
        0u8..4,
        proptest::sample::subsequence((0..8usize).collect::<Vec<_>>(), 0..=6).prop_shuffle(),
        proptest::collection::vec((weight(), 0u8..3, proptest::bool::weighted(0.2)), 8),
    )
}

fn desired_spec() -> impl Strategy<Value = Vec<Option<VipSpec>>> {
    proptest::collection::vec(proptest::option::weighted(0.7, vip_spec()), 5)
}

fn desired_of(spec: &[Option<VipSpec>]) -> Desired {
    let mut d = Desired::new();
    for (vip, s) in vips().iter().zip(spec) {
        let Some((flags, order, settings)) = s else {
            continue;
        };
        let mut want = DesiredVip::new(flags_for(vip, *flags));
        for &i in order {
            let addr = backend_addr(i);
            if vip.addr.is_ipv6() && addr.is_ipv4() {
                continue; // no IPv4 tunnel for an IPv6 VIP
            }
            let (w, sid, drain) = settings[i];
            let b = Backend::new(addr).weight(w);
            let b = match ServerId::new(u32::from(sid) * 100 + i as u32) {
                Some(s) if sid > 0 => b.server_id(s),
                _ => b.without_server_id(),
            };
            want = if drain {
                want.draining_backend(b)
            } else {
                want.backend(b)
            };
        }
        d = d.vip(*vip, want);
    }
    d
}

/// The desired state built from scratch with the single-change plans.
fn from_scratch(d: &Desired) -> (LbState, FakeMaps) {
    let mut st = LbState::new(&config());
    let mut maps = FakeMaps::checked();
    for (v, want) in &d.vips {
        step(&mut st, &mut maps, |s| s.add_vip(*v, want.flags));
        step(&mut st, &mut maps, |s| s.set_backends(v, &want.backends));
        for a in &want.draining {
            step(&mut st, &mut maps, |s| s.drain_backend(v, *a));
        }
    }
    (st, maps)
}

/// A descriptor by meaning: address, weight, server_id, draining.
type DescMeaning = (IpAddr, u32, Option<u32>, bool);

/// What the maps mean, with ids resolved: VIP keys, addresses.
#[derive(Debug, PartialEq, Eq)]
struct Meaning {
    /// Every `vips` entry: key → flags (ICMP entries: `vip_id` `u32::MAX`).
    vips: BTreeMap<String, u32>,
    /// Each VIP's ring, as backend addresses.
    rings: BTreeMap<String, Vec<Option<IpAddr>>>,
    /// (VIP, server_id) → backend address.
    routes: BTreeMap<(String, u32), IpAddr>,
    /// Each VIP's descriptors in position order.
    descs: BTreeMap<String, Vec<DescMeaning>>,
    /// The addresses in `backends`.
    backends: BTreeSet<IpAddr>,
    port_agnostic: u32,
}

/// Resolves the maps to their meaning, checking on the way what a
/// comparison by meaning cannot see: the direct-mapped slots are exactly
/// derived from the hash maps, nothing is left under an unused VIP id, a
/// descriptor's index holds its address, no address has two indices.
fn meaning(maps: &FakeMaps) -> Meaning {
    let mut by_id: HashMap<u32, String> = HashMap::new();
    let mut vips = BTreeMap::new();
    for (k, m) in &maps.vips {
        vips.insert(format!("{k:?}"), m.flags);
        if m.vip_id != u32::MAX {
            assert!(
                by_id.insert(m.vip_id, format!("{k:?}")).is_none(),
                "two VIPs with id {}",
                m.vip_id
            );
        }
    }
    // vip_table: each slot is Slot::of(the entries hashing there).
    let mut hashed: HashMap<u32, Vec<(VipKey, crate::VipMeta)>> = HashMap::new();
    for (k, m) in &maps.vips {
        hashed.entry(k.slot()).or_default().push((*k, *m));
    }
    let slots: HashSet<u32> = maps
        .vip_table
        .keys()
        .chain(hashed.keys())
        .copied()
        .collect();
    for s in slots {
        let want = hashed.get(&s).map_or(Slot::Empty, |e| Slot::of(e));
        let have = maps.vip_table.get(&s).copied().unwrap_or(Slot::Empty);
        assert_eq!(have, want, "vip_table slot {s}");
    }
    // sid_table likewise.
    let mut hashed: HashMap<u32, Vec<crate::SidRoute>> = HashMap::new();
    for (&(vip_id, server_id), &backend) in &maps.server_ids {
        hashed
            .entry(lb::sid_slot(vip_id, server_id))
            .or_default()
            .push(crate::SidRoute {
                vip_id,
                server_id,
                backend,
            });
    }
    let slots: HashSet<u32> = maps
        .sid_table
        .keys()
        .chain(hashed.keys())
        .copied()
        .collect();
    for s in slots {
        let want = hashed.get(&s).map_or(Slot::Empty, |e| Slot::of(e));
        let have = maps.sid_table.get(&s).copied().unwrap_or(Slot::Empty);
        assert_eq!(have, want, "sid_table slot {s}");
    }
    for (&(vip_id, slot), &b) in &maps.ring {
        assert!(
            b == 0 || by_id.contains_key(&vip_id),
            "ring slot {slot} of unused VIP id {vip_id} holds {b}"
        );
    }
    let rings = by_id
        .iter()
        .map(|(&id, k)| (k.clone(), ring_of(maps, id)))
        .collect();
    let routes = maps
        .server_ids
        .iter()
        .map(|(&(vip_id, sid), b)| {
            let k = by_id.get(&vip_id).expect("route of a used VIP id").clone();
            (
                (k, sid),
                *maps.backends.get(b).expect("route to a live backend"),
            )
        })
        .collect();
    let mut descs: BTreeMap<String, Vec<_>> = BTreeMap::new();
    let mut sorted: Vec<_> = maps.descs.iter().collect();
    sorted.sort_by_key(|(k, _)| **k);
    for (&(vip_id, pos), d) in sorted {
        let k = by_id.get(&vip_id).expect("descriptor of a used VIP id");
        let list = descs.entry(k.clone()).or_default();
        assert_eq!(list.len(), pos as usize, "gap in the descriptors of {k}");
        assert_eq!(maps.backends.get(&d.backend), Some(&d.addr), "{d:?}");
        list.push((d.addr, d.weight, d.server_id, d.draining));
    }
    let backends: BTreeSet<IpAddr> = maps.backends.values().copied().collect();
    assert_eq!(
        backends.len(),
        maps.backends.len(),
        "an address with two indices"
    );
    Meaning {
        vips,
        rings,
        routes,
        descs,
        backends,
        port_agnostic: maps.port_agnostic,
    }
}

/// Reconciles `st` to `d` through the checked maps, then checks the
/// result against `d` built from scratch and that nothing is left to do.
fn reconcile_and_check(st: &mut LbState, maps: &mut FakeMaps, d: &Desired) {
    let plan = st.reconcile(d).expect("reconcile");
    apply(maps, &plan.ops).expect("apply");
    st.commit(plan);
    let (fresh, fresh_maps) = from_scratch(d);
    assert_eq!(meaning(maps), meaning(&fresh_maps));
    assert_eq!(&st.desired(), d);
    assert_eq!(st.desired(), fresh.desired());
    for v in d.vips.keys() {
        assert_eq!(st.ring_addrs(v), fresh.ring_addrs(v), "ring of {v}");
        assert_eq!(st.server_id_addrs(v), fresh.server_id_addrs(v));
    }
    let again = st.reconcile(d).expect("reconcile again");
    assert!(again.ops.is_empty(), "second plan: {:?}", again.ops);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// From a state built by single changes, reconcile to a first and
    /// then a second desired state: both end as if built from scratch.
    #[test]
    fn reconcile_from_any_state_equals_building_from_scratch(
        start in desired_spec(),
        first in desired_spec(),
        second in desired_spec(),
    ) {
        let (mut st, mut maps) = from_scratch(&desired_of(&start));
        prop_assert!(st.reconcile(&st.desired()).expect("plan").ops.is_empty());
        reconcile_and_check(&mut st, &mut maps, &desired_of(&first));
        reconcile_and_check(&mut st, &mut maps, &desired_of(&second));
    }

}

proptest! {
    // Every position of every plan is one more apply: fewer cases.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// A failure injected at every operation of a reconcile plan: the
    /// maps are back where they were, the state plans the same again. The
    /// ordering checker runs after every write and every single undo.
    #[test]
    fn a_failed_reconcile_leaves_kernel_and_state_unchanged(
        start in desired_spec(),
        target in desired_spec(),
    ) {
        let (st, maps) = from_scratch(&desired_of(&start));
        let d = desired_of(&target);
        let plan = st.reconcile(&d).expect("plan");
        let before = contents(&maps);
        for fail_at in 0..plan.ops.len() {
            let mut faulty = FakeMaps {
                fail_at: Some(maps.writes + fail_at),
                check: true,
                ..maps.clone()
            };
            let err = apply(&mut faulty, &plan.ops).expect_err("injected failure");
            prop_assert_eq!(err.index, fail_at);
            prop_assert!(err.rollback_failed.is_none());
            prop_assert_eq!(&contents(&faulty), &before, "failure at op {}", fail_at);
            faulty.assert_settled("after the rollback");
        }
        prop_assert_eq!(st.reconcile(&d).expect("plan again").ops, plan.ops);
        prop_assert_eq!(st.desired(), desired_of(&start));
    }
}

fn sid(n: u32) -> ServerId {
    ServerId::new(n).expect("non-zero")
}

fn addr(i: u8) -> IpAddr {
    format!("10.0.0.{i}").parse().expect("ip")
}

#[test]
fn only_what_differs_is_written() {
    let v = vip();
    let a = Backend::new(addr(1)).server_id(sid(101));
    let b = Backend::new(addr(2)).weight(2).server_id(sid(102));
    let c = Backend::new(addr(3));
    let d1 = Desired::new().vip(
        v,
        DesiredVip::new(VipFlags::SERVER_ID)
            .backend(a)
            .backend(b)
            .backend(c),
    );
    let mut st = LbState::new(&config());
    let mut maps = FakeMaps::checked();
    reconcile_and_check(&mut st, &mut maps, &d1);
    // Draining one backend: the ring slots it held and its descriptor, no
    // backend entry, no route.
    let d2 = Desired::new().vip(
        v,
        DesiredVip::new(VipFlags::SERVER_ID)
            .backend(a)
            .draining_backend(b)
            .backend(c),
    );
    let plan = st.reconcile(&d2).expect("plan");
    assert!(
        plan.ops
            .iter()
            .all(|o| matches!(o, MapOp::Ring { .. } | MapOp::BackendDesc { .. })),
        "{:?}",
        plan.ops
    );
    let ring_before = st.ring_addrs(&v);
    let written = plan.update.slots_changed as usize;
    apply(&mut maps, &plan.ops).expect("apply");
    st.commit(plan);
    let ring_after = st.ring_addrs(&v);
    let moved = ring_before
        .iter()
        .zip(&ring_after)
        .filter(|(x, y)| x != y)
        .count();
    assert_eq!(written, moved, "only the slots whose backend changes");
    assert!(ring_before.contains(&Some(b.addr)) && !ring_after.contains(&Some(b.addr)));
    // A flag change is made in place: the VIP keeps its id and ring.
    let id = st.vip_id(&v);
    let d3 = Desired::new().vip(
        v,
        DesiredVip {
            flags: VipFlags::NONE,
            ..d2.vips[&v].clone()
        },
    );
    let plan = st.reconcile(&d3).expect("plan");
    assert!(
        plan.ops
            .iter()
            .all(|o| matches!(o, MapOp::Vip { meta: Some(_), .. } | MapOp::VipSlot { .. })),
        "{:?}",
        plan.ops
    );
    apply(&mut maps, &plan.ops).expect("apply");
    st.commit(plan);
    assert_eq!(st.vip_id(&v), id);
    assert_eq!(st.vip_flags(&v), Some(VipFlags::NONE));
    reconcile_and_check(&mut st, &mut maps, &d3);
    // Everything gone.
    reconcile_and_check(&mut st, &mut maps, &Desired::new());
    assert!(maps.backends.is_empty() && maps.vips.is_empty() && maps.server_ids.is_empty());
}

#[test]
fn an_invalid_desired_state_plans_nothing_and_says_why() {
    let v = vip();
    let st = LbState::new(&config());
    let listed = DesiredVip::new(VipFlags::NONE).backend(Backend::new(addr(1)));
    let mut bad = listed.clone();
    bad.draining.insert(addr(9));
    let err = st
        .reconcile(&Desired::new().vip(v, bad))
        .expect_err("not listed");
    assert!(
        matches!(&err, LbError::InvalidBackends { why, .. } if why.contains("10.0.0.9 is draining")),
        "{err}"
    );
    let heavy = DesiredVip::new(VipFlags::NONE).backend(Backend::new(addr(1)).weight(1 << 20));
    let err = st
        .reconcile(&Desired::new().vip(v, heavy))
        .expect_err("weight");
    assert!(err.to_string().contains("above the maximum"), "{err}");
    let udp_sid = Desired::new().vip(
        Vip::new(v.addr, 53, Proto::Udp),
        DesiredVip::new(VipFlags::SERVER_ID),
    );
    assert!(matches!(
        st.reconcile(&udp_sid),
        Err(LbError::InvalidVip { .. })
    ));
    // Weight 0 is accepted: in the listing, out of the ring.
    let zero = Desired::new().vip(
        v,
        listed.backend(Backend::new(addr(2)).weight(0).server_id(sid(7))),
    );
    let mut st = st;
    let mut maps = FakeMaps::checked();
    reconcile_and_check(&mut st, &mut maps, &zero);
    assert!(!st.ring_addrs(&v).contains(&Some(addr(2))));
    assert_eq!(st.server_id_addrs(&v).get(&7), Some(&addr(2)));
}
