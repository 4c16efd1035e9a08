//! The control state rebuilt from map contents (what `open_pinned` does
//! after another process pinned), and drain, without a kernel: every plan is
//! applied to the in-memory maps of `fake_maps`, then a fresh `LbState` is
//! rebuilt from those maps and must equal the one that wrote them — same
//! backends, ring, routes, and the same next plan.

use std::collections::HashSet;

use crate::fake_maps::{be, config, expected_ring, ring_of, run, step, vip, FakeMaps};
use crate::{Backend, LbError, LbState, MapOp, PinnedContents, Plan, Proto, Vip, VipFlags};

fn contents(maps: &FakeMaps) -> PinnedContents {
    PinnedContents {
        vips: maps.vips.iter().map(|(k, m)| (*k, *m)).collect(),
        descs: maps.descs.iter().map(|(&(v, p), d)| (v, p, *d)).collect(),
        cid: maps.cid.iter().map(|(&(v, s), e)| (v, s, *e)).collect(),
    }
}

/// The two states plan the same operations for `change`.
fn same_plan(a: &LbState, b: &LbState, change: impl Fn(&LbState) -> Result<Plan, LbError>) {
    let pa = change(a).expect("plan a");
    let pb = change(b).expect("plan b");
    assert_eq!(pa.ops, pb.ops);
    assert_eq!(pa.update, pb.update);
}

fn udp_vip() -> Vip {
    Vip::new("192.0.2.11".parse().unwrap(), 0, Proto::Udp)
}

fn populated() -> (LbState, FakeMaps) {
    let mut st = LbState::new(&config());
    let mut maps = FakeMaps::checked();
    step(&mut st, &mut maps, |s| {
        s.add_vip(vip(), VipFlags::SERVER_ID)
    });
    step(&mut st, &mut maps, |s| {
        s.add_vip(udp_vip(), VipFlags::PORT_AGNOSTIC | VipFlags::QUIC)
    });
    let a = [be(1, 1, 101), be(2, 3, 102), be(3, 1, 103), be(4, 2, 104)];
    step(&mut st, &mut maps, |s| s.set_backends(&vip(), &a));
    // Shared backends (one index, two VIPs), one without a server_id.
    let b = [be(2, 1, 102), Backend::new("10.0.0.9".parse().unwrap())];
    step(&mut st, &mut maps, |s| s.set_backends(&udp_vip(), &b));
    step(&mut st, &mut maps, |s| s.drain_backend(&vip(), a[2].addr));
    step(&mut st, &mut maps, |s| s.remove_backend(&vip(), a[0].addr));
    (st, maps)
}

#[test]
fn the_state_rebuilt_from_the_maps_is_the_state_that_wrote_them() {
    let (st, maps) = populated();
    let re = LbState::rebuild(&config(), &contents(&maps)).expect("rebuild");
    for v in [vip(), udp_vip()] {
        assert_eq!(re.backends(&v), st.backends(&v), "backends of {v}");
        assert_eq!(re.vip_id(&v), st.vip_id(&v));
        assert_eq!(re.vip_flags(&v), st.vip_flags(&v));
        assert_eq!(re.ring_addrs(&v), st.ring_addrs(&v));
        assert_eq!(re.ring_indices(&v), st.ring_indices(&v));
        assert_eq!(re.server_id_addrs(&v), st.server_id_addrs(&v));
        for b in st.backends(&v).unwrap() {
            assert_eq!(re.backend_index(b.addr), st.backend_index(b.addr));
            assert_eq!(re.is_draining(&v, b.addr), st.is_draining(&v, b.addr));
        }
    }
    let echo = |s: &LbState| s.echo_addrs().collect::<HashSet<_>>();
    assert_eq!(echo(&re), echo(&st));
    // The next changes plan identically: ring diffs, index reuse, slots,
    // the port-agnostic count, the VIP id handed out next.
    let c = [be(5, 1, 105), be(2, 3, 102)];
    same_plan(&st, &re, |s| s.set_backends(&vip(), &c));
    same_plan(&st, &re, |s| s.remove_vip(&udp_vip()));
    same_plan(&st, &re, |s| s.undrain_backend(&vip(), be(3, 1, 103).addr));
    let third = Vip::new("192.0.2.12".parse().unwrap(), 443, Proto::Tcp);
    same_plan(&st, &re, |s| s.add_vip(third, VipFlags::NONE));
}

