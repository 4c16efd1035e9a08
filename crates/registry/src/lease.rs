//! A lease kept alive in the background, with the keys written under it.
//!
//! If the lease is lost (it expired while etcd was unreachable longer than
//! its TTL), a new one is granted and every key is written again under it,
//! each only if nobody else created the key in between.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::error::{etcd, Error, Result};

/// Runs an etcd call with a deadline.
pub(crate) async fn timed<T>(
    op: &'static str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(etcd(op)),
        Err(_) => Err(Error::Timeout { op, timeout }),
    }
}

/// Whole seconds for an etcd TTL, rounded up.
pub(crate) fn ttl_secs(d: Duration) -> i64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(s.max(1)).unwrap_or(i64::MAX)
}

struct Shared {
    client: Client,
    ttl: i64,
    timeout: Duration,
    id: AtomicI64,
    /// Keys written under the lease (key → value); the lock also serializes
    /// writes with re-grants.
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
    what: String,
}

/// A lease with a keep-alive task. Dropping it stops the keep-alive (the
/// lease then expires after its TTL); [`KeptLease::revoke`] ends it now.
pub(crate) struct KeptLease {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl KeptLease {
    /// Grants a lease of `ttl` and keeps it alive every `interval`.
    pub(crate) async fn grant(
        client: &Client,
        ttl: Duration,
        interval: Duration,
        timeout: Duration,
        what: String,
    ) -> Result<KeptLease> {
        let mut c = client.clone();
        let ttl = ttl_secs(ttl);
        let id = timed("lease grant", timeout, c.lease_grant(ttl, None))
            .await?
            .id();
        let shared = Arc::new(Shared {
            client: client.clone(),
            ttl,
            timeout,
            id: AtomicI64::new(id),
            entries: Mutex::new(BTreeMap::new()),
            what,
        });
        let task = tokio::spawn(keep_alive(Arc::clone(&shared), interval));
        Ok(KeptLease { shared, task })
    }

    /// The current lease id (changes if the lease had to be re-granted).
    pub(crate) fn id(&self) -> i64 {
        self.shared.id.load(Ordering::Acquire)
    }

    /// Puts every key in one transaction under the lease; with `guard`, only
    /// if the compares hold. Returns whether it was applied and the revision.
    pub(crate) async fn put(
        &self,
        kvs: Vec<(String, Vec<u8>)>,
        guard: Vec<Compare>,
        extra: Vec<TxnOp>,
    ) -> Result<(bool, i64)> {
        let mut entries = self.shared.entries.lock().await;
        let lease = self.id();
        let mut ops: Vec<TxnOp> = kvs
            .iter()
            .map(|(k, v)| {
                TxnOp::put(
                    k.clone(),
                    v.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )
            })
            .collect();
        ops.extend(extra);
        let mut c = self.shared.client.clone();
        let resp = timed(
            "txn",
            self.shared.timeout,
            c.txn(Txn::new().when(guard).and_then(ops)),
        )
        .await?;
        if resp.succeeded() {
            entries.extend(kvs);
        }
        Ok((resp.succeeded(), resp.header().map_or(0, |h| h.revision())))
    }

    /// Deletes keys written under the lease, in one transaction.
    pub(crate) async fn delete(&self, keys: Vec<String>) -> Result<()> {
        let mut entries = self.shared.entries.lock().await;
        let ops: Vec<TxnOp> = keys
            .iter()
            .map(|k| TxnOp::delete(k.clone(), None))
            .collect();
        let mut c = self.shared.client.clone();
        timed(
            "txn delete",
            self.shared.timeout,
            c.txn(Txn::new().and_then(ops)),
        )
        .await?;
        for k in keys {
            entries.remove(&k);
        }
        Ok(())
    }

    /// Stops the keep-alive and revokes the lease: its keys go now.
    pub(crate) async fn revoke(&self) -> Result<()> {
        self.task.abort();
        let mut c = self.shared.client.clone();
        timed(
            "lease revoke",
            self.shared.timeout,
            c.lease_revoke(self.id()),
        )
        .await?;
        Ok(())
    }

    /// Stops the keep-alive and revokes in the background (best effort: if
    /// the runtime is gone, the lease expires after its TTL).
    pub(crate) fn revoke_in_background(&self) {
        self.task.abort();
        let id = self.id();
        let mut c = self.shared.client.clone();
        let timeout = self.shared.timeout;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = timed("lease revoke", timeout, c.lease_revoke(id)).await {
                    tracing::warn!(lease = id, error = %e, "revoking the lease failed; it expires after its TTL");
                }
            });
        }
    }

    /// Stops the keep-alive only (the lease runs out after its TTL).
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

async fn keep_alive(shared: Arc<Shared>, interval: Duration) {
    let mut stream = None;
    let mut failing = false;
    loop {
        tokio::time::sleep(interval).await;
        let id = shared.id.load(Ordering::Acquire);
        if stream.as_ref().is_some_and(|(_, _, sid)| *sid != id) {
            stream = None;
        }
        if stream.is_none() {
            let mut c = shared.client.clone();
            match timed("lease keep-alive", shared.timeout, c.lease_keep_alive(id)).await {
                Ok((k, s)) => stream = Some((k, s, id)),
                Err(e) => {
                    if !failing {
                        tracing::warn!(what = %shared.what, lease = id, error = %e, "lease keep-alive failed; retrying");
                    }
                    failing = true;
                    continue;
                }
            }
        }
        let Some((keeper, responses, _)) = stream.as_mut() else {
            continue;
        };
        let answer = tokio::time::timeout(shared.timeout, async {
            keeper.keep_alive().await?;
            responses.message().await
        })
        .await;
        match answer {
            Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                if failing {
                    tracing::info!(what = %shared.what, lease = id, "lease keep-alive recovered");
                }
                failing = false;
            }
            Ok(Ok(Some(_))) => {
                stream = None;
                tracing::warn!(what = %shared.what, lease = id, "lease expired (etcd unreachable longer than its TTL); granting a new one and writing the keys again");
                match regrant(&shared).await {
                    Ok(new) => {
                        tracing::info!(what = %shared.what, lease = new, "keys written again under a new lease");
                        failing = false;
                    }
                    Err(e) => {
                        tracing::warn!(what = %shared.what, error = %e, "re-granting the lease failed; retrying");
                        failing = true;
                    }
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                stream = None;
                if !failing {
                    tracing::warn!(what = %shared.what, lease = id, "lease keep-alive got no answer; retrying");
                }
                failing = true;
            }
        }
    }
}

async fn regrant(shared: &Shared) -> Result<i64> {
    let entries = shared.entries.lock().await;
    let mut c = shared.client.clone();
    let id = timed(
        "lease grant",
        shared.timeout,
        c.lease_grant(shared.ttl, None),
    )
    .await?
    .id();
    for (k, v) in entries.iter() {
        let txn = Txn::new()
            .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                k.clone(),
                v.clone(),
                Some(PutOptions::new().with_lease(id)),
            )]);
        let resp = timed("txn", shared.timeout, c.txn(txn)).await?;
        if !resp.succeeded() {
            tracing::error!(what = %shared.what, key = %k, "key was created by another writer while our lease was lost; not overwriting it");
        }
    }
    shared.id.store(id, Ordering::Release);
    Ok(id)
}
