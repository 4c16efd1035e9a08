// SPDX-License-Identifier: (MIT OR Apache-2.0)
// flowpin sk_lookup: at socket lookup, steer a packet (a TCP SYN, a UDP
// datagram) whose local address and port match a binding to the socket
// registered for the binding's label, whatever that socket is bound to.
// Layouts, the key scheme and the lookup order: <flowpin/sk_lookup.h> (crates/bpf-abi/include).
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

#include <flowpin/sk_lookup.h>

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
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FP_SKL_DEFAULT_MAX_BINDINGS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fp_skl_host_key);
	__type(value, struct fp_skl_binding);
} hosts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} summary SEC(".maps");

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

static __always_inline void count_unmatched(void)
{
	__u32 idx = FP_SKL_STATS_UNMATCHED;
	struct fp_skl_stats *s = bpf_map_lookup_elem(&stats, &idx);

	if (s)
		s->lookups++;
}

SEC("sk_lookup")
int flowpin_sk_lookup(struct bpf_sk_lookup *ctx)
{
	struct fp_skl_binding *port_b = NULL, *any_b = NULL, *b = NULL;
	struct fp_skl_host_key hkey = {};
	struct fp_skl_key key = {};
	struct fp_skl_stats *s;
	struct bpf_sock *sk;
	__u32 idx = 0, *sum, kinds, udp, v6;
	__u16 port;
	long err;

	if (ctx->protocol == IPPROTO_TCP)
		udp = 0;
	else if (ctx->protocol == IPPROTO_UDP)
		udp = 1;
	else
		return SK_PASS;
	if (ctx->family == AF_INET)
		v6 = 0;
	else if (ctx->family == AF_INET6)
		v6 = 1;
	else
		return SK_PASS;
	/* Early exit: no binding of this protocol and family at all. */
	sum = bpf_map_lookup_elem(&summary, &idx);
	if (!sum)
		return SK_PASS;
	kinds = (*sum >> FP_SKL_SUMMARY_SHIFT(udp, v6)) &
		((1u << FP_SKL_KINDS) - 1);
	if (!kinds)
		goto unmatched;
	port = bpf_htons((__u16)ctx->local_port);

	/* 1. A host prefix is the longest: `hosts`, port then any port. */
	if (kinds & (FP_SKL_KIND_HOST_PORT | FP_SKL_KIND_HOST_ANY)) {
		hkey.protocol = ctx->protocol;
		hkey.family = v6 ? FP_SKL_FAMILY_V6 : FP_SKL_FAMILY_V4;
		if (v6)
			__builtin_memcpy(hkey.addr, ctx->local_ip6, 16);
		else
			__builtin_memcpy(hkey.addr, &ctx->local_ip4, 4);
		if (kinds & FP_SKL_KIND_HOST_PORT) {
			hkey.port = port;
			b = bpf_map_lookup_elem(&hosts, &hkey);
		}
		if (!b && (kinds & FP_SKL_KIND_HOST_ANY)) {
			hkey.port = FP_SKL_PORT_ANY;
			b = bpf_map_lookup_elem(&hosts, &hkey);
		}
	}

	/* 2. Shorter prefixes: the trie, port and any port; the longer prefix
	 * wins, on a tie the specific port. */
	if (!b && (kinds & (FP_SKL_KIND_NET_PORT | FP_SKL_KIND_NET_ANY))) {
		key.protocol = ctx->protocol;
		if (v6) {
			key.family = FP_SKL_FAMILY_V6;
			key.prefixlen = FP_SKL_KEY_HEADER_BITS + 128;
			__builtin_memcpy(key.addr, ctx->local_ip6, 16);
		} else {
			key.family = FP_SKL_FAMILY_V4;
			key.prefixlen = FP_SKL_KEY_HEADER_BITS + 32;
			__builtin_memcpy(key.addr, &ctx->local_ip4, 4);
		}
		if (kinds & FP_SKL_KIND_NET_PORT) {
			key.port = port;
			port_b = bpf_map_lookup_elem(&bindings, &key);
		}
		if (kinds & FP_SKL_KIND_NET_ANY) {
			key.port = FP_SKL_PORT_ANY;
			any_b = bpf_map_lookup_elem(&bindings, &key);
		}
		b = port_b;
		if (any_b && (!port_b || any_b->addr_bits > port_b->addr_bits))
			b = any_b;
	}
	if (!b)
		goto unmatched;

	idx = b->label;
	s = bpf_map_lookup_elem(&stats, &idx);
	if (!s)
		return SK_PASS; /* label id out of range: never written by flowpin */
	s->lookups++;
	idx = b->label * FP_SKL_SLOTS_PER_LABEL +
	      (udp ? FP_SKL_SLOT_UDP : FP_SKL_SLOT_TCP);
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

unmatched:
	count_unmatched();
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
