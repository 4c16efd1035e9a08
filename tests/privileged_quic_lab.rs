//! Privileged: `examples/quic_lab.rs` end to end in quick mode (60 quinn
//! connections per run): 0 broken connections with CID routing in every
//! scenario (handshakes in flight, a config rotation and encrypted QUIC-LB
//! CIDs included), and rebinding clients break without it (which shows the
//! counters work).
//!
//! Runs the example binary that `cargo test --all-targets` builds next to
//! this test (`target/<profile>/examples/quic_lab`).
#![allow(clippy::unwrap_used)]

mod support;

use flowpin_testing::require_bpf;

#[test]
fn privileged_quic_lab_quick_no_broken_connection_with_cid_routing() {
    if !require_bpf("privileged_quic_lab_quick_no_broken_connection_with_cid_routing") {
        return;
    }
    let stdout = support::run_example("quic_lab", &["--quick", "--json"]);
    let last = stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    let scenarios = v["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 8, "{v}");
    for wanted in ["handshakes in flight", "rotated", "encrypted"] {
        assert!(
            scenarios
                .iter()
                .any(|s| s["name"].as_str().unwrap().contains(wanted)),
            "a scenario named with {wanted:?}: {v}"
        );
    }
    for s in scenarios {
        assert_eq!(s["connections"], 60, "{v}");
        assert_eq!(s["broken_with_cid"], 0, "{v}");
        assert!(s["broken_without_cid"].is_u64(), "{v}");
    }
    for name in [
        "clients rebind to a new source port",
        "clients rebind to a new source port (QUIC-LB encrypted)",
    ] {
        let rebind = scenarios.iter().find(|s| s["name"] == name).unwrap();
        assert!(
            rebind["broken_without_cid"].as_u64().unwrap() > 0,
            "rebinding must break connections without CID routing: {v}"
        );
    }
}
