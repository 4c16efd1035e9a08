//! Reconciling the kernel tables with the control state rebuilt from the
//! backend lists, when a process reopens pinned state: a controller killed
//! half-way through a change (SIGKILL, OOM, a crash) can leave a backend
//! entry, a server_id route or a direct-mapped slot of a change it never
//! recorded in `backend_descs`. Left there, a stale route would send that
//! server_id's packets to whatever backend reuses the index later.
//!
//! Order, as for any change (see [`super::state`]): backend entries the
//! state needs first, then the rings, then server_id routes (upserts, the
//! slots inlining them, deletions), VIP slots, and backend entries nothing
//! references last.

use std::collections::HashMap;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::maps::{apply, c_addr, c_meta, c_vip_key};
use super::pinned::{ip_of, read_array};
use super::state::{MapOp, SidRoute, Slot, VipKey, VipMeta};
use super::{Result, XdpLb};
use crate::error::KernelError;
use crate::skel::read;
use crate::skel::xdp_lb::types::{
    flowpin_backend, flowpin_sid_key, flowpin_sid_slot, flowpin_vip_slot,
};
use flowpin_bpf_abi::lb;

/// Every (key, value) of a map, read in batches.
fn entries(map: &MapHandle, name: &'static str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    Ok(map
        .lookup_batch(4096, MapFlags::ANY, MapFlags::ANY)
        .map_err(KernelError::map(name, "lookup_batch"))?
        .collect())
}

fn key_u32(k: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(k.get(..4)?.try_into().ok()?))
}

fn sid_slot_of(v: &flowpin_sid_slot) -> Slot<SidRoute> {
    match v.state {
        lb::SLOT_ONE => Slot::One(SidRoute {
            vip_id: v.vip_id,
            server_id: v.server_id,
            backend: v.backend,
        }),
        lb::SLOT_SHARED => Slot::Shared,
        _ => Slot::Empty,
    }
}

fn vip_slot_of(v: &flowpin_vip_slot) -> Option<Slot<(VipKey, VipMeta)>> {
    Some(match v.state {
        lb::SLOT_ONE => Slot::One((
            VipKey {
                addr: ip_of(v.key.addr, v.key.family)?,
                port: u16::from_be(v.key.port),
                proto: v.key.proto,
            },
            VipMeta {
                vip_id: v.meta.vip_id,
                flags: v.meta.flags,
            },
        )),
        lb::SLOT_SHARED => Slot::Shared,
        _ => Slot::Empty,
    })
}

/// Two slot values are the same in the kernel's encoding.
fn same_vip_slot(a: &Slot<(VipKey, VipMeta)>, b: &Slot<(VipKey, VipMeta)>) -> bool {
    match (a, b) {
        (Slot::One((ka, ma)), Slot::One((kb, mb))) => {
            crate::skel::bytes_of(&c_vip_key(ka)) == crate::skel::bytes_of(&c_vip_key(kb))
                && crate::skel::bytes_of(&c_meta(ma)) == crate::skel::bytes_of(&c_meta(mb))
        }
        _ => a == b,
    }
}

