//! `node lb`: `xdp_lb` on one interface, following the registry.
//!
//! Start-up: reopen the pinned data path (`XdpLb::open_pinned`, the link
//! from `<pin_dir>/link`) if `<pin_dir>/meta` exists, else load, pin and
//! attach. Then one event loop, woken only by: a registry snapshot (plan →
//! apply → digests), SIGHUP (reload the TOML), SIGTERM/SIGINT (exit), an
//! HTTP request (metrics / status), or a retry timer armed only after a
//! failed apply. Idle, nothing runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowpin_bpf_progs::link::Link;
use flowpin_bpf_progs::xdp_lb::{
    Vip, XdpAttachMode, XdpLb, XdpLbConfig, XdpLink, XdpMode, XdpTarget,
};
use flowpin_registry::{
    Registry, RegistryConfig, Snapshot, SnapshotWatch, VipEntry, VipKey, WatchStats,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::config::{parse_v4_prefix, LbConfig, OnExit, XdpModeConfig};
use crate::http::{self, Query};
use crate::plan::{latest_change_ms, plan, ring_digest, view_of, Step};
use crate::traps::{check_lb, Trap};
use crate::NodeError;

type Result<T> = std::result::Result<T, NodeError>;

/// The name of the link pin inside the pin directory.
pub const LINK_PIN: &str = "link";

fn attach_mode(m: XdpModeConfig) -> XdpAttachMode {
    match m {
        XdpModeConfig::Auto => XdpAttachMode::NativeOrGeneric,
        XdpModeConfig::Native => XdpAttachMode::Native,
        XdpModeConfig::Generic => XdpAttachMode::Generic,
    }
}

fn target(cfg: &LbConfig) -> XdpTarget {
    let t = XdpTarget::ifname(cfg.lb.interface.clone()).mode(attach_mode(cfg.lb.xdp_mode));
    match &cfg.lb.netns {
        Some(ns) => t.in_netns(ns),
        None => t,
    }
}

/// The data path: the program with its maps, and its link.
pub struct DataPath {
    /// The load balancer.
    pub lb: XdpLb,
    /// Its XDP link (pinned at `<pin_dir>/link`).
    pub link: XdpLink,
    /// Whether it was reopened from pins.
    pub reopened: bool,
}

/// Reopens the pinned data path, or loads, pins and attaches a new one.
pub fn open_or_load(cfg: &LbConfig) -> Result<DataPath> {
    let dir = &cfg.lb.pin_dir;
    let link_pin = dir.join(LINK_PIN);
    if dir.join("meta").exists() {
        let lb = XdpLb::open_pinned(dir)?;
        let link = if link_pin.exists() {
            match &cfg.lb.netns {
                Some(ns) => XdpLink::from_pinned_in_netns(&link_pin, ns)?,
                None => XdpLink::from_pinned(&link_pin)?,
            }
        } else {
            warn!(pin = %link_pin.display(), "pinned maps without a pinned link: attaching the pinned program again");
            let mut link = lb.attach(target(cfg))?;
            link.pin(&link_pin)?;
            link
        };
        info!(
            pin_dir = %dir.display(),
            vips = lb.state().vips().count(),
            repaired_ring_slots = lb.repaired_ring_slots(),
            mode = %link.mode(),
            "reopened the pinned data path: forwarding never stopped"
        );
        return Ok(DataPath {
            lb,
            link,
            reopened: true,
        });
    }
    let (local, next_hop) = cfg.macs();
    let mut config = XdpLbConfig::default()
        .local_mac(local)
        .next_hop_mac(next_hop)
        .conn_table_shared(cfg.lb.conn_table_shared);
    if let Some(m) = cfg.lb.ring_size {
        config = config.ring_size(m);
    }
    if let Some(mib) = cfg.lb.lru_memory_mib {
        config = config.lru_memory_bytes(mib << 20);
    }
    if let Some(p) = cfg.lb.tunnel_src_v4.as_deref().and_then(parse_v4_prefix) {
        config = config.tunnel_src_v4(p);
    }
    let lb = XdpLb::load(config)?;
    lb.pin(dir)?;
    let mut link = match lb.attach(target(cfg)) {
        Ok(l) => l,
        Err(e) => {
            let _ = XdpLb::unpin(dir);
            return Err(e.into());
        }
    };
    link.pin(&link_pin)?;
    info!(pin_dir = %dir.display(), mode = %link.mode(), interface = %cfg.lb.interface, "loaded, pinned and attached xdp_lb");
    Ok(DataPath {
        lb,
        link,
        reopened: false,
    })
}

/// Applies the runtime settings of `cfg` (MACs, tunnel source) that differ
/// from what the maps hold.
fn apply_runtime(lb: &mut XdpLb, cfg: &LbConfig) -> Result<()> {
    let (local, next_hop) = cfg.macs();
    if lb.config().local_mac != local || lb.config().next_hop_mac != next_hop {
        lb.set_next_hop(local, next_hop)?;
        info!(local_mac = %cfg.lb.local_mac, next_hop_mac = %cfg.lb.next_hop_mac, "next hop set");
    }
    if let Some(p) = cfg.lb.tunnel_src_v4.as_deref().and_then(parse_v4_prefix) {
        if lb.config().tunnel_src_v4 != p {
            let v6 = lb.config().tunnel_src_v6;
            lb.set_tunnel_sources(p, v6)?;
            info!(tunnel_src_v4 = %cfg.lb.tunnel_src_v4.as_deref().unwrap_or(""), "tunnel source set");
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VipLabel {
    vip: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    vip: String,
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendTrafficLabel {
    vip: String,
    backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    vip: String,
    backend: String,
    server_id: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DigestLabel {
    vip: String,
    digest: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabel {
    check: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Everything the loop keeps besides the data path.
struct Node {
    cfg: LbConfig,
    config_path: PathBuf,
    dp: DataPath,
    revision: i64,
    /// Per VIP (by name, sorted): the VIP and its ring digest.
    digests: BTreeMap<String, (Vip, u64)>,
    watch_stats: WatchStats,
    /// Snapshot delivered → last map write, seconds.
    apply_seconds: Histogram,
    /// etcd write (`updated_at_ms`, the writer's clock) → last map write
    /// (this host's clock), seconds; clamped at 0.
    change_to_map_write: Histogram,
    /// Times `change_to_map_write` was negative (clamped to 0): clocks
    /// out of sync.
    change_to_map_write_negative: u64,
    /// The registry state of the last snapshot applied without error.
    applied: BTreeMap<VipKey, VipEntry>,
    apply_errors: u64,
    snapshots_applied: u64,
    last_apply_failed: bool,
    traps: Vec<Trap>,
    conn_fill: Option<(Instant, usize)>,
    started: SystemTime,
}

fn vip_name(v: &Vip) -> String {
    format!("{}:{}/{:?}", v.addr, v.port, v.proto).to_lowercase()
}

impl Node {
    fn refresh_digests(&mut self) {
        let st = self.dp.lb.state();
        self.digests = st
            .vips()
            .map(|v| (vip_name(v), (*v, ring_digest(&st.ring_addrs(v)))))
            .collect();
    }

    /// Plans and applies `snap`. Errors are logged and counted; the
    /// next snapshot (or the retry timer) plans again from what the
    /// kernel holds.
    fn apply(&mut self, snap: &Snapshot, delivered: Instant) {
        let steps = plan(&view_of(self.dp.lb.state()), snap);
        let mut failed = false;
        for step in &steps {
            let lb = &mut self.dp.lb;
            let r = match step {
                Step::RemoveVip(v) => lb.remove_vip(v).map(|_| None),
                Step::AddVip(v, f) => lb.add_vip(*v, *f).map(|_| None),
                Step::Drain(v, a) => lb.drain_backend(v, *a).map(Some),
                Step::SetBackends(v, b) => lb.set_backends(v, b).map(Some),
                Step::Undrain(v, a) => lb.undrain_backend(v, *a).map(Some),
            };
            match r {
                Ok(update) => info!(
                    revision = snap.revision,
                    step = %describe(step),
                    slots_changed = update.map_or(0, |u| u.slots_changed),
                    "applied"
                ),
                Err(e) => {
                    error!(revision = snap.revision, step = %describe(step), error = %e, "apply failed; will re-plan");
                    failed = true;
                    self.apply_errors += 1;
                    break;
                }
            }
        }
        if !steps.is_empty() {
            self.apply_seconds
                .observe(delivered.elapsed().as_secs_f64());
        }
        self.last_apply_failed = failed;
        if !failed {
            if !steps.is_empty() {
                if let Some(at) = latest_change_ms(&self.applied, snap) {
                    self.observe_change_to_map_write(at);
                }
            }
            self.applied.clone_from(&snap.vips);
            self.revision = snap.revision;
        }
        self.snapshots_applied += 1;
        self.refresh_digests();
        for r in &snap.rejected {
            warn!(key = %r.key, kind = r.kind.as_str(), reason = %r.reason, "registry entry rejected (not applied)");
        }
    }

    /// Observes now − `changed_at_ms` (unix ms, the registry writer's
    /// clock). Meaningful only with NTP-synced clocks; a negative value
    /// (this host's clock behind the writer's) is clamped to 0 and counted.
    fn observe_change_to_map_write(&mut self, changed_at_ms: u64) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let secs = match now_ms.checked_sub(changed_at_ms) {
            Some(ms) => ms as f64 / 1000.0,
            None => {
                self.change_to_map_write_negative += 1;
                warn!(
                    ahead_ms = changed_at_ms - now_ms,
                    "registry change stamped in the future: clocks out of sync (use NTP); counted as 0 s"
                );
                0.0
            }
        };
        self.change_to_map_write.observe(secs);
    }

    fn status_json(&self) -> String {
        let vips: serde_json::Map<String, serde_json::Value> = self
            .digests
            .iter()
            .map(|(name, (v, d))| {
                let backends = self.dp.lb.backends(v).map_or(0, <[_]>::len);
                let draining = self
                    .dp
                    .lb
                    .backends(v)
                    .unwrap_or_default()
                    .iter()
                    .filter(|b| self.dp.lb.is_draining(v, b.addr))
                    .count();
                (
                    name.clone(),
                    serde_json::json!({
                        "digest": format!("{d:016x}"),
                        "backends": backends,
                        "draining": draining,
                        "backend_addrs": self.dp.lb.backends(v).unwrap_or_default().iter().map(|b| b.addr.to_string()).collect::<Vec<_>>(),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "role": "lb",
            "pid": std::process::id(),
            "revision": self.revision,
            "registry_connected": self.watch_stats.connected,
            "reopened": self.dp.reopened,
            "xdp_mode": self.dp.link.mode().to_string(),
            "apply_errors": self.apply_errors,
            "vips": vips,
        })
        .to_string()
    }

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

    fn metrics_text(&mut self) -> String {
        use prometheus_client::registry::Registry as Prom;
        let mut reg = Prom::with_prefix("flowpin");
        let stats = self.dp.lb.stats().ok();
        let packets = Family::<VipLabel, Counter>::default();
        let bytes = Family::<VipLabel, Counter>::default();
        let routes = Family::<RouteLabel, Counter>::default();
        let sid = Family::<RouteLabel, Counter>::default();
        if let Some(s) = &stats {
            for (vip, v) in &s.vips {
                let name = vip_name(vip);
                let l = VipLabel { vip: name.clone() };
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
                            vip: name.clone(),
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
                        vip: name.clone(),
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
        for (name, (vip, _)) in &self.digests {
            let name = name.clone();
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
            slots.get_or_create(&VipLabel { vip: name }).set(
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
        for (name, (_, d)) in &self.digests {
            digests
                .get_or_create(&DigestLabel {
                    vip: name.clone(),
                    digest: format!("{d:016x}"),
                })
                .set(1);
        }
        reg.register(
            "lb_ring_digest",
            "Ring digest per VIP (label), SipHash-1-3 of every slot's backend",
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
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
            error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

fn describe(s: &Step) -> String {
    match s {
        Step::RemoveVip(v) => format!("remove VIP {}", vip_name(v)),
        Step::AddVip(v, f) => format!("add VIP {} flags {:#x}", vip_name(v), f.bits()),
        Step::Drain(v, a) => format!("drain {a} of {}", vip_name(v)),
        Step::SetBackends(v, b) => format!("set {} backends of {}", b.len(), vip_name(v)),
        Step::Undrain(v, a) => format!("undrain {a} of {}", vip_name(v)),
    }
}

/// Connects to the registry and starts a watch, retrying with backoff
/// (100 ms doubling to 5 s) while etcd is unreachable; the data path keeps
/// forwarding with what its maps hold meanwhile.
async fn connect_watch(cfg: &LbConfig) -> (Registry, SnapshotWatch) {
    let mut delay = Duration::from_millis(100);
    loop {
        let rc = RegistryConfig::new(cfg.registry.endpoints.clone(), &cfg.registry.prefix);
        match Registry::connect(rc).await {
            Ok(reg) => match reg.watch().await {
                Ok(w) => {
                    info!(endpoints = ?cfg.registry.endpoints, prefix = %cfg.registry.prefix, "registry watch started");
                    return (reg, w);
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?delay, "registry watch failed; forwarding with the pinned state")
                }
            },
            Err(e) => {
                warn!(error = %e, retry_in = ?delay, "registry unreachable; forwarding with the pinned state")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn write_port_file(path: Option<&Path>, addr: std::net::SocketAddr) {
    if let Some(p) = path {
        let tmp = p.with_extension("tmp");
        if std::fs::write(&tmp, addr.port().to_string())
            .and_then(|()| std::fs::rename(&tmp, p))
            .is_err()
        {
            warn!(file = %p.display(), "cannot write the metrics port file");
        }
    }
}

/// Runs `node lb` until SIGTERM / SIGINT.
pub async fn run(config_path: &Path) -> Result<()> {
    let cfg = LbConfig::load(config_path)?;
    let mut dp = open_or_load(&cfg)?;
    apply_runtime(&mut dp.lb, &cfg)?;
    let traps = check_lb(
        cfg.lb.netns.as_deref(),
        &cfg.lb.interface,
        dp.link.mode() == XdpMode::Native,
        cfg.macs().0,
    );
    for t in &traps {
        warn!(check = t.check, "{}", t.message);
    }
    let (addr, mut requests) = http::serve(cfg.metrics.listen).await?;
    write_port_file(cfg.metrics.port_file.as_deref(), addr);
    info!(%addr, "metrics on http://{addr}/metrics, status on http://{addr}/status");
    let mut node = Node {
        cfg,
        config_path: config_path.to_path_buf(),
        dp,
        revision: 0,
        digests: BTreeMap::new(),
        watch_stats: WatchStats::default(),
        apply_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        change_to_map_write: Histogram::new(exponential_buckets(0.0001, 2.0, 20)),
        change_to_map_write_negative: 0,
        applied: BTreeMap::new(),
        apply_errors: 0,
        snapshots_applied: 0,
        last_apply_failed: false,
        traps,
        conn_fill: None,
        started: SystemTime::now(),
    };
    node.refresh_digests();
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    // Requests are answered while the registry is still unreachable.
    let first_cfg = node.cfg.clone();
    let connect = connect_watch(&first_cfg);
    tokio::pin!(connect);
    let (mut _registry, mut watch) = loop {
        tokio::select! {
            r = &mut connect => break r,
            Some((q, tx)) = requests.recv() => answer(&mut node, q, tx),
            _ = term.recv() => return shutdown(node),
            _ = int.recv() => return shutdown(node),
        }
    };
    // The snapshot read at connect time (the watch then wakes us for newer ones).
    node.watch_stats = watch.stats();
    node.apply(&watch.current(), Instant::now());
    loop {
        let retry = node.last_apply_failed;
        tokio::select! {
            snap = watch.next() => match snap {
                Some(s) => {
                    let t = Instant::now();
                    node.watch_stats = watch.stats();
                    node.apply(&s, t);
                }
                None => {
                    warn!("registry watch ended; reconnecting");
                    (_registry, watch) = connect_watch(&node.cfg).await;
                    node.apply(&watch.current(), Instant::now());
                }
            },
            () = tokio::time::sleep(Duration::from_secs(1)), if retry => {
                let s = watch.current();
                node.apply(&s, Instant::now());
            }
            Some((q, tx)) = requests.recv() => {
                node.watch_stats = watch.stats();
                answer(&mut node, q, tx);
            }
            _ = hup.recv() => {
                if reload(&mut node) {
                    (_registry, watch) = connect_watch(&node.cfg).await;
                    node.apply(&watch.current(), Instant::now());
                }
            }
            _ = term.recv() => return shutdown(node),
            _ = int.recv() => return shutdown(node),
        }
    }
}

fn answer(node: &mut Node, q: Query, tx: tokio::sync::oneshot::Sender<String>) {
    let body = match q {
        Query::Metrics => node.metrics_text(),
        Query::Status => node.status_json(),
    };
    let _ = tx.send(body);
}

/// SIGHUP: re-reads the TOML. Returns whether the registry section changed
/// (the caller reconnects).
fn reload(node: &mut Node) -> bool {
    let new = match LbConfig::load(&node.config_path) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "SIGHUP: new config rejected, keeping the running one");
            return false;
        }
    };
    let restart = node.cfg.restart_only_changes(&new);
    if !restart.is_empty() {
        warn!(fields = ?restart, "SIGHUP: these fields change only on restart (the pinned data path is reopened then)");
    }
    if let Err(e) = apply_runtime(&mut node.dp.lb, &new) {
        error!(error = %e, "SIGHUP: runtime settings not applied");
    }
    let registry_changed = new.registry != node.cfg.registry;
    node.cfg = LbConfig {
        metrics: node.cfg.metrics.clone(),
        ..new
    };
    info!(registry_changed, "SIGHUP: configuration reloaded");
    registry_changed
}

fn shutdown(node: Node) -> Result<()> {
    let up = node.started.elapsed().unwrap_or_default();
    match node.cfg.lb.on_exit {
        OnExit::Keep => {
            info!(uptime = ?up, pin_dir = %node.cfg.lb.pin_dir.display(), "exiting; the pinned data path keeps forwarding");
        }
        OnExit::Remove => {
            let dir = node.cfg.lb.pin_dir.clone();
            drop(node);
            XdpLb::unpin(&dir)?;
            info!(uptime = ?up, "exiting; pins removed, xdp_lb detached");
        }
    }
    Ok(())
}
