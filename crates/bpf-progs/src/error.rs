//! The error every module of this crate builds on: a failed operation on a
//! BPF object, owned by flowpin (no libbpf-rs type in it), with the errno
//! class and what to do about it.

use std::fmt;
use std::io;

/// A failed operation on a BPF map (or program): which map, which
/// operation, the OS error, and what to do.
#[derive(Debug)]
pub struct MapError {
    /// The map (or object) name.
    pub map: &'static str,
    /// The operation (`update`, `delete`, `lookup`, `update_batch`, ...).
    pub op: &'static str,
    /// The OS error class and libbpf's message (which carries the errno).
    pub error: io::Error,
}

impl MapError {
    /// Converts a libbpf-rs error into a `MapError` (for `map_err`).
    pub(crate) fn libbpf(
        map: &'static str,
        op: &'static str,
    ) -> impl FnOnce(libbpf_rs::Error) -> MapError {
        move |e| MapError {
            map,
            op,
            error: io::Error::new(io_kind(e.kind()), e.to_string()),
        }
    }

    /// What to do about it, from the error class.
    pub fn hint(&self) -> &'static str {
        match self.error.kind() {
            io::ErrorKind::PermissionDenied => "run as root (CAP_BPF + CAP_NET_ADMIN)",
            io::ErrorKind::NotFound => "the key is not in the map",
            io::ErrorKind::OutOfMemory => {
                "the map is full or the kernel is out of memory: raise the map's size in the config"
            }
            io::ErrorKind::InvalidInput => {
                "the key or value does not fit the map: the program and this library are out of sync"
            }
            _ => "see the kernel's error above",
        }
    }
}

fn io_kind(k: libbpf_rs::ErrorKind) -> io::ErrorKind {
    use libbpf_rs::ErrorKind as K;
    match k {
        K::NotFound => io::ErrorKind::NotFound,
        K::PermissionDenied => io::ErrorKind::PermissionDenied,
        K::AlreadyExists => io::ErrorKind::AlreadyExists,
        K::InvalidInput => io::ErrorKind::InvalidInput,
        K::InvalidData => io::ErrorKind::InvalidData,
        K::OutOfMemory => io::ErrorKind::OutOfMemory,
        K::Unsupported => io::ErrorKind::Unsupported,
        K::Interrupted => io::ErrorKind::Interrupted,
        K::TimedOut => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    }
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on map `{}` failed: {} ({})",
            self.op,
            self.map,
            self.error,
            self.hint()
        )
    }
}

impl std::error::Error for MapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
