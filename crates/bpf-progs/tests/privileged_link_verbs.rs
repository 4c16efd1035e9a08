//! Privileged: every link type of the crate passes one test of the
//! [`Link`] verbs — the same generic body ([`verbs`]) for the XDP link (an
//! interface of a test namespace), the sock_ops cgroup link (a test
//! cgroup), the sk_lookup netns link (a test namespace) and the
//! sk_reuseport attachment (a UDP group in a test namespace):
//!
//! attach → pin → drop the handle (still attached) → reopen from the pin
//! → update to another program (the hook runs its id) → detach (nothing
//! runs, although pinned) → unpin → a fresh unpinned link detaches on drop.
//!
//! "What runs at the hook" is the kernel's view, never the handle's: the
//! XDP program id of the interface (`bpf_xdp_query`), the programs of the
//! cgroup / namespace (`bpf_prog_query`), and for sk_reuseport (no kernel
//! query exists) which program's counters a datagram to the group moves, or
//! that the datagram reached a socket by the kernel's own hash.
//!
//! sk_reuseport has no kernel link: `pin` is `LinkError::Unsupported`, the
//! attachment stays on drop (like a pinned link), and "reopen" is attaching
//! the same program again through another socket of the group.
//!
//! As root these never skip.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns too

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowpin_bpf_progs::libbpf_rs::libbpf_sys;
use flowpin_bpf_progs::link::{Link, LinkError, LinkInfo, LinkTarget};
use flowpin_bpf_progs::pin::{create_pin_dir, prog_id, remove_pin_dir};
use flowpin_bpf_progs::sk_lookup::{SkLookup, SkLookupConfig, SkLookupLink};
use flowpin_bpf_progs::sk_reuseport_select::{
    Proto, ReuseportLink, SelectConfig, SkReuseportSelect,
};
use flowpin_bpf_progs::sockops_server_id::{ServerIdOps, ServerIdOpsConfig, SockopsLink};
use flowpin_bpf_progs::xdp_attach::{XdpAttachMode, XdpLink, XdpMode, XdpTarget};
use flowpin_bpf_progs::xdp_pass::{XdpPass, XdpPassConfig};
use flowpin_testing::{require_bpf, unique_name, Cgroup, NetNs};

/// One link type under test: two programs of its type (A attached first,
/// B swapped in), its hook, and how to see what runs there.
trait Fixture {
    type L: Link;
    /// Whether the kernel has a link to pin for this type.
    const PINNABLE: bool;
    /// Attaches program A.
    fn attach_a(&self) -> Self::L;
    /// Reopens the attachment of A (from the pin when pinnable).
    fn reopen(&self, pin: &Path) -> Self::L;
    /// Programs A and B.
    fn progs(&self) -> [BorrowedFd<'_>; 2];
    /// Program ids of A and B.
    fn ids(&self) -> (u32, u32) {
        let [a, b] = self.progs();
        (prog_id(a).unwrap(), prog_id(b).unwrap())
    }
    /// The id of the program the hook runs, as the kernel sees it (`None`:
    /// nothing attached).
    fn running(&self) -> Option<u32>;
    /// Checks what `info()` says the link is attached to.
    fn check_target(&self, target: LinkTarget);
}

/// Removes the test's bpffs directory on every exit path.
struct PinDir(PathBuf);
impl PinDir {
    fn new(tag: &str) -> Self {
        let dir = PathBuf::from("/sys/fs/bpf").join(unique_name(tag));
        create_pin_dir(&dir).unwrap();
        PinDir(dir)
    }
}
impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = remove_pin_dir(&self.0);
    }
}

