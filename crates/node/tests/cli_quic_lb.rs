//! `flowpin-node quic-lb encode|decode` (the draft's test vectors) and
//! `flowpin-node vip quic-lb add|retire` on the built binary against a real
//! etcd (`LocalEtcd`). The key is given by file or environment and never
//! printed.

use std::process::{Command, Output};

use flowpin_registry::local_etcd::LocalEtcd;
use flowpin_registry::quic_lb::{QuicLbConfigState, QuicLbEngine};
use flowpin_registry::{Proto, Registry, RegistryConfig, Vip};
use flowpin_testing::unique_name;

/// The draft's test-vector key.
const KEY_HEX: &str = "8f95f09245765f80256934e50c66207f";

fn node(args: &[&str], key_env: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowpin-node"));
    c.args(args).env_remove("FLOWPIN_QUIC_LB_KEY");
    if let Some(k) = key_env {
        c.env("FLOWPIN_QUIC_LB_KEY", k);
    }
    c.output().expect("run flowpin-node")
}

fn ok(args: &[&str], key_env: Option<&str>) -> String {
    let o = node(args, key_env);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "flowpin-node {args:?} failed: {err}");
    assert!(
        !out.contains(KEY_HEX) && !err.contains(KEY_HEX),
        "key printed: {out}{err}"
    );
    out
}

#[test]
fn quic_lb_encode_decode_match_the_drafts_vectors() {
    let cfg = [
        "--config-id",
        "0",
        "--server-id-len",
        "3",
        "--nonce-len",
        "4",
    ];
    // Four-pass (the draft's first encrypted vector), key from the environment.
    let mut enc = vec!["quic-lb", "encode"];
    enc.extend(cfg);
    enc.extend(["--server-id", "ed793a", "--nonce", "ee080dbf"]);
    let out = ok(&enc, Some(KEY_HEX));
    assert!(out.contains("cid=0720b1d07b359d3c"), "{out}");
    assert!(out.contains("mode=four-pass"), "{out}");
    // The same from a key file.
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY_HEX}\n")).expect("key file");
    let mut dec = vec!["quic-lb", "decode"];
    dec.extend(cfg);
    dec.extend([
        "--key-file",
        key_file.to_str().expect("path"),
        "0720b1d07b359d3c",
    ]);
    let out = ok(&dec, None);
    assert!(out.contains("server_id=ed793a nonce=ee080dbf"), "{out}");
    // Plaintext: the server ID in clear after the first octet.
    let out = ok(
        &[
            "quic-lb",
            "encode",
            "--config-id",
            "1",
            "--server-id-len",
            "2",
            "--nonce-len",
            "4",
            "--flowpin-id",
            "258",
            "--nonce",
            "01020304",
        ],
        None,
    );
    assert!(out.contains("cid=26010201020304"), "{out}");
    // Another codepoint is unroutable under config 0.
    let mut dec = vec!["quic-lb", "decode"];
    dec.extend(cfg);
    dec.extend(["--plaintext", "2601020102030400"]);
    let out = ok(&dec, None);
    assert!(out.contains("unroutable: codepoint 1"), "{out}");
    // A key on argv is not an option.
    let o = node(&["quic-lb", "decode", "--key", KEY_HEX, "00"], None);
    assert!(!o.status.success());
    // --help on each.
    for sub in [
        &["quic-lb", "--help"][..],
        &["quic-lb", "encode", "--help"],
        &["quic-lb", "decode", "--help"],
        &["vip", "quic-lb", "--help"],
        &["vip", "quic-lb", "add", "--help"],
        &["vip", "quic-lb", "retire", "--help"],
    ] {
        let out = ok(sub, None);
        assert!(out.contains("Usage: flowpin-node"), "{sub:?}: {out}");
    }
}

