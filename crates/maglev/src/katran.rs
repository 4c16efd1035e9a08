//! Katran-compatible rings: migrate from Katran with no flow moving.
//!
//! [`generate_ring`] returns, for each slot, the `num` of its endpoint: bit
//! for bit what Katran's `CHFactory::make(HashFunction::Maglev | MaglevV2)
//! ->generateHashRing(endpoints, ring_size)` (`katran/lib/MaglevHash.cpp`,
//! `MaglevHashV2.cpp`, `MaglevBase.cpp`, `MurmurHash3.cpp`) returns for the
//! same endpoints in the same (caller's) order. Reproduced exactly:
//!
//! * permutation: `offset = MurmurHash3_x64_64(hash, 42, seed 0) % ring_size`,
//!   `skip = MurmurHash3_x64_64(hash, 2718281828, seed 2307) % (ring_size - 1) + 1`
//!   (64-bit hashes reduced to `u32`, `ring_size - 1` computed in 32 bits);
//! * the probe `(offset + next * skip) % ring_size` in **32-bit wrapping**
//!   arithmetic, as in the C++ (`next` is a wrapping `uint32_t`): for ring
//!   sizes above 65536 the product wraps and Katran's probe sequence stops
//!   being a permutation; we follow it;
//! * a slot counts as taken iff its `int` value is `>= 0`, so an endpoint
//!   whose `num` is `>= 2^31` (negative as `int`) can be overwritten later,
//!   as in Katran;
//! * V1 weights: in the first pass endpoint `i` takes `weight` slots in a
//!   row, afterwards one per pass (weight 0 still gets slots after the first
//!   pass); V2 weights: per pass `cum += weight` (wrapping `u32`) and the
//!   endpoint takes one slot when `cum >= max_weight` (then
//!   `cum -= max_weight`); all weights 0 behave as all equal;
//! * one endpoint: every slot is its `num`, whatever the ring size.
//!
//! Where Katran has no answer we return an error instead: no endpoints
//! (Katran returns a ring of `-1`), ring size 0 or 1 with two or more
//! endpoints (Katran divides by zero), and inputs on which Katran loops
//! forever (an endpoint's probe sequence cycles through taken slots only;
//! possible only for non-prime ring sizes or with 32-bit wraparound; we
//! detect it after a full period of the 32-bit sequence).

use crate::Error;

/// One Katran endpoint (Katran's `struct Endpoint` in `CHHelpers.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The value written into the ring for this endpoint (Katran's real index).
    pub num: u32,
    /// The endpoint's weight.
    pub weight: u32,
    /// The endpoint's hash seed (Katran: a hash of the real's address).
    pub hash: u64,
}

/// Which of Katran's Maglev variants to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Version {
    /// `HashFunction::Maglev` (`MaglevHash.cpp`), Katran's default.
    #[default]
    V1,
    /// `HashFunction::MaglevV2` (`MaglevHashV2.cpp`).
    V2,
}

/// Katran's seeds (`MaglevBase.cpp`).
const SEED0: u32 = 0;
const SEED1: u32 = 2307;
const SEED2: u64 = 42;
const SEED3: u64 = 2_718_281_828;