/// The shared test of the Link verbs.
fn verbs<F: Fixture>(f: &F, tag: &str) {
    let (a, b) = f.ids();
    assert_ne!(a, b);
    let dir = PinDir::new(tag);
    let pin = dir.0.join("link");

    let mut link = f.attach_a();
    assert_eq!(link.program_id().unwrap(), a);
    assert_eq!(f.running(), Some(a), "{tag}: attached");
    let info: LinkInfo = link.info().unwrap();
    assert_eq!(info.program_id, a);
    assert_eq!(
        info.id.is_some(),
        F::PINNABLE,
        "{tag}: a kernel link has an id"
    );
    f.check_target(info.target);
    assert_eq!(link.pin_path(), None);

    // pin
    if F::PINNABLE {
        link.pin(&pin).unwrap();
        assert_eq!(link.pin_path(), Some(pin.as_path()));
        assert!(pin.exists(), "{tag}: pinned");
    } else {
        let err = link.pin(&pin).unwrap_err();
        assert!(
            matches!(err, LinkError::Unsupported { op: "pin", .. }),
            "{tag}: {err}"
        );
        assert!(err.to_string().contains("no kernel link"), "{err}");
        assert!(!pin.exists());
    }

    // drop: a pinned link (and an sk_reuseport attachment) stays attached
    drop(link);
    assert_eq!(
        f.running(),
        Some(a),
        "{tag}: dropping the handle of a pinned link detached it"
    );

    // reopen
    let mut link = f.reopen(&pin);
    assert_eq!(link.program_id().unwrap(), a);
    assert_eq!(f.running(), Some(a));

    // update
    link.update_program(f.progs()[1]).unwrap();
    assert_eq!(link.program_id().unwrap(), b, "{tag}: the link runs B");
    assert_eq!(f.running(), Some(b), "{tag}: the hook runs B");

    // detach: always, pinned or not
    link.detach().unwrap();
    assert_eq!(f.running(), None, "{tag}: detach left a program attached");

    // unpin
    link.unpin().unwrap();
    assert_eq!(link.pin_path(), None);
    assert!(!pin.exists(), "{tag}: unpin left the pin");
    link.unpin().unwrap(); // nothing left to unpin: not an error
    drop(link);
    assert_eq!(f.running(), None);

    // A fresh, unpinned link: dropping it detaches (sk_reuseport: never).
    let link = f.attach_a();
    assert_eq!(f.running(), Some(a));
    drop(link);
    if F::PINNABLE {
        assert_eq!(
            f.running(),
            None,
            "{tag}: an unpinned link survived its drop"
        );
    } else {
        assert_eq!(f.running(), Some(a), "{tag}: the group lost its program");
        let mut again = f.reopen(&pin);
        again.detach().unwrap();
        assert_eq!(f.running(), None);
    }
}

/// Program ids attached to `target` for `attach_type` (`bpf_prog_query`).
fn query(target: BorrowedFd<'_>, attach_type: u32) -> Vec<u32> {
    let mut ids = [0u32; 16];
    let mut cnt = ids.len() as u32;
    // SAFETY: `ids` holds `cnt` u32s, the kernel writes at most `cnt` and
    // updates `cnt`; a NULL attach_flags pointer is allowed.
    let rc = unsafe {
        libbpf_sys::bpf_prog_query(
            target.as_raw_fd(),
            attach_type,
            0,
            std::ptr::null_mut(),
            ids.as_mut_ptr(),
            &mut cnt,
        )
    };
    assert_eq!(rc, 0, "bpf_prog_query");
    ids[..cnt as usize].to_vec()
}

fn only(ids: Vec<u32>) -> Option<u32> {
    assert!(ids.len() <= 1, "more than one program attached: {ids:?}");
    ids.first().copied()
}

// ---- XDP: an interface of a test namespace -------------------------------

struct Xdp {
    ns: NetNs,
    ifindex: u32,
    a: XdpPass,
    b: XdpPass,
}

impl Xdp {
    fn new() -> Self {
        let ns = NetNs::new("lvx").unwrap();
        ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"])
            .unwrap();
        ns.ip(&["link", "set", "v0", "up"]).unwrap();
        ns.ip(&["link", "set", "v1", "up"]).unwrap();
        let ifindex = ns
            .run(|| nix::net::if_::if_nametoindex("v0").unwrap())
            .unwrap();
        Xdp {
            ns,
            ifindex,
            a: XdpPass::load(XdpPassConfig::default()).unwrap(),
            b: XdpPass::load(XdpPassConfig::default()).unwrap(),
        }
    }
}

impl Fixture for Xdp {
    type L = XdpLink;
    const PINNABLE: bool = true;

