//! BPF programs of the flowpin suite, compiled by libbpf-cargo into
//! libbpf-rs skeletons, with typed Rust control APIs.
//!
//! One module per program, each with the same shape: a config struct →
//! `load` → `attach` → a link that detaches on drop → typed map updates and
//! `stats()`.
#![deny(missing_docs)]

pub mod skel;

#[cfg(feature = "testing")]
pub mod testing;
