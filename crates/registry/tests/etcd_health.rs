//! Against a real (local) etcd: two LBs' health verdicts give both LBs the
//! same desired state and the same ring digest at the same revision; a bad
//! health check is refused by the API and rejected by the watch, never
//! applied; a backend's own report drains it; a dead LB's verdicts leave
//! with its lease.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use flowpin_lb_core::{LbConfig, LbState};
use flowpin_registry::health::{disagreements, Effective, Health, HealthCheck, Verdict};
use flowpin_registry::lb::{desired_of, ring_digest};
use flowpin_registry::{
    BackendSpec, Error, Proto, RejectKind, ServerId, Snapshot, SnapshotWatch, Vip, VipFlags,
    VipSpec,
};

use support::{etcd, registry};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn vip() -> Vip {
    Vip::new(ip("10.0.0.1"), 80, Proto::Tcp)
}

const B1: &str = "10.1.0.2";
const B2: &str = "10.1.0.3";
const B3: &str = "10.1.0.4";

/// The ring digest an LB reconciling to `snap` holds, and B1's place.
fn ring_of(snap: &Snapshot) -> (u64, Effective) {
    let mut st = LbState::new(&LbConfig::default().ring_size(251));
    let plan = st.reconcile(&desired_of(snap)).expect("reconcile");
    st.commit(plan);
    let slots = st.ring_addrs(&vip());
    let d = desired_of(snap);
    let v = &d.vips[&vip()];
    let b1 = if !v.backends.iter().any(|b| b.addr == ip(B1)) {
        Effective::Removed
    } else if v.draining.contains(&ip(B1)) {
        Effective::Drained
    } else {
        Effective::Healthy
    };
    (ring_digest(&slots), b1)
}

/// Both watches at the same revision, `rev` or later (waits until the
/// writes pause long enough for both to show the same one).
async fn both_at(
    a: &mut SnapshotWatch,
    b: &mut SnapshotWatch,
    rev: i64,
) -> (Arc<Snapshot>, Arc<Snapshot>) {
    let mut target = rev;
    loop {
        let sa = a.wait_for(|s| s.revision >= target).await.expect("watch a");
        let sb = b
            .wait_for(|s| s.revision >= sa.revision)
            .await
            .expect("watch b");
        let sa = a.current();
        if sa.revision == sb.revision {
            return (sa, sb);
        }
        target = sa.revision.max(sb.revision);
    }
}

fn down(expired: bool) -> Verdict {
    Verdict::of(Health::Down, expired).expect("a verdict")
}

