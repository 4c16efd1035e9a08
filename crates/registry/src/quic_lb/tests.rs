//! The rotation decisions and the stored form.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::model::Proto;
use proptest::prelude::*;

fn vip(n: u8) -> Vip {
    Vip::new(std::net::IpAddr::from([10, 0, 0, n]), 443, Proto::Udp)
}

fn stored(
    v: u8,
    id: u8,
    rev: i64,
    state: QuicLbConfigState,
    since: Option<u64>,
) -> StoredQuicLbConfig {
    let spec = QuicLbConfigSpec {
        state,
        retiring_since_ms: since,
        ..QuicLbConfigSpec::new(2, 6, Some(QuicLbKey::new([id; 16])))
    };
    StoredQuicLbConfig {
        at: QuicLbConfigRef {
            vip: vip(v),
            config_id: id,
            revision: rev,
        },
        spec,
        config: spec.config(id).unwrap(),
    }
}

fn entry(who: &str, refs: &[QuicLbConfigRef]) -> QuicLbStatusEntry {
    QuicLbStatusEntry {
        who: who.into(),
        status: QuicLbStatus {
            configs: refs.iter().copied().collect(),
        },
    }
}

#[test]
fn a_new_config_is_issued_only_once_every_live_lb_acked_it() {
    let old = stored(1, 0, 10, QuicLbConfigState::Active, None);
    let new = stored(1, 1, 20, QuicLbConfigState::Active, None);
    let configs = [old, new];
    let lb1_old = entry("lb1", &[old.at]);
    let lb2_both = entry("lb2", &[old.at, new.at]);
    // lb1 has not applied the new one yet: servers keep the old one.
    assert_eq!(
        issuable(&configs, &[lb1_old.clone(), lb2_both.clone()]),
        vec![old]
    );
    assert_eq!(
        issue_choice(&vip(1), &configs, &[lb1_old, lb2_both.clone()]),
        Some(old)
    );
    // Both have: the newest is chosen.
    let lb1_both = entry("lb1", &[old.at, new.at]);
    assert_eq!(
        issue_choice(&vip(1), &configs, &[lb1_both.clone(), lb2_both.clone()]),
        Some(new)
    );
    // Another VIP's configs are not this one's.
    assert_eq!(
        issue_choice(&vip(2), &configs, std::slice::from_ref(&lb1_both)),
        None
    );
    // An ack of an older value at the same codepoint does not count.
    let stale = entry(
        "lb1",
        &[
            QuicLbConfigRef {
                revision: 15,
                ..new.at
            },
            old.at,
        ],
    );
    assert_eq!(issuable(&configs, &[stale, lb2_both]), vec![old]);
    // No live LB: nothing is issuable (unroutable CIDs).
    assert!(issuable(&configs, &[]).is_empty());
    // A retiring config is never issued, even if acked.
    let retiring = stored(1, 0, 30, QuicLbConfigState::Retiring, Some(1000));
    assert!(issuable(&[retiring], &[entry("lb1", &[retiring.at])]).is_empty());
    assert_eq!(routable(&[retiring, new]).len(), 2, "still routed");
}

#[test]
fn a_retiring_config_is_removed_after_servers_stop_and_the_grace() {
    let r = stored(1, 0, 30, QuicLbConfigState::Retiring, Some(1_000));
    let active = stored(1, 1, 20, QuicLbConfigState::Active, None);
    let configs = [r, active];
    let reporting_old = entry(
        "host-a",
        &[QuicLbConfigRef {
            revision: 10,
            ..r.at
        }],
    );
    let moved_on = entry("host-b", &[active.at]);
    // Grace not over.
    assert!(removable(&configs, std::slice::from_ref(&moved_on), 1_500, 1_000).is_empty());
    // Grace over, but a server still reports it (with the revision it read
    // before the retire rewrote the value).
    assert!(removable(&configs, &[reporting_old, moved_on.clone()], 2_000, 1_000).is_empty());
    // Every server moved on.
    assert_eq!(removable(&configs, &[moved_on], 2_000, 1_000), vec![r.at]);
    // A report of a newer value at the codepoint (another config) does not
    // hold the old one back.
    let newer = entry(
        "host-c",
        &[QuicLbConfigRef {
            revision: 40,
            ..r.at
        }],
    );
    assert_eq!(removable(&configs, &[newer], 2_000, 1_000), vec![r.at]);
    // Never an active one, never one without a start of retirement.
    let no_since = stored(1, 2, 5, QuicLbConfigState::Retiring, None);
    assert!(removable(&[active, no_since], &[], u64::MAX, 0).is_empty());
}

