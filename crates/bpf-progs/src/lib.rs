//! BPF programs of the flowpin suite, compiled by libbpf-cargo into
//! libbpf-rs skeletons, with typed Rust control APIs.
//!
//! One module per program, each with the same shape: a config struct →
//! `load` → `attach` → a link that detaches on drop → typed map updates and
//! `stats()` (per-CPU counters summed over CPUs). Loading needs root
//! (`CAP_BPF` + `CAP_NET_ADMIN`); every error names the map or call that
//! failed and carries its errno.
//!
//! | module | program type | attached to | handle (dropping it detaches) |
//! |---|---|---|---|
//! | [`xdp_lb`] | XDP: L4 load balancer (Maglev + LRU, IPIP/IP6IP6 encap, server_id routing) | an interface, native mode falling back to generic | [`xdp_attach::XdpLink`] |
//! | [`xdp_decap`] | XDP: backend-side decapsulation | an interface, same | [`xdp_attach::XdpLink`] |
//! | [`xdp_pass`] | XDP: empty `XDP_PASS` (bench baseline, veth peer) | an interface, same | [`xdp_attach::XdpLink`] |
//! | [`sockops_server_id`] | `SOCK_OPS`: server_id TCP option, server and client roles | a cgroup v2, through a BPF link | [`sockops_server_id::SockopsLink`] |
//! | [`sk_reuseport_select`] | `SK_REUSEPORT`: generation/slot socket selection, request migration | a `SO_REUSEPORT` group (`SO_ATTACH_REUSEPORT_EBPF`; no link type exists, it stays attached while a socket of the group lives) | pinned maps, driven by `flowpin-sk-reuseport` |
//!
//! Shared pieces: [`xdp_attach`] (XDP attach, link guard and
//! `BPF_PROG_TEST_RUN`), [`flow_hash`] and [`model`] (Rust twins of
//! `xdp_lb`'s hash and decision, for tests and benches), [`skel`] (the
//! generated skeletons) and, with the `testing` feature, `testing`
//! (namespace, veth and cgroup guards for privileged tests).
//!
//! ## Build
//!
//! `build.rs` compiles every `src/bpf/<name>.bpf.c` with clang (found on
//! `$PATH` as `clang`, `clang-21` … `clang-14`, or `$FLOWPIN_CLANG`; a
//! missing clang is a build error naming the packages to install) into a
//! libbpf-rs skeleton in `OUT_DIR`, never committed. **No `vmlinux.h`**,
//! neither generated nor vendored: the programs only touch UAPI context
//! structs (`xdp_md`, `bpf_sock_ops`, `sk_reuseport_md`) and packet headers,
//! so the stable UAPI headers (`linux-libc-dev`, `-I/usr/include/<multiarch>`)
//! are enough, need no BTF at build time, and keep 3+ MB of generated,
//! kernel-specific text out of the repository. The constants shared with
//! Rust come from `crates/tcp-opt/include/flowpin/tcp_opt.h` (checked
//! against the Rust ones by a test in `flowpin-tcp-opt`) and
//! `src/bpf/*.h` (checked by this crate's unit tests).
#![deny(missing_docs)]

pub mod flow_hash;
pub mod model;
mod percpu;
pub mod sk_lookup;
pub mod sk_reuseport_select;
pub mod skel;
pub mod sockops_server_id;
pub mod xdp_attach;
pub mod xdp_decap;
pub mod xdp_lb;
pub mod xdp_pass;

#[cfg(feature = "testing")]
pub mod testing;
