//! XDP plumbing shared by every XDP program of this crate: attaching a loaded
//! program to an interface through a BPF link (native mode, falling back to
//! generic mode, the chosen mode reported), a link guard that detaches on
//! drop unless pinned ([`Link`](crate::link::Link)), and a
//! `BPF_PROG_TEST_RUN` helper.
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
//! anywhere (a BPF link detaches wherever the dropping thread lives).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::KernelError;
use crate::link::{BpfLink, LinkError};

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
#[non_exhaustive]
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

/// An XDP program attached to an interface through a BPF link. The
/// [`Link`](crate::link::Link) verbs: dropping it detaches the program
/// unless it is pinned.
#[derive(Debug)]
pub struct XdpLink {
    link: BpfLink,
    ifindex: u32,
    mode: XdpMode,
}

crate::link::delegate_link!(XdpLink, link);

impl XdpLink {
    /// The mode the program runs in.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The interface index (in the interface's network namespace).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Reopens a link pinned by [`Link::pin`](crate::link::Link::pin)
    /// whose interface is in the calling thread's network namespace. Its
    /// mode is read from the interface (`bpf_xdp_query`); for an interface
    /// in another namespace use
    /// [`from_pinned_in_netns`](Self::from_pinned_in_netns) (here the mode
    /// could not be read and is reported as [`XdpMode::Generic`]).
    pub fn from_pinned(path: impl AsRef<Path>) -> Result<XdpLink, LinkError> {
        let (link, ifindex, prog_id) = Self::open_pinned(path.as_ref())?;
        let mode = query_mode(ifindex, prog_id);
        Ok(XdpLink {
            link,
            ifindex,
            mode,
        })
    }

    /// Reopens a link pinned by [`Link::pin`](crate::link::Link::pin)
    /// whose interface is in the network namespace at `netns` (a namespace
    /// file, as [`XdpTarget::in_netns`] takes): the mode is read inside
    /// that namespace, so a native link there reports [`XdpMode::Native`].
    pub fn from_pinned_in_netns(
        path: impl AsRef<Path>,
        netns: impl AsRef<Path>,
    ) -> Result<XdpLink, LinkError> {
        let (link, ifindex, prog_id) = Self::open_pinned(path.as_ref())?;
        let mode = crate::netns::run_in(netns, || query_mode(ifindex, prog_id))?;
        Ok(XdpLink {
            link,
            ifindex,
            mode,
        })
    }

    fn open_pinned(path: &Path) -> Result<(BpfLink, u32, u32), LinkError> {
        let (link, info) =
            BpfLink::from_pinned(path, libbpf_rs::libbpf_sys::BPF_LINK_TYPE_XDP, "xdp link")?;
        // SAFETY: from_pinned checked type_ is BPF_LINK_TYPE_XDP, so the xdp member is the one the kernel filled.
        let ifindex = unsafe { info.__bindgen_anon_1.xdp.ifindex };
        Ok((link, ifindex, info.prog_id))
    }
}

/// The mode program `prog_id` runs in on `ifindex` of the calling thread's
/// network namespace: native if the driver slot holds it, else generic.
fn query_mode(ifindex: u32, prog_id: u32) -> XdpMode {
    let mut q = libbpf_rs::libbpf_sys::bpf_xdp_query_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_xdp_query_opts>() as _,
        ..Default::default()
    };
    // SAFETY: `q` is a properly sized, initialised opts struct that outlives the call.
    let rc = unsafe { libbpf_rs::libbpf_sys::bpf_xdp_query(ifindex as i32, 0, &mut q) };
    if rc == 0 && prog_id != 0 && q.drv_prog_id == prog_id {
        XdpMode::Native
    } else {
        XdpMode::Generic
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
    pub fn ifname_in_netns(name: impl Into<String>, netns: impl AsRef<Path>) -> Self {
        XdpTarget::ifname(name).in_netns(netns)
    }

    /// The same interface, in the network namespace at `netns`.
    pub fn in_netns(mut self, netns: impl AsRef<Path>) -> Self {
        self.netns = Some(netns.as_ref().to_path_buf());
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
            .map(|fd| XdpLink {
                link: BpfLink::new(fd, "xdp link"),
                ifindex,
                mode,
            })
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
