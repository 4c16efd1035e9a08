//! The Maglev fill: Hamilton quotas, then the backends take turns walking
//! their permutations of the slots (see `fill`).

use crate::fastmod::FastMod;
use crate::Error;

/// Slot value used during the fill; never visible in a finished table.
const EMPTY: u32 = u32::MAX;

/// One backend during the build, in fill order.
pub(crate) struct Entry {
    pub(crate) h1: u64,
    pub(crate) h2: u64,
    pub(crate) input: u32,
    pub(crate) weight: u32,
}

/// Walk state of one backend during the fill.
struct Walker {
    pos: u32,
    offset: u32,
    skip: u32,
    back: u32,
    /// `skip^-1 mod M`, computed on the first turn in the tail phase (0 = not yet).
    inverse: u32,
    input: u32,
    taken: u32,
    quota: u32,
}

/// Hamilton (largest remainder) apportionment of `m` slots, in fill order.
pub(crate) fn quotas(entries: &[Entry], m: u32) -> Result<Vec<u32>, Error> {
    let n = entries.len();
    let total: u64 = entries.iter().map(|e| u64::from(e.weight)).sum();
    if total == 0 {
        return Err(Error::AllWeightsZero { backends: n });
    }
    let m64 = u64::from(m);
    let first = entries[0].weight;
    if entries.iter().all(|e| e.weight == first) {
        // Equal weights: floor(M/N), the first M % N in fill order get one more.
        let base = m / n as u32;
        let extra = (m % n as u32) as usize;
        return Ok((0..n).map(|i| base + u32::from(i < extra)).collect());
    }
    // M * w < 2^64 and W < 2^64 because M, w < 2^32 and N <= M.
    let mut quotas = Vec::with_capacity(n);
    let mut rems = Vec::with_capacity(n);
    let mut assigned = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let share = m64 * u64::from(e.weight);
        let q = share / total;
        assigned += q;
        quotas.push(q as u32);
        rems.push((share % total, i));
    }
    let left = (m64 - assigned) as usize; // < n
    if left > 0 {
        // Largest remainders first; ties to the earlier backend in fill order.
        let by_rem = |a: &(u64, usize), b: &(u64, usize)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
        if left < n {
            rems.select_nth_unstable_by(left - 1, by_rem);
        }
        for &(_, i) in &rems[..left] {
            quotas[i] += 1;
        }
    }
    Ok(quotas)
}

/// The Maglev fill with quotas.
///
/// Rounds `r = 1..=Q` with `Q = max quota`; in each round the backends take
/// turns in fill order, and a backend that has taken `t < q` slots takes its
/// next turn in this round iff `t * Q < r * q` (its `k`-th turn falls in
/// round `floor((k - 1) Q / q) + 1`, so every backend starts in round 1 and
/// spreads its turns evenly). A turn takes the first free slot of the
/// backend's permutation `offset, offset + skip, ... (mod M)` after the
/// slots it already passed. For equal weights this is exactly the Maglev
/// paper's round-robin fill.
pub(crate) fn fill(entries: &[Entry], quotas: &[u32], m: u32) -> Result<Vec<u32>, Error> {
    let len = m as usize;
    let mut ring = Vec::new();
    ring.try_reserve_exact(len)
        .map_err(|_| Error::OutOfMemory { size: m })?;
    ring.resize(len, EMPTY);

    let mut walkers: Vec<Walker> = entries
        .iter()
        .zip(quotas)
        .filter(|(_, &q)| q > 0)
        .map(|(e, &q)| {
            let (offset, skip) = offset_skip(e.h1, e.h2, m);
            Walker {
                pos: offset,
                offset,
                skip,
                back: m - skip,
                inverse: 0,
                input: e.input,
                taken: 0,
                quota: q,
            }
        })
        .collect();
    let q_max = walkers.iter().map(|w| w.quota).max().unwrap_or(0);
    let uniform = walkers.iter().all(|w| w.quota + 1 >= q_max);

    let mut f = Filler {
        bits: vec![0u64; len.div_ceil(64)],
        ring,
        m,
        free: m,
        tail_at: tail_threshold(m),
        empties: Vec::new(),
        in_tail: false,
        reduce: FastMod::new(m),
    };
    for round in 1..=u64::from(q_max) {
        if uniform {
            // Equal quotas (up to one): everyone with slots left takes a turn.
            for w in walkers.iter_mut() {
                if w.taken < w.quota {
                    f.turn(w);
                }
            }
        } else {
            let q64 = u64::from(q_max);
            for w in walkers.iter_mut() {
                if w.taken < w.quota && u64::from(w.taken) * q64 < round * u64::from(w.quota) {
                    f.turn(w);
                }
            }
        }
        if round % 64 == 0 {
            walkers.retain(|w| w.taken < w.quota);
        }
    }
    debug_assert!(f.free == 0 && f.ring.iter().all(|&s| s != EMPTY));
    Ok(f.ring)
}

