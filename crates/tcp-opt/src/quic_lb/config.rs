//! [`QuicLbConfig`] (one configuration, any mode) and [`QuicLbCodec`] (the
//! same with its AES key schedule expanded).

use core::fmt;

use super::feistel;
use super::field::{QuicLbNonce, QuicLbServerId};
use super::key::{QuicLbCipher, QuicLbKey, QUIC_LB_BLOCK_LEN};
use crate::consts::*;
use crate::error::sat;
use crate::Error;

/// How a configuration protects its CIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuicLbMode {
    /// No key: server ID and nonce in clear.
    Plaintext,
    /// A key and server ID + nonce of exactly 16 octets: one AES-128-ECB
    /// block.
    SinglePass,
    /// A key and any other length: the four-pass Feistel network.
    FourPass,
}

impl QuicLbMode {
    /// A short name: `plaintext`, `single-pass` or `four-pass`.
    pub const fn name(self) -> &'static str {
        match self {
            QuicLbMode::Plaintext => "plaintext",
            QuicLbMode::SinglePass => "single-pass",
            QuicLbMode::FourPass => "four-pass",
        }
    }
}

/// A QUIC-LB configuration: config rotation codepoint (0..=6), server ID
/// length (1..=15 octets), nonce length (>= 4 octets), the two summing to at
/// most 19, and an optional key. `Debug` never prints the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuicLbConfig {
    config_id: u8,
    server_id_len: u8,
    nonce_len: u8,
    key: Option<QuicLbKey>,
}

/// The fields of a plaintext QUIC-LB CID, borrowed from it
/// ([`QuicLbConfig::decode`]).
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

/// The fields of a QUIC-LB CID of any mode, decrypted
/// ([`QuicLbCodec::open`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedCid {
    /// The config rotation codepoint.
    pub config_id: u8,
    /// The five low bits of the first octet.
    pub len_bits: u8,
    /// The server ID.
    pub server_id: QuicLbServerId,
    /// The nonce.
    pub nonce: QuicLbNonce,
}

