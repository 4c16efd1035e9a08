#!/usr/bin/env bash
# The whole test suite: unit, property, integration, privileged (BPF, network
# namespaces, cgroups) and doc tests, plus benches and examples built and run
# once in test mode. Run as root. Installs what a fresh machine lacks first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# The release-harness test runs the `release` example binary: build examples first.
cargo build --workspace --examples --locked
cargo test --workspace --all-targets --locked --no-fail-fast
cargo test --workspace --doc --locked
cargo run --release --locked --example any_port -- --quick  # sk_lookup invariants (issue 15)
