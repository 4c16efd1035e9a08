//! [`ReuseportLink`]: what attaching to a reuseport group returns.

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::error::KernelError;

/// `SO_DETACH_REUSEPORT_BPF` (asm-generic value).
const SO_DETACH_REUSEPORT_BPF: nix::libc::c_int = 68;

/// The program attached to a reuseport group. Unlike the other links of
/// this crate it does **not** detach on drop: the kernel has no BPF link
/// for reuseport programs, the program belongs to the group and stays while
/// a socket of the group lives (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReuseportLink {
    prog_id: u32,
}

impl ReuseportLink {
    pub(super) fn new(prog_id: u32) -> Self {
        ReuseportLink { prog_id }
    }

    /// The attached program's kernel id.
    pub fn prog_id(&self) -> u32 {
        self.prog_id
    }

    /// Detaches the group's program (`SO_DETACH_REUSEPORT_BPF` through
    /// `sock`, any socket of the group): new connections and packets are
    /// then spread by the kernel's own reuseport hash.
    pub fn detach(self, sock: BorrowedFd<'_>) -> std::result::Result<(), KernelError> {
        let zero: nix::libc::c_int = 0;
        // SAFETY: setsockopt with a valid socket fd (borrowed for the call),
        // a pointer to a live c_int and its exact size.
        let rc = unsafe {
            nix::libc::setsockopt(
                sock.as_raw_fd(),
                nix::libc::SOL_SOCKET,
                SO_DETACH_REUSEPORT_BPF,
                (&zero as *const nix::libc::c_int).cast(),
                std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(KernelError::io(
                format!("socket fd {}", sock.as_raw_fd()),
                "setsockopt(SO_DETACH_REUSEPORT_BPF)",
                &std::io::Error::last_os_error(),
                "ENOENT: the group has no program",
            ));
        }
        Ok(())
    }
}
