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

#[test]
fn privileged_threaded_napi_threads_appear_are_timed_and_pinned() {
    use flowpin_bpf_progs::netdev::{set_offload, Offload};
    use flowpin_testing::{
        enable_threaded_napi, napi_threads, pin_thread, set_threaded_napi, thread_cpu_ns,
        TestingError,
    };
    if !require_bpf("privileged_threaded_napi_threads_appear_are_timed_and_pinned") {
        return;
    }
    let a = NetNs::new("tn").expect("netns a");
    let b = NetNs::new("to").expect("netns b");
    // Short names: the thread is `napi/<dev>-<id>`, cut at 15 bytes.
    let tag = std::process::id() & 0xffff;
    let (da, db) = (format!("n{tag:04x}"), format!("m{tag:04x}"));
    let _veth = VethPair::new(&a, &da, &b, &db).expect("veth");
    // A veth without GRO (nor XDP) has no NAPI instance: nothing to thread.
    assert!(enable_threaded_napi(&a, &da).is_err());
    assert!(napi_threads(&da).is_empty());
    let d = da.clone();
    a.run(move || set_offload(&d, Offload::Gro, true))
        .unwrap()
        .expect("GRO on");
    let threads = enable_threaded_napi(&a, &da).expect("threaded NAPI on");
    assert!(!threads.is_empty());
    assert_eq!(napi_threads(&da), threads, "only this veth's threads");
    for &pid in &threads {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert!(comm.starts_with(&format!("napi/{da}-")), "{comm}");
        thread_cpu_ns(pid, pid).expect("a NAPI thread's CPU time");
    }
    let pid = threads[0];
    pin_thread(pid, 0).expect("pin to CPU 0");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Cpus_allowed_list:", "0"]),
        "{status}"
    );
    // Already threaded: no new thread appears, and the error says so.
    let e = enable_threaded_napi(&a, &da).unwrap_err();
    assert!(matches!(e, TestingError::NoNapiThread { .. }), "{e}");
    assert!(e.to_string().contains(&format!("napi/{da}-*")), "{e}");
    set_threaded_napi(&a, &da, false).expect("threaded NAPI off");
    let threaded = a
        .exec("cat", &[&format!("/sys/class/net/{da}/threaded")])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&threaded.stdout).trim(), "0");
}
