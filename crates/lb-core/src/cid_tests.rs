//! Per-VIP connection-ID configurations: planned as `cid_cfgs` writes in a
//! safe order, rotated, cleared with the VIP, rebuilt from the maps, keys
//! never printed.

use crate::fake_maps::{config, step, FakeMaps};
use crate::{
    AesEngine, Desired, DesiredVip, LbState, MapOp, PinnedContents, Proto, QuicLbConf, Vip, VipCid,
    VipFlags,
};

fn quic() -> Vip {
    Vip::new("192.0.2.10".parse().unwrap(), 443, Proto::Udp)
}

fn slots(ops: &[MapOp]) -> Vec<(u8, bool)> {
    ops.iter()
        .filter_map(|op| match op {
            MapOp::CidConfig { slot, value, .. } => Some((*slot, value.is_some())),
            _ => None,
        })
        .collect()
}

#[test]
fn quic_lb_configs_before_the_mode_and_the_mode_first_away_from_it() {
    let mut st = LbState::new(&config());
    let mut maps = FakeMaps::checked();
    step(&mut st, &mut maps, |s| s.add_vip(quic(), VipFlags::QUIC));
    let two = VipCid::QuicLb(vec![
        QuicLbConf::plaintext(0, 3, 4),
        QuicLbConf::encrypted(2, 2, 13, [7; 16]).engine(AesEngine::Table),
    ]);
    let plan = st.set_vip_cid(&quic(), two.clone()).unwrap();
    assert_eq!(slots(&plan.ops), vec![(0, true), (2, true), (7, true)]);
    step(&mut st, &mut maps, |s| s.set_vip_cid(&quic(), two.clone()));
    assert_eq!(maps.cid.len(), 3);
    // Rotation: config 1 added, config 0 still live; then 0 retired.
    let rotated = VipCid::QuicLb(vec![
        QuicLbConf::plaintext(0, 3, 4),
        QuicLbConf::plaintext(1, 3, 5),
    ]);
    let plan = st.set_vip_cid(&quic(), rotated).unwrap();
    assert_eq!(slots(&plan.ops), vec![(1, true), (2, false)]);
    let flowpin = VipCid::Flowpin { cid_len: 16 };
    let plan = st.set_vip_cid(&quic(), flowpin).unwrap();
    assert_eq!(slots(&plan.ops), vec![(7, true), (0, false), (2, false)]);
    // Removing the VIP zeroes its entries (its id may be reused).
    step(&mut st, &mut maps, |s| s.remove_vip(&quic()));
    assert!(maps.cid.is_empty());
}

#[test]
fn invalid_configurations_are_refused() {
    let mut st = LbState::new(&config());
    let mut maps = FakeMaps::checked();
    step(&mut st, &mut maps, |s| s.add_vip(quic(), VipFlags::QUIC));
    let tcp = Vip::new("192.0.2.10".parse().unwrap(), 80, Proto::Tcp);
    step(&mut st, &mut maps, |s| s.add_vip(tcp, VipFlags::SERVER_ID));
    let bad = [
        VipCid::QuicLb(vec![]),
        VipCid::QuicLb(vec![QuicLbConf::plaintext(7, 3, 4)]),
        VipCid::QuicLb(vec![QuicLbConf::plaintext(0, 5, 4)]),
        VipCid::QuicLb(vec![QuicLbConf::plaintext(0, 3, 3)]),
        VipCid::QuicLb(vec![QuicLbConf::plaintext(0, 4, 16)]),
        VipCid::QuicLb(vec![
            QuicLbConf::plaintext(1, 3, 4),
            QuicLbConf::plaintext(1, 2, 4),
        ]),
        VipCid::Flowpin { cid_len: 7 },
        VipCid::Katran { cid_len: 21 },
    ];
    for cid in bad {
        assert!(st.set_vip_cid(&quic(), cid.clone()).is_err(), "{cid:?}");
    }
    assert!(st
        .set_vip_cid(&tcp, VipCid::Flowpin { cid_len: 16 })
        .is_err());
}

#[test]
fn reconcile_and_rebuild_keep_the_configuration() {
    let mut st = LbState::new(&config());
    let mut maps = FakeMaps::checked();
    let cid = VipCid::QuicLb(vec![
        QuicLbConf::encrypted(1, 3, 13, [9; 16]),
        QuicLbConf::plaintext(4, 1, 6),
    ]);
    let desired = Desired::new().vip(quic(), DesiredVip::new(VipFlags::QUIC).cid(cid.clone()));
    let d = desired.clone();
    step(&mut st, &mut maps, move |s| s.reconcile(&d));
    assert_eq!(st.desired(), desired);
    assert!(st.reconcile(&desired).unwrap().ops.is_empty());
    let contents = PinnedContents {
        vips: maps.vips.iter().map(|(k, m)| (*k, *m)).collect(),
        descs: Vec::new(),
        cid: maps.cid.iter().map(|(&(v, s), e)| (v, s, *e)).collect(),
    };
    let back = LbState::rebuild(&config(), &contents).unwrap();
    assert_eq!(back.desired(), desired);
    // Keys never appear in Debug output (logs).
    let shown = format!("{desired:?} {:?}", maps.cid);
    assert!(!shown.contains("9, 9"), "{shown}");
    assert!(shown.contains("redacted"));
}
