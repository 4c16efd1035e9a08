//! Changes to one VIP's backends: set the list, drain and undrain one,
//! remove one, change one weight. Each plans the ring slots that change
//! ([`Maglev::diff`]), the server_id routes and the descriptors, in the
//! order of the module docs of [`state`](super).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use flowpin_maglev::Maglev;

use super::{ring_backends, Commit, Delta, LbState, Plan, Result, RingUpdate, VipState};
use crate::backend_ids::BackendAlloc;
use crate::overlay::Overlay;
use crate::ring::{build_table, ring_writes};
use crate::{weight, Backend, BackendDesc, LbError, MapOp, Vip};

impl LbState {
    /// Plans setting a VIP's backends: its Maglev ring (key: the backend
    /// address as `IpAddr::to_string()`, so every load balancer builds the
    /// same ring) is diffed against the current one with [`Maglev::diff`]
    /// and only the changed slots are written; new backends are written
    /// first, the ring and server_id routes next, removed backends last.
    ///
    /// A backend that was draining ([`drain_backend`](Self::drain_backend))
    /// and is still listed stays draining.
    pub fn set_backends(&self, vip: &Vip, backends: &[Backend]) -> Result<Plan> {
        let st = self.vips.get(vip).ok_or(LbError::UnknownVip(*vip))?;
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

    pub(crate) fn plan_drain(&self, vip: &Vip, addr: IpAddr, drain: bool) -> Result<Plan> {
        let st = self.vips.get(vip).ok_or(LbError::UnknownVip(*vip))?;
        if !st.backends.iter().any(|b| b.addr == addr) {
            return Err(LbError::InvalidBackends {
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

    pub(crate) fn plan_set(
        &self,
        vip: &Vip,
        backends: &[Backend],
        draining: HashSet<IpAddr>,
    ) -> Result<Plan> {
        let st = self.vips.get(vip).ok_or(LbError::UnknownVip(*vip))?;
        let invalid = |why: String| LbError::InvalidBackends { vip: *vip, why };
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
            if let Err(e) = weight::validate(b.weight) {
                return Err(invalid(format!("backend {}: {e}", b.addr)));
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
            cid: st.cid.clone(),
        };
        Ok(Plan {
            ops: o.ops,
            update,
            vip_id: None,
            commit: Commit::Delta(Box::new(Delta {
                vips: vec![(*vip, state)],
                backends: alloc,
                vip_slots: o.vip_slots,
                sid_slots: o.sid_slots,
                ..Delta::default()
            })),
        })
    }

    /// Plans removing one backend of a VIP (its flows move to the others,
    /// its server_id route goes away).
    pub fn remove_backend(&self, vip: &Vip, addr: IpAddr) -> Result<Plan> {
        let st = self.vips.get(vip).ok_or(LbError::UnknownVip(*vip))?;
        if !st.backends.iter().any(|b| b.addr == addr) {
            return Err(LbError::InvalidBackends {
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

    /// Plans adding one backend to a VIP, after its current backends (a
    /// change relative to the state at planning time, like
    /// [`remove_backend`](Self::remove_backend), so two controllers of one
    /// pinned instance can each add their own without listing the other's).
    pub fn add_backend(&self, vip: &Vip, backend: Backend) -> Result<Plan> {
        let st = self.vips.get(vip).ok_or(LbError::UnknownVip(*vip))?;
        if st.backends.iter().any(|b| b.addr == backend.addr) {
            return Err(LbError::InvalidBackends {
                vip: *vip,
                why: format!("{} is already a backend of this VIP", backend.addr),
            });
        }
        let mut next = st.backends.clone();
        next.push(backend);
        self.set_backends(vip, &next)
    }

    /// Plans changing one backend's Maglev weight (0: no new flows, still
    /// reachable by server_id and through the connection table).
    pub fn set_weight(&self, vip: &Vip, addr: IpAddr, weight: u32) -> Result<Plan> {
        let st = self.vips.get(vip).ok_or(LbError::UnknownVip(*vip))?;
        if !st.backends.iter().any(|b| b.addr == addr) {
            return Err(LbError::InvalidBackends {
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
    pub(crate) fn plan_backends(
        &self,
        o: &mut Overlay<'_>,
        alloc: &mut BackendAlloc,
        vip: &Vip,
        st: &VipState,
        backends: &[Backend],
        draining: &HashSet<IpAddr>,
    ) -> Result<(RingUpdate, Option<Arc<Maglev>>)> {
        let mut update = RingUpdate::default();
        let old: HashSet<IpAddr> = st.backends.iter().map(|b| b.addr).collect();
        let new: HashSet<IpAddr> = backends.iter().map(|b| b.addr).collect();
        // 1. New backends first.
        let mut ids = Vec::with_capacity(backends.len());
        for b in backends {
            if old.contains(&b.addr) {
                let id = self.backends.ids.get(&b.addr).map(|x| x.0).ok_or_else(|| {
                    LbError::Internal(format!(
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
            st.table.as_deref(),
            &old_ids,
            table.as_deref(),
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
}
