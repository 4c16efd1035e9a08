//! The connection table as the program keeps it for one CPU: sets of
//! `CONN_WAYS` flows, each way a 64-bit fingerprint, a backend and a
//! probation bit, the LRU order packed 2 bits per way; two candidate sets
//! per flow, one level of cuckoo relocation, probation entries evicted
//! first (`flowpin_lb.h`, `xdp_lb_conn.h`).

use std::collections::HashMap;
use std::net::IpAddr;

use flowpin_bpf_abi::lb::CONN_ORDER_INIT;
use flowpin_bpf_progs::xdp_lb::LbStats;

/// A flow's fingerprint: (flow hash, second hash).
pub(super) type Fp = (u32, u32);

#[derive(Debug, Clone, Default)]
struct ConnSet {
    hash: [Fp; 4],
    backend: [Option<IpAddr>; 4],
    order: u32,
    probation: u32,
}

fn order_front(o: u32, w: u32) -> u32 {
    let e = [o & 3, (o >> 2) & 3, (o >> 4) & 3, (o >> 6) & 3];
    if w == e[0] {
        o
    } else if w == e[1] {
        w | (e[0] << 2) | (e[2] << 4) | (e[3] << 6)
    } else if w == e[2] {
        w | (e[0] << 2) | (e[1] << 4) | (e[3] << 6)
    } else {
        w | (e[0] << 2) | (e[1] << 4) | (e[2] << 6)
    }
}

impl ConnSet {
    fn find(&self, fp: Fp) -> Option<usize> {
        (0..4).find(|&w| self.hash[w] == fp && self.backend[w].is_some())
    }
    fn free(&self) -> Option<usize> {
        (0..4).find(|&w| self.backend[w].is_none())
    }
    fn order(&self) -> u32 {
        if self.order == 0 {
            CONN_ORDER_INIT
        } else {
            self.order
        }
    }
    fn oldest_probation(&self) -> Option<usize> {
        let o = self.order();
        (0..4)
            .rev()
            .map(|i| ((o >> (2 * i)) & 3) as usize)
            .find(|&w| self.probation & (1 << w) != 0)
    }
    fn on_probation(&self, w: usize) -> bool {
        self.probation & (1 << w) != 0
    }
    fn put(&mut self, w: usize, fp: Fp, backend: Option<IpAddr>, probation: bool) {
        self.hash[w] = fp;
        self.backend[w] = backend;
        self.probation = (self.probation & !(1 << w)) | (u32::from(probation) << w);
        self.order = order_front(self.order(), w as u32);
    }
    /// A hit: front of the order, confirms a probation entry.
    fn hit(&mut self, fp: Fp, g: &mut LbStats) -> Option<IpAddr> {
        let w = self.find(fp)?;
        let o = self.order();
        if o & 3 != w as u32 {
            self.order = order_front(o, w as u32);
        }
        if self.on_probation(w) {
            self.probation &= !(1 << w);
            g.confirmations += 1;
        }
        self.backend[w]
    }
}

/// One CPU's table: `sets` sets (a power of two), created empty on use.
#[derive(Debug, Clone, Default)]
pub(super) struct ConnTable {
    sets: HashMap<u32, ConnSet>,
}

impl ConnTable {
    pub(super) fn clear(&mut self) {
        self.sets.clear();
    }

    fn set(&mut self, i: u32) -> &mut ConnSet {
        self.sets.entry(i).or_default()
    }

    /// Lookup in set A, then set B (what `fp_conn_lookup` does).
    pub(super) fn lookup(&mut self, nsets: u32, fp: Fp, g: &mut LbStats) -> Option<IpAddr> {
        let mask = nsets - 1;
        let (ia, ib) = (fp.0 & mask, fp.1 & mask);
        if let Some(a) = self.set(ia).hit(fp, g) {
            return Some(a);
        }
        if ia == ib {
            return None;
        }
        self.set(ib).hit(fp, g)
    }

    /// One level of cuckoo relocation out of set `si` (`fp_conn_relocate`).
    fn relocate(&mut self, nsets: u32, si: u32, evict: bool, g: &mut LbStats) -> Option<usize> {
        let mask = nsets - 1;
        for w in 0..4 {
            let s = self.set(si).clone();
            let (h, h2) = s.hash[w];
            let mut alt = h & mask;
            if alt == si {
                alt = h2 & mask;
            }
            if alt == si {
                continue;
            }
            let o = self.set(alt);
            let t = if evict {
                o.oldest_probation()
            } else {
                o.free()
            };
            let Some(t) = t else { continue };
            if evict {
                g.probation_evictions += 1;
            }
            o.put(t, s.hash[w], s.backend[w], s.on_probation(w));
            g.relocations += 1;
            return Some(w);
        }
        None
    }

