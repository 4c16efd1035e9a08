//! QUIC-LB configurations, acknowledgements and server reports on etcd
//! (see [`crate::quic_lb`] for the keys and the rotation order).

use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};

use crate::error::{Error, Result};
use crate::lease::{timed, KeptLease};
use crate::model::{Proto, RejectKind, Vip};
use crate::quic_lb::{
    issuable, removable, QuicLbConfigRef, QuicLbConfigSpec, QuicLbConfigState, QuicLbStatus,
    QuicLbStatusEntry, StoredQuicLbConfig,
};
use crate::registry::unix_ms_now;
use crate::{Registry, MAX_TTL, MIN_TTL};

/// Deadline of each etcd request of this module.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Everything under `quic_lb/` at one revision.
#[derive(Debug, Clone, Default)]
pub struct QuicLbView {
    /// The revision read.
    pub revision: i64,
    /// Valid configurations.
    pub configs: Vec<StoredQuicLbConfig>,
    /// Acknowledgements of live load balancers.
    pub lb_acks: Vec<QuicLbStatusEntry>,
    /// Reports of live servers.
    pub server_reports: Vec<QuicLbStatusEntry>,
    /// Entries that were not understood: key and why (never a key's value).
    pub rejected: Vec<(String, String)>,
}

impl QuicLbView {
    /// [`issuable`] of this view.
    pub fn issuable(&self) -> Vec<StoredQuicLbConfig> {
        issuable(&self.configs, &self.lb_acks)
    }
}

fn quic_lb_prefix(reg: &Registry) -> String {
    format!("{}quic_lb/", reg.layout().prefix())
}

fn config_key(reg: &Registry, vip: &Vip, config_id: u8) -> String {
    format!(
        "{}configs/{}/{}/{}/{config_id}",
        quic_lb_prefix(reg),
        vip.proto.as_str(),
        vip.addr,
        vip.port
    )
}

fn bad(reason: String) -> Error {
    Error::Invalid {
        kind: RejectKind::MalformedValue,
        reason,
    }
}

/// Parses `configs/{proto}/{ip}/{port}/{id}`.
fn parse_config_key(rest: &str) -> Option<(Vip, u8)> {
    let parts: Vec<&str> = rest.split('/').collect();
    let ["configs", proto, ip, port_s, id_s] = parts.as_slice() else {
        return None;
    };
    let proto: Proto = proto.parse().ok()?;
    let addr: std::net::IpAddr = ip.parse().ok()?;
    let port: u16 = port_s.parse().ok()?;
    let id: u8 = id_s.parse().ok()?;
    (addr.to_string() == *ip && port.to_string() == *port_s && id.to_string() == *id_s)
        .then_some((Vip::new(addr, port, proto), id))
}

