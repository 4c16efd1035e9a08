/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * flowpin XDP load balancer (xdp_lb): map keys/values, flags, stats layout,
 * encapsulation format and the flow hash. Shared by xdp_lb.bpf.c and (for the
 * encapsulation format) by the backend-side xdp_decap program. This file is
 * the single source of truth: Rust reads the structs through the types
 * libbpf-cargo generates from BTF (flowpin_bpf_progs::skel::xdp_lb::types),
 * the #defines are re-stated in flowpin-bpf-abi (`lb`, checked against this
 * file by its tests/header_defines.rs), and the inline functions (flow hash,
 * slots) are written once more in flowpin-bpf-abi, checked by privileged
 * golden tests that run both on the same packets.
 *
 * Encapsulation (what a backend receives):
 *   IPv4 inner, IPv4 backend: IPIP        eth | IPv4 (proto 4)   | inner IPv4 packet
 *   IPv6 inner, IPv6 backend: IP6IP6      eth | IPv6 (nh 41)     | inner IPv6 packet
 *   IPv4 inner, IPv6 backend: 4-in-6      eth | IPv6 (nh 4)      | inner IPv4 packet
 *   (IPv6 inner with an IPv4 backend is refused by the control plane.)
 * Outer header: IPv4 ihl 5, tos = inner tos, id 0, DF = inner DF, ttl =
 * inner ttl; IPv6 traffic class = inner tos/tc, flow label = flow hash &
 * 0xfffff, hop limit = inner ttl/hop limit. Outer source = configured prefix
 * with its host bits (last 32 bits for IPv6) taken from the flow hash, so
 * routers after the LB keep per-flow ECMP entropy. Ethernet: dst = next hop,
 * src = local MAC, an 802.1Q tag of the input is kept.
 */
#ifndef FLOWPIN_LB_H
#define FLOWPIN_LB_H

#include <linux/types.h>

/* VIP flags (flowpin_vip_meta.flags). */
#define FLOWPIN_VIP_PORT_AGNOSTIC (1u << 0) /* match any destination port (key port 0) */
#define FLOWPIN_VIP_SKIP_LRU_UDP (1u << 1)  /* UDP: Maglev only, no connection table */
#define FLOWPIN_VIP_SERVER_ID (1u << 2)     /* TCP: route by the server_id option */
#define FLOWPIN_VIP_QUIC (1u << 3)          /* UDP: QUIC, short header routed by CID */
#define FLOWPIN_VIP_ICMP_ECHO (1u << 4)     /* the ICMP entry of a VIP address: answer echo */

/* `state` of a direct-mapped table slot (vip_table, sid_table). */
#define FLOWPIN_SLOT_EMPTY 0
#define FLOWPIN_SLOT_ONE 1    /* the slot's only entry is inline */
#define FLOWPIN_SLOT_SHARED 2 /* several entries share the slot: look the key up in the hash map */

#define FLOWPIN_FAMILY_V4 4
#define FLOWPIN_FAMILY_V6 6

/* Bound of the IPv6 extension header walk (hop-by-hop, routing, dest opts, fragment). */
#define FLOWPIN_LB_MAX_EXT_HDRS 8

/* ICMP too-big replies quote this many bytes of the offending IP packet. */
#define FLOWPIN_LB_ICMP4_QUOTE 68
#define FLOWPIN_LB_ICMP6_QUOTE 248
#define FLOWPIN_LB_DEFAULT_TTL 64

/* Seed of the flow hash (fixed: every LB must hash a flow the same way). */
#define FLOWPIN_FLOW_HASH_SEED 0x666c6f77u /* "flow" */

/* Key of the `vips` map. IPv4: addr[0] holds the address, addr[1..3] = 0.
 * port in network order (0 for port-agnostic and ICMP entries). */
struct flowpin_vip_key {
	__u32 addr[4];
	__u16 port;
	__u8 proto;
	__u8 family;
};

struct flowpin_vip_meta {
	__u32 vip_id; /* index into the ring and vip_stats */
	__u32 flags;
};

/* Value of the `backends` array (index 0 is never a backend). family 0 = free. */
struct flowpin_backend {
	__u32 addr[4];
	__u8 family;
	__u8 pad[3];
};

