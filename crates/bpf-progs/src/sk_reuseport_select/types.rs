//! Configuration, generation entries, counters and flows of
//! `sk_reuseport_select`, as the Rust API shows them.

use std::net::SocketAddr;

use flowpin_bpf_abi::reuseport as abi;

/// Largest byte offset of the socket id inside a QUIC destination CID.
pub const CID_MAX_OFFSET: u8 = abi::CID_MAX_OFFSET as u8;
/// Default byte offset of the socket id in the DCID: right after the
/// 4-byte server_id of the flowpin CID layout (`flowpin_tcp_opt::quic`,
/// `QUIC_CID_FLOWPIN_ID_OFFSET + 4` = 5).
pub const DEFAULT_CID_SOCK_OFFSET: u8 = abi::CID_DEFAULT_SOCK_OFFSET as u8;
/// Number of drop reasons.
pub const DROP_REASONS: usize = abi::DROP_REASONS as usize;

/// How a new flow picks a slot of the live generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SelectMode {
    /// By the kernel's 4-tuple hash of the packet (`md->hash`).
    #[default]
    Hash,
    /// By the CPU that handles the packet (`bpf_get_smp_processor_id() % slots`),
    /// for locality with one socket (thread) per CPU.
    Cpu,
}

impl SelectMode {
    pub(super) fn raw(self) -> u32 {
        match self {
            SelectMode::Hash => 0,
            SelectMode::Cpu => 1,
        }
    }
    pub(super) fn from_raw(v: u32) -> Self {
        if v == 1 {
            SelectMode::Cpu
        } else {
            SelectMode::Hash
        }
    }
}

/// Transport protocol of a group: TCP (listening sockets) or UDP (bound
/// sockets); the suite's one `Proto` (`flowpin_bpf_abi::vip::Proto`).
pub use flowpin_bpf_abi::vip::Proto;

/// Configuration of the program, kept in its `config` map (shared by every
/// process of the group) plus the flow-table size, fixed at load.
/// `SelectConfig::new(addr, proto)` then one setter per field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SelectConfig {
    /// Slot choice for new TCP connections.
    pub tcp_mode: SelectMode,
    /// Slot choice for new UDP flows.
    pub udp_mode: SelectMode,
    /// Keep UDP flows on the socket that first got them (flow table).
    pub udp_affinity: bool,
    /// Route QUIC short-header packets by the socket id in the DCID.
    pub quic_cid: bool,
    /// Byte offset of the 2-byte big-endian socket id in the DCID (≤ [`CID_MAX_OFFSET`]).
    pub cid_sock_offset: u8,
    /// Entries of the UDP flow table (LRU). Fixed when the program is loaded.
    pub flow_table_size: u32,
    /// The group's local address (stored for processes that join).
    pub addr: SocketAddr,
    /// The group's protocol (stored for processes that join).
    pub proto: Proto,
    /// A retired generation keeps its UDP flows at most this long
    /// (milliseconds; a group setting every controller reads from the map).
    pub drain_deadline_ms: u32,
    /// A retired generation without a packet for this long is removed
    /// (milliseconds; a group setting).
    pub drain_idle_ms: u32,
}

impl SelectConfig {
    /// The group at `addr` over `proto`: hash slot choice for TCP and UDP, UDP
    /// flow affinity on, QUIC CID routing off (socket id at
    /// [`DEFAULT_CID_SOCK_OFFSET`]), a 65,536-entry flow table.
    pub fn new(addr: SocketAddr, proto: Proto) -> Self {
        SelectConfig {
            tcp_mode: SelectMode::Hash,
            udp_mode: SelectMode::Hash,
            udp_affinity: true,
            quic_cid: false,
            cid_sock_offset: DEFAULT_CID_SOCK_OFFSET,
            flow_table_size: 65536,
            addr,
            proto,
            drain_deadline_ms: 60_000,
            drain_idle_ms: 10_000,
        }
    }

    /// Sets [`SelectConfig::tcp_mode`].
    pub fn tcp_mode(mut self, mode: SelectMode) -> Self {
        self.tcp_mode = mode;
        self
    }

    /// Sets [`SelectConfig::udp_mode`].
    pub fn udp_mode(mut self, mode: SelectMode) -> Self {
        self.udp_mode = mode;
        self
    }

    /// Sets [`SelectConfig::udp_affinity`].
    pub fn udp_affinity(mut self, on: bool) -> Self {
        self.udp_affinity = on;
        self
    }

    /// Sets [`SelectConfig::quic_cid`].
    pub fn quic_cid(mut self, on: bool) -> Self {
        self.quic_cid = on;
        self
    }

