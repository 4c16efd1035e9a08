// SPDX-License-Identifier: (MIT OR Apache-2.0)
/*
 * xdp_lb: the flowpin XDP L4 load balancer.
 *
 * Per packet: Ethernet (+ one 802.1Q tag) → IPv4/IPv6 (IPv4 options, IPv6
 * extension headers) → TCP/UDP → VIP lookup → backend choice → IPIP /
 * IP6IP6 / IPv4-in-IPv6 encapsulation → XDP_TX to the configured next hop.
 *
 * Backend choice, in order:
 *   1. TCP VIPs with FLOWPIN_VIP_SERVER_ID, non-SYN packets: the server_id TCP
 *      option (layout from lb_cfg); a known server_id of this VIP's current
 *      backends routes there (no connection table, no ring).
 *      QUIC VIPs (FLOWPIN_VIP_QUIC): short-header packets by the server_id in
 *      the destination connection ID; long-header packets by hash.
 *   2. The connection table (skipped for SYNs, which always take the ring,
 *      and for UDP VIPs with FLOWPIN_VIP_SKIP_LRU_UDP): a per-CPU 4-way
 *      set-associative LRU cache in an ARRAY (see flowpin_lb.h), flows
 *      identified by a 64-bit fingerprint (two independent flow hashes).
 *   3. The VIP's Maglev ring: ring[vip_id * ring_size + hash % ring_size].
 *
 * VIP and server_id lookups go through direct-mapped ARRAY tables (no hash
 * helper call), falling back to the HASH maps when several keys share a
 * slot. The server_id option walk has a fast path for the usual option
 * areas and a bpf_loop() walk for everything else.
 *
 * Verdicts (the Rust model in src/model.rs mirrors every one):
 *   not IPv4/IPv6, not TCP/UDP/ICMP, not a VIP                    XDP_PASS
 *   truncated/invalid Ethernet, VLAN, IP or L4 header, bad IHL,
 *   IP length larger than the frame or smaller than the header   XDP_DROP (drop_malformed)
 *   IPv6 extension chain longer than FLOWPIN_LB_MAX_EXT_HDRS      XDP_PASS (pass_ext_hdr_limit)
 *   non-first fragment: hashed by addresses (ports 0), only for a
 *   port-agnostic VIP of that address/protocol; otherwise         XDP_PASS (pass_fragment_no_vip)
 *   first fragments carry the L4 header and are handled by ports.
 *   VIP without backend                                          XDP_DROP (drop_unknown_backend)
 *   encapsulated packet larger than lb_cfg.mtu                   XDP_TX ICMP frag-needed / packet-too-big
 *   ICMP/ICMPv6 echo request to a VIP address                    XDP_TX echo reply
 *   otherwise                                                    XDP_TX encapsulated
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include <flowpin/tcp_opt.h>
#include "flowpin_lb.h"

/* Sizes fixed at load (the Rust loader sets them and the map sizes). */
const volatile __u32 ring_size = 65537;
const volatile __u32 conn_sets = 1; /* sets per CPU, a power of two */
const volatile __u32 conn_percpu = 1; /* 0: one table shared by all CPUs */

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

/* linux/icmp.h pulls in libc headers; the few ICMPv4 bits we need: */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMP_ECHO 8
#define IP_MF 0x2000
#define IP_DF 0x4000
#define IP_OFFSET 0x1fff
struct icmphdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	union {
		struct {
			__be16 __unused;
			__be16 mtu;
		} frag;
		__be32 gateway;
	} un;
};

struct fp_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

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

