/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * xdp_lb: one AES-128 block, the two engines a VIP chooses from
 * (flowpin_cid_cfg.engine):
 *
 * FLOWPIN_AES_CONST_TIME (default): a bitsliced AES-128 in BPF
 *   (xdp_lb_aes_ct.h: no table, no secret-dependent branch or memory
 *   access; round keys bitsliced in flowpin_cid_cfg.rk) for decryption, and
 *   for encryption the kernel's crypto kfuncs bpf_crypto_encrypt with an
 *   "ecb(aes-fixed-time)" skcipher context (faster for that direction
 *   here). XDP may not create
 *   such a context (bpf_crypto_ctx_create is for sleepable programs) nor
 *   acquire one (bpf_crypto_ctx_acquire is refused in XDP):
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
#include <bpf/bpf_endian.h>

#include "xdp_lb_maps.h"
#include "xdp_lb_aes_tables.h"
#include "xdp_lb_aes_ct.h"

/* The kernel's crypto kfuncs, weak (the default of bpf_crypto_kfuncs.h): a
 * kernel without them loads the program and its constant-time
 * configurations hash. */
#include "bpf_crypto_kfuncs.h"

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

/* Big-endian words of a block: @b is 4-aligned (fp_qlb_scratch.in/.out):
 * one load or store and a byte swap. */
static __always_inline __u32 fp_be32w(const __u8 *b)
{
	return bpf_ntohl(*(const __u32 *)b);
}

static __always_inline void fp_put32w(__u8 *b, __u32 v)
{
	*(__u32 *)b = bpf_htonl(v);
}

/* One column of a middle round: tables T0..T3 (te or td), the state words
 * in the order the column reads them, round key word @k. */
#define FP_AES_COL(T, w0, w1, w2, w3, k)                                         \
	(fp_aes_##T##0[(w0) >> 24] ^ fp_aes_##T##1[((w1) >> 16) & 0xff] ^            \
	 fp_aes_##T##2[((w2) >> 8) & 0xff] ^ fp_aes_##T##3[(w3) & 0xff] ^ (k))

/* A middle round r: encryption reads columns j, j+1, j+2, j+3,
 * decryption j, j+3, j+2, j+1. */
#define FP_AES_ENC_ROUND(rk, r)                                                  \
	do {                                                                     \
		t0 = FP_AES_COL(te, s0, s1, s2, s3, rk[4 * (r)]);                \
		t1 = FP_AES_COL(te, s1, s2, s3, s0, rk[4 * (r) + 1]);            \
		t2 = FP_AES_COL(te, s2, s3, s0, s1, rk[4 * (r) + 2]);            \
		t3 = FP_AES_COL(te, s3, s0, s1, s2, rk[4 * (r) + 3]);            \
		s0 = t0; s1 = t1; s2 = t2; s3 = t3;                              \
	} while (0)
#define FP_AES_DEC_ROUND(rk, r)                                                  \
	do {                                                                     \
		t0 = FP_AES_COL(td, s0, s3, s2, s1, rk[4 * (r)]);                \
		t1 = FP_AES_COL(td, s1, s0, s3, s2, rk[4 * (r) + 1]);            \
		t2 = FP_AES_COL(td, s2, s1, s0, s3, rk[4 * (r) + 2]);            \
		t3 = FP_AES_COL(td, s3, s2, s1, s0, rk[4 * (r) + 3]);            \
		s0 = t0; s1 = t1; s2 = t2; s3 = t3;                              \
	} while (0)
#define FP_AES_LAST(S, w0, w1, w2, w3, k)                                        \
	((((__u32)S[(w0) >> 24] << 24) | ((__u32)S[((w1) >> 16) & 0xff] << 16) |      \
	  ((__u32)S[((w2) >> 8) & 0xff] << 8) | S[(w3) & 0xff]) ^ (k))

/* Table engine, one block: @in (16 octets, 4-aligned) to @out (4-aligned), encryption with round
 * keys @rk. Fully unrolled, the state in registers (no loop, no scratch
 * memory): the verifier walks it once. */
static __always_inline void fp_aes_table_enc_block(const __u32 *rk, const __u8 *in, __u8 *out)
{
	__u32 s0, s1, s2, s3, t0, t1, t2, t3;

	s0 = fp_be32w(in) ^ rk[0];
	s1 = fp_be32w(in + 4) ^ rk[1];
	s2 = fp_be32w(in + 8) ^ rk[2];
	s3 = fp_be32w(in + 12) ^ rk[3];
	FP_AES_ENC_ROUND(rk, 1);
	FP_AES_ENC_ROUND(rk, 2);
	FP_AES_ENC_ROUND(rk, 3);
	FP_AES_ENC_ROUND(rk, 4);
	FP_AES_ENC_ROUND(rk, 5);
	FP_AES_ENC_ROUND(rk, 6);
	FP_AES_ENC_ROUND(rk, 7);
	FP_AES_ENC_ROUND(rk, 8);
	FP_AES_ENC_ROUND(rk, 9);
	fp_put32w(out, FP_AES_LAST(fp_aes_sbox, s0, s1, s2, s3, rk[40]));
	fp_put32w(out + 4, FP_AES_LAST(fp_aes_sbox, s1, s2, s3, s0, rk[41]));
	fp_put32w(out + 8, FP_AES_LAST(fp_aes_sbox, s2, s3, s0, s1, rk[42]));
	fp_put32w(out + 12, FP_AES_LAST(fp_aes_sbox, s3, s0, s1, s2, rk[43]));
}

/* Decryption with the equivalent inverse cipher's round keys @rk. */
static __always_inline void fp_aes_table_dec_block(const __u32 *rk, const __u8 *in, __u8 *out)
{
	__u32 s0, s1, s2, s3, t0, t1, t2, t3;

	s0 = fp_be32w(in) ^ rk[0];
	s1 = fp_be32w(in + 4) ^ rk[1];
	s2 = fp_be32w(in + 8) ^ rk[2];
	s3 = fp_be32w(in + 12) ^ rk[3];
	FP_AES_DEC_ROUND(rk, 1);
	FP_AES_DEC_ROUND(rk, 2);
	FP_AES_DEC_ROUND(rk, 3);
	FP_AES_DEC_ROUND(rk, 4);
	FP_AES_DEC_ROUND(rk, 5);
	FP_AES_DEC_ROUND(rk, 6);
	FP_AES_DEC_ROUND(rk, 7);
	FP_AES_DEC_ROUND(rk, 8);
	FP_AES_DEC_ROUND(rk, 9);
	fp_put32w(out, FP_AES_LAST(fp_aes_inv_sbox, s0, s3, s2, s1, rk[40]));
	fp_put32w(out + 4, FP_AES_LAST(fp_aes_inv_sbox, s1, s0, s3, s2, rk[41]));
	fp_put32w(out + 8, FP_AES_LAST(fp_aes_inv_sbox, s2, s1, s0, s3, rk[42]));
	fp_put32w(out + 12, FP_AES_LAST(fp_aes_inv_sbox, s3, s2, s1, s0, rk[43]));
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
