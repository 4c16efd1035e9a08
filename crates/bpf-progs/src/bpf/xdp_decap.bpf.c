// SPDX-License-Identifier: (MIT OR Apache-2.0)
//
// xdp_decap: the backend side of the XDP load balancer.
//
// Strips the outer header of tunnelled packets addressed to one of this
// host's tunnel addresses and passes the inner packet up the stack, so a
// backend needs no ipip/ip6_tunnel kernel module. The VIP lives on the
// backend's loopback; replies go straight to the client (DSR).
//
// Forms (outer protocol / next header):
//   IPIP       outer IPv4, protocol 4  -> inner IPv4
//   6in4       outer IPv4, protocol 41 -> inner IPv6
//   IP6IP6     outer IPv6, next hdr 41 -> inner IPv6
//   4in6       outer IPv6, next hdr 4  -> inner IPv4
//
// Policy (each case has its own counter in `stats`):
//   * not IPv4/IPv6 (after at most one 802.1Q/802.1ad tag), not a tunnel
//     protocol, or an outer header too short/invalid to read
//     -> XDP_PASS untouched (passed_not_tunnel / passed_malformed_outer);
//     the stack is the authority on packets that are not ours.
//   * tunnel protocol but the outer destination is not one of our tunnel
//     addresses -> XDP_PASS untouched (passed_not_ours).
//   * ours, but the outer header is a fragment -> XDP_PASS untouched
//     (passed_fragment): XDP cannot reassemble; the stack can.
//   * ours, but the outer length fields disagree with the frame or the
//     inner header is truncated/invalid/of the wrong version
//     -> XDP_DROP (dropped_malformed).
//   * ours and well formed -> outer header removed with
//     bpf_xdp_adjust_head, Ethernet MACs (and VLAN tag) kept, ethertype set
//     to the inner protocol, XDP_PASS (decap_<form>).
//   * bpf_xdp_adjust_head failed -> XDP_DROP (dropped_error).
//   * ECN (RFC 6040 normal mode, as the kernel's own tunnels do): outer CE
//     and inner ECT(0)/ECT(1) -> inner set to CE (IPv4 header checksum
//     updated; ecn_ce_propagated); outer CE and inner Not-ECT -> XDP_DROP
//     (dropped_ecn); anything else leaves the inner header as it is.
//
// Outer IPv6 extension headers (hop-by-hop, routing, destination options,
// e.g. the tunnel encapsulation limit option Linux ip6 tunnels add) are
// skipped, at most DECAP_MAX_EXT_HDRS of them. The outer IPv4 header
// checksum is not verified (the frame check sequence already covered it and
// the inner packet keeps its own checksums, which the stack verifies).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "bpf_common.h"

#define DECAP_MAX_EXT_HDRS 4
#define IPV4_FRAG_MASK 0x3FFF /* MF flag + fragment offset */

/* Index of each counter in struct decap_stats (mirrored in xdp_decap.rs). */
struct decap_stats {
	__u64 decap_ipip;
	__u64 decap_ip6ip6;
	__u64 decap_4in6;
	__u64 decap_6in4;
	__u64 passed_not_tunnel;
	__u64 passed_not_ours;
	__u64 passed_malformed_outer;
	__u64 passed_fragment;
	__u64 dropped_malformed;
	__u64 dropped_error;
	__u64 ecn_ce_propagated;
	__u64 dropped_ecn;
};

struct v6_addr {
	__u8 a[16];
};

/* Our tunnel addresses. Value is unused (1). max_entries set at load. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32); /* IPv4 address, network byte order */
	__type(value, __u8);
} tunnel_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct v6_addr);
	__type(value, __u8);
} tunnel_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct decap_stats);
} stats SEC(".maps");

/* Pinned layout: entry 0 = FLOWPIN_DECAP_LAYOUT_VERSION (flowpin_lb.h),
 * written by the loader; checked when a process reopens the pins. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} meta SEC(".maps");

enum form { FORM_IPIP, FORM_IP6IP6, FORM_4IN6, FORM_6IN4 };

static __always_inline struct decap_stats *get_stats(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&stats, &zero);
}

#define COUNT(field)                                                           \
	do {                                                                   \
		struct decap_stats *s_ = get_stats();                          \
		if (s_)                                                        \
			s_->field++;                                           \
	} while (0)

/*
 * Checks that the inner header at [inner, data_end) is a well-formed
 * header of the version `inner_proto` announces (4 or 41), no longer than
 * the outer payload `avail`. Returns the inner ethertype (host order) or 0.
 */
