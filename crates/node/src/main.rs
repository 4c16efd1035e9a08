//! `flowpin-node`: one binary for the roles of a flowpin fleet, configured
//! by TOML (the library [`flowpin_node`] does the work), and the operator's
//! commands around them.
//!
//! - `flowpin-node lb --config lb.toml`: `xdp_lb` (pinned: a restart
//!   reopens it) following the etcd registry, with Prometheus metrics and a
//!   JSON status.
//! - `flowpin-node backend --config backend.toml`: `xdp_decap` + the
//!   sock_ops server role with an allocated server_id, registered under a
//!   lease, drained on SIGTERM.
//! - `status`, `stats` (an LB's pinned maps), `vips`, `backends`, `vip
//!   add/remove`, `backend drain/undrain` (the registry), `check-config`:
//!   see `flowpin-node --help` and the `cli` module.
//!
//! Logs go to stderr (`RUST_LOG` overrides the level, default `info` for
//! the roles, `warn` for the commands).

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let default_level = if args.command.is_role() {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    cli::run(args)
}
