//! The prober: one task per (VIP, backend), probing at the VIP's interval,
//! damped by rise/fall, with a status an LB publishes (verdicts to the
//! registry, metrics, `/status`).
//!
//! ```no_run
//! # async fn f() -> Result<(), flowpin_health::prober::RouteError> {
//! use std::sync::Arc;
//! use flowpin_bpf_abi::vip::{Proto, Vip};
//! use flowpin_health::{HealthCheck, Prober, DirectRoutes};
//! let prober = Prober::new(Arc::new(DirectRoutes));
//! let vip = Vip::new("10.0.0.1".parse().unwrap(), 80, Proto::Tcp);
//! prober.set_targets([(vip, "10.1.0.2".parse().unwrap(), HealthCheck::http("/healthz", 200))])?;
//! let mut changes = prober.changes();
//! changes.changed().await.ok();          // a state changed: publish it
//! for b in prober.status().backends { println!("{} {} {}", b.vip, b.backend, b.state); }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowpin_bpf_abi::vip::Vip;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::HealthCheck;
use crate::damper::{Damper, Health};
use crate::probe::{probe_once, FailReason, ProbeOutcome, ProbeTarget};

/// A data path could not route probes to a backend.
#[derive(Debug, thiserror::Error)]
#[error("cannot route probes to backend {backend}: {reason}")]
#[non_exhaustive]
pub struct RouteError {
    /// The backend.
    pub backend: IpAddr,
    /// Why, and what to do.
    pub reason: String,
}

/// How probes reach a backend: the data path (`TunnelRoutes` over
/// `probe_encap`, feature `bpf`) or [`DirectRoutes`].
pub trait ProbeRoutes: Send + Sync + Debug {
    /// Where a probe of `backend` behind `vip` on `port` goes (sets up the
    /// data path's state for `backend` if needed).
    fn target(&self, vip: IpAddr, port: u16, backend: IpAddr) -> Result<ProbeTarget, RouteError>;
    /// `backend` is no longer probed (for any VIP).
    fn release(&self, backend: IpAddr);
}

/// Probes straight to the backend's address, unmarked (no tunnel): tests,
/// and services that listen on the backend's own address.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectRoutes;

impl ProbeRoutes for DirectRoutes {
    fn target(&self, _vip: IpAddr, port: u16, backend: IpAddr) -> Result<ProbeTarget, RouteError> {
        Ok(ProbeTarget::direct(backend, port))
    }
    fn release(&self, _backend: IpAddr) {}
}

/// One backend as this prober sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BackendStatus {
    /// The VIP.
    pub vip: Vip,
    /// The backend's address.
    pub backend: IpAddr,
    /// The damped state.
    pub state: Health,
    /// Unix ms of the last state change (None: never changed).
    pub since_ms: Option<u64>,
    /// Down for at least the check's `down_ms` (it should leave the ring).
    pub expired: bool,
    /// Latency of the last probe, µs.
    pub last_latency_us: Option<u64>,
    /// Why the last probe failed (None: it passed, or none ran yet).
    pub last_failure: Option<FailReason>,
    /// Probes run.
    pub probes: u64,
    /// Failures by reason.
    pub failures: BTreeMap<FailReason, u64>,
}

/// Every backend this prober probes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HealthStatus {
    /// By VIP, then backend.
    pub backends: Vec<BackendStatus>,
}

impl HealthStatus {
    /// The status of one backend of one VIP.
    pub fn get(&self, vip: &Vip, backend: IpAddr) -> Option<&BackendStatus> {
        self.backends
            .iter()
            .find(|b| b.vip == *vip && b.backend == backend)
    }
}

/// The label of a VIP in statuses and metrics: `tcp/10.0.0.1/80`.
pub fn vip_label(vip: &Vip) -> String {
    format!("{}/{}/{}", vip.proto.as_str(), vip.addr, vip.port)
}

type Key = (Vip, IpAddr);

