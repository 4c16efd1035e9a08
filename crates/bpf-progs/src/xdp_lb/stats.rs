//! Counters of `xdp_lb`, read from its struct-valued per-CPU maps
//! (`flowpin_vip_stats`, `flowpin_lb_stats`) and summed over CPUs.

use std::collections::HashMap;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::{Result, Vip};
use crate::error::KernelError;
use crate::skel::xdp_lb::types::{flowpin_backend_stats, flowpin_lb_stats, flowpin_vip_stats};
use crate::skel::{bytes_of, read};

/// Sets the occupancy gauge (`conn_entries`) of every CPU in `lb_stats`
/// back to 0 (after the connection table was cleared). A counter the
/// program bumps between this read and write is lost (a clear is not done
/// under load).
pub(super) fn reset_conn_entries(lb_stats: &MapHandle) -> Result<()> {
    let key = 0u32.to_ne_bytes();
    let per_cpu = lb_stats
        .lookup_percpu(&key, MapFlags::ANY)
        .map_err(KernelError::map("lb_stats", "lookup_percpu"))?
        .unwrap_or_default();
    let mut vals = Vec::with_capacity(per_cpu.len());
    for v in &per_cpu {
        let mut st: flowpin_lb_stats = read(v).ok_or_else(|| {
            KernelError::out_of_sync(
                "map lb_stats",
                "lookup_percpu",
                v.len(),
                std::mem::size_of::<flowpin_lb_stats>(),
            )
        })?;
        st.conn_entries = 0;
        vals.push(bytes_of(&st).to_vec());
    }
    if !vals.is_empty() {
        lb_stats
            .update_percpu(&key, &vals, MapFlags::ANY)
            .map_err(KernelError::map("lb_stats", "update_percpu"))?;
    }
    Ok(())
}

/// Per-VIP counters, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct VipStats {
    /// Packets matched to the VIP.
    pub packets: u64,
    /// Their bytes (Ethernet frame length as received).
    pub bytes: u64,
    /// Backend found in the connection table.
    pub lru_hit: u64,
    /// Connection-table lookups that missed (SYNs do not look up).
    pub lru_miss: u64,
    /// Backend taken from the Maglev ring.
    pub new_flows: u64,
    /// Routed by server_id (TCP option or QUIC CID).
    pub sid_routed: u64,
    /// server_id not among the VIP's backends (and not a removed one): fell back.
    pub sid_fallback_unknown: u64,
    /// server_id of a backend removed from the VIP (`sid_retired`): fell back.
    pub sid_fallback_removed: u64,
    /// server_id 0: fell back.
    pub sid_fallback_zero: u64,
    /// Malformed option area / short CID: fell back.
    pub sid_fallback_malformed: u64,
    /// No server_id option / CID of no known layout (SYNs are not counted).
    pub sid_missing: u64,
    /// QUIC long-header packets (hashed).
    pub quic_long_header: u64,
    /// Packets too big after encapsulation.
    pub too_big: u64,
    /// Packets dropped because no backend was available.
    pub unknown_backend: u64,
}

/// Per-backend counters, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BackendStats {
    /// Packets forwarded (encapsulated) to the backend.
    pub packets: u64,
    /// Their bytes (Ethernet frame length as received, before encapsulation).
    pub bytes: u64,
}

impl From<flowpin_backend_stats> for BackendStats {
    fn from(s: flowpin_backend_stats) -> Self {
        BackendStats {
            packets: s.packets,
            bytes: s.bytes,
        }
    }
}

