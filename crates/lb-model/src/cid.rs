//! The connection-ID layout a QUIC VIP declared (`xdp_lb_cid.h`): which long
//! headers are decoded, and the server_id of a DCID under the VIP's
//! flowpin, Katran or QUIC-LB configuration (plaintext, or encrypted with
//! the `aes` crate: draft-ietf-quic-load-balancers-21 §5.4).

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use flowpin_bpf_progs::xdp_lb::{QuicLbConf, VipCid};
use flowpin_tcp_opt::quic::ConnectionId;
use flowpin_tcp_opt::CidLayout;

use super::balance::SidResult;
use super::Model;

const QUIC_V1: u32 = 1;
const QUIC_V2: u32 = 0x6b33_43cf;

/// A long header whose DCID the server may have chosen: QUIC v1/v2, not Retry.
pub(super) fn long_routable(pkt: &[u8], q: usize) -> bool {
    let (Some(&first), Some(v)) = (pkt.get(q), pkt.get(q + 1..q + 5)) else {
        return false;
    };
    let ty = (first & 0x30) >> 4;
    match u32::from_be_bytes([v[0], v[1], v[2], v[3]]) {
        QUIC_V1 => ty != 3,
        QUIC_V2 => ty != 0,
        _ => false,
    }
}

/// Big-endian server ID of `s` (1..=4 octets).
fn be_sid(s: &[u8]) -> SidResult {
    if s.is_empty() || s.len() > 4 {
        return SidResult::Malformed;
    }
    SidResult::Found(s.iter().fold(0u32, |v, &b| (v << 8) | u32::from(b)))
}

/// The server ID of an encrypted QUIC-LB CID `cid` (1 + sid + nonce octets).
pub fn quic_lb_decrypt(conf: &QuicLbConf, key: &[u8; 16], cid: &[u8]) -> Option<Vec<u8>> {
    let aes = aes::Aes128::new(key.into());
    let sl = usize::from(conf.server_id_len);
    let pl = sl + usize::from(conf.nonce_len);
    let ct = cid.get(1..1 + pl)?;
    if pl == 16 {
        let mut b = aes::Block::clone_from_slice(ct);
        aes.decrypt_block(&mut b);
        return Some(b[..sl].to_vec());
    }
    // Four-pass Feistel (§5.4.2), run backwards.
    let half = pl.div_ceil(2);
    let odd = pl % 2 == 1;
    let split = |b: &[u8]| -> (Vec<u8>, Vec<u8>) {
        let mut left = b[..half].to_vec();
        let mut right = b[pl / 2..].to_vec();
        if odd {
            left[half - 1] &= 0xf0;
            right[0] &= 0x0f;
        }
        (left, right)
    };
    let expand = |half_v: &[u8], idx: u8| -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..half_v.len()].copy_from_slice(half_v);
        b[14] = pl as u8;
        b[15] = idx;
        let mut blk = aes::Block::clone_from_slice(&b);
        aes.encrypt_block(&mut blk);
        let mut out = [0u8; 16];
        out.copy_from_slice(&blk);
        out
    };
    let truncate = |v: &[u8], left: bool| -> Vec<u8> {
        let mut t = v[..half].to_vec();
        if odd {
            if left {
                t[half - 1] &= 0xf0;
            } else {
                t[0] &= 0x0f;
            }
        }
        t
    };
    let xor = |a: &[u8], b: &[u8]| -> Vec<u8> { a.iter().zip(b).map(|(x, y)| x ^ y).collect() };
    // Encryption runs passes 1..4 (right ^= F(left, 1), left ^= F(right, 2),
    // ...); decryption undoes them from 4 down.
    let (mut left, mut right) = split(ct);
    left = xor(&left, &truncate(&expand(&right, 4), true));
    right = xor(&right, &truncate(&expand(&left, 3), false));
    left = xor(&left, &truncate(&expand(&right, 2), true));
    right = xor(&right, &truncate(&expand(&left, 1), false));
    // Reassemble: the shared middle octet of an odd length from both halves.
    let mut out = left;
    if odd {
        out[half - 1] |= right[0];
        out.extend_from_slice(&right[1..]);
    } else {
        out.extend_from_slice(&right);
    }
    Some(out[..sl].to_vec())
}

impl Model {
    /// The server_id of the DCID of the QUIC packet at `q` under `cid` (not
    /// [`VipCid::Any`]), as the program reads it.
    pub(super) fn declared_cid_sid(&self, cid: &VipCid, pkt: &[u8], q: usize) -> SidResult {
        let Some(&first) = pkt.get(q) else {
            return SidResult::Malformed;
        };
        let (off, wire) = if first & 0x80 != 0 {
            let Some(&dl) = pkt.get(q + 5) else {
                return SidResult::Malformed;
            };
            if dl > 20 {
                return SidResult::Malformed;
            }
            if dl == 0 {
                return SidResult::None;
            }
            (q + 6, usize::from(dl))
        } else {
            (q + 1, 0)
        };
        let Some(&c0) = pkt.get(off) else {
            return SidResult::Malformed;
        };
        let (want, conf) = match cid {
            VipCid::Any => return SidResult::None,
            VipCid::Flowpin { cid_len } | VipCid::Katran { cid_len } => (*cid_len, None),
            VipCid::QuicLb(confs) => {
                let cr = c0 >> 5;
                if cr == 7 {
                    return SidResult::None;
                }
                match confs.iter().find(|c| c.config_id == cr) {
                    Some(c) => (c.cid_len(), Some(c)),
                    None => return SidResult::None,
                }
            }
        };
        let want = usize::from(want);
        if !(1..=20).contains(&want) {
            return SidResult::Malformed;
        }
        if wire != 0 && wire < want {
            return SidResult::None;
        }
        let Some(c) = pkt.get(off..off + want) else {
            return SidResult::Malformed;
        };
        let id = ConnectionId::new_unchecked(c);
        let layout_sid = |l: Option<CidLayout>| match l {
            Some(l) if want >= 8 => id
                .raw_server_id(l)
                .map_or(SidResult::None, SidResult::Found),
            _ => SidResult::None,
        };
        match (cid, conf) {
            (VipCid::Flowpin { .. }, _) => layout_sid((c0 >> 4 == 1).then_some(CidLayout::Flowpin)),
            (VipCid::Katran { .. }, _) => layout_sid(match c0 >> 6 {
                1 => Some(CidLayout::KatranV1),
                2 => Some(CidLayout::KatranV2),
                3 => Some(CidLayout::KatranV3),
                _ => None,
            }),
            (_, Some(conf)) => match conf.key {
                None => be_sid(&c[1..1 + usize::from(conf.server_id_len)]),
                Some(key) => match quic_lb_decrypt(conf, &key.0, c) {
                    Some(s) => be_sid(&s),
                    None => SidResult::Malformed,
                },
            },
            _ => SidResult::None,
        }
    }
}
