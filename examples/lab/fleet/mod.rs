//! The fleet section of the lab: a real etcd (`LocalEtcd`, data directory
//! removed on exit), 3 `node lb` processes on their own namespaces, the
//! registry as the only source of truth.
//!
//! What it measures today (PARTIAL, see the README):
//! - `convergence_ms`: an etcd change (drain / undrain / add / remove of one
//!   of 100 synthetic backends of the VIP) until every LB's ring digest (its
//!   `/status`) matches at the new revision, over ≥ 20 changes;
//! - `digests_agree` at the end;
//! - `lb_idle_cpu_percent`: CPU of one idle `node lb` over 30 s (5 s with
//!   `--quick`), from `/proc/<pid>/stat`.
//!
//! Not done yet: the traffic scenarios (backend crashed, registry down,
//! rolling LB restart, backend drained) with `node backend` processes and
//! clients.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowpin_bpf_progs::testing::{unique_name, NetNs, VethPair};
use flowpin_bpf_progs::xdp_attach::XdpLink;
use flowpin_bpf_progs::xdp_lb::XdpLb;
use flowpin_bpf_progs::xdp_pass::XdpPass;
use flowpin_registry::local_etcd::LocalEtcd;
use flowpin_registry::{
    BackendSpec, BackendState, Proto, Registry, RegistryConfig, ServerId, VipFlags, VipKey, VipSpec,
};
use serde::Serialize;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// LB nodes in the fleet.
const LBS: usize = 3;
/// Synthetic backends registered for the convergence measurement.
const BACKENDS: usize = 100;
/// Registry changes measured.
const CHANGES: usize = 24;

/// Percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
}

/// What the fleet section reports.
#[derive(Debug, Serialize)]
pub(crate) struct FleetReport {
    pub(crate) convergence_ms: Percentiles,
    pub(crate) convergence_changes: usize,
    pub(crate) digests_agree: bool,
    pub(crate) lb_idle_cpu_percent: f64,
    pub(crate) lb_idle_secs: f64,
}

/// A `node lb` process and its pins; killed and unpinned on drop.
struct LbNode {
    child: Option<Child>,
    pin_dir: PathBuf,
    port: u16,
}

impl Drop for LbNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = XdpLb::unpin(&self.pin_dir);
    }
}

fn node_binary() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os("FLOWPIN_NODE") {
        return Ok(PathBuf::from(p));
    }
    // target/<profile>/examples/lab → target/<profile>/node
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("node"))
        .ok_or("cannot locate the node binary")?;
    if !p.is_file() {
        return Err(format!(
            "{} missing: build it first (cargo build --release -p flowpin-node; scripts/lab.sh does)",
            p.display()
        )
        .into());
    }
    Ok(p)
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn status(port: u16) -> Option<serde_json::Value> {
    serde_json::from_str(&http_get(port, "/status")?).ok()
}