fn up() -> Verdict {
    Verdict::of(Health::Up, false).expect("a verdict")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lbs_verdicts_give_the_same_desired_state() {
    let Some(etcd) = etcd("two_lbs_verdicts_give_the_same_desired_state").await else {
        return;
    };
    // Two LBs: their own connections, their own watches.
    let (lb_a, lb_b) = (
        registry(&etcd.endpoint()).await,
        registry(&etcd.endpoint()).await,
    );
    let op = registry(&etcd.endpoint()).await;
    op.put_vip(&VipSpec::new(vip(), VipFlags::SERVER_ID))
        .await
        .expect("put VIP");
    let check = HealthCheck::tcp().damping(2, 3);
    op.put_health_check(&vip(), &check).await.expect("check");
    // A bad check is refused with the reason, never written.
    let bad = op
        .put_health_check(&vip(), &HealthCheck::udp("ping", "pong"))
        .await;
    match bad {
        Err(Error::Invalid {
            kind: RejectKind::BadHealthCheck,
            reason,
        }) => assert!(reason.contains("cannot check a tcp VIP"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let host = op
        .register(Duration::from_secs(10))
        .await
        .expect("register");
    for (i, b) in [B1, B2, B3].iter().enumerate() {
        let sid = ServerId::new(u32::try_from(i).expect("small") + 1);
        host.add_backend(&vip(), &BackendSpec::new(ip(b), 100, sid))
            .await
            .expect("add");
    }
    let (mut wa, mut wb) = (
        lb_a.watch().await.expect("watch"),
        lb_b.watch().await.expect("watch"),
    );
    let rep_a = lb_a
        .health_reporter("lb-a", Duration::from_secs(10))
        .await
        .expect("reporter");
    let rep_b = lb_b
        .health_reporter("lb-b", Duration::from_secs(10))
        .await
        .expect("reporter");
    both_at(&mut wa, &mut wb, 0).await;
    let sa = wa
        .wait_for(|s| s.backend_count() == 3)
        .await
        .expect("backends");
    assert_eq!(
        sa.vips[&vip()].health.check.as_ref(),
        Some(&check),
        "the good check applies"
    );
    let (healthy_digest, _) = ring_of(&sa);

    let one = |v: Verdict| [((vip(), ip(B1)), v)].into_iter().collect();
    // lb-a alone sees B1 down (its path is cut): a tie, B1 stays; lb-a disagrees.
    let rev = rep_a
        .publish(&one(down(false)))
        .await
        .expect("publish")
        .expect("written");
    rep_b.publish(&one(up())).await.expect("publish");
    let (sa, sb) = both_at(&mut wa, &mut wb, rev + 1).await;
    assert_eq!(ring_of(&sa), ring_of(&sb));
    assert_eq!(ring_of(&sa), (healthy_digest, Effective::Healthy));
    assert_eq!(disagreements(&sa, "lb-a").len(), 1);
    assert!(disagreements(&sa, "lb-b").is_empty());
    // Republishing the same verdict writes nothing.
    assert_eq!(
        rep_a.publish(&one(down(false))).await.expect("publish"),
        None
    );

    // Both see it down: drained on both LBs, same ring.
    let rev = rep_b
        .publish(&one(down(false)))
        .await
        .expect("publish")
        .expect("written");
    let (sa, sb) = both_at(&mut wa, &mut wb, rev).await;
    let (digest, b1) = ring_of(&sa);
    assert_eq!(ring_of(&sb), (digest, b1));
    assert_eq!(b1, Effective::Drained);
    assert_ne!(digest, healthy_digest);
    assert!(disagreements(&sa, "lb-a").is_empty());

    // Down long enough on both: removed on both.
    rep_a.publish(&one(down(true))).await.expect("publish");
    let rev = rep_b
        .publish(&one(down(true)))
        .await
        .expect("publish")
        .expect("written");
    let (sa, sb) = both_at(&mut wa, &mut wb, rev).await;
    assert_eq!(ring_of(&sa), ring_of(&sb));
    assert_eq!(ring_of(&sa).1, Effective::Removed);

    // lb-a dies: its verdict leaves with its lease; lb-b's alone still removes.
    rep_a.revoke().await.expect("revoke");
    let sa = wa
        .wait_for(|s| s.vips[&vip()].health.verdicts[&ip(B1)].len() == 1)
        .await
        .expect("lb-a's verdict gone");
    assert_eq!(ring_of(&sa).1, Effective::Removed);
    // It passes again: back, the same ring as before.
    let rev = rep_b
        .publish(&one(up()))
        .await
        .expect("publish")
        .expect("written");
    let (sa, sb) = both_at(&mut wa, &mut wb, rev).await;
    assert_eq!(ring_of(&sa), (healthy_digest, Effective::Healthy));
    assert_eq!(ring_of(&sb), (healthy_digest, Effective::Healthy));

    // The backend reports itself unhealthy: drained everywhere.
    let rev = host
        .report_health(&vip(), ip(B1), false, "local check failed")
        .await
        .expect("self report");
    let (sa, sb) = both_at(&mut wa, &mut wb, rev).await;
    assert_eq!(ring_of(&sa).1, Effective::Drained);
    assert_eq!(ring_of(&sa), ring_of(&sb));
    assert!(
        host.report_health(&vip(), ip("10.9.9.9"), false, "x")
            .await
            .is_err(),
        "only a registered backend"
    );

    // A bad check written behind the API's back: rejected, the VIP keeps no check.
    let mut raw = op.etcd();
    raw.put(
        op.layout().health_check(&vip()),
        r#"{"probe":{"kind":"tcp"},"rise":0}"#,
        None,
    )
    .await
    .expect("raw put");
    let sa = wa
        .wait_for(|s| s.reject_counts.get(RejectKind::BadHealthCheck) == 1)
        .await
        .expect("rejected");
    assert!(
        sa.rejected.iter().any(|r| r.reason.contains("rise 0")),
        "{:?}",
        sa.rejected
    );
    assert_eq!(sa.vips[&vip()].health.check, None, "never applied");
    drop(rep_b);
}

/// End to end with real probers (direct to loopback backends, no tunnel):
/// two LBs probe, publish, and drain the dead backend at the same revision;
/// it comes back when its service does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_probing_lbs_drain_a_dead_backend_together() {
    use flowpin_health::{DirectRoutes, Prober};
    use flowpin_registry::health::{fleet_status, publish_verdicts, targets_of, QuorumRule};
    let Some(etcd) = etcd("two_probing_lbs_drain_a_dead_backend_together").await else {
        return;
    };
    let live: IpAddr = ip("127.0.0.1");
    let dead: IpAddr = ip("127.0.0.2");
    let l = std::net::TcpListener::bind((live, 0)).expect("bind");
    let port = l.local_addr().expect("addr").port();
    let vip = Vip::new(ip("10.0.0.7"), port, Proto::Tcp);
    let op = registry(&etcd.endpoint()).await;
    op.put_vip(&VipSpec::new(vip, VipFlags::default()))
        .await
        .expect("vip");
    let ms = Duration::from_millis;
    let check = HealthCheck::tcp().timing(ms(200), ms(150)).damping(2, 3);
    op.put_health_check(&vip, &check).await.expect("check");
    let host = op
        .register(Duration::from_secs(10))
        .await
        .expect("register");
    for b in [live, dead] {
        host.add_backend(&vip, &BackendSpec::new(b, 100, None))
            .await
            .expect("add");
    }
    let mut lbs = Vec::new();
    let mut watches = Vec::new();
    for name in ["lb-a", "lb-b"] {
        let reg = registry(&etcd.endpoint()).await;
        let mut watch = reg.watch().await.expect("watch");
        let snap = watch
            .wait_for(|s| s.backend_count() == 2)
            .await
            .expect("backends");
        let prober = Arc::new(Prober::new(Arc::new(DirectRoutes)));
        prober.set_targets(targets_of(&snap)).expect("targets");
        assert_eq!(prober.status().backends.len(), 2);
        let reporter = reg
            .health_reporter(name, Duration::from_secs(10))
            .await
            .expect("reporter");
        let p = prober.clone();
        let task = tokio::spawn(async move { publish_verdicts(&p, &reporter).await });
        watches.push(watch);
        lbs.push((reg, prober, task));
    }
    let started = std::time::Instant::now();
    let state_of = |s: &Snapshot, b: IpAddr| {
        flowpin_registry::health::effective(&s.vips[&vip], b, &QuorumRule::Majority)
    };
    let mut wb = watches.pop().expect("b");
    let mut wa = watches.pop().expect("a");
    let sa = wa
        .wait_for(|s| {
            let n = |b: IpAddr| {
                s.vips[&vip]
                    .health
                    .verdicts
                    .get(&b)
                    .map_or(0, BTreeMap::len)
            };
            state_of(s, dead) == Effective::Drained && n(live) == 2 && n(dead) == 2
        })
        .await
        .expect("drained");
    // Detection: interval × fall + 1 s (plus the rise of the live one, same time).
    assert!(
        started.elapsed() <= check.detection_time() + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let (sa, sb) = both_at(&mut wa, &mut wb, sa.revision).await;
    assert_eq!(desired_of(&sa), desired_of(&sb));
    assert_eq!(state_of(&sa, live), Effective::Healthy);
    let st = fleet_status(&sa, "lb-a", &QuorumRule::Majority, &lbs[0].1.status());
    let d = st.iter().find(|b| b.backend == dead).expect("dead listed");
    assert_eq!(
        (d.mine, d.fleet, d.verdicts, d.disagrees),
        (Health::Down, Effective::Drained, 2, false)
    );
    // Its service comes back: healthy again everywhere.
    let _back = std::net::TcpListener::bind((dead, port)).expect("bind dead");
    let sa = wa
        .wait_for(|s| state_of(s, dead) == Effective::Healthy)
        .await
        .expect("back");
    let (sa, sb) = both_at(&mut wa, &mut wb, sa.revision).await;
    assert_eq!(desired_of(&sa), desired_of(&sb));
    for (_, _, task) in lbs {
        task.abort();
    }
    drop(l);
}
