//! Privileged (root): server_id routing end to end with flowpin's own
//! binaries — `flowpin-node backend` (sock_ops server role) and
//! `flowpin-node client` (sock_ops client role on the cgroup this test
//! process joins) — through an `xdp_lb` loaded by the test with the VIP's
//! `SERVER_ID` flag, against a real etcd. The client role is killed and
//! restarted while a connection streams: the connection keeps echoing
//! (the LB keeps routing it by server_id) and never breaks.
//!
//! One test in its own binary: the whole process joins the client cgroup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_rig;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowpin_bpf_progs::sockops_server_id::ServerIdOps;
use flowpin_bpf_progs::xdp_lb::Backend;
use flowpin_node::client::ClientStatus;
use flowpin_registry::ServerId;
use flowpin_testing::{require_bpf, unique_name, Cgroup, CgroupMembership};
use nix::sys::signal::Signal;
use node_rig::*;

struct ClientProc {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl ClientProc {
    fn start(config: &Path, log: &Path) -> ClientProc {
        let f = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_flowpin-node"))
            .args(["client", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        ClientProc {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self, sig: Signal) -> Option<i32> {
        let mut c = self.child.take()?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st.code();
            }
            assert!(Instant::now() < deadline, "node client did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn wait_status(port_file: &Path, c: &ClientProc) -> ClientStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "node client did not answer; log:\n{}",
            c.log()
        );
        if let Some(s) = std::fs::read_to_string(port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok())
            .and_then(|p| http_get(p, "/status"))
            .and_then(|b| serde_json::from_str::<ClientStatus>(&b).ok())
        {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn privileged_client_role_routes_by_server_id_and_survives_its_restart() {
    maybe_serve_echo();
    if !require_bpf("privileged_client_role_routes_by_server_id_and_survives_its_restart") {
        return;
    }
    let mut rig = Rig::new("ncl", 116, 1);
    let (cfg, pf, _) = rig.config("a", "be1.test", 0, "");
    let mut agent = Agent::start(&cfg, rig.dir.path().join("a.log"));
    let (_, st) = wait_registered(&mut agent, &pf, Duration::from_secs(20));
    let sid = ServerId::new(st.server_id.unwrap()).unwrap();
    rig.echo_server("privileged_client_role_routes_by_server_id_and_survives_its_restart");
    // The LB knows the backend's server_id, and routes by it.
    let vip = lb_vip();
    rig.lb
        .set_vip_flags(&vip, flowpin_bpf_progs::xdp_lb::VipFlags::SERVER_ID)
        .unwrap();
    rig.lb
        .set_backends(&vip, &[Backend::new(rig.backend_addr(0)).server_id(sid)])
        .unwrap();

    let cg = Cgroup::new("nclcli").unwrap();
    let pin_dir = Path::new("/sys/fs/bpf").join(unique_name("ncl-client"));
    rig.pins.push(pin_dir.clone());
    let cport = rig.dir.path().join("client.port");
    let ccfg = rig.dir.path().join("client.toml");
    let write_cfg = |on_exit: &str| {
        std::fs::write(
            &ccfg,
            format!(
                "[client]\ncgroup = \"{}\"\npin_dir = \"{}\"\non_exit = \"{on_exit}\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\nport_file = \"{}\"\n",
                cg.path().display(),
                pin_dir.display(),
                cport.display()
            ),
        )
        .unwrap();
    };
    write_cfg("keep");
    let clog = rig.dir.path().join("client.log");
    let mut c = ClientProc::start(&ccfg, &clog);
    let st = wait_status(&cport, &c);
    assert!(!st.reopened);
    let membership = CgroupMembership::join(&cg).unwrap();

    let sid_routed = |rig: &Rig| rig.lb.vip_stats(&vip).unwrap().sid_routed;
    let p = Pinger::start(&rig.net.client);
    std::thread::sleep(Duration::from_millis(500));
    let s0 = sid_routed(&rig);
    assert!(s0 > 10, "the LB routed {s0} packets by server_id");
    let ops = ServerIdOps::open_pinned(pin_dir.join("sockops")).unwrap();
    let e0 = ops.stats().unwrap().client.echoed;
    assert!(e0 > 10, "the client role echoed {e0} packets");
    assert_eq!(ops.stats().unwrap().client.parsed, 1);

    // Killed: the pinned program keeps echoing, the LB keeps routing by it.
    assert_eq!(c.stop(Signal::SIGKILL), None);
    let s1 = sid_routed(&rig);
    std::thread::sleep(Duration::from_millis(700));
    let s2 = sid_routed(&rig);
    assert!(
        s2 > s1 + 10,
        "no node client: {s1} -> {s2} packets routed by server_id"
    );
    assert!(
        !p.handle.is_finished(),
        "the connection broke while no node client ran"
    );
    // Restarted (an upgrade: this build's program swapped in).
    let _ = std::fs::remove_file(&cport);
    let mut c = ClientProc::start(&ccfg, &clog);
    let st = wait_status(&cport, &c);
    assert!(st.reopened, "the restarted node client reopened its pins");
    std::thread::sleep(Duration::from_millis(500));
    let s3 = sid_routed(&rig);
    assert!(s3 > s2 + 10, "after the restart: {s2} -> {s3}");
    let (rounds, r) = p.finish();
    r.expect("the connection lived through the client role's restart");
    assert!(rounds > 100, "{rounds} round trips");
    let st = wait_status(&cport, &c);
    assert!(st.echoed > e0, "{} echoed", st.echoed);
    assert_eq!(ops.stats().unwrap().errors, 0);
    drop(ops);

    // A broken file on SIGHUP is refused, the running one kept.
    let pid = nix::unistd::Pid::from_raw(c.child.as_ref().unwrap().id() as i32);
    std::fs::write(&ccfg, "[client\n").unwrap();
    nix::sys::signal::kill(pid, Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c
        .log()
        .contains("SIGHUP: new config refused, keeping the running one")
    {
        assert!(
            Instant::now() < deadline,
            "broken SIGHUP not refused:\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        c.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "node client died on a broken SIGHUP"
    );

    // on_exit = "remove" by SIGHUP, then SIGTERM: the pins go.
    write_cfg("remove");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.child.as_ref().unwrap().id() as i32),
        Signal::SIGHUP,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.log().contains("client.on_exit Keep -> Remove") {
        assert!(
            Instant::now() < deadline,
            "SIGHUP not applied:\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.stop(Signal::SIGTERM), Some(0), "{}", c.log());
    assert!(!pin_dir.exists(), "pins left after on_exit = remove");
    membership.leave().unwrap();
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait(Duration::from_secs(10)), Some(0));
}
