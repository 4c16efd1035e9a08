/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * bpf_common.h: the packet helpers every flowpin BPF program shares.
 *
 *   fp_be32 / fp_le32 / fp_put_* 32-bit reads and writes at any alignment
 *   fp_csum_fold               ones' complement fold of a 64-bit sum
 *   fp_csum_replace2           RFC 1624 incremental checksum update
 *   fp_csum_ipv4_hdr           checksum of an option-less IPv4 header
 *   fp_parse_vlan              one 802.1Q (optionally 802.1ad) tag
 *   fp_write_eth               writes an Ethernet (+ VLAN) header
 *   fp_tcpopt_match            the server_id TCP option match, one option
 *
 * Everything is static __always_inline: including this header costs
 * nothing at run time (the code is the same as when it was written out in
 * each program; examples/xdp_bench measures it).
 */
#ifndef FLOWPIN_BPF_COMMON_H
#define FLOWPIN_BPF_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include <flowpin/tcp_opt.h>

#define FP_ETH_P_8021Q 0x8100
#define FP_ETH_P_8021AD 0x88A8

/* IPv4 frag_off bits (linux/ip.h has no names for them). */
#define IP_MF 0x2000
#define IP_DF 0x4000
#define IP_OFFSET 0x1fff

/* A VLAN tag after the Ethernet addresses' ethertype. */
struct fp_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

static __always_inline __u32 fp_be32(const __u8 *b)
{
	return ((__u32)b[0] << 24) | ((__u32)b[1] << 16) | ((__u32)b[2] << 8) | b[3];
}

/* Katran keeps its server_id in host order (little endian on every arch we
 * build for). */
static __always_inline __u32 fp_le32(const __u8 *b)
{
	return ((__u32)b[3] << 24) | ((__u32)b[2] << 16) | ((__u32)b[1] << 8) | b[0];
}

static __always_inline void fp_put_be32(__u8 *b, __u32 v)
{
	b[0] = v >> 24;
	b[1] = v >> 16;
	b[2] = v >> 8;
	b[3] = v;
}

static __always_inline void fp_put_le32(__u8 *b, __u32 v)
{
	b[0] = v;
	b[1] = v >> 8;
	b[2] = v >> 16;
	b[3] = v >> 24;
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

/* Header checksum of a 20-byte IPv4 header whose check field is 0. */
static __always_inline __u16 fp_csum_ipv4_hdr(const void *iph)
{
	const __u16 *w = iph;
	__u64 sum = 0;
	__u32 i;

#pragma unroll
	for (i = 0; i < 20 / 2; i++)
		sum += w[i];
	return fp_csum_fold(sum);
}

/*
 * The L2 header: Ethernet, then one VLAN tag if the ethertype is 802.1Q
 * (or 802.1ad when @qinq, a constant at each call site). The caller has
 * checked that the Ethernet header lies within the packet. Sets *proto to
 * the ethertype after the tag (network order) and *tci to the tag's TCI
 * (0 untagged). Returns the L2 length (14 or 18), or -1 when the tag is
 * truncated.
 */
static __always_inline int fp_parse_vlan(void *data, void *data_end, __be16 *proto, __be16 *tci,
					 const int qinq)
{
	struct ethhdr *eth = data;
	struct fp_vlan_hdr *vh = (void *)(eth + 1);

	*proto = eth->h_proto;
	*tci = 0;
	if (eth->h_proto != bpf_htons(FP_ETH_P_8021Q) &&
	    !(qinq && eth->h_proto == bpf_htons(FP_ETH_P_8021AD)))
		return sizeof(*eth);
	if ((void *)(vh + 1) > data_end)
		return -1;
	*proto = vh->proto;
	*tci = vh->tci;
	return sizeof(*eth) + sizeof(*vh);
}

/*
 * Writes an Ethernet header with @dst, @src and ethertype @proto at @data;
 * with @l2 == 18 (a constant at each call site) an 802.1Q tag with @tci
 * goes between. The caller has checked @l2 bytes lie within the packet.
 */
static __always_inline void fp_write_eth(void *data, const __u8 *dst, const __u8 *src, __be16 tci,
					 __be16 proto, const __u32 l2)
{
	struct ethhdr *eth = data;

	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
	if (l2 == sizeof(*eth) + sizeof(struct fp_vlan_hdr)) {
		struct fp_vlan_hdr *vh = data + sizeof(*eth);

		eth->h_proto = bpf_htons(FP_ETH_P_8021Q);
		vh->tci = tci;
		vh->proto = proto;
	} else {
		eth->h_proto = proto;
	}
}

/* Results of fp_tcpopt_match. */
enum {
	FP_TCPOPT_OTHER = 0,     /* not the server_id option: skip it */
	FP_TCPOPT_SERVER_ID = 1, /* the server_id option, *sid set */
	FP_TCPOPT_BAD = 2,       /* the server_id option's kind with a bad length */
};

/*
 * Does the TCP option at @o (its kind and length bytes, o[0] and o[1], are
 * within the packet) carry the server_id, in the layout of
 * flowpin/tcp_opt.h (@layout, with @kind for the compact layout and @exid
 * for RFC 6994)? Reads at most the option's own bytes, each checked
 * against @data_end. The caller checks the length against the options
 * area.
 */
static __always_inline int fp_tcpopt_match(const __u8 *o, const void *data_end, __u8 layout,
					   __u8 kind, __u16 exid, __u32 *sid)
{
	__u8 k = o[0], olen = o[1];

	if (layout == FLOWPIN_LAYOUT_RFC6994) {
		if ((k != FLOWPIN_TCPOPT_EXP_KIND && k != FLOWPIN_TCPOPT_EXP_KIND_ALT) || olen < 4)
			return FP_TCPOPT_OTHER;
		if ((void *)(o + 4) > data_end)
			return FP_TCPOPT_BAD;
		if ((((__u32)o[FLOWPIN_TCPOPT_RFC6994_EXID_OFFSET] << 8) |
	     o[FLOWPIN_TCPOPT_RFC6994_EXID_OFFSET + 1]) != exid)
			return FP_TCPOPT_OTHER;
		if (olen != FLOWPIN_TCPOPT_RFC6994_LEN || (void *)(o + 8) > data_end)
			return FP_TCPOPT_BAD;
		*sid = fp_be32(o + FLOWPIN_TCPOPT_RFC6994_ID_OFFSET);
		return FP_TCPOPT_SERVER_ID;
	}
	if (layout == FLOWPIN_LAYOUT_COMPACT) {
		if (k != kind)
			return FP_TCPOPT_OTHER;
		if (olen != FLOWPIN_TCPOPT_COMPACT_LEN || (void *)(o + 6) > data_end)
			return FP_TCPOPT_BAD;
		*sid = fp_be32(o + FLOWPIN_TCPOPT_COMPACT_ID_OFFSET);
		return FP_TCPOPT_SERVER_ID;
	}
	if (k != FLOWPIN_TCPOPT_KATRAN_KIND && k != FLOWPIN_TCPOPT_KATRAN_SYNACK_KIND)
		return FP_TCPOPT_OTHER;
	if (olen != FLOWPIN_TCPOPT_KATRAN_LEN || (void *)(o + 6) > data_end)
		return FP_TCPOPT_BAD;
	*sid = fp_le32(o + FLOWPIN_TCPOPT_KATRAN_ID_OFFSET);
	return FP_TCPOPT_SERVER_ID;
}

#endif /* FLOWPIN_BPF_COMMON_H */
