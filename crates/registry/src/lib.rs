#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
pub mod health;
mod health_fleet;
mod health_reporter;
pub mod keys;
#[cfg(feature = "lb")]
pub mod lb;
mod lease;
#[cfg(feature = "local-etcd")]
pub mod local_etcd;
mod model;
pub mod quic_lb;
mod quic_lb_etcd;
mod quic_lb_watch;
mod registry;
mod security;
mod validate;
mod watch;

pub use error::{Error, Result};
pub use flowpin_tcp_opt::ServerId;
pub use health_reporter::HealthReporter;
pub use keys::{KeyKind, KeyLayout};
pub use model::{
    BackendSpec, BackendState, Proto, RejectCounts, RejectKind, Rejection, Snapshot, Vip, VipEntry,
    VipFlags, VipSpec, MAX_WEIGHT,
};
pub use quic_lb_etcd::{QuicLbReporter, QuicLbView};
pub use quic_lb_watch::QuicLbConfigWatch;
pub use registry::{
    AllocateOptions, Registration, Registry, RegistryConfig, ServerIdClaim, DEFAULT_QUARANTINE,
    MAX_QUARANTINE, MAX_TTL, MIN_TTL,
};
pub use security::{EtcdCredentials, EtcdTls};
pub use watch::{SnapshotWatch, WatchStats};