static __always_inline __u16 fp_csum_fold(__u64 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* RFC 1624 eqn. 3 incremental update of a 16-bit word under the checksum. */
static __always_inline void fp_csum_replace2(__u16 *sum, __u16 old, __u16 new)
{
	__u32 s = (__u16)~*sum;

	s += (__u16)~old;
	s += new;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	*sum = (__u16)~s;
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

/* ---------------------------------------------------------------- ICMP -- */

static __always_inline struct flowpin_vip_meta *fp_vip_addr(const struct fp_pkt *p, __u8 icmp_proto)
{
	struct flowpin_vip_key k;

	__builtin_memset(&k, 0, sizeof(k));
	__builtin_memcpy(k.addr, p->flow.dst, sizeof(k.addr));
	k.proto = icmp_proto;
	k.family = p->family;
	return bpf_map_lookup_elem(&vips, &k);
}

static __always_inline void fp_swap_macs(struct ethhdr *eth)
{
	__u8 tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

/* ICMP echo request to a VIP address: answered in place. */
static __always_inline int fp_icmp4(struct xdp_md *ctx, struct fp_pkt *p, const __u32 l2)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + l2;
	struct icmphdr *ic = data + (p->l4_off & 0x7f);
	struct flowpin_vip_meta *m;
	struct flowpin_lb_stats *g;
	__u32 tmp;

	if (p->nonfirst)
		return XDP_PASS;
	if ((void *)(iph + 1) > data_end)
		return fp_drop_malformed();
	if ((void *)(ic + 1) > data_end)
		return fp_drop_malformed();
	if ((iph->frag_off & bpf_htons(IP_MF)) || ic->type != ICMP_ECHO)
		return XDP_PASS;
	m = fp_vip_addr(p, IPPROTO_ICMP);
	if (!m || !(m->flags & FLOWPIN_VIP_ICMP_ECHO))
		return XDP_PASS;
	fp_swap_macs(data);
	tmp = iph->saddr;
	iph->saddr = iph->daddr;
	iph->daddr = tmp;
	fp_csum_replace2(&iph->check, bpf_htons(((__u16)iph->ttl << 8) | iph->protocol),
			 bpf_htons(((__u16)FLOWPIN_LB_DEFAULT_TTL << 8) | iph->protocol));
	iph->ttl = FLOWPIN_LB_DEFAULT_TTL;
	fp_csum_replace2(&ic->checksum, bpf_htons(((__u16)ICMP_ECHO << 8) | ic->code),
			 bpf_htons(((__u16)ICMP_ECHOREPLY << 8) | ic->code));
	ic->type = ICMP_ECHOREPLY;
	g = fp_gstats();
	if (g)
		g->icmp_echo_replies++;
	return XDP_TX;
}

static __always_inline int fp_icmp6(struct xdp_md *ctx, struct fp_pkt *p, const __u32 l2)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6h = data + l2;
	struct icmp6hdr *ic = data + (p->l4_off & 0x7fff);
	struct flowpin_vip_meta *m;
	struct flowpin_lb_stats *g;
	struct in6_addr tmp;

	if (p->nonfirst)
		return XDP_PASS;
	if ((void *)(ip6h + 1) > data_end)
		return fp_drop_malformed();
	if ((void *)(ic + 1) > data_end)
		return fp_drop_malformed();
	if (ic->icmp6_type != ICMPV6_ECHO_REQUEST)
		return XDP_PASS;
	m = fp_vip_addr(p, IPPROTO_ICMPV6);
	if (!m || !(m->flags & FLOWPIN_VIP_ICMP_ECHO))
		return XDP_PASS;
	fp_swap_macs(data);
	__builtin_memcpy(&tmp, &ip6h->saddr, sizeof(tmp));
	__builtin_memcpy(&ip6h->saddr, &ip6h->daddr, sizeof(tmp));
	__builtin_memcpy(&ip6h->daddr, &tmp, sizeof(tmp));
	ip6h->hop_limit = FLOWPIN_LB_DEFAULT_TTL;
	fp_csum_replace2(&ic->icmp6_cksum, bpf_htons(((__u16)ICMPV6_ECHO_REQUEST << 8) | ic->icmp6_code),
			 bpf_htons(((__u16)ICMPV6_ECHO_REPLY << 8) | ic->icmp6_code));
	ic->icmp6_type = ICMPV6_ECHO_REPLY;
	g = fp_gstats();
	if (g)
		g->icmp_echo_replies++;
	return XDP_TX;
}

/* Writes the reply's L2 header (MACs swapped, VLAN tag kept). */
static __always_inline void fp_write_l2(void *data, const __u8 *dst, const __u8 *src,
					const struct fp_pkt *p, __be16 proto, const __u32 l2)
{
	struct ethhdr *eth = data;

	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
	if (l2 == 18) {
		struct fp_vlan_hdr *vh = data + sizeof(*eth);

		eth->h_proto = bpf_htons(ETH_P_8021Q);
		vh->tci = p->vlan_tci;
		vh->proto = proto;
	} else {
		eth->h_proto = proto;
	}
}

/* The encapsulated packet would exceed the MTU: tell the client (ICMP
 * fragmentation needed / ICMPv6 packet too big, quoting the first bytes of
 * its packet, source = the VIP). */
static __always_inline int fp_too_big(struct xdp_md *ctx, struct fp_pkt *p, __u32 overhead,
				      struct flowpin_vip_stats *vs, const __u32 l2)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct flowpin_lb_stats *g = fp_gstats();
	__u32 len = data_end - data;
	__u8 macs[12];
	struct ethhdr *eth = data;
	__u16 mtu = lb_cfg.mtu - overhead;

	vs->too_big++;
	if ((void *)(eth + 1) > data_end)
		goto drop;
	__builtin_memcpy(macs, eth->h_source, ETH_ALEN);
	__builtin_memcpy(macs + ETH_ALEN, eth->h_dest, ETH_ALEN);

	if (p->family == FLOWPIN_FAMILY_V4) {
		const __u32 q = FLOWPIN_LB_ICMP4_QUOTE;
		struct iphdr *iph;
		struct icmphdr *ic;
		__u64 sum;
		__u32 i;
		__u16 *w;

		if (len < l2 + q)
			goto drop;
		if (bpf_xdp_adjust_tail(ctx, (int)(l2 + q) - (int)len))
			goto drop;
		if (bpf_xdp_adjust_head(ctx, -(int)(sizeof(*iph) + sizeof(*ic))))
			goto drop;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		iph = data + l2;
		ic = (void *)(iph + 1);
		if ((void *)(ic + 1) + q > data_end)
			goto drop;
		fp_write_l2(data, macs, macs + ETH_ALEN, p, bpf_htons(ETH_P_IP), l2);
		*(__u8 *)iph = 0x45;
		iph->tos = 0;
		iph->tot_len = bpf_htons(sizeof(*iph) + sizeof(*ic) + q);
		iph->id = 0;
		iph->frag_off = 0;
		iph->ttl = FLOWPIN_LB_DEFAULT_TTL;
		iph->protocol = IPPROTO_ICMP;
		iph->check = 0;
		iph->saddr = p->flow.dst[0];
		iph->daddr = p->flow.src[0];
		w = (__u16 *)iph;
		sum = 0;
#pragma unroll
		for (i = 0; i < sizeof(*iph) / 2; i++)
			sum += w[i];
		iph->check = fp_csum_fold(sum);
		ic->type = ICMP_DEST_UNREACH;
		ic->code = ICMP_FRAG_NEEDED;
		ic->checksum = 0;
		ic->un.frag.__unused = 0;
		ic->un.frag.mtu = bpf_htons(mtu);
		sum = bpf_csum_diff(0, 0, (void *)ic, sizeof(*ic) + q, 0);
		ic->checksum = fp_csum_fold(sum);
	} else {
		const __u32 q = FLOWPIN_LB_ICMP6_QUOTE;
		struct ipv6hdr *ip6h;
		struct icmp6hdr *ic;
		__u64 sum;

		if (len < l2 + q)
			goto drop;
		if (bpf_xdp_adjust_tail(ctx, (int)(l2 + q) - (int)len))
			goto drop;
		if (bpf_xdp_adjust_head(ctx, -(int)(sizeof(*ip6h) + sizeof(*ic))))
			goto drop;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		ip6h = data + l2;
		ic = (void *)(ip6h + 1);
		if ((void *)(ic + 1) + q > data_end)
			goto drop;
		fp_write_l2(data, macs, macs + ETH_ALEN, p, bpf_htons(ETH_P_IPV6), l2);
		*(__be32 *)ip6h = bpf_htonl(0x60000000);
		ip6h->payload_len = bpf_htons(sizeof(*ic) + q);
		ip6h->nexthdr = IPPROTO_ICMPV6;
		ip6h->hop_limit = FLOWPIN_LB_DEFAULT_TTL;
		__builtin_memcpy(&ip6h->saddr, p->flow.dst, 16);
		__builtin_memcpy(&ip6h->daddr, p->flow.src, 16);
		ic->icmp6_type = ICMPV6_PKT_TOOBIG;
		ic->icmp6_code = 0;
		ic->icmp6_cksum = 0;
		ic->icmp6_mtu = bpf_htonl(mtu);
		sum = bpf_csum_diff(0, 0, (void *)&ip6h->saddr, 32, 0);
		sum += bpf_htonl(sizeof(*ic) + q);
		sum += bpf_htonl(IPPROTO_ICMPV6);
		sum = (sum & 0xffffffff) + (sum >> 32);
		sum = bpf_csum_diff(0, 0, (void *)ic, sizeof(*ic) + q, (__u32)sum);
		ic->icmp6_cksum = fp_csum_fold(sum);
	}
	if (g)
		g->icmp_too_big_sent++;
	return XDP_TX;
drop:
	if (g)
		g->drop_too_big++;
	return XDP_DROP;
}

