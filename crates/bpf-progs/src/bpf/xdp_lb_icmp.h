/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/* xdp_lb ICMP: echo replies for VIP addresses, and ICMP fragmentation
 * needed / ICMPv6 packet too big when the encapsulated packet would exceed
 * lb_cfg.mtu. */
#ifndef FLOWPIN_XDP_LB_ICMP_H
#define FLOWPIN_XDP_LB_ICMP_H

#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmpv6.h>

#include "xdp_lb_maps.h"

/* linux/icmp.h pulls in libc headers; the few ICMPv4 bits we need: */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMP_ECHO 8
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

/* Writes the reply's L2 header (VLAN tag of the received packet kept). */
static __always_inline void fp_write_l2(void *data, const __u8 *dst, const __u8 *src,
					const struct fp_pkt *p, __be16 proto, const __u32 l2)
{
	fp_write_eth(data, dst, src, p->vlan_tci, proto, l2);
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
		iph->check = fp_csum_ipv4_hdr(iph);
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

#endif /* FLOWPIN_XDP_LB_ICMP_H */
