//! The client side: connect, declare VIPs, register backends under a lease,
//! allocate server_ids.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, TxnOp};
use flowpin_tcp_opt::ServerId;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::{valid_host, KeyLayout};
use crate::lease::{timed, KeptLease};
use crate::model::{Vip, VipSpec};
use crate::security::{EtcdCredentials, EtcdTls};
use crate::validate::check_vip;
use crate::watch::SnapshotWatch;

mod registration;
pub use registration::Registration;

/// Shortest backend lease TTL accepted (etcd itself rounds a lease up to
/// about 1.5 election timeouts, 2 s with default settings).
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest backend lease TTL accepted.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Longest server_id quarantine accepted (30 days).
pub const MAX_QUARANTINE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default server_id quarantine: long-lived flows (hours of video) may carry
/// a dead host's id this long.
pub const DEFAULT_QUARANTINE: Duration = Duration::from_secs(24 * 3600);

/// Where the registry lives and how long to wait for it.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// etcd client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Cluster prefix of every key (see the crate docs for the layout).
    pub prefix: String,
    /// Deadline of each etcd request.
    pub request_timeout: Duration,
    /// Deadline of each connection attempt.
    pub connect_timeout: Duration,
    /// TLS towards etcd (`https://` endpoints); `None`: plain `http://`.
    pub tls: Option<EtcdTls>,
    /// An etcd user and password (etcd with `auth enable`).
    pub credentials: Option<EtcdCredentials>,
}

impl RegistryConfig {
    /// A configuration with default timeouts (5 s per request, 2 s per
    /// connection attempt).
    pub fn new<S: Into<String>>(
        endpoints: impl IntoIterator<Item = S>,
        prefix: &str,
    ) -> RegistryConfig {
        RegistryConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: prefix.to_string(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            tls: None,
            credentials: None,
        }
    }

    /// With TLS towards etcd (the endpoints must be `https://` URLs).
    pub fn with_tls(mut self, tls: EtcdTls) -> RegistryConfig {
        self.tls = Some(tls);
        self
    }

    /// With an etcd user and password.
    pub fn with_credentials(mut self, credentials: EtcdCredentials) -> RegistryConfig {
        self.credentials = Some(credentials);
        self
    }
}

/// A handle on the registry of one cluster. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    client: Client,
    layout: KeyLayout,
    timeout: Duration,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("prefix", &self.layout.prefix())
            .finish_non_exhaustive()
    }
}

fn check_duration(what: &'static str, value: Duration, min: Duration, max: Duration) -> Result<()> {
    if value < min || value > max {
        return Err(Error::BadDuration {
            what,
            value,
            min,
            max,
        });
    }
    Ok(())
}

pub(super) fn invalid((kind, reason): (crate::model::RejectKind, String)) -> Error {
    Error::Invalid { kind, reason }
}