/* --------------------------------------------------------------- encap -- */

/* Grows the packet head by @hdr_len bytes for the outer header (between
 * the L2 header and the inner IP header) and rewrites the L2 header for the
 * next hop, VLAN tag kept, with ethertype @proto. Returns the outer header,
 * checked to lie within the packet, or NULL. @hdr_len is a constant at each
 * call site: the verifier checks the caller's header writes against it. */
static __always_inline void *fp_encap_push(struct xdp_md *ctx, const struct fp_pkt *p,
					   const __u32 hdr_len, __be16 proto, const __u32 l2)
{
	void *data, *data_end, *o;

	if (bpf_xdp_adjust_head(ctx, -(int)hdr_len))
		return NULL;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	o = data + l2;
	if (o + hdr_len > data_end)
		return NULL;
	fp_write_l2(data, lb_cfg.next_hop_mac, lb_cfg.local_mac, p, proto, l2);
	return o;
}

static __always_inline int fp_encap(struct xdp_md *ctx, struct fp_pkt *p,
				    const struct flowpin_backend *be, __u32 hash,
				    struct flowpin_vip_stats *vs, const __u32 l2)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 inner_len = (data_end - data) - l2;
	struct flowpin_lb_stats *g;

	if (be->family == FLOWPIN_FAMILY_V4) {
		struct iphdr *o;
		__u64 sum = 0;
		__u16 *w;
		__u32 i;

		if (p->family != FLOWPIN_FAMILY_V4)
			goto err;
		if (inner_len + sizeof(*o) > lb_cfg.mtu)
			return fp_too_big(ctx, p, sizeof(*o), vs, l2);
		o = fp_encap_push(ctx, p, sizeof(*o), bpf_htons(ETH_P_IP), l2);
		if (!o)
			goto err;
		*(__u8 *)o = 0x45;
		o->tos = p->tos;
		o->tot_len = bpf_htons(inner_len + sizeof(*o));
		o->id = 0;
		o->frag_off = p->df ? bpf_htons(IP_DF) : 0;
		o->ttl = p->ttl;
		o->protocol = IPPROTO_IPIP;
		o->check = 0;
		o->saddr = bpf_htonl(lb_cfg.tun_src4 | (hash & lb_cfg.tun_src4_host_mask));
		o->daddr = be->addr[0];
		w = (__u16 *)o;
#pragma unroll
		for (i = 0; i < sizeof(*o) / 2; i++)
			sum += w[i];
		o->check = fp_csum_fold(sum);
	} else {
		struct ipv6hdr *o;

		if (inner_len + sizeof(*o) > lb_cfg.mtu)
			return fp_too_big(ctx, p, sizeof(*o), vs, l2);
		o = fp_encap_push(ctx, p, sizeof(*o), bpf_htons(ETH_P_IPV6), l2);
		if (!o)
			goto err;
		*(__be32 *)o = bpf_htonl((6u << 28) | ((__u32)p->tos << 20) | (hash & 0xfffff));
		o->payload_len = bpf_htons(inner_len);
		o->nexthdr = p->family == FLOWPIN_FAMILY_V4 ? IPPROTO_IPIP : IPPROTO_IPV6;
		o->hop_limit = p->ttl;
		__builtin_memcpy(&o->saddr, lb_cfg.tun_src6, 12);
		o->saddr.in6_u.u6_addr32[3] =
			bpf_htonl(bpf_ntohl(lb_cfg.tun_src6[3]) | (hash & lb_cfg.tun_src6_host_mask));
		__builtin_memcpy(&o->daddr, be->addr, 16);
	}
	return XDP_TX;
