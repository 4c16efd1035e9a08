//! The `flowpin-node` binary the fleet runs, found through cargo rather
//! than by a path: the lab runs `cargo build -p flowpin-node --bin
//! flowpin-node --message-format=json-render-diagnostics` in the lab's own
//! profile (dev under `cargo run --example lab`, release under `cargo run
//! --release --example lab`) and takes the `executable` of the
//! `flowpin-node` bin artifact. Up to date, that build takes a moment.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::Error;

/// One line of cargo's JSON output; only compiler artifacts matter here.
#[derive(Deserialize)]
struct Message {
    reason: String,
    #[serde(default)]
    target: Option<Target>,
    #[serde(default)]
    executable: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

/// The profile this lab binary was built with: `release` without debug
/// assertions (`--release`), `dev` with them.
pub(crate) fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    }
}

/// Builds `flowpin-node` (a no-op when up to date) and returns its path.
/// `FLOWPIN_NODE=<path>` names a binary to run instead, unbuilt.
pub(crate) fn node_binary() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os("FLOWPIN_NODE") {
        return Ok(PathBuf::from(p));
    }
    // `cargo run` tells the program which cargo ran it.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    crate::progress(format!(
        "cargo build --profile {} -p flowpin-node (the fleet's binary)",
        profile()
    ));
    let mut child = Command::new(&cargo)
        .args(["build", "--quiet", "--profile", profile()])
        .args(["-p", "flowpin-node", "--bin", "flowpin-node"])
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(manifest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run {} to build flowpin-node ({e}): run the lab through cargo, or set FLOWPIN_NODE to a flowpin-node binary",
                cargo.to_string_lossy()
            )
        })?;
    let stdout = child.stdout.take().ok_or("cargo: no stdout")?;
    let mut exe = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        // Lines that are not JSON messages (none expected) are skipped.
        let Ok(m) = serde_json::from_str::<Message>(&line) else {
            continue;
        };
        let is_node_bin = m
            .target
            .as_ref()
            .is_some_and(|t| t.name == "flowpin-node" && t.kind.iter().any(|k| k == "bin"));
        if m.reason == "compiler-artifact" && is_node_bin {
            exe = m.executable.or(exe);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(
            format!("cargo build -p flowpin-node failed ({status}); see its output above").into(),
        );
    }
    exe.ok_or_else(|| {
        "cargo build -p flowpin-node reported no flowpin-node executable"
            .to_string()
            .into()
    })
}
