// SPDX-License-Identifier: (MIT OR Apache-2.0)
/*
 * sockops_server_id: the server_id TCP header option, written by servers into
 * their SYN-ACK and echoed by clients on every later packet they send.
 *
 * One BPF_PROG_TYPE_SOCK_OPS program attached to a cgroup v2. Roles and the
 * option layout are chosen at load time (.rodata), so the verifier removes the
 * code of a role that is off. Sockets of the cgroup that are not concerned pay
 * nothing per packet: the header-option callbacks are enabled per socket
 * (bpf_sock_ops_cb_flags_set) only where an option must be written.
 *
 * Server role
 *   TCP_LISTEN_CB            listener on a configured port → WRITE_HDR_OPT flag
 *   HDR_OPT_LEN_CB (SYN-ACK) local address configured → reserve the option
 *   WRITE_HDR_OPT_CB         store [option with our server_id]
 *   PASSIVE_ESTABLISHED_CB   child socket: clear the (inherited) flag, so the
 *                            server's own data/ACK/FIN/RST carry nothing; check
 *                            whether the client's final ACK echoed our id
 *   PARSE_HDR_OPT_CB         TCP Fast Open only: the SYN-ACK is sent by the
 *                            child after PASSIVE_ESTABLISHED, so the flags are
 *                            cleared on the first packet received instead
 *
 * Client role
 *   TCP_CONNECT_CB           counted (the SYN carries nothing: no flag is set)
 *   ACTIVE_ESTABLISHED_CB    skb = the SYN-ACK: bpf_load_hdr_opt() the option;
 *                            valid and non-zero → bpf_sk_storage + WRITE flag;
 *                            absent, malformed or zero → counted, no flag (the
 *                            connection never runs the callbacks again)
 *   HDR_OPT_LEN_CB           reserve the option (also for the kernel's MSS
 *                            computation, args[0] == CURRENT_MSS)
 *   WRITE_HDR_OPT_CB         store the option with the stored server_id on
 *                            every packet the socket sends (data, ACK, FIN, and
 *                            the RST of tcp_send_active_reset)
 *
 * The option layout constants come from flowpin-tcp-opt's C header. Parsing
 * uses bpf_load_hdr_opt() (first matching option wins, like the header's
 * walk), with two differences from flowpin_tcp_opt::find_server_id():
 *   - RFC 6994 on a SYN-ACK: kind 253 is searched first, then 254, so a 253
 *     option wins over an earlier 254 one;
 *   - an experimental option of the searched kind too short to hold an ExID
 *     (length < 4) ends the kernel's search ("not found") instead of being
 *     skipped.
 * Both only matter for headers no flowpin server writes.
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <flowpin/tcp_opt.h>

#include "bpf_common.h"

#include <flowpin/sockops_server_id.h>

#define AF_INET 2
#define AF_INET6 10

#define TCPHDR_FIN 0x01
#define TCPHDR_SYN 0x02
#define TCPHDR_RST 0x04
#define TCPHDR_ACK 0x10
#define TCPHDR_SYNACK (TCPHDR_SYN | TCPHDR_ACK)

/* ---- configuration, set by user space before load ---- */
const volatile __u8 cfg_server = 0;     /* server role on */
const volatile __u8 cfg_client = 0;     /* client role on */
const volatile __u8 cfg_layout = FLOWPIN_LAYOUT_RFC6994;
const volatile __u8 cfg_kind = FLOWPIN_TCPOPT_EXP_KIND; /* RFC 6994 kind or compact kind */
const volatile __u16 cfg_exid = FLOWPIN_TCPOPT_DEFAULT_EXID;
const volatile __u32 cfg_server_id = FLOWPIN_SERVER_ID_NONE;
const volatile __u8 cfg_filter_ports = 0; /* 1: only ports in server_ports */
const volatile __u8 cfg_filter_addrs = 0; /* 1: only addresses in server_addrs */

