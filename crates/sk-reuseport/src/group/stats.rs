//! The counters of a group: [`GroupStats`] per generation, [`Drops`] by reason.

use flowpin_bpf_progs::sk_reuseport_select::{self as sel, RawStats, STATS_NO_GEN};

use super::error::{kernel, Result};
use super::ReuseportGroup;
use crate::release::{GenState, Generation};

/// Drops (or fallbacks) by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// No live generation (or it has no slots): dropped.
    pub no_live: u64,
    /// Every socket of the live generation was gone: dropped.
    pub no_socket: u64,
    /// A closing listener's request found no live socket: left to the kernel's hash.
    pub migrate_fallback: u64,
    /// A UDP flow's socket was gone: the flow was re-homed to the live generation.
    pub flow_rehomed: u64,
}

impl From<[u64; sel::DROP_REASONS]> for Drops {
    fn from(d: [u64; sel::DROP_REASONS]) -> Self {
        Drops {
            no_live: d[0],
            no_socket: d[1],
            migrate_fallback: d[2],
            flow_rehomed: d[3],
        }
    }
}

/// Counters of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GenerationStats {
    /// The generation.
    pub gen: Generation,
    /// Its state.
    pub state: GenState,
    /// Its sockets still in the map.
    pub sockets: u32,
    /// UDP packets and TCP connection requests delivered to it.
    pub packets: u64,
    /// New TCP connections and UDP flows given to it.
    pub new_flows: u64,
    /// TCP requests migrated to it from closed listeners.
    pub migrated: u64,
    /// QUIC short-header packets routed to it by CID.
    pub cid_routed: u64,
    /// Drops and fallbacks while it was the target.
    pub drops: Drops,
}

/// Counters of the whole group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStats {
    /// Per generation (retired ones included until their index is reused), oldest first.
    pub generations: Vec<GenerationStats>,
    /// Events that belong to no generation (e.g. no live generation).
    pub unassigned: Drops,
}

impl GroupStats {
    /// The counters of `gen`.
    pub fn get(&self, gen: Generation) -> Option<&GenerationStats> {
        self.generations.iter().find(|g| g.gen == gen)
    }
}

impl ReuseportGroup {
    /// Counters per generation.
    pub fn stats(&self) -> Result<GroupStats> {
        let st = self.state()?;
        let mut generations = Vec::new();
        for g in st.generations() {
            let s: RawStats = self
                .prog
                .stats_of(g.gen.index())
                .map_err(kernel("reading stats"))?;
            generations.push(GenerationStats {
                gen: g.gen,
                state: g.state,
                sockets: self.sockets_left(g.gen, g.slots)?,
                packets: s.packets,
                new_flows: s.new_flows,
                migrated: s.migrated,
                cid_routed: s.cid_routed,
                drops: s.drops.into(),
            });
        }
        let un = self
            .prog
            .stats_of(STATS_NO_GEN)
            .map_err(kernel("reading stats"))?;
        Ok(GroupStats {
            generations,
            unassigned: un.drops.into(),
        })
    }
}
