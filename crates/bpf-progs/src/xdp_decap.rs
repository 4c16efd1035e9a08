//! `xdp_decap`: the backend side of the XDP load balancer.
//!
//! An XDP program that strips the outer header of tunnelled packets
//! addressed to one of this host's tunnel addresses and passes the inner
//! packet up the stack, so backends need no `ipip`/`ip6_tunnel` module.
//! The VIP lives on the backend's loopback and replies go straight to the
//! client (direct server return).
//!
//! Forms handled ([`DecapForm`]): IPIP (IPv4 in IPv4, outer protocol 4),
//! IPv6 in IPv4 (protocol 41), IP6IP6 (outer IPv6, next header 41) and
//! IPv4 in IPv6 (next header 4). The Ethernet MACs and any single
//! 802.1Q/802.1ad tag are kept; the ethertype becomes the inner protocol's.
//!
//! Verdicts (each case has its own counter in [`DecapStats`]):
//!
//! | packet | verdict | counter |
//! |---|---|---|
//! | tunnel packet to one of our addresses, well formed | `XDP_PASS`, outer header removed | `decap_<form>` |
//! | not IPv4/IPv6, or not a tunnel protocol | `XDP_PASS`, untouched | `passed_not_tunnel` |
//! | tunnel protocol, outer destination not ours | `XDP_PASS`, untouched | `passed_not_ours` |
//! | Ethernet/VLAN/outer IP header truncated or invalid (version, IHL) | `XDP_PASS`, untouched (the stack drops it) | `passed_malformed_outer` |
//! | ours, outer header is a fragment | `XDP_PASS`, untouched (the stack reassembles) | `passed_fragment` |
//! | ours, outer length fields disagree with the frame, inner header truncated/invalid/wrong version | `XDP_DROP` | `dropped_malformed` |
//! | ours, `bpf_xdp_adjust_head` failed | `XDP_DROP` | `dropped_error` |
//! | ours, outer ECN CE, inner Not-ECT (RFC 6040) | `XDP_DROP` | `dropped_ecn` |
//!
//! ECN is handled as the kernel's own tunnels do (RFC 6040, normal mode): a
//! CE mark on the outer header is copied to an ECN-capable inner header
//! (the inner IPv4 header checksum updated; also counted in
//! `ecn_ce_propagated`); otherwise the inner packet is not changed.
//!
//! Outer IPv6 extension headers (hop-by-hop, routing, destination options)
//! are skipped, up to 4 of them.
//!
//! ```no_run
//! use flowpin_bpf_progs::xdp_decap::{XdpDecap, XdpDecapConfig};
//! let decap = XdpDecap::load(XdpDecapConfig::default())?;
//! decap.add_tunnel_addr("10.0.0.2".parse().unwrap())?;
//! let link = decap.attach("eth0")?; // or XdpTarget::ifname_in_netns("eth0", "/run/netns/b1")
//! println!("xdp_decap attached in {} mode", link.mode());
//! let stats = decap.stats()?;
//! println!("decapsulated {}", stats.decapsulated());
//! # Ok::<(), flowpin_bpf_progs::xdp_decap::XdpDecapError>(())
//! ```

use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use libbpf_rs::skel::SkelBuilder;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::error::KernelError;
pub use crate::link::Link;
use crate::pinned_maps::{self, MapTable, PinnedProg};
use crate::skel::xdp_decap::types::decap_stats;
use crate::skel::xdp_decap::XdpDecapSkelBuilder;
use crate::xdp_attach::{attach_xdp, xdp_test_run};
pub use crate::xdp_attach::{
    XdpAttachError, XdpAttachMode, XdpLink, XdpMode, XdpTarget, XdpTestRun, XdpVerdict,
};

/// Errors of the `xdp_decap` control API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpDecapError {
    /// The configuration is unusable.
    #[error("invalid XdpDecapConfig: {0}")]
    InvalidConfig(String),
    /// A kernel call failed: open, load, or a map operation.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Attaching or test-running failed.
    #[error(transparent)]
    Xdp(#[from] XdpAttachError),
    /// Nothing is pinned at `path` ([`XdpDecap::open_pinned`]).
    #[error("nothing is pinned at {}: check the path, or load and pin an xdp_decap there first (XdpDecap::pin)", path.display())]
    NotPinned {
        /// The missing pin or pin directory.
        path: std::path::PathBuf,
    },
    /// A [`Link`] verb failed (pin, update, detach).
    #[error(transparent)]
    Link(#[from] crate::link::LinkError),
    /// The pin directory holds a layout this build cannot use.
    #[error("pin directory {dir} holds xdp_decap layout version {found}; this build uses version {expected}: detach it, remove the pins with XdpDecap::unpin and load again, or run the flowpin build that wrote them")]
    IncompatiblePin {
        /// The pin directory.
        dir: std::path::PathBuf,
        /// The version it holds (0: unreadable).
        found: u32,
        /// The version of this build.
        expected: u32,
    },
}

crate::pin::from_pin_error!(XdpDecapError);

type Result<T> = std::result::Result<T, XdpDecapError>;

/// Load-time configuration of [`XdpDecap`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct XdpDecapConfig {
    /// How many tunnel addresses of each family (IPv4, IPv6) the program can
    /// hold. Default 64.
    pub max_tunnel_addrs: u32,
}