/// Global counters, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LbStats {
    /// Dropped: truncated or invalid headers.
    pub drop_malformed: u64,
    /// Dropped: the VIP has no (live) backend.
    pub drop_unknown_backend: u64,
    /// Dropped: too big and no ICMP reply could be built.
    pub drop_too_big: u64,
    /// ICMP fragmentation-needed / packet-too-big replies sent.
    pub icmp_too_big_sent: u64,
    /// Dropped: encapsulation failed (adjust_head, IPv6 packet with IPv4 backend).
    pub encap_error: u64,
    /// ICMP echo replies sent.
    pub icmp_echo_replies: u64,
    /// Passed: non-first fragment without a port-agnostic VIP.
    pub pass_fragment_no_vip: u64,
    /// Passed: IPv6 extension header chain longer than the walk bound.
    pub pass_ext_hdr_limit: u64,
    /// Connection table: flows inserted (each starts on probation).
    pub new_flows: u64,
    /// Connection table: probation entries confirmed by a later packet
    /// (TCP: a non-SYN packet; UDP: a second packet).
    pub confirmations: u64,
    /// Connection table: probation entries evicted by an insert.
    pub probation_evictions: u64,
    /// Connection table: confirmed entries evicted by an insert (only when
    /// both candidate sets and their residents' other sets hold no
    /// probation entry: 0 below half load, whatever the flood).
    pub confirmed_evictions: u64,
    /// Connection table: residents moved to their other candidate set to
    /// make room (one level of cuckoo relocation).
    pub relocations: u64,
    /// Connection table: occupied ways (a gauge, not a counter: summed over
    /// CPUs, 0 after [`XdpLb::clear_connection_table`](super::XdpLb::clear_connection_table)).
    /// Relocation into a free way is tried only while a CPU's table is
    /// below 7/8 full.
    pub conn_entries: u64,
}

/// Everything [`XdpLb::stats`](super::XdpLb::stats) returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Global counters.
    pub global: LbStats,
    /// Per-VIP counters.
    pub vips: HashMap<Vip, VipStats>,
}

impl Stats {
    /// Flows inserted into the connection table so far, all CPUs (the
    /// numerator of a new-flow rate: sample it twice, divide by the time
    /// between, pass the result to [`flood_signal`]).
    pub fn new_flows(&self) -> u64 {
        self.global.new_flows
    }
}

/// The flood signal: true when a new-flow rate (flows inserted into the
/// connection table per second, e.g. the difference of two
/// [`Stats::new_flows`] samples over the seconds between them) is above
/// `threshold` (flows per second). A flood of spoofed SYNs or one-packet
/// UDP flows shows as a high rate of new flows with few confirmations; the
/// table keeps its confirmed flows through it (probation), so this is a
/// signal for operators, not a switch the data path needs.
pub fn flood_signal(rate: f64, threshold: f64) -> bool {
    rate.is_finite() && rate > threshold
}

/// The new-flow rate between two [`Stats`] samples taken `seconds` apart
/// (flows per second; 0 when `seconds` is not positive or the counter went
/// backwards, e.g. after a reload).
pub fn new_flow_rate(earlier: &Stats, later: &Stats, seconds: f64) -> f64 {
    if seconds <= 0.0 || !seconds.is_finite() {
        return 0.0;
    }
    later.new_flows().saturating_sub(earlier.new_flows()) as f64 / seconds
}

impl From<flowpin_vip_stats> for VipStats {
    fn from(s: flowpin_vip_stats) -> Self {
        VipStats {
            packets: s.packets,
            bytes: s.bytes,
            lru_hit: s.lru_hit,
            lru_miss: s.lru_miss,
            new_flows: s.new_flows,
            sid_routed: s.sid_routed,
            sid_fallback_unknown: s.sid_fallback_unknown,
            sid_fallback_removed: s.sid_fallback_removed,
            sid_fallback_zero: s.sid_fallback_zero,
            sid_fallback_malformed: s.sid_fallback_malformed,
            sid_missing: s.sid_missing,
            quic_long_header: s.quic_long_header,
            too_big: s.too_big,
            unknown_backend: s.unknown_backend,
        }
    }
}

impl From<flowpin_lb_stats> for LbStats {
    fn from(s: flowpin_lb_stats) -> Self {
        LbStats {
            drop_malformed: s.drop_malformed,
            drop_unknown_backend: s.drop_unknown_backend,
            drop_too_big: s.drop_too_big,
            icmp_too_big_sent: s.icmp_too_big_sent,
            encap_error: s.encap_error,
            icmp_echo_replies: s.icmp_echo_replies,
            pass_fragment_no_vip: s.pass_fragment_no_vip,
            pass_ext_hdr_limit: s.pass_ext_hdr_limit,
            new_flows: s.new_flows,
            confirmations: s.confirmations,
            probation_evictions: s.probation_evictions,
            confirmed_evictions: s.confirmed_evictions,
            relocations: s.relocations,
            conn_entries: s.conn_entries,
        }
    }
}
