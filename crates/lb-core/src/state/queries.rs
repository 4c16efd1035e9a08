//! Read-only views of [`LbState`]: the VIPs, their backends and ids, the
//! ring and the server_id routes as the kernel tables hold them, and the
//! entries of every table, for an applier that compares them with the
//! kernel's (a reopening process repairing what a crashed one left).

use std::collections::HashMap;
use std::net::IpAddr;

use super::LbState;
use crate::{Backend, BackendDesc, SidRoute, Slot, Vip, VipCid, VipFlags, VipKey, VipMeta};

impl LbState {
    /// The configured VIPs.
    pub fn vips(&self) -> impl Iterator<Item = &Vip> + '_ {
        self.vips.keys()
    }

    /// The backends of a VIP as last set.
    pub fn backends(&self, vip: &Vip) -> Option<&[Backend]> {
        self.vips.get(vip).map(|s| s.backends.as_slice())
    }

    /// The id of a configured VIP.
    pub fn vip_id(&self, vip: &Vip) -> Option<u32> {
        self.vips.get(vip).map(|s| s.id)
    }

    /// The flags of a configured VIP.
    pub fn vip_flags(&self, vip: &Vip) -> Option<VipFlags> {
        self.vips.get(vip).map(|s| s.flags)
    }

    /// The connection-ID layout a configured VIP declared.
    pub fn vip_cid(&self, vip: &Vip) -> Option<&VipCid> {
        self.vips.get(vip).map(|s| &s.cid)
    }

    /// The global backend index of an address in use.
    pub fn backend_index(&self, addr: IpAddr) -> Option<u32> {
        self.backends.ids.get(&addr).map(|x| x.0)
    }

    /// Addresses with an ICMP echo entry.
    pub fn echo_addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.echo_refs.keys().copied()
    }

    /// The backend address of each ring slot of a VIP (empty when it has
    /// no backend with a weight).
    pub fn ring_addrs(&self, vip: &Vip) -> Vec<Option<IpAddr>> {
        let Some(st) = self.vips.get(vip) else {
            return Vec::new();
        };
        match &st.table {
            None => Vec::new(),
            Some(t) => t
                .ring()
                .iter()
                .map(|&i| st.backends.get(i as usize).map(|b| b.addr))
                .collect(),
        }
    }

    /// server_id → backend address routes of a VIP.
    pub fn server_id_addrs(&self, vip: &Vip) -> HashMap<u32, IpAddr> {
        let Some(st) = self.vips.get(vip) else {
            return HashMap::new();
        };
        st.backends
            .iter()
            .filter_map(|b| Some((b.server_id?.get(), b.addr)))
            .collect()
    }

    /// Every global backend index in use and its address (what the
    /// `backends` map holds; other indices are free).
    pub fn backend_entries(&self) -> impl Iterator<Item = (u32, IpAddr)> + '_ {
        self.backends.ids.iter().map(|(a, (id, _))| (*id, *a))
    }

    /// Every server_id route of every VIP (what the `server_ids` map holds).
    pub fn sid_routes(&self) -> impl Iterator<Item = SidRoute> + '_ {
        self.vips.values().flat_map(|s| {
            s.sids.iter().map(move |(&server_id, &backend)| SidRoute {
                vip_id: s.id,
                server_id,
                backend,
            })
        })
    }

    /// The `sid_table` slots some route hashes to (every other slot is
    /// [`Slot::Empty`]).
    pub fn sid_table_slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.sid_slots.keys().copied()
    }

    /// What `sid_table[slot]` holds.
    pub fn sid_slot(&self, slot: u32) -> Slot<SidRoute> {
        Slot::of(self.sid_slots.get(&slot).map_or(&[][..], Vec::as_slice))
    }

    /// Whether some `vips` entry hashes to `vip_table[slot]`.
    pub fn vip_slot_used(&self, slot: u32) -> bool {
        self.vip_slots.contains_key(&slot)
    }

    /// What `vip_table[slot]` holds.
    pub fn vip_slot(&self, slot: u32) -> Slot<(VipKey, VipMeta)> {
        Slot::of(self.vip_slots.get(&slot).map_or(&[][..], Vec::as_slice))
    }

    /// `backend_descs` entries (VIP id, position, descriptor) that
    /// [`rebuild`](Self::rebuild) found for VIPs that are not configured (a
    /// `remove_vip` cut short): nothing uses them; the reopening process
    /// deletes them, then calls [`clear_orphan_descs`](Self::clear_orphan_descs).
    pub fn orphan_descs(&self) -> &[(u32, u32, BackendDesc)] {
        &self.orphan_descs
    }

    /// Forgets the orphan descriptors once the kernel deleted them.
    pub fn clear_orphan_descs(&mut self) {
        self.orphan_descs.clear();
    }
}