/// Katran's `MurmurHash3_x64_64(A, B, seed)`: MurmurHash3 x64-128 of the
/// 16-byte block `(A, B)` with `seed`, returning `h1 + h2`.
#[must_use]
pub fn murmur3_x64_64(a: u64, b: u64, seed: u32) -> u64 {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let mut h1 = u64::from(seed);
    let mut h2 = u64::from(seed);

    let k1 = a.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    h1 ^= k1;
    h1 = h1.rotate_left(27).wrapping_add(h2);
    h1 = h1.wrapping_mul(5).wrapping_add(0x52dc_e729);

    let k2 = b.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    h2 ^= k2;
    h2 = h2.rotate_left(31).wrapping_add(h1);
    h2 = h2.wrapping_mul(5).wrapping_add(0x3849_5ab5);

    h1 ^= 16;
    h2 ^= 16;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1.wrapping_add(h2)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Katran's `genMaglevPermutation` for one endpoint: `(offset, skip)`.
///
/// `ring_size` must be at least 2 (Katran divides by `ring_size` and `ring_size - 1`).
#[must_use]
pub fn permutation(hash: u64, ring_size: u32) -> (u32, u32) {
    let offset = murmur3_x64_64(hash, SEED2, SEED0) % u64::from(ring_size.max(1));
    let skip = murmur3_x64_64(hash, SEED3, SEED1) % u64::from((ring_size.max(2)) - 1) + 1;
    (offset as u32, skip as u32)
}

/// The Katran ring for `endpoints` (in the caller's order): slot → `num`.
///
/// See the [module docs](self) for what is reproduced and when this errors.
///
/// ```
/// use flowpin_maglev::katran::{generate_ring, Endpoint, Version};
/// let eps: Vec<Endpoint> = (0..3).map(|i| Endpoint { num: i, weight: 1, hash: u64::from(i) }).collect();
/// let ring = generate_ring(&eps, 13, Version::V1)?;
/// assert_eq!(ring, [1, 0, 2, 2, 2, 0, 0, 2, 0, 0, 1, 1, 1]); // Katran's own output
/// # Ok::<(), flowpin_maglev::Error>(())
/// ```
pub fn generate_ring(
    endpoints: &[Endpoint],
    ring_size: u32,
    version: Version,
) -> Result<Vec<u32>, Error> {
    let len = ring_size as usize;
    match endpoints {
        [] => return Err(Error::KatranNoEndpoints),
        [only] => {
            let mut ring = Vec::new();
            ring.try_reserve_exact(len)
                .map_err(|_| Error::OutOfMemory { size: ring_size })?;
            ring.resize(len, only.num);
            return Ok(ring);
        }
        _ if ring_size < 2 => {
            return Err(Error::KatranRingTooSmall {
                ring_size,
                endpoints: endpoints.len(),
            })
        }
        _ => {}
    }

    // Katran's `std::vector<int> result(ring_size, -1)`.
    let mut ring: Vec<i32> = Vec::new();
    ring.try_reserve_exact(len)
        .map_err(|_| Error::OutOfMemory { size: ring_size })?;
    ring.resize(len, -1);

    let mut walk: Vec<Probe> = endpoints
        .iter()
        .map(|e| {
            let (offset, skip) = permutation(e.hash, ring_size);
            Probe {
                offset,
                skip,
                next: 0,
            }
        })
        .collect();

    let mut runs: u32 = 0;
    match version {
        Version::V1 => {
            let mut weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
            loop {
                for (i, e) in endpoints.iter().enumerate() {
                    for _ in 0..weights[i] {
                        walk[i].place(&mut ring, ring_size, e.num, i)?;
                        runs = runs.wrapping_add(1);
                        if runs == ring_size {
                            return Ok(into_u32(ring));
                        }
                    }
                    weights[i] = 1;
                }
            }
        }
        Version::V2 => {
            // `auto max_weight = 0` is an `int`, but every use converts it back to
            // `uint32_t` with the same bits, so it behaves as a `u32`.
            let max_weight = endpoints.iter().map(|e| e.weight).max().unwrap_or(0);
            let mut cum = vec![0u32; endpoints.len()];
            loop {
                for (i, e) in endpoints.iter().enumerate() {
                    cum[i] = cum[i].wrapping_add(e.weight);
                    if cum[i] >= max_weight {
                        cum[i] -= max_weight;
                        walk[i].place(&mut ring, ring_size, e.num, i)?;
                        runs = runs.wrapping_add(1);
                        if runs == ring_size {
                            return Ok(into_u32(ring));
                        }
                    }
                }
            }
        }
    }
}

struct Probe {
    offset: u32,
    skip: u32,
    next: u32,
}

impl Probe {
    /// Katran's inner loop: probe `(offset + next * skip) % ring_size` (u32
    /// wrapping) until a slot holds a negative `int`, write `num` there.
    fn place(
        &mut self,
        ring: &mut [i32],
        ring_size: u32,
        num: u32,
        index: usize,
    ) -> Result<(), Error> {
        // `offset + n * skip (mod 2^32)` repeats after 2^32 / 2^tz(skip) steps of n:
        // if no free slot shows up within one period, Katran loops forever. When
        // the ring size is a power of two, the wrap does not change the slot
        // (2^32 is a multiple of it) and the slots repeat after
        // ring_size / gcd(skip, ring_size) steps already.
        let mut period = 1u64 << (32 - self.skip.trailing_zeros().min(32));
        if ring_size.is_power_of_two() {
            let log = ring_size.trailing_zeros();
            period = period.min(1u64 << (log - self.skip.trailing_zeros().min(log)));
        }
        let mut probes = 0u64;
        loop {
            let cur = self.offset.wrapping_add(self.next.wrapping_mul(self.skip)) % ring_size;
            let slot = &mut ring[cur as usize];
            if *slot < 0 {
                *slot = num as i32;
                self.next = self.next.wrapping_add(1);
                return Ok(());
            }
            self.next = self.next.wrapping_add(1);
            probes += 1;
            if probes >= period {
                return Err(Error::KatranNeverTerminates {
                    endpoint: index,
                    ring_size,
                });
            }
        }
    }
}

fn into_u32(ring: Vec<i32>) -> Vec<u32> {
    ring.into_iter().map(|v| v as u32).collect()
}
