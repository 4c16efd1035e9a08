//! `probe_encap`: health probes through the data path.
//!
//! A TCX egress program for the LB host's interface towards the backends.
//! A probe socket is addressed to the **VIP** and marked
//! ([`probe_mark`]`(index)`, `SO_MARK`); the program encapsulates its
//! packets towards backend `index` ([`ProbeEncap::set_backend`]) exactly as
//! `xdp_lb` encapsulates VIP traffic: IPIP, IP6IP6, or IPv4 in IPv6. The
//! backend's `xdp_decap` strips the outer header and the service answers on
//! the VIP, straight back to the prober (DSR). So a probe passes only when
//! the whole path a client's flow takes works: tunnel, decap, the service
//! listening on the VIP.
//!
//! The next hop of the backend's tunnel address comes from the kernel's FIB
//! (`bpf_fib_lookup`; `bpf_redirect_neigh` while the neighbour is
//! unresolved); when no route is found the VIP's next hop is kept. The LB
//! host needs a route for the VIP out of the interface the program is
//! attached to (the probes' first hop), e.g. its default route.
//!
//! | packet | verdict | counter ([`ProbeStats`]) |
//! |---|---|---|
//! | mark not a probe mark | next program (`TCX_NEXT`) | `not_probe` |
//! | probe mark, index without backend | dropped | `dropped_no_backend` |
//! | not IPv4/IPv6, truncated, IPv6 to an IPv4 backend | dropped | `dropped_bad_packet` |
//! | IPv4 to an IPv6 backend, no IPv6 source set | dropped | `dropped_no_source` |
//! | a helper failed | dropped | `dropped_error` |
//! | encapsulated | sent | `encap_ipip` / `encap_ip6ip6` / `encap_4in6` |
//!
//! ```no_run
//! use flowpin_bpf_progs::probe_encap::{probe_mark, ProbeEncap, ProbeEncapConfig};
//! let probes = ProbeEncap::load(ProbeEncapConfig::default())?;
//! probes.set_backend(7, "10.0.1.7".parse().unwrap())?;
//! let _link = probes.attach_ifname("eth0")?; // dropping the link detaches
//! // A socket with SO_MARK = probe_mark(7) connecting to the VIP now
//! // reaches backend 7 through its tunnel.
//! # let _ = probe_mark(7);
//! # Ok::<(), flowpin_bpf_progs::probe_encap::ProbeEncapError>(())
//! ```

use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::error::KernelError;
pub use crate::link::Link;
use crate::link::{BpfLink, LinkError, LinkInfo};
use crate::skel::probe_encap::types::{
    flowpin_probe_backend, flowpin_probe_cfg, flowpin_probe_stats,
};
use crate::skel::probe_encap::ProbeEncapSkelBuilder;
pub use flowpin_bpf_abi::probe::{index_of, mark_of, INDEX_MASK, MARK, MARK_MASK};

/// Errors of [`ProbeEncap`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeEncapError {
    /// The configuration or an argument is invalid (the message says which).
    #[error("invalid probe_encap configuration: {0}")]
    InvalidConfig(String),
    /// A kernel operation failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A link verb failed.
    #[error(transparent)]
    Link(#[from] LinkError),
}

type Result<T, E = ProbeEncapError> = std::result::Result<T, E>;

/// The socket mark of a probe towards backend `index`.
///
/// # Panics
/// Never for `index` ≤ [`INDEX_MASK`]; larger indexes are masked (use
/// [`mark_of`] to get `None` instead).
pub fn probe_mark(index: u32) -> u32 {
    MARK | (index & INDEX_MASK)
}

/// Load-time configuration of [`ProbeEncap`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeEncapConfig {
    /// Entries of the backend table (indexes `0..max_backends`).
    pub max_backends: u32,
    /// Outer IPv4 source; `None`: the probe's own source.
    pub src4: Option<Ipv4Addr>,
    /// Outer IPv6 source; `None`: the probe's own source (an IPv4 probe to
    /// an IPv6 backend then has none and is dropped).
    pub src6: Option<Ipv6Addr>,
}

