//! Privileged: the release harness (`examples/release.rs`) end to end, short:
//! 3 releases per strategy with 200 UDP flows. flowpin must show no refused,
//! reset or misrouted connection/packet, while plain SO_REUSEPORT and fd
//! passing misroute UDP in the same run (which shows the counters work).
//!
//! Runs the example binary that `cargo test --all-targets` builds next to
//! this test (`target/<profile>/examples/release`).
// The helper outside #[test] unwraps too (clippy.toml only covers #[test]).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use flowpin_bpf_progs::testing::require_bpf;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/<this test> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    dir.join("examples").join(name)
}

#[test]
fn privileged_release_harness_flowpin_has_no_refused_reset_or_misrouted() {
    if !require_bpf("privileged_release_harness_flowpin_has_no_refused_reset_or_misrouted") {
        return;
    }
    let bin = example("release");
    assert!(
        bin.exists(),
        "{} not built: run `cargo test --all-targets` (or `cargo build --example release`) first",
        bin.display()
    );
    let out = Command::new(&bin)
        .args([
            "--json",
            "--releases",
            "3",
            "--udp-flows",
            "200",
            "--throughput-secs",
            "1",
        ])
        .args(["--interval-ms", "200"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "release harness failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    for s in ["naive", "reuseport", "fd-passing", "flowpin"] {
        for k in ["refused", "reset", "timeouts", "misrouted", "lost"] {
            assert!(v[s][k].is_u64(), "{s}.{k} missing in {v}");
        }
    }
    let f = &v["flowpin"];
    assert_eq!(f["refused"], 0, "{v}");
    assert_eq!(f["reset"], 0, "{v}");
    assert_eq!(f["misrouted"], 0, "{v}");
    assert!(
        v["reuseport"]["misrouted"].as_u64().unwrap() > 0,
        "plain reuseport re-hashes UDP flows: {v}"
    );
    assert!(
        v["fd-passing"]["misrouted"].as_u64().unwrap() > 0,
        "fd passing cannot tell flows apart: {v}"
    );
    assert!(
        v["naive"]["refused"].as_u64().unwrap() + v["naive"]["lost"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(v["udp_throughput_ratio"].as_f64().unwrap() > 0.0, "{v}");
}