err:
	g = fp_gstats();
	if (g)
		g->encap_error++;
	return XDP_DROP;
}

/* ----------------------------------------------------------- server_id -- */

enum {
	FP_SID_NONE = 0,
	FP_SID_FOUND = 1,
	FP_SID_MALFORMED = 2,
};

static __always_inline __u32 fp_be32(const __u8 *b)
{
	return ((__u32)b[0] << 24) | ((__u32)b[1] << 16) | ((__u32)b[2] << 8) | b[3];
}

/* The option walk of flowpin/tcp_opt.h, bound FLOWPIN_TCPOPT_MAX_WALK, as a
 * bpf_loop() callback (the verifier checks its body, not 40 unrolled
 * iterations; the kernel inlines the loop). It reads the packet in place
 * through the context kept in the loop state. */
struct fp_walk {
	struct xdp_md *ctx;
	__u32 base; /* packet offset of the options area */
	__u32 off;  /* offset of the next option in the area */
	__u32 end;  /* length of the area */
	__u32 sid;
	__u32 res;
	__u32 done;
	__u32 layout;
	__u32 kind;
	__u32 exid;
};

static long fp_walk_cb(__u64 i, void *vctx)
{
	struct fp_walk *w = vctx;
	void *data = (void *)(long)w->ctx->data;
	void *data_end = (void *)(long)w->ctx->data_end;
	__u32 off = w->off;
	__u8 *o;
	__u8 kind, olen;

	if (off >= w->end) {
		w->res = FP_SID_NONE;
		goto done;
	}
	off &= 0x3f;
	o = data + ((w->base + off) & 0x7fff);
	if ((void *)(o + 1) > data_end)
		goto malformed;
	kind = o[0];
	if (kind == FLOWPIN_TCPOPT_EOL) {
		w->res = FP_SID_NONE;
		goto done;
	}
	if (kind == FLOWPIN_TCPOPT_NOP) {
		w->off = off + 1;
		return 0;
	}
	if (off + 1 >= w->end || (void *)(o + 2) > data_end)
		goto malformed;
	olen = o[1];
	if (olen < 2 || off + olen > w->end)
		goto malformed;
	if (w->layout == FLOWPIN_LAYOUT_RFC6994) {
		if ((kind == FLOWPIN_TCPOPT_EXP_KIND || kind == FLOWPIN_TCPOPT_EXP_KIND_ALT) && olen >= 4) {
			if ((void *)(o + 4) > data_end)
				goto malformed;
			if ((((__u32)o[2] << 8) | o[3]) == w->exid) {
				if (olen != FLOWPIN_TCPOPT_RFC6994_LEN || (void *)(o + 8) > data_end)
					goto malformed;
				w->sid = fp_be32(o + FLOWPIN_TCPOPT_RFC6994_ID_OFFSET);
				w->res = FP_SID_FOUND;
				goto done;
			}
		}
	} else if (w->layout == FLOWPIN_LAYOUT_COMPACT) {
		if (kind == w->kind) {
			if (olen != FLOWPIN_TCPOPT_COMPACT_LEN || (void *)(o + 6) > data_end)
				goto malformed;
			w->sid = fp_be32(o + FLOWPIN_TCPOPT_COMPACT_ID_OFFSET);
			w->res = FP_SID_FOUND;
			goto done;
		}
	} else if (kind == FLOWPIN_TCPOPT_KATRAN_KIND || kind == FLOWPIN_TCPOPT_KATRAN_SYNACK_KIND) {
		if (olen != FLOWPIN_TCPOPT_KATRAN_LEN || (void *)(o + 6) > data_end)
			goto malformed;
		w->sid = ((__u32)o[5] << 24) | ((__u32)o[4] << 16) | ((__u32)o[3] << 8) | o[2];
		w->res = FP_SID_FOUND;
		goto done;
	}
	w->off = off + olen;
	return 0;
malformed:
	w->res = FP_SID_MALFORMED;
done:
	w->done = 1;
	return 1;
}

