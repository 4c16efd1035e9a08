//! `/metrics` of `flowpin-node lb`: the Prometheus text, built on request
//! from the maps and the loop's state (nothing is computed while idle).

use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tracing::error;

use flowpin_bpf_progs::xdp_lb::Vip;

use super::Node;

/// A VIP as three labels (aggregatable by address, port or protocol).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VipLabel {
    vip_addr: String,
    vip_port: u16,
    proto: &'static str,
}

impl VipLabel {
    pub(super) fn of(v: &Vip) -> VipLabel {
        VipLabel {
            vip_addr: v.addr.to_string(),
            vip_port: v.port,
            proto: v.proto.as_str(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    #[prometheus(flatten)]
    vip: VipLabel,
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendTrafficLabel {
    #[prometheus(flatten)]
    vip: VipLabel,
    backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    #[prometheus(flatten)]
    vip: VipLabel,
    backend: String,
    server_id: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DigestLabel {
    #[prometheus(flatten)]
    vip: VipLabel,
    digest: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabel {
    check: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    interface: String,
    mode: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: &'static str,
    role: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InterfaceLabel {
    interface: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

impl Node {
    fn conn_fill(&mut self) -> Option<usize> {
        // Reading the table is one lookup per set: cached for 10 s.
        match self.conn_fill {
            Some((t, n)) if t.elapsed() < Duration::from_secs(10) => Some(n),
            _ => {
                let n = self.dp.lb.connection_table_len().ok()?;
                self.conn_fill = Some((Instant::now(), n));
                Some(n)
            }
        }
    }

    pub(super) fn metrics_text(&mut self) -> String {
        use prometheus_client::registry::Registry as Prom;
        let mut reg = Prom::with_prefix("flowpin");
        let stats = self.dp.lb.stats().ok();
        let packets = Family::<VipLabel, Counter>::default();
        let bytes = Family::<VipLabel, Counter>::default();
        let routes = Family::<RouteLabel, Counter>::default();
        let sid = Family::<RouteLabel, Counter>::default();
        if let Some(s) = &stats {
            for (vip, v) in &s.vips {
                let l = VipLabel::of(vip);
                packets.get_or_create(&l).inc_by(v.packets);
                bytes.get_or_create(&l).inc_by(v.bytes);
                for (route, n) in [
                    ("conn_table_hit", v.lru_hit),
                    ("conn_table_miss", v.lru_miss),
                    ("ring_new_flow", v.new_flows),
                    ("server_id", v.sid_routed),
                    ("quic_long_header", v.quic_long_header),
                ] {
                    routes
                        .get_or_create(&RouteLabel {
                            vip: l.clone(),
                            route,
                        })
                        .inc_by(n);
                }
                for (route, n) in [
                    ("routed", v.sid_routed),
                    ("fallback_unknown", v.sid_fallback_unknown),
                    ("fallback_removed", v.sid_fallback_removed),
                    ("fallback_zero", v.sid_fallback_zero),
                    ("fallback_malformed", v.sid_fallback_malformed),
                    ("missing", v.sid_missing),
                ] {
                    sid.get_or_create(&RouteLabel {
                        vip: l.clone(),
                        route,
                    })
                    .inc_by(n);
                }
            }
        }
        reg.register(
            "lb_vip_packets",
            "Packets matched to the VIP (all CPUs)",
            packets,
        );
        reg.register(
            "lb_vip_bytes",
            "Bytes of those packets, frame length as received",
            bytes,
        );
        reg.register(
            "lb_vip_route",
            "How each VIP packet found its backend",
            routes,
        );
        reg.register(
            "lb_server_id",
            "server_id decisions per VIP: routed, or why it fell back to the connection table / ring (fallback_removed: the id of a backend removed from the VIP)",
            sid,
        );
        let drops = Family::<ReasonLabel, Counter>::default();
        if let Some(s) = &stats {
            let g = &s.global;
            for (reason, n) in [
                ("malformed", g.drop_malformed),
                ("unknown_backend", g.drop_unknown_backend),
                ("too_big", g.drop_too_big),
                ("encap_error", g.encap_error),
            ] {
                drops.get_or_create(&ReasonLabel { reason }).inc_by(n);
            }
        }
        reg.register("lb_drops", "Packets dropped by xdp_lb, by reason", drops);
        let backends = Family::<BackendLabel, Gauge>::default();
        let slots = Family::<VipLabel, Gauge>::default();
        let be_packets = Family::<BackendTrafficLabel, Counter>::default();
        let be_bytes = Family::<BackendTrafficLabel, Counter>::default();
        for (vip, _) in self.digests.values() {
            let name = VipLabel::of(vip);
            for b in self.dp.lb.backends(vip).unwrap_or_default() {
                // One index (one set of counters) per backend address, even
                // when several VIPs share it.
                if let Ok(s) = self.dp.lb.backend_stats(b.addr) {
                    let l = BackendTrafficLabel {
                        vip: name.clone(),
                        backend: b.addr.to_string(),
                    };
                    be_packets.get_or_create(&l).inc_by(s.packets);
                    be_bytes.get_or_create(&l).inc_by(s.bytes);
                }
                let state = if self.dp.lb.is_draining(vip, b.addr) {
                    "draining"
                } else {
                    "active"
                };
                backends
                    .get_or_create(&BackendLabel {
                        vip: name.clone(),
                        backend: b.addr.to_string(),
                        server_id: b.server_id.map_or("0".into(), |s| s.to_string()),
                        state,
                    })
                    .set(i64::from(b.weight as i32));
            }
            slots.get_or_create(&name).set(
                self.dp
                    .lb
                    .state()
                    .ring_addrs(vip)
                    .iter()
                    .filter(|s| s.is_some())
                    .count() as i64,
            );
        }
        reg.register(
            "lb_backend_weight",
            "Backends as the LB holds them (value: weight)",
            backends,
        );
        reg.register(
            "backend_packets",
            "Packets forwarded to the backend (a backend address shared by several VIPs has one counter, repeated under each VIP)",
            be_packets,
        );
        reg.register(
            "backend_bytes",
            "Bytes of those packets, frame length as received (before encapsulation)",
            be_bytes,
        );
        reg.register(
            "lb_ring_slots_filled",
            "Ring slots pointing at a backend",
            slots,
        );
        let digests = Family::<DigestLabel, Gauge>::default();
        for (vip, d) in self.digests.values() {
            digests
                .get_or_create(&DigestLabel {
                    vip: VipLabel::of(vip),
                    digest: format!("{d:016x}"),
                })
                .set(1);
        }
        reg.register(
            "lb_ring_digest_info",
            "Ring digest of each VIP (label digest: SipHash-1-3 of every slot's backend); one series per VIP, replaced when the ring changes",
            digests,
        );
        let fill = Gauge::<i64>::default();
        let cap = Gauge::<i64>::default();
        cap.set(i64::from(self.dp.lb.lru_entries()));
        if let Some(n) = self.conn_fill() {
            fill.set(n as i64);
        }
        reg.register(
            "lb_conn_table_entries",
            "Flows in the connection table (read at most every 10 s)",
            fill,
        );
        reg.register(
            "lb_conn_table_capacity",
            "Flows the connection table holds",
            cap,
        );
        let threshold = super::flood_metrics::flood_threshold();
        super::flood_metrics::register(
            &mut reg,
            stats.as_ref(),
            &mut self.flood,
            Instant::now(),
            threshold,
        );
        let rev = Gauge::<i64>::default();
        rev.set(self.revision);
        reg.register(
            "registry_revision_applied",
            "etcd revision of the last snapshot applied",
            rev,
        );
        let conn = Gauge::<i64>::default();
        conn.set(i64::from(self.watch_stats.connected));
        reg.register(
            "registry_connected",
            "1 while the registry watch is connected to etcd",
            conn,
        );
        let rejected = Family::<KindLabel, Counter>::default();
        for (kind, n) in self.watch_stats.reject_counts.iter() {
            rejected
                .get_or_create(&KindLabel {
                    kind: kind.as_str(),
                })
                .inc_by(n);
        }
        reg.register(
            "registry_rejected",
            "Registry entries rejected, by kind",
            rejected,
        );
        let reconnects = Counter::<u64>::default();
        reconnects.inc_by(self.watch_stats.reconnects);
        reg.register(
            "registry_reconnects",
            "Watch reconnections to etcd",
            reconnects,
        );
        reg.register(
            "lb_apply_seconds",
            "Registry snapshot delivered by the watch until its last map write",
            self.apply_seconds.clone(),
        );
        reg.register(
            "registry_change_to_map_write_seconds",
            "etcd write of a changed entry (its updated_at_ms, the writer's clock) until the LB's last map write for it (this host's clock; needs NTP-synced clocks)",
            self.change_to_map_write.clone(),
        );
        let negative = Counter::<u64>::default();
        negative.inc_by(self.change_to_map_write_negative);
        reg.register(
            "registry_change_to_map_write_negative",
            "Change-to-map-write times that were negative (clocks out of sync) and observed as 0",
            negative,
        );
        let errs = Counter::<u64>::default();
        errs.inc_by(self.apply_errors);
        reg.register(
            "lb_apply_errors",
            "Snapshot applications that failed (re-planned)",
            errs,
        );
        let traps = Family::<CheckLabel, Gauge>::default();
        for t in &self.traps {
            traps.get_or_create(&CheckLabel { check: t.check }).set(1);
        }
        reg.register(
            "node_deployment_warning",
            "Deployment traps found at start-up (see the log)",
            traps,
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        reloads
            .get_or_create(&ResultLabel { result: "success" })
            .inc_by(self.reloads_ok);
        reloads
            .get_or_create(&ResultLabel { result: "failure" })
            .inc_by(self.reloads_failed);
        reg.register(
            "node_config_reloads",
            "SIGHUP reloads of the config, by result (failure: the file was rejected or a runtime setting could not be written; the running config is kept)",
            reloads,
        );
        let tx_dropped = Family::<InterfaceLabel, Counter>::default();
        if let Some(t) = self.tx_drops.as_mut() {
            if let Some(n) = t.read() {
                tx_dropped
                    .get_or_create(&InterfaceLabel {
                        interface: t.ifname().to_string(),
                    })
                    .inc_by(n);
            }
        }
        reg.register(
            "interface_tx_dropped",
            "Frames the LB's interface dropped on transmit (IFLA_STATS64 tx_dropped; on a veth, native XDP_TX into a peer without an XDP program lands here)",
            tx_dropped,
        );
        let mode = Family::<ModeLabel, Gauge>::default();
        mode.get_or_create(&ModeLabel {
            interface: self.cfg.lb.interface.clone(),
            mode: self.dp.link.mode().to_string(),
        })
        .set(1);
        reg.register(
            "lb_xdp_mode",
            "XDP attach mode of xdp_lb per interface (label mode: native or generic; value 1)",
            mode,
        );
        let build = Family::<BuildLabel, Gauge>::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION"),
                role: "lb",
            })
            .set(1);
        reg.register("build_info", "flowpin-node build (value 1)", build);
        let rejected_now = Family::<KindLabel, Gauge>::default();
        for (kind, _) in self.rejected_now.values() {
            rejected_now.get_or_create(&KindLabel { kind }).inc();
        }
        reg.register(
            "registry_rejected_keys",
            "Registry keys the last snapshot rejected, by kind (each logged once per change)",
            rejected_now,
        );
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut out, &reg) {
            error!(error = %e, "metrics encoding failed");
        }
        let mut proc_reg = Prom::default();
        super::process::register(&mut proc_reg);
        if let Some(h) = &self.health {
            h.metrics.register(&mut proc_reg);
        }
        if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut out, &proc_reg) {
            error!(error = %e, "metrics encoding failed");
        }
        if let Err(e) = prometheus_client::encoding::text::encode_eof(&mut out) {
            error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowpin_bpf_progs::xdp_lb::Proto;

    #[test]
    fn a_vip_is_three_labels_in_the_exposition() {
        let mut reg = prometheus_client::registry::Registry::with_prefix("flowpin");
        let routes = Family::<RouteLabel, Counter>::default();
        let v6 = Vip::new("2001:db8::1".parse().expect("ip"), 443, Proto::Udp);
        routes
            .get_or_create(&RouteLabel {
                vip: VipLabel::of(&v6),
                route: "ring_new_flow",
            })
            .inc_by(3);
        reg.register("lb_vip_route", "routes", routes);
        let digests = Family::<DigestLabel, Gauge>::default();
        digests
            .get_or_create(&DigestLabel {
                vip: VipLabel::of(&v6),
                digest: "00000000000000ff".into(),
            })
            .set(1);
        reg.register("lb_ring_digest_info", "digest", digests);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).expect("encode");
        for line in [
            "flowpin_lb_vip_route_total{vip_addr=\"2001:db8::1\",vip_port=\"443\",proto=\"udp\",route=\"ring_new_flow\"} 3",
            "flowpin_lb_ring_digest_info{vip_addr=\"2001:db8::1\",vip_port=\"443\",proto=\"udp\",digest=\"00000000000000ff\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
        }
    }
}
