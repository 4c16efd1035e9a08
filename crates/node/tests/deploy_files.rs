//! The files an operator copies stay valid: every example config under
//! `crates/node/examples/` passes `flowpin-node check-config`, the systemd
//! units under `crates/node/deploy/systemd/` run commands and configs that
//! exist (and pass `systemd-analyze verify` where systemd's tools are
//! installed), and the status/metrics listener defaults to loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowpin-node"))
        .args(args)
        .output()
        .expect("run flowpin-node")
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_config_is_valid() {
    let examples = files(&crate_dir().join("examples"), "toml");
    let names: Vec<String> = examples
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    for want in ["lb.toml", "backend.toml", "client.toml"] {
        assert!(
            names.iter().any(|n| n == want),
            "examples/{want} missing: {names:?}"
        );
    }
    for p in &examples {
        let o = node(&["check-config", p.to_str().expect("utf-8")]);
        assert!(
            o.status.success(),
            "{} is not valid: {}",
            p.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn the_metrics_listener_defaults_to_loopback() {
    let lb = std::fs::read_to_string(crate_dir().join("examples/lb.toml")).expect("lb.toml");
    let (without, _) = lb.split_once("[metrics]").expect("a [metrics] section");
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("lb.toml");
    std::fs::write(&p, without).expect("write");
    let o = node(&["check-config", p.to_str().expect("utf-8")]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("metrics 127.0.0.1:9100"), "{out}");
}

/// `(directive, arguments after the binary)` of every Exec line of a unit.
fn execs(unit: &str) -> Vec<(String, Vec<String>)> {
    unit.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("Exec"))
        .filter_map(|(k, v)| {
            let mut words = v.split_whitespace();
            (words.next()? == "/usr/local/bin/flowpin-node")
                .then(|| (k.to_string(), words.map(str::to_string).collect()))
        })
        .collect()
}

#[test]
fn the_systemd_units_run_existing_commands_on_the_example_configs() {
    let units = files(&crate_dir().join("deploy/systemd"), "service");
    for role in ["lb", "backend", "client"] {
        assert!(
            units
                .iter()
                .any(|u| u.ends_with(format!("flowpin-{role}.service"))),
            "no unit for the {role} role: {units:?}"
        );
    }
    for role in ["lb", "backend", "client"] {
        let text = std::fs::read_to_string(
            crate_dir().join(format!("deploy/systemd/flowpin-{role}.service")),
        )
        .expect("unit");
        let e = execs(&text);
        let start = e.iter().find(|(k, _)| k == "ExecStart").expect("ExecStart");
        let conf = format!("/etc/flowpin/{role}.toml");
        assert_eq!(
            start.1,
            vec![role.to_string(), "--config".into(), conf.clone()]
        );
        let pre = e
            .iter()
            .find(|(k, _)| k == "ExecStartPre")
            .expect("ExecStartPre");
        assert_eq!(pre.1[..2], ["check-config".to_string(), conf]);
        // The same command line, on the example config, is accepted.
        let example = crate_dir().join(format!("examples/{role}.toml"));
        let mut args: Vec<String> = pre.1.clone();
        args[1] = example.to_string_lossy().into_owned();
        let o = node(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = node(&[role, "--help"]);
        assert!(o.status.success(), "flowpin-node {role} --help");
        assert!(
            text.contains("ExecReload=/bin/kill -HUP $MAINPID"),
            "{role}: reload is SIGHUP"
        );
    }
}

/// `systemd-analyze verify` on each unit, the binary path pointed at the
/// built one: no error, no warning (unknown keys, bad values).
#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: the units' syntax is not verified here");
        return;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    for unit in files(&crate_dir().join("deploy/systemd"), "service") {
        let text = std::fs::read_to_string(&unit).expect("unit").replace(
            "/usr/local/bin/flowpin-node",
            env!("CARGO_BIN_EXE_flowpin-node"),
        );
        let copy = dir.path().join(unit.file_name().expect("name"));
        std::fs::write(&copy, text).expect("write");
        let o = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy)
            .output()
            .expect("systemd-analyze");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && err.trim().is_empty(),
            "{}: {err}",
            unit.display()
        );
    }
}
