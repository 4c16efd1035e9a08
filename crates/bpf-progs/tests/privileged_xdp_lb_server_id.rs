//! Privileged tests of server_id routing in `xdp_lb` (TCP option and QUIC
//! connection ID), byte for byte against the model.
#![allow(clippy::unwrap_used)] // tests may unwrap (clippy.toml covers #[test] fns only)

mod xdp_lb_support;

use std::net::IpAddr;

use flowpin_bpf_progs::xdp_lb::{Backend, Proto, Vip, VipFlags};
use flowpin_lb_model::{Decision, Outcome, Route, Verdict};
use flowpin_tcp_opt::{CidLayout, Layout, ServerId};
use flowpin_testing::require_bpf;
use xdp_lb_support::*;

fn vip() -> Vip {
    Vip::new(vip4().into(), 80, Proto::Tcp)
}

fn four() -> Vec<Backend> {
    (1..=4)
        .map(|i| {
            Backend::new(backend4(i))
                .server_id(ServerId::new(100 + u32::from(i)).expect("non-zero server_id"))
        })
        .collect()
}

fn setup() -> Fx {
    let mut fx = Fx::new(test_config());
    fx.add_vip(vip(), VipFlags::SERVER_ID);
    fx.set_backends(&vip(), &four());
    fx
}

fn fwd(d: &Decision) -> (IpAddr, Route) {
    match d.outcome {
        Outcome::Forwarded { backend, route } => (backend, route),
        o => panic!("expected forwarded, got {o:?}"),
    }
}

/// A flow whose ring backend differs from `target`, so routing by
/// server_id is visible.
fn flow_not_on(fx: &Fx, target: IpAddr) -> (std::net::Ipv4Addr, u16) {
    for i in 0..1000 {
        let (c, p) = (client4(i), 10000 + i as u16);
        let mut m = fx.model.clone();
        m.clear_connection_table();
        if fwd(&m.decide(&tcp4(c, p, vip4(), 80, true, &[], b""))).0 != target {
            return (c, p);
        }
    }
    panic!("no flow off {target}");
}

#[test]
fn privileged_server_id_routed_without_lru_or_ring() {
    if !require_bpf("privileged_server_id_routed_without_lru_or_ring") {
        return;
    }
    for warm in [false, true] {
        let mut fx = Fx::new(test_config().warm_conn_from_server_id(warm));
        fx.add_vip(vip(), VipFlags::SERVER_ID);
        fx.set_backends(&vip(), &four());
        let mut flows = std::collections::HashMap::new();
        for (sid, be) in [(101u32, backend4(1)), (103, backend4(3))] {
            let (c, p) = flow_not_on(&fx, be);
            let d = fx.check(&tcp4(c, p, vip4(), 80, false, &sid_opt(sid), b"data"));
            assert_eq!(fwd(&d), (be, Route::ServerId));
            assert_encap(
                &d.packet,
                &tcp4(c, p, vip4(), 80, false, &sid_opt(sid), b"data"),
                be,
            );
            flows.insert((c, p), be); // the same flow may serve both: the last route wins
        }
        if warm {
            // The routed flows were inserted on their miss: a later packet
            // without the option (a kernel RST, a TIME_WAIT ACK) follows them.
            assert_eq!(fx.lb.connection_table_len().unwrap(), flows.len());
            for ((c, p), be) in flows {
                let d = fx.check(&tcp4(c, p, vip4(), 80, false, &[], b""));
                assert_eq!(
                    fwd(&d),
                    (be, Route::Lru),
                    "option-less packet of a routed flow"
                );
            }
        } else {
            assert_eq!(
                fx.lb.connection_table_len().unwrap(),
                0,
                "server_id routing never touches the LRU"
            );
        }
        fx.assert_stats();
        assert_eq!(fx.lb.vip_stats(&vip()).unwrap().sid_routed, 2);
    }
}

