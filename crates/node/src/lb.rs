//! `flowpin-node lb`: `xdp_lb` on one interface, following the registry.
//!
//! Start-up: reopen the pinned data path (`XdpLb::open_pinned`, the link
//! from `<pin_dir>/link`) if `<pin_dir>/meta` exists, else load, pin and
//! attach. Then one event loop, woken only by: a registry snapshot
//! (`flowpin_registry::lb::desired_of` → `XdpLb::reconcile` → digests),
//! SIGHUP (reload the TOML), SIGTERM/SIGINT (exit), an HTTP request
//! (metrics / status), or a retry timer armed only after a failed apply.
//! Idle, nothing runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowpin_bpf_progs::link::Link;
use flowpin_bpf_progs::xdp_lb::{
    Vip, XdpAttachMode, XdpLb, XdpLbConfig, XdpLink, XdpMode, XdpTarget,
};
use flowpin_registry::lb::{changes, desired_of, latest_change_ms, ring_digest, vip_name};
use flowpin_registry::{Registry, RegistryConfig, Snapshot, SnapshotWatch, VipEntry, WatchStats};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::config::{parse_v4_prefix, LbConfig, OnExit, XdpModeConfig};
use crate::http::{self, Query};
use crate::status::{LbStatus, RingDigest, VipStatus};
use crate::traps::{check_lb, Trap};
use crate::NodeError;

pub mod flood_metrics;
mod metrics;

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
    snapshots_applied: u64,
    last_apply_failed: bool,
    traps: Vec<Trap>,
    conn_fill: Option<(Instant, usize)>,
    started: SystemTime,
    /// The new-flow rate between `/metrics` scrapes (issue 23).
    flood: flood_metrics::FloodMeter,
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
        let desired = desired_of(snap);
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
            if !changed.is_empty() {
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
                (
                    name.clone(),
                    VipStatus::new(RingDigest(*d), addrs, draining),
                )
            })
            .collect();
        st
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

/// Runs `flowpin-node lb` until SIGTERM / SIGINT.
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
        flood: flood_metrics::FloodMeter::default(),
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
        Query::Status => serde_json::to_string(&node.status()).unwrap_or_else(|e| {
            error!(error = %e, "status encoding failed");
            String::new()
        }),
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
