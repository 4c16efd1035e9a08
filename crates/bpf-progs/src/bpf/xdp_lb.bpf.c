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
 *      QUIC VIPs (FLOWPIN_VIP_QUIC): by the server_id in the destination
 *      connection ID, decoded under the VIP's declared layout (`cid_cfgs`,
 *      xdp_lb_cid.h): short headers and the long headers whose DCID the
 *      server chose (Initial, 0-RTT, Handshake); the client's first
 *      Initial (a random DCID) falls back to the hash and the connection
 *      table. A VIP without a declared layout decodes every layout in
 *      short headers only (legacy) and hashes long headers.
 *   2. The connection table (skipped for SYNs, which always take the ring,
 *      and for UDP VIPs with FLOWPIN_VIP_SKIP_LRU_UDP): a per-CPU 4-way
 *      set-associative LRU cache in an ARRAY (see flowpin_lb.h), flows
 *      identified by a 64-bit fingerprint (two independent flow hashes),
 *      two candidate sets per flow, new flows on probation until a later
 *      packet confirms them (xdp_lb_conn.h).
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
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "bpf_common.h"
#include "xdp_lb_maps.h"   /* sizes, lb_cfg, maps, struct fp_pkt, counters */
#include "xdp_lb_parse.h"  /* L3/L4 headers into struct fp_pkt */
#include "xdp_lb_conn.h"   /* connection table */
#include "xdp_lb_icmp.h"   /* echo replies, frag-needed / packet-too-big */
#include "xdp_lb_encap.h"  /* IPIP / IP6IP6 / 4in6 towards the backend */
#include "xdp_lb_server_id.h" /* TCP option, QUIC CID, server_id route */

/* ------------------------------------------------------------ balancer -- */

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
	__u32 sid_idx = 0; /* the chosen backend's index (server_id, table or ring) */
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
	if (fp_unlikely(!vs))
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
		be = fp_sid_route(r, sid, vip_id, vs, &sid_idx);
	} else if ((flags & FLOWPIN_VIP_QUIC) && proto == IPPROTO_UDP && !p->nonfirst) {
		__u32 q_off = (p->l4_off & 0x7fff) + sizeof(struct udphdr);
		__u8 *q = data + q_off;
		const struct flowpin_cid_cfg *mode;
		__u32 sid = 0;
		int r;

		mode = fp_cid_cfg(vip_id, FLOWPIN_CID_MODE_SLOT);
		if ((void *)(q + 1) > data_end) {
			r = FP_SID_MALFORMED;
		} else if (mode && mode->layout != FLOWPIN_CID_ANY) {
			/* The VIP's declared layout, short and long headers. */
			if (q[0] & FLOWPIN_QUIC_LONG_HEADER_BIT) {
				vs->quic_long_header++;
				if (!fp_quic_long_routable(ctx, q_off, q[0]))
					goto pick;
			}
			r = fp_cid_server_id(ctx, q_off, q[0], mode, vip_id, &sid);
		} else if (q[0] & FLOWPIN_QUIC_LONG_HEADER_BIT) {
			/* No declared layout (legacy): long headers by hash. */
			vs->quic_long_header++;
			goto pick;
		} else {
			r = fp_quic_server_id(q, data_end, &sid);
		}
		be = fp_sid_route(r, sid, vip_id, vs, &sid_idx);
	}
