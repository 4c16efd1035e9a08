//! The contract between flowpin's BPF programs and user space, in pure Rust.
//!
//! The C headers in `include/flowpin/` are the single source of truth of
//! every layout and constant the programs share with Rust; every header
//! shared by C and Rust lives there (program-private headers stay beside
//! their program in `flowpin-bpf-progs`):
//!
//! | header | Rust |
//! |---|---|
//! | `flowpin_lb.h` (xdp_lb, xdp_decap's encapsulation) | [`lb`], [`flow_hash`] |
//! | `sk_reuseport_select.h` | [`reuseport`] |
//! | `sk_lookup.h` | [`sk_lookup`] |
//! | `sockops_server_id.h` | [`sockops`] |
//! | `probe_encap.h` (health probes through the tunnel) | [`probe`] |
//! | `tcp_opt.h` (server_id option, QUIC CID layouts) | `flowpin_tcp_opt::consts` |
//!
//! - **constants** (`#define`s) are re-stated here (or in
//!   `flowpin_tcp_opt::consts`) as Rust constants, and
//!   `tests/header_defines.rs` parses every header and fails on any drift,
//!   without root and without clang;
//! - **structs** (map keys and values, configuration, counters) reach the
//!   kernel layer through the types libbpf-cargo generates from each
//!   program's BTF (`flowpin_bpf_progs::skel::<prog>::types`); the few that a
//!   pure model needs without a skeleton (the maps of `sk_lookup`,
//!   `sk_reuseport_select`'s counters) are declared here as `#[repr(C)]`
//!   structs, checked padding-free at compile time and against the BTF
//!   types (size and every field's offset) by a unit test of
//!   `flowpin-bpf-progs`;
//! - **functions** both sides compute (the flow hash, the VIP and
//!   server_id table slots, the socket-array key) are written here once,
//!   bit for bit the C `static inline` functions, and privileged tests
//!   in `flowpin-bpf-progs` run both on the same packets.
//!
//! This crate builds without clang or libbpf, so load-balancer tooling,
//! simulators and benches can hash flows exactly as the data path does.
//!
//! # Compiling against the headers
//!
//! Pass [`INCLUDE_DIR`] with `-I` and include the headers as
//! `<flowpin/<name>.h>`. A build script gets the same directory from
//! `DEP_FLOWPIN_BPF_ABI_INCLUDE` (this crate has `links = "flowpin_bpf_abi"`),
//! as `flowpin-bpf-progs`'s does.
#![deny(missing_docs)]
// The one unsafe: `plain::Plain` for the `#[repr(C)]` structs (see
// `c_structs!`), each checked padding-free at compile time.
#![deny(unsafe_code)]

#[macro_use]
mod c_struct;

pub mod flow_hash;
pub mod lb;
pub mod mounts;
pub mod probe;
pub mod reuseport;
pub mod sk_lookup;
pub mod sockops;
pub mod vip;

/// Directory of the shared C headers, to pass with `-I`: the headers are
/// `<flowpin/flowpin_lb.h>`, `<flowpin/sk_reuseport_select.h>`,
/// `<flowpin/sk_lookup.h>`, `<flowpin/sockops_server_id.h>` and
/// `<flowpin/tcp_opt.h>` under it. Build scripts read the same path from
/// `DEP_FLOWPIN_BPF_ABI_INCLUDE`.
pub const INCLUDE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
