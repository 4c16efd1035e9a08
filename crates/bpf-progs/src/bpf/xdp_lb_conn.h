/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/* xdp_lb connection table: a per-CPU 4-way set-associative LRU cache in an
 * ARRAY (layout and placement rules in flowpin_lb.h); ways ordered by a
 * 2-bit-per-way LRU word; two candidate sets per flow (A from the flow hash,
 * B from the second hash), one level of cuckoo relocation, probation for
 * flows seen once. Mirror: crates/lb-model/src/conn.rs. */
#ifndef FLOWPIN_XDP_LB_CONN_H
#define FLOWPIN_XDP_LB_CONN_H

#include "xdp_lb_maps.h"

#define FP_CONN_NONE 4 /* "no way" */

/* Branch layout hints: the hit path falls through, the rare paths jump. */
#ifndef fp_likely
#define fp_likely(x) __builtin_expect(!!(x), 1)
#define fp_unlikely(x) __builtin_expect(!!(x), 0)
#endif

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

static __always_inline __u32 fp_conn_order(const struct flowpin_conn_set *cs)
{
	return cs->order ? cs->order : FLOWPIN_CONN_ORDER_INIT;
}

/* Index of this CPU's first set. */
static __always_inline __u32 fp_conn_base(void)
{
	return conn_percpu ? bpf_get_smp_processor_id() * conn_sets : 0;
}

static __always_inline struct flowpin_conn_set *fp_conn_set_at(__u32 base, __u32 i)
{
	__u32 idx = base + i;

	return bpf_map_lookup_elem(&conn, &idx);
}

/* Set A of a flow (this CPU's table). */
static __always_inline struct flowpin_conn_set *fp_conn_set(__u32 hash)
{
	return fp_conn_set_at(fp_conn_base(), hash & (conn_sets - 1));
}

/* A hit in one set: moves the way to the front, confirms a probation
 * entry. The backend index, or 0. */
static __always_inline __u32 fp_conn_hit(struct flowpin_conn_set *cs, __u32 hash, __u32 hash2)
{
	struct flowpin_lb_stats *g;
	__u32 w, o;

#pragma unroll
	for (w = 0; w < FLOWPIN_CONN_WAYS; w++) {
		if (cs->hash[w] == hash && cs->hash2[w] == hash2 && cs->backend[w]) {
			o = fp_conn_order(cs);
			if (fp_unlikely((o & 3) != w))
				cs->order = fp_order_front(o, w);
			if (fp_unlikely(cs->probation & (1u << w))) {
				cs->probation &= ~(1u << w);
				g = fp_gstats();
				if (g)
					g->confirmations++;
			}
			return cs->backend[w];
		}
	}
	return 0;
}

/* Connection-table lookup in set A (`cs`), then in set B: the backend
 * index, or 0. */
static __always_inline __u32 fp_conn_lookup(struct flowpin_conn_set *cs, __u32 hash, __u32 hash2)
{
	struct flowpin_conn_set *b;
	__u32 mask = conn_sets - 1, r;

	r = fp_conn_hit(cs, hash, hash2);
	if (fp_likely(r) || (hash2 & mask) == (hash & mask))
		return r;
	b = fp_conn_set_at(fp_conn_base(), hash2 & mask);
	if (!b)
		return 0;
	return fp_conn_hit(b, hash, hash2);
}

/* The flow's way in `cs`, or FP_CONN_NONE. */
static __always_inline __u32 fp_conn_find(const struct flowpin_conn_set *cs, __u32 hash,
					  __u32 hash2)
{
#pragma unroll
	for (__u32 w = 0; w < FLOWPIN_CONN_WAYS; w++)
		if (cs->hash[w] == hash && cs->hash2[w] == hash2 && cs->backend[w])
			return w;
	return FP_CONN_NONE;
}

/* The first free way of `cs`, or FP_CONN_NONE. */
static __always_inline __u32 fp_conn_free(const struct flowpin_conn_set *cs)
{
#pragma unroll
	for (__u32 w = 0; w < FLOWPIN_CONN_WAYS; w++)
		if (!cs->backend[w])
			return w;
	return FP_CONN_NONE;
}

/* The least recently used probation way of `cs`, or FP_CONN_NONE. */
static __always_inline __u32 fp_conn_oldest_probation(const struct flowpin_conn_set *cs)
{
	__u32 o = fp_conn_order(cs), p = cs->probation, w;

#pragma unroll
	for (int i = 3; i >= 0; i--) {
		w = (o >> (2 * i)) & 3;
		if (p & (1u << w))
			return w;
	}
	return FP_CONN_NONE;
}

