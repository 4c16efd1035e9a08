// SPDX-License-Identifier: (MIT OR Apache-2.0)
// flowpin sk_lookup: at socket lookup, steer a packet (a TCP SYN, a UDP
// datagram) whose local address and port match a binding to the socket
// registered for the binding's label, whatever that socket is bound to.
// Layouts and the key scheme: sk_lookup.h.
//
// Every path returns SK_PASS: a lookup that matches no binding, whose label
// has no socket, or whose socket the kernel refuses falls through to the
// regular (bind()-based) lookup. A socket in a SO_REUSEPORT group is
// assigned without BPF_SK_LOOKUP_F_NO_REUSEPORT, so the group's own
// selection (e.g. its sk_reuseport program) still picks inside the group.
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "sk_lookup.h"

/* UAPI address families (<linux/socket.h> does not define them). */
#define AF_INET 2
#define AF_INET6 10

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FP_SKL_DEFAULT_MAX_BINDINGS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fp_skl_key);
	__type(value, struct fp_skl_binding);
} bindings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, FP_SKL_DESTINATIONS);
	__type(key, __u32);
	__type(value, __u64);
} destinations SEC(".maps");

/* User space only: label names and what was registered. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FP_SKL_MAX_LABELS);
	__type(key, struct fp_skl_label_name);
	__type(value, struct fp_skl_label);
} labels SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FP_SKL_DESTINATIONS);
	__type(key, __u32);
	__type(value, struct fp_skl_dest);
} dest_meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FP_SKL_STATS_ENTRIES);
	__type(key, __u32);
	__type(value, struct fp_skl_stats);
} stats SEC(".maps");

SEC("sk_lookup")
int flowpin_sk_lookup(struct bpf_sk_lookup *ctx)
{
	struct fp_skl_key key = {};
	struct fp_skl_binding *port_b, *any_b, *b;
	struct fp_skl_stats *s;
	struct bpf_sock *sk;
	__u32 idx;
	long err;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return SK_PASS;
	key.protocol = ctx->protocol;
	if (ctx->family == AF_INET) {
		key.family = FP_SKL_FAMILY_V4;
		key.prefixlen = FP_SKL_KEY_HEADER_BITS + 32;
		__builtin_memcpy(key.addr, &ctx->local_ip4, 4);
	} else if (ctx->family == AF_INET6) {
		key.family = FP_SKL_FAMILY_V6;
		key.prefixlen = FP_SKL_KEY_HEADER_BITS + 128;
		__builtin_memcpy(key.addr, ctx->local_ip6, 16);
	} else {
		return SK_PASS;
	}
	key.port = bpf_htons((__u16)ctx->local_port);
	port_b = bpf_map_lookup_elem(&bindings, &key);
	key.port = FP_SKL_PORT_ANY;
	any_b = bpf_map_lookup_elem(&bindings, &key);
	/* Longest prefix first; on a tie the specific port wins. */
	b = port_b;
	if (any_b && (!port_b || any_b->addr_bits > port_b->addr_bits))
		b = any_b;
	if (!b) {
		idx = FP_SKL_STATS_UNMATCHED;
		s = bpf_map_lookup_elem(&stats, &idx);
		if (s)
			s->lookups++;
		return SK_PASS;
	}

	idx = b->label;
	s = bpf_map_lookup_elem(&stats, &idx);
	if (!s)
		return SK_PASS; /* label id out of range: never written by flowpin */
	s->lookups++;
	idx = b->label * FP_SKL_SLOTS_PER_LABEL +
	      (ctx->protocol == IPPROTO_UDP ? FP_SKL_SLOT_UDP : FP_SKL_SLOT_TCP);
	sk = bpf_map_lookup_elem(&destinations, &idx);
	if (!sk) {
		s->no_socket++;
		return SK_PASS;
	}
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err)
		s->errors++;
	else
		s->redirected++;
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
