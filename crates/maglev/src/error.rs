//! The error type of this crate.

use crate::prime::next_prime;

/// Everything that can go wrong when building, comparing or applying tables.
///
/// Every message says what was wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend list was empty.
    #[error("no backends given: pass at least one backend key")]
    NoBackends,

    /// Every backend had weight 0, so no backend could own a slot.
    #[error(
        "all {backends} backends have weight 0: give at least one backend a non-zero weight \
         (weight 0 means \"owns no slot\")"
    )]
    AllWeightsZero {
        /// Number of backends given.
        backends: usize,
    },

    /// Two backends had the same key.
    #[error(
        "backends at input index {first} and {second} have the same key: every backend needs a \
         unique key (the key is what identifies a backend across table rebuilds)"
    )]
    DuplicateKey {
        /// Input index of the first occurrence.
        first: usize,
        /// Input index of the second occurrence.
        second: usize,
    },

    /// The table size was not a prime number (0 and 1 included).
    #[error(
        "table size {size} is not prime: Maglev needs a prime table size; {}",
        nearest_primes(*.below, *.above)
    )]
    TableSizeNotPrime {
        /// The size that was asked for.
        size: u32,
        /// The largest prime below `size`, if there is one.
        below: Option<u32>,
        /// The smallest prime above `size`, if one fits in `u32`.
        above: Option<u32>,
    },

    /// The table had fewer slots than there are backends.
    #[error(
        "table size {size} is smaller than the number of backends ({backends}): use a prime of at \
         least {backends}{}",
        size_hint(*.backends)
    )]
    TableTooSmall {
        /// The size that was asked for.
        size: u32,
        /// The number of backends given.
        backends: usize,
        /// The smallest prime that is at least `backends`, if one fits in `u32`.
        smallest: Option<u32>,
    },

    /// Two tables (or a table and a ring buffer) of different sizes were compared.
    #[error(
        "table sizes differ ({old} vs {new}): a diff needs two tables of the same size, because a \
         slot is only the same flow set when flow_hash % table_size is the same"
    )]
    TableSizeMismatch {
        /// Size of the old table (or of the existing ring).
        old: u32,
        /// Size of the new table.
        new: u32,
    },

    /// Memory for the table could not be allocated.
    #[error("cannot allocate a table of {size} slots: use a smaller table size")]
    OutOfMemory {
        /// The table size asked for.
        size: u32,
    },

    /// Katran mode: no endpoints (Katran returns a ring of `-1`, which is not a backend).
    #[error(
        "katran::generate_ring: no endpoints given (Katran would return a ring of -1, i.e. no \
         backend): pass at least one endpoint"
    )]
    KatranNoEndpoints,

    /// Katran mode: a ring size Katran would divide by zero with.
    #[error(
        "katran::generate_ring: ring size {ring_size} with {endpoints} endpoints: Katran divides \
         by zero (ring_size - 1) for ring sizes below 2; use a prime such as 65537"
    )]
    KatranRingTooSmall {
        /// The ring size asked for.
        ring_size: u32,
        /// Number of endpoints given.
        endpoints: usize,
    },

    /// Katran mode: Katran's algorithm would loop forever on this input.
    #[error(
        "katran::generate_ring: endpoint at index {endpoint} can never find a free slot in a ring \
         of {ring_size} (Katran itself would loop forever here); use a prime ring size such as \
         65537"
    )]
    KatranNeverTerminates {
        /// Index (in the caller's order) of the endpoint whose probe sequence cycles.
        endpoint: usize,
        /// The ring size asked for.
        ring_size: u32,
    },
}

fn nearest_primes(below: Option<u32>, above: Option<u32>) -> String {
    match (below, above) {
        (Some(b), Some(a)) => {
            format!("the nearest primes are {b} and {a} (65537 is the usual choice)")
        }
        (None, Some(a)) => format!("the smallest prime is {a} (65537 is the usual choice)"),
        (Some(b), None) => format!("the largest prime that fits in u32 is {b}"),
        (None, None) => String::from("use 65537"),
    }
}

fn size_hint(backends: usize) -> String {
    let at_least = u32::try_from(backends).ok().and_then(next_prime);
    let recommended = backends
        .checked_mul(100)
        .and_then(|n| u32::try_from(n).ok())
        .and_then(next_prime);
    match (at_least, recommended) {
        (Some(a), Some(r)) => {
            format!(", e.g. {a}; Maglev balances well from about 100 slots per backend, e.g. {r}")
        }
        (Some(a), None) => format!(", e.g. {a}"),
        _ => String::from(" (no such prime fits in u32: use fewer backends)"),
    }
}