/* ---- maps ---- */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FLOWPIN_SOCKOPS_MAX_PORTS);
	__type(key, __u16); /* host order */
	__type(value, __u8);
} server_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FLOWPIN_SOCKOPS_MAX_ADDRS);
	__type(key, struct flowpin_sockops_addr); /* IPv6, IPv4 as ::ffff:a.b.c.d */
	__type(value, __u8);
} server_addrs SEC(".maps");

struct flowpin_sockops_sk {
	__u32 server_id;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct flowpin_sockops_sk);
} sk_server_id SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flowpin_sockops_stats);
} stats SEC(".maps");

/* Pinned layout and load-time configuration (written by the loader). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flowpin_sockops_meta);
} meta SEC(".maps");

/* Bumps one counter of struct flowpin_sockops_stats. */
#define count(field)                                                           \
	do {                                                                   \
		__u32 zero_ = 0;                                               \
		struct flowpin_sockops_stats *s_ =                            \
			bpf_map_lookup_elem(&stats, &zero_);                   \
		if (s_)                                                        \
			s_->field++;                                           \
	} while (0)

/* ---- option layout ---- */

/* Whole option as written/read. 8 bytes covers every layout. */
struct opt_buf {
	__u8 kind;
	__u8 len;
	__u8 data[6];
};

static __always_inline __u32 opt_len(void)
{
	if (cfg_layout == FLOWPIN_LAYOUT_RFC6994)
		return FLOWPIN_TCPOPT_RFC6994_LEN;
	if (cfg_layout == FLOWPIN_LAYOUT_KATRAN)
		return FLOWPIN_TCPOPT_KATRAN_LEN;
	return FLOWPIN_TCPOPT_COMPACT_LEN;
}

/* Builds the option; synack selects Katran's server kind. */
static __always_inline void build_opt(struct opt_buf *o, __u32 id, int synack)
{
	if (cfg_layout == FLOWPIN_LAYOUT_RFC6994) {
		o->kind = cfg_kind;
		o->len = FLOWPIN_TCPOPT_RFC6994_LEN;
		o->data[0] = cfg_exid >> 8;
		o->data[1] = cfg_exid & 0xff;
		fp_put_be32(&o->data[2], id);
	} else if (cfg_layout == FLOWPIN_LAYOUT_KATRAN) {
		o->kind = synack ? FLOWPIN_TCPOPT_KATRAN_SYNACK_KIND : FLOWPIN_TCPOPT_KATRAN_KIND;
		o->len = FLOWPIN_TCPOPT_KATRAN_LEN;
		fp_put_le32(&o->data[0], id);
	} else {
		o->kind = cfg_kind;
		o->len = FLOWPIN_TCPOPT_COMPACT_LEN;
		fp_put_be32(&o->data[0], id);
	}
}

/* Result of looking for the option in a received header. */
enum find_res {
	FOUND = 0,
	NOT_FOUND = 1,
	MALFORMED = 2, /* matching kind (and ExID), wrong length */
	ZERO = 3,      /* well-formed, server_id 0 */
};

/* One bpf_load_hdr_opt() search for kind (and ExID for RFC 6994). The first
 * matching option in the header wins (that is what the helper returns). */
static __always_inline int load_one(struct bpf_sock_ops *skops, __u8 kind, __u32 *id)
{
	struct opt_buf o = {};
	long ret;

	o.kind = kind;
	if (cfg_layout == FLOWPIN_LAYOUT_RFC6994) {
		o.len = 4; /* kind, len, 2-byte ExID: search by magic */
		o.data[0] = cfg_exid >> 8;
		o.data[1] = cfg_exid & 0xff;
	}
	ret = bpf_load_hdr_opt(skops, &o, opt_len(), 0);
	if (ret == -ENOMSG)
		return NOT_FOUND;
	if (ret == -ENOSPC) /* the option is longer than ours */
		return MALFORMED;
	if (ret == -EFAULT) /* an option before ours has an impossible length */
		return MALFORMED;
	if (ret < 0)
		return NOT_FOUND;
	if (ret != opt_len() || o.len != opt_len())
		return MALFORMED;
	if (cfg_layout == FLOWPIN_LAYOUT_RFC6994)
		*id = fp_be32(&o.data[2]);
	else if (cfg_layout == FLOWPIN_LAYOUT_KATRAN)
		*id = fp_le32(&o.data[0]);
	else
		*id = fp_be32(&o.data[0]);
	return *id == FLOWPIN_SERVER_ID_NONE ? ZERO : FOUND;
}

