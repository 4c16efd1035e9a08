//! BPF programs of the flowpin suite, compiled by libbpf-cargo into
//! libbpf-rs skeletons, with typed Rust control APIs.
//!
//! # One shape for every program
//!
//! ```text
//! let prog = Prog::load(ProgConfig::…().setter(…))?;   // open + size + load
//! let mut link = prog.attach(target)?;                  // dropping `link` detaches, unless pinned
//! let stats = prog.stats()?;                            // typed, one per-CPU lookup, summed
//! prog.program_fd(); prog.maps()/map(…);                // to go lower
//!
//! // The verbs of every link (link::Link): pin, unpin, update_program, detach, info
//! link.pin(dir.join("link"))?;                          // stays attached after drop
//! link.detach()?;                                       // detaches now, pinned or not
//!
//! // State that outlives the process (xdp_lb, xdp_decap, sockops_server_id):
//! prog.pin(dir)?; link.pin(dir.join("link"))?;          // bpffs, 0600, layout version in `meta`
//! let prog = Prog::open_pinned(dir)?;                   // another process, later: same maps and state
//! let link = ProgLink::from_pinned(dir.join("link"))?;  // NotPinned if nothing is there
//! prog.upgrade(&link)?;                                 // this build's program, same maps, bpf_link_update
//! Prog::unpin(dir)?;                                    // every pin, links included
//! ```
//!
//! [`link`] holds the one [`link::Link`] trait every attachment implements
//! (cilium/ebpf's verbs and meanings); [`pin`] what the pinned programs
//! share: bpffs mounting, 0600 pins, the cross-process lock (`flock` on
//! the pin directory), `BPF_LINK_UPDATE`, and [`pin::PinError::NotPinned`]
//! when nothing is pinned where asked. Each program declares its maps once,
//! in one table from which loading, pinning, reopening and upgrading
//! derive. Every path argument is `impl AsRef<Path>` (attach targets: any
//! path type or an open file, [`file_ref::FileRef`]).
//!
//! Configs are `#[non_exhaustive]` builders, stats structs and mode enums
//! `#[non_exhaustive]`; each module has one `#[non_exhaustive]` error enum
//! (`InvalidConfig`, `Kernel(`[`error::KernelError`]`)` — object,
//! operation, errno, what to do — `NotPinned { path }`, `Link(`[`link::LinkError`]`)`,
//! and what only that program can say). Loading needs root (`CAP_BPF` +
//! `CAP_NET_ADMIN`).
//!
//! # libbpf-rs
//!
//! Every call of this crate takes and returns flowpin types and errors: no
//! `libbpf_rs::Error` is in the public API, so flowpin's semver is not tied
//! to libbpf-rs'. The one exception is deliberate: the getters for users
//! who go lower (`XdpLb::maps` and the [`xdp_lb::KernelMaps`] getters,
//! `XdpDecap::tunnel_maps`, `ServerIdOps::server_ports_map`, the
//! `SkLookup::*_map` getters and every `map(name)`) return
//! [`libbpf_rs::MapHandle`]s. That libbpf-rs is re-exported as
//! [`flowpin_bpf_progs::libbpf_rs`](libbpf_rs): use it (not a libbpf-rs of
//! your own, which may be another version) to call them.
//!
//! | module | program type | config → `load` | `attach(target)` → link | `stats()` |
//! |---|---|---|---|---|
//! | [`xdp_lb`] | XDP: L4 load balancer (Maglev + LRU, IPIP/IP6IP6 encap, server_id routing) | [`xdp_lb::XdpLbConfig`] | [`xdp_attach::XdpTarget`] (ifindex, name, name in another netns; native falling back to generic) → [`xdp_attach::XdpLink`] | [`xdp_lb::Stats`] (global + per VIP) |
//! | [`xdp_decap`] | XDP: backend-side decapsulation | [`xdp_decap::XdpDecapConfig`] | same | [`xdp_decap::DecapStats`] |
//! | [`xdp_pass`] | XDP: empty `XDP_PASS` (bench baseline, veth peer) | [`xdp_pass::XdpPassConfig`] | same | none: it is the empty baseline |
//! | `xdp_reflect` (feature `xdp-reflect`, off by default) | XDP: the far end of a live-frame bench loop (decapsulates, restores MACs, changes the flow, `XDP_TX`) + the empty `XDP_TX` program | `xdp_reflect::XdpReflectConfig` | same | `xdp_reflect::ReflectStats` |
//! | [`sockops_server_id`] | `SOCK_OPS`: server_id TCP option, server and client roles | [`sockops_server_id::ServerIdOpsConfig`] | a cgroup v2 ([`sockops_server_id::CgroupRef`]) → [`sockops_server_id::SockopsLink`] | [`sockops_server_id::ServerIdOpsStats`] |
//! | [`probe_encap`] | TCX egress: health probes (socket mark) encapsulated to a backend as `xdp_lb` does | [`probe_encap::ProbeEncapConfig`] | an ifindex → [`probe_encap::ProbeLink`] | [`probe_encap::ProbeStats`] |
//! | [`sk_reuseport_select`] | `SK_REUSEPORT`: generation/slot socket selection, request migration | [`sk_reuseport_select::SelectConfig`] | a socket of the `SO_REUSEPORT` group → [`sk_reuseport_select::ReuseportLink`] (the exception: no kernel link type exists, the program stays while the group lives) | [`sk_reuseport_select::RawStats`] (total; `stats_of(index)` per generation) |
//!
//! Shared pieces: [`error`] ([`error::KernelError`]), [`link`] (the
//! [`link::Link`] verbs), [`xdp_attach`] (XDP attach targets, the XDP link
//! and `BPF_PROG_TEST_RUN`), [`netns`] and
//! [`process`] (what an embedder needs around the programs: run code in a
//! network namespace, start a server inside a cgroup, turn off TX checksum
//! offload), [`flow_hash`] (from `flowpin-bpf-abi`, builds without clang),
//! [`skel`] (the generated skeletons).
//!
//! Not here: the test oracle and fixtures live in two `publish = false`
//! crates that every test, example and outside harness can depend on:
//! `flowpin-lb-model` (`crates/lb-model`, a Rust twin of `xdp_lb`'s
//! decision, the oracle of tests and benches) and `flowpin-testing`
//! (`crates/testing`, namespace, veth and cgroup guards and the skip
//! accounting of privileged tests).
//!
//! ## Features: one per program
//!
//! | feature | program | module |
//! |---|---|---|
//! | `xdp-lb` | `xdp_lb` (pulls in `flowpin-maglev`) | [`xdp_lb`] |
//! | `xdp-decap` | `xdp_decap` | [`xdp_decap`] |
//! | `xdp-pass` | `xdp_pass` | [`xdp_pass`] |
//! | `xdp-reflect` | `xdp_reflect` (bench loop, **not** on by default) | `xdp_reflect` |
//! | `xdp-flood` | `xdp_flood` (the lab's flood loop, **not** on by default) | `xdp_flood` |
//! | `sockops` | `sockops_server_id` | [`sockops_server_id`] |
//! | `reuseport` | `sk_reuseport_select` | [`sk_reuseport_select`] |
//! | `sk-lookup` | `sk_lookup` | [`sk_lookup`] |
//! | `probe-encap` | `probe_encap` (health probes through the tunnel) | [`probe_encap`] |
//!
//! All are on by default. A crate that needs one program depends on this
//! one with `default-features = false, features = ["<program>"]`: only that
//! program is compiled (e.g. `flowpin-sk-lookup` compiles `sk_lookup` alone,
//! neither `xdp_lb` nor Maglev). The shared modules ([`error`],
//! [`xdp_attach`], [`pin`], [`netns`], [`process`], [`netdev`],
//! [`file_ref`]) need no skeleton and are always there.
//!
//! ## Build
//!
//! `build.rs` compiles `src/bpf/<name>.bpf.c` of every enabled program with
//! clang (found on `$PATH` as `clang`, `clang-21` … `clang-14`, or
//! `$FLOWPIN_CLANG`; a missing clang is a build error naming the packages
//! to install) into a libbpf-rs skeleton in `OUT_DIR`, never committed.
//! **No `vmlinux.h`**, neither generated nor vendored: the programs only
//! touch UAPI context structs (`xdp_md`, `bpf_sock_ops`, `sk_reuseport_md`,
//! `bpf_sk_lookup`) and packet headers, so the stable UAPI headers
//! (`linux-libc-dev`, `-I/usr/include/<multiarch>`) are enough, need no BTF
//! at build time, and keep 3+ MB of generated, kernel-specific text out of
//! the repository.
//!
//! Every header shared with Rust lives in `flowpin-bpf-abi`
//! (`crates/bpf-abi/include/flowpin/`: `flowpin_lb.h`,
//! `sk_reuseport_select.h`, `sk_lookup.h`, `sockops_server_id.h`,
//! `tcp_opt.h`, included as `<flowpin/<name>.h>`); `build.rs` gets their
//! directory from that crate's build script (`DEP_FLOWPIN_BPF_ABI_INCLUDE`),
//! and its drift test checks every `#define` against the Rust constants.
//! `src/bpf/` keeps the programs and their private headers (`bpf_common.h`,
//! `bpf_crypto_kfuncs.h`, `xdp_lb_*.h`).
#![deny(missing_docs)]
// The shared modules' crate-private helpers serve several programs; with
// only some programs on, some are unused. Dead code is linted with every
// program on (the default features, as CI builds).
#![cfg_attr(
    not(all(
        feature = "xdp-lb",
        feature = "xdp-decap",
        feature = "xdp-pass",
        feature = "sockops",
        feature = "reuseport",
        feature = "sk-lookup",
        feature = "probe-encap"
    )),
    allow(dead_code)
)]

pub mod cgroup;
pub mod error;
pub mod file_ref;
pub use flowpin_bpf_abi::flow_hash;
/// The exact libbpf-rs whose `MapHandle`s the low-level map getters return.
pub use libbpf_rs;
pub mod link;
pub mod netdev;
pub mod netns;
pub mod pin;
mod pinned_maps;
#[cfg(feature = "probe-encap")]
pub mod probe_encap;
pub mod process;
#[cfg(feature = "sk-lookup")]
pub mod sk_lookup;
#[cfg(feature = "reuseport")]
pub mod sk_reuseport_select;
pub mod skel;
#[cfg(feature = "sockops")]
pub mod sockops_server_id;
pub mod xdp_attach;
#[cfg(feature = "xdp-decap")]
pub mod xdp_decap;
#[cfg(feature = "xdp-flood")]
pub mod xdp_flood;
#[cfg(feature = "xdp-lb")]
pub mod xdp_lb;
#[cfg(feature = "xdp-pass")]
pub mod xdp_pass;
#[cfg(feature = "xdp-reflect")]
pub mod xdp_reflect;
