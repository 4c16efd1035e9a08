/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * flowpin: constants of the server_id TCP header option and of the QUIC
 * connection-ID layouts, shared by the BPF programs (C) and flowpin-tcp-opt
 * (Rust). This header is the single source of truth on the C side; the
 * drift test of flowpin-bpf-abi (tests/header_defines.rs) parses every
 * `#define` of this file and checks it against the Rust constant of the same
 * name (without the FLOWPIN_ prefix, in flowpin_tcp_opt::consts). Keep every
 * constant a `#define FLOWPIN_NAME <value>` on one line (numbers, other
 * defines, `+ - * <<` and parentheses).
 *
 * ---------------------------------------------------------------------------
 * TCP option walk (what find_server_id() does; BPF programs must agree)
 * ---------------------------------------------------------------------------
 * `opt` is the options area: the bytes after the fixed 20-byte TCP header,
 * `len` = doff * 4 - 20 (never more than FLOWPIN_TCP_MAX_OPTIONS_LEN).
 *
 *   off = 0;
 *   for (i = 0; i < FLOWPIN_TCPOPT_MAX_WALK; i++) {
 *       if (off >= len)                 return NONE;       // end of area
 *       kind = opt[off];
 *       if (kind == FLOWPIN_TCPOPT_EOL) return NONE;       // end of list
 *       if (kind == FLOWPIN_TCPOPT_NOP) { off += 1; continue; }
 *       if (off + 1 >= len)             return MALFORMED;  // no length byte
 *       olen = opt[off + 1];
 *       if (olen < 2)                   return MALFORMED;  // len 0 or 1
 *       if (off + olen > len)           return MALFORMED;  // past the end
 *       if (is_server_id_option(kind, &opt[off], olen))
 *           return olen == expected_len ? read_id(&opt[off]) : MALFORMED;
 *       off += olen;
 *   }
 *   return off >= len ? NONE : MALFORMED;                   // walk bound hit
 *
 * is_server_id_option() per layout:
 *   FLOWPIN_LAYOUT_RFC6994: (kind == FLOWPIN_TCPOPT_EXP_KIND ||
 *                            kind == FLOWPIN_TCPOPT_EXP_KIND_ALT) &&
 *                           olen >= 4 && ExID (opt[off+2] << 8 | opt[off+3]) == configured ExID
 *                           (an experimental option with another ExID, or
 *                           too short to carry one, is someone else's: skip it)
 *                           expected_len = FLOWPIN_TCPOPT_RFC6994_LEN,
 *                           server_id = big-endian u32 at opt[off + FLOWPIN_TCPOPT_RFC6994_ID_OFFSET]
 *   FLOWPIN_LAYOUT_COMPACT: kind == configured kind,
 *                           expected_len = FLOWPIN_TCPOPT_COMPACT_LEN,
 *                           server_id = big-endian u32 at opt[off + FLOWPIN_TCPOPT_COMPACT_ID_OFFSET]
 *   FLOWPIN_LAYOUT_KATRAN:  kind == FLOWPIN_TCPOPT_KATRAN_KIND ||
 *                           kind == FLOWPIN_TCPOPT_KATRAN_SYNACK_KIND,
 *                           expected_len = FLOWPIN_TCPOPT_KATRAN_LEN,
 *                           server_id = LITTLE-endian u32 at opt[off + FLOWPIN_TCPOPT_KATRAN_ID_OFFSET]
 *                           (Katran stores a host-order __u32; Katran runs on
 *                           little-endian hosts only; on x86/arm64 BPF a plain
 *                           `*(__u32 *)` load gives the value)
 *
 * Duplicate server_id options in one header: the FIRST matching option wins
 * (this is also what the kernel's bpf_load_hdr_opt() returns). A first match
 * carrying server_id FLOWPIN_SERVER_ID_NONE means "no server_id" (Katran's
 * client sends 0 to ask the server to resend); the walk does not go on to a
 * later option. A matching option with the wrong length is MALFORMED.
 * MALFORMED and NONE both mean "no server_id: fall back to hashing".
 *
 * Writing (WRITE_HDR_OPT_CB): flowpin-tcp-opt emits the option padded with
 * leading NOPs to FLOWPIN_TCPOPT_*_ALIGNED_LEN bytes, e.g. Compact
 * `01 01 kind 06 id id id id`. A sock_ops program may instead reserve
 * FLOWPIN_TCPOPT_*_LEN bytes in HDR_OPT_LEN_CB with bpf_reserve_hdr_opt() and
 * store the unpadded option: the kernel rounds the reservation up to a
 * multiple of 4 and fills the rest with NOPs, so the header grows by the
 * ALIGNED_LEN either way.
 */
#ifndef FLOWPIN_TCP_OPT_H
#define FLOWPIN_TCP_OPT_H

/* Standard TCP option kinds. */
#define FLOWPIN_TCPOPT_EOL 0
#define FLOWPIN_TCPOPT_NOP 1

/* Offsets inside any option: kind at 0, length (whole option, kind and length bytes included) at 1. */
#define FLOWPIN_TCPOPT_KIND_OFFSET 0
#define FLOWPIN_TCPOPT_LEN_OFFSET 1

/* RFC 6994 shared experimental option: kind, len, ExID (2 bytes), server_id (4 bytes, network order). */
#define FLOWPIN_TCPOPT_EXP_KIND 253
#define FLOWPIN_TCPOPT_EXP_KIND_ALT 254
#define FLOWPIN_TCPOPT_RFC6994_LEN 8
#define FLOWPIN_TCPOPT_RFC6994_ALIGNED_LEN 8
#define FLOWPIN_TCPOPT_RFC6994_EXID_OFFSET 2
#define FLOWPIN_TCPOPT_RFC6994_ID_OFFSET 4
#define FLOWPIN_TCPOPT_DEFAULT_EXID 0xF10E

/* The talk's compact layout: kind, len, server_id (4 bytes, network order). */
#define FLOWPIN_TCPOPT_COMPACT_LEN 6
#define FLOWPIN_TCPOPT_COMPACT_ALIGNED_LEN 8
#define FLOWPIN_TCPOPT_COMPACT_ID_OFFSET 2

/* Katran TPR option: kind 0xB7 (0xB6 on the server's SYN-ACK), len 6, server_id in host (little-endian) order. */
#define FLOWPIN_TCPOPT_KATRAN_KIND 0xB7
#define FLOWPIN_TCPOPT_KATRAN_SYNACK_KIND 0xB6
#define FLOWPIN_TCPOPT_KATRAN_LEN 6
#define FLOWPIN_TCPOPT_KATRAN_ALIGNED_LEN 8
#define FLOWPIN_TCPOPT_KATRAN_ID_OFFSET 2

/* TCP header: data offset (in 32-bit words) is the high nibble of byte 12. */
#define FLOWPIN_TCP_HDR_LEN 20
#define FLOWPIN_TCP_DOFF_OFFSET 12
#define FLOWPIN_TCP_DOFF_SHIFT 4

/* Maximum TCP options area (60-byte header minus 20) and the bound of every option walk. */
#define FLOWPIN_TCP_MAX_OPTIONS_LEN 40
#define FLOWPIN_TCPOPT_MAX_WALK 40

/* server_id 0 means "none". */
#define FLOWPIN_SERVER_ID_NONE 0

/* Layout selectors used in BPF program configuration. */
#define FLOWPIN_LAYOUT_RFC6994 0
#define FLOWPIN_LAYOUT_COMPACT 1
#define FLOWPIN_LAYOUT_KATRAN 2

/*
 * ---------------------------------------------------------------------------
 * QUIC connection IDs (RFC 9000 / RFC 8999 invariants)
 * ---------------------------------------------------------------------------
 * Where the destination connection ID (DCID) is, `q` = UDP payload:
 *   Long header  (q[0] & FLOWPIN_QUIC_LONG_HEADER_BIT) != 0:
 *       version = big-endian u32 at q[1..5],
 *       dcid_len = q[FLOWPIN_QUIC_LONG_DCID_LEN_OFFSET],
 *       dcid = q[FLOWPIN_QUIC_LONG_DCID_OFFSET ..][..dcid_len].
 *       Initial and 0-RTT packets carry a CLIENT-chosen DCID: do not route
 *       them by server_id (fall back to hashing). Packet type =
 *       (q[0] & FLOWPIN_QUIC_LONG_TYPE_MASK) >> FLOWPIN_QUIC_LONG_TYPE_SHIFT;
 *       QUIC v1 (and every version but v2): 0 Initial, 1 0-RTT, 2 Handshake, 3 Retry;
 *       QUIC v2 (version FLOWPIN_QUIC_VERSION_2, RFC 9369): 1 Initial, 2 0-RTT, 3 Handshake, 0 Retry.
 *       Version 0 is Version Negotiation: no server-chosen DCID.
 *   Short header (bit clear): dcid = q[FLOWPIN_QUIC_SHORT_DCID_OFFSET ..];
 *       its length is not on the wire: the server chose it, so the LB must
 *       be configured with it (at least FLOWPIN_QUIC_CID_MIN_LEN).
 *   A DCID shorter than FLOWPIN_QUIC_CID_MIN_LEN carries no server_id.
 *
 * Which layout a DCID uses: look at c = dcid[0].
 *   Katran layouts: version = (c & FLOWPIN_QUIC_CID_KATRAN_VERSION_MASK) >> FLOWPIN_QUIC_CID_KATRAN_VERSION_SHIFT
 *     version FLOWPIN_QUIC_CID_KATRAN_V1 (c = 0b01xxxxxx), 16-bit server_id:
 *         id = ((dcid[0] & 0x3F) << 10) | (dcid[1] << 2) | (dcid[2] >> 6)
 *         (mask FLOWPIN_QUIC_CID_KATRAN_V1_BYTE0_MASK, max FLOWPIN_QUIC_CID_KATRAN_V1_MAX_ID)
 *     version FLOWPIN_QUIC_CID_KATRAN_V2 (c = 0b10xxxxxx), 24-bit server_id:
 *         id = (dcid[1] << 16) | (dcid[2] << 8) | dcid[3]
 *         (big-endian at FLOWPIN_QUIC_CID_KATRAN_V2_ID_OFFSET, max FLOWPIN_QUIC_CID_KATRAN_V2_MAX_ID)
 *     version FLOWPIN_QUIC_CID_KATRAN_V3 (c = 0b11xxxxxx), 32-bit server_id:
 *         id = (dcid[1] << 24) | (dcid[2] << 16) | (dcid[3] << 8) | dcid[4]
 *         (big-endian at FLOWPIN_QUIC_CID_KATRAN_V3_ID_OFFSET)
 *     version 0 (c = 0b00xxxxxx): not a Katran layout (Katran falls back to hashing).
 *   flowpin layout (lives in Katran's version-0 space, so a Katran LB
 *   hashes these CIDs instead of misreading them):
 *     (c & FLOWPIN_QUIC_CID_FLOWPIN_VERSION_MASK) >> FLOWPIN_QUIC_CID_FLOWPIN_VERSION_SHIFT
 *         == FLOWPIN_QUIC_CID_FLOWPIN_VERSION   (i.e. c = 0x1?),
 *         id = (dcid[1] << 24) | (dcid[2] << 16) | (dcid[3] << 8) | dcid[4]
 *         (big-endian u32 at FLOWPIN_QUIC_CID_FLOWPIN_ID_OFFSET);
 *     the low nibble of dcid[0] (FLOWPIN_QUIC_CID_FLOWPIN_APP_MASK) and
 *     dcid[5..] belong to the server (e.g. a reuseport generation, entropy).
 *   Decoded server_id FLOWPIN_SERVER_ID_NONE means "none" in every layout.
 */
#define FLOWPIN_QUIC_LONG_HEADER_BIT 0x80
#define FLOWPIN_QUIC_LONG_TYPE_MASK 0x30
#define FLOWPIN_QUIC_LONG_TYPE_SHIFT 4
#define FLOWPIN_QUIC_VERSION_OFFSET 1
#define FLOWPIN_QUIC_VERSION_2 0x6B3343CF
#define FLOWPIN_QUIC_LONG_DCID_LEN_OFFSET 5
#define FLOWPIN_QUIC_LONG_DCID_OFFSET 6
#define FLOWPIN_QUIC_SHORT_DCID_OFFSET 1

#define FLOWPIN_QUIC_CID_MIN_LEN 8
#define FLOWPIN_QUIC_CID_MAX_LEN 20

#define FLOWPIN_QUIC_CID_KATRAN_VERSION_MASK 0xC0
#define FLOWPIN_QUIC_CID_KATRAN_VERSION_SHIFT 6
#define FLOWPIN_QUIC_CID_KATRAN_V1 1
#define FLOWPIN_QUIC_CID_KATRAN_V2 2
#define FLOWPIN_QUIC_CID_KATRAN_V3 3
#define FLOWPIN_QUIC_CID_KATRAN_V1_BYTE0_MASK 0x3F
#define FLOWPIN_QUIC_CID_KATRAN_V1_MAX_ID 0xFFFF
#define FLOWPIN_QUIC_CID_KATRAN_V2_ID_OFFSET 1
#define FLOWPIN_QUIC_CID_KATRAN_V2_MAX_ID 0xFFFFFF
#define FLOWPIN_QUIC_CID_KATRAN_V3_ID_OFFSET 1

#define FLOWPIN_QUIC_CID_FLOWPIN_VERSION_MASK 0xF0
#define FLOWPIN_QUIC_CID_FLOWPIN_VERSION_SHIFT 4
#define FLOWPIN_QUIC_CID_FLOWPIN_VERSION 1
#define FLOWPIN_QUIC_CID_FLOWPIN_APP_MASK 0x0F
#define FLOWPIN_QUIC_CID_FLOWPIN_ID_OFFSET 1

/*
 * IETF QUIC-LB plaintext connection IDs (draft-ietf-quic-load-balancers,
 * "CID format" with no key):
 *   First Octet { Config Rotation (3), CID Len or Random Bits (5) },
 *   Server ID (1..15 octets), Nonce (>= 4 octets), Server ID + Nonce <= 19.
 *   config rotation = dcid[0] >> FLOWPIN_QUIC_LB_CR_SHIFT; codepoint
 *   FLOWPIN_QUIC_LB_CR_UNROUTABLE (0b111) is never routable (5-tuple routing);
 *   length self-description = (dcid[0] & FLOWPIN_QUIC_LB_LEN_MASK) = CID length - 1.
 *   server ID = dcid[FLOWPIN_QUIC_LB_SID_OFFSET ..][..server ID length].
 * A QUIC-LB CID does not announce itself: the LB must be configured with the
 * config rotation codepoint and the server ID length. xdp_lb takes them in one
 * byte (lb_cfg.quic_lb): 0 = QUIC-LB off, else
 *   FLOWPIN_QUIC_LB_CFG_ON | config_id << FLOWPIN_QUIC_LB_CFG_ID_SHIFT | server ID length,
 * the length 1..FLOWPIN_QUIC_LB_MAX_ROUTED_SID_LEN octets (flowpin server_ids are
 * 32 bits; the big-endian value of those octets is the server_id). With QUIC-LB
 * on, a short-header DCID whose config rotation bits equal config_id is read as
 * QUIC-LB, one with 0b111 carries no server_id, every other one is read by the
 * layouts above (so pick a config_id your other servers' CIDs do not start with).
 */
#define FLOWPIN_QUIC_LB_CR_SHIFT 5
#define FLOWPIN_QUIC_LB_LEN_MASK 0x1F
#define FLOWPIN_QUIC_LB_CR_UNROUTABLE 7
#define FLOWPIN_QUIC_LB_SID_OFFSET 1
#define FLOWPIN_QUIC_LB_MAX_SID_LEN 15
#define FLOWPIN_QUIC_LB_MIN_NONCE_LEN 4
#define FLOWPIN_QUIC_LB_MAX_PLAINTEXT_LEN 19
#define FLOWPIN_QUIC_LB_MAX_ROUTED_SID_LEN 4
#define FLOWPIN_QUIC_LB_CFG_ON 0x80
#define FLOWPIN_QUIC_LB_CFG_ID_SHIFT 4
#define FLOWPIN_QUIC_LB_CFG_ID_MASK 0x07
#define FLOWPIN_QUIC_LB_CFG_SID_LEN_MASK 0x0F

#endif /* FLOWPIN_TCP_OPT_H */