#[test]
fn privileged_server_id_fallbacks_unknown_zero_malformed() {
    if !require_bpf("privileged_server_id_fallbacks_unknown_zero_malformed") {
        return;
    }
    let mut fx = setup();
    let exid = flowpin_tcp_opt::consts::TCPOPT_DEFAULT_EXID.to_be_bytes();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (sid_opt(999), "unknown"),
        (vec![1, 1, 253, 8, exid[0], exid[1], 0, 0, 0, 0], "zero"),
        (
            vec![253, 6, exid[0], exid[1], 0, 101, 1, 1],
            "malformed: wrong length",
        ),
        (vec![1, 1, 8, 1, 0, 0, 0, 0], "malformed: option length 1"),
        (vec![1, 1, 1, 8, 20, 0, 0, 0], "malformed: past the end"),
        (vec![1, 1, 1, 253], "malformed: no length byte"),
        (
            vec![1, 1, 253, 8, 0x12, 0x34, 0, 0, 0, 101, 0, 0],
            "missing: other ExID",
        ),
        (vec![1; 40], "missing: 40 NOPs"),
        (vec![2, 4, 5, 180, 0, 1, 2, 3], "missing: only MSS"),
    ];
    let mut want = (0, 0, 0, 0);
    for (i, (opts, what)) in cases.iter().enumerate() {
        let mut o = opts.clone();
        while o.len() % 4 != 0 {
            o.push(0);
        }
        let d = fx.check(&tcp4(client4(i as u32), 3333, vip4(), 80, false, &o, b"x"));
        let (_, route) = fwd(&d);
        assert_eq!(route, Route::Ring, "{what}: falls back to LRU + Maglev");
        match what.split(':').next().unwrap() {
            "unknown" => want.0 += 1,
            "zero" => want.1 += 1,
            "malformed" => want.2 += 1,
            _ => want.3 += 1,
        }
    }
    let s = fx.lb.vip_stats(&vip()).unwrap();
    assert_eq!(
        (
            s.sid_fallback_unknown,
            s.sid_fallback_zero,
            s.sid_fallback_malformed,
            s.sid_missing
        ),
        want
    );
    fx.assert_stats();
}

#[test]
fn privileged_server_id_after_ring_change() {
    if !require_bpf("privileged_server_id_after_ring_change") {
        return;
    }
    let mut fx = setup();
    // Flows pinned to backend 2 by server_id, whatever the ring says.
    let flows: Vec<_> = (0..50).map(|i| (client4(i), 20000 + i as u16)).collect();
    for &(c, p) in &flows {
        let d = fx.check(&tcp4(c, p, vip4(), 80, false, &sid_opt(102), b""));
        assert_eq!(fwd(&d), (backend4(2), Route::ServerId));
    }
    // Ring change: backend 1 leaves, backend 5 joins.
    let mut b = four()[1..].to_vec();
    b.push(Backend::new(backend4(5)).server_id(ServerId::new(105).expect("non-zero server_id")));
    fx.set_backends(&vip(), &b);
    for &(c, p) in &flows {
        let d = fx.check(&tcp4(c, p, vip4(), 80, false, &sid_opt(102), b""));
        assert_eq!(fwd(&d), (backend4(2), Route::ServerId));
    }
    // The removed backend's server_id is not routed now: fallback, counted
    // as a removed backend's id.
    let d = fx.check(&tcp4(client4(77), 1, vip4(), 80, false, &sid_opt(101), b""));
    assert_ne!(fwd(&d).0, backend4(1));
    let s = fx.lb.vip_stats(&vip()).unwrap();
    assert_eq!((s.sid_fallback_removed, s.sid_fallback_unknown), (1, 0));
    // Weight 0 (draining): no new flows from the ring, still reachable by server_id.
    let mut b2 = b.clone();
    b2[0].weight = 0; // backend 2
    fx.set_backends(&vip(), &b2);
    let d = fx.check(&tcp4(client4(3), 3, vip4(), 80, false, &sid_opt(102), b""));
    assert_eq!(fwd(&d), (backend4(2), Route::ServerId));
    fx.assert_stats();
}

