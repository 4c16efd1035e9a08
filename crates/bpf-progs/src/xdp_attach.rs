//! XDP plumbing shared by every XDP program of this crate: attaching a loaded
//! program to an interface through a BPF link (native mode, falling back to
//! generic mode, the chosen mode reported), a link guard that detaches on
//! drop, and a `BPF_PROG_TEST_RUN` helper.
//!
//! Everything takes the program as a file descriptor ([`AsFd`]), so it works
//! with a skeleton's `Program`, a [`libbpf_rs::ProgramHandle`] or a plain
//! [`OwnedFd`].
//!
//! An [`XdpTarget`] names the interface: by index or name, in the calling
//! thread's network namespace or in another one
//! ([`XdpTarget::ifname_in_netns`]: a short-lived thread enters that
//! namespace, resolves the name and creates the link there; no setns code
//! in the caller). The returned [`XdpLink`] can then be kept and dropped
//! anywhere (closing a BPF link detaches it wherever the closing thread
//! lives).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::KernelError;

/// Errors of XDP attach and test runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpAttachError {
    /// The interface name does not exist in the namespace it was looked up in.
    #[error("no interface named {name:?} in {} (if_nametoindex: {errno}); check the name, or give the namespace with XdpTarget::ifname_in_netns", netns.as_deref().map_or_else(|| "this thread's network namespace".to_string(), |p| format!("network namespace {}", p.display())))]
    NoSuchInterface {
        /// The name looked up.
        name: String,
        /// The namespace it was looked up in (`None`: the calling thread's).
        netns: Option<PathBuf>,
        /// errno of `if_nametoindex`.
        errno: io::Error,
    },
    /// Entering the target's network namespace failed (open or `setns`).
    #[error(transparent)]
    Netns(KernelError),
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

    /// Detaches now (same as dropping). A pinned link stays attached until
    /// its pin is removed as well.
    pub fn detach(self) {
        drop(self);
    }

    /// Pins the link at `path` (on bpffs, mode 0600): the program stays
    /// attached after this process exits, until the pin is removed.
    pub fn pin(&self, path: impl AsRef<Path>) -> Result<(), KernelError> {
        crate::pin::pin_fd(self.fd.as_fd(), path.as_ref())
    }

    /// Reopens a link pinned by [`pin`](Self::pin). Its mode is read from
    /// the interface (`bpf_xdp_query`) when the interface is in the calling
    /// thread's network namespace, and reported as
    /// [`XdpMode::Generic`] when it cannot be determined.
    pub fn from_pinned(path: impl AsRef<Path>) -> Result<XdpLink, KernelError> {
        let path = path.as_ref();
        let fd = crate::pin::open_pinned_fd(path)?;
        let info = link_info(fd.as_fd()).map_err(|e| {
            KernelError::io(
                format!("link {}", path.display()),
                "bpf_link_get_info_by_fd",
                &e,
                "",
            )
        })?;
        if info.type_ != libbpf_rs::libbpf_sys::BPF_LINK_TYPE_XDP {
            return Err(KernelError::errno(
                format!("link {}", path.display()),
                "open",
                22,
                "the pinned link is not an XDP link",
            ));
        }
        // SAFETY: type_ is BPF_LINK_TYPE_XDP, so the xdp member is the one the kernel filled.
        let ifindex = unsafe { info.__bindgen_anon_1.xdp.ifindex };
        let mut q = libbpf_rs::libbpf_sys::bpf_xdp_query_opts {
            sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_xdp_query_opts>() as _,
            ..Default::default()
        };
        // SAFETY: `q` is a properly sized, initialised opts struct that outlives the call.
        let rc = unsafe { libbpf_rs::libbpf_sys::bpf_xdp_query(ifindex as i32, 0, &mut q) };
        let mode = if rc == 0 && q.drv_prog_id == info.prog_id && info.prog_id != 0 {
            XdpMode::Native
        } else {
            XdpMode::Generic
        };
        Ok(XdpLink { fd, ifindex, mode })
    }

    /// Swaps the link's program for `prog` atomically (`BPF_LINK_UPDATE`):
    /// every packet runs the old program or the new one.
    pub fn update_program(&self, prog: impl AsFd) -> Result<(), KernelError> {
        crate::pin::link_update(self.fd.as_fd(), prog.as_fd())
    }

    /// The id of the program the link runs now.
    pub fn program_id(&self) -> Result<u32, KernelError> {
        link_info(self.fd.as_fd())
            .map(|i| i.prog_id)
            .map_err(|e| KernelError::io("xdp link", "bpf_link_get_info_by_fd", &e, ""))
    }
}

