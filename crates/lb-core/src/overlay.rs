//! The slots a plan touches, as they will be once its operations are
//! written: the planner of [`LbState`] reads and edits this overlay, never
//! the committed state, and records each operation in order.

use std::collections::HashMap;

use crate::{LbState, MapOp, SidRoute, Slot, VipKey, VipMeta};
use flowpin_bpf_abi::lb;

/// Slot overlays: the slots a plan touches, as they will be.
pub(crate) struct Overlay<'a> {
    pub(crate) state: &'a LbState,
    pub(crate) vip_slots: HashMap<u32, Vec<(VipKey, VipMeta)>>,
    pub(crate) sid_slots: HashMap<u32, Vec<SidRoute>>,
    pub(crate) ops: Vec<MapOp>,
}

impl Overlay<'_> {
    pub(crate) fn vip_slot(&mut self, slot: u32) -> &mut Vec<(VipKey, VipMeta)> {
        let st = self.state;
        self.vip_slots
            .entry(slot)
            .or_insert_with(|| st.vip_slots.get(&slot).cloned().unwrap_or_default())
    }
    pub(crate) fn sid_slot(&mut self, slot: u32) -> &mut Vec<SidRoute> {
        let st = self.state;
        self.sid_slots
            .entry(slot)
            .or_insert_with(|| st.sid_slots.get(&slot).cloned().unwrap_or_default())
    }
    /// Adds (`meta: Some`) or removes a `vips` entry, hash map and slot in order.
    pub(crate) fn vip_entry(&mut self, key: VipKey, meta: Option<VipMeta>, prev: Option<VipMeta>) {
        let slot = key.slot();
        let before = Slot::of(self.vip_slot(slot));
        let entries = self.vip_slot(slot);
        entries.retain(|(k, _)| *k != key);
        if let Some(m) = meta {
            entries.push((key, m));
        }
        let after = Slot::of(entries);
        if meta.is_some() {
            self.ops.push(MapOp::Vip { key, meta, prev });
        }
        if after != before {
            self.ops.push(MapOp::VipSlot {
                slot,
                value: after,
                prev: before,
            });
        }
        if meta.is_none() {
            self.ops.push(MapOp::Vip { key, meta, prev });
        }
    }
    /// Changes the value of an existing `vips` entry. A slot inlining it is
    /// first made shared (the program then reads the hash entry), so no
    /// slot ever inlines a value the hash map does not hold.
    pub(crate) fn vip_update(&mut self, key: VipKey, meta: VipMeta, prev: VipMeta) {
        let slot = key.slot();
        let before = Slot::of(self.vip_slot(slot));
        let entries = self.vip_slot(slot);
        for e in entries.iter_mut().filter(|(k, _)| *k == key) {
            e.1 = meta;
        }
        let after = Slot::of(entries);
        let inlined = after != before;
        if inlined {
            self.ops.push(MapOp::VipSlot {
                slot,
                value: Slot::Shared,
                prev: before,
            });
        }
        self.ops.push(MapOp::Vip {
            key,
            meta: Some(meta),
            prev: Some(prev),
        });
        if inlined {
            self.ops.push(MapOp::VipSlot {
                slot,
                value: after,
                prev: Slot::Shared,
            });
        }
    }
    /// Sets or removes a server_id route, hash map and slot in order.
    pub(crate) fn sid_route(
        &mut self,
        vip_id: u32,
        server_id: u32,
        backend: Option<u32>,
        prev: Option<u32>,
    ) {
        let slot = lb::sid_slot(vip_id, server_id);
        let before = Slot::of(self.sid_slot(slot));
        let routes = self.sid_slot(slot);
        routes.retain(|r| (r.vip_id, r.server_id) != (vip_id, server_id));
        if let Some(b) = backend {
            routes.push(SidRoute {
                vip_id,
                server_id,
                backend: b,
            });
        }
        let after = Slot::of(routes);
        let route = MapOp::SidRoute {
            vip_id,
            server_id,
            backend,
            prev,
        };
        if backend.is_some() {
            self.ops.push(route.clone());
        }
        if after != before {
            self.ops.push(MapOp::SidSlot {
                slot,
                value: after,
                prev: before,
            });
        }
        if backend.is_none() {
            self.ops.push(route);
        }
    }
}

impl LbState {
    pub(crate) fn overlay(&self) -> Overlay<'_> {
        Overlay {
            state: self,
            vip_slots: HashMap::new(),
            sid_slots: HashMap::new(),
            ops: Vec::new(),
        }
    }
}
