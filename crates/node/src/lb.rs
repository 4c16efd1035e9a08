//! `flowpin-node lb`: `xdp_lb` on one interface, following the registry.
//!
//! Start-up: reopen the pinned data path (`XdpLb::open_pinned`, the link
//! from `<pin_dir>/link`) if `<pin_dir>/meta` exists, else load, pin and
//! attach. Then one event loop, woken only by: a registry snapshot
//! (`flowpin_registry::lb::desired_of` → `XdpLb::reconcile` → digests),
//! SIGHUP (reload the TOML), SIGTERM/SIGINT (exit), an HTTP request
//! (metrics / status), a retry timer armed only after a failed apply, or
//! the watch on the QUIC-LB configurations (`quic_lb`, etcd only).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowpin_bpf_progs::link::Link;
use flowpin_bpf_progs::xdp_lb::{
    Vip, XdpAttachMode, XdpLb, XdpLbConfig, XdpLink, XdpMode, XdpTarget,
};
use flowpin_registry::health::{disagreements, fleet_status, targets_of, QuorumRule};
use flowpin_registry::lb::{changes, desired_of_with, latest_change_ms, ring_digest, vip_name};
use flowpin_registry::{Snapshot, VipEntry, WatchStats};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::config::{parse_v4_prefix, LbConfig, OnExit, XdpModeConfig};
use crate::http::{self, Query};
use crate::pin_lock::PinDirLock;
use crate::status::{BackendHealth, LbStatus, RingDigest, VipStatus};
use crate::traps::rtnl::Rtnl;
use crate::traps::{check_lb, Trap};
use crate::NodeError;
pub use pins_vs_config::StartError;
use start::{preflight, RemoveOnExit};

mod feed;
pub mod flood_metrics;
mod health;
mod metrics;
pub mod pins_vs_config;
mod process;
mod quic_lb;
mod rejected;
mod start;
mod tx_drops;

