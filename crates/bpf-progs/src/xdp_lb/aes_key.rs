//! AES-128 round keys for `xdp_lb`'s table-based AES engine
//! (`FLOWPIN_AES_TABLE`, `xdp_lb_aes.h`): the FIPS-197 key expansion and the
//! decryption keys of the equivalent inverse cipher, as big-endian words
//! (`flowpin_cid_cfg.rk` / `.drk`). Checked against the `aes` crate through
//! the program in the privileged QUIC-LB tests.

/// GF(2^8) product (the AES polynomial x^8 + x^4 + x^3 + x + 1).
fn gmul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let hi = a & 0x80;
        a <<= 1;
        if hi != 0 {
            a ^= 0x1b;
        }
        b >>= 1;
    }
    p
}

/// The AES S-box entry of `x`: multiplicative inverse, then the affine map.
pub(crate) fn sbox(x: u8) -> u8 {
    let inv = if x == 0 {
        0
    } else {
        (1..=255u8).find(|&y| gmul(x, y) == 1).unwrap_or(0)
    };
    let mut s = inv;
    for r in 1..5 {
        s ^= inv.rotate_left(r);
    }
    s ^ 0x63
}

fn sub_word(w: u32, table: &[u8; 256]) -> u32 {
    u32::from_be_bytes(w.to_be_bytes().map(|b| table[usize::from(b)]))
}

fn inv_mix_column(w: u32) -> u32 {
    let [a0, a1, a2, a3] = w.to_be_bytes();
    let m = |x: [u8; 4]| gmul(a0, x[0]) ^ gmul(a1, x[1]) ^ gmul(a2, x[2]) ^ gmul(a3, x[3]);
    u32::from_be_bytes([
        m([14, 11, 13, 9]),
        m([9, 14, 11, 13]),
        m([13, 9, 14, 11]),
        m([11, 13, 9, 14]),
    ])
}

/// Encryption round keys (`rk`) and decryption round keys of the
/// equivalent inverse cipher (`drk`) of an AES-128 key.
pub(crate) fn round_keys(key: &[u8; 16]) -> ([u32; 44], [u32; 44]) {
    let mut table = [0u8; 256];
    for (i, t) in table.iter_mut().enumerate() {
        *t = sbox(i as u8);
    }
    let mut rk = [0u32; 44];
    for (i, c) in key.chunks_exact(4).enumerate() {
        rk[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    }
    let mut rcon = 1u8;
    for i in 4..44 {
        let mut t = rk[i - 1];
        if i % 4 == 0 {
            t = sub_word(t.rotate_left(8), &table) ^ (u32::from(rcon) << 24);
            rcon = gmul(rcon, 2);
        }
        rk[i] = rk[i - 4] ^ t;
    }
    let mut drk = [0u32; 44];
    for r in 0..=10 {
        for j in 0..4 {
            let w = rk[4 * (10 - r) + j];
            drk[4 * r + j] = if r == 0 || r == 10 {
                w
            } else {
                inv_mix_column(w)
            };
        }
    }
    (rk, drk)
}

/// Round keys of the constant-time bitsliced engine (`xdp_lb_aes_ct.h`),
/// as stored in `flowpin_cid_cfg.rk`: round key `r` (0..=10) as two 64-bit
/// words at `rk64[2r]` (planes 0..3) and `rk64[2r + 1]` (planes 4..7), plane
/// `p` (bit `p` of every byte) in bits `16 * (p % 4)..`, byte `j` of the
/// round key at bit `j` of its plane; each word in native byte order, split
/// into two `u32` as they lie in memory.
pub(crate) fn bitsliced_round_keys(key: &[u8; 16]) -> [u32; 44] {
    let (rk, _) = round_keys(key);
    let mut out = [0u32; 44];
    for r in 0..11 {
        let mut words = [0u64; 2];
        for j in 0..16 {
            let byte = rk[4 * r + j / 4].to_be_bytes()[j % 4];
            for p in 0..8 {
                words[p / 4] |= u64::from((byte >> p) & 1) << (16 * (p % 4) + j);
            }
        }
        for (h, w) in words.iter().enumerate() {
            let b = w.to_ne_bytes();
            out[4 * r + 2 * h] = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            out[4 * r + 2 * h + 1] = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fips197_key_expansion() {
        // FIPS-197 appendix A.1.
        let key = [
            0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf,
            0x4f, 0x3c,
        ];
        let (rk, drk) = round_keys(&key);
        assert_eq!(rk[4], 0xa0fa_fe17);
        assert_eq!(rk[43], 0xb663_0ca6);
        assert_eq!(drk[..4], rk[40..]);
        assert_eq!(drk[40..], rk[..4]);
        assert_eq!((sbox(0), sbox(0x53)), (0x63, 0xed));
    }

    #[test]
    fn bitsliced_keys_hold_every_round_key_bit() {
        let key = [
            0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf,
            0x4f, 0x3c,
        ];
        let (rk, _) = round_keys(&key);
        let bk = bitsliced_round_keys(&key);
        let word = |i: usize| {
            let (a, b) = (bk[2 * i].to_ne_bytes(), bk[2 * i + 1].to_ne_bytes());
            u64::from_ne_bytes([a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]])
        };
        for r in 0..11 {
            for j in 0..16 {
                let byte = rk[4 * r + j / 4].to_be_bytes()[j % 4];
                let mut got = 0u8;
                for p in 0..8 {
                    got |= (((word(2 * r + p / 4) >> (16 * (p % 4) + j)) & 1) as u8) << p;
                }
                assert_eq!(got, byte, "round {r} byte {j}");
            }
        }
        // Round 0 is the key itself: byte 0 (0x2b = 0b0010_1011) at bit 0 of
        // planes 0, 1, 3 and 5.
        assert_eq!(word(0) & 0x0001_0001_0001_0001, 0x0001_0000_0001_0001);
        assert_eq!(word(1) & 0x0001_0001_0001_0001, 0x0000_0000_0001_0000);
    }
}