impl QuicLbConfig {
    /// A plaintext configuration; checks the draft's limits.
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
            key: None,
        })
    }

    /// An encrypted configuration (single-pass when server ID + nonce is 16
    /// octets, four-pass otherwise); the same limits as [`new`](Self::new).
    pub const fn encrypted(
        config_id: u8,
        server_id_len: u8,
        nonce_len: u8,
        key: QuicLbKey,
    ) -> Result<Self, Error> {
        match QuicLbConfig::new(config_id, server_id_len, nonce_len) {
            Ok(c) => Ok(c.with_key(Some(key))),
            Err(e) => Err(e),
        }
    }

    /// This configuration with `key` (or none: plaintext).
    pub const fn with_key(mut self, key: Option<QuicLbKey>) -> Self {
        self.key = key;
        self
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

    /// Octets of server ID + nonce: the plaintext that is encrypted.
    pub const fn block_len(&self) -> usize {
        self.server_id_len() + self.nonce_len()
    }

    /// Octets of a CID: first octet, server ID, nonce.
    pub const fn cid_len(&self) -> usize {
        1 + self.block_len()
    }

    /// The key, if the configuration is encrypted.
    pub const fn key(&self) -> Option<&QuicLbKey> {
        self.key.as_ref()
    }

    /// The mode the lengths and key select.
    pub const fn mode(&self) -> QuicLbMode {
        match self.key {
            None => QuicLbMode::Plaintext,
            Some(_) if self.block_len() == QUIC_LB_BLOCK_LEN => QuicLbMode::SinglePass,
            Some(_) => QuicLbMode::FourPass,
        }
    }

    /// AES operations a load balancer runs to extract the server ID: 0
    /// (plaintext), 1 (single pass), 3 or 4 (four pass: 3 when the nonce is
    /// at least as long as the server ID).
    pub const fn lb_passes(&self) -> u8 {
        match self.mode() {
            QuicLbMode::Plaintext => 0,
            QuicLbMode::SinglePass => 1,
            QuicLbMode::FourPass => feistel::lb_passes(self.block_len(), self.server_id_len()),
        }
    }

    /// The codec of this configuration (expands the key schedule once).
    pub fn codec(&self) -> QuicLbCodec {
        QuicLbCodec {
            config: *self,
            cipher: self.key.as_ref().map(QuicLbCipher::new),
        }
    }

    /// Reads a *plaintext* `cid` (at least [`cid_len`](Self::cid_len)
    /// octets; a server may append its own octets, which are ignored),
    /// borrowing its fields. `Ok(None)` if its config rotation bits are
    /// another codepoint (`0b111` included); an error if it is too short, or
    /// if this configuration has a key (use [`open`](Self::open) or
    /// [`server_id`](Self::server_id), which decrypt).
    pub fn decode<'a>(&self, cid: &'a [u8]) -> Result<Option<PlaintextCid<'a>>, Error> {
        if self.key.is_some() {
            return Err(Error::QuicLbEncrypted {
                config_id: self.config_id,
            });
        }
        let Some(first) = self.check(cid)? else {
            return Ok(None);
        };
        let (s, n) = (self.server_id_len(), self.nonce_len());
        let short = Error::BadCidLength {
            len: sat(cid.len()),
        };
        Ok(Some(PlaintextCid {
            config_id: self.config_id,
            len_bits: first & QUIC_LB_LEN_MASK,
            server_id: cid.get(1..1 + s).ok_or(short)?,
            nonce: cid.get(1 + s..1 + s + n).ok_or(short)?,
        }))
    }

    /// Writes a CID of [`cid_len`](Self::cid_len) octets into `out` (see
    /// [`QuicLbCodec::encode`]). Builds the key schedule on every call: use
    /// a [`QuicLbCodec`] for many CIDs.
    pub fn encode(&self, server_id: &[u8], nonce: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        self.codec().encode(server_id, nonce, out)
    }

    /// All fields of `cid`, decrypted (see [`QuicLbCodec::open`]).
    pub fn open(&self, cid: &[u8]) -> Result<Option<DecodedCid>, Error> {
        self.codec().open(cid)
    }

    /// The server ID of `cid` (see [`QuicLbCodec::server_id`]).
    pub fn server_id(&self, cid: &[u8]) -> Result<Option<QuicLbServerId>, Error> {
        self.codec().server_id(cid)
    }

    /// The first octet if `cid` is long enough and carries this codepoint;
    /// `Ok(None)` for another codepoint.
    fn check(&self, cid: &[u8]) -> Result<Option<u8>, Error> {
        let &first = cid.first().ok_or(Error::BadCidLength { len: 0 })?;
        if first >> QUIC_LB_CR_SHIFT != self.config_id {
            return Ok(None);
        }
        if cid.len() < self.cid_len() {
            return Err(Error::BadCidLength {
                len: sat(cid.len()),
            });
        }
        Ok(Some(first))
    }
}

impl fmt::Debug for QuicLbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicLbConfig")
            .field("config_id", &self.config_id)
            .field("server_id_len", &self.server_id_len)
            .field("nonce_len", &self.nonce_len)
            .field("mode", &self.mode().name())
            .finish()
    }
}

/// A [`QuicLbConfig`] ready to encode and decode many CIDs: the AES key
/// schedule is expanded once. `Debug` never prints the key.
#[derive(Clone, Debug)]
pub struct QuicLbCodec {
    config: QuicLbConfig,
    cipher: Option<QuicLbCipher>,
}

impl QuicLbCodec {
    /// The configuration.
    pub const fn config(&self) -> &QuicLbConfig {
        &self.config
    }

    /// Writes a CID of [`cid_len`](QuicLbConfig::cid_len) octets into `out`:
    /// the first octet with the codepoint and the self-described length,
    /// then `server_id` and `nonce` (which must have the configured
    /// lengths), encrypted if the configuration has a key. Returns the
    /// octets written.
    pub fn encode(&self, server_id: &[u8], nonce: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        self.encode_with_len(server_id, nonce, self.config.cid_len(), out)?;
        Ok(self.config.cid_len())
    }

