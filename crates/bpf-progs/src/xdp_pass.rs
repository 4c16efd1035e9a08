//! The empty XDP program (`XDP_PASS`): the baseline of every XDP benchmark
//! and the pass-through program a veth peer needs so that native `XDP_TX`
//! and redirects into it work.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};

use crate::skel::xdp_pass::XdpPassSkelBuilder;
use crate::xdp_attach::{XdpAttachError, XdpLink, XdpProgram, XdpTestRun};

/// Errors of [`XdpPass`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpPassError {
    /// Opening or loading the object failed (kernel verifier log on stderr).
    #[error("loading xdp_pass into the kernel failed: {0} (need root / CAP_BPF)")]
    Load(#[source] libbpf_rs::Error),
    /// Duplicating the program fd failed.
    #[error("duplicating the xdp_pass program fd failed: {0}")]
    Fd(#[source] std::io::Error),
    /// Attach or test run failed.
    #[error(transparent)]
    Attach(#[from] XdpAttachError),
}

/// The loaded empty XDP program. Owns only its fd.
#[derive(Debug)]
pub struct XdpPass {
    prog: OwnedFd,
}

impl XdpPass {
    /// Loads the program.
    pub fn load() -> Result<Self, XdpPassError> {
        let mut storage = MaybeUninit::uninit();
        let open = XdpPassSkelBuilder::default()
            .open(&mut storage)
            .map_err(XdpPassError::Load)?;
        let skel = open.load().map_err(XdpPassError::Load)?;
        let prog = skel
            .progs
            .xdp_pass
            .as_fd()
            .try_clone_to_owned()
            .map_err(XdpPassError::Fd)?;
        Ok(XdpPass { prog })
    }

    /// The program's fd.
    pub fn program_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// Attaches to the interface named `ifname` in the calling thread's
    /// namespace, native mode falling back to generic.
    pub fn attach_by_name(&self, ifname: &str) -> Result<XdpLink, XdpPassError> {
        XdpProgram::attach_by_name(self, ifname)
    }

    /// Runs the program once on `packet` with `BPF_PROG_TEST_RUN`.
    pub fn test_run(&self, packet: &[u8]) -> Result<XdpTestRun, XdpPassError> {
        XdpProgram::test_run(self, packet)
    }
}

impl XdpProgram for XdpPass {
    type Error = XdpPassError;

    fn program_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }
}
