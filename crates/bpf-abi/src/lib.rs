//! The contract between flowpin's BPF programs and user space, in pure Rust.
//!
//! The C headers in `include/flowpin/` are the single source of truth of
//! every layout and constant the programs share with Rust:
//!
//! - **structs** (map keys and values, configuration, counters) reach Rust
//!   only through the types libbpf-cargo generates from each program's BTF
//!   (`flowpin_bpf_progs::skel::<prog>::types`); nothing here re-declares
//!   them;
//! - **constants** (`#define`s) are re-stated here as Rust constants, and
//!   `tests/header_defines.rs` parses the headers and fails on any drift,
//!   without root and without clang;
//! - **functions** both sides compute (the flow hash, the VIP and
//!   server_id table slots, the socket-array key) are written here once,
//!   bit for bit the C `static inline` functions, and privileged tests
//!   in `flowpin-bpf-progs` run both on the same packets.
//!
//! This crate builds without clang or libbpf, so load-balancer tooling,
//! simulators and benches can hash flows exactly as the data path does.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod flow_hash;
pub mod lb;
pub mod reuseport;
pub mod vip;

/// Directory of the shared C headers (`flowpin_lb.h`,
/// `sk_reuseport_select.h`), for build scripts that compile the programs.
pub const INCLUDE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include/flowpin");
