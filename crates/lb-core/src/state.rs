//! The sans-IO control core of `xdp_lb`: what the kernel tables hold, and
//! for each change (add or remove a VIP, set its backends, remove one
//! backend, change one weight, drain, or reconcile to a whole desired
//! state) the ordered list of map operations that takes the kernel there.
//! No syscalls: [`LbState`] is tested in memory, and an applier
//! ([`apply`](crate::apply) over a [`MapWriter`](crate::MapWriter)) writes
//! its plans.
//!
//! A change is planned from `&self` into a [`Plan`] (operations + what the
//! state becomes) and committed only once the kernel took every operation,
//! so a failed write leaves both the kernel (rolled back by the applier)
//! and this state at the previous configuration.
//!
//! # Ordering rules
//!
//! Every operation leaves the tables in a state the program can use, so a
//! packet racing a change never meets a dangling reference:
//!
//! 1. a backend's `backends` entry is written before any ring slot or
//!    server_id route points at it, and cleared only after none does;
//! 2. a `vips` / `server_ids` hash entry is written before the
//!    direct-mapped slot (`vip_table`, `sid_table`) that inlines it, and
//!    deleted only after that slot no longer inlines it;
//! 3. a VIP's counters are reset before it becomes reachable.
//!
//! The tests replay every plan one operation at a time and check these
//! rules after each.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use flowpin_bpf_abi::lb;
use flowpin_maglev::Maglev;

use crate::backend_ids::BackendAlloc;
pub use crate::ops::{BackendDesc, MapOp, RingWrite, SidRoute, Slot, VipKey, VipMeta};
use crate::{Backend, LbConfig, LbError, Proto, Vip, VipCid, VipFlags};

/// Changes to a VIP's backends: set, drain, remove, weight.
mod backends;
/// Read-only views of the state (what the kernel tables hold).
mod queries;
/// The whole desired state in, the minimal plan out.
mod reconcile;

pub use reconcile::{Desired, DesiredVip};

type Result<T> = std::result::Result<T, LbError>;

/// What a change did to the backends: of one VIP for a backend change, of
/// every VIP together for [`LbState::reconcile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingUpdate {
    /// Ring slots rewritten.
    pub slots_changed: u32,
    /// Backends added to the VIP.
    pub backends_added: u32,
    /// Backends removed from the VIP.
    pub backends_removed: u32,
}

impl RingUpdate {
    /// Adds `other`'s counts to these.
    pub(crate) fn add(&mut self, other: RingUpdate) {
        self.slots_changed += other.slots_changed;
        self.backends_added += other.backends_added;
        self.backends_removed += other.backends_removed;
    }
}

/// A planned change: the map operations, in order, and what the state
/// becomes once the kernel took them all ([`LbState::commit`]).
#[derive(Debug)]
#[must_use = "a plan changes nothing until applied and committed"]
pub struct Plan {
    /// The operations, in the order they must reach the kernel.
    pub ops: Vec<MapOp>,
    /// What changed in the VIP's backends, for a backend change (over
    /// every VIP, for [`LbState::reconcile`]).
    pub update: RingUpdate,
    /// The VIP id, for [`LbState::add_vip`].
    pub vip_id: Option<u32>,
    commit: Commit,
}

/// What [`LbState::commit`] installs.
#[derive(Debug)]
enum Commit {
    /// The parts of the state one change touched.
    Delta(Box<Delta>),
    /// The whole state a reconcile planned towards.
    Replace(Box<LbState>),
}

#[derive(Debug, Default)]
struct Delta {
    /// VIPs to insert or replace.
    vips: Vec<(Vip, VipState)>,
    /// VIPs to forget.
    removed_vips: Vec<Vip>,
    /// VIP ids taken from / given back to the free list.
    vip_id_taken: Option<u32>,
    vip_id_freed: Option<u32>,
    backends: BackendAlloc,
    vip_slots: HashMap<u32, Vec<(VipKey, VipMeta)>>,
    sid_slots: HashMap<u32, Vec<SidRoute>>,
    echo_refs: Vec<(IpAddr, u32)>,
    port_agnostic: Option<u32>,
}