impl Default for ProbeEncapConfig {
    fn default() -> Self {
        ProbeEncapConfig {
            max_backends: flowpin_bpf_abi::probe::DEFAULT_BACKENDS,
            src4: None,
            src6: None,
        }
    }
}

impl ProbeEncapConfig {
    /// Sets [`max_backends`](Self::max_backends) (1 ..= `INDEX_MASK + 1`).
    pub fn max_backends(mut self, n: u32) -> Self {
        self.max_backends = n;
        self
    }

    /// Sets the outer IPv4 source.
    pub fn src4(mut self, a: Ipv4Addr) -> Self {
        self.src4 = Some(a);
        self
    }

    /// Sets the outer IPv6 source (needed for IPv4 probes to IPv6 backends).
    pub fn src6(mut self, a: Ipv6Addr) -> Self {
        self.src6 = Some(a);
        self
    }
}

/// The counters of `probe_encap`, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeStats {
    /// Probes encapsulated IPv4 in IPv4.
    pub encap_ipip: u64,
    /// Probes encapsulated IPv6 in IPv6.
    pub encap_ip6ip6: u64,
    /// Probes encapsulated IPv4 in IPv6.
    pub encap_4in6: u64,
    /// Packets without a probe mark, passed on untouched.
    pub not_probe: u64,
    /// Probes whose index has no backend.
    pub dropped_no_backend: u64,
    /// Probes that are not IPv4/IPv6, truncated, or IPv6 to an IPv4 backend.
    pub dropped_bad_packet: u64,
    /// IPv4 probes to an IPv6 backend without an IPv6 source configured.
    pub dropped_no_source: u64,
    /// Probes dropped because a kernel helper failed.
    pub dropped_error: u64,
    /// Probes sent out of another interface than the one attached to, or
    /// through `bpf_redirect_neigh`.
    pub redirected: u64,
}

impl ProbeStats {
    /// Probes encapsulated, every form.
    pub fn encapsulated(&self) -> u64 {
        self.encap_ipip + self.encap_ip6ip6 + self.encap_4in6
    }

    /// Probes dropped, every reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_no_backend
            + self.dropped_bad_packet
            + self.dropped_no_source
            + self.dropped_error
    }
}

impl From<flowpin_probe_stats> for ProbeStats {
    fn from(s: flowpin_probe_stats) -> Self {
        ProbeStats {
            encap_ipip: s.encap_ipip,
            encap_ip6ip6: s.encap_ip6ip6,
            encap_4in6: s.encap_4in6,
            not_probe: s.not_probe,
            dropped_no_backend: s.dropped_no_backend,
            dropped_bad_packet: s.dropped_bad_packet,
            dropped_no_source: s.dropped_no_source,
            dropped_error: s.dropped_error,
            redirected: s.redirected,
        }
    }
}

/// The loaded `probe_encap` program and its maps.
#[derive(Debug)]
pub struct ProbeEncap {
    prog: OwnedFd,
    backends: MapHandle,
    cfg: MapHandle,
    stats: MapHandle,
    max_backends: u32,
}

/// The TCX egress attachment of [`ProbeEncap`]; dropping it detaches
/// (unless pinned). The [`Link`] verbs apply.
#[derive(Debug)]
pub struct ProbeLink {
    link: BpfLink,
    ifindex: u32,
}

