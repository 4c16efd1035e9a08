//! IETF QUIC-LB plaintext connection IDs (draft-ietf-quic-load-balancers).
//!
//! ```text
//! QUIC-LB Connection ID {
//!   First Octet { Config Rotation (3), CID Len or Random Bits (5) },
//!   Server ID (8..120),
//!   Nonce (32..),            // Server ID + Nonce <= 19 octets
//! }
//! ```
//!
//! The config rotation codepoint names the configuration (server ID and
//! nonce lengths, and a key when the CID is encrypted; this module handles
//! the unencrypted form only); codepoint `0b111` marks a CID that no load
//! balancer can route. The five low bits may self-describe the length (CID
//! length − 1); servers built on this module always write it, as the draft's
//! test vectors do.
//!
//! [`QuicLbConfig`] is the general form (server IDs of 1 to 15 octets);
//! [`QuicLb`] is the form flowpin routes in `xdp_lb`
//! ([`CidLayout::QuicLb`](crate::CidLayout::QuicLb)): a server ID of 1 to 4
//! octets read as a big-endian flowpin [`ServerId`](crate::ServerId).
//!
//! # What an observer learns
//!
//! Without a key the server ID is in clear: anyone on the path maps every
//! CID to its server, so two CIDs of one connection (before and after a
//! client migrates, which QUIC wants unlinkable) can be linked whenever few
//! connections share a server, and an attacker can aim at one server. The
//! draft's answer is a 16-octet AES key: single-pass AES-ECB when server ID
//! and nonce are exactly 16 octets, a four-pass Feistel network otherwise,
//! so that only load balancers with the key see the mapping. Encrypted
//! QUIC-LB needs AES per packet in the LB; flowpin's `xdp_lb` does not do
//! that (BPF has no AES helper), so it routes only plaintext CIDs — fit for
//! traffic where the path is trusted (inside a data centre), as the TCP
//! server_id option is.

use crate::consts::*;
use crate::error::sat;
use crate::Error;

/// The QUIC-LB configuration flowpin routes: a config rotation codepoint
/// and a server ID of 1 to [`QUIC_LB_MAX_ROUTED_SID_LEN`] octets carrying
/// a flowpin server_id (big-endian). The nonce is the rest of the CID and
/// must be at least [`QUIC_LB_MIN_NONCE_LEN`] octets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuicLb {
    config_id: u8,
    server_id_len: u8,
}

impl QuicLb {
    /// A configuration with codepoint `config_id` (0..=6) and a server ID
    /// of `server_id_len` octets (1..=4).
    pub const fn new(config_id: u8, server_id_len: u8) -> Result<QuicLb, Error> {
        if config_id >= QUIC_LB_CR_UNROUTABLE
            || server_id_len == 0
            || server_id_len as usize > QUIC_LB_MAX_ROUTED_SID_LEN
        {
            return Err(Error::BadQuicLbConfig {
                config_id,
                server_id_len,
                nonce_len: 0,
            });
        }
        Ok(QuicLb {
            config_id,
            server_id_len,
        })
    }

    /// The config rotation codepoint.
    pub const fn config_id(self) -> u8 {
        self.config_id
    }

    /// Octets of the server ID.
    pub const fn server_id_len(self) -> usize {
        self.server_id_len as usize
    }

    /// The shortest CID of this configuration: first octet, server ID and a
    /// [`QUIC_LB_MIN_NONCE_LEN`]-octet nonce.
    pub const fn min_cid_len(self) -> usize {
        1 + self.server_id_len() + QUIC_LB_MIN_NONCE_LEN
    }

    /// The largest server_id its server ID holds.
    pub const fn max_server_id(self) -> u32 {
        if self.server_id_len as usize >= 4 {
            u32::MAX
        } else {
            (1u32 << (8 * self.server_id_len as u32)) - 1
        }
    }

    /// The byte `xdp_lb` is configured with (`lb_cfg.quic_lb`, see
    /// `flowpin/tcp_opt.h`).
    pub const fn lb_config_byte(self) -> u8 {
        QUIC_LB_CFG_ON
            | ((self.config_id & QUIC_LB_CFG_ID_MASK) << QUIC_LB_CFG_ID_SHIFT)
            | (self.server_id_len & QUIC_LB_CFG_SID_LEN_MASK)
    }

    /// Whether `first`, a CID's first octet, carries this codepoint.
    pub const fn matches(self, first: u8) -> bool {
        first >> QUIC_LB_CR_SHIFT == self.config_id
    }

    /// The general form of this configuration for a CID of `cid_len` octets.
    pub fn config(self, cid_len: usize) -> Result<QuicLbConfig, Error> {
        let nonce = cid_len.saturating_sub(1 + self.server_id_len());
        QuicLbConfig::new(self.config_id, self.server_id_len, sat(nonce))
    }
}

