//! `node`: one binary, two roles of a flowpin fleet, configured by TOML.
//!
//! - `node lb --config lb.toml`: `xdp_lb` (pinned: a restart reopens it)
//!   following the etcd registry, with Prometheus metrics and a JSON status.
//! - `node backend --config backend.toml`: `xdp_decap` + the sock_ops
//!   server role with an allocated server_id, registered under a lease,
//!   drained on SIGTERM.
//!
//! Logs go to stderr (`RUST_LOG` overrides the level, default `info`).

// A binary: `pub` items are the modules' interfaces to each other.
#![allow(unreachable_pub)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backend;
mod config;
mod http;
mod lb;
mod plan;
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
    /// A kernel call (pins, namespaces).
    #[error(transparent)]
    Kernel(#[from] flowpin_bpf_progs::error::KernelError),
    /// A link verb (pin, reopen from its pin).
    #[error(transparent)]
    Link(#[from] flowpin_bpf_progs::link::LinkError),
    /// The registry.
    #[error(transparent)]
    Registry(#[from] flowpin_registry::Error),
    /// Sockets, signals.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Parser)]
#[command(
    name = "node",
    about = "flowpin node: an LB or a backend of a fleet on etcd"
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// XDP load balancer following the registry.
    Lb {
        /// lb.toml
        #[arg(long)]
        config: PathBuf,
    },
    /// Backend host agent: decap, sock_ops server role, registration, drain.
    Backend {
        /// backend.toml
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("node: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        match &cli.role {
            Role::Lb { config } => lb::run(config).await,
            Role::Backend { config } => backend::run(config).await,
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
