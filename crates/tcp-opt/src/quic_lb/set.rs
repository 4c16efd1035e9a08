//! The live configurations of one VIP, chosen by codepoint.

use super::config::{first_octet, DecodedCid, QuicLbCodec, QuicLbConfig};
use super::field::QuicLbServerId;
use crate::consts::{QUIC_LB_CR_SHIFT, QUIC_LB_CR_UNROUTABLE};
use crate::Error;

/// The config rotation codepoint of `cid` (0..=7); `None` if it is empty.
pub fn config_id_of(cid: &[u8]) -> Option<u8> {
    cid.first().map(|f| f >> QUIC_LB_CR_SHIFT)
}

/// The first octet of an unroutable CID of `cid_len` octets (codepoint
/// `0b111`, length self-described, as the draft requires): what a server
/// with no active configuration issues.
pub const fn unroutable_first_octet(cid_len: usize) -> u8 {
    first_octet(QUIC_LB_CR_UNROUTABLE, cid_len)
}

/// Up to seven live configurations, at most one per codepoint 0..=6 (the
/// draft's config rotation). A CID whose codepoint has no configuration,
/// or is `0b111`, is unroutable: the decoders return `Ok(None)` and a load
/// balancer falls back to its hash.
#[derive(Clone, Debug, Default)]
pub struct QuicLbConfigs {
    codecs: [Option<QuicLbCodec>; QUIC_LB_CR_UNROUTABLE as usize],
}

impl QuicLbConfigs {
    /// No configuration: every CID is unroutable.
    pub fn new() -> QuicLbConfigs {
        QuicLbConfigs::default()
    }

    /// Adds `config` under its codepoint, replacing and returning the one
    /// that had it.
    pub fn insert(&mut self, config: QuicLbConfig) -> Option<QuicLbConfig> {
        let slot = self.codecs.get_mut(usize::from(config.config_id()))?;
        slot.replace(config.codec()).map(|c| *c.config())
    }

    /// Removes the configuration of codepoint `config_id`.
    pub fn remove(&mut self, config_id: u8) -> Option<QuicLbConfig> {
        let slot = self.codecs.get_mut(usize::from(config_id))?;
        slot.take().map(|c| *c.config())
    }

    /// The codec of codepoint `config_id`.
    pub fn get(&self, config_id: u8) -> Option<&QuicLbCodec> {
        self.codecs.get(usize::from(config_id))?.as_ref()
    }

    /// The configurations, by codepoint.
    pub fn iter(&self) -> impl Iterator<Item = &QuicLbConfig> {
        self.codecs.iter().flatten().map(QuicLbCodec::config)
    }

    /// Whether there is no configuration.
    pub fn is_empty(&self) -> bool {
        self.codecs.iter().all(Option::is_none)
    }

    /// The codec `cid`'s codepoint names, if live.
    fn codec_of(&self, cid: &[u8]) -> Option<&QuicLbCodec> {
        self.get(config_id_of(cid)?)
    }

    /// The server ID of `cid` under the configuration its codepoint names;
    /// `Ok(None)` if unroutable (no such configuration, `0b111`, empty);
    /// an error if shorter than that configuration's CIDs.
    pub fn server_id(&self, cid: &[u8]) -> Result<Option<QuicLbServerId>, Error> {
        match self.codec_of(cid) {
            Some(codec) => codec.server_id(cid),
            None => Ok(None),
        }
    }

    /// All fields of `cid` (see [`server_id`](Self::server_id)).
    pub fn open(&self, cid: &[u8]) -> Result<Option<DecodedCid>, Error> {
        match self.codec_of(cid) {
            Some(codec) => codec.open(cid),
            None => Ok(None),
        }
    }
}

impl FromIterator<QuicLbConfig> for QuicLbConfigs {
    fn from_iter<I: IntoIterator<Item = QuicLbConfig>>(iter: I) -> Self {
        let mut set = QuicLbConfigs::new();
        for c in iter {
            set.insert(c);
        }
        set
    }
}
