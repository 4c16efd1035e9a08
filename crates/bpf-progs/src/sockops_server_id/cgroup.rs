//! Attaching to a cgroup v2: [`CgroupRef`] names it, [`SockopsLink`]
//! detaches on drop.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::KernelError;

/// A cgroup v2 directory to attach to: a path or an open directory.
#[derive(Debug, Clone, Copy)]
pub enum CgroupRef<'a> {
    /// A directory on the cgroup2 file system.
    Path(&'a Path),
    /// An open cgroup directory.
    Fd(BorrowedFd<'a>),
}

impl<'a> From<&'a Path> for CgroupRef<'a> {
    fn from(p: &'a Path) -> Self {
        CgroupRef::Path(p)
    }
}

impl<'a> From<&'a PathBuf> for CgroupRef<'a> {
    fn from(p: &'a PathBuf) -> Self {
        CgroupRef::Path(p.as_path())
    }
}

impl<'a> From<&'a str> for CgroupRef<'a> {
    fn from(p: &'a str) -> Self {
        CgroupRef::Path(Path::new(p))
    }
}

impl<'a> From<&'a File> for CgroupRef<'a> {
    fn from(f: &'a File) -> Self {
        CgroupRef::Fd(f.as_fd())
    }
}

impl<'a> From<BorrowedFd<'a>> for CgroupRef<'a> {
    fn from(fd: BorrowedFd<'a>) -> Self {
        CgroupRef::Fd(fd)
    }
}

/// The program attached to one cgroup. Detached when dropped.
#[derive(Debug)]
pub struct SockopsLink {
    link: OwnedFd,
    cgroup: String,
}

impl SockopsLink {
    /// The cgroup attached to (its path, or `fd N`).
    pub fn cgroup(&self) -> &str {
        &self.cgroup
    }

    /// The BPF link's fd.
    pub fn link_fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }

    /// Detaches now (same as dropping).
    pub fn detach(self) {}
}

/// Creates a `BPF_CGROUP_SOCK_OPS` link of `prog` on `cgroup`.
pub(super) fn attach(
    prog: BorrowedFd<'_>,
    cgroup: CgroupRef<'_>,
) -> Result<SockopsLink, KernelError> {
    match cgroup {
        CgroupRef::Path(path) => {
            let dir = File::open(path).map_err(|e| {
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
    let link = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(SockopsLink { link, cgroup: name })
}
