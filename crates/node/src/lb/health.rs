//! Health probes of `flowpin-node lb`: `probe_encap` on the LB's interface
//! (inside `lb.netns` if set), a [`Prober`] on its own thread (it entered
//! that namespace, so probe sockets live there; its own current-thread
//! runtime), targets from every snapshot (`targets_of`), and the verdicts
//! published under this LB's lease (`publish_verdicts`).

use std::sync::Arc;
use std::time::Duration;

use flowpin_bpf_progs::probe_encap::{ProbeEncap, ProbeEncapConfig};
use flowpin_health::metrics::HealthMetrics;
use flowpin_health::{HealthCheck, Prober, TunnelRoutes};
use flowpin_registry::health::publish_verdicts;
use flowpin_registry::{Registry, Vip};
use std::net::IpAddr;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::LbConfig;

/// What the prober probes.
pub(super) type Targets = Vec<(Vip, IpAddr, HealthCheck)>;

/// The running prober, seen from the LB's loop.
pub(super) struct HealthProbes {
    /// Its status (read for `/status`).
    pub prober: Arc<Prober>,
    /// Its metric families.
    pub metrics: HealthMetrics,
    targets: watch::Sender<Targets>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The verdict publisher, on the caller's runtime (in the node's own
    /// namespace, where etcd is reachable; the prober thread is in `lb.netns`).
    publisher: Option<tokio::task::JoinHandle<()>>,
}

impl HealthProbes {
    /// Loads and attaches `probe_encap`, starts the prober thread and (with
    /// etcd) the verdict publisher (a task of the calling runtime). Errors
    /// say what failed (the node starts without health probes then).
    pub(super) fn start(cfg: &LbConfig) -> Result<HealthProbes, String> {
        let metrics = HealthMetrics::new();
        let (targets_tx, targets_rx) = watch::channel(Targets::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let cfg2 = cfg.clone();
        let m2 = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("flowpin-probes".into())
            .spawn(move || thread_main(cfg2, m2, targets_rx, stop_rx, ready_tx))
            .map_err(|e| format!("cannot start the prober thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(prober)) => {
                let publisher = cfg.registry.file.is_none().then(|| {
                    let (cfg, p) = (cfg.clone(), prober.clone());
                    tokio::spawn(async move { publish_loop(&cfg, &p).await })
                });
                Ok(HealthProbes {
                    prober,
                    metrics,
                    targets: targets_tx,
                    stop: stop_tx,
                    thread: Some(thread),
                    publisher,
                })
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err("the prober thread ended during start-up".into())
            }
        }
    }

    /// Probes exactly `targets` from now on.
    pub(super) fn set_targets(&self, targets: Targets) {
        self.targets.send_if_modified(|t| {
            if *t == targets {
                false
            } else {
                *t = targets;
                true
            }
        });
    }
}

impl Drop for HealthProbes {
    fn drop(&mut self) {
        if let Some(p) = self.publisher.take() {
            p.abort();
        }
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn enter_netns(path: &std::path::Path) -> Result<(), String> {
    let f = std::fs::File::open(path)
        .map_err(|e| format!("cannot open network namespace {}: {e}", path.display()))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns({}) failed: {e}", path.display()))
}

fn thread_main(
    cfg: LbConfig,
    metrics: HealthMetrics,
    mut targets: watch::Receiver<Targets>,
    mut stop: watch::Receiver<bool>,
    ready: std::sync::mpsc::Sender<Result<Arc<Prober>, String>>,
) {
    let setup = || -> Result<(tokio::runtime::Runtime, Arc<Prober>, _), String> {
        if let Some(ns) = &cfg.lb.netns {
            enter_netns(ns)?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot build the prober runtime: {e}"))?;
        let encap =
            ProbeEncap::load(ProbeEncapConfig::default().max_backends(cfg.lb.health.max_backends))
                .map_err(|e| format!("cannot load probe_encap: {e}"))?;
        let link = encap
            .attach_ifname(&cfg.lb.interface)
            .map_err(|e| format!("cannot attach probe_encap to {}: {e}", cfg.lb.interface))?;
        let prober = Arc::new(Prober::with_metrics(
            Arc::new(TunnelRoutes::new(encap)),
            metrics,
        ));
        Ok((rt, prober, link))
    };
    let (rt, prober, _link) = match setup() {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(prober.clone()));
    info!(interface = %cfg.lb.interface, lb = %cfg.health_id(), "health probes through probe_encap started");
    rt.block_on(async {
        let follow = async {
            loop {
                let t = targets.borrow_and_update().clone();
                if let Err(e) = prober.set_targets(t) {
                    warn!(error = %e, "some backends cannot be probed");
                }
                if targets.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            () = follow => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        // Stops the probe tasks on this runtime.
        let _ = prober.set_targets(Vec::new());
    });
}

/// Publishes this LB's verdicts under its lease, reconnecting (1 s, then
/// doubling to 10 s) when etcd fails.
async fn publish_loop(cfg: &LbConfig, prober: &Prober) {
    let lb = cfg.health_id();
    let ttl = Duration::from_secs(cfg.lb.health.verdict_ttl_secs);
    let mut delay = Duration::from_secs(1);
    loop {
        let res = async {
            let rc = cfg.registry.registry_config().map_err(|e| e.to_string())?;
            let reg = Registry::connect(rc).await.map_err(|e| e.to_string())?;
            let reporter = reg
                .health_reporter(&lb, ttl)
                .await
                .map_err(|e| e.to_string())?;
            info!(lb = %lb, lease = reporter.lease_id(), "publishing health verdicts");
            publish_verdicts(prober, &reporter)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = res {
            warn!(error = %e, retry_in = ?delay, "health verdicts not published");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
