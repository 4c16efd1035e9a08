//! A host's backends under one lease: add, change state, remove,
//! deregister (split out of `registry.rs`; [`super::Registry::register`]
//! makes one).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use super::{invalid, unix_ms_now};
use crate::error::{Error, Result};
use crate::keys::KeyLayout;
use crate::lease::KeptLease;
use crate::model::{BackendJson, BackendSpec, BackendState, Vip};
use crate::validate::check_backend;

/// A host's backends under one lease. Dropping it revokes the lease in the
/// background (the backends leave every LB at once); [`Registration::deregister`]
/// does it and waits.
pub struct Registration {
    lease: KeptLease,
    layout: KeyLayout,
    backends: Mutex<BTreeMap<(Vip, IpAddr), BackendSpec>>,
    revoked: bool,
}

impl Registration {
    /// A registration of no backend yet under `lease`.
    pub(super) fn new(lease: KeptLease, layout: KeyLayout) -> Registration {
        Registration {
            lease,
            layout,
            backends: Mutex::new(BTreeMap::new()),
            revoked: false,
        }
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("lease", &self.lease.id())
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// The etcd lease id (changes if the lease had to be re-granted).
    pub fn lease_id(&self) -> i64 {
        self.lease.id()
    }

    /// Adds (or updates) backends, all in one etcd transaction: an LB sees
    /// all of them in the same snapshot. Each value is stamped with the time
    /// of the write (`updated_at_ms`). Returns the revision.
    pub async fn add_backends(&self, backends: &[(Vip, BackendSpec)]) -> Result<i64> {
        let now = Some(unix_ms_now());
        let backends: Vec<(Vip, BackendSpec)> = backends
            .iter()
            .map(|(v, b)| {
                (
                    *v,
                    BackendSpec {
                        updated_at_ms: now,
                        ..*b
                    },
                )
            })
            .collect();
        let mut kvs = Vec::with_capacity(backends.len());
        for (vip, b) in &backends {
            check_backend(b).map_err(invalid)?;
            let key = self.layout.backend(vip, b.addr);
            let value =
                serde_json::to_vec(&BackendJson::from(b)).map_err(|source| Error::Corrupt {
                    key: key.clone(),
                    source,
                })?;
            kvs.push((key, value));
        }
        let (_, rev) = self.lease.put(kvs, vec![], vec![]).await?;
        let mut map = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        for (vip, b) in &backends {
            map.insert((*vip, b.addr), *b);
        }
        Ok(rev)
    }

    /// Adds (or updates) one backend of a VIP.
    pub async fn add_backend(&self, vip: &Vip, backend: &BackendSpec) -> Result<i64> {
        self.add_backends(&[(*vip, *backend)]).await
    }

    /// Sets the state of one registered backend (e.g. `Draining`: LBs give it
    /// no new flows, its flows keep reaching it by server_id).
    pub async fn set_state(&self, vip: &Vip, backend: IpAddr, state: BackendState) -> Result<i64> {
        let spec = self
            .backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(*vip, backend))
            .copied();
        let Some(mut spec) = spec else {
            return Err(Error::NotRegistered {
                vip: vip.to_string(),
                backend: backend.to_string(),
            });
        };
        spec.state = state;
        self.add_backend(vip, &spec).await
    }

    /// Sets the state of every backend of this registration in one
    /// transaction (drain the whole host with `Draining`).
    pub async fn set_state_all(&self, state: BackendState) -> Result<i64> {
        let all: Vec<(Vip, BackendSpec)> = self
            .backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((vip, _), b)| (*vip, BackendSpec { state, ..*b }))
            .collect();
        self.add_backends(&all).await
    }

    /// Removes one backend. Returns whether it was registered here.
    pub async fn remove_backend(&self, vip: &Vip, backend: IpAddr) -> Result<bool> {
        let known = self
            .backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&(*vip, backend));
        if !known {
            return Ok(false);
        }
        self.lease
            .delete(vec![self.layout.backend(vip, backend)])
            .await?;
        self.backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(*vip, backend));
        Ok(true)
    }

    /// Reports the service behind a registered backend healthy or not, as
    /// its own check sees it (a local command or HTTP endpoint the agent
    /// runs): stored under this registration's lease at
    /// `routing/selfhealth/…` ([`crate::health`]). An unhealthy report
    /// drains the backend on every LB (no new flows, its flows keep going)
    /// whatever the LBs' probes say; a healthy one lifts that. It goes with
    /// the lease.
    pub async fn report_health(
        &self,
        vip: &Vip,
        backend: IpAddr,
        healthy: bool,
        reason: &str,
    ) -> Result<i64> {
        let known = self
            .backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&(*vip, backend));
        if !known {
            return Err(Error::NotRegistered {
                vip: vip.to_string(),
                backend: backend.to_string(),
            });
        }
        let report = crate::health::SelfReport {
            healthy,
            reason: reason.to_string(),
            updated_at_ms: Some(unix_ms_now()),
        };
        let key = self.layout.self_health(vip, backend);
        let value = serde_json::to_vec(&report).map_err(|source| Error::Corrupt {
            key: key.clone(),
            source,
        })?;
        Ok(self.lease.put(vec![(key, value)], vec![], vec![]).await?.1)
    }

    /// The backends registered here.
    pub fn backends(&self) -> Vec<(Vip, BackendSpec)> {
        self.backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((v, _), b)| (*v, *b))
            .collect()
    }

    /// Stops the keep-alive without revoking: the backends stay until the
    /// lease expires (within its TTL), exactly as if the host had died.
    /// For failure drills and tests; a host that leaves on purpose calls
    /// [`Registration::deregister`].
    pub fn abandon(mut self) {
        self.revoked = true;
        self.lease.stop();
    }

    /// Revokes the lease and waits: every backend of this registration is
    /// gone from etcd when this returns.
    pub async fn deregister(mut self) -> Result<()> {
        self.revoked = true;
        self.lease.revoke().await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if !self.revoked {
            self.lease.revoke_in_background();
        }
    }
}
