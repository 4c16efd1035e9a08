//! The sans-IO control core of `xdp_lb`: what the kernel tables hold, and
//! for each change (add or remove a VIP, set its backends, remove one
//! backend, change one weight) the ordered list of map operations that
//! takes the kernel there. No syscalls: [`LbState`] is tested in memory,
//! and [`super::maps`] writes its plans.
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
//! `tests` replays every plan one operation at a time and checks these
//! rules after each.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use flowpin_maglev::Maglev;

use super::backend_ids::BackendAlloc;
pub use super::ops::{BackendDesc, MapOp, RingWrite, SidRoute, Slot, VipKey, VipMeta};
use super::overlay::Overlay;
use super::ring::{build_table, ring_writes};
use super::{Backend, Proto, Vip, VipFlags, XdpLbError};

/// Read-only views of the state (what the kernel tables hold).
mod queries;

type Result<T> = std::result::Result<T, XdpLbError>;

/// What [`XdpLb::set_backends`](super::XdpLb::set_backends) changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingUpdate {
    /// Ring slots rewritten.
    pub slots_changed: u32,
    /// Backends added to the VIP.
    pub backends_added: u32,
    /// Backends removed from the VIP.
    pub backends_removed: u32,
}

/// A planned change: the map operations, in order, and what the state
/// becomes once the kernel took them all ([`LbState::commit`]).
#[derive(Debug)]
#[must_use = "a plan changes nothing until applied and committed"]
pub struct Plan {
    /// The operations, in the order they must reach the kernel.
    pub ops: Vec<MapOp>,
    /// What changed in the VIP's backends, for a backend change.
    pub update: RingUpdate,
    /// The VIP id, for [`LbState::add_vip`].
    pub vip_id: Option<u32>,
    commit: Commit,
}

