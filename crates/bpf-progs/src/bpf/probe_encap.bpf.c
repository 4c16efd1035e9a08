// SPDX-License-Identifier: (MIT OR Apache-2.0)
//
// probe_encap: health probes through the data path, on the LB host's
// egress (TCX egress of the interface the VIP is routed out of).
//
// A probe socket is addressed to the VIP and marked (SO_MARK)
// FLOWPIN_PROBE_MARK | index. Its packets are encapsulated towards
// backend `index` of `probe_backends` the way xdp_lb encapsulates VIP
// traffic (xdp_lb_encap.h):
//
//   inner IPv4, backend IPv4   IPIP   (outer protocol 4)
//   inner IPv6, backend IPv6   IP6IP6 (outer next header 41)
//   inner IPv4, backend IPv6   4in6   (outer next header 4)
//   inner IPv6, backend IPv4   not done (xdp_lb does not either): dropped
//
// The outer header copies TOS/traffic class, TTL/hop limit and DF from the
// inner one; the outer source is probe_cfg's (zero: the inner source when
// the families match). Then the next hop of the backend's address is looked
// up (bpf_fib_lookup): its MACs are written and the packet is redirected to
// its interface (bpf_redirect_neigh when the neighbour is not resolved yet);
// when the lookup finds no route the VIP's next hop is kept.
//
// Verdicts (each case has its own counter in `probe_stats`):
//   mark not a probe mark      -> TC_ACT_UNSPEC (next program), not_probe
//   index without a backend    -> TC_ACT_SHOT, dropped_no_backend
//   not IPv4/IPv6, truncated,
//   or 6in4                    -> TC_ACT_SHOT, dropped_bad_packet
//   4in6 without a v6 source   -> TC_ACT_SHOT, dropped_no_source
//   a helper failed            -> TC_ACT_SHOT, dropped_error
//   encapsulated               -> TC_ACT_OK or redirect, encap_<form>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "bpf_common.h"
#include <flowpin/probe_encap.h>

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* max_entries set at load (FLOWPIN_PROBE_DEFAULT_BACKENDS otherwise). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct flowpin_probe_backend);
	__uint(max_entries, FLOWPIN_PROBE_DEFAULT_BACKENDS);
} probe_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct flowpin_probe_cfg);
	__uint(max_entries, 1);
} probe_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct flowpin_probe_stats);
	__uint(max_entries, 1);
} probe_stats SEC(".maps");

#define COUNT(field)                                                        \
	do {                                                                \
		__u32 _z = 0;                                               \
		struct flowpin_probe_stats *_s =                            \
			bpf_map_lookup_elem(&probe_stats, &_z);             \
		if (_s)                                                     \
			_s->field++;                                        \
	} while (0)

/* What the inner header says. */
struct inner {
	__u32 family;
	__u32 saddr[4];
	__u16 len; /* whole inner packet */
	__u8 tos;
	__u8 ttl;
	__u8 df;
};

static __always_inline int read_inner(struct __sk_buff *skb, struct inner *in)
{
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
			return -1;
		if ((*(__u8 *)&ip >> 4) != 4)
			return -1;
		in->family = FLOWPIN_PROBE_FAMILY_V4;
		in->saddr[0] = ip.saddr;
		in->len = bpf_ntohs(ip.tot_len);
		in->tos = ip.tos;
		in->ttl = ip.ttl;
		in->df = !!(ip.frag_off & bpf_htons(IP_DF));
		return 0;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		__u32 w;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)))
			return -1;
		w = bpf_ntohl(*(__be32 *)&ip6);
		if ((w >> 28) != 6)
			return -1;
		in->family = FLOWPIN_PROBE_FAMILY_V6;
		__builtin_memcpy(in->saddr, &ip6.saddr, 16);
		in->len = bpf_ntohs(ip6.payload_len) + sizeof(ip6);
		in->tos = (w >> 20) & 0xff;
		in->ttl = ip6.hop_limit;
		in->df = 1;
		return 0;
	}
	return -1;
}

/* Writes the next hop's MACs for the outer destination and picks the way
 * out: TC_ACT_OK on this interface, a redirect to another, or
 * bpf_redirect_neigh while the neighbour is unresolved. No route: the VIP's
 * next hop is kept (TC_ACT_OK). */
