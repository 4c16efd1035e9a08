//! Golden rings of the Katran-compatible mode.
//!
//! Every expected value below was produced by Katran's own C++
//! (`CHFactory::make(HashFunction::Maglev | MaglevV2)->generateHashRing`,
//! katran/lib at commit 19f08fe), compiled with clang++ and fed the same
//! endpoints. Small rings are compared in full; rings of 65537 slots and more
//! by their first 16 slots and an FNV-1a 64 digest of all slots (u32,
//! little-endian).

use flowpin_maglev::katran::{generate_ring, murmur3_x64_64, permutation, Endpoint, Version};
use flowpin_maglev::Error;

fn h(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1)
}

fn eps(
    n: u32,
    num: impl Fn(u32) -> u32,
    weight: impl Fn(u32) -> u32,
    hash: impl Fn(u32) -> u64,
) -> Vec<Endpoint> {
    (0..n)
        .map(|i| Endpoint {
            num: num(i),
            weight: weight(i),
            hash: hash(i),
        })
        .collect()
}

/// (name, endpoints, ring size, version, full expected ring)
type SmallCase = (&'static str, Vec<Endpoint>, u32, Version, Vec<u32>);
/// (name, endpoints, ring size, version, first 16 slots, FNV-1a 64 of the ring)
type LargeCase = (&'static str, Vec<Endpoint>, u32, Version, [u32; 16], u64);

fn fnv1a(ring: &[u32]) -> u64 {
    let mut x = 0xcbf2_9ce4_8422_2325u64;
    for v in ring {
        for b in v.to_le_bytes() {
            x ^= u64::from(b);
            x = x.wrapping_mul(0x0100_0000_01b3);
        }
    }
    x
}

#[test]
fn small_rings_match_katran() {
    let cases: Vec<SmallCase> = vec![
        (
            "v1 equal n3 r13",
            eps(3, |i| i, |_| 1, u64::from),
            13,
            Version::V1,
            vec![1, 0, 2, 2, 2, 0, 0, 2, 0, 0, 1, 1, 1],
        ),
        (
            "v2 weights 1,2,3 r13",
            eps(3, |i| i, |i| i + 1, u64::from),
            13,
            Version::V2,
            vec![1, 0, 2, 2, 1, 0, 2, 2, 2, 2, 1, 2, 1],
        ),
        (
            "v1 weights 1,2,3 r13",
            eps(3, |i| i, |i| i + 1, u64::from),
            13,
            Version::V1,
            vec![1, 0, 2, 2, 2, 0, 0, 2, 2, 0, 1, 1, 1],
        ),
        (
            "v1 equal n5 r31",
            eps(5, |i| 10 + i, |_| 1, |i| h(i.into())),
            31,
            Version::V1,
            vec![
                13, 10, 14, 13, 12, 10, 13, 14, 10, 14, 10, 14, 11, 11, 11, 14, 13, 10, 11, 13, 10,
                14, 10, 13, 12, 12, 12, 11, 11, 12, 12,
            ],
        ),
        (
            "v2 zero weights n5 r31",
            eps(
                5,
                |i| 10 + i,
                |i| [0, 1, 2, 0, 5][i as usize],
                |i| h(i.into()),
            ),
            31,
            Version::V2,
            vec![
                12, 12, 14, 14, 14, 12, 12, 14, 14, 14, 14, 14, 11, 14, 11, 14, 14, 14, 14, 11, 14,
                14, 14, 14, 14, 12, 12, 11, 12, 14, 12,
            ],
        ),
        (
            // V1: weight 0 only skips the first pass.
            "v1 zero weights n5 r31",
            eps(
                5,
                |i| 10 + i,
                |i| [0, 1, 2, 0, 5][i as usize],
                |i| h(i.into()),
            ),
            31,
            Version::V1,
            vec![
                12, 10, 14, 13, 12, 10, 13, 14, 10, 12, 10, 14, 11, 11, 11, 14, 14, 14, 11, 13, 14,
                14, 10, 13, 12, 12, 12, 11, 11, 14, 12,
            ],
        ),
        (
            "v2 all weights zero n4 r17",
            eps(4, |i| i, |_| 0, |i| h(i.into())),
            17,
            Version::V2,
            vec![2, 1, 3, 2, 1, 3, 0, 3, 2, 1, 2, 0, 1, 0, 0, 0, 3],
        ),
        (
            // nums >= 2^31 are negative ints in Katran: their slots count as free
            // and get overwritten; -1 (0xffffffff) survives where nothing else landed.
            "v1 negative nums n4 r17",
            eps(
                4,
                |i| if i % 2 == 1 { 0x8000_0000 + i } else { i },
                |_| 1,
                |i| h(i.into()),
            ),
            17,
            Version::V1,
            vec![
                2,
                0,
                2_147_483_651,
                4_294_967_295,
                2_147_483_649,
                2_147_483_649,
                0,
                2_147_483_651,
                2,
                2,
                2,
                0,
                4_294_967_295,
                0,
                4_294_967_295,
                4_294_967_295,
                0,
            ],
        ),
        (
            "v2 weights wrapping u32 n3 r19",
            eps(
                3,
                |i| i,
                |i| [4_000_000_000, 3_000_000_000, 5][i as usize],
                |i| h(i.into()),
            ),
            19,
            Version::V2,
            vec![0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        ),
        (
            "v1 single endpoint r7",
            eps(1, |_| 42, |_| 0, |_| h(1)),
            7,
            Version::V1,
            vec![42; 7],
        ),
    ];
    for (name, endpoints, ring_size, version, want) in cases {
        let got = generate_ring(&endpoints, ring_size, version).unwrap();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn large_rings_match_katran() {
    let cases: Vec<LargeCase> = vec![
        (
            "v1 equal n100 r65537",
            eps(100, |i| i, |_| 1, |i| h(i.into())),
            65537,
            Version::V1,
            [
                27, 21, 96, 81, 10, 48, 53, 2, 92, 59, 48, 66, 86, 36, 97, 54,
            ],
            0xce88_ad54_d636_6751,
        ),
        (
            "v2 equal n100 r65537",
            eps(100, |i| i, |_| 1, |i| h(i.into())),
            65537,
            Version::V2,
            [
                27, 21, 96, 81, 10, 48, 53, 2, 92, 59, 48, 66, 86, 36, 97, 54,
            ],
            0xce88_ad54_d636_6751,
        ),
        (
            "v1 weights i%10+1 n100 r65537",
            eps(100, |i| i, |i| i % 10 + 1, |i| h(i.into())),
            65537,
            Version::V1,
            [
                27, 21, 96, 81, 10, 48, 53, 2, 92, 59, 48, 66, 86, 36, 97, 54,
            ],
            0x96b4_41f2_dbc5_04b0,
        ),
        (
            "v2 weights i%10+1 n100 r65537",
            eps(100, |i| i, |i| i % 10 + 1, |i| h(i.into())),
            65537,
            Version::V2,
            [27, 7, 96, 19, 10, 48, 49, 2, 92, 59, 48, 66, 86, 36, 97, 54],
            0x156c_fbca_e925_6e51,
        ),
        (
            "v2 weights i%10+1 n1000 r65537",
            eps(1000, |i| i, |i| i % 10 + 1, |i| h(i.into())),
            65537,
            Version::V2,
            [
                27, 558, 525, 504, 243, 706, 666, 769, 149, 470, 116, 935, 86, 207, 379, 749,
            ],
            0x6975_4f4f_2336_58cf,
        ),
        (
            // next * skip overflows 32 bits here: Katran's probe sequence wraps.
            "v1 equal n10 r655373",
            eps(10, |i| i, |_| 1, |i| h(i.into())),
            655_373,
            Version::V1,
            [2, 1, 8, 4, 2, 2, 6, 4, 2, 6, 4, 5, 3, 2, 5, 7],
            0x0010_6de8_5a57_fe57,
        ),
        (
            "v2 equal n50 r4294967",
            eps(50, |i| i, |_| 1, |i| h(i.into())),
            4_294_967,
            Version::V2,
            [
                26, 16, 11, 40, 41, 26, 47, 29, 15, 35, 38, 22, 26, 42, 26, 36,
            ],
            0x45b2_9272_2a4d_b194,
        ),
    ];
    for (name, endpoints, ring_size, version, first, digest) in cases {
        let got = generate_ring(&endpoints, ring_size, version).unwrap();
        assert_eq!(got.len(), ring_size as usize, "{name}");
        assert_eq!(got[..16], first, "{name}");
        assert_eq!(fnv1a(&got), digest, "{name}");
    }
}

/// Katran computes the probe in 32 bits; a 64-bit probe gives another ring
/// at 655373 slots. Guards against "fixing" the arithmetic.
#[test]
fn probe_arithmetic_is_32_bit() {
    let endpoints = eps(10, |i| i, |_| 1, |i| h(i.into()));
    let m = 655_373u32;
    let mut ring = vec![u32::MAX; m as usize];
    let mut next = vec![0u64; endpoints.len()];
    let mut runs = 0;
    'fill: loop {
        for (i, e) in endpoints.iter().enumerate() {
            let (offset, skip) = permutation(e.hash, m);
            let mut cur = (u64::from(offset) + next[i] * u64::from(skip)) % u64::from(m);
            while ring[cur as usize] != u32::MAX {
                next[i] += 1;
                cur = (u64::from(offset) + next[i] * u64::from(skip)) % u64::from(m);
            }
            ring[cur as usize] = e.num;
            next[i] += 1;
            runs += 1;
            if runs == m {
                break 'fill;
            }
        }
    }
    assert_ne!(fnv1a(&ring), 0x0010_6de8_5a57_fe57);
    assert_eq!(
        fnv1a(&generate_ring(&endpoints, m, Version::V1).unwrap()),
        0x0010_6de8_5a57_fe57
    );
}

#[test]
fn murmur_and_permutation_match_katran() {
    // Values printed by Katran's MurmurHash3_x64_64 / genMaglevPermutation.
    assert_eq!(murmur3_x64_64(0, 42, 0), MURMUR_0_42_0);
    assert_eq!(murmur3_x64_64(1, 2_718_281_828, 2307), MURMUR_1_E_2307);
    assert_eq!(permutation(1, 65537), PERM_1_65537);
}

const MURMUR_0_42_0: u64 = 4_235_526_421_325_011_168;
const MURMUR_1_E_2307: u64 = 9_302_815_683_273_903_108;
const PERM_1_65537: (u32, u32) = (3304, 19461);

#[test]
fn inputs_katran_cannot_handle_are_errors() {
    let two = eps(2, |i| i, |_| 1, u64::from);
    assert_eq!(
        generate_ring(&[], 65537, Version::V1),
        Err(Error::KatranNoEndpoints)
    );
    for size in [0, 1] {
        assert_eq!(
            generate_ring(&two, size, Version::V2),
            Err(Error::KatranRingTooSmall {
                ring_size: size,
                endpoints: 2
            })
        );
    }
    // Katran's C++ never returns on this input (no result after 20 s): with a
    // power-of-two ring, endpoints with an even skip only ever probe half the
    // ring. We detect the cycle instead of looping.
    let ten = eps(
        10,
        |i| i,
        |i| 1 + i % 3,
        |i| {
            u64::from(i)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(7)
        },
    );
    assert!(matches!(
        generate_ring(&ten, 65536, Version::V1),
        Err(Error::KatranNeverTerminates {
            ring_size: 65536,
            ..
        })
    ));
    // One endpoint: Katran fills any ring, even an empty one.
    assert_eq!(generate_ring(&two[..1], 0, Version::V1), Ok(vec![]));
}