/* Looks for the server_id option in the packet of this callback. On the
 * SYN-ACK (server → client) RFC 6994 accepts kind 253 then 254 and Katran its
 * server kind 0xB6 then 0xB7 (older Katran servers); elsewhere the configured
 * kind only. */
static __always_inline int find_opt(struct bpf_sock_ops *skops, int synack, __u32 *id)
{
	int r;

	if (cfg_layout == FLOWPIN_LAYOUT_KATRAN) {
		if (!synack)
			return load_one(skops, FLOWPIN_TCPOPT_KATRAN_KIND, id);
		r = load_one(skops, FLOWPIN_TCPOPT_KATRAN_SYNACK_KIND, id);
		if (r == NOT_FOUND)
			r = load_one(skops, FLOWPIN_TCPOPT_KATRAN_KIND, id);
		return r;
	}
	r = load_one(skops, cfg_kind, id);
	if (r == NOT_FOUND && synack && cfg_layout == FLOWPIN_LAYOUT_RFC6994)
		r = load_one(skops, cfg_kind == FLOWPIN_TCPOPT_EXP_KIND ? FLOWPIN_TCPOPT_EXP_KIND_ALT
									 : FLOWPIN_TCPOPT_EXP_KIND,
			     id);
	return r;
}

static __always_inline void set_flags(struct bpf_sock_ops *skops, __u32 flags)
{
	if (bpf_sock_ops_cb_flags_set(skops, flags))
		count(errors);
}

/* ---- server role ---- */

static __always_inline int local_addr_configured(struct bpf_sock_ops *skops)
{
	struct flowpin_sockops_addr a = {};

	if (!cfg_filter_addrs)
		return 1;
	if (skops->family == AF_INET6) {
		a.addr32[0] = skops->local_ip6[0];
		a.addr32[1] = skops->local_ip6[1];
		a.addr32[2] = skops->local_ip6[2];
		a.addr32[3] = skops->local_ip6[3];
		if (bpf_map_lookup_elem(&server_addrs, &a))
			return 1;
	}
	/* IPv4 (also an IPv4 connection to a dual-stack listener) as ::ffff:a.b.c.d */
	a.addr32[0] = 0;
	a.addr32[1] = 0;
	a.addr32[2] = bpf_htonl(0x0000ffff);
	a.addr32[3] = skops->local_ip4;
	return bpf_map_lookup_elem(&server_addrs, &a) != NULL;
}

