//! `flowpin-node vip health VIP ...`: stores (or removes) a VIP's health
//! check in the registry (`Registry::put_health_check`: an invalid check is
//! refused with the reason, never written).

use clap::{Args, ValueEnum};
use flowpin_registry::health::HealthCheck;
use flowpin_registry::Vip;

use super::{parse_vip, RegistryArgs};

/// The probe kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum KindArg {
    /// The TCP handshake completes.
    Tcp,
    /// `GET --path` answers `--status`.
    Http,
    /// A datagram `--send` gets a reply starting with `--expect`.
    Udp,
}

/// `vip health`.
#[derive(Args)]
pub(crate) struct HealthArgs {
    /// The VIP: `10.100.0.1:8080/tcp`.
    #[arg(value_parser = parse_vip)]
    pub(crate) vip: Vip,
    /// The probe kind (required unless --remove).
    #[arg(long, required_unless_present = "remove")]
    pub(crate) kind: Option<KindArg>,
    /// HTTP: the path requested.
    #[arg(long, default_value = "/")]
    pub(crate) path: String,
    /// HTTP: the status that passes.
    #[arg(long, default_value_t = 200)]
    pub(crate) status: u16,
    /// UDP: the payload sent.
    #[arg(long, default_value = "")]
    pub(crate) send: String,
    /// UDP: the expected start of the reply (empty: any reply).
    #[arg(long, default_value = "")]
    pub(crate) expect: String,
    /// Milliseconds between probes (default: the library's).
    #[arg(long)]
    pub(crate) interval_ms: Option<u64>,
    /// Milliseconds a probe may take.
    #[arg(long)]
    pub(crate) timeout_ms: Option<u64>,
    /// Passes in a row that make a down backend up.
    #[arg(long)]
    pub(crate) rise: Option<u32>,
    /// Failures in a row that make an up backend down.
    #[arg(long)]
    pub(crate) fall: Option<u32>,
    /// Milliseconds down before the backend leaves the ring (0: drained only).
    #[arg(long)]
    pub(crate) down_ms: Option<u64>,
    /// Probe this port instead of the VIP's.
    #[arg(long)]
    pub(crate) port: Option<u16>,
    /// Remove the VIP's health check instead.
    #[arg(long, conflicts_with = "kind")]
    pub(crate) remove: bool,
    /// Where the registry is.
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

impl HealthArgs {
    /// The check the arguments describe (validated by the registry).
    pub(crate) fn check(&self) -> Option<HealthCheck> {
        let mut c = match self.kind? {
            KindArg::Tcp => HealthCheck::tcp(),
            KindArg::Http => HealthCheck::http(&self.path, self.status),
            KindArg::Udp => HealthCheck::udp(&self.send, &self.expect),
        };
        if let Some(v) = self.interval_ms {
            c.interval_ms = v;
        }
        if let Some(v) = self.timeout_ms {
            c.timeout_ms = v;
        }
        if let Some(v) = self.rise {
            c.rise = v;
        }
        if let Some(v) = self.fall {
            c.fall = v;
        }
        if let Some(v) = self.down_ms {
            c.down_ms = v;
        }
        c.port = self.port.or(c.port);
        Some(c)
    }
}
