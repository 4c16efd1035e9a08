//! A VIP's QUIC-LB configurations (draft-ietf-quic-load-balancers-21) and
//! their rotation, as stored in etcd, with the pure decisions of the
//! rotation order.
//!
//! # Keys (beside `routing/`, which load balancers validate as they always did)
//!
//! | key | value | written by |
//! |---|---|---|
//! | `quic_lb/configs/{proto}/{ip}/{port}/{config_id}` | [`QuicLbConfigSpec`] JSON | the operator |
//! | `quic_lb/acks/{lb}` | [`QuicLbStatus`] JSON: configs applied | each LB, under its lease |
//! | `quic_lb/issuing/{host}` | [`QuicLbStatus`] JSON: configs still issued / held | each server, under its lease |
//!
//! A configuration is named by a [`QuicLbConfigRef`]: VIP, codepoint, and
//! the etcd `mod_revision` of its value, so that an acknowledgement of an
//! older value at the same codepoint (another key) never counts.
//!
//! # Rotation, in the draft's order
//!
//! 1. The operator puts a new configuration (state `active`) at a free
//!    codepoint. Load balancers apply every `active` and `retiring`
//!    configuration of a VIP ([`routable`]) and acknowledge what they
//!    applied under their lease.
//! 2. A server issues CIDs only with a configuration every live LB has
//!    acknowledged ([`issuable`]; the newest of a VIP: [`issue_choice`]).
//!    With no live LB, nothing is issuable: unroutable CIDs (`0b111`).
//! 3. The operator marks the old configuration `retiring`
//!    ([`Registry::retire_quic_lb_config`](crate::Registry::retire_quic_lb_config)):
//!    servers stop issuing it, LBs still route it. Servers report under
//!    their lease the configurations they still issue or have live CIDs of.
//! 4. It is deleted ([`removable`]) once no live server reports it and a
//!    grace period since it began retiring has passed.
//!
//! Keys are stored as hex in the value (protect etcd with auth/TLS; the
//! key never appears in `Debug` output, errors or logs of this crate).

use std::collections::BTreeSet;

use flowpin_tcp_opt::quic_lb::{QuicLbConfig, QuicLbKey};
use serde::{Deserialize, Serialize};

use crate::model::Vip;

/// Whether servers may issue a configuration's CIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuicLbConfigState {
    /// Issued by servers (once every live LB has acknowledged it) and routed.
    #[default]
    Active,
    /// Routed, no longer issued: its CIDs are being retired.
    Retiring,
}

/// Which AES-128 engine load balancers decrypt an encrypted configuration's
/// CIDs with (JSON `"engine"`). The trade-off is documented in
/// `crates/bpf-progs/README.md` ("Encrypted CIDs in XDP: two engines"):
/// constant-time is the default; the table engine is faster but leaks key
/// bits through cache timing to code sharing the CPU caches, so it is an
/// explicit choice. Any other value is rejected (the configuration is not
/// applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuicLbEngine {
    /// Constant-time (`"constant-time"`, the default).
    #[default]
    ConstantTime,
    /// Table-based, faster, NOT constant-time (`"table"`).
    Table,
}

impl QuicLbEngine {
    /// `"constant-time"` or `"table"`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            QuicLbEngine::ConstantTime => "constant-time",
            QuicLbEngine::Table => "table",
        }
    }

    fn is_default(&self) -> bool {
        *self == QuicLbEngine::ConstantTime
    }
}

impl std::str::FromStr for QuicLbEngine {
    type Err = String;

    fn from_str(s: &str) -> Result<QuicLbEngine, String> {
        match s {
            "constant-time" => Ok(QuicLbEngine::ConstantTime),
            "table" => Ok(QuicLbEngine::Table),
            other => Err(format!(
                "unknown AES engine {other:?}: use \"constant-time\" (the default) or \"table\" \
                 (faster, not constant-time)"
            )),
        }
    }
}

impl std::fmt::Display for QuicLbEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A QUIC-LB configuration of a VIP as stored (the codepoint is in the
/// key). JSON: `{"server_id_len":2,"nonce_len":6,"key":"<32 hex digits>"}`
/// (`key` absent: plaintext; `state` absent: active; `engine` absent:
/// `"constant-time"`, else `"table"`, only with a key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicLbConfigSpec {
    /// Server ID octets, 1..=15 (1..=4 for `xdp_lb`'s routing).
    pub server_id_len: u8,
    /// Nonce octets, 4..=18; server ID + nonce at most 19.
    pub nonce_len: u8,
    /// The AES-128 key; `None`: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "key_hex")]
    pub key: Option<QuicLbKey>,
    /// Active or retiring.
    #[serde(default)]
    pub state: QuicLbConfigState,
    /// When it began retiring: unix time in milliseconds (set by
    /// [`Registry::retire_quic_lb_config`](crate::Registry::retire_quic_lb_config)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retiring_since_ms: Option<u64>,
    /// The AES engine of an encrypted configuration (constant-time unless
    /// chosen otherwise; a plaintext configuration keeps the default).
    #[serde(default, skip_serializing_if = "QuicLbEngine::is_default")]
    pub engine: QuicLbEngine,
}

