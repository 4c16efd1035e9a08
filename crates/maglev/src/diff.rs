//! The difference between two tables: changed slots and disruption metrics.

use crate::{Error, Maglev};
use std::collections::HashMap;

/// One slot whose backend changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotChange {
    /// The slot (`flow_hash % table_size`).
    pub slot: u32,
    /// The backend that owned the slot in the old table (index into the old input).
    pub old: u32,
    /// The backend that owns the slot in the new table (index into the new input).
    pub new: u32,
}

/// Disruption and balance figures of a [`Diff`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiffMetrics {
    /// Number of slots `M` of both tables.
    pub table_size: u32,
    /// Number of slots whose backend changed.
    pub changed: u32,
    /// `changed / M`: the share of all flows that move to another backend.
    pub disruption: f64,
    /// Slots whose old backend is still in the new table with a non-zero weight.
    pub alive_slots: u32,
    /// Changed slots among `alive_slots`: flows that move although their
    /// backend is still there (the avoidable part of the disruption).
    pub moved_alive: u32,
    /// `moved_alive / alive_slots`: the share of flows whose backend did not
    /// go away that move anyway (0 when `alive_slots` is 0).
    pub alive_disruption: f64,
    /// [`Maglev::imbalance`] of the old table.
    pub imbalance_old: f64,
    /// [`Maglev::imbalance`] of the new table.
    pub imbalance_new: f64,
}

/// What changed between two tables of the same size: see [`Maglev::diff`].
#[derive(Debug, Clone, PartialEq)]
pub struct Diff {
    /// The changed slots, in ascending slot order.
    pub changes: Vec<SlotChange>,
    /// Disruption and balance figures.
    pub metrics: DiffMetrics,
}

impl Maglev {
    /// The slots whose backend changed from `old` to `new`, and how much that disrupts.
    ///
    /// Backends are compared by **key**, not by index: the two tables index
    /// different input slices, so a backend is "the same" when its key is the
    /// same. A slot is changed when the key of its backend differs. This is
    /// what a BPF map writer needs when the map holds a stable per-backend id
    /// (derived from the key): write `id(new)` at each changed slot, and the
    /// map equals the new table (see [`Diff::apply`]). If your map holds raw
    /// input indices and a surviving backend's index changed, compare
    /// [`ring`](Maglev::ring)s directly instead.
    ///
    /// Errors with [`Error::TableSizeMismatch`] if the sizes differ.
    ///
    /// ```
    /// use flowpin_maglev::Maglev;
    /// let keys: Vec<String> = (0..100).map(|i| format!("backend-{i}")).collect();
    /// let old = Maglev::build(&keys, 65537)?;
    /// let new = Maglev::build(&keys[1..], 65537)?; // backend-0 goes away
    /// let d = Maglev::diff(&old, &new)?;
    /// assert!(d.metrics.disruption < 0.02);
    /// # Ok::<(), flowpin_maglev::Error>(())
    /// ```
    pub fn diff(old: &Maglev, new: &Maglev) -> Result<Diff, Error> {
        if old.table_size() != new.table_size() {
            return Err(Error::TableSizeMismatch {
                old: old.table_size(),
                new: new.table_size(),
            });
        }
        const GONE: u32 = u32::MAX;
        let by_key: HashMap<&[u8], u32> = new.keys().zip(0u32..).collect();
        // Old index -> new index of the same key (GONE if the key is not in new).
        let to_new: Vec<u32> = old
            .keys()
            .map(|k| by_key.get(k).copied().unwrap_or(GONE))
            .collect();
        let alive: Vec<bool> = to_new
            .iter()
            .map(|&j| j != GONE && new.weights()[j as usize] > 0)
            .collect();

        let mut changes = Vec::new();
        let (mut alive_slots, mut moved_alive) = (0u32, 0u32);
        for (slot, (&o, &n)) in (0u32..).zip(old.ring().iter().zip(new.ring())) {
            let survived = alive[o as usize];
            alive_slots += u32::from(survived);
            if to_new[o as usize] != n {
                moved_alive += u32::from(survived);
                changes.push(SlotChange {
                    slot,
                    old: o,
                    new: n,
                });
            }
        }
        let m = f64::from(old.table_size());
        let changed = changes.len() as u32;
        Ok(Diff {
            metrics: DiffMetrics {
                table_size: old.table_size(),
                changed,
                disruption: f64::from(changed) / m,
                alive_slots,
                moved_alive,
                alive_disruption: if alive_slots == 0 {
                    0.0
                } else {
                    f64::from(moved_alive) / f64::from(alive_slots)
                },
                imbalance_old: old.imbalance(),
                imbalance_new: new.imbalance(),
            },
            changes,
        })
    }
}

impl Diff {
    /// Applies the diff to a ring of per-slot values that mirrors the old
    /// table (e.g. a BPF map's contents): writes `value_of(change.new)` at
    /// every changed slot. If `ring[s]` held a value for the *key* of
    /// `old.ring()[s]`, it afterwards holds the value for the key of
    /// `new.ring()[s]` in every slot.
    ///
    /// Errors with [`Error::TableSizeMismatch`] if `ring` is not `table_size` long.
    pub fn apply<T>(
        &self,
        ring: &mut [T],
        mut value_of: impl FnMut(u32) -> T,
    ) -> Result<(), Error> {
        if ring.len() != self.metrics.table_size as usize {
            return Err(Error::TableSizeMismatch {
                old: u32::try_from(ring.len()).unwrap_or(u32::MAX),
                new: self.metrics.table_size,
            });
        }
        for c in &self.changes {
            ring[c.slot as usize] = value_of(c.new);
        }
        Ok(())
    }
}
