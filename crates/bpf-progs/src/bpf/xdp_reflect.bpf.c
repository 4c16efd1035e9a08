// SPDX-License-Identifier: (MIT OR Apache-2.0)
/*
 * xdp_reflect: the far end of a live-frame XDP benchmark loop
 * (`xdp_bench --live`). Two programs in one object:
 *
 *   xdp_reflect  attached to the peer of the measured interface. It turns
 *                what the measured end sent with XDP_TX back into a
 *                client-to-VIP frame and XDP_TXes it back:
 *                  - an IPv4-in-IPv4 frame (xdp_lb's output) loses its
 *                    outer IPv4 header (20 bytes, no options);
 *                  - the Ethernet header becomes client_mac -> lb_mac,
 *                    ethertype IPv4;
 *                  - by mode, the inner flow changes: SAME keeps it,
 *                    NEW_FLOW gives every pass a source never used before
 *                    (address src_base + seq % 2^24, port 1024 + seq / 2^24),
 *                    CYCLE gives pass n the source address
 *                    src_base + n % flows (round-robin over `flows` flows),
 *                    DROP drops everything (drains the loop).
 *                A TTL below 32 (frames the measured end's stack
 *                forwarded back, XDP_PASS paths) is set back to 64.
 *                The IPv4 header checksum is recomputed; the TCP/UDP
 *                checksum is left stale (the measured programs never check it).
 *   xdp_tx       the empty XDP_TX program: the limit of the XDP_TX paths,
 *                run on the measured end on the same loop.
 *
 * The flow sequence is one global counter: the loop runs on one CPU per end.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "bpf_common.h"

#define REFLECT_SAME 0
#define REFLECT_NEW_FLOW 1
#define REFLECT_CYCLE 2
#define REFLECT_DROP 3

/* Written by user space at any time (one entry). */
struct reflect_cfg {
	__u8 lb_mac[6];
	__u8 client_mac[6];
	__u32 mode;
	__u32 flows;
	__u32 src_base; /* host order */
};

/* Per CPU, summed by user space. */
struct reflect_stats {
	__u64 reflected;
	__u64 decapsulated;
	__u64 dropped;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct reflect_cfg);
} reflect_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct reflect_stats);
} reflect_stats SEC(".maps");

/* Passes that changed the flow so far (NEW_FLOW and CYCLE). */
__u64 flow_seq = 0;

SEC("xdp")
int xdp_reflect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct reflect_stats *st;
	struct reflect_cfg *cfg;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 zero = 0, src;
	__be16 *ports;
	__u64 seq;

	cfg = bpf_map_lookup_elem(&reflect_cfg, &zero);
	st = bpf_map_lookup_elem(&reflect_stats, &zero);
	if (!cfg || !st)
		return XDP_DROP;
	if (cfg->mode == REFLECT_DROP)
		goto drop;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		goto drop;
	if (ip->protocol == IPPROTO_IPIP) {
		if (ip->ihl != 5 || bpf_xdp_adjust_head(ctx, sizeof(*ip)))
			goto drop;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		eth = data;
		ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			goto drop;
		eth->h_proto = bpf_htons(ETH_P_IP);
		st->decapsulated++;
	}
	__builtin_memcpy(eth->h_dest, cfg->lb_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, cfg->client_mac, ETH_ALEN);
	if (ip->ttl < 32 && ip->ihl == 5) {
		ip->ttl = 64;
		ip->check = 0;
		ip->check = fp_csum_ipv4_hdr(ip);
	}
	if (cfg->mode == REFLECT_NEW_FLOW || cfg->mode == REFLECT_CYCLE) {
		if (ip->ihl != 5)
			goto drop;
		ports = (void *)(ip + 1);
		if ((void *)(ports + 2) > data_end)
			goto drop;
		seq = __sync_fetch_and_add(&flow_seq, 1);
		if (cfg->mode == REFLECT_CYCLE) {
			src = cfg->src_base + (cfg->flows ? (__u32)seq % cfg->flows : 0);
		} else {
			src = cfg->src_base + (__u32)(seq & 0xffffff);
			ports[0] = bpf_htons(1024 + (__u16)((seq >> 24) & 0x7fff));
		}
		ip->saddr = bpf_htonl(src);
		ip->check = 0;
		ip->check = fp_csum_ipv4_hdr(ip);
	}
	st->reflected++;
	return XDP_TX;
drop:
	st->dropped++;
	return XDP_DROP;
}

SEC("xdp")
int xdp_tx(struct xdp_md *ctx)
{
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
