#!/usr/bin/env bash
# Installs what flowpin needs on a fresh Debian/Ubuntu machine (run as root):
# clang + llvm for the BPF programs, libelf/zlib/pkg-config for libbpf,
# iproute2 for the network-namespace labs and tests, etcd (the registry's
# store, started by its tests and the lab) and protoc (etcd-client's build).
# Idempotent and quiet
# when everything is already there.
set -euo pipefail

need=()
command -v clang-19 >/dev/null 2>&1 || command -v clang >/dev/null 2>&1 || need+=(clang-19)
command -v llvm-strip-19 >/dev/null 2>&1 || command -v llvm-strip >/dev/null 2>&1 || need+=(llvm-19)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -e /usr/include/gelf.h ] || need+=(libelf-dev)
[ -e /usr/include/zlib.h ] || need+=(zlib1g-dev)
[ -e /usr/include/linux/bpf.h ] || need+=(linux-libc-dev)

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "flowpin setup: missing ${need[*]}; run as root (or: sudo apt-get install ${need[*]})" >&2
        exit 1
    fi
    echo "flowpin setup: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "flowpin setup: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
    exit 1
fi
