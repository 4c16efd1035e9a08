//! [`Link`]: one set of verbs, with one meaning, for every attachment of
//! this crate — [`XdpLink`](crate::xdp_attach::XdpLink) (an interface),
//! [`SockopsLink`](crate::sockops_server_id::SockopsLink) (a cgroup),
//! [`SkLookupLink`](crate::sk_lookup::SkLookupLink) (a network namespace)
//! and [`ReuseportLink`](crate::sk_reuseport_select::ReuseportLink) (a
//! `SO_REUSEPORT` group), as cilium/ebpf's `Link` does:
//!
//! | verb | meaning |
//! |---|---|
//! | [`pin(path)`](Link::pin) | the link outlives this handle and this process (bpffs, mode 0600) |
//! | [`unpin()`](Link::unpin) | removes the pin this handle made or was opened from; the handle is unpinned again |
//! | [`update_program(prog)`](Link::update_program) | the hook runs `prog` from now on, atomically: every packet or event runs the old program or the new one |
//! | [`detach()`](Link::detach) | the program leaves the hook now, **pinned or not** (a pin then holds a detached link: unpin it) |
//! | [`program_id()`](Link::program_id) / [`info()`](Link::info) | what runs there |
//! | drop | releases the handle: a **pinned** link stays attached, an **unpinned** one is detached |
//!
//! Each link type keeps its own extras (`XdpLink::mode`, `XdpLink::ifindex`,
//! `SockopsLink::cgroup`, `SkLookupLink::target`) and its own
//! `from_pinned(path)` (an XDP link also takes the interface's network
//! namespace: `XdpLink::from_pinned_in_netns`).
//!
//! The exception is sk_reuseport: the kernel has no BPF link for it, the
//! program belongs to the socket group and stays while a socket of the
//! group lives, whoever attached it — like a link pinned to the group.
//! [`ReuseportLink`](crate::sk_reuseport_select::ReuseportLink) therefore
//! never detaches on drop, and [`pin`](Link::pin) fails with
//! [`LinkError::Unsupported`]; `update_program` and `detach` work through
//! the socket it keeps.
//!
//! ```no_run
//! use flowpin_bpf_progs::link::Link; // the verbs
//! use flowpin_bpf_progs::xdp_decap::{XdpDecap, XdpDecapConfig, XdpLink};
//! # fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let decap = XdpDecap::load(XdpDecapConfig::default())?;
//! let mut link = decap.attach("eth0")?;
//! link.pin("/sys/fs/bpf/decap/link")?;
//! drop(link); // still attached: pinned
//! let mut link = XdpLink::from_pinned("/sys/fs/bpf/decap/link")?;
//! link.detach()?; // detached, pinned or not
//! link.unpin()?;
//! # Ok(()) }
//! ```

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::KernelError;

/// Errors of the [`Link`] verbs and of reopening a pinned link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// A kernel call failed (pin, `BPF_LINK_UPDATE`, `BPF_LINK_DETACH`,
    /// `bpf_link_get_info_by_fd`, `setsockopt`).
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Nothing is pinned at `path`.
    #[error("no link is pinned at {}: check the path (pins live on bpffs, under /sys/fs/bpf), pin the link there first (Link::pin), or it was removed (unpin)", path.display())]
    NotPinned {
        /// The pin (or its missing directory).
        path: PathBuf,
    },
    /// The verb does not exist for this kind of attachment.
    #[error("{op} is not supported for {link}: {why}")]
    Unsupported {
        /// The attachment kind, e.g. `sk_reuseport`.
        link: &'static str,
        /// The verb.
        op: &'static str,
        /// Why, and what to do instead.
        why: &'static str,
    },
}

crate::pin::from_pin_error!(LinkError);

/// What a link is attached to, from the kernel's link info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkTarget {
    /// An interface (`ifindex` 0: the link was detached).
    Xdp {
        /// Interface index, in the interface's network namespace.
        ifindex: u32,
    },
    /// A cgroup v2 (`cgroup_id` 0: the link was detached).
    Cgroup {
        /// The cgroup's id (its directory's inode number).
        cgroup_id: u64,
    },
    /// A network namespace (`netns_ino` 0: the link was detached).
    Netns {
        /// The namespace's inode number.
        netns_ino: u32,
    },
    /// A `SO_REUSEPORT` socket group (no kernel link exists).
    ReuseportGroup,
    /// Another link type (`BPF_LINK_TYPE_*`).
    Other {
        /// The kernel's link type.
        link_type: u32,
    },
}

