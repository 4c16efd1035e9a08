//! [`ReuseportLink`]: what attaching to a reuseport group returns.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::KernelError;
use crate::link::{Link, LinkError, LinkInfo, LinkTarget};

/// `SO_ATTACH_REUSEPORT_EBPF` (asm-generic value; not exported by `libc` for glibc targets).
const SO_ATTACH_REUSEPORT_EBPF: nix::libc::c_int = 52;
/// `SO_DETACH_REUSEPORT_BPF` (asm-generic value).
const SO_DETACH_REUSEPORT_BPF: nix::libc::c_int = 68;

/// What no kernel link means for the verbs.
const NO_KERNEL_LINK: &str = "no kernel link type exists for sk_reuseport programs: the program belongs to the SO_REUSEPORT group and stays attached while a socket of the group lives, whoever attached it; pin the program and its maps instead (SkReuseportSelect::pin)";

/// The program attached to a reuseport group, through one socket of it.
///
/// The kernel has no BPF link for reuseport programs: the program belongs
/// to the group and stays while a socket of the group lives — like a link
/// pinned to the group. So this is the one [`Link`] of the crate that
/// does **not** detach on drop (dropping a process's handle must not take
/// the program away from the other processes of the group), and
/// [`Link::pin`] fails with [`LinkError::Unsupported`].
/// [`Link::update_program`] and [`Link::detach`] act on the group through
/// the socket the handle keeps.
///
/// The handle keeps a duplicate of the socket it was attached through:
/// that socket stays open (and in the group) while the handle lives. Drop
/// the handle when that socket is retired.
#[derive(Debug)]
pub struct ReuseportLink {
    sock: OwnedFd,
    /// The program attached last through this handle.
    prog_id: AtomicU32,
}

impl ReuseportLink {
    /// Attaches `prog` (id `prog_id`) to the group of `sock` with
    /// `SO_ATTACH_REUSEPORT_EBPF`, keeping a duplicate of `sock`.
    pub(super) fn attach(
        sock: BorrowedFd<'_>,
        prog: BorrowedFd<'_>,
        prog_id: u32,
    ) -> Result<Self, KernelError> {
        let what = || format!("socket fd {}", sock.as_raw_fd());
        set_prog(sock, SO_ATTACH_REUSEPORT_EBPF, prog.as_raw_fd()).map_err(|e| {
            KernelError::io(
                what(),
                "setsockopt(SO_ATTACH_REUSEPORT_EBPF)",
                &e,
                "the socket must be a SO_REUSEPORT TCP/UDP socket",
            )
        })?;
        let sock = sock
            .try_clone_to_owned()
            .map_err(|e| KernelError::io(what(), "dup", &e, ""))?;
        Ok(ReuseportLink {
            sock,
            prog_id: AtomicU32::new(prog_id),
        })
    }

    /// The socket the handle acts through.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// `setsockopt(SOL_SOCKET, opt, &value)`.
fn set_prog(
    sock: BorrowedFd<'_>,
    opt: nix::libc::c_int,
    value: nix::libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: setsockopt with a valid socket fd (borrowed for the call),
    // a pointer to a live c_int and its exact size.
    let rc = unsafe {
        nix::libc::setsockopt(
            sock.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            opt,
            (&value as *const nix::libc::c_int).cast(),
            std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Link for ReuseportLink {
    /// Always [`LinkError::Unsupported`]: there is no kernel link to pin.
    fn pin(&mut self, _path: impl AsRef<Path>) -> Result<(), LinkError> {
        Err(LinkError::Unsupported {
            link: "sk_reuseport",
            op: "pin",
            why: NO_KERNEL_LINK,
        })
    }

    /// Nothing to do: a reuseport attachment is never pinned.
    fn unpin(&mut self) -> Result<(), LinkError> {
        Ok(())
    }

    fn pin_path(&self) -> Option<&Path> {
        None
    }

    /// Attaches `prog` to the group in place of the running program
    /// (`SO_ATTACH_REUSEPORT_EBPF` through the kept socket: the kernel
    /// swaps the group's program atomically).
    fn update_program(&self, prog: impl AsFd) -> Result<(), LinkError> {
        let prog = prog.as_fd();
        let id = crate::pin::prog_id(prog)?;
        set_prog(
            self.sock.as_fd(),
            SO_ATTACH_REUSEPORT_EBPF,
            prog.as_raw_fd(),
        )
        .map_err(|e| {
            KernelError::io(
                format!("socket fd {}", self.sock.as_raw_fd()),
                "setsockopt(SO_ATTACH_REUSEPORT_EBPF)",
                &e,
                "the program must be a BPF_PROG_TYPE_SK_REUSEPORT program",
            )
        })?;
        self.prog_id.store(id, Ordering::Relaxed);
        Ok(())
    }

    /// Detaches the group's program (`SO_DETACH_REUSEPORT_BPF`): new
    /// connections and packets are then spread by the kernel's own
    /// reuseport hash.
    fn detach(&mut self) -> Result<(), LinkError> {
        set_prog(self.sock.as_fd(), SO_DETACH_REUSEPORT_BPF, 0).map_err(|e| {
            KernelError::io(
                format!("socket fd {}", self.sock.as_raw_fd()),
                "setsockopt(SO_DETACH_REUSEPORT_BPF)",
                &e,
                "ENOENT: the group has no program",
            )
            .into()
        })
    }

    /// `id` is `None` (no kernel link); `program_id` is the program this
    /// handle attached last (the kernel has no query for a group's
    /// program: another process may have replaced it since).
    fn info(&self) -> Result<LinkInfo, LinkError> {
        Ok(LinkInfo {
            id: None,
            program_id: self.prog_id.load(Ordering::Relaxed),
            target: LinkTarget::ReuseportGroup,
        })
    }
}