/// `bpf_link_get_info_by_fd` of a link.
pub(crate) fn link_info(fd: BorrowedFd<'_>) -> io::Result<libbpf_rs::libbpf_sys::bpf_link_info> {
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

impl AsFd for XdpLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Resolves an interface name in the calling thread's network namespace.
pub fn ifindex_by_name(name: &str) -> Result<u32, XdpAttachError> {
    nix::net::if_::if_nametoindex(name).map_err(|errno| XdpAttachError::NoSuchInterface {
        name: name.to_string(),
        netns: None,
        errno: io::Error::from_raw_os_error(errno as i32),
    })
}

/// Where to attach an XDP program: an interface (by index or name), in the
/// calling thread's network namespace or another one, and the mode.
///
/// `u32` (an ifindex), `&str` and `String` (a name) convert into a target
/// in the calling thread's namespace, native mode falling back to generic.
///
/// ```no_run
/// use flowpin_bpf_progs::xdp_attach::{XdpAttachMode, XdpTarget};
/// # fn f(decap: &flowpin_bpf_progs::xdp_decap::XdpDecap) -> Result<(), flowpin_bpf_progs::xdp_decap::XdpDecapError> {
/// let here = decap.attach("eth0")?;
/// let there = decap.attach(XdpTarget::ifname_in_netns("b0", "/run/netns/backend1"))?;
/// let generic = decap.attach(XdpTarget::ifindex(7).mode(XdpAttachMode::Generic))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpTarget {
    iface: Iface,
    netns: Option<PathBuf>,
    mode: XdpAttachMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Iface {
    Index(u32),
    Name(String),
}

impl XdpTarget {
    /// The interface with index `ifindex`.
    pub fn ifindex(ifindex: u32) -> Self {
        XdpTarget {
            iface: Iface::Index(ifindex),
            netns: None,
            mode: XdpAttachMode::default(),
        }
    }

    /// The interface named `name`.
    pub fn ifname(name: impl Into<String>) -> Self {
        XdpTarget {
            iface: Iface::Name(name.into()),
            netns: None,
            mode: XdpAttachMode::default(),
        }
    }

    /// The interface named `name` in the network namespace at `netns` (a
    /// namespace file: `/run/netns/<name>` as `ip netns add` makes, or
    /// `/proc/<pid>/ns/net`). The name is resolved and the link created by
    /// a short-lived thread inside that namespace; the link then lives on
    /// in the caller.
    pub fn ifname_in_netns(name: impl Into<String>, netns: impl Into<PathBuf>) -> Self {
        XdpTarget::ifname(name).in_netns(netns)
    }

    /// The same interface, in the network namespace at `netns`.
    pub fn in_netns(mut self, netns: impl Into<PathBuf>) -> Self {
        self.netns = Some(netns.into());
        self
    }

    /// Asks for an attach mode (default: native, falling back to generic).
    pub fn mode(mut self, mode: XdpAttachMode) -> Self {
        self.mode = mode;
        self
    }

    /// The namespace the interface lives in (`None`: the caller's).
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    fn ifindex_here(&self) -> Result<u32, XdpAttachError> {
        match &self.iface {
            Iface::Index(i) => Ok(*i),
            Iface::Name(n) => ifindex_by_name(n).map_err(|e| match e {
                XdpAttachError::NoSuchInterface { name, errno, .. } => {
                    XdpAttachError::NoSuchInterface {
                        name,
                        netns: self.netns.clone(),
                        errno,
                    }
                }
                e => e,
            }),
        }
    }
}

impl From<u32> for XdpTarget {
    fn from(ifindex: u32) -> Self {
        XdpTarget::ifindex(ifindex)
    }
}

impl From<&str> for XdpTarget {
    fn from(name: &str) -> Self {
        XdpTarget::ifname(name)
    }
}

impl From<String> for XdpTarget {
    fn from(name: String) -> Self {
        XdpTarget::ifname(name)
    }
}

impl From<&String> for XdpTarget {
    fn from(name: &String) -> Self {
        XdpTarget::ifname(name.as_str())
    }
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

/// Attaches an XDP program through a BPF link to `target` (an ifindex, an
/// interface name, or an [`XdpTarget`] with a namespace and a mode). With
/// [`XdpAttachMode::NativeOrGeneric`] native mode is tried first and generic
/// mode if the driver refuses; [`XdpLink::mode`] says which.
pub fn attach_xdp(
    prog: impl AsFd,
    target: impl Into<XdpTarget>,
) -> Result<XdpLink, XdpAttachError> {
    let target = target.into();
    let prog = prog.as_fd();
    match target.netns.clone() {
        None => attach_here(prog, &target),
        Some(path) => crate::netns::run_in(&path, || attach_here(prog, &target))
            .map_err(XdpAttachError::Netns)?,
    }
}

fn attach_here(prog: BorrowedFd<'_>, target: &XdpTarget) -> Result<XdpLink, XdpAttachError> {
    let ifindex = target.ifindex_here()?;
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
    match target.mode {
        XdpAttachMode::Native => attempt(drv, XdpMode::Native, "native mode"),
        XdpAttachMode::Generic => attempt(skb, XdpMode::Generic, "generic mode"),
        XdpAttachMode::NativeOrGeneric => attempt(drv, XdpMode::Native, "native mode")
            .or_else(|_| attempt(skb, XdpMode::Generic, "native mode, then generic mode")),
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
