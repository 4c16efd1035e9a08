//! The generator against the codec: every CID it issues decodes back (with
//! `flowpin-tcp-opt`, as the LB does) to its server_id and socket id in every
//! layout; `validate` accepts exactly its own CIDs; lengths and lifetimes are
//! what was configured.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use flowpin_quinn::{Error, FlowpinCidGenerator, Route, DEFAULT_CID_LEN};
use flowpin_tcp_opt::{decode_cid, decode_cid_as, CidLayout, QuicLb, ServerId};
use proptest::prelude::*;
use quinn_proto::{ConnectionId, ConnectionIdGenerator, RandomConnectionIdGenerator};

fn sid(n: u32) -> ServerId {
    ServerId::new(n).expect("non-zero test id")
}

fn layouts() -> impl Strategy<Value = CidLayout> {
    prop_oneof![
        Just(CidLayout::Flowpin),
        Just(CidLayout::KatranV1),
        Just(CidLayout::KatranV2),
        Just(CidLayout::KatranV3),
        (0u8..7, 1u8..=4).prop_map(|(c, n)| CidLayout::QuicLb(QuicLb::new(c, n).unwrap())),
    ]
}

/// The server_id as a load balancer reads it: by the first byte for the
/// self-announcing layouts, by configuration for QUIC-LB.
fn lb_reads(cid: &[u8], layout: CidLayout) -> Option<ServerId> {
    match layout {
        CidLayout::QuicLb(_) => decode_cid_as(cid, layout).ok().flatten(),
        _ => decode_cid(cid)
            .ok()
            .flatten()
            .filter(|(l, _)| *l == layout)
            .map(|(_, id)| id),
    }
}

#[test]
fn default_is_flowpin_16_bytes_socket_after_server_id() {
    let mut g = FlowpinCidGenerator::builder(sid(0x0102_0304))
        .socket_id(0x0203)
        .build()
        .unwrap();
    assert_eq!(g.cid_len(), DEFAULT_CID_LEN);
    assert_eq!(g.cid_lifetime(), None);
    assert_eq!(
        g.socket_id_offset(),
        5,
        "the reuseport group's default offset"
    );
    let cid = g.generate_cid();
    assert_eq!(cid.len(), 16);
    assert_eq!(cid[0] >> 4, 1);
    assert_eq!(&cid[1..7], &[1, 2, 3, 4, 2, 3]);
    assert!(g.validate(&cid).is_ok());
}

#[test]
fn random_bytes_differ_between_cids() {
    let mut g = FlowpinCidGenerator::builder(sid(7))
        .socket_id(1)
        .build()
        .unwrap();
    let cids: HashSet<Vec<u8>> = (0..1000).map(|_| g.generate_cid().to_vec()).collect();
    assert_eq!(cids.len(), 1000, "9 random bytes: no repeat in 1000 CIDs");
}

#[test]
fn lifetime_and_length_honoured() {
    let mut g = FlowpinCidGenerator::builder(sid(7))
        .cid_len(20)
        .lifetime(Duration::from_secs(30))
        .build()
        .unwrap();
    assert_eq!(g.cid_len(), 20);
    assert_eq!(g.cid_lifetime(), Some(Duration::from_secs(30)));
    assert_eq!(g.generate_cid().len(), 20);
}

#[test]
fn bad_configurations_are_refused_with_the_fix() {
    let e = FlowpinCidGenerator::builder(sid(0x1_0000))
        .layout(CidLayout::KatranV1)
        .build()
        .unwrap_err();
    assert!(
        matches!(e, Error::ServerIdTooLarge { max: 0xFFFF, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("flowpin or Katran v3"));
    // flowpin: 5 layout bytes + 2 socket id + 4 random = 11.
    let e = FlowpinCidGenerator::builder(sid(1))
        .socket_id(1)
        .cid_len(10)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::CidLength { min: 11, .. }), "{e}");
    assert!(FlowpinCidGenerator::builder(sid(1))
        .socket_id(1)
        .cid_len(11)
        .build()
        .is_ok());
    assert!(FlowpinCidGenerator::builder(sid(1))
        .cid_len(21)
        .build()
        .is_err());
    // QUIC-LB, 3-octet server ID: 2 octets + ... the server_id must fit.
    let q = CidLayout::QuicLb(QuicLb::new(0, 2).unwrap());
    assert!(FlowpinCidGenerator::builder(sid(0x1_0000))
        .layout(q)
        .build()
        .is_err());
}