/// A backend's permutation of the slots: `offset = h1 % M`, `skip = h2 % (M - 1) + 1`.
pub(crate) fn offset_skip(h1: u64, h2: u64, m: u32) -> (u32, u32) {
    let m64 = u64::from(m);
    ((h1 % m64) as u32, (h2 % (m64 - 1)) as u32 + 1)
}

/// Below this many free slots the fill stops walking permutations and
/// instead, per turn, picks among the free slots the one that comes first
/// in the backend's permutation (same result, `E` multiplications per turn
/// instead of about `M / E` probes).
fn tail_threshold(m: u32) -> u32 {
    // Break-even of E modular multiplications against ~M/E probes.
    // Measured optimum on x86-64 for M = 65537: about 0.75 sqrt(M) (~190 slots).
    (f64::from(m).sqrt() * 0.75) as u32
}

/// The table under construction.
struct Filler {
    /// Taken slots (1 bit each; 8 KiB for M = 65537, stays in L1).
    bits: Vec<u64>,
    ring: Vec<u32>,
    m: u32,
    free: u32,
    tail_at: u32,
    /// Free slots, collected once `free <= tail_at`.
    empties: Vec<u32>,
    in_tail: bool,
    reduce: FastMod,
}

impl Filler {
    /// Gives `w` its next slot: the first free slot of its permutation after
    /// the ones it has passed. Terminates: `M` is prime and `1 <= skip < M`,
    /// so the permutation visits every slot, and a turn is only taken while
    /// a slot is free (quotas sum to `M`).
    #[inline(always)]
    fn turn(&mut self, w: &mut Walker) {
        if !self.in_tail && self.free <= self.tail_at {
            self.enter_tail();
        }
        if self.in_tail {
            self.tail_turn(w);
        } else {
            self.walk_turn(w);
        }
        w.taken += 1;
        self.free -= 1;
    }

    #[inline(always)]
    fn walk_turn(&mut self, w: &mut Walker) {
        let (skip, back) = (w.skip, w.back);
        let bits: &mut [u64] = &mut self.bits;
        let mut p = w.pos;
        loop {
            let next = add_mod(p, skip, back);
            let word = &mut bits[(p >> 6) as usize];
            let mask = 1u64 << (p & 63);
            if *word & mask == 0 {
                *word |= mask;
                self.ring[p as usize] = w.input;
                w.pos = next;
                return;
            }
            p = next;
        }
    }

    fn enter_tail(&mut self) {
        self.in_tail = true;
        self.empties.reserve(self.free as usize);
        for (i, &word) in self.bits.iter().enumerate() {
            let mut holes = !word;
            while holes != 0 {
                let slot = (i as u32) * 64 + holes.trailing_zeros();
                if slot >= self.m {
                    break;
                }
                self.empties.push(slot);
                holes &= holes - 1;
            }
        }
    }

    /// Every free slot `e` is at index `n_e = (e - offset) * skip^-1 mod M`
    /// of the backend's permutation, and every slot the backend passed is
    /// taken, so its next slot is the free slot with the smallest `n_e`.
    fn tail_turn(&mut self, w: &mut Walker) {
        if w.inverse == 0 {
            w.inverse = inverse_mod(w.skip, self.m);
        }
        let (m, offset, inv) = (u64::from(self.m), u64::from(w.offset), u64::from(w.inverse));
        let mut best = (u64::MAX, 0usize);
        for (i, &e) in self.empties.iter().enumerate() {
            let d = u64::from(e) + m - offset; // in (0, 2M), one reduction below
            let d = if d >= m { d - m } else { d };
            let n = self.reduce.reduce(d * inv);
            if n < best.0 {
                best = (n, i);
            }
        }
        let slot = self.empties.swap_remove(best.1);
        self.bits[(slot >> 6) as usize] |= 1u64 << (slot & 63);
        self.ring[slot as usize] = w.input;
        w.pos = if slot >= w.back {
            slot - w.back
        } else {
            slot + w.skip
        };
    }
}

/// `(p + s) mod m` for `p < m`, `s < m`, with `back = m - s` (no overflow, no division).
#[inline(always)]
fn add_mod(p: u32, s: u32, back: u32) -> u32 {
    if p >= back {
        p - back
    } else {
        p + s
    }
}

/// `a^-1 mod m` for prime `m` and `0 < a < m` (extended Euclid).
fn inverse_mod(a: u32, m: u32) -> u32 {
    let (mut r0, mut r1) = (i64::from(m), i64::from(a));
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    t0.rem_euclid(i64::from(m)) as u32
}
