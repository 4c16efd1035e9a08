//! Unit tests of `health`: the quorum rule for every split of 3 LBs, local
//! mode, self-reports, disagreements, validation of stored entries, and the
//! desired state.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;
use crate::keys::KeyLayout;
use crate::model::{BackendSpec, Proto, VipFlags, VipSpec};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn vip() -> Vip {
    Vip::new(ip("10.0.0.1"), 80, Proto::Tcp)
}

const B: &str = "10.1.0.2";

/// One LB's verdict in the table: none, up, down, down and expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V {
    None,
    Up,
    Down,
    Expired,
}

fn verdict(v: V) -> Option<Verdict> {
    match v {
        V::None => None,
        V::Up => Verdict::of(Health::Up, false),
        V::Down => Verdict::of(Health::Down, false),
        V::Expired => Verdict::of(Health::Down, true),
    }
}

fn entry(split: [V; 3], check: bool) -> VipEntry {
    let mut e = VipEntry {
        spec: VipSpec::new(vip(), VipFlags::SERVER_ID),
        backends: BTreeMap::new(),
        health: VipHealth::default(),
    };
    e.backends.insert(ip(B), BackendSpec::new(ip(B), 100, None));
    e.backends
        .insert(ip("10.1.0.3"), BackendSpec::new(ip("10.1.0.3"), 100, None));
    if check {
        e.health.check = Some(HealthCheck::tcp());
    }
    for (i, v) in split.iter().enumerate() {
        if let Some(v) = verdict(*v) {
            e.health
                .verdicts
                .entry(ip(B))
                .or_default()
                .insert(format!("lb{i}"), v);
        }
    }
    e
}

/// The expected decision by (up, down-not-expired, expired) counts among
/// the LBs that have a verdict, written out for every split of 3 LBs.
fn expected(up: usize, down: usize, expired: usize) -> Effective {
    use Effective::*;
    match (up, down, expired) {
        (0, 0, 0) => Healthy, // nobody has a verdict: no information never drains
        (1, 0, 0) | (2, 0, 0) | (3, 0, 0) => Healthy,
        (0, 1, 0) => Drained,             // 1 of 1
        (0, 0, 1) => Removed,             // 1 of 1, expired
        (1, 1, 0) | (1, 0, 1) => Healthy, // a tie keeps it
        (0, 2, 0) => Drained,
        (0, 1, 1) => Drained, // 2 of 2 down, 1 of 2 expired: no majority to remove
        (0, 0, 2) => Removed,
        (2, 1, 0) | (2, 0, 1) => Healthy, // 1 of 3 down
        (1, 2, 0) => Drained,             // 2 of 3 down
        (1, 1, 1) => Drained,             // 2 of 3 down, 1 expired
        (1, 0, 2) => Removed,             // 2 of 3 expired
        (0, 3, 0) => Drained,
        (0, 2, 1) => Drained,
        (0, 1, 2) => Removed,
        (0, 0, 3) => Removed,
        other => panic!("not a split of 3 LBs: {other:?}"),
    }
}