#[test]
fn privileged_server_id_syn_is_hashed_and_other_layouts() {
    if !require_bpf("privileged_server_id_syn_is_hashed_and_other_layouts") {
        return;
    }
    let mut fx = setup();
    let (c, p) = flow_not_on(&fx, backend4(1));
    let d = fx.check(&tcp4(c, p, vip4(), 80, true, &sid_opt(101), b""));
    assert_eq!(fwd(&d).1, Route::Ring, "a SYN is not routed by server_id");
    for layout in [Layout::Compact { kind: 0xfd }, Layout::KatranCompat] {
        fx.lb.set_tcp_opt_layout(layout).unwrap();
        fx.sync();
        let mut o = [0u8; 8];
        let n =
            flowpin_tcp_opt::write_server_id(&mut o, layout, ServerId::new(101).unwrap()).unwrap();
        let (c, p) = flow_not_on(&fx, backend4(1));
        let d = fx.check(&tcp4(c, p, vip4(), 80, false, &o[..n], b""));
        assert_eq!(fwd(&d), (backend4(1), Route::ServerId), "{layout:?}");
        // The default RFC 6994 option means nothing in this layout.
        let d = fx.check(&tcp4(c, p + 1, vip4(), 80, false, &sid_opt(101), b""));
        assert_ne!(fwd(&d).1, Route::ServerId, "{layout:?}");
    }
    fx.assert_stats();
}

fn quic_vip() -> Vip {
    Vip::new(vip4().into(), 443, Proto::Udp)
}

fn quic_setup() -> Fx {
    let mut fx = Fx::new(test_config());
    fx.add_vip(quic_vip(), VipFlags::QUIC);
    fx.set_backends(&quic_vip(), &four());
    fx
}

fn short_header(layout: CidLayout, sid: u32) -> Vec<u8> {
    let mut cid = [0x5au8; 8];
    flowpin_tcp_opt::encode_cid(&mut cid, layout, ServerId::new(sid).unwrap()).unwrap();
    let mut q = vec![0x41u8];
    q.extend_from_slice(&cid);
    q.extend_from_slice(&[0xee; 24]);
    q
}

#[test]
fn privileged_quic_short_header_by_cid() {
    if !require_bpf("privileged_quic_short_header_by_cid") {
        return;
    }
    let mut fx = quic_setup();
    for (i, layout) in [
        CidLayout::Flowpin,
        CidLayout::KatranV1,
        CidLayout::KatranV2,
        CidLayout::KatranV3,
    ]
    .into_iter()
    .enumerate()
    {
        for (sid, be) in [(102u32, backend4(2)), (104, backend4(4))] {
            let d = fx.check(&udp4(
                client4(i as u32),
                4433,
                vip4(),
                443,
                &short_header(layout, sid),
            ));
            assert_eq!(fwd(&d), (be, Route::ServerId), "{layout:?}");
        }
    }
    // Unknown server_id, CID of no layout, too short a packet: hashed.
    let mut fx2 = quic_setup();
    let d = fx2.check(&udp4(
        client4(1),
        1,
        vip4(),
        443,
        &short_header(CidLayout::Flowpin, 4242),
    ));
    assert_ne!(fwd(&d).1, Route::ServerId);
    let mut none = vec![0x41u8, 0x00];
    none.extend_from_slice(&[0; 20]);
    let d = fx2.check(&udp4(client4(2), 1, vip4(), 443, &none));
    assert_ne!(fwd(&d).1, Route::ServerId);
    let d = fx2.check(&udp4(client4(3), 1, vip4(), 443, &[0x41, 0x10, 0, 0]));
    assert_ne!(fwd(&d).1, Route::ServerId);
    let s = fx2.lb.vip_stats(&quic_vip()).unwrap();
    assert_eq!(
        (
            s.sid_fallback_unknown,
            s.sid_missing,
            s.sid_fallback_malformed
        ),
        (1, 1, 1)
    );
    fx.assert_stats();
    fx2.assert_stats();
}

