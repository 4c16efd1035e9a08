//! The connection-ID configuration a QUIC VIP declares ([`VipCid`]): which
//! layout `xdp_lb` decodes in its packets' destination connection IDs, and
//! for QUIC-LB its live configurations (config rotation codepoints 0..=6,
//! server ID and nonce lengths, key). Planned as [`MapOp::CidConfig`]
//! writes of the `cid_cfgs` map (`flowpin_lb.h`).
//!
//! [`MapOp::CidConfig`]: crate::MapOp::CidConfig

use std::fmt;

use flowpin_bpf_abi::lb;

/// An AES-128 key of an encrypted QUIC-LB configuration. Its `Debug` does
/// not print it: keys never appear in logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuicLbKey(pub [u8; 16]);

impl fmt::Debug for QuicLbKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("QuicLbKey(<redacted>)")
    }
}

/// Which AES implementation decrypts a VIP's encrypted CIDs in XDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AesEngine {
    /// The kernel's crypto kfuncs with `ecb(aes-fixed-time)`: constant
    /// time, the default.
    #[default]
    ConstantTime,
    /// A table-based AES-128 written in BPF: faster, but NOT constant-time
    /// (its table lookups depend on the key and the CID, a cache-timing
    /// channel to anyone who shares the CPU's caches with the LB). Choose
    /// it explicitly, per VIP, where that is acceptable.
    Table,
}

/// One QUIC-LB configuration (draft-ietf-quic-load-balancers-21 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuicLbConf {
    /// Config rotation codepoint, `0..=6` (the top 3 bits of the CID).
    pub config_id: u8,
    /// Server ID octets, `1..=4` (a flowpin server_id is 32 bits).
    pub server_id_len: u8,
    /// Nonce octets, `4..=18`, with `server_id_len + nonce_len <= 19`.
    pub nonce_len: u8,
    /// `None`: plaintext; `Some`: encrypted with this key.
    pub key: Option<QuicLbKey>,
    /// Decryption engine of an encrypted configuration.
    pub engine: AesEngine,
}

impl QuicLbConf {
    /// A plaintext configuration.
    pub fn plaintext(config_id: u8, server_id_len: u8, nonce_len: u8) -> QuicLbConf {
        QuicLbConf {
            config_id,
            server_id_len,
            nonce_len,
            key: None,
            engine: AesEngine::ConstantTime,
        }
    }

    /// An encrypted configuration (constant-time engine).
    pub fn encrypted(config_id: u8, server_id_len: u8, nonce_len: u8, key: [u8; 16]) -> QuicLbConf {
        QuicLbConf {
            key: Some(QuicLbKey(key)),
            ..QuicLbConf::plaintext(config_id, server_id_len, nonce_len)
        }
    }

    /// With `engine` decrypting it.
    #[must_use]
    pub fn engine(mut self, engine: AesEngine) -> QuicLbConf {
        self.engine = engine;
        self
    }

    /// The CID length: 1 + server ID + nonce.
    pub fn cid_len(&self) -> u8 {
        1 + self.server_id_len + self.nonce_len
    }

    fn check(&self) -> Result<(), String> {
        if self.config_id > 6 {
            return Err(format!(
                "QUIC-LB config id {} not in 0..=6 (0b111 is unroutable)",
                self.config_id
            ));
        }
        if !(1..=4).contains(&self.server_id_len) {
            return Err(format!(
                "QUIC-LB config {}: server ID length {} not in 1..=4",
                self.config_id, self.server_id_len
            ));
        }
        if !(4..=18).contains(&self.nonce_len) || self.server_id_len + self.nonce_len > 19 {
            return Err(format!(
                "QUIC-LB config {}: nonce length {} not in 4..=18 or server ID + nonce above 19",
                self.config_id, self.nonce_len
            ));
        }
        Ok(())
    }
}

/// The connection-ID layout of a QUIC VIP.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum VipCid {
    /// Nothing declared (the default, for VIPs configured before per-VIP
    /// layouts existed): short headers are read in every layout with the
    /// program-wide `quic_cid_len` and QUIC-LB byte, long headers hashed.
    #[default]
    Any,
    /// The flowpin layout, CIDs of `cid_len` octets (8..=20; flowpin-quinn
    /// issues 16).
    Flowpin {
        /// Short-header DCID length.
        cid_len: u8,
    },
    /// Katran v1–v3, CIDs of `cid_len` octets (8..=20).
    Katran {
        /// Short-header DCID length.
        cid_len: u8,
    },
    /// QUIC-LB with up to seven live configurations (distinct ids).
    QuicLb(Vec<QuicLbConf>),
}

/// One `cid_cfgs` entry (`flowpin_cid_cfg`) as the control side writes
/// it; the applier derives the table engine's round keys from `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CidEntry {
    /// `FLOWPIN_CID_*`.
    pub layout: u8,
    /// DCID length.
    pub cid_len: u8,
    /// QUIC-LB server ID octets.
    pub sid_len: u8,
    /// QUIC-LB nonce octets.
    pub nonce_len: u8,
    /// `FLOWPIN_AES_*`.
    pub engine: u8,
    /// AES-128 key (zero for plaintext).
    pub key: QuicLbKey,
}

