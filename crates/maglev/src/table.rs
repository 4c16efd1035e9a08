//! The Maglev table: build, lookup, accessors.

use crate::fastmod::FastMod;
use crate::fill::{fill, quotas, Entry};
use crate::hash::key_hash;
use crate::prime::{is_prime, next_prime, prev_prime};
use crate::Error;
use std::fmt;

/// A Maglev lookup table: `table_size` slots (a prime `M`), each naming one
/// backend by its index in the input slice.
///
/// Memory: the ring (`4 M` bytes) plus `O(N)` for the keys and weights. The
/// `N × M` permutation is never stored; each backend's permutation is walked
/// from its `(offset, skip)` pair, and the fill marks taken slots in an
/// `M`-bit bitmap that stays in L1 cache for `M = 65537`.
#[derive(Clone, PartialEq, Eq)]
pub struct Maglev {
    ring: Vec<u32>,
    reducer: FastMod,
    key_bytes: Vec<u8>,
    key_ends: Vec<usize>,
    weights: Vec<u32>,
    slots: Vec<u32>,
}

impl Maglev {
    /// Builds a table in which every backend has the same weight.
    ///
    /// `keys` identify the backends (an address, a host name, a server id:
    /// anything as bytes); they must be unique. `table_size` must be a prime
    /// of at least `keys.len()` (65537 is the usual choice; see
    /// [`next_prime`](crate::next_prime)). Every backend gets
    /// `floor(M / N)` or `ceil(M / N)` slots.
    ///
    /// ```
    /// use flowpin_maglev::Maglev;
    /// let keys = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
    /// let t = Maglev::build(&keys, 65537)?;
    /// let backend: u32 = t.lookup(0x9e37_79b9_7f4a_7c15);
    /// assert!(backend < 3);
    /// # Ok::<(), flowpin_maglev::Error>(())
    /// ```
    pub fn build<K: AsRef<[u8]>>(keys: &[K], table_size: u32) -> Result<Self, Error> {
        Self::build_from(keys.len(), |i| (keys[i].as_ref(), 1), table_size)
    }

    /// Builds a table from `(key, weight)` pairs.
    ///
    /// Each backend `i` owns exactly its Hamilton (largest-remainder) quota
    /// of the `M` slots: `floor(M * w_i / W)` plus one for the `M - sum`
    /// backends with the largest remainders (ties go to the earlier backend
    /// in fill order). Weight 0 owns no slot. With `M = 65537` and weights
    /// `i % 10 + 1` the worst relative error of a backend's share against
    /// `w_i / W` is 0.15 % at `N = 100` and 0.71 % at `N = 1000` (measured
    /// by this crate's tests; every backend is less than one slot from its
    /// exact share `M w_i / W`).
    ///
    /// ```
    /// use flowpin_maglev::Maglev;
    /// let t = Maglev::build_weighted(&[("big", 3u32), ("small", 1)], 65537)?;
    /// assert_eq!(t.slot_counts(), &[49153, 16384]);
    /// # Ok::<(), flowpin_maglev::Error>(())
    /// ```
    pub fn build_weighted<K: AsRef<[u8]>>(
        backends: &[(K, u32)],
        table_size: u32,
    ) -> Result<Self, Error> {
        Self::build_from(
            backends.len(),
            |i| (backends[i].0.as_ref(), backends[i].1),
            table_size,
        )
    }

    /// Builds many equal-weight tables (e.g. one per VIP) on all available
    /// cores. Results are in the order of `jobs`; each job is
    /// `(keys, table_size)` as for [`build`](Self::build).
    pub fn build_many<K: AsRef<[u8]> + Sync>(jobs: &[(&[K], u32)]) -> Vec<Result<Self, Error>> {
        par_map(jobs, |(keys, m)| Self::build(keys, *m))
    }

    /// Builds many weighted tables on all available cores, like
    /// [`build_many`](Self::build_many) for [`build_weighted`](Self::build_weighted).
    pub fn build_many_weighted<K: AsRef<[u8]> + Sync>(
        jobs: &[(&[(K, u32)], u32)],
    ) -> Vec<Result<Self, Error>> {
        par_map(jobs, |(backends, m)| Self::build_weighted(backends, *m))
    }

    fn build_from<'a>(
        n: usize,
        backend: impl Fn(usize) -> (&'a [u8], u32),
        table_size: u32,
    ) -> Result<Self, Error> {
        check_table_size(table_size, n)?;
        let m = table_size;

        // Copy the keys (input order) and hash them.
        let total: usize = (0..n).map(|i| backend(i).0.len()).sum();
        let mut key_bytes = Vec::with_capacity(total);
        let mut key_ends = Vec::with_capacity(n);
        let mut weights = Vec::with_capacity(n);
        let mut entries = Vec::with_capacity(n);
        for i in 0..n {
            let (key, weight) = backend(i);
            key_bytes.extend_from_slice(key);
            key_ends.push(key_bytes.len());
            weights.push(weight);
            let (h1, h2) = key_hash(key);
            // n <= m <= u32::MAX, checked above.
            entries.push(Entry {
                h1,
                h2,
                input: i as u32,
                weight,
            });
        }
        let key_of = |input: u32| -> &[u8] {
            let i = input as usize;
            let start = if i == 0 { 0 } else { key_ends[i - 1] };
            &key_bytes[start..key_ends[i]]
        };

        // Fill order: ascending (h1, h2, key bytes). Depends only on the key set.
        entries.sort_unstable_by(|a, b| {
            (a.h1, a.h2)
                .cmp(&(b.h1, b.h2))
                .then_with(|| key_of(a.input).cmp(key_of(b.input)))
        });
        for pair in entries.windows(2) {
            if key_of(pair[0].input) == key_of(pair[1].input) {
                let (a, b) = (pair[0].input as usize, pair[1].input as usize);
                return Err(Error::DuplicateKey {
                    first: a.min(b),
                    second: a.max(b),
                });
            }
        }

        let quotas = quotas(&entries, m)?;
        let ring = fill(&entries, &quotas, m)?;

        let mut slots = vec![0u32; n];
        for (e, q) in entries.iter().zip(&quotas) {
            slots[e.input as usize] = *q;
        }
        Ok(Self {
            ring,
            reducer: FastMod::new(m),
            key_bytes,
            key_ends,
            weights,
            slots,
        })
    }

