//! A fake kernel for the tests: the maps of `xdp_lb` in memory, as a
//! [`MapWriter`] that checks the ordering rules of [`crate::state`] after
//! every write (undo writes of a rollback included) and can fail the write
//! with a given number; and the helpers the test modules share.
//!
//! # What the checker accepts between two writes
//!
//! [`FakeMaps::assert_consistent`] runs after every single write and holds
//! the maps to the rules a racing packet needs: no ring slot, server_id
//! route or direct-mapped slot points at a free backend, and no
//! direct-mapped slot inlines a `vips` / `server_ids` entry that does not
//! exist. One transient is accepted, and only between writes:
//!
//! - **a server_id moving to another backend.** The route is rewritten
//!   first (`server_ids[(vip, sid)]`: old backend → new), then the
//!   `sid_table` slot inlining it (rule 2: an entry before the slot that
//!   inlines it). In between, the slot still inlines the route with the
//!   *old* backend while `server_ids` holds the new one. Harmless: the old
//!   backend's entry still exists (rule 1 frees it last), so a packet that
//!   hits the slot goes where it went before the change, as it would had
//!   it arrived a moment earlier. The checker accepts a slot whose (VIP,
//!   server_id) route exists with another backend *if the inlined backend
//!   is live*; a slot inlining a route that is gone, or a backend that is
//!   free, still fails. Undoing the move in reverse order passes through
//!   the same state.
//!
//! [`FakeMaps::assert_settled`] runs once a whole plan is written (or
//! rolled back) and accepts no transient: every inlined slot equals its
//! entry.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use flowpin_maglev::Maglev;
use flowpin_tcp_opt::ServerId;

use crate::{
    apply, Backend, BackendDesc, LbConfig, LbError, LbState, MapOp, MapWriter, Plan, Proto,
    SidRoute, Slot, Vip, VipKey, VipMeta,
};

/// A write the fake kernel was told to fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Injected(pub(crate) usize);

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "map injected: update failed at write {} (ENOMEM)",
            self.0
        )
    }
}

impl std::error::Error for Injected {}

/// The maps as the program sees them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FakeMaps {
    pub(crate) backends: HashMap<u32, IpAddr>,
    pub(crate) ring: HashMap<(u32, u32), u32>,
    pub(crate) vips: HashMap<VipKey, VipMeta>,
    pub(crate) descs: HashMap<(u32, u32), BackendDesc>,
    pub(crate) vip_table: HashMap<u32, Slot<(VipKey, VipMeta)>>,
    pub(crate) server_ids: HashMap<(u32, u32), u32>,
    pub(crate) sid_table: HashMap<u32, Slot<SidRoute>>,
    pub(crate) port_agnostic: u32,
    pub(crate) cid: HashMap<(u32, u8), crate::CidEntry>,
    /// Writes performed (a failing one included).
    pub(crate) writes: usize,
    /// Fail the write with this number (0-based).
    pub(crate) fail_at: Option<usize>,
    /// Check the ordering rules after every write.
    pub(crate) check: bool,
}

impl FakeMaps {
    pub(crate) fn checked() -> FakeMaps {
        FakeMaps {
            check: true,
            ..FakeMaps::default()
        }
    }

    /// The ordering rules of `state`'s module docs, as they must hold
    /// after every single write (see the module docs for the one transient
    /// accepted here).
    pub(crate) fn assert_consistent(&self, after: &MapOp) {
        for (&(vip, slot), &b) in &self.ring {
            assert!(
                b == 0 || self.backends.contains_key(&b),
                "after {after:?}: ring slot {slot} of VIP {vip} points at free backend {b}"
            );
        }
        for (&(vip, sid), &b) in &self.server_ids {
            assert!(
                self.backends.contains_key(&b),
                "after {after:?}: route {vip}/{sid} points at free backend {b}"
            );
        }
        for (slot, s) in &self.sid_table {
            if let Slot::One(r) = s {
                let route = self.server_ids.get(&(r.vip_id, r.server_id));
                assert!(
                    route.is_some(),
                    "after {after:?}: sid_table slot {slot} inlines route {}/{} not in server_ids",
                    r.vip_id,
                    r.server_id
                );
                // A server_id moving to another backend: the route is
                // rewritten before the slot; the slot's (old) backend must
                // still be live.
                assert!(
                    route == Some(&r.backend) || self.backends.contains_key(&r.backend),
                    "after {after:?}: sid_table slot {slot} inlines route {}/{} to free backend {} \
                     (server_ids says {route:?})",
                    r.vip_id,
                    r.server_id,
                    r.backend
                );
            }
        }
        for (slot, s) in &self.vip_table {
            if let Slot::One((k, m)) = s {
                assert_eq!(
                    self.vips.get(k),
                    Some(m),
                    "after {after:?}: vip_table slot {slot} inlines a VIP not in vips"
                );
            }
        }
    }
}

impl FakeMaps {
    /// The rules once a plan is fully written or rolled back: those of
    /// [`assert_consistent`](Self::assert_consistent), and every inlined
    /// `sid_table` slot equal to its route (no transient left).
    pub(crate) fn assert_settled(&self, what: &str) {
        for (slot, s) in &self.sid_table {
            if let Slot::One(r) = s {
                assert_eq!(
                    self.server_ids.get(&(r.vip_id, r.server_id)),
                    Some(&r.backend),
                    "{what}: sid_table slot {slot} inlines a route server_ids does not hold"
                );
            }
        }
    }
}

impl MapWriter for FakeMaps {
    type Error = Injected;

