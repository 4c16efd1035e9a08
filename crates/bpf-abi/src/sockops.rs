//! Constants of `sockops_server_id.h` (the `SOCK_OPS` server_id program).
//!
//! Every constant is named after its `#define` with the `FLOWPIN_SOCKOPS_`
//! prefix dropped; `tests/header_defines.rs` checks each against the
//! header. The structs reach Rust through the skeleton's generated types
//! (`flowpin_bpf_progs::skel::sockops_server_id::types`).

/// Entries of the `server_ports` filter (local ports that get the option).
pub const MAX_PORTS: u32 = 64;
/// Entries of the `server_addrs` filter (local addresses that get the option).
pub const MAX_ADDRS: u32 = 64;
/// Layout of a pinned `sockops_server_id` (its `meta` array); bumped on any
/// change of a pinned map's layout or meaning.
pub const LAYOUT_VERSION: u32 = 1;
