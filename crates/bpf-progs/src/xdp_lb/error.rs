//! Errors of the `xdp_lb` control API.

use super::maps::ApplyError;
use crate::xdp_attach::XdpAttachError;
use flowpin_lb_core::LbError;

/// Errors of the `xdp_lb` control API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpLbError {
    /// The configuration is unusable.
    #[error("invalid XdpLbConfig: {0}")]
    InvalidConfig(String),
    /// A kernel call failed: open, load, or a map operation.
    #[error(transparent)]
    Kernel(#[from] crate::error::KernelError),
    /// A configuration change did not fully reach the kernel (the error
    /// says whether the kernel was rolled back to the previous configuration).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The control model refused the change, or the pinned maps
    /// contradict themselves (see [`LbError`]).
    #[error(transparent)]
    Plan(#[from] LbError),
    /// No VIP has this backend.
    #[error("backend {0} is not a backend of any VIP; add it with set_backends first")]
    UnknownBackend(std::net::IpAddr),
    /// The pin directory holds a layout this build cannot use.
    #[error("pin directory {dir} holds xdp_lb layout version {found} ({detail}); this build uses version {expected}: drain the node, detach it, remove the pins with XdpLb::unpin and load again, or run the flowpin build that wrote them")]
    IncompatiblePin {
        /// The pin directory.
        dir: std::path::PathBuf,
        /// The version it holds (0: no readable meta map).
        found: u32,
        /// The version of this build.
        expected: u32,
        /// What differs.
        detail: String,
    },
    /// Attaching or a test run failed.
    #[error(transparent)]
    Xdp(#[from] XdpAttachError),
    /// Nothing is pinned at `path` ([`XdpLb::open_pinned`](super::XdpLb::open_pinned)).
    #[error("nothing is pinned at {}: check the path, or load and pin an xdp_lb there first (XdpLb::pin)", path.display())]
    NotPinned {
        /// The missing pin or pin directory.
        path: std::path::PathBuf,
    },
    /// A [`Link`](crate::link::Link) verb failed (pin, update, detach).
    #[error(transparent)]
    Link(#[from] crate::link::LinkError),
}

crate::pin::from_pin_error!(XdpLbError);
