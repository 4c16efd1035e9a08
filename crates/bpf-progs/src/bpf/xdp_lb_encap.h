/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/* xdp_lb encapsulation: IPIP, IP6IP6 and IPv4-in-IPv6 towards the backend,
 * L2 rewritten for the configured next hop. */
#ifndef FLOWPIN_XDP_LB_ENCAP_H
#define FLOWPIN_XDP_LB_ENCAP_H

#include <linux/ip.h>
#include <linux/ipv6.h>

#include "xdp_lb_maps.h"
#include "xdp_lb_icmp.h"

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
				    const struct flowpin_backend *be, __u32 be_idx, __u32 hash,
				    struct flowpin_vip_stats *vs, const __u32 l2)
{
	struct flowpin_backend_stats *bs;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 inner_len = (data_end - data) - l2;
	struct flowpin_lb_stats *g;

	if (be->family == FLOWPIN_FAMILY_V4) {
		struct iphdr *o;

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
		o->check = fp_csum_ipv4_hdr(o);
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
	bs = bpf_map_lookup_elem(&backend_stats, &be_idx);
	if (bs) {
		bs->packets++;
		bs->bytes += p->frame_len;
	}
	return XDP_TX;
err:
	g = fp_gstats();
	if (g)
		g->encap_error++;
	return XDP_DROP;
}

#endif /* FLOWPIN_XDP_LB_ENCAP_H */