#[test]
fn vip_quic_lb_add_and_retire_against_etcd() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let etcd = rt.block_on(LocalEtcd::start()).expect("etcd");
    let prefix = format!("/{}", unique_name("cliqlb"));
    let ep = etcd.endpoint();
    let reg = rt
        .block_on(Registry::connect(RegistryConfig::new(
            [ep.clone()],
            &prefix,
        )))
        .expect("registry");
    let at = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| (*s).to_string()).collect();
        v.extend([
            "--endpoints".into(),
            ep.clone(),
            "--prefix".into(),
            prefix.clone(),
        ]);
        v
    };
    let run = |extra: &[&str], key: Option<&str>| {
        let a = at(extra);
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>(), key)
    };
    let vip_s = "10.100.0.9:443/udp";
    let vip = Vip::new("10.100.0.9".parse().expect("ip"), 443, Proto::Udp);
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY_HEX).expect("key file");

    let out = run(
        &[
            "vip",
            "quic-lb",
            "add",
            vip_s,
            "--id",
            "0",
            "--server-id-len",
            "2",
            "--nonce-len",
            "6",
        ],
        None,
    );
    assert!(
        out.contains("added QUIC-LB config 0 of 10.100.0.9:443/udp, plaintext"),
        "{out}"
    );
    let out = run(
        &[
            "vip",
            "quic-lb",
            "add",
            vip_s,
            "--id",
            "1",
            "--server-id-len",
            "4",
            "--nonce-len",
            "12",
            "--key-file",
            key_file.to_str().expect("path"),
            "--json",
        ],
        None,
    );
    let j: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(j["encrypted"], true, "{out}");
    assert_eq!(j["engine"], "constant-time", "{out}");
    let view = rt.block_on(reg.quic_lb_view()).expect("view");
    assert_eq!(view.configs[1].spec.engine, QuicLbEngine::ConstantTime);
    let got: Vec<_> = view
        .configs
        .iter()
        .map(|c| {
            (
                c.at.vip,
                c.at.config_id,
                c.spec.server_id_len,
                c.spec.nonce_len,
                c.spec.key.is_some(),
            )
        })
        .collect();
    assert_eq!(got, vec![(vip, 0, 2, 6, false), (vip, 1, 4, 12, true)]);
    assert_eq!(
        view.configs[1].spec.key.map(|k| k.expose_hex()),
        Some(KEY_HEX.to_string())
    );

    // The table engine, chosen explicitly; an unknown one is refused with
    // the choices, before anything is written.
    let out = run(
        &[
            "vip",
            "quic-lb",
            "add",
            vip_s,
            "--id",
            "2",
            "--server-id-len",
            "4",
            "--nonce-len",
            "12",
            "--key-file",
            key_file.to_str().expect("path"),
            "--engine",
            "table",
        ],
        None,
    );
    assert!(
        out.contains("added QUIC-LB config 2 of 10.100.0.9:443/udp, encrypted, table AES"),
        "{out}"
    );
    let a = at(&[
        "vip",
        "quic-lb",
        "add",
        vip_s,
        "--id",
        "3",
        "--server-id-len",
        "4",
        "--nonce-len",
        "12",
        "--key-file",
        key_file.to_str().expect("path"),
        "--engine",
        "fast",
    ]);
    let o = node(&a.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("constant-time") && err.contains("table"),
        "{err}"
    );
    let view = rt.block_on(reg.quic_lb_view()).expect("view");
    assert_eq!(
        view.configs
            .iter()
            .map(|c| (c.at.config_id, c.spec.engine))
            .collect::<Vec<_>>(),
        vec![
            (0, QuicLbEngine::ConstantTime),
            (1, QuicLbEngine::ConstantTime),
            (2, QuicLbEngine::Table)
        ]
    );

    // A taken codepoint is refused with what to do.
    let a = at(&[
        "vip",
        "quic-lb",
        "add",
        vip_s,
        "--id",
        "0",
        "--server-id-len",
        "2",
        "--nonce-len",
        "6",
    ]);
    let o = node(&a.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("in use"),
        "{o:?}"
    );

    let out = run(&["vip", "quic-lb", "retire", vip_s, "--id", "0"], None);
    assert!(out.contains("retiring QUIC-LB config 0"), "{out}");
    let view = rt.block_on(reg.quic_lb_view()).expect("view");
    assert_eq!(view.configs[0].spec.state, QuicLbConfigState::Retiring);
    assert_eq!(view.configs[1].spec.state, QuicLbConfigState::Active);
    // Retiring a codepoint that has no configuration fails.
    let a = at(&["vip", "quic-lb", "retire", vip_s, "--id", "5"]);
    let o = node(&a.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no QUIC-LB configuration 5"));
}
