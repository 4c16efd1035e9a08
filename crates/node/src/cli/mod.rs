//! The command tree of `flowpin-node`: the roles (`lb`, `backend`) and the
//! operator's commands (`status`, `stats`, `vips`, `backends`, `vip`,
//! `backend drain/undrain`, `check-config`). Every command prints a table
//! for people, or JSON with `--json`; errors go to stderr with a non-zero
//! exit status.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use flowpin_registry::{Proto, Vip};

mod check;
mod health;
mod pinned;
mod quic_lb;
mod registry;
mod table;

/// `--version`: the package version, the git commit, the target, the profile.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FLOWPIN_GIT_COMMIT"),
    ", ",
    env!("FLOWPIN_BUILD_TARGET"),
    ", ",
    env!("FLOWPIN_BUILD_PROFILE"),
    ")"
);

/// flowpin node: run a role of a flowpin fleet (lb, backend), or inspect and
/// change one (status, stats, vips, backends, vip, backend drain,
/// check-config).
#[derive(Parser)]
#[command(name = "flowpin-node", version, long_version = LONG_VERSION)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Every subcommand.
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the XDP load balancer (xdp_lb, pinned) following the registry.
    Lb {
        /// The LB's config file (see crates/node/examples/lb.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the backend host agent (decap, sock_ops server role,
    /// registration, drain on SIGTERM) with --config; or drain / undrain a
    /// backend in the registry.
    #[command(args_conflicts_with_subcommands = true)]
    Backend {
        /// The backend's config file (see crates/node/examples/backend.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// An operator's change to a backend in the registry.
        #[command(subcommand)]
        action: Option<BackendAction>,
    },
    /// Run the client role: the sock_ops client role (echoes the server_id
    /// option) on the cgroup of the proxy or service that connects to the
    /// VIPs, pinned so that a restart keeps every connection.
    Client {
        /// The client's config file (see crates/node/examples/client.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The LB on this host, from its pinned maps: attachment, VIPs,
    /// backends, ring digests (and the running node's /status with --config).
    Status(PinnedArgs),
    /// The LB's counters, from its pinned maps: global, per VIP, per backend.
    Stats(PinnedArgs),
    /// The VIPs declared in the registry.
    Vips(RegistryArgs),
    /// The backends registered in the registry, of every VIP or of one.
    Backends {
        /// Only this VIP (`10.100.0.1:8080/tcp`; `/tcp` is the default).
        #[arg(value_parser = parse_vip)]
        vip: Option<Vip>,
        /// Where the registry is.
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Declare or remove a VIP in the registry.
    Vip {
        /// add or remove.
        #[command(subcommand)]
        action: VipAction,
    },
    /// Encode or decode a QUIC-LB connection ID (draft-ietf-quic-load-balancers-21;
    /// the key from --key-file or $FLOWPIN_QUIC_LB_KEY, never argv).
    QuicLb {
        /// encode or decode.
        #[command(subcommand)]
        action: quic_lb::QuicLbCmd,
    },
    /// Check a config file of any role: exit 0 if it is valid, else print
    /// why and exit 1.
    CheckConfig {
        /// The file (lb.toml, backend.toml, ...).
        file: PathBuf,
        /// The role the file is for (default: from its [lb] / [backend] /
        /// [client] table).
        #[arg(long)]
        role: Option<RoleArg>,
    },
}

impl Command {
    /// Whether this runs a long-lived role (logs at `info`) rather than a
    /// one-shot command (logs at `warn`).
    pub(crate) fn is_role(&self) -> bool {
        matches!(
            self,
            Command::Lb { .. } | Command::Client { .. } | Command::Backend { action: None, .. }
        )
    }
}

/// The roles a config file can be for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RoleArg {
    /// `flowpin-node lb`.
    Lb,
    /// `flowpin-node backend`.
    Backend,
    /// `flowpin-node client`.
    Client,
}

/// `vip add` / `vip remove`.
#[derive(Subcommand)]
pub(crate) enum VipAction {
    /// Declare a VIP (or change its flags): LBs start routing it once it
    /// has backends.
    Add {
        /// The VIP: `10.100.0.1:8080/tcp` (`/tcp` is the default), `[fd00::1]:443/udp`.
        #[arg(value_parser = parse_vip)]
        vip: Vip,
        /// Route by server_id (the TCP option the backends' sock_ops writes).
        #[arg(long)]
        server_id: bool,
        /// QUIC connection-id routing (UDP).
        #[arg(long)]
        quic: bool,
        /// Every port of the address (write the VIP with port 0).
        #[arg(long)]
        port_agnostic: bool,
        /// UDP: no connection-table entries (the ring alone).
        #[arg(long)]
        skip_lru_udp: bool,
        /// Where the registry is.
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Set (or `--remove`) a VIP's health check: every LB probes its
    /// backends through the tunnel and the fleet drains failing ones.
    Health(health::HealthArgs),
    /// Remove a VIP (its backends' entries stay until their hosts remove them).
    Remove {
        /// The VIP.
        #[arg(value_parser = parse_vip)]
        vip: Vip,
        /// Where the registry is.
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// A VIP's QUIC-LB configurations (add, retire).
    #[command(subcommand)]
    QuicLb(quic_lb::VipQuicLbAction),
}

/// `backend drain` / `backend undrain`.
#[derive(Subcommand)]
pub(crate) enum BackendAction {
    /// Stop giving a backend new flows (its flows keep reaching it): sets
    /// its state to `draining` in the registry, on every VIP or on one.
    Drain(BackendTarget),
    /// Give a drained backend new flows again (state `active`).
    Undrain(BackendTarget),
}

/// Which backend to drain or undrain.
#[derive(Args)]
pub(crate) struct BackendTarget {
    /// The backend host's address (as registered: its tunnel address).
    pub(crate) addr: IpAddr,
    /// Only on this VIP (default: every VIP the backend is registered on).
    #[arg(long, value_parser = parse_vip)]
    pub(crate) vip: Option<Vip>,
    /// Where the registry is.
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

/// Where the registry is: a role's config file, or endpoints and prefix.
#[derive(Args, Clone)]
pub(crate) struct RegistryArgs {
    /// A role's config file (lb.toml, backend.toml, ...): its [registry]
    /// section (endpoints, prefix, TLS, user) is used.
    #[arg(long, short)]
    pub(crate) config: Option<PathBuf>,
    /// etcd endpoints, comma-separated (instead of --config; plain http).
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "config",
        requires = "prefix"
    )]
    pub(crate) endpoints: Vec<String>,
    /// The cluster prefix, e.g. /flowpin/prod (with --endpoints).
    #[arg(long, conflicts_with = "config", requires = "endpoints")]
    pub(crate) prefix: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Which LB's pins to read.
#[derive(Args)]
pub(crate) struct PinnedArgs {
    /// The LB's config file: its lb.pin_dir and lb.netns (and, for status,
    /// the running node's /status at metrics.listen).
    #[arg(long, short, required_unless_present = "pin_dir")]
    pub(crate) config: Option<PathBuf>,
    /// The LB's pin directory (instead of --config).
    #[arg(long, conflicts_with = "config")]
    pub(crate) pin_dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CliError {
    /// A config file.
    #[error(transparent)]
    Config(#[from] flowpin_node::config::ConfigError),
    /// The registry.
    #[error(transparent)]
    Registry(#[from] flowpin_registry::Error),
    /// The LB's pinned maps.
    #[error(transparent)]
    Lb(#[from] flowpin_bpf_progs::xdp_lb::XdpLbError),
    /// Something the command cannot do as asked.
    #[error("{0}")]
    Usage(String),
    /// A running role.
    #[error(transparent)]
    Node(#[from] flowpin_node::NodeError),
}

/// Parses a VIP: `10.100.0.1:8080/tcp`, `10.100.0.1:8080` (tcp),
/// `[fd00::1]:443/udp`.
pub(crate) fn parse_vip(s: &str) -> Result<Vip, String> {
    let (addr, proto) = match s.rsplit_once('/') {
        Some((a, p)) => (
            a,
            p.parse::<Proto>()
                .map_err(|_| format!("{p:?} is not a protocol: write tcp or udp"))?,
        ),
        None => (s, Proto::Tcp),
    };
    let sa: SocketAddr = addr.parse().map_err(|_| {
        format!("{addr:?} is not address:port: write 10.100.0.1:8080/tcp or [fd00::1]:443/udp")
    })?;
    Ok(Vip::new(sa.ip(), sa.port(), proto))
}

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> ExitCode {
    if let Command::CheckConfig { file, role } = &cli.command {
        return check::run(file, *role);
    }
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
    let is_role = cli.command.is_role();
    let r: Result<(), CliError> = rt.block_on(async {
        match cli.command {
            Command::Lb { config } => Ok(flowpin_node::lb::run(&config).await?),
            Command::Backend {
                config: Some(config),
                action: None,
            } => Ok(flowpin_node::backend::run(&config).await?),
            Command::Backend {
                action: Some(a), ..
            } => registry::backend_action(a).await,
            Command::Backend { .. } => Err(CliError::Usage(
                "backend: give --config backend.toml to run the agent, or `drain`/`undrain` (see flowpin-node backend --help)".into(),
            )),
            Command::Client { config } => Ok(flowpin_node::client::run(&config).await?),
            Command::Status(a) => pinned::status(&a),
            Command::Stats(a) => pinned::stats(&a),
            Command::Vips(a) => registry::vips(&a).await,
            Command::Backends { vip, registry } => registry::backends(vip, &registry).await,
            Command::Vip { action } => registry::vip_action(action).await,
            Command::QuicLb { action } => quic_lb::run(&action),
            Command::CheckConfig { .. } => Ok(()),
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if is_role {
                tracing::error!("{e}");
            } else {
                eprintln!("flowpin-node: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Prints `value` as pretty JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Usage(format!("cannot encode JSON: {e}")))?;
    println!("{s}");
    Ok(())
}
