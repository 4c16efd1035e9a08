//! An LB's verdicts under its own lease (see [`crate::health`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::health::Verdict;
use crate::keys::KeyLayout;
use crate::lease::KeptLease;
use crate::model::Vip;

/// One LB's health verdicts, written under its lease (made by
/// [`Registry::health_reporter`](crate::Registry::health_reporter)). When
/// the LB dies its lease expires and its verdicts leave every snapshot, so
/// only live LBs vote. Dropping it revokes the lease in the background.
pub struct HealthReporter {
    lease: KeptLease,
    layout: KeyLayout,
    lb: String,
    written: Mutex<BTreeMap<(Vip, IpAddr), Verdict>>,
    revoked: bool,
}

impl std::fmt::Debug for HealthReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthReporter")
            .field("lb", &self.lb)
            .field("lease", &self.lease.id())
            .finish_non_exhaustive()
    }
}

impl HealthReporter {
    pub(crate) fn new(lease: KeptLease, layout: KeyLayout, lb: String) -> HealthReporter {
        HealthReporter {
            lease,
            layout,
            lb,
            written: Mutex::new(BTreeMap::new()),
            revoked: false,
        }
    }

    /// The LB identity its verdicts carry.
    pub fn lb(&self) -> &str {
        &self.lb
    }

    /// The etcd lease id.
    pub fn lease_id(&self) -> i64 {
        self.lease.id()
    }

    /// Makes the stored verdicts exactly `verdicts`: changed ones written in
    /// one transaction, ones no longer given deleted. Returns the revision
    /// of the write, or `None` when nothing changed (no write at all: a
    /// verdict that stays the same costs nothing).
    pub async fn publish(
        &self,
        verdicts: &BTreeMap<(Vip, IpAddr), Verdict>,
    ) -> Result<Option<i64>> {
        let mut written = self.written.lock().await;
        let mut kvs = Vec::new();
        for ((vip, backend), v) in verdicts {
            if written.get(&(*vip, *backend)) == Some(v) {
                continue;
            }
            let key = self.layout.verdict(vip, *backend, &self.lb);
            let value = serde_json::to_vec(v).map_err(|source| Error::Corrupt {
                key: key.clone(),
                source,
            })?;
            kvs.push((key, value));
        }
        let gone: Vec<(Vip, IpAddr)> = written
            .keys()
            .filter(|k| !verdicts.contains_key(k))
            .copied()
            .collect();
        let mut rev = None;
        if !kvs.is_empty() {
            rev = Some(self.lease.put(kvs, vec![], vec![]).await?.1);
        }
        if !gone.is_empty() {
            let keys = gone
                .iter()
                .map(|(v, b)| self.layout.verdict(v, *b, &self.lb))
                .collect();
            self.lease.delete(keys).await?;
        }
        *written = verdicts.clone();
        Ok(rev)
    }

    /// Revokes the lease now: every verdict of this LB leaves at once.
    pub async fn revoke(mut self) -> Result<()> {
        self.revoked = true;
        self.lease.revoke().await
    }

    /// Stops the keep-alive without revoking: the verdicts stay until the
    /// lease expires, exactly as if the LB had died (drills and tests).
    pub fn abandon(mut self) {
        self.revoked = true;
        self.lease.stop();
    }
}

impl Drop for HealthReporter {
    fn drop(&mut self) {
        if !self.revoked {
            self.lease.revoke_in_background();
        }
    }
}
