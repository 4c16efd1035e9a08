/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/* xdp_lb connection table: a per-CPU 4-way set-associative LRU cache in an
 * ARRAY (layout in flowpin_lb.h); ways ordered by a 2-bit-per-way LRU word. */
#ifndef FLOWPIN_XDP_LB_CONN_H
#define FLOWPIN_XDP_LB_CONN_H

#include "xdp_lb_maps.h"

static __always_inline __u32 fp_order_front(__u32 o, __u32 w)
{
	__u32 e0 = o & 3, e1 = (o >> 2) & 3, e2 = (o >> 4) & 3, e3 = (o >> 6) & 3;

	if (w == e0)
		return o;
	if (w == e1)
		return w | (e0 << 2) | (e2 << 4) | (e3 << 6);
	if (w == e2)
		return w | (e0 << 2) | (e1 << 4) | (e3 << 6);
	return w | (e0 << 2) | (e1 << 4) | (e2 << 6);
}

static __always_inline struct flowpin_conn_set *fp_conn_set(__u32 hash)
{
	__u32 idx = hash & (conn_sets - 1);

	if (conn_percpu)
		idx += bpf_get_smp_processor_id() * conn_sets;

	return bpf_map_lookup_elem(&conn, &idx);
}

/* Connection-table lookup: the backend index, or 0. */
static __always_inline __u32 fp_conn_lookup(struct flowpin_conn_set *cs, __u32 hash, __u32 hash2)
{
	__u32 w, o;

#pragma unroll
	for (w = 0; w < FLOWPIN_CONN_WAYS; w++) {
		if (cs->hash[w] == hash && cs->hash2[w] == hash2 && cs->backend[w]) {
			o = cs->order ? cs->order : FLOWPIN_CONN_ORDER_INIT;
			if ((o & 3) != w)
				cs->order = fp_order_front(o, w);
			return cs->backend[w];
		}
	}
	return 0;
}

static __always_inline void fp_conn_insert(struct flowpin_conn_set *cs, __u32 hash, __u32 hash2,
					   __u32 backend)
{
	__u32 o = cs->order ? cs->order : FLOWPIN_CONN_ORDER_INIT;
	__u32 w = (o >> 6) & 3;

	/* The flow may sit in another way already (a SYN of a known flow). */
#pragma unroll
	for (__u32 i = 0; i < FLOWPIN_CONN_WAYS; i++) {
		if (cs->hash[i] == hash && cs->hash2[i] == hash2 && cs->backend[i]) {
			w = i;
			break;
		}
	}
	cs->hash[w & 3] = hash;
	cs->hash2[w & 3] = hash2;
	cs->backend[w & 3] = backend;
	cs->order = fp_order_front(o, w & 3);
}

#endif /* FLOWPIN_XDP_LB_CONN_H */
