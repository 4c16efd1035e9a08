//! Where snapshots come from: an etcd watch, or a registry file
//! ([`crate::file_registry`]); both deliver the same [`Snapshot`].

use std::sync::Arc;
use std::time::Duration;

use flowpin_registry::{Registry, Snapshot, SnapshotWatch, WatchStats};
use tracing::{error, info, warn};

use crate::config::LbConfig;
use crate::file_registry::{FileSource, POLL};

/// The registry the node follows.
pub(super) enum Feed {
    /// etcd (the client is kept alive with its watch).
    Etcd {
        _registry: Box<Registry>,
        watch: SnapshotWatch,
    },
    /// A file, polled at `next_poll` (kept here so that `next`, dropped by
    /// `select!` whenever another event wins, resumes the same schedule).
    File(FileSource, tokio::time::Instant),
}

impl Feed {
    /// Connects to what `cfg.registry` names, retrying while it cannot be
    /// used (etcd down: 100 ms doubling to 5 s; a file that is missing or
    /// broken: every second); the data path keeps forwarding meanwhile.
    pub(super) async fn connect(cfg: &LbConfig) -> Feed {
        if let Some(path) = &cfg.registry.file {
            loop {
                match FileSource::open(path) {
                    Ok(f) => {
                        info!(file = %path.display(), vips = f.current().vips.len(), "registry file read");
                        return Feed::File(f, tokio::time::Instant::now() + POLL);
                    }
                    Err(e) => {
                        error!(error = %e, "registry file refused; forwarding with the pinned state, reading it again every second")
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        }
        let (registry, watch) = connect_watch(cfg).await;
        Feed::Etcd {
            _registry: Box::new(registry),
            watch,
        }
    }

    /// The latest snapshot.
    pub(super) fn current(&self) -> Arc<Snapshot> {
        match self {
            Feed::Etcd { watch, .. } => watch.current(),
            Feed::File(f, _) => Arc::new(f.current()),
        }
    }

    /// The watch's counters (a file is always "connected").
    pub(super) fn stats(&self) -> WatchStats {
        match self {
            Feed::Etcd { watch, .. } => watch.stats(),
            Feed::File(f, _) => {
                let mut s = WatchStats::default();
                s.connected = true;
                s.revision = f.current().revision;
                s
            }
        }
    }

    /// The next snapshot (`None`: the etcd watch ended; reconnect).
    pub(super) async fn next(&mut self) -> Option<Arc<Snapshot>> {
        match self {
            Feed::Etcd { watch, .. } => watch.next().await,
            Feed::File(f, next_poll) => loop {
                tokio::time::sleep_until(*next_poll).await;
                *next_poll = tokio::time::Instant::now() + POLL;
                match f.reload() {
                    None => {}
                    Some(Ok(s)) => {
                        info!(file = %f.path().display(), vips = s.vips.len(), "registry file changed");
                        return Some(Arc::new(s));
                    }
                    Some(Err(e)) => {
                        error!(error = %e, "registry file refused, keeping the last good one; fix the file (it is read again when it changes)")
                    }
                }
            },
        }
    }
}

/// Connects to the registry and starts a watch, retrying with backoff
/// (100 ms doubling to 5 s) while etcd is unreachable; the data path keeps
/// forwarding with what its maps hold meanwhile.
async fn connect_watch(cfg: &LbConfig) -> (Registry, SnapshotWatch) {
    let mut delay = Duration::from_millis(100);
    loop {
        let rc = cfg.registry.registry_config().map_err(|e| e.to_string());
        match async { Registry::connect(rc?).await.map_err(|e| e.to_string()) }.await {
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
