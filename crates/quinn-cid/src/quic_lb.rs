//! The generator's QUIC-LB state: the configuration it issues CIDs with,
//! and every configuration whose CIDs it still accepts, shared by all
//! clones of one generator (every endpoint of a factory), so that a
//! rotation reaches them all at once.
//!
//! ```text
//!  QUIC-LB (any mode), cid_len octets:
//!  | cr:3 len:5 | server ID + nonce (plain or encrypted) | random | socket id (2, BE)? |
//!                └ QuicLbConfig::block_len() octets        └ server-use octets, in clear
//! ```
//!
//! The socket id, when there is one, is the CID's last two octets, outside
//! the encrypted block so that `sk_reuseport_select` reads it; it is in
//! clear, so an observer can tell the processes of one host apart (not the
//! hosts: the server ID stays encrypted).

use std::sync::{Arc, PoisonError, RwLock};

use flowpin_tcp_opt::quic_lb::{
    unroutable_first_octet, QuicLbCodec, QuicLbConfig, QuicLbConfigs, QuicLbServerId,
};
use flowpin_tcp_opt::ServerId;
use rand::RngCore;

use crate::Error;

/// What the generator issues and accepts.
#[derive(Debug, Clone)]
struct State {
    /// The codepoint new CIDs use; `None`: unroutable CIDs (`0b111`).
    issuing: Option<u8>,
    /// Configurations whose CIDs `validate` accepts (the issuing one too).
    accepted: QuicLbConfigs,
}

/// The shared QUIC-LB state of a generator and its clones.
#[derive(Debug, Clone)]
pub(crate) struct QuicLbIssuer {
    server_id: ServerId,
    cid_len: usize,
    /// Octets at the end of the CID that are not the config's (the socket
    /// id): a configuration must leave room for them.
    reserved_tail: usize,
    state: Arc<RwLock<State>>,
}

impl QuicLbIssuer {
    /// Issues CIDs of `config` (checked: `server_id` fits its server ID, and
    /// `cid_len` holds its CIDs plus `reserved_tail`).
    pub(crate) fn new(
        server_id: ServerId,
        config: QuicLbConfig,
        cid_len: usize,
        reserved_tail: usize,
    ) -> Result<QuicLbIssuer, Error> {
        let issuer = QuicLbIssuer {
            server_id,
            cid_len,
            reserved_tail,
            state: Arc::new(RwLock::new(State {
                issuing: None,
                accepted: QuicLbConfigs::new(),
            })),
        };
        issuer.rotate(config)?;
        Ok(issuer)
    }

    /// The shortest CID for `config` with the reserved tail.
    pub(crate) fn min_cid_len(config: &QuicLbConfig, reserved_tail: usize) -> usize {
        config.cid_len() + reserved_tail
    }

    fn check(&self, config: &QuicLbConfig) -> Result<(), Error> {
        QuicLbServerId::from_server_id(self.server_id, config.server_id_len()).map_err(|_| {
            Error::QuicLbServerIdTooLarge {
                id: self.server_id.get(),
                server_id_len: config.server_id_len(),
            }
        })?;
        let min = Self::min_cid_len(config, self.reserved_tail);
        if min > self.cid_len {
            return Err(Error::QuicLbCidLength {
                len: self.cid_len,
                config_id: config.config_id(),
                min,
            });
        }
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A writer never leaves the state half-updated: poison is harmless.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Issues new CIDs with `config` from now on, and keeps accepting the
    /// CIDs of every configuration accepted before (another one at the same
    /// codepoint is replaced: its CIDs are no longer accepted).
    pub(crate) fn rotate(&self, config: QuicLbConfig) -> Result<(), Error> {
        self.check(&config)?;
        let mut s = self.write();
        s.accepted.insert(config);
        s.issuing = Some(config.config_id());
        Ok(())
    }

    /// Stops accepting CIDs of codepoint `config_id` (their connections
    /// have moved to newer CIDs). If it was the issuing configuration, new
    /// CIDs are unroutable until the next [`rotate`](Self::rotate).
    pub(crate) fn retire(&self, config_id: u8) -> Option<QuicLbConfig> {
        let mut s = self.write();
        if s.issuing == Some(config_id) {
            s.issuing = None;
        }
        s.accepted.remove(config_id)
    }

    /// Issues unroutable CIDs (codepoint `0b111`) until the next rotation:
    /// what the draft asks of a server with no active configuration.
    pub(crate) fn issue_unroutable(&self) {
        self.write().issuing = None;
    }

    /// The configuration new CIDs use (`None`: unroutable).
    pub(crate) fn issuing(&self) -> Option<QuicLbConfig> {
        let s = self.read();
        s.accepted.get(s.issuing?).map(|c| *c.config())
    }

    /// The configurations whose CIDs are accepted.
    pub(crate) fn accepted(&self) -> Vec<QuicLbConfig> {
        self.read().accepted.iter().copied().collect()
    }

    /// Writes a new CID over `out` (`cid_len` octets, already random).
    pub(crate) fn fill(&self, out: &mut [u8]) {
        let s = self.read();
        let Some(codec) = s.issuing.and_then(|c| s.accepted.get(c)) else {
            let first = unroutable_first_octet(out.len());
            if let Some(f) = out.first_mut() {
                *f = first;
            }
            return;
        };
        self.encode(codec, out);
    }

    fn encode(&self, codec: &QuicLbCodec, out: &mut [u8]) {
        let c = codec.config();
        let Ok(sid) = QuicLbServerId::from_server_id(self.server_id, c.server_id_len()) else {
            return; // checked by rotate(); validate() rejects the random CID
        };
        let mut nonce = [0u8; 18];
        let nonce = &mut nonce[..c.nonce_len()];
        rand::rng().fill_bytes(nonce);
        let len = out.len();
        // Cannot fail: lengths checked by rotate(); see above otherwise.
        let _ = codec.encode_with_len(&sid, nonce, len, out);
    }

    /// The server_id `cid` carries under an accepted configuration (`None`
    /// for an unroutable CID or a foreign one).
    pub(crate) fn server_id(&self, cid: &[u8]) -> Option<ServerId> {
        if cid.len() != self.cid_len {
            return None;
        }
        let sid = self.read().accepted.server_id(cid).ok()??;
        sid.to_server_id()
    }

    /// Whether `cid` is an unroutable CID of this generator's length.
    pub(crate) fn is_unroutable(&self, cid: &[u8]) -> bool {
        cid.len() == self.cid_len && cid.first() == Some(&unroutable_first_octet(self.cid_len))
    }
}
