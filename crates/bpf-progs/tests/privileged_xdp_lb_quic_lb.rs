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

// ---------------------------------------------------------------------
// Per-VIP declared layouts (issue 22): long headers routed by DCID, config
// rotation, nothing decoded that the VIP did not declare.

use flowpin_bpf_progs::xdp_lb::{AesEngine, QuicLbConf, VipCid};
use flowpin_lb_model::Verdict;
use proptest::prelude::*;

const V1: u32 = 1;
const V2: u32 = 0x6b33_43cf;

/// A VIP declaring `cid`, backends with server_ids `sids`.
fn fx_declared(cid: VipCid, sids: [u32; 4]) -> Fx {
    let mut fx = fx_with(None, 16, sids);
    fx.lb.set_vip_cid(&quic_vip(), cid).expect("set_vip_cid");
    fx.sync();
    fx
}

/// A long-header packet: first byte (type bits `ty`), version, DCID, SCID, payload.
fn long(version: u32, ty: u8, dcid: &[u8]) -> Vec<u8> {
    let mut q = vec![0xc0 | (ty << 4)];
    q.extend_from_slice(&version.to_be_bytes());
    q.push(dcid.len() as u8);
    q.extend_from_slice(dcid);
    q.push(8);
    q.extend_from_slice(&[0x33; 8]);
    q.extend_from_slice(&[0; 40]);
    q
}

/// A QUIC-LB plaintext CID of config `cr` with server ID `sid` (`n` octets),
/// nonce `nonce_len` octets.
fn plain_cid(cr: u8, n: usize, sid: u32, nonce_len: usize) -> Vec<u8> {
    let mut c = vec![(cr << 5) | (n + nonce_len) as u8];
    c.extend_from_slice(&sid.to_be_bytes()[4 - n..]);
    c.extend((0..nonce_len).map(|i| 0x40 + i as u8));
    c
}

