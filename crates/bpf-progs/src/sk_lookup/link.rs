//! [`SkLookup::attach`] and the BPF link it returns.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::{KernelError, Result, SkLookup, SkLookupError};
use crate::link::{BpfLink, LinkError};

/// A network namespace to attach to: a path (`/run/netns/<name>`,
/// `/proc/<pid>/ns/net`) or an open namespace file.
pub type NetnsRef<'a> = crate::file_ref::FileRef<'a>;

/// The program attached to a network namespace through a BPF link. The
/// [`Link`](crate::link::Link) verbs: dropping it detaches the program at
/// once (`BPF_LINK_DETACH`: closing the fd alone would leave it attached
/// while any copy of the fd lives, e.g. in a child forked by another
/// thread and not yet exec'd) unless it is pinned; a pinned link stays
/// until its pin is removed and every handle of it is dropped, or it is
/// detached.
#[derive(Debug)]
pub struct SkLookupLink {
    link: BpfLink,
    target: String,
}

crate::link::delegate_link!(SkLookupLink, link);

impl SkLookupLink {
    /// The namespace attached to (its path, `fd N`, or `pinned <path>`).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The link's fd.
    pub fn link_fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }

    /// Opens a link pinned by [`Link::pin`](crate::link::Link::pin), in
    /// this or another process.
    pub fn from_pinned(path: impl AsRef<Path>) -> std::result::Result<Self, LinkError> {
        let path = path.as_ref();
        let (link, _) = BpfLink::from_pinned(
            path,
            libbpf_rs::libbpf_sys::BPF_LINK_TYPE_NETNS,
            "sk_lookup link",
        )?;
        Ok(SkLookupLink {
            link,
            target: format!("pinned {}", path.display()),
        })
    }
}

impl SkLookup {
    /// Attaches the program to a network namespace with a BPF link
    /// (`BPF_SK_LOOKUP`). Several sk_lookup programs may be attached to one
    /// namespace; they run in attach order and the first to pick a socket wins.
    pub fn attach<'a>(&self, netns: impl Into<NetnsRef<'a>>) -> Result<SkLookupLink> {
        match netns.into() {
            NetnsRef::Path(path) => {
                let f = File::open(&path).map_err(|source| SkLookupError::Open {
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
        // SAFETY: bpf_link_create returned a new fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SkLookupLink {
            link: BpfLink::new(fd, "sk_lookup link"),
            target,
        })
    }
}
