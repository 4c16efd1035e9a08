//! Tells the build scripts of crates that depend on this one where the
//! shared C headers are: `DEP_FLOWPIN_BPF_ABI_INCLUDE` (this crate's
//! `links = "flowpin_bpf_abi"`), the directory to pass with `-I` so that
//! `#include <flowpin/flowpin_lb.h>` and the other headers resolve. It is an
//! absolute path inside this crate's own sources (the workspace or the
//! unpacked registry copy), never a path relative to a sibling crate.

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let include = std::path::Path::new(&manifest).join("include");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:include={}", include.display());
}
