//! XDP plumbing shared by every XDP program of this crate: attaching a loaded
//! program to an interface through a BPF link (native mode, falling back to
//! generic mode, the chosen mode reported), a link guard that detaches on
//! drop, and a `BPF_PROG_TEST_RUN` helper.
//!
//! Everything takes the program as a file descriptor ([`AsFd`]), so it works
//! with a skeleton's `Program`, a [`libbpf_rs::ProgramHandle`] or a plain
//! [`OwnedFd`].
//!
//! Interface indexes and names are resolved in the network namespace of the
//! calling thread: attach from a thread inside the namespace that owns the
//! interface. The returned [`XdpLink`] can then be kept and dropped anywhere
//! (closing a BPF link detaches it wherever the closing thread lives).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Errors of XDP attach and test runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpAttachError {
    /// The interface name does not exist in the caller's network namespace.
    #[error("no interface named {name:?} in this thread's network namespace (if_nametoindex: {errno}); attach from a thread inside the interface's namespace")]
    NoSuchInterface {
        /// The name looked up.
        name: String,
        /// errno of `if_nametoindex`.
        errno: nix::Error,
    },
    /// `bpf_link_create(BPF_XDP)` refused the program in every mode tried.
    #[error("bpf_link_create(BPF_XDP) on ifindex {ifindex} failed in {tried}: {errno} (EEXIST/EBUSY: another XDP program is attached; EOPNOTSUPP: the driver has no native XDP, try XdpAttachMode::Generic; EPERM: need CAP_NET_ADMIN + CAP_BPF)")]
    Attach {
        /// Interface index.
        ifindex: u32,
        /// Which modes were tried, e.g. "native mode, then generic mode".
        tried: &'static str,
        /// errno of the last attempt.
        errno: io::Error,
    },
    /// `BPF_PROG_TEST_RUN` failed.
    #[error("BPF_PROG_TEST_RUN of an XDP program on a {len}-byte packet failed: {errno} (EINVAL: packet shorter than 14 bytes or longer than a page; ENOSPC: output buffer too small; EPERM: need CAP_BPF)")]
    TestRun {
        /// Length of the input packet.
        len: usize,
        /// errno.
        errno: io::Error,
    },
}

/// Which XDP attach mode to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum XdpAttachMode {
    /// Native (driver) mode; if the driver refuses, generic (SKB) mode.
    #[default]
    NativeOrGeneric,
    /// Native (driver) mode only.
    Native,
    /// Generic (SKB) mode only.
    Generic,
}

/// The XDP mode a program ended up attached in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Driver mode (`XDP_FLAGS_DRV_MODE`): runs in the driver's receive path.
    Native,
    /// Generic mode (`XDP_FLAGS_SKB_MODE`): runs after an skb is allocated.
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// An XDP program attached to an interface through a BPF link. Dropping it
/// detaches the program.
#[derive(Debug)]
pub struct XdpLink {
    fd: OwnedFd,
    ifindex: u32,
    mode: XdpMode,
}

impl XdpLink {
    /// The mode the program runs in.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The interface index (in the namespace it was attached from).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Detaches now (same as dropping).
    pub fn detach(self) {
        drop(self);
    }
}

impl AsFd for XdpLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Resolves an interface name in the calling thread's network namespace.
pub fn ifindex_by_name(name: &str) -> Result<u32, XdpAttachError> {
    nix::net::if_::if_nametoindex(name).map_err(|errno| XdpAttachError::NoSuchInterface {
        name: name.to_string(),
        errno,
    })
}

