//! Attaching to a cgroup v2: [`CgroupRef`] names it, [`SockopsLink`]
//! detaches on drop unless pinned.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::error::KernelError;
use crate::link::{BpfLink, LinkError};

/// A cgroup v2 directory to attach to: a path or an open directory.
pub type CgroupRef<'a> = crate::file_ref::FileRef<'a>;

/// The program attached to one cgroup through a BPF link. The
/// [`Link`](crate::link::Link) verbs: dropping it detaches the program
/// unless it is pinned.
#[derive(Debug)]
pub struct SockopsLink {
    link: BpfLink,
    cgroup: String,
}

crate::link::delegate_link!(SockopsLink, link);

impl SockopsLink {
    /// The cgroup attached to (its path, `fd N`, or `pinned <path>`).
    pub fn cgroup(&self) -> &str {
        &self.cgroup
    }

    /// The BPF link's fd.
    pub fn link_fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }

    /// Reopens a link pinned by [`Link::pin`](crate::link::Link::pin).
    pub fn from_pinned(path: impl AsRef<Path>) -> Result<SockopsLink, LinkError> {
        let path = path.as_ref();
        let (link, _) = BpfLink::from_pinned(
            path,
            libbpf_rs::libbpf_sys::BPF_LINK_TYPE_CGROUP,
            "cgroup link",
        )?;
        Ok(SockopsLink {
            link,
            cgroup: format!("pinned {}", path.display()),
        })
    }
}

/// Creates a `BPF_CGROUP_SOCK_OPS` link of `prog` on `cgroup`.
pub(super) fn attach(
    prog: BorrowedFd<'_>,
    cgroup: CgroupRef<'_>,
) -> Result<SockopsLink, KernelError> {
    match cgroup {
        CgroupRef::Path(path) => {
            let dir = File::open(&path).map_err(|e| {
                KernelError::io(
                    format!("cgroup {}", path.display()),
                    "open",
                    &e,
                    "is it a directory on the cgroup2 file system (see /proc/self/mounts)?",
                )
            })?;
            attach_fd(prog, dir.as_fd(), path.display().to_string())
        }
        CgroupRef::Fd(fd) => attach_fd(prog, fd, format!("fd {}", fd.as_raw_fd())),
    }
}

fn attach_fd(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    name: String,
) -> Result<SockopsLink, KernelError> {
    // SAFETY: both fds are valid open fds for the duration of the call;
    // a NULL opts pointer is allowed by bpf_link_create (no options).
    let fd = unsafe {
        libbpf_rs::libbpf_sys::bpf_link_create(
            prog.as_raw_fd(),
            cgroup.as_raw_fd(),
            libbpf_rs::libbpf_sys::BPF_CGROUP_SOCK_OPS,
            std::ptr::null(),
        )
    };
    if fd < 0 {
        return Err(KernelError::errno(
            format!("cgroup {name}"),
            "bpf_link_create(BPF_CGROUP_SOCK_OPS)",
            -fd,
            "EBADF/ENOTDIR: not a cgroup v2 directory; EPERM: need CAP_BPF + CAP_NET_ADMIN",
        ));
    }
    // SAFETY: bpf_link_create returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(SockopsLink {
        link: BpfLink::new(fd, "cgroup link"),
        cgroup: name,
    })
}
