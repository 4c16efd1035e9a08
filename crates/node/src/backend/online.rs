//! The agent's registry side: connect (retrying with backoff while etcd is
//! down), refuse a `host` / `server_id` conflict, claim the server_id,
//! register, and keep the registration true (re-assert a deleted or
//! changed key).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use flowpin_registry::{
    BackendSpec, Registration, Registry, ServerIdClaim, Snapshot, SnapshotWatch, Vip,
};
use flowpin_tcp_opt::ServerId;

use crate::config::BackendConfig;

/// What a registry error means for the agent, in plain words.
pub(super) fn plain(e: &flowpin_registry::Error) -> String {
    use flowpin_registry::Error as E;
    match e {
        E::Timeout { op, timeout, .. } => format!("etcd did not answer ({op}) within {timeout:?}"),
        E::Etcd { op, source, .. } => {
            let s = source.to_string();
            // tonic's Display is a debug dump: keep its message only.
            let short = s
                .split_once("message: \"")
                .and_then(|(_, m)| m.split_once('"'))
                .map_or_else(|| s.chars().take(160).collect(), |(m, _)| m.to_string());
            format!("etcd {op} failed: {short}")
        }
        other => other.to_string(),
    }
}

/// Whether retrying can help (etcd down or slow), rather than a refusal.
pub(super) fn retryable(e: &flowpin_registry::Error) -> bool {
    use flowpin_registry::Error as E;
    matches!(e, E::Timeout { .. } | E::Etcd { .. } | E::LeaseLost { .. })
}

/// Problems of this host's registration that `snap` shows: another address
/// carrying one of `ids` (two nodes with one `host`, or one server_id), an
/// LB-side rejection of one of our keys, or of another host's entry that
/// collides with ours.
pub fn conflicts(
    snap: &Snapshot,
    reg: &flowpin_registry::KeyLayout,
    ids: &[ServerId],
    me: IpAddr,
    vips: &[Vip],
) -> Vec<String> {
    let mut out = Vec::new();
    for (vip, e) in &snap.vips {
        for (addr, b) in &e.backends {
            if let Some(id) = b.server_id.filter(|id| *addr != me && ids.contains(id)) {
                out.push(format!(
                    "server_id {id} of this host is carried by backend {addr} of VIP {vip}: another node runs with the same `backend.host` (or the same server_id)"
                ));
            }
        }
    }
    let ours: Vec<String> = vips.iter().map(|v| reg.backend(v, me)).collect();
    let me_text = format!("carried by backend {me}");
    for r in &snap.rejected {
        if ours.contains(&r.key) {
            out.push(format!(
                "the LBs reject this host's entry {} ({}): {}",
                r.key,
                r.kind.as_str(),
                r.reason
            ));
        } else if r.reason.contains(&me_text) {
            out.push(format!(
                "another node registered {} with this host's server_id ({}): the LBs reject it",
                r.key, r.reason
            ));
        }
    }
    out
}

/// The entries of `mine` that `snap` lacks or holds with another weight or
/// server_id (the state is the operator's to change; a VIP the
/// snapshot does not have is skipped: LBs ignore its backends anyway).
pub fn missing(snap: &Snapshot, mine: &[(Vip, BackendSpec)]) -> Vec<(Vip, IpAddr)> {
    mine.iter()
        .filter(|(v, b)| {
            snap.vips
                .get(v)
                .is_some_and(|e| match e.backends.get(&b.addr) {
                    None => true,
                    Some(have) => {
                        // `state` is not compared: an operator's
                        // `flowpin-node backend drain/undrain` changes it
                        // in the registry, and the agent keeps that choice.
                        have.weight != b.weight || have.server_id != b.server_id
                    }
                })
        })
        .map(|(v, b)| (*v, b.addr))
        .collect()
}

/// The registry side once online.
pub(super) struct Online {
    pub(super) registry: Registry,
    pub(super) watch: SnapshotWatch,
    pub(super) claim: Option<ServerIdClaim>,
    pub(super) registration: Registration,
}

/// Why going online stopped.
pub(super) enum Attempt {
    /// etcd down or slow: try again.
    Retry(String),
    /// A conflict or a refusal: the agent exits non-zero.
    Fatal(String),
}

impl From<flowpin_registry::Error> for Attempt {
    fn from(e: flowpin_registry::Error) -> Self {
        if retryable(&e) {
            Attempt::Retry(plain(&e))
        } else {
            Attempt::Fatal(e.to_string())
        }
    }
}

