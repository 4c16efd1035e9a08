//! QUIC connection IDs: Katran's layouts pinned on the CIDs of Katran's own
//! test fixtures (katran/lib/testing/fixtures/KatranBaseTestFixtures.h) and
//! the expressions of its `parse_quic()` (katran/lib/bpf/pckt_parsing.h),
//! the flowpin layout, and property tests.

use flowpin_tcp_opt::quic::{
    decode_cid_buf, put_cid, server_id_from_datagram, ConnectionId, LongPacketType, QuicHeader,
};
use flowpin_tcp_opt::{decode_cid, encode_cid, CidLayout, Error, ServerId};
use proptest::prelude::*;

fn id(n: u32) -> ServerId {
    ServerId::new(n).expect("test ids are non-zero")
}

/// Katran's fixture CIDs and the server_id its tests expect.
const KATRAN_FIXTURES: [([u8; 8], CidLayout, u32); 5] = [
    // "QUIC: long header. Handshake. ... Conn Id V1 based. server id is 1024"
    (
        [0x41, 0x00, 0x03, 0x04, 0x05, 0x06, 0x07, 0x00],
        CidLayout::KatranV1,
        1024,
    ),
    // "QUIC: short header w/ connection id" (routed to the real of id 1026)
    (
        [0x41, 0x00, 0x83, 0x04, 0x05, 0x06, 0x07, 0x00],
        CidLayout::KatranV1,
        1026,
    ),
    // "QUIC: short header w/ connection id 1092 but non-existing mapping"
    (
        [0x41, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
        CidLayout::KatranV1,
        1092,
    ),
    // "QUIC: short header w/ connection id. CIDv2"
    (
        [0x80, 0x03, 0x04, 0x02, 0x05, 0x06, 0x07, 0x00],
        CidLayout::KatranV2,
        0x03_0402,
    ),
    // "QUIC: short header w/ connection id 197700 but non-existing mapping. CIDv2"
    (
        [0x80, 0x03, 0x04, 0x44, 0x00, 0x00, 0x00, 0x00],
        CidLayout::KatranV2,
        197_700,
    ),
];

#[test]
fn katran_fixture_cids_decode_to_katran_server_ids() {
    for (cid, layout, want) in KATRAN_FIXTURES {
        assert_eq!(decode_cid(&cid), Ok(Some((layout, id(want)))), "{cid:02x?}");
    }
    // "QUIC: short header w/ conn id. host id = 0": no server_id.
    assert_eq!(
        decode_cid(&[0x40, 0x00, 0x03, 0x04, 0x05, 0x06, 0x07, 0x00]),
        Ok(None)
    );
}

#[test]
fn katran_fixture_cids_are_what_encode_writes() {
    for (cid, layout, want) in KATRAN_FIXTURES {
        // Flip every bit the layout owns; encoding restores the fixture.
        let mut template = cid;
        for (i, b) in template.iter_mut().enumerate() {
            *b ^= owned_mask(layout, i);
        }
        assert_ne!(template, cid);
        encode_cid(&mut template, layout, id(want)).unwrap();
        assert_eq!(template, cid);
    }
}

#[test]
fn katran_v3_is_32_bits_in_bytes_1_to_4() {
    // parse_quic(): (connId[1] << 24) | (connId[2] << 16) | (connId[3] << 8) | connId[4]
    let cid = [0xC7, 0xDE, 0xAD, 0xBE, 0xEF, 0x11, 0x22, 0x33];
    assert_eq!(
        decode_cid(&cid),
        Ok(Some((CidLayout::KatranV3, id(0xDEAD_BEEF))))
    );
    let mut out = [0x07, 0, 0, 0, 0, 0x11, 0x22, 0x33];
    encode_cid(&mut out, CidLayout::KatranV3, id(0xDEAD_BEEF)).unwrap();
    assert_eq!(out, cid);
}

#[test]
fn katran_v1_bit_layout() {
    // id 0xFFFF: 6 bits in byte 0, 8 in byte 1, 2 at the top of byte 2.
    let mut cid = [0u8; 8];
    encode_cid(&mut cid, CidLayout::KatranV1, id(0xFFFF)).unwrap();
    assert_eq!(cid[..3], [0x7F, 0xFF, 0xC0]);
    encode_cid(&mut cid, CidLayout::KatranV1, id(1)).unwrap();
    assert_eq!(cid[..3], [0x40, 0x00, 0x40]);
}

#[test]
fn flowpin_layout_bytes() {
    let mut cid = [0xA5; 8];
    encode_cid(&mut cid, CidLayout::Flowpin, id(0x0102_0304)).unwrap();
    assert_eq!(cid, [0x15, 0x01, 0x02, 0x03, 0x04, 0xA5, 0xA5, 0xA5]);
    let view = ConnectionId::new_checked(&cid[..]).unwrap();
    assert_eq!(view.flowpin_app_bits(), Some(0x5));
    assert_eq!(
        view.server_id(),
        Some((CidLayout::Flowpin, id(0x0102_0304)))
    );
    let mut view = ConnectionId::new_checked(&mut cid[..]).unwrap();
    view.set_flowpin_app_bits(0xC);
    assert_eq!(cid[0], 0x1C);
    assert_eq!(
        decode_cid(&cid),
        Ok(Some((CidLayout::Flowpin, id(0x0102_0304))))
    );
    // Katran sees version 0 in a flowpin CID and falls back to hashing.
    assert_eq!(cid[0] >> 6, 0);
}

#[test]
fn unknown_first_bytes_carry_no_server_id() {
    for first in [0x00, 0x0F, 0x20, 0x3F] {
        let cid = [first, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(decode_cid(&cid), Ok(None), "{first:#x}");
    }
}

#[test]
fn cid_length_and_range_errors() {
    assert_eq!(decode_cid(&[0x80; 7]), Err(Error::BadCidLength { len: 7 }));
    assert_eq!(
        decode_cid(&[0x80; 21]),
        Err(Error::BadCidLength { len: 21 })
    );
    let mut cid = [0u8; 8];
    assert_eq!(
        encode_cid(&mut cid, CidLayout::KatranV1, id(0x1_0000)),
        Err(Error::ServerIdTooLarge {
            id: 0x1_0000,
            layout: CidLayout::KatranV1
        })
    );
    assert_eq!(
        encode_cid(&mut cid, CidLayout::KatranV2, id(0x100_0000)),
        Err(Error::ServerIdTooLarge {
            id: 0x100_0000,
            layout: CidLayout::KatranV2
        })
    );
    assert_eq!(cid, [0; 8], "nothing written on error");
    let mut short = [0u8; 4];
    assert_eq!(
        encode_cid(&mut short, CidLayout::Flowpin, id(1)),
        Err(Error::BadCidLength { len: 4 })
    );
}

/// A long header packet as Katran's PacketBuilder writes it: flags, the
/// version 0xfaceb001 (QUIC_V1_WIRE_FORMAT), DCID length 8, the DCID, SCID
/// length 0, packet number, data.
fn long_packet(flags: u8, version: u32, dcid: &[u8]) -> Vec<u8> {
    let mut p = vec![flags];
    p.extend_from_slice(&version.to_be_bytes());
    p.push(dcid.len() as u8);
    p.extend_from_slice(dcid);
    p.push(0);
    p.extend_from_slice(b"\x11\x01quic data\x00@");
    p
}

#[test]
fn datagrams_route_like_katran() {
    let v1_1024 = KATRAN_FIXTURES[0].0;
    // Handshake (0xEF) and Retry (0xFF) carry the server's CID.
    for flags in [0xEF, 0xFF] {
        let p = long_packet(flags, 0xfaceb001, &v1_1024);
        assert_eq!(
            server_id_from_datagram(&p, 8),
            Ok(Some((CidLayout::KatranV1, id(1024))))
        );
    }
    // Initial (0xCF) and 0-RTT (0xDF): client-chosen DCID, hash instead.
    for flags in [0xCF, 0xDF] {
        let p = long_packet(flags, 0xfaceb001, &v1_1024);
        assert_eq!(server_id_from_datagram(&p, 8), Ok(None));
    }
    // Short header: DCID right after the first byte.
    let mut p = vec![0x40];
    p.extend_from_slice(&KATRAN_FIXTURES[3].0);
    p.push(b'@');
    assert_eq!(
        server_id_from_datagram(&p, 8),
        Ok(Some((CidLayout::KatranV2, id(0x03_0402))))
    );
    // A DCID shorter than 8 bytes carries nothing.
    let p = long_packet(0xEF, 1, &[0x41, 0, 3, 4]);
    assert_eq!(server_id_from_datagram(&p, 8), Ok(None));
    // Version negotiation.
    let p = long_packet(0x80, 0, &v1_1024);
    assert_eq!(server_id_from_datagram(&p, 8), Ok(None));
}

#[test]
fn quic_v2_packet_types_are_permuted() {
    let cid = KATRAN_FIXTURES[0].0;
    let types = [
        (0x80, LongPacketType::Retry),
        (0x90, LongPacketType::Initial),
        (0xA0, LongPacketType::ZeroRtt),
        (0xB0, LongPacketType::Handshake),
    ];
    for (flags, want) in types {
        let p = long_packet(flags | 0x40, 0x6B33_43CF, &cid);
        match QuicHeader::parse(&p, 8).unwrap() {
            QuicHeader::Long {
                packet_type,
                version,
                dcid,
            } => {
                assert_eq!((packet_type, version, dcid), (want, 0x6B33_43CF, &cid[..]));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn truncated_datagrams_are_errors() {
    assert_eq!(
        server_id_from_datagram(&[], 8),
        Err(Error::TruncatedQuicPacket { len: 0, needed: 1 })
    );
    assert_eq!(
        server_id_from_datagram(&[0x40, 1, 2, 3], 8),
        Err(Error::TruncatedQuicPacket { len: 4, needed: 9 })
    );
    assert_eq!(
        server_id_from_datagram(&[0xEF, 0, 0, 0, 1, 8, 0x41], 8),
        Err(Error::TruncatedQuicPacket { len: 7, needed: 14 })
    );
}

#[test]
fn buf_forms() {
    let mut out = Vec::new();
    put_cid(&mut out, &[0x0A; 8], CidLayout::Flowpin, id(7)).unwrap();
    assert_eq!(out, [0x1A, 0, 0, 0, 7, 0x0A, 0x0A, 0x0A]);
    let mut rd = &out[..];
    assert_eq!(
        decode_cid_buf(&mut rd, 8),
        Ok(Some((CidLayout::Flowpin, id(7))))
    );
    assert!(rd.is_empty());
    assert_eq!(
        decode_cid_buf(&mut &out[..4], 8),
        Err(Error::TruncatedQuicPacket { len: 4, needed: 8 })
    );
}

fn cid_layout() -> impl Strategy<Value = CidLayout> {
    prop_oneof![
        Just(CidLayout::KatranV1),
        Just(CidLayout::KatranV2),
        Just(CidLayout::KatranV3),
        Just(CidLayout::Flowpin),
    ]
}

/// Bits of each byte a layout writes (version + server_id).
fn owned_mask(layout: CidLayout, i: usize) -> u8 {
    match (layout, i) {
        (CidLayout::KatranV1, 0 | 1) => 0xFF,
        (CidLayout::KatranV1, 2) => 0xC0,
        (CidLayout::KatranV2 | CidLayout::KatranV3, 0) => 0xC0,
        (CidLayout::KatranV2, 1..=3) => 0xFF,
        (CidLayout::KatranV3, 1..=4) => 0xFF,
        (CidLayout::Flowpin, 0) => 0xF0,
        (CidLayout::Flowpin, 1..=4) => 0xFF,
        _ => 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn cid_encode_then_decode_is_identity(
        layout in cid_layout(),
        raw in 1u32..=u32::MAX,
        template in prop::collection::vec(any::<u8>(), 8..=20),
    ) {
        let n = (raw % layout.max_server_id()).max(1);
        let sid = id(n);
        let mut cid = template.clone();
        encode_cid(&mut cid, layout, sid).unwrap();
        prop_assert_eq!(decode_cid(&cid), Ok(Some((layout, sid))));
        for (i, (&got, &was)) in cid.iter().zip(&template).enumerate() {
            let keep = !owned_mask(layout, i);
            prop_assert_eq!(got & keep, was & keep, "byte {} outside the layout changed", i);
        }
        let mut out = Vec::new();
        put_cid(&mut out, &template, layout, sid).unwrap();
        prop_assert_eq!(out, cid);
    }

    #[test]
    fn cid_decode_of_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..32), short_len in 0usize..24) {
        let decoded = decode_cid(&bytes);
        prop_assert_eq!(decoded.is_ok(), (8..=20).contains(&bytes.len()));
        if let Ok(Some((layout, sid))) = decoded {
            prop_assert!(sid.get() <= layout.max_server_id());
        }
        let _ = server_id_from_datagram(&bytes, short_len);
        let _ = QuicHeader::parse(&bytes, short_len);
    }
}