impl Default for XdpDecapConfig {
    fn default() -> Self {
        XdpDecapConfig {
            max_tunnel_addrs: 64,
        }
    }
}

impl XdpDecapConfig {
    /// Sets [`XdpDecapConfig::max_tunnel_addrs`].
    pub fn max_tunnel_addrs(mut self, n: u32) -> Self {
        self.max_tunnel_addrs = n;
        self
    }
}

/// The encapsulation forms `xdp_decap` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecapForm {
    /// IPv4 in IPv4 (outer protocol 4).
    Ipip,
    /// IPv6 in IPv6 (outer next header 41).
    Ip6Ip6,
    /// IPv4 in IPv6 (outer next header 4).
    Ip4InIp6,
    /// IPv6 in IPv4 (outer protocol 41).
    Ip6InIp4,
}

/// Counters of `xdp_decap`, summed over CPUs; read from the generated
/// `struct decap_stats` of `xdp_decap.bpf.c`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecapStats {
    /// IPIP packets decapsulated.
    pub decap_ipip: u64,
    /// IP6IP6 packets decapsulated.
    pub decap_ip6ip6: u64,
    /// IPv4-in-IPv6 packets decapsulated.
    pub decap_4in6: u64,
    /// IPv6-in-IPv4 packets decapsulated.
    pub decap_6in4: u64,
    /// Passed untouched: not IP, or not a tunnel protocol.
    pub passed_not_tunnel: u64,
    /// Passed untouched: a tunnel packet for an address that is not ours.
    pub passed_not_ours: u64,
    /// Passed untouched: Ethernet/VLAN/outer IP header truncated or invalid.
    pub passed_malformed_outer: u64,
    /// Passed untouched: a tunnel packet for us whose outer header is a
    /// fragment.
    pub passed_fragment: u64,
    /// Dropped: a tunnel packet for us with inconsistent outer lengths or a
    /// truncated/invalid inner header.
    pub dropped_malformed: u64,
    /// Dropped: `bpf_xdp_adjust_head` failed.
    pub dropped_error: u64,
    /// Decapsulated packets whose inner header got the outer CE mark (also
    /// counted in their `decap_<form>`).
    pub ecn_ce_propagated: u64,
    /// Dropped: outer header CE, inner packet not ECN-capable (RFC 6040).
    pub dropped_ecn: u64,
}

impl DecapStats {
    /// Packets decapsulated, all forms.
    pub fn decapsulated(&self) -> u64 {
        self.decap_ipip + self.decap_ip6ip6 + self.decap_4in6 + self.decap_6in4
    }

    /// Packets decapsulated in one form.
    pub fn decapsulated_form(&self, form: DecapForm) -> u64 {
        match form {
            DecapForm::Ipip => self.decap_ipip,
            DecapForm::Ip6Ip6 => self.decap_ip6ip6,
            DecapForm::Ip4InIp6 => self.decap_4in6,
            DecapForm::Ip6InIp4 => self.decap_6in4,
        }
    }

    /// Packets passed untouched, all reasons.
    pub fn passed(&self) -> u64 {
        self.passed_not_tunnel
            + self.passed_not_ours
            + self.passed_malformed_outer
            + self.passed_fragment
    }

    /// Packets dropped, all reasons.
    pub fn dropped(&self) -> u64 {
        self.dropped_malformed + self.dropped_error + self.dropped_ecn
    }

    /// Every packet the program saw.
    pub fn total(&self) -> u64 {
        self.decapsulated() + self.passed() + self.dropped()
    }
}

impl From<decap_stats> for DecapStats {
    fn from(f: decap_stats) -> Self {
        DecapStats {
            decap_ipip: f.decap_ipip,
            decap_ip6ip6: f.decap_ip6ip6,
            decap_4in6: f.decap_4in6,
            decap_6in4: f.decap_6in4,
            passed_not_tunnel: f.passed_not_tunnel,
            passed_not_ours: f.passed_not_ours,
            passed_malformed_outer: f.passed_malformed_outer,
            passed_fragment: f.passed_fragment,
            dropped_malformed: f.dropped_malformed,
            dropped_error: f.dropped_error,
            ecn_ce_propagated: f.ecn_ce_propagated,
            dropped_ecn: f.dropped_ecn,
        }
    }
}

