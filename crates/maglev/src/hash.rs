//! The specified, stable backend key hash.

use siphasher::sip128::SipHasher13;

/// First SipHash key word of the backend key hash (ASCII `"flowpin\0"`, little-endian).
pub const KEY_HASH_K0: u64 = u64::from_le_bytes(*b"flowpin\0");
/// Second SipHash key word of the backend key hash (ASCII `"maglev\0\0"`, little-endian).
pub const KEY_HASH_K1: u64 = u64::from_le_bytes(*b"maglev\0\0");

/// The backend key hash: SipHash-1-3 with 128-bit output, keys
/// ([`KEY_HASH_K0`], [`KEY_HASH_K1`]), over exactly the key's bytes (no
/// length prefix, no terminator). Returns the two output words `(h1, h2)`
/// as defined by the SipHash reference (`h1` = the first 8 output bytes read
/// little-endian).
///
/// This function is part of the crate's stability promise: it never changes
/// within a major version, on any platform, and golden tests pin its output.
/// The table derives from it `offset = h1 % M`, `skip = h2 % (M - 1) + 1`
/// and the fill order (ascending `(h1, h2, key bytes)`).
///
/// ```
/// let (h1, h2) = flowpin_maglev::key_hash(b"10.0.0.1:80");
/// assert_ne!(h1, h2);
/// ```
#[must_use]
pub fn key_hash(key: &[u8]) -> (u64, u64) {
    let h = SipHasher13::new_with_keys(KEY_HASH_K0, KEY_HASH_K1).hash(key);
    (h.h1, h.h2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use siphasher::sip128::Hasher128;
    use std::hash::Hasher;

    #[test]
    fn one_shot_equals_streaming_without_length_prefix() {
        for key in [&b""[..], b"a", b"backend-0", &[0u8; 100][..]] {
            let mut s = SipHasher13::new_with_keys(KEY_HASH_K0, KEY_HASH_K1);
            s.write(key);
            let h = s.finish128();
            assert_eq!(key_hash(key), (h.h1, h.h2));
        }
    }
}