    fn attach_a(&self) -> XdpLink {
        let target = XdpTarget::ifname_in_netns("v0", self.ns.path()).mode(XdpAttachMode::Native);
        let link = self.a.attach(target).unwrap();
        assert_eq!(link.mode(), XdpMode::Native);
        link
    }

    fn reopen(&self, pin: &Path) -> XdpLink {
        // The interface is in another namespace: given, a native link
        // reports Native.
        let link = XdpLink::from_pinned_in_netns(pin, self.ns.path()).unwrap();
        assert_eq!(
            link.mode(),
            XdpMode::Native,
            "mode of a reopened native link"
        );
        assert_eq!(link.ifindex(), self.ifindex);
        link
    }

    fn progs(&self) -> [BorrowedFd<'_>; 2] {
        [self.a.program_fd(), self.b.program_fd()]
    }

    fn running(&self) -> Option<u32> {
        let ifindex = self.ifindex;
        let (drv, skb) = self
            .ns
            .run(move || {
                let mut q = libbpf_sys::bpf_xdp_query_opts {
                    sz: std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as _,
                    ..Default::default()
                };
                // SAFETY: a properly sized, initialised opts struct that outlives the call.
                let rc = unsafe { libbpf_sys::bpf_xdp_query(ifindex as i32, 0, &mut q) };
                assert_eq!(rc, 0, "bpf_xdp_query");
                (q.drv_prog_id, q.skb_prog_id)
            })
            .unwrap();
        assert_eq!(skb, 0, "nothing runs in generic mode");
        (drv != 0).then_some(drv)
    }

    fn check_target(&self, target: LinkTarget) {
        assert_eq!(
            target,
            LinkTarget::Xdp {
                ifindex: self.ifindex
            }
        );
    }
}

#[test]
fn privileged_link_verbs_xdp() {
    if !require_bpf("privileged_link_verbs_xdp") {
        return;
    }
    verbs(&Xdp::new(), "lvxdp");
}

// ---- sock_ops: a test cgroup ----------------------------------------------

struct Sockops {
    cg: Cgroup,
    a: ServerIdOps,
    b: ServerIdOps,
}

impl Fixture for Sockops {
    type L = SockopsLink;
    const PINNABLE: bool = true;

    fn attach_a(&self) -> SockopsLink {
        // Any path type: a PathBuf here.
        self.a.attach(self.cg.path().to_path_buf()).unwrap()
    }

    fn reopen(&self, pin: &Path) -> SockopsLink {
        SockopsLink::from_pinned(pin).unwrap()
    }

    fn progs(&self) -> [BorrowedFd<'_>; 2] {
        [self.a.program_fd(), self.b.program_fd()]
    }

    fn running(&self) -> Option<u32> {
        let dir = self.cg.open().unwrap();
        only(query(dir.as_fd(), libbpf_sys::BPF_CGROUP_SOCK_OPS))
    }

    fn check_target(&self, target: LinkTarget) {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(self.cg.path()).unwrap().ino();
        assert_eq!(target, LinkTarget::Cgroup { cgroup_id: ino });
    }
}

#[test]
fn privileged_link_verbs_sockops() {
    if !require_bpf("privileged_link_verbs_sockops") {
        return;
    }
    let f = Sockops {
        cg: Cgroup::new("lvso").unwrap(),
        a: ServerIdOps::load(ServerIdOpsConfig::client()).unwrap(),
        b: ServerIdOps::load(ServerIdOpsConfig::client()).unwrap(),
    };
    verbs(&f, "lvsockops");
}

// ---- sk_lookup: a test namespace ------------------------------------------

struct Lookup {
    ns: NetNs,
    a: SkLookup,
    b: SkLookup,
}

impl Fixture for Lookup {
    type L = SkLookupLink;
    const PINNABLE: bool = true;

    fn attach_a(&self) -> SkLookupLink {
        // Any path type: a String here.
        self.a.attach(self.ns.path().display().to_string()).unwrap()
    }

    fn reopen(&self, pin: &Path) -> SkLookupLink {
        SkLookupLink::from_pinned(pin).unwrap()
    }

    fn progs(&self) -> [BorrowedFd<'_>; 2] {
        [self.a.program_fd(), self.b.program_fd()]
    }