pub(crate) type Result<T> = std::result::Result<T, NodeError>;

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
/// A reopened one is compared with `cfg` first
/// ([`pins_vs_config`]): sizes that differ are refused (nothing changed),
/// an attachment that differs (interface, namespace, XDP mode) is made
/// again as configured.
pub fn open_or_load(cfg: &LbConfig) -> Result<DataPath> {
    let dir = &cfg.lb.pin_dir;
    let link_pin = dir.join(LINK_PIN);
    if dir.join("meta").exists() {
        let lb = XdpLb::open_pinned(dir)?;
        let refused = pins_vs_config::refused_sizes(cfg, &lb);
        if !refused.is_empty() {
            return Err(StartError::Refused(refused).into());
        }
        let link = if link_pin.exists() {
            let link = match &cfg.lb.netns {
                Some(ns) => XdpLink::from_pinned_in_netns(&link_pin, ns)?,
                None => XdpLink::from_pinned(&link_pin)?,
            };
            let plan = match Rtnl::open(cfg.lb.netns.as_deref()) {
                Ok(mut rtnl) => pins_vs_config::plan(cfg, &link, &mut rtnl),
                Err(e) => {
                    warn!(error = %e, "rtnetlink unavailable: the pinned link's interface is not compared with the config");
                    pins_vs_config::Plan::default()
                }
            };
            if plan.reattach.is_empty() {
                link
            } else {
                pins_vs_config::reattach(cfg, &lb, link, &link_pin, &plan)?
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
    let attached = lb.attach(target(cfg)).and_then(|mut link| {
        link.pin(&link_pin)?;
        Ok(link)
    });
    let link = match attached {
        Ok(l) => l,
        Err(e) => {
            let _ = XdpLb::unpin(dir);
            return Err(e.into());
        }
    };
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
    applied: BTreeMap<Vip, VipEntry>,
    apply_errors: u64,
    /// Registry entries the last snapshot rejected, by key.
    rejected_now: rejected::RejectedNow,
    /// The first snapshot after start is applied (later ones are changes).
    baseline_applied: bool,
    /// SIGHUP reloads applied / rejected.
    reloads_ok: u64,
    reloads_failed: u64,
    snapshots_applied: u64,
    last_apply_failed: bool,
    traps: Vec<Trap>,
    conn_fill: Option<(Instant, usize)>,
    started: SystemTime,
    /// The new-flow rate between `/metrics` scrapes (issue 23).
    flood: flood_metrics::FloodMeter,
    /// Health probes (None: disabled, or they failed to start).
    health: Option<health::HealthProbes>,
    /// Whose verdicts count.
    rule: QuorumRule,
    /// This LB's identity in its verdicts.
    health_id: String,
    /// The last snapshot (for the health status).
    last_snap: Option<std::sync::Arc<Snapshot>>,
    /// The interface's TX drop counter (rtnetlink).
    tx_drops: Option<tx_drops::TxDrops>,
    /// Unpins on drop with `on_exit = "remove"`: after `dp` (fields drop
    /// in order), so this process's references are gone first.
    remove_on_exit: RemoveOnExit,
    /// The VIPs' QUIC-LB configurations and their acknowledgement.
    quic_lb: quic_lb::QuicLb,
    /// One node per pin directory; released last.
    _lock: PinDirLock,
}

impl Node {
    fn refresh_digests(&mut self) {
        let st = self.dp.lb.state();
        self.digests = st
            .vips()
            .map(|v| (vip_name(v), (*v, ring_digest(&st.ring_addrs(v)))))
            .collect();
    }

    /// Reconciles the data path to what `snap` says (one plan: only what
    /// differs is written; a failed write rolls the whole change back).
    /// Errors are logged and counted; the next snapshot (or the retry
    /// timer) reconciles again from what the kernel holds.
    fn apply(&mut self, snap: &Snapshot, delivered: Instant) {
        let mut desired = desired_of_with(snap, &self.rule);
        self.follow_health(snap);
        self.quic_lb.apply_to(&mut desired);
        let changed = changes(&self.dp.lb.state().desired(), &desired);
        let failed = match self.dp.lb.reconcile(&desired) {
            Ok(update) => {
                for c in &changed {
                    info!(revision = snap.revision, change = %c, "applied");
                }
                if !changed.is_empty() {
                    info!(
                        revision = snap.revision,
                        vips_changed = changed.len(),
                        slots_changed = update.slots_changed,
                        backends_added = update.backends_added,
                        backends_removed = update.backends_removed,
                        "snapshot applied"
                    );
                }
                self.quic_lb.written();
                false
            }
            Err(e) => {
                for c in &changed {
                    error!(revision = snap.revision, change = %c, "not applied");
                }
                error!(revision = snap.revision, error = %e, "apply failed and rolled back; will reconcile again");
                self.apply_errors += 1;
                true
            }
        };
        if !changed.is_empty() {
            self.apply_seconds
                .observe(delivered.elapsed().as_secs_f64());
        }
        self.last_apply_failed = failed;
        if !failed {
            // Only changes seen after start: the first snapshot holds
            // entries written before this node ran (their age is not a
            // propagation time).
            if !changed.is_empty() && self.baseline_applied {
                if let Some(at) = latest_change_ms(&self.applied, snap) {
                    self.observe_change_to_map_write(at);
                }
            }
            self.baseline_applied = true;
            self.applied.clone_from(&snap.vips);
            self.revision = snap.revision;
        }
        self.snapshots_applied += 1;
        self.refresh_digests();
        let now = rejected::of(&snap.rejected);
        let (changed, cleared) = rejected::changes(&self.rejected_now, &now);
        for k in changed {
            if let Some((kind, reason)) = now.get(k) {
                warn!(key = %k, kind = *kind, reason = %reason, "registry entry rejected (not applied; logged again only if its rejection changes)");
            }
        }
        for k in cleared {
            info!(key = %k, "registry entry no longer rejected");
        }
        self.rejected_now = now;
    }

    /// Hands the snapshot's health targets to the prober and records where
    /// this LB's verdicts disagree with the quorum.
    fn follow_health(&mut self, snap: &Snapshot) {
        self.last_snap = Some(std::sync::Arc::new(snap.clone()));
        let Some(h) = &self.health else { return };
        let targets = targets_of(snap);
        if self.rule == QuorumRule::Majority {
            let dis = disagreements(snap, &self.health_id);
            for (vip, backend, _) in &targets {
                let d = dis.iter().any(|d| d.vip == *vip && d.backend == *backend);
                h.metrics.set_disagreement(vip, *backend, d);
            }
            for d in &dis {
                warn!(vip = %vip_name(&d.vip), backend = %d.backend, mine_up = d.mine_up, fleet = ?d.fleet, "this LB's probes disagree with the quorum; applying the quorum's decision");
            }
        }
        h.set_targets(targets);
    }

    /// The health part of `/status`.
    fn health_status(&self) -> Vec<BackendHealth> {
        let Some(snap) = &self.last_snap else {
            return Vec::new();
        };
        let mine = self
            .health
            .as_ref()
            .map(|h| h.prober.status())
            .unwrap_or_default();
        fleet_status(snap, &self.health_id, &self.rule, &mine)
            .into_iter()
            .map(|b| {
                let p = b.probe.as_ref();
                BackendHealth {
                    vip: vip_name(&b.vip),
                    backend: b.backend,
                    state: b.mine.as_str().to_string(),
                    fleet: format!("{:?}", b.fleet).to_lowercase(),
                    verdicts: b.verdicts,
                    disagrees: b.disagrees,
                    self_reported_down: b.self_reported_down,
                    last_latency_us: p.and_then(|p| p.last_latency_us),
                    last_failure: p
                        .and_then(|p| p.last_failure)
                        .map(|r| r.as_str().to_string()),
                    probes: p.map_or(0, |p| p.probes),
                    failures: p
                        .map(|p| {
                            p.failures
                                .iter()
                                .map(|(r, n)| (r.as_str().to_string(), *n))
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect()
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

    /// Packets `xdp_lb` matched to a VIP, all VIPs and CPUs.
    fn lb_packets(&self) -> u64 {
        self.dp
            .lb
            .stats()
            .map(|s| s.vips.values().map(|v| v.packets).sum())
            .unwrap_or(0)
    }

    /// `ready` once a registry snapshot is applied without error, else why not.
    fn readiness(&self) -> String {
        if !self.baseline_applied {
            "not ready: no registry snapshot applied yet (forwarding with the pinned state)".into()
        } else if self.last_apply_failed {
            "not ready: the last registry snapshot failed to apply (retrying)".into()
        } else {
            http::READY.into()
        }
    }

    /// What `/status` answers.
    fn status(&self) -> LbStatus {
        let mut st = LbStatus::new(
            self.revision,
            self.watch_stats.connected,
            self.dp.reopened,
            self.dp.link.mode().to_string(),
            self.apply_errors,
        );
        st.vips = self
            .digests
            .iter()
            .map(|(name, (v, d))| {
                let backends = self.dp.lb.backends(v).unwrap_or_default();
                let draining = backends
                    .iter()
                    .filter(|b| self.dp.lb.is_draining(v, b.addr))
                    .count();
                let addrs = backends.iter().map(|b| b.addr).collect();
                let mut vs = VipStatus::new(RingDigest(*d), addrs, draining);
                vs.cid = self
                    .dp
                    .lb
                    .state()
                    .vip_cid(v)
                    .map(crate::status::CidStatus::from);
                (name.clone(), vs)
            })
            .collect();
        st.health = self.health_status();
        st
    }
}

/// Runs `flowpin-node lb` until SIGTERM / SIGINT.
pub async fn run(config_path: &Path) -> Result<()> {
    let cfg = LbConfig::load(config_path)?;
    // Everything that can fail is checked before the data path is attached.
    let lock = PinDirLock::acquire(&cfg.lb.pin_dir).map_err(StartError::from)?;
    let listener = preflight(&cfg)?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut dp = open_or_load(&cfg)?;
    let remove_on_exit = RemoveOnExit {
        dir: (cfg.lb.on_exit == OnExit::Remove).then(|| cfg.lb.pin_dir.clone()),
    };
    apply_runtime(&mut dp.lb, &cfg)?;
    let traps = check_lb(
        cfg.lb.netns.as_deref(),
        &cfg.lb.interface,
        dp.link.mode() == XdpMode::Native,
        cfg.macs().0,
        cfg.lb.peer_netns.as_deref(),
    );
    for t in &traps {
        warn!(check = t.check, "{}", t.message);
    }
    let health = if cfg.lb.health.enabled {
        match health::HealthProbes::start(&cfg) {
            Ok(h) => Some(h),
            Err(e) => {
                error!(error = %e, "health probes not started: backends are judged by the other LBs' verdicts only");
                None
            }
        }
    } else {
        None
    };
    let (addr, mut requests) = http::serve_on(listener)?;
    http::write_port_file(cfg.metrics.port_file.as_deref(), addr);
    http::log_endpoint(addr);
    let mut node = Node {
        cfg: cfg.clone(),
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
        rejected_now: rejected::RejectedNow::new(),
        baseline_applied: false,
        reloads_ok: 0,
        reloads_failed: 0,
        snapshots_applied: 0,
        last_apply_failed: false,
        traps,
        conn_fill: None,
        flood: flood_metrics::FloodMeter::default(),
        started: SystemTime::now(),
        rule: cfg.quorum_rule(),
        health_id: cfg.health_id(),
        health,
        last_snap: None,
        tx_drops: None,
        remove_on_exit,
        quic_lb: quic_lb::QuicLb::default(),
        _lock: lock,
    };
    node.tx_drops = tx_drops::TxDrops::open(node.cfg.lb.netns.as_deref(), &node.cfg.lb.interface);
    let lb_packets = node.lb_packets();
    if let Some(t) = node.tx_drops.as_mut() {
        t.sample(lb_packets);
    }
    let mut tx_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + tx_drops::PERIOD,
        tx_drops::PERIOD,
    );
    tx_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    node.refresh_digests();

    // Requests are answered while the registry is still unreachable.
    let first_cfg = node.cfg.clone();
    let connect = feed::Feed::connect(&first_cfg);
    tokio::pin!(connect);
    let mut watch = loop {
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
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut quic_lb_tick = tokio::time::interval(quic_lb::POLL);
    quic_lb_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The retry deadline outlives select! (which drops the losing
        // futures): requests arriving every few ms do not postpone it.
        match (node.last_apply_failed, retry_at) {
            (true, None) => retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1)),
            (false, Some(_)) => retry_at = None,
            _ => {}
        }
        let deadline = retry_at.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            snap = watch.next() => match snap {
                Some(s) => {
                    let t = Instant::now();
                    node.watch_stats = watch.stats();
                    node.apply(&s, t);
                }
                None => {
                    warn!("registry watch ended; reconnecting");
                    watch = feed::Feed::connect(&node.cfg).await;
                    node.apply(&watch.current(), Instant::now());
                }
            },
            () = tokio::time::sleep_until(deadline), if retry_at.is_some() => {
                retry_at = None;
                let s = watch.current();
                node.apply(&s, Instant::now());
            }
            Some((q, tx)) = requests.recv() => {
                node.watch_stats = watch.stats();
                answer(&mut node, q, tx);
            }
            _ = tx_tick.tick() => {
                let lb_packets = node.lb_packets();
                if let Some(t) = node.tx_drops.as_mut() {
                    t.sample(lb_packets);
                }
            }
            _ = quic_lb_tick.tick() => {
                if node.quic_lb.tick(&node.cfg).await {
                    node.apply(&watch.current(), Instant::now());
                }
                node.quic_lb.ack(&node.cfg).await;
            }
            () = node.quic_lb.changed() => {
                if node.quic_lb.refresh(&node.cfg).await {
                    node.apply(&watch.current(), Instant::now());
                }
                node.quic_lb.ack(&node.cfg).await;
            }
            _ = hup.recv() => {
                if reload(&mut node) {
                    watch = feed::Feed::connect(&node.cfg).await;
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
        Query::Ready => node.readiness(),
        Query::Status => serde_json::to_string(&node.status()).unwrap_or_else(|e| {
            error!(error = %e, "status encoding failed");
            String::new()
        }),
    };
    let _ = tx.send(body);
}

/// SIGHUP: re-reads the TOML and says, field by field, what it applied
/// and what waits for a restart. Returns whether the registry section
/// changed (the caller reconnects).
fn reload(node: &mut Node) -> bool {
    let new = match LbConfig::load(&node.config_path) {
        Ok(c) => c,
        Err(e) => {
            node.reloads_failed += 1;
            error!(error = %e, "SIGHUP: new config rejected, keeping the running one");
            return false;
        }
    };
    let report = pins_vs_config::sighup_report(&node.cfg, &new);
    let mut applied = report.applied.clone();
    if let Err(e) = apply_runtime(&mut node.dp.lb, &new) {
        node.reloads_failed += 1;
        error!(error = %e, "SIGHUP: lb.local_mac / lb.next_hop_mac / lb.tunnel_src_v4 not applied; keeping the running config");
        return false;
    }
    node.reloads_ok += 1;
    let registry_changed = new.registry != node.cfg.registry;
    node.remove_on_exit.dir =
        (new.lb.on_exit == OnExit::Remove).then(|| node.cfg.lb.pin_dir.clone());
    // Fields that wait for a restart keep their running value here.
    let running = node.cfg.clone();
    node.cfg = LbConfig {
        metrics: running.metrics,
        lb: crate::config::LbSection {
            local_mac: new.lb.local_mac.clone(),
            next_hop_mac: new.lb.next_hop_mac.clone(),
            tunnel_src_v4: new.lb.tunnel_src_v4.clone(),
            on_exit: new.lb.on_exit,
            ..running.lb
        },
        ..new
    };
    if applied.is_empty() && report.on_restart.is_empty() && report.needs_new_pins.is_empty() {
        applied.push("nothing (file unchanged)");
    }
    info!(
        applied = ?applied,
        on_restart = ?report.on_restart,
        needs_new_pins = ?report.needs_new_pins,
        "SIGHUP: configuration reloaded (on_restart: re-attached at the next start; needs_new_pins: refused at the next start unless the pins are removed)"
    );
    registry_changed
}

fn shutdown(node: Node) -> Result<()> {
    let up = node.started.elapsed().unwrap_or_default();
    match node.cfg.lb.on_exit {
        OnExit::Keep => {
            info!(uptime = ?up, pin_dir = %node.cfg.lb.pin_dir.display(), "exiting; the pinned data path keeps forwarding");
        }
        OnExit::Remove => {
            info!(uptime = ?up, "exiting; removing the pins (on_exit = remove)");
        }
    }
    // Dropping the node closes our references, then unpins (RemoveOnExit).
    drop(node);
    Ok(())
}
