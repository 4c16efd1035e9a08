//! # flowpin-maglev
//!
//! A Maglev consistent-hash table (Eisenbud et al., *Maglev: A Fast and
//! Reliable Software Network Load Balancer*, NSDI 2016): build it from
//! backend keys (optionally weighted), look flows up in O(1), diff two
//! tables slot by slot for an in-place BPF map update, measure disruption
//! and balance, and reproduce Katran's rings bit for bit ([`katran`]).
//!
//! ```
//! use flowpin_maglev::Maglev;
//!
//! let keys: Vec<String> = (0..100).map(|i| format!("10.0.{}.{}:443", i / 256, i % 256)).collect();
//! let t = Maglev::build(&keys, 65537)?;
//! let backend: u32 = t.lookup(0xdead_beef_u64);     // index into `keys`
//! assert_eq!(backend, t.ring()[(0xdead_beef_u64 % 65537) as usize]);
//!
//! // Backend 7 goes away: which slots must the BPF map writer rewrite?
//! let mut rest = keys.clone();
//! rest.remove(7);
//! let t2 = Maglev::build(&rest, 65537)?;
//! let d = Maglev::diff(&t, &t2)?;
//! assert!(d.metrics.disruption < 0.02);           // ~1 % is ideal
//!
//! // Weights: backend "a" gets three times the slots of "b".
//! let w = Maglev::build_weighted(&[("a", 3u32), ("b", 1)], 65537)?;
//! assert_eq!(w.slot_counts(), &[49153, 16384]);
//! # Ok::<(), flowpin_maglev::Error>(())
//! ```
//!
//! ## The algorithm (normative: golden tests pin it)
//!
//! For a prime table size `M` and backends `(key_i, w_i)`:
//!
//! 1. `(h1, h2) =` [`key_hash`]`(key)` — SipHash-1-3, 128-bit output, fixed
//!    keys [`KEY_HASH_K0`]/[`KEY_HASH_K1`] over the key bytes;
//!    `offset = h1 % M`, `skip = h2 % (M - 1) + 1`. Backend `i`'s
//!    permutation is `offset, offset + skip, offset + 2 skip, … (mod M)`;
//!    it is walked, never stored (memory `O(M + N)`).
//! 2. **Fill order**: backends sorted by `(h1, h2, key bytes)`. Hence the
//!    table depends only on the *set* of `(key, weight)` pairs; only the
//!    indices it returns follow the input order.
//! 3. **Quotas**: backend `i` owns exactly `q_i` slots, the Hamilton
//!    (largest remainder) apportionment of `M` by weight: `floor(M w_i / W)`
//!    plus one for the `M - Σ floor` largest remainders (ties: fill order).
//!    Equal weights give every backend `floor(M/N)` or `ceil(M/N)` slots.
//! 4. **Fill**: rounds `r = 1 ..= Q = max q_i`; in each round, in fill order,
//!    a backend that has `t < q_i` slots takes the next free slot of its
//!    permutation iff `t · Q < r · q_i`. With equal weights that is the
//!    paper's round robin; with weights, turns are spread evenly over the
//!    rounds, and a backend stops when its quota is met.
//!
//! Lookup: `slot = flow_hash % M` exactly (what a BPF program computes with
//! `%`), done with a precomputed multiplicative inverse instead of a
//! division; `backend = ring[slot]`.
//!
//! ## Keys: the contract with the load balancer
//!
//! A backend's key is **its address as `IpAddr::to_string` ([`std::net::IpAddr`]'s `Display`)
//! writes it** (`"10.0.0.2"`, `"2001:db8::2"`; no port, no brackets).
//! Every `flowpin` load balancer (`flowpin-bpf-progs`' `xdp_lb`, the etcd
//! registry, the examples) builds its ring from exactly these keys, so
//! independent LB hosts that see the same backends build the same ring and
//! route every flow the same way. Another key for the same host (a name,
//! an address with a port) gives another permutation, hence another ring:
//! mixing key forms across LB hosts breaks consistency.
//!
//! ## Balance, resilience and speed
//!
//! Weights are apportioned exactly (Hamilton quotas, above); a backend that
//! leaves moves about its own share of slots plus a little more (the
//! paper's trade-off, kept by the quota fill). The fill walks each
//! permutation with one modular add per probe (no division), tests slots in
//! an `M`-bit bitmap (8 KiB at `M = 65537`, L1 resident), and once fewer
//! than `0.75 √M` slots are free picks each backend's next slot directly
//! (the free slot with the smallest permutation index
//! `(e - offset) · skip⁻¹ mod M`) instead of probing a nearly full table.
//! [`Maglev::build_many`] builds many tables on all cores.
//!
//! Every figure (balance error, disruption, build and lookup time against
//! the crates.io crates `maglev-hash` and `maglev` in the same run, the
//! paper's resilience experiment) is kept in one place, the
//! [Benchmarks section of the flowpin README](https://github.com/flowpin/flowpin#benchmarks),
//! with the command that reproduces it (`cargo bench --bench maglev`,
//! `cargo run --release --example maglev_resilience`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod diff;
mod error;
mod fastmod;
mod fill;
mod hash;
pub mod katran;
mod prime;
mod table;

pub use diff::{Diff, DiffMetrics, SlotChange};
pub use error::Error;
pub use hash::{key_hash, KEY_HASH_K0, KEY_HASH_K1};
pub use prime::{is_prime, next_prime, prev_prime};
pub use table::Maglev;

/// The usual table size (a prime; Katran's and the Maglev paper's default).
pub const DEFAULT_TABLE_SIZE: u32 = 65537;