#[test]
fn an_empty_table_rebuilds_empty() {
    let st = LbState::rebuild(&config(), &PinnedContents::default()).expect("rebuild");
    assert_eq!(st.vips().count(), 0);
    let fresh = LbState::new(&config());
    same_plan(&fresh, &st, |s| s.add_vip(vip(), VipFlags::SERVER_ID));
}

#[test]
fn contradicting_contents_are_refused() {
    let (_, maps) = populated();
    // A descriptor of a VIP that is not there (a remove_vip cut short):
    // set aside for deletion, the rest rebuilds as if it were absent.
    let mut c = contents(&maps);
    let d = c.descs[0].2;
    c.descs.push((9, 0, d));
    let re = LbState::rebuild(&config(), &c).expect("rebuild");
    assert_eq!(re.orphan_descs, vec![(9, 0, d)]);
    assert_eq!(
        re.backends(&vip()),
        LbState::rebuild(&config(), &contents(&maps))
            .unwrap()
            .backends(&vip())
    );
    // A gap in a backend list.
    let mut c = contents(&maps);
    let i = c.descs.iter().position(|x| x.1 == 0).unwrap();
    c.descs.remove(i);
    assert!(matches!(
        LbState::rebuild(&config(), &c),
        Err(LbError::PinnedStateCorrupt(m)) if m.contains("gap")
    ));
    // One address, two indices.
    let mut c = contents(&maps);
    let shared: std::net::IpAddr = "10.0.0.2".parse().unwrap();
    for x in c.descs.iter_mut().filter(|x| x.2.addr == shared).take(1) {
        x.2.backend += 100;
    }
    assert!(matches!(
        LbState::rebuild(&config(), &c),
        Err(LbError::PinnedStateCorrupt(m)) if m.contains("index")
    ));
}

#[test]
fn drain_leaves_the_ring_but_keeps_index_route_and_listing() {
    let mut st = LbState::new(&config());
    let mut maps = FakeMaps::checked();
    step(&mut st, &mut maps, |s| {
        s.add_vip(vip(), VipFlags::SERVER_ID)
    });
    let a = [be(1, 1, 101), be(2, 1, 102), be(3, 1, 103)];
    step(&mut st, &mut maps, |s| s.set_backends(&vip(), &a));
    let two = a[1].addr;
    let index = st.backend_index(two).unwrap();
    let plan = run(&mut maps, st.drain_backend(&vip(), two));
    // Only ring slots and the descriptor change: the backends entry and
    // the server_id route stay (existing flows keep reaching it).
    assert!(
        plan.ops
            .iter()
            .all(|op| matches!(op, MapOp::Ring { .. } | MapOp::BackendDesc { .. })),
        "{:?}",
        plan.ops
    );
    st.commit(plan);
    assert!(!ring_of(&maps, 0).contains(&Some(two)));
    assert_eq!(
        ring_of(&maps, 0),
        expected_ring(&[a[0], a[1].weight(0), a[2]])
    );
    assert_eq!(maps.backends.get(&index), Some(&two));
    assert_eq!(maps.server_ids.get(&(0, 102)), Some(&index));
    assert_eq!(
        st.backends(&vip()),
        Some(&a[..]),
        "still listed, weight kept"
    );
    assert!(st.is_draining(&vip(), two));
    // A later set_backends that still lists it keeps it draining.
    let more = [a[0], a[1], a[2], be(4, 1, 104)];
    step(&mut st, &mut maps, |s| s.set_backends(&vip(), &more));
    assert!(st.is_draining(&vip(), two));
    assert!(!ring_of(&maps, 0).contains(&Some(two)));
    // Removed once its connections closed: index and route go.
    step(&mut st, &mut maps, |s| s.remove_backend(&vip(), two));
    assert!(!maps.backends.values().any(|&x| x == two));
    assert!(!maps.server_ids.contains_key(&(0, 102)));
    assert!(!st.is_draining(&vip(), two));
    // Undrain puts a backend back.
    let three = a[2].addr;
    step(&mut st, &mut maps, |s| s.drain_backend(&vip(), three));
    step(&mut st, &mut maps, |s| s.undrain_backend(&vip(), three));
    assert_eq!(ring_of(&maps, 0), expected_ring(&[a[0], a[2], more[3]]));
    assert!(matches!(
        st.drain_backend(&vip(), "10.9.9.9".parse().unwrap()),
        Err(LbError::InvalidBackends { .. })
    ));
}
