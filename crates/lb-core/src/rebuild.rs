//! Rebuilding [`LbState`] from what the pinned maps hold (sans-IO): the
//! `vips` entries and the `backend_descs` records are enough; the ring,
//! the server_id routes and the direct-mapped slots are derived from them
//! exactly as the planner derives them, so the next change a reopening
//! process plans is the one the process that pinned would have planned.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::backend_ids::BackendAlloc;
use crate::ring::build_table;
use crate::state::{ring_backends, VipState};
use crate::{
    Backend, BackendDesc, CidEntry, LbConfig, LbError, LbState, Proto, SidRoute, Vip, VipCid,
    VipFlags, VipKey, VipMeta,
};
use flowpin_bpf_abi::lb;
use flowpin_tcp_opt::ServerId;

/// The contents of the pinned maps a control state is rebuilt from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinnedContents {
    /// Every `vips` entry (VIPs and the ICMP entries of their addresses).
    pub vips: Vec<(VipKey, VipMeta)>,
    /// Every `backend_descs` entry: (VIP id, position, descriptor).
    pub descs: Vec<(u32, u32, BackendDesc)>,
    /// Every non-zero `cid_cfgs` entry: (VIP id, slot, entry).
    pub cid: Vec<(u32, u8, CidEntry)>,
}

fn corrupt(why: String) -> LbError {
    LbError::PinnedStateCorrupt(why)
}

