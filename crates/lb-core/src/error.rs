//! Errors of the control core: a change that cannot be planned, or map
//! contents that cannot be rebuilt. No kernel call fails here; the
//! applier's errors are its own ([`ApplyError`](crate::ApplyError)).

use crate::Vip;

/// Why a change cannot be planned or a state not rebuilt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LbError {
    /// The control state contradicts itself (a bug: please report it).
    #[error("internal error: {0}")]
    Internal(String),
    /// The VIP is not configured.
    #[error("VIP {0} is not configured; add it with add_vip first")]
    UnknownVip(Vip),
    /// The VIP is already configured.
    #[error("VIP {0} is already configured; change its flags with set_vip_flags, its backends with set_backends")]
    VipExists(Vip),
    /// A VIP argument is inconsistent.
    #[error("invalid VIP {vip}: {why}")]
    InvalidVip {
        /// The VIP.
        vip: Vip,
        /// What is wrong.
        why: &'static str,
    },
    /// A VIP's connection-ID configuration is invalid.
    #[error("invalid connection-ID configuration for VIP {vip}: {why}")]
    InvalidCid {
        /// The VIP.
        vip: Vip,
        /// What is wrong.
        why: String,
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
}