fn mac(ns: &NetNs, dev: &str) -> Result<String, Error> {
    let out = ns.ip(&["-json", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v[0]["address"]
        .as_str()
        .ok_or("no MAC in ip -json output")?
        .to_string())
}

/// `(revision, digest of the VIP)` of every LB, once all answered.
fn digests(lbs: &[LbNode], vip: &str) -> Option<Vec<(i64, String)>> {
    lbs.iter()
        .map(|n| {
            let s = status(n.port)?;
            Some((
                s["revision"].as_i64()?,
                s["vips"][vip]["digest"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Waits until every LB is at `rev` or later with one digest; returns when.
fn wait_agree(lbs: &[LbNode], vip: &str, rev: i64, limit: Duration) -> Result<Instant, Error> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(d) = digests(lbs, vip) {
            if d.iter().all(|(r, _)| *r >= rev) && d.windows(2).all(|w| w[0].1 == w[1].1) {
                return Ok(Instant::now());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "LBs did not agree on revision {rev} within {limit:?}: {:?}",
                digests(lbs, vip)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn cpu_ticks(pid: u32) -> Result<u64, Error> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at state.
    let rest = s.rsplit_once(')').ok_or("bad /proc/pid/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    Ok(f.get(11).ok_or("utime")?.parse::<u64>()? + f.get(12).ok_or("stime")?.parse::<u64>()?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn progress(msg: impl std::fmt::Display) {
    eprintln!("[fleet] {msg}");
}

/// Runs the fleet section.
pub(crate) fn run(quick: bool) -> Result<FleetReport, Error> {
    let node = node_binary()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    progress("starting etcd (temporary data directory)");
    let etcd = rt.block_on(LocalEtcd::start())?;
    let prefix = format!("/{}", unique_name("fleet"));
    let reg = rt.block_on(Registry::connect(RegistryConfig::new(
        [etcd.endpoint()],
        &prefix,
    )))?;

    progress("namespaces: router + 3 LB hosts; xdp_pass on the router's veth ends");
    let router = NetNs::new("frt")?;
    let pass = XdpPass::load(Default::default())?;
    let tmp = tempfile::tempdir()?;
    let mut hosts = Vec::new();
    let mut links: Vec<VethPair> = Vec::new();
    let mut pass_links: Vec<XdpLink> = Vec::new();
    for i in 0..LBS {
        let ns = NetNs::new(&format!("flb{}", i + 1))?;
        let rif = format!("r-lb{}", i + 1);
        links.push(VethPair::new(&router, &rif, &ns, "eth0")?);
        let p = &pass;
        let name = rif.clone();
        pass_links.push(router.run(move || p.attach(name.as_str()))??);
        hosts.push((ns, rif));
    }
    let mut lbs: Vec<LbNode> = Vec::new();
    for (i, (ns, rif)) in hosts.iter().enumerate() {
        let pin_dir = Path::new("/sys/fs/bpf").join(unique_name(&format!("fleet-lb{}", i + 1)));
        let port_file = tmp.path().join(format!("lb{}.port", i + 1));
        let config = tmp.path().join(format!("lb{}.toml", i + 1));
        std::fs::write(
            &config,
            format!(
                "[registry]\nendpoints = [\"{ep}\"]\nprefix = \"{prefix}\"\n\n[lb]\ninterface = \"eth0\"\nnetns = \"{ns}\"\npin_dir = \"{pins}\"\nlocal_mac = \"{l}\"\nnext_hop_mac = \"{r}\"\ntunnel_src_v4 = \"10.{t}.0.0/16\"\nconn_table_shared = true\nlru_memory_mib = 1\non_exit = \"remove\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\nport_file = \"{pf}\"\n",
                ep = etcd.endpoint(),
                ns = ns.path().display(),
                pins = pin_dir.display(),
                l = mac(ns, "eth0")?,
                r = mac(&router, rif)?,
                t = 200 + i,
                pf = port_file.display(),
            ),
        )?;
        let log = std::fs::File::create(tmp.path().join(format!("lb{}.log", i + 1)))?;
        let child = Command::new(&node)
            .args(["lb", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut n = LbNode {
            child: Some(child),
            pin_dir,
            port: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        n.port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break p;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node lb {} did not start; its log:\n{}",
                    i + 1,
                    std::fs::read_to_string(tmp.path().join(format!("lb{}.log", i + 1)))
                        .unwrap_or_default()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        lbs.push(n);
    }
    progress(format!(
        "3 node lb processes up; registering a VIP with {BACKENDS} synthetic backends"
    ));
    let key = VipKey::new(Ipv4Addr::new(10, 100, 0, 1).into(), 8080, Proto::Tcp);
    let vip_name = "10.100.0.1:8080/tcp";
    let addr =
        |j: usize| -> IpAddr { Ipv4Addr::new(10, 3, (j / 200) as u8, (j % 200) as u8 + 2).into() };
    let sid = |j: usize| ServerId::new(2000 + j as u32);
    let host = rt.block_on(async {
        reg.put_vip(&VipSpec::new(
            key,
            VipFlags {
                server_id: true,
                ..VipFlags::default()
            },
        ))
        .await?;
        let h = reg.register(Duration::from_secs(30)).await?;
        let entries: Vec<_> = (0..BACKENDS)
            .map(|j| (key, BackendSpec::new(addr(j), 100, sid(j))))
            .collect();
        h.add_backends(&entries).await?;
        Ok::<_, flowpin_registry::Error>(h)
    })?;
    let rev0 = rt.block_on(async { reg.watch().await.map(|w| w.current().revision) })?;
    wait_agree(&lbs, vip_name, rev0, Duration::from_secs(20))?;

    progress(format!(
        "{CHANGES} registry changes, each until all 3 ring digests match"
    ));
    let mut ms = Vec::new();
    for c in 0..CHANGES {
        let r = c / 4;
        let t0 = Instant::now();
        let rev = rt.block_on(async {
            match c % 4 {
                0 => host.set_state(&key, addr(r), BackendState::Draining).await,
                1 => host.set_state(&key, addr(r), BackendState::Active).await,
                2 => {
                    let b = BackendSpec::new(addr(BACKENDS + r), 100, sid(BACKENDS + r));
                    host.add_backend(&key, &b).await
                }
                _ => host
                    .remove_backend(&key, addr(BACKENDS + r))
                    .await
                    .map(|_| 0),
            }
        })?;
        let rev = if rev == 0 {
            rt.block_on(async { reg.watch().await.map(|w| w.current().revision) })?
        } else {
            rev
        };
        let t1 = wait_agree(&lbs, vip_name, rev, Duration::from_secs(10))?;
        ms.push((t1 - t0).as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let agree = digests(&lbs, vip_name).is_some_and(|d| d.windows(2).all(|w| w[0] == w[1]));

    let idle = if quick { 5.0 } else { 30.0 };
    progress(format!("idle CPU of node lb 1 over {idle} s"));
    let pid = lbs[0].child.as_ref().map(Child::id).ok_or("lb 1 gone")?;
    let a = cpu_ticks(pid)?;
    std::thread::sleep(Duration::from_secs_f64(idle));
    let b = cpu_ticks(pid)?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (b - a) as f64 / hz / idle * 100.0;

    drop(lbs);
    drop(pass_links);
    drop(links);
    drop(host);
    drop(etcd);
    Ok(FleetReport {
        convergence_ms: Percentiles {
            p50: percentile(&ms, 0.5),
            p99: percentile(&ms, 0.99),
        },
        convergence_changes: ms.len(),
        digests_agree: agree,
        lb_idle_cpu_percent: cpu,
        lb_idle_secs: idle,
    })
}

/// `lab --fleet-only`: runs the fleet section and prints its report.
pub(crate) fn main(json: bool, quick: bool) -> std::process::ExitCode {
    match run(quick) {
        Ok(r) => {
            eprintln!(
                "fleet: convergence p50 {:.1} ms, p99 {:.1} ms over {} changes (3 LBs, {BACKENDS} backends); digests agree: {}; idle node lb CPU {:.2} % over {} s",
                r.convergence_ms.p50,
                r.convergence_ms.p99,
                r.convergence_changes,
                r.digests_agree,
                r.lb_idle_cpu_percent,
                r.lb_idle_secs
            );
            if json {
                match serde_json::to_string(&r) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("JSON: {e}");
                        return std::process::ExitCode::FAILURE;
                    }
                }
            }
            if r.digests_agree {
                std::process::ExitCode::SUCCESS
            } else {
                eprintln!("fleet failed: LB ring digests differ");
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("fleet failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
