//! Errors of the `sk_reuseport_select` kernel layer.

use crate::error::KernelError;

/// Errors of the sk_reuseport_select kernel layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// The configuration is unusable.
    #[error("invalid SelectConfig: {0}")]
    InvalidConfig(String),
    /// A kernel call failed: open, load, pin, attach, or a map operation.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The socket-array slot already holds a socket (`EEXIST` from `BPF_NOEXIST`).
    #[error("socket-array slot {key} is busy (already holds a socket); remove it first or use another slot")]
    SlotBusy {
        /// The socket-array key.
        key: u32,
    },
    /// The kernel refused the socket for the socket array (`EINVAL`: not
    /// bound/listening or no `SO_REUSEPORT`; `ENOTSUPP`: not TCP/UDP over IPv4/IPv6).
    #[error("the kernel refused the socket for socket-array slot {key}: {source} — it must be a bound (TCP: listening) SO_REUSEPORT TCP/UDP socket")]
    SocketRefused {
        /// The socket-array key.
        key: u32,
        /// The kernel's error.
        #[source]
        source: KernelError,
    },
    /// Nothing is pinned at `path` ([`SkReuseportSelect::from_pinned`](super::SkReuseportSelect::from_pinned)).
    #[error("nothing is pinned at {}: check the path, or load and pin the group's program there first (SkReuseportSelect::pin)", path.display())]
    NotPinned {
        /// The missing pin or pin directory.
        path: std::path::PathBuf,
    },
    /// A [`Link`](crate::link::Link) verb failed.
    #[error(transparent)]
    Link(#[from] crate::link::LinkError),
    /// An argument is out of range (a key, an index) or the maps hold
    /// something this library never writes.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

crate::pin::from_pin_error!(SelectError);
