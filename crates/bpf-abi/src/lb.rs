//! Constants and slot hashes of `flowpin_lb.h` (the XDP load balancer and,
//! for the encapsulation format, the backend-side decap program).
//!
//! Every constant is named after its `#define` with the `FLOWPIN_` prefix
//! dropped; `tests/header_defines.rs` checks each against the header.

pub use crate::flow_hash::{FLOW_HASH_SEED, FLOW_HASH_SEED2};

/// VIP flag: match any destination port (the VIP's key has port 0).
pub const VIP_PORT_AGNOSTIC: u32 = 1 << 0;
/// VIP flag: UDP, Maglev only, no connection table.
pub const VIP_SKIP_LRU_UDP: u32 = 1 << 1;
/// VIP flag: TCP, route by the server_id option.
pub const VIP_SERVER_ID: u32 = 1 << 2;
/// VIP flag: UDP, QUIC, short-header packets routed by the connection ID.
pub const VIP_QUIC: u32 = 1 << 3;
/// VIP flag of the ICMP entry of a VIP address: answer echo requests.
pub const VIP_ICMP_ECHO: u32 = 1 << 4;

/// `family` of an IPv4 key or backend.
pub const FAMILY_V4: u8 = 4;
/// `family` of an IPv6 key or backend.
pub const FAMILY_V6: u8 = 6;

/// Bound of the IPv6 extension header walk.
pub const LB_MAX_EXT_HDRS: u32 = 8;
/// Bytes of the offending IPv4 packet an ICMP too-big reply quotes.
pub const LB_ICMP4_QUOTE: u32 = 68;
/// Bytes of the offending IPv6 packet an ICMPv6 packet-too-big reply quotes.
pub const LB_ICMP6_QUOTE: u32 = 248;
/// TTL / hop limit of the packets the program builds (ICMP replies).
pub const LB_DEFAULT_TTL: u8 = 64;

/// Slots of the direct-mapped VIP table (`vip_table`).
pub const VIP_SLOTS: u32 = 4096;
/// `32 - log2(VIP_SLOTS)`.
pub const VIP_SLOT_SHIFT: u32 = 20;
/// Flows per connection-table set.
pub const CONN_WAYS: u32 = 4;
/// The initial LRU order of a connection-table set (`order` 0 means this).
pub const CONN_ORDER_INIT: u32 = 0xE4;
/// Candidate sets of a flow in the connection table: A from the flow hash,
/// B from the second hash (`FLOWPIN_CONN_SETS_PER_FLOW`).
pub const CONN_SETS_PER_FLOW: u32 = 2;
/// Slots of the direct-mapped server_id table (`sid_table`).
pub const SID_SLOTS: u32 = 65536;
/// `32 - log2(SID_SLOTS)`.
pub const SID_SLOT_SHIFT: u32 = 16;

/// `state` of a direct-mapped table slot: empty.
pub const SLOT_EMPTY: u32 = 0;
/// `state` of a direct-mapped table slot: the slot's only entry is inline.
pub const SLOT_ONE: u32 = 1;
/// `state` of a direct-mapped table slot: several entries share it, look
/// the key up in the hash map.
pub const SLOT_SHARED: u32 = 2;