pick:
	/* TCP: keep the connection table warm from server_id-routed packets
	 * (insert on a miss), so the flow's packets without the option (kernel
	 * RSTs, TIME_WAIT ACKs, ACKs with no option room) follow it after this
	 * LB lost its table or took the flow over (see XdpLbConfig). QUIC
	 * short-header packets all carry their CID: no need. */
	if (be && sid_warm_conn && proto == IPPROTO_TCP) {
		cs = fp_conn_set(hash);
		if (cs) {
			hash2 = fp_flow_hash(&p->flow, p->family == FLOWPIN_FAMILY_V6,
					     FLOWPIN_FLOW_HASH_SEED2);
			if (fp_conn_lookup(cs, hash, hash2) != sid_idx)
				fp_conn_insert(cs, hash, hash2, sid_idx);
		}
	}
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
			/* A SYN inserts: start the load of set B too, so the
			 * two cache misses overlap. */
			if (proto == IPPROTO_TCP && (p->tcp_flags & FP_TCP_SYN)) {
				struct flowpin_conn_set *pb;

				pb = fp_conn_set_at(fp_conn_base(), hash2 & (conn_sets - 1));
				if (pb) {
					pref = pb->order;
					asm volatile("" : : "r"(pref));
				}
			}
		}
		if (cs && !(proto == IPPROTO_TCP && (p->tcp_flags & FP_TCP_SYN))) {
			idx = fp_conn_lookup(cs, hash, hash2);
			if (fp_likely(idx))
				be = fp_backend(idx);
			if (fp_likely(be != NULL)) {
				sid_idx = idx;
				vs->lru_hit++;
			}
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
			sid_idx = idx;
			if (cs)
				fp_conn_insert(cs, hash, hash2, idx);
		}
	}
	return fp_encap(ctx, p, be, sid_idx, hash, vs, l2);

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

/* IPv4: ICMP echo, or TCP/UDP to the balancer. */
static __always_inline int fp_v4(struct xdp_md *ctx, struct fp_pkt *p, const __u32 l2)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int r;

	r = fp_parse_ipv4(ctx, p, l2);
	if (r != FP_CONTINUE)
		return r;
	if (p->flow.proto == IPPROTO_ICMP)
		return fp_icmp4(ctx, p, l2);
	r = fp_parse_l4(data, data_end, p);
	if (r != FP_CONTINUE)
		return r;
	return fp_balance(ctx, p, l2);
}

/* IPv6: ICMPv6 echo, or TCP/UDP to the balancer. */
static __always_inline int fp_v6(struct xdp_md *ctx, struct fp_pkt *p, const __u32 l2)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int r;

	r = fp_parse_ipv6(ctx, p, l2);
	if (r != FP_CONTINUE)
		return r;
	if (p->flow.proto == IPPROTO_ICMPV6)
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
	int l2;

	if ((void *)(eth + 1) > data_end)
		return fp_drop_malformed();
	__builtin_memset(&p, 0, sizeof(p));
	p.frame_len = data_end - data;
	p.l3_off = sizeof(*eth);
	l2 = fp_parse_vlan(data, data_end, &proto, &p.vlan_tci, 0);
	if (l2 < 0)
		return fp_drop_malformed();
	if (l2 != sizeof(*eth)) {
		p.vlan = 1;
		p.l3_off = l2;
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

/*
 * Installs (or clears) the constant-time AES context of one QUIC-LB
 * configuration: user space runs this sleepable program with
 * BPF_PROG_TEST_RUN and a struct flowpin_crypto_args as its context. The
 * key only passes through the context and a scratch buffer wiped after use.
 */
struct bpf_crypto_params fp_crypto_params;

SEC("syscall")
int xdp_lb_crypto_setup(struct flowpin_crypto_args *args)
{
	struct bpf_crypto_ctx *c = NULL, *old;
	struct fp_crypto_slot *s;
	__u32 idx = args->idx;
	int err = 0, i;

	if (!bpf_ksym_exists(bpf_crypto_ctx_create)) {
		args->err = -95; /* EOPNOTSUPP: no crypto kfuncs in this kernel */
		return 0;
	}
	s = bpf_map_lookup_elem(&cid_crypto, &idx);
	if (!s) {
		args->err = -2;
		return 0;
	}
	if (args->install) {
		__builtin_memset(&fp_crypto_params, 0, sizeof(fp_crypto_params));
		__builtin_memcpy(fp_crypto_params.type, "skcipher", 9);
		__builtin_memcpy(fp_crypto_params.algo, "ecb(aes-fixed-time)", 20);
		for (i = 0; i < 16; i++)
			fp_crypto_params.key[i] = args->key[i];
		fp_crypto_params.key_len = 16;
		c = bpf_crypto_ctx_create(&fp_crypto_params, sizeof(fp_crypto_params), &err);
		for (i = 0; i < 16; i++)
			fp_crypto_params.key[i] = 0;
		if (!c) {
			args->err = err ? err : -22;
			return 0;
		}
	}
	old = bpf_kptr_xchg(&s->ctx, c);
	if (old)
		bpf_crypto_ctx_release(old);
	args->err = 0;
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