/// Waits (up to one lease TTL + 2 s: entries of a dead process expire)
/// until `snap` shows no conflict for `ids`; the conflicts left otherwise.
async fn wait_no_conflict(
    watch: &SnapshotWatch,
    registry: &Registry,
    cfg: &BackendConfig,
    ids: &[ServerId],
) -> Vec<String> {
    let deadline = Instant::now() + cfg.lease_ttl() + Duration::from_secs(2);
    let vips = cfg.vip_keys();
    let mut logged = false;
    loop {
        let c = conflicts(
            &watch.current(),
            registry.layout(),
            ids,
            cfg.backend.address,
            &vips,
        );
        if c.is_empty() || Instant::now() > deadline {
            return c;
        }
        if !logged {
            tracing::warn!(conflicts = ?c, "waiting up to one lease TTL for stale entries to expire before registering");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Connected, checked, server_id claimed; not yet registered.
pub(super) struct Claimed {
    registry: Registry,
    watch: SnapshotWatch,
    claim: Option<ServerIdClaim>,
}

impl Claimed {
    /// The claimed server_id.
    pub(super) fn server_id(&self) -> Option<ServerId> {
        self.claim.as_ref().map(ServerIdClaim::server_id)
    }
}

/// Connects, refuses a conflict, claims the server_id.
pub(super) async fn claim(cfg: &BackendConfig) -> Result<Claimed, Attempt> {
    let b = &cfg.backend;
    let rc = cfg
        .registry
        .registry_config()
        .map_err(|e| Attempt::Fatal(e.to_string()))?;
    let registry = Registry::connect(rc).await?;
    let watch = registry.watch().await?;
    let previous: Vec<ServerId> = registry
        .claims()
        .await?
        .into_iter()
        .filter(|(_, h)| *h == b.host)
        .map(|(id, _)| id)
        .collect();
    let left = wait_no_conflict(&watch, &registry, cfg, &previous).await;
    if !left.is_empty() {
        return Err(Attempt::Fatal(format!(
            "host {:?} is already served by another node: {}; give every node its own `backend.host`",
            b.host,
            left.join("; ")
        )));
    }
    let claim = if b.server_id {
        Some(registry.allocate_server_id(&b.host).await?)
    } else {
        None
    };
    if let Some(id) = claim.as_ref().map(ServerIdClaim::server_id) {
        let left = wait_no_conflict(&watch, &registry, cfg, &[id]).await;
        if !left.is_empty() {
            return Err(Attempt::Fatal(format!(
                "server_id {id} conflict: {}",
                left.join("; ")
            )));
        }
    }
    Ok(Claimed {
        registry,
        watch,
        claim,
    })
}

/// Registers this host's backends under a new lease.
pub(super) async fn register(cfg: &BackendConfig, c: Claimed) -> Result<Online, Attempt> {
    let b = &cfg.backend;
    let sid = c.server_id();
    let registration = c.registry.register(cfg.lease_ttl()).await?;
    let entries: Vec<_> = cfg
        .vip_keys()
        .iter()
        .map(|v| (*v, BackendSpec::new(b.address, b.weight, sid)))
        .collect();
    registration.add_backends(&entries).await?;
    Ok(Online {
        registry: c.registry,
        watch: c.watch,
        claim: c.claim,
        registration,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use flowpin_registry::{
        BackendState, KeyLayout, Proto, RejectKind, Rejection, VipEntry, VipFlags, VipSpec,
    };

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    fn snap(backends: &[(&str, Option<u32>)]) -> (Snapshot, Vip) {
        let vip = Vip::new(ip("10.100.0.1"), 80, Proto::Tcp);
        let mut b = BTreeMap::new();
        for (a, id) in backends {
            b.insert(
                ip(a),
                BackendSpec::new(ip(a), 100, id.and_then(ServerId::new)),
            );
        }
        let mut s = Snapshot::default();
        s.vips.insert(
            vip,
            VipEntry {
                spec: VipSpec::new(vip, VipFlags::SERVER_ID),
                backends: b,
                health: Default::default(),
            },
        );
        (s, vip)
    }

    #[test]
    fn another_address_with_our_server_id_is_a_conflict() {
        let layout = KeyLayout::new("/t").expect("layout");
        let (s, vip) = snap(&[("10.1.0.2", Some(7)), ("10.1.0.3", Some(8))]);
        let me = ip("10.1.0.9");
        let ids = [ServerId::new(7).expect("id")];
        let c = conflicts(&s, &layout, &ids, me, &[vip]);
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(c[0].contains("10.1.0.2") && c[0].contains("same `backend.host`"));
        // Our own entry with our id is no conflict.
        assert!(conflicts(&s, &layout, &ids, ip("10.1.0.2"), &[vip]).is_empty());
        assert!(conflicts(&s, &layout, &[], me, &[vip]).is_empty());
    }

    #[test]
    fn a_rejection_of_our_key_or_of_a_copy_of_our_id_is_a_conflict() {
        let layout = KeyLayout::new("/t").expect("layout");
        let (mut s, vip) = snap(&[]);
        let me = ip("10.1.0.2");
        s.rejected.push(Rejection {
            key: layout.backend(&vip, me),
            mod_revision: 3,
            kind: RejectKind::DuplicateServerId,
            reason: "server_id 7 of backend 10.1.0.2 is already carried by backend 10.1.0.5".into(),
        });
        let c = conflicts(&s, &layout, &[], me, &[vip]);
        assert!(c.len() == 1 && c[0].contains("the LBs reject"), "{c:?}");
        // Seen from 10.1.0.5, the first: another node copies its id.
        let c = conflicts(&s, &layout, &[], ip("10.1.0.5"), &[vip]);
        assert!(
            c.len() == 1 && c[0].contains("another node registered"),
            "{c:?}"
        );
    }

    #[test]
    fn missing_finds_deleted_and_changed_entries_of_declared_vips_only() {
        let (s, vip) = snap(&[("10.1.0.2", Some(7))]);
        let id = ServerId::new(7);
        let mine = vec![(vip, BackendSpec::new(ip("10.1.0.2"), 100, id))];
        assert!(missing(&s, &mine).is_empty());
        // An operator's drain (state changed in the registry) is kept.
        let mut draining = mine.clone();
        draining[0].1.state = BackendState::Draining;
        assert!(missing(&s, &draining).is_empty());
        let mut reweighted = mine.clone();
        reweighted[0].1.weight = 50;
        assert_eq!(missing(&s, &reweighted), vec![(vip, ip("10.1.0.2"))]);
        let other = vec![(vip, BackendSpec::new(ip("10.1.0.3"), 100, None))];
        assert_eq!(missing(&s, &other), vec![(vip, ip("10.1.0.3"))]);
        let undeclared = Vip::new(ip("10.100.0.9"), 80, Proto::Tcp);
        let gone = vec![(undeclared, BackendSpec::new(ip("10.1.0.2"), 100, id))];
        assert!(missing(&s, &gone).is_empty());
    }
}
