//! `/metrics` and `/status` of `flowpin-node backend`, built on request
//! from the pinned maps and the agent's state.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};

use super::Agent;

/// What `GET /status` of `flowpin-node backend` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BackendStatus {
    /// Always `"backend"`.
    pub role: String,
    /// The agent's process id.
    pub pid: u32,
    /// `backend.host`.
    pub host: String,
    /// `backend.address`.
    pub address: String,
    /// The claimed server_id (none before the claim, or with
    /// `server_id = false`).
    pub server_id: Option<u32>,
    /// Registered in etcd (false while etcd is unreachable at start).
    pub registered: bool,
    /// Draining (SIGTERM received).
    pub draining: bool,
    /// Whether the pinned data path was reopened (a restart or upgrade).
    pub reopened: bool,
    /// Conflicts seen in the last snapshot (another node with this host or
    /// server_id, LB rejections of our keys).
    pub conflicts: Vec<String>,
    /// Keys re-asserted after they were deleted or changed in etcd.
    pub reasserted: u64,
    /// The VIPs served, `addr:port/proto`.
    pub vips: Vec<String>,
    /// Packets `xdp_decap` decapsulated.
    pub decapsulated: u64,
    /// Packets `xdp_decap` dropped.
    pub decap_dropped: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FormLabel {
    form: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

fn counter(n: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(n);
    c
}

fn gauge(n: i64) -> Gauge {
    let g = Gauge::default();
    g.set(n);
    g
}

impl Agent {
    pub(super) fn status(&self) -> BackendStatus {
        let d = self.dp.decap.stats().unwrap_or_default();
        BackendStatus {
            role: "backend".into(),
            pid: std::process::id(),
            host: self.cfg.backend.host.clone(),
            address: self.cfg.backend.address.to_string(),
            server_id: self.server_id.map(u32::from),
            registered: self.registered,
            draining: self.draining,
            reopened: self.dp.reopened,
            conflicts: self.conflicts.clone(),
            reasserted: self.reasserted,
            vips: self
                .cfg
                .vip_keys()
                .iter()
                .map(ToString::to_string)
                .collect(),
            decapsulated: d.decapsulated(),
            decap_dropped: d.dropped(),
        }
    }

    pub(super) fn metrics_text(&self) -> String {
        use prometheus_client::registry::Registry as Prom;
        let mut reg = Prom::with_prefix("flowpin_backend");
        let d = self.dp.decap.stats().unwrap_or_default();
        let forms = Family::<FormLabel, Counter>::default();
        for (form, n) in [
            ("ipip", d.decap_ipip),
            ("ip6ip6", d.decap_ip6ip6),
            ("4in6", d.decap_4in6),
            ("6in4", d.decap_6in4),
        ] {
            forms.get_or_create(&FormLabel { form }).inc_by(n);
        }
        reg.register(
            "decap_packets",
            "Packets xdp_decap decapsulated, per tunnel form",
            forms,
        );
        reg.register(
            "decap_passed_packets",
            "Packets xdp_decap passed untouched (not a tunnel to this host)",
            counter(d.passed()),
        );
        reg.register(
            "decap_dropped_packets",
            "Packets xdp_decap dropped (malformed, adjust_head failure, ECN)",
            counter(d.dropped()),
        );
        if let Some((ops, _)) = &self.dp.ops {
            let s = ops.stats().unwrap_or_default();
            reg.register(
                "synack_server_id_written",
                "SYN-ACKs sent carrying this host's server_id",
                counter(s.server.written),
            );
            reg.register(
                "server_id_echo_ok",
                "Handshakes whose client echoed this host's server_id",
                counter(s.server.echo_ok),
            );
            reg.register(
                "server_id_echo_missing",
                "Handshakes whose client did not echo a server_id (no client role there)",
                counter(s.server.echo_missing),
            );
            reg.register(
                "sockops_errors",
                "BPF helper failures of the sock_ops program",
                counter(s.errors),
            );
        }
        reg.register(
            "registered",
            "1 when this host's backends are registered in etcd",
            gauge(i64::from(self.registered)),
        );
        reg.register(
            "draining",
            "1 while draining",
            gauge(i64::from(self.draining)),
        );
        reg.register(
            "reopened",
            "1 when the pinned data path was reopened at start (restart or upgrade)",
            gauge(i64::from(self.dp.reopened)),
        );
        reg.register(
            "conflicts",
            "Conflicts now: another node with this host or server_id, LB rejections of this host's keys",
            gauge(i64::try_from(self.conflicts.len()).unwrap_or(i64::MAX)),
        );
        reg.register(
            "reasserted_keys",
            "Registry keys re-written after they were deleted or changed outside this agent",
            counter(self.reasserted),
        );
        reg.register(
            "registry_retries",
            "Failed attempts to reach etcd at start",
            counter(self.registry_retries),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        reloads
            .get_or_create(&ResultLabel { result: "applied" })
            .inc_by(self.reloads_ok);
        reloads
            .get_or_create(&ResultLabel { result: "refused" })
            .inc_by(self.reloads_failed);
        reg.register("config_reloads", "SIGHUP reloads", reloads);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}
