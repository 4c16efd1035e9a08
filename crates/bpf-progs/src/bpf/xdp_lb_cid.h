/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * xdp_lb: the connection-ID layout a QUIC VIP declared (`cid_cfgs`,
 * flowpin_lb.h "Per-VIP connection-ID configuration"). Only that layout is
 * decoded: flowpin, Katran v1-v3, or QUIC-LB with up to 7 live
 * configurations picked by the config rotation codepoint (plaintext, or
 * encrypted: xdp_lb_quic_lb_enc.h). Short headers read cid_len octets of
 * DCID; long headers (QUIC v1/v2 Initial, 0-RTT, Handshake) their DCID,
 * whose on-wire length must hold the configured one. Included by
 * xdp_lb_server_id.h after the FP_SID_* results.
 */
#ifndef FLOWPIN_XDP_LB_CID_H
#define FLOWPIN_XDP_LB_CID_H

#include <flowpin/tcp_opt.h>

#include "xdp_lb_maps.h"
#include "xdp_lb_quic_lb_enc.h"

#define FP_QUIC_VERSION_1 1

static __always_inline const struct flowpin_cid_cfg *fp_cid_cfg(__u32 vip_id, __u32 slot)
{
	__u32 k = vip_id * FLOWPIN_CID_CFGS_PER_VIP + slot;

	return bpf_map_lookup_elem(&cid_cfgs, &k);
}

/* A long header whose DCID the server may have chosen: QUIC v1 or v2, not
 * a Retry (servers send those). Version negotiation (version 0) and
 * unknown versions keep the hash. @q_off: the UDP payload's offset. */
static __always_inline int fp_quic_long_routable(struct xdp_md *ctx, __u32 q_off, __u8 first)
{
	__u8 v[4];
	__u32 ver, type = (first & FLOWPIN_QUIC_LONG_TYPE_MASK) >> FLOWPIN_QUIC_LONG_TYPE_SHIFT;

	if (bpf_xdp_load_bytes(ctx, q_off + FLOWPIN_QUIC_VERSION_OFFSET, v, 4))
		return 0;
	ver = ((__u32)v[0] << 24) | ((__u32)v[1] << 16) | ((__u32)v[2] << 8) | v[3];
	if (ver == FP_QUIC_VERSION_1)
		return type != 3;
	if (ver == FLOWPIN_QUIC_VERSION_2)
		return type != 0;
	return 0;
}

/* The server_id of the DCID of the QUIC packet at @q_off (first byte
 * @first) under VIP @vip_id's declared layout @mode (not FLOWPIN_CID_ANY):
 * an FP_SID_* result. The DCID is copied to the per-CPU scratch (the stack
 * is nearly full). */
static __always_inline int fp_cid_server_id(struct xdp_md *ctx, __u32 q_off, __u8 first,
					    const struct flowpin_cid_cfg *mode, __u32 vip_id,
					    __u32 *sid)
{
	const struct flowpin_cid_cfg *cfg = mode;
	struct fp_qlb_scratch *w;
	__u32 zero = 0;
	__u8 *cid;
	__u32 off, wire = 0, want, v;
	__u8 c0, dl;

	w = bpf_map_lookup_elem(&cid_scratch, &zero);
	if (!w)
		return FP_SID_NONE;
	cid = w->cid;
	__builtin_memset(cid, 0, sizeof(w->cid));

	if (first & FLOWPIN_QUIC_LONG_HEADER_BIT) {
		if (bpf_xdp_load_bytes(ctx, q_off + FLOWPIN_QUIC_LONG_DCID_LEN_OFFSET, &dl, 1))
			return FP_SID_MALFORMED;
		wire = dl;
		if (wire > FLOWPIN_QUIC_CID_MAX_LEN)
			return FP_SID_MALFORMED;
		if (wire == 0)
			return FP_SID_NONE;
		off = q_off + FLOWPIN_QUIC_LONG_DCID_OFFSET;
	} else {
		off = q_off + FLOWPIN_QUIC_SHORT_DCID_OFFSET;
	}
	if (bpf_xdp_load_bytes(ctx, off, &c0, 1))
		return FP_SID_MALFORMED;
	if (mode->layout == FLOWPIN_CID_QUIC_LB) {
		__u32 cr = c0 >> FLOWPIN_QUIC_LB_CR_SHIFT;

		if (cr == FLOWPIN_QUIC_LB_CR_UNROUTABLE)
			return FP_SID_NONE;
		cfg = fp_cid_cfg(vip_id, cr);
		if (!cfg || cfg->layout == FLOWPIN_CID_ANY)
			return FP_SID_NONE; /* a configuration this VIP does not have */
	}
	want = cfg->cid_len;
	if (want < 1 || want > FLOWPIN_QUIC_CID_MAX_LEN)
		return FP_SID_MALFORMED;
	if (wire && wire < want)
		return FP_SID_NONE; /* not a CID of this configuration */
	if (bpf_xdp_load_bytes(ctx, off, cid, want))
		return FP_SID_MALFORMED;
	switch (cfg->layout) {
	case FLOWPIN_CID_FLOWPIN:
		if (want < FLOWPIN_QUIC_CID_MIN_LEN ||
		    ((c0 & FLOWPIN_QUIC_CID_FLOWPIN_VERSION_MASK) >>
		     FLOWPIN_QUIC_CID_FLOWPIN_VERSION_SHIFT) != FLOWPIN_QUIC_CID_FLOWPIN_VERSION)
			return FP_SID_NONE;
		*sid = ((__u32)cid[1] << 24) | ((__u32)cid[2] << 16) | ((__u32)cid[3] << 8) | cid[4];
		return FP_SID_FOUND;
	case FLOWPIN_CID_KATRAN:
		if (want < FLOWPIN_QUIC_CID_MIN_LEN)
			return FP_SID_NONE;
		v = (c0 & FLOWPIN_QUIC_CID_KATRAN_VERSION_MASK) >> FLOWPIN_QUIC_CID_KATRAN_VERSION_SHIFT;
		if (v == FLOWPIN_QUIC_CID_KATRAN_V1)
			*sid = ((__u32)(c0 & FLOWPIN_QUIC_CID_KATRAN_V1_BYTE0_MASK) << 10) |
			       ((__u32)cid[1] << 2) | (cid[2] >> 6);
		else if (v == FLOWPIN_QUIC_CID_KATRAN_V2)
			*sid = ((__u32)cid[1] << 16) | ((__u32)cid[2] << 8) | cid[3];
		else if (v == FLOWPIN_QUIC_CID_KATRAN_V3)
			*sid = ((__u32)cid[1] << 24) | ((__u32)cid[2] << 16) | ((__u32)cid[3] << 8) |
			       cid[4];
		else
			return FP_SID_NONE;
		return FP_SID_FOUND;
	case FLOWPIN_CID_QUIC_LB:
		return fp_quic_lb_sid_bytes(cid + FLOWPIN_QUIC_LB_SID_OFFSET, cfg->sid_len, sid);
	case FLOWPIN_CID_QUIC_LB_ENC:
	{
		int r = fp_quic_lb_decrypt(cfg, vip_id * FLOWPIN_CID_CFGS_PER_VIP + (c0 >> 5), w);

		*sid = w->sid;
		return r;
	}
	default:
		return FP_SID_NONE;
	}
}

#endif /* FLOWPIN_XDP_LB_CID_H */
