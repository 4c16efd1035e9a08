//! The registry's description of VIPs and backends, as stored (JSON) and as
//! watched (validated snapshots).
//!
//! A VIP's identity ([`Vip`]), protocol ([`Proto`]) and flags
//! ([`VipFlags`]) are the suite's own types (`flowpin_bpf_abi::vip`), the
//! ones the load balancer takes; [`VipSpec`] and [`BackendSpec`] are the
//! registry's (the field names and meanings are the load balancer's: a
//! backend's `weight` is its Maglev weight, `server_id` the id it writes
//! into its SYN-ACKs, `state` whether the ring may give it new flows).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

pub use flowpin_bpf_abi::vip::{Proto, Vip, VipFlags};
use flowpin_tcp_opt::ServerId;
use serde::{Deserialize, Serialize};

/// Largest accepted backend weight: the load balancer's
/// ([`flowpin_lb_core::weight`], where the one rule for weights is
/// written). The registry accepts `0..=MAX_WEIGHT`, as the load balancer
/// and the node do: 0 means no new flows, the backend still reachable by
/// server_id and the connection table. To drain a backend and bring it
/// back with its share, set its state to `draining` (its weight stays).
pub use flowpin_lb_core::MAX_WEIGHT;

/// A VIP as stored under `routing/vips/`: its identity and its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipSpec {
    /// Destination address.
    pub addr: IpAddr,
    /// Destination port (0 with `flags.port_agnostic()`).
    pub port: u16,
    /// Protocol.
    pub proto: Proto,
    /// Features.
    #[serde(default)]
    pub flags: VipFlags,
    /// When the writer stored this value: unix time in milliseconds, set by
    /// [`Registry::put_vip`](crate::Registry::put_vip) (the value given is
    /// ignored). Absent in values written before the field existed. Lets an
    /// LB measure the time from an etcd change to its map write (the
    /// writer's and the LB's clocks must be NTP-synced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_ms: Option<u64>,
}

impl VipSpec {
    /// A VIP with the given flags.
    pub fn new(vip: Vip, flags: VipFlags) -> VipSpec {
        VipSpec {
            addr: vip.addr,
            port: vip.port,
            proto: vip.proto,
            flags,
            updated_at_ms: None,
        }
    }

    /// Its identity.
    pub fn key(&self) -> Vip {
        Vip::new(self.addr, self.port, self.proto)
    }
}

/// Whether the ring may give a backend new flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// In the ring: gets new flows.
    #[default]
    Active,
    /// Out of the ring, still reachable by server_id and the connection
    /// table: its existing flows finish, it gets no new ones.
    Draining,
}

/// A backend of one VIP, as registered by the backend host.
///
/// Stored as JSON `{"addr":"10.1.0.2","weight":100,"server_id":7,"state":"active","updated_at_ms":1767225600000}`;
/// `server_id` 0 or absent means none (the backend is reached by the ring and
/// the connection table only); `updated_at_ms` may be absent (values written
/// before it existed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendSpec {
    /// The backend host's address (tunnel destination).
    pub addr: IpAddr,
    /// Maglev weight, `0..=MAX_WEIGHT` (0: no new flows; see
    /// [`flowpin_lb_core::weight`]).
    pub weight: u32,
    /// The host's server_id, if it runs the sock_ops program.
    pub server_id: Option<ServerId>,
    /// Active or draining.
    pub state: BackendState,
    /// When the writer stored this value: unix time in milliseconds, set by
    /// [`Registration::add_backends`](crate::Registration::add_backends) and
    /// the calls built on it (the value given is ignored); `None` in values
    /// written before the field existed. The writer's and the LB's clocks
    /// must be NTP-synced for a change-to-map-write time to mean anything.
    pub updated_at_ms: Option<u64>,
}

impl BackendSpec {
    /// An active backend.
    pub fn new(addr: IpAddr, weight: u32, server_id: Option<ServerId>) -> BackendSpec {
        BackendSpec {
            addr,
            weight,
            server_id,
            state: BackendState::Active,
            updated_at_ms: None,
        }
    }
}

/// The JSON form of [`BackendSpec`] (server_id as a plain number, 0 = none).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackendJson {
    pub(crate) addr: IpAddr,
    pub(crate) weight: u32,
    #[serde(default)]
    pub(crate) server_id: u32,
    #[serde(default)]
    pub(crate) state: BackendState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) updated_at_ms: Option<u64>,
}

impl From<&BackendSpec> for BackendJson {
    fn from(b: &BackendSpec) -> BackendJson {
        BackendJson {
            addr: b.addr,
            weight: b.weight,
            server_id: b.server_id.map_or(0, u32::from),
            state: b.state,
            updated_at_ms: b.updated_at_ms,
        }
    }
}

impl From<BackendJson> for BackendSpec {
    fn from(b: BackendJson) -> BackendSpec {
        BackendSpec {
            addr: b.addr,
            weight: b.weight,
            server_id: ServerId::new(b.server_id),
            state: b.state,
            updated_at_ms: b.updated_at_ms,
        }
    }
}