    /// Sets [`SelectConfig::cid_sock_offset`].
    pub fn cid_sock_offset(mut self, offset: u8) -> Self {
        self.cid_sock_offset = offset;
        self
    }

    /// Sets [`SelectConfig::flow_table_size`].
    pub fn flow_table_size(mut self, entries: u32) -> Self {
        self.flow_table_size = entries;
        self
    }

    /// Sets the drain deadline and idle time (saturated to `u32::MAX` ms).
    pub fn drain(mut self, deadline: std::time::Duration, idle: std::time::Duration) -> Self {
        let ms = |d: std::time::Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        self.drain_deadline_ms = ms(deadline);
        self.drain_idle_ms = ms(idle);
        self
    }
}

/// State of a generation entry, as stored in the `gens` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawGenState {
    /// Never used.
    Empty,
    /// Sockets in the array, not live yet.
    Warming,
    /// Takes new flows.
    Live,
    /// Serves existing flows only.
    Draining,
    /// Gone; the index may be reused.
    Retired,
}

impl RawGenState {
    pub(super) fn raw(self) -> u32 {
        match self {
            RawGenState::Empty => abi::STATE_EMPTY,
            RawGenState::Warming => abi::STATE_WARMING,
            RawGenState::Live => abi::STATE_LIVE,
            RawGenState::Draining => abi::STATE_DRAINING,
            RawGenState::Retired => abi::STATE_RETIRED,
        }
    }
    pub(super) fn from_raw(v: u32) -> Self {
        match v {
            abi::STATE_WARMING => RawGenState::Warming,
            abi::STATE_LIVE => RawGenState::Live,
            abi::STATE_DRAINING => RawGenState::Draining,
            abi::STATE_RETIRED => RawGenState::Retired,
            _ => RawGenState::Empty,
        }
    }
}

/// One entry of the `gens` map (`struct fp_rp_gen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenEntry {
    /// Generation number owning the index (0 = none).
    pub gen: u32,
    /// Slots used.
    pub nslots: u32,
    /// State.
    pub state: RawGenState,
    /// Draining deadline, `CLOCK_MONOTONIC` nanoseconds (0 = none).
    pub deadline_ns: u64,
}

/// Counters (`struct fp_rp_stats`), summed over CPUs: of one stats index
/// ([`SkReuseportSelect::stats_of`](super::SkReuseportSelect::stats_of)) or
/// of all ([`SkReuseportSelect::stats`](super::SkReuseportSelect::stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RawStats {
    /// Packets (UDP) and connection requests (TCP) delivered.
    pub packets: u64,
    /// New TCP connections and new UDP flows.
    pub new_flows: u64,
    /// TCP requests migrated here from a closed listener.
    pub migrated: u64,
    /// QUIC short-header packets routed by CID.
    pub cid_routed: u64,
    /// Latest `bpf_ktime_get_coarse_ns()` of a delivery (max over CPUs).
    pub last_ns: u64,
    /// Drops by reason: [no live generation, no socket in live generation,
    /// migration without target (kernel fallback), UDP flow whose socket is gone (re-homed)].
    pub drops: [u64; DROP_REASONS],
}

/// A UDP flow of the flow table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowEntry {
    /// Remote address and port.
    pub remote: SocketAddr,
    /// Local address and port.
    pub local: SocketAddr,
    /// Generation that owns the flow.
    pub gen: u32,
    /// Slot within the generation.
    pub slot: u32,
    /// Last packet, `bpf_ktime_get_coarse_ns()`.
    pub last_ns: u64,
}

impl RawStats {
    /// Adds `c` (one CPU's or one index's counters): sums, and the latest `last_ns`.
    pub(super) fn add(&mut self, c: &abi::Stats) {
        self.packets += c.packets;
        self.new_flows += c.new_flows;
        self.migrated += c.migrated;
        self.cid_routed += c.cid_routed;
        self.last_ns = self.last_ns.max(c.last_ns);
        for (d, x) in self.drops.iter_mut().zip(c.drops) {
            *d += x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_and_keep_the_latest_time() {
        let mut s = RawStats::default();
        let a = abi::Stats {
            packets: 3,
            new_flows: 1,
            last_ns: 50,
            drops: [1, 0, 0, 2],
            ..Default::default()
        };
        let b = abi::Stats {
            packets: 4,
            migrated: 2,
            cid_routed: 5,
            last_ns: 20,
            drops: [0, 1, 0, 1],
            ..Default::default()
        };
        s.add(&a);
        s.add(&b);
        assert_eq!(
            (s.packets, s.new_flows, s.migrated, s.cid_routed, s.last_ns),
            (7, 1, 2, 5, 50)
        );
        assert_eq!(s.drops, [1, 1, 0, 3]);
    }
}
