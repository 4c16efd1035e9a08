//! IETF QUIC-LB connection IDs (draft-ietf-quic-load-balancers-21):
//! plaintext, and encrypted with a 16-octet AES-128 key.
//!
//! ```text
//! QUIC-LB Connection ID {
//!   First Octet { Config Rotation (3), CID Len or Random Bits (5) },
//!   Server ID (8..120),      // opaque octets, 1..=15
//!   Nonce (32..),            // Server ID + Nonce <= 19 octets
//!   [server-use octets],     // optional, ignored by load balancers
//! }
//! ```
//!
//! The config rotation codepoint (0..=6) names the configuration: server ID
//! and nonce lengths, and a key when the CID is encrypted. Codepoint
//! `0b111` marks a CID that no load balancer can route, as does any
//! codepoint a load balancer has no configuration for. The five low bits
//! self-describe the length (CID length − 1); servers built on this module
//! always write it, as the draft's test vectors do.
//!
//! # The three modes ([`QuicLbMode`])
//!
//! - **Plaintext** (no key): server ID and nonce in clear.
//! - **Single pass** (key, server ID + nonce = 16 octets): the 16 octets
//!   after the first are one AES-128-ECB block, encrypted once.
//! - **Four pass** (key, any other length, 5..=19): a four-round Feistel
//!   network over the two halves of server ID + nonce whose round function
//!   is AES-128-ECB of the half expanded to a block (see `feistel.rs` and the
//!   worked example in this crate's README). A load balancer needs three
//!   passes when the nonce is at least as long as the server ID, four
//!   otherwise ([`QuicLbConfig::lb_passes`]).
//!
//! [`QuicLbConfig`] is the general form (any mode); [`QuicLbCodec`] is the
//! same with the AES key schedule expanded once, for many CIDs;
//! [`QuicLbConfigs`] holds up to seven live configurations of a VIP and
//! picks one by codepoint. [`QuicLb`] is flowpin's older routed form
//! ([`CidLayout::QuicLb`](crate::CidLayout::QuicLb)): plaintext, a server ID
//! of 1 to 4 octets read as a big-endian flowpin
//! [`ServerId`](crate::ServerId).
//!
//! ```
//! use flowpin_tcp_opt::quic_lb::{QuicLbConfig, QuicLbKey};
//!
//! // The draft's first encrypted test vector: config 0, 3-octet server ID,
//! // 4-octet nonce, so four-pass encryption.
//! let key: QuicLbKey = "8f95f09245765f80256934e50c66207f".parse()?;
//! let cfg = QuicLbConfig::encrypted(0, 3, 4, key)?;
//! let mut cid = [0u8; 8];
//! cfg.encode(&[0xed, 0x79, 0x3a], &[0xee, 0x08, 0x0d, 0xbf], &mut cid)?;
//! assert_eq!(cid, [0x07, 0x20, 0xb1, 0xd0, 0x7b, 0x35, 0x9d, 0x3c]);
//! assert_eq!(cfg.server_id(&cid)?.unwrap(), [0xed, 0x79, 0x3a][..]);
//! // Keys never print.
//! assert_eq!(format!("{key:?}"), "QuicLbKey(<redacted>)");
//! # Ok::<(), flowpin_tcp_opt::Error>(())
//! ```
//!
//! # What an observer learns
//!
//! Without a key the server ID is in clear: anyone on the path maps every
//! CID to its server, so two CIDs of one connection (before and after a
//! client migrates, which QUIC wants unlinkable) can be linked whenever few
//! connections share a server, and an attacker can aim at one server.
//! Plaintext fits traffic whose path is trusted (inside a data centre), as
//! the TCP server_id option does; elsewhere use a key, so that only load
//! balancers holding it see the mapping.

mod config;
mod feistel;
mod field;
mod key;
mod set;
pub mod tool;

pub use config::{DecodedCid, PlaintextCid, QuicLbCodec, QuicLbConfig, QuicLbMode};
pub use field::{CidField, QuicLbNonce, QuicLbServerId};
pub use key::{
    aes128_decrypt_block, aes128_encrypt_block, QuicLbCipher, QuicLbKey, QUIC_LB_BLOCK_LEN,
    QUIC_LB_KEY_LEN,
};
pub use key::{hex_string, parse_hex};
pub use set::{config_id_of, unroutable_first_octet, QuicLbConfigs};

pub(crate) use config::first_octet;

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
