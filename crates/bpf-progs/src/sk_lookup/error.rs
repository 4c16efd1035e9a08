//! Errors of the `sk_lookup` module: one flowpin-owned [`KernelError`]
//! (object + operation + errno + what to do) inside a `#[non_exhaustive]`
//! enum, so no `libbpf_rs::Error` reaches the public API.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;

/// A kernel (bpf(2), setsockopt, ...) call that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KernelError {
    /// The program, map, link or pin the call was about (e.g. `map bindings`).
    pub object: Cow<'static, str>,
    /// The operation (`update`, `lookup_percpu`, `bpf_link_create`, ...).
    pub op: &'static str,
    /// errno, when the kernel or libbpf reported one.
    pub errno: Option<i32>,
    /// What libbpf said, with its context.
    pub detail: String,
    /// What to check or do.
    pub hint: &'static str,
}

impl KernelError {
    /// A failure with an explicit errno (e.g. from a raw `bpf_*` call).
    pub(crate) fn errno(
        object: impl Into<Cow<'static, str>>,
        op: &'static str,
        errno: i32,
        hint: &'static str,
    ) -> Self {
        KernelError {
            object: object.into(),
            op,
            errno: Some(errno),
            detail: std::io::Error::from_raw_os_error(errno).to_string(),
            hint,
        }
    }

    /// A failure reported by libbpf-rs; its errno is recovered from the
    /// message of the `io::Error` at the root of libbpf-rs's chain.
    pub(crate) fn libbpf(
        object: impl Into<Cow<'static, str>>,
        op: &'static str,
        e: &libbpf_rs::Error,
        hint: &'static str,
    ) -> Self {
        let detail = format!("{e:#}");
        KernelError {
            object: object.into(),
            op,
            errno: errno_in(&detail),
            detail,
            hint,
        }
    }

    /// Whether errno is `code`.
    pub fn is(&self, code: i32) -> bool {
        self.errno == Some(code)
    }
}

/// The errno of an `io::Error` message, `"... (os error N)"`.
fn errno_in(s: &str) -> Option<i32> {
    let start = s.rfind("(os error ")? + "(os error ".len();
    let rest = &s[start..];
    rest[..rest.find(')')?].parse().ok()
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {} failed: {}", self.op, self.object, self.detail)?;
        if !self.hint.is_empty() {
            write!(f, " — {}", self.hint)?;
        }
        Ok(())
    }
}

impl std::error::Error for KernelError {}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_is_recovered_from_libbpf_messages() {
        let e = libbpf_rs::Error::from_raw_os_error(17);
        let k = KernelError::libbpf("map bindings", "update", &e, "");
        assert_eq!(k.errno, Some(17));
        assert!(k.is(17));
        assert!(k.to_string().starts_with("update on map bindings failed"));
        assert_eq!(errno_in("no errno here"), None);
    }
}