/* Fast path for the usual option areas: up to 4 leading NOPs / timestamps
 * (kind 8, length 10) followed by a well-formed server_id option. The full
 * walk would skip exactly those and match the same option, so the result is
 * the same; anything else takes the full walk. */
static __always_inline int fp_tcp_sid_fast(struct xdp_md *ctx, __u32 base, __u32 len, __u32 *sid)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 layout = lb_cfg.tcpopt_layout, ckind = lb_cfg.tcpopt_kind;
	__u8 *opt = data + (base & 0x7fff);
	__u32 off = 0;
	__u8 *o;
	int k;

	if (layout == FLOWPIN_LAYOUT_COMPACT && (ckind == FLOWPIN_TCPOPT_NOP || ckind == 8 ||
						  ckind == FLOWPIN_TCPOPT_EOL))
		return -1;
#pragma unroll
	for (k = 0; k < 4; k++) {
		o = opt + off;
		if (off + 2 > len || (void *)(o + 2) > data_end)
			return -1;
		if (o[0] == FLOWPIN_TCPOPT_NOP) {
			off += 1;
			continue;
		}
		if (o[0] == 8 && o[1] == 10 && off + 10 <= len) {
			off += 10;
			continue;
		}
		break;
	}
	o = opt + off;
	if (off + 8 > len || (void *)(o + 8) > data_end) {
		if (off + 6 > len || (void *)(o + 6) > data_end || layout == FLOWPIN_LAYOUT_RFC6994)
			return -1;
	}
	if (layout == FLOWPIN_LAYOUT_RFC6994) {
		if ((o[0] == FLOWPIN_TCPOPT_EXP_KIND || o[0] == FLOWPIN_TCPOPT_EXP_KIND_ALT) &&
		    o[1] == FLOWPIN_TCPOPT_RFC6994_LEN &&
		    (((__u32)o[2] << 8) | o[3]) == lb_cfg.tcpopt_exid) {
			*sid = fp_be32(o + FLOWPIN_TCPOPT_RFC6994_ID_OFFSET);
			return FP_SID_FOUND;
		}
		return -1;
	}
	if ((void *)(o + 6) > data_end)
		return -1;
	if (layout == FLOWPIN_LAYOUT_COMPACT) {
		if (o[0] == ckind && o[1] == FLOWPIN_TCPOPT_COMPACT_LEN) {
			*sid = fp_be32(o + FLOWPIN_TCPOPT_COMPACT_ID_OFFSET);
			return FP_SID_FOUND;
		}
		return -1;
	}
	if ((o[0] == FLOWPIN_TCPOPT_KATRAN_KIND || o[0] == FLOWPIN_TCPOPT_KATRAN_SYNACK_KIND) &&
	    o[1] == FLOWPIN_TCPOPT_KATRAN_LEN) {
		*sid = ((__u32)o[5] << 24) | ((__u32)o[4] << 16) | ((__u32)o[3] << 8) | o[2];
		return FP_SID_FOUND;
	}
	return -1;
}

static __always_inline int fp_tcp_server_id(struct xdp_md *ctx, __u32 opt_off, __u32 optlen, __u32 *sid)
{
	struct fp_walk w;
	int r;

	if (optlen == 0)
		return FP_SID_NONE;
	r = fp_tcp_sid_fast(ctx, opt_off, optlen, sid);
	if (r >= 0)
		return r;
	w.ctx = ctx;
	w.base = opt_off;
	w.off = 0;
	w.end = optlen;
	w.sid = 0;
	w.res = FP_SID_NONE;
	w.done = 0;
	w.layout = lb_cfg.tcpopt_layout;
	w.kind = lb_cfg.tcpopt_kind;
	w.exid = lb_cfg.tcpopt_exid;
	bpf_loop(FLOWPIN_TCPOPT_MAX_WALK, fp_walk_cb, &w, 0);
	if (!w.done)
		return w.off >= w.end ? FP_SID_NONE : FP_SID_MALFORMED;
	*sid = w.sid;
	return w.res;
}