impl VipCid {
    /// Whether the configuration is valid; the reason if not.
    pub fn check(&self) -> Result<(), String> {
        match self {
            VipCid::Any => Ok(()),
            VipCid::Flowpin { cid_len } | VipCid::Katran { cid_len } => {
                if (8..=20).contains(cid_len) {
                    Ok(())
                } else {
                    Err(format!("CID length {cid_len} not in 8..=20"))
                }
            }
            VipCid::QuicLb(confs) => {
                if confs.is_empty() {
                    return Err("QUIC-LB without a configuration".into());
                }
                let mut seen = [false; 7];
                for c in confs {
                    c.check()?;
                    let s = &mut seen[usize::from(c.config_id)];
                    if *s {
                        return Err(format!("QUIC-LB config id {} listed twice", c.config_id));
                    }
                    *s = true;
                }
                Ok(())
            }
        }
    }

    /// The `cid_cfgs` entries of a VIP, by slot (`None`: zero).
    pub fn entries(&self) -> [Option<CidEntry>; lb::CID_CFGS_PER_VIP as usize] {
        let mut e = [None; lb::CID_CFGS_PER_VIP as usize];
        let mode = |layout: u8, cid_len: u8| CidEntry {
            layout,
            cid_len,
            sid_len: 0,
            nonce_len: 0,
            engine: 0,
            key: QuicLbKey([0; 16]),
        };
        let m = lb::CID_MODE_SLOT as usize;
        match self {
            VipCid::Any => {}
            VipCid::Flowpin { cid_len } => e[m] = Some(mode(lb::CID_FLOWPIN, *cid_len)),
            VipCid::Katran { cid_len } => e[m] = Some(mode(lb::CID_KATRAN, *cid_len)),
            VipCid::QuicLb(confs) => {
                e[m] = Some(mode(lb::CID_QUIC_LB, 0));
                for c in confs {
                    e[usize::from(c.config_id & 7)] = Some(CidEntry {
                        layout: if c.key.is_some() {
                            lb::CID_QUIC_LB_ENC
                        } else {
                            lb::CID_QUIC_LB
                        },
                        cid_len: c.cid_len(),
                        sid_len: c.server_id_len,
                        nonce_len: c.nonce_len,
                        engine: match c.engine {
                            AesEngine::ConstantTime => lb::AES_CONST_TIME,
                            AesEngine::Table => lb::AES_TABLE,
                        },
                        key: c.key.unwrap_or(QuicLbKey([0; 16])),
                    });
                }
            }
        }
        e
    }

    /// The configuration whose entries are `entries` (the inverse of
    /// [`entries`](Self::entries), for a reopened pin); `None` if they
    /// contradict each other.
    pub fn from_entries(entries: &[Option<CidEntry>]) -> Option<VipCid> {
        let mode = entries.get(lb::CID_MODE_SLOT as usize).copied().flatten();
        let Some(mode) = mode else {
            return Some(VipCid::Any);
        };
        match mode.layout {
            lb::CID_FLOWPIN => Some(VipCid::Flowpin {
                cid_len: mode.cid_len,
            }),
            lb::CID_KATRAN => Some(VipCid::Katran {
                cid_len: mode.cid_len,
            }),
            lb::CID_QUIC_LB => {
                let confs = entries
                    .iter()
                    .take(7)
                    .zip(0u8..)
                    .filter_map(|(e, id)| {
                        let e = (*e)?;
                        Some(QuicLbConf {
                            config_id: id,
                            server_id_len: e.sid_len,
                            nonce_len: e.nonce_len,
                            key: (e.layout == lb::CID_QUIC_LB_ENC).then_some(e.key),
                            engine: if e.engine == lb::AES_TABLE {
                                AesEngine::Table
                            } else {
                                AesEngine::ConstantTime
                            },
                        })
                    })
                    .collect();
                Some(VipCid::QuicLb(confs))
            }
            _ => None,
        }
    }

    /// The writes taking a VIP from `prev` to `self`, in a safe order:
    /// towards QUIC-LB the configurations first, then the mode; away from
    /// it the mode first. Each write: (slot, new, previous).
    pub(crate) fn diff(&self, prev: &VipCid) -> Vec<(u8, Option<CidEntry>, Option<CidEntry>)> {
        let (new, old) = (self.entries(), prev.entries());
        let m = lb::CID_MODE_SLOT as usize;
        let mut configs: Vec<_> = (0..m)
            .filter(|&i| new[i] != old[i])
            .map(|i| (i as u8, new[i], old[i]))
            .collect();
        let mode = (new[m] != old[m]).then_some((m as u8, new[m], old[m]));
        if matches!(self, VipCid::QuicLb(_)) {
            configs.extend(mode);
            configs
        } else {
            let mut v: Vec<_> = mode.into_iter().collect();
            v.append(&mut configs);
            v
        }
    }
}
