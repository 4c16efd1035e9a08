//! Privileged BPF_PROG_TEST_RUN tests of `xdp_lb` on IETF QUIC-LB plaintext
//! connection IDs (draft-ietf-quic-load-balancers), byte for byte against the
//! model: the draft's test vector, every routed server ID length, and the
//! CIDs that must not be routed (unroutable codepoint, server ID 0, unknown
//! server, truncated packet, QUIC-LB off).
#![allow(clippy::unwrap_used)] // tests may unwrap (clippy.toml covers #[test] fns only)

mod xdp_lb_support;

use std::net::IpAddr;

use flowpin_bpf_progs::xdp_lb::{Backend, Proto, Vip, VipFlags};
use flowpin_lb_model::{Decision, Outcome, Route};
use flowpin_tcp_opt::{CidLayout, QuicLb, ServerId};
use flowpin_testing::require_bpf;
use xdp_lb_support::*;

fn quic_vip() -> Vip {
    Vip::new(vip4().into(), 443, Proto::Udp)
}

fn fwd(d: &Decision) -> (IpAddr, Route) {
    match d.outcome {
        Outcome::Forwarded { backend, route } => (backend, route),
        o => panic!("expected forwarded, got {o:?}"),
    }
}

fn fx_with(quic_lb: Option<QuicLb>, cid_len: u8, sids: [u32; 4]) -> Fx {
    let mut fx = Fx::new(test_config().quic_lb(quic_lb).quic_cid_len(cid_len));
    fx.add_vip(quic_vip(), VipFlags::QUIC);
    let backends: Vec<Backend> = sids
        .iter()
        .zip(1u8..)
        .map(|(&sid, i)| {
            Backend::new(backend4(i)).server_id(ServerId::new(sid).expect("non-zero server_id"))
        })
        .collect();
    fx.set_backends(&quic_vip(), &backends);
    fx
}

