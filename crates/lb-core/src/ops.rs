//! The map operations [`LbState`](crate::LbState) plans and an applier
//! ([`apply`](crate::apply)) writes: one typed write per map entry, each
//! carrying the value it replaces so it can be undone.

use std::net::IpAddr;

use flowpin_bpf_abi::lb;

use crate::{CidEntry, Vip};

/// Key of the `vips` map (`flowpin_vip_key`): address, port (0 for
/// port-agnostic VIPs and ICMP entries), IP protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VipKey {
    /// Destination address.
    pub addr: IpAddr,
    /// Destination port, host order.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
}

impl VipKey {
    pub(crate) fn of(vip: &Vip) -> VipKey {
        VipKey {
            addr: vip.addr,
            port: vip.port,
            proto: vip.proto.number(),
        }
    }
    /// The ICMP entry of an address (answers echo requests).
    pub(crate) fn icmp(addr: IpAddr) -> VipKey {
        let proto = if addr.is_ipv4() { 1 } else { 58 };
        VipKey {
            addr,
            port: 0,
            proto,
        }
    }
    /// Address bytes and family as the C key stores them (an IPv4 address
    /// in the first 4 bytes, then zeros; family `FLOWPIN_FAMILY_V4` / `_V6`).
    pub fn addr_bytes(&self) -> ([u8; 16], u8) {
        match self.addr {
            IpAddr::V4(a) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&a.octets());
                (b, lb::FAMILY_V4)
            }
            IpAddr::V6(a) => (a.octets(), lb::FAMILY_V6),
        }
    }
    /// `flowpin_vip_slot()` of the key.
    pub fn slot(&self) -> u32 {
        let (a, fam) = self.addr_bytes();
        lb::vip_slot(&a, self.port, self.proto, fam)
    }
}

/// Value of the `vips` map (`flowpin_vip_meta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VipMeta {
    /// Index of the VIP's ring and counters (`u32::MAX` for ICMP entries).
    pub vip_id: u32,
    /// `FLOWPIN_VIP_*` bits.
    pub flags: u32,
}

/// A (VIP id, server_id) route to a backend index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SidRoute {
    /// The VIP's id.
    pub vip_id: u32,
    /// The server_id.
    pub server_id: u32,
    /// Global backend index.
    pub backend: u32,
}

/// A slot of a direct-mapped table (`vip_table`, `sid_table`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot<T> {
    /// No entry hashes here (`FLOWPIN_SLOT_EMPTY`).
    Empty,
    /// One entry hashes here, inlined (`FLOWPIN_SLOT_ONE`).
    One(T),
    /// Several entries share the slot: the program looks the hash map up
    /// (`FLOWPIN_SLOT_SHARED`).
    Shared,
}

impl<T: Copy> Slot<T> {
    pub(crate) fn of(entries: &[T]) -> Slot<T> {
        match entries {
            [] => Slot::Empty,
            [one] => Slot::One(*one),
            _ => Slot::Shared,
        }
    }
}

/// Value of the `backend_descs` map (`flowpin_backend_desc`): one entry of
/// a VIP's backend list as the control side set it. The program never reads
/// it; a process that reopens the pins rebuilds its state from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendDesc {
    /// Tunnel destination.
    pub addr: IpAddr,
    /// Maglev weight as set (a draining backend is in the ring with weight 0).
    pub weight: u32,
    /// server_id, if routed by it.
    pub server_id: Option<u32>,
    /// Draining: out of the ring, still reachable by server_id and the
    /// connection table.
    pub draining: bool,
    /// Global index in `backends`.
    pub backend: u32,
}

/// One ring slot write: `ring[vip_id * M + slot] = backend` (it held `prev`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingWrite {
    /// Slot of the VIP's ring (`0..M`).
    pub slot: u32,
    /// Global backend index (0: none).
    pub backend: u32,
    /// What the slot held before.
    pub prev: u32,
}

