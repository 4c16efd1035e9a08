/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/* xdp_lb server_id: the TCP option (fast path + bpf_loop() walk), the QUIC
 * short-header connection ID, and the route of a server_id to a backend. */
#ifndef FLOWPIN_XDP_LB_SERVER_ID_H
#define FLOWPIN_XDP_LB_SERVER_ID_H

#include <linux/tcp.h>
#include <linux/udp.h>

#include "xdp_lb_maps.h"

enum {
	FP_SID_NONE = 0,
	FP_SID_FOUND = 1,
	FP_SID_MALFORMED = 2,
};

/* The option walk of flowpin/tcp_opt.h, bound FLOWPIN_TCPOPT_MAX_WALK, as a
 * bpf_loop() callback (the verifier checks its body, not 40 unrolled
 * iterations; the kernel inlines the loop). It reads the packet in place
 * through the context kept in the loop state. */
struct fp_walk {
	struct xdp_md *ctx;
	__u32 base; /* packet offset of the options area */
	__u32 off;  /* offset of the next option in the area */
	__u32 end;  /* length of the area */
	__u32 sid;
	__u32 res;
	__u32 done;
	__u32 layout;
	__u32 kind;
	__u32 exid;
};

static long fp_walk_cb(__u64 i, void *vctx)
{
	struct fp_walk *w = vctx;
	void *data = (void *)(long)w->ctx->data;
	void *data_end = (void *)(long)w->ctx->data_end;
	__u32 off = w->off;
	__u8 *o;
	__u8 kind, olen;

	if (off >= w->end) {
		w->res = FP_SID_NONE;
		goto done;
	}
	off &= 0x3f;
	o = data + ((w->base + off) & 0x7fff);
	if ((void *)(o + 1) > data_end)
		goto malformed;
	kind = o[0];
	if (kind == FLOWPIN_TCPOPT_EOL) {
		w->res = FP_SID_NONE;
		goto done;
	}
	if (kind == FLOWPIN_TCPOPT_NOP) {
		w->off = off + 1;
		return 0;
	}
	if (off + 1 >= w->end || (void *)(o + 2) > data_end)
		goto malformed;
	olen = o[1];
	if (olen < 2 || off + olen > w->end)
		goto malformed;
	switch (fp_tcpopt_match(o, data_end, w->layout, w->kind, w->exid, &w->sid)) {
	case FP_TCPOPT_SERVER_ID:
		w->res = FP_SID_FOUND;
		goto done;
	case FP_TCPOPT_BAD:
		goto malformed;
	default:
		break;
	}
	w->off = off + olen;
	return 0;
malformed:
	w->res = FP_SID_MALFORMED;
done:
	w->done = 1;
	return 1;
}

/* Fast path for the usual option areas: up to 4 leading NOPs / timestamps
 * (kind 8, length 10) followed by a well-formed server_id option. The full
 * walk would skip exactly those and match the same option, so the result is
 * the same; anything else takes the full walk. */
static __always_inline int fp_tcp_sid_fast(struct xdp_md *ctx, __u32 base, __u32 len, __u32 *sid)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 layout = lb_cfg.tcpopt_layout, ckind = lb_cfg.tcpopt_kind;
	__u8 *opt = data + (base & 0x7fff);
	__u32 off = 0;
	__u8 *o;
	int k;

	if (layout == FLOWPIN_LAYOUT_COMPACT && (ckind == FLOWPIN_TCPOPT_NOP || ckind == 8 ||
						  ckind == FLOWPIN_TCPOPT_EOL))
		return -1;
#pragma unroll
	for (k = 0; k < 4; k++) {
		o = opt + off;
		if (off + 2 > len || (void *)(o + 2) > data_end)
			return -1;
		if (o[0] == FLOWPIN_TCPOPT_NOP) {
			off += 1;
			continue;
		}
		if (o[0] == 8 && o[1] == 10 && off + 10 <= len) {
			off += 10;
			continue;
		}
		break;
	}
	o = opt + off;
	if (off + 8 > len || (void *)(o + 8) > data_end) {
		if (off + 6 > len || (void *)(o + 6) > data_end || layout == FLOWPIN_LAYOUT_RFC6994)
			return -1;
	}
	if ((void *)(o + 6) > data_end)
		return -1;
	if (fp_tcpopt_match(o, data_end, layout, ckind, lb_cfg.tcpopt_exid, sid) == FP_TCPOPT_SERVER_ID)
		return FP_SID_FOUND;
	return -1;
}

static __always_inline int fp_tcp_server_id(struct xdp_md *ctx, __u32 opt_off, __u32 optlen, __u32 *sid)
{
	struct fp_walk w;
	int r;

	if (optlen == 0)
		return FP_SID_NONE;
	r = fp_tcp_sid_fast(ctx, opt_off, optlen, sid);
	if (r >= 0)
		return r;
	w.ctx = ctx;
	w.base = opt_off;
	w.off = 0;
	w.end = optlen;
	w.sid = 0;
	w.res = FP_SID_NONE;
	w.done = 0;
	w.layout = lb_cfg.tcpopt_layout;
	w.kind = lb_cfg.tcpopt_kind;
	w.exid = lb_cfg.tcpopt_exid;
	bpf_loop(FLOWPIN_TCPOPT_MAX_WALK, fp_walk_cb, &w, 0);
	if (!w.done)
		return w.off >= w.end ? FP_SID_NONE : FP_SID_MALFORMED;
	*sid = w.sid;
	return w.res;
}