#[test]
fn privileged_quic_long_header_by_hash() {
    if !require_bpf("privileged_quic_long_header_by_hash") {
        return;
    }
    let mut fx = quic_setup();
    // An Initial carrying a CID that would decode to server_id 101: hashed anyway.
    let mut q = vec![0xc0u8, 0, 0, 0, 1, 8];
    let mut cid = [0u8; 8];
    flowpin_tcp_opt::encode_cid(&mut cid, CidLayout::Flowpin, ServerId::new(101).unwrap()).unwrap();
    q.extend_from_slice(&cid);
    q.extend_from_slice(&[0; 30]);
    let mut routes = std::collections::HashSet::new();
    for i in 0..40 {
        let d = fx.check(&udp4(client4(i), 5000, vip4(), 443, &q));
        let (be, route) = fwd(&d);
        assert_ne!(route, Route::ServerId);
        routes.insert(be);
    }
    assert!(routes.len() > 1, "long headers spread by hash");
    assert_eq!(fx.lb.vip_stats(&quic_vip()).unwrap().quic_long_header, 40);
    fx.assert_stats();
    let d = fx.check(&udp4(client4(1), 5000, vip4(), 443, &[]));
    assert_eq!(d.verdict, Verdict::Tx, "empty QUIC datagram: hashed");
    fx.assert_stats();
}

/// `flowpin_sid_slot()` of flowpin_lb.h, re-implemented here to build collisions.
fn sid_slot(vip_id: u32, sid: u32) -> u32 {
    ((vip_id.wrapping_mul(0x9e37_79b1)) ^ sid).wrapping_mul(0x85eb_ca6b) >> 16
}

/// `flowpin_vip_slot()` of flowpin_lb.h for an IPv4 TCP VIP.
fn vip_slot4(a: std::net::Ipv4Addr, port: u16) -> u32 {
    let w = u32::from_le_bytes(a.octets());
    let p = u32::from(u16::from_le_bytes(port.to_be_bytes())) | (6 << 16) | (4 << 24);
    (w ^ p).wrapping_mul(0x9e37_79b1) >> 20
}

#[test]
fn privileged_direct_table_collisions_fall_back_to_the_hash_maps() {
    if !require_bpf("privileged_direct_table_collisions_fall_back_to_the_hash_maps") {
        return;
    }
    let mut fx = Fx::new(test_config());
    // Two VIPs whose direct-mapped VIP slot is the same.
    let a = vip4();
    let slot = vip_slot4(a, 80);
    let b = (1..u32::MAX)
        .map(|i| std::net::Ipv4Addr::from(u32::from(a) + i))
        .find(|b| vip_slot4(*b, 80) == slot)
        .unwrap();
    let va = Vip::new(a.into(), 80, Proto::Tcp);
    let vb = Vip::new(b.into(), 80, Proto::Tcp);
    let id_a = fx.add_vip(va, VipFlags::SERVER_ID);
    fx.add_vip(vb, VipFlags::NONE);
    fx.set_backends(&va, &four());
    fx.set_backends(&vb, &[Backend::new(backend4(9))]);
    let d = fx.check(&tcp4(client4(1), 1, b, 80, true, &[], b""));
    assert_eq!(fwd(&d).0, backend4(9));
    // Two server_ids of VIP a in one sid slot.
    let s1 = 101u32;
    let s2 = (200..u32::MAX)
        .find(|s| sid_slot(id_a, *s) == sid_slot(id_a, s1))
        .unwrap();
    let mut b4 = four();
    b4[1].server_id = ServerId::new(s2);
    fx.set_backends(&va, &b4);
    for (sid, be) in [(s1, backend4(1)), (s2, backend4(2))] {
        let (c, p) = flow_not_on(&fx, be);
        let d = fx.check(&tcp4(c, p, a, 80, false, &sid_opt(sid), b""));
        assert_eq!(fwd(&d), (be, Route::ServerId), "server_id {sid}");
    }
    // Removing one of two colliding VIPs leaves the other reachable.
    fx.lb.remove_vip(&va).unwrap();
    fx.sync();
    assert_eq!(
        fx.check(&tcp4(client4(2), 1, a, 80, true, &[], b""))
            .verdict,
        Verdict::Pass
    );
    let d = fx.check(&tcp4(client4(2), 1, b, 80, true, &[], b""));
    assert_eq!(fwd(&d).0, backend4(9));
    fx.assert_stats();
}