#[test]
fn privileged_quic_long_headers_follow_the_declared_layout() {
    if !require_bpf("privileged_quic_long_headers_follow_the_declared_layout") {
        return;
    }
    let cid = VipCid::QuicLb(vec![QuicLbConf::plaintext(1, 2, 6)]);
    let mut fx = fx_declared(cid, [0x0101, 0x0202, 0x0303, 0x0404]);
    let server = plain_cid(1, 2, 0x0303, 6);
    // The client's Initial (after a Retry or on a second flight), 0-RTT and
    // Handshake carrying the server-chosen CID: all routed to it, QUIC v1
    // and v2 (their type bits differ).
    let routed = [
        long(V1, 0, &server),
        long(V1, 1, &server),
        long(V1, 2, &server),
        long(V2, 1, &server),
        long(V2, 2, &server),
        long(V2, 3, &server),
        short(&server),
    ];
    for (i, q) in routed.iter().enumerate() {
        let d = fx.check(&udp4(client4(i as u32), 6000, vip4(), 443, q));
        assert_eq!(fwd(&d), (backend4(3), Route::ServerId), "packet {i}");
    }
    // Not routed by DCID: a Retry-type packet (v1 type 3, v2 type 0), version
    // negotiation (version 0), an unknown version: hashed, not even decoded.
    for q in [
        long(V1, 3, &server),
        long(V2, 0, &server),
        long(0, 0, &server),
        long(0xface_b00c, 2, &server),
    ] {
        let d = fx.check(&udp4(client4(50), 6000, vip4(), 443, &q));
        assert_ne!(fwd(&d).1, Route::ServerId);
    }
    // The client's first Initial: a random DCID of an unknown config falls
    // back to the hash, and the connection table keeps its later Initials.
    let random = [0x9au8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    let first = fwd(&fx.check(&udp4(client4(60), 7000, vip4(), 443, &long(V1, 0, &random))));
    assert_eq!(first.1, Route::Ring);
    let again = fwd(&fx.check(&udp4(client4(60), 7000, vip4(), 443, &long(V1, 0, &random))));
    assert_eq!(again, (first.0, Route::Lru));
    // A DCID shorter than the configuration's CID, one longer than 20
    // octets, a truncated one, a zero-length one: not routed.
    let d = fx.check(&udp4(
        client4(61),
        1,
        vip4(),
        443,
        &long(V1, 2, &server[..6]),
    ));
    assert_ne!(fwd(&d).1, Route::ServerId);
    let mut too_long = long(V1, 2, &[0x23; 21]);
    let d = fx.check(&udp4(client4(62), 1, vip4(), 443, &too_long));
    assert_ne!(fwd(&d).1, Route::ServerId);
    too_long.truncate(10);
    let d = fx.check(&udp4(client4(63), 1, vip4(), 443, &too_long));
    assert_ne!(fwd(&d).1, Route::ServerId);
    let d = fx.check(&udp4(client4(64), 1, vip4(), 443, &long(V1, 2, &[])));
    assert_ne!(fwd(&d).1, Route::ServerId);
    let d = fx.check(&udp4(client4(65), 1, vip4(), 443, &[0xc0, 0, 0]));
    assert_eq!(d.verdict, Verdict::Tx);
    fx.assert_stats();
    let s = fx.lb.vip_stats(&quic_vip()).unwrap();
    assert_eq!(s.sid_routed, 7);
    assert_eq!(s.quic_long_header, 17);
}

#[test]
fn privileged_quic_lb_config_rotation_and_only_the_declared_layout() {
    if !require_bpf("privileged_quic_lb_config_rotation_and_only_the_declared_layout") {
        return;
    }
    let old = QuicLbConf::plaintext(1, 2, 6);
    let new = QuicLbConf::plaintext(3, 4, 8);
    let mut fx = fx_declared(VipCid::QuicLb(vec![old]), [0x0101, 0x0202, 0x0303, 0x0404]);
    let new_cid = plain_cid(3, 4, 0x0404, 8);
    // Config 3 not live yet: its CIDs hash.
    let d = fx.check(&udp4(client4(1), 1, vip4(), 443, &short(&new_cid)));
    assert_ne!(fwd(&d).1, Route::ServerId);
    // Rotation: both live, then the old one retired.
    fx.lb
        .set_vip_cid(&quic_vip(), VipCid::QuicLb(vec![old, new]))
        .unwrap();
    fx.sync();
    let d = fx.check(&udp4(client4(2), 1, vip4(), 443, &short(&new_cid)));
    assert_eq!(fwd(&d), (backend4(4), Route::ServerId));
    let old_cid = plain_cid(1, 2, 0x0202, 6);
    let d = fx.check(&udp4(client4(3), 1, vip4(), 443, &short(&old_cid)));
    assert_eq!(fwd(&d), (backend4(2), Route::ServerId));
    fx.lb
        .set_vip_cid(&quic_vip(), VipCid::QuicLb(vec![new]))
        .unwrap();
    fx.sync();
    let d = fx.check(&udp4(client4(4), 1, vip4(), 443, &short(&old_cid)));
    assert_ne!(fwd(&d).1, Route::ServerId, "retired config: hashed");
    // 0b111 and a flowpin-layout CID (never declared): not decoded.
    let mut unroutable = new_cid.clone();
    unroutable[0] |= 0xe0;
    let d = fx.check(&udp4(client4(5), 1, vip4(), 443, &short(&unroutable)));
    assert_ne!(fwd(&d).1, Route::ServerId);
    let mut fp = [0x5au8; 16];
    flowpin_tcp_opt::encode_cid(&mut fp, CidLayout::Flowpin, ServerId::new(0x0202).unwrap())
        .unwrap();
    let d = fx.check(&udp4(client4(6), 1, vip4(), 443, &short(&fp)));
    assert_ne!(fwd(&d).1, Route::ServerId, "flowpin layout not declared");
    // The flowpin layout declared (16-octet CIDs): it routes, Katran does not.
    fx.lb
        .set_vip_cid(&quic_vip(), VipCid::Flowpin { cid_len: 16 })
        .unwrap();
    fx.sync();
    let d = fx.check(&udp4(client4(7), 1, vip4(), 443, &short(&fp)));
    assert_eq!(fwd(&d), (backend4(2), Route::ServerId));
    let d = fx.check(&udp4(client4(7), 1, vip4(), 443, &long(V1, 2, &fp)));
    assert_eq!(fwd(&d), (backend4(2), Route::ServerId));
    let mut kat = [0x5au8; 16];
    flowpin_tcp_opt::encode_cid(
        &mut kat,
        CidLayout::KatranV2,
        ServerId::new(0x0202).unwrap(),
    )
    .unwrap();
    let d = fx.check(&udp4(client4(8), 1, vip4(), 443, &short(&kat)));
    assert_ne!(fwd(&d).1, Route::ServerId, "Katran layout not declared");
    fx.lb
        .set_vip_cid(&quic_vip(), VipCid::Katran { cid_len: 8 })
        .unwrap();
    fx.sync();
    let d = fx.check(&udp4(client4(8), 1, vip4(), 443, &short(&kat)));
    assert_eq!(fwd(&d), (backend4(2), Route::ServerId));
    fx.assert_stats();
}

/// Encrypted configurations decoded by the program (item 3).
const ENCRYPTED_IN_XDP: bool = true;

fn arb_cid() -> impl Strategy<Value = VipCid> {
    let conf = (
        0u8..7,
        1u8..=4,
        4u8..=12,
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<bool>(),
    )
        .prop_map(|(id, s, n, enc, key, table)| {
            let c = if enc && ENCRYPTED_IN_XDP {
                QuicLbConf::encrypted(id, s, n, key)
            } else {
                QuicLbConf::plaintext(id, s, n)
            };
            c.engine(if table {
                AesEngine::Table
            } else {
                AesEngine::ConstantTime
            })
        });
    prop_oneof![
        (8u8..=20).prop_map(|cid_len| VipCid::Flowpin { cid_len }),
        (8u8..=20).prop_map(|cid_len| VipCid::Katran { cid_len }),
        proptest::collection::vec(conf, 1..4).prop_map(|mut v| {
            v.sort_by_key(|c| c.config_id);
            v.dedup_by_key(|c| c.config_id);
            VipCid::QuicLb(v)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// Program and model agree byte for byte (and on every counter) on
    /// random QUIC datagrams, long and short, under random declared layouts.
    #[test]
    fn privileged_quic_declared_layouts_match_the_model(
        cid in arb_cid(),
        pkts in proptest::collection::vec(
            (any::<bool>(), prop_oneof![Just(V1), Just(V2), Just(0u32), any::<u32>()], 0u8..4,
             0usize..24, any::<[u8; 24]>(), 0u8..7, any::<u32>()),
            1..24),
    ) {
        if !require_bpf("privileged_quic_declared_layouts_match_the_model") {
            return Ok(());
        }
        let mut fx = fx_declared(cid, [1, 0x0202, 0x0303_0303, 0x44]);
        for (i, (is_long, ver, ty, len, bytes, cr, _)) in pkts.iter().enumerate() {
            let mut dcid = bytes[..*len].to_vec();
            if let Some(b) = dcid.first_mut() {
                *b = (*b & 0x1f) | (cr << 5);
            }
            let q = if *is_long { long(*ver, *ty, &dcid) } else { short(&dcid) };
            let q = &q[..q.len().min(1 + *len + 8)];
            fx.check(&udp4(client4(i as u32), 5000, vip4(), 443, q));
        }
        fx.assert_stats();
    }
}

// ---------------------------------------------------------------------
// Encrypted QUIC-LB (draft-ietf-quic-load-balancers-21 §5.4) decrypted in
// XDP by both engines: the kernel's constant-time crypto kfuncs and the
// table-based AES written in BPF.

use aes::cipher::{BlockEncrypt, KeyInit};

const VECTOR_KEY: [u8; 16] = [
    0x8f, 0x95, 0xf0, 0x92, 0x45, 0x76, 0x5f, 0x80, 0x25, 0x69, 0x34, 0xe5, 0x0c, 0x66, 0x20, 0x7f,
];

fn aes_enc(key: &[u8; 16], block: [u8; 16]) -> [u8; 16] {
    let mut b = aes::Block::from(block);
    aes::Aes128::new(key.into()).encrypt_block(&mut b);
    b.into()
}

/// An independent encoder (the draft's algorithm with the `aes` crate):
/// first octet (codepoint, length), then server ID || nonce encrypted.
fn encrypt_cid(conf: &QuicLbConf, key: &[u8; 16], sid: u32, nonce: &[u8]) -> Vec<u8> {
    let sl = usize::from(conf.server_id_len);
    let mut pt = sid.to_be_bytes()[4 - sl..].to_vec();
    pt.extend_from_slice(nonce);
    let len = pt.len();
    let mut cid = vec![(conf.config_id << 5) | len as u8];
    if len == 16 {
        cid.extend_from_slice(&aes_enc(key, pt.try_into().unwrap()));
        return cid;
    }
    let half = len.div_ceil(2);
    let odd = len % 2 == 1;
    let mut left = pt[..half].to_vec();
    let mut right = pt[len - half..].to_vec();
    if odd {
        left[half - 1] &= 0xf0;
        right[0] &= 0x0f;
    }
    let round = |src: &[u8], dst: &mut Vec<u8>, pass: u8, dst_left: bool| {
        let mut b = [0u8; 16];
        b[..half].copy_from_slice(src);
        b[14] = len as u8;
        b[15] = pass;
        let e = aes_enc(key, b);
        for (d, k) in dst.iter_mut().zip(e) {
            *d ^= k;
        }
        if odd {
            if dst_left {
                dst[half - 1] &= 0xf0;
            } else {
                dst[0] &= 0x0f;
            }
        }
    };
    round(&left.clone(), &mut right, 1, false);
    round(&right.clone(), &mut left, 2, true);
    round(&left.clone(), &mut right, 3, false);
    round(&right.clone(), &mut left, 4, true);
    if odd {
        cid.extend_from_slice(&left[..half - 1]);
        cid.push(left[half - 1] | right[0]);
        cid.extend_from_slice(&right[1..]);
    } else {
        cid.extend_from_slice(&left);
        cid.extend_from_slice(&right);
    }
    cid
}

#[test]
fn the_test_encoder_reproduces_the_draft_encrypted_vector() {
    // draft-21 encrypted vector 1: config 0, 3-octet server ID, 4-octet nonce.
    let conf = QuicLbConf::encrypted(0, 3, 4, VECTOR_KEY);
    let cid = encrypt_cid(&conf, &VECTOR_KEY, 0x00ed_793a, &hex_bytes("ee080dbf"));
    assert_eq!(cid, hex_bytes("0720b1d07b359d3c"));
    // The model's encoder (used by xdp_bench) agrees.
    let model = flowpin_lb_model::cid::quic_lb_encrypt(&conf, 0x00ed_793a, &hex_bytes("ee080dbf"));
    assert_eq!(model, Some(cid.clone()));
    // The model decrypts it back.
    let sid = flowpin_lb_model::cid::quic_lb_decrypt(&conf, &VECTOR_KEY, &cid).unwrap();
    assert_eq!(sid, hex_bytes("ed793a"));
}

/// The kernel's crypto kfuncs are callable from XDP on this kernel: a
/// constant-time configuration installs its context (a sleepable syscall
/// program, bpf_crypto_ctx_create with "ecb(aes-fixed-time)") and the XDP
/// program decrypts with it. Fails (never skips) as root when they are not.
#[test]
fn privileged_quic_lb_encrypted_draft_vector_both_engines() {
    if !require_bpf("privileged_quic_lb_encrypted_draft_vector_both_engines") {
        return;
    }
    for engine in [AesEngine::ConstantTime, AesEngine::Table] {
        let conf = QuicLbConf::encrypted(0, 3, 4, VECTOR_KEY).engine(engine);
        let mut fx = fx_declared(VipCid::QuicLb(vec![conf]), [0x11, 0x00ed_793a, 0x33, 0x44]);
        let cid = hex_bytes("0720b1d07b359d3c");
        let d = fx.check(&udp4(client4(1), 1, vip4(), 443, &short(&cid)));
        assert_eq!(fwd(&d), (backend4(2), Route::ServerId), "{engine:?}");
        let d = fx.check(&udp4(client4(2), 1, vip4(), 443, &long(V1, 2, &cid)));
        assert_eq!(
            fwd(&d),
            (backend4(2), Route::ServerId),
            "{engine:?} handshake"
        );
        // One bit flipped: decrypts to another server ID, not routed there.
        let mut bad = cid.clone();
        bad[3] ^= 1;
        let d = fx.check(&udp4(client4(3), 1, vip4(), 443, &short(&bad)));
        assert_ne!(fwd(&d), (backend4(2), Route::ServerId), "{engine:?}");
        fx.assert_stats();
        // The same VIP declared in plaintext reads garbage: not routed.
        fx.lb
            .set_vip_cid(
                &quic_vip(),
                VipCid::QuicLb(vec![QuicLbConf::plaintext(0, 3, 4)]),
            )
            .unwrap();
        fx.sync();
        let d = fx.check(&udp4(client4(1), 1, vip4(), 443, &short(&cid)));
        assert_ne!(fwd(&d).1, Route::ServerId);
        fx.assert_stats();
    }
}

#[test]
fn privileged_quic_lb_encrypted_single_and_four_pass_both_engines() {
    if !require_bpf("privileged_quic_lb_encrypted_single_and_four_pass_both_engines") {
        return;
    }
    let sids = [0x0101_0101, 0x0202_0202, 0x0303_0303, 0x0404_0404];
    // (server ID, nonce): 4+12 = 16 single pass; 4+5 odd and 4+8 even four-pass.
    for (sl, nl) in [(4u8, 12u8), (4, 5), (4, 8), (2, 4), (1, 18)] {
        for engine in [AesEngine::ConstantTime, AesEngine::Table] {
            let key = [
                sl ^ 0x5a,
                nl,
                3,
                4,
                5,
                6,
                7,
                8,
                9,
                10,
                11,
                12,
                13,
                14,
                15,
                16,
            ];
            let conf = QuicLbConf::encrypted(5, sl, nl, key).engine(engine);
            let max = if sl == 4 {
                u32::MAX
            } else {
                (1u32 << (8 * sl)) - 1
            };
            let sids = sids.map(|s| (s & max).max(1));
            let mut fx = fx_declared(VipCid::QuicLb(vec![conf]), sids);
            for (i, &sid) in sids.iter().enumerate() {
                let nonce: Vec<u8> = (0..nl).map(|j| j.wrapping_mul(37) ^ i as u8).collect();
                let cid = encrypt_cid(&conf, &key, sid, &nonce);
                for q in [short(&cid), long(V1, 2, &cid), long(V2, 1, &cid)] {
                    let d = fx.check(&udp4(client4(i as u32), 9, vip4(), 443, &q));
                    assert_eq!(
                        fwd(&d),
                        (backend4(i as u8 + 1), Route::ServerId),
                        "{sl}+{nl} {engine:?} server {sid:#x}"
                    );
                }
            }
            fx.assert_stats();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    /// The constant-time engine's single pass (bitsliced AES-128 decryption
    /// in BPF) under random keys, server IDs and nonces: every CID of the
    /// independent encoder (`aes` crate) routes to its server on both
    /// engines, seven configurations (seven keys) per case, each through the
    /// program and the model.
    #[test]
    fn privileged_quic_lb_single_pass_random_keys_both_engines(
        keys in proptest::collection::vec(any::<[u8; 16]>(), 7),
        sids in any::<[u32; 4]>(),
        nonces in proptest::collection::vec(any::<[u8; 12]>(), 4),
    ) {
        if !require_bpf("privileged_quic_lb_single_pass_random_keys_both_engines") {
            return Ok(());
        }
        let sids = sids.map(|s| s.max(1));
        prop_assume!(sids.iter().collect::<std::collections::BTreeSet<_>>().len() == 4);
        for engine in [AesEngine::ConstantTime, AesEngine::Table] {
            let confs: Vec<QuicLbConf> = keys
                .iter()
                .enumerate()
                .map(|(id, k)| QuicLbConf::encrypted(id as u8, 4, 12, *k).engine(engine))
                .collect();
            let mut fx = fx_declared(VipCid::QuicLb(confs.clone()), sids);
            for (c, conf) in confs.iter().enumerate() {
                for (i, &sid) in sids.iter().enumerate() {
                    let cid = encrypt_cid(conf, &keys[c], sid, &nonces[i]);
                    let d = fx.check(&udp4(client4(i as u32), 9, vip4(), 443, &short(&cid)));
                    prop_assert_eq!(
                        fwd(&d),
                        (backend4(i as u8 + 1), Route::ServerId),
                        "{:?} config {} server {:#x}", engine, c, sid
                    );
                }
            }
            fx.assert_stats();
        }
    }
}

/// The single pass needs no kernel crypto context (the bitsliced engine
/// decrypts with its round keys in `cid_cfgs`): a process that reopened the
/// pins, which cannot create one, declares a constant-time single-pass
/// configuration and the program routes its CIDs; a constant-time four-pass
/// one (kfunc encryptions) is still refused there, naming the way out.
#[test]
fn privileged_quic_lb_single_pass_constant_time_from_reopened_pins() {
    if !require_bpf("privileged_quic_lb_single_pass_constant_time_from_reopened_pins") {
        return;
    }
    let sids = [0x0101_0101, 0x0202_0202, 0x0303_0303, 0x0404_0404];
    let fx = fx_with(None, 16, sids);
    let dir = std::path::PathBuf::from("/sys/fs/bpf").join(flowpin_testing::unique_name("qlbct"));
    fx.lb.pin(&dir).expect("pin");
    let result = std::panic::catch_unwind(|| {
        let mut re = flowpin_bpf_progs::xdp_lb::XdpLb::open_pinned(&dir).expect("open_pinned");
        let key = [0x3c; 16];
        let one = QuicLbConf::encrypted(2, 4, 12, key).engine(AesEngine::ConstantTime);
        re.set_vip_cid(&quic_vip(), VipCid::QuicLb(vec![one]))
            .expect("single pass needs no kernel context");
        let before = re.vip_stats(&quic_vip()).expect("stats").sid_routed;
        let nonce = [9u8; 12];
        let cid = encrypt_cid(&one, &key, sids[2], &nonce);
        re.test_run(&udp4(client4(7), 9, vip4(), 443, &short(&cid)))
            .expect("test_run");
        let after = re.vip_stats(&quic_vip()).expect("stats").sid_routed;
        assert_eq!(after, before + 1, "routed by its server ID");
        let four = QuicLbConf::encrypted(3, 4, 8, key).engine(AesEngine::ConstantTime);
        let e = re
            .set_vip_cid(&quic_vip(), VipCid::QuicLb(vec![one, four]))
            .expect_err("four-pass needs the kernel context");
        assert!(e.to_string().contains("reload"), "{e}");
    });
    let _ = flowpin_bpf_progs::xdp_lb::XdpLb::unpin(&dir);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
