//! Attaching to a cgroup v2: [`CgroupRef`] names it, [`SockopsLink`]
//! detaches on drop.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::error::KernelError;

/// A cgroup v2 directory to attach to: a path or an open directory.
pub type CgroupRef<'a> = crate::file_ref::FileRef<'a>;

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

    /// Detaches now (same as dropping). A pinned link stays attached until
    /// its pin is removed as well.
    pub fn detach(self) {}

    /// Pins the link at `path` (on bpffs, mode 0600): the program stays
    /// attached to the cgroup after this process exits, until the pin is removed.
    pub fn pin(&self, path: impl AsRef<Path>) -> Result<(), KernelError> {
        crate::pin::pin_fd(self.link.as_fd(), path.as_ref())
    }

    /// Reopens a link pinned by [`pin`](Self::pin).
    pub fn from_pinned(path: impl AsRef<Path>) -> Result<SockopsLink, KernelError> {
        let path = path.as_ref();
        let link = crate::pin::open_pinned_fd(path)?;
        let info = crate::xdp_attach::link_info(link.as_fd()).map_err(|e| {
            KernelError::io(
                format!("link {}", path.display()),
                "bpf_link_get_info_by_fd",
                &e,
                "",
            )
        })?;
        if info.type_ != libbpf_rs::libbpf_sys::BPF_LINK_TYPE_CGROUP {
            return Err(KernelError::errno(
                format!("link {}", path.display()),
                "open",
                22,
                "the pinned link is not a cgroup link",
            ));
        }
        Ok(SockopsLink {
            link,
            cgroup: format!("pinned {}", path.display()),
        })
    }

    /// The id of the program the link runs now.
    pub fn program_id(&self) -> Result<u32, KernelError> {
        crate::xdp_attach::link_info(self.link.as_fd())
            .map(|i| i.prog_id)
            .map_err(|e| KernelError::io("cgroup link", "bpf_link_get_info_by_fd", &e, ""))
    }
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
