/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * probe_encap: health probes through the data path. Types and constants
 * shared by probe_encap.bpf.c (a TC egress program on the LB host) and its
 * Rust control layer (flowpin_bpf_progs::probe_encap); the #defines are
 * re-stated in flowpin_bpf_abi::probe (prefix FLOWPIN_PROBE_ dropped) and
 * checked against this file by flowpin-bpf-abi's tests/header_defines.rs.
 *
 * A probe socket (TCP, UDP) is addressed to the VIP and carries the socket
 * mark FLOWPIN_PROBE_MARK | index (SO_MARK): the program matches
 * (mark & FLOWPIN_PROBE_MARK_MASK) == FLOWPIN_PROBE_MARK and encapsulates
 * the packet towards backend `index` of its `probe_backends` array exactly
 * as xdp_lb does (IPIP, IP6IP6, 4in6), so the backend's xdp_decap strips
 * the outer header and the service answers on the VIP.
 */
#ifndef FLOWPIN_PROBE_ENCAP_H
#define FLOWPIN_PROBE_ENCAP_H

#include <linux/types.h>

/* Bits of the mark that say "probe"; the low bits carry the index. */
#define FLOWPIN_PROBE_MARK 0x7f100000
#define FLOWPIN_PROBE_MARK_MASK 0xfff00000
#define FLOWPIN_PROBE_INDEX_MASK 0x000fffff
/* Entries of `probe_backends` (default; set at load). */
#define FLOWPIN_PROBE_DEFAULT_BACKENDS 4096

#define FLOWPIN_PROBE_FAMILY_NONE 0 /* entry unused: the packet is dropped */
#define FLOWPIN_PROBE_FAMILY_V4 4
#define FLOWPIN_PROBE_FAMILY_V6 6

/* Value of `probe_backends`: the tunnel address of one backend (IPv4 in
 * addr[0], network byte order). */
struct flowpin_probe_backend {
	__u32 family;
	__u32 addr[4];
};

/* Runtime configuration (`.data`): the outer source addresses. Zero: the
 * inner source when the families match (IPIP, IP6IP6); 4in6 needs src6. */
struct flowpin_probe_cfg {
	__u32 src4;    /* network byte order */
	__u32 src6[4]; /* network byte order */
};

/* Counters (per-CPU array, one entry). */
struct flowpin_probe_stats {
	__u64 encap_ipip;
	__u64 encap_ip6ip6;
	__u64 encap_4in6;
	__u64 not_probe;
	__u64 dropped_no_backend;
	__u64 dropped_bad_packet;
	__u64 dropped_no_source;
	__u64 dropped_error;
	__u64 redirected;
};

#endif /* FLOWPIN_PROBE_ENCAP_H */