/* QUIC short header: server_id from the DCID (layouts of flowpin/tcp_opt.h). */
static __always_inline int fp_quic_server_id(__u8 *q, void *data_end, __u32 *sid)
{
	__u32 cid_len = lb_cfg.quic_cid_len & 0x1f;
	__u8 *c = q + FLOWPIN_QUIC_SHORT_DCID_OFFSET;
	__u8 c0, v;

	if (cid_len < FLOWPIN_QUIC_CID_MIN_LEN)
		cid_len = FLOWPIN_QUIC_CID_MIN_LEN;
	if ((void *)(c + FLOWPIN_QUIC_CID_MIN_LEN) > data_end)
		return FP_SID_MALFORMED;
	if ((void *)c + cid_len > data_end)
		return FP_SID_MALFORMED;
	c0 = c[0];
	if (((c0 & FLOWPIN_QUIC_CID_FLOWPIN_VERSION_MASK) >> FLOWPIN_QUIC_CID_FLOWPIN_VERSION_SHIFT) ==
	    FLOWPIN_QUIC_CID_FLOWPIN_VERSION) {
		*sid = fp_be32(c + FLOWPIN_QUIC_CID_FLOWPIN_ID_OFFSET);
		return FP_SID_FOUND;
	}
	v = (c0 & FLOWPIN_QUIC_CID_KATRAN_VERSION_MASK) >> FLOWPIN_QUIC_CID_KATRAN_VERSION_SHIFT;
	if (v == FLOWPIN_QUIC_CID_KATRAN_V1) {
		*sid = ((__u32)(c0 & FLOWPIN_QUIC_CID_KATRAN_V1_BYTE0_MASK) << 10) | ((__u32)c[1] << 2) |
		       (c[2] >> 6);
		return FP_SID_FOUND;
	}
	if (v == FLOWPIN_QUIC_CID_KATRAN_V2) {
		*sid = ((__u32)c[1] << 16) | ((__u32)c[2] << 8) | c[3];
		return FP_SID_FOUND;
	}
	if (v == FLOWPIN_QUIC_CID_KATRAN_V3) {
		*sid = fp_be32(c + FLOWPIN_QUIC_CID_KATRAN_V3_ID_OFFSET);
		return FP_SID_FOUND;
	}
	return FP_SID_NONE;
}

/* ------------------------------------------------------------ balancer -- */

/* server_id route of a VIP: the backend index, or 0. */
static __always_inline __u32 fp_sid_lookup(__u32 vip_id, __u32 sid)
{
	__u32 idx = flowpin_sid_slot(vip_id, sid);
	struct flowpin_sid_slot *s = bpf_map_lookup_elem(&sid_table, &idx);
	struct flowpin_sid_key sk;
	__u32 *bi;

	if (!s || s->state == FLOWPIN_SLOT_EMPTY)
		return 0;
	if (s->state == FLOWPIN_SLOT_ONE)
		return s->vip_id == vip_id && s->server_id == sid ? s->backend : 0;
	sk.vip_id = vip_id;
	sk.server_id = sid;
	bi = bpf_map_lookup_elem(&server_ids, &sk);
	return bi ? *bi : 0;
}

/* Acts on a server_id parse (@r, an FP_SID_* result of the TCP option walk
 * or the QUIC CID read, @sid the id found): the backend registered for it
 * on this VIP, or NULL to fall back to the hash; counts which case it was. */
static __always_inline const struct flowpin_backend *
fp_sid_route(int r, __u32 sid, __u32 vip_id, struct flowpin_vip_stats *vs)
{
	const struct flowpin_backend *be = NULL;
	__u32 bi;

	if (r == FP_SID_MALFORMED) {
		vs->sid_fallback_malformed++;
		return NULL;
	}
	if (r != FP_SID_FOUND) {
		vs->sid_missing++;
		return NULL;
	}
	if (sid == FLOWPIN_SERVER_ID_NONE) {
		vs->sid_fallback_zero++;
		return NULL;
	}
	bi = fp_sid_lookup(vip_id, sid);
	if (bi)
		be = fp_backend(bi);
	if (be)
		vs->sid_routed++;
	else
		vs->sid_fallback_unknown++;
	return be;
}

static __always_inline struct flowpin_vip_meta *fp_vip_lookup(struct flowpin_vip_key *k)
{
	__u32 idx = flowpin_vip_slot(k);
	struct flowpin_vip_slot *s = bpf_map_lookup_elem(&vip_table, &idx);
	const __u32 *a, *b;

	if (!s || s->state == FLOWPIN_SLOT_EMPTY)
		return NULL;
	if (s->state == FLOWPIN_SLOT_ONE) {
		a = (const void *)&s->key;
		b = (const void *)k;
		if (a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4])
			return &s->meta;
		return NULL;
	}
	return bpf_map_lookup_elem(&vips, k);
}

