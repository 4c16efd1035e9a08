//! The flow hash of `xdp_lb` against an independent implementation of the
//! whole function: the `murmur3` crate's `murmur3_32` (x86 variant) over the
//! byte string the hash is specified on (`flow_hash` module docs), itself
//! checked here against published MurmurHash3 vectors. The BPF program is
//! pinned to the Rust function by a privileged golden test; this pins the
//! Rust function to MurmurHash3.

use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowpin_bpf_progs::flow_hash::{
    flow_hash, flow_hash2, flow_hash_seeded, FiveTuple, FLOW_HASH_SEED, FLOW_HASH_SEED2,
};
use proptest::prelude::*;

fn murmur(bytes: &[u8], seed: u32) -> u32 {
    murmur3::murmur3_32(&mut Cursor::new(bytes), seed).expect("reading from memory")
}

/// The bytes the flow hash is specified on: addresses as on the wire, the
/// two port pairs as on the wire, the protocol as a little-endian u32.
fn spec_bytes(t: &FiveTuple) -> Vec<u8> {
    let mut b = Vec::new();
    match (t.src, t.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            b.extend_from_slice(&s.octets());
            b.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                IpAddr::V6(a) => a.octets(),
            };
            b.extend_from_slice(&v6(s));
            b.extend_from_slice(&v6(d));
        }
    }
    b.extend_from_slice(&t.sport.to_be_bytes());
    b.extend_from_slice(&t.dport.to_be_bytes());
    b.extend_from_slice(&u32::from(t.proto).to_le_bytes());
    b
}

#[test]
fn the_reference_crate_gives_the_published_murmur3_32_vectors() {
    // Published MurmurHash3_x86_32 test vectors (SMHasher / Wikipedia).
    assert_eq!(murmur(b"", 0), 0);
    assert_eq!(murmur(b"", 1), 0x514e_28b7);
    assert_eq!(murmur(b"", 0xffff_ffff), 0x81f1_6f39);
    assert_eq!(murmur(&[0, 0, 0, 0], 0), 0x2362_f9de);
    assert_eq!(murmur(b"aaaa", 0x9747_b28c), 0x5a97_808a);
    assert_eq!(murmur(b"Hello, world!", 1234), 0xfaf6_cdb3);
    assert_eq!(
        murmur(b"The quick brown fox jumps over the lazy dog", 0x9747_b28c),
        0x2fa8_26cd
    );
}

#[test]
fn flow_hash_is_murmur3_32_of_the_specified_bytes() {
    let cases = [
        FiveTuple {
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            sport: 40000,
            dport: 80,
            proto: 6,
        },
        FiveTuple {
            src: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            dst: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
            sport: 0,
            dport: 0,
            proto: 17,
        },
        FiveTuple {
            src: IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap()),
            dst: IpAddr::V6("2001:db8:ffff::443".parse::<Ipv6Addr>().unwrap()),
            sport: 55555,
            dport: 443,
            proto: 6,
        },
    ];
    for t in cases {
        let b = spec_bytes(&t);
        assert_eq!(flow_hash(&t), murmur(&b, FLOW_HASH_SEED), "{t:?}");
        assert_eq!(flow_hash2(&t), murmur(&b, FLOW_HASH_SEED2), "{t:?}");
    }
}

proptest! {
    #[test]
    fn flow_hash_equals_murmur3_for_any_tuple(
        v6 in any::<bool>(),
        s in any::<[u8; 16]>(),
        d in any::<[u8; 16]>(),
        sport in any::<u16>(),
        dport in any::<u16>(),
        proto in any::<u8>(),
        seed in any::<u32>(),
    ) {
        let (src, dst) = if v6 {
            (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)))
        } else {
            (
                IpAddr::V4(Ipv4Addr::new(s[0], s[1], s[2], s[3])),
                IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3])),
            )
        };
        let t = FiveTuple { src, dst, sport, dport, proto };
        prop_assert_eq!(flow_hash_seeded(&t, seed), murmur(&spec_bytes(&t), seed));
    }
}
