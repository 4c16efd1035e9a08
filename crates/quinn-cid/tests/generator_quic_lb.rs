//! The generator with QUIC-LB configurations of every mode: its CIDs decode
//! with the codec (as a load balancer holding the configuration does) to
//! its server_id, their length follows the configuration, the socket id
//! ends them, and rotation follows the draft (new CIDs with the new
//! configuration, the old ones valid until retired, 0b111 without any).
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use flowpin_quinn::{Error, FlowpinCidGenerator, Route};
use flowpin_tcp_opt::quic_lb::{QuicLbConfig, QuicLbKey, QuicLbMode, QuicLbServerId};
use flowpin_tcp_opt::ServerId;
use proptest::prelude::*;
use quinn_proto::{ConnectionId, ConnectionIdGenerator};

fn sid(n: u32) -> ServerId {
    ServerId::new(n).expect("non-zero test id")
}

fn key(b: u8) -> QuicLbKey {
    QuicLbKey::new([b; 16])
}

#[test]
fn each_mode_issues_cids_the_codec_routes() {
    let configs = [
        (QuicLbConfig::new(0, 2, 6).unwrap(), QuicLbMode::Plaintext),
        (
            QuicLbConfig::encrypted(1, 4, 12, key(1)).unwrap(),
            QuicLbMode::SinglePass,
        ),
        (
            QuicLbConfig::encrypted(2, 3, 4, key(2)).unwrap(),
            QuicLbMode::FourPass,
        ),
        (
            QuicLbConfig::encrypted(6, 4, 13, key(3)).unwrap(),
            QuicLbMode::FourPass,
        ),
    ];
    for (config, mode) in configs {
        assert_eq!(config.mode(), mode);
        let mut g = FlowpinCidGenerator::builder(sid(0x0102))
            .quic_lb(config)
            .socket_id(0x0a0b)
            .build()
            .unwrap();
        assert_eq!(g.cid_len(), config.cid_len() + 2, "{config:?}");
        assert_eq!(g.socket_id_offset(), config.cid_len());
        assert_eq!(g.quic_lb_issuing(), Some(config));
        let mut blocks = HashSet::new();
        for _ in 0..200 {
            let cid = g.generate_cid();
            assert_eq!(cid[0] >> 5, config.config_id());
            assert_eq!(usize::from(cid[0] & 0x1f) + 1, cid.len(), "self-described");
            assert_eq!(&cid[cid.len() - 2..], &[0x0a, 0x0b]);
            let want = QuicLbServerId::from_server_id(sid(0x0102), config.server_id_len()).unwrap();
            assert_eq!(config.server_id(&cid).unwrap(), Some(want));
            assert_eq!(
                g.route(&cid),
                Some(Route {
                    server_id: sid(0x0102),
                    socket_id: Some(0x0a0b)
                })
            );
            assert!(g.validate(&cid).is_ok());
            blocks.insert(cid[1..1 + config.server_id_len()].to_vec());
        }
        // Encrypted: the server ID's octets on the wire change with every
        // CID; plaintext: they are the server_id.
        match mode {
            QuicLbMode::Plaintext => assert_eq!(blocks.len(), 1),
            _ => assert!(blocks.len() > 150, "{mode:?}: {} distinct", blocks.len()),
        }
    }
}

#[test]
fn another_servers_or_sockets_cids_are_invalid() {
    let config = QuicLbConfig::encrypted(3, 2, 6, key(9)).unwrap();
    let build = |id, sock| {
        FlowpinCidGenerator::builder(sid(id))
            .quic_lb(config)
            .socket_id(sock)
            .build()
            .unwrap()
    };
    let (mut a, mut b, mut c) = (build(1, 1), build(2, 1), build(1, 2));
    let from_b = b.generate_cid();
    let from_c = c.generate_cid();
    assert!(a.validate(&from_b).is_err(), "another server");
    assert!(a.validate(&from_c).is_err(), "another socket");
    let own = a.generate_cid();
    assert!(a.validate(&own).is_ok());
    // Another key: decrypts to some other server ID.
    let mut other_key = FlowpinCidGenerator::builder(sid(1))
        .quic_lb(QuicLbConfig::encrypted(3, 2, 6, key(10)).unwrap())
        .socket_id(1)
        .build()
        .unwrap();
    let misses = (0..100)
        .filter(|_| a.validate(&other_key.generate_cid()).is_err())
        .count();
    assert!(misses >= 98, "{misses}");
}

