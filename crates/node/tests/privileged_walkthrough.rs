//! Privileged (root): the README's walkthrough, run in namespaces made for
//! the test — one LB host, two backends, a client behind one router
//! (`flowpin_testing::RoutedLb`: next hop, VIP on the backends' `lo`,
//! reverse-path filtering off, TX checksum offload off on the router's
//! veth) — with the documented `flowpin-node` commands only: `vip add`,
//! `lb --config`, `backend --config` on each backend (its service in a
//! cgroup), then real HTTP requests from the client reach both backends
//! (direct server return), and `backends` / `status` show the state.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use flowpin_bpf_progs::xdp_lb::XdpLb;
use flowpin_registry::local_etcd::LocalEtcd;
use flowpin_testing::{mac_str, require_bpf, unique_name, Cgroup, RoutedLb, RoutedLbConfig};

/// Kills every child and removes the LB's pins on every exit path.
struct Procs {
    children: Vec<Child>,
    pin_dir: PathBuf,
    /// The backend agents' pin directories (SIGKILL leaves them pinned).
    agent_pins: Vec<PathBuf>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = XdpLb::unpin(&self.pin_dir);
        let _ = std::fs::remove_dir(flowpin_node::pin_lock::lock_path(&self.pin_dir));
        for p in &self.agent_pins {
            // bpffs: unlinking the pins detaches what only they held.
            let _ = std::fs::remove_dir_all(p);
            let _ = std::fs::remove_dir(flowpin_node::pin_lock::lock_path(p));
        }
    }
}

fn node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowpin-node"))
        .args(args)
        .output()
        .expect("run flowpin-node")
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flowpin-node"))
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn flowpin-node")
}

fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write(path: &Path, text: String) {
    std::fs::write(path, text).expect("write config");
}

#[test]
fn privileged_walkthrough_one_lb_two_backends_balanced_traffic() {
    if !require_bpf("privileged_walkthrough_one_lb_two_backends_balanced_traffic") {
        return;
    }
    let cfg = RoutedLbConfig {
        subnet: 117,
        vip: "10.217.0.1".parse().expect("vip"),
        lb_mac: [0x02, 0, 0, 0, 0x75, 0x02],
        router_mac: [0x02, 0, 0, 0, 0x75, 0x01],
    };
    let net = RoutedLb::new("wk", &cfg, 2).expect("topology");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let etcd = rt.block_on(LocalEtcd::start()).expect("etcd");
    let prefix = format!("/{}", unique_name("walk"));
    let dir = tempfile::tempdir().expect("tempdir");
    let pin_dir = Path::new("/sys/fs/bpf").join(unique_name("walk-lb"));
    let mut procs = Procs {
        children: Vec::new(),
        pin_dir: pin_dir.clone(),
        agent_pins: Vec::new(),
    };
    let registry = format!(
        "[registry]\nendpoints = [\"{}\"]\nprefix = \"{prefix}\"\n",
        etcd.endpoint()
    );

    // Step 1: declare the VIP.
    let lb_toml = dir.path().join("lb.toml");
    let port_file = dir.path().join("lb.port");
    write(
        &lb_toml,
        format!(
            "{registry}
[lb]
interface = \"l0\"
netns = \"{ns}\"
pin_dir = \"{pins}\"
local_mac = \"{lmac}\"
next_hop_mac = \"{rmac}\"
tunnel_src_v4 = \"10.200.0.0/16\"
conn_table_shared = true
xdp_mode = \"generic\"
on_exit = \"remove\"

[metrics]
listen = \"127.0.0.1:0\"
port_file = \"{pf}\"
",
            ns = net.lb.path().display(),
            pins = pin_dir.display(),
            lmac = mac_str(cfg.lb_mac),
            rmac = mac_str(cfg.router_mac),
            pf = port_file.display(),
        ),
    );
    let lb = lb_toml.to_str().expect("utf-8");
    let vip = format!("{}:80/tcp", cfg.vip);
    let o = node(&["vip", "add", &vip, "--server-id", "--config", lb]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Step 2: the LB.
    assert!(node(&["check-config", lb]).status.success());
    procs.children.push(spawn(&["lb", "--config", lb]));

    // Step 3: each backend: its service (an HTTP server on VIP:80 that
    // answers its own name) in a cgroup, then the agent.
    let mut cgroups = Vec::new();
    for (j, be) in net.backends.iter().enumerate() {
        let root = dir.path().join(format!("www{j}"));
        std::fs::create_dir(&root).expect("www");
        std::fs::write(root.join("id"), format!("backend-{j}")).expect("id");
        let cg = Cgroup::new(&format!("wk{j}")).expect("cgroup");
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                be.name(),
                "python3",
                "-m",
                "http.server",
                "80",
                "--bind",
            ])
            .arg(cfg.vip.to_string())
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 http.server");
        cg.add_pid(server.id()).expect("service into its cgroup");
        procs.children.push(server);
        let agent_pins = Path::new("/sys/fs/bpf").join(unique_name(&format!("walk-be{j}")));
        procs.agent_pins.push(agent_pins.clone());
        let toml = dir.path().join(format!("backend{j}.toml"));
        write(
            &toml,
            format!(
                "{registry}
[backend]
host = \"backend-{j}\"
address = \"{addr}\"
interface = \"b0\"
netns = \"{ns}\"
cgroup = \"{cg}\"
xdp_mode = \"generic\"
drain_timeout_secs = 1
pin_dir = \"{agent_pins}\"

[[backend.vips]]
addr = \"{vip}\"
port = 80
",
                addr = cfg.backend_addr(j),
                ns = be.path().display(),
                cg = cg.path().display(),
                vip = cfg.vip,
                agent_pins = agent_pins.display(),
            ),
        );
        let t = toml.to_str().expect("utf-8").to_string();
        assert!(node(&["check-config", &t]).status.success());
        procs.children.push(spawn(&["backend", "--config", &t]));
        cgroups.push(cg);
    }

    // Both backends registered, and the LB applied them.
    eventually("two backends registered", || {
        let o = node(&["backends", &vip, "--config", lb, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        (v["backends"].as_array()?.len() == 2).then_some(())
    });
    eventually("the LB routes to both", || {
        let o = node(&["status", "--config", lb, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        (v["vips"][vip.as_str()]["backends"].as_array()?.len() == 2).then_some(())
    });

    // Step 4: balanced traffic from the client.
    let url = format!("http://{}/id", cfg.vip);
    let mut seen = [0u32; 2];
    for _ in 0..40 {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                net.client.name(),
                "curl",
                "-s",
                "-m",
                "3",
                &url,
            ])
            .output()
            .expect("curl");
        let body = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "curl {url} failed: {body}");
        match body.trim() {
            "backend-0" => seen[0] += 1,
            "backend-1" => seen[1] += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(seen[0] >= 5 && seen[1] >= 5, "not balanced: {seen:?}");

    let o = node(&["stats", "--config", lb, "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stats json");
    for j in 0..2 {
        let a = cfg.backend_addr(j).to_string();
        assert!(
            st["backends"][a.as_str()]["packets"].as_u64().unwrap_or(0) > 0,
            "{st}"
        );
    }
    drop(procs);
    drop(cgroups);
}