impl ProbeLink {
    /// The interface it is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

impl Link for ProbeLink {
    fn pin(&mut self, path: impl AsRef<std::path::Path>) -> Result<(), LinkError> {
        self.link.pin(path)
    }
    fn unpin(&mut self) -> Result<(), LinkError> {
        self.link.unpin()
    }
    fn pin_path(&self) -> Option<&std::path::Path> {
        self.link.pin_path()
    }
    fn update_program(&self, prog: impl AsFd) -> Result<(), LinkError> {
        self.link.update_program(prog)
    }
    fn detach(&mut self) -> Result<(), LinkError> {
        self.link.detach()
    }
    fn info(&self) -> Result<LinkInfo, LinkError> {
        self.link.info()
    }
}

fn map_handle(map: &libbpf_rs::Map<'_>, name: &'static str) -> Result<MapHandle> {
    Ok(MapHandle::try_from(map).map_err(KernelError::map(name, "dup"))?)
}

impl ProbeEncap {
    /// Opens, sizes and loads the program (not yet attached).
    pub fn load(config: ProbeEncapConfig) -> Result<Self> {
        if config.max_backends == 0 || config.max_backends > INDEX_MASK + 1 {
            return Err(ProbeEncapError::InvalidConfig(format!(
                "max_backends must be 1..={}, got {}",
                INDEX_MASK + 1,
                config.max_backends
            )));
        }
        let mut storage = MaybeUninit::uninit();
        let mut open = ProbeEncapSkelBuilder::default()
            .open(&mut storage)
            .map_err(KernelError::object("object probe_encap", "open", ""))?;
        open.maps
            .probe_backends
            .set_max_entries(config.max_backends)
            .map_err(KernelError::map("probe_backends", "set_max_entries"))?;
        let skel = open.load().map_err(KernelError::object(
            "program probe_encap",
            "load",
            "verifier rejection, or missing CAP_BPF/CAP_NET_ADMIN",
        ))?;
        let prog = skel
            .progs
            .probe_encap
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| KernelError::io("program probe_encap", "dup", &e, ""))?;
        let me = ProbeEncap {
            prog,
            backends: map_handle(&skel.maps.probe_backends, "probe_backends")?,
            cfg: map_handle(&skel.maps.probe_cfg, "probe_cfg")?,
            stats: map_handle(&skel.maps.probe_stats, "probe_stats")?,
            max_backends: config.max_backends,
        };
        let mut cfg = flowpin_probe_cfg::default();
        if let Some(a) = config.src4 {
            cfg.src4 = u32::from_ne_bytes(a.octets());
        }
        if let Some(a) = config.src6 {
            cfg.src6 = words(&a.octets());
        }
        me.cfg
            .update(
                &0u32.to_ne_bytes(),
                crate::skel::bytes_of(&cfg),
                MapFlags::ANY,
            )
            .map_err(KernelError::map("probe_cfg", "update"))?;
        Ok(me)
    }

    /// The program's fd.
    pub fn program_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// Entries of the backend table.
    pub fn max_backends(&self) -> u32 {
        self.max_backends
    }