/// The loaded `xdp_decap` program and its maps. Owns only file descriptors:
/// links made by [`XdpDecap::attach`] keep the program alive on their own.
///
/// Pin it ([`pin`](Self::pin)) to keep its tunnel addresses beyond this
/// process; [`open_pinned`](Self::open_pinned) finds them again and
/// [`upgrade`](Self::upgrade) swaps this build's program into a link.
#[derive(Debug)]
pub struct XdpDecap {
    prog: PinnedProg,
    maps: DecapMaps,
    config: XdpDecapConfig,
}

pinned_maps::map_table! {
    /// The maps of `xdp_decap`.
    #[derive(Debug)]
    struct DecapMaps {
        tunnel_v4: Map,
        tunnel_v6: Map,
        stats: Map,
        meta: Meta,
    }
    extra {}
    pin_names:
        /// The files of a pinned `xdp_decap`: the maps, then `prog`.
        pub const PIN_NAMES;
}

const LOAD_HINT: &str = "verifier rejection, or missing CAP_BPF/CAP_NET_ADMIN/memlock";

/// Opens, sizes and loads the program; with `reuse`, against those maps.
fn load_program(
    config: &XdpDecapConfig,
    reuse: Option<&DecapMaps>,
) -> Result<(OwnedFd, DecapMaps)> {
    let mut storage = MaybeUninit::uninit();
    let mut open = XdpDecapSkelBuilder::default()
        .open(&mut storage)
        .map_err(KernelError::object("object xdp_decap", "open", ""))?;
    for (map, name) in [
        (&mut open.maps.tunnel_v4, "tunnel_v4"),
        (&mut open.maps.tunnel_v6, "tunnel_v6"),
    ] {
        map.set_max_entries(config.max_tunnel_addrs)
            .map_err(KernelError::map(name, "set_max_entries"))?;
    }
    let (prog, maps) = pinned_maps::load_table(open, reuse, "xdp_decap", LOAD_HINT)?;
    let version = flowpin_bpf_abi::lb::DECAP_LAYOUT_VERSION.to_ne_bytes();
    pinned_maps::write_meta(&maps.meta, &version)?;
    Ok((prog, maps))
}

impl XdpDecap {
    /// Opens and loads the program into the kernel (not yet attached).
    pub fn load(config: XdpDecapConfig) -> Result<Self> {
        if config.max_tunnel_addrs == 0 {
            return Err(XdpDecapError::InvalidConfig(
                "max_tunnel_addrs must be at least 1".into(),
            ));
        }
        let (prog, maps) = load_program(&config, None)?;
        Ok(XdpDecap {
            prog: PinnedProg::loaded(prog),
            maps,
            config,
        })
    }

    /// Pins the program and its maps under `dir` (created on bpffs, pins
    /// 0600), so the tunnel addresses outlive this process. Pin the link
    /// from [`attach`](Self::attach) with [`Link::pin`],
    /// conventionally as `dir/link`.
    pub fn pin(&self, dir: impl AsRef<Path>) -> Result<()> {
        Ok(self.prog.pin(dir.as_ref(), &self.maps)?)
    }

    /// Reopens an `xdp_decap` pinned by [`pin`](Self::pin): its program
    /// (still running behind its pinned link) and its maps. A directory of
    /// another layout version is refused; [`XdpDecapError::NotPinned`] if
    /// nothing is pinned there.
    pub fn open_pinned(dir: impl AsRef<Path>) -> Result<XdpDecap> {
        let dir = dir.as_ref();
        let (raw, found) = pinned_maps::read_meta::<DecapMaps>(dir)?;
        let expected = flowpin_bpf_abi::lb::DECAP_LAYOUT_VERSION;
        if raw.len() != 4 || found != expected {
            return Err(XdpDecapError::IncompatiblePin {
                dir: dir.to_path_buf(),
                found,
                expected,
            });
        }
        let (prog, maps) = pinned_maps::open_table::<DecapMaps>(dir)?;
        let config = XdpDecapConfig::default().max_tunnel_addrs(maps.tunnel_v4.max_entries());
        Ok(XdpDecap {
            prog: PinnedProg::reopened(prog, dir),
            maps,
            config,
        })
    }

    /// Removes a pinned `xdp_decap` directory (every pin in it, links
    /// included, and the directory). A missing directory is not an error.
    pub fn unpin(dir: impl AsRef<Path>) -> Result<()> {
        Ok(crate::pin::remove_pin_dir(dir)?)
    }

