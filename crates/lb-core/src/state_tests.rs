//! `LbState` and the applier without a kernel: every plan is replayed one
//! operation at a time into an in-memory copy of the maps, the ordering
//! rules are checked after each operation, and failures are injected at
//! every position to check the rollback.

use flowpin_maglev::Maglev;

use crate::fake_maps::{
    be, config, contents, expected_ring, ring_of, run, step, vip, Change, FakeMaps, Injected, M,
};
use crate::{
    apply, Backend, LbError, LbState, MapOp, MapWriter, Proto, SidRoute, Slot, Vip, VipFlags,
    VipKey, VipMeta,
};

#[test]
fn a_vip_is_reachable_only_after_its_entries_exist() {
    let mut st = LbState::new(&config());
    let mut maps = FakeMaps::checked();
    step(&mut st, &mut maps, |s| {
        s.add_vip(vip(), VipFlags::SERVER_ID)
    });
    let key = VipKey {
        addr: vip().addr,
        port: 80,
        proto: 6,
    };
    assert_eq!(
        maps.vips.get(&key),
        Some(&VipMeta {
            vip_id: 0,
            flags: VipFlags::SERVER_ID.bits()
        })
    );
    assert_eq!(
        maps.vip_table.get(&key.slot()),
        Some(&Slot::One((key, maps.vips[&key])))
    );
    // The ICMP entry of the address answers echo.
    assert_eq!(maps.vips.len(), 2);
    // Counters reset first: before any entry makes the VIP reachable.
    let plan = st
        .add_vip(Vip::new(vip().addr, 443, Proto::Tcp), VipFlags::NONE)
        .unwrap();
    assert!(matches!(plan.ops[0], MapOp::ResetVipStats { vip_id: 1 }));
}

#[test]
fn set_backends_writes_new_backends_first_and_frees_old_ones_last() {
    let mut st = LbState::new(&config());
    let mut maps = FakeMaps::checked();
    step(&mut st, &mut maps, |s| {
        s.add_vip(vip(), VipFlags::SERVER_ID)
    });
    let a = [be(1, 1, 101), be(2, 1, 102), be(3, 1, 103)];
    step(&mut st, &mut maps, |s| s.set_backends(&vip(), &a));
    assert_eq!(ring_of(&maps, 0), expected_ring(&a));
    assert_eq!(maps.server_ids.len(), 3);

    // Replace backend 2 with 4: 4 first, 2 last, routes in between.
    let b = [be(1, 1, 101), be(4, 1, 104), be(3, 1, 103)];
    let plan = st.set_backends(&vip(), &b).unwrap();
    let pos = |f: &dyn Fn(&MapOp) -> bool| plan.ops.iter().position(f).expect("op present");
    let add4 = pos(&|o| matches!(o, MapOp::Backend { addr: Some(_), .. }));
    let ring = pos(&|o| matches!(o, MapOp::Ring { .. }));
    let route = pos(&|o| {
        matches!(
            o,
            MapOp::SidRoute {
                backend: Some(_),
                ..
            }
        )
    });
    let del2 = pos(&|o| matches!(o, MapOp::Backend { addr: None, .. }));
    assert!(add4 < ring && ring < del2 && route < del2, "{:?}", plan.ops);
    let plan = run(&mut maps, Ok(plan));
    st.commit(plan);
    assert_eq!(ring_of(&maps, 0), expected_ring(&b));
    assert_eq!(maps.backends.len(), 3);
    assert!(!maps.server_ids.contains_key(&(0, 102)));
}

#[test]
fn only_the_slots_maglev_diff_reports_are_written() {
    let mut st = LbState::new(&config());
    let mut maps = FakeMaps::checked();
    step(&mut st, &mut maps, |s| s.add_vip(vip(), VipFlags::NONE));
    let a: Vec<Backend> = (1..=5).map(|i| be(i, 1, 0)).collect();
    let plan = st.set_backends(&vip(), &a).unwrap();
    assert_eq!(
        plan.update.slots_changed, M,
        "the first ring fills every slot"
    );
    let plan = run(&mut maps, Ok(plan));
    st.commit(plan);

    let b: Vec<Backend> = a[1..].to_vec();
    let keys = |v: &[Backend]| -> Vec<String> { v.iter().map(|b| b.addr.to_string()).collect() };
    let diff = Maglev::diff(
        &Maglev::build(&keys(&a), M).unwrap(),
        &Maglev::build(&keys(&b), M).unwrap(),
    )
    .unwrap();
    let plan = st.set_backends(&vip(), &b).unwrap();
    let written: Vec<u32> = plan
        .ops
        .iter()
        .filter_map(|o| match o {
            MapOp::Ring { writes, .. } => Some(writes.iter().map(|w| w.slot)),
            _ => None,
        })
        .flatten()
        .collect();
    let want: Vec<u32> = diff.changes.iter().map(|c| c.slot).collect();
    assert_eq!(written, want);
    assert_eq!(plan.update.slots_changed as usize, want.len());
    let plan = run(&mut maps, Ok(plan));
    st.commit(plan);
    assert_eq!(ring_of(&maps, 0), expected_ring(&b));

    // The same set again writes nothing.
    let plan = st.set_backends(&vip(), &b).unwrap();
    assert!(plan.ops.is_empty(), "{:?}", plan.ops);
}