static __always_inline int fp_balance(struct xdp_md *ctx, struct fp_pkt *p, const __u32 l2)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct flowpin_vip_key vk;
	struct flowpin_vip_meta *meta;
	struct flowpin_vip_stats *vs;
	const struct flowpin_backend *be = NULL;
	struct flowpin_lb_stats *g;
	__u32 vip_id, flags, hash, hash2, idx, key;
	__u8 proto = p->flow.proto;
	struct flowpin_conn_set *cs;
	__u32 pref;
	int use_lru;

	__builtin_memset(&vk, 0, sizeof(vk));
	__builtin_memcpy(vk.addr, p->flow.dst, sizeof(vk.addr));
	vk.port = p->flow.dport;
	vk.proto = proto;
	vk.family = p->family;
	meta = NULL;
	if (!p->nonfirst)
		meta = fp_vip_lookup(&vk);
	if (!meta) {
		if (!lb_cfg.port_agnostic_vips) {
			if (p->nonfirst)
				goto frag_pass;
			return XDP_PASS;
		}
		vk.port = 0;
		meta = fp_vip_lookup(&vk);
		if (!meta || !(meta->flags & FLOWPIN_VIP_PORT_AGNOSTIC)) {
			if (p->nonfirst)
				goto frag_pass;
			return XDP_PASS;
		}
	}
	vip_id = meta->vip_id;
	flags = meta->flags;
	vs = bpf_map_lookup_elem(&vip_stats, &vip_id);
	if (!vs)
		goto unknown;
	vs->packets++;
	vs->bytes += p->frame_len;
	hash = fp_flow_hash(&p->flow, p->family == FLOWPIN_FAMILY_V6, FLOWPIN_FLOW_HASH_SEED);

	if ((flags & FLOWPIN_VIP_SERVER_ID) && proto == IPPROTO_TCP && !p->nonfirst &&
	    !(p->tcp_flags & FP_TCP_SYN)) {
		struct tcphdr *th = data + (p->l4_off & 0x7fff);
		__u32 sid = 0, optlen;
		int r;

		if ((void *)(th + 1) > data_end)
			return fp_drop_malformed();
		optlen = (__u32)th->doff * 4 - sizeof(*th);
		r = fp_tcp_server_id(ctx, (p->l4_off & 0x7fff) + sizeof(*th), optlen, &sid);
		be = fp_sid_route(r, sid, vip_id, vs);
	} else if ((flags & FLOWPIN_VIP_QUIC) && proto == IPPROTO_UDP && !p->nonfirst) {
		__u8 *q = data + (p->l4_off & 0x7fff) + sizeof(struct udphdr);
		__u32 sid = 0;
		int r;

		if ((void *)(q + 1) > data_end) {
			r = FP_SID_MALFORMED;
		} else if (q[0] & FLOWPIN_QUIC_LONG_HEADER_BIT) {
			vs->quic_long_header++;
			goto pick;
		} else {
			r = fp_quic_server_id(q, data_end, &sid);
		}
		be = fp_sid_route(r, sid, vip_id, vs);
	}
pick:
	if (!be) {
		use_lru = !(proto == IPPROTO_UDP && (flags & FLOWPIN_VIP_SKIP_LRU_UDP));
		cs = NULL;
		hash2 = 0;
		if (use_lru) {
			cs = fp_conn_set(hash);
			if (!cs)
				goto unknown_vs;
			/* Start the (likely cache-missing) load of the set now, so
			 * it overlaps the second hash and the ring lookup. */
			pref = cs->order;
			asm volatile("" : : "r"(pref));
			hash2 = fp_flow_hash(&p->flow, p->family == FLOWPIN_FAMILY_V6,
					     FLOWPIN_FLOW_HASH_SEED2);
		}
		if (cs && !(proto == IPPROTO_TCP && (p->tcp_flags & FP_TCP_SYN))) {
			idx = fp_conn_lookup(cs, hash, hash2);
			if (idx)
				be = fp_backend(idx);
			if (be)
				vs->lru_hit++;
			else
				vs->lru_miss++;
		}
		if (!be) {
			__u32 *slot;

			key = vip_id * ring_size + hash % ring_size;
			slot = bpf_map_lookup_elem(&ring, &key);
			if (!slot)
				goto unknown_vs;
			idx = *slot;
			be = fp_backend(idx);
			if (!be)
				goto unknown_vs;
			vs->new_flows++;
			if (cs)
				fp_conn_insert(cs, hash, hash2, idx);
		}
	}
	return fp_encap(ctx, p, be, hash, vs, l2);

unknown_vs:
	vs->unknown_backend++;
unknown:
	g = fp_gstats();
	if (g)
		g->drop_unknown_backend++;
	return XDP_DROP;
frag_pass:
	g = fp_gstats();
	if (g)
		g->pass_fragment_no_vip++;
	return XDP_PASS;
}

/* L4: TCP/UDP ports (first fragments and whole packets). */
static __always_inline int fp_parse_l4(void *data, void *data_end, struct fp_pkt *p)
{
	void *l4 = data + (p->l4_off & 0x7fff);

	if (p->flow.proto != IPPROTO_TCP && p->flow.proto != IPPROTO_UDP)
		return XDP_PASS;
	if (p->nonfirst)
		return FP_CONTINUE;
	if (p->flow.proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		__u32 doff;

		if ((void *)(th + 1) > data_end)
			return fp_drop_malformed();
		doff = (__u32)th->doff * 4;
		if (doff < sizeof(*th) || l4 + doff > data_end)
			return fp_drop_malformed();
		p->flow.sport = th->source;
		p->flow.dport = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
		return FP_CONTINUE;
	}
	if (p->flow.proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end)
			return fp_drop_malformed();
		p->flow.sport = uh->source;
		p->flow.dport = uh->dest;
		return FP_CONTINUE;
	}
	return XDP_PASS;
}