    /// Upgrades in place: loads this build's program against these maps
    /// (`reuse_fd`: the tunnel addresses and counters stay) and swaps it
    /// into `link` atomically (`BPF_LINK_UPDATE`). When pinned, the `prog`
    /// pin is replaced too.
    pub fn upgrade(&mut self, link: &XdpLink) -> Result<()> {
        self.prog.upgrade(link, || {
            load_program(&self.config, Some(&self.maps)).map(|(prog, _)| prog)
        })
    }

    /// The program's fd (for `attach_xdp`, queries, or test runs).
    pub fn program_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// Attaches to `target` (an ifindex, a name, or an [`XdpTarget`] with a
    /// namespace and mode); dropping the link detaches unless it is pinned.
    pub fn attach(&self, target: impl Into<XdpTarget>) -> Result<XdpLink> {
        Ok(attach_xdp(self.program_fd(), target)?)
    }

    /// The tunnel-address maps (IPv4 address / IPv6 address → `u8` 1), for
    /// users who go lower ([`libbpf_rs::MapHandle`]s of the libbpf-rs this
    /// crate re-exports).
    pub fn tunnel_maps(&self) -> (&MapHandle, &MapHandle) {
        (&self.maps.tunnel_v4, &self.maps.tunnel_v6)
    }

    /// One of the program's maps by its pin name ([`PIN_NAMES`]), for
    /// users who go lower.
    pub fn map(&self, name: &str) -> Option<&MapHandle> {
        self.maps.map_named(name)
    }

    /// Adds one of this host's tunnel addresses: tunnel packets to it are
    /// decapsulated. Adding an address twice is not an error.
    pub fn add_tunnel_addr(&self, addr: IpAddr) -> Result<()> {
        let (map, name, key) = self.tunnel_map(addr);
        map.update(&key, &[1], MapFlags::ANY).map_err(|e| {
            KernelError::libbpf(
                format!("map {name}"),
                "update",
                &e,
                "E2BIG: the map is full; raise XdpDecapConfig::max_tunnel_addrs",
            )
            .into()
        })
    }

    /// Removes a tunnel address. Returns whether it was present.
    pub fn remove_tunnel_addr(&self, addr: IpAddr) -> Result<bool> {
        let (map, name, key) = self.tunnel_map(addr);
        match map.delete(&key) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(KernelError::map(name, "delete")(e).into()),
        }
    }

    /// The configured tunnel addresses (IPv4 first, unordered within a family).
    pub fn tunnel_addrs(&self) -> Result<Vec<IpAddr>> {
        let mut out = tunnel_keys::<4>(&self.maps.tunnel_v4, "tunnel_v4")?;
        out.extend(tunnel_keys::<16>(&self.maps.tunnel_v6, "tunnel_v6")?);
        Ok(out)
    }

    fn tunnel_map(&self, addr: IpAddr) -> (&MapHandle, &'static str, Vec<u8>) {
        match addr {
            IpAddr::V4(a) => (&self.maps.tunnel_v4, "tunnel_v4", a.octets().to_vec()),
            IpAddr::V6(a) => (&self.maps.tunnel_v6, "tunnel_v6", a.octets().to_vec()),
        }
    }

    /// The counters, summed over all CPUs (one `lookup_percpu`).
    pub fn stats(&self) -> Result<DecapStats> {
        let per_cpu = self
            .maps
            .stats
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(KernelError::map("stats", "lookup_percpu"))?
            .unwrap_or_default();
        let sum: decap_stats = crate::skel::sum_counters(&per_cpu).ok_or_else(|| {
            KernelError::out_of_sync(
                "map stats",
                "lookup_percpu",
                per_cpu.first().map_or(0, Vec::len),
                std::mem::size_of::<decap_stats>(),
            )
        })?;
        Ok(sum.into())
    }

    /// Runs the program once on `packet` with `BPF_PROG_TEST_RUN` (for tests
    /// and benches). The live maps are used: counters it bumps stay bumped.
    pub fn test_run(&self, packet: &[u8]) -> Result<XdpTestRun> {
        Ok(xdp_test_run(self.program_fd(), packet)?)
    }
}

/// The keys of tunnel-address map `name`, each `N` bytes (4: IPv4, 16: IPv6).
fn tunnel_keys<const N: usize>(map: &MapHandle, name: &'static str) -> Result<Vec<IpAddr>>
where
    IpAddr: From<[u8; N]>,
{
    map.keys()
        .map(|key| {
            <[u8; N]>::try_from(key.as_slice())
                .map(IpAddr::from)
                .map_err(|_| {
                    KernelError::out_of_sync(format!("map {name}"), "keys", key.len(), N).into()
                })
        })
        .collect()
}