#[test]
fn remove_backend_and_set_weight() {
    let mut st = LbState::new(&config());
    let mut maps = FakeMaps::checked();
    step(&mut st, &mut maps, |s| {
        s.add_vip(vip(), VipFlags::SERVER_ID)
    });
    let a = [be(1, 1, 101), be(2, 1, 102), be(3, 1, 103)];
    step(&mut st, &mut maps, |s| s.set_backends(&vip(), &a));
    let two = a[1].addr;
    step(&mut st, &mut maps, |s| s.set_weight(&vip(), two, 0));
    let w: Vec<Backend> = a
        .iter()
        .map(|b| {
            if b.addr == two {
                Backend { weight: 0, ..*b }
            } else {
                *b
            }
        })
        .collect();
    assert_eq!(ring_of(&maps, 0), expected_ring(&w));
    // Weight 0: no slots, still routable by server_id.
    assert!(!ring_of(&maps, 0).contains(&Some(two)));
    assert!(maps.server_ids.contains_key(&(0, 102)));
    step(&mut st, &mut maps, |s| s.remove_backend(&vip(), two));
    assert!(!maps.server_ids.contains_key(&(0, 102)));
    assert_eq!(maps.backends.len(), 2);
    assert!(matches!(
        st.remove_backend(&vip(), two),
        Err(LbError::InvalidBackends { .. })
    ));
    assert!(matches!(
        st.set_weight(&vip(), two, 3),
        Err(LbError::InvalidBackends { .. })
    ));
}

#[test]
fn removing_a_vip_makes_it_unreachable_first_and_clears_everything() {
    let mut st = LbState::new(&config());
    let mut maps = FakeMaps::checked();
    let agnostic = Vip::new("192.0.2.20".parse().unwrap(), 0, Proto::Udp);
    step(&mut st, &mut maps, |s| {
        s.add_vip(vip(), VipFlags::SERVER_ID)
    });
    step(&mut st, &mut maps, |s| {
        s.add_vip(agnostic, VipFlags::PORT_AGNOSTIC)
    });
    assert_eq!(maps.port_agnostic, 1);
    let a = [be(1, 1, 101), be(2, 1, 102)];
    step(&mut st, &mut maps, |s| s.set_backends(&vip(), &a));
    step(&mut st, &mut maps, |s| s.set_backends(&agnostic, &a));
    let plan = st.remove_vip(&vip()).unwrap();
    assert!(
        matches!(plan.ops[0], MapOp::VipSlot { .. }),
        "the direct-mapped slot goes first: {:?}",
        plan.ops[0]
    );
    assert!(matches!(plan.ops[1], MapOp::Vip { meta: None, .. }));
    let plan = run(&mut maps, Ok(plan));
    st.commit(plan);
    // Backends shared with the other VIP stay.
    assert_eq!(maps.backends.len(), 2);
    assert!(!maps.server_ids.keys().any(|(v, _)| *v == 0));
    step(&mut st, &mut maps, |s| s.remove_vip(&agnostic));
    assert!(maps.server_ids.is_empty());
    assert!(maps.backends.is_empty() && maps.vips.is_empty());
    assert!(maps.ring.values().all(|&b| b == 0));
    assert_eq!(maps.port_agnostic, 0);
    assert_eq!(st.vips().count(), 0);
}

