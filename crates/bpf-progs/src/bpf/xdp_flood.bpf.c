// SPDX-License-Identifier: (MIT OR Apache-2.0)
/*
 * xdp_flood: the lab's flood loop (examples/lab, flood scenarios). Attached
 * (native mode) to the router's veth end facing an LB, where xdp_lb's
 * XDP_TX output lands first. It recognises flood frames and sends them
 * straight back to the LB as a new flood packet, so that a small population
 * of frames circulates between the LB and the router at XDP speed, each
 * pass a new spoofed flow for the LB; everything else is passed untouched
 * (XDP_PASS: the router forwards it, as xdp_pass would have let it).
 *
 * A flood frame: Ethernet, an option-less outer IPv4 header with protocol
 * IPIP (xdp_lb's encapsulation), an option-less, unfragmented inner IPv4
 * header whose source lies in spoof_base/spoof_mask (198.18.0.0/15 in the
 * lab), and a whole TCP (20 bytes) or UDP (8 bytes) header.
 *
 * The inner IPv4 ID tells a frame's lap: 0x8000 | lap for a frame in the
 * loop; anything without bit 15 is a seed (the generator in the client's
 * namespace sends ID 0). Per flood frame, by mode:
 *
 *   OFF    XDP_PASS (the frame goes on to its backend).
 *   LOOP   a seed joins the loop while fewer than max_in_flight frames
 *          circulate (else XDP_PASS: the backends see it); a frame that
 *          has done `laps` laps leaves the loop (XDP_PASS: 1 in `laps`
 *          loop frames reaches the backends). A frame that stays in the
 *          loop loses its outer header, gets Ethernet router -> LB (the
 *          MACs swapped), a new spoofed source address and port (the next
 *          value of one flow counter), TTL 64, ID 0x8000 | lap; the IPv4
 *          header checksum is recomputed and the TCP/UDP checksum updated
 *          incrementally (RFC 1624; a UDP checksum of 0 stays 0), and it
 *          is XDP_TXed back to the LB.
 *   DRAIN  loop frames are dropped (and leave the count); seeds XDP_PASS.
 *
 * Anything else (not IPv4-in-IPv4, truncated, options, fragments, another
 * inner source, another protocol) is XDP_PASS, untouched.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "bpf_common.h"

#define FLOOD_OFF 0
#define FLOOD_LOOP 1
#define FLOOD_DRAIN 2

#define FLOOD_LAP_MARK 0x8000
#define FLOOD_LAP_MASK 0x7fff

/* Written by user space at any time (one entry). */
struct flood_cfg {
	__u32 mode;
	__u32 max_in_flight;
	__u32 laps;       /* 1 ..= 0x7fff */
	__u32 spoof_base; /* host order */
	__u32 spoof_mask; /* host order: the host bits of the spoofed range */
	__u32 pad;
};

/* Shared by the CPUs (atomics). */
struct flood_state {
	__s64 in_flight;
	__u64 flow_seq;
};

