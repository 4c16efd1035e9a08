// SPDX-License-Identifier: (MIT OR Apache-2.0)
// flowpin sk_reuseport_select: choose the socket of a SO_REUSEPORT group for
// every TCP connection request and UDP packet, by *generation* (release) and
// slot (worker), so a new release takes over with no refused connection and
// no misrouted UDP/QUIC packet. See sk_reuseport_select.h for the layouts.
//
// Attached with SO_ATTACH_REUSEPORT_EBPF; its section "sk_reuseport/migrate"
// gives it expected_attach_type BPF_SK_REUSEPORT_SELECT_OR_MIGRATE, so it
// also runs (md->migrating_sk != NULL) when a listener closes with requests
// in its queues, and moves them to the live generation.
//
// A socket that is in the reuseport group but not in `socks` is never
// chosen: every path either selects from `socks` or drops (SK_DROP), never
// SK_PASS without a selection, which would let the kernel hash over the
// whole group. The one exception is migration with no live socket at all,
// where the kernel's hash fallback beats resetting the request.
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#include "bpf_common.h"
#include <bpf/bpf_endian.h>

#include <flowpin/sk_reuseport_select.h>

struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__uint(max_entries, FP_RP_SOCKS);
	__type(key, __u32);
	__type(value, __u64);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} live SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fp_rp_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FP_RP_MAX_GENS);
	__type(key, __u32);
	__type(value, struct fp_rp_gen);
} gens SEC(".maps");

/* Size set from the Rust config before load. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fp_rp_flow_key);
	__type(value, struct fp_rp_flow);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FP_RP_STATS_ENTRIES);
	__type(key, __u32);
	__type(value, struct fp_rp_stats);
} stats SEC(".maps");

static __always_inline struct fp_rp_stats *stats_of(__u32 idx)
{
	return bpf_map_lookup_elem(&stats, &idx);
}

static __always_inline void count_drop(__u32 idx, __u32 reason)
{
	struct fp_rp_stats *s = stats_of(idx);

	if (s && reason < FP_RP_DROP_REASONS)
		s->drops[reason]++;
}

/* The gens entry of generation `gen`, or NULL if the index now belongs to another one. */
static __always_inline struct fp_rp_gen *gen_entry(__u32 gen, __u32 *idx)
{
	struct fp_rp_gen *g;

	if (gen == FP_RP_GEN_NONE)
		return NULL;
	*idx = gen % FP_RP_MAX_GENS;
	g = bpf_map_lookup_elem(&gens, idx);
	if (!g || g->gen != gen || g->state == FP_RP_STATE_RETIRED || g->state == FP_RP_STATE_EMPTY)
		return NULL;
	return g;
}

/*
 * Selects a socket of the live generation, starting at slot `start` and
 * probing the following slots if a socket is gone. Returns the slot or -1.
 * With `count_fail`, a failure is counted as a drop (NO_LIVE / NO_SOCKET);
 * the migration path counts its own reason instead (nothing is dropped
 * there: the kernel falls back to its hash).
 */
static __always_inline int select_live(struct sk_reuseport_md *md, __u32 live_gen, __u32 start,
				       __u32 *gen_idx, int count_fail)
{
	struct fp_rp_gen *g = gen_entry(live_gen, gen_idx);
	__u32 n, i;

	if (!g || g->nslots == 0) {
		if (count_fail)
			count_drop(FP_RP_STATS_NO_GEN, FP_RP_DROP_NO_LIVE);
		return -1;
	}
	n = g->nslots;
	if (n > FP_RP_MAX_SLOTS)
		n = FP_RP_MAX_SLOTS;
	start %= n;
	for (i = 0; i < FP_RP_MAX_SLOTS; i++) {
		__u32 slot, key;

		if (i >= n)
			break;
		slot = start + i;
		if (slot >= n)
			slot -= n;
		key = *gen_idx * FP_RP_MAX_SLOTS + slot;
		if (bpf_sk_select_reuseport(md, &socks, &key, 0) == 0)
			return slot;
	}
	if (count_fail)
		count_drop(*gen_idx, FP_RP_DROP_NO_SOCKET);
	return -1;
}

static __always_inline __u32 pick_start(struct sk_reuseport_md *md, __u32 mode)
{
	if (mode == FP_RP_MODE_CPU)
		return bpf_get_smp_processor_id();
	return md->hash;
}

static __always_inline void delivered(__u32 idx, int new_flow)
{
	struct fp_rp_stats *s = stats_of(idx);

	if (s) {
		s->packets++;
		if (new_flow)
			s->new_flows++;
		s->last_ns = bpf_ktime_get_coarse_ns();
	}
}

/* QUIC short header: route by the socket id in the DCID. 1 = selected. */
static __always_inline int route_quic(struct sk_reuseport_md *md, const struct fp_rp_config *cfg)
{
	__u8 first;
	__u8 id[2];
	__u32 off = cfg->cid_sock_offset, key, idx;
	struct fp_rp_gen *g;
	struct fp_rp_stats *s;

	if (off > FP_RP_CID_MAX_OFFSET)
		return 0;
	/* md->data is the UDP header (8 bytes); the QUIC packet follows. */
	if (bpf_skb_load_bytes(md, 8, &first, 1))
		return 0;
	/* Long header (Initial, Handshake, 0-RTT, Retry) or not QUIC: flow path. */
	if (first & FLOWPIN_QUIC_LONG_HEADER_BIT)
		return 0;
	if (bpf_skb_load_bytes(md, 8 + FLOWPIN_QUIC_SHORT_DCID_OFFSET + off, id, 2))
		return 0;
	key = ((__u32)id[0] << 8) | id[1];
	if (key >= FP_RP_SOCKS)
		return 0;
	idx = key / FP_RP_MAX_SLOTS;
	g = bpf_map_lookup_elem(&gens, &idx);
	if (!g || g->state == FP_RP_STATE_EMPTY || g->state == FP_RP_STATE_RETIRED)
		return 0;
	if (bpf_sk_select_reuseport(md, &socks, &key, 0))
		return 0;
	s = stats_of(idx);
	if (s) {
		s->packets++;
		s->cid_routed++;
		s->last_ns = bpf_ktime_get_coarse_ns();
	}
	return 1;
}

