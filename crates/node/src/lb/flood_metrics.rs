//! The flood signal of `flowpin-node lb` (issue 23) on `/metrics`: the
//! rate of new flows the connection table took (between two scrapes), the
//! 0/1 flood gauge against a threshold, and the connection table's
//! counters.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `flowpin_lb_new_flows_per_second` | gauge | flows inserted per second since the previous scrape (all CPUs) |
//! | `flowpin_lb_flood` | gauge | 1 while that rate is above the threshold ([`flood_signal`]) |
//! | `flowpin_lb_flood_threshold_new_flows_per_second` | gauge | the threshold |
//! | `flowpin_lb_conn_new_flows_total` | counter | flows inserted (each starts on probation) |
//! | `flowpin_lb_conn_confirmations_total` | counter | probation entries confirmed by a later packet |
//! | `flowpin_lb_conn_probation_evictions_total` | counter | probation entries evicted by an insert |
//! | `flowpin_lb_conn_confirmed_evictions_total` | counter | confirmed entries evicted (0 below half load, whatever the flood) |
//! | `flowpin_lb_conn_relocations_total` | counter | residents moved to their other candidate set |
//!
//! The threshold is [`DEFAULT_FLOOD_THRESHOLD`] flows per second, or the
//! value of the environment variable [`FLOOD_THRESHOLD_ENV`].

use std::time::Instant;

use flowpin_bpf_progs::xdp_lb::{flood_signal, Stats};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The default flood threshold, new flows per second (all CPUs): Katran's
/// per-core limit of 125 k new flows per second.
pub const DEFAULT_FLOOD_THRESHOLD: f64 = 125_000.0;

/// Environment variable overriding [`DEFAULT_FLOOD_THRESHOLD`] (flows per
/// second, a positive number).
pub const FLOOD_THRESHOLD_ENV: &str = "FLOWPIN_LB_FLOOD_THRESHOLD";

/// The threshold in force: [`FLOOD_THRESHOLD_ENV`] if it holds a positive
/// number, else [`DEFAULT_FLOOD_THRESHOLD`].
pub fn flood_threshold() -> f64 {
    std::env::var(FLOOD_THRESHOLD_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|t| t.is_finite() && *t > 0.0)
        .unwrap_or(DEFAULT_FLOOD_THRESHOLD)
}

/// The new-flow rate between scrapes: remembers the previous sample.
#[derive(Debug, Clone, Default)]
pub struct FloodMeter {
    last: Option<(Instant, u64)>,
    rate: f64,
}

impl FloodMeter {
    /// Takes the sample `new_flows` (the counter, all CPUs) at `now`; the
    /// rate since the previous sample (0 on the first, and when the
    /// counter went backwards: a reloaded program). Samples closer than
    /// 100 ms to the previous one keep the previous rate (a burst of
    /// scrapes would measure noise).
    pub fn observe(&mut self, now: Instant, new_flows: u64) -> f64 {
        match self.last {
            Some((t, n)) => {
                let secs = now.saturating_duration_since(t).as_secs_f64();
                if secs < 0.1 {
                    return self.rate;
                }
                self.rate = new_flows.saturating_sub(n) as f64 / secs;
            }
            None => self.rate = 0.0,
        }
        self.last = Some((now, new_flows));
        self.rate
    }

    /// The last rate computed.
    pub fn rate(&self) -> f64 {
        self.rate
    }
}

/// Registers the flood metrics (see the module's table) in `reg` (a
/// registry with the `flowpin` prefix) from `stats` (none: the maps could
/// not be read, only the rate and threshold gauges are written) sampled at
/// `now`.
pub fn register(
    reg: &mut Registry,
    stats: Option<&Stats>,
    meter: &mut FloodMeter,
    now: Instant,
    threshold: f64,
) {
    let rate = match stats {
        Some(s) => meter.observe(now, s.new_flows()),
        None => meter.rate(),
    };
    let g_rate = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    g_rate.set(rate);
    reg.register(
        "lb_new_flows_per_second",
        "Flows inserted into the connection table per second since the previous scrape (all CPUs)",
        g_rate,
    );
    let g_flood = Gauge::<i64>::default();
    g_flood.set(i64::from(flood_signal(rate, threshold)));
    reg.register(
        "lb_flood",
        "1 while the new-flow rate is above the flood threshold (established flows are kept: a signal for operators)",
        g_flood,
    );
    let g_thr = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    g_thr.set(threshold);
    reg.register(
        "lb_flood_threshold_new_flows_per_second",
        "The flood threshold (FLOWPIN_LB_FLOOD_THRESHOLD, default 125000)",
        g_thr,
    );
    let Some(s) = stats else { return };
    let g = &s.global;
    for (name, help, v) in [
        (
            "lb_conn_new_flows",
            "Flows inserted into the connection table (each starts on probation)",
            g.new_flows,
        ),
        (
            "lb_conn_confirmations",
            "Probation entries confirmed by a later packet (TCP: a non-SYN packet; UDP: a second packet)",
            g.confirmations,
        ),
        (
            "lb_conn_probation_evictions",
            "Probation entries evicted by an insert",
            g.probation_evictions,
        ),
        (
            "lb_conn_confirmed_evictions",
            "Confirmed entries evicted by an insert (0 below half load, whatever the flood)",
            g.confirmed_evictions,
        ),
        (
            "lb_conn_relocations",
            "Residents moved to their other candidate set to make room",
            g.relocations,
        ),
    ] {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        reg.register(name, help, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_between_samples() {
        let t = Instant::now();
        let mut m = FloodMeter::default();
        assert_eq!(m.observe(t, 100), 0.0);
        assert_eq!(m.observe(t + Duration::from_secs(2), 300), 100.0);
        // Too close: the previous rate.
        assert_eq!(m.observe(t + Duration::from_millis(2050), 10_000), 100.0);
        // Counter went backwards (reload): 0, then from the new base.
        assert_eq!(m.observe(t + Duration::from_secs(3), 5), 0.0);
        assert_eq!(m.observe(t + Duration::from_secs(4), 1005), 1000.0);
    }

    #[test]
    fn threshold_default() {
        if std::env::var_os(FLOOD_THRESHOLD_ENV).is_none() {
            assert_eq!(flood_threshold(), DEFAULT_FLOOD_THRESHOLD);
        }
    }
}
