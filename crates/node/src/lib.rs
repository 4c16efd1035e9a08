//! The flowpin node: one program, two roles of a flowpin fleet on the etcd
//! registry, configured by TOML. The binary `flowpin-node` is a thin
//! command line over this library:
//!
//! - `flowpin-node lb --config lb.toml` ([`lb::run`]): `xdp_lb` (pinned: a
//!   restart reopens it) following the etcd registry, with Prometheus
//!   metrics and a JSON status ([`status::LbStatus`]).
//! - `flowpin-node backend --config backend.toml` ([`backend::run`]):
//!   `xdp_decap` + the sock_ops server role with an allocated server_id,
//!   registered under a lease, drained on SIGTERM.
//!
//! - `flowpin-node client --config client.toml` ([`client::run`]): the
//!   sock_ops client role (pinned) on the cgroup of the proxy or service
//!   that connects to the VIPs, so its connections echo the server_id.
//!
//! A client of the node (a harness, a dashboard) depends on this crate for
//! [`status`]: the types `GET /status` serializes.

#![deny(missing_docs)]

pub mod backend;
pub mod client;
pub mod config;
pub mod file_registry;
mod http;
pub mod lb;
pub mod pin_lock;
pub mod quic_lb_args;
pub mod status;
mod traps;

/// Why the node stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// `xdp_lb`.
    #[error(transparent)]
    Lb(#[from] flowpin_bpf_progs::xdp_lb::XdpLbError),
    /// `xdp_decap`.
    #[error(transparent)]
    Decap(#[from] flowpin_bpf_progs::xdp_decap::XdpDecapError),
    /// The sock_ops program.
    #[error(transparent)]
    Sockops(#[from] flowpin_bpf_progs::sockops_server_id::ServerIdOpsError),
    /// A link verb (pin, reopen from its pin).
    #[error(transparent)]
    Link(#[from] flowpin_bpf_progs::link::LinkError),
    /// A kernel call (pins, namespaces).
    #[error(transparent)]
    Kernel(#[from] flowpin_bpf_progs::error::KernelError),
    /// The registry.
    #[error(transparent)]
    Registry(#[from] flowpin_registry::Error),
    /// `flowpin-node lb` did not start (pins vs config, a resource, the lock).
    #[error(transparent)]
    Start(#[from] lb::StartError),
    /// Sockets, signals.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
