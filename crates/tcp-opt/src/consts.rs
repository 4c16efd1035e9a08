//! Wire constants shared with the BPF programs.
//!
//! Every constant here has a twin `FLOWPIN_<NAME>` in `<flowpin/tcp_opt.h>`
//! (`crates/bpf-abi/include/flowpin/tcp_opt.h`, where every header shared
//! by the BPF programs and Rust lives); the drift test of `flowpin-bpf-abi`
//! (`tests/header_defines.rs`) checks that the two agree and that the
//! header defines nothing this module lacks. The header also documents, in
//! C terms, how a BPF program walks the options and reads a connection ID.

// ---------------------------------------------------------------- TCP options

/// End of option list (RFC 9293): stops the walk.
pub const TCPOPT_EOL: u8 = 0;
/// No-operation (RFC 9293): one byte of padding, skipped.
pub const TCPOPT_NOP: u8 = 1;
/// Offset of the kind byte inside any option.
pub const TCPOPT_KIND_OFFSET: usize = 0;
/// Offset of the length byte inside any option (the length counts the kind
/// and length bytes themselves).
pub const TCPOPT_LEN_OFFSET: usize = 1;

/// RFC 6994 shared experimental option kind (RFC 4727 experiment 1), the one
/// [`Layout::Rfc6994`](crate::Layout::Rfc6994) writes.
pub const TCPOPT_EXP_KIND: u8 = 253;
/// The other RFC 4727 experimental kind, accepted on parse.
pub const TCPOPT_EXP_KIND_ALT: u8 = 254;
/// Length of the RFC 6994 server_id option: kind, len, ExID(2), server_id(4).
pub const TCPOPT_RFC6994_LEN: usize = 8;
/// Bytes the RFC 6994 option occupies once padded to 4-byte alignment.
pub const TCPOPT_RFC6994_ALIGNED_LEN: usize = 8;
/// Offset of the big-endian ExID inside the RFC 6994 option.
pub const TCPOPT_RFC6994_EXID_OFFSET: usize = 2;
/// Offset of the big-endian server_id inside the RFC 6994 option.
pub const TCPOPT_RFC6994_ID_OFFSET: usize = 4;
/// flowpin's default RFC 6994 experiment identifier (not IANA-registered:
/// deployments that need a registered one configure their own).
pub const TCPOPT_DEFAULT_EXID: u16 = 0xF10E;

/// Length of the compact option: kind, len, server_id(4).
pub const TCPOPT_COMPACT_LEN: usize = 6;
/// Bytes the compact option occupies once padded to 4-byte alignment.
pub const TCPOPT_COMPACT_ALIGNED_LEN: usize = 8;
/// Offset of the big-endian server_id inside the compact option.
pub const TCPOPT_COMPACT_ID_OFFSET: usize = 2;

/// Katran's TPR option kind, written by the client (`TCP_HDR_OPT_KIND_TPR`)
/// and parsed by Katran's XDP load balancer.
pub const TCPOPT_KATRAN_KIND: u8 = 0xB7;
/// Katran's TPR option kind written by the server in its SYN-ACK
/// (`TCP_SRV_HDR_OPT_KIND`).
pub const TCPOPT_KATRAN_SYNACK_KIND: u8 = 0xB6;
/// Length of Katran's TPR option: kind, len, server_id(4, host order).
pub const TCPOPT_KATRAN_LEN: usize = 6;
/// Bytes Katran's option occupies once padded to 4-byte alignment.
pub const TCPOPT_KATRAN_ALIGNED_LEN: usize = 8;
/// Offset of the little-endian server_id inside Katran's option.
pub const TCPOPT_KATRAN_ID_OFFSET: usize = 2;

// ---------------------------------------------------------------- TCP header

/// Length of the fixed TCP header (no options).
pub const TCP_HDR_LEN: usize = 20;
/// Byte of the TCP header whose high nibble is the data offset.
pub const TCP_DOFF_OFFSET: usize = 12;
/// Shift of the data offset nibble inside its byte.
pub const TCP_DOFF_SHIFT: u8 = 4;
/// Largest options area: a 60-byte header minus the fixed 20 bytes.
pub const TCP_MAX_OPTIONS_LEN: usize = 40;
/// Bound of every option walk, in options examined (NOPs included). One
/// option takes at least one byte, so 40 always covers a real options area.
pub const TCPOPT_MAX_WALK: usize = 40;

/// The reserved server_id meaning "none".
pub const SERVER_ID_NONE: u32 = 0;

/// Layout selector of [`Layout::Rfc6994`](crate::Layout::Rfc6994) in BPF configuration.
pub const LAYOUT_RFC6994: u32 = 0;
/// Layout selector of [`Layout::Compact`](crate::Layout::Compact) in BPF configuration.
pub const LAYOUT_COMPACT: u32 = 1;
/// Layout selector of [`Layout::KatranCompat`](crate::Layout::KatranCompat) in BPF configuration.
pub const LAYOUT_KATRAN: u32 = 2;

// ---------------------------------------------------------------- QUIC headers

