//! The error every module of this crate builds on: [`KernelError`], a
//! failed kernel call (`bpf(2)`, `setsockopt`, `setns`, a pin) on a BPF
//! object, owned by flowpin — which object, which operation, the errno and
//! what to do. No `libbpf_rs::Error` reaches the public API, so flowpin's
//! semver is not tied to libbpf-rs'.
//!
//! Each module has one `#[non_exhaustive]` error enum of the same shape:
//!
//! ```text
//! pub enum <Prog>Error {
//!     InvalidConfig(String),          // the config is unusable: what and why
//!     Kernel(KernelError),            // open / load / attach / map / pin
//!     ...                             // what only this program can say
//! }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::io;

/// A kernel call that failed: on what, doing what, with which errno, and
/// what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KernelError {
    /// The program, map, link, pin or namespace the call was about, e.g.
    /// `map tunnel_v4`, `program xdp_lb`, `object xdp_decap`.
    pub object: Cow<'static, str>,
    /// The operation: `open`, `load`, `set_max_entries`, `update`,
    /// `lookup_percpu`, `bpf_link_create`, `pin`, `setns`, ...
    pub op: &'static str,
    /// errno, when the kernel or libbpf reported one.
    pub errno: Option<i32>,
    /// What the kernel or libbpf said, with its context.
    pub detail: String,
    /// What to check or do (empty: derived from the errno, see
    /// [`KernelError::hint`]).
    pub hint: &'static str,
}

impl KernelError {
    /// A failure with an explicit errno (e.g. from a raw `bpf_*` call).
    pub fn errno(
        object: impl Into<Cow<'static, str>>,
        op: &'static str,
        errno: i32,
        hint: &'static str,
    ) -> Self {
        KernelError {
            object: object.into(),
            op,
            errno: Some(errno),
            detail: io::Error::from_raw_os_error(errno).to_string(),
            hint,
        }
    }

    /// A failure reported as an `io::Error`.
    pub fn io(
        object: impl Into<Cow<'static, str>>,
        op: &'static str,
        e: &io::Error,
        hint: &'static str,
    ) -> Self {
        KernelError {
            object: object.into(),
            op,
            errno: e.raw_os_error().or_else(|| errno_of_kind(e.kind())),
            detail: e.to_string(),
            hint,
        }
    }

    /// A failure reported by libbpf-rs; its errno is recovered from the
    /// message (`... (os error N)`) or, failing that, from its kind.
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
            errno: errno_in(&detail).or_else(|| errno_of_kind(io_kind(e.kind()))),
            detail,
            hint,
        }
    }

    /// A value (or key) of `got` bytes where `want` were expected: the
    /// program and this library disagree on a layout (EINVAL).
    pub(crate) fn out_of_sync(
        object: impl Into<Cow<'static, str>>,
        op: &'static str,
        got: usize,
        want: usize,
    ) -> Self {
        KernelError {
            object: object.into(),
            op,
            errno: Some(libc_errno::EINVAL),
            detail: format!("{got}-byte value, expected {want} bytes"),
            hint: "the program (or pinned map) and this library are out of sync: load both from the same flowpin build",
        }
    }

    /// `map_err` adapter for an operation on map `name`.
    pub(crate) fn map(
        name: &'static str,
        op: &'static str,
    ) -> impl FnOnce(libbpf_rs::Error) -> KernelError {
        move |e| KernelError::libbpf(format!("map {name}"), op, &e, "")
    }

    /// `map_err` adapter for an operation on a whole object (open, load).
    pub(crate) fn object(
        object: &'static str,
        op: &'static str,
        hint: &'static str,
    ) -> impl FnOnce(libbpf_rs::Error) -> KernelError {
        move |e| KernelError::libbpf(object, op, &e, hint)
    }

    /// Whether errno is `code`.
    pub fn is(&self, code: i32) -> bool {
        self.errno == Some(code)
    }

    /// The error class of the errno.
    pub fn kind(&self) -> io::ErrorKind {
        self.errno
            .map(|e| io::Error::from_raw_os_error(e).kind())
            .unwrap_or(io::ErrorKind::Other)
    }

    /// What to do: the hint given where the error was made, or one derived
    /// from the errno.
    pub fn hint(&self) -> &'static str {
        if !self.hint.is_empty() {
            return self.hint;
        }
        match self.errno {
            Some(libc_errno::EPERM) | Some(libc_errno::EACCES) => {
                "run as root (CAP_BPF + CAP_NET_ADMIN); a pin must be on bpffs"
            }
            Some(libc_errno::ENOENT) => "the key, pin or object does not exist",
            Some(libc_errno::E2BIG) | Some(libc_errno::ENOMEM) => {
                "the map is full or the kernel is out of memory: raise the map's size in the config"
            }
            Some(libc_errno::EINVAL) => {
                "the kernel rejected the arguments: the program and this library may be out of sync"
            }
            Some(libc_errno::EEXIST) | Some(libc_errno::EBUSY) => {
                "something is already there (attached program, pin, key): remove it first"
            }
            _ => "",
        }
    }
}

/// The errno values the hints name (Linux, every architecture flowpin builds for).
mod libc_errno {
    pub(super) const EPERM: i32 = 1;
    pub(super) const ENOENT: i32 = 2;
    pub(super) const E2BIG: i32 = 7;
    pub(super) const ENOMEM: i32 = 12;
    pub(super) const EACCES: i32 = 13;
    pub(super) const EBUSY: i32 = 16;
    pub(super) const EEXIST: i32 = 17;
    pub(super) const EINVAL: i32 = 22;
}

/// The errno of an `io::Error` message, `"... (os error N)"`.
fn errno_in(s: &str) -> Option<i32> {
    let start = s.rfind("(os error ")? + "(os error ".len();
    let rest = &s[start..];
    rest[..rest.find(')')?].parse().ok()
}

fn errno_of_kind(k: io::ErrorKind) -> Option<i32> {
    use libc_errno::*;
    Some(match k {
        io::ErrorKind::NotFound => ENOENT,
        io::ErrorKind::PermissionDenied => EPERM,
        io::ErrorKind::AlreadyExists => EEXIST,
        io::ErrorKind::InvalidInput => EINVAL,
        io::ErrorKind::OutOfMemory => ENOMEM,
        _ => return None,
    })
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

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {} failed: {}", self.op, self.object, self.detail)?;
        let hint = self.hint();
        if !hint.is_empty() {
            write!(f, " — {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for KernelError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_is_recovered_from_libbpf_errors() {
        let e = libbpf_rs::Error::from_raw_os_error(17);
        let k = KernelError::libbpf("map bindings", "update", &e, "");
        assert_eq!(k.errno, Some(17));
        assert!(k.is(17));
        assert_eq!(k.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(errno_in("no errno here"), None);
        let s = k.to_string();
        assert!(s.starts_with("update on map bindings failed"), "{s}");
        assert!(s.contains("remove it first"), "{s}");
        assert_eq!(errno_in("no errno here"), None);
    }

    #[test]
    fn an_explicit_hint_wins() {
        let k = KernelError::errno("map tunnel_v4", "update", 7, "raise max_tunnel_addrs");
        assert_eq!(k.hint(), "raise max_tunnel_addrs");
        assert!(k.to_string().contains("raise max_tunnel_addrs"));
        let k = KernelError::io("netns /x", "open", &io::Error::from_raw_os_error(2), "");
        assert_eq!(k.errno, Some(2));
    }
}
