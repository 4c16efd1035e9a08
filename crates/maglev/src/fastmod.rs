//! Exact `x % d` for a fixed divisor without a division instruction.
//!
//! Granlund & Montgomery, "Division by Invariant Integers using
//! Multiplication" (PLDI 1994), figure 4.1: for `N = 64`, `l = ceil(log2 d)`,
//! `m' = floor(2^64 * (2^l - d) / d) + 1`, the quotient of every 64-bit `n` is
//! `q = (t + ((n - t) >> 1)) >> (l - 1)` with `t = mulhi(m', n)`. The
//! remainder is `n - q * d`. This is exact for all `n < 2^64` and all
//! `2 <= d < 2^64` (proved in the paper; checked exhaustively near the edges
//! and by property tests here), so `reduce(n) == n % d` bit for bit.

/// A precomputed exact reducer `n -> n % d` for a fixed `d >= 2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FastMod {
    d: u64,
    magic: u64,
    shift: u32,
}

impl FastMod {
    /// A reducer for divisor `d`; `d` must be at least 2 (callers pass primes).
    pub(crate) fn new(d: u32) -> Self {
        let d = u64::from(d.max(2));
        // l = ceil(log2 d) for d >= 2, so 1 <= l <= 32.
        let l = 64 - (d - 1).leading_zeros();
        let two_l = 1u128 << l;
        // (2^l - d) < d < 2^32, so the product fits in 96 bits; the quotient is < 2^64.
        let magic = ((1u128 << 64) * (two_l - u128::from(d)) / u128::from(d) + 1) as u64;
        Self {
            d,
            magic,
            shift: l - 1,
        }
    }

    /// `n % d`, computed with two multiplications, shifts and subtractions.
    #[inline(always)]
    pub(crate) fn reduce(&self, n: u64) -> u64 {
        let t = ((u128::from(self.magic) * u128::from(n)) >> 64) as u64;
        let q = (t + ((n - t) >> 1)) >> self.shift;
        n - q * self.d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DIVISORS: [u32; 12] = [
        2,
        3,
        5,
        251,
        65521,
        65537,
        655_373,
        1 << 31,
        (1 << 31) - 1,
        4_294_967_291,
        u32::MAX,
        u32::MAX - 1,
    ];

    #[test]
    fn edges_match_remainder() {
        for &d in &DIVISORS {
            let f = FastMod::new(d);
            let d64 = u64::from(d);
            let mut probes = vec![0, 1, u64::MAX, u64::MAX - 1, u64::from(u32::MAX)];
            for k in [1u64, 2, 3, 1 << 20, 1 << 32, u64::MAX / d64] {
                let base = k.wrapping_mul(d64);
                probes.extend([base.wrapping_sub(1), base, base.wrapping_add(1)]);
            }
            for n in probes {
                assert_eq!(f.reduce(n), n % d64, "n = {n}, d = {d}");
            }
        }
    }

    proptest! {
        #[test]
        fn random_inputs_match_remainder(n: u64, d in 2u32..) {
            prop_assert_eq!(FastMod::new(d).reduce(n), n % u64::from(d));
        }

        #[test]
        fn table_divisors_match_remainder(n: u64, i in 0usize..DIVISORS.len()) {
            let d = DIVISORS[i];
            prop_assert_eq!(FastMod::new(d).reduce(n), n % u64::from(d));
        }
    }
}
