//! The VIPs' QUIC-LB configurations (issue 22): read from the registry
//! (`quic_lb/configs/…`, beside the routing snapshot) whenever its watch on
//! that prefix wakes ([`QuicLbConfigWatch`]; read again every
//! [`RESYNC`] as well, and every [`POLL`] while no watch runs), declared in the
//! desired state ([`apply_to_desired`]: layout [`VipCid::QuicLb`]), and
//! acknowledged under this LB's lease (`quic_lb/acks/{lb}`) only once a
//! reconcile wrote them into the maps — the draft's order: servers issue
//! CIDs with a configuration only after every live LB acknowledged it.
//!
//! Keys never leave this module in a log line: only VIP, codepoint,
//! lengths and whether a configuration is encrypted are logged.

use std::collections::BTreeSet;
use std::time::Duration;

use flowpin_lb_core::Desired;
use flowpin_registry::quic_lb::{apply_to_desired, QuicLbConfigRef, StoredQuicLbConfig};
use flowpin_registry::{QuicLbConfigWatch, QuicLbReporter, Registry};
use tracing::{info, warn};

use crate::config::LbConfig;

/// The tick of the acknowledgement retries, and of the reads while no watch
/// runs (registry unreachable at start).
pub(super) const POLL: Duration = Duration::from_secs(1);

/// With the watch running, the configurations are still read this often (a
/// safety net: the watch wakes on every change).
pub(super) const RESYNC: Duration = Duration::from_secs(30);

/// The acknowledgement lease's TTL.
const ACK_TTL: Duration = Duration::from_secs(10);

/// The QUIC-LB side of `flowpin-node lb`.
#[derive(Default)]
pub(super) struct QuicLb {
    registry: Option<Registry>,
    acker: Option<QuicLbReporter>,
    /// The configurations last read (valid ones, every VIP).
    configs: Vec<StoredQuicLbConfig>,
    /// Those the last desired state declared (the others were skipped).
    declared: BTreeSet<QuicLbConfigRef>,
    /// Declared and written by a reconcile that succeeded: to acknowledge.
    in_maps: BTreeSet<QuicLbConfigRef>,
    /// What the acknowledgement key holds.
    acked: Option<BTreeSet<QuicLbConfigRef>>,
    /// Skipped configurations already logged (logged once each).
    skipped_logged: BTreeSet<QuicLbConfigRef>,
    /// Wakes on changes under `quic_lb/configs/`.
    watch: Option<QuicLbConfigWatch>,
    /// When the configurations were last read.
    last_read: Option<std::time::Instant>,
}

/// This LB's name in `quic_lb/acks/{lb}`: `{hostname}-{interface}`.
fn lb_name(cfg: &LbConfig) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}-{}", cfg.lb.interface).replace('/', "_")
}

impl QuicLb {
    /// Waits for the watch on `quic_lb/configs/` (forever while there is
    /// none: the [`POLL`] tick reads then).
    pub(super) async fn changed(&mut self) {
        match &mut self.watch {
            Some(w) => w.changed().await,
            None => std::future::pending().await,
        }
    }

    /// The [`POLL`] tick: reads the configurations if no watch runs or the
    /// last read is older than [`RESYNC`]. Returns whether they changed.
    pub(super) async fn tick(&mut self, cfg: &LbConfig) -> bool {
        let due = self.watch.is_none() || self.last_read.is_none_or(|t| t.elapsed() >= RESYNC);
        due && self.refresh(cfg).await
    }

    /// Reads the configurations again (etcd registries only; a registry
    /// file has none). Returns whether they changed.
    pub(super) async fn refresh(&mut self, cfg: &LbConfig) -> bool {
        if cfg.registry.file.is_some() {
            return false;
        }
        if self.registry.is_none() {
            let rc = match cfg.registry.registry_config() {
                Ok(rc) => rc,
                Err(e) => {
                    warn!(error = %e, "QUIC-LB: registry config unusable");
                    return false;
                }
            };
            match Registry::connect(rc).await {
                Ok(r) => self.registry = Some(r),
                Err(e) => {
                    warn!(error = %e, "QUIC-LB: registry unreachable; configurations not read");
                    return false;
                }
            }
        }
        let Some(reg) = &self.registry else {
            return false;
        };
        if self.watch.is_none() {
            self.watch = Some(reg.watch_quic_lb_configs());
        }
        let view = match reg.quic_lb_view().await {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "QUIC-LB: configurations not read; keeping the last ones");
                return false;
            }
        };
        self.last_read = Some(std::time::Instant::now());
        for (key, why) in &view.rejected {
            warn!(key = %key, reason = %why, "QUIC-LB registry entry rejected");
        }
        let refs = |c: &[StoredQuicLbConfig]| c.iter().map(|c| c.at).collect::<BTreeSet<_>>();
        let changed = refs(&view.configs) != refs(&self.configs);
        if changed {
            for c in &view.configs {
                info!(
                    vip = %c.at.vip,
                    config_id = c.at.config_id,
                    revision = c.at.revision,
                    server_id_len = c.spec.server_id_len,
                    nonce_len = c.spec.nonce_len,
                    encrypted = c.spec.key.is_some(),
                    engine = %c.spec.engine,
                    state = ?c.spec.state,
                    "QUIC-LB configuration read"
                );
            }
            self.configs = view.configs;
        }
        changed
    }

    /// Declares the configurations in `desired` (encrypted ones with the
    /// AES engine each names: constant-time unless "table" was chosen).
    pub(super) fn apply_to(&mut self, desired: &mut Desired) {
        let skipped = apply_to_desired(desired, &self.configs);
        let skipped_refs: BTreeSet<_> = skipped.iter().map(|(c, _)| c.at).collect();
        for (c, why) in &skipped {
            if self.skipped_logged.insert(c.at) {
                warn!(vip = %c.at.vip, config_id = c.at.config_id, reason = %why, "QUIC-LB configuration not applied (not acknowledged)");
            }
        }
        self.declared = self
            .configs
            .iter()
            .map(|c| c.at)
            .filter(|r| !skipped_refs.contains(r))
            .collect();
    }

    /// The reconcile of the last [`apply_to`](Self::apply_to) succeeded:
    /// the maps hold what it declared.
    pub(super) fn written(&mut self) {
        self.in_maps.clone_from(&self.declared);
    }

    /// Acknowledges what the maps hold, if that changed (creates the
    /// lease-bound key on first use).
    pub(super) async fn ack(&mut self, cfg: &LbConfig) {
        let Some(reg) = &self.registry else {
            return;
        };
        if self.acked.as_ref() == Some(&self.in_maps) {
            return;
        }
        if self.acker.is_none() {
            let name = lb_name(cfg);
            match reg.quic_lb_acker(&name, ACK_TTL).await {
                Ok(a) => {
                    info!(lb = %name, "QUIC-LB acknowledgements under this LB's lease");
                    self.acked = Some(BTreeSet::new());
                    self.acker = Some(a);
                }
                Err(e) => {
                    warn!(error = %e, "QUIC-LB: acknowledgement lease not granted; retrying");
                    return;
                }
            }
        }
        let Some(acker) = &self.acker else {
            return;
        };
        match acker.set(self.in_maps.iter().copied()).await {
            Ok(rev) => {
                info!(
                    configs = self.in_maps.len(),
                    revision = rev,
                    "QUIC-LB configurations acknowledged"
                );
                self.acked = Some(self.in_maps.clone());
            }
            Err(e) => {
                warn!(error = %e, "QUIC-LB acknowledgement not written; retrying");
                // A lost lease is granted again at the next try.
                self.acker = None;
                self.acked = None;
            }
        }
    }
}