fn link_create(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> Result<OwnedFd, io::Error> {
    let opts = libbpf_rs::libbpf_sys::bpf_link_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_link_create_opts>() as _,
        flags,
        ..Default::default()
    };
    // SAFETY: `prog` is a valid open fd for the duration of the call, `opts`
    // is a properly sized, initialised bpf_link_create_opts that outlives
    // the call; libbpf only reads it.
    let fd = unsafe {
        libbpf_rs::libbpf_sys::bpf_link_create(
            prog.as_raw_fd(),
            ifindex as i32,
            libbpf_rs::libbpf_sys::BPF_XDP,
            &opts,
        )
    };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: bpf_link_create returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches an XDP program to `ifindex` through a BPF link in the requested
/// mode. With [`XdpAttachMode::NativeOrGeneric`] native mode is tried first
/// and generic mode if the driver refuses; [`XdpLink::mode`] says which.
pub fn attach_xdp(
    prog: impl AsFd,
    ifindex: u32,
    mode: XdpAttachMode,
) -> Result<XdpLink, XdpAttachError> {
    let prog = prog.as_fd();
    let drv = libbpf_rs::libbpf_sys::XDP_FLAGS_DRV_MODE;
    let skb = libbpf_rs::libbpf_sys::XDP_FLAGS_SKB_MODE;
    let attempt = |flags, mode, tried| {
        link_create(prog, ifindex, flags)
            .map(|fd| XdpLink { fd, ifindex, mode })
            .map_err(|errno| XdpAttachError::Attach {
                ifindex,
                tried,
                errno,
            })
    };
    match mode {
        XdpAttachMode::Native => attempt(drv, XdpMode::Native, "native mode"),
        XdpAttachMode::Generic => attempt(skb, XdpMode::Generic, "generic mode"),
        XdpAttachMode::NativeOrGeneric => attempt(drv, XdpMode::Native, "native mode")
            .or_else(|_| attempt(skb, XdpMode::Generic, "native mode, then generic mode")),
    }
}

/// A loaded XDP program of this crate, seen through its program fd: the
/// attach and test-run methods every XDP control API shares, written once.
///
/// [`XdpLb`](crate::xdp_lb::XdpLb), [`XdpDecap`](crate::xdp_decap::XdpDecap)
/// and [`XdpPass`](crate::xdp_pass::XdpPass) implement it (and keep
/// same-named inherent methods, so callers need not import the trait); generic
/// code can take any `impl XdpProgram`.
pub trait XdpProgram {
    /// The error type of the program's control API; attach and test-run
    /// errors convert into it.
    type Error: From<XdpAttachError>;

    /// The program's fd (for [`attach_xdp`], queries, or test runs).
    fn program_fd(&self) -> BorrowedFd<'_>;

    /// Attaches to `ifindex` (resolved in the calling thread's network
    /// namespace), native mode falling back to generic; the link says which.
    fn attach(&self, ifindex: u32) -> Result<XdpLink, Self::Error> {
        self.attach_with_mode(ifindex, XdpAttachMode::NativeOrGeneric)
    }

    /// [`attach`](Self::attach) by interface name (looked up in the calling
    /// thread's network namespace).
    fn attach_by_name(&self, ifname: &str) -> Result<XdpLink, Self::Error> {
        let ifindex = ifindex_by_name(ifname)?;
        self.attach(ifindex)
    }

    /// Attaches in an explicit mode.
    fn attach_with_mode(&self, ifindex: u32, mode: XdpAttachMode) -> Result<XdpLink, Self::Error> {
        Ok(attach_xdp(self.program_fd(), ifindex, mode)?)
    }

    /// Runs the program once on `packet` through `BPF_PROG_TEST_RUN`. The
    /// maps are the live ones: counters it bumps (and, for `xdp_lb`, the
    /// connection table) stay changed.
    fn test_run(&self, packet: &[u8]) -> Result<XdpTestRun, Self::Error> {
        Ok(xdp_test_run(self.program_fd(), packet)?)
    }
}

/// An XDP program's return code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpVerdict {
    /// `XDP_ABORTED` (0).
    Aborted,
    /// `XDP_DROP` (1).
    Drop,
    /// `XDP_PASS` (2).
    Pass,
    /// `XDP_TX` (3).
    Tx,
    /// `XDP_REDIRECT` (4).
    Redirect,
    /// Any other value.
    Other(u32),
}

impl From<u32> for XdpVerdict {
    fn from(v: u32) -> Self {
        match v {
            0 => XdpVerdict::Aborted,
            1 => XdpVerdict::Drop,
            2 => XdpVerdict::Pass,
            3 => XdpVerdict::Tx,
            4 => XdpVerdict::Redirect,
            o => XdpVerdict::Other(o),
        }
    }
}

/// The result of one `BPF_PROG_TEST_RUN` of an XDP program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpTestRun {
    /// What the program returned.
    pub verdict: XdpVerdict,
    /// The packet as the program left it (after any head/tail adjustment).
    pub packet: Vec<u8>,
    /// Kernel-measured run time per repetition, in nanoseconds.
    pub duration_ns: u32,
}

/// Room for the program to grow the packet in a test run (the kernel's
/// XDP headroom is 256 bytes).
const TEST_RUN_GROWTH: usize = 512;

/// Runs an XDP program once on `packet` with `BPF_PROG_TEST_RUN` and returns
/// its verdict and output packet. The program's maps are the live ones:
/// counters it bumps stay bumped.
pub fn xdp_test_run(prog: impl AsFd, packet: &[u8]) -> Result<XdpTestRun, XdpAttachError> {
    xdp_test_run_repeat(prog, packet, 1)
}

/// Like [`xdp_test_run`] with `repeat` repetitions in the kernel (the output
/// is that of the last one; the duration is the average).
pub fn xdp_test_run_repeat(
    prog: impl AsFd,
    packet: &[u8],
    repeat: u32,
) -> Result<XdpTestRun, XdpAttachError> {
    let mut out = vec![0u8; packet.len() + TEST_RUN_GROWTH];
    let mut opts = libbpf_rs::libbpf_sys::bpf_test_run_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_test_run_opts>() as _,
        data_in: packet.as_ptr().cast(),
        data_size_in: packet.len() as u32,
        data_out: out.as_mut_ptr().cast(),
        data_size_out: out.len() as u32,
        repeat: repeat as i32,
        ..Default::default()
    };
    // SAFETY: data_in/data_out point to live buffers of the stated sizes for
    // the whole call; the kernel writes at most data_size_out bytes.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_prog_test_run_opts(prog.as_fd().as_raw_fd(), &mut opts)
    };
    if rc < 0 {
        return Err(XdpAttachError::TestRun {
            len: packet.len(),
            errno: io::Error::from_raw_os_error(-rc),
        });
    }
    out.truncate(opts.data_size_out as usize);
    Ok(XdpTestRun {
        verdict: XdpVerdict::from(opts.retval),
        packet: out,
        duration_ns: opts.duration,
    })
}