    /// Inserts or updates a flow (what `fp_conn_insert` does).
    pub(super) fn insert(&mut self, nsets: u32, fp: Fp, backend: IpAddr, g: &mut LbStats) {
        let mask = nsets - 1;
        let (ia, ib) = (fp.0 & mask, fp.1 & mask);
        let has_b = ia != ib;
        for i in [Some(ia), has_b.then_some(ib)].into_iter().flatten() {
            let s = self.set(i);
            if let Some(w) = s.find(fp) {
                let p = s.on_probation(w);
                s.put(w, fp, Some(backend), p);
                return;
            }
        }
        g.new_flows += 1;
        let place = self
            .set(ia)
            .free()
            .map(|w| (ia, w))
            .or_else(|| {
                has_b
                    .then(|| self.set(ib).free().map(|w| (ib, w)))
                    .flatten()
            })
            .or_else(|| {
                // Relocation into a free way: only below 7/8 full.
                if g.conn_entries * 2 >= u64::from(nsets) * 7 {
                    return None;
                }
                self.relocate(nsets, ia, false, g)
                    .map(|w| (ia, w))
                    .or_else(|| {
                        has_b
                            .then(|| self.relocate(nsets, ib, false, g).map(|w| (ib, w)))
                            .flatten()
                    })
            })
            .inspect(|_| g.conn_entries += 1)
            .or_else(|| {
                let p = self
                    .set(ia)
                    .oldest_probation()
                    .map(|w| (ia, w))
                    .or_else(|| {
                        has_b
                            .then(|| self.set(ib).oldest_probation().map(|w| (ib, w)))
                            .flatten()
                    });
                if p.is_some() {
                    g.probation_evictions += 1;
                }
                p
            })
            .or_else(|| self.relocate(nsets, ia, true, g).map(|w| (ia, w)))
            .or_else(|| {
                has_b
                    .then(|| self.relocate(nsets, ib, true, g).map(|w| (ib, w)))
                    .flatten()
            })
            .unwrap_or_else(|| {
                g.confirmed_evictions += 1;
                (ia, ((self.set(ia).order() >> 6) & 3) as usize)
            });
        self.set(place.0).put(place.1, fp, Some(backend), true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fps(n: usize, seed: u64) -> Vec<Fp> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                // splitmix64
                x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                (z as u32, (z >> 32) as u32)
            })
            .collect()
    }

    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    /// Round-robin cycling of `load * capacity` flows: misses after the first pass.
    fn misses(nsets: u32, load: f64, passes: usize) -> (u64, LbStats) {
        let mut t = ConnTable::default();
        let mut g = LbStats::default();
        let flows = fps((f64::from(nsets * 4) * load) as usize, 7);
        let mut miss = 0;
        for pass in 0..passes {
            for &fp in &flows {
                if t.lookup(nsets, fp, &mut g).is_none() {
                    miss += u64::from(pass > 0);
                    t.insert(nsets, fp, B, &mut g);
                }
            }
        }
        (miss, g)
    }

    #[test]
    fn no_established_flow_is_forgotten_at_half_load() {
        // 131072 sets = 524288 flows per CPU (a 32 MiB budget on one CPU).
        let (m, g) = misses(1 << 17, 0.5, 3);
        assert_eq!(m, 0, "{g:?}");
        assert_eq!(g.confirmed_evictions, 0, "{g:?}");
        let (m, _) = misses(1 << 10, 0.5, 3);
        assert_eq!(m, 0);
    }

    #[test]
    fn full_table_still_turns_over() {
        let (m, g) = misses(1 << 10, 1.0, 3);
        assert!(m > 0 && g.probation_evictions > 0, "{m} {g:?}");
    }

    #[test]
    fn a_flood_of_one_packet_flows_evicts_no_confirmed_flow() {
        let nsets = 1 << 10;
        let mut t = ConnTable::default();
        let mut g = LbStats::default();
        let est = fps(nsets as usize * 2, 1); // half load
        for &fp in &est {
            t.insert(nsets, fp, B, &mut g);
            assert_eq!(t.lookup(nsets, fp, &mut g), Some(B));
        }
        assert_eq!(g.confirmations, est.len() as u64);
        let flood = fps(nsets as usize * 4 * 10, 2);
        for (i, &fp) in flood.iter().enumerate() {
            t.insert(nsets, fp, B, &mut g);
            if i % 64 == 0 {
                for &e in &est {
                    assert_eq!(t.lookup(nsets, e, &mut g), Some(B));
                }
            }
        }
        assert_eq!(g.confirmed_evictions, 0, "{g:?}");
        assert!(g.probation_evictions > flood.len() as u64 / 2, "{g:?}");
    }
}