/* Key of the `lru` connection table. Non-first fragments have ports 0. */
struct flowpin_flow_key {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* Direct-mapped VIP table (`vip_table`, an ARRAY: lookups need no hash
 * helper). slot = flowpin_vip_slot(key); state 1: this slot's only VIP is
 * `key`; state 2: several VIPs share the slot, look the key up in `vips`. */
#define FLOWPIN_VIP_SLOTS 4096
#define FLOWPIN_VIP_SLOT_SHIFT 20 /* 32 - log2(FLOWPIN_VIP_SLOTS) */
struct flowpin_vip_slot {
	struct flowpin_vip_key key;
	struct flowpin_vip_meta meta;
	__u32 state;
};

static __always_inline __u32 flowpin_vip_slot(const struct flowpin_vip_key *k)
{
	__u32 h = k->addr[0] ^ k->addr[1] ^ k->addr[2] ^ k->addr[3] ^
		  ((__u32)k->port | ((__u32)k->proto << 16) | ((__u32)k->family << 24));

	return (h * 0x9e3779b1u) >> FLOWPIN_VIP_SLOT_SHIFT;
}

/* Connection table (`conn`): a per-CPU, 4-way set-associative LRU cache,
 * one ARRAY of conn_sets * ncpus sets of one cache line each; CPU c uses sets
 * [c * conn_sets, (c+1) * conn_sets). A flow is identified by a 64-bit
 * fingerprint: its flow hash and a second, independent hash (seed
 * FLOWPIN_FLOW_HASH_SEED2) of the same 5-tuple. Each flow has two candidate
 * sets (FLOWPIN_CONN_SETS_PER_FLOW): A = hash & (conn_sets - 1) and
 * B = hash2 & (conn_sets - 1); a lookup tries A, then B.
 * `order` lists the ways from most to least recently used, 2 bits each
 * (bits 0-1 = MRU); 0 means the initial order 0xE4. A hit moves its way to
 * the front. `probation` has bit w set while way w holds a flow seen once:
 * an insert puts the flow on probation, a later hit confirms it.
 * An insert (of a flow in neither set) takes, in order: a free way of A,
 * a free way of B; a resident of A or B whose other set has a free way
 * moves there (one level of cuckoo relocation, skipped once the CPU's
 * table is 7/8 full: free ways are then too rare to be worth 8 reads) and
 * the flow takes its way;
 * the oldest probation entry of A, else of B, is evicted; a resident of A
 * or B moves to its other set, evicting the oldest probation entry there;
 * last, the LRU way of A (a confirmed eviction). An insert of a flow already
 * in A or B replaces its backend and keeps its probation state. */
#define FLOWPIN_CONN_WAYS 4
#define FLOWPIN_CONN_ORDER_INIT 0xE4
#define FLOWPIN_CONN_SETS_PER_FLOW 2
#define FLOWPIN_FLOW_HASH_SEED2 0x70696e21u /* "pin!" */
struct flowpin_conn_set {
	__u32 hash[FLOWPIN_CONN_WAYS];
	__u32 hash2[FLOWPIN_CONN_WAYS];
	__u32 backend[FLOWPIN_CONN_WAYS]; /* 0: empty way */
	__u32 order;
	__u32 probation; /* bit w: way w is on probation */
	__u32 pad[2];
};

/* Direct-mapped server_id table (`sid_table`, an ARRAY), same scheme as
 * the VIP table: state 1 = this slot's only route, state 2 = several routes
 * share the slot, look (vip_id, server_id) up in `server_ids`. */
#define FLOWPIN_SID_SLOTS 65536
#define FLOWPIN_SID_SLOT_SHIFT 16 /* 32 - log2(FLOWPIN_SID_SLOTS) */
struct flowpin_sid_slot {
	__u32 vip_id;
	__u32 server_id;
	__u32 backend;
	__u32 state;
};

static __always_inline __u32 flowpin_sid_slot(__u32 vip_id, __u32 server_id)
{
	return ((vip_id * 0x9e3779b1u) ^ server_id) * 0x85ebca6bu >> FLOWPIN_SID_SLOT_SHIFT;
}

/* Key of the `server_ids` map (server_id in host order). */
struct flowpin_sid_key {
	__u32 vip_id;
	__u32 server_id;
};

/* Pinned state (XdpLb::pin / open_pinned). FLOWPIN_LB_LAYOUT_VERSION is
 * bumped on any change to a pinned map's key, value or meaning; a pin
 * directory of another version is refused, never reused. */
#define FLOWPIN_LB_LAYOUT_VERSION 4
/* The same for a pinned xdp_decap (its `meta` array holds this number). */
#define FLOWPIN_DECAP_LAYOUT_VERSION 1

/* flowpin_lb_meta.flags */
#define FLOWPIN_LB_META_ICMP_ECHO (1u << 0) /* VIP addresses answer echo requests */
#define FLOWPIN_LB_META_SID_WARM_CONN (1u << 1) /* server_id-routed packets keep the connection table warm */

/* flowpin_backend_desc.state */
#define FLOWPIN_BACKEND_ACTIVE 0
#define FLOWPIN_BACKEND_DRAINING 1 /* out of the ring; reachable by server_id and the connection table */

/* Key of the `backend_descs` map: the control side's record of a VIP's
 * backend list (the program never reads it; the control state is rebuilt
 * from it when a process reopens the pins). */
struct flowpin_backend_desc_key {
	__u32 vip_id;
	__u32 pos; /* position in the VIP's backend list */
};

struct flowpin_backend_desc {
	__u32 addr[4];
	__u8 family;
	__u8 state;         /* FLOWPIN_BACKEND_* */
	__u8 has_server_id; /* 0: not routed by server_id */
	__u8 pad;
	__u32 weight;       /* Maglev weight as set (a draining backend has weight 0 in the ring) */
	__u32 server_id;
	__u32 backend;      /* global index in `backends` (what the ring and connection table hold) */
};

/* The one entry of the `meta` array of a pinned xdp_lb: layout version,
 * load-time sizes (a newer build loads its program with the same ones) and
 * the sizes of the pinned structs, checked on open. */
struct flowpin_lb_meta {
	__u32 layout_version;
	__u32 ring_size;
	__u32 max_vips;
	__u32 max_backends;
	__u32 max_server_ids;
	__u32 conn_sets;   /* sets per table */
	__u32 conn_tables; /* CPUs, or 1 when shared */
	__u32 flags;       /* FLOWPIN_LB_META_* */
	__u32 generation;  /* bumped by every committed change: other controllers resync */
	__u32 size_vip_key;
	__u32 size_vip_meta;
	__u32 size_backend;
	__u32 size_backend_desc;
	__u32 size_conn_set;
	__u32 size_sid_slot;
	__u32 size_lb_cfg;
};

/* Runtime configuration (the program's .data section, written by user space). */
struct flowpin_lb_cfg {
	__u8 local_mac[6];
	__u8 next_hop_mac[6];
	__u16 mtu;          /* L3 MTU of the egress link (outer packet limit) */
	__u8 tcpopt_layout; /* FLOWPIN_LAYOUT_* */
	__u8 tcpopt_kind;   /* option kind of FLOWPIN_LAYOUT_COMPACT */
	__u16 tcpopt_exid;  /* ExID of FLOWPIN_LAYOUT_RFC6994, host order */
	__u8 quic_cid_len;  /* server-chosen short-header DCID length */
	__u8 quic_lb;       /* QUIC-LB config byte (flowpin/tcp_opt.h), 0 = off */
	__u32 tun_src4;           /* outer IPv4 source prefix, host order */
	__u32 tun_src4_host_mask; /* host bits filled from the flow hash, host order */
	__u32 tun_src6[4];        /* outer IPv6 source prefix, network order */
	__u32 tun_src6_host_mask; /* host bits of the last 32 bits, host order */
	__u32 port_agnostic_vips; /* number of port-agnostic VIPs (0: skip the 2nd lookup) */
};

/* Per-VIP connection-ID configuration (`cid_cfgs`, an ARRAY of
 * max_vips * FLOWPIN_CID_CFGS_PER_VIP entries, index
 * vip_id * FLOWPIN_CID_CFGS_PER_VIP + slot). Slot FLOWPIN_CID_MODE_SLOT names
 * the layout the VIP declared (FLOWPIN_CID_ANY, all zero: none declared,
 * the legacy decode of every layout with lb_cfg.quic_cid_len / quic_lb, long
 * headers hashed). With FLOWPIN_CID_QUIC_LB, slots 0..6 are its live QUIC-LB
 * configurations, the slot being the config rotation codepoint (the top 3
 * bits of the CID's first octet); an empty slot (layout 0), codepoint 0b111
 * and anything that does not decode fall back to the hash. Only the declared
 * layout is decoded, in short headers and in the long headers (Initial,
 * 0-RTT, Handshake of QUIC v1/v2) whose DCID the server may have chosen. */
#define FLOWPIN_CID_CFGS_PER_VIP 8
#define FLOWPIN_CID_MODE_SLOT 7
/* flowpin_cid_cfg.layout */
#define FLOWPIN_CID_ANY 0         /* mode slot: nothing declared (legacy); config slot: empty */
#define FLOWPIN_CID_FLOWPIN 1     /* mode slot: the flowpin layout (tcp_opt.h) */
#define FLOWPIN_CID_KATRAN 2      /* mode slot: Katran v1-v3 */
#define FLOWPIN_CID_QUIC_LB 3     /* mode slot: QUIC-LB; config slot: plaintext */
#define FLOWPIN_CID_QUIC_LB_ENC 4 /* config slot: QUIC-LB encrypted (AES-128-ECB) */
/* flowpin_cid_cfg.engine of an encrypted configuration */
#define FLOWPIN_AES_CONST_TIME 0 /* kernel crypto kfuncs, ecb(aes-fixed-time) */
#define FLOWPIN_AES_TABLE 1      /* table-based AES in BPF: faster, NOT constant-time */
/* QUIC-LB encrypted: one AES block when server ID + nonce is 16 octets. */
#define FLOWPIN_QUIC_LB_SINGLE_PASS_LEN 16
struct flowpin_cid_cfg {
	__u8 layout;    /* FLOWPIN_CID_* */
	__u8 cid_len;   /* DCID length (QUIC-LB: 1 + sid_len + nonce_len) */
	__u8 sid_len;   /* QUIC-LB: server ID octets (1..4) */
	__u8 nonce_len; /* QUIC-LB: nonce octets (4..18, sid_len + nonce_len <= 19) */
	__u8 engine;    /* FLOWPIN_AES_* */
	__u8 pad[3];
	__u8 key[16];   /* QUIC-LB encrypted: the AES-128 key (the map is pinned 0600) */
	__u32 rk[44];   /* FLOWPIN_AES_TABLE: encryption round keys (big-endian words) */
	__u32 drk[44];  /* FLOWPIN_AES_TABLE: decryption round keys (equivalent inverse cipher) */
};

/* Context of xdp_lb's SEC("syscall") program xdp_lb_crypto_setup (run
 * with BPF_PROG_TEST_RUN): install (install = 1, with key) or clear the
 * constant-time AES context of `cid_crypto[idx]`; err: 0 or -errno. */
struct flowpin_crypto_args {
	__u32 idx;
	__u32 install;
	__u8 key[16];
	__s32 err;
};

/* Per-VIP per-CPU counters (`vip_stats`, indexed by vip_id). */
struct flowpin_vip_stats {
	__u64 packets;
	__u64 bytes;
	__u64 lru_hit;
	__u64 lru_miss; /* TCP non-SYN / UDP packets not in the table */
	__u64 new_flows; /* backend chosen by the Maglev ring */
	__u64 sid_routed;
	__u64 sid_fallback_unknown; /* server_id never routed here (or retired long ago) */
	__u64 sid_fallback_zero;
	__u64 sid_fallback_malformed;
	__u64 sid_missing; /* no server_id option / no CID layout */
	__u64 quic_long_header;
	__u64 too_big;
	__u64 unknown_backend;
	__u64 sid_fallback_removed; /* server_id of a backend removed from this VIP (`sid_retired`) */
};

/* Per-backend per-CPU counters (`backend_stats`, indexed by the global
 * backend index): packets forwarded (encapsulated, XDP_TX) to the backend,
 * bytes = the frame length as received. Zeroed when an index is allocated. */
struct flowpin_backend_stats {
	__u64 packets;
	__u64 bytes;
};

/* `sid_retired` (an LRU hash, key struct flowpin_sid_key, value __u8): the
 * server_ids whose backend was removed from a VIP, written by the control
 * plane, deleted when the server_id is routed again; looked up only when a
 * server_id has no route, to count sid_fallback_removed instead of
 * sid_fallback_unknown. */
#define FLOWPIN_SID_RETIRED_ENTRIES 4096

/* Global per-CPU counters (`lb_stats`, one entry). */
struct flowpin_lb_stats {
	__u64 drop_malformed;
	__u64 drop_unknown_backend;
	__u64 drop_too_big; /* too big and no ICMP could be built */
	__u64 icmp_too_big_sent;
	__u64 encap_error;
	__u64 icmp_echo_replies;
	__u64 pass_fragment_no_vip; /* non-first fragment, no port-agnostic VIP */
	__u64 pass_ext_hdr_limit;   /* IPv6 extension chain longer than the bound */
	/* Connection table (counted on the CPU whose table it is). */
	__u64 new_flows;           /* flows inserted (each starts on probation) */
	__u64 confirmations;       /* probation entries hit again: confirmed */
	__u64 probation_evictions; /* probation entries evicted by an insert */
	__u64 confirmed_evictions; /* confirmed entries evicted by an insert */
	__u64 relocations;         /* residents moved to their other set */
	__u64 conn_entries;        /* a gauge: occupied ways of this CPU's table (0 after a clear) */
};

/* The flow hash: murmur3_32 over 32-bit words, each read little-endian from
 * the packet bytes (what a plain load gives on x86/arm64 BPF):
 *   IPv4: src, dst, ports, proto      IPv6: src[0..4], dst[0..4], ports, proto
 * ports = sport bytes | dport bytes << 16 (the raw network-order bytes), proto
 * = IP protocol. Mirror: flow_hash.rs. */
static __always_inline __u32 flowpin_rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 flowpin_mm3_round(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51u;
	k = flowpin_rotl32(k, 15);
	k *= 0x1b873593u;
	h ^= k;
	h = flowpin_rotl32(h, 13);
	return h * 5 + 0xe6546b64u;
}

static __always_inline __u32 flowpin_mm3_final(__u32 h, __u32 nwords)
{
	h ^= nwords * 4;
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

#endif /* FLOWPIN_LB_H */
