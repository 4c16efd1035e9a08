#!/usr/bin/env bash
# One feature per BPF program in flowpin-bpf-progs, checked two ways:
#  1. every program feature compiles alone (and none at all), without a
#     warning; flowpin-testing compiles without its `bpf` feature (so with
#     no BPF program and no clang) and with it;
#  2. a crate that needs one program compiles that program and no other:
#     flowpin-sk-lookup builds only sk_lookup.skel.rs (no xdp_lb.bpf.c, no
#     Maglev), flowpin-sk-reuseport only sk_reuseport_select.skel.rs. The
#     skeletons present in the OUT_DIR of the flowpin-bpf-progs build that
#     cargo made for that crate (each feature set has its own) are the
#     programs clang compiled for it.
set -euo pipefail
cd "$(dirname "$0")/.."

for features in "" xdp-lb xdp-decap xdp-pass xdp-reflect sockops reuseport sk-lookup probe-encap; do
    echo "cargo check -p flowpin-bpf-progs --no-default-features --features '$features'"
    # Warnings fail it too (cargo replays them from its cache on a re-run).
    out=$(cargo check --locked --quiet -p flowpin-bpf-progs --no-default-features --features "$features" 2>&1) ||
        { printf '%s\n' "$out" >&2; exit 1; }
    if printf '%s\n' "$out" | grep -q '^warning'; then
        printf '%s\n' "$out" >&2
        echo "FAILED: warnings with features '$features'" >&2
        exit 1
    fi
done
echo "cargo check -p flowpin-testing --no-default-features, then --features bpf"
cargo check --locked --quiet -p flowpin-testing --no-default-features
cargo check --locked --quiet -p flowpin-testing --features bpf
if cargo tree --locked -p flowpin-testing --no-default-features -e normal | grep -q flowpin-bpf-progs; then
    echo "FAILED: flowpin-testing without feature bpf depends on flowpin-bpf-progs" >&2
    exit 1
fi

# skeletons_of <cargo build args>: the *.skel.rs files generated for the
# flowpin-bpf-progs that `cargo build <args>` links, one a line.
skeletons_of() {
    local out_dirs
    out_dirs=$(cargo build --locked --quiet "$@" --message-format=json |
        grep '"reason":"build-script-executed"' |
        grep '"package_id":"[^"]*flowpin-bpf-progs' |
        sed 's/.*"out_dir":"\([^"]*\)".*/\1/')
    if [ "$(printf '%s\n' "$out_dirs" | grep -c .)" -ne 1 ]; then
        echo "expected one flowpin-bpf-progs build for cargo build $*, found: [$out_dirs]" >&2
        return 1
    fi
    (cd "$out_dirs" && ls -- *.skel.rs)
}

# expect_only <skeleton> <cargo build args>
expect_only() {
    local want=$1 got
    shift
    got=$(skeletons_of "$@" | tr '\n' ' ')
    if [ "$got" != "$want " ]; then
        echo "FAILED: cargo build $* compiled the BPF programs [$got], want only [$want]" >&2
        return 1
    fi
    echo "cargo build $* compiles only $want"
}

expect_only sk_lookup.skel.rs -p flowpin-sk-lookup
expect_only sk_reuseport_select.skel.rs -p flowpin-sk-reuseport
# The facade's features map onto the programs.
expect_only sk_lookup.skel.rs -p flowpin --no-default-features --features sk-lookup
expect_only xdp_lb.skel.rs -p flowpin --no-default-features --features xdp-lb
expect_only probe_encap.skel.rs -p flowpin --no-default-features --features health
if cargo tree --locked -p flowpin-sk-lookup -e normal | grep -q flowpin-maglev; then
    echo "FAILED: flowpin-sk-lookup depends on flowpin-maglev" >&2
    exit 1
fi

# The load balancer's control core is pure Rust: no libbpf, no bindgen in
# its tree, and its tests pass with clang unusable (a build of
# flowpin-bpf-progs would fail at once on FLOWPIN_CLANG=/nonexistent).
if cargo tree --locked -p flowpin-lb-core -e all | grep -Eq "libbpf|bindgen"; then
    echo "FAILED: flowpin-lb-core depends on libbpf-rs/libbpf-sys/bindgen" >&2
    exit 1
fi
echo "FLOWPIN_CLANG=/nonexistent cargo test -p flowpin-lb-core"
FLOWPIN_CLANG=/nonexistent cargo test --locked --quiet -p flowpin-lb-core