#include "xdp_lb_quic_lb.h"
#include "xdp_lb_cid.h"

/* QUIC short header: server_id from the DCID (layouts of flowpin/tcp_opt.h). */
static __always_inline int fp_quic_server_id(__u8 *q, void *data_end, __u32 *sid)
{
	__u32 cid_len = lb_cfg.quic_cid_len & 0x1f;
	__u8 *c = q + FLOWPIN_QUIC_SHORT_DCID_OFFSET;
	__u8 c0, v;
	int r;

	if (cid_len < FLOWPIN_QUIC_CID_MIN_LEN)
		cid_len = FLOWPIN_QUIC_CID_MIN_LEN;
	if ((void *)(c + FLOWPIN_QUIC_CID_MIN_LEN) > data_end)
		return FP_SID_MALFORMED;
	if ((void *)c + cid_len > data_end)
		return FP_SID_MALFORMED;
	r = fp_quic_lb_server_id(c, lb_cfg.quic_lb, sid);
	if (r != FP_QUIC_LB_OTHER)
		return r;
	c0 = c[0];
	if (((c0 & FLOWPIN_QUIC_CID_FLOWPIN_VERSION_MASK) >> FLOWPIN_QUIC_CID_FLOWPIN_VERSION_SHIFT) ==
	    FLOWPIN_QUIC_CID_FLOWPIN_VERSION) {
		*sid = fp_be32(c + FLOWPIN_QUIC_CID_FLOWPIN_ID_OFFSET);
		return FP_SID_FOUND;
	}
	v = (c0 & FLOWPIN_QUIC_CID_KATRAN_VERSION_MASK) >> FLOWPIN_QUIC_CID_KATRAN_VERSION_SHIFT;
	if (v == FLOWPIN_QUIC_CID_KATRAN_V1) {
		*sid = ((__u32)(c0 & FLOWPIN_QUIC_CID_KATRAN_V1_BYTE0_MASK) << 10) | ((__u32)c[1] << 2) |
		       (c[2] >> 6);
		return FP_SID_FOUND;
	}
	if (v == FLOWPIN_QUIC_CID_KATRAN_V2) {
		*sid = ((__u32)c[1] << 16) | ((__u32)c[2] << 8) | c[3];
		return FP_SID_FOUND;
	}
	if (v == FLOWPIN_QUIC_CID_KATRAN_V3) {
		*sid = fp_be32(c + FLOWPIN_QUIC_CID_KATRAN_V3_ID_OFFSET);
		return FP_SID_FOUND;
	}
	return FP_SID_NONE;
}

/* ------------------------------------------------------------ balancer -- */

/* server_id route of a VIP: the backend index, or 0. */
static __always_inline __u32 fp_sid_lookup(__u32 vip_id, __u32 sid)
{
	__u32 idx = flowpin_sid_slot(vip_id, sid);
	struct flowpin_sid_slot *s = bpf_map_lookup_elem(&sid_table, &idx);
	struct flowpin_sid_key sk;
	__u32 *bi;

	if (!s || s->state == FLOWPIN_SLOT_EMPTY)
		return 0;
	if (s->state == FLOWPIN_SLOT_ONE)
		return s->vip_id == vip_id && s->server_id == sid ? s->backend : 0;
	sk.vip_id = vip_id;
	sk.server_id = sid;
	bi = bpf_map_lookup_elem(&server_ids, &sk);
	return bi ? *bi : 0;
}

/* Acts on a server_id parse (@r, an FP_SID_* result of the TCP option walk
 * or the QUIC CID read, @sid the id found): the backend registered for it
 * on this VIP, or NULL to fall back to the hash; counts which case it was. */
static __always_inline const struct flowpin_backend *
fp_sid_route(int r, __u32 sid, __u32 vip_id, struct flowpin_vip_stats *vs, __u32 *idx)
{
	const struct flowpin_backend *be = NULL;
	__u32 bi;

	if (r == FP_SID_MALFORMED) {
		vs->sid_fallback_malformed++;
		return NULL;
	}
	if (r != FP_SID_FOUND) {
		vs->sid_missing++;
		return NULL;
	}
	if (sid == FLOWPIN_SERVER_ID_NONE) {
		vs->sid_fallback_zero++;
		return NULL;
	}
	bi = fp_sid_lookup(vip_id, sid);
	if (bi)
		be = fp_backend(bi);
	*idx = bi;
	if (be) {
		vs->sid_routed++;
	} else {
		/* Off the hot path: was it a backend removed from this VIP? */
		struct flowpin_sid_key sk = { .vip_id = vip_id, .server_id = sid };

		if (bpf_map_lookup_elem(&sid_retired, &sk))
			vs->sid_fallback_removed++;
		else
			vs->sid_fallback_unknown++;
	}
	return be;
}

#endif /* FLOWPIN_XDP_LB_SERVER_ID_H */
