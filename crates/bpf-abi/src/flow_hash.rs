//! The 5-tuple flow hash of `xdp_lb`, bit for bit the C function
//! `fp_flow_hash` of `src/bpf/xdp_lb.bpf.c` (a privileged golden test runs
//! both on the same packets).
//!
//! murmur3_32 (x86 variant, seed [`FLOW_HASH_SEED`]) over 32-bit words, each
//! read little-endian from the packet bytes (what a plain 32-bit load gives
//! the BPF program on x86-64 and arm64, the only architectures we build for):
//!
//! | family | words |
//! |---|---|
//! | IPv4 | src, dst, ports, proto |
//! | IPv6 | src\[0..4\], dst\[0..4\], ports, proto |
//!
//! `ports` = the two source-port bytes then the two destination-port bytes
//! as they are on the wire; `proto` = the IP protocol number. Non-first
//! fragments hash with both ports 0.

use std::net::IpAddr;

/// Seed of the flow hash (`FLOWPIN_FLOW_HASH_SEED`): fixed, so every load
/// balancer hashes a flow the same way.
pub const FLOW_HASH_SEED: u32 = 0x666c_6f77;

/// Seed of the second flow hash (`FLOWPIN_FLOW_HASH_SEED2`): with the first
/// it forms the 64-bit fingerprint that identifies a flow in the connection
/// table.
pub const FLOW_HASH_SEED2: u32 = 0x7069_6e21;

/// A flow's 5-tuple as the load balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// Source address (client).
    pub src: IpAddr,
    /// Destination address (VIP).
    pub dst: IpAddr,
    /// Source port (0 for non-first fragments).
    pub sport: u16,
    /// Destination port (0 for non-first fragments).
    pub dport: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
}

#[inline]
fn round(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline]
fn finish(mut h: u32, nwords: u32) -> u32 {
    h ^= nwords * 4;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

fn words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// The flow hash of a 5-tuple. Source and destination must be of the same
/// family; mixed families hash as IPv6 with the IPv4 address mapped
/// (`::ffff:a.b.c.d`), which the program never sees.
pub fn flow_hash(t: &FiveTuple) -> u32 {
    flow_hash_seeded(t, FLOW_HASH_SEED)
}

/// The second flow hash (seed [`FLOW_HASH_SEED2`]).
pub fn flow_hash2(t: &FiveTuple) -> u32 {
    flow_hash_seeded(t, FLOW_HASH_SEED2)
}

/// The flow hash function with an explicit seed.
pub fn flow_hash_seeded(t: &FiveTuple, seed: u32) -> u32 {
    let mut h = seed;
    let n = match (t.src, t.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h = round(h, u32::from_le_bytes(s.octets()));
            h = round(h, u32::from_le_bytes(d.octets()));
            4
        }
        (s, d) => {
            for w in words(&v6_octets(s)).chain(words(&v6_octets(d)).collect::<Vec<_>>()) {
                h = round(h, w);
            }
            10
        }
    };
    let sp = t.sport.to_be_bytes();
    let dp = t.dport.to_be_bytes();
    h = round(h, u32::from_le_bytes([sp[0], sp[1], dp[0], dp[1]]));
    h = round(h, u32::from(t.proto));
    finish(h, n)
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// murmur3_32 of 16 bytes with seed 0 has a published value: check our
    /// word-wise rounds against a byte-wise reference implementation.
    fn murmur3_ref(data: &[u8], seed: u32) -> u32 {
        let mut h = seed;
        for c in data.chunks_exact(4) {
            h = round(h, u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        }
        finish(h, (data.len() / 4) as u32)
    }

    #[test]
    fn murmur3_known_vectors() {
        // Known murmur3_x86_32 values (SMHasher): "" seed 0 → 0, "" seed 1 → 0x514E28B7,
        // "aaaa" seed 0x9747b28c → 0x5A97808A, [0,0,0,0] seed 0 → 0x2362F9DE.
        assert_eq!(murmur3_ref(b"", 0), 0);
        assert_eq!(murmur3_ref(b"", 1), 0x514E_28B7);
        assert_eq!(murmur3_ref(b"aaaa", 0x9747_b28c), 0x5A97_808A);
        assert_eq!(murmur3_ref(&[0, 0, 0, 0], 0), 0x2362_F9DE);
    }

    #[test]
    fn v4_hash_is_murmur3_of_the_words() {
        let t = FiveTuple {
            src: "10.0.0.1".parse().unwrap(),
            dst: "192.0.2.10".parse().unwrap(),
            sport: 40000,
            dport: 80,
            proto: 6,
        };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&[10, 0, 0, 1, 192, 0, 2, 10]);
        bytes.extend_from_slice(&40000u16.to_be_bytes());
        bytes.extend_from_slice(&80u16.to_be_bytes());
        bytes.extend_from_slice(&[6, 0, 0, 0]);
        assert_eq!(flow_hash(&t), murmur3_ref(&bytes, FLOW_HASH_SEED));
    }

    #[test]
    fn v6_hash_is_murmur3_of_the_words() {
        let s: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        let d: std::net::Ipv6Addr = "2001:db8::ff".parse().unwrap();
        let t = FiveTuple {
            src: s.into(),
            dst: d.into(),
            sport: 1,
            dport: 443,
            proto: 17,
        };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&s.octets());
        bytes.extend_from_slice(&d.octets());
        bytes.extend_from_slice(&1u16.to_be_bytes());
        bytes.extend_from_slice(&443u16.to_be_bytes());
        bytes.extend_from_slice(&[17, 0, 0, 0]);
        assert_eq!(flow_hash(&t), murmur3_ref(&bytes, FLOW_HASH_SEED));
    }

    #[test]
    fn hash_depends_on_every_field() {
        let base = FiveTuple {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            sport: 1000,
            dport: 80,
            proto: 6,
        };
        let h = flow_hash(&base);
        let variants = [
            FiveTuple {
                src: "10.0.0.3".parse().unwrap(),
                ..base
            },
            FiveTuple {
                dst: "10.0.0.4".parse().unwrap(),
                ..base
            },
            FiveTuple {
                sport: 1001,
                ..base
            },
            FiveTuple { dport: 81, ..base },
            FiveTuple { proto: 17, ..base },
            FiveTuple {
                sport: 80,
                dport: 1000,
                ..base
            },
        ];
        for v in variants {
            assert_ne!(flow_hash(&v), h, "{v:?}");
        }
    }
}