#[derive(Debug)]
struct Entry {
    status: BackendStatus,
    down_at: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    entries: Mutex<BTreeMap<Key, Entry>>,
    generation: watch::Sender<u64>,
    /// The origin of every probe task's tick grid ([`first_tick`]).
    epoch: tokio::time::Instant,
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::HealthMetrics>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one outcome; bumps the generation when the published state
    /// (state or expiry) changed.
    fn record(&self, key: &Key, check: &HealthCheck, damper: &mut Damper, out: &ProbeOutcome) {
        let changed = {
            let mut map = self.lock();
            let Some(e) = map.get_mut(key) else {
                return;
            };
            let s = &mut e.status;
            s.probes += 1;
            s.last_latency_us = Some(u64::try_from(out.latency.as_micros()).unwrap_or(u64::MAX));
            s.last_failure = out.result.err();
            if let Err(r) = out.result {
                *s.failures.entry(r).or_default() += 1;
            }
            let mut changed = false;
            if let Some(state) = damper.observe(out.passed()) {
                s.state = state;
                s.since_ms = Some(unix_ms());
                e.down_at = (state == Health::Down).then(Instant::now);
                s.expired = false;
                changed = true;
            }
            let expired = check.down_ms > 0
                && e.down_at
                    .is_some_and(|t| t.elapsed() >= Duration::from_millis(check.down_ms));
            if expired != s.expired {
                s.expired = expired;
                changed = true;
            }
            #[cfg(feature = "metrics")]
            if let Some(m) = &self.metrics {
                m.record(s, out);
            }
            changed
        };
        if changed {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}

/// Probes backends; see the [module docs](self). Dropping it stops every
/// probe task. Its methods need a tokio runtime (they spawn tasks).
#[derive(Debug)]
pub struct Prober {
    shared: Arc<Shared>,
    routes: Arc<dyn ProbeRoutes>,
    tasks: Mutex<HashMap<Key, (HealthCheck, JoinHandle<()>)>>,
}

impl Prober {
    /// A prober with nothing to probe yet.
    pub fn new(routes: Arc<dyn ProbeRoutes>) -> Prober {
        Prober::build(routes, None)
    }

    /// A prober that also records into `metrics` (feature `metrics`).
    #[cfg(feature = "metrics")]
    pub fn with_metrics(
        routes: Arc<dyn ProbeRoutes>,
        metrics: crate::metrics::HealthMetrics,
    ) -> Prober {
        Prober::build(routes, Some(metrics))
    }

    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn build(routes: Arc<dyn ProbeRoutes>, metrics: Option<crate::MetricsHandle>) -> Prober {
        Prober {
            shared: Arc::new(Shared {
                entries: Mutex::new(BTreeMap::new()),
                generation: watch::channel(0).0,
                epoch: tokio::time::Instant::now(),
                #[cfg(feature = "metrics")]
                metrics,
            }),
            routes,
            tasks: Mutex::new(HashMap::new()),
        }
    }

    /// Probes exactly `targets` from now on: new ones start (state
    /// unknown), removed ones stop and their metric series are dropped
    /// ([`HealthMetrics::forget`](crate::metrics::HealthMetrics::forget)),
    /// ones whose check changed restart.
    /// Every check must be valid ([`HealthCheck::validate`]); an invalid
    /// one is skipped and logged (the registry never hands one over).
    pub fn set_targets(
        &self,
        targets: impl IntoIterator<Item = (Vip, IpAddr, HealthCheck)>,
    ) -> Result<(), RouteError> {
        let want: BTreeMap<Key, HealthCheck> = targets
            .into_iter()
            .filter(|(v, b, c)| match c.validate() {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(vip = %v, backend = %b, error = %e, "invalid health check skipped");
                    false
                }
            })
            .map(|(v, b, c)| ((v, b), c))
            .collect();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let stale: Vec<Key> = tasks
            .iter()
            .filter(|(k, (c, _))| want.get(k) != Some(c))
            .map(|(k, _)| *k)
            .collect();
        for k in &stale {
            if let Some((_, h)) = tasks.remove(k) {
                h.abort();
            }
            self.shared.lock().remove(k);
            // After the entry is gone (`record` finds none, so no probe
            // still running re-creates them): a removed target's series
            // leave `/metrics`. A target whose check changed keeps them.
            #[cfg(feature = "metrics")]
            if let (Some(m), false) = (&self.shared.metrics, want.contains_key(k)) {
                m.forget(&k.0, k.1);
            }
        }
        let mut result = Ok(());
        for (key, check) in want {
            if tasks.contains_key(&key) {
                continue;
            }
            let (vip, backend) = key;
            let target = match self
                .routes
                .target(vip.addr, check.probe_port(vip.port), backend)
            {
                Ok(t) => t,
                Err(e) => {
                    result = Err(e);
                    continue;
                }
            };
            self.shared.lock().insert(
                key,
                Entry {
                    status: BackendStatus {
                        vip,
                        backend,
                        state: Health::Unknown,
                        since_ms: None,
                        expired: false,
                        last_latency_us: None,
                        last_failure: None,
                        probes: 0,
                        failures: BTreeMap::new(),
                    },
                    down_at: None,
                },
            );
            let h = tokio::spawn(run(self.shared.clone(), key, check.clone(), target));
            tasks.insert(key, (check, h));
        }
        let live: std::collections::BTreeSet<IpAddr> = tasks.keys().map(|(_, b)| *b).collect();
        for (_, b) in &stale {
            if !live.contains(b) {
                self.routes.release(*b);
            }
        }
        if !stale.is_empty() {
            self.shared.generation.send_modify(|g| *g += 1);
        }
        result
    }

    /// Every backend's status.
    pub fn status(&self) -> HealthStatus {
        HealthStatus {
            backends: self
                .shared
                .lock()
                .values()
                .map(|e| e.status.clone())
                .collect(),
        }
    }

    /// The damped state of one backend ([`Health::Unknown`] if not probed).
    pub fn state(&self, vip: &Vip, backend: IpAddr) -> Health {
        self.shared
            .lock()
            .get(&(*vip, backend))
            .map_or(Health::Unknown, |e| e.status.state)
    }

    /// A receiver that changes whenever a backend's state or expiry
    /// changes, or targets are removed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, (_, h)) in tasks.drain() {
            h.abort();
        }
    }
}