impl LbState {
    /// The control state whose tables are `contents` (for a program loaded
    /// with `config`). Fails if the contents contradict themselves (a
    /// gap in a backend list, one address with two indices). Descriptors of
    /// a VIP that is not configured (a `remove_vip` cut short) are kept
    /// aside in the state ([`orphan_descs`](Self::orphan_descs)), for the
    /// reopening process to delete.
    pub fn rebuild(config: &LbConfig, contents: &PinnedContents) -> Result<LbState, LbError> {
        let mut st = LbState::new(config);
        let mut by_id: HashMap<u32, (Vip, VipFlags)> = HashMap::new();
        for (key, meta) in &contents.vips {
            st.vip_slots
                .entry(key.slot())
                .or_default()
                .push((*key, *meta));
            if meta.vip_id == u32::MAX {
                continue; // an ICMP entry, derived from the VIPs below
            }
            let proto = Proto::from_number(key.proto)
                .ok_or_else(|| corrupt(format!("VIP {} has protocol {}", key.addr, key.proto)))?;
            if meta.vip_id >= config.max_vips {
                return Err(corrupt(format!(
                    "VIP id {} is not below max_vips {}",
                    meta.vip_id, config.max_vips
                )));
            }
            let vip = Vip::new(key.addr, key.port, proto);
            let flags = VipFlags::from_bits(meta.flags).ok_or_else(|| {
                corrupt(format!("VIP {vip} has unknown flag bits {:#x}", meta.flags))
            })?;
            if by_id.insert(meta.vip_id, (vip, flags)).is_some() {
                return Err(corrupt(format!("two VIPs have id {}", meta.vip_id)));
            }
        }
        let mut lists: HashMap<u32, BTreeMap<u32, BackendDesc>> = HashMap::new();
        for (vip_id, pos, d) in &contents.descs {
            if !by_id.contains_key(vip_id) {
                // Left by a `remove_vip` that stopped after the VIP became
                // unreachable: nothing uses it; `open_pinned` deletes it.
                st.orphan_descs.push((*vip_id, *pos, *d));
                continue;
            }
            lists.entry(*vip_id).or_default().insert(*pos, *d);
        }
        let mut cids: HashMap<u32, [Option<CidEntry>; 8]> = HashMap::new();
        for (vip_id, slot, e) in &contents.cid {
            if let Some(s) = cids.entry(*vip_id).or_default().get_mut(usize::from(*slot)) {
                *s = Some(*e);
            }
        }
        let mut alloc = BackendAlloc::default();
        for (&vip_id, &(vip, flags)) in &by_id {
            let list = lists.remove(&vip_id).unwrap_or_default();
            let mut backends = Vec::with_capacity(list.len());
            let mut draining = HashSet::new();
            let mut sids = HashMap::new();
            for (i, (pos, d)) in list.into_iter().enumerate() {
                if pos as usize != i {
                    return Err(corrupt(format!(
                        "VIP {vip}: backend list has a gap at position {i}"
                    )));
                }
                let server_id = match d.server_id {
                    Some(s) => Some(ServerId::new(s).ok_or_else(|| {
                        corrupt(format!("VIP {vip}: backend {} has server_id 0", d.addr))
                    })?),
                    None => None,
                };
                backends.push(Backend {
                    server_id,
                    ..Backend::new(d.addr).weight(d.weight)
                });
                if d.draining {
                    draining.insert(d.addr);
                }
                match alloc.ids.get_mut(&d.addr) {
                    Some((id, refs)) if *id == d.backend => *refs += 1,
                    Some((id, _)) => {
                        return Err(corrupt(format!(
                            "backend {} has index {} and {id}",
                            d.addr, d.backend
                        )))
                    }
                    None => {
                        if d.backend == 0 || d.backend >= config.max_backends {
                            return Err(corrupt(format!(
                                "backend {} has index {} (valid: 1..{})",
                                d.addr, d.backend, config.max_backends
                            )));
                        }
                        alloc.ids.insert(d.addr, (d.backend, 1));
                    }
                }
                if let Some(s) = d.server_id {
                    sids.insert(s, d.backend);
                    st.sid_slots
                        .entry(lb::sid_slot(vip_id, s))
                        .or_default()
                        .push(SidRoute {
                            vip_id,
                            server_id: s,
                            backend: d.backend,
                        });
                }
            }
            let table = build_table(&ring_backends(&backends, &draining), config.ring_size)?;
            if config.answer_icmp_echo {
                *st.echo_refs.entry(vip.addr).or_insert(0) += 1;
            }
            if flags.contains(VipFlags::PORT_AGNOSTIC) {
                st.port_agnostic += 1;
            }
            st.vips.insert(
                vip,
                VipState {
                    id: vip_id,
                    flags,
                    backends,
                    draining,
                    table,
                    sids,
                    cid: match cids.get(&vip_id) {
                        None => VipCid::Any,
                        Some(e) => VipCid::from_entries(e).ok_or_else(|| {
                            corrupt(format!("VIP {vip}: unknown connection-ID layout"))
                        })?,
                    },
                },
            );
        }
        let used: HashSet<u32> = alloc.ids.values().map(|x| x.0).collect();
        alloc.next = used.iter().max().map_or(1, |m| m + 1);
        alloc.free = (1..alloc.next)
            .filter(|i| !used.contains(i))
            .collect::<VecDeque<_>>();
        st.backends = alloc;
        st.free_vip_ids.retain(|id| !by_id.contains_key(id));
        Ok(st)
    }

    /// Every VIP id in use and the backend addresses of each, for checks.
    pub fn vip_ids(&self) -> impl Iterator<Item = (Vip, u32)> + '_ {
        self.vips.iter().map(|(v, s)| (*v, s.id))
    }

    /// The global backend index each ring slot of a VIP should hold (0:
    /// none), as the kernel's `ring` map should hold it; empty if the VIP
    /// is unknown.
    pub fn ring_indices(&self, vip: &Vip) -> Vec<u32> {
        let Some(st) = self.vips.get(vip) else {
            return Vec::new();
        };
        match &st.table {
            None => vec![0; self.ring_size as usize],
            Some(t) => t
                .ring()
                .iter()
                .map(|&i| {
                    st.backends
                        .get(i as usize)
                        .and_then(|b| self.backends.ids.get(&b.addr))
                        .map_or(0, |x| x.0)
                })
                .collect(),
        }
    }
}
