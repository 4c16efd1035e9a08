//! Errors of the `sk_lookup` module: the crate's flowpin-owned
//! [`KernelError`] (object + operation + errno + what to do) inside a
//! `#[non_exhaustive]` enum of the shape every module shares, so no
//! `libbpf_rs::Error` reaches the public API.

use std::path::PathBuf;

pub use crate::error::KernelError;

/// Errors of the `sk_lookup` kernel layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SkLookupError {
    /// The configuration is unusable.
    #[error("invalid SkLookupConfig: {0}")]
    InvalidConfig(String),
    /// A kernel call failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Pinned maps whose layout is not this build's (another flowpin version).
    #[error("pinned map {map} has {what} {got}, this build expects {want}: the pins belong to another flowpin version; remove them and create new ones")]
    Layout {
        /// The map.
        map: &'static str,
        /// What differs (`key size`, `value size`, `max entries`).
        what: &'static str,
        /// Found.
        got: u32,
        /// Expected.
        want: u32,
    },
    /// An index past the end of a map.
    #[error("{what} {index} is out of range (at most {max})")]
    OutOfRange {
        /// What the index is (label id, destination index).
        what: &'static str,
        /// The index.
        index: u32,
        /// The largest valid value.
        max: u32,
    },
    /// Nothing is pinned at `path` ([`SkLookup::from_pinned`](super::SkLookup::from_pinned)).
    #[error("nothing is pinned at {}: check the path, or load and pin the sk_lookup program there first (SkLookup::pin)", path.display())]
    NotPinned {
        /// The missing pin or pin directory.
        path: PathBuf,
    },
    /// A [`Link`](crate::link::Link) verb failed.
    #[error(transparent)]
    Link(#[from] crate::link::LinkError),
    /// Opening a path (network namespace, pin directory) failed.
    #[error("opening {path}: {source}")]
    Open {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

crate::pin::from_pin_error!(SkLookupError);
