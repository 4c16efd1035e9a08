/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * xdp_lb: IETF QUIC-LB plaintext connection IDs (draft-ietf-quic-load-balancers).
 * Private to xdp_lb: it returns xdp_lb's FP_SID_* results and its one define
 * (FP_QUIC_LB_OTHER) has no Rust twin. Layout and constants shared with Rust:
 * <flowpin/tcp_opt.h> ("IETF QUIC-LB plaintext connection IDs"); the Rust
 * side is flowpin_tcp_opt::quic_lb and CidLayout::QuicLb. Included by
 * xdp_lb_server_id.h after the FP_SID_* results.
 */
#ifndef FLOWPIN_XDP_QUIC_LB_H
#define FLOWPIN_XDP_QUIC_LB_H

#include <flowpin/tcp_opt.h>

/* Not a CID of the configured QUIC-LB codepoint: read the other layouts. */
#define FP_QUIC_LB_OTHER (-1)

/*
 * @c: the DCID, whose first FLOWPIN_QUIC_CID_MIN_LEN bytes the caller has
 * bounds-checked (a routed server ID is at most 4 octets at offset 1, so it
 * lies inside them). @cfg: lb_cfg.quic_lb. Returns FP_SID_FOUND with *@sid,
 * FP_SID_NONE for the unroutable codepoint 0b111, FP_SID_MALFORMED for a
 * configuration byte with an impossible server ID length, FP_QUIC_LB_OTHER
 * when QUIC-LB is off or the codepoint is another one.
 */
static __always_inline int fp_quic_lb_server_id(const __u8 *c, __u8 cfg, __u32 *sid)
{
	__u8 cr = c[0] >> FLOWPIN_QUIC_LB_CR_SHIFT;
	__u32 n = cfg & FLOWPIN_QUIC_LB_CFG_SID_LEN_MASK;
	__u32 v;

	if (!(cfg & FLOWPIN_QUIC_LB_CFG_ON))
		return FP_QUIC_LB_OTHER;
	if (cr == FLOWPIN_QUIC_LB_CR_UNROUTABLE)
		return FP_SID_NONE;
	if (cr != ((cfg >> FLOWPIN_QUIC_LB_CFG_ID_SHIFT) & FLOWPIN_QUIC_LB_CFG_ID_MASK))
		return FP_QUIC_LB_OTHER;
	if (n == 0 || n > FLOWPIN_QUIC_LB_MAX_ROUTED_SID_LEN)
		return FP_SID_MALFORMED;
	/* Big-endian server ID of n octets at FLOWPIN_QUIC_LB_SID_OFFSET. */
	v = c[FLOWPIN_QUIC_LB_SID_OFFSET];
	if (n > 1)
		v = (v << 8) | c[FLOWPIN_QUIC_LB_SID_OFFSET + 1];
	if (n > 2)
		v = (v << 8) | c[FLOWPIN_QUIC_LB_SID_OFFSET + 2];
	if (n > 3)
		v = (v << 8) | c[FLOWPIN_QUIC_LB_SID_OFFSET + 3];
	*sid = v;
	return FP_SID_FOUND;
}

#endif /* FLOWPIN_XDP_QUIC_LB_H */
