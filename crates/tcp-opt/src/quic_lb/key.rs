//! The 16-octet QUIC-LB key and the AES-128 block cipher it keys.
//!
//! Key material never reaches a log through this crate: [`QuicLbKey`] and
//! [`QuicLbCipher`] print `<redacted>` under `{:?}` and have no `Display`.
//! The only way to read the octets is [`QuicLbKey::expose`], named so that
//! a reviewer sees every place that does.

use core::fmt;
use core::str::FromStr;

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes128;

use crate::Error;

/// Octets of a QUIC-LB key (AES-128).
pub const QUIC_LB_KEY_LEN: usize = 16;

/// Octets of an AES block, the unit [`QuicLbCipher`] works on.
pub const QUIC_LB_BLOCK_LEN: usize = 16;

/// A QUIC-LB key: 16 octets shared by the servers and load balancers of one
/// configuration. `Debug` is redacted; parse one from 32 hex digits with
/// [`str::parse`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuicLbKey([u8; QUIC_LB_KEY_LEN]);

impl QuicLbKey {
    /// A key of these octets.
    pub const fn new(octets: [u8; QUIC_LB_KEY_LEN]) -> QuicLbKey {
        QuicLbKey(octets)
    }

    /// The key's octets. Handle with care: whatever prints or stores them
    /// leaks the mapping of every CID of the configuration to its server.
    pub const fn expose(&self) -> &[u8; QUIC_LB_KEY_LEN] {
        &self.0
    }

    /// The key as 32 lowercase hex digits (for storing it, e.g. in the
    /// registry; never for logs).
    pub fn expose_hex(&self) -> String {
        hex_string(&self.0)
    }
}

impl fmt::Debug for QuicLbKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("QuicLbKey(<redacted>)")
    }
}

impl FromStr for QuicLbKey {
    type Err = Error;

    /// 32 hex digits (either case; an optional `0x` prefix). The error
    /// never repeats the input.
    fn from_str(s: &str) -> Result<QuicLbKey, Error> {
        let s = s.strip_prefix("0x").unwrap_or(s);
        let mut out = [0u8; QUIC_LB_KEY_LEN];
        if parse_hex(s, &mut out) != Some(QUIC_LB_KEY_LEN) {
            return Err(Error::BadQuicLbKey);
        }
        Ok(QuicLbKey(out))
    }
}

/// AES-128 with a [`QuicLbKey`], the key schedule expanded once: the round
/// function of the four-pass Feistel network and the whole of single-pass
/// encryption. ECB on one block at a time, as the draft uses it.
#[derive(Clone)]
pub struct QuicLbCipher {
    aes: Aes128,
}

impl QuicLbCipher {
    /// The cipher of `key`.
    pub fn new(key: &QuicLbKey) -> QuicLbCipher {
        QuicLbCipher {
            aes: Aes128::new(&aes::Block::from(key.0)),
        }
    }

    /// Encrypts one 16-octet block in place (AES-128-ECB).
    pub fn encrypt_block(&self, block: &mut [u8; QUIC_LB_BLOCK_LEN]) {
        let mut b = aes::Block::from(*block);
        self.aes.encrypt_block(&mut b);
        *block = b.into();
    }

    /// Decrypts one 16-octet block in place (AES-128-ECB).
    pub fn decrypt_block(&self, block: &mut [u8; QUIC_LB_BLOCK_LEN]) {
        let mut b = aes::Block::from(*block);
        self.aes.decrypt_block(&mut b);
        *block = b.into();
    }
}

impl fmt::Debug for QuicLbCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("QuicLbCipher(<redacted>)")
    }
}

/// AES-128-ECB encryption of one block with `key`: the reference the BPF
/// data path's tests compare their AES against.
pub fn aes128_encrypt_block(
    key: &QuicLbKey,
    block: [u8; QUIC_LB_BLOCK_LEN],
) -> [u8; QUIC_LB_BLOCK_LEN] {
    let mut b = block;
    QuicLbCipher::new(key).encrypt_block(&mut b);
    b
}

/// AES-128-ECB decryption of one block with `key` (see
/// [`aes128_encrypt_block`]).
pub fn aes128_decrypt_block(
    key: &QuicLbKey,
    block: [u8; QUIC_LB_BLOCK_LEN],
) -> [u8; QUIC_LB_BLOCK_LEN] {
    let mut b = block;
    QuicLbCipher::new(key).decrypt_block(&mut b);
    b
}

/// Lowercase hex of `bytes`.
pub fn hex_string(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Parses an even number of hex digits into the start of `out`; the number
/// of octets written, or `None` if `s` is not hex, is odd, or does not fit.
pub fn parse_hex(s: &str, out: &mut [u8]) -> Option<usize> {
    let digits = s.as_bytes();
    if !digits.len().is_multiple_of(2) || digits.len() / 2 > out.len() {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = char::from(*pair.first()?).to_digit(16)?;
        let lo = char::from(*pair.get(1)?).to_digit(16)?;
        *o = u8::try_from(hi << 4 | lo).ok()?;
    }
    Some(digits.len() / 2)
}
