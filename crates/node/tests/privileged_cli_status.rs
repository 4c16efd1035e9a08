//! Privileged (root): `flowpin-node status` and `stats` read the pinned
//! maps of a real `flowpin-node lb` (in a network namespace made for the
//! test, on a real etcd): the VIPs, backends, draining state and ring
//! digest the node itself reports, and the counters of traffic sent
//! through it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use flowpin_node::status::LbStatus;
use flowpin_registry::{BackendSpec, BackendState, Proto, ServerId, Vip, VipFlags, VipSpec};
use flowpin_testing::require_bpf;

mod node_rig;
use node_rig::lb::{mac, LbCleanup, LbLab};

fn http_status(port: u16) -> Option<LbStatus> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(out.split_once("\r\n\r\n")?.1).ok()
}

fn node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowpin-node"))
        .args(args)
        .output()
        .expect("run flowpin-node")
}

fn json(args: &[&str]) -> serde_json::Value {
    let o = node(args);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "flowpin-node {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

fn wait_status(port_file: &Path, pred: impl Fn(&LbStatus) -> bool) -> LbStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "node status not reached in 20 s");
        if let Some(s) = std::fs::read_to_string(port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok())
            .and_then(http_status)
        {
            if pred(&s) {
                return s;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The test's `[lb]` lines (after the interface, namespace, pins and MACs).
const LB_LINES: &str =
    "conn_table_shared = true\nring_size = 4093\nlru_memory_mib = 1\nxdp_mode = \"generic\"";

#[test]
fn privileged_status_and_stats_read_the_pins_of_a_running_lb() {
    if !require_bpf("privileged_status_and_stats_read_the_pins_of_a_running_lb") {
        return;
    }
    let lab = LbLab::new(["clist", "clb", "crt", "cli-lb"], LB_LINES);
    let LbLab {
        rt,
        reg,
        lbns,
        rtr,
        pin_dir,
        port_file,
        config,
        ..
    } = &lab;
    let mut cleanup = LbCleanup::new(pin_dir);
    let vip = Vip::new("10.100.0.1".parse().expect("ip"), 8080, Proto::Tcp);
    let b = |i: u8| -> std::net::IpAddr { format!("10.2.{i}.2").parse().expect("ip") };
    let host = rt
        .block_on(async {
            reg.put_vip(&VipSpec::new(vip, VipFlags::SERVER_ID)).await?;
            let h = reg.register(Duration::from_secs(30)).await?;
            h.add_backends(&[
                (vip, BackendSpec::new(b(1), 100, ServerId::new(101))),
                (vip, BackendSpec::new(b(2), 100, ServerId::new(102))),
            ])
            .await?;
            h.set_state(&vip, b(2), BackendState::Draining).await?;
            Ok::<_, flowpin_registry::Error>(h)
        })
        .expect("registry writes");

    cleanup.child = Some(
        Command::new(env!("CARGO_BIN_EXE_flowpin-node"))
            .args(["lb", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn node"),
    );
    let st = wait_status(port_file, |s| {
        s.vips
            .get("10.100.0.1:8080/tcp")
            .is_some_and(|v| v.backends == 2 && v.draining == 1)
    });
    let node_vip = &st.vips["10.100.0.1:8080/tcp"];

    // Real traffic: SYNs from the router namespace to the VIP, through
    // xdp_lb (encapsulated towards backend 1, the only active one).
    rtr.ip(&["addr", "add", "10.9.0.1/24", "dev", "r0"])
        .expect("addr");
    rtr.ip(&["route", "add", "10.100.0.1/32", "dev", "r0"])
        .expect("route");
    rtr.ip(&[
        "neigh",
        "add",
        "10.100.0.1",
        "lladdr",
        &mac(lbns, "eth0"),
        "dev",
        "r0",
    ])
    .expect("neigh");
    rtr.run(|| {
        for _ in 0..3 {
            let a: SocketAddr = "10.100.0.1:8080".parse().expect("addr");
            let _ = TcpStream::connect_timeout(&a, Duration::from_millis(200));
        }
    })
    .expect("connect from the router namespace");

    let cfg = config.to_str().expect("utf-8");
    let s = json(&["status", "--config", cfg, "--json"]);
    let v = &s["vips"]["10.100.0.1:8080/tcp"];
    assert_eq!(s["link_pinned"], true, "{s}");
    assert_eq!(s["xdp_mode"], "generic", "{s}");
    assert_eq!(s["ring_size"], 4093, "{s}");
    assert_eq!(
        v["digest"],
        node_vip.digest.to_string(),
        "the node's own digest: {s}"
    );
    assert_eq!(v["flags"], "server_id", "{s}");
    let backends = v["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 2, "{s}");
    assert_eq!(backends[0]["addr"], "10.2.1.2");
    assert_eq!(backends[0]["server_id"], 101);
    assert_eq!(backends[0]["draining"], false);
    assert_eq!(backends[1]["draining"], true, "{s}");
    assert_eq!(
        s["node"]["pid"],
        cleanup.child.as_ref().expect("child").id(),
        "{s}"
    );
    assert_eq!(s["node"]["registry_connected"], true, "{s}");

    // The table form says the same.
    let o = node(&["status", "--pin-dir", pin_dir.to_str().expect("utf-8")]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(
        table.contains("10.100.0.1:8080/tcp") && table.contains(&node_vip.digest.to_string()),
        "{table}"
    );

    let st = json(&["stats", "--config", cfg, "--json"]);
    let packets = st["vips"]["10.100.0.1:8080/tcp"]["packets"]
        .as_u64()
        .expect("packets");
    assert!(packets >= 3, "3 SYNs sent, {packets} counted: {st}");
    assert!(
        st["backends"]["10.2.1.2"]["packets"].as_u64().expect("b1") >= 3,
        "{st}"
    );
    assert_eq!(
        st["backends"]["10.2.2.2"]["packets"], 0,
        "a draining backend gets no new flow: {st}"
    );
    assert!(
        st["global"]["new_flows"].as_u64().expect("new_flows") >= 1,
        "{st}"
    );

    // status / stats write nothing: the node still applies changes and
    // the digest it reports is the one status read.
    let again = json(&[
        "status",
        "--pin-dir",
        pin_dir.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(again["vips"], s["vips"].clone(), "status changed the pins");

    // A change in progress holds the directory's lock: status waits (5 s
    // at most), then says so instead of hanging or reading half a change.
    {
        let f = std::fs::File::open(pin_dir).expect("open pin dir");
        let _held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("flock");
        let t = Instant::now();
        let o = node(&["status", "--pin-dir", pin_dir.to_str().expect("utf-8")]);
        assert!(!o.status.success(), "status read under a held lock");
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "status hung: {:?}",
            t.elapsed()
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("flock"), "{err}");
    }
    // A directory with no pins: a plain error.
    let o = node(&["status", "--pin-dir", "/sys/fs/bpf/flowpin-no-such-dir"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no xdp_lb is pinned"));
    drop(cleanup);
    drop(host);
}
