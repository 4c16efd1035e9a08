//! Privileged: the release harness (`examples/release.rs`) end to end, short:
//! 3 releases per strategy with 200 UDP flows. flowpin must show no refused,
//! reset, timed-out, misrouted or lost connection/packet and the forwarder
//! nothing misrouted, while plain SO_REUSEPORT and fd passing misroute UDP
//! in the same run (which shows the counters work).
//!
//! Runs the example binary that `cargo test --all-targets` builds next to
//! this test (`target/<profile>/examples/release`).
#![allow(clippy::unwrap_used)]

mod support;

use flowpin_testing::require_bpf;

#[test]
fn privileged_release_harness_flowpin_loses_nothing() {
    if !require_bpf("privileged_release_harness_flowpin_loses_nothing") {
        return;
    }
    let stdout = support::run_example(
        "release",
        &[
            "--json",
            "--releases",
            "3",
            "--udp-flows",
            "200",
            "--throughput-secs",
            "1",
            "--throughput-rounds",
            "5",
            "--warmup-ms",
            "100",
            "--interval-ms",
            "200",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    let mut want = vec![
        "naive",
        "reuseport",
        "fd-passing",
        "fd-passing-forwarder",
        "flowpin",
        "forwarder_latency_us",
        "udp_throughput",
    ];
    let mut got = keys.clone();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "{v}");
    for s in [
        "naive",
        "reuseport",
        "fd-passing",
        "fd-passing-forwarder",
        "flowpin",
    ] {
        for k in ["refused", "reset", "timeouts", "misrouted", "lost"] {
            assert!(v[s][k].is_u64(), "{s}.{k} missing in {v}");
        }
    }
    // flowpin: nothing refused, reset, timed out, misrouted or lost.
    for k in ["refused", "reset", "timeouts", "misrouted", "lost"] {
        assert_eq!(v["flowpin"][k], 0, "flowpin.{k} must be 0: {v}");
    }
    // The forwarder keeps every flow with its owner: nothing misrouted, and
    // it did forward (its latency was measured).
    assert_eq!(v["fd-passing-forwarder"]["misrouted"], 0, "{v}");
    let lat = &v["forwarder_latency_us"];
    let (p50, p99) = (lat["p50"].as_f64().unwrap(), lat["p99"].as_f64().unwrap());
    assert!(p50 > 0.0 && p99 >= p50, "{v}");
    // The baselines' failures are real (the counters work): plain reuseport
    // re-hashes UDP flows when a process joins; with fd passing both
    // processes read the shared socket while the old one drains.
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
    for k in ["one_socket", "reuseport", "flowpin"] {
        assert!(v["udp_throughput"][k].as_f64().unwrap() > 0.0, "{k}: {v}");
    }
    // flowpin / plain reuseport: a ratio per round (5, interleaved) and
    // their median, which lies within them.
    let t = &v["udp_throughput"];
    assert_eq!(t["rounds"], 5, "{v}");
    let rounds: Vec<f64> = t["flowpin_over_reuseport_rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_f64().unwrap())
        .collect();
    assert_eq!(rounds.len(), 5, "{v}");
    assert!(rounds.iter().all(|r| *r > 0.0), "{v}");
    let median = t["flowpin_over_reuseport"].as_f64().unwrap();
    let mut sorted = rounds.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(median, sorted[2], "median of the per-round ratios: {v}");
    assert_eq!(t["flowpin_over_reuseport_holds"], median >= 0.95, "{v}");
}