/// What the kernel says about a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkInfo {
    /// The link's kernel id (`None`: no kernel link, sk_reuseport).
    pub id: Option<u32>,
    /// The id of the program it runs.
    pub program_id: u32,
    /// What it is attached to.
    pub target: LinkTarget,
}

/// The verbs every attachment of this crate has (see the [module docs](self)).
pub trait Link {
    /// Pins the link at `path` (on bpffs, mode 0600; the directory must
    /// exist): it stays attached after this handle and this process are
    /// gone, until the pin is removed and every handle dropped, or it is
    /// detached.
    fn pin(&mut self, path: impl AsRef<Path>) -> Result<(), LinkError>;

    /// Removes the pin this handle made ([`pin`](Self::pin)) or was opened
    /// from (`from_pinned`); nothing to do if it has none, or if the pin
    /// is gone already. The handle is unpinned afterwards: dropping it
    /// detaches the link.
    fn unpin(&mut self) -> Result<(), LinkError>;

    /// Where this handle is pinned, if it is.
    fn pin_path(&self) -> Option<&Path>;

    /// Swaps the program atomically: from now on the hook runs `prog`;
    /// every packet or event runs the old program or the new one, never
    /// none. `prog` must have the link's program type and attach type.
    fn update_program(&self, prog: impl AsFd) -> Result<(), LinkError>;

    /// Detaches the program from its hook now, whether the link is pinned
    /// or not. A pin stays (holding a detached link) until
    /// [`unpin`](Self::unpin).
    fn detach(&mut self) -> Result<(), LinkError>;

    /// What the kernel says about the link.
    fn info(&self) -> Result<LinkInfo, LinkError>;

    /// The id of the program the link runs now.
    fn program_id(&self) -> Result<u32, LinkError> {
        Ok(self.info()?.program_id)
    }
}

/// A kernel BPF link: the fd, where it is pinned, whether it was detached.
/// The [`Link`] verbs of the XDP, cgroup and netns links; dropping it
/// detaches unless pinned.
#[derive(Debug)]
pub(crate) struct BpfLink {
    fd: OwnedFd,
    /// What the link is, for errors: `xdp link`, `cgroup link`, ...
    what: &'static str,
    pin: Option<PathBuf>,
    detached: bool,
}

impl BpfLink {
    /// A link fresh from `bpf_link_create`: unpinned.
    pub(crate) fn new(fd: OwnedFd, what: &'static str) -> Self {
        BpfLink {
            fd,
            what,
            pin: None,
            detached: false,
        }
    }

    /// Opens the link pinned at `path`, checking its type
    /// (`BPF_LINK_TYPE_*`); returns it with its kernel info.
    pub(crate) fn from_pinned(
        path: &Path,
        link_type: u32,
        what: &'static str,
    ) -> Result<(Self, libbpf_rs::libbpf_sys::bpf_link_info), LinkError> {
        let fd = crate::pin::open_pinned_fd(path)?;
        let info = raw_info(fd.as_fd()).map_err(|e| {
            KernelError::io(
                format!("link {}", path.display()),
                "bpf_link_get_info_by_fd",
                &e,
                "is it a link? (pins of programs and maps are not)",
            )
        })?;
        if info.type_ != link_type {
            return Err(KernelError::errno(
                format!("link {}", path.display()),
                "open",
                22,
                "the pinned link is of another type: pass the pin of a link of this kind",
            )
            .into());
        }
        let link = BpfLink {
            fd,
            what,
            pin: Some(path.to_path_buf()),
            detached: false,
        };
        Ok((link, info))
    }

    /// The kernel's `bpf_link_info`.
    pub(crate) fn raw_info(&self) -> Result<libbpf_rs::libbpf_sys::bpf_link_info, LinkError> {
        raw_info(self.fd.as_fd())
            .map_err(|e| KernelError::io(self.what, "bpf_link_get_info_by_fd", &e, "").into())
    }
}

impl AsFd for BpfLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Link for BpfLink {
    fn pin(&mut self, path: impl AsRef<Path>) -> Result<(), LinkError> {
        let path = path.as_ref();
        crate::pin::pin_fd(self.fd.as_fd(), path)?;
        self.pin = Some(path.to_path_buf());
        Ok(())
    }