/// Layout version of pinned `xdp_lb` state (`FLOWPIN_LB_LAYOUT_VERSION`).
pub const LB_LAYOUT_VERSION: u32 = 4;
/// `cid_cfgs` entries per VIP (`FLOWPIN_CID_CFGS_PER_VIP`): 7 QUIC-LB
/// configurations (codepoints 0..6) and the VIP's mode.
pub const CID_CFGS_PER_VIP: u32 = 8;
/// The `cid_cfgs` slot naming the VIP's declared layout.
pub const CID_MODE_SLOT: u32 = 7;
/// `flowpin_cid_cfg.layout`: nothing declared (mode) / empty (config slot).
pub const CID_ANY: u8 = 0;
/// `flowpin_cid_cfg.layout`: the flowpin layout.
pub const CID_FLOWPIN: u8 = 1;
/// `flowpin_cid_cfg.layout`: Katran v1–v3.
pub const CID_KATRAN: u8 = 2;
/// `flowpin_cid_cfg.layout`: QUIC-LB (mode) / QUIC-LB plaintext (config slot).
pub const CID_QUIC_LB: u8 = 3;
/// `flowpin_cid_cfg.layout`: QUIC-LB encrypted (config slot).
pub const CID_QUIC_LB_ENC: u8 = 4;
/// `flowpin_cid_cfg.engine`: kernel crypto kfuncs, `ecb(aes-fixed-time)`.
pub const AES_CONST_TIME: u8 = 0;
/// `flowpin_cid_cfg.engine`: table-based AES in BPF (faster, not constant-time).
pub const AES_TABLE: u8 = 1;
/// QUIC-LB encrypted: server ID + nonce of this length take one AES block.
pub const QUIC_LB_SINGLE_PASS_LEN: u32 = 16;
/// Entries of the `sid_retired` LRU map (server_ids of removed backends).
pub const SID_RETIRED_ENTRIES: u32 = 4096;
/// Layout version of pinned `xdp_decap` state (`FLOWPIN_DECAP_LAYOUT_VERSION`).
pub const DECAP_LAYOUT_VERSION: u32 = 1;
/// `flowpin_lb_meta.flags`: VIP addresses answer echo requests.
pub const LB_META_ICMP_ECHO: u32 = 1 << 0;
/// `flowpin_lb_meta.flags`: server_id-routed packets keep the connection table warm.
pub const LB_META_SID_WARM_CONN: u32 = 1 << 1;
/// `flowpin_backend_desc.state`: in the ring.
pub const BACKEND_ACTIVE: u8 = 0;
/// `flowpin_backend_desc.state`: draining (out of the ring, still reachable).
pub const BACKEND_DRAINING: u8 = 1;

/// `flowpin_vip_slot()`: the `vip_table` slot of a VIP key. `addr` is the
/// key's address bytes (an IPv4 address in the first 4, the rest 0), `port`
/// in host order (the key stores it in network order).
pub fn vip_slot(addr: &[u8; 16], port: u16, proto: u8, family: u8) -> u32 {
    let w = |i: usize| u32::from_le_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    let p = port.to_be_bytes();
    let h = w(0) ^ w(4) ^ w(8) ^ w(12) ^ u32::from_le_bytes([p[0], p[1], proto, family]);
    h.wrapping_mul(0x9e37_79b1) >> VIP_SLOT_SHIFT
}

/// `flowpin_sid_slot()`: the `sid_table` slot of a (VIP id, server_id) route.
pub fn sid_slot(vip_id: u32, server_id: u32) -> u32 {
    (vip_id.wrapping_mul(0x9e37_79b1) ^ server_id).wrapping_mul(0x85eb_ca6b) >> SID_SLOT_SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stay_in_range_and_spread() {
        let mut vip_seen = std::collections::HashSet::new();
        let mut sid_seen = std::collections::HashSet::new();
        for i in 0..1000u32 {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&(0x0a00_0000 + i).to_be_bytes());
            let s = vip_slot(&a, 80, 6, FAMILY_V4);
            assert!(s < VIP_SLOTS);
            vip_seen.insert(s);
            let s = sid_slot(i % 7, i);
            assert!(s < SID_SLOTS);
            sid_seen.insert(s);
        }
        assert!(vip_seen.len() > 800, "{}", vip_seen.len());
        assert!(sid_seen.len() > 950, "{}", sid_seen.len());
    }

    #[test]
    fn shifts_match_the_table_sizes() {
        assert_eq!(1u64 << (32 - VIP_SLOT_SHIFT), u64::from(VIP_SLOTS));
        assert_eq!(1u64 << (32 - SID_SLOT_SHIFT), u64::from(SID_SLOTS));
    }

    #[test]
    fn vip_slot_reads_the_key_as_the_program_does() {
        // The C function xors the key's five little-endian words: port bytes
        // in network order, then proto, then family.
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[192, 0, 2, 1]);
        let h = u32::from_le_bytes([192, 0, 2, 1]) ^ u32::from_le_bytes([0x12, 0x34, 17, 4]);
        assert_eq!(
            vip_slot(&a, 0x1234, 17, FAMILY_V4),
            h.wrapping_mul(0x9e37_79b1) >> 20
        );
    }
}
