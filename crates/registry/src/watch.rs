//! Watching the registry: a stream of consistent, validated snapshots.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::keys::KeyLayout;
use crate::lease::timed;
use crate::model::{RejectCounts, RejectKind, Snapshot};
use crate::validate::{build, RawEntry};

/// Health and counters of a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WatchStats {
    /// Whether the etcd watch stream is up right now.
    pub connected: bool,
    /// Revision of the last snapshot.
    pub revision: i64,
    /// Snapshots published (the first one included).
    pub snapshots: u64,
    /// Times the watch stream was lost and re-established.
    pub reconnects: u64,
    /// Full re-reads of the routing state (the first sync included).
    pub resyncs: u64,
    /// Times the watch could not resume because etcd had compacted the
    /// revision it needed (each followed by a resync).
    pub compactions: u64,
    /// Rejected entry versions, per kind.
    pub reject_counts: RejectCounts,
}

/// A watch on the registry's VIPs and backends.
///
/// A background task follows etcd and publishes a [`Snapshot`] after each
/// watch response: all events of a response (never part of a transaction) are
/// applied, the state is validated as a whole, and one snapshot is published
/// for the last revision. If etcd goes away, the last snapshot stays current
/// and the task reconnects with exponential backoff (100 ms to 2 s), resuming
/// from the next revision; if that revision was compacted, it re-reads
/// everything (a full resync) and publishes the result. Snapshots are
/// "latest wins": a slow reader skips intermediate ones, never sees a partial
/// one.
pub struct SnapshotWatch {
    rx: watch::Receiver<Arc<Snapshot>>,
    stats: Arc<Mutex<WatchStats>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for SnapshotWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWatch")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SnapshotWatch {
    pub(crate) async fn start(
        client: Client,
        layout: KeyLayout,
        timeout: Duration,
    ) -> Result<SnapshotWatch> {
        let stats = Arc::new(Mutex::new(WatchStats::default()));
        let mut w = Follower {
            client,
            layout,
            timeout,
            raw: BTreeMap::new(),
            revision: 0,
            seen_rejections: HashSet::new(),
            counts: RejectCounts::default(),
            stats: Arc::clone(&stats),
        };
        w.resync().await?;
        let (tx, rx) = watch::channel(Arc::new(w.snapshot()));
        let task = tokio::spawn(w.run(tx));
        Ok(SnapshotWatch { rx, stats, task })
    }

    /// The latest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.rx.borrow())
    }

    /// Waits for a snapshot newer than the last one returned by `next` (the
    /// first call returns the initial one at once). `None` only if the
    /// background task stopped (it does not stop on etcd errors).
    pub async fn next(&mut self) -> Option<Arc<Snapshot>> {
        self.rx.changed().await.ok()?;
        Some(Arc::clone(&self.rx.borrow_and_update()))
    }

    /// Waits until a snapshot satisfies `pred` (the current one included).
    pub async fn wait_for(
        &mut self,
        mut pred: impl FnMut(&Snapshot) -> bool,
    ) -> Option<Arc<Snapshot>> {
        let snap = self.rx.wait_for(|s| pred(s)).await.ok()?;
        Some(Arc::clone(&snap))
    }

    /// Health and counters.
    pub fn stats(&self) -> WatchStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads the routing state once and validates it (no background task):
/// what [`crate::Registry::snapshot`] returns.
pub(crate) async fn read_snapshot(
    client: Client,
    layout: KeyLayout,
    timeout: Duration,
) -> Result<Snapshot> {
    let mut f = Follower {
        client,
        layout,
        timeout,
        raw: BTreeMap::new(),
        revision: 0,
        seen_rejections: HashSet::new(),
        counts: RejectCounts::default(),
        stats: Arc::new(Mutex::new(WatchStats::default())),
    };
    f.resync().await?;
    Ok(f.snapshot())
}

impl Drop for SnapshotWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Follower {
    client: Client,
    layout: KeyLayout,
    timeout: Duration,
    raw: BTreeMap<Vec<u8>, RawEntry>,
    revision: i64,
    seen_rejections: HashSet<(String, i64, RejectKind)>,
    counts: RejectCounts,
    stats: Arc<Mutex<WatchStats>>,
}

struct Backoff(Duration);

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    // At most 2 s between attempts: an LB converges within ~2 s of etcd
    // coming back; a refused connect to a local etcd costs microseconds.
    const MAX: Duration = Duration::from_secs(2);

    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Backoff::MAX);
        d.mul_f64(rand::rng().random_range(0.8..1.2))
    }

    fn reset(&mut self) {
        self.0 = Backoff::MIN;
    }
}

