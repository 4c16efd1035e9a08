/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * The kernel's BPF crypto kfuncs (kernel/bpf/crypto.c, Linux 6.10+) and the
 * types they take, declared once for every program that uses them:
 * xdp_lb (xdp_lb_aes.h: the constant-time engine's encryption) and the AES
 * micro-benchmark (examples/aes_micro/aes_micro.bpf.c).
 *
 * FP_CRYPTO_KFUNC is the linkage of the declarations: `__ksym __weak` by
 * default, so a kernel without the kfuncs still loads the program (guard
 * every call with bpf_ksym_exists()); define it as `__ksym` before
 * including this header to make such a kernel refuse the program at load.
 *
 * A bpf_crypto_ctx can be created only by a sleepable program
 * (SEC("syscall")); other programs load it from a map value's kptr field
 * (__fp_kptr).
 */
#ifndef FLOWPIN_BPF_CRYPTO_KFUNCS_H
#define FLOWPIN_BPF_CRYPTO_KFUNCS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifndef FP_CRYPTO_KFUNC
#define FP_CRYPTO_KFUNC __ksym __weak
#endif

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
						    __u32 params__sz, int *err) FP_CRYPTO_KFUNC;
extern void bpf_crypto_ctx_release(struct bpf_crypto_ctx *ctx) FP_CRYPTO_KFUNC;
extern int bpf_crypto_encrypt(struct bpf_crypto_ctx *ctx, const struct bpf_dynptr *src,
			      const struct bpf_dynptr *dst,
			      const struct bpf_dynptr *siv__nullable) FP_CRYPTO_KFUNC;
extern int bpf_crypto_decrypt(struct bpf_crypto_ctx *ctx, const struct bpf_dynptr *src,
			      const struct bpf_dynptr *dst,
			      const struct bpf_dynptr *siv__nullable) FP_CRYPTO_KFUNC;

/* A map value's field holding a referenced kernel pointer (kptr), e.g. a
 * struct bpf_crypto_ctx. */
#define __fp_kptr __attribute__((btf_type_tag("kptr")))

#endif /* FLOWPIN_BPF_CRYPTO_KFUNCS_H */
