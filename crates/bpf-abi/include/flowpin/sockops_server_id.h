/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * Types and constants of sockops_server_id.bpf.c. Rust reads the structs
 * through the types libbpf-cargo generates (skel::sockops_server_id::types),
 * never by hand; the #defines are re-stated in flowpin_bpf_abi::sockops
 * (prefix FLOWPIN_SOCKOPS_ dropped), checked against this file by
 * flowpin-bpf-abi's tests/header_defines.rs.
 */
#ifndef FLOWPIN_SOCKOPS_SERVER_ID_H
#define FLOWPIN_SOCKOPS_SERVER_ID_H

#include <linux/types.h>

#define FLOWPIN_SOCKOPS_MAX_PORTS 64
#define FLOWPIN_SOCKOPS_MAX_ADDRS 64

/* Layout of a pinned sockops_server_id (its `meta` array); bumped on any
 * change of a pinned map's layout or meaning. */
#define FLOWPIN_SOCKOPS_LAYOUT_VERSION 1

/* The one entry of `meta`: the layout version and the load-time
 * configuration, so a newer build loads its program with the same one. */
struct flowpin_sockops_meta {
	__u32 layout_version;
	__u32 server_id;
	__u8 server;
	__u8 client;
	__u8 layout;
	__u8 kind;
	__u16 exid;
	__u8 filter_ports;
	__u8 filter_addrs;
};

/* Key of the server_addrs map: an IPv6 address, IPv4 as ::ffff:a.b.c.d. */
struct flowpin_sockops_addr {
	__u32 addr32[4];
};

/* Value of the per-CPU `stats` array (one entry): the counters, read by
 * the Rust module through the generated type, summed over CPUs. */
struct flowpin_sockops_stats {
	__u64 server_listen_matched; /* listeners on a configured port */
	__u64 server_listen_skipped; /* listeners on another port */
	__u64 server_written; /* SYN-ACKs that carry our option */
	__u64 server_addr_skipped; /* SYN-ACKs from an unconfigured local address */
	__u64 server_no_space; /* SYN-ACKs with no room left for the option */
	__u64 server_echo_ok; /* handshake ACKs echoing our server_id */
	__u64 server_echo_missing; /* handshake ACKs without the option */
	__u64 server_echo_wrong; /* handshake ACKs with another id / malformed */
	__u64 client_connects; /* connect()s seen */
	__u64 client_parsed; /* SYN-ACKs with a valid server_id */
	__u64 client_missing; /* SYN-ACKs without the option (wrong ExID/kind included) */
	__u64 client_malformed; /* SYN-ACKs with the option at a wrong length */
	__u64 client_zero; /* SYN-ACKs with server_id 0 (not echoed) */
	__u64 client_echoed; /* packets sent carrying the option */
	__u64 client_echoed_rst; /* of which RSTs */
	__u64 client_no_space; /* packets with no room left for the option */
	__u64 errors; /* helper failures (flags, storage, store) */
};

#endif /* FLOWPIN_SOCKOPS_SERVER_ID_H */
