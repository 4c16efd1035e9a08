/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/* xdp_lb parsing: IPv4 (options, fragments), IPv6 (extension headers,
 * fragments) and the TCP/UDP ports into struct fp_pkt. */
#ifndef FLOWPIN_XDP_LB_PARSE_H
#define FLOWPIN_XDP_LB_PARSE_H

#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include "xdp_lb_maps.h"

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

/* The IPv4 header at @l2 into @p: FP_CONTINUE, or the verdict for a
 * malformed header. */
static __always_inline int fp_parse_ipv4(struct xdp_md *ctx, struct fp_pkt *p, const __u32 l2)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + l2;
	__u32 ihl, tot, l3_len, frag;

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
	return FP_CONTINUE;
}

/* The IPv6 header and its extension headers at @l2 into @p: FP_CONTINUE,
 * or the verdict (malformed, extension chain too long). */
static __always_inline int fp_parse_ipv6(struct xdp_md *ctx, struct fp_pkt *p, const __u32 l2)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6h = data + l2;
	__u32 l3_len, off;
	__u8 nh;
	int i;

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
	return FP_CONTINUE;
}

#endif /* FLOWPIN_XDP_LB_PARSE_H */
