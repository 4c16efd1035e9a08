//! Constants and map layouts of `sk_lookup.h` (the `SK_LOOKUP` program):
//! the one Rust home of the binding key scheme, shared by the kernel layer
//! (`flowpin_bpf_progs::sk_lookup`) and the pure model of
//! `flowpin-sk-lookup`.
//!
//! Every constant is named after its `#define` with the `FP_SKL_` prefix
//! dropped, every struct after its C struct with the `fp_skl_` prefix
//! dropped; `tests/header_defines.rs` checks each constant against the
//! header, a unit test of `flowpin-bpf-progs` each struct against the
//! program's BTF.

/// Labels the maps hold; label ids are `0..MAX_LABELS`.
pub const MAX_LABELS: u32 = 1024;
/// Socket slots per label: one TCP, one UDP.
pub const SLOTS_PER_LABEL: u32 = 2;
/// Slot of a label's TCP listener.
pub const SLOT_TCP: u32 = 0;
/// Slot of a label's UDP socket.
pub const SLOT_UDP: u32 = 1;
/// Entries of `destinations` and `dest_meta`.
pub const DESTINATIONS: u32 = MAX_LABELS * SLOTS_PER_LABEL;
/// Stats index of lookups that matched no binding.
pub const STATS_UNMATCHED: u32 = MAX_LABELS;
/// Entries of the `stats` map: one per label, then [`STATS_UNMATCHED`].
pub const STATS_ENTRIES: u32 = MAX_LABELS + 1;
/// Default capacity of the bindings trie (and of the host hash).
pub const DEFAULT_MAX_BINDINGS: u32 = 65_536;
/// Longest label name in bytes (the map key holds it NUL-padded).
pub const LABEL_MAX: usize = 32;
/// Key family byte of IPv4.
pub const FAMILY_V4: u8 = 4;
/// Key family byte of IPv6.
pub const FAMILY_V6: u8 = 6;
/// Key port of an "any port" binding.
pub const PORT_ANY: u16 = 0;
/// Key bits before the address: protocol, family, port.
pub const KEY_HEADER_BITS: u32 = 32;
/// Summary bit: a host binding (`hosts`) with a specific port.
pub const KIND_HOST_PORT: u32 = 1;
/// Summary bit: a host binding for any port.
pub const KIND_HOST_ANY: u32 = 2;
/// Summary bit: a trie binding with a specific port.
pub const KIND_NET_PORT: u32 = 4;
/// Summary bit: a trie binding for any port.
pub const KIND_NET_ANY: u32 = 8;
/// Summary bits per (protocol, family).
pub const KINDS: u32 = 4;

/// Shift of the (protocol, family) group in the summary word
/// (`FP_SKL_SUMMARY_SHIFT(udp, v6)`).
pub fn summary_shift(udp: bool, v6: bool) -> u32 {
    (u32::from(udp) * 2 + u32::from(v6)) * KINDS
}

/// Key protocol byte of TCP (`IPPROTO_TCP` of `<linux/in.h>`).
pub const IPPROTO_TCP: u8 = 6;
/// Key protocol byte of UDP (`IPPROTO_UDP` of `<linux/in.h>`).
pub const IPPROTO_UDP: u8 = 17;

c_structs! {
    /// Key of the `bindings` LPM trie (`struct fp_skl_key`).
    pub struct Key {
        /// [`KEY_HEADER_BITS`] + the address prefix length.
        pub prefixlen: u32,
        /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
        pub protocol: u8,
        /// [`FAMILY_V4`] or [`FAMILY_V6`].
        pub family: u8,
        /// Local port, network order; [`PORT_ANY`] = any port.
        pub port: u16,
        /// Local address (IPv4: 4 bytes, then zeros).
        pub addr: [u8; 16],
    }

    /// Key of the `hosts` hash: a binding whose prefix is one whole
    /// address (`struct fp_skl_host_key`).
    pub struct HostKey {
        /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
        pub protocol: u8,
        /// [`FAMILY_V4`] or [`FAMILY_V6`].
        pub family: u8,
        /// Local port, network order; [`PORT_ANY`] = any port.
        pub port: u16,
        /// Local address (IPv4: 4 bytes, then zeros).
        pub addr: [u8; 16],
    }

    /// Value of `bindings` and `hosts` (`struct fp_skl_binding`).
    pub struct Binding {
        /// Label id.
        pub label: u32,
        /// Address prefix length, to rank against the other lookup.
        pub addr_bits: u32,
    }

    /// Key of `labels`: a label name, NUL-padded (`struct fp_skl_label_name`).
    pub struct LabelName {
        /// The name's bytes, then NULs.
        pub name: [u8; LABEL_MAX],
    }

    /// Value of `labels` (`struct fp_skl_label`).
    pub struct Label {
        /// Label id.
        pub id: u32,
        /// Padding, 0.
        pub _pad: u32,
    }

    /// What user space knows of a registered socket: value of `dest_meta`
    /// (`struct fp_skl_dest`).
    pub struct Dest {
        /// `SO_COOKIE`; stale when the socket map holds another or none.
        pub cookie: u64,
        /// [`FAMILY_V4`] or [`FAMILY_V6`] of the socket.
        pub family: u32,
        /// 1 for an IPv6 socket that refuses IPv4.
        pub v6only: u32,
    }

    /// Per-CPU counters of one label, value of `stats` (`struct fp_skl_stats`).
    pub struct Stats {
        /// Lookups that matched a binding of the label.
        pub lookups: u64,
        /// Of those, handed to the label's socket.
        pub redirected: u64,
        /// No socket registered for the protocol: left to the kernel.
        pub no_socket: u64,
        /// `bpf_sk_assign` refused the socket: left to the kernel.
        pub errors: u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn key_header_bits_cover_protocol_family_and_port() {
        assert_eq!(offset_of!(Key, protocol), 4);
        assert_eq!(
            offset_of!(Key, addr) - offset_of!(Key, protocol),
            KEY_HEADER_BITS as usize / 8
        );
        assert_eq!(size_of::<Key>(), 4 + KEY_HEADER_BITS as usize / 8 + 16);
    }

    #[test]
    fn struct_layouts_have_no_padding() {
        // Each size is the sum of its fields: nothing implicit for `plain` to expose.
        assert_eq!(size_of::<Key>(), 4 + 1 + 1 + 2 + 16);
        assert_eq!(size_of::<HostKey>(), 1 + 1 + 2 + 16);
        assert_eq!(size_of::<Binding>(), 4 + 4);
        assert_eq!(size_of::<LabelName>(), LABEL_MAX);
        assert_eq!(size_of::<Label>(), 4 + 4);
        assert_eq!(size_of::<Dest>(), 8 + 4 + 4);
        assert_eq!(size_of::<Stats>(), 4 * 8);
    }

    #[test]
    fn summary_groups_do_not_overlap() {
        let mut seen = 0u32;
        for (udp, v6) in [(false, false), (false, true), (true, false), (true, true)] {
            let all = (KIND_HOST_PORT | KIND_HOST_ANY | KIND_NET_PORT | KIND_NET_ANY)
                << summary_shift(udp, v6);
            assert_eq!(seen & all, 0);
            seen |= all;
        }
        assert_eq!(seen, (1 << (4 * KINDS)) - 1);
    }
}