    /// Attaches to the egress of interface `ifindex` (a TCX link: other tc
    /// programs keep running after it for packets it does not take).
    pub fn attach(&self, ifindex: u32) -> Result<ProbeLink> {
        // SAFETY: the program fd is valid for the call; NULL opts is allowed.
        let fd = unsafe {
            libbpf_rs::libbpf_sys::bpf_link_create(
                self.prog.as_raw_fd(),
                ifindex as i32,
                libbpf_rs::libbpf_sys::BPF_TCX_EGRESS,
                std::ptr::null(),
            )
        };
        if fd < 0 {
            return Err(KernelError::errno(
                format!("ifindex {ifindex}"),
                "bpf_link_create(BPF_TCX_EGRESS)",
                -fd,
                "ENODEV: no such interface (in this network namespace); EINVAL: the kernel has no TCX (Linux >= 6.6 needed); EPERM: need CAP_BPF + CAP_NET_ADMIN",
            )
            .into());
        }
        // SAFETY: bpf_link_create returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(ProbeLink {
            link: BpfLink::new(fd, "tcx link"),
            ifindex,
        })
    }

    /// Attaches to the egress of the interface named `ifname` (in the
    /// calling thread's network namespace).
    pub fn attach_ifname(&self, ifname: &str) -> Result<ProbeLink> {
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(|e| {
            KernelError::errno(
                format!("interface {ifname}"),
                "if_nametoindex",
                e as i32,
                "no such interface in this network namespace",
            )
        })?;
        self.attach(ifindex)
    }

    /// Sets backend `index`'s tunnel address: probes marked
    /// [`probe_mark`]`(index)` go there.
    pub fn set_backend(&self, index: u32, tunnel: IpAddr) -> Result<()> {
        self.check_index(index)?;
        let mut v = flowpin_probe_backend::default();
        match tunnel {
            IpAddr::V4(a) => {
                v.family = flowpin_bpf_abi::probe::FAMILY_V4;
                v.addr[0] = u32::from_ne_bytes(a.octets());
            }
            IpAddr::V6(a) => {
                v.family = flowpin_bpf_abi::probe::FAMILY_V6;
                v.addr = words(&a.octets());
            }
        }
        self.put(index, &v)
    }

    /// Clears backend `index`: its probes are dropped from now on.
    pub fn clear_backend(&self, index: u32) -> Result<()> {
        self.check_index(index)?;
        self.put(index, &flowpin_probe_backend::default())
    }

    /// Backend `index`'s tunnel address, if set.
    pub fn backend(&self, index: u32) -> Result<Option<IpAddr>> {
        self.check_index(index)?;
        let raw = self
            .backends
            .lookup(&index.to_ne_bytes(), MapFlags::ANY)
            .map_err(KernelError::map("probe_backends", "lookup"))?
            .unwrap_or_default();
        let v: flowpin_probe_backend = crate::skel::read(&raw).ok_or_else(|| {
            KernelError::out_of_sync(
                "map probe_backends",
                "lookup",
                raw.len(),
                std::mem::size_of::<flowpin_probe_backend>(),
            )
        })?;
        let mut b = [0u8; 16];
        for (c, w) in b.chunks_exact_mut(4).zip(v.addr) {
            c.copy_from_slice(&w.to_ne_bytes());
        }
        Ok(match v.family {
            flowpin_bpf_abi::probe::FAMILY_V4 => {
                Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
            }
            flowpin_bpf_abi::probe::FAMILY_V6 => Some(IpAddr::V6(Ipv6Addr::from(b))),
            _ => None,
        })
    }

    /// The counters, summed over all CPUs.
    pub fn stats(&self) -> Result<ProbeStats> {
        let per_cpu = self
            .stats
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(KernelError::map("probe_stats", "lookup_percpu"))?
            .unwrap_or_default();
        let sum: flowpin_probe_stats = crate::skel::sum_counters(&per_cpu).ok_or_else(|| {
            KernelError::out_of_sync(
                "map probe_stats",
                "lookup_percpu",
                per_cpu.first().map_or(0, Vec::len),
                std::mem::size_of::<flowpin_probe_stats>(),
            )
        })?;
        Ok(sum.into())
    }

    fn check_index(&self, index: u32) -> Result<()> {
        if index >= self.max_backends {
            return Err(ProbeEncapError::InvalidConfig(format!(
                "backend index {index} is out of range: the table has {} entries (ProbeEncapConfig::max_backends)",
                self.max_backends
            )));
        }
        Ok(())
    }

    fn put(&self, index: u32, v: &flowpin_probe_backend) -> Result<()> {
        self.backends
            .update(
                &index.to_ne_bytes(),
                crate::skel::bytes_of(v),
                MapFlags::ANY,
            )
            .map_err(KernelError::map("probe_backends", "update"))?;
        Ok(())
    }
}

/// 16 address bytes as four words in memory order (network byte order).
fn words(b: &[u8; 16]) -> [u32; 4] {
    let mut w = [0u32; 4];
    for (o, c) in w.iter_mut().zip(b.chunks_exact(4)) {
        *o = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
    }
    w
}
