//! The empty XDP program (`XDP_PASS`): the baseline of every XDP benchmark
//! and the pass-through program a veth peer needs so that native `XDP_TX`
//! and redirects into it work. It has no maps, so no `stats()`: counting
//! would make it a worse baseline.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};

use crate::error::KernelError;
use crate::skel::xdp_pass::XdpPassSkelBuilder;
use crate::xdp_attach::{attach_xdp, xdp_test_run, XdpAttachError, XdpLink, XdpTarget, XdpTestRun};

/// Errors of [`XdpPass`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpPassError {
    /// Opening, loading or taking a handle on the program failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Attach or test run failed.
    #[error(transparent)]
    Xdp(#[from] XdpAttachError),
}

/// Load-time configuration of [`XdpPass`] (nothing to configure yet; it
/// exists so every program loads the same way).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct XdpPassConfig {}

/// The loaded empty XDP program. Owns only its fd.
#[derive(Debug)]
pub struct XdpPass {
    prog: OwnedFd,
}

impl XdpPass {
    /// Loads the program.
    pub fn load(_config: XdpPassConfig) -> Result<Self, XdpPassError> {
        let mut storage = MaybeUninit::uninit();
        let open = XdpPassSkelBuilder::default()
            .open(&mut storage)
            .map_err(KernelError::object("object xdp_pass", "open", ""))?;
        let skel = open.load().map_err(KernelError::object(
            "program xdp_pass",
            "load",
            "need root (CAP_BPF + CAP_NET_ADMIN)",
        ))?;
        let prog = skel
            .progs
            .xdp_pass
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| KernelError::io("program xdp_pass", "dup", &e, ""))?;
        Ok(XdpPass { prog })
    }

    /// The program's fd.
    pub fn program_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// Attaches to `target` (an ifindex, a name, or an [`XdpTarget`] with a
    /// namespace and mode); dropping the link detaches.
    pub fn attach(&self, target: impl Into<XdpTarget>) -> Result<XdpLink, XdpPassError> {
        Ok(attach_xdp(self.program_fd(), target)?)
    }

    /// Runs the program once on `packet` with `BPF_PROG_TEST_RUN`.
    pub fn test_run(&self, packet: &[u8]) -> Result<XdpTestRun, XdpPassError> {
        Ok(xdp_test_run(self.program_fd(), packet)?)
    }
}
