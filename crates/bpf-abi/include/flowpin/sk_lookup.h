/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * flowpin sk_lookup: layouts and constants shared by the BPF program
 * (sk_lookup.bpf.c) and its Rust control layer. Every #define and struct
 * below is written once more in Rust, in flowpin_bpf_abi::sk_lookup (so the
 * pure model of flowpin-sk-lookup needs no skeleton): the #defines are
 * checked against this file by flowpin-bpf-abi's tests/header_defines.rs,
 * the structs against the skeleton's BTF types (size and every field's
 * offset) by a unit test of flowpin-bpf-progs.
 *
 * Bindings (LPM trie `bindings`), key = protocol, family, port, address:
 *
 *   bits   0..8    protocol (IPPROTO_TCP / IPPROTO_UDP)
 *   bits   8..16   family   (FP_SKL_FAMILY_V4 / _V6)
 *   bits  16..32   local port, network order; FP_SKL_PORT_ANY (0) = any port
 *   bits  32..     local address (IPv4: 4 bytes, then zeros; IPv6: 16 bytes)
 *
 * prefixlen = FP_SKL_KEY_HEADER_BITS + the address prefix length, so the
 * trie matches protocol, family and port exactly and the address by
 * prefix. Port 0 is never the local port of a lookup, so a binding for "any
 * port" lives in the same trie under port 0: the program looks up the
 * packet's port and then port 0, and takes the longer address prefix; on a
 * tie the specific port wins. (A single lookup cannot express this: with the
 * port after the address, "10.0.0.0/24 port 80" is not a prefix.)
 *
 * Host bindings (a /32 or /128 prefix) live in the hash map `hosts` instead,
 * keyed by the same fields without prefixlen (struct fp_skl_host_key): a
 * hash takes a batch update in a fraction of a trie insert's time (2,000
 * addresses x 10 ports set up in one syscall), and a host prefix is the
 * longest there is, so the program asks `hosts` first (packet's port, then
 * any port) and the trie only when that finds nothing. The order is the
 * precedence: longest prefix first, then a specific port beats any.
 *
 * Summary (ARRAY `summary`, one __u32): per (protocol, family), which of the
 * four lookups can match anything (FP_SKL_KIND_* bits at
 * FP_SKL_SUMMARY_SHIFT(udp, v6)). User space sets a bit before inserting
 * and clears it after deleting, so the program skips the lookups that
 * cannot match: a packet no binding can match costs one array read.
 *
 * Destinations (SOCKMAP `destinations`): index = label id * 2 + protocol
 * slot (FP_SKL_SLOT_TCP / _UDP): a label names one TCP and one UDP socket.
 */
#ifndef FLOWPIN_SK_LOOKUP_H
#define FLOWPIN_SK_LOOKUP_H

#include <linux/types.h>

/* Labels (destinations) the maps hold; label ids are 0 .. FP_SKL_MAX_LABELS-1. */
#define FP_SKL_MAX_LABELS 1024
/* Socket slots per label: one TCP, one UDP. */
#define FP_SKL_SLOTS_PER_LABEL 2
#define FP_SKL_SLOT_TCP 0
#define FP_SKL_SLOT_UDP 1
#define FP_SKL_DESTINATIONS (FP_SKL_MAX_LABELS * FP_SKL_SLOTS_PER_LABEL)
/* Stats index counting lookups that matched no binding. */
#define FP_SKL_STATS_UNMATCHED FP_SKL_MAX_LABELS
#define FP_SKL_STATS_ENTRIES (FP_SKL_MAX_LABELS + 1)
/* Default capacity of the bindings trie (set before load from the Rust config). */
#define FP_SKL_DEFAULT_MAX_BINDINGS 65536
/* Longest label name in bytes (the map key holds it NUL-padded). */
#define FP_SKL_LABEL_MAX 32

#define FP_SKL_FAMILY_V4 4
#define FP_SKL_FAMILY_V6 6
#define FP_SKL_PORT_ANY 0
/* Bits of the key before the address: protocol, family, port. */
#define FP_SKL_KEY_HEADER_BITS 32

/* Summary bits, per (protocol, family): which lookups can match:
 * `hosts` with a specific port, `hosts` any port, the trie with a specific
 * port, the trie any port. */
#define FP_SKL_KIND_HOST_PORT 1
#define FP_SKL_KIND_HOST_ANY 2
#define FP_SKL_KIND_NET_PORT 4
#define FP_SKL_KIND_NET_ANY 8
#define FP_SKL_KINDS 4
/* Shift of the (protocol, family) group: udp, v6 are 0 or 1. */
#define FP_SKL_SUMMARY_SHIFT(udp, v6) (((udp) * 2 + (v6)) * FP_SKL_KINDS)

struct fp_skl_key {
	__u32 prefixlen; /* FP_SKL_KEY_HEADER_BITS + address prefix length */
	__u8 protocol;
	__u8 family;
	__u16 port; /* network order; FP_SKL_PORT_ANY = any port */
	__u8 addr[16];
};

/* Key of `hosts`: a binding whose prefix is one whole address. */
struct fp_skl_host_key {
	__u8 protocol;
	__u8 family;
	__u16 port; /* network order; FP_SKL_PORT_ANY = any port */
	__u8 addr[16];
};

struct fp_skl_binding {
	__u32 label;     /* label id */
	__u32 addr_bits; /* address prefix length, to rank against the other lookup */
};

struct fp_skl_label_name {
	char name[FP_SKL_LABEL_MAX];
};

struct fp_skl_label {
	__u32 id;
	__u32 _pad;
};

/* What user space knows of a registered socket (index as in `destinations`). */
struct fp_skl_dest {
	__u64 cookie;  /* SO_COOKIE; stale when the socket map holds another or none */
	__u32 family;  /* FP_SKL_FAMILY_* of the socket */
	__u32 v6only;  /* IPv6 socket that refuses IPv4 */
};

struct fp_skl_stats {
	__u64 lookups;    /* lookups that matched a binding of the label */
	__u64 redirected; /* of those, handed to the label's socket */
	__u64 no_socket;  /* no socket registered for the protocol: left to the kernel */
	__u64 errors;     /* bpf_sk_assign refused the socket: left to the kernel */
};

#endif /* FLOWPIN_SK_LOOKUP_H */