/* Writes a flow into way `w` of `cs` at the front of its order. */
static __always_inline void fp_conn_put(struct flowpin_conn_set *cs, __u32 w, __u32 hash,
					__u32 hash2, __u32 backend, __u32 probation)
{
	w &= 3;
	cs->hash[w] = hash;
	cs->hash2[w] = hash2;
	cs->backend[w] = backend;
	cs->probation = (cs->probation & ~(1u << w)) | (probation << w);
	cs->order = fp_order_front(fp_conn_order(cs), w);
}

/* One level of cuckoo relocation from `cs` (set index `si`): the first
 * resident (way 0..3) whose other set has a free way (evict == 0) or a
 * probation way (evict == 1) moves there (that probation entry is
 * evicted). The way freed in `cs`, or FP_CONN_NONE. */
static __always_inline __u32 fp_conn_relocate(struct flowpin_conn_set *cs, __u32 si, __u32 base,
					      __u32 evict, struct flowpin_lb_stats *g)
{
	__u32 mask = conn_sets - 1, alt, t;
	struct flowpin_conn_set *o;

#pragma unroll
	for (__u32 w = 0; w < FLOWPIN_CONN_WAYS; w++) {
		alt = cs->hash[w] & mask;
		if (alt == si)
			alt = cs->hash2[w] & mask;
		if (alt == si)
			continue;
		o = fp_conn_set_at(base, alt);
		if (!o)
			continue;
		t = evict ? fp_conn_oldest_probation(o) : fp_conn_free(o);
		if (t == FP_CONN_NONE)
			continue;
		if (evict)
			g->probation_evictions++;
		fp_conn_put(o, t, cs->hash[w], cs->hash2[w], cs->backend[w],
			    (cs->probation >> w) & 1);
		g->relocations++;
		return w;
	}
	return FP_CONN_NONE;
}

/* Inserts (or updates) a flow; `cs` is its set A.
 * A set that is full stays full (ways are only replaced, and a relocation
 * out of a set refills the way at once) until the table is cleared, and a
 * flow lands in its set B only while its set A is full: so when set A has a
 * free way, the flow is not in set B and B need not be read. */
static __always_inline void fp_conn_insert(struct flowpin_conn_set *cs, __u32 hash, __u32 hash2,
					   __u32 backend)
{
	__u32 base = fp_conn_base(), mask = conn_sets - 1, ia = hash & mask, ib = hash2 & mask;
	struct flowpin_conn_set *b = NULL, *s;
	struct flowpin_lb_stats *g;
	__u32 w;

	/* The flow may sit in one of its sets already (a SYN of a known flow). */
	w = fp_conn_find(cs, hash, hash2);
	if (w != FP_CONN_NONE) {
		fp_conn_put(cs, w, hash, hash2, backend, (cs->probation >> (w & 3)) & 1);
		return;
	}
	g = fp_gstats();
	if (!g)
		return;
	w = fp_conn_free(cs);
	if (fp_likely(w != FP_CONN_NONE)) {
		g->new_flows++;
		g->conn_entries++;
		fp_conn_put(cs, w, hash, hash2, backend, 1);
		return;
	}
	if (ib != ia)
		b = fp_conn_set_at(base, ib);
	if (b) {
		w = fp_conn_find(b, hash, hash2);
		if (w != FP_CONN_NONE) {
			fp_conn_put(b, w, hash, hash2, backend, (b->probation >> (w & 3)) & 1);
			return;
		}
	}
	g->new_flows++;
	s = cs;
	if (b) {
		s = b;
		w = fp_conn_free(b);
	}
	/* Relocation into a free way: only while the table is below 7/8 full. */
	if (w == FP_CONN_NONE && g->conn_entries * 2 < (__u64)conn_sets * 7) {
		s = cs;
		w = fp_conn_relocate(cs, ia, base, 0, g);
		if (w == FP_CONN_NONE && b) {
			s = b;
			w = fp_conn_relocate(b, ib, base, 0, g);
		}
	}
	if (w != FP_CONN_NONE)
		g->conn_entries++; /* a free way taken */
	if (w == FP_CONN_NONE) {
		s = cs;
		w = fp_conn_oldest_probation(cs);
		if (w == FP_CONN_NONE && b) {
			s = b;
			w = fp_conn_oldest_probation(b);
		}
		if (w != FP_CONN_NONE)
			g->probation_evictions++;
	}
	if (w == FP_CONN_NONE) {
		s = cs;
		w = fp_conn_relocate(cs, ia, base, 1, g);
	}
	if (w == FP_CONN_NONE && b) {
		s = b;
		w = fp_conn_relocate(b, ib, base, 1, g);
	}
	if (w == FP_CONN_NONE) {
		s = cs;
		w = (fp_conn_order(cs) >> 6) & 3;
		g->confirmed_evictions++;
	}
	fp_conn_put(s, w, hash, hash2, backend, 1);
}

#endif /* FLOWPIN_XDP_LB_CONN_H */
