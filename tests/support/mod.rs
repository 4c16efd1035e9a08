//! Shared by the privileged tests that run an example binary end to end.

use std::path::PathBuf;
use std::process::Command;

/// Runs `target/<profile>/examples/<name>` (built next to the test by
/// `cargo test --all-targets`) with `args`, asserts it exited 0, and
/// returns its standard output.
pub(crate) fn run_example(name: &str, args: &[&str]) -> String {
    // target/<profile>/deps/<this test> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let bin: PathBuf = dir.join("examples").join(name);
    assert!(
        bin.exists(),
        "{} not built: run `cargo test --all-targets` (or `cargo build --example {name}`) first",
        bin.display()
    );
    let out = Command::new(&bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
