//! Privileged: the test-support guards themselves (namespaces, veth, cgroups).
#![cfg(feature = "bpf")]

use flowpin_testing::{
    cgroup2_mount, current_cgroup, require_bpf, require_root, Cgroup, CgroupMembership, NetNs,
    VethPair,
};

#[test]
fn privileged_netns_veth_and_cgroup_guards_clean_up() {
    if !require_bpf("privileged_netns_veth_and_cgroup_guards_clean_up") {
        return;
    }
    let (a_name, cg_path);
    {
        let a = NetNs::new("ta").expect("netns a");
        let b = NetNs::new("tb").expect("netns b");
        a_name = a.name().to_string();
        let _veth = VethPair::new(&a, "v0", &b, "v1").expect("veth");
        a.ip(&["addr", "add", "10.99.0.1/24", "dev", "v0"]).unwrap();
        b.ip(&["addr", "add", "10.99.0.2/24", "dev", "v1"]).unwrap();
        let l = b
            .run(|| std::net::TcpListener::bind("10.99.0.2:0").expect("bind in b"))
            .unwrap();
        let port = l.local_addr().unwrap().port();
        let connected = a
            .run(move || std::net::TcpStream::connect(("10.99.0.2", port)).is_ok())
            .unwrap();
        assert!(connected, "TCP over the veth pair between the namespaces");
        // The listener is not reachable from the test's own namespace.
        assert!(std::net::TcpStream::connect(("10.99.0.2", port)).is_err());
        let cg = Cgroup::new("t").expect("cgroup");
        cg_path = cg.path().to_path_buf();
        assert!(cg_path.starts_with(cgroup2_mount().unwrap()));
        assert!(cg_path.join("cgroup.procs").exists());
    }
    assert!(
        !std::path::Path::new("/run/netns").join(&a_name).exists(),
        "netns removed"
    );
    assert!(!cg_path.exists(), "cgroup removed");
}

#[test]
fn privileged_cgroup_membership_moves_the_process_in_and_back() {
    if !require_root("privileged_cgroup_membership_moves_the_process_in_and_back") {
        return;
    }
    let home = current_cgroup().expect("own cgroup");
    assert!(home.join("cgroup.procs").exists(), "{}", home.display());
    let pid = std::process::id().to_string();
    let member = |dir: &std::path::Path| {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap()
            .lines()
            .any(|l| l == pid)
    };
    let cg = Cgroup::new("tm").expect("cgroup");
    // Explicit leave.
    let m = CgroupMembership::join(&cg).expect("join");
    assert_eq!(m.original(), home);
    assert_eq!(current_cgroup().unwrap(), cg.path());
    assert!(member(cg.path()));
    m.leave().expect("leave");
    assert_eq!(current_cgroup().unwrap(), home);
    assert!(!member(cg.path()));
    // Drop moves back too.
    {
        let _m = CgroupMembership::join(&cg).expect("join again");
        assert_eq!(current_cgroup().unwrap(), cg.path());
    }
    assert_eq!(current_cgroup().unwrap(), home);
}
