//! Prometheus metric families of the health checks (feature `metrics`,
//! `prometheus-client` 0.26 as the node uses), to register in the node's
//! registry:
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `flowpin_health_backend_state` | gauge | `vip`, `backend` | this LB's damped verdict: 1 up, 0 down, -1 unknown |
//! | `flowpin_health_backend_expired` | gauge | `vip`, `backend` | 1: down for the check's `down_ms` (should leave the ring) |
//! | `flowpin_health_probe_latency_seconds` | gauge | `vip`, `backend` | latency of the last probe |
//! | `flowpin_health_probe_failures_total` | counter | `vip`, `backend`, `reason` | failed probes by [`FailReason`] |
//! | `flowpin_health_quorum_disagreement` | gauge | `vip`, `backend` | 1 while this LB's verdict differs from the fleet's |
//! | `flowpin_health_quorum_disagreements_total` | counter | | times a disagreement started |

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;

use flowpin_bpf_abi::vip::Vip;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::probe::{FailReason, ProbeOutcome};
use crate::prober::{vip_label, BackendStatus};

/// Labels of one backend of one VIP.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// `proto/addr/port`.
    pub vip: String,
    /// The backend's address.
    pub backend: String,
}

/// Labels of a failure count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `proto/addr/port`.
    pub vip: String,
    /// The backend's address.
    pub backend: String,
    /// [`FailReason::as_str`].
    pub reason: String,
}

/// The families; clones share them. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct HealthMetrics {
    state: Family<BackendLabels, Gauge>,
    expired: Family<BackendLabels, Gauge>,
    latency: Family<BackendLabels, Gauge<f64, AtomicU64>>,
    failures: Family<FailureLabels, Counter>,
    disagreement: Family<BackendLabels, Gauge>,
    disagreements: Counter,
}

impl HealthMetrics {
    /// Empty families.
    pub fn new() -> HealthMetrics {
        HealthMetrics::default()
    }

    /// Registers every family in `registry` (names in the module docs).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "flowpin_health_backend_state",
            "This LB's damped health verdict of a backend: 1 up, 0 down, -1 unknown",
            self.state.clone(),
        );
        registry.register(
            "flowpin_health_backend_expired",
            "1 when the backend has been down for its check's down_ms",
            self.expired.clone(),
        );
        registry.register(
            "flowpin_health_probe_latency_seconds",
            "Latency of the last health probe",
            self.latency.clone(),
        );
        registry.register(
            "flowpin_health_probe_failures",
            "Failed health probes by reason",
            self.failures.clone(),
        );
        registry.register(
            "flowpin_health_quorum_disagreement",
            "1 while this LB's verdict of a backend differs from the fleet's quorum",
            self.disagreement.clone(),
        );
        registry.register(
            "flowpin_health_quorum_disagreements",
            "Times this LB started disagreeing with the quorum",
            self.disagreements.clone(),
        );
    }

    pub(crate) fn record(&self, s: &BackendStatus, out: &ProbeOutcome) {
        let l = labels(&s.vip, s.backend);
        self.state.get_or_create(&l).set(s.state.gauge());
        self.expired.get_or_create(&l).set(i64::from(s.expired));
        self.latency
            .get_or_create(&l)
            .set(out.latency.as_secs_f64());
        if let Err(r) = out.result {
            self.failures
                .get_or_create(&FailureLabels {
                    vip: l.vip,
                    backend: l.backend,
                    reason: r.as_str().to_string(),
                })
                .inc();
        }
    }

    /// Sets whether this LB disagrees with the quorum on a backend; a
    /// change from agreeing to disagreeing counts once.
    pub fn set_disagreement(&self, vip: &Vip, backend: IpAddr, disagrees: bool) {
        let g = self.disagreement.get_or_create(&labels(vip, backend));
        if g.set(i64::from(disagrees)) == 0 && disagrees {
            self.disagreements.inc();
        }
    }

    /// Drops every series of a backend no longer probed.
    pub fn forget(&self, vip: &Vip, backend: IpAddr) {
        let l = labels(vip, backend);
        self.state.remove(&l);
        self.expired.remove(&l);
        self.latency.remove(&l);
        self.disagreement.remove(&l);
        for r in FailReason::ALL {
            self.failures.remove(&FailureLabels {
                vip: l.vip.clone(),
                backend: l.backend.clone(),
                reason: r.as_str().to_string(),
            });
        }
    }

    /// Times a disagreement started.
    pub fn disagreements_total(&self) -> u64 {
        self.disagreements.get()
    }
}

fn labels(vip: &Vip, backend: IpAddr) -> BackendLabels {
    BackendLabels {
        vip: vip_label(vip),
        backend: backend.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowpin_bpf_abi::vip::Proto;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn families_encode_with_their_names() {
        let m = HealthMetrics::new();
        let mut reg = Registry::default();
        m.register(&mut reg);
        let vip = Vip::new("10.0.0.1".parse().expect("ip"), 80, Proto::Tcp);
        let b: IpAddr = "10.1.0.2".parse().expect("ip");
        let status = BackendStatus {
            vip,
            backend: b,
            state: crate::Health::Down,
            since_ms: None,
            expired: false,
            last_latency_us: Some(1500),
            last_failure: Some(FailReason::Timeout),
            probes: 1,
            failures: Default::default(),
        };
        let out = ProbeOutcome {
            result: Err(FailReason::Timeout),
            latency: std::time::Duration::from_micros(1500),
        };
        m.record(&status, &out);
        m.set_disagreement(&vip, b, true);
        m.set_disagreement(&vip, b, true);
        assert_eq!(m.disagreements_total(), 1, "one start, counted once");
        m.set_disagreement(&vip, b, false);
        m.set_disagreement(&vip, b, true);
        assert_eq!(m.disagreements_total(), 2);
        let mut out = String::new();
        encode(&mut out, &reg).expect("encode");
        assert!(
            out.contains("flowpin_health_quorum_disagreements_total 2"),
            "{out}"
        );
        assert!(
            out.contains(
                r#"flowpin_health_quorum_disagreement{vip="tcp/10.0.0.1/80",backend="10.1.0.2"} 1"#
            ),
            "{out}"
        );
        assert!(
            out.contains(
                r#"flowpin_health_backend_state{vip="tcp/10.0.0.1/80",backend="10.1.0.2"} 0"#
            ),
            "{out}"
        );
        assert!(
            out.contains(r#"flowpin_health_probe_failures_total{vip="tcp/10.0.0.1/80",backend="10.1.0.2",reason="timeout"} 1"#),
            "{out}"
        );
        for name in [
            "flowpin_health_backend_state",
            "flowpin_health_probe_latency_seconds",
            "flowpin_health_probe_failures_total",
        ] {
            assert!(
                out.contains(&format!("# TYPE {}", name.trim_end_matches("_total"))),
                "{name}: {out}"
            );
        }
    }
}
