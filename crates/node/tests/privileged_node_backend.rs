//! Privileged (root): `flowpin-node backend` against a real etcd
//! (`LocalEtcd`), in namespaces and a cgroup made for the test.
//!
//! The rig: `flowpin_testing::RoutedLb` (client, router, an LB namespace
//! with `xdp_lb` loaded by the test, backend namespaces with the VIP on
//! `lo`), an echo server in the backend's namespace and cgroup. The LB
//! encapsulates to the backend: without `xdp_decap` nothing reaches the
//! server, so a connection that lives through agent restarts proves the
//! pinned programs kept working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_rig;

use std::process::Command;
use std::time::{Duration, Instant};

use flowpin_bpf_progs::link::Link;
use flowpin_bpf_progs::sockops_server_id::{ServerIdOps, SockopsLink};
use flowpin_node::backend::BackendStatus;
use flowpin_testing::require_bpf;
use nix::sys::signal::Signal;
use node_rig::*;

#[test]
fn privileged_backend_agent_restart_and_upgrade_lose_nothing() {
    maybe_serve_echo();
    if !require_bpf("privileged_backend_agent_restart_and_upgrade_lose_nothing") {
        return;
    }
    let mut rig = Rig::new("nbr", 112, 1);
    let drained = rig.dir.path().join("drained");
    let extra = format!("drain_command = [\"touch\", \"{}\"]\n", drained.display());
    let (cfg, pf, pins) = rig.config("a", "be1.test", 0, &extra);
    let log = rig.dir.path().join("a.log");
    let mut a = Agent::start(&cfg, log.clone());
    let (_, st) = wait_registered(&mut a, &pf, Duration::from_secs(20));
    assert!(!st.reopened);
    let sid = st.server_id.expect("a server_id");
    rig.echo_server("privileged_backend_agent_restart_and_upgrade_lose_nothing");
    // The baseline while nothing crosses the LB: read under traffic, a
    // packet the LB counted before its read and the backend decapsulated
    // after the (earlier) decap read would count on one side only.
    let (d0, t0, r0) = (
        decap_ipip(&pins),
        rig.lb_packets(),
        tcp_retrans(&rig.net.client),
    );
    let p = Pinger::start(&rig.net.client);
    std::thread::sleep(Duration::from_millis(500));
    let ops_prog = SockopsLink::from_pinned(pins.join("sockops/link"))
        .unwrap()
        .program_id()
        .unwrap();

    // 1. The agent crashes (SIGKILL): the pinned programs keep working.
    a.signal(Signal::SIGKILL);
    a.wait(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        !p.handle.is_finished(),
        "the connection broke while no agent ran"
    );
    let mut b = Agent::start(&cfg, log.clone());
    let (_, st) = wait_registered(&mut b, &pf, Duration::from_secs(20));
    assert!(st.reopened, "the restarted agent reopened the pins");
    assert_eq!(
        st.server_id,
        Some(sid),
        "the same server_id after a restart"
    );
    // 2. Hand-over (SIGUSR2) and a new agent (an upgrade: it swaps its
    //    programs into the pinned links).
    b.signal(Signal::SIGUSR2);
    assert_eq!(b.wait(Duration::from_secs(5)), Some(0));
    std::thread::sleep(Duration::from_millis(500));
    let mut c = Agent::start(&cfg, log.clone());
    let (port, st) = wait_registered(&mut c, &pf, Duration::from_secs(20));
    assert!(st.reopened);
    assert_eq!(st.server_id, Some(sid));
    std::thread::sleep(Duration::from_millis(500));
    let (rounds, r) = p.finish();
    r.expect("the connection through the agent restarts");
    assert!(rounds > 100, "only {rounds} round trips");
    std::thread::sleep(Duration::from_millis(200));
    let (d1, t1, r1) = (
        decap_ipip(&pins),
        rig.lb_packets(),
        tcp_retrans(&rig.net.client),
    );
    assert_eq!(
        d1 - d0,
        t1 - t0,
        "every packet the LB sent was decapsulated at the backend (0 lost)"
    );
    assert_eq!(r1 - r0, 0, "no TCP retransmission at the client");
    let new_prog = SockopsLink::from_pinned(pins.join("sockops/link"))
        .unwrap()
        .program_id()
        .unwrap();
    assert_ne!(
        new_prog, ops_prog,
        "the upgrade swapped the sock_ops program in place"
    );
    // New connections still get the server_id in their SYN-ACK.
    let ops = ServerIdOps::open_pinned(pins.join("sockops")).unwrap();
    let w0 = ops.stats().unwrap().server.written;
    let p2 = Pinger::start(&rig.net.client);
    std::thread::sleep(Duration::from_millis(200));
    p2.finish().1.unwrap();
    assert_eq!(ops.stats().unwrap().server.written, w0 + 1);
    assert_eq!(
        registered(&rig),
        vec![(rig.backend_addr(0), Some(sid), 100)]
    );
    let metrics = http_get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("flowpin_backend_registered 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flowpin_backend_decap_packets_total{form=\"ipip\"}"),
        "{metrics}"
    );
    // SIGTERM: drain (no connection left), deregister, remove the pins.
    drop(ops);
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait(Duration::from_secs(10)), Some(0), "{}", c.log());
    assert!(!pins.exists(), "SIGTERM (on_exit = drain) removes the pins");
    assert!(drained.exists(), "the drain command ran");
    assert!(registered(&rig).is_empty());
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("swapped in this build's program"),
        "{log_text}"
    );
}