#[test]
fn stored_json_is_stable_and_keys_never_show() {
    let spec = QuicLbConfigSpec::new(
        2,
        6,
        Some("8f95f09245765f80256934e50c66207f".parse().unwrap()),
    );
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(
        json,
        r#"{"server_id_len":2,"nonce_len":6,"key":"8f95f09245765f80256934e50c66207f","state":"active"}"#
    );
    assert_eq!(
        serde_json::from_str::<QuicLbConfigSpec>(&json).unwrap(),
        spec
    );
    let plain: QuicLbConfigSpec =
        serde_json::from_str(r#"{"server_id_len":1,"nonce_len":4}"#).unwrap();
    assert_eq!(plain, QuicLbConfigSpec::new(1, 4, None));
    assert!(
        !format!("{spec:?}").contains("8f95"),
        "Debug redacts the key"
    );
    // A bad key: the error names the field, not the value.
    let err = serde_json::from_str::<QuicLbConfigSpec>(
        r#"{"server_id_len":2,"nonce_len":6,"key":"8f95f09245765f80256934e50c66207"}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("key") && !err.contains("8f95f0"), "{err}");
    assert!(serde_json::from_str::<QuicLbConfigSpec>(
        r#"{"server_id_len":2,"nonce_len":6,"extra":1}"#
    )
    .is_err());
    // Limits, with a message that says which.
    let e = QuicLbConfigSpec::new(15, 5, None).config(0).unwrap_err();
    assert!(e.contains("at most 19"), "{e}");
    assert!(
        QuicLbConfigSpec::new(2, 6, None).config(7).is_err(),
        "0b111"
    );
    let status = QuicLbStatus {
        configs: [QuicLbConfigRef {
            vip: vip(1),
            config_id: 1,
            revision: 9,
        }]
        .into(),
    };
    let back: QuicLbStatus =
        serde_json::from_str(&serde_json::to_string(&status).unwrap()).unwrap();
    assert_eq!(back, status);
}

proptest! {
    /// Whatever the acks, what is issuable is active and acked by every
    /// live LB; adding an LB never makes more issuable.
    #[test]
    fn issuable_is_acked_by_all(
        acks in proptest::collection::vec(proptest::collection::vec(0usize..6, 0..6), 0..4),
        extra in proptest::collection::vec(0usize..6, 0..6),
        states in proptest::collection::vec(any::<bool>(), 6),
    ) {
        let configs: Vec<StoredQuicLbConfig> = (0..6)
            .map(|i| {
                let state = if states[i] { QuicLbConfigState::Active } else { QuicLbConfigState::Retiring };
                stored(1, i as u8, 10 + i as i64, state, Some(0))
            })
            .collect();
        let mk = |set: &Vec<usize>, who: &str| entry(who, &set.iter().map(|&i| configs[i].at).collect::<Vec<_>>());
        let lbs: Vec<QuicLbStatusEntry> = acks.iter().enumerate().map(|(n, s)| mk(s, &format!("lb{n}"))).collect();
        let got = issuable(&configs, &lbs);
        for c in &got {
            prop_assert_eq!(c.spec.state, QuicLbConfigState::Active);
            prop_assert!(lbs.iter().all(|l| l.status.configs.contains(&c.at)));
        }
        let mut more = lbs.clone();
        more.push(mk(&extra, "late"));
        let after = issuable(&configs, &more);
        if !lbs.is_empty() {
            prop_assert!(after.iter().all(|c| got.contains(c)));
        }
    }
}

#[cfg(feature = "lb")]
#[test]
fn configs_become_the_vips_quic_lb_layout() {
    use flowpin_lb_core::{AesEngine, Desired, DesiredVip, VipCid};
    let mut desired = Desired::default();
    desired
        .vips
        .insert(vip(1), DesiredVip::new(Default::default()));
    let enc = stored(1, 1, 20, QuicLbConfigState::Active, None);
    let mut plain = stored(1, 0, 10, QuicLbConfigState::Retiring, Some(5));
    plain.spec.key = None;
    plain.config = plain.spec.config(0).unwrap();
    let mut wide = stored(1, 2, 30, QuicLbConfigState::Active, None);
    wide.spec.server_id_len = 5;
    wide.config = wide.spec.config(2).unwrap();
    let elsewhere = stored(9, 0, 40, QuicLbConfigState::Active, None);
    let mut table = stored(1, 3, 50, QuicLbConfigState::Active, None);
    table.spec.engine = QuicLbEngine::Table;
    let skipped = apply_to_desired(&mut desired, &[enc, plain, wide, elsewhere, table]);
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    let VipCid::QuicLb(confs) = &desired.vips[&vip(1)].cid else {
        panic!("QUIC-LB layout expected");
    };
    assert_eq!(
        confs.iter().map(|c| c.config_id).collect::<Vec<_>>(),
        vec![0, 1, 3]
    );
    assert_eq!(confs[0].key, None);
    assert_eq!(confs[1].key, Some(flowpin_lb_core::QuicLbKey([1; 16])));
    // Each configuration its own engine: constant-time unless chosen.
    assert_eq!(confs[1].engine, AesEngine::ConstantTime);
    assert_eq!(confs[2].engine, AesEngine::Table);
    assert!(desired.vips[&vip(1)].cid.check().is_ok());
}

#[test]
fn the_engine_is_stored_only_when_chosen_and_unknown_ones_are_refused() {
    let key = Some(QuicLbKey::new([7; 16]));
    let ct = QuicLbConfigSpec::new(4, 12, key);
    let json = serde_json::to_string(&ct).unwrap();
    assert!(!json.contains("engine"), "{json}");
    let table = ct.with_engine(QuicLbEngine::Table);
    let json = serde_json::to_string(&table).unwrap();
    assert!(json.contains(r#""engine":"table""#), "{json}");
    let back: QuicLbConfigSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back.engine, QuicLbEngine::Table);
    let explicit: QuicLbConfigSpec =
        serde_json::from_str(&json.replace("table", "constant-time")).unwrap();
    assert_eq!(explicit.engine, QuicLbEngine::ConstantTime);
    // An unknown engine does not parse; the error names the choices.
    let e = serde_json::from_str::<QuicLbConfigSpec>(&json.replace("table", "fast"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("constant-time") && e.contains("table"), "{e}");
    assert!(!e.contains("0707070707"), "key in the error: {e}");
    // The table engine without a key is refused by validation.
    let plain = QuicLbConfigSpec::new(4, 12, None).with_engine(QuicLbEngine::Table);
    let e = plain.config(1).unwrap_err();
    assert!(e.contains("encrypted"), "{e}");
    assert!(QuicLbConfigSpec::new(4, 12, None).config(1).is_ok());
    assert_eq!("table".parse::<QuicLbEngine>(), Ok(QuicLbEngine::Table));
    assert!("TABLE"
        .parse::<QuicLbEngine>()
        .unwrap_err()
        .contains("constant-time"));
}