#[derive(Debug, Default)]
struct Commit {
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

#[derive(Debug)]
pub(super) struct VipState {
    pub(super) id: u32,
    pub(super) flags: VipFlags,
    pub(super) backends: Vec<Backend>,
    /// Backends draining: in the ring with weight 0, routes kept.
    pub(super) draining: HashSet<IpAddr>,
    /// The VIP's Maglev table (indices into `backends`); `None`: every slot 0.
    pub(super) table: Option<Maglev>,
    /// server_id → global backend index.
    pub(super) sids: HashMap<u32, u32>,
}

/// The backends as the ring sees them: a draining one has weight 0.
pub(super) fn ring_backends(backends: &[Backend], draining: &HashSet<IpAddr>) -> Vec<Backend> {
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

/// The configuration the kernel tables hold, and the planner of changes.
#[derive(Debug)]
pub struct LbState {
    pub(super) ring_size: u32,
    pub(super) max_vips: u32,
    pub(super) max_backends: u32,
    pub(super) answer_icmp_echo: bool,
    pub(super) vips: HashMap<Vip, VipState>,
    pub(super) free_vip_ids: Vec<u32>,
    pub(super) backends: BackendAlloc,
    /// `vip_table` slot → the (key, meta) pairs hashed there.
    pub(super) vip_slots: HashMap<u32, Vec<(VipKey, VipMeta)>>,
    /// `sid_table` slot → the routes hashed there.
    pub(super) sid_slots: HashMap<u32, Vec<SidRoute>>,
    /// ICMP entries: VIPs per address.
    pub(super) echo_refs: HashMap<IpAddr, u32>,
    pub(super) port_agnostic: u32,
    /// `backend_descs` entries of VIPs that are not configured, found by
    /// [`LbState::rebuild`] (a `remove_vip` cut short); deleted on reopen.
    pub(super) orphan_descs: Vec<(u32, u32, BackendDesc)>,
}

impl LbState {
    /// An empty state for a program loaded with `config`.
    pub fn new(config: &super::XdpLbConfig) -> LbState {
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
            return Err(XdpLbError::VipExists(vip));
        }
        let agnostic = flags.contains(VipFlags::PORT_AGNOSTIC);
        if agnostic != (vip.port == 0) {
            return Err(XdpLbError::InvalidVip {
                vip,
                why: "port 0 if and only if VipFlags::PORT_AGNOSTIC",
            });
        }
        if flags.contains(VipFlags::SERVER_ID) && vip.proto != Proto::Tcp {
            return Err(XdpLbError::InvalidVip {
                vip,
                why: "VipFlags::SERVER_ID is for TCP VIPs (use QUIC for UDP)",
            });
        }
        if (flags.contains(VipFlags::QUIC) || flags.contains(VipFlags::SKIP_LRU_UDP))
            && vip.proto != Proto::Udp
        {
            return Err(XdpLbError::InvalidVip {
                vip,
                why: "VipFlags::QUIC and SKIP_LRU_UDP are for UDP VIPs",
            });
        }
        let flags = VipFlags(flags.0 & !VipFlags::ICMP_ECHO.0);
        let id = *self
            .free_vip_ids
            .last()
            .ok_or(XdpLbError::TooManyVips { max: self.max_vips })?;
        let mut o = self.overlay();
        o.ops.push(MapOp::ResetVipStats { vip_id: id });
        let meta = VipMeta {
            vip_id: id,
            flags: flags.0,
        };
        o.vip_entry(VipKey::of(&vip), Some(meta), None);
        let mut echo_refs = Vec::new();
        if self.answer_icmp_echo {
            let n = self.echo_refs.get(&vip.addr).copied().unwrap_or(0);
            if n == 0 {
                let icmp = VipMeta {
                    vip_id: u32::MAX,
                    flags: VipFlags::ICMP_ECHO.0,
                };
                o.vip_entry(VipKey::icmp(vip.addr), Some(icmp), None);
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
        };
        Ok(Plan {
            ops: o.ops,
            update: RingUpdate::default(),
            vip_id: Some(id),
            commit: Commit {
                vips: vec![(vip, state)],
                vip_id_taken: Some(id),
                backends: self.backends.clone(),
                vip_slots: o.vip_slots,
                sid_slots: o.sid_slots,
                echo_refs,
                port_agnostic,
                ..Commit::default()
            },
        })
    }

    /// Plans removing a VIP: it becomes unreachable first (its packets pass
    /// untouched), then its ring, server_id routes and unused backends are
    /// cleared.
    pub fn remove_vip(&self, vip: &Vip) -> Result<Plan> {
        let st = self.vips.get(vip).ok_or(XdpLbError::UnknownVip(*vip))?;
        let mut o = self.overlay();
        let meta = VipMeta {
            vip_id: st.id,
            flags: st.flags.0,
        };
        o.vip_entry(VipKey::of(vip), None, Some(meta));
        let mut backends = self.backends.clone();
        let (update, _) =
            self.plan_backends(&mut o, &mut backends, vip, st, &[], &HashSet::new())?;
        let mut echo_refs = Vec::new();
        if let Some(&n) = self.echo_refs.get(&vip.addr) {
            if n == 1 {
                let icmp = VipMeta {
                    vip_id: u32::MAX,
                    flags: VipFlags::ICMP_ECHO.0,
                };
                o.vip_entry(VipKey::icmp(vip.addr), None, Some(icmp));
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
            commit: Commit {
                removed_vips: vec![*vip],
                vip_id_freed: Some(st.id),
                backends,
                vip_slots: o.vip_slots,
                sid_slots: o.sid_slots,
                echo_refs,
                port_agnostic,
                ..Commit::default()
            },
        })
    }

    /// Plans setting a VIP's backends: its Maglev ring (key: the backend
    /// address as `IpAddr::to_string()`, so every load balancer builds the
    /// same ring) is diffed against the current one with [`Maglev::diff`]
    /// and only the changed slots are written; new backends are written
    /// first, the ring and server_id routes next, removed backends last.
    ///
    /// A backend that was draining ([`drain_backend`](Self::drain_backend))
    /// and is still listed stays draining.
    pub fn set_backends(&self, vip: &Vip, backends: &[Backend]) -> Result<Plan> {
        let st = self.vips.get(vip).ok_or(XdpLbError::UnknownVip(*vip))?;
        let draining = backends
            .iter()
            .filter(|b| st.draining.contains(&b.addr))
            .map(|b| b.addr)
            .collect();
        self.plan_set(vip, backends, draining)
    }

    /// Plans draining one backend of a VIP: it leaves the ring (no new
    /// flows) but keeps its index, its server_id route and its
    /// connection-table entries, so its existing flows keep reaching it.
    /// [`backends`](Self::backends) still lists it with its weight;
    /// [`remove_backend`](Self::remove_backend) takes it out once its
    /// connections are gone, [`undrain_backend`](Self::undrain_backend)
    /// puts it back in the ring.
    pub fn drain_backend(&self, vip: &Vip, addr: IpAddr) -> Result<Plan> {
        self.plan_drain(vip, addr, true)
    }

    /// Plans putting a draining backend back into the ring.
    pub fn undrain_backend(&self, vip: &Vip, addr: IpAddr) -> Result<Plan> {
        self.plan_drain(vip, addr, false)
    }

    fn plan_drain(&self, vip: &Vip, addr: IpAddr, drain: bool) -> Result<Plan> {
        let st = self.vips.get(vip).ok_or(XdpLbError::UnknownVip(*vip))?;
        if !st.backends.iter().any(|b| b.addr == addr) {
            return Err(XdpLbError::InvalidBackends {
                vip: *vip,
                why: format!("{addr} is not a backend of this VIP"),
            });
        }
        let mut draining = st.draining.clone();
        if drain {
            draining.insert(addr);
        } else {
            draining.remove(&addr);
        }
        self.plan_set(vip, &st.backends.clone(), draining)
    }

    /// Whether a backend of a VIP is draining.
    pub fn is_draining(&self, vip: &Vip, addr: IpAddr) -> bool {
        self.vips
            .get(vip)
            .is_some_and(|s| s.draining.contains(&addr))
    }

    fn plan_set(&self, vip: &Vip, backends: &[Backend], draining: HashSet<IpAddr>) -> Result<Plan> {
        let st = self.vips.get(vip).ok_or(XdpLbError::UnknownVip(*vip))?;
        let invalid = |why: String| XdpLbError::InvalidBackends { vip: *vip, why };
        let mut seen = HashSet::new();
        let mut sids = HashSet::new();
        for b in backends {
            if !seen.insert(b.addr) {
                return Err(invalid(format!("backend {} listed twice", b.addr)));
            }
            if vip.addr.is_ipv6() && b.addr.is_ipv4() {
                return Err(invalid(format!(
                    "IPv6 VIP cannot tunnel to IPv4 backend {} (no IPv6-in-IPv4 encapsulation)",
                    b.addr
                )));
            }
            if let Some(s) = b.server_id {
                if !sids.insert(s.get()) {
                    return Err(invalid(format!("server_id {s} used by two backends")));
                }
            }
        }
        let mut o = self.overlay();
        let mut alloc = self.backends.clone();
        let (update, table) =
            self.plan_backends(&mut o, &mut alloc, vip, st, backends, &draining)?;
        let new_sids = backends
            .iter()
            .filter_map(|b| {
                let s = b.server_id?;
                Some((s.get(), alloc.ids.get(&b.addr)?.0))
            })
            .collect();
        let state = VipState {
            id: st.id,
            flags: st.flags,
            backends: backends.to_vec(),
            draining,
            table,
            sids: new_sids,
        };
        Ok(Plan {
            ops: o.ops,
            update,
            vip_id: None,
            commit: Commit {
                vips: vec![(*vip, state)],
                backends: alloc,
                vip_slots: o.vip_slots,
                sid_slots: o.sid_slots,
                ..Commit::default()
            },
        })
    }

    /// Plans removing one backend of a VIP (its flows move to the others,
    /// its server_id route goes away).
    pub fn remove_backend(&self, vip: &Vip, addr: IpAddr) -> Result<Plan> {
        let st = self.vips.get(vip).ok_or(XdpLbError::UnknownVip(*vip))?;
        if !st.backends.iter().any(|b| b.addr == addr) {
            return Err(XdpLbError::InvalidBackends {
                vip: *vip,
                why: format!("{addr} is not a backend of this VIP"),
            });
        }
        let rest: Vec<Backend> = st
            .backends
            .iter()
            .filter(|b| b.addr != addr)
            .copied()
            .collect();
        self.set_backends(vip, &rest)
    }

    /// Plans changing one backend's Maglev weight (0: no new flows, still
    /// reachable by server_id and through the connection table).
    pub fn set_weight(&self, vip: &Vip, addr: IpAddr, weight: u32) -> Result<Plan> {
        let st = self.vips.get(vip).ok_or(XdpLbError::UnknownVip(*vip))?;
        if !st.backends.iter().any(|b| b.addr == addr) {
            return Err(XdpLbError::InvalidBackends {
                vip: *vip,
                why: format!("{addr} is not a backend of this VIP"),
            });
        }
        let next: Vec<Backend> = st
            .backends
            .iter()
            .map(|b| {
                let mut b = *b;
                if b.addr == addr {
                    b.weight = weight;
                }
                b
            })
            .collect();
        self.set_backends(vip, &next)
    }

    /// The operations that take `st`'s backends to `backends`, in order.
    fn plan_backends(
        &self,
        o: &mut Overlay<'_>,
        alloc: &mut BackendAlloc,
        vip: &Vip,
        st: &VipState,
        backends: &[Backend],
        draining: &HashSet<IpAddr>,
    ) -> Result<(RingUpdate, Option<Maglev>)> {
        let mut update = RingUpdate::default();
        let old: HashSet<IpAddr> = st.backends.iter().map(|b| b.addr).collect();
        let new: HashSet<IpAddr> = backends.iter().map(|b| b.addr).collect();
        // 1. New backends first.
        let mut ids = Vec::with_capacity(backends.len());
        for b in backends {
            if old.contains(&b.addr) {
                let id = self.backends.ids.get(&b.addr).map(|x| x.0).ok_or_else(|| {
                    XdpLbError::Internal(format!(
                        "backend {} of VIP {vip} has no index (control state corrupt)",
                        b.addr
                    ))
                })?;
                ids.push(id);
            } else {
                let (id, fresh) = alloc.acquire(b.addr, self.max_backends)?;
                if fresh {
                    // A new index's counters are reset before it becomes reachable.
                    o.ops.push(MapOp::ResetBackendStats { id });
                    o.ops.push(MapOp::Backend {
                        id,
                        addr: Some(b.addr),
                        prev: None,
                    });
                }
                ids.push(id);
                update.backends_added += 1;
            }
        }
        // 2. The ring: only the slots Maglev::diff reports.
        let old_ids: Vec<u32> = st
            .backends
            .iter()
            .map(|b| self.backends.ids.get(&b.addr).map_or(0, |x| x.0))
            .collect();
        let table = build_table(&ring_backends(backends, draining), self.ring_size)?;
        let writes = ring_writes(
            st.table.as_ref(),
            &old_ids,
            table.as_ref(),
            &ids,
            self.ring_size,
        )?;
        update.slots_changed = writes.len() as u32;
        if !writes.is_empty() {
            o.ops.push(MapOp::Ring {
                vip_id: st.id,
                writes,
            });
        }
        // 3. server_id routes: upsert the new ones, then delete the stale ones.
        let mut kept = HashSet::new();
        for (b, &id) in backends.iter().zip(&ids) {
            if let Some(s) = b.server_id {
                let prev = st.sids.get(&s.get()).copied();
                if prev != Some(id) {
                    if prev.is_none() {
                        // Routed again: no longer a removed backend's id.
                        o.ops.push(MapOp::SidRetired {
                            vip_id: st.id,
                            server_id: s.get(),
                            retired: false,
                        });
                    }
                    o.sid_route(st.id, s.get(), Some(id), prev);
                }
                kept.insert(s.get());
            }
        }
        let mut stale: Vec<(u32, u32)> = st
            .sids
            .iter()
            .filter(|(s, _)| !kept.contains(*s))
            .map(|(s, b)| (*s, *b))
            .collect();
        stale.sort_unstable();
        for (s, b) in stale {
            o.sid_route(st.id, s, None, Some(b));
            // Its packets now fall back: count them as `sid_fallback_removed`.
            o.ops.push(MapOp::SidRetired {
                vip_id: st.id,
                server_id: s,
                retired: true,
            });
        }
        // 4. The descriptors (control side only): what changed, by position.
        let desc = |list: &[Backend], drain: &HashSet<IpAddr>, ids: &[u32], i: usize| {
            let b = list.get(i)?;
            Some(BackendDesc {
                addr: b.addr,
                weight: b.weight,
                server_id: b.server_id.map(|s| s.get()),
                draining: drain.contains(&b.addr),
                backend: ids.get(i).copied().unwrap_or(0),
            })
        };
        for pos in 0..st.backends.len().max(backends.len()) {
            let prev = desc(&st.backends, &st.draining, &old_ids, pos);
            let value = desc(backends, draining, &ids, pos);
            if prev != value {
                o.ops.push(MapOp::BackendDesc {
                    vip_id: st.id,
                    pos: pos as u32,
                    value,
                    prev,
                });
            }
        }
        // 5. Removed backends last.
        for b in &st.backends {
            if !new.contains(&b.addr) {
                if let Some(id) = alloc.release(b.addr) {
                    o.ops.push(MapOp::Backend {
                        id,
                        addr: None,
                        prev: Some(b.addr),
                    });
                }
                update.backends_removed += 1;
            }
        }
        Ok((update, table))
    }

    /// Makes a plan's outcome the current state. Call only after the
    /// kernel took every operation of the plan, and before planning anything else.
    pub fn commit(&mut self, plan: Plan) {
        let c = plan.commit;
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
