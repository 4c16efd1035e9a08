//! A naive, obviously-correct model of the specified algorithm (crate docs,
//! "The algorithm"): plain `%` arithmetic, a `next` counter per backend, no
//! bitmap, no tail shortcut. The optimized build must equal it slot for slot.

#![allow(dead_code)]

use flowpin_maglev::key_hash;

pub(crate) fn model_ring(backends: &[(Vec<u8>, u32)], m: u32) -> Vec<u32> {
    let n = backends.len();
    let m64 = u64::from(m);
    let hashes: Vec<(u64, u64)> = backends.iter().map(|(k, _)| key_hash(k)).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| (hashes[a], &backends[a].0).cmp(&(hashes[b], &backends[b].0)));

    // Hamilton apportionment, ties to the earlier backend in fill order.
    let total: u128 = backends.iter().map(|(_, w)| u128::from(*w)).sum();
    let mut quota = vec![0u64; n];
    let mut rems = Vec::new();
    let mut assigned = 0u64;
    for (pos, &i) in order.iter().enumerate() {
        let share = u128::from(m) * u128::from(backends[i].1);
        quota[i] = (share / total) as u64;
        assigned += quota[i];
        rems.push((share % total, pos, i));
    }
    rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, _, i) in rems.iter().take((m64 - assigned) as usize) {
        quota[i] += 1;
    }

    let q_max = quota.iter().copied().max().expect("at least one backend");
    let mut ring: Vec<Option<u32>> = vec![None; m as usize];
    let mut next = vec![0u64; n];
    let mut taken = vec![0u64; n];
    for round in 1..=q_max {
        for &i in &order {
            if taken[i] < quota[i] && taken[i] * q_max < round * quota[i] {
                let offset = hashes[i].0 % m64;
                let skip = hashes[i].1 % (m64 - 1) + 1;
                loop {
                    let c = ((offset + next[i] * skip) % m64) as usize;
                    next[i] += 1;
                    if ring[c].is_none() {
                        ring[c] = Some(i as u32);
                        break;
                    }
                }
                taken[i] += 1;
            }
        }
    }
    ring.into_iter()
        .map(|s| s.expect("model fills every slot"))
        .collect()
}