/* Fills the UDP flow key from the IP and UDP headers. 0 on success. */
static __always_inline int flow_key(struct sk_reuseport_md *md, struct fp_rp_flow_key *k)
{
	void *data = md->data, *data_end = md->data_end;
	__u16 *ports = data;

	if (data + 4 > data_end)
		return -1;
	k->rport = ports[0];
	k->lport = ports[1];
	if (md->eth_protocol == bpf_htons(ETH_P_IP)) {
		__u8 a[8];

		/* saddr at 12, daddr at 16 of the IPv4 header */
		if (bpf_skb_load_bytes_relative(md, 12, a, 8, BPF_HDR_START_NET))
			return -1;
		k->raddr[10] = 0xff;
		k->raddr[11] = 0xff;
		__builtin_memcpy(&k->raddr[12], &a[0], 4);
		k->laddr[10] = 0xff;
		k->laddr[11] = 0xff;
		__builtin_memcpy(&k->laddr[12], &a[4], 4);
		return 0;
	}
	if (md->eth_protocol == bpf_htons(ETH_P_IPV6)) {
		/* saddr at 8, daddr at 24 of the IPv6 header */
		if (bpf_skb_load_bytes_relative(md, 8, k->raddr, 16, BPF_HDR_START_NET))
			return -1;
		if (bpf_skb_load_bytes_relative(md, 24, k->laddr, 16, BPF_HDR_START_NET))
			return -1;
		return 0;
	}
	return -1;
}

static __always_inline int handle_udp(struct sk_reuseport_md *md, const struct fp_rp_config *cfg,
				      __u32 live_gen)
{
	struct fp_rp_flow_key k = {};
	struct fp_rp_flow *f, nf = {};
	__u32 idx;
	int slot, have_key;

	if (cfg->quic_cid && route_quic(md, cfg))
		return SK_PASS;

	have_key = cfg->udp_affinity && flow_key(md, &k) == 0;
	if (have_key) {
		f = bpf_map_lookup_elem(&flows, &k);
		if (f) {
			struct fp_rp_gen *g = gen_entry(f->gen, &idx);

			if (g && f->slot < FP_RP_MAX_SLOTS) {
				__u32 key = idx * FP_RP_MAX_SLOTS + f->slot;

				if (bpf_sk_select_reuseport(md, &socks, &key, 0) == 0) {
					f->last_ns = bpf_ktime_get_coarse_ns();
					delivered(idx, 0);
					return SK_PASS;
				}
			}
			/*
			 * The flow's socket is gone (closed, removed, generation
			 * retired): re-home it as a new flow. Counted on the flow's
			 * generation while that one still owns its index.
			 */
			idx = f->gen % FP_RP_MAX_GENS;
			g = bpf_map_lookup_elem(&gens, &idx);
			count_drop(g && g->gen == f->gen ? idx : FP_RP_STATS_NO_GEN,
				   FP_RP_DROP_FLOW_GONE);
		}
	}

	slot = select_live(md, live_gen, pick_start(md, cfg->udp_mode), &idx, 1);
	if (slot < 0)
		return SK_DROP;
	if (have_key) {
		nf.gen = live_gen;
		nf.slot = slot;
		nf.last_ns = bpf_ktime_get_coarse_ns();
		bpf_map_update_elem(&flows, &k, &nf, BPF_ANY);
	}
	delivered(idx, 1);
	return SK_PASS;
}

SEC("sk_reuseport/migrate")
int flowpin_select(struct sk_reuseport_md *md)
{
	__u32 zero = 0, idx, live_gen;
	struct fp_rp_config *cfg;
	__u32 *livep;
	struct fp_rp_stats *s;
	int slot;

	cfg = bpf_map_lookup_elem(&config, &zero);
	livep = bpf_map_lookup_elem(&live, &zero);
	if (!cfg || !livep)
		return SK_DROP;
	live_gen = *livep;

	if (md->migrating_sk) {
		/* A listener of the group closed: move its queued requests to the live generation. */
		slot = select_live(md, live_gen, md->hash, &idx, 0);
		if (slot < 0) {
			count_drop(FP_RP_STATS_NO_GEN, FP_RP_DROP_MIGRATE);
			return SK_PASS;
		}
		s = stats_of(idx);
		if (s)
			s->migrated++;
		return SK_PASS;
	}

	if (md->ip_protocol == IPPROTO_UDP)
		return handle_udp(md, cfg, live_gen);

	/* TCP: the program runs once per connection request (SYN). */
	slot = select_live(md, live_gen, pick_start(md, cfg->tcp_mode), &idx, 1);
	if (slot < 0)
		return SK_DROP;
	delivered(idx, 1);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
