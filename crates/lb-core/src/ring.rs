//! A VIP's Maglev ring: built from its backends, and the slot writes that
//! take one ring to another ([`Maglev::diff`]).

use std::sync::Arc;

use flowpin_maglev::Maglev;

use crate::{weight, Backend, LbError, RingWrite};

/// The Maglev table of `backends` (`None` if none takes new flows): keyed
/// by the address as text, so every load balancer builds the same ring.
pub(crate) fn build_table(backends: &[Backend], m: u32) -> Result<Option<Arc<Maglev>>, LbError> {
    if !backends.iter().any(|b| weight::takes_new_flows(b.weight)) {
        return Ok(None);
    }
    let keys: Vec<(String, u32)> = backends
        .iter()
        .map(|b| (b.addr.to_string(), b.weight))
        .collect();
    Ok(Some(Arc::new(Maglev::build_weighted(&keys, m)?)))
}

/// The ring slots that change from `old` (indices into `old_ids`) to `new`
/// (indices into `new_ids`). Both tables key backends by address, and an
/// address keeps its global index while it is a backend, so
/// [`Maglev::diff`]'s changed slots are exactly the slots whose index changes.
pub(crate) fn ring_writes(
    old: Option<&Maglev>,
    old_ids: &[u32],
    new: Option<&Maglev>,
    new_ids: &[u32],
    m: u32,
) -> Result<Vec<RingWrite>, LbError> {
    let at = |ids: &[u32], i: u32| ids.get(i as usize).copied().unwrap_or(0);
    Ok(match (old, new) {
        (None, None) => Vec::new(),
        (Some(o), Some(n)) => Maglev::diff(o, n)?
            .changes
            .iter()
            .map(|c| RingWrite {
                slot: c.slot,
                backend: at(new_ids, c.new),
                prev: at(old_ids, c.old),
            })
            .collect(),
        (Some(o), None) => (0..m)
            .zip(o.ring())
            .map(|(slot, &i)| RingWrite {
                slot,
                backend: 0,
                prev: at(old_ids, i),
            })
            .collect(),
        (None, Some(n)) => (0..m)
            .zip(n.ring())
            .map(|(slot, &i)| RingWrite {
                slot,
                backend: at(new_ids, i),
                prev: 0,
            })
            .collect(),
    })
}
