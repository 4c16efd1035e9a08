#!/usr/bin/env bash
# The main job: builds and runs the data-path lab (examples/lab) as root, its
# first look (--first-look: a representative subset, under 3 minutes; see the
# README). Installs what a fresh machine lacks first. Extra arguments go to
# the lab, e.g. ./scripts/lab.sh --json; ./scripts/lab.sh --all runs every
# scenario (as `cargo run --release --example lab` does).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# The fleet section runs `flowpin-node` (crates/node) as separate processes:
# the lab builds it through cargo, in the lab's own (release) profile.
cargo run --release --locked --example lab -- --first-look "$@"
