#!/usr/bin/env bash
# The whole test suite: unit, property, integration, privileged (BPF, network
# namespaces, cgroups) and doc tests, then the measurement programs in quick
# mode (each fails on a broken invariant). Run as root: as root a privileged
# test never skips (a kernel refusal fails it). A non-root run skips the
# privileged tests and ends with one loud line counting them.
# Installs what a fresh machine lacks first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

# Every skipped test appends a line here (flowpin_testing::SKIP_LOG_ENV).
FLOWPIN_SKIP_LOG="$(mktemp -t flowpin-skipped.XXXXXX)"
export FLOWPIN_SKIP_LOG
report_skips() {
    local n
    n=$(wc -l <"$FLOWPIN_SKIP_LOG" 2>/dev/null || echo 0)
    if [ "$n" -gt 0 ]; then
        echo "!!!!! $n PRIVILEGED TESTS SKIPPED (not root; see the SKIPPED lines above): this run did NOT test the BPF data path !!!!!" >&2
    fi
    rm -f "$FLOWPIN_SKIP_LOG"
}
trap report_skips EXIT

# One feature per BPF program: each compiles alone, and flowpin-sk-lookup /
# flowpin-sk-reuseport compile their own program only (no xdp_lb, no Maglev).
./scripts/check-features.sh

# The release-harness test runs the `release` example binary: build examples first.
cargo build --workspace --examples --locked
cargo test --workspace --all-targets --locked --no-fail-fast
cargo test --workspace --doc --locked

# The measurement programs, quick mode: seconds each, failing on a broken
# invariant (wrong verdict or output in the bench, a broken server_id
# connection in the lab, any loss for flowpin in the release harness).
if [ "$(id -u)" -eq 0 ]; then
    # --live: every path on live frames too (veth pair, XDP_TX loop, short
    # rounds); fails if a path's rate is 0 or its loop did not run.
    cargo run --locked --quiet --example xdp_bench -- --quick --live
    cargo run --locked --quiet --example conn_table_bench -- --quick  # no established flow missed at <= 50 % load
    cargo run --locked --quiet --example lab -- --quick  # builds and runs flowpin-node for its fleet section
    cargo run --locked --quiet --example release -- --quick
    cargo run --locked --quiet --example any_port -- --quick  # sk_lookup invariants
else
    echo "SKIPPED quick runs of xdp_bench, conn_table_bench, lab, release, any_port (need root)" >>"$FLOWPIN_SKIP_LOG"
fi
