//! # flowpin
//!
//! Pin every flow to the right host and the right process.
//!
//! This facade re-exports the crates of the suite behind features:
//!
//! | feature        | crate                   | needs clang |
//! |----------------|-------------------------|-------------|
//! | `maglev`       | [`flowpin_maglev`]      | no          |
//! | `tcp-opt`      | [`flowpin_tcp_opt`]     | no          |
//! | `lb-core`      | [`flowpin_lb_core`]     | no          |
//! | `bpf`          | [`flowpin_bpf_progs`], every program | yes |
//! | `xdp-lb`, `xdp-decap`, `sockops` | [`flowpin_bpf_progs`] with that program only | yes |
//! | `sk-reuseport` | [`flowpin_sk_reuseport`] (and the `sk_reuseport_select` program only) | yes |
//! | `quinn`        | [`flowpin_quinn`]       | no          |
//! | `registry`     | `flowpin_registry` (etcd; opt-in; with `registry::lb`, snapshot → desired LB state) | no (needs protoc) |
//! | `sk-lookup`    | [`flowpin_sk_lookup`] (and the `sk_lookup` program only) | yes |
//! | `health`       | `flowpin_health` (opt-in; probes through the LB's tunnel, and the `probe_encap` program) | yes |
//!
//! Every feature that needs clang re-exports [`flowpin_bpf_progs`] as
//! `flowpin::bpf`, with the modules of the programs it compiles: a
//! program's feature compiles that program alone (`sk-lookup` compiles
//! neither `xdp_lb` nor Maglev).
//!
//! Depend on `flowpin` with `default-features = false, features = ["maglev",
//! "tcp-opt", "lb-core"]` to get the pure-Rust parts without any C toolchain.
#![forbid(unsafe_code)]
#![cfg_attr(
    all(
        feature = "maglev",
        feature = "tcp-opt",
        feature = "bpf",
        feature = "sk-reuseport",
        feature = "sk-lookup"
    ),
    doc = include_str!("../README.md")
)]
#![deny(missing_docs)]

#[cfg(feature = "maglev")]
pub use flowpin_maglev as maglev;

#[cfg(feature = "tcp-opt")]
pub use flowpin_tcp_opt as tcp_opt;

/// The XDP load balancer's control core: plans, reconcile, rebuild.
#[cfg(feature = "lb-core")]
pub use flowpin_lb_core as lb_core;

#[cfg(any(
    feature = "bpf",
    feature = "xdp-lb",
    feature = "xdp-decap",
    feature = "sockops",
    feature = "sk-reuseport",
    feature = "sk-lookup",
    feature = "health"
))]
pub use flowpin_bpf_progs as bpf;

#[cfg(feature = "sk-reuseport")]
pub use flowpin_sk_reuseport as sk_reuseport;

/// Backend health checks through the LB's tunnel (`probe_encap`), rise/fall,
/// the prober and its metric families.
#[cfg(feature = "health")]
pub use flowpin_health as health;
/// A quinn connection-ID generator carrying the server_id and socket id.
#[cfg(feature = "quinn")]
pub use flowpin_quinn as quinn;
#[cfg(feature = "registry")]
pub use flowpin_registry as registry;
#[cfg(feature = "sk-lookup")]
pub use flowpin_sk_lookup as sk_lookup;
