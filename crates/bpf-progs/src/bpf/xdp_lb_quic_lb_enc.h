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

/* Encrypted QUIC-LB: not decoded yet (falls back to the hash). */
static __always_inline int fp_quic_lb_decrypt(const struct flowpin_cid_cfg *cfg, __u32 key_idx,
					      __u8 *cid, __u32 *sid)
{
	return FP_SID_NONE;
}

#endif /* FLOWPIN_XDP_LB_QUIC_LB_ENC_H */