    fn unpin(&mut self) -> Result<(), LinkError> {
        let Some(path) = &self.pin else {
            return Ok(());
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(
                    KernelError::io(format!("pin {}", path.display()), "unlink", &e, "").into(),
                )
            }
        }
        self.pin = None;
        Ok(())
    }

    fn pin_path(&self) -> Option<&Path> {
        self.pin.as_deref()
    }

    fn update_program(&self, prog: impl AsFd) -> Result<(), LinkError> {
        Ok(crate::pin::link_update(self.fd.as_fd(), prog.as_fd())?)
    }

    fn detach(&mut self) -> Result<(), LinkError> {
        // SAFETY: a valid link fd, borrowed for the call.
        let rc = unsafe { libbpf_rs::libbpf_sys::bpf_link_detach(self.fd.as_raw_fd()) };
        if rc < 0 {
            return Err(KernelError::errno(self.what, "bpf_link_detach", -rc, "").into());
        }
        self.detached = true;
        Ok(())
    }

    fn info(&self) -> Result<LinkInfo, LinkError> {
        use libbpf_rs::libbpf_sys as sys;
        let i = self.raw_info()?;
        // SAFETY (each arm): `type_` says which member of the union the kernel filled.
        let target = match i.type_ {
            sys::BPF_LINK_TYPE_XDP => LinkTarget::Xdp {
                // SAFETY: see above.
                ifindex: unsafe { i.__bindgen_anon_1.xdp.ifindex },
            },
            sys::BPF_LINK_TYPE_CGROUP => LinkTarget::Cgroup {
                // SAFETY: see above.
                cgroup_id: unsafe { i.__bindgen_anon_1.cgroup.cgroup_id },
            },
            sys::BPF_LINK_TYPE_NETNS => LinkTarget::Netns {
                // SAFETY: see above.
                netns_ino: unsafe { i.__bindgen_anon_1.netns.netns_ino },
            },
            t => LinkTarget::Other { link_type: t },
        };
        Ok(LinkInfo {
            id: Some(i.id),
            program_id: i.prog_id,
            target,
        })
    }
}

impl Drop for BpfLink {
    fn drop(&mut self) {
        if self.pin.is_none() && !self.detached {
            // Detach explicitly: closing the fd alone leaves the program
            // attached while any copy of the fd lives (e.g. in a child
            // forked by another thread and not yet exec'd).
            // SAFETY: a valid link fd. A failure leaves the close to detach.
            let _ = unsafe { libbpf_rs::libbpf_sys::bpf_link_detach(self.fd.as_raw_fd()) };
        }
    }
}

/// `impl Link for $ty` by delegating every verb to its [`BpfLink`] field.
macro_rules! delegate_link {
    ($ty:ty, $field:ident) => {
        impl $crate::link::Link for $ty {
            fn pin(
                &mut self,
                path: impl ::std::convert::AsRef<::std::path::Path>,
            ) -> ::std::result::Result<(), $crate::link::LinkError> {
                self.$field.pin(path)
            }
            fn unpin(&mut self) -> ::std::result::Result<(), $crate::link::LinkError> {
                self.$field.unpin()
            }
            fn pin_path(&self) -> ::std::option::Option<&::std::path::Path> {
                self.$field.pin_path()
            }
            fn update_program(
                &self,
                prog: impl ::std::os::fd::AsFd,
            ) -> ::std::result::Result<(), $crate::link::LinkError> {
                self.$field.update_program(prog)
            }
            fn detach(&mut self) -> ::std::result::Result<(), $crate::link::LinkError> {
                self.$field.detach()
            }
            fn info(
                &self,
            ) -> ::std::result::Result<$crate::link::LinkInfo, $crate::link::LinkError> {
                self.$field.info()
            }
        }

        impl ::std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> ::std::os::fd::BorrowedFd<'_> {
                self.$field.as_fd()
            }
        }
    };
}
pub(crate) use delegate_link;

/// `bpf_link_get_info_by_fd` of a link.
fn raw_info(fd: BorrowedFd<'_>) -> io::Result<libbpf_rs::libbpf_sys::bpf_link_info> {
    let mut info = libbpf_rs::libbpf_sys::bpf_link_info::default();
    let mut len = std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_link_info>() as u32;
    // SAFETY: `info` is a writable bpf_link_info of `len` bytes that outlives the call.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len)
    };
    if rc < 0 {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    Ok(info)
}