/// Slots per interval of the tick grid ([`first_tick`]).
const SLOTS: u64 = 20;

/// The first tick of a probe task: on a grid shared by every task of the
/// prober (`epoch + slot × interval / SLOTS + k × interval`), in the slot a
/// hash of `key` picks, the first one not before `now`.
///
/// The slots spread the probes over the interval (no burst of every probe
/// at once), and the tasks of one slot wake together: with 300 probes a
/// second in 20 slots the runtime wakes about 20 times a second for the
/// ticks instead of 300 (each wake-up is a timer pass, an `epoll_wait` and a
/// context switch: issue 21's CPU budget).
fn first_tick(
    epoch: tokio::time::Instant,
    now: tokio::time::Instant,
    interval: Duration,
    key: &Key,
) -> tokio::time::Instant {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let ms = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let slots = SLOTS.min(ms);
    let mut t = epoch + Duration::from_millis(h.finish() % slots * (ms / slots));
    if t < now {
        let behind = u64::try_from((now - t).as_millis()).unwrap_or(u64::MAX);
        t += Duration::from_millis(behind.div_ceil(ms).saturating_mul(ms));
    }
    t
}

/// One backend's probe loop, on the prober's tick grid ([`first_tick`]);
/// a late tick is skipped, not shifted, so the task stays on the grid.
async fn run(shared: Arc<Shared>, key: Key, check: HealthCheck, target: ProbeTarget) {
    let interval = check.interval();
    let start = first_tick(shared.epoch, tokio::time::Instant::now(), interval, &key);
    let mut tick = tokio::time::interval_at(start, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut damper = Damper::new(check.rise, check.fall);
    loop {
        tick.tick().await;
        let out = probe_once(&target, &check.probe, check.timeout()).await;
        shared.record(&key, &check, &mut damper, &out);
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowpin_bpf_abi::vip::Proto;
    use std::net::Ipv4Addr;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn fast() -> HealthCheck {
        HealthCheck::tcp()
            .timing(Duration::from_millis(100), Duration::from_millis(80))
            .damping(2, 3)
            .down_after(Duration::from_millis(400))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn up_then_down_then_expired_then_up_again() {
        let l = std::net::TcpListener::bind((LO, 0)).expect("bind");
        let port = l.local_addr().expect("addr").port();
        let vip = Vip::new(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)), port, Proto::Tcp);
        let prober = Prober::new(Arc::new(DirectRoutes));
        prober.set_targets([(vip, LO, fast())]).expect("targets");
        assert_eq!(prober.state(&vip, LO), Health::Unknown);
        let wait = |want: Health, expired: bool| {
            let p = &prober;
            async move {
                for _ in 0..100 {
                    let s = p.status();
                    let b = s.get(&vip, LO).expect("probed");
                    if b.state == want && b.expired == expired {
                        return b.clone();
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                panic!("never {want} (expired {expired}): {:?}", p.status());
            }
        };
        let up = wait(Health::Up, false).await;
        assert!(up.probes >= 2 && up.last_latency_us.is_some());
        let t0 = Instant::now();
        drop(l);
        let down = wait(Health::Down, false).await;
        // fall 3 at 100 ms: about 300 ms, never more than interval × fall + 1 s.
        assert!(
            t0.elapsed() <= Duration::from_millis(1300),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(down.last_failure, Some(FailReason::Refused));
        assert!(down.failures[&FailReason::Refused] >= 3);
        wait(Health::Down, true).await;
        let _l = std::net::TcpListener::bind((LO, port)).expect("re-bind");
        wait(Health::Up, false).await;
        // Removing the target stops it.
        prober.set_targets([]).expect("targets");
        assert!(prober.status().backends.is_empty());
    }

    #[test]
    fn ticks_fall_on_a_shared_grid_of_slots() {
        let epoch = tokio::time::Instant::now();
        let second = Duration::from_secs(1);
        let vip = Vip::new(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 7)), 80, Proto::Tcp);
        let mut slots = std::collections::BTreeSet::new();
        for i in 0..=255u8 {
            let key = (vip, IpAddr::V4(Ipv4Addr::new(10, 1, 0, i)));
            let now = epoch + Duration::from_millis(u64::from(i) * 37);
            let t = first_tick(epoch, now, second, &key);
            assert!(t >= now && t < now + second, "{i}: {:?}", t - now);
            let off = u64::try_from((t - epoch).as_millis()).expect("ms");
            assert_eq!(off % 50, 0, "{i}: {off} ms is not on a 50 ms slot");
            slots.insert(off % 1000);
            // The same key gets the same slot whenever it starts.
            let later = first_tick(epoch, now + Duration::from_millis(4321), second, &key);
            assert_eq!((later - t).as_millis() % 1000, 0);
        }
        // Spread over (nearly) all 20 slots, never more.
        assert!(slots.len() >= 18 && slots.len() <= 20, "{slots:?}");
        // Intervals shorter than SLOTS ms: one slot per ms.
        let t = first_tick(epoch, epoch, Duration::from_millis(7), &(vip, LO));
        assert!(t - epoch < Duration::from_millis(7));
    }

    /// `/metrics` text of `reg`.
    #[cfg(feature = "metrics")]
    fn exposition(reg: &prometheus_client::registry::Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, reg).expect("encode");
        out
    }

    #[cfg(feature = "metrics")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_removed_backend_leaves_the_metrics() {
        use crate::metrics::HealthMetrics;
        let l = std::net::TcpListener::bind((LO, 0)).expect("bind");
        let port = l.local_addr().expect("addr").port();
        let vip = Vip::new(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 8)), port, Proto::Tcp);
        // Kept: up. Removed: refused (so it has a failure series too).
        let kept = LO;
        let gone = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let closed = std::net::TcpListener::bind((gone, 0)).expect("bind");
        let cport = closed.local_addr().expect("addr").port();
        drop(closed);
        let vip2 = Vip::new(vip.addr, cport, Proto::Tcp);
        let metrics = HealthMetrics::new();
        let mut reg = prometheus_client::registry::Registry::default();
        metrics.register(&mut reg);
        let prober = Prober::with_metrics(Arc::new(DirectRoutes), metrics.clone());
        prober
            .set_targets([(vip, kept, fast()), (vip2, gone, fast())])
            .expect("targets");
        metrics.set_disagreement(&vip2, gone, true);
        let gone_label = format!("backend=\"{gone}\"");
        let kept_label = format!("backend=\"{kept}\"");
        for _ in 0..100 {
            let s = prober.status();
            if s.get(&vip, kept).is_some_and(|b| b.state == Health::Up)
                && s.get(&vip2, gone).is_some_and(|b| b.state == Health::Down)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = exposition(&reg);
        for name in [
            "flowpin_health_backend_state{",
            "flowpin_health_backend_expired{",
            "flowpin_health_probe_latency_seconds{",
            "flowpin_health_probe_failures_total{",
            "flowpin_health_quorum_disagreement{",
        ] {
            assert!(
                before
                    .lines()
                    .any(|l| l.starts_with(name) && l.contains(&gone_label)),
                "{name} of {gone} missing before removal:\n{before}"
            );
        }
        prober.set_targets([(vip, kept, fast())]).expect("targets");
        // Probes of the kept backend go on; none may bring the removed one back.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = exposition(&reg);
        assert!(
            !after.contains(&gone_label),
            "series of the removed backend are still exported:\n{after}"
        );
        assert!(
            after
                .lines()
                .any(|l| l.starts_with("flowpin_health_backend_state{") && l.contains(&kept_label)),
            "the kept backend lost its series:\n{after}"
        );
        // The counter of disagreement starts is not per backend: it stays.
        assert!(
            after.contains("flowpin_health_quorum_disagreements_total 1"),
            "{after}"
        );
        drop(l);
    }
}