#[derive(Debug, Clone)]
pub(crate) struct VipState {
    pub(crate) id: u32,
    pub(crate) flags: VipFlags,
    pub(crate) backends: Vec<Backend>,
    /// Backends draining: in the ring with weight 0, routes kept.
    pub(crate) draining: HashSet<IpAddr>,
    /// The VIP's Maglev table (indices into `backends`); `None`: every
    /// slot 0. Shared, so a scratch copy of the state (reconcile) is cheap.
    pub(crate) table: Option<Arc<Maglev>>,
    /// server_id → global backend index.
    pub(crate) sids: HashMap<u32, u32>,
    /// The connection-ID layout it declared (`cid_cfgs`).
    pub(crate) cid: VipCid,
}

/// The backends as the ring sees them: a draining one has weight 0.
pub(crate) fn ring_backends(backends: &[Backend], draining: &HashSet<IpAddr>) -> Vec<Backend> {
    backends
        .iter()
        .map(|b| {
            if draining.contains(&b.addr) {
                b.weight(0)
            } else {
                *b
            }
        })
        .collect()
}

/// The `vips` value of an address's ICMP entry (answers echo requests).
const ICMP_META: VipMeta = VipMeta {
    vip_id: u32::MAX,
    flags: lb::VIP_ICMP_ECHO,
};

/// The configuration the kernel tables hold, and the planner of changes.
#[derive(Debug, Clone)]
pub struct LbState {
    pub(crate) ring_size: u32,
    pub(crate) max_vips: u32,
    pub(crate) max_backends: u32,
    pub(crate) answer_icmp_echo: bool,
    pub(crate) vips: HashMap<Vip, VipState>,
    pub(crate) free_vip_ids: Vec<u32>,
    pub(crate) backends: BackendAlloc,
    /// `vip_table` slot → the (key, meta) pairs hashed there.
    pub(crate) vip_slots: HashMap<u32, Vec<(VipKey, VipMeta)>>,
    /// `sid_table` slot → the routes hashed there.
    pub(crate) sid_slots: HashMap<u32, Vec<SidRoute>>,
    /// ICMP entries: VIPs per address.
    pub(crate) echo_refs: HashMap<IpAddr, u32>,
    pub(crate) port_agnostic: u32,
    /// `backend_descs` entries of VIPs that are not configured, found by
    /// [`LbState::rebuild`] (a `remove_vip` cut short); deleted on reopen.
    pub(crate) orphan_descs: Vec<(u32, u32, BackendDesc)>,
}

impl LbState {
    /// An empty state for a program loaded with `config`.
    pub fn new(config: &LbConfig) -> LbState {
        LbState {
            ring_size: config.ring_size,
            max_vips: config.max_vips,
            max_backends: config.max_backends,
            answer_icmp_echo: config.answer_icmp_echo,
            vips: HashMap::new(),
            free_vip_ids: (0..config.max_vips).rev().collect(),
            backends: BackendAlloc {
                next: 1,
                ..BackendAlloc::default()
            },
            vip_slots: HashMap::new(),
            sid_slots: HashMap::new(),
            echo_refs: HashMap::new(),
            port_agnostic: 0,
            orphan_descs: Vec::new(),
        }
    }