#[test]
fn privileged_removed_backend_server_id_counts_removed_and_falls_back() {
    if !require_bpf("privileged_removed_backend_server_id_counts_removed_and_falls_back") {
        return;
    }
    let mut fx = setup();
    let (c, p) = flow_not_on(&fx, backend4(3));
    let d = fx.check(&tcp4(c, p, vip4(), 80, false, &sid_opt(103), b""));
    assert_eq!(fwd(&d), (backend4(3), Route::ServerId));
    // Backend 3 removed from the VIP: its server_id falls back to the hash
    // and is counted `sid_fallback_removed`, a never-seen one `unknown`.
    fx.lb.remove_backend(&vip(), backend4(3)).unwrap();
    fx.sync();
    assert!(fx.lb.retired_server_ids(&vip()).unwrap().contains(&103));
    for i in 0..5u16 {
        let d = fx.check(&tcp4(c, p + i, vip4(), 80, false, &sid_opt(103), b""));
        assert_ne!(fwd(&d).0, backend4(3));
        assert_ne!(fwd(&d).1, Route::ServerId);
    }
    fx.check(&tcp4(c, p, vip4(), 80, false, &sid_opt(999), b""));
    let s = fx.lb.vip_stats(&vip()).unwrap();
    assert_eq!(s.sid_fallback_removed, 5);
    assert_eq!(s.sid_fallback_unknown, 1);
    fx.assert_stats();
    // Back again: routed by server_id, no longer retired.
    fx.set_backends(&vip(), &four());
    assert!(!fx.lb.retired_server_ids(&vip()).unwrap().contains(&103));
    let d = fx.check(&tcp4(c, p, vip4(), 80, false, &sid_opt(103), b""));
    assert_eq!(fwd(&d), (backend4(3), Route::ServerId));
    assert_eq!(fx.lb.vip_stats(&vip()).unwrap().sid_fallback_removed, 5);
    fx.assert_stats();
}

#[test]
fn privileged_backend_stats_count_forwarded_packets_and_bytes() {
    if !require_bpf("privileged_backend_stats_count_forwarded_packets_and_bytes") {
        return;
    }
    let mut fx = setup();
    let (mut n, mut bytes) = (0u64, 0u64);
    for i in 0..20u16 {
        let payload = vec![0xab; usize::from(i) * 7];
        let pkt = tcp4(
            client4(u32::from(i)),
            30000 + i,
            vip4(),
            80,
            false,
            &sid_opt(102),
            &payload,
        );
        let d = fx.check(&pkt);
        assert_eq!(fwd(&d), (backend4(2), Route::ServerId));
        n += 1;
        bytes += pkt.len() as u64;
    }
    let s = fx.lb.backend_stats(backend4(2)).unwrap();
    assert_eq!((s.packets, s.bytes), (n, bytes));
    // Every packet reached some backend: the per-backend sums equal the VIP's.
    let mut total = 0;
    for i in 1..=4 {
        total += fx.lb.backend_stats(backend4(i)).unwrap().packets;
    }
    assert_eq!(total, n);
    // A removed and re-added backend gets a fresh index: counters from 0.
    fx.set_backends(&vip(), &four()[..1]);
    fx.set_backends(&vip(), &four());
    let s = fx.lb.backend_stats(backend4(2)).unwrap();
    assert_eq!((s.packets, s.bytes), (0, 0));
    assert!(fx.lb.backend_stats("10.99.0.1".parse().unwrap()).is_err());
}
