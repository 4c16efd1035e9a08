//! The registry's error type.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::model::RejectKind;

/// What can go wrong talking to the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cluster prefix is empty or has characters other than printable ASCII.
    #[error("registry prefix {prefix:?} is not usable: give a non-empty prefix of printable ASCII without spaces, e.g. \"/flowpin/prod\"")]
    BadPrefix {
        /// The prefix given.
        prefix: String,
    },
    /// No endpoint was given.
    #[error("no etcd endpoint given: pass at least one, e.g. \"http://127.0.0.1:2379\"")]
    NoEndpoints,
    /// An endpoint that does not fit the TLS settings.
    #[error("etcd endpoint {endpoint:?}: {why}")]
    BadEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong and what to write instead.
        why: &'static str,
    },
    /// A host identity that cannot be a key segment.
    #[error("host identity {host:?} is not usable: give 1..=253 bytes of printable ASCII without '/' (e.g. the host name)")]
    BadHost {
        /// The identity given.
        host: String,
    },
    /// A value this process was asked to write fails validation (every LB
    /// would reject it).
    #[error("refusing to write an invalid entry ({kind}): {reason}")]
    Invalid {
        /// The rejection kind an LB would count.
        kind: RejectKind,
        /// What is wrong.
        reason: String,
    },
    /// The backend is not part of this registration.
    #[error("backend {backend} of VIP {vip} is not registered by this registration: add it with add_backend first")]
    NotRegistered {
        /// The VIP.
        vip: String,
        /// The backend address.
        backend: String,
    },
    /// A TTL or quarantine too short or too long for etcd leases.
    #[error("{what} of {value:?} is out of range: use {min:?}..={max:?}")]
    BadDuration {
        /// Which setting.
        what: &'static str,
        /// The value given.
        value: Duration,
        /// Smallest accepted.
        min: Duration,
        /// Largest accepted.
        max: Duration,
    },
    /// No server_id could be claimed: every id tried was taken (live or in
    /// quarantine), or other hosts kept winning the race.
    #[error("no free server_id after {attempts} attempts in {range:?}: the id range is (nearly) full of live or quarantined ids; widen it or wait for quarantined ids to expire")]
    NoFreeServerId {
        /// Claims tried.
        attempts: u32,
        /// The id range.
        range: RangeInclusive<u32>,
    },
    /// A stored value of this process's own keys cannot be read back.
    #[error(
        "stored value at {key} is corrupt ({source}); delete the key (etcdctl del {key}) and retry"
    )]
    Corrupt {
        /// The key.
        key: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// etcd did not answer in time.
    #[error("etcd did not answer {op} within {timeout:?}: check that etcd is up and reachable at the configured endpoints")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The time allowed.
        timeout: Duration,
    },
    /// etcd refused or failed an operation.
    #[error("etcd {op} failed: {source}; check that etcd is up and reachable at the configured endpoints")]
    Etcd {
        /// The operation.
        op: &'static str,
        /// The client's error.
        source: etcd_client::Error,
    },
    /// The lease behind a registration was lost (expired while etcd was
    /// unreachable) and could not be re-established.
    #[error("lease {lease} is gone (expired or revoked): the registration must be re-created")]
    LeaseLost {
        /// The lease id.
        lease: i64,
    },
    /// Starting a local etcd (tests, labs; feature `local-etcd`) failed.
    #[error("could not start etcd ({what}): {detail}")]
    LocalEtcd {
        /// The step that failed.
        what: &'static str,
        /// Why, and what to do.
        detail: String,
    },
}

/// `Result` with the registry's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn etcd(op: &'static str) -> impl FnOnce(etcd_client::Error) -> Error {
    move |source| Error::Etcd { op, source }
}
