//! The far end of a live-frame XDP benchmark loop (feature `xdp-reflect`,
//! off by default; `examples/xdp_bench --live` uses it).
//!
//! Two programs of one object:
//!
//! - the **reflector** ([`XdpReflect::attach`]), attached (native mode) to
//!   the peer of the measured veth: it turns what the measured end sent
//!   with `XDP_TX` back into a client-to-VIP frame and `XDP_TX`es it back,
//!   so frames loop between the two ends through the real `XDP_TX` path. An
//!   IPv4-in-IPv4 frame (`xdp_lb`'s output) loses its outer header; the
//!   Ethernet header becomes client MAC → LB MAC; by [`ReflectMode`] the
//!   inner flow is kept, made new on every pass, or cycled round-robin
//!   over a number of flows; a TTL below 32 (a frame the measured end's
//!   stack forwarded back: the loop of an `XDP_PASS` path) is set back to
//!   64; the IPv4 header checksum is recomputed (the
//!   TCP/UDP checksum is left stale: the measured programs do not check
//!   it). [`ReflectMode::Drop`] drains the loop.
//! - the **empty `XDP_TX` program** ([`XdpReflect::empty_tx_fd`]): the
//!   limit of the `XDP_TX` paths, run on the measured end of the same loop
//!   (the empty `XDP_PASS` program is [`xdp_pass`](crate::xdp_pass)).
//!
//! The flow sequence of [`ReflectMode::NewFlow`] and [`ReflectMode::Cycle`]
//! is one global counter: the loop is meant to run on one CPU per end.

use std::mem::MaybeUninit;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::error::KernelError;
use crate::skel::xdp_reflect::types::{reflect_cfg, reflect_stats};
use crate::skel::xdp_reflect::XdpReflectSkelBuilder;
use crate::xdp_attach::{attach_xdp, xdp_test_run, XdpAttachError, XdpLink, XdpTarget, XdpTestRun};

/// Errors of [`XdpReflect`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpReflectError {
    /// The configuration or mode is unusable: what and why.
    #[error("invalid xdp_reflect configuration: {0}")]
    InvalidConfig(String),
    /// Opening, loading, a map access or taking a handle failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Attach or test run failed.
    #[error(transparent)]
    Xdp(#[from] XdpAttachError),
}

type Result<T> = std::result::Result<T, XdpReflectError>;

/// What the reflector does to the inner flow on every pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReflectMode {
    /// The flow is kept: the same flow loops.
    #[default]
    Same,
    /// Every pass a flow never seen before: source address
    /// `src_base + seq % 2^24`, source port `1024 + seq / 2^24` (2^39
    /// distinct flows).
    NewFlow,
    /// Pass `n` gets source address `src_base + n % flows` (port kept):
    /// round-robin over `flows` flows.
    Cycle {
        /// How many flows (at least 1).
        flows: u32,
    },
    /// Drops every frame: drains the loop.
    Drop,
}

/// Load-time configuration of [`XdpReflect`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct XdpReflectConfig {
    /// Destination MAC of reflected frames: the measured end's.
    pub lb_mac: [u8; 6],
    /// Source MAC of reflected frames: the client's.
    pub client_mac: [u8; 6],
    /// First inner source address of [`ReflectMode::NewFlow`] and
    /// [`ReflectMode::Cycle`].
    pub src_base: Ipv4Addr,
    /// The mode right after loading.
    pub mode: ReflectMode,
}

impl Default for XdpReflectConfig {
    fn default() -> Self {
        XdpReflectConfig {
            lb_mac: [0x02, 0, 0, 0, 0, 0x02],
            client_mac: [0x02, 0, 0, 0, 0, 0x01],
            src_base: Ipv4Addr::new(10, 0, 0, 0),
            mode: ReflectMode::Same,
        }
    }
}

impl XdpReflectConfig {
    /// Sets the MACs of reflected frames: `client` → `lb`.
    pub fn macs(mut self, client: [u8; 6], lb: [u8; 6]) -> Self {
        self.client_mac = client;
        self.lb_mac = lb;
        self
    }

    /// Sets the first inner source address of the flow-changing modes.
    pub fn src_base(mut self, a: Ipv4Addr) -> Self {
        self.src_base = a;
        self
    }

    /// Sets the mode right after loading.
    pub fn mode(mut self, m: ReflectMode) -> Self {
        self.mode = m;
        self
    }
}

/// The reflector's counters, summed over all CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReflectStats {
    /// Frames sent back (`XDP_TX`).
    pub reflected: u64,
    /// Of those, frames that lost an outer IPv4 header.
    pub decapsulated: u64,
    /// Frames dropped: [`ReflectMode::Drop`], not IPv4, or too short.
    pub dropped: u64,
}

/// The loaded reflector and empty `XDP_TX` program. Owns their fds and
/// the two maps.
#[derive(Debug)]
pub struct XdpReflect {
    reflect: OwnedFd,
    tx: OwnedFd,
    cfg: MapHandle,
    stats: MapHandle,
    config: XdpReflectConfig,
}

