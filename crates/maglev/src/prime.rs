//! Primality for table sizes (deterministic Miller–Rabin, exact for every `u32`).

/// Is `n` prime? Exact for every `u32` (deterministic Miller–Rabin with bases 2, 7, 61).
///
/// ```
/// assert!(flowpin_maglev::is_prime(65537));
/// assert!(!flowpin_maglev::is_prime(65536));
/// ```
#[must_use]
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    for p in [2u32, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
        if n == p {
            return true;
        }
        if n.is_multiple_of(p) {
            return false;
        }
    }
    let n64 = u64::from(n);
    let mut d = n64 - 1;
    let mut s = 0;
    while d % 2 == 0 {
        d /= 2;
        s += 1;
    }
    'witness: for a in [2u64, 7, 61] {
        if a % n64 == 0 {
            continue;
        }
        let mut x = pow_mod(a, d, n64);
        if x == 1 || x == n64 - 1 {
            continue;
        }
        for _ in 1..s {
            x = x * x % n64;
            if x == n64 - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

fn pow_mod(mut base: u64, mut exp: u64, m: u64) -> u64 {
    // m < 2^32, so every product below fits in u64.
    let mut acc = 1u64;
    base %= m;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = acc * base % m;
        }
        base = base * base % m;
        exp >>= 1;
    }
    acc
}

/// The smallest prime `>= n`, or `None` if it does not fit in `u32` (`n > 4294967291`).
///
/// Use it to pick a table size: `Maglev::build(&keys, next_prime(100 * n).unwrap())`.
///
/// ```
/// assert_eq!(flowpin_maglev::next_prime(65536), Some(65537));
/// assert_eq!(flowpin_maglev::next_prime(65537), Some(65537));
/// assert_eq!(flowpin_maglev::next_prime(0), Some(2));
/// assert_eq!(flowpin_maglev::next_prime(u32::MAX), None);
/// ```
#[must_use]
pub fn next_prime(n: u32) -> Option<u32> {
    (n.max(2)..=u32::MAX).find(|&c| is_prime(c))
}

/// The largest prime `<= n`, or `None` if `n < 2`.
///
/// ```
/// assert_eq!(flowpin_maglev::prev_prime(65536), Some(65521));
/// assert_eq!(flowpin_maglev::prev_prime(1), None);
/// ```
#[must_use]
pub fn prev_prime(n: u32) -> Option<u32> {
    (2..=n).rev().find(|&c| is_prime(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_trial_division_below_100k() {
        fn slow(n: u32) -> bool {
            n >= 2
                && (2..)
                    .take_while(|d| d * d <= n)
                    .all(|d| !n.is_multiple_of(d))
        }
        for n in 0..100_000 {
            assert_eq!(is_prime(n), slow(n), "n = {n}");
        }
    }

    #[test]
    fn large_known_values() {
        assert!(is_prime(4_294_967_291)); // largest u32 prime
        assert!(!is_prime(u32::MAX));
        assert!(!is_prime(4_294_967_293)); // 9241 * 464773
        assert!(!is_prime(3_215_031_751)); // strong pseudoprime to bases 2, 3, 5, 7
        assert!(is_prime(2_147_483_647)); // 2^31 - 1
        assert_eq!(next_prime(4_294_967_292), None);
        assert_eq!(next_prime(4_294_967_290), Some(4_294_967_291));
        assert_eq!(prev_prime(u32::MAX), Some(4_294_967_291));
        assert_eq!(next_prime(655_360), Some(655_373));
    }
}
