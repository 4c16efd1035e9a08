/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * Types and counter indexes of sockops_server_id.bpf.c. The Rust module
 * (src/sockops_server_id.rs, `mod idx`) mirrors the counter indexes: change
 * both together.
 */
#ifndef FLOWPIN_SOCKOPS_SERVER_ID_H
#define FLOWPIN_SOCKOPS_SERVER_ID_H

#include <linux/types.h>

#define FLOWPIN_SOCKOPS_MAX_PORTS 64
#define FLOWPIN_SOCKOPS_MAX_ADDRS 64

/* Key of the server_addrs map: an IPv6 address, IPv4 as ::ffff:a.b.c.d. */
struct flowpin_sockops_addr {
	__u32 addr32[4];
};

/* Indexes of the per-CPU `counters` array. */
enum flowpin_sockops_counter {
	/* server role */
	FLOWPIN_SOCKOPS_SERVER_LISTEN_MATCHED = 0, /* listeners on a configured port */
	FLOWPIN_SOCKOPS_SERVER_LISTEN_SKIPPED = 1, /* listeners on another port */
	FLOWPIN_SOCKOPS_SERVER_WRITTEN = 2,        /* SYN-ACKs that carry our option */
	FLOWPIN_SOCKOPS_SERVER_ADDR_SKIPPED = 3,   /* SYN-ACKs from an unconfigured local address */
	FLOWPIN_SOCKOPS_SERVER_NO_SPACE = 4,       /* SYN-ACKs with no room left for the option */
	FLOWPIN_SOCKOPS_SERVER_ECHO_OK = 5,        /* handshake ACKs echoing our server_id */
	FLOWPIN_SOCKOPS_SERVER_ECHO_MISSING = 6,   /* handshake ACKs without the option */
	FLOWPIN_SOCKOPS_SERVER_ECHO_WRONG = 7,     /* handshake ACKs with another id / malformed */
	/* client role */
	FLOWPIN_SOCKOPS_CLIENT_CONNECTS = 8,   /* connect()s seen */
	FLOWPIN_SOCKOPS_CLIENT_PARSED = 9,     /* SYN-ACKs with a valid server_id */
	FLOWPIN_SOCKOPS_CLIENT_MISSING = 10,   /* SYN-ACKs without the option (wrong ExID/kind included) */
	FLOWPIN_SOCKOPS_CLIENT_MALFORMED = 11, /* SYN-ACKs with the option at a wrong length */
	FLOWPIN_SOCKOPS_CLIENT_ZERO = 12,      /* SYN-ACKs with server_id 0 (not echoed) */
	FLOWPIN_SOCKOPS_CLIENT_ECHOED = 13,    /* packets sent carrying the option */
	FLOWPIN_SOCKOPS_CLIENT_ECHOED_RST = 14, /* of which RSTs */
	FLOWPIN_SOCKOPS_CLIENT_NO_SPACE = 15,  /* packets with no room left for the option */
	/* both */
	FLOWPIN_SOCKOPS_ERRORS = 16, /* helper failures (flags, storage, store) */
	FLOWPIN_SOCKOPS_NR_COUNTERS = 17,
};

#endif /* FLOWPIN_SOCKOPS_SERVER_ID_H */
