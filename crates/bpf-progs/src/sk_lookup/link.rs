//! [`SkLookup::attach`] and the BPF link it returns.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{KernelError, Result, SkLookup, SkLookupError};

/// A network namespace to attach to: a path (`/run/netns/<name>`,
/// `/proc/<pid>/ns/net`) or an open namespace file.
pub type NetnsRef<'a> = crate::file_ref::FileRef<'a>;

/// The program attached to a network namespace through a BPF link.
///
/// Dropping a link made by [`SkLookup::attach`] detaches the program, at
/// once (`BPF_LINK_DETACH`: closing the fd alone would leave it attached
/// while any copy of the fd lives, e.g. in a child forked by another thread
/// and not yet exec'd) — unless the link was pinned ([`pin`](Self::pin)):
/// a pinned link stays until its pin is removed ([`unpin`](Self::unpin))
/// and every fd of it is closed. Dropping a handle opened with
/// [`from_pinned`](Self::from_pinned) never detaches.
#[derive(Debug)]
pub struct SkLookupLink {
    fd: OwnedFd,
    target: String,
    detach_on_drop: std::cell::Cell<bool>,
}

impl Drop for SkLookupLink {
    fn drop(&mut self) {
        if self.detach_on_drop.get() {
            // SAFETY: a valid link fd. Failure leaves the close to detach.
            let _ = unsafe { libbpf_rs::libbpf_sys::bpf_link_detach(self.fd.as_raw_fd()) };
        }
    }
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| SkLookupError::Open {
        path: p.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path holds a NUL byte"),
    })
}

impl SkLookupLink {
    /// The namespace attached to (its path, or `fd N`).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The link's fd.
    pub fn link_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Pins the link at `path` on bpffs: the program stays attached after
    /// this handle (and this process) is gone.
    pub fn pin(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let c = cpath(path)?;
        // SAFETY: a valid link fd and a NUL-terminated path that outlives the call.
        let rc = unsafe { libbpf_rs::libbpf_sys::bpf_obj_pin(self.fd.as_raw_fd(), c.as_ptr()) };
        if rc < 0 {
            return Err(KernelError::errno(
                format!("pin {}", path.display()),
                "bpf_obj_pin",
                -rc,
                "EEXIST: something is pinned there; ENOENT/EPERM: the directory must exist on bpffs",
            )
            .into());
        }
        self.detach_on_drop.set(false);
        Ok(())
    }

    /// Opens a link pinned by [`pin`](Self::pin), in this or another process.
    pub fn from_pinned(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let c = cpath(path)?;
        // SAFETY: a NUL-terminated path that outlives the call.
        let fd = unsafe { libbpf_rs::libbpf_sys::bpf_obj_get(c.as_ptr()) };
        if fd < 0 {
            return Err(KernelError::errno(
                format!("pin {}", path.display()),
                "bpf_obj_get",
                -fd,
                "ENOENT: no link pinned there",
            )
            .into());
        }
        Ok(SkLookupLink {
            // SAFETY: bpf_obj_get returned a new fd nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            target: format!("pinned {}", path.display()),
            detach_on_drop: std::cell::Cell::new(false),
        })
    }

    /// Removes the pin at `path` (the link lives on while a handle is open).
    pub fn unpin(path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }

    /// Detaches the program from the namespace now, even if the link is
    /// pinned (the pin then holds a dead link; remove it).
    pub fn detach(self) -> Result<()> {
        // SAFETY: a valid link fd.
        let rc = unsafe { libbpf_rs::libbpf_sys::bpf_link_detach(self.fd.as_raw_fd()) };
        if rc < 0 {
            return Err(KernelError::errno("link", "bpf_link_detach", -rc, "").into());
        }
        self.detach_on_drop.set(false);
        Ok(())
    }
}

impl SkLookup {
    /// Attaches the program to a network namespace with a BPF link
    /// (`BPF_SK_LOOKUP`). Several sk_lookup programs may be attached to one
    /// namespace; they run in attach order and the first to pick a socket wins.
    pub fn attach<'a>(&self, netns: impl Into<NetnsRef<'a>>) -> Result<SkLookupLink> {
        match netns.into() {
            NetnsRef::Path(path) => {
                let f = File::open(path).map_err(|source| SkLookupError::Open {
                    path: path.to_path_buf(),
                    source,
                })?;
                self.attach_fd(f.as_fd(), path.display().to_string())
            }
            NetnsRef::Fd(fd) => self.attach_fd(fd, format!("fd {}", fd.as_raw_fd())),
        }
    }

    fn attach_fd(&self, netns: BorrowedFd<'_>, target: String) -> Result<SkLookupLink> {
        // SAFETY: both fds are open for the call; NULL opts means no options.
        let fd = unsafe {
            libbpf_rs::libbpf_sys::bpf_link_create(
                self.program_fd().as_raw_fd(),
                netns.as_raw_fd(),
                libbpf_rs::libbpf_sys::BPF_SK_LOOKUP,
                std::ptr::null(),
            )
        };
        if fd < 0 {
            return Err(KernelError::errno(
                format!("netns {target}"),
                "bpf_link_create(BPF_SK_LOOKUP)",
                -fd,
                "EINVAL/EBADF: not a network namespace file; EPERM: need CAP_NET_ADMIN + CAP_BPF",
            )
            .into());
        }
        Ok(SkLookupLink {
            // SAFETY: bpf_link_create returned a new fd nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            target,
            detach_on_drop: std::cell::Cell::new(true),
        })
    }
}