/// A short-header packet: first byte, then the DCID, then payload.
fn short(cid: &[u8]) -> Vec<u8> {
    let mut q = vec![0x41u8];
    q.extend_from_slice(cid);
    q.extend_from_slice(&[0xee; 24]);
    q
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn privileged_quic_lb_draft_vector_routes_to_its_server() {
    if !require_bpf("privileged_quic_lb_draft_vector_routes_to_its_server") {
        return;
    }
    // Draft vector: config 0, server ID c4605e, nonce 4504cc4f.
    let cid = hex_bytes("07c4605e4504cc4f");
    let mut fx = fx_with(
        Some(QuicLb::new(0, 3).unwrap()),
        8,
        [0x11, 0x00c4_605e, 0x33, 0x44],
    );
    for i in 0..8 {
        let d = fx.check(&udp4(
            client4(i),
            4433 + i as u16,
            vip4(),
            443,
            &short(&cid),
        ));
        assert_eq!(fwd(&d), (backend4(2), Route::ServerId), "client {i}");
    }
    assert_eq!(fx.lb.vip_stats(&quic_vip()).unwrap().sid_routed, 8);
    fx.assert_stats();

    // The same LB with QUIC-LB off: 0x07 announces no layout, hashed.
    let mut off = fx_with(None, 8, [0x11, 0x00c4_605e, 0x33, 0x44]);
    let d = off.check(&udp4(client4(1), 4433, vip4(), 443, &short(&cid)));
    assert_ne!(fwd(&d).1, Route::ServerId);
    assert_eq!(off.lb.vip_stats(&quic_vip()).unwrap().sid_missing, 1);
    off.assert_stats();
}

#[test]
fn privileged_quic_lb_every_server_id_length() {
    if !require_bpf("privileged_quic_lb_every_server_id_length") {
        return;
    }
    for (n, cr) in [(1u8, 1u8), (2, 3), (3, 5), (4, 6)] {
        let q = QuicLb::new(cr, n).unwrap();
        let layout = CidLayout::QuicLb(q);
        let max = q.max_server_id();
        let sids = [1, max / 3, max / 2 + 1, max];
        let cid_len = q.min_cid_len().max(8) as u8 + 2;
        let mut fx = fx_with(Some(q), cid_len, sids);
        for (i, &sid) in sids.iter().enumerate() {
            let mut cid = vec![0xa5u8; usize::from(cid_len)];
            flowpin_tcp_opt::encode_cid(&mut cid, layout, ServerId::new(sid).unwrap()).unwrap();
            assert_eq!(
                usize::from(cid[0] & 0x1f) + 1,
                cid.len(),
                "length self-described"
            );
            let d = fx.check(&udp4(client4(i as u32), 5000, vip4(), 443, &short(&cid)));
            assert_eq!(
                fwd(&d),
                (backend4(i as u8 + 1), Route::ServerId),
                "{n}-octet server ID {sid:#x}, cid {:02x?}",
                cid
            );
        }
        assert_eq!(fx.lb.vip_stats(&quic_vip()).unwrap().sid_routed, 4);
        fx.assert_stats();
    }
}

#[test]
fn privileged_quic_lb_malformed_and_unroutable_fall_back() {
    if !require_bpf("privileged_quic_lb_malformed_and_unroutable_fall_back") {
        return;
    }
    let q = QuicLb::new(2, 2).unwrap();
    let mut fx = fx_with(Some(q), 8, [0x0101, 0x0202, 0x0303, 0x0404]);
    let c = |first: u8, sid: [u8; 2]| {
        let mut v = vec![first, sid[0], sid[1], 9, 9, 9, 9, 9];
        v.extend_from_slice(&[7; 4]);
        v
    };
    // Routed: codepoint 2 (0b010) with server ID 0x0303.
    let d = fx.check(&udp4(client4(1), 1, vip4(), 443, &short(&c(0x47, [3, 3]))));
    assert_eq!(fwd(&d), (backend4(3), Route::ServerId));
    // 0b111: never routable (sid_missing), even with a known server ID.
    let d = fx.check(&udp4(client4(2), 1, vip4(), 443, &short(&c(0xe7, [3, 3]))));
    assert_ne!(fwd(&d).1, Route::ServerId);
    // Server ID 0: "none".
    let d = fx.check(&udp4(client4(3), 1, vip4(), 443, &short(&c(0x47, [0, 0]))));
    assert_ne!(fwd(&d).1, Route::ServerId);
    // Unknown server ID.
    let d = fx.check(&udp4(client4(4), 1, vip4(), 443, &short(&c(0x47, [9, 9]))));
    assert_ne!(fwd(&d).1, Route::ServerId);
    // Truncated: a DCID of 5 bytes where 8 are configured.
    let d = fx.check(&udp4(client4(5), 1, vip4(), 443, &[0x41, 0x47, 3, 3, 9, 9]));
    assert_ne!(fwd(&d).1, Route::ServerId);
    // Another codepoint: read by the other layouts. A flowpin CID
    // (0x1?, codepoint 0) still routes by its own server_id ...
    let mut fp = [0x5au8; 8];
    flowpin_tcp_opt::encode_cid(&mut fp, CidLayout::Flowpin, ServerId::new(0x0202).unwrap())
        .unwrap();
    let d = fx.check(&udp4(client4(6), 1, vip4(), 443, &short(&fp)));
    assert_eq!(fwd(&d), (backend4(2), Route::ServerId));
    // ... and codepoint 1 with first byte 0x27 announces no layout.
    let d = fx.check(&udp4(client4(7), 1, vip4(), 443, &short(&c(0x27, [3, 3]))));
    assert_ne!(fwd(&d).1, Route::ServerId);
    let s = fx.lb.vip_stats(&quic_vip()).unwrap();
    assert_eq!(
        (
            s.sid_routed,
            s.sid_missing,
            s.sid_fallback_zero,
            s.sid_fallback_unknown,
            s.sid_fallback_malformed
        ),
        (2, 2, 1, 1, 1)
    );
    fx.assert_stats();
}
