//! Privileged: what an embedder needs around the programs, used the way an
//! out-of-tree program would, from the test's own thread (no setns code
//! here): XDP attach to an interface of another network namespace, a child
//! process started inside a cgroup and a namespace, TX checksum offload off,
//! GRO and TSO switched.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use flowpin_bpf_progs::process::CommandCgroupExt;
use flowpin_bpf_progs::xdp_attach::{XdpAttachError, XdpTarget};
use flowpin_bpf_progs::xdp_pass::{XdpPass, XdpPassError};
use flowpin_bpf_progs::{netdev, netns};
use flowpin_testing::{require_bpf, Cgroup, NetNs, VethPair};

fn xdp_shown(ns: &NetNs, ifname: &str) -> String {
    String::from_utf8_lossy(&ns.ip(&["link", "show", ifname]).unwrap().stdout).into_owned()
}

#[test]
fn privileged_xdp_attach_in_another_netns_from_the_calling_thread() {
    if !require_bpf("privileged_xdp_attach_in_another_netns_from_the_calling_thread") {
        return;
    }
    let a = NetNs::new("ea").unwrap();
    let b = NetNs::new("eb").unwrap();
    let _veth = VethPair::new(&a, "ev0", &b, "ev1").unwrap();
    let pass = XdpPass::load(Default::default()).unwrap();
    // The interface does not exist in the test's own namespace.
    assert!(pass.attach("ev0").is_err());
    let link = pass
        .attach(XdpTarget::ifname_in_netns("ev0", a.path()))
        .expect("attach inside namespace a");
    assert!(
        xdp_shown(&a, "ev0").contains("xdp"),
        "{}",
        xdp_shown(&a, "ev0")
    );
    assert!(!xdp_shown(&b, "ev1").contains("prog/xdp"));
    drop(link);
    assert!(
        !xdp_shown(&a, "ev0").contains("prog/xdp"),
        "detached on drop"
    );

    // A name that is not in that namespace says which namespace it looked in.
    let e = pass
        .attach(XdpTarget::ifname_in_netns("ev1", a.path()))
        .unwrap_err();
    match &e {
        XdpPassError::Xdp(XdpAttachError::NoSuchInterface { name, netns, .. }) => {
            assert_eq!(name, "ev1");
            assert_eq!(netns.as_deref(), Some(a.path().as_path()));
        }
        other => panic!("wrong error: {other}"),
    }
    assert!(e.to_string().contains(a.name()), "{e}");
    // A path that is not a namespace file.
    let e = pass
        .attach(XdpTarget::ifname_in_netns("ev0", "/nonexistent/ns"))
        .unwrap_err();
    assert!(
        matches!(e, XdpPassError::Xdp(XdpAttachError::Netns(ref k)) if k.op == "open" && k.is(2)),
        "{e}"
    );
}

#[test]
fn privileged_command_starts_inside_cgroup_and_netns() {
    if !require_bpf("privileged_command_starts_inside_cgroup_and_netns") {
        return;
    }
    let ns = NetNs::new("ec").unwrap();
    let peer = NetNs::new("ed").unwrap();
    let _veth = VethPair::new(&ns, "ec0", &peer, "ec1").unwrap();
    let cg = Cgroup::new("ec").unwrap();
    // The child's first view of itself: its cgroup and its interfaces.
    let out = Command::new("sh")
        .args(["-c", "cat /proc/self/cgroup; cat /proc/net/dev"])
        .in_cgroup(cg.path())
        .expect("the cgroup exists")
        .in_netns(ns.path())
        .expect("the namespace exists")
        .output()
        .expect("spawn inside the cgroup and namespace");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let cg_name = cg
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&cg_name)),
        "child not in cgroup {cg_name}: {text}"
    );
    assert!(text.contains("ec0:"), "child not in namespace: {text}");
    // A missing cgroup fails at once, naming the cgroup (not the program:
    // spawn() of a missing program is NotFound too).
    let missing = cg.path().join("missing");
    let e = Command::new("true").in_cgroup(&missing).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");
    assert!(e.to_string().contains("cgroup v2 directory"), "{e}");
    // A missing namespace likewise.
    let e = Command::new("true")
        .in_netns("/nonexistent/ns")
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("/nonexistent/ns"), "{e}");
    // A cgroup removed between in_cgroup() and spawn() fails spawn(): the
    // child never runs outside it.
    let gone = cg.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let mut cmd = Command::new("true");
    cmd.in_cgroup(&gone).unwrap();
    std::fs::remove_dir(&gone).unwrap();
    let e = cmd.spawn().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::ENODEV), "{e}");
}

#[test]
fn privileged_tx_checksum_offload_off_in_another_netns() {
    if !require_bpf("privileged_tx_checksum_offload_off_in_another_netns") {
        return;
    }
    let a = NetNs::new("ef").unwrap();
    let b = NetNs::new("eg").unwrap();
    let _veth = VethPair::new(&a, "ef0", &b, "ef1").unwrap();
    let on = |name: &'static str| {
        netns::run_in(a.path(), move || netdev::tx_checksum_offload(name))
            .unwrap()
            .unwrap()
    };
    assert!(on("ef0"), "veth starts with TX checksum offload on");
    netns::run_in(a.path(), || netdev::disable_tx_checksum_offload("ef0"))
        .unwrap()
        .expect("tx off on the veth");
    assert!(!on("ef0"), "TX checksum offload is off");
    // Not in this namespace: the error names the interface and the fix.
    let e = netdev::disable_tx_checksum_offload("ef0").unwrap_err();
    assert!(e.is(19), "ENODEV expected: {e}");
    assert!(e.to_string().contains("netns::run_in"), "{e}");
}

#[test]
fn privileged_gro_and_tso_switch_in_another_netns() {
    if !require_bpf("privileged_gro_and_tso_switch_in_another_netns") {
        return;
    }
    use netdev::Offload;
    let a = NetNs::new("eo").unwrap();
    let b = NetNs::new("ep").unwrap();
    let _veth = VethPair::new(&a, "eo0", &b, "eo1").unwrap();
    let get = |o: Offload| {
        netns::run_in(a.path(), move || netdev::offload("eo0", o))
            .unwrap()
            .unwrap()
    };
    let set = |o: Offload, on: bool| {
        netns::run_in(a.path(), move || netdev::set_offload("eo0", o, on))
            .unwrap()
            .unwrap_or_else(|e| panic!("{o:?} {on} on the veth: {e}"))
    };
    // veth starts with TSO on and GRO off (no XDP program attached).
    assert!(get(Offload::Tso), "veth starts with TSO on");
    assert!(!get(Offload::Gro), "veth starts with GRO off");
    set(Offload::Tso, false);
    set(Offload::Gro, true);
    assert!(!get(Offload::Tso), "TSO is off");
    assert!(get(Offload::Gro), "GRO is on");
    set(Offload::Tso, true);
    set(Offload::Gro, false);
    assert!(get(Offload::Tso), "TSO is back on");
    assert!(!get(Offload::Gro), "GRO is back off");
    // Not in this namespace: ENODEV, and the error says where to look.
    let e = netdev::set_offload("eo0", Offload::Gro, true).unwrap_err();
    assert!(e.is(19), "ENODEV expected: {e}");
    assert!(e.to_string().contains("ETHTOOL_SGRO on"), "{e}");
}
