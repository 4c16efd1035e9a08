//! `flowpin-node vips`, `backends`, `vip add/remove`, `backend
//! drain/undrain` on the built binary against a real etcd (`LocalEtcd`);
//! and the same commands against an etcd with TLS (client certificates)
//! and authentication, configured through a role's `[registry]` section.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use flowpin_registry::local_etcd::{LocalEtcd, LocalEtcdOptions};
use flowpin_registry::{
    BackendSpec, BackendState, Proto, Registry, RegistryConfig, ServerId, Vip, VipFlags,
};
use flowpin_testing::unique_name;

fn node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowpin-node"))
        .args(args)
        .output()
        .expect("run flowpin-node")
}

fn ok(args: &[&str]) -> String {
    let o = node(args);
    assert!(
        o.status.success(),
        "flowpin-node {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn vip() -> Vip {
    Vip::new("10.100.0.1".parse().expect("ip"), 8080, Proto::Tcp)
}

#[test]
fn vips_backends_vip_add_and_backend_drain_against_etcd() {
    let rt = rt();
    let etcd = rt.block_on(LocalEtcd::start()).expect("etcd");
    let prefix = format!("/{}", unique_name("cli"));
    let ep = etcd.endpoint();
    let reg_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| (*s).to_string()).collect();
        v.extend([
            "--endpoints".into(),
            ep.clone(),
            "--prefix".into(),
            prefix.clone(),
        ]);
        v
    };
    let run = |extra: &[&str]| {
        let a = reg_args(extra);
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let run_json = |extra: &[&str]| {
        let mut a = reg_args(extra);
        a.push("--json".into());
        json(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // Empty registry.
    assert_eq!(run_json(&["vips"])["vips"], serde_json::json!([]));

    // vip add, then vips shows it with its flags.
    let out = run(&["vip", "add", "10.100.0.1:8080/tcp", "--server-id"]);
    assert!(out.contains("declared 10.100.0.1:8080/tcp"), "{out}");
    let v = run_json(&["vips"]);
    assert_eq!(v["vips"][0]["vip"], "10.100.0.1:8080/tcp", "{v}");
    assert_eq!(v["vips"][0]["flags"], "server_id", "{v}");
    assert_eq!(v["vips"][0]["backends"], 0, "{v}");

    // Two backends registered by a host (under its lease).
    let reg = rt
        .block_on(Registry::connect(RegistryConfig::new(
            [ep.clone()],
            &prefix,
        )))
        .expect("registry");
    let host = rt
        .block_on(async {
            let h = reg.register(Duration::from_secs(30)).await?;
            h.add_backends(&[
                (
                    vip(),
                    BackendSpec::new("10.2.1.2".parse().expect("ip"), 100, ServerId::new(11)),
                ),
                (
                    vip(),
                    BackendSpec::new("10.2.2.2".parse().expect("ip"), 50, ServerId::new(12)),
                ),
            ])
            .await?;
            Ok::<_, flowpin_registry::Error>(h)
        })
        .expect("register");

    let b = run_json(&["backends", "10.100.0.1:8080"]);
    let rows = b["backends"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{b}");
    assert_eq!(rows[0]["addr"], "10.2.1.2");
    assert_eq!(rows[0]["server_id"], 11);
    assert_eq!(rows[1]["weight"], 50);
    assert!(rows.iter().all(|r| r["state"] == "active"), "{b}");
    let table = run(&["backends"]);
    assert!(
        table.lines().next().is_some_and(|h| h.starts_with("VIP")),
        "{table}"
    );
    assert!(
        table.contains("10.2.2.2") && table.contains("active"),
        "{table}"
    );

    // backend drain: the registry says draining, the lease is the host's.
    let out = run(&["backend", "drain", "10.2.2.2"]);
    assert!(
        out.contains("drained 10.2.2.2 on 10.100.0.1:8080/tcp"),
        "{out}"
    );
    let snap = rt.block_on(reg.snapshot()).expect("snapshot");
    let entry = &snap.vips[&vip()];
    let b2: std::net::IpAddr = "10.2.2.2".parse().expect("ip");
    assert_eq!(entry.backends[&b2].state, BackendState::Draining);
    assert_eq!(entry.backends[&b2].weight, 50, "the weight stays");
    let lease = rt
        .block_on(async {
            let mut c = reg.etcd();
            c.get(reg.layout().backend(&vip(), b2), None).await
        })
        .expect("get")
        .kvs()[0]
        .lease();
    assert_eq!(
        lease,
        host.lease_id(),
        "the drained key keeps its host's lease"
    );
    let v = run_json(&["vips"]);
    assert_eq!(v["vips"][0]["draining"], 1, "{v}");
    assert_eq!(v["vips"][0]["active"], 1, "{v}");

    // undrain.
    run(&[
        "backend",
        "undrain",
        "10.2.2.2",
        "--vip",
        "10.100.0.1:8080/tcp",
    ]);
    let snap = rt.block_on(reg.snapshot()).expect("snapshot");
    assert_eq!(snap.vips[&vip()].backends[&b2].state, BackendState::Active);

    // A backend that is not registered: an error that says so.
    let a = reg_args(&["backend", "drain", "10.9.9.9"]);
    let o = node(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not registered"));

    // vip remove.
    run(&["vip", "remove", "10.100.0.1:8080/tcp"]);
    let snap = rt.block_on(reg.snapshot()).expect("snapshot");
    assert!(!snap.vips.contains_key(&vip()));
    drop(host);
    drop(etcd);
}

#[test]
fn an_unreachable_registry_is_an_error_not_a_hang() {
    let o = node(&[
        "vips",
        "--endpoints",
        "http://127.0.0.1:1",
        "--prefix",
        "/flowpin/none",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("etcd"), "{err}");
}

fn write_config(path: &Path, registry: &str) {
    std::fs::write(
        path,
        format!(
            r#"{registry}
[lb]
interface = "eth0"
pin_dir = "/sys/fs/bpf/flowpin/lb1"
local_mac = "02:00:00:00:00:01"
next_hop_mac = "02:00:00:00:00:02"

[metrics]
listen = "127.0.0.1:9100"
"#
        ),
    )
    .expect("write config");
}

/// etcd with TLS (client certificates required) and authentication: the
/// commands work with the `[registry]` TLS and user settings of a role's
/// config, and fail without the password or the client certificate.
#[test]
fn commands_use_registry_tls_and_auth_from_the_config() {
    let rt = rt();
    let etcd = rt
        .block_on(LocalEtcd::start_with(
            LocalEtcdOptions::default()
                .with_tls()
                .with_auth("root", "s3cret-pw"),
        ))
        .expect("etcd with TLS and auth");
    let tls = etcd.tls().expect("tls");
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("password");
    std::fs::write(&pw, "s3cret-pw\n").expect("password file");
    let prefix = format!("/{}", unique_name("tls"));
    let section = |cert: bool, user: bool| {
        let mut s = format!(
            "[registry]\nendpoints = [\"{}\"]\nprefix = \"{prefix}\"\n",
            etcd.endpoint()
        );
        if user {
            s.push_str(&format!(
                "user = \"root\"\npassword_file = \"{}\"\n",
                pw.display()
            ));
        }
        s.push_str(&format!(
            "[registry.tls]\nca_file = \"{}\"\n",
            tls.ca_file().display()
        ));
        if cert {
            s.push_str(&format!(
                "cert_file = \"{}\"\nkey_file = \"{}\"\n",
                tls.client_cert_file().display(),
                tls.client_key_file().display()
            ));
        }
        s
    };
    let good = dir.path().join("good.toml");
    write_config(&good, &section(true, true));
    let g = good.to_str().expect("utf-8");
    ok(&["check-config", g]);
    let out = ok(&["vip", "add", "10.100.0.1:8080", "--config", g]);
    assert!(out.contains("declared"), "{out}");
    let v = json(&["vips", "--config", g, "--json"]);
    assert_eq!(v["vips"][0]["vip"], "10.100.0.1:8080/tcp", "{v}");

    // The library with the same settings (the roles' path) sees it too.
    let snap = rt
        .block_on(async {
            Registry::connect(etcd.registry_config(&prefix))
                .await?
                .snapshot()
                .await
        })
        .expect("TLS + auth registry");
    assert!(snap.vips.contains_key(&vip()));
    let _ = VipFlags::NONE;

    for (what, cert, user, needle) in [
        ("no password", true, false, "permission denied"),
        ("no client certificate", false, true, "etcd"),
    ] {
        let bad = dir.path().join("bad.toml");
        write_config(&bad, &section(cert, user));
        let o = node(&["vips", "--config", bad.to_str().expect("utf-8")]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what}: accepted");
        assert!(err.to_lowercase().contains(needle), "{what}: {err}");
        assert!(
            !err.contains("s3cret-pw"),
            "{what}: the password is printed: {err}"
        );
    }
    // Plain http to a TLS etcd: refused.
    let o = node(&[
        "vips",
        "--endpoints",
        &etcd.endpoint().replace("https://", "http://"),
        "--prefix",
        &prefix,
    ]);
    assert!(!o.status.success(), "plain http to a TLS etcd was accepted");
}

/// `vip health`: a valid check is stored with the VIP, an invalid one is
/// refused with its reason (nothing written), `--remove` removes it.
#[test]
fn vip_health_sets_refuses_and_removes_a_check() {
    let rt = rt();
    let etcd = rt.block_on(LocalEtcd::start()).expect("etcd");
    let prefix = format!("/{}", unique_name("clihealth"));
    let ep = etcd.endpoint();
    let with_reg = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| (*s).to_string()).collect();
        v.extend([
            "--endpoints".into(),
            ep.clone(),
            "--prefix".into(),
            prefix.clone(),
        ]);
        v
    };
    let run = |extra: &[&str]| {
        node(
            &with_reg(extra)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
    };
    assert!(run(&["vip", "add", "10.100.0.1:8080/tcp"]).status.success());
    let o = run(&[
        "vip",
        "health",
        "10.100.0.1:8080/tcp",
        "--kind",
        "http",
        "--path",
        "/healthz",
        "--interval-ms",
        "1000",
        "--fall",
        "3",
        "--rise",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("health check set"));
    let reg = rt
        .block_on(Registry::connect(RegistryConfig::new(
            [ep.clone()],
            &prefix,
        )))
        .expect("registry");
    let snap = rt.block_on(reg.snapshot()).expect("snapshot");
    let check = snap.vips[&vip()]
        .health
        .check
        .clone()
        .expect("check stored");
    assert_eq!(check.interval_ms, 1000);
    assert_eq!((check.rise, check.fall), (2, 3));
    assert_eq!(check.probe.name(), "http");
    // fall 0 is refused with the reason, and the stored check is unchanged.
    let o = run(&[
        "vip",
        "health",
        "10.100.0.1:8080/tcp",
        "--kind",
        "tcp",
        "--fall",
        "0",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("fall"), "{err}");
    let snap = rt.block_on(reg.snapshot()).expect("snapshot");
    assert_eq!(snap.vips[&vip()].health.check.as_ref(), Some(&check));
    // --remove.
    assert!(run(&["vip", "health", "10.100.0.1:8080/tcp", "--remove"])
        .status
        .success());
    let snap = rt.block_on(reg.snapshot()).expect("snapshot");
    assert!(snap.vips[&vip()].health.check.is_none());
    assert!(!run(&["vip", "health", "10.100.0.1:8080/tcp", "--remove"])
        .status
        .success());
}