static __always_inline __u16 check_inner(void *inner, void *data_end, __u8 inner_proto,
					 __u32 avail)
{
	if (inner_proto == IPPROTO_IPIP) {
		struct iphdr *ip = inner;
		__u32 ihl, tot;

		if ((void *)(ip + 1) > data_end || avail < sizeof(*ip))
			return 0;
		if (ip->version != 4 || ip->ihl < 5)
			return 0;
		ihl = ip->ihl * 4;
		tot = bpf_ntohs(ip->tot_len);
		if (tot < ihl || tot > avail)
			return 0;
		return ETH_P_IP;
	}
	/* IPPROTO_IPV6 */
	struct ipv6hdr *ip6 = inner;

	if ((void *)(ip6 + 1) > data_end || avail < sizeof(*ip6))
		return 0;
	if (ip6->version != 6)
		return 0;
	if (sizeof(*ip6) + (__u32)bpf_ntohs(ip6->payload_len) > avail)
		return 0;
	return ETH_P_IPV6;
}

#define ECN_MASK 3
#define ECN_NOT_ECT 0
#define ECN_CE 3

static __always_inline __u8 ipv6_ecn(struct ipv6hdr *ip6)
{
	return (ip6->flow_lbl[0] >> 4) & ECN_MASK;
}

enum ce_result { CE_NONE, CE_SET, CE_DROP, CE_BOUNDS };

/*
 * The outer header says CE: mark the inner header CE if it is ECN-capable
 * (RFC 6040 section 4.2), ask for a drop if it is not. The inner header
 * was validated by check_inner (the bounds are checked again for the
 * verifier).
 */
static __always_inline enum ce_result propagate_ce(void *inner, void *data_end, __u16 inner_type)
{
	if (inner_type == ETH_P_IP) {
		struct iphdr *ip = inner;
		__u16 old_word, new_word;

		if ((void *)(ip + 1) > data_end)
			return CE_BOUNDS;
		if ((ip->tos & ECN_MASK) == ECN_NOT_ECT)
			return CE_DROP;
		if ((ip->tos & ECN_MASK) == ECN_CE)
			return CE_NONE;
		/* Incremental update of the word holding the TOS. */
		old_word = *(__u16 *)ip;
		ip->tos |= ECN_CE;
		new_word = *(__u16 *)ip;
		fp_csum_replace2(&ip->check, old_word, new_word);
		return CE_SET;
	}
	struct ipv6hdr *ip6 = inner;

	if ((void *)(ip6 + 1) > data_end)
		return CE_BOUNDS;
	if (ipv6_ecn(ip6) == ECN_NOT_ECT)
		return CE_DROP;
	if (ipv6_ecn(ip6) == ECN_CE)
		return CE_NONE;
	ip6->flow_lbl[0] |= ECN_CE << 4;
	return CE_SET;
}

SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 l2_len;
	__u16 eth_proto;
	__be16 proto_be, tci;
	int vlan;
	__u32 frame_left; /* bytes from the outer IP header to data_end */
	__u32 outer_len;  /* bytes to strip */
	__u32 avail;      /* outer payload length according to the outer header */
	__u8 inner_proto;
	__u8 outer_ecn;
	enum form form;
	void *l3;

	if ((void *)(eth + 1) > data_end) {
		COUNT(passed_malformed_outer);
		return XDP_PASS;
	}
	vlan = fp_parse_vlan(data, data_end, &proto_be, &tci, 1);
	if (vlan < 0) {
		COUNT(passed_malformed_outer);
		return XDP_PASS;
	}
	l2_len = vlan;
	eth_proto = bpf_ntohs(proto_be);
	l3 = data + l2_len;
	frame_left = (__u32)(data_end - l3);

	if (eth_proto == ETH_P_IP) {
		struct iphdr *ip = l3;
		__u32 ihl, tot;

		if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5) {
			COUNT(passed_malformed_outer);
			return XDP_PASS;
		}
		if (ip->protocol != IPPROTO_IPIP && ip->protocol != IPPROTO_IPV6) {
			COUNT(passed_not_tunnel);
			return XDP_PASS;
		}
		if (!bpf_map_lookup_elem(&tunnel_v4, &ip->daddr)) {
			COUNT(passed_not_ours);
			return XDP_PASS;
		}
		ihl = ip->ihl * 4;
		tot = bpf_ntohs(ip->tot_len);
		if (tot < ihl || tot > frame_left) {
			COUNT(dropped_malformed);
			return XDP_DROP;
		}
		if (ip->frag_off & bpf_htons(IPV4_FRAG_MASK)) {
			COUNT(passed_fragment);
			return XDP_PASS;
		}
		inner_proto = ip->protocol;
		outer_ecn = ip->tos & ECN_MASK;
		form = inner_proto == IPPROTO_IPIP ? FORM_IPIP : FORM_6IN4;
		outer_len = ihl;
		avail = tot - ihl;
	} else if (eth_proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = l3;
		__u32 plen, off = sizeof(*ip6);
		__u8 nh;
		int i;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6) {
			COUNT(passed_malformed_outer);
			return XDP_PASS;
		}
		nh = ip6->nexthdr;