mod key_hex {
    use flowpin_tcp_opt::quic_lb::QuicLbKey;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(k: &Option<QuicLbKey>, s: S) -> Result<S::Ok, S::Error> {
        match k {
            Some(k) => s.serialize_str(&k.expose_hex()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<QuicLbKey>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        // The error names the field, never its value.
        text.parse().map(Some).map_err(|_| {
            serde::de::Error::custom("key: not 32 hex digits (16 octets); the value is not shown")
        })
    }
}

impl QuicLbConfigSpec {
    /// An active configuration.
    pub fn new(server_id_len: u8, nonce_len: u8, key: Option<QuicLbKey>) -> QuicLbConfigSpec {
        QuicLbConfigSpec {
            server_id_len,
            nonce_len,
            key,
            state: QuicLbConfigState::Active,
            retiring_since_ms: None,
            engine: QuicLbEngine::ConstantTime,
        }
    }

    /// The same with AES engine `engine` (for an encrypted configuration).
    pub fn with_engine(mut self, engine: QuicLbEngine) -> QuicLbConfigSpec {
        self.engine = engine;
        self
    }

    /// The codec's configuration at codepoint `config_id`, or why not (a
    /// message naming the limit, never the key).
    pub fn config(&self, config_id: u8) -> Result<QuicLbConfig, String> {
        if self.key.is_none() && self.engine != QuicLbEngine::ConstantTime {
            return Err(format!(
                "engine {:?} is for encrypted configurations (with a key); a plaintext one has no \
                 AES: drop \"engine\" or add a key",
                self.engine.as_str()
            ));
        }
        QuicLbConfig::new(config_id, self.server_id_len, self.nonce_len)
            .map(|c| c.with_key(self.key))
            .map_err(|e| e.to_string())
    }
}

/// Names one stored configuration: VIP, codepoint, and the `mod_revision`
/// of the value (a new value at the same codepoint is another config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicLbConfigRef {
    /// The VIP.
    pub vip: Vip,
    /// The config rotation codepoint, 0..=6.
    pub config_id: u8,
    /// etcd `mod_revision` of the configuration's value.
    pub revision: i64,
}

/// A configuration read from etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredQuicLbConfig {
    /// Which one.
    pub at: QuicLbConfigRef,
    /// As stored.
    pub spec: QuicLbConfigSpec,
    /// The codec's configuration (validated).
    pub config: QuicLbConfig,
}

/// What an LB has applied, or what a server still issues, as stored under
/// `quic_lb/acks/{lb}` or `quic_lb/issuing/{host}` (under the writer's
/// lease: it vanishes with the writer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicLbStatus {
    /// The configurations.
    pub configs: BTreeSet<QuicLbConfigRef>,
}

/// A [`QuicLbStatus`] with its writer (LB id or host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicLbStatusEntry {
    /// The LB's id or the server's host.
    pub who: String,
    /// What it reported.
    pub status: QuicLbStatus,
}

/// What every load balancer applies: each VIP's `active` and `retiring`
/// configurations (retiring ones stay routable until removed).
pub fn routable(configs: &[StoredQuicLbConfig]) -> Vec<StoredQuicLbConfig> {
    configs.to_vec()
}

/// The configurations servers may issue CIDs with: `active`, and
/// acknowledged (this exact value) by every live load balancer. Empty
/// when no load balancer is live.
pub fn issuable(
    configs: &[StoredQuicLbConfig],
    lb_acks: &[QuicLbStatusEntry],
) -> Vec<StoredQuicLbConfig> {
    if lb_acks.is_empty() {
        return Vec::new();
    }
    configs
        .iter()
        .filter(|c| c.spec.state == QuicLbConfigState::Active)
        .filter(|c| lb_acks.iter().all(|a| a.status.configs.contains(&c.at)))
        .copied()
        .collect()
}

/// The configuration a server issues with for `vip`: the newest (highest
/// revision) of the [`issuable`] ones; `None`: issue unroutable CIDs.
pub fn issue_choice(
    vip: &Vip,
    configs: &[StoredQuicLbConfig],
    lb_acks: &[QuicLbStatusEntry],
) -> Option<StoredQuicLbConfig> {
    issuable(configs, lb_acks)
        .into_iter()
        .filter(|c| c.at.vip == *vip)
        .max_by_key(|c| c.at.revision)
}

/// The retiring configurations that may be deleted at `now_ms`: retiring
/// for at least `grace_ms`, and reported by no live server.
pub fn removable(
    configs: &[StoredQuicLbConfig],
    server_reports: &[QuicLbStatusEntry],
    now_ms: u64,
    grace_ms: u64,
) -> Vec<QuicLbConfigRef> {
    configs
        .iter()
        .filter(|c| c.spec.state == QuicLbConfigState::Retiring)
        .filter(|c| {
            c.spec
                .retiring_since_ms
                .is_some_and(|since| now_ms >= since.saturating_add(grace_ms))
        })
        .filter(|c| {
            !server_reports
                .iter()
                .any(|r| r.status.configs.iter().any(|s| same_config(s, &c.at)))
        })
        .map(|c| c.at)
        .collect()
}

/// A server reports the configuration it got (the value's revision when it
/// read it); a retire rewrites the value (new revision) of the same
/// configuration, so VIP and codepoint identify it here, the revision no
/// older than the report's.
fn same_config(reported: &QuicLbConfigRef, stored: &QuicLbConfigRef) -> bool {
    reported.vip == stored.vip
        && reported.config_id == stored.config_id
        && reported.revision <= stored.revision
}

#[cfg(feature = "lb")]
mod desired;
#[cfg(feature = "lb")]
pub use desired::{apply_to_desired, XDP_LB_MAX_SID_LEN};

#[cfg(test)]
mod tests;