    /// Plans adding a VIP with no backends (its packets are dropped as
    /// `unknown_backend` until it gets some).
    pub fn add_vip(&self, vip: Vip, flags: VipFlags) -> Result<Plan> {
        if self.vips.contains_key(&vip) {
            return Err(LbError::VipExists(vip));
        }
        check_flags(vip, flags)?;
        let agnostic = flags.port_agnostic();
        let id = *self
            .free_vip_ids
            .last()
            .ok_or(LbError::TooManyVips { max: self.max_vips })?;
        let mut o = self.overlay();
        o.ops.push(MapOp::ResetVipStats { vip_id: id });
        let meta = VipMeta {
            vip_id: id,
            flags: flags.bits(),
        };
        o.vip_entry(VipKey::of(&vip), Some(meta), None);
        let mut echo_refs = Vec::new();
        if self.answer_icmp_echo {
            let n = self.echo_refs.get(&vip.addr).copied().unwrap_or(0);
            if n == 0 {
                o.vip_entry(VipKey::icmp(vip.addr), Some(ICMP_META), None);
            }
            echo_refs.push((vip.addr, n + 1));
        }
        let mut port_agnostic = None;
        if agnostic {
            o.ops.push(MapOp::PortAgnosticVips {
                count: self.port_agnostic + 1,
                prev: self.port_agnostic,
            });
            port_agnostic = Some(self.port_agnostic + 1);
        }
        let state = VipState {
            id,
            flags,
            backends: Vec::new(),
            draining: HashSet::new(),
            table: None,
            sids: HashMap::new(),
            cid: VipCid::Any,
        };
        Ok(Plan {
            ops: o.ops,
            update: RingUpdate::default(),
            vip_id: Some(id),
            commit: Commit::Delta(Box::new(Delta {
                vips: vec![(vip, state)],
                vip_id_taken: Some(id),
                backends: self.backends.clone(),
                vip_slots: o.vip_slots,
                sid_slots: o.sid_slots,
                echo_refs,
                port_agnostic,
                ..Delta::default()
            })),
        })
    }

    /// Plans changing a configured VIP's flags in place: its id, counters,
    /// ring, server_id routes and connection-table entries stay; only its
    /// `vips` entry is rewritten (a `vip_table` slot inlining it is made
    /// shared around the write), so every packet sees the old flags or the
    /// new ones, never the VIP missing. Whether a VIP is port-agnostic is
    /// part of its identity (port 0), so that flag cannot change here.
    pub fn set_vip_flags(&self, vip: &Vip, flags: VipFlags) -> Result<Plan> {
        let st = self.vips.get(vip).ok_or(LbError::UnknownVip(*vip))?;
        check_flags(*vip, flags)?;
        let mut o = self.overlay();
        if flags != st.flags {
            let meta = |f: VipFlags| VipMeta {
                vip_id: st.id,
                flags: f.bits(),
            };
            o.vip_update(VipKey::of(vip), meta(flags), meta(st.flags));
        }
        let state = VipState {
            flags,
            ..st.clone()
        };
        Ok(Plan {
            ops: o.ops,
            update: RingUpdate::default(),
            vip_id: None,
            commit: Commit::Delta(Box::new(Delta {
                vips: vec![(*vip, state)],
                backends: self.backends.clone(),
                vip_slots: o.vip_slots,
                sid_slots: o.sid_slots,
                ..Delta::default()
            })),
        })
    }

    /// Plans setting the connection-ID layout a QUIC VIP declares (only
    /// that layout is decoded in its packets; QUIC-LB: up to seven live
    /// configurations, rotated by listing the new one beside the old).
    pub fn set_vip_cid(&self, vip: &Vip, cid: VipCid) -> Result<Plan> {
        let st = self.vips.get(vip).ok_or(LbError::UnknownVip(*vip))?;
        if cid != VipCid::Any && !st.flags.quic() {
            return Err(LbError::InvalidVip {
                vip: *vip,
                why: "a connection-ID layout is for QUIC VIPs (VipFlags::QUIC)",
            });
        }
        cid.check()
            .map_err(|why| LbError::InvalidCid { vip: *vip, why })?;
        let mut ops = Vec::new();
        cid_ops(&mut ops, st.id, &cid, &st.cid);
        let state = VipState { cid, ..st.clone() };
        Ok(Plan {
            ops,
            update: RingUpdate::default(),
            vip_id: None,
            commit: Commit::Delta(Box::new(Delta {
                vips: vec![(*vip, state)],
                backends: self.backends.clone(),
                ..Delta::default()
            })),
        })
    }

