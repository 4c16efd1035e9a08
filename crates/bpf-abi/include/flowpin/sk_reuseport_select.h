/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * flowpin sk_reuseport_select: layouts and constants shared by the BPF
 * program (sk_reuseport_select.bpf.c) and its Rust control layer
 * (flowpin_bpf_progs::sk_reuseport_select). The structs reach Rust through
 * the types libbpf-cargo generates from BTF, and struct fp_rp_stats also as
 * flowpin_bpf_abi::reuseport::Stats (checked against the BTF type by a unit
 * test of flowpin-bpf-progs); the #defines are re-stated in flowpin-bpf-abi
 * (`reuseport`), checked against this file by its tests/header_defines.rs.
 *
 * Socket array key scheme:   key = gen_index * FP_RP_MAX_SLOTS + slot
 *   gen_index = generation % FP_RP_MAX_GENS   (generation numbers start at 1)
 *   slot      = 0 .. nslots-1                 (one socket per worker / CPU)
 *
 * QUIC connection-ID layout (short header, RFC 9000 17.3; offsets from
 * <flowpin/tcp_opt.h>): the destination connection ID starts at byte
 * FLOWPIN_QUIC_SHORT_DCID_OFFSET of the UDP payload. Bytes
 * [cid_sock_offset, cid_sock_offset + 2) of the DCID carry the socket id,
 * big-endian: the socket-array key above. The default offset,
 * FP_RP_CID_DEFAULT_SOCK_OFFSET = 5, puts it right after the 4-byte
 * server_id of the flowpin CID layout (dcid[0] = 0x1?, dcid[1..5] =
 * server_id for the L4 load balancer; dcid[5..] belong to the server), so
 * one CID routes to the host (XDP LB) and then to the socket (this
 * program). A server puts the id of the socket that owns the connection
 * into every CID it issues; packets carrying it reach that socket with no
 * table lookup. Long-header packets (Initial: a client-chosen DCID) take the
 * UDP flow path.
 */
#ifndef FLOWPIN_SK_REUSEPORT_SELECT_H
#define FLOWPIN_SK_REUSEPORT_SELECT_H

#include <flowpin/tcp_opt.h>

#define FP_RP_MAX_GENS 8
#define FP_RP_MAX_SLOTS 64
#define FP_RP_SOCKS (FP_RP_MAX_GENS * FP_RP_MAX_SLOTS)
/* Index of the stats entry for events that belong to no generation. */
#define FP_RP_STATS_NO_GEN FP_RP_MAX_GENS
#define FP_RP_STATS_ENTRIES (FP_RP_MAX_GENS + 1)

/* Generation 0 means "none" (e.g. no live generation yet). */
#define FP_RP_GEN_NONE 0

/* State of a generation entry (kept in the gens map for every process of the group). */
#define FP_RP_STATE_EMPTY 0
#define FP_RP_STATE_WARMING 1
#define FP_RP_STATE_LIVE 2
#define FP_RP_STATE_DRAINING 3
#define FP_RP_STATE_RETIRED 4

/* How a new flow picks a slot of the live generation. */
#define FP_RP_MODE_HASH 0
#define FP_RP_MODE_CPU 1

/* Drop / fallback reasons (index into fp_rp_stats.drops). */
#define FP_RP_DROP_NO_LIVE 0      /* no live generation, or it has no slots */
#define FP_RP_DROP_NO_SOCKET 1    /* every slot of the live generation is empty */
#define FP_RP_DROP_MIGRATE 2      /* migration found no live socket: kernel hash fallback */
#define FP_RP_DROP_FLOW_GONE 3    /* a pinned UDP flow's socket is gone: flow re-homed */
#define FP_RP_DROP_REASONS 4

/* Largest DCID offset for the socket id (a DCID is at most 20 bytes). */
#define FP_RP_CID_MAX_OFFSET 18
/* Default DCID offset of the socket id: after the flowpin layout's server_id. */
#define FP_RP_CID_DEFAULT_SOCK_OFFSET (FLOWPIN_QUIC_CID_FLOWPIN_ID_OFFSET + 4)

struct fp_rp_config {
	__u32 tcp_mode;        /* FP_RP_MODE_* */
	__u32 udp_mode;        /* FP_RP_MODE_* */
	__u32 udp_affinity;    /* 1: keep UDP flows on their first socket (flow table) */
	__u32 quic_cid;        /* 1: route QUIC short-header packets by the CID socket id */
	__u32 cid_sock_offset; /* byte offset of the socket id in the DCID */
	/* Below: read by user space only (so a joining process learns the group). */
	__u32 proto;           /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 addr[16];         /* local address, IPv4 as ::ffff:a.b.c.d */
	__u16 port;            /* local port, host order */
	__u16 family;          /* 4 or 6 */
	__u32 flow_table_size; /* entries of `flows` */
	/* Group settings every controller process uses (so one that joins gets
	 * the group's, not its own defaults). */
	__u32 drain_deadline_ms; /* a retired generation keeps its UDP flows at most this long */
	__u32 drain_idle_ms;     /* a retired generation idle this long is removed */
};

struct fp_rp_gen {
	__u32 gen;    /* generation number owning this index, FP_RP_GEN_NONE if never used */
	__u32 nslots; /* slots used by the generation */
	__u32 state;  /* FP_RP_STATE_* */
	__u32 _pad;
	__u64 deadline_ns; /* draining: CLOCK_MONOTONIC deadline, 0 = none */
};

/* UDP flow key: remote and local address (IPv4 as ::ffff:a.b.c.d), ports in network order. */
struct fp_rp_flow_key {
	__u8 raddr[16];
	__u8 laddr[16];
	__u16 rport;
	__u16 lport;
};

struct fp_rp_flow {
	__u32 gen;
	__u32 slot;
	__u64 last_ns; /* bpf_ktime_get_coarse_ns() of the last packet */
};

struct fp_rp_stats {
	__u64 packets;   /* packets / connection requests delivered to the generation */
	__u64 new_flows; /* new TCP connections and new UDP flows given to the generation */
	__u64 migrated;  /* TCP requests migrated to the generation from a closed listener */
	__u64 cid_routed; /* QUIC short-header packets routed by CID */
	__u64 last_ns;   /* bpf_ktime_get_coarse_ns() of the last delivery */
	__u64 drops[FP_RP_DROP_REASONS];
};

#endif /* FLOWPIN_SK_REUSEPORT_SELECT_H */