    /// Like [`encode`](Self::encode), for a CID of `cid_len` octets (at least
    /// [`cid_len`](QuicLbConfig::cid_len), at most 20) whose last octets the
    /// server uses for itself: writes the first octet (length bits
    /// `cid_len − 1`) and the server ID + nonce block, and leaves
    /// `out[config.cid_len()..cid_len]` untouched. Nothing is written on
    /// error.
    pub fn encode_with_len(
        &self,
        server_id: &[u8],
        nonce: &[u8],
        cid_len: usize,
        out: &mut [u8],
    ) -> Result<(), Error> {
        let c = &self.config;
        if server_id.len() != c.server_id_len() || nonce.len() != c.nonce_len() {
            return Err(Error::BadQuicLbConfig {
                config_id: c.config_id,
                server_id_len: sat(server_id.len()),
                nonce_len: sat(nonce.len()),
            });
        }
        if cid_len < c.cid_len() || cid_len > QUIC_CID_MAX_LEN {
            return Err(Error::BadCidLength { len: sat(cid_len) });
        }
        let available = out.len();
        let out = out.get_mut(..cid_len).ok_or(Error::BufferTooShort {
            needed: sat(cid_len),
            available: sat(available),
        })?;
        let (first, rest) = out.split_at_mut(1);
        first[0] = first_octet(c.config_id, cid_len);
        let block = &mut rest[..c.block_len()];
        block[..c.server_id_len()].copy_from_slice(server_id);
        block[c.server_id_len()..].copy_from_slice(nonce);
        match (&self.cipher, c.mode()) {
            (Some(cipher), QuicLbMode::SinglePass) => {
                let mut b = [0u8; QUIC_LB_BLOCK_LEN];
                b.copy_from_slice(block);
                cipher.encrypt_block(&mut b);
                block.copy_from_slice(&b);
            }
            (Some(cipher), _) => feistel::encrypt(cipher, block),
            (None, _) => {}
        }
        Ok(())
    }

    /// All fields of `cid`, decrypted. `Ok(None)` if its config rotation
    /// bits are another codepoint (`0b111` included); an error if it is
    /// shorter than the configuration's CIDs. Octets past
    /// [`cid_len`](QuicLbConfig::cid_len) are ignored.
    pub fn open(&self, cid: &[u8]) -> Result<Option<DecodedCid>, Error> {
        let c = &self.config;
        let Some(first) = c.check(cid)? else {
            return Ok(None);
        };
        let mut block = [0u8; QUIC_LB_MAX_PLAINTEXT_LEN];
        let block = &mut block[..c.block_len()];
        block.copy_from_slice(&cid[1..c.cid_len()]);
        match (&self.cipher, c.mode()) {
            (Some(cipher), QuicLbMode::SinglePass) => {
                let mut b = [0u8; QUIC_LB_BLOCK_LEN];
                b.copy_from_slice(block);
                cipher.decrypt_block(&mut b);
                block.copy_from_slice(&b);
            }
            (Some(cipher), _) => feistel::decrypt(cipher, block),
            (None, _) => {}
        }
        let (sid, nonce) = block.split_at(c.server_id_len());
        let (Some(server_id), Some(nonce)) = (
            QuicLbServerId::from_slice(sid),
            QuicLbNonce::from_slice(nonce),
        ) else {
            return Err(Error::BadCidLength {
                len: sat(cid.len()),
            });
        };
        Ok(Some(DecodedCid {
            config_id: c.config_id,
            len_bits: first & QUIC_LB_LEN_MASK,
            server_id,
            nonce,
        }))
    }

    /// The server ID of `cid`, what a load balancer routes by: as
    /// [`open`](Self::open), in as few AES passes as the mode allows
    /// ([`QuicLbConfig::lb_passes`]).
    pub fn server_id(&self, cid: &[u8]) -> Result<Option<QuicLbServerId>, Error> {
        let c = &self.config;
        if c.check(cid)?.is_none() {
            return Ok(None);
        }
        let block = &cid[1..c.cid_len()];
        let mut sid = [0u8; QUIC_LB_MAX_SID_LEN];
        let sid = &mut sid[..c.server_id_len()];
        match (&self.cipher, c.mode()) {
            (Some(cipher), QuicLbMode::SinglePass) => {
                let mut b = [0u8; QUIC_LB_BLOCK_LEN];
                b.copy_from_slice(block);
                cipher.decrypt_block(&mut b);
                sid.copy_from_slice(&b[..sid.len()]);
            }
            (Some(cipher), _) => feistel::decrypt_server_id(cipher, block, sid),
            (None, _) => sid.copy_from_slice(&block[..sid.len()]),
        }
        Ok(QuicLbServerId::from_slice(sid))
    }
}

/// The first octet of a QUIC-LB CID of `cid_len` octets with codepoint
/// `config_id`, length self-described.
pub(crate) const fn first_octet(config_id: u8, cid_len: usize) -> u8 {
    (config_id << QUIC_LB_CR_SHIFT) | ((cid_len.saturating_sub(1) as u8) & QUIC_LB_LEN_MASK)
}