impl Registry {
    /// Connects (lazily: an unreachable etcd shows up at the first request,
    /// not here).
    pub async fn connect(config: RegistryConfig) -> Result<Registry> {
        if config.endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let layout = KeyLayout::new(&config.prefix)?;
        for e in &config.endpoints {
            let https = e.starts_with("https://");
            if https && config.tls.is_none() {
                return Err(Error::BadEndpoint {
                    endpoint: e.clone(),
                    why:
                        "https needs TLS settings (at least the CA that signed etcd's certificate)",
                });
            }
            if !https && config.tls.is_some() {
                return Err(Error::BadEndpoint {
                    endpoint: e.clone(),
                    why: "TLS is configured but the endpoint is not https://: write it as https://host:port",
                });
            }
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let options =
            crate::security::apply(options, config.tls.as_ref(), config.credentials.as_ref());
        let client = timed(
            "connect",
            config.connect_timeout + config.request_timeout,
            Client::connect(&config.endpoints, Some(options)),
        )
        .await?;
        Ok(Registry {
            client,
            layout,
            timeout: config.request_timeout,
        })
    }

    /// The key layout of this cluster.
    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// The underlying etcd client (for operations this crate does not cover).
    pub fn etcd(&self) -> Client {
        self.client.clone()
    }

    /// Declares (or updates) a VIP and its flags, stamped with the time of
    /// the write (`updated_at_ms`). Returns the etcd revision of the write.
    pub async fn put_vip(&self, vip: &VipSpec) -> Result<i64> {
        check_vip(vip).map_err(invalid)?;
        let stamped = VipSpec {
            updated_at_ms: Some(unix_ms_now()),
            ..*vip
        };
        let value = serde_json::to_vec(&stamped).map_err(|source| Error::Corrupt {
            key: self.layout.vip(&vip.key()),
            source,
        })?;
        let mut c = self.client.clone();
        let resp = timed(
            "put",
            self.timeout,
            c.put(self.layout.vip(&vip.key()), value, None),
        )
        .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Removes a VIP (its backends' entries stay, rejected as `unknown_vip`,
    /// until they go). Returns whether it existed.
    pub async fn delete_vip(&self, vip: &Vip) -> Result<bool> {
        let mut c = self.client.clone();
        let resp = timed("delete", self.timeout, c.delete(self.layout.vip(vip), None)).await?;
        Ok(resp.deleted() > 0)
    }

    /// Stores the health check of a VIP ([`crate::health`]) after checking
    /// it against the VIP: an invalid check is refused
    /// ([`Error::Invalid`] with [`RejectKind::BadHealthCheck`](crate::RejectKind::BadHealthCheck)
    /// and the reason), never written. Returns the revision.
    pub async fn put_health_check(
        &self,
        vip: &Vip,
        check: &crate::health::HealthCheck,
    ) -> Result<i64> {
        crate::health::check_for(vip, check).map_err(invalid)?;
        let key = self.layout.health_check(vip);
        let value = serde_json::to_vec(check).map_err(|source| Error::Corrupt {
            key: key.clone(),
            source,
        })?;
        let mut c = self.client.clone();
        let resp = timed("put", self.timeout, c.put(key, value, None)).await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Removes a VIP's health check (its backends are no longer drained by
    /// verdicts). Returns whether it existed.
    pub async fn delete_health_check(&self, vip: &Vip) -> Result<bool> {
        let mut c = self.client.clone();
        let key = self.layout.health_check(vip);
        let resp = timed("delete", self.timeout, c.delete(key, None)).await?;
        Ok(resp.deleted() > 0)
    }

    /// An LB's verdict writer ([`crate::HealthReporter`]): a lease of `ttl`
    /// kept alive every `ttl / 3`, under which LB `lb` (its identity: 1..=253
    /// printable ASCII bytes without `/`) publishes its verdicts.
    pub async fn health_reporter(&self, lb: &str, ttl: Duration) -> Result<crate::HealthReporter> {
        crate::health::check_lb(lb)?;
        check_duration("LB verdict lease TTL", ttl, MIN_TTL, MAX_TTL)?;
        let interval = (ttl / 3).max(Duration::from_millis(200));
        let lease = KeptLease::grant(
            &self.client,
            ttl,
            interval,
            self.timeout,
            format!("health verdicts of {lb}"),
        )
        .await?;
        Ok(crate::health_reporter::HealthReporter::new(
            lease,
            self.layout.clone(),
            lb.to_string(),
        ))
    }

    /// Starts a registration: a lease of `ttl`, kept alive in the background
    /// (every `ttl / 3`), under which backends are then added. A host that
    /// dies stops the keep-alive, and its backends vanish from every LB when
    /// the lease expires (within `ttl`).
    pub async fn register(&self, ttl: Duration) -> Result<Registration> {
        check_duration("backend lease TTL", ttl, MIN_TTL, MAX_TTL)?;
        let interval = (ttl / 3).max(Duration::from_millis(200));
        let lease = KeptLease::grant(
            &self.client,
            ttl,
            interval,
            self.timeout,
            "backend registration".into(),
        )
        .await?;
        Ok(Registration::new(lease, self.layout.clone()))
    }

    /// Claims a cluster-unique, random server_id for `host` (its stable
    /// identity, e.g. its host name), with the default options. See
    /// [`Registry::allocate_server_id_with`].
    pub async fn allocate_server_id(&self, host: &str) -> Result<ServerIdClaim> {
        self.allocate_server_id_with(host, &AllocateOptions::default())
            .await
    }

    /// Claims a cluster-unique server_id for `host`.
    ///
    /// The same host gets the same id again (across restarts) unless another
    /// host took it after it was released; a new id is random in
    /// `options.ids`. The claim lives under a lease of `options.quarantine`
    /// (plus one keep-alive interval) that the returned handle keeps alive:
    /// when the host dies or drops the handle, the id stays reserved for the
    /// quarantine, then becomes free. Every claim is an etcd transaction that
    /// succeeds only if the claim key does not exist (create-if-absent).
    pub async fn allocate_server_id_with(
        &self,
        host: &str,
        options: &AllocateOptions,
    ) -> Result<ServerIdClaim> {
        if !valid_host(host) {
            return Err(Error::BadHost {
                host: host.to_string(),
            });
        }
        check_duration(
            "server_id quarantine",
            options.quarantine,
            MIN_TTL,
            MAX_QUARANTINE,
        )?;
        let interval =
            (options.quarantine / 3).clamp(Duration::from_millis(500), Duration::from_secs(10));
        let lease = KeptLease::grant(
            &self.client,
            options.quarantine + interval,
            interval,
            self.timeout,
            format!("server_id claim of {host}"),
        )
        .await?;
        match self.claim_loop(host, options, &lease).await {
            Ok(id) => Ok(ServerIdClaim {
                id,
                host: host.to_string(),
                quarantine: options.quarantine,
                lease,
            }),
            Err(e) => {
                if let Err(re) = lease.revoke().await {
                    tracing::warn!(error = %re, "revoking the unused claim lease failed; it expires by itself");
                }
                Err(e)
            }
        }
    }

    async fn claim_loop(
        &self,
        host: &str,
        options: &AllocateOptions,
        lease: &KeptLease,
    ) -> Result<ServerId> {
        let host_key = self.layout.host(host);
        let host_value = |id: ServerId| {
            serde_json::to_vec(&HostJson {
                server_id: id.into(),
            })
            .unwrap_or_default()
        };
        let claim_value = serde_json::to_vec(&ClaimJson {
            host: host.to_string(),
        })
        .unwrap_or_default();
        let mut c = self.client.clone();
        let mut tried_preferred = false;
        for _ in 0..options.max_attempts {
            let got = timed("get", self.timeout, c.get(host_key.clone(), None)).await?;
            let (host_rev, preferred) = match got.kvs().first() {
                Some(kv) => {
                    let parsed: HostJson =
                        serde_json::from_slice(kv.value()).map_err(|source| Error::Corrupt {
                            key: host_key.clone(),
                            source,
                        })?;
                    (kv.mod_revision(), ServerId::new(parsed.server_id))
                }
                None => (0, None),
            };
            let host_unchanged =
                Compare::mod_revision(host_key.clone(), CompareOp::Equal, host_rev);
            if let (Some(id), false) = (preferred, tried_preferred) {
                tried_preferred = true;
                let claim_key = self.layout.claim(id);
                let claim = timed("get", self.timeout, c.get(claim_key.clone(), None)).await?;
                let guard = match claim.kvs().first() {
                    None => Some((
                        Compare::create_revision(claim_key.clone(), CompareOp::Equal, 0),
                        None,
                    )),
                    Some(kv) => match serde_json::from_slice::<ClaimJson>(kv.value()) {
                        Ok(owner) if owner.host == host => Some((
                            Compare::mod_revision(
                                claim_key.clone(),
                                CompareOp::Equal,
                                kv.mod_revision(),
                            ),
                            Some(kv.lease()),
                        )),
                        _ => None,
                    },
                };
                if let Some((cmp, old_lease)) = guard {
                    let (ok, _) = lease
                        .put(
                            vec![(claim_key, claim_value.clone())],
                            vec![cmp, host_unchanged],
                            vec![],
                        )
                        .await?;
                    if ok {
                        if let Some(old) = old_lease.filter(|l| *l != 0 && *l != lease.id()) {
                            // The previous process's claim lease now holds no key.
                            let _ = timed("lease revoke", self.timeout, c.lease_revoke(old)).await;
                        }
                        tracing::info!(host, server_id = %id, "server_id re-claimed by its host");
                        return Ok(id);
                    }
                    continue;
                }
                tracing::info!(host, server_id = %id, "the host's previous server_id is claimed by another host; allocating a new one");
            }
            let raw = rand::rng().random_range(options.ids.clone());
            let Some(id) = ServerId::new(raw) else {
                continue;
            };
            let claim_key = self.layout.claim(id);
            let absent = Compare::create_revision(claim_key.clone(), CompareOp::Equal, 0);
            let bind = TxnOp::put(host_key.clone(), host_value(id), None);
            let (ok, _) = lease
                .put(
                    vec![(claim_key, claim_value.clone())],
                    vec![absent, host_unchanged],
                    vec![bind],
                )
                .await?;
            if ok {
                tracing::info!(host, server_id = %id, "server_id allocated");
                return Ok(id);
            }
        }
        Err(Error::NoFreeServerId {
            attempts: options.max_attempts,
            range: options.ids.clone(),
        })
    }

    /// Starts watching: reads the whole routing state once (so the returned
    /// watch has a first snapshot), then follows every change in the
    /// background, reconnecting and resyncing by itself.
    pub async fn watch(&self) -> Result<SnapshotWatch> {
        SnapshotWatch::start(self.client.clone(), self.layout.clone(), self.timeout).await
    }

    /// Reads and validates the whole routing state once, at one revision
    /// (what a watch's first snapshot holds; for tools such as
    /// `flowpin-node vips`).
    pub async fn snapshot(&self) -> Result<crate::model::Snapshot> {
        crate::watch::read_snapshot(self.client.clone(), self.layout.clone(), self.timeout).await
    }

    /// Sets the state of a backend registered by any host (an operator's
    /// drain): rewrites its value with `state` and a new `updated_at_ms`,
    /// keeping its lease (the registering host's), only if nobody wrote it
    /// in between (compare-and-swap, retried). `Ok(None)` if there is no
    /// such backend; else the revision of the write (or of the read when the
    /// state was already `state`).
    ///
    /// The host's agent may write its own value again later (a re-register
    /// writes the state it holds).
    pub async fn set_backend_state(
        &self,
        vip: &Vip,
        addr: std::net::IpAddr,
        state: crate::model::BackendState,
    ) -> Result<Option<i64>> {
        use crate::model::{BackendJson, BackendSpec};
        let key = self.layout.backend(vip, addr);
        let mut c = self.client.clone();
        for _ in 0..8 {
            let got = timed("get", self.timeout, c.get(key.clone(), None)).await?;
            let Some(kv) = got.kvs().first() else {
                return Ok(None);
            };
            let old: BackendJson =
                serde_json::from_slice(kv.value()).map_err(|source| Error::Corrupt {
                    key: key.clone(),
                    source,
                })?;
            let mut spec = BackendSpec::from(old);
            if spec.state == state {
                return Ok(Some(got.header().map_or(0, |h| h.revision())));
            }
            spec.state = state;
            spec.updated_at_ms = Some(unix_ms_now());
            let value =
                serde_json::to_vec(&BackendJson::from(&spec)).map_err(|source| Error::Corrupt {
                    key: key.clone(),
                    source,
                })?;
            let txn = etcd_client::Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::put(
                    key.clone(),
                    value,
                    Some(etcd_client::PutOptions::new().with_ignore_lease()),
                )]);
            let resp = timed("txn", self.timeout, c.txn(txn)).await?;
            if resp.succeeded() {
                return Ok(Some(resp.header().map_or(0, |h| h.revision())));
            }
        }
        Err(Error::Timeout {
            op: "backend state compare-and-swap (the key kept changing)",
            timeout: self.timeout,
        })
    }

    /// The hosts currently holding (or quarantining) each server_id.
    pub async fn claims(&self) -> Result<BTreeMap<ServerId, String>> {
        let mut c = self.client.clone();
        let prefix = format!("{}ids/claims/", self.layout.prefix());
        let resp = timed(
            "get",
            self.timeout,
            c.get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let mut out = BTreeMap::new();
        for kv in resp.kvs() {
            if let (Some(crate::keys::KeyKind::Claim(id)), Ok(owner)) = (
                self.layout.parse(kv.key()),
                serde_json::from_slice::<ClaimJson>(kv.value()),
            ) {
                out.insert(id, owner.host);
            }
        }
        Ok(out)
    }

    /// Compacts etcd's history up to `revision` (operators run this, or
    /// etcd's auto-compaction; watchers behind it resync).
    pub async fn compact(&self, revision: i64) -> Result<()> {
        let mut c = self.client.clone();
        timed("compact", self.timeout, c.compact(revision, None))
            .await
            .map(|_| ())
    }
}

/// How [`Registry::allocate_server_id_with`] picks and keeps an id.
#[derive(Debug, Clone)]
pub struct AllocateOptions {
    /// How long a dead host's id stays reserved (flows may still carry it).
    pub quarantine: Duration,
    /// Where new ids are drawn from (0 is never used: it means "none").
    pub ids: RangeInclusive<u32>,
    /// Claims tried before giving up.
    pub max_attempts: u32,
}

impl Default for AllocateOptions {
    fn default() -> AllocateOptions {
        AllocateOptions {
            quarantine: DEFAULT_QUARANTINE,
            ids: 1..=u32::MAX,
            max_attempts: 64,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimJson {
    host: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostJson {
    server_id: u32,
}

/// A claimed server_id. Keeps its claim alive while it lives; dropping it
/// (or the process dying) starts the quarantine: the id is free for another
/// host only after it.
pub struct ServerIdClaim {
    id: ServerId,
    host: String,
    quarantine: Duration,
    lease: KeptLease,
}

impl std::fmt::Debug for ServerIdClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdClaim")
            .field("id", &self.id)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl ServerIdClaim {
    /// The id.
    pub fn server_id(&self) -> ServerId {
        self.id
    }

    /// The host that holds it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// How long the id stays reserved after the claim stops being kept alive.
    pub fn quarantine(&self) -> Duration {
        self.quarantine
    }
}

impl Drop for ServerIdClaim {
    fn drop(&mut self) {
        // Never revoke: the quarantine is the point.
        self.lease.stop();
    }
}

/// Unix time now, in milliseconds (0 if the clock is before 1970).
pub(super) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
