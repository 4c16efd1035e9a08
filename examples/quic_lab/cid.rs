//! The lab's connection-ID modes: flowpin's layout, and QUIC-LB
//! (draft-ietf-quic-load-balancers-21) plaintext or encrypted, with the two
//! configurations a rotation goes through (codepoint 0, then 1).

use flowpin::bpf::xdp_lb::{QuicLbConf, VipCid};
use flowpin::quinn::DEFAULT_CID_LEN;
use flowpin::tcp_opt::quic_lb::{QuicLbConfig, QuicLbKey};

/// Server ID octets of the lab's QUIC-LB configurations (server_ids are
/// small).
const SID_LEN: u8 = 2;
/// Nonce octets: server ID + nonce = 8, so encrypted CIDs take the
/// four-pass Feistel network.
const NONCE_LEN: u8 = 6;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum CidMode {
    /// flowpin's layout, 16-octet CIDs.
    Flowpin,
    /// QUIC-LB plaintext.
    QuicLbPlain,
    /// QUIC-LB encrypted (four-pass).
    QuicLbEncrypted,
}

impl CidMode {
    /// The server child's argument.
    pub(crate) fn arg(self) -> &'static str {
        match self {
            CidMode::Flowpin => "flowpin",
            CidMode::QuicLbPlain => "plain",
            CidMode::QuicLbEncrypted => "encrypted",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<CidMode> {
        [
            CidMode::Flowpin,
            CidMode::QuicLbPlain,
            CidMode::QuicLbEncrypted,
        ]
        .into_iter()
        .find(|m| m.arg() == s)
    }

    /// Appended to a scenario's name.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            CidMode::Flowpin => "",
            CidMode::QuicLbPlain => " (QUIC-LB plaintext)",
            CidMode::QuicLbEncrypted => " (QUIC-LB encrypted)",
        }
    }

    /// A lab key per codepoint (a lab's, never printed).
    fn key(config_id: u8) -> QuicLbKey {
        let mut k = [0u8; 16];
        for (i, b) in k.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37) ^ 0xa5 ^ config_id.wrapping_mul(91);
        }
        QuicLbKey::new(k)
    }

    /// The QUIC-LB configuration at `config_id` (0: initial, 1: rotated);
    /// `None` for the flowpin layout.
    pub(crate) fn config(self, config_id: u8) -> Option<QuicLbConfig> {
        let plain = QuicLbConfig::new(config_id, SID_LEN, NONCE_LEN).ok()?;
        match self {
            CidMode::Flowpin => None,
            CidMode::QuicLbPlain => Some(plain),
            CidMode::QuicLbEncrypted => Some(plain.with_key(Some(Self::key(config_id)))),
        }
    }

    /// The CID length servers issue: the configuration's, + 2 for the
    /// socket id at the end.
    pub(crate) fn cid_len(self) -> usize {
        match self.config(0) {
            None => DEFAULT_CID_LEN,
            Some(c) => c.cid_len() + 2,
        }
    }

    /// What the VIP declares while configurations `ids` are live.
    pub(crate) fn vip_cid(self, ids: &[u8]) -> VipCid {
        if self == CidMode::Flowpin {
            return VipCid::Flowpin {
                cid_len: DEFAULT_CID_LEN as u8,
            };
        }
        VipCid::QuicLb(
            ids.iter()
                .filter_map(|&id| self.config(id))
                .map(|c| match c.key() {
                    None => QuicLbConf::plaintext(c.config_id(), SID_LEN, NONCE_LEN),
                    Some(k) => {
                        QuicLbConf::encrypted(c.config_id(), SID_LEN, NONCE_LEN, *k.expose())
                    }
                })
                .collect(),
        )
    }
}
