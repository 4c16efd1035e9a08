//! Constants of `sk_reuseport_select.h` (the `SK_REUSEPORT` program) and
//! its socket-array key scheme.
//!
//! Every constant is named after its `#define` with the `FP_RP_` prefix
//! dropped; `tests/header_defines.rs` checks each against the header.

/// Generations the socket array has room for (a ring: index = generation % this).
pub const MAX_GENS: u32 = 8;
/// Sockets (workers) per generation.
pub const MAX_SLOTS: u32 = 64;
/// Entries of the socket array.
pub const SOCKS: u32 = MAX_GENS * MAX_SLOTS;
/// Stats index of events that belong to no generation.
pub const STATS_NO_GEN: u32 = MAX_GENS;
/// Entries of the stats map (one per generation index + [`STATS_NO_GEN`]).
pub const STATS_ENTRIES: u32 = MAX_GENS + 1;
/// `gen` of a generation entry never used.
pub const GEN_NONE: u32 = 0;

/// Generation state: unused.
pub const STATE_EMPTY: u32 = 0;
/// Generation state: sockets bound, no traffic yet.
pub const STATE_WARMING: u32 = 1;
/// Generation state: takes new flows.
pub const STATE_LIVE: u32 = 2;
/// Generation state: keeps its flows, takes no new ones.
pub const STATE_DRAINING: u32 = 3;
/// Generation state: gone.
pub const STATE_RETIRED: u32 = 4;

/// Slot selection by the kernel's 4-tuple hash.
pub const MODE_HASH: u32 = 0;
/// Slot selection by the receiving CPU.
pub const MODE_CPU: u32 = 1;

/// Drop reason: no live generation, or it has no slots.
pub const DROP_NO_LIVE: u32 = 0;
/// Drop reason: every slot of the live generation is empty.
pub const DROP_NO_SOCKET: u32 = 1;
/// Drop reason: migration found no live socket (kernel hash fallback).
pub const DROP_MIGRATE: u32 = 2;
/// Drop reason: a pinned UDP flow's socket is gone (flow re-homed).
pub const DROP_FLOW_GONE: u32 = 3;
/// Number of drop reasons.
pub const DROP_REASONS: u32 = 4;

/// Largest byte offset of the socket id inside a QUIC destination CID.
pub const CID_MAX_OFFSET: u32 = 18;
/// Default byte offset of the socket id in the DCID: right after the
/// 4-byte server_id of the flowpin CID layout
/// (`FLOWPIN_QUIC_CID_FLOWPIN_ID_OFFSET + 4` = 5).
pub const CID_DEFAULT_SOCK_OFFSET: u32 =
    flowpin_tcp_opt::consts::QUIC_CID_FLOWPIN_ID_OFFSET as u32 + 4;

/// Socket-array key of `slot` in generation `gen` (index `gen % MAX_GENS`).
pub fn sock_key(gen: u32, slot: u32) -> u32 {
    (gen % MAX_GENS) * MAX_SLOTS + slot
}

c_structs! {
    /// Per-CPU counters of one stats index (a generation index or
    /// [`STATS_NO_GEN`]), value of the `stats` map (`struct fp_rp_stats`).
    pub struct Stats {
        /// Packets / connection requests delivered to the generation.
        pub packets: u64,
        /// New TCP connections and new UDP flows given to the generation.
        pub new_flows: u64,
        /// TCP requests migrated to the generation from a closed listener.
        pub migrated: u64,
        /// QUIC short-header packets routed by CID.
        pub cid_routed: u64,
        /// `bpf_ktime_get_coarse_ns()` of the last delivery.
        pub last_ns: u64,
        /// Drops by reason (`DROP_*`).
        pub drops: [u64; DROP_REASONS as usize],
    }
}
