//! Errors of the `xdp_lb` control API.

use super::maps::ApplyError;
use super::Vip;
use crate::xdp_attach::XdpAttachError;

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
    /// The control state contradicts itself (a bug: please report it).
    #[error("internal error: {0}")]
    Internal(String),
    /// The VIP is not configured.
    #[error("VIP {0} is not configured; add it with add_vip first")]
    UnknownVip(Vip),
    /// No VIP has this backend.
    #[error("backend {0} is not a backend of any VIP; add it with set_backends first")]
    UnknownBackend(std::net::IpAddr),
    /// The VIP is already configured.
    #[error("VIP {0} is already configured; remove_vip it first to change its flags")]
    VipExists(Vip),
    /// A VIP argument is inconsistent.
    #[error("invalid VIP {vip}: {why}")]
    InvalidVip {
        /// The VIP.
        vip: Vip,
        /// What is wrong.
        why: &'static str,
    },
    /// All VIP slots are in use.
    #[error("all {max} VIP slots are in use; raise XdpLbConfig::max_vips")]
    TooManyVips {
        /// The configured maximum.
        max: u32,
    },
    /// All backend slots are in use.
    #[error("all {max} backend slots are in use; raise XdpLbConfig::max_backends")]
    TooManyBackends {
        /// The configured maximum.
        max: u32,
    },
    /// A backend list is inconsistent.
    #[error("invalid backend list for VIP {vip}: {why}")]
    InvalidBackends {
        /// The VIP.
        vip: Vip,
        /// What is wrong.
        why: String,
    },
    /// Building the Maglev table failed.
    #[error("building the Maglev table failed: {0}")]
    Maglev(#[from] flowpin_maglev::Error),
    /// The pinned maps contradict themselves (written by hand, or by a
    /// process that crashed in a way the ordering rules do not cover).
    #[error("the pinned xdp_lb state is inconsistent: {0}; remove the pin directory (XdpLb::unpin) and configure a new instance")]
    PinnedStateCorrupt(String),
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
