/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * xdp_lb: one AES-128 block, the two engines a VIP chooses from
 * (flowpin_cid_cfg.engine):
 *
 * FLOWPIN_AES_CONST_TIME (default): the kernel's crypto kfuncs
 *   bpf_crypto_encrypt/decrypt with an "ecb(aes-fixed-time)" skcipher
 *   context. XDP may not create one (bpf_crypto_ctx_create is for sleepable
 *   programs) nor acquire one (bpf_crypto_ctx_acquire is refused in XDP):
 *   user space runs the sleepable SEC("syscall") program xdp_lb_crypto_setup
 *   with the key, which creates the context and stores it as a kptr in
 *   `cid_crypto`; XDP loads the kptr (an RCU pointer: XDP runs under RCU)
 *   and passes it to the kfuncs.
 * FLOWPIN_AES_TABLE: a table-based AES-128 (T-tables, round keys in the
 *   VIP's flowpin_cid_cfg). Faster, but NOT constant-time: its table
 *   lookups are indexed by key- and data-dependent bytes, so a process
 *   sharing the CPU caches with the LB can learn key bits by cache timing.
 *   Choose it per VIP where that is acceptable.
 */
#ifndef FLOWPIN_XDP_LB_AES_H
#define FLOWPIN_XDP_LB_AES_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xdp_lb_maps.h"
#include "xdp_lb_aes_tables.h"

/* The kernel's crypto kfuncs (kernel/bpf/crypto.c), weak: a kernel without
 * them loads the program and its constant-time configurations hash. */
/* Opaque; a complete (empty) type so its BTF kind matches the kernel's. */
struct bpf_crypto_ctx {
};
struct bpf_crypto_params {
	char type[14];
	__u8 reserved[2];
	char algo[128];
	__u8 key[256];
	__u32 key_len;
	__u32 authsize;
};
extern struct bpf_crypto_ctx *bpf_crypto_ctx_create(const struct bpf_crypto_params *params,
						    __u32 params__sz, int *err) __ksym __weak;
extern void bpf_crypto_ctx_release(struct bpf_crypto_ctx *ctx) __ksym __weak;
extern int bpf_crypto_encrypt(struct bpf_crypto_ctx *ctx, const struct bpf_dynptr *src,
			      const struct bpf_dynptr *dst,
			      const struct bpf_dynptr *siv__nullable) __ksym __weak;
extern int bpf_crypto_decrypt(struct bpf_crypto_ctx *ctx, const struct bpf_dynptr *src,
			      const struct bpf_dynptr *dst,
			      const struct bpf_dynptr *siv__nullable) __ksym __weak;

#define __fp_kptr __attribute__((btf_type_tag("kptr")))

struct fp_crypto_slot {
	struct bpf_crypto_ctx __fp_kptr *ctx;
};

/* Index vip_id * FLOWPIN_CID_CFGS_PER_VIP + config id, like cid_cfgs;
 * max_entries set at load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct fp_crypto_slot);
	__uint(max_entries, 512 * FLOWPIN_CID_CFGS_PER_VIP);
} cid_crypto SEC(".maps");

static __always_inline __u32 fp_ror8(__u32 x, int n)
{
	return (x >> n) | (x << (32 - n));
}

#define FP_TE(i) fp_aes_te0[(i) & 0xff]
#define FP_TD(i) fp_aes_td0[(i) & 0xff]

static __always_inline __u32 fp_be32w(const __u8 *b)
{
	return ((__u32)b[0] << 24) | ((__u32)b[1] << 16) | ((__u32)b[2] << 8) | b[3];
}

static __always_inline void fp_put32w(__u8 *b, __u32 v)
{
	b[0] = v >> 24;
	b[1] = v >> 16;
	b[2] = v >> 8;
	b[3] = v;
}

/* Table engine, one block in place (@b, 16 octets): encryption with round
 * keys @rk, or (@dec) decryption with the equivalent inverse cipher's keys.
 * The state lives in @st/@tt (4 words each, per-CPU scratch), loops are
 * not unrolled: the program's stack is nearly full and the verifier walks
 * each instruction once per round. Column j of a round reads state words
 * j, j+1, j+2, j+3 (encryption) or j, j+3, j+2, j+1 (decryption). */
static __always_inline void fp_aes_table_block(const __u32 *rk, __u8 *b, __u32 *st, __u32 *tt,
					       int dec)
{
	__u32 r, j, a, c, d, e, k1 = dec ? 3 : 1, k3 = dec ? 1 : 3;

#pragma clang loop unroll(disable)
	for (j = 0; j < 4; j++)
		st[j & 3] = fp_be32w(b + 4 * (j & 3)) ^ rk[j & 3];
#pragma clang loop unroll(disable)
	for (r = 1; r < 10; r++) {
#pragma clang loop unroll(disable)
		for (j = 0; j < 4; j++) {
			a = st[j & 3] >> 24;
			c = (st[(j + k1) & 3] >> 16) & 0xff;
			d = (st[(j + 2) & 3] >> 8) & 0xff;
			e = st[(j + k3) & 3] & 0xff;
			if (dec)
				tt[j & 3] = FP_TD(a) ^ fp_ror8(FP_TD(c), 8) ^ fp_ror8(FP_TD(d), 16) ^
					    fp_ror8(FP_TD(e), 24) ^ rk[(4 * r + j) & 63];
			else
				tt[j & 3] = FP_TE(a) ^ fp_ror8(FP_TE(c), 8) ^ fp_ror8(FP_TE(d), 16) ^
					    fp_ror8(FP_TE(e), 24) ^ rk[(4 * r + j) & 63];
		}
#pragma clang loop unroll(disable)
		for (j = 0; j < 4; j++)
			st[j & 3] = tt[j & 3];
	}
#pragma clang loop unroll(disable)
	for (j = 0; j < 4; j++) {
		a = st[j & 3] >> 24;
		c = (st[(j + k1) & 3] >> 16) & 0xff;
		d = (st[(j + 2) & 3] >> 8) & 0xff;
		e = st[(j + k3) & 3] & 0xff;
		if (dec)
			a = ((__u32)fp_aes_inv_sbox[a & 0xff] << 24) | ((__u32)fp_aes_inv_sbox[c] << 16) |
			    ((__u32)fp_aes_inv_sbox[d] << 8) | fp_aes_inv_sbox[e];
		else
			a = ((__u32)fp_aes_sbox[a & 0xff] << 24) | ((__u32)fp_aes_sbox[c] << 16) |
			    ((__u32)fp_aes_sbox[d] << 8) | fp_aes_sbox[e];
		fp_put32w(b + 4 * (j & 3), a ^ rk[(40 + j) & 63]);
	}
}

/* Constant-time engine: @in (16 octets) through the context of slot
 * @key_idx into @out. 0 on success. */
static __always_inline int fp_aes_kfunc(__u32 key_idx, __u8 *in, __u8 *out, int decrypt)
{
	struct bpf_dynptr src, dst;
	struct fp_crypto_slot *s;
	struct bpf_crypto_ctx *c;

	if (!bpf_ksym_exists(bpf_crypto_decrypt))
		return -1;
	s = bpf_map_lookup_elem(&cid_crypto, &key_idx);
	if (!s)
		return -1;
	c = s->ctx;
	if (!c)
		return -1;
	bpf_dynptr_from_mem(in, 16, 0, &src);
	bpf_dynptr_from_mem(out, 16, 0, &dst);
	if (decrypt)
		return bpf_crypto_decrypt(c, &src, &dst, NULL);
	return bpf_crypto_encrypt(c, &src, &dst, NULL);
}

#endif /* FLOWPIN_XDP_LB_AES_H */
