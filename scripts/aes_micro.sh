#!/bin/sh
# Builds the AES micro-benchmark's BPF object and runs it (root): the own
# cost of one AES-128 block in XDP, kfuncs per kernel driver and the BPF
# engines. Arguments go to the example: [calls] [rounds].
set -eu
cd "$(dirname "$0")/.."
clang=${FLOWPIN_CLANG:-clang-19}
inc=$(mktemp -d)
libbpf=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/libbpf-sys-*/libbpf/src | tail -1)
mkdir -p "$inc/bpf"
cp "$libbpf"/bpf_*.h "$inc/bpf/"
$clang -O2 -g -target bpf -D__TARGET_ARCH_x86 -I"$inc" -Icrates/bpf-abi/include \
	-I/usr/include/"$(uname -m)"-linux-gnu \
	-c crates/bpf-progs/examples/aes_micro/aes_micro.bpf.c -o "$inc/aes_micro.bpf.o"
cargo run --release -p flowpin-bpf-progs --example aes_micro -- "$inc/aes_micro.bpf.o" "$@"
rm -rf "$inc"