static __always_inline int next_hop(struct __sk_buff *skb, const struct flowpin_probe_backend *be,
				    const __u32 *src)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	fib.ifindex = skb->ifindex;
	if (be->family == FLOWPIN_PROBE_FAMILY_V4) {
		fib.family = AF_INET;
		fib.ipv4_src = src[0];
		fib.ipv4_dst = be->addr[0];
	} else {
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_src, src, 16);
		__builtin_memcpy(fib.ipv6_dst, be->addr, 16);
	}
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) ||
		    bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0)) {
			COUNT(dropped_error);
			return TC_ACT_SHOT;
		}
		if (fib.ifindex == skb->ifindex)
			return TC_ACT_OK;
		COUNT(redirected);
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		COUNT(redirected);
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	}
	return TC_ACT_OK;
}

SEC("tc")
int probe_encap(struct __sk_buff *skb)
{
	struct flowpin_probe_backend *be;
	struct flowpin_probe_cfg *cfg;
	struct inner in = {};
	__u32 idx, zero = 0;
	__u32 src[4] = {};
	__be16 eth_proto;

	if ((skb->mark & FLOWPIN_PROBE_MARK_MASK) != FLOWPIN_PROBE_MARK) {
		COUNT(not_probe);
		return TC_ACT_UNSPEC;
	}
	idx = skb->mark & FLOWPIN_PROBE_INDEX_MASK;
	be = bpf_map_lookup_elem(&probe_backends, &idx);
	if (!be || (be->family != FLOWPIN_PROBE_FAMILY_V4 &&
		    be->family != FLOWPIN_PROBE_FAMILY_V6)) {
		COUNT(dropped_no_backend);
		return TC_ACT_SHOT;
	}
	cfg = bpf_map_lookup_elem(&probe_cfg, &zero);
	if (!cfg)
		goto error;
	if (read_inner(skb, &in) ||
	    (in.family == FLOWPIN_PROBE_FAMILY_V6 && be->family == FLOWPIN_PROBE_FAMILY_V4)) {
		COUNT(dropped_bad_packet);
		return TC_ACT_SHOT;
	}

	if (be->family == FLOWPIN_PROBE_FAMILY_V4) {
		struct iphdr o = {};

		src[0] = cfg->src4 ? cfg->src4 : in.saddr[0];
		if (bpf_skb_adjust_room(skb, sizeof(o), BPF_ADJ_ROOM_MAC,
					BPF_F_ADJ_ROOM_ENCAP_L3_IPV4))
			goto error;
		*(__u8 *)&o = 0x45;
		o.tos = in.tos;
		o.tot_len = bpf_htons(in.len + sizeof(o));
		o.frag_off = in.df ? bpf_htons(IP_DF) : 0;
		o.ttl = in.ttl;
		o.protocol = IPPROTO_IPIP;
		o.saddr = src[0];
		o.daddr = be->addr[0];
		o.check = fp_csum_ipv4_hdr(&o);
		if (bpf_skb_store_bytes(skb, ETH_HLEN, &o, sizeof(o), 0))
			goto error;
		COUNT(encap_ipip);
	} else {
		struct ipv6hdr o = {};
		__u32 hash = bpf_get_hash_recalc(skb);

		if (cfg->src6[0] | cfg->src6[1] | cfg->src6[2] | cfg->src6[3]) {
			__builtin_memcpy(src, cfg->src6, 16);
		} else if (in.family == FLOWPIN_PROBE_FAMILY_V6) {
			__builtin_memcpy(src, in.saddr, 16);
		} else {
			COUNT(dropped_no_source);
			return TC_ACT_SHOT;
		}
		if (bpf_skb_adjust_room(skb, sizeof(o), BPF_ADJ_ROOM_MAC,
					BPF_F_ADJ_ROOM_ENCAP_L3_IPV6))
			goto error;
		*(__be32 *)&o = bpf_htonl((6u << 28) | ((__u32)in.tos << 20) | (hash & 0xfffff));
		o.payload_len = bpf_htons(in.len);
		o.nexthdr = in.family == FLOWPIN_PROBE_FAMILY_V4 ? IPPROTO_IPIP : IPPROTO_IPV6;
		o.hop_limit = in.ttl;
		__builtin_memcpy(&o.saddr, src, 16);
		__builtin_memcpy(&o.daddr, be->addr, 16);
		if (bpf_skb_store_bytes(skb, ETH_HLEN, &o, sizeof(o), 0))
			goto error;
		if (in.family == FLOWPIN_PROBE_FAMILY_V4) {
			eth_proto = bpf_htons(ETH_P_IPV6);
			if (bpf_skb_store_bytes(skb, 2 * ETH_ALEN, &eth_proto, sizeof(eth_proto), 0))
				goto error;
			COUNT(encap_4in6);
		} else {
			COUNT(encap_ip6ip6);
		}
	}
	return next_hop(skb, be, src);
error:
	COUNT(dropped_error);
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