/// A failure injected at every position of a plan: the maps are back at
/// the previous configuration, the state is unchanged (the same change
/// planned again produces the same plan), and the error says so. The
/// ordering checker runs after every write, every single undo of the
/// rollback included: undoing in any order but the reverse one leaves a
/// ring slot, a route or a direct-mapped slot pointing at something gone.
#[test]
fn a_failed_write_rolls_the_kernel_back() {
    let mut st = LbState::new(&config());
    let mut maps = FakeMaps::checked();
    step(&mut st, &mut maps, |s| {
        s.add_vip(vip(), VipFlags::SERVER_ID)
    });
    let a = [be(1, 1, 101), be(2, 1, 102), be(3, 1, 103)];
    step(&mut st, &mut maps, |s| s.set_backends(&vip(), &a));
    let b = [be(1, 2, 101), be(4, 1, 104), be(5, 1, 102)];
    let changes: Vec<Box<Change>> = vec![
        Box::new(move |s| s.set_backends(&vip(), &b)),
        Box::new(|s| s.remove_vip(&vip())),
        Box::new(|s| s.add_vip(Vip::new(vip().addr, 0, Proto::Tcp), VipFlags::PORT_AGNOSTIC)),
        Box::new(|s| s.remove_backend(&vip(), "10.0.0.2".parse().unwrap())),
        // server_ids move: 102 to a new backend, 101 and 103 swap.
        Box::new(|s| s.set_backends(&vip(), &[be(1, 1, 101), be(6, 1, 102), be(3, 1, 103)])),
        Box::new(|s| s.set_backends(&vip(), &[be(1, 1, 103), be(2, 1, 102), be(3, 1, 101)])),
    ];
    for change in &changes {
        let n = change(&st).unwrap().ops.len();
        assert!(n > 0);
        for fail_at in 0..n {
            let before = contents(&maps);
            let mut faulty = FakeMaps {
                fail_at: Some(maps.writes + fail_at),
                check: true,
                ..maps.clone()
            };
            let plan = change(&st).unwrap();
            let err = apply(&mut faulty, &plan.ops).expect_err("injected failure");
            assert_eq!(err.index, fail_at);
            assert!(err.rollback_failed.is_none());
            assert_eq!(contents(&faulty), before, "failure at op {fail_at} of {n}");
            faulty.assert_settled("after the rollback");
            let msg = err.to_string();
            assert!(
                msg.contains("previous configuration") && msg.contains("injected"),
                "{msg}"
            );
            // Not committed: planning again gives the same operations.
            assert_eq!(change(&st).unwrap().ops, plan.ops);
        }
    }
    // And a change applies cleanly afterwards.
    step(&mut st, &mut maps, |s| s.set_backends(&vip(), &a[..1]));
    assert_eq!(ring_of(&maps, 0), expected_ring(&a[..1]));
}

#[test]
fn a_failed_rollback_is_reported_as_such() {
    let mut st = LbState::new(&config());
    let mut maps = FakeMaps::checked();
    step(&mut st, &mut maps, |s| s.add_vip(vip(), VipFlags::NONE));
    let plan = st.set_backends(&vip(), &[be(1, 1, 0)]).unwrap();
    // Ops: counter reset, backend entry, ring. Fail the ring write (the
    // third write), then the undo of the backend entry (the fifth: the
    // ring's undo is the fourth, the counter reset has no undo).
    struct FailTwice(FakeMaps, usize);
    impl MapWriter for FailTwice {
        type Error = Injected;
        fn write(&mut self, op: &MapOp) -> Result<(), Injected> {
            self.1 += 1;
            if self.1 == 3 || self.1 == 5 {
                return Err(Injected(self.1));
            }
            self.0.write(op)
        }
    }
    let mut w = FailTwice(maps.clone(), 0);
    let err = apply(&mut w, &plan.ops).expect_err("failure");
    assert!(err.rollback_failed.is_some());
    assert!(err.to_string().contains("may be inconsistent"), "{err}");
}

#[test]
fn backend_indices_are_shared_and_reused_fifo() {
    let mut st = LbState::new(&config());
    let mut maps = FakeMaps::checked();
    let v2 = Vip::new("192.0.2.11".parse().unwrap(), 80, Proto::Tcp);
    step(&mut st, &mut maps, |s| s.add_vip(vip(), VipFlags::NONE));
    step(&mut st, &mut maps, |s| s.add_vip(v2, VipFlags::NONE));
    step(&mut st, &mut maps, |s| {
        s.set_backends(&vip(), &[be(1, 1, 0), be(2, 1, 0)])
    });
    step(&mut st, &mut maps, |s| s.set_backends(&v2, &[be(2, 1, 0)]));
    let two = "10.0.0.2".parse().unwrap();
    let id2 = st.backend_index(two).unwrap();
    assert_eq!(maps.backends.len(), 2, "one entry per address");
    step(&mut st, &mut maps, |s| {
        s.set_backends(&vip(), &[be(1, 1, 0)])
    });
    assert_eq!(st.backend_index(two), Some(id2), "still used by v2");
    step(&mut st, &mut maps, |s| s.set_backends(&v2, &[]));
    assert_eq!(st.backend_index(two), None);
    // Freed indices are reused first-in first-out.
    step(&mut st, &mut maps, |s| s.set_backends(&v2, &[be(7, 1, 0)]));
    assert_eq!(st.backend_index("10.0.0.7".parse().unwrap()), Some(id2));
}