/// Header form bit of the first byte: set = long header (RFC 8999).
pub const QUIC_LONG_HEADER_BIT: u8 = 0x80;
/// Long header packet type bits of the first byte.
pub const QUIC_LONG_TYPE_MASK: u8 = 0x30;
/// Shift of the long header packet type bits.
pub const QUIC_LONG_TYPE_SHIFT: u8 = 4;
/// Offset of the big-endian 32-bit version in a long header.
pub const QUIC_VERSION_OFFSET: usize = 1;
/// QUIC version 2 (RFC 9369), whose long packet types are permuted.
pub const QUIC_VERSION_2: u32 = 0x6B33_43CF;
/// Offset of the destination connection ID length byte in a long header.
pub const QUIC_LONG_DCID_LEN_OFFSET: usize = 5;
/// Offset of the destination connection ID in a long header.
pub const QUIC_LONG_DCID_OFFSET: usize = 6;
/// Offset of the destination connection ID in a short header.
pub const QUIC_SHORT_DCID_OFFSET: usize = 1;

// ---------------------------------------------------------------- QUIC CIDs

/// Shortest connection ID that carries a server_id (Katran's
/// `QUIC_MIN_CONNID_LEN`).
pub const QUIC_CID_MIN_LEN: usize = 8;
/// Longest QUIC v1 connection ID (RFC 9000 §17.2).
pub const QUIC_CID_MAX_LEN: usize = 20;

/// Bits of the first CID byte holding Katran's CID version.
pub const QUIC_CID_KATRAN_VERSION_MASK: u8 = 0xC0;
/// Shift of Katran's CID version.
pub const QUIC_CID_KATRAN_VERSION_SHIFT: u8 = 6;
/// Katran CID version 1: 16-bit server_id in bits 2..18.
pub const QUIC_CID_KATRAN_V1: u8 = 1;
/// Katran CID version 2: 24-bit server_id in bytes 1..4.
pub const QUIC_CID_KATRAN_V2: u8 = 2;
/// Katran CID version 3: 32-bit server_id in bytes 1..5.
pub const QUIC_CID_KATRAN_V3: u8 = 3;
/// Bits of the first byte holding the top 6 bits of a v1 server_id.
pub const QUIC_CID_KATRAN_V1_BYTE0_MASK: u8 = 0x3F;
/// Largest server_id of Katran CID v1.
pub const QUIC_CID_KATRAN_V1_MAX_ID: u32 = 0xFFFF;
/// Offset of the big-endian 24-bit server_id of Katran CID v2.
pub const QUIC_CID_KATRAN_V2_ID_OFFSET: usize = 1;
/// Largest server_id of Katran CID v2.
pub const QUIC_CID_KATRAN_V2_MAX_ID: u32 = 0xFF_FFFF;
/// Offset of the big-endian 32-bit server_id of Katran CID v3.
pub const QUIC_CID_KATRAN_V3_ID_OFFSET: usize = 1;

/// Bits of the first CID byte holding the flowpin version nibble.
pub const QUIC_CID_FLOWPIN_VERSION_MASK: u8 = 0xF0;
/// Shift of the flowpin version nibble.
pub const QUIC_CID_FLOWPIN_VERSION_SHIFT: u8 = 4;
/// The flowpin CID version nibble (inside Katran's version-0 space, so
/// Katran hashes flowpin CIDs instead of misreading them).
pub const QUIC_CID_FLOWPIN_VERSION: u8 = 1;
/// Bits of the first CID byte left to the application by the flowpin layout.
pub const QUIC_CID_FLOWPIN_APP_MASK: u8 = 0x0F;
/// Offset of the big-endian 32-bit server_id of the flowpin layout.
pub const QUIC_CID_FLOWPIN_ID_OFFSET: usize = 1;

// ---------------------------------------------------------------- QUIC-LB

/// Shift of the 3 config rotation bits in the first octet of a QUIC-LB CID.
pub const QUIC_LB_CR_SHIFT: u8 = 5;
/// Bits of the first octet holding the self-described length (CID length - 1).
pub const QUIC_LB_LEN_MASK: u8 = 0x1F;
/// Config rotation codepoint of CIDs that are never routable (0b111).
pub const QUIC_LB_CR_UNROUTABLE: u8 = 7;
/// Offset of the server ID in a plaintext QUIC-LB CID.
pub const QUIC_LB_SID_OFFSET: usize = 1;
/// Longest QUIC-LB server ID, octets.
pub const QUIC_LB_MAX_SID_LEN: usize = 15;
/// Shortest QUIC-LB nonce, octets.
pub const QUIC_LB_MIN_NONCE_LEN: usize = 4;
/// Longest server ID + nonce of a QUIC-LB CID, octets.
pub const QUIC_LB_MAX_PLAINTEXT_LEN: usize = 19;
/// Longest QUIC-LB server ID that flowpin routes (its server_ids are 32 bits).
pub const QUIC_LB_MAX_ROUTED_SID_LEN: usize = 4;
/// xdp_lb's QUIC-LB config byte: set when QUIC-LB decoding is on.
pub const QUIC_LB_CFG_ON: u8 = 0x80;
/// xdp_lb's QUIC-LB config byte: shift of the config rotation codepoint.
pub const QUIC_LB_CFG_ID_SHIFT: u8 = 4;
/// xdp_lb's QUIC-LB config byte: mask of the codepoint (after the shift).
pub const QUIC_LB_CFG_ID_MASK: u8 = 0x07;
/// xdp_lb's QUIC-LB config byte: mask of the server ID length.
pub const QUIC_LB_CFG_SID_LEN_MASK: u8 = 0x0F;