const MODE_SAME: u32 = 0;
const MODE_NEW_FLOW: u32 = 1;
const MODE_CYCLE: u32 = 2;
const MODE_DROP: u32 = 3;

impl XdpReflect {
    /// Loads both programs (not attached) with `config.mode`.
    pub fn load(config: XdpReflectConfig) -> Result<Self> {
        let mut storage = MaybeUninit::uninit();
        let open = XdpReflectSkelBuilder::default()
            .open(&mut storage)
            .map_err(KernelError::object("object xdp_reflect", "open", ""))?;
        let skel = open.load().map_err(KernelError::object(
            "object xdp_reflect",
            "load",
            "need root (CAP_BPF + CAP_NET_ADMIN)",
        ))?;
        let dup = |fd: BorrowedFd<'_>, what: &'static str| {
            fd.try_clone_to_owned()
                .map_err(|e| KernelError::io(what, "dup", &e, ""))
        };
        let reflect = dup(skel.progs.xdp_reflect.as_fd(), "program xdp_reflect")?;
        let tx = dup(skel.progs.xdp_tx.as_fd(), "program xdp_tx")?;
        let cfg = MapHandle::try_from(&skel.maps.reflect_cfg)
            .map_err(KernelError::map("reflect_cfg", "dup"))?;
        let stats = MapHandle::try_from(&skel.maps.reflect_stats)
            .map_err(KernelError::map("reflect_stats", "dup"))?;
        let r = XdpReflect {
            reflect,
            tx,
            cfg,
            stats,
            config: config.clone(),
        };
        r.set_mode(config.mode)?;
        Ok(r)
    }

    /// The configuration it was loaded with (the mode: the last one set).
    pub fn config(&self) -> &XdpReflectConfig {
        &self.config
    }

    /// Switches the mode; takes effect on the next frame.
    pub fn set_mode(&self, mode: ReflectMode) -> Result<()> {
        let (m, flows) = match mode {
            ReflectMode::Same => (MODE_SAME, 0),
            ReflectMode::NewFlow => (MODE_NEW_FLOW, 0),
            ReflectMode::Cycle { flows: 0 } => {
                return Err(XdpReflectError::InvalidConfig(
                    "ReflectMode::Cycle needs at least 1 flow".into(),
                ))
            }
            ReflectMode::Cycle { flows } => (MODE_CYCLE, flows),
            ReflectMode::Drop => (MODE_DROP, 0),
        };
        let v = reflect_cfg {
            lb_mac: self.config.lb_mac,
            client_mac: self.config.client_mac,
            mode: m,
            flows,
            src_base: u32::from(self.config.src_base),
        };
        self.cfg
            .update(
                &0u32.to_ne_bytes(),
                crate::skel::bytes_of(&v),
                MapFlags::ANY,
            )
            .map_err(KernelError::map("reflect_cfg", "update"))?;
        Ok(())
    }

    /// The reflector's fd.
    pub fn program_fd(&self) -> BorrowedFd<'_> {
        self.reflect.as_fd()
    }

    /// The empty `XDP_TX` program's fd (attach it, or swap it into a link
    /// with [`Link::update_program`](crate::link::Link::update_program)).
    pub fn empty_tx_fd(&self) -> BorrowedFd<'_> {
        self.tx.as_fd()
    }

    /// Attaches the reflector to `target`; dropping the link detaches.
    pub fn attach(&self, target: impl Into<XdpTarget>) -> Result<XdpLink> {
        Ok(attach_xdp(self.program_fd(), target)?)
    }

    /// The counters, summed over all CPUs.
    pub fn stats(&self) -> Result<ReflectStats> {
        let per_cpu = self
            .stats
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(KernelError::map("reflect_stats", "lookup_percpu"))?
            .unwrap_or_default();
        let s: reflect_stats = crate::skel::sum_counters(&per_cpu).ok_or_else(|| {
            KernelError::out_of_sync(
                "map reflect_stats",
                "lookup_percpu",
                per_cpu.first().map_or(0, Vec::len),
                std::mem::size_of::<reflect_stats>(),
            )
        })?;
        Ok(ReflectStats {
            reflected: s.reflected,
            decapsulated: s.decapsulated,
            dropped: s.dropped,
        })
    }

    /// Runs the reflector once on `packet` with `BPF_PROG_TEST_RUN`.
    pub fn test_run(&self, packet: &[u8]) -> Result<XdpTestRun> {
        Ok(xdp_test_run(self.program_fd(), packet)?)
    }

    /// Runs the empty `XDP_TX` program once on `packet`.
    pub fn test_run_empty_tx(&self, packet: &[u8]) -> Result<XdpTestRun> {
        Ok(xdp_test_run(self.empty_tx_fd(), packet)?)
    }
}

#[cfg(test)]
mod tests;
