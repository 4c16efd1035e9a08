//! A VIP's connection-ID layout in `/status` and `flowpin-node status`
//! (issue 22): layout, lengths and QUIC-LB codepoints, never a key.

use std::fmt;

use flowpin_lb_core::{AesEngine, VipCid};
use serde::{Deserialize, Serialize};

/// A VIP's connection-ID layout as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CidStatus {
    /// `any`, `flowpin`, `katran` or `quic-lb`.
    pub layout: String,
    /// Short-header CID length (flowpin, katran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid_len: Option<u8>,
    /// QUIC-LB configurations, by codepoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quic_lb: Vec<QuicLbConfStatus>,
}

/// One QUIC-LB configuration of a VIP (the key is never shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuicLbConfStatus {
    /// Config rotation codepoint 0..=6.
    pub config_id: u8,
    /// Server ID octets.
    pub server_id_len: u8,
    /// Nonce octets.
    pub nonce_len: u8,
    /// Whether CIDs are encrypted.
    pub encrypted: bool,
    /// Decryption engine of an encrypted one: `constant-time` or `table`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

/// `/status`'s view of a VIP's layout (never the key).
impl From<&VipCid> for CidStatus {
    fn from(cid: &VipCid) -> CidStatus {
        let (layout, cid_len, quic_lb) = match cid {
            VipCid::Any => ("any", None, Vec::new()),
            VipCid::Flowpin { cid_len } => ("flowpin", Some(*cid_len), Vec::new()),
            VipCid::Katran { cid_len } => ("katran", Some(*cid_len), Vec::new()),
            VipCid::QuicLb(confs) => (
                "quic-lb",
                None,
                confs
                    .iter()
                    .map(|c| QuicLbConfStatus {
                        config_id: c.config_id,
                        server_id_len: c.server_id_len,
                        nonce_len: c.nonce_len,
                        encrypted: c.key.is_some(),
                        engine: c.key.map(|_| match c.engine {
                            AesEngine::ConstantTime => "constant-time".to_string(),
                            AesEngine::Table => "table".to_string(),
                        }),
                    })
                    .collect(),
            ),
        };
        CidStatus {
            layout: layout.to_string(),
            cid_len,
            quic_lb,
        }
    }
}

impl fmt::Display for CidStatus {
    /// `quic-lb 0:sid2+nonce6/enc-ct,1:sid2+nonce6`, `flowpin/16`, `any`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.layout)?;
        if let Some(n) = self.cid_len {
            write!(f, "/{n}")?;
        }
        for (i, c) in self.quic_lb.iter().enumerate() {
            let sep = if i == 0 { " " } else { "," };
            write!(
                f,
                "{sep}{}:sid{}+nonce{}",
                c.config_id, c.server_id_len, c.nonce_len
            )?;
            match c.engine.as_deref() {
                Some("table") => f.write_str("/enc-table")?,
                Some(_) => f.write_str("/enc-ct")?,
                None => {}
            }
        }
        Ok(())
    }
}
