//! The command line as outside programs see it: `--help`, `--version`,
//! `check-config` (a valid file of each role, and each kind of invalid
//! one) run on the built binary.

use std::path::Path;
use std::process::{Command, Output};

fn node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowpin-node"))
        .args(args)
        .output()
        .expect("run flowpin-node")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_command() {
    let o = node(&["--help"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    for cmd in [
        "lb",
        "backend",
        "status",
        "vips",
        "backends",
        "stats",
        "vip",
        "check-config",
    ] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{cmd} "))),
            "--help does not list `{cmd}`:\n{out}"
        );
    }
}

#[test]
fn every_command_has_help() {
    for cmd in [
        &["lb"][..],
        &["backend"],
        &["backend", "drain"],
        &["backend", "undrain"],
        &["status"],
        &["stats"],
        &["vips"],
        &["backends"],
        &["vip"],
        &["vip", "add"],
        &["vip", "remove"],
        &["check-config"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let o = node(&args);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{args:?}: {err}");
        assert!(out.contains("Usage: flowpin-node"), "{args:?}:\n{out}");
    }
}

#[test]
fn version_names_the_package_version_and_the_commit() {
    let o = node(&["--version"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.starts_with(&format!("flowpin-node {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(out.contains("commit "), "{out}");
}

const LB: &str = r#"
[registry]
endpoints = ["http://127.0.0.1:2379"]
prefix = "/flowpin/test"

[lb]
interface = "eth0"
pin_dir = "/sys/fs/bpf/flowpin/lb1"
local_mac = "02:00:00:00:00:01"
next_hop_mac = "02:00:00:00:00:02"

[metrics]
listen = "127.0.0.1:9100"
"#;

const BACKEND: &str = r#"
[registry]
endpoints = ["http://127.0.0.1:2379"]
prefix = "/flowpin/test"

[backend]
host = "be1"
address = "10.2.1.2"
interface = "eth0"
cgroup = "/sys/fs/cgroup/web"
vips = [{ addr = "10.100.0.1", port = 8080 }]
"#;

fn check(dir: &Path, name: &str, body: &str, extra: &[&str]) -> (bool, String, String) {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write config");
    let p = path.to_str().expect("utf-8 path");
    let mut args = vec!["check-config", p];
    args.extend_from_slice(extra);
    let o = node(&args);
    let (out, err) = text(&o);
    (o.status.success(), out, err)
}

#[test]
fn check_config_accepts_valid_files_of_each_role() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, out, err) = check(dir.path(), "lb.toml", LB, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("valid lb config"), "{out}");
    let (ok, out, err) = check(dir.path(), "backend.toml", BACKEND, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("valid backend config"), "{out}");
    // --role names the role explicitly.
    let (ok, _, err) = check(dir.path(), "b2.toml", BACKEND, &["--role", "backend"]);
    assert!(ok, "{err}");
}

/// Each kind of invalid file: exit 1, and the reason (the field or the
/// problem) on stderr.
#[test]
fn check_config_rejects_each_kind_of_invalid_file_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = LB.replace("http://", "https://").replace(
        "prefix = \"/flowpin/test\"",
        "prefix = \"/flowpin/test\"\n[registry.tls]\nca_file = \"/nonexistent/ca.pem\"",
    );
    let cases: Vec<(&str, String, &[&str], &str)> = vec![
        ("not toml", "[lb\n".into(), &[], "config"),
        (
            "no role table",
            "[registry]\nendpoints = []\nprefix = \"/x\"\n".into(),
            &[],
            "cannot tell the role",
        ),
        (
            "two roles",
            format!("{LB}\n[backend]\nhost = \"x\"\n"),
            &[],
            "several roles",
        ),
        (
            "unknown field",
            LB.replace("[metrics]", "colour = \"blue\"\n[metrics]"),
            &[],
            "colour",
        ),
        (
            "bad mac",
            LB.replace("02:00:00:00:00:01", "02:00:00:00:01"),
            &[],
            "lb.local_mac",
        ),
        (
            "pin dir off bpffs",
            LB.replace("/sys/fs/bpf/flowpin/lb1", "/tmp/pins"),
            &[],
            "lb.pin_dir",
        ),
        (
            "bad ring size",
            LB.replace("[metrics]", "ring_size = 65536\n[metrics]"),
            &[],
            "lb.ring_size",
        ),
        (
            "no endpoints",
            LB.replace("[\"http://127.0.0.1:2379\"]", "[]"),
            &[],
            "registry.endpoints",
        ),
        (
            "endpoint not a url",
            LB.replace("http://127.0.0.1:2379", "127.0.0.1:2379"),
            &[],
            "registry.endpoints",
        ),
        (
            "bad prefix",
            LB.replace("/flowpin/test", "flowpin"),
            &[],
            "registry.prefix",
        ),
        (
            "https without tls",
            LB.replace("http://", "https://"),
            &[],
            "registry.tls",
        ),
        ("tls ca file missing", tls, &[], "/nonexistent/ca.pem"),
        (
            "user without password",
            LB.replace(
                "prefix = \"/flowpin/test\"",
                "prefix = \"/flowpin/test\"\nuser = \"flowpin\"",
            ),
            &[],
            "registry.password_file",
        ),
        (
            "backend weight",
            BACKEND.replace("vips =", "weight = 70000\nvips ="),
            &[],
            "backend.weight",
        ),
        (
            "backend no vips",
            BACKEND.replace(
                "vips = [{ addr = \"10.100.0.1\", port = 8080 }]",
                "vips = []",
            ),
            &[],
            "backend.vips",
        ),
        (
            "backend bad proto",
            BACKEND.replace("port = 8080 }", "port = 8080, proto = \"sctp\" }"),
            &[],
            "backend.vips.proto",
        ),
        ("wrong --role", LB.into(), &["--role", "backend"], "backend"),
    ];
    for (what, body, extra, needle) in cases {
        let (ok, out, err) = check(dir.path(), "bad.toml", &body, extra);
        assert!(!ok, "{what}: accepted:\n{out}");
        assert!(
            err.contains(needle),
            "{what}: the reason does not mention {needle:?}:\n{err}"
        );
    }
    let missing = dir.path().join("missing.toml");
    let o = node(&["check-config", missing.to_str().expect("utf-8")]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("cannot read config"), "{}", text(&o).1);
}