/// One write to one map of `xdp_lb`. Each carries the value it replaces,
/// so it can be undone ([`MapOp::undo`]).
///
/// Deliberately not `#[non_exhaustive]`: an applier must perform every
/// operation, so one more operation is a breaking change that its `match`
/// must fail to compile on, not skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOp {
    /// Resets a VIP's per-CPU counters (`vip_stats`).
    ResetVipStats {
        /// The VIP's id.
        vip_id: u32,
    },
    /// Resets a backend index's per-CPU counters (`backend_stats`), before
    /// the index becomes reachable.
    ResetBackendStats {
        /// Global backend index.
        id: u32,
    },
    /// `sid_retired[(vip_id, server_id)]`: marks a server_id whose backend
    /// was removed from the VIP (`true`) or routed again (`false`, deleted).
    /// A counter-classification hint only: it has no undo (a stale entry
    /// only changes which fallback counter a packet increments).
    SidRetired {
        /// The VIP's id.
        vip_id: u32,
        /// The server_id.
        server_id: u32,
        /// `true`: insert, `false`: delete.
        retired: bool,
    },
    /// `backends[id]` = the tunnel address (`None`: a free entry).
    Backend {
        /// Global backend index.
        id: u32,
        /// New value.
        addr: Option<IpAddr>,
        /// Previous value.
        prev: Option<IpAddr>,
    },
    /// Slots of one VIP's ring (written in batches).
    Ring {
        /// The VIP's id.
        vip_id: u32,
        /// The slots, ascending.
        writes: Vec<RingWrite>,
    },
    /// `vips[key]` (`None`: deleted).
    Vip {
        /// The key.
        key: VipKey,
        /// New value.
        meta: Option<VipMeta>,
        /// Previous value.
        prev: Option<VipMeta>,
    },
    /// `vip_table[slot]`.
    VipSlot {
        /// The slot.
        slot: u32,
        /// New value.
        value: Slot<(VipKey, VipMeta)>,
        /// Previous value.
        prev: Slot<(VipKey, VipMeta)>,
    },
    /// `server_ids[(vip_id, server_id)]` (`None`: deleted).
    SidRoute {
        /// The VIP's id.
        vip_id: u32,
        /// The server_id.
        server_id: u32,
        /// New backend index.
        backend: Option<u32>,
        /// Previous backend index.
        prev: Option<u32>,
    },
    /// `sid_table[slot]`.
    SidSlot {
        /// The slot.
        slot: u32,
        /// New value.
        value: Slot<SidRoute>,
        /// Previous value.
        prev: Slot<SidRoute>,
    },
    /// `backend_descs[(vip_id, pos)]` (`None`: deleted).
    BackendDesc {
        /// The VIP's id.
        vip_id: u32,
        /// Position in the VIP's backend list.
        pos: u32,
        /// New value.
        value: Option<BackendDesc>,
        /// Previous value.
        prev: Option<BackendDesc>,
    },
    /// `cid_cfgs[vip_id * 8 + slot]`: one entry of a VIP's connection-ID
    /// configuration (`None`: zeroed).
    CidConfig {
        /// The VIP's id.
        vip_id: u32,
        /// Slot: a QUIC-LB config id (0..=6) or the mode slot (7).
        slot: u8,
        /// New value.
        value: Option<CidEntry>,
        /// Previous value.
        prev: Option<CidEntry>,
    },
    /// `lb_cfg.port_agnostic_vips` (the program skips the port-0 lookup when 0).
    PortAgnosticVips {
        /// New count.
        count: u32,
        /// Previous count.
        prev: u32,
    },
}

impl MapOp {
    /// The operation that restores what this one overwrote (`None` for a
    /// counter reset, which needs no undo: the id was unused).
    pub fn undo(&self) -> Option<MapOp> {
        Some(match self {
            MapOp::ResetVipStats { .. }
            | MapOp::ResetBackendStats { .. }
            | MapOp::SidRetired { .. } => return None,
            MapOp::Backend { id, addr, prev } => MapOp::Backend {
                id: *id,
                addr: *prev,
                prev: *addr,
            },
            MapOp::Ring { vip_id, writes } => MapOp::Ring {
                vip_id: *vip_id,
                writes: writes
                    .iter()
                    .map(|w| RingWrite {
                        slot: w.slot,
                        backend: w.prev,
                        prev: w.backend,
                    })
                    .collect(),
            },
            MapOp::Vip { key, meta, prev } => MapOp::Vip {
                key: *key,
                meta: *prev,
                prev: *meta,
            },
            MapOp::VipSlot { slot, value, prev } => MapOp::VipSlot {
                slot: *slot,
                value: *prev,
                prev: *value,
            },
            MapOp::SidRoute {
                vip_id,
                server_id,
                backend,
                prev,
            } => MapOp::SidRoute {
                vip_id: *vip_id,
                server_id: *server_id,
                backend: *prev,
                prev: *backend,
            },
            MapOp::SidSlot { slot, value, prev } => MapOp::SidSlot {
                slot: *slot,
                value: *prev,
                prev: *value,
            },
            MapOp::BackendDesc {
                vip_id,
                pos,
                value,
                prev,
            } => MapOp::BackendDesc {
                vip_id: *vip_id,
                pos: *pos,
                value: *prev,
                prev: *value,
            },
            MapOp::CidConfig {
                vip_id,
                slot,
                value,
                prev,
            } => MapOp::CidConfig {
                vip_id: *vip_id,
                slot: *slot,
                value: *prev,
                prev: *value,
            },
            MapOp::PortAgnosticVips { count, prev } => MapOp::PortAgnosticVips {
                count: *prev,
                prev: *count,
            },
        })
    }
}