/// A VIP of a snapshot with its accepted backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipEntry {
    /// The VIP and its flags.
    pub spec: VipSpec,
    /// Its backends, by address.
    pub backends: BTreeMap<IpAddr, BackendSpec>,
    /// Its health check and the verdicts on its backends
    /// ([`crate::health`]); empty without a check.
    pub health: crate::health::VipHealth,
}

/// Why an entry of the registry was rejected. Counted per kind in
/// [`RejectCounts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RejectKind {
    /// The key under the prefix does not follow the layout (or is not in
    /// canonical form, e.g. `010.0.0.1` or an uncompressed IPv6 address).
    MalformedKey,
    /// The value is not the JSON the key calls for (syntax, field types,
    /// unknown fields).
    MalformedValue,
    /// The value describes another VIP / backend than its key names.
    KeyMismatch,
    /// Unspecified, multicast or broadcast address.
    BadAddress,
    /// Weight above [`MAX_WEIGHT`] (0 is valid: no new flows).
    BadWeight,
    /// VIP flags that contradict the VIP (port-agnostic with a port, QUIC on
    /// TCP, server_id on UDP, ...).
    BadFlags,
    /// A backend of a VIP that is not in the registry.
    UnknownVip,
    /// A server_id already carried by another backend address (or an address
    /// registered with two server_ids); the entry created first wins.
    DuplicateServerId,
    /// A health check, verdict or self-report that is not valid (the
    /// reason says which field); a VIP whose check is rejected is not
    /// health-checked.
    BadHealthCheck,
}

impl RejectKind {
    /// Every kind, in counter order.
    pub const ALL: [RejectKind; 9] = [
        RejectKind::MalformedKey,
        RejectKind::MalformedValue,
        RejectKind::KeyMismatch,
        RejectKind::BadAddress,
        RejectKind::BadWeight,
        RejectKind::BadFlags,
        RejectKind::UnknownVip,
        RejectKind::DuplicateServerId,
        RejectKind::BadHealthCheck,
    ];

    /// Snake-case name (for logs and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::MalformedKey => "malformed_key",
            RejectKind::MalformedValue => "malformed_value",
            RejectKind::KeyMismatch => "key_mismatch",
            RejectKind::BadAddress => "bad_address",
            RejectKind::BadWeight => "bad_weight",
            RejectKind::BadFlags => "bad_flags",
            RejectKind::UnknownVip => "unknown_vip",
            RejectKind::DuplicateServerId => "duplicate_server_id",
            RejectKind::BadHealthCheck => "bad_health_check",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            RejectKind::MalformedKey => 0,
            RejectKind::MalformedValue => 1,
            RejectKind::KeyMismatch => 2,
            RejectKind::BadAddress => 3,
            RejectKind::BadWeight => 4,
            RejectKind::BadFlags => 5,
            RejectKind::UnknownVip => 6,
            RejectKind::DuplicateServerId => 7,
            RejectKind::BadHealthCheck => 8,
        }
    }
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the registry that is currently not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The etcd key (lossy UTF-8).
    pub key: String,
    /// The entry's `mod_revision`.
    pub mod_revision: i64,
    /// Why.
    pub kind: RejectKind,
    /// What exactly was wrong.
    pub reason: String,
}

/// How many entry versions were rejected, per kind, since the watch started.
/// An entry version (key, mod_revision) is counted once per kind, however
/// many snapshots it stays rejected in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RejectCounts([u64; 9]);

impl RejectCounts {
    /// The count of one kind.
    pub fn get(&self, kind: RejectKind) -> u64 {
        self.0[kind.index()]
    }

    /// Sum over every kind.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(kind, count)` for every kind.
    pub fn iter(&self) -> impl Iterator<Item = (RejectKind, u64)> + '_ {
        RejectKind::ALL.iter().map(|k| (*k, self.get(*k)))
    }

    pub(crate) fn add(&mut self, kind: RejectKind) {
        self.0[kind.index()] += 1;
    }
}

/// The registry's content at one etcd revision, validated: every VIP with its
/// accepted backends, the entries that were rejected, and the counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The etcd revision this snapshot is the state of (0: never synced).
    ///
    /// A running watch moves it with each change under `routing/`; a new
    /// watch (or a resync) reads the store's revision, which writes outside
    /// `routing/` (server_id claims, QUIC-LB acknowledgements) move too. Two
    /// watches with the same content may so differ: to know whether a write
    /// is in a snapshot, compare with the revision the write returned
    /// (`snapshot.revision >= written`), not with another watch's.
    pub revision: i64,
    /// Every valid VIP with its valid backends.
    pub vips: BTreeMap<Vip, VipEntry>,
    /// Entries present at `revision` but not applied, by key.
    pub rejected: Vec<Rejection>,
    /// Rejections counted since the watch started.
    pub reject_counts: RejectCounts,
}

impl Snapshot {
    /// The backends of a VIP (None: VIP not in the registry).
    pub fn backends(&self, vip: &Vip) -> Option<&BTreeMap<IpAddr, BackendSpec>> {
        self.vips.get(vip).map(|v| &v.backends)
    }

    /// Number of accepted backends over every VIP.
    pub fn backend_count(&self) -> usize {
        self.vips.values().map(|v| v.backends.len()).sum()
    }
}