    fn running(&self) -> Option<u32> {
        let ns = File::open(self.ns.path()).unwrap();
        only(query(ns.as_fd(), libbpf_sys::BPF_SK_LOOKUP))
    }

    fn check_target(&self, target: LinkTarget) {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(self.ns.path()).unwrap().ino();
        assert_eq!(
            target,
            LinkTarget::Netns {
                netns_ino: ino as u32
            }
        );
    }
}

#[test]
fn privileged_link_verbs_sk_lookup() {
    if !require_bpf("privileged_link_verbs_sk_lookup") {
        return;
    }
    let small = || SkLookup::load(SkLookupConfig::new().max_bindings(16)).unwrap();
    let f = Lookup {
        ns: NetNs::new("lvsl").unwrap(),
        a: small(),
        b: small(),
    };
    verbs(&f, "lvsklookup");
}

// ---- sk_reuseport: a UDP group in a test namespace ------------------------

struct Reuseport {
    ns: NetNs,
    addr: SocketAddr,
    /// The group: two sockets bound with SO_REUSEPORT.
    group: [UdpSocket; 2],
    a: SkReuseportSelect,
    b: SkReuseportSelect,
}

/// A UDP socket bound to `addr` with `SO_REUSEPORT`, non-blocking.
fn reuseport_udp(addr: SocketAddr) -> UdpSocket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(&addr.into()).unwrap();
    s.set_nonblocking(true).unwrap();
    s.into()
}

/// What a program counted: every delivery and every drop.
fn runs(p: &SkReuseportSelect) -> u64 {
    let s = p.stats().unwrap();
    s.packets + s.drops.iter().sum::<u64>()
}

impl Reuseport {
    fn new() -> Self {
        let ns = NetNs::new("lvrp").unwrap();
        let addr: SocketAddr = "127.0.0.1:4790".parse().unwrap();
        let group = ns
            .run(move || [reuseport_udp(addr), reuseport_udp(addr)])
            .unwrap();
        let load = || SkReuseportSelect::load(SelectConfig::new(addr, Proto::Udp)).unwrap();
        Reuseport {
            ns,
            addr,
            group,
            a: load(),
            b: load(),
        }
    }

    /// Drains what the group's sockets received; whether anything was.
    fn received(&self) -> bool {
        let mut buf = [0u8; 64];
        let mut any = false;
        for s in &self.group {
            while s.recv(&mut buf).is_ok() {
                any = true;
            }
        }
        any
    }
}

impl Fixture for Reuseport {
    type L = ReuseportLink;
    const PINNABLE: bool = false;

    fn attach_a(&self) -> ReuseportLink {
        self.a.attach(self.group[0].as_fd()).unwrap()
    }

    fn reopen(&self, _pin: &Path) -> ReuseportLink {
        // No pin to reopen: attach A again through the other socket.
        self.a.attach(self.group[1].as_fd()).unwrap()
    }

    fn progs(&self) -> [BorrowedFd<'_>; 2] {
        [self.a.program_fd(), self.b.program_fd()]
    }

    /// Sends a datagram to the group: the program that runs counts it
    /// (no live generation: a drop); with none, the kernel's hash
    /// delivers it to a socket.
    fn running(&self) -> Option<u32> {
        self.received();
        let (ra, rb) = (runs(&self.a), runs(&self.b));
        let addr = self.addr;
        self.ns
            .run(move || {
                let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                c.send_to(b"which program?", addr).unwrap();
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let (na, nb) = (runs(&self.a), runs(&self.b));
            if na != ra || nb != rb {
                assert!(na == ra || nb == rb, "both programs ran");
                return Some(if na != ra {
                    self.a.program_id()
                } else {
                    self.b.program_id()
                });
            }
            if self.received() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the datagram was neither counted by a program nor received");
    }

    fn check_target(&self, target: LinkTarget) {
        assert_eq!(target, LinkTarget::ReuseportGroup);
    }
}

#[test]
fn privileged_link_verbs_sk_reuseport() {
    if !require_bpf("privileged_link_verbs_sk_reuseport") {
        return;
    }
    verbs(&Reuseport::new(), "lvreuseport");
}
