//! `flowpin-node`: one binary, two roles of a flowpin fleet, configured by
//! TOML (the library [`flowpin_node`] does the work).
//!
//! - `flowpin-node lb --config lb.toml`: `xdp_lb` (pinned: a restart
//!   reopens it) following the etcd registry, with Prometheus metrics and a
//!   JSON status.
//! - `flowpin-node backend --config backend.toml`: `xdp_decap` + the
//!   sock_ops server role with an allocated server_id, registered under a
//!   lease, drained on SIGTERM.
//!
//! Logs go to stderr (`RUST_LOG` overrides the level, default `info`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "flowpin-node",
    version,
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
    /// Client role: sock_ops echoing the server_id, on the cgroup of the proxy or service that connects to the VIPs.
    Client {
        /// client.toml
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
            eprintln!("flowpin-node: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        match &cli.role {
            Role::Lb { config } => flowpin_node::lb::run(config).await,
            Role::Backend { config } => flowpin_node::backend::run(config).await,
            Role::Client { config } => flowpin_node::client::run(config).await,
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