#[test]
fn quorum_decisions_for_every_split_of_three_lbs() {
    let all = [V::None, V::Up, V::Down, V::Expired];
    let mut seen = 0;
    for a in all {
        for b in all {
            for c in all {
                let split = [a, b, c];
                let count = |w: V| split.iter().filter(|v| **v == w).count();
                let want = expected(count(V::Up), count(V::Down), count(V::Expired));
                let e = entry(split, true);
                assert_eq!(
                    effective(&e, ip(B), &QuorumRule::Majority),
                    want,
                    "{split:?}"
                );
                // The other backend has no verdicts: always healthy.
                assert_eq!(
                    effective(&e, ip("10.1.0.3"), &QuorumRule::Majority),
                    Effective::Healthy
                );
                // Without a check on the VIP, verdicts are ignored.
                let unchecked = entry(split, false);
                assert_eq!(
                    effective(&unchecked, ip(B), &QuorumRule::Majority),
                    Effective::Healthy,
                    "{split:?}"
                );
                // Local mode: lb0's own verdict alone.
                let local = QuorumRule::Local { lb: "lb0".into() };
                let want_local = match a {
                    V::None | V::Up => Effective::Healthy,
                    V::Down => Effective::Drained,
                    V::Expired => Effective::Removed,
                };
                assert_eq!(effective(&e, ip(B), &local), want_local, "{split:?}");
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 64);
}

#[test]
fn a_self_report_drains_whatever_the_lbs_say() {
    let mut e = entry([V::Up, V::Up, V::None], true);
    let report = |healthy| SelfReport {
        healthy,
        reason: "disk full".into(),
        updated_at_ms: None,
    };
    e.health.self_reports.insert(ip(B), report(false));
    assert_eq!(
        effective(&e, ip(B), &QuorumRule::Majority),
        Effective::Drained
    );
    e.health.check = None;
    assert_eq!(
        effective(&e, ip(B), &QuorumRule::Majority),
        Effective::Drained
    );
    e.health.self_reports.insert(ip(B), report(true));
    assert_eq!(
        effective(&e, ip(B), &QuorumRule::Majority),
        Effective::Healthy
    );
    // The quorum's removal wins over a drain.
    let mut e = entry([V::Expired, V::Expired, V::Up], true);
    e.health.self_reports.insert(ip(B), report(false));
    assert_eq!(
        effective(&e, ip(B), &QuorumRule::Majority),
        Effective::Removed
    );
}

#[cfg(feature = "lb")]
#[test]
fn disagreeing_lbs_are_reported_not_followed() {
    let mut snap = Snapshot::default();
    // lb2's path is cut: it alone says down.
    snap.vips
        .insert(vip(), entry([V::Up, V::Up, V::Down], true));
    let d = disagreements(&snap, "lb2");
    assert_eq!(
        d,
        vec![Disagreement {
            vip: vip(),
            backend: ip(B),
            mine_up: false,
            fleet: Effective::Healthy
        }]
    );
    assert!(disagreements(&snap, "lb0").is_empty());
    assert!(
        disagreements(&snap, "lb9").is_empty(),
        "no verdict, nothing to disagree with"
    );
    // The backend stays in every LB's ring.
    let want = crate::lb::desired_of(&snap);
    assert!(want.vips[&vip()].backends.iter().any(|b| b.addr == ip(B)));
    assert!(want.vips[&vip()].draining.is_empty());
    // The majority drains it: now lb0 (still up) disagrees.
    snap.vips
        .insert(vip(), entry([V::Up, V::Down, V::Down], true));
    assert_eq!(disagreements(&snap, "lb0")[0].fleet, Effective::Drained);
    assert!(disagreements(&snap, "lb1").is_empty());
}

#[cfg(feature = "lb")]
#[test]
fn desired_state_drains_then_removes_then_restores() {
    let mut snap = Snapshot::default();
    let state = |snap: &Snapshot| {
        let d = crate::lb::desired_of(snap);
        let v = &d.vips[&vip()];
        let listed = v.backends.iter().any(|b| b.addr == ip(B));
        let draining = v.draining.contains(&ip(B));
        (listed, draining)
    };
    snap.vips.insert(vip(), entry([V::Up, V::Up, V::Up], true));
    assert_eq!(state(&snap), (true, false));
    snap.vips
        .insert(vip(), entry([V::Down, V::Down, V::Up], true));
    assert_eq!(state(&snap), (true, true), "drained: listed, draining");
    snap.vips
        .insert(vip(), entry([V::Expired, V::Expired, V::Up], true));
    assert_eq!(state(&snap), (false, false), "removed");
    snap.vips.insert(vip(), entry([V::Up, V::Up, V::Up], true));
    assert_eq!(state(&snap), (true, false), "back");
    // Every LB computes the same desired state from the same snapshot.
    snap.vips
        .insert(vip(), entry([V::Down, V::Down, V::Up], true));
    let a = crate::lb::desired_of(&snap.clone());
    let b = crate::lb::desired_of(&snap);
    assert_eq!(a, b);
}

#[test]
fn stored_entries_are_validated() {
    let l = KeyLayout::new("/t").expect("prefix");
    let mut vips = BTreeMap::new();
    vips.insert(vip(), entry([V::None; 3], false));
    let parse = |k: &str| l.parse(k.as_bytes()).expect("key in layout");
    // A good check applies.
    let good = serde_json::to_vec(&HealthCheck::http("/healthz", 200)).expect("json");
    apply(&mut vips, parse(&l.health_check(&vip())), &good).expect("good check");
    assert!(vips[&vip()].health.check.is_some());
    // Bad ones are rejected with the reason and change nothing.
    for (value, says) in [
        (
            r#"{"probe":{"kind":"udp","send":"x"}}"#,
            "cannot check a tcp VIP",
        ),
        (
            r#"{"probe":{"kind":"tcp"},"interval_ms":10}"#,
            "interval_ms 10",
        ),
        (r#"{"probe":{"kind":"tcp"},"rise":0}"#, "rise 0"),
        (r#"{"probe":{"kind":"http","path":"x"}}"#, "HTTP path"),
        (r#"{"probe":{"kind":"tcp"},"fal":3}"#, "unknown field"),
    ] {
        let before = vips.clone();
        let err =
            apply(&mut vips, parse(&l.health_check(&vip())), value.as_bytes()).expect_err(value);
        assert_eq!(err.0, RejectKind::BadHealthCheck, "{value}");
        assert!(err.1.contains(says), "{value}: {}", err.1);
        assert_eq!(vips, before, "{value}: nothing applied");
    }
    // A check of an unknown VIP.
    let other = Vip::new(ip("10.0.0.9"), 80, Proto::Tcp);
    let err = apply(&mut vips, parse(&l.health_check(&other)), &good).expect_err("unknown");
    assert_eq!(err.0, RejectKind::UnknownVip);
    // Verdicts and reports.
    let v = serde_json::to_vec(&Verdict::of(Health::Down, false)).expect("json");
    apply(&mut vips, parse(&l.verdict(&vip(), ip(B), "lb-a")), &v).expect("verdict");
    assert!(!vips[&vip()].health.verdicts[&ip(B)]["lb-a"].up);
    let err = apply(
        &mut vips,
        parse(&l.verdict(&vip(), ip(B), "lb-b")),
        b"{\"up\":1}",
    )
    .expect_err("bad verdict");
    assert_eq!(err.0, RejectKind::BadHealthCheck);
    let r = br#"{"healthy":false,"reason":"check failed"}"#;
    apply(&mut vips, parse(&l.self_health(&vip(), ip(B))), r).expect("report");
    assert!(!vips[&vip()].health.self_reports[&ip(B)].healthy);
    // Verdicts of an unknown VIP are dropped quietly (they leave with their lease).
    apply(&mut vips, parse(&l.verdict(&other, ip(B), "lb-a")), &v).expect("dropped");
    assert!(!vips.contains_key(&other));
}
