//! The registry against an etcd with TLS (client certificates required)
//! and authentication enabled (`LocalEtcd`'s TLS + auth mode): every path a
//! role uses (VIP writes, a lease-kept registration, a server_id claim, a
//! watch) works with the right settings, and is refused without them.

use std::time::Duration;

use flowpin_registry::local_etcd::{LocalEtcd, LocalEtcdOptions};
use flowpin_registry::{
    BackendSpec, EtcdCredentials, Proto, Registry, RegistryConfig, ServerId, Vip, VipFlags, VipSpec,
};

fn vip() -> Vip {
    Vip::new("10.0.0.1".parse().expect("ip"), 80, Proto::Tcp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn every_registry_path_works_over_tls_with_auth_and_fails_without() {
    let etcd = LocalEtcd::start_with(
        LocalEtcdOptions::default()
            .with_tls()
            .with_auth("flowpin", "pw-not-in-logs"),
    )
    .await
    .expect("etcd with TLS and auth");
    assert!(etcd.endpoint().starts_with("https://"));
    let reg = Registry::connect(etcd.registry_config("/tls"))
        .await
        .expect("connect with TLS + credentials");
    reg.put_vip(&VipSpec::new(vip(), VipFlags::SERVER_ID))
        .await
        .expect("put VIP");
    let claim = reg.allocate_server_id("host-a").await.expect("claim");
    let host = reg.register(Duration::from_secs(2)).await.expect("lease");
    host.add_backend(
        &vip(),
        &BackendSpec::new(
            "10.1.0.2".parse().expect("ip"),
            100,
            Some(claim.server_id()),
        ),
    )
    .await
    .expect("backend");
    let mut w = reg.watch().await.expect("watch");
    let snap = tokio::time::timeout(
        Duration::from_secs(5),
        w.wait_for(|s| s.vips.get(&vip()).is_some_and(|e| e.backends.len() == 1)),
    )
    .await
    .expect("watch sees the backend")
    .expect("watch alive");
    assert_eq!(
        snap.vips[&vip()]
            .backends
            .values()
            .next()
            .expect("one")
            .server_id,
        ServerId::new(claim.server_id().into())
    );
    // The lease outlives its TTL: keep-alives pass auth.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        reg.snapshot().await.expect("snapshot").vips[&vip()]
            .backends
            .len(),
        1,
        "the lease expired: keep-alives failed over TLS/auth"
    );

    // Without credentials: the certificate alone grants nothing.
    let mut no_user = etcd.registry_config("/tls");
    no_user.credentials = None;
    let r = async { Registry::connect(no_user).await?.snapshot().await }.await;
    let e = r.expect_err("read without a user was allowed").to_string();
    assert!(e.contains("permission denied"), "{e}");
    // A wrong password.
    let mut wrong = etcd.registry_config("/tls");
    wrong.credentials = Some(EtcdCredentials::new("flowpin", "wrong"));
    let e = Registry::connect(wrong)
        .await
        .expect_err("wrong password accepted");
    assert!(!e.to_string().contains("pw-not-in-logs"));
    // Without a client certificate (etcd requires one).
    let mut no_cert = etcd.registry_config("/tls");
    no_cert.tls = Some(flowpin_registry::EtcdTls::new(
        etcd.tls().expect("tls").ca_pem().as_bytes(),
    ));
    assert!(
        async { Registry::connect(no_cert).await?.snapshot().await }
            .await
            .is_err(),
        "no client certificate accepted"
    );
    // Without TLS at all.
    let plain = RegistryConfig::new([etcd.endpoint().replace("https://", "http://")], "/tls");
    assert!(
        async { Registry::connect(plain).await?.snapshot().await }
            .await
            .is_err(),
        "plain http accepted by a TLS etcd"
    );
    drop(host);
    drop(claim);
}
