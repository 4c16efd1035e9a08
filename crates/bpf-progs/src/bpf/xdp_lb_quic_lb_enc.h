/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * xdp_lb: QUIC-LB server IDs out of a DCID copied to the stack: plaintext
 * (the server ID octets after the first) and encrypted
 * (draft-ietf-quic-load-balancers-21 section 5.4: one AES-128-ECB
 * decryption when server ID + nonce is 16 octets, a four-pass Feistel
 * network otherwise).
 */
#ifndef FLOWPIN_XDP_LB_QUIC_LB_ENC_H
#define FLOWPIN_XDP_LB_QUIC_LB_ENC_H

#include "xdp_lb_maps.h"
#include "xdp_lb_aes.h"

/* Per-CPU scratch of the CID decode (the stack is too small for it beside
 * fp_balance's frame): the DCID, the Feistel halves, one AES block in/out. */
struct fp_qlb_scratch {
	__u8 cid[32]; /* FLOWPIN_QUIC_CID_MAX_LEN, rounded up for masked indices */
	__u8 half[2][16]; /* the Feistel halves: [0] left, [1] right */
	__u8 in[16];
	__u8 out[16];
	__u32 st[4]; /* table AES state */
	__u32 tt[4];
	__u32 sid;
	__u32 len;  /* four-pass state, kept here to spare the stack */
	__u32 hlen;
	__u32 last;
	__u32 single;
	__u32 pad;
	__u64 bs[16]; /* bitsliced engine: S-box values kept off the stack */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct fp_qlb_scratch);
	__uint(max_entries, 1);
} cid_scratch SEC(".maps");

/* Big-endian server ID of @n (1..4) octets at @s. */
static __always_inline int fp_quic_lb_sid_bytes(const __u8 *s, __u32 n, __u32 *sid)
{
	__u32 v;

	if (n == 0 || n > FLOWPIN_QUIC_LB_MAX_ROUTED_SID_LEN)
		return FP_SID_MALFORMED;
	v = s[0];
	if (n > 1)
		v = (v << 8) | s[1];
	if (n > 2)
		v = (v << 8) | s[2];
	if (n > 3)
		v = (v << 8) | s[3];
	*sid = v;
	return FP_SID_FOUND;
}

/* Table engine, one block: @w->out = AES(@w->in) (fp_aes_table_enc) or
 * its inverse (fp_aes_table_dec). Global functions: their own small frames
 * (the program's stack is nearly full), verified once. */
__noinline int fp_aes_table_enc(const struct flowpin_cid_cfg *cfg, struct fp_qlb_scratch *w)
{
	if (!cfg || !w)
		return -1;
	fp_aes_table_enc_block(cfg->rk, w->in, w->out);
	return 0;
}

__noinline int fp_aes_table_dec(const struct flowpin_cid_cfg *cfg, struct fp_qlb_scratch *w)
{
	if (!cfg || !w)
		return -1;
	fp_aes_table_dec_block(cfg->drk, w->in, w->out);
	return 0;
}

/* Constant-time engine, bitsliced in BPF (xdp_lb_aes_ct.h): one block
 * decrypted with the bitsliced round keys in cfg->rk, a global function like
 * the table's. Its frame must stay within 96 bytes: with xdp_lb's (384) and
 * fp_quic_lb_decrypt's (32) it meets the verifier's 512 (the S-box keeps
 * its values in w->bs, not on the stack). Encryption (the four-pass
 * network) stays on the kfunc: faster for that direction here. */
__noinline int fp_aes_bs_dec(const struct flowpin_cid_cfg *cfg, struct fp_qlb_scratch *w)
{
	if (!cfg || !w)
		return -1;
	fp_aes_bs_dec_block((const __u64 *)cfg->rk, w->in, w->out, w->bs);
	return 0;
}

/* Constant-time engine through the kernel's crypto kfuncs, one block: a
 * global function like fp_aes_table. */
__noinline int fp_aes_ct(__u32 key_idx, __u32 decrypt)
{
	struct fp_qlb_scratch *w;
	__u32 zero = 0;

	/* The scratch as a map value (dynptrs are not made from a global
	 * function's memory arguments). */
	w = bpf_map_lookup_elem(&cid_scratch, &zero);
	if (!w)
		return -1;
	return fp_aes_kfunc(key_idx, w->in, w->out, decrypt);
}

