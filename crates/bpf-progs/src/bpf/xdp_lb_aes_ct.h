/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * xdp_lb: constant-time AES-128 in BPF, bitsliced: the 16 bytes of a block
 * become 8 bit planes (plane p holds bit p of byte j at bit j, j = 4 * column
 * + row, the block's own byte order); SubBytes is a Boolean circuit on the
 * planes (xdp_lb_aes_ct_sbox.h, generated), ShiftRows and MixColumns are
 * shifts and masks of the planes, AddRoundKey XORs bitsliced round keys.
 * Nothing is indexed by a secret and nothing branches on one: the time of a
 * block does not depend on the key or the data.
 *
 * Round keys (computed by user space into flowpin_cid_cfg.rk, read as
 * __u64): round key r (0..10) as two packed words, rk64[2r] = planes 0..3,
 * rk64[2r + 1] = planes 4..7, plane p in bits 16 * (p % 4) .. + 15.
 * Decryption uses the same keys in reverse order (the straightforward
 * inverse cipher).
 *
 * Standalone (no map, no helper): examples/aes_micro and the host tests
 * include it with __u64/__u16 defined.
 */
#ifndef FLOWPIN_XDP_LB_AES_CT_H
#define FLOWPIN_XDP_LB_AES_CT_H

#include "xdp_lb_aes_ct_sbox.h"

/* The 16 bits of a plane; NOT of a plane is XOR with it (the upper bits
 * stay zero for the shifts below). */
#define FP_AES_BS_ONES 0xffffULL

/* 8x8 bit-matrix transpose of a 64-bit word: bit 8r + c <-> bit 8c + r. */
static __always_inline __u64 fp_aes_bs_t8(__u64 x)
{
	__u64 t;

	t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAULL;
	x = x ^ t ^ (t << 7);
	t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCULL;
	x = x ^ t ^ (t << 14);
	t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ULL;
	x = x ^ t ^ (t << 28);
	return x;
}

/* The linear layers work on two packed words: P holds planes 0..3, Q
 * planes 4..7, plane p in bits 16 * (p % 4) .. + 15 ("lanes"); masks are
 * per lane (FP_AES_BS_L repeats a 16-bit mask in the four lanes). */
#define FP_AES_BS_L(m) (0x0001000100010001ULL * (m))

/* ShiftRows: row r of the new state is row r of the old rotated left by r
 * columns (new bit j = old bit j + 4r mod 16, per lane). */
static __always_inline __u64 fp_aes_bs_sr(__u64 x)
{
	return (x & FP_AES_BS_L(0x1111)) | ((x >> 4) & FP_AES_BS_L(0x0222)) |
	       ((x << 12) & FP_AES_BS_L(0x2000)) | ((x >> 8) & FP_AES_BS_L(0x0044)) |
	       ((x << 8) & FP_AES_BS_L(0x4400)) | ((x >> 12) & FP_AES_BS_L(0x0008)) |
	       ((x << 4) & FP_AES_BS_L(0x8880));
}

/* InvShiftRows: new bit j = old bit j - 4r mod 16. */
static __always_inline __u64 fp_aes_bs_isr(__u64 x)
{
	return (x & FP_AES_BS_L(0x1111)) | ((x << 4) & FP_AES_BS_L(0x2220)) |
	       ((x >> 12) & FP_AES_BS_L(0x0002)) | ((x << 8) & FP_AES_BS_L(0x4400)) |
	       ((x >> 8) & FP_AES_BS_L(0x0044)) | ((x << 12) & FP_AES_BS_L(0x8000)) |
	       ((x >> 4) & FP_AES_BS_L(0x0888));
}

/* Rows of each column rotated by one (row r gets row r + 1) and by two. */
static __always_inline __u64 fp_aes_bs_rot1(__u64 x)
{
	return ((x >> 1) & FP_AES_BS_L(0x7777)) | ((x << 3) & FP_AES_BS_L(0x8888));
}

static __always_inline __u64 fp_aes_bs_rot2(__u64 x)
{
	return ((x >> 2) & FP_AES_BS_L(0x3333)) | ((x << 2) & FP_AES_BS_L(0xcccc));
}

/* Multiplication by 2 of the packed planes (P, Q) into (@xp, @xq): plane p
 * moves to p + 1, plane 7 feeds back into planes 0, 1, 3 and 4
 * (x^8 = x^4 + x^3 + x + 1). */
#define FP_AES_BS_XTIME(p, q, xp, xq)                                                           \
	do {                                                                                   \
		__u64 h7 = (q) >> 48;                                                          \
		xp = ((p) << 16) ^ h7 ^ (h7 << 16) ^ (h7 << 48);                               \
		xq = ((q) << 16) ^ ((p) >> 48) ^ h7;                                           \
	} while (0)

/* MixColumns: b = 2t + rot1(a) + rot2(t), t = a + rot1(a)
 * (b_r = 2a_r + 3a_(r+1) + a_(r+2) + a_(r+3)). */
#define FP_AES_BS_MIX(P, Q)                                                                    \
	do {                                                                                   \
		__u64 rp = fp_aes_bs_rot1(P), rq = fp_aes_bs_rot1(Q);                          \
		__u64 tp = P ^ rp, tq = Q ^ rq, xp, xq;                                        \
		FP_AES_BS_XTIME(tp, tq, xp, xq);                                               \
		P = xp ^ rp ^ fp_aes_bs_rot2(tp);                                              \
		Q = xq ^ rq ^ fp_aes_bs_rot2(tq);                                              \
	} while (0)

/* InvMixColumns = MixColumns after a_r -> 5a_r + 4a_(r+2)
 * = a_r + 4u_r, u = a + rot2(a). */
#define FP_AES_BS_INV_MIX(P, Q)                                                                \
	do {                                                                                   \
		__u64 up = P ^ fp_aes_bs_rot2(P), uq = Q ^ fp_aes_bs_rot2(Q), vp, vq, wp, wq;  \
		FP_AES_BS_XTIME(up, uq, vp, vq);                                               \
		FP_AES_BS_XTIME(vp, vq, wp, wq);                                               \
		P ^= wp;                                                                       \
		Q ^= wq;                                                                       \
		FP_AES_BS_MIX(P, Q);                                                           \
	} while (0)

/* Round key @r: two packed words at rk64[2r], rk64[2r + 1]. */
#define FP_AES_BS_ARK(rk64, r)                                                                 \
	do {                                                                                   \
		P ^= rk64[2 * (r)];                                                            \
		Q ^= rk64[2 * (r) + 1];                                                        \
	} while (0)

#define FP_AES_BS_UNPACK()                                                                     \
	do {                                                                                   \
		q0 = P & 0xffff;                                                               \
		q1 = (P >> 16) & 0xffff;                                                       \
		q2 = (P >> 32) & 0xffff;                                                       \
		q3 = P >> 48;                                                                  \
		q4 = Q & 0xffff;                                                               \
		q5 = (Q >> 16) & 0xffff;                                                       \
		q6 = (Q >> 32) & 0xffff;                                                       \
		q7 = Q >> 48;                                                                  \
	} while (0)

#define FP_AES_BS_PACK()                                                                       \
	do {                                                                                   \
		P = q0 | (q1 << 16) | (q2 << 32) | (q3 << 48);                                 \
		Q = q4 | (q5 << 16) | (q6 << 32) | (q7 << 48);                                 \
	} while (0)

/* 16 bytes at @b (8-aligned) to packed planes P, Q (through q0..q7), and back. */
#define FP_AES_BS_LOAD(b)                                                                      \
	do {                                                                                   \
		__u64 w0 = fp_aes_bs_t8(*(const __u64 *)(b));                                  \
		__u64 w1 = fp_aes_bs_t8(*(const __u64 *)((b) + 8));                            \
		q0 = (w0 & 0xff) | ((w1 & 0xff) << 8);                                         \
		q1 = ((w0 >> 8) & 0xff) | ((w1 >> 0) & 0xff00);                                \
		q2 = ((w0 >> 16) & 0xff) | ((w1 >> 8) & 0xff00);                               \
		q3 = ((w0 >> 24) & 0xff) | ((w1 >> 16) & 0xff00);                              \
		q4 = ((w0 >> 32) & 0xff) | ((w1 >> 24) & 0xff00);                              \
		q5 = ((w0 >> 40) & 0xff) | ((w1 >> 32) & 0xff00);                              \
		q6 = ((w0 >> 48) & 0xff) | ((w1 >> 40) & 0xff00);                              \
		q7 = (w0 >> 56) | ((w1 >> 48) & 0xff00);                                       \
		FP_AES_BS_PACK();                                                              \
	} while (0)

#define FP_AES_BS_STORE(b)                                                                     \
	do {                                                                                   \
		FP_AES_BS_UNPACK();                                                            \
		__u64 w0 = (q0 & 0xff) | ((q1 & 0xff) << 8) | ((q2 & 0xff) << 16) |            \
			   ((q3 & 0xff) << 24) | ((q4 & 0xff) << 32) | ((q5 & 0xff) << 40) |   \
			   ((q6 & 0xff) << 48) | ((q7 & 0xff) << 56);                          \
		__u64 w1 = (q0 >> 8) | ((q1 >> 8) << 8) | ((q2 >> 8) << 16) |                  \
			   ((q3 >> 8) << 24) | ((q4 >> 8) << 32) | ((q5 >> 8) << 40) |         \
			   ((q6 >> 8) << 48) | ((q7 >> 8) << 56);                              \
		*(__u64 *)(b) = fp_aes_bs_t8(w0);                                              \
		*(__u64 *)((b) + 8) = fp_aes_bs_t8(w1);                                        \
	} while (0)

#define FP_AES_BS_SUB()                                                                        \
	do {                                                                                   \
		FP_AES_BS_UNPACK();                                                            \
		FP_AES_BS_SBOX(m, q0, q1, q2, q3, q4, q5, q6, q7, q0, q1, q2, q3, q4, q5, q6, q7);  \
		FP_AES_BS_PACK();                                                              \
	} while (0)

#define FP_AES_BS_INV_SUB()                                                                    \
	do {                                                                                   \
		FP_AES_BS_UNPACK();                                                            \
		FP_AES_BS_INV_SBOX(m, q0, q1, q2, q3, q4, q5, q6, q7, q0, q1, q2, q3, q4, q5, q6,   \
				   q7);                                                        \
		FP_AES_BS_PACK();                                                              \
	} while (0)

#define FP_AES_BS_ENC_ROUND(rk64, r)                                                           \
	do {                                                                                   \
		FP_AES_BS_SUB();                                                               \
		P = fp_aes_bs_sr(P);                                                           \
		Q = fp_aes_bs_sr(Q);                                                           \
		FP_AES_BS_MIX(P, Q);                                                           \
		FP_AES_BS_ARK(rk64, r);                                                        \
	} while (0)

#define FP_AES_BS_DEC_ROUND(rk64, r)                                                           \
	do {                                                                                   \
		P = fp_aes_bs_isr(P);                                                          \
		Q = fp_aes_bs_isr(Q);                                                          \
		FP_AES_BS_INV_SUB();                                                           \
		FP_AES_BS_ARK(rk64, r);                                                        \
		FP_AES_BS_INV_MIX(P, Q);                                                       \
	} while (0)

/* One block, @in to @out (16 octets each, 8-aligned), bitsliced round keys
 * @rk64 (22 words: round r at 2r, 2r + 1), @m 8 words of scratch in a map
 * value (values the S-box keeps there instead of spilling them to the
 * stack: the callers' frames leave little of it). Straight-line code. */
static __always_inline void fp_aes_bs_enc_block(const __u64 *rk64, const __u8 *in, __u8 *out,
					       volatile __u64 *m)
{
	__u64 q0, q1, q2, q3, q4, q5, q6, q7, P, Q;

	FP_AES_BS_LOAD(in);
	FP_AES_BS_ARK(rk64, 0);
	FP_AES_BS_ENC_ROUND(rk64, 1);
	FP_AES_BS_ENC_ROUND(rk64, 2);
	FP_AES_BS_ENC_ROUND(rk64, 3);
	FP_AES_BS_ENC_ROUND(rk64, 4);
	FP_AES_BS_ENC_ROUND(rk64, 5);
	FP_AES_BS_ENC_ROUND(rk64, 6);
	FP_AES_BS_ENC_ROUND(rk64, 7);
	FP_AES_BS_ENC_ROUND(rk64, 8);
	FP_AES_BS_ENC_ROUND(rk64, 9);
	FP_AES_BS_SUB();
	P = fp_aes_bs_sr(P);
	Q = fp_aes_bs_sr(Q);
	FP_AES_BS_ARK(rk64, 10);
	FP_AES_BS_STORE(out);
}

static __always_inline void fp_aes_bs_dec_block(const __u64 *rk64, const __u8 *in, __u8 *out,
					       volatile __u64 *m)
{
	__u64 q0, q1, q2, q3, q4, q5, q6, q7, P, Q;

	FP_AES_BS_LOAD(in);
	FP_AES_BS_ARK(rk64, 10);
	FP_AES_BS_DEC_ROUND(rk64, 9);
	FP_AES_BS_DEC_ROUND(rk64, 8);
	FP_AES_BS_DEC_ROUND(rk64, 7);
	FP_AES_BS_DEC_ROUND(rk64, 6);
	FP_AES_BS_DEC_ROUND(rk64, 5);
	FP_AES_BS_DEC_ROUND(rk64, 4);
	FP_AES_BS_DEC_ROUND(rk64, 3);
	FP_AES_BS_DEC_ROUND(rk64, 2);
	FP_AES_BS_DEC_ROUND(rk64, 1);
	P = fp_aes_bs_isr(P);
	Q = fp_aes_bs_isr(Q);
	FP_AES_BS_INV_SUB();
	FP_AES_BS_ARK(rk64, 0);
	FP_AES_BS_STORE(out);
}

#endif /* FLOWPIN_XDP_LB_AES_CT_H */
