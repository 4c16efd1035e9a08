/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/* xdp_lb: load-time sizes, runtime configuration (lb_cfg), maps, the parsed
 * packet, counters, flow hash and backend lookup, shared by every xdp_lb_*.h. */
#ifndef FLOWPIN_XDP_LB_MAPS_H
#define FLOWPIN_XDP_LB_MAPS_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "bpf_common.h"
#include <flowpin/flowpin_lb.h>

/* Sizes fixed at load (the Rust loader sets them and the map sizes). */
const volatile __u32 ring_size = 65537;
const volatile __u32 conn_sets = 1; /* sets per CPU, a power of two */
const volatile __u32 conn_percpu = 1; /* 0: one table shared by all CPUs */
/* 1: a packet routed by server_id also inserts its flow into the connection
 * table on a miss, so its packets without the option (kernel RSTs, TIME_WAIT
 * ACKs, ACKs with no option room) follow it after the table was lost. */
const volatile __u32 sid_warm_conn = 1;

/* Runtime configuration, written by user space through the mmapped .data. */
struct flowpin_lb_cfg lb_cfg = {
	.mtu = 1500,
	.tcpopt_layout = FLOWPIN_LAYOUT_RFC6994,
	.tcpopt_kind = FLOWPIN_TCPOPT_EXP_KIND,
	.tcpopt_exid = FLOWPIN_TCPOPT_DEFAULT_EXID,
	.quic_cid_len = FLOWPIN_QUIC_CID_MIN_LEN,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flowpin_vip_key);
	__type(value, struct flowpin_vip_meta);
	__uint(max_entries, 512);
} vips SEC(".maps");

/* max_entries = max_vips * ring_size, set at load. Value: backend index (0 = none). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct flowpin_backend);
	__uint(max_entries, 4096);
} backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct flowpin_vip_slot);
	__uint(max_entries, FLOWPIN_VIP_SLOTS);
} vip_table SEC(".maps");

/* Connection table: per-CPU 4-way set-associative LRU (see flowpin_lb.h).
 * max_entries = conn_sets * possible CPUs, from the memory budget at load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct flowpin_conn_set);
	__uint(max_entries, 1);
} conn SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flowpin_sid_key);
	__type(value, __u32);
	__uint(max_entries, 65536);
} server_ids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct flowpin_sid_slot);
	__uint(max_entries, FLOWPIN_SID_SLOTS);
} sid_table SEC(".maps");

/* Control-side records, never read by the program: the VIPs' backend lists
 * (max_entries set at load) and the pinned layout (`meta`). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flowpin_backend_desc_key);
	__type(value, struct flowpin_backend_desc);
	__uint(max_entries, 1);
} backend_descs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct flowpin_lb_meta);
	__uint(max_entries, 1);
} meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct flowpin_vip_stats);
	__uint(max_entries, 512);
} vip_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct flowpin_lb_stats);
	__uint(max_entries, 1);
} lb_stats SEC(".maps");

/* max_entries = max_backends, set at load. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct flowpin_backend_stats);
	__uint(max_entries, 4096);
} backend_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flowpin_sid_key);
	__type(value, __u8);
	__uint(max_entries, FLOWPIN_SID_RETIRED_ENTRIES);
} sid_retired SEC(".maps");

/* Per-VIP connection-ID configurations (flowpin_lb.h, "Per-VIP
 * connection-ID configuration"); max_entries = max_vips *
 * FLOWPIN_CID_CFGS_PER_VIP, set at load. Holds QUIC-LB keys: pinned 0600. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct flowpin_cid_cfg);
	__uint(max_entries, 512 * FLOWPIN_CID_CFGS_PER_VIP);
} cid_cfgs SEC(".maps");

/* Parsed packet. */
struct fp_pkt {
	struct flowpin_flow_key flow;
	__u32 l3_off;
	__u32 l4_off;
	__u32 frame_len;
	__u8 family;
	__u8 tcp_flags;
	__u8 nonfirst; /* non-first fragment: no L4 header */
	__u8 tos;
	__u8 ttl;
	__u8 df;
	__u8 vlan;
	__u8 pad;
	__be16 vlan_tci;
};

enum {
	FP_CONTINUE = -1,
};

#define FP_TCP_SYN 0x02
#define FP_TCP_ACK 0x10

static __always_inline struct flowpin_lb_stats *fp_gstats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&lb_stats, &zero);
}

static __always_inline int fp_drop_malformed(void)
{
	struct flowpin_lb_stats *g = fp_gstats();

	if (g)
		g->drop_malformed++;
	return XDP_DROP;
}

static __always_inline __u32 fp_flow_hash(const struct flowpin_flow_key *f, int v6, __u32 seed)
{
	__u32 h = seed;
	__u32 n;

	if (v6) {
		h = flowpin_mm3_round(h, f->src[0]);
		h = flowpin_mm3_round(h, f->src[1]);
		h = flowpin_mm3_round(h, f->src[2]);
		h = flowpin_mm3_round(h, f->src[3]);
		h = flowpin_mm3_round(h, f->dst[0]);
		h = flowpin_mm3_round(h, f->dst[1]);
		h = flowpin_mm3_round(h, f->dst[2]);
		h = flowpin_mm3_round(h, f->dst[3]);
		n = 10;
	} else {
		h = flowpin_mm3_round(h, f->src[0]);
		h = flowpin_mm3_round(h, f->dst[0]);
		n = 4;
	}
	h = flowpin_mm3_round(h, (__u32)f->sport | ((__u32)f->dport << 16));
	h = flowpin_mm3_round(h, f->proto);
	return flowpin_mm3_final(h, n);
}

static __always_inline const struct flowpin_backend *fp_backend(__u32 idx)
{
	struct flowpin_backend *be = bpf_map_lookup_elem(&backends, &idx);

	if (!be || be->family == 0)
		return NULL;
	return be;
}

#endif /* FLOWPIN_XDP_LB_MAPS_H */
