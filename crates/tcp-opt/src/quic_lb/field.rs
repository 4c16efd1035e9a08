//! Owned QUIC-LB fields: a server ID (1..=15 octets) and a nonce (4..=18),
//! returned by decoding, since an encrypted CID has no plaintext to borrow.

use core::fmt;
use core::ops::Deref;
use core::str::FromStr;

use super::key::{hex_string, parse_hex};
use crate::consts::QUIC_LB_MAX_SID_LEN;
use crate::error::sat;
use crate::{Error, ServerId};

/// Up to `N` octets, kept inline. Compares equal to slices and vectors of
/// the same octets; `Display` and `Debug` print hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CidField<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

/// A QUIC-LB server ID: 1..=15 opaque octets.
pub type QuicLbServerId = CidField<QUIC_LB_MAX_SID_LEN>;

/// A QUIC-LB nonce: 4..=18 octets.
pub type QuicLbNonce = CidField<18>;

impl<const N: usize> CidField<N> {
    /// A copy of `octets`; `None` if there are more than `N`.
    pub fn from_slice(octets: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; N];
        bytes.get_mut(..octets.len())?.copy_from_slice(octets);
        Some(CidField {
            len: sat(octets.len()),
            bytes,
        })
    }

    /// The octets.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl QuicLbServerId {
    /// The server ID of `len` octets (1..=15) carrying flowpin's `id`
    /// big-endian in its last octets (leading octets 0): the form flowpin's
    /// routed [`QuicLb`](super::QuicLb) layout reads. An error if `id` does
    /// not fit `len` octets.
    pub fn from_server_id(id: ServerId, len: usize) -> Result<Self, Error> {
        let be = id.get().to_be_bytes();
        let bad = Error::BadQuicLbServerId {
            len: sat(len),
            id: id.get(),
        };
        if len == 0 || len > QUIC_LB_MAX_SID_LEN {
            return Err(bad);
        }
        let mut bytes = [0u8; QUIC_LB_MAX_SID_LEN];
        let keep = len.min(4);
        // Octets of `id` that the server ID cannot hold must be 0.
        if be.iter().take(4 - keep).any(|&b| b != 0) {
            return Err(bad);
        }
        for (dst, src) in bytes[len - keep..len].iter_mut().zip(&be[4 - keep..]) {
            *dst = *src;
        }
        Ok(CidField {
            len: sat(len),
            bytes,
        })
    }

    /// The flowpin server_id these octets carry (big-endian, see
    /// [`from_server_id`](Self::from_server_id)); `None` for 0 or if more
    /// than the last four octets are non-zero.
    pub fn to_server_id(&self) -> Option<ServerId> {
        let b = self.as_bytes();
        let (high, low) = b.split_at(b.len().saturating_sub(4));
        if high.iter().any(|&x| x != 0) {
            return None;
        }
        ServerId::new(low.iter().fold(0u32, |acc, &x| acc << 8 | u32::from(x)))
    }
}

impl<const N: usize> Deref for CidField<N> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl<const N: usize> AsRef<[u8]> for CidField<N> {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl<const N: usize> PartialEq<[u8]> for CidField<N> {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_bytes() == other
    }
}

impl<const N: usize> PartialEq<&[u8]> for CidField<N> {
    fn eq(&self, other: &&[u8]) -> bool {
        self.as_bytes() == *other
    }
}

impl<const N: usize> PartialEq<Vec<u8>> for CidField<N> {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.as_bytes() == other.as_slice()
    }
}

impl<const N: usize> fmt::Display for CidField<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_string(self.as_bytes()))
    }
}

impl<const N: usize> fmt::Debug for CidField<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{self}")
    }
}

impl<const N: usize> FromStr for CidField<N> {
    type Err = Error;

    /// Hex digits, an even number of them, at most `2 * N` (an optional
    /// `0x` prefix).
    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.strip_prefix("0x").unwrap_or(s);
        let mut bytes = [0u8; N];
        let len = parse_hex(s, &mut bytes).ok_or(Error::BadHex {
            digits: sat(s.len()),
        })?;
        Ok(CidField {
            len: sat(len),
            bytes,
        })
    }
}
