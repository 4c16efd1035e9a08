//! The lab's flood loop (feature `xdp-flood`, off by default;
//! `examples/lab`'s flood scenarios use it).
//!
//! Attached (native mode) to the router's veth end facing an LB, where
//! `xdp_lb`'s `XDP_TX` output lands first, the program sends flood frames
//! straight back to the LB as new flood packets: a small population of
//! frames ([`XdpFloodConfig::max_in_flight`]) circulates between the LB
//! and the router at XDP speed, every pass a new spoofed flow for the LB.
//! Everything else is `XDP_PASS`ed untouched (the router forwards it).
//!
//! A flood frame is `xdp_lb`'s IPv4-in-IPv4 output whose inner source lies
//! in the spoofed range ([`XdpFloodConfig::spoofed`]) with a whole TCP or
//! UDP header. The inner IPv4 ID carries the frame's lap (`0x8000 | lap`);
//! a frame without bit 15 is a seed (the lab's generator sends ID 0). In
//! [`FloodMode::Loop`] a seed joins the loop while fewer than
//! `max_in_flight` frames circulate (else it goes on to its backend), and
//! a frame leaves the loop for its backend after [`XdpFloodConfig::laps`]
//! laps. A frame that stays loses its outer header, gets the MACs swapped
//! (router → LB), the next spoofed source address and port, TTL 64 and its
//! lap in the ID; the IPv4 checksum is recomputed, the TCP/UDP checksum
//! updated incrementally; then `XDP_TX`.

use std::mem::MaybeUninit;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::error::KernelError;
use crate::skel::xdp_flood::XdpFloodSkelBuilder;
use crate::xdp_attach::{attach_xdp, xdp_test_run, XdpAttachError, XdpLink, XdpTarget, XdpTestRun};

/// Errors of [`XdpFlood`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpFloodError {
    /// The configuration is unusable: what and why.
    #[error("invalid xdp_flood configuration: {0}")]
    InvalidConfig(String),
    /// Opening, loading, a map access or taking a handle failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Attach or test run failed.
    #[error(transparent)]
    Xdp(#[from] XdpAttachError),
}

type Result<T> = std::result::Result<T, XdpFloodError>;

/// What the program does with flood frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FloodMode {
    /// Every frame passes (`XDP_PASS`): the program is a pass-through.
    #[default]
    Off,
    /// Seeds join the loop, loop frames go back to the LB.
    Loop,
    /// Loop frames are dropped (the loop empties); seeds pass.
    Drain,
}

/// Configuration of [`XdpFlood`] (can be changed while attached with
/// [`XdpFlood::configure`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct XdpFloodConfig {
    /// The mode.
    pub mode: FloodMode,
    /// At most this many frames circulate (seeds beyond pass on).
    pub max_in_flight: u32,
    /// A frame leaves the loop after this many laps (1 ..= 32767).
    pub laps: u32,
    /// The spoofed source range `(first address, prefix length)`: inner
    /// sources in it mark flood frames, and the loop's new sources are
    /// drawn from it.
    pub spoofed: (Ipv4Addr, u8),
}

impl Default for XdpFloodConfig {
    fn default() -> Self {
        XdpFloodConfig {
            mode: FloodMode::Off,
            max_in_flight: 64,
            laps: 4096,
            spoofed: (Ipv4Addr::new(198, 18, 0, 0), 15),
        }
    }
}

impl XdpFloodConfig {
    /// Sets the mode.
    pub fn mode(mut self, m: FloodMode) -> Self {
        self.mode = m;
        self
    }

    /// Sets the population cap.
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Sets the laps after which a frame leaves the loop.
    pub fn laps(mut self, n: u32) -> Self {
        self.laps = n;
        self
    }

    /// Sets the spoofed source range.
    pub fn spoofed(mut self, first: Ipv4Addr, prefix_len: u8) -> Self {
        self.spoofed = (first, prefix_len);
        self
    }