/* One AES-128 block of @cfg's engine, @w->in to @w->out. 0 on success. */
static __always_inline int fp_quic_lb_aes(const struct flowpin_cid_cfg *cfg, __u32 key_idx,
					  struct fp_qlb_scratch *w, int decrypt)
{
	if (cfg->engine == FLOWPIN_AES_TABLE)
		return decrypt ? fp_aes_table_dec(cfg, w) : fp_aes_table_enc(cfg, w);
	/* Constant-time: each direction on its faster engine here
	 * (examples/aes_micro.rs): decryption (single pass) bitsliced in BPF,
	 * about 500 ns a block against about 800 for the kernel's
	 * ecb(aes-fixed-time); encryption (four-pass) by the kfunc (about 450
	 * cold, 230 warm, against 500 / 440 bitsliced). */
	if (decrypt)
		return fp_aes_bs_dec(cfg, w);
	return fp_aes_ct(key_idx, 0);
}

/* Half of the four-pass network: at most ceil(19 / 2) octets. */
#define FP_QLB_HALF 10

/* Encrypted QUIC-LB (draft-ietf-quic-load-balancers-21 section 5.4): the
 * server ID of w->cid (1 + sid_len + nonce_len octets) into w->sid. Single
 * pass when server ID + nonce is 16 octets (one AES-128-ECB decryption);
 * otherwise the four-pass Feistel network run backwards, of which a load
 * balancer needs three passes (4, 3, 2): the server ID (at most 4 octets,
 * the nonce at least as long) lies in the left half. Pass p:
 * half[p & 1] ^= truncate(AES(expand(len, p, half[!(p & 1)]))), then the
 * shared nibble of an odd length that is not that half's is cleared. */
__noinline int fp_quic_lb_decrypt(const struct flowpin_cid_cfg *cfg, __u32 key_idx,
				  struct fp_qlb_scratch *w)
{
	__u32 i, k, roff, last, d;

	/* A global function: verified once, on its own small stack frame;
	 * its state lives in @w, not in spilled registers. */
	if (!cfg || !w)
		return FP_SID_NONE;
	w->len = cfg->sid_len + cfg->nonce_len;
	if (cfg->sid_len == 0 || cfg->sid_len > FLOWPIN_QUIC_LB_MAX_ROUTED_SID_LEN ||
	    cfg->nonce_len < cfg->sid_len || w->len > FLOWPIN_QUIC_LB_MAX_PLAINTEXT_LEN)
		return FP_SID_MALFORMED;
	w->single = w->len == FLOWPIN_QUIC_LB_SINGLE_PASS_LEN;
	if (w->single) {
		/* One AES-128-ECB decryption of server ID || nonce. */
#pragma unroll
		for (i = 0; i < 16; i++)
			w->in[i] = w->cid[1 + i];
		if (fp_quic_lb_aes(cfg, key_idx, w, 1))
			return FP_SID_NONE;
		return fp_quic_lb_sid_bytes(w->out, cfg->sid_len, &w->sid);
	}
	w->hlen = (w->len + 1) / 2;
	roff = w->len - w->hlen;
	last = w->hlen - 1;
	/* Masks the compiler may not fold: the verifier needs the bounds. */
	asm volatile("%0 &= 0xf" : "+r"(roff));
	asm volatile("%0 &= 0xf" : "+r"(last));
	w->last = last;
#pragma unroll
	for (i = 0; i < 16; i++) {
		w->half[0][i & 15] = i < w->hlen ? w->cid[(1 + i) & 31] : 0;
		w->half[1][i & 15] = i < w->hlen ? w->cid[(1 + roff + i) & 31] : 0;
	}
	if (w->len & 1) {
		w->half[0][last] &= 0xf0;
		w->half[1][0] &= 0x0f;
	}
#pragma clang loop unroll(disable)
	for (k = 0; k < 3; k++) {
		d = k & 1 ? 1 : 0; /* passes 4, 3, 2: left, right, left */
#pragma unroll
		for (i = 0; i < 14; i++)
			w->in[i & 15] = i < w->hlen ? w->half[(d ^ 1) & 1][i & 15] : 0;
		w->in[14] = w->len;
		w->in[15] = 4 - k;
		if (fp_quic_lb_aes(cfg, key_idx, w, 0))
			return FP_SID_NONE;
		d = k & 1 ? 1 : 0;
#pragma unroll
		for (i = 0; i < FP_QLB_HALF; i++)
			if (i < w->hlen)
				w->half[d][i & 15] ^= w->out[i & 15];
		if (w->len & 1) {
			if (d == 0)
				w->half[0][w->last & 15] &= 0xf0;
			else
				w->half[1][0] &= 0x0f;
		}
	}
	return fp_quic_lb_sid_bytes(w->half[0], cfg->sid_len, &w->sid);
}

#endif /* FLOWPIN_XDP_LB_QUIC_LB_ENC_H */