    /// Plans removing a VIP: it becomes unreachable first (its packets pass
    /// untouched), then its ring, server_id routes and unused backends are
    /// cleared.
    pub fn remove_vip(&self, vip: &Vip) -> Result<Plan> {
        let st = self.vips.get(vip).ok_or(LbError::UnknownVip(*vip))?;
        let mut o = self.overlay();
        let meta = VipMeta {
            vip_id: st.id,
            flags: st.flags.bits(),
        };
        o.vip_entry(VipKey::of(vip), None, Some(meta));
        // The id may be reused: its CID configuration goes with the VIP.
        cid_ops(&mut o.ops, st.id, &VipCid::Any, &st.cid);
        let mut backends = self.backends.clone();
        let (update, _) =
            self.plan_backends(&mut o, &mut backends, vip, st, &[], &HashSet::new())?;
        let mut echo_refs = Vec::new();
        if let Some(&n) = self.echo_refs.get(&vip.addr) {
            if n == 1 {
                o.vip_entry(VipKey::icmp(vip.addr), None, Some(ICMP_META));
            }
            echo_refs.push((vip.addr, n - 1));
        }
        let mut port_agnostic = None;
        if st.flags.contains(VipFlags::PORT_AGNOSTIC) {
            let count = self.port_agnostic.saturating_sub(1);
            o.ops.push(MapOp::PortAgnosticVips {
                count,
                prev: self.port_agnostic,
            });
            port_agnostic = Some(count);
        }
        Ok(Plan {
            ops: o.ops,
            update,
            vip_id: None,
            commit: Commit::Delta(Box::new(Delta {
                removed_vips: vec![*vip],
                vip_id_freed: Some(st.id),
                backends,
                vip_slots: o.vip_slots,
                sid_slots: o.sid_slots,
                echo_refs,
                port_agnostic,
                ..Delta::default()
            })),
        })
    }

    /// Makes a plan's outcome the current state. Call only after the
    /// kernel took every operation of the plan, and before planning anything else.
    pub fn commit(&mut self, plan: Plan) {
        let c = match plan.commit {
            Commit::Delta(c) => *c,
            Commit::Replace(state) => {
                *self = *state;
                return;
            }
        };
        if let Some(id) = c.vip_id_taken {
            self.free_vip_ids.retain(|&x| x != id);
        }
        if let Some(id) = c.vip_id_freed {
            self.free_vip_ids.push(id);
        }
        for v in c.removed_vips {
            self.vips.remove(&v);
        }
        for (v, s) in c.vips {
            self.vips.insert(v, s);
        }
        self.backends = c.backends;
        for (slot, e) in c.vip_slots {
            if e.is_empty() {
                self.vip_slots.remove(&slot);
            } else {
                self.vip_slots.insert(slot, e);
            }
        }
        for (slot, e) in c.sid_slots {
            if e.is_empty() {
                self.sid_slots.remove(&slot);
            } else {
                self.sid_slots.insert(slot, e);
            }
        }
        for (a, n) in c.echo_refs {
            if n == 0 {
                self.echo_refs.remove(&a);
            } else {
                self.echo_refs.insert(a, n);
            }
        }
        if let Some(n) = c.port_agnostic {
            self.port_agnostic = n;
        }
    }
}

/// The `cid_cfgs` writes taking VIP `vip_id` from `prev` to `want`.
fn cid_ops(ops: &mut Vec<MapOp>, vip_id: u32, want: &VipCid, prev: &VipCid) {
    for (slot, value, prev) in want.diff(prev) {
        ops.push(MapOp::CidConfig {
            vip_id,
            slot,
            value,
            prev,
        });
    }
}

/// The flags a VIP may have: port 0 if and only if port-agnostic, server_id
/// routing for TCP, QUIC and the LRU bypass for UDP.
fn check_flags(vip: Vip, flags: VipFlags) -> Result<()> {
    let why = if flags.port_agnostic() != (vip.port == 0) {
        "port 0 if and only if VipFlags::PORT_AGNOSTIC"
    } else if flags.server_id() && vip.proto != Proto::Tcp {
        "VipFlags::SERVER_ID is for TCP VIPs (use QUIC for UDP)"
    } else if (flags.quic() || flags.skip_lru_udp()) && vip.proto != Proto::Udp {
        "VipFlags::QUIC and SKIP_LRU_UDP are for UDP VIPs"
    } else {
        return Ok(());
    };
    Err(LbError::InvalidVip { vip, why })
}