    /// The `flood_cfg` map value: mode, max_in_flight, laps, base, mask, pad.
    fn value(&self) -> Result<[u8; 24]> {
        let (first, len) = self.spoofed;
        if !(1..=32).contains(&len) {
            return Err(XdpFloodError::InvalidConfig(format!(
                "spoofed prefix length {len}: give 1 ..= 32"
            )));
        }
        if !(1..=0x7fff).contains(&self.laps) {
            return Err(XdpFloodError::InvalidConfig(format!(
                "laps {}: give 1 ..= 32767 (the lap lives in 15 bits of the IPv4 ID)",
                self.laps
            )));
        }
        let mask = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        let base = u32::from(first) & !mask;
        let mode: u32 = match self.mode {
            FloodMode::Off => 0,
            FloodMode::Loop => 1,
            FloodMode::Drain => 2,
        };
        let mut v = [0u8; 24];
        for (i, w) in [mode, self.max_in_flight, self.laps, base, mask, 0]
            .into_iter()
            .enumerate()
        {
            v[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        Ok(v)
    }
}

/// The program's counters, summed over all CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FloodStats {
    /// Loop frames sent back to the LB (`XDP_TX`).
    pub reflected: u64,
    /// Seeds that joined the loop.
    pub admitted: u64,
    /// Seeds passed on to their backend (loop full, or not [`FloodMode::Loop`]).
    pub seeds_passed: u64,
    /// Loop frames passed on to their backend after their laps (or in
    /// [`FloodMode::Off`]).
    pub retired: u64,
    /// Loop frames dropped ([`FloodMode::Drain`]).
    pub drained: u64,
    /// Frames passed untouched: not flood frames.
    pub other: u64,
}

const STATS_WORDS: usize = 6;

/// The loaded program. Owns its fd and maps.
#[derive(Debug)]
pub struct XdpFlood {
    prog: OwnedFd,
    cfg: MapHandle,
    state: MapHandle,
    stats: MapHandle,
}

impl XdpFlood {
    /// Loads the program (not attached) with `config`.
    pub fn load(config: &XdpFloodConfig) -> Result<Self> {
        let value = config.value()?;
        let mut storage = MaybeUninit::uninit();
        let open = XdpFloodSkelBuilder::default()
            .open(&mut storage)
            .map_err(KernelError::object("object xdp_flood", "open", ""))?;
        let skel = open.load().map_err(KernelError::object(
            "object xdp_flood",
            "load",
            "need root (CAP_BPF + CAP_NET_ADMIN)",
        ))?;
        let prog = skel
            .progs
            .xdp_flood
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| KernelError::io("program xdp_flood", "dup", &e, ""))?;
        let cfg = MapHandle::try_from(&skel.maps.flood_cfg)
            .map_err(KernelError::map("flood_cfg", "dup"))?;
        let state = MapHandle::try_from(&skel.maps.flood_state)
            .map_err(KernelError::map("flood_state", "dup"))?;
        let stats = MapHandle::try_from(&skel.maps.flood_stats)
            .map_err(KernelError::map("flood_stats", "dup"))?;
        let f = XdpFlood {
            prog,
            cfg,
            state,
            stats,
        };
        f.write_cfg(&value)?;
        Ok(f)
    }

    fn write_cfg(&self, value: &[u8; 24]) -> Result<()> {
        self.cfg
            .update(&0u32.to_ne_bytes(), value, MapFlags::ANY)
            .map_err(KernelError::map("flood_cfg", "update"))?;
        Ok(())
    }

    /// Replaces the configuration; takes effect on the next frame.
    pub fn configure(&self, config: &XdpFloodConfig) -> Result<()> {
        self.write_cfg(&config.value()?)
    }

    /// Frames the program counts as circulating (seeds admitted minus
    /// frames that left the loop).
    pub fn in_flight(&self) -> Result<i64> {
        let v = self
            .state
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(KernelError::map("flood_state", "lookup"))?
            .unwrap_or_default();
        let b: [u8; 8] = v
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| KernelError::out_of_sync("map flood_state", "lookup", v.len(), 16))?;
        Ok(i64::from_ne_bytes(b))
    }

    /// Sets the population count back to 0 (after a drain: frames lost on
    /// the way are not counted out by the program).
    pub fn reset_in_flight(&self) -> Result<()> {
        let v = self
            .state
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(KernelError::map("flood_state", "lookup"))?
            .unwrap_or_else(|| vec![0; 16]);
        let mut v = v;
        if let Some(b) = v.get_mut(..8) {
            b.fill(0);
        }
        self.state
            .update(&0u32.to_ne_bytes(), &v, MapFlags::ANY)
            .map_err(KernelError::map("flood_state", "update"))?;
        Ok(())
    }

    /// The program's fd.
    pub fn program_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// Attaches to `target`; dropping the link detaches.
    pub fn attach(&self, target: impl Into<XdpTarget>) -> Result<XdpLink> {
        Ok(attach_xdp(self.program_fd(), target)?)
    }

    /// The counters, summed over all CPUs.
    pub fn stats(&self) -> Result<FloodStats> {
        let per_cpu = self
            .stats
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(KernelError::map("flood_stats", "lookup_percpu"))?
            .unwrap_or_default();
        let mut sum = [0u64; STATS_WORDS];
        for cpu in &per_cpu {
            let b = cpu.get(..STATS_WORDS * 8).ok_or_else(|| {
                KernelError::out_of_sync(
                    "map flood_stats",
                    "lookup_percpu",
                    cpu.len(),
                    STATS_WORDS * 8,
                )
            })?;
            for (t, c) in sum.iter_mut().zip(b.chunks_exact(8)) {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                *t = t.wrapping_add(u64::from_ne_bytes(w));
            }
        }
        let [reflected, admitted, seeds_passed, retired, drained, other] = sum;
        Ok(FloodStats {
            reflected,
            admitted,
            seeds_passed,
            retired,
            drained,
            other,
        })
    }

    /// Runs the program once on `packet` with `BPF_PROG_TEST_RUN`.
    pub fn test_run(&self, packet: &[u8]) -> Result<XdpTestRun> {
        Ok(xdp_test_run(self.program_fd(), packet)?)
    }
}

#[cfg(test)]
mod tests;