impl XdpLb {
    /// Reconciles every kernel table with the rebuilt state (see the module docs).
    pub(super) fn repair(&mut self) -> Result<()> {
        let st = &self.state;
        // Backend entries the state needs.
        let want_be: HashMap<u32, std::net::IpAddr> = st.backend_entries().collect();
        let mut have_be = HashMap::new();
        let n = self.maps.backends.max_entries();
        let all = read_array(&self.maps.backends, "backends", 0, n)?;
        let size = std::mem::size_of::<flowpin_backend>();
        for (id, v) in (0..n).zip(all.chunks_exact(size)) {
            let Some(b) = read::<flowpin_backend>(v) else {
                continue;
            };
            if b.family != 0 {
                have_be.insert(id, (ip_of(b.addr, b.family), b));
            }
        }
        let mut first = Vec::new();
        let mut last = Vec::new();
        for (&id, &addr) in &want_be {
            let ok = have_be.get(&id).is_some_and(|(a, b)| {
                *a == Some(addr) && b.addr == c_addr(addr).0 && b.family == c_addr(addr).1
            });
            if !ok {
                first.push(MapOp::Backend {
                    id,
                    addr: Some(addr),
                    prev: have_be.get(&id).and_then(|x| x.0),
                });
            }
        }
        for (&id, (addr, _)) in &have_be {
            if !want_be.contains_key(&id) {
                last.push(MapOp::Backend {
                    id,
                    addr: None,
                    prev: *addr,
                });
            }
        }
        // server_id routes and their slots.
        let want_sid: HashMap<(u32, u32), u32> = st
            .sid_routes()
            .map(|r| ((r.vip_id, r.server_id), r.backend))
            .collect();
        let mut have_sid = HashMap::new();
        for (k, v) in entries(&self.maps.server_ids, "server_ids")? {
            if let (Some(k), Some(b)) = (read::<flowpin_sid_key>(&k), key_u32(&v)) {
                have_sid.insert((k.vip_id, k.server_id), b);
            }
        }
        let mut routes = Vec::new();
        for (&(vip_id, server_id), &b) in &want_sid {
            if have_sid.get(&(vip_id, server_id)) != Some(&b) {
                routes.push(MapOp::SidRoute {
                    vip_id,
                    server_id,
                    backend: Some(b),
                    prev: have_sid.get(&(vip_id, server_id)).copied(),
                });
            }
        }
        // The slots that can disagree: those the state inlines or shares,
        // and those of routes the kernel holds (the planner never leaves a
        // slot inlining a route that is not in `server_ids`). Reading only
        // those keeps a reopen fast (the table has 65,536 slots).
        let mut slots: Vec<u32> = st.sid_table_slots().collect();
        slots.extend(have_sid.keys().map(|&(v, sid)| lb::sid_slot(v, sid)));
        slots.sort_unstable();
        slots.dedup();
        for slot in slots {
            let raw = self
                .maps
                .sid_table
                .lookup(&slot.to_ne_bytes(), MapFlags::ANY)
                .map_err(KernelError::map("sid_table", "lookup"))?
                .unwrap_or_default();
            let Some(v) = read::<flowpin_sid_slot>(&raw) else {
                continue;
            };
            let have = sid_slot_of(&v);
            let want = st.sid_slot(slot);
            if have != want {
                routes.push(MapOp::SidSlot {
                    slot,
                    value: want,
                    prev: have,
                });
            }
        }
        for (&(vip_id, server_id), &b) in &have_sid {
            if !want_sid.contains_key(&(vip_id, server_id)) {
                routes.push(MapOp::SidRoute {
                    vip_id,
                    server_id,
                    backend: None,
                    prev: Some(b),
                });
            }
        }
        // VIP slots (the `vips` entries are what the state was rebuilt from).
        let mut vips = Vec::new();
        let n = self.maps.vip_table.max_entries();
        let all = read_array(&self.maps.vip_table, "vip_table", 0, n)?;
        let size = std::mem::size_of::<flowpin_vip_slot>();
        for (slot, v) in (0..n).zip(all.chunks_exact(size)) {
            let Some(v) = read::<flowpin_vip_slot>(v) else {
                continue;
            };
            if v.state == lb::SLOT_EMPTY && !st.vip_slot_used(slot) {
                continue;
            }
            let have = vip_slot_of(&v).unwrap_or(Slot::Shared);
            let want = st.vip_slot(slot);
            if !same_vip_slot(&have, &want) {
                vips.push(MapOp::VipSlot {
                    slot,
                    value: want,
                    prev: have,
                });
            }
        }
        for &(vip_id, pos, d) in st.orphan_descs() {
            last.push(MapOp::BackendDesc {
                vip_id,
                pos,
                value: None,
                prev: Some(d),
            });
        }
        let n = first.len() + routes.len() + vips.len() + last.len();
        apply(&mut self.maps, &first)?;
        self.repair_rings()?;
        apply(&mut self.maps, &routes)?;
        apply(&mut self.maps, &vips)?;
        apply(&mut self.maps, &last)?;
        self.repaired_entries = n as u32;
        self.state.clear_orphan_descs();
        Ok(())
    }
}