static __always_inline void server_listen(struct bpf_sock_ops *skops)
{
	__u16 port = skops->local_port;

	if (cfg_filter_ports && !bpf_map_lookup_elem(&server_ports, &port)) {
		count(server_listen_skipped);
		return;
	}
	count(server_listen_matched);
	set_flags(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
}

static __always_inline void server_passive_established(struct bpf_sock_ops *skops)
{
	__u32 id = 0;
	int r;

	if (skops->skb_tcp_flags & TCPHDR_SYN) {
		/* TCP Fast Open: the SYN-ACK has not been sent yet (and may be
		 * retransmitted). Keep writing it and stop at the first packet
		 * the client sends (PARSE_HDR_OPT_CB). */
		set_flags(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG);
		return;
	}
	set_flags(skops, skops->bpf_sock_ops_cb_flags &
				 ~(BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG | BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG));

	/* The ACK that concluded the handshake: did the client echo us? */
	r = find_opt(skops, 0, &id);
	if (r == FOUND && id == cfg_server_id)
		count(server_echo_ok);
	else if (r == NOT_FOUND)
		count(server_echo_missing);
	else
		count(server_echo_wrong);
}

/* ---- client role ---- */

static __always_inline void client_active_established(struct bpf_sock_ops *skops)
{
	struct flowpin_sockops_sk init = {};
	struct flowpin_sockops_sk *st;
	struct bpf_sock *sk;
	__u32 id = 0;
	int r;

	r = find_opt(skops, 1, &id);
	if (r == NOT_FOUND) {
		count(client_missing);
		return;
	}
	if (r == MALFORMED) {
		count(client_malformed);
		return;
	}
	if (r == ZERO) {
		count(client_zero);
		return;
	}
	sk = skops->sk;
	if (!sk) {
		count(errors);
		return;
	}
	init.server_id = id;
	st = bpf_sk_storage_get(&sk_server_id, sk, &init, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		count(errors);
		return;
	}
	st->server_id = id;
	count(client_parsed);
	set_flags(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
}

static __always_inline struct flowpin_sockops_sk *client_state(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return NULL;
	return bpf_sk_storage_get(&sk_server_id, sk, NULL, 0);
}

/* ---- dispatch ---- */

static __always_inline void hdr_opt_len(struct bpf_sock_ops *skops)
{
	__u8 flags = skops->skb_tcp_flags;

	if ((flags & TCPHDR_SYNACK) == TCPHDR_SYNACK) {
		/* Only listeners of the server role have the flag on a SYN-ACK. */
		if (!cfg_server)
			return;
		if (!local_addr_configured(skops)) {
			count(server_addr_skipped);
			return;
		}
		if (bpf_reserve_hdr_opt(skops, opt_len(), 0))
			count(server_no_space);
		return;
	}
	if (!cfg_client || (flags & TCPHDR_SYN))
		return;
	if (!client_state(skops))
		return; /* e.g. a Fast Open child of the server role */
	/* Also reserved when the kernel only computes the MSS (args[0] ==
	 * CURRENT_MSS, no packet): segments are then sized with room for the
	 * option. Only real packets without room are counted. */
	if (bpf_reserve_hdr_opt(skops, opt_len(), 0) && skops->args[0] != BPF_WRITE_HDR_TCP_CURRENT_MSS)
		count(client_no_space);
}

static __always_inline void write_hdr_opt(struct bpf_sock_ops *skops)
{
	struct flowpin_sockops_sk *st;
	struct opt_buf o = {};
	__u8 flags = skops->skb_tcp_flags;

	if ((flags & TCPHDR_SYNACK) == TCPHDR_SYNACK) {
		if (!cfg_server)
			return;
		build_opt(&o, cfg_server_id, 1);
		if (bpf_store_hdr_opt(skops, &o, opt_len(), 0))
			count(errors);
		else
			count(server_written);
		return;
	}
	if (!cfg_client || (flags & TCPHDR_SYN))
		return;
	st = client_state(skops);
	if (!st)
		return;
	build_opt(&o, st->server_id, 0);
	if (bpf_store_hdr_opt(skops, &o, opt_len(), 0)) {
		count(errors);
		return;
	}
	count(client_echoed);
	if (flags & TCPHDR_RST)
		count(client_echoed_rst);
}

SEC("sockops")
int sockops_server_id(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		if (cfg_server)
			server_listen(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		/* Only children of a listener that got the flag have anything to do. */
		if (cfg_server && (skops->bpf_sock_ops_cb_flags & BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG))
			server_passive_established(skops);
		break;
	case BPF_SOCK_OPS_PARSE_HDR_OPT_CB:
		/* Server role, TCP Fast Open child: the client has answered. */
		if (cfg_server)
			set_flags(skops, skops->bpf_sock_ops_cb_flags &
						 ~(BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG |
						   BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG));
		break;
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		if (cfg_client)
			count(client_connects);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		if (cfg_client)
			client_active_established(skops);
		break;
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		hdr_opt_len(skops);
		break;
	case BPF_SOCK_OPS_WRITE_HDR_OPT_CB:
		write_hdr_opt(skops);
		break;
	}
	return 1; /* never refuse anything */
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
