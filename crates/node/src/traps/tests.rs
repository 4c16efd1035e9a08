//! Privileged (root): the LB's veth check names the real peer, found through
//! rtnetlink, with decoy namespaces whose veths have the same ifindex /
//! peer-ifindex pattern (the old `ip -json` scan of `/run/netns` took the
//! first such match). Every namespace here is made by the test.

use std::path::Path;

use flowpin_bpf_progs::netdev::disable_tx_checksum_offload;
use flowpin_bpf_progs::netns;
use flowpin_bpf_progs::xdp_lb::{XdpAttachMode, XdpLink, XdpTarget};
use flowpin_bpf_progs::xdp_pass::{XdpPass, XdpPassConfig};
use flowpin_testing::{require_bpf, NetNs};

use super::{check_lb, Trap};

fn mac_of(ns: &NetNs, dev: &str) -> [u8; 6] {
    let out = ns
        .ip(&["-json", "link", "show", "dev", dev])
        .expect("ip link");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip json");
    crate::config::parse_mac(v[0]["address"].as_str().expect("mac")).expect("mac")
}

fn up(ns: &NetNs, dev: &str) {
    ns.ip(&["link", "set", dev, "up"]).expect("link up");
}

fn xdp_on(pass: &XdpPass, ns: &NetNs, dev: &str) -> XdpLink {
    pass.attach(XdpTarget::ifname_in_netns(dev, ns.path()).mode(XdpAttachMode::Generic))
        .expect("attach xdp_pass")
}

fn checks(traps: &[Trap]) -> Vec<&'static str> {
    traps.iter().map(|t| t.check).collect()
}

fn find<'a>(traps: &'a [Trap], check: &str) -> &'a Trap {
    traps
        .iter()
        .find(|t| t.check == check)
        .unwrap_or_else(|| panic!("no {check} among {traps:#?}"))
}

/// A namespace with a veth pair `a` (ifindex 40) ↔ `b` (ifindex 41), both
/// inside: the same ifindex / peer-ifindex pattern as the real pair.
fn decoy(tag: &str, a: &str, b: &str) -> NetNs {
    let ns = NetNs::new(tag).expect("netns");
    ns.ip(&[
        "link", "add", a, "index", "40", "type", "veth", "peer", "name", b, "index", "41",
    ])
    .expect("decoy veth");
    up(&ns, a);
    up(&ns, b);
    ns
}

#[test]
fn privileged_lb_veth_check_names_the_real_peer_among_decoys() {
    if !require_bpf("privileged_lb_veth_check_names_the_real_peer_among_decoys") {
        return;
    }
    let pass = XdpPass::load(XdpPassConfig::default()).expect("xdp_pass");
    // Decoys first, so that any scan in creation or name order meets them
    // before the real one.
    let d1 = decoy("a-dc1", "eth0", "decoypeer");
    let d2 = decoy("a-dc2", "eth0", "decoypeer2");
    let lb = NetNs::new("z-lb").expect("netns");
    let rt = NetNs::new("z-rt").expect("netns");
    lb.ip(&[
        "link",
        "add",
        "eth0",
        "index",
        "40",
        "type",
        "veth",
        "peer",
        "name",
        "realpeer",
        "index",
        "41",
        "netns",
        rt.name(),
    ])
    .expect("veth");
    up(&lb, "eth0");
    up(&rt, "realpeer");
    // The decoys look healthy where the real peer is not: XDP on, offload off.
    let _d1x = xdp_on(&pass, &d1, "decoypeer");
    let _d2x = xdp_on(&pass, &d2, "decoypeer2");
    for (ns, dev) in [(&d1, "decoypeer"), (&d2, "decoypeer2")] {
        netns::run_in(ns.path(), || disable_tx_checksum_offload(dev))
            .expect("netns")
            .expect("tx off");
    }
    let mac = mac_of(&lb, "eth0");
    let ns = lb.path();
    let rtp = rt.path();

    let t = check_lb(Some(&ns), "eth0", true, mac, Some(&rtp));
    assert_eq!(
        checks(&t),
        ["veth_peer_without_xdp", "sender_tx_checksum_offload"],
        "{t:#?}"
    );
    for tr in &t {
        assert!(tr.message.contains("realpeer"), "{tr:?}");
        assert!(!tr.message.contains("decoypeer"), "{tr:?}");
        for d in [&d1, &d2] {
            assert!(!tr.message.contains(d.name()), "blames a decoy: {tr:?}");
        }
    }
    // Generic mode: XDP_TX goes through the stack, nothing to warn about.
    assert_eq!(
        checks(&check_lb(Some(&ns), "eth0", false, mac, Some(&rtp))),
        Vec::<&str>::new()
    );
    // A wrong MAC is named.
    let t = check_lb(Some(&ns), "eth0", false, [2, 0, 0, 0, 0, 9], None);
    assert_eq!(checks(&t), ["local_mac_mismatch"]);
    // Without lb.peer_netns the offload check says it was not done (and
    // still names the real peer); with a decoy's file it is refused.
    let t = check_lb(Some(&ns), "eth0", true, mac, None);
    assert_eq!(
        checks(&t),
        ["veth_peer_without_xdp", "veth_peer_offload_unchecked"]
    );
    assert!(find(&t, "veth_peer_offload_unchecked")
        .message
        .contains("realpeer"));
    let t = check_lb(Some(&ns), "eth0", true, mac, Some(&d1.path()));
    assert_eq!(checks(&t), ["veth_peer_without_xdp", "peer_netns_mismatch"]);

    // Fix the real peer, break the decoys: no finding.
    drop(_d1x);
    drop(_d2x);
    let _rx = xdp_on(&pass, &rt, "realpeer");
    netns::run_in(&rtp, || disable_tx_checksum_offload("realpeer"))
        .expect("netns")
        .expect("tx off");
    let t = check_lb(Some(&ns), "eth0", true, mac, Some(&rtp));
    assert!(t.is_empty(), "{t:#?}");
}

#[test]
fn privileged_lb_veth_pair_in_one_namespace() {
    if !require_bpf("privileged_lb_veth_pair_in_one_namespace") {
        return;
    }
    let pass = XdpPass::load(XdpPassConfig::default()).expect("xdp_pass");
    let _decoy = decoy("a-dc3", "a0", "a1");
    let one = NetNs::new("one").expect("netns");
    one.ip(&["link", "add", "a0", "type", "veth", "peer", "name", "a1"])
        .expect("veth");
    up(&one, "a0");
    up(&one, "a1");
    let mac = mac_of(&one, "a0");
    let ns = one.path();
    let t = check_lb(Some(&ns), "a0", true, mac, None);
    assert_eq!(
        checks(&t),
        ["veth_peer_without_xdp", "sender_tx_checksum_offload"],
        "{t:#?}"
    );
    let m = &find(&t, "veth_peer_without_xdp").message;
    assert!(m.contains("peer a1 (in the same namespace"), "{m}");
    let _x = xdp_on(&pass, &one, "a1");
    netns::run_in(&ns, || disable_tx_checksum_offload("a1"))
        .expect("netns")
        .expect("tx off");
    let t = check_lb(Some(&ns), "a0", true, mac, None);
    assert!(t.is_empty(), "{t:#?}");
    // An interface that does not exist is said so, not skipped silently.
    let t = check_lb(Some(Path::new(&ns)), "nosuch0", true, mac, None);
    assert_eq!(checks(&t), ["interface_unknown"]);
}
