//! "May this test run here?" and the accounting of the tests that did not.
//!
//! A privileged test asks [`require_bpf`] (it loads BPF) or [`require_root`]
//! (it needs namespaces, bpffs or cgroups) first and returns at once on
//! `false`. As root neither ever says `false`; a non-root run skips with a
//! loud line and one line in the file named by [`SKIP_LOG_ENV`], so the
//! suite ends with one line counting what it skipped.

use std::fs;
use std::io::Write;

/// Environment variable naming a file to which every skipped test appends
/// one line (`<test>\t<why>`). `scripts/test.sh` sets it and ends the run
/// with one loud line counting the skips.
pub const SKIP_LOG_ENV: &str = "FLOWPIN_SKIP_LOG";

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether privileged BPF tests may run here.
///
/// Loads the empty XDP program. When the process runs as **root** (or under
/// `CI=true`) a refusal by the kernel is a bug or a broken machine, never a
/// reason to skip: this panics, so the test fails. Only a non-root run may
/// skip: it prints a loud line and records the skip (see [`SKIP_LOG_ENV`]).
#[cfg(feature = "bpf")]
pub fn require_bpf(test: &str) -> bool {
    use flowpin_bpf_progs::xdp_pass::{XdpPass, XdpPassConfig};
    match XdpPass::load(XdpPassConfig::default()) {
        Ok(_) => true,
        Err(e) => {
            let why = e.to_string();
            let root = is_root();
            let ci = std::env::var("CI").map(|v| v == "true").unwrap_or(false);
            if root || ci {
                panic!(
                    "privileged test `{test}`: the kernel refused BPF although this run is {}: \
                     {why}\n(a privileged test never skips as root or in CI: fix the kernel \
                     configuration or the program)",
                    if root { "root" } else { "CI=true" }
                );
            }
            record_skip(test, &format!("not root, the kernel refused BPF: {why}"));
            false
        }
    }
}

/// Whether a test that needs root (network namespaces, bpffs, cgroups, BPF)
/// may run here: `true` as root; otherwise records the skip (see
/// [`record_skip`]) and returns `false`.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    record_skip(
        test,
        "not root (needs network namespaces, bpffs, cgroups, BPF)",
    );
    false
}

/// Records that `test` did not run, and why: one loud line on stderr and one
/// line in the file named by [`SKIP_LOG_ENV`] if it is set.
///
/// For tests with a reason of their own to skip (e.g. no etcd installed on a
/// non-root run); never call it as root for a privileged test.
pub fn record_skip(test: &str, why: &str) {
    // Written straight to fd 2 (not `eprintln!`, which the test harness
    // captures), so a plain `cargo test` shows the skip too.
    let _ = writeln!(std::io::stderr(), "!!!!! SKIPPED test `{test}` ({why})");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{test}\t{}", why.replace(['\n', '\t'], " "));
        }
    }
}
