//! The registry against a real etcd, started by each test on loopback.

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use flowpin_registry::{
    AllocateOptions, BackendSpec, BackendState, Error, Proto, Registry, RejectKind, ServerId, Vip,
    VipFlags, VipSpec,
};
use support::{etcd, eventually, registry, Proxy};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn vip() -> Vip {
    Vip::new(ip("10.0.0.1"), 80, Proto::Tcp)
}

fn sid(n: u32) -> Option<ServerId> {
    ServerId::new(n)
}

async fn with_vip(reg: &Registry) {
    let flags = VipFlags::SERVER_ID;
    reg.put_vip(&VipSpec::new(vip(), flags))
        .await
        .expect("put VIP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_removes_a_backend() {
    let Some(etcd) = etcd("lease_expiry_removes_a_backend").await else {
        return;
    };
    let reg = registry(&etcd.endpoint()).await;
    with_vip(&reg).await;
    let mut watch = reg.watch().await.expect("watch");
    let ttl = Duration::from_secs(2);
    let host = reg.register(ttl).await.expect("register");
    host.add_backend(&vip(), &BackendSpec::new(ip("10.1.0.2"), 1, sid(7)))
        .await
        .expect("add");
    watch
        .wait_for(|s| s.backend_count() == 1)
        .await
        .expect("backend appears");
    // Kept alive well past its TTL.
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(
        watch.current().backend_count(),
        1,
        "keep-alive lost the lease"
    );
    // The host dies: no revoke, only the lease expiry can remove it.
    host.abandon();
    let died = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        watch.current().backend_count(),
        1,
        "gone before its lease expired"
    );
    watch
        .wait_for(|s| s.backend_count() == 0)
        .await
        .expect("backend expires");
    let gone = died.elapsed();
    assert!(
        gone <= ttl + Duration::from_secs(2),
        "took {gone:?} to expire a {ttl:?} lease"
    );
    assert_eq!(watch.current().vips.len(), 1, "the VIP stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_and_drop_remove_backends_at_once_and_drain_is_one_call() {
    let Some(etcd) = etcd("deregister_and_drop_remove_backends_at_once").await else {
        return;
    };
    let reg = registry(&etcd.endpoint()).await;
    with_vip(&reg).await;
    let other = Vip::new(ip("10.0.0.1"), 443, Proto::Tcp);
    reg.put_vip(&VipSpec::new(other, VipFlags::default()))
        .await
        .expect("put VIP");
    let mut watch = reg.watch().await.expect("watch");
    let ttl = Duration::from_secs(30);

    let a = reg.register(ttl).await.expect("register a");
    let b = BackendSpec::new(ip("10.1.0.2"), 5, sid(11));
    a.add_backends(&[(vip(), b), (other, b)])
        .await
        .expect("add");
    watch
        .wait_for(|s| s.backend_count() == 2)
        .await
        .expect("both appear");

    // Drain: one call, one snapshot with both draining.
    let before = watch.stats().snapshots;
    a.set_state_all(BackendState::Draining)
        .await
        .expect("drain");
    let snap = watch
        .wait_for(|s| {
            s.vips
                .values()
                .flat_map(|v| v.backends.values())
                .all(|b| b.state == BackendState::Draining)
        })
        .await
        .expect("draining");
    assert_eq!(snap.backend_count(), 2);
    // Every writer stamps its values with the time of the write.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    for e in snap.vips.values() {
        let at = e.spec.updated_at_ms.expect("put_vip stamps the VIP");
        assert!(
            at <= now_ms && now_ms - at < 60_000,
            "VIP stamp {at}, now {now_ms}"
        );
        for b in e.backends.values() {
            let at = b.updated_at_ms.expect("set_state_all stamps the backend");
            assert!(
                at <= now_ms && now_ms - at < 10_000,
                "backend stamp {at}, now {now_ms}"
            );
        }
    }
    assert_eq!(
        watch.stats().snapshots,
        before + 1,
        "drain of two entries took more than one snapshot"
    );
    a.set_state(&vip(), ip("10.1.0.2"), BackendState::Active)
        .await
        .expect("re-activate");
    watch
        .wait_for(|s| {
            s.backends(&vip())
                .is_some_and(|b| b[&ip("10.1.0.2")].state == BackendState::Active)
        })
        .await;
    assert!(matches!(
        a.set_state(&vip(), ip("10.9.9.9"), BackendState::Draining)
            .await,
        Err(Error::NotRegistered { .. })
    ));

    let t = Instant::now();
    a.deregister().await.expect("deregister");
    watch
        .wait_for(|s| s.backend_count() == 0)
        .await
        .expect("gone");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "deregister took {:?}",
        t.elapsed()
    );

    let c = reg.register(ttl).await.expect("register c");
    c.add_backend(&vip(), &BackendSpec::new(ip("10.1.0.3"), 1, sid(12)))
        .await
        .expect("add");
    watch
        .wait_for(|s| s.backend_count() == 1)
        .await
        .expect("appears");
    let t = Instant::now();
    drop(c);
    watch
        .wait_for(|s| s.backend_count() == 0)
        .await
        .expect("gone on drop");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "drop took {:?} (a {ttl:?} lease)",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_etcd_restart() {
    let Some(mut etcd) = etcd("watch_resumes_after_etcd_restart").await else {
        return;
    };
    let reg = registry(&etcd.endpoint()).await;
    with_vip(&reg).await;
    let mut raw = reg.etcd();
    let key_a = reg.layout().backend(&vip(), ip("10.1.0.2"));
    raw.put(
        key_a,
        r#"{"addr":"10.1.0.2","weight":1,"server_id":1}"#,
        None,
    )
    .await
    .expect("put");
    // A registered host whose keep-alive must survive the restart too.
    let ttl = Duration::from_secs(3);
    let host = reg.register(ttl).await.expect("register");
    host.add_backend(&vip(), &BackendSpec::new(ip("10.1.0.9"), 1, sid(9)))
        .await
        .expect("add");
    let mut watch = reg.watch().await.expect("watch");
    let first = watch
        .wait_for(|s| s.backend_count() == 2)
        .await
        .expect("first");
    eventually(Duration::from_secs(5), "watch connected", || {
        watch.stats().connected
    })
    .await;

    etcd.kill();
    eventually(
        Duration::from_secs(10),
        "watch notices etcd is gone",
        || !watch.stats().connected,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        *watch.current(),
        *first,
        "the last snapshot must stay while etcd is down"
    );

    etcd.restart().await.expect("restart etcd");
    let key_b = reg.layout().backend(&vip(), ip("10.1.0.3"));
    let mut raw = reg.etcd();
    let mut put = Err(());
    for _ in 0..50 {
        put = raw
            .put(
                key_b.clone(),
                r#"{"addr":"10.1.0.3","weight":1,"server_id":2}"#,
                None,
            )
            .await
            .map_err(|_| ());
        if put.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    put.expect("put after restart");
    let snap = tokio::time::timeout(
        Duration::from_secs(15),
        watch.wait_for(|s| s.backend_count() == 3),
    )
    .await
    .expect("watch did not resume after the restart")
    .expect("watch task alive");
    assert!(snap.revision > first.revision);
    let stats = watch.stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(stats.compactions, 0, "{stats:?}");
    // etcd restores leases with a fresh TTL on restart: only a keep-alive
    // that reconnected keeps the host registered past two more TTLs.
    tokio::time::sleep(ttl * 2).await;
    let now = watch.current();
    assert!(
        now.backends(&vip())
            .is_some_and(|b| b.contains_key(&ip("10.1.0.9"))),
        "lease lost after the restart"
    );
    assert_eq!(now.backend_count(), 3);
    drop(host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resyncs_after_compaction() {
    let Some(etcd) = etcd("watch_resyncs_after_compaction").await else {
        return;
    };
    let direct = registry(&etcd.endpoint()).await;
    with_vip(&direct).await;
    let mut raw = direct.etcd();
    let key_a = direct.layout().backend(&vip(), ip("10.1.0.2"));
    raw.put(
        key_a.clone(),
        r#"{"addr":"10.1.0.2","weight":1,"server_id":1}"#,
        None,
    )
    .await
    .expect("put");

    let proxy = Proxy::start(etcd.client_port()).await;
    let through = registry(&proxy.endpoint()).await;
    let mut watch = through.watch().await.expect("watch");
    let first = watch
        .wait_for(|s| s.backend_count() == 1)
        .await
        .expect("first");
    eventually(Duration::from_secs(5), "watch connected", || {
        watch.stats().connected
    })
    .await;

    proxy.cut();
    eventually(Duration::from_secs(10), "watch notices the cut", || {
        !watch.stats().connected
    })
    .await;
    // While the watcher is away: a change, then history compacted past it.
    raw.delete(key_a, None).await.expect("delete");
    let key_b = direct.layout().backend(&vip(), ip("10.1.0.3"));
    let put = raw
        .put(
            key_b,
            r#"{"addr":"10.1.0.3","weight":2,"server_id":2}"#,
            None,
        )
        .await
        .expect("put");
    let rev = put.header().expect("header").revision();
    direct.compact(rev).await.expect("compact");
    assert_eq!(*watch.current(), *first);
    proxy.resume().await;

    let snap = tokio::time::timeout(
        Duration::from_secs(15),
        watch.wait_for(|s| {
            s.backends(&vip())
                .is_some_and(|b| b.len() == 1 && b.contains_key(&ip("10.1.0.3")))
        }),
    )
    .await
    .expect("watch did not recover from the compaction")
    .expect("watch task alive");
    assert!(snap.revision >= rev);
    let stats = watch.stats();
    assert!(
        stats.compactions >= 1,
        "resumed without seeing the compaction? {stats:?}"
    );
    assert!(stats.resyncs >= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_allocations_give_ten_distinct_ids() {
    let Some(etcd) = etcd("ten_concurrent_allocations_give_ten_distinct_ids").await else {
        return;
    };
    let reg = registry(&etcd.endpoint()).await;
    // A range barely larger than the hosts, so claims collide and the
    // create-if-absent transaction has to settle them.
    let opts = AllocateOptions {
        quarantine: Duration::from_secs(60),
        ids: 100..=111,
        max_attempts: 200,
    };
    let mut tasks = Vec::new();
    for h in 0..10 {
        let reg = reg.clone();
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            reg.allocate_server_id_with(&format!("host-{h}"), &opts)
                .await
        }));
    }
    let mut claims = Vec::new();
    for t in tasks {
        claims.push(t.await.expect("task").expect("allocate"));
    }
    let ids: BTreeSet<u32> = claims.iter().map(|c| u32::from(c.server_id())).collect();
    assert_eq!(ids.len(), 10, "{ids:?}");
    assert!(ids.iter().all(|i| (100..=111).contains(i)));
    let stored = reg.claims().await.expect("claims");
    assert_eq!(stored.len(), 10);
    for c in &claims {
        assert_eq!(stored[&c.server_id()], c.host());
    }
    // And with the full u32 range (the default), ten more, all distinct and non-zero.
    let mut more = BTreeSet::new();
    for h in 0..10 {
        let c = reg
            .allocate_server_id(&format!("other-{h}"))
            .await
            .expect("allocate");
        more.insert(u32::from(c.server_id()));
    }
    assert_eq!(more.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_gets_its_id_back_and_a_dead_hosts_id_waits_out_its_quarantine() {
    let Some(etcd) = etcd("a_host_gets_its_id_back").await else {
        return;
    };
    let reg = registry(&etcd.endpoint()).await;
    let quarantine = Duration::from_secs(3);
    // One id only: whoever holds it blocks everybody else.
    let opts = AllocateOptions {
        quarantine,
        ids: 5..=5,
        max_attempts: 3,
    };
    let a = reg
        .allocate_server_id_with("host-a", &opts)
        .await
        .expect("a");
    assert_eq!(u32::from(a.server_id()), 5);
    drop(a); // host-a restarts (or dies): the claim is not revoked
    let released = Instant::now();

    // host-a comes back within the quarantine: same id.
    let a = reg
        .allocate_server_id_with("host-a", &opts)
        .await
        .expect("a again");
    assert_eq!(u32::from(a.server_id()), 5);
    drop(a);
    let released_again = Instant::now();
    assert!(released_again.duration_since(released) < quarantine);

    // host-b cannot have it during the quarantine.
    match reg.allocate_server_id_with("host-b", &opts).await {
        Err(Error::NoFreeServerId { .. }) => {}
        other => panic!("host-b got a quarantined id: {other:?}"),
    }
    tokio::time::sleep(quarantine - Duration::from_millis(800)).await;
    match reg.allocate_server_id_with("host-b", &opts).await {
        Err(Error::NoFreeServerId { .. }) => {}
        other => panic!("host-b got a quarantined id before the quarantine ended: {other:?}"),
    }
    // After it, the id is free.
    let b = loop {
        match reg.allocate_server_id_with("host-b", &opts).await {
            Ok(b) => break b,
            Err(Error::NoFreeServerId { .. }) => {
                assert!(
                    released_again.elapsed() < quarantine * 4,
                    "id never released"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let waited = released_again.elapsed();
    assert!(
        waited >= quarantine,
        "reused after {waited:?} < {quarantine:?}"
    );
    assert_eq!(u32::from(b.server_id()), 5);
    assert_eq!(
        reg.claims().await.expect("claims")[&b.server_id()],
        "host-b"
    );

    // host-a's id is now host-b's: host-a gets another one (from a wider range).
    let wider = AllocateOptions {
        ids: 5..=6,
        max_attempts: 40,
        ..opts
    };
    let a = reg
        .allocate_server_id_with("host-a", &wider)
        .await
        .expect("a elsewhere");
    assert_eq!(u32::from(a.server_id()), 6);
    // And keeps that one from now on.
    drop(a);
    let a = reg
        .allocate_server_id_with("host-a", &wider)
        .await
        .expect("a stable");
    assert_eq!(u32::from(a.server_id()), 6);
    assert!(matches!(
        reg.allocate_server_id("bad/host").await,
        Err(Error::BadHost { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_bad_entry_is_rejected_and_counted_while_the_watch_goes_on() {
    let Some(etcd) = etcd("each_kind_of_bad_entry_is_rejected_and_counted").await else {
        return;
    };
    let reg = registry(&etcd.endpoint()).await;
    with_vip(&reg).await;
    let l = reg.layout().clone();
    let mut raw = reg.etcd();
    let good = l.backend(&vip(), ip("10.1.0.2"));
    raw.put(
        good,
        r#"{"addr":"10.1.0.2","weight":1,"server_id":7}"#,
        None,
    )
    .await
    .expect("put");
    let mut watch = reg.watch().await.expect("watch");
    watch
        .wait_for(|s| s.backend_count() == 1)
        .await
        .expect("good backend");

    let p = l.prefix();
    let udp = Vip::new(ip("10.0.0.2"), 53, Proto::Udp);
    let cases: Vec<(String, String, RejectKind)> = vec![
        (
            format!("{p}routing/vips/tcp/10.0.0.1/080"),
            "{}".into(),
            RejectKind::MalformedKey,
        ),
        (
            l.backend(&vip(), ip("10.1.0.3")),
            "{not json".into(),
            RejectKind::MalformedValue,
        ),
        (
            l.backend(&vip(), ip("10.1.0.4")),
            r#"{"addr":"10.1.0.5","weight":1}"#.into(),
            RejectKind::KeyMismatch,
        ),
        (
            l.backend(&vip(), ip("0.0.0.0")),
            r#"{"addr":"0.0.0.0","weight":1}"#.into(),
            RejectKind::BadAddress,
        ),
        (
            l.backend(&vip(), ip("10.1.0.6")),
            // 0 is a valid weight (no new flows): only above MAX_WEIGHT is bad.
            r#"{"addr":"10.1.0.6","weight":65537}"#.into(),
            RejectKind::BadWeight,
        ),
        (
            l.vip(&udp),
            r#"{"addr":"10.0.0.2","port":53,"proto":"udp","flags":{"server_id":true}}"#.into(),
            RejectKind::BadFlags,
        ),
        (
            l.backend(&Vip::new(ip("10.0.0.9"), 80, Proto::Tcp), ip("10.1.0.7")),
            r#"{"addr":"10.1.0.7","weight":1}"#.into(),
            RejectKind::UnknownVip,
        ),
        (
            l.backend(&vip(), ip("10.1.0.8")),
            r#"{"addr":"10.1.0.8","weight":1,"server_id":7}"#.into(),
            RejectKind::DuplicateServerId,
        ),
        (
            // A UDP probe cannot check a TCP VIP.
            l.health_check(&vip()),
            r#"{"probe":{"kind":"udp","send":"ping"}}"#.into(),
            RejectKind::BadHealthCheck,
        ),
    ];
    for (i, (key, value, kind)) in cases.iter().enumerate() {
        raw.put(key.clone(), value.clone(), None)
            .await
            .expect("raw put");
        let snap = tokio::time::timeout(
            Duration::from_secs(5),
            watch.wait_for(|s| s.reject_counts.get(*kind) == 1),
        )
        .await
        .unwrap_or_else(|_| panic!("{kind} not counted"))
        .expect("watch alive");
        assert_eq!(
            snap.reject_counts.total(),
            i as u64 + 1,
            "{kind}: {:?}",
            snap.reject_counts
        );
        assert!(
            snap.rejected
                .iter()
                .any(|r| r.key == *key && r.kind == *kind),
            "{kind}: {:?}",
            snap.rejected
        );
        // Nothing of it applied; the good backend untouched.
        assert_eq!(snap.vips.len(), 1, "{kind}");
        assert_eq!(snap.backend_count(), 1, "{kind}");
        assert_eq!(
            snap.backends(&vip()).expect("vip")[&ip("10.1.0.2")].server_id,
            sid(7)
        );
    }
    for kind in RejectKind::ALL {
        assert_eq!(watch.stats().reject_counts.get(kind), 1, "{kind}");
    }
    // The watch goes on: a good change still arrives, and no rejection is counted twice.
    let later = l.backend(&vip(), ip("10.1.0.9"));
    raw.put(
        later,
        r#"{"addr":"10.1.0.9","weight":1,"server_id":9}"#,
        None,
    )
    .await
    .expect("put");
    let snap = watch
        .wait_for(|s| s.backend_count() == 2)
        .await
        .expect("good change after bad ones");
    assert_eq!(snap.reject_counts.total(), RejectKind::ALL.len() as u64);
    // The registration API refuses to write what LBs would reject.
    let host = reg
        .register(Duration::from_secs(10))
        .await
        .expect("register");
    let bad = host
        .add_backend(&vip(), &BackendSpec::new(ip("10.1.0.10"), 65_537, None))
        .await;
    assert!(
        matches!(
            bad,
            Err(Error::Invalid {
                kind: RejectKind::BadWeight,
                ..
            })
        ),
        "{bad:?}"
    );
    // Weight 0 (no new flows) is written and accepted by the watch.
    host.add_backend(&vip(), &BackendSpec::new(ip("10.1.0.10"), 0, None))
        .await
        .expect("weight 0 is valid");
    let snap = watch
        .wait_for(|s| s.backend_count() == 3)
        .await
        .expect("weight-0 backend");
    assert_eq!(
        snap.backends(&vip()).expect("vip")[&ip("10.1.0.10")].weight,
        0
    );
    assert_eq!(snap.reject_counts.total(), RejectKind::ALL.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_of_several_backends_is_one_snapshot() {
    let Some(etcd) = etcd("a_transaction_of_several_backends_is_one_snapshot").await else {
        return;
    };
    let reg = registry(&etcd.endpoint()).await;
    with_vip(&reg).await;
    let mut watch = reg.watch().await.expect("watch");
    watch.wait_for(|s| s.vips.len() == 1).await.expect("VIP");
    for round in 0..5u32 {
        let before = watch.stats().snapshots;
        let want = ((round + 1) * 8) as usize;
        let ops: Vec<TxnOp> = (0..8u32)
            .map(|i| {
                let n = round * 8 + i + 1;
                let a = IpAddr::from([10, 2, (n / 200) as u8, (n % 200 + 1) as u8]);
                let v = format!(r#"{{"addr":"{a}","weight":1,"server_id":{}}}"#, 1000 + n);
                TxnOp::put(reg.layout().backend(&vip(), a), v, None)
            })
            .collect();
        let mut raw = reg.etcd();
        let txn = Txn::new()
            .when([Compare::version(
                reg.layout().vip(&vip()),
                CompareOp::Greater,
                0,
            )])
            .and_then(ops);
        assert!(raw.txn(txn).await.expect("txn").succeeded());
        let snap = watch
            .wait_for(|s| s.backend_count() >= want)
            .await
            .expect("all");
        assert_eq!(
            snap.backend_count(),
            want,
            "a snapshot held part of a transaction"
        );
        assert_eq!(
            watch.stats().snapshots,
            before + 1,
            "a transaction gave more than one snapshot"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_is_an_actionable_error_not_a_hang() {
    // A port nobody listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut config = flowpin_registry::RegistryConfig::new(
        [format!("http://127.0.0.1:{port}")],
        "/flowpin/test",
    );
    config.request_timeout = Duration::from_secs(1);
    config.connect_timeout = Duration::from_millis(500);
    let t = Instant::now();
    let err = match Registry::connect(config).await {
        Ok(reg) => reg.watch().await.expect_err("watch of a dead etcd"),
        Err(e) => e,
    };
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let msg = err.to_string();
    assert!(msg.contains("check that etcd is up"), "{msg}");
}

/// What `Snapshot::revision` promises: every watch reaches the revision a
/// routing write returned; a write outside `routing/` (a server_id claim)
/// moves a new watch's revision but not a running one's, so two watches
/// with one content may differ (the lab once waited for a new watch's
/// revision and timed out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_revision_covers_each_write_and_outside_writes_move_only_new_watches() {
    let Some(etcd) = etcd("snapshot_revision_covers_each_write").await else {
        return;
    };
    let reg = registry(&etcd.endpoint()).await;
    with_vip(&reg).await;
    let mut running = reg.watch().await.expect("watch");
    let host = reg
        .register(Duration::from_secs(30))
        .await
        .expect("register");
    let written = host
        .add_backend(&vip(), &BackendSpec::new(ip("10.1.0.2"), 1, sid(7)))
        .await
        .expect("add");
    let seen = tokio::time::timeout(
        Duration::from_secs(10),
        running.wait_for(|s| s.revision >= written),
    )
    .await
    .expect("the running watch did not reach the write's revision")
    .expect("watch task alive");
    assert_eq!(seen.backend_count(), 1, "{seen:?}");
    assert_eq!(seen.revision, written, "nothing else was written");

    // A write outside routing/: a server_id claim.
    let claim = reg.allocate_server_id("host-a").await.expect("claim");
    let fresh = reg.watch().await.expect("new watch").current();
    assert!(
        fresh.revision > written,
        "a new watch reads the store's revision ({} after a claim, write at {written})",
        fresh.revision
    );
    assert_eq!(fresh.vips, seen.vips, "same content");
    // The running watch gets no event for it: its revision stays.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(running.current().revision, written);
    drop(claim);
}
