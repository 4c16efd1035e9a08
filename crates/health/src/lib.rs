#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod config;
pub mod damper;
#[cfg(feature = "bpf")]
pub mod data_path;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod probe;
pub mod prober;

pub use config::{HealthCheck, HealthConfigError, ProbeKind};
pub use damper::{Damper, Health};
#[cfg(feature = "bpf")]
pub use data_path::TunnelRoutes;
pub use probe::{probe_once, FailReason, ProbeOutcome, ProbeTarget};
pub use prober::{BackendStatus, DirectRoutes, HealthStatus, ProbeRoutes, Prober, RouteError};

#[cfg(feature = "metrics")]
pub(crate) type MetricsHandle = metrics::HealthMetrics;
#[cfg(not(feature = "metrics"))]
pub(crate) type MetricsHandle = ();
