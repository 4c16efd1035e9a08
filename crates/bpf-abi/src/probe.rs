//! Constants of `probe_encap.h` (health probes encapsulated on the LB
//! host's egress, the `probe_encap` TC program).
//!
//! Every constant is named after its `#define` with the `FLOWPIN_PROBE_`
//! prefix dropped; `tests/header_defines.rs` checks each against the
//! header. The structs reach Rust through the skeleton's generated types
//! (`flowpin_bpf_progs::skel::probe_encap::types`).

/// The bits of a socket mark that say "health probe" (`SO_MARK`).
pub const MARK: u32 = 0x7f10_0000;
/// The mask that selects [`MARK`]'s bits.
pub const MARK_MASK: u32 = 0xfff0_0000;
/// The mask of the backend index in the low bits of the mark.
pub const INDEX_MASK: u32 = 0x000f_ffff;
/// Entries of `probe_backends` when the loader sets none.
pub const DEFAULT_BACKENDS: u32 = 4096;
/// `family` of an unused `probe_backends` entry (the probe is dropped).
pub const FAMILY_NONE: u32 = 0;
/// `family` of an IPv4 tunnel address.
pub const FAMILY_V4: u32 = 4;
/// `family` of an IPv6 tunnel address.
pub const FAMILY_V6: u32 = 6;

/// The socket mark of a probe towards backend `index` (`index` ≤
/// [`INDEX_MASK`], else `None`).
pub const fn mark_of(index: u32) -> Option<u32> {
    if index > INDEX_MASK {
        None
    } else {
        Some(MARK | index)
    }
}

/// The backend index a mark names, if it is a probe mark.
pub const fn index_of(mark: u32) -> Option<u32> {
    if mark & MARK_MASK == MARK {
        Some(mark & INDEX_MASK)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_and_index_round_trip() {
        assert_eq!(mark_of(0), Some(MARK));
        assert_eq!(index_of(mark_of(77).unwrap_or(0)), Some(77));
        assert_eq!(mark_of(INDEX_MASK + 1), None);
        assert_eq!(index_of(0), None);
        assert_eq!(index_of(0x1234), None);
        assert_eq!(MARK & INDEX_MASK, 0);
        assert_eq!(MARK_MASK & INDEX_MASK, 0);
        assert_eq!(MARK_MASK | INDEX_MASK, u32::MAX);
    }
}
