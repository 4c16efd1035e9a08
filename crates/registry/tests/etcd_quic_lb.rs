//! QUIC-LB configurations and their rotation against a real etcd.

mod support;

use std::time::Duration;

use flowpin_registry::quic_lb::{issue_choice, QuicLbConfigSpec, QuicLbConfigState, QuicLbEngine};
use flowpin_registry::{Error, Proto, Vip};
use flowpin_tcp_opt::quic_lb::QuicLbKey;
use support::{etcd, registry};

fn vip() -> Vip {
    Vip::new("10.0.0.9".parse().expect("ip"), 443, Proto::Udp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_in_the_drafts_order_on_etcd() {
    let Some(etcd) = etcd("rotation_in_the_drafts_order_on_etcd").await else {
        return;
    };
    let reg = registry(&etcd.endpoint()).await;
    let key: QuicLbKey = "8f95f09245765f80256934e50c66207f".parse().expect("key");

    // Config 0, plaintext. Its codepoint cannot be taken again, nor can a
    // TCP VIP or an invalid config be stored.
    let rev0 = reg
        .put_quic_lb_config(&vip(), 0, &QuicLbConfigSpec::new(2, 6, None))
        .await
        .expect("put config 0");
    let again = reg
        .put_quic_lb_config(&vip(), 0, &QuicLbConfigSpec::new(2, 6, None))
        .await;
    assert!(matches!(again, Err(Error::Invalid { .. })), "{again:?}");
    let tcp = Vip::new("10.0.0.9".parse().expect("ip"), 443, Proto::Tcp);
    assert!(reg
        .put_quic_lb_config(&tcp, 1, &QuicLbConfigSpec::new(2, 6, None))
        .await
        .is_err());
    let e = reg
        .put_quic_lb_config(&vip(), 1, &QuicLbConfigSpec::new(15, 5, Some(key)))
        .await
        .expect_err("sid + nonce > 19");
    assert!(e.to_string().contains("at most 19"), "{e}");
    assert!(!e.to_string().contains("8f95f0"), "{e}");

    // Two live LBs; until both acknowledged config 0, nothing is issuable.
    let ttl = Duration::from_secs(10);
    let lb1 = reg.quic_lb_acker("lb1", ttl).await.expect("lb1");
    let lb2 = reg.quic_lb_acker("lb2", ttl).await.expect("lb2");
    let view = reg.quic_lb_view().await.expect("view");
    assert_eq!(view.configs.len(), 1);
    assert!(view.rejected.is_empty(), "{:?}", view.rejected);
    let c0 = view.configs[0].at;
    assert_eq!((c0.config_id, c0.revision), (0, rev0));
    assert!(view.issuable().is_empty(), "no LB acked yet");
    lb1.set([c0]).await.expect("ack");
    assert!(
        reg.quic_lb_view()
            .await
            .expect("view")
            .issuable()
            .is_empty(),
        "lb2 has not"
    );
    lb2.set([c0]).await.expect("ack");
    assert_eq!(reg.quic_lb_view().await.expect("view").issuable().len(), 1);

    // Config 1, encrypted: servers keep issuing 0 until both LBs have 1.
    reg.put_quic_lb_config(&vip(), 1, &QuicLbConfigSpec::new(2, 6, Some(key)))
        .await
        .expect("put config 1");
    let view = reg.quic_lb_view().await.expect("view");
    assert!(
        !format!("{view:?}").contains("8f95f0"),
        "keys never in Debug"
    );
    let c1 = view
        .configs
        .iter()
        .find(|c| c.at.config_id == 1)
        .expect("config 1")
        .at;
    let choice = |v: &flowpin_registry::QuicLbView| {
        issue_choice(&vip(), &v.configs, &v.lb_acks).map(|c| c.at.config_id)
    };
    assert_eq!(choice(&view), Some(0));
    lb1.set([c0, c1]).await.expect("ack");
    assert_eq!(choice(&reg.quic_lb_view().await.expect("view")), Some(0));
    lb2.set([c0, c1]).await.expect("ack");
    let view = reg.quic_lb_view().await.expect("view");
    assert_eq!(choice(&view), Some(1));
    assert_eq!(
        view.configs
            .iter()
            .find(|c| c.at.config_id == 1)
            .expect("c1")
            .config
            .key(),
        Some(&key)
    );

    // Retire 0: still stored (routable) while a server reports it.
    assert!(reg.retire_quic_lb_config(&vip(), 0).await.expect("retire"));
    let server = reg
        .quic_lb_server_reporter("host-a", ttl)
        .await
        .expect("server");
    server.set([c0, c1]).await.expect("report");
    let view = reg.quic_lb_view().await.expect("view");
    let r0 = view
        .configs
        .iter()
        .find(|c| c.at.config_id == 0)
        .expect("c0");
    assert_eq!(r0.spec.state, QuicLbConfigState::Retiring);
    assert_eq!(choice(&view), Some(1));
    assert!(reg
        .collect_retired_quic_lb(Duration::ZERO)
        .await
        .expect("collect")
        .is_empty());
    server.set([c1]).await.expect("report");
    let gone = reg
        .collect_retired_quic_lb(Duration::ZERO)
        .await
        .expect("collect");
    assert_eq!(
        gone.iter().map(|c| c.config_id).collect::<Vec<_>>(),
        vec![0]
    );
    assert_eq!(reg.quic_lb_view().await.expect("view").configs.len(), 1);
    // The codepoint is free again.
    reg.put_quic_lb_config(&vip(), 0, &QuicLbConfigSpec::new(3, 5, Some(key)))
        .await
        .expect("reuse codepoint 0");

    // An LB that goes away no longer holds rotation back; with none, nothing
    // is issuable.
    lb2.revoke().await.expect("revoke");
    let view = reg.quic_lb_view().await.expect("view");
    assert_eq!(view.lb_acks.len(), 1);
    assert_eq!(choice(&view), Some(1));
    lb1.revoke().await.expect("revoke");
    assert!(reg
        .quic_lb_view()
        .await
        .expect("view")
        .issuable()
        .is_empty());

    // The LB's routing snapshot is not disturbed by the quic_lb keys.
    let watch = reg.watch().await.expect("watch");
    let snap = watch.current();
    assert_eq!(snap.reject_counts.total(), 0, "{:?}", snap.rejected);
}

/// A configuration's AES engine on etcd: the table engine chosen
/// explicitly is stored and read back, the default is constant-time; an
/// unknown engine or `table` without a key is refused by
/// `put_quic_lb_config` and, written behind its back, rejected by the view
/// with the reason (never among the configurations). The config watch
/// wakes on a configuration's change, not on an acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_are_stored_validated_and_watched() {
    let Some(etcd) = etcd("engines_are_stored_validated_and_watched").await else {
        return;
    };
    let reg = registry(&etcd.endpoint()).await;
    let key: QuicLbKey = "8f95f09245765f80256934e50c66207f".parse().expect("key");
    let mut watch = reg.watch_quic_lb_configs();
    // The first wake-up: the watch is established.
    tokio::time::timeout(Duration::from_secs(5), watch.changed())
        .await
        .expect("watch established");

    reg.put_quic_lb_config(&vip(), 0, &QuicLbConfigSpec::new(4, 12, Some(key)))
        .await
        .expect("put config 0");
    tokio::time::timeout(Duration::from_secs(2), watch.changed())
        .await
        .expect("woken by config 0");
    reg.put_quic_lb_config(
        &vip(),
        1,
        &QuicLbConfigSpec::new(4, 12, Some(key)).with_engine(QuicLbEngine::Table),
    )
    .await
    .expect("put config 1");
    tokio::time::timeout(Duration::from_secs(2), watch.changed())
        .await
        .expect("woken by config 1");
    let e = reg
        .put_quic_lb_config(
            &vip(),
            2,
            &QuicLbConfigSpec::new(4, 12, None).with_engine(QuicLbEngine::Table),
        )
        .await
        .expect_err("table without a key");
    assert!(e.to_string().contains("encrypted"), "{e}");

    // Behind the registry's back: an unknown engine.
    let bad = format!(
        "{}quic_lb/configs/udp/10.0.0.9/443/3",
        reg.layout().prefix()
    );
    reg.etcd()
        .put(
            bad.as_bytes(),
            r#"{"server_id_len":4,"nonce_len":12,"key":"8f95f09245765f80256934e50c66207f","engine":"fast"}"#,
            None,
        )
        .await
        .expect("raw put");
    tokio::time::timeout(Duration::from_secs(2), watch.changed())
        .await
        .expect("woken by the bad value too");
    let view = reg.quic_lb_view().await.expect("view");
    let engines: Vec<(u8, QuicLbEngine)> = view
        .configs
        .iter()
        .map(|c| (c.at.config_id, c.spec.engine))
        .collect();
    assert_eq!(
        engines,
        vec![(0, QuicLbEngine::ConstantTime), (1, QuicLbEngine::Table)]
    );
    assert_eq!(view.rejected.len(), 1, "{:?}", view.rejected);
    let (k, why) = &view.rejected[0];
    assert_eq!(k, &bad);
    assert!(
        why.contains("fast") && why.contains("constant-time") && why.contains("table"),
        "{why}"
    );
    assert!(!why.contains("8f95f0"), "key in the reason: {why}");
    // The stored JSON: "engine" only when chosen.
    let raw = reg
        .etcd()
        .get(
            format!(
                "{}quic_lb/configs/udp/10.0.0.9/443/0",
                reg.layout().prefix()
            ),
            None,
        )
        .await
        .expect("get");
    let text = String::from_utf8_lossy(raw.kvs()[0].value()).to_string();
    assert!(!text.contains("engine"), "{text}");

    // An acknowledgement does not wake it.
    let lb = reg
        .quic_lb_acker("lb1", Duration::from_secs(10))
        .await
        .expect("acker");
    lb.set(view.configs.iter().map(|c| c.at))
        .await
        .expect("ack");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), watch.changed())
            .await
            .is_err(),
        "an acknowledgement woke the config watch"
    );
}
