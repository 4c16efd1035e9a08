/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * flowpin: constants of the server_id TCP header option and of the QUIC
 * connection-ID layouts, shared by the BPF programs (C) and flowpin-tcp-opt
 * (Rust). This header is the single source of truth on the C side; a test in
 * flowpin-tcp-opt parses it and checks every constant against the Rust one.
 *
 * Duplicate server_id options in one header: the FIRST matching option wins
 * (this is also what the kernel's bpf_load_hdr_opt() returns).
 */
#ifndef FLOWPIN_TCP_OPT_H
#define FLOWPIN_TCP_OPT_H

/* Standard TCP option kinds. */
#define FLOWPIN_TCPOPT_EOL 0
#define FLOWPIN_TCPOPT_NOP 1

/* RFC 6994 shared experimental option: kind, len, ExID (2 bytes), server_id (4 bytes, network order). */
#define FLOWPIN_TCPOPT_EXP_KIND 253
#define FLOWPIN_TCPOPT_EXP_KIND_ALT 254
#define FLOWPIN_TCPOPT_RFC6994_LEN 8
#define FLOWPIN_TCPOPT_DEFAULT_EXID 0xF10E

/* The talk's compact layout: kind, len, server_id (4 bytes, network order). */
#define FLOWPIN_TCPOPT_COMPACT_LEN 6

/* Katran TPR option: kind 0xB7 (0xB6 on the server's SYN-ACK), len 6, server_id in host order. */
#define FLOWPIN_TCPOPT_KATRAN_KIND 0xB7
#define FLOWPIN_TCPOPT_KATRAN_SYNACK_KIND 0xB6
#define FLOWPIN_TCPOPT_KATRAN_LEN 6

/* Maximum TCP options area (60-byte header minus 20) and the bound of every option walk. */
#define FLOWPIN_TCP_MAX_OPTIONS_LEN 40
#define FLOWPIN_TCPOPT_MAX_WALK 40

/* server_id 0 means "none". */
#define FLOWPIN_SERVER_ID_NONE 0

/* Layout selectors used in BPF program configuration. */
#define FLOWPIN_LAYOUT_RFC6994 0
#define FLOWPIN_LAYOUT_COMPACT 1
#define FLOWPIN_LAYOUT_KATRAN 2

#endif /* FLOWPIN_TCP_OPT_H */