    fn write(&mut self, op: &MapOp) -> Result<(), Injected> {
        let n = self.writes;
        self.writes += 1;
        if self.fail_at == Some(n) {
            return Err(Injected(n));
        }
        match op {
            MapOp::ResetVipStats { .. }
            | MapOp::ResetBackendStats { .. }
            | MapOp::SidRetired { .. } => {}
            MapOp::Backend { id, addr, .. } => match addr {
                Some(a) => {
                    self.backends.insert(*id, *a);
                }
                None => {
                    self.backends.remove(id);
                }
            },
            MapOp::Ring { vip_id, writes } => {
                for w in writes {
                    self.ring.insert((*vip_id, w.slot), w.backend);
                }
            }
            MapOp::Vip { key, meta, .. } => match meta {
                Some(m) => {
                    self.vips.insert(*key, *m);
                }
                None => {
                    self.vips.remove(key);
                }
            },
            MapOp::VipSlot { slot, value, .. } => {
                self.vip_table.insert(*slot, *value);
            }
            MapOp::SidRoute {
                vip_id,
                server_id,
                backend,
                ..
            } => match backend {
                Some(b) => {
                    self.server_ids.insert((*vip_id, *server_id), *b);
                }
                None => {
                    self.server_ids.remove(&(*vip_id, *server_id));
                }
            },
            MapOp::SidSlot { slot, value, .. } => {
                self.sid_table.insert(*slot, *value);
            }
            MapOp::BackendDesc {
                vip_id, pos, value, ..
            } => match value {
                Some(d) => {
                    self.descs.insert((*vip_id, *pos), *d);
                }
                None => {
                    self.descs.remove(&(*vip_id, *pos));
                }
            },
            MapOp::CidConfig {
                vip_id,
                slot,
                value,
                ..
            } => match value {
                Some(e) => {
                    self.cid.insert((*vip_id, *slot), *e);
                }
                None => {
                    self.cid.remove(&(*vip_id, *slot));
                }
            },
            MapOp::PortAgnosticVips { count, .. } => self.port_agnostic = *count,
        }
        if self.check {
            self.assert_consistent(op);
        }
        Ok(())
    }
}

/// Map contents only (not the bookkeeping), with unset ring slots and
/// empty slots equal to absent ones.
#[derive(Debug, PartialEq)]
pub(crate) struct Contents {
    backends: HashMap<u32, IpAddr>,
    ring: HashMap<(u32, u32), u32>,
    vips: HashMap<VipKey, VipMeta>,
    vip_table: HashMap<u32, Slot<(VipKey, VipMeta)>>,
    server_ids: HashMap<(u32, u32), u32>,
    sid_table: HashMap<u32, Slot<SidRoute>>,
    descs: HashMap<(u32, u32), BackendDesc>,
    port_agnostic: u32,
    cid: HashMap<(u32, u8), crate::CidEntry>,
}

pub(crate) fn contents(m: &FakeMaps) -> Contents {
    fn set<K: Copy + Eq + std::hash::Hash, V: Copy>(
        m: &HashMap<K, V>,
        keep: impl Fn(&V) -> bool,
    ) -> HashMap<K, V> {
        m.iter()
            .filter(|(_, v)| keep(v))
            .map(|(k, v)| (*k, *v))
            .collect()
    }
    Contents {
        backends: m.backends.clone(),
        ring: set(&m.ring, |&b| b != 0),
        vips: m.vips.clone(),
        vip_table: set(&m.vip_table, |s| *s != Slot::Empty),
        server_ids: m.server_ids.clone(),
        sid_table: set(&m.sid_table, |s| *s != Slot::Empty),
        descs: m.descs.clone(),
        port_agnostic: m.port_agnostic,
        cid: m.cid.clone(),
    }
}

pub(crate) const M: u32 = 251;

pub(crate) type Change = dyn Fn(&LbState) -> Result<Plan, LbError>;

pub(crate) fn config() -> LbConfig {
    LbConfig::default().ring_size(M)
}

pub(crate) fn vip() -> Vip {
    Vip::new("192.0.2.10".parse().unwrap(), 80, Proto::Tcp)
}

/// Backend `10.0.0.i` with weight `w` and server_id `sid` (0: none).
pub(crate) fn be(i: u8, w: u32, sid: u32) -> Backend {
    let b = Backend::new(format!("10.0.0.{i}").parse().unwrap()).weight(w);
    match ServerId::new(sid) {
        Some(s) => b.server_id(s),
        None => b.without_server_id(),
    }
}

/// Plans, applies into `maps` and commits.
pub(crate) fn run(maps: &mut FakeMaps, plan: Result<Plan, LbError>) -> Plan {
    let plan = plan.expect("plan");
    apply(maps, &plan.ops).expect("apply");
    if maps.check {
        maps.assert_settled("after the whole plan");
    }
    plan
}

pub(crate) fn step(
    st: &mut LbState,
    maps: &mut FakeMaps,
    f: impl Fn(&LbState) -> Result<Plan, LbError>,
) {
    let plan = run(maps, f(st));
    st.commit(plan);
}

/// The ring the maps hold for a VIP, as addresses.
pub(crate) fn ring_of(maps: &FakeMaps, vip_id: u32) -> Vec<Option<IpAddr>> {
    (0..M)
        .map(|s| {
            let b = maps.ring.get(&(vip_id, s)).copied().unwrap_or(0);
            maps.backends.get(&b).copied()
        })
        .collect()
}

pub(crate) fn expected_ring(backends: &[Backend]) -> Vec<Option<IpAddr>> {
    let keys: Vec<(String, u32)> = backends
        .iter()
        .map(|b| (b.addr.to_string(), b.weight))
        .collect();
    let t = Maglev::build_weighted(&keys, M).unwrap();
    t.ring()
        .iter()
        .map(|&i| Some(backends[i as usize].addr))
        .collect()
}