#[test]
fn validate_rejects_foreign_cids() {
    let g = FlowpinCidGenerator::builder(sid(42))
        .socket_id(65)
        .build()
        .unwrap();
    let mut other_host = FlowpinCidGenerator::builder(sid(43))
        .socket_id(65)
        .build()
        .unwrap();
    let mut other_socket = FlowpinCidGenerator::builder(sid(42))
        .socket_id(66)
        .build()
        .unwrap();
    let mut no_socket = FlowpinCidGenerator::builder(sid(42)).build().unwrap();
    let mut katran = FlowpinCidGenerator::builder(sid(42))
        .layout(CidLayout::KatranV3)
        .socket_id(65)
        .build()
        .unwrap();
    let mut shorter = FlowpinCidGenerator::builder(sid(42))
        .socket_id(65)
        .cid_len(12)
        .build()
        .unwrap();
    let mut random = RandomConnectionIdGenerator::new(16);
    for _ in 0..200 {
        assert!(g.validate(&other_host.generate_cid()).is_err());
        assert!(g.validate(&other_socket.generate_cid()).is_err());
        assert!(g.validate(&katran.generate_cid()).is_err());
        assert!(g.validate(&shorter.generate_cid()).is_err());
        // Socket bytes random: accepted only when they happen to be 65.
        let c = no_socket.generate_cid();
        assert_eq!(g.validate(&c).is_ok(), c[5..7] == [0, 65]);
        let c = random.generate_cid();
        assert_eq!(
            g.validate(&c).is_ok(),
            g.route(&c)
                == Some(Route {
                    server_id: sid(42),
                    socket_id: Some(65)
                })
        );
    }
    assert!(g.validate(&ConnectionId::new(&[])).is_err());
}

#[test]
fn factory_builds_independent_generators() {
    let g = FlowpinCidGenerator::builder(sid(5))
        .socket_id(3)
        .build()
        .unwrap();
    let f = g.factory();
    let mut a = f();
    let b = f();
    let cid = a.generate_cid();
    assert!(b.validate(&cid).is_ok());
    assert_eq!(b.cid_len(), 16);
    let mut cfg = quinn_proto::EndpointConfig::default();
    cfg.cid_generator(f);
}

proptest! {
    #[test]
    fn every_cid_decodes_to_its_server_and_socket(
        layout in layouts(),
        id in 1u32..,
        socket in proptest::option::of(any::<u16>()),
        extra in 0usize..=9,
    ) {
        let id = sid((id & layout.max_server_id()).max(1));
        let mut b = FlowpinCidGenerator::builder(id).layout(layout);
        if let Some(s) = socket {
            b = b.socket_id(s);
        }
        let routing = layout.server_data_offset() + if socket.is_some() { 2 } else { 0 };
        let len = (routing + 4).max(layout.min_cid_len()).max(8) + extra;
        prop_assume!(len <= 20);
        let mut g = b.cid_len(len).build().unwrap();
        for _ in 0..8 {
            let cid = g.generate_cid();
            prop_assert_eq!(cid.len(), len);
            prop_assert_eq!(lb_reads(&cid, layout), Some(id), "{:02x?}", &cid[..]);
            if let Some(s) = socket {
                let off = layout.server_data_offset();
                prop_assert_eq!(u16::from_be_bytes([cid[off], cid[off + 1]]), s);
            }
            prop_assert_eq!(g.route(&cid), Some(Route { server_id: id, socket_id: socket }));
            prop_assert!(g.validate(&cid).is_ok());
            // One bit flipped in the server_id bits: not ours.
            let mut bad = cid.to_vec();
            let off = layout.server_data_offset() - 1;
            bad[off] ^= 0x80;
            prop_assert!(g.validate(&ConnectionId::new(&bad)).is_err());
        }
    }
}