/// A QUIC-LB plaintext configuration: config rotation codepoint, server ID
/// length (1..=15 octets), nonce length (>= 4 octets), the two summing to at
/// most 19.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuicLbConfig {
    config_id: u8,
    server_id_len: u8,
    nonce_len: u8,
}

/// The fields of a plaintext QUIC-LB CID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaintextCid<'a> {
    /// The config rotation codepoint.
    pub config_id: u8,
    /// The five low bits of the first octet (the self-described length − 1
    /// if the server encodes it).
    pub len_bits: u8,
    /// The server ID.
    pub server_id: &'a [u8],
    /// The nonce.
    pub nonce: &'a [u8],
}

impl QuicLbConfig {
    /// Checks the draft's limits.
    pub const fn new(config_id: u8, server_id_len: u8, nonce_len: u8) -> Result<Self, Error> {
        let (s, n) = (server_id_len as usize, nonce_len as usize);
        if config_id >= QUIC_LB_CR_UNROUTABLE
            || s == 0
            || s > QUIC_LB_MAX_SID_LEN
            || n < QUIC_LB_MIN_NONCE_LEN
            || s + n > QUIC_LB_MAX_PLAINTEXT_LEN
        {
            return Err(Error::BadQuicLbConfig {
                config_id,
                server_id_len,
                nonce_len,
            });
        }
        Ok(QuicLbConfig {
            config_id,
            server_id_len,
            nonce_len,
        })
    }

    /// The config rotation codepoint.
    pub const fn config_id(&self) -> u8 {
        self.config_id
    }

    /// Octets of the server ID.
    pub const fn server_id_len(&self) -> usize {
        self.server_id_len as usize
    }

    /// Octets of the nonce.
    pub const fn nonce_len(&self) -> usize {
        self.nonce_len as usize
    }

    /// Octets of a CID: first octet, server ID, nonce.
    pub const fn cid_len(&self) -> usize {
        1 + self.server_id_len() + self.nonce_len()
    }

    /// Reads `cid` (at least [`cid_len`](Self::cid_len) octets; a server
    /// may append its own octets, which are ignored). `Ok(None)` if its
    /// config rotation bits are another codepoint (unroutable with this
    /// configuration, `0b111` included); an error if it is too short.
    pub fn decode<'a>(&self, cid: &'a [u8]) -> Result<Option<PlaintextCid<'a>>, Error> {
        let short = Error::BadCidLength {
            len: sat(cid.len()),
        };
        let (&first, rest) = cid.split_first().ok_or(short)?;
        if first >> QUIC_LB_CR_SHIFT != self.config_id {
            return Ok(None);
        }
        let server_id = rest.get(..self.server_id_len()).ok_or(short)?;
        let nonce = rest
            .get(self.server_id_len()..self.server_id_len() + self.nonce_len())
            .ok_or(short)?;
        Ok(Some(PlaintextCid {
            config_id: self.config_id,
            len_bits: first & QUIC_LB_LEN_MASK,
            server_id,
            nonce,
        }))
    }

    /// Writes a CID of [`cid_len`](Self::cid_len) octets into `out`: the
    /// first octet with this codepoint and the self-described length, then
    /// `server_id` and `nonce` (which must have the configured lengths).
    /// Returns the octets written.
    pub fn encode(&self, server_id: &[u8], nonce: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        if server_id.len() != self.server_id_len() || nonce.len() != self.nonce_len() {
            return Err(Error::BadQuicLbConfig {
                config_id: self.config_id,
                server_id_len: sat(server_id.len()),
                nonce_len: sat(nonce.len()),
            });
        }
        let len = self.cid_len();
        let available = out.len();
        let out = out.get_mut(..len).ok_or(Error::BufferTooShort {
            needed: sat(len),
            available: sat(available),
        })?;
        let (first, rest) = out.split_at_mut(1);
        let (sid, nonce_out) = rest.split_at_mut(self.server_id_len());
        if let Some(f) = first.first_mut() {
            *f = first_octet(self.config_id, len);
        }
        sid.copy_from_slice(server_id);
        nonce_out.copy_from_slice(nonce);
        Ok(len)
    }
}

/// The first octet of a QUIC-LB CID of `cid_len` octets with codepoint
/// `config_id`, length self-described.
pub(crate) const fn first_octet(config_id: u8, cid_len: usize) -> u8 {
    (config_id << QUIC_LB_CR_SHIFT) | ((cid_len.saturating_sub(1) as u8) & QUIC_LB_LEN_MASK)
}