/* Per CPU, summed by user space. */
struct flood_stats {
	__u64 reflected;   /* loop frames XDP_TXed back to the LB */
	__u64 admitted;    /* seeds that joined the loop */
	__u64 seeds_passed; /* seeds passed on (loop full, or not LOOP) */
	__u64 retired;     /* loop frames passed on after `laps` laps */
	__u64 drained;     /* loop frames dropped in DRAIN */
	__u64 other;       /* frames passed untouched (not flood frames) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flood_cfg);
} flood_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flood_state);
} flood_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flood_stats);
} flood_stats SEC(".maps");

SEC("xdp")
int xdp_flood(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *outer, *ip;
	struct flood_stats *st;
	struct flood_state *fs;
	struct flood_cfg *cfg;
	__u8 lb_mac[ETH_ALEN], rtr_mac[ETH_ALEN];
	__u32 zero = 0, src, old_src, lap, l4_len;
	__u16 id, sport, old_sport, *l4_csum;
	__be16 *ports;
	__u64 seq;

	cfg = bpf_map_lookup_elem(&flood_cfg, &zero);
	fs = bpf_map_lookup_elem(&flood_state, &zero);
	st = bpf_map_lookup_elem(&flood_stats, &zero);
	if (!cfg || !fs || !st)
		return XDP_PASS;

	outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    outer->ihl != 5 || outer->protocol != IPPROTO_IPIP)
		goto other;
	ip = outer + 1;
	if ((void *)(ip + 1) > data_end || ip->ihl != 5 || ip->version != 4 ||
	    (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		goto other;
	src = bpf_ntohl(ip->saddr);
	if ((src & ~cfg->spoof_mask) != cfg->spoof_base)
		goto other;
	if (ip->protocol == IPPROTO_TCP)
		l4_len = sizeof(struct tcphdr);
	else if (ip->protocol == IPPROTO_UDP)
		l4_len = sizeof(struct udphdr);
	else
		goto other;
	if ((void *)(ip + 1) + l4_len > data_end)
		goto other;

	id = bpf_ntohs(ip->id);
	if (!(id & FLOOD_LAP_MARK)) {
		/* A seed. */
		if (cfg->mode != FLOOD_LOOP || fs->in_flight >= (__s64)cfg->max_in_flight) {
			st->seeds_passed++;
			return XDP_PASS;
		}
		__sync_fetch_and_add(&fs->in_flight, 1);
		st->admitted++;
		lap = 0;
	} else {
		lap = id & FLOOD_LAP_MASK;
		if (cfg->mode != FLOOD_LOOP) {
			__sync_fetch_and_add(&fs->in_flight, -1);
			if (cfg->mode == FLOOD_DRAIN) {
				st->drained++;
				return XDP_DROP;
			}
			st->retired++;
			return XDP_PASS;
		}
		if (lap + 1 >= cfg->laps) {
			__sync_fetch_and_add(&fs->in_flight, -1);
			st->retired++;
			return XDP_PASS;
		}
	}
	lap++;

	/* Off with the outer header; the MACs swapped: router -> LB. */
	__builtin_memcpy(lb_mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(rtr_mac, eth->h_dest, ETH_ALEN);
	/* Cannot fail for a frame that had the outer header. */
	if (bpf_xdp_adjust_head(ctx, sizeof(struct iphdr)))
		goto lost;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		goto lost;
	__builtin_memcpy(eth->h_dest, lb_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, rtr_mac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);

	/* The next spoofed flow. */
	seq = __sync_fetch_and_add(&fs->flow_seq, 1);
	src = cfg->spoof_base | ((__u32)seq & cfg->spoof_mask);
	sport = 1024 + (__u16)((seq >> 17) % 64000);
	ports = (void *)(ip + 1);
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = (void *)ports;

		if ((void *)(tcp + 1) > data_end)
			goto lost;
		l4_csum = &tcp->check;
	} else {
		struct udphdr *udp = (void *)ports;

		if ((void *)(udp + 1) > data_end)
			goto lost;
		l4_csum = &udp->check;
	}
	old_src = ip->saddr;
	old_sport = ports[0];
	ip->saddr = bpf_htonl(src);
	ports[0] = bpf_htons(sport);
	if (ip->protocol == IPPROTO_TCP || *l4_csum) {
		fp_csum_replace2(l4_csum, (__u16)old_src, (__u16)ip->saddr);
		fp_csum_replace2(l4_csum, (__u16)(old_src >> 16), (__u16)(ip->saddr >> 16));
		fp_csum_replace2(l4_csum, old_sport, ports[0]);
		if (ip->protocol == IPPROTO_UDP && !*l4_csum)
			*l4_csum = 0xffff;
	}
	ip->id = bpf_htons(FLOOD_LAP_MARK | (lap & FLOOD_LAP_MASK));
	ip->ttl = 64;
	ip->check = 0;
	ip->check = fp_csum_ipv4_hdr(ip);
	st->reflected++;
	return XDP_TX;
lost:
	/* Checked before the outer header went: cannot happen. */
	__sync_fetch_and_add(&fs->in_flight, -1);
	st->drained++;
	return XDP_DROP;
other:
	st->other++;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