static __always_inline int fp_v4(struct xdp_md *ctx, struct fp_pkt *p, const __u32 l2)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + l2;
	__u32 ihl, tot, l3_len, frag;
	int r;

	if ((void *)(iph + 1) > data_end)
		return fp_drop_malformed();
	if ((*(__u8 *)iph & 0xf0) != 0x40)
		return fp_drop_malformed();
	ihl = (*(__u8 *)iph & 0x0f) * 4;
	if (ihl < sizeof(*iph))
		return fp_drop_malformed();
	l3_len = data_end - (void *)iph;
	tot = bpf_ntohs(iph->tot_len);
	if (tot < ihl || tot > l3_len)
		return fp_drop_malformed();
	if ((void *)iph + ihl > data_end)
		return fp_drop_malformed();
	p->family = FLOWPIN_FAMILY_V4;
	p->l4_off = l2 + ihl;
	p->flow.src[0] = iph->saddr;
	p->flow.dst[0] = iph->daddr;
	p->flow.proto = iph->protocol;
	p->tos = iph->tos;
	p->ttl = iph->ttl;
	frag = bpf_ntohs(iph->frag_off);
	p->df = !!(frag & IP_DF);
	p->nonfirst = !!(frag & IP_OFFSET);
	if (p->flow.proto == IPPROTO_ICMP)
		return fp_icmp4(ctx, p, l2);
	r = fp_parse_l4(data, data_end, p);
	if (r != FP_CONTINUE)
		return r;
	return fp_balance(ctx, p, l2);
}

static __always_inline int fp_v6(struct xdp_md *ctx, struct fp_pkt *p, const __u32 l2)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6h = data + l2;
	__u32 l3_len, off;
	__u8 nh;
	int i, r;

	if ((void *)(ip6h + 1) > data_end)
		return fp_drop_malformed();
	if ((*(__u8 *)ip6h & 0xf0) != 0x60)
		return fp_drop_malformed();
	l3_len = data_end - (void *)ip6h;
	if (ip6h->payload_len == 0 || bpf_ntohs(ip6h->payload_len) + sizeof(*ip6h) > l3_len)
		return fp_drop_malformed();
	p->family = FLOWPIN_FAMILY_V6;
	__builtin_memcpy(p->flow.src, &ip6h->saddr, 16);
	__builtin_memcpy(p->flow.dst, &ip6h->daddr, 16);
	p->tos = (__u8)(bpf_ntohs(*(__be16 *)ip6h) >> 4);
	p->ttl = ip6h->hop_limit;
	nh = ip6h->nexthdr;
	off = l2 + sizeof(*ip6h);

	for (i = 0; i < FLOWPIN_LB_MAX_EXT_HDRS; i++) {
		__u8 *h = data + (off & 0x7fff);

		if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS) {
			if ((void *)(h + 2) > data_end)
				return fp_drop_malformed();
			nh = h[0];
			off += ((__u32)h[1] + 1) * 8;
			continue;
		}
		if (nh == IPPROTO_FRAGMENT) {
			if ((void *)(h + 8) > data_end)
				return fp_drop_malformed();
			nh = h[0];
			off += 8;
			if (bpf_ntohs(*(__be16 *)(h + 2)) & 0xfff8) {
				p->nonfirst = 1;
				break;
			}
			continue;
		}
		break;
	}
	if (!p->nonfirst && (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING ||
			     nh == IPPROTO_DSTOPTS || nh == IPPROTO_FRAGMENT)) {
		struct flowpin_lb_stats *g = fp_gstats();

		if (g)
			g->pass_ext_hdr_limit++;
		return XDP_PASS;
	}
	if (data + (off & 0x7fff) > data_end)
		return fp_drop_malformed();
	p->l4_off = off & 0x7fff;
	p->flow.proto = nh;
	if (nh == IPPROTO_ICMPV6)
		return fp_icmp6(ctx, p, l2);
	r = fp_parse_l4(data, data_end, p);
	if (r != FP_CONTINUE)
		return r;
	return fp_balance(ctx, p, l2);
}

SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct fp_pkt p;
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return fp_drop_malformed();
	__builtin_memset(&p, 0, sizeof(p));
	p.frame_len = data_end - data;
	p.l3_off = sizeof(*eth);
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		struct fp_vlan_hdr *vh = (void *)(eth + 1);

		if ((void *)(vh + 1) > data_end)
			return fp_drop_malformed();
		p.vlan = 1;
		p.vlan_tci = vh->tci;
		proto = vh->proto;
		p.l3_off += sizeof(*vh);
	}
	/* Specialised on the L2 length so every L2/L3 offset is a constant. */
	if (p.vlan) {
		if (proto == bpf_htons(ETH_P_IP))
			return fp_v4(ctx, &p, sizeof(*eth) + sizeof(struct fp_vlan_hdr));
		if (proto == bpf_htons(ETH_P_IPV6))
			return fp_v6(ctx, &p, sizeof(*eth) + sizeof(struct fp_vlan_hdr));
		return XDP_PASS;
	}
	if (proto == bpf_htons(ETH_P_IP))
		return fp_v4(ctx, &p, sizeof(*eth));
	if (proto == bpf_htons(ETH_P_IPV6))
		return fp_v6(ctx, &p, sizeof(*eth));
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