impl Registry {
    /// Stores a new QUIC-LB configuration of `vip` at codepoint `config_id`
    /// (state active). Refused if the codepoint is taken (the draft: a
    /// codepoint is reused only once the old configuration's CIDs are gone,
    /// i.e. after it was removed) or the configuration is invalid. Returns
    /// the revision, which names the configuration in acknowledgements.
    pub async fn put_quic_lb_config(
        &self,
        vip: &Vip,
        config_id: u8,
        spec: &QuicLbConfigSpec,
    ) -> Result<i64> {
        if vip.proto != Proto::Udp {
            return Err(bad(format!(
                "QUIC-LB configs are for UDP VIPs; {vip} is not"
            )));
        }
        spec.config(config_id)
            .map_err(|e| bad(format!("QUIC-LB config {config_id} of {vip}: {e}")))?;
        let key = config_key(self, vip, config_id);
        let value = serde_json::to_vec(spec).map_err(|source| Error::Corrupt {
            key: key.clone(),
            source,
        })?;
        let mut c = self.etcd();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let resp = timed("txn put quic_lb config", TIMEOUT, c.txn(txn)).await?;
        if !resp.succeeded() {
            return Err(bad(format!(
                "QUIC-LB codepoint {config_id} of {vip} is in use: retire the old configuration \
                 and let it be removed, or use another codepoint (0..=6)"
            )));
        }
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Marks the configuration at `config_id` of `vip` retiring (servers
    /// stop issuing it; LBs keep routing it until it is removed). Returns
    /// whether it existed.
    pub async fn retire_quic_lb_config(&self, vip: &Vip, config_id: u8) -> Result<bool> {
        let key = config_key(self, vip, config_id);
        let mut c = self.etcd();
        let resp = timed("get quic_lb config", TIMEOUT, c.get(key.clone(), None)).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(false);
        };
        let mut spec: QuicLbConfigSpec =
            serde_json::from_slice(kv.value()).map_err(|source| Error::Corrupt {
                key: key.clone(),
                source,
            })?;
        if spec.state == QuicLbConfigState::Retiring {
            return Ok(true);
        }
        spec.state = QuicLbConfigState::Retiring;
        spec.retiring_since_ms = Some(unix_ms_now());
        let value = serde_json::to_vec(&spec).map_err(|source| Error::Corrupt {
            key: key.clone(),
            source,
        })?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([TxnOp::put(key, value, None)]);
        let resp = timed("txn retire quic_lb config", TIMEOUT, c.txn(txn)).await?;
        Ok(resp.succeeded())
    }

    /// Reads every configuration, acknowledgement and report at one
    /// revision.
    pub async fn quic_lb_view(&self) -> Result<QuicLbView> {
        let prefix = quic_lb_prefix(self);
        let mut c = self.etcd();
        let resp = timed(
            "get quic_lb",
            TIMEOUT,
            c.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let mut view = QuicLbView {
            revision: resp.header().map_or(0, |h| h.revision()),
            ..QuicLbView::default()
        };
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            let status = |who: &str| -> std::result::Result<QuicLbStatusEntry, String> {
                let status: QuicLbStatus =
                    serde_json::from_slice(kv.value()).map_err(|e| e.to_string())?;
                Ok(QuicLbStatusEntry {
                    who: who.to_string(),
                    status,
                })
            };
            let parsed = if let Some(lb) = rest.strip_prefix("acks/") {
                status(lb).map(|s| view.lb_acks.push(s))
            } else if let Some(host) = rest.strip_prefix("issuing/") {
                status(host).map(|s| view.server_reports.push(s))
            } else if let Some((vip, id)) = parse_config_key(rest) {
                serde_json::from_slice::<QuicLbConfigSpec>(kv.value())
                    .map_err(|e| e.to_string())
                    .and_then(|spec| {
                        let config = spec.config(id)?;
                        view.configs.push(StoredQuicLbConfig {
                            at: QuicLbConfigRef {
                                vip,
                                config_id: id,
                                revision: kv.mod_revision(),
                            },
                            spec,
                            config,
                        });
                        Ok(())
                    })
            } else {
                Err("key off the quic_lb layout".to_string())
            };
            if let Err(why) = parsed {
                view.rejected.push((key, why));
            }
        }
        Ok(view)
    }

    /// Deletes the retiring configurations that no live server reports and
    /// that have been retiring for at least `grace`; returns them.
    pub async fn collect_retired_quic_lb(&self, grace: Duration) -> Result<Vec<QuicLbConfigRef>> {
        let view = self.quic_lb_view().await?;
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        let gone = removable(&view.configs, &view.server_reports, unix_ms_now(), grace_ms);
        let mut c = self.etcd();
        let mut deleted = Vec::new();
        for at in gone {
            let key = config_key(self, &at.vip, at.config_id);
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    at.revision,
                )])
                .and_then([TxnOp::delete(key, None)]);
            if timed("txn delete quic_lb config", TIMEOUT, c.txn(txn))
                .await?
                .succeeded()
            {
                deleted.push(at);
            }
        }
        Ok(deleted)
    }

    /// A load balancer's acknowledgement key `quic_lb/acks/{lb}`, under a
    /// lease of `ttl` kept alive in the background, written at once with
    /// no configuration: from now until the LB dies, [`issuable`] waits for
    /// its acknowledgements.
    pub async fn quic_lb_acker(&self, lb: &str, ttl: Duration) -> Result<QuicLbReporter> {
        self.quic_lb_reporter_at("acks", lb, ttl).await
    }

    /// A server's report key `quic_lb/issuing/{host}` (configurations it
    /// still issues or holds live CIDs of), under a lease of `ttl`.
    pub async fn quic_lb_server_reporter(
        &self,
        host: &str,
        ttl: Duration,
    ) -> Result<QuicLbReporter> {
        self.quic_lb_reporter_at("issuing", host, ttl).await
    }

    async fn quic_lb_reporter_at(
        &self,
        dir: &str,
        who: &str,
        ttl: Duration,
    ) -> Result<QuicLbReporter> {
        if !crate::keys::valid_host(who) {
            return Err(Error::BadHost {
                host: who.to_string(),
            });
        }
        if ttl < MIN_TTL || ttl > MAX_TTL {
            return Err(Error::BadDuration {
                what: "QUIC-LB status lease TTL",
                value: ttl,
                min: MIN_TTL,
                max: MAX_TTL,
            });
        }
        let lease = KeptLease::grant(
            &self.etcd(),
            ttl,
            ttl / 3,
            TIMEOUT,
            format!("quic_lb {dir} {who}"),
        )
        .await?;
        let reporter = QuicLbReporter {
            lease,
            key: format!("{}{dir}/{who}", quic_lb_prefix(self)),
        };
        // Present from the start: a live LB that has applied nothing yet
        // holds every new configuration back.
        reporter.set([]).await?;
        Ok(reporter)
    }
}

/// A status key kept under a lease (an LB's acknowledgements or a server's
/// report). Dropping it lets the key expire with the lease.
pub struct QuicLbReporter {
    lease: KeptLease,
    key: String,
}

impl std::fmt::Debug for QuicLbReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicLbReporter")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl QuicLbReporter {
    /// Replaces the reported configurations. Returns the revision.
    pub async fn set(&self, configs: impl IntoIterator<Item = QuicLbConfigRef>) -> Result<i64> {
        let status = QuicLbStatus {
            configs: configs.into_iter().collect(),
        };
        let value = serde_json::to_vec(&status).map_err(|source| Error::Corrupt {
            key: self.key.clone(),
            source,
        })?;
        let (_, revision) = self
            .lease
            .put(vec![(self.key.clone(), value)], Vec::new(), Vec::new())
            .await?;
        Ok(revision)
    }

    /// Ends the lease now: the key goes at once.
    pub async fn revoke(self) -> Result<()> {
        self.lease.revoke().await
    }
}