#pragma unroll
		for (i = 0; i < DECAP_MAX_EXT_HDRS; i++) {
			__u8 *ext;

			if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING &&
			    nh != IPPROTO_DSTOPTS)
				break;
			ext = l3 + off;
			if ((void *)(ext + 2) > data_end) {
				COUNT(passed_malformed_outer);
				return XDP_PASS;
			}
			nh = ext[0];
			off += ((__u32)ext[1] + 1) * 8;
		}
		if (nh == IPPROTO_FRAGMENT) {
			/* Only ours matters; checked below after the address. */
		} else if (nh != IPPROTO_IPIP && nh != IPPROTO_IPV6) {
			COUNT(passed_not_tunnel);
			return XDP_PASS;
		}
		if (!bpf_map_lookup_elem(&tunnel_v6, &ip6->daddr)) {
			COUNT(passed_not_ours);
			return XDP_PASS;
		}
		plen = bpf_ntohs(ip6->payload_len);
		if (sizeof(*ip6) + plen > frame_left || off > sizeof(*ip6) + plen) {
			COUNT(dropped_malformed);
			return XDP_DROP;
		}
		if (nh == IPPROTO_FRAGMENT) {
			COUNT(passed_fragment);
			return XDP_PASS;
		}
		inner_proto = nh;
		outer_ecn = ipv6_ecn(ip6);
		form = inner_proto == IPPROTO_IPV6 ? FORM_IP6IP6 : FORM_4IN6;
		outer_len = off;
		avail = sizeof(*ip6) + plen - off;
	} else {
		COUNT(passed_not_tunnel);
		return XDP_PASS;
	}

	/* outer_len <= 60 (IPv4) or 40 + 4 * 2048 (IPv6): bounded for the verifier. */
	if (outer_len > 40 + DECAP_MAX_EXT_HDRS * 2048) {
		COUNT(dropped_malformed);
		return XDP_DROP;
	}
	__u16 inner_type = check_inner(l3 + outer_len, data_end, inner_proto, avail);
	if (!inner_type) {
		COUNT(dropped_malformed);
		return XDP_DROP;
	}

	if (outer_ecn == ECN_CE) {
		switch (propagate_ce(l3 + outer_len, data_end, inner_type)) {
		case CE_SET:
			COUNT(ecn_ce_propagated);
			break;
		case CE_DROP:
			COUNT(dropped_ecn);
			return XDP_DROP;
		case CE_BOUNDS:
			COUNT(dropped_error);
			return XDP_DROP;
		default:
			break;
		}
	}

	/* Save the L2 header (MACs and any VLAN tag), strip the outer header,
	 * write the L2 header back in front of the inner packet. */
	__u8 l2[18];
	__builtin_memcpy(l2, data, 14);
	if (l2_len == 18) {
		if (data + 18 > data_end) {
			COUNT(dropped_malformed);
			return XDP_DROP;
		}
		__builtin_memcpy(l2 + 14, data + 14, 4);
	}
	if (bpf_xdp_adjust_head(ctx, (int)outer_len)) {
		COUNT(dropped_error);
		return XDP_DROP;
	}
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + 18 > data_end) {
		/* Cannot happen: the inner header (>= 20 bytes) follows. */
		COUNT(dropped_error);
		return XDP_DROP;
	}
	__builtin_memcpy(data, l2, 12);
	if (l2_len == 18) {
		__builtin_memcpy(data + 12, l2 + 12, 4); /* TPID + TCI */
		*(__be16 *)(data + 16) = bpf_htons(inner_type);
	} else {
		*(__be16 *)(data + 12) = bpf_htons(inner_type);
	}

	switch (form) {
	case FORM_IPIP:
		COUNT(decap_ipip);
		break;
	case FORM_IP6IP6:
		COUNT(decap_ip6ip6);
		break;
	case FORM_4IN6:
		COUNT(decap_4in6);
		break;
	case FORM_6IN4:
		COUNT(decap_6in4);
		break;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