#[test]
fn privileged_backend_reasserts_deleted_key_and_reloads_on_sighup() {
    if !require_bpf("privileged_backend_reasserts_deleted_key_and_reloads_on_sighup") {
        return;
    }
    let mut rig = Rig::new("nbk", 113, 1);
    let (cfg, pf, _) = rig.config("a", "be1.test", 0, "");
    let mut a = Agent::start(&cfg, rig.dir.path().join("a.log"));
    let (port, _) = wait_registered(&mut a, &pf, Duration::from_secs(20));
    // Delete the key behind the agent's back.
    let key = rig.reg.layout().backend(&vip_key(), rig.backend_addr(0));
    let mut etcd = rig.reg.etcd();
    let n = rig
        .rt
        .block_on(etcd.delete(key.clone(), None))
        .unwrap()
        .deleted();
    assert_eq!(n, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while registered(&rig).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the key was not re-asserted; log:\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(a.log().contains("re-asserting"), "{}", a.log());
    assert!(http_get(port, "/metrics")
        .unwrap()
        .contains("flowpin_backend_reasserted_keys_total 1"));

    // A broken config on SIGHUP is refused, the running one kept.
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, good.replace("[backend]", "[backend\n")).unwrap();
    a.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        a.running(),
        "SIGHUP with a broken file killed the agent:\n{}",
        a.log()
    );
    assert!(
        a.log()
            .contains("SIGHUP: new config refused, keeping the running one"),
        "{}",
        a.log()
    );
    // A field fixed at start is refused too.
    std::fs::write(&cfg, good.replace("10.113.10.2", "10.113.10.3")).unwrap();
    a.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(a.log().contains("backend.address"), "{}", a.log());
    assert_eq!(registered(&rig)[0].2, 100);
    // A good one is applied and says what.
    std::fs::write(
        &cfg,
        good.replace("lease_ttl_secs = 3", "lease_ttl_secs = 3\nweight = 50"),
    )
    .unwrap();
    a.signal(Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while registered(&rig).first().map(|r| r.2) != Some(50)
        || !a
            .log()
            .contains("SIGHUP: configuration reloaded and applied")
    {
        assert!(
            Instant::now() < deadline,
            "weight not applied; log:\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(a.log().contains("backend.weight 100 -> 50"), "{}", a.log());
    let m = http_get(port, "/metrics").unwrap();
    assert!(
        m.contains("flowpin_backend_config_reloads_total{result=\"refused\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("flowpin_backend_config_reloads_total{result=\"applied\"} 1"),
        "{m}"
    );
}

#[test]
fn privileged_backend_duplicate_host_is_refused() {
    if !require_bpf("privileged_backend_duplicate_host_is_refused") {
        return;
    }
    let mut rig = Rig::new("nbd", 114, 2);
    // Backend 1 is another machine configured with backend 0's host name.
    let (cfg1, pf1, _) = rig.config("a", "be1.test", 0, "");
    let (cfg2, pf2, pins2) = rig.config("b", "be1.test", 1, "");
    let mut a = Agent::start(&cfg1, rig.dir.path().join("a.log"));
    let (port1, _) = wait_registered(&mut a, &pf1, Duration::from_secs(20));
    let mut b = Agent::start(&cfg2, rig.dir.path().join("b.log"));
    let code = b.wait(Duration::from_secs(20));
    assert!(
        code.is_some_and(|c| c != 0),
        "the duplicate exited {code:?}"
    );
    let log = b.log();
    assert!(log.contains("already served by another node"), "{log}");
    assert!(!log.contains("registered: LBs route to this host"), "{log}");
    assert!(!pf2.exists() || std::fs::read_to_string(&pf2).is_ok());
    assert!(
        !pins2.join("decap").exists(),
        "the refused agent left its pins"
    );
    // The first one is untouched.
    assert!(a.running());
    assert_eq!(registered(&rig).len(), 1);
    let st: BackendStatus = serde_json::from_str(&http_get(port1, "/status").unwrap()).unwrap();
    assert!(st.conflicts.is_empty(), "{:?}", st.conflicts);
}

#[test]
fn privileged_backend_waits_for_etcd() {
    if !require_bpf("privileged_backend_waits_for_etcd") {
        return;
    }
    let mut rig = Rig::new("nbw", 115, 1);
    let (cfg, pf, _) = rig.config("a", "be1.test", 0, "");
    rig.etcd.kill();
    let mut a = Agent::start(&cfg, rig.dir.path().join("a.log"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        a.running(),
        "the agent gave up while etcd was down:\n{}",
        a.log()
    );
    let log = a.log();
    assert!(log.contains("etcd is not reachable at"), "{log}");
    assert!(log.contains("retrying in"), "{log}");
    assert!(!log.contains("Status {"), "a raw tonic dump: {log}");
    rig.rt.block_on(rig.etcd.restart()).unwrap();
    wait_registered(&mut a, &pf, Duration::from_secs(20));
    assert_eq!(registered(&rig).len(), 1);
}

#[test]
fn backend_config_with_a_duplicate_vip_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("be.toml");
    std::fs::write(
        &cfg,
        "[registry]\nendpoints = [\"http://127.0.0.1:1\"]\nprefix = \"/x\"\n\n[backend]\nhost = \"h\"\naddress = \"10.9.0.2\"\ninterface = \"eth0\"\ncgroup = \"/sys/fs/cgroup/x\"\nvips = [{ addr = \"10.100.0.1\", port = 80 }, { addr = \"10.100.0.1\", port = 80 }]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flowpin-node"))
        .args(["backend", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tcp:10.100.0.1:80 is listed twice"), "{err}");
    assert!(!err.contains("etcd"), "{err}");
}

#[test]
fn backend_with_its_metrics_port_in_use_exits_before_touching_the_data_path() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("be.toml");
    let pins = std::path::Path::new("/sys/fs/bpf").join(flowpin_testing::unique_name("nbe-busy"));
    std::fs::write(
        &cfg,
        format!(
            "[registry]\nendpoints = [\"http://127.0.0.1:1\"]\nprefix = \"/x\"\n\n[backend]\nhost = \"h\"\naddress = \"10.9.0.2\"\ninterface = \"eth0\"\ncgroup = \"/sys/fs/cgroup/x\"\npin_dir = \"{}\"\nvips = [{{ addr = \"10.100.0.1\", port = 80 }}]\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            pins.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flowpin-node"))
        .args(["backend", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("metrics.listen 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("another process uses it"), "{err}");
    assert!(!pins.exists(), "pins made before the listener was checked");
}
