// SPDX-License-Identifier: (MIT OR Apache-2.0)
// The empty XDP program: returns XDP_PASS. It is the baseline of every XDP
// benchmark and the pass-through program a veth peer needs for native XDP_TX.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "bpf_common.h"

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