impl Follower {
    fn update_stats(&self, f: impl FnOnce(&mut WatchStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Reads the whole routing state at one revision.
    async fn resync(&mut self) -> Result<()> {
        let mut c = self.client.clone();
        let opts = GetOptions::new().with_prefix();
        let resp = timed(
            "get",
            self.timeout,
            c.get(self.layout.routing_prefix(), Some(opts)),
        )
        .await?;
        self.raw = resp
            .kvs()
            .iter()
            .map(|kv| {
                let e = RawEntry {
                    value: kv.value().to_vec(),
                    create_revision: kv.create_revision(),
                    mod_revision: kv.mod_revision(),
                };
                (kv.key().to_vec(), e)
            })
            .collect();
        self.revision = resp.header().map_or(0, |h| h.revision());
        self.update_stats(|s| s.resyncs += 1);
        tracing::info!(
            revision = self.revision,
            entries = self.raw.len(),
            "registry read in full"
        );
        Ok(())
    }

    /// Validates the current state; counts and logs rejections not seen before.
    fn snapshot(&mut self) -> Snapshot {
        let (vips, rejected) = build(&self.layout, &self.raw);
        let mut now = HashSet::with_capacity(rejected.len());
        for r in &rejected {
            let id = (r.key.clone(), r.mod_revision, r.kind);
            if !self.seen_rejections.contains(&id) {
                self.counts.add(r.kind);
                tracing::warn!(key = %r.key, revision = r.mod_revision, kind = %r.kind, reason = %r.reason, "registry entry rejected, not applied");
            }
            now.insert(id);
        }
        self.seen_rejections = now;
        let snap = Snapshot {
            revision: self.revision,
            vips,
            rejected,
            reject_counts: self.counts,
        };
        let counts = self.counts;
        let revision = self.revision;
        self.update_stats(|s| {
            s.snapshots += 1;
            s.revision = revision;
            s.reject_counts = counts;
        });
        snap
    }

    async fn run(mut self, tx: watch::Sender<Arc<Snapshot>>) {
        let mut backoff = Backoff(Backoff::MIN);
        let mut need_resync = false;
        let mut quiet = false;
        loop {
            if need_resync {
                match self.resync().await {
                    Ok(()) => {
                        need_resync = false;
                        tx.send_replace(Arc::new(self.snapshot()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "registry resync failed; keeping the last snapshot and retrying");
                        tokio::time::sleep(backoff.next()).await;
                        continue;
                    }
                }
            }
            let opts = WatchOptions::new()
                .with_prefix()
                .with_start_revision(self.revision + 1);
            let mut c = self.client.clone();
            let mut stream = match timed(
                "watch",
                self.timeout,
                c.watch(self.layout.routing_prefix(), Some(opts)),
            )
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    if !quiet {
                        tracing::warn!(error = %e, revision = self.revision, "registry unreachable; keeping the last snapshot and retrying with backoff");
                        quiet = true;
                    }
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            };
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    () = tx.closed() => return,
                };
                let resp = match msg {
                    Ok(Some(resp)) => resp,
                    Ok(None) => {
                        tracing::warn!(
                            revision = self.revision,
                            "registry watch stream ended; reconnecting"
                        );
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, revision = self.revision, "registry watch failed; keeping the last snapshot and reconnecting");
                        break;
                    }
                };
                if resp.canceled() {
                    if resp.compact_revision() > 0 {
                        tracing::warn!(
                            needed = self.revision + 1,
                            compacted = resp.compact_revision(),
                            "registry history compacted past this watcher; resyncing in full"
                        );
                        need_resync = true;
                        self.update_stats(|s| s.compactions += 1);
                    } else {
                        tracing::warn!(
                            reason = resp.cancel_reason(),
                            "registry watch canceled by etcd; reconnecting"
                        );
                    }
                    break;
                }
                if resp.created() {
                    backoff.reset();
                    quiet = false;
                    self.update_stats(|s| s.connected = true);
                    tracing::debug!(from = self.revision + 1, "registry watch established");
                }
                if resp.events().is_empty() {
                    continue;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    match ev.event_type() {
                        EventType::Put => {
                            let e = RawEntry {
                                value: kv.value().to_vec(),
                                create_revision: kv.create_revision(),
                                mod_revision: kv.mod_revision(),
                            };
                            self.raw.insert(kv.key().to_vec(), e);
                        }
                        EventType::Delete => {
                            self.raw.remove(kv.key());
                        }
                    }
                    self.revision = self.revision.max(kv.mod_revision());
                }
                tx.send_replace(Arc::new(self.snapshot()));
            }
            self.update_stats(|s| {
                s.connected = false;
                s.reconnects += 1;
            });
            tokio::time::sleep(backoff.next()).await;
        }
    }
}