/// A server_id moves to another backend (a new one, and between two
/// existing ones), replayed with the ordering checker on after every write.
#[test]
fn a_server_id_moves_to_another_backend_under_the_checker() {
    let mut st = LbState::new(&config());
    let mut maps = FakeMaps::checked();
    step(&mut st, &mut maps, |s| {
        s.add_vip(vip(), VipFlags::SERVER_ID)
    });
    let a = [be(1, 1, 101), be(2, 1, 102), be(3, 1, 103)];
    step(&mut st, &mut maps, |s| s.set_backends(&vip(), &a));
    let route = |maps: &FakeMaps, sid: u32| {
        let id = maps.server_ids[&(0, sid)];
        maps.backends[&id]
    };
    assert_eq!(route(&maps, 102), a[1].addr);
    // 102 moves from backend 2 (removed) to the new backend 4.
    let b = [be(1, 1, 101), be(4, 1, 102), be(3, 1, 103)];
    step(&mut st, &mut maps, |s| s.set_backends(&vip(), &b));
    assert_eq!(route(&maps, 102), b[1].addr);
    // 101 and 103 swap backends (both stay).
    let c = [be(1, 1, 103), be(4, 1, 102), be(3, 1, 101)];
    step(&mut st, &mut maps, |s| s.set_backends(&vip(), &c));
    assert_eq!(route(&maps, 101), c[2].addr);
    assert_eq!(route(&maps, 103), c[0].addr);
    // The direct-mapped slots inline the new routes.
    for sid in [101, 102, 103] {
        let slot = flowpin_bpf_abi::lb::sid_slot(0, sid);
        let want = SidRoute {
            vip_id: 0,
            server_id: sid,
            backend: maps.server_ids[&(0, sid)],
        };
        assert_eq!(
            maps.sid_table.get(&slot),
            Some(&Slot::One(want)),
            "slot of {sid}"
        );
    }
}

/// The checker's one accepted transient (see `fake_maps`' module docs): a
/// `sid_table` slot still inlining a moving server_id's old, live backend.
/// A slot inlining a route that is gone or a free backend fails, between
/// writes as once a plan is done; the transient itself fails once settled.
#[test]
fn the_checker_accepts_a_moving_server_id_and_nothing_more() {
    let ip = |i: u8| -> std::net::IpAddr { format!("10.0.0.{i}").parse().unwrap() };
    let mut m = FakeMaps::default();
    m.backends.insert(1, ip(1));
    m.backends.insert(2, ip(2));
    m.server_ids.insert((0, 7), 2);
    let slot = |backend| {
        Slot::One(SidRoute {
            vip_id: 0,
            server_id: 7,
            backend,
        })
    };
    let op = MapOp::ResetVipStats { vip_id: 0 };
    let fails = |m: &FakeMaps, settled: bool| {
        let m = m.clone();
        std::panic::catch_unwind(move || {
            if settled {
                m.assert_settled("test");
            } else {
                m.assert_consistent(&MapOp::ResetVipStats { vip_id: 0 });
            }
        })
        .is_err()
    };
    // Route moved 1 → 2, the slot not yet: accepted between writes only.
    m.sid_table.insert(9, slot(1));
    m.assert_consistent(&op);
    assert!(
        fails(&m, true),
        "the transient must not survive a whole plan"
    );
    // The old backend freed while the slot still inlines it.
    m.backends.remove(&1);
    assert!(fails(&m, false), "slot inlining a free backend accepted");
    // The route gone while the slot still inlines it.
    m.backends.insert(1, ip(1));
    m.server_ids.clear();
    assert!(fails(&m, false), "slot inlining a deleted route accepted");
    // Settled: slot and route agree.
    m.server_ids.insert((0, 7), 1);
    m.assert_consistent(&op);
    m.assert_settled("test");
}