    /// The backend (index into the input slice) that owns `flow_hash`:
    /// `ring()[flow_hash % table_size()]`.
    ///
    /// The modulo is exact (the same slot a BPF program computes with
    /// `hash % M`) but costs no division: it uses a precomputed
    /// multiplicative inverse (Granlund–Montgomery). A 32-bit flow hash
    /// (e.g. jhash in BPF) gives the same slot passed as `u64::from(h)`.
    #[inline]
    #[must_use]
    pub fn lookup(&self, flow_hash: u64) -> u32 {
        self.ring[self.reducer.reduce(flow_hash) as usize]
    }

    /// The slot of `flow_hash`: exactly `flow_hash % table_size()`, computed without a division.
    #[inline]
    #[must_use]
    pub fn slot(&self, flow_hash: u64) -> u32 {
        self.reducer.reduce(flow_hash) as u32
    }

    /// Number of slots `M` (a prime).
    #[inline]
    #[must_use]
    pub fn table_size(&self) -> u32 {
        self.ring.len() as u32
    }

    /// The raw ring: slot → backend index (into the input slice). Its length
    /// is [`table_size`](Self::table_size). This is what a BPF array map of
    /// `M` entries holds.
    #[inline]
    #[must_use]
    pub fn ring(&self) -> &[u32] {
        &self.ring
    }

    /// Number of backends (including weight-0 ones).
    #[must_use]
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Always `false`: a table has at least one backend.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// The key of backend `index`, or `None` if out of range.
    #[must_use]
    pub fn key(&self, index: u32) -> Option<&[u8]> {
        let i = index as usize;
        let end = *self.key_ends.get(i)?;
        let start = if i == 0 { 0 } else { self.key_ends[i - 1] };
        self.key_bytes.get(start..end)
    }

    /// The keys of all backends, in input order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.key_ends.len()).map(move |i| {
            let start = if i == 0 { 0 } else { self.key_ends[i - 1] };
            &self.key_bytes[start..self.key_ends[i]]
        })
    }

    /// The index of the backend with `key`, if any (linear scan).
    #[must_use]
    pub fn index_of(&self, key: &[u8]) -> Option<u32> {
        self.keys().position(|k| k == key).map(|i| i as u32)
    }

    /// The weights, in input order (all 1 for [`build`](Self::build)).
    #[must_use]
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// How many slots each backend owns, in input order.
    #[must_use]
    pub fn slot_counts(&self) -> &[u32] {
        &self.slots
    }

    /// Imbalance: the most slots any backend owns divided by the mean number
    /// of slots per backend with a non-zero weight (1.0 is perfect for equal
    /// weights).
    #[must_use]
    pub fn imbalance(&self) -> f64 {
        let live = self.weights.iter().filter(|&&w| w > 0).count().max(1);
        let max = self.slots.iter().copied().max().unwrap_or(0);
        f64::from(max) * live as f64 / f64::from(self.table_size())
    }

    /// The worst relative error of a backend's share of slots against its
    /// share of the total weight: `max |slots_i - M w_i / W| / (M w_i / W)`
    /// over backends with `w_i > 0`.
    #[must_use]
    pub fn weight_error(&self) -> f64 {
        let total: u64 = self.weights.iter().map(|&w| u64::from(w)).sum();
        let m = f64::from(self.table_size());
        self.weights
            .iter()
            .zip(&self.slots)
            .filter(|(&w, _)| w > 0)
            .map(|(&w, &s)| {
                let ideal = m * f64::from(w) / total as f64;
                (f64::from(s) - ideal).abs() / ideal
            })
            .fold(0.0, f64::max)
    }
}

impl fmt::Debug for Maglev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("table_size", &self.table_size())
            .field("backends", &self.len())
            .field("slot_counts", &self.slots)
            .finish_non_exhaustive()
    }
}

pub(crate) fn check_table_size(m: u32, n: usize) -> Result<(), Error> {
    if n == 0 {
        return Err(Error::NoBackends);
    }
    if !is_prime(m) {
        return Err(Error::TableSizeNotPrime {
            size: m,
            below: prev_prime(m.saturating_sub(1)),
            above: m.checked_add(1).and_then(next_prime),
        });
    }
    if (m as usize) < n {
        return Err(Error::TableTooSmall {
            size: m,
            backends: n,
            smallest: u32::try_from(n).ok().and_then(next_prime),
        });
    }
    Ok(())
}

/// Maps `f` over `items` on all available cores; results in input order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, AtomicOrdering::Relaxed);
            let Some(item) = items.get(i) else { break };
            done.push((i, f(item)));
        }
        done
    };
    let mut all: Vec<(usize, R)> = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(s, work).ok())
            .collect();
        let mut all = work();
        for h in helpers {
            match h.join() {
                Ok(part) => all.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    });
    all.sort_unstable_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}
