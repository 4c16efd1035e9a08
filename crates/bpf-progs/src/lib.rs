//! BPF programs of the flowpin suite, compiled by libbpf-cargo into
//! libbpf-rs skeletons, with typed Rust control APIs.
//!
//! One module per program, each with the same shape: a config struct →
//! `load` → `attach` → a link that detaches on drop → typed map updates and
//! `stats()`.
#![deny(missing_docs)]

pub mod flow_hash;
pub mod model;
pub mod sk_reuseport_select;
pub mod skel;
pub mod sockops_server_id;
pub mod xdp_attach;
pub mod xdp_decap;
pub mod xdp_lb;
pub mod xdp_pass;

#[cfg(feature = "testing")]
pub mod testing;