#[test]
fn rotation_in_the_drafts_order() {
    let old = QuicLbConfig::encrypted(0, 2, 6, key(1)).unwrap();
    let new = QuicLbConfig::encrypted(1, 2, 6, key(2)).unwrap();
    let mut g = FlowpinCidGenerator::builder(sid(77))
        .quic_lb(old)
        .build()
        .unwrap();
    // A clone, as the factory makes for every endpoint.
    let mut endpoint = (g.factory())();
    let before = g.generate_cid();
    let before_endpoint = endpoint.generate_cid();
    g.rotate_quic_lb(new).unwrap();
    let after = endpoint.generate_cid();
    assert_eq!(after[0] >> 5, 1, "the clone issues with the new config");
    assert_eq!(g.quic_lb_issuing(), Some(new));
    assert_eq!(g.quic_lb_accepted(), vec![old, new]);
    for cid in [&before, &before_endpoint, &after] {
        assert!(endpoint.validate(cid).is_ok(), "old CIDs stay valid");
    }
    assert_eq!(g.retire_quic_lb(0), Some(old));
    assert!(endpoint.validate(&before).is_err(), "retired");
    assert!(endpoint.validate(&after).is_ok());
    // No active configuration: unroutable CIDs, self-described length.
    g.retire_quic_lb(1);
    let unroutable = g.generate_cid();
    assert_eq!(unroutable[0], 0xe0 | 8);
    assert!(g.validate(&unroutable).is_ok());
    assert_eq!(g.route(&unroutable), None);
    assert_eq!(g.quic_lb_issuing(), None);
    g.rotate_quic_lb(new).unwrap();
    assert_eq!(g.generate_cid()[0] >> 5, 1);
    g.issue_unroutable();
    assert_eq!(g.generate_cid()[0] >> 5, 7);
}

#[test]
fn lengths_and_server_ids_are_checked() {
    let one_octet = QuicLbConfig::new(0, 1, 4).unwrap();
    assert_eq!(
        FlowpinCidGenerator::builder(sid(256))
            .quic_lb(one_octet)
            .build()
            .unwrap_err(),
        Error::QuicLbServerIdTooLarge {
            id: 256,
            server_id_len: 1
        }
    );
    let g = FlowpinCidGenerator::builder(sid(1))
        .quic_lb(one_octet)
        .build()
        .unwrap();
    assert_eq!(g.cid_len(), 6, "the configuration's length");
    // Rotating to a longer configuration needs room in the CID.
    let longer = QuicLbConfig::new(1, 2, 8).unwrap();
    assert!(matches!(
        g.rotate_quic_lb(longer),
        Err(Error::QuicLbCidLength {
            len: 6,
            config_id: 1,
            min: 11
        })
    ));
    assert_eq!(g.quic_lb_issuing(), Some(one_octet), "nothing changed");
    let mut padded = FlowpinCidGenerator::builder(sid(1))
        .quic_lb(one_octet)
        .cid_len(11)
        .build()
        .unwrap();
    padded.rotate_quic_lb(longer).unwrap();
    let cid = padded.generate_cid();
    assert_eq!(cid.len(), 11);
    assert!(padded.validate(&cid).is_ok());
    assert!(FlowpinCidGenerator::builder(sid(1))
        .quic_lb(one_octet)
        .cid_len(21)
        .build()
        .is_err());
    // Without a QUIC-LB configuration there is nothing to rotate.
    let flowpin = FlowpinCidGenerator::builder(sid(1)).build().unwrap();
    assert!(flowpin.rotate_quic_lb(longer).is_err());
    assert!(flowpin.quic_lb_accepted().is_empty());
}

proptest! {
    #[test]
    fn any_config_round_trips(
        cr in 0u8..7,
        s in 1u8..=4,
        n in 4u8..=15,
        k in any::<Option<[u8; 16]>>(),
        id in 1u32..,
        socket in any::<Option<u16>>(),
    ) {
        let config = QuicLbConfig::new(cr, s, n).unwrap().with_key(k.map(QuicLbKey::new));
        let id = if s < 4 { (id % ((1u32 << (8 * s)) - 1)) + 1 } else { id };
        let mut b = FlowpinCidGenerator::builder(sid(id)).quic_lb(config);
        if let Some(sock) = socket {
            b = b.socket_id(sock);
        }
        let tail = if socket.is_some() { 2 } else { 0 };
        prop_assume!(config.cid_len() + tail <= 20);
        let mut g = b.build().unwrap();
        let cid = g.generate_cid();
        prop_assert_eq!(cid.len(), config.cid_len() + tail);
        prop_assert_eq!(g.route(&cid), Some(Route { server_id: sid(id), socket_id: socket }));
        prop_assert!(g.validate(&cid).is_ok());
        // Another live-looking codepoint (not ours, not the unroutable 7).
        let mut flipped = cid.to_vec();
        flipped[0] = (flipped[0] & 0x1f) | ((cr + 1) % 7) << 5;
        prop_assert!(g.validate(&ConnectionId::new(&flipped)).is_err());
    }
}
