/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/* aes_micro: what one AES-128 block costs an XDP program on this kernel:
 * the crypto kfuncs (bpf_crypto_decrypt/encrypt on an skcipher context of
 * a chosen driver) against an empty program. Built and run by
 * examples/aes_micro.rs. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../../src/bpf/xdp_lb_aes_ct.h"
/* The kfuncs as xdp_lb declares them, but strong: a kernel without them
 * refuses this object at load (nothing to measure there). */
#define FP_CRYPTO_KFUNC __ksym
#include "../../src/bpf/bpf_crypto_kfuncs.h"

struct slot {
	struct bpf_crypto_ctx __fp_kptr *ctx;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct slot);
	__uint(max_entries, 1);
} slots SEC(".maps");

struct blk {
	__u8 in[16];
	__u8 out[16];
	__u64 rk64[22]; /* bitsliced round keys (any: the cost does not depend on them) */
	__u64 bs[16];   /* the S-box scratch */
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct blk);
	__uint(max_entries, 1);
} scratch SEC(".maps");

struct args {
	__u8 key[16];
	char algo[32];
	int err;
};

struct bpf_crypto_params params;

SEC("syscall")
int setup(struct args *a)
{
	struct bpf_crypto_ctx *c, *old;
	struct slot *s;
	__u32 zero = 0;
	int err = 0, i;

	s = bpf_map_lookup_elem(&slots, &zero);
	if (!s)
		return 0;
	__builtin_memset(&params, 0, sizeof(params));
	__builtin_memcpy(params.type, "skcipher", 9);
#pragma unroll
	for (i = 0; i < 31; i++)
		params.algo[i] = a->algo[i];
#pragma unroll
	for (i = 0; i < 16; i++)
		params.key[i] = a->key[i];
	params.key_len = 16;
	c = bpf_crypto_ctx_create(&params, sizeof(params), &err);
	if (!c) {
		a->err = err ? err : -22;
		return 0;
	}
	old = bpf_kptr_xchg(&s->ctx, c);
	if (old)
		bpf_crypto_ctx_release(old);
	a->err = 0;
	return 0;
}

SEC("xdp")
int empty(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* Only the lookups (slot + scratch) and dynptrs, no kfunc. */
SEC("xdp")
int setup_only(struct xdp_md *ctx)
{
	struct bpf_dynptr src, dst;
	__u32 zero = 0;
	struct slot *s;
	struct blk *b;

	s = bpf_map_lookup_elem(&slots, &zero);
	b = bpf_map_lookup_elem(&scratch, &zero);
	if (!s || !b || !s->ctx)
		return XDP_ABORTED;
	bpf_dynptr_from_mem(b->in, 16, 0, &src);
	bpf_dynptr_from_mem(b->out, 16, 0, &dst);
	return XDP_PASS;
}

static __always_inline int one(int dec, int n)
{
	struct bpf_dynptr src, dst;
	struct bpf_crypto_ctx *c;
	__u32 zero = 0;
	struct slot *s;
	struct blk *b;
	int i, r = 0;

	s = bpf_map_lookup_elem(&slots, &zero);
	b = bpf_map_lookup_elem(&scratch, &zero);
	if (!s || !b)
		return XDP_ABORTED;
	c = s->ctx;
	if (!c)
		return XDP_ABORTED;
	bpf_dynptr_from_mem(b->in, 16, 0, &src);
	bpf_dynptr_from_mem(b->out, 16, 0, &dst);
	for (i = 0; i < n; i++) {
		if (dec)
			r |= bpf_crypto_decrypt(c, &src, &dst, NULL);
		else
			r |= bpf_crypto_encrypt(c, &src, &dst, NULL);
	}
	return r ? XDP_ABORTED : XDP_PASS;
}

SEC("xdp")
int dec1(struct xdp_md *ctx)
{
	return one(1, 1);
}
SEC("xdp")
int enc1(struct xdp_md *ctx)
{
	return one(0, 1);
}
SEC("xdp")
int dec4(struct xdp_md *ctx)
{
	return one(1, 4);
}
SEC("xdp")
int enc4(struct xdp_md *ctx)
{
	return one(0, 4);
}

/* The BPF constant-time engine (xdp_lb_aes_ct.h): a global function, like
 * xdp_lb calls it (verified once, its own frame). */
__noinline int bs_block(struct blk *b, int dec)
{
	if (!b)
		return -1;
	if (dec)
		fp_aes_bs_dec_block(b->rk64, b->in, b->out, b->bs);
	else
		fp_aes_bs_enc_block(b->rk64, b->in, b->out, b->bs);
	return 0;
}

static __always_inline int bs(int dec, int n)
{
	__u32 zero = 0;
	struct blk *b;
	int i, r = 0;

	b = bpf_map_lookup_elem(&scratch, &zero);
	if (!b)
		return XDP_ABORTED;
	for (i = 0; i < n; i++)
		r |= bs_block(b, dec);
	return r ? XDP_ABORTED : XDP_PASS;
}

SEC("xdp")
int bs_dec1(struct xdp_md *ctx)
{
	return bs(1, 1);
}
SEC("xdp")
int bs_enc1(struct xdp_md *ctx)
{
	return bs(0, 1);
}
SEC("xdp")
int bs_dec4(struct xdp_md *ctx)
{
	return bs(1, 4);
}
SEC("xdp")
int bs_enc4(struct xdp_md *ctx)
{
	return bs(0, 4);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
