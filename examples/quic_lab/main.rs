//! quic_lab: real QUIC (quinn) connections through the whole flowpin data
//! path, while load balancers, backends, client addresses and server
//! processes change.
//!
//! The network is the lab's (`examples/lab/topo.rs`): a client namespace, a
//! router spreading the VIP over two `xdp_lb` LBs by ECMP, five backend
//! hosts with `xdp_decap`. Every backend host runs its QUIC server as its
//! own process, in its own namespace and cgroup, on a flowpin reuseport
//! group (`server.rs`); each CID carries the host's server_id and the
//! socket id. The client holds `--conns` long-lived connections, each with a
//! stream doing a 64-byte round trip every 100 ms. A connection is broken if
//! quinn reports it closed or timed out, or a round trip takes 2.5 s.
//!
//! Scenarios, each run with CID routing on (VIP with the QUIC flag) and off
//! (no flag: connection table + Maglev ring):
//! - `backend added, then LB1 out of ECMP`;
//! - `clients rebind to a new source port` (`Endpoint::rebind`);
//! - `server release`: a new server process joins every backend's group
//!   and takes new connections; the old one keeps its own.
//! - `handshakes in flight during a ring change` (QUIC-LB plaintext): the
//!   client's datagrams leave 100 ms late, connections open one
//!   after the other over 2 s, and half way the ring changes and LB1 leaves
//!   ECMP, so some handshakes are under way: their Handshake packets carry
//!   the server's CID and must follow it (long headers routed by DCID).
//! - `config rotated under load` (QUIC-LB plaintext): the LBs get config 1
//!   beside config 0, then the servers issue config 1 (quinn replaces its
//!   CIDs every second), retire config 0, the LBs drop it, and then the
//!   ring changes and LB1 leaves ECMP: every connection must be on config 1.
//! - the first three again with encrypted QUIC-LB CIDs (four-pass).
//!
//! With CID routing each VIP declares its layout (`XdpLb::set_vip_cid`):
//! flowpin's for the first three, QUIC-LB for the others.
//!
//! Run as root: `cargo run --release --example quic_lab -- --json`
//! (`--quick` for CI: 60 connections; `--only TEXT` runs the scenarios
//! whose name contains TEXT). The last line with `--json` is
//! `{"scenarios":[{"name","connections","broken_with_cid","broken_without_cid"}]}`.

#[allow(dead_code)]
#[path = "../lab/topo.rs"]
mod topo;

mod cid;
mod quic;
mod server;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cid::CidMode;
use clap::Parser;
use flowpin::bpf::xdp_lb::{Backend, Proto, Vip, VipFlags, XdpLb, XdpLbConfig, XdpLink};
use flowpin::sk_reuseport::ReuseportGroup;
use flowpin_testing::{unique_name, Cgroup, NetNs};

use topo::Topology;

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// The QUIC VIP port.
pub(crate) const QUIC_PORT: u16 = 443;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[derive(Parser, Debug)]
#[command(about = "quinn connections through xdp_lb, ECMP and reuseport releases")]
struct Args {
    /// Print the JSON report as the last line.
    #[arg(long)]
    json: bool,
    /// Long-lived connections per run.
    #[arg(long, default_value_t = 300)]
    conns: usize,
    /// CI mode: 60 connections.
    #[arg(long)]
    quick: bool,
    /// Run only the scenarios whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Internal: run a server process.
    #[arg(long, num_args = 6, hide = true)]
    server_child: Option<Vec<String>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    BackendAddedLbOut,
    Rebind,
    Release,
    HandshakesInFlight,
    Rotated,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::BackendAddedLbOut => "backend added, then LB1 out of ECMP",
            Scenario::Rebind => "clients rebind to a new source port",
            Scenario::Release => "server release",
            Scenario::HandshakesInFlight => "handshakes in flight during a ring change",
            Scenario::Rotated => "config rotated under load, then LB1 out of ECMP",
        }
    }
}

/// The ring change of the scenarios that move flows: backend 4 joins, and
/// (after `pause`) LB1 leaves ECMP, so LB2 takes flows it has never seen.
async fn ring_change_lb_out(
    lbs: &mut [XdpLb],
    topo: &Topology,
    pause: Duration,
) -> Result<(), Error> {
    let ring = [0usize, 1, 2, 3, 4];
    for lb in lbs.iter_mut() {
        lb.set_backends(&vip(), &backends(&ring))?;
    }
    tokio::time::sleep(pause).await;
    topo.set_ecmp(&[false, true])?;
    Ok(())
}

fn progress(s: &str) {
    eprintln!("[quic_lab] {s}");
}

fn check_interrupted() -> Result<(), Error> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Err("interrupted".into());
    }
    Ok(())
}

/// A server process; stdin EOF stops it, killed if it does not exit.
struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl ServerProcess {
    fn start(
        index: usize,
        ns: &NetNs,
        cg: &Cgroup,
        pin: &Path,
        join: bool,
        mode: CidMode,
    ) -> Result<Self, Error> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--server-child")
            .arg(index.to_string())
            .arg(ns.path())
            .arg(cg.path())
            .arg(pin)
            .arg(if join { "join" } else { "create" })
            .arg(mode.arg())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let mut p = ServerProcess { child, stdin };
        let out = p.child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        if line.trim() != "ready" {
            return Err(format!("server {index} said {line:?}").into());
        }
        Ok(p)
    }

    /// Sends a command line (`rotate`, `retire`).
    fn send(&mut self, line: &str) -> Result<(), Error> {
        let stdin = self.stdin.as_mut().ok_or("server stdin closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stdin = None;
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pins of the backends' reuseport groups, removed on drop.
struct Pins(Vec<PathBuf>);

impl Drop for Pins {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = ReuseportGroup::remove_pins(p);
            let _ = std::fs::remove_dir(p);
        }
    }
}

fn vip() -> Vip {
    Vip::new(topo::VIP.into(), QUIC_PORT, Proto::Udp)
}

fn backends(ring: &[usize]) -> Vec<Backend> {
    ring.iter()
        .map(|&j| {
            Backend::new(topo::backend_addr(j).into()).server_id(
                flowpin::tcp_opt::ServerId::new(topo::server_id(j)).expect("non-zero server_id"),
            )
        })
        .collect()
}

fn udp_in(ns: &NetNs) -> Result<UdpSocket, Error> {
    Ok(ns.run(|| UdpSocket::bind(SocketAddr::from((topo::CLIENT, 0))))??)
}

/// One run: fresh network, LBs, servers; `n` connections; the scenario;
/// returns how many connections broke.
fn run_once(scenario: Scenario, mode: CidMode, cid: bool, n: usize) -> Result<usize, Error> {
    let tag = format!(
        "{}{} / CID {}",
        scenario.name(),
        mode.suffix(),
        if cid { "on" } else { "off" }
    );
    progress(&format!("{tag}: building the network"));
    // The lab's network, xdp_pass on the router's LB ends included.
    let topo = Topology::build(topo::LBS, false)?;
    let mut links: Vec<XdpLink> = Vec::new();
    let initial = [0usize, 1, 2, 3];
    let mut lbs = Vec::new();
    for i in 0..topo::LBS {
        let mut lb = XdpLb::load(
            XdpLbConfig::default()
                .local_mac(topo.lb_mac[i])
                .next_hop_mac(topo.router_mac_to_lb[i])
                .tunnel_src_v4((std::net::Ipv4Addr::new(10, 200 + i as u8, 0, 0), 16))
                .conn_table_shared(true)
                .quic_cid_len(flowpin::quinn::DEFAULT_CID_LEN as u8),
        )?;
        lb.add_vip(vip(), if cid { VipFlags::QUIC } else { VipFlags::NONE })?;
        if cid {
            lb.set_vip_cid(&vip(), mode.vip_cid(&[0]))?;
        }
        lb.set_backends(&vip(), &backends(&initial))?;
        let l = &lb;
        links.push(topo.lbs[i].run(move || l.attach(topo::LB_IF))??);
        lbs.push(lb);
    }
    let mut cgroups = Vec::new();
    let pins = Pins(
        (0..topo::BACKENDS)
            .map(|j| Path::new("/sys/fs/bpf").join(unique_name(&format!("qlab{j}"))))
            .collect(),
    );
    let mut servers = Vec::new();
    for j in 0..topo::BACKENDS {
        let cg = Cgroup::new(&format!("qlab{j}"))?;
        servers.push(ServerProcess::start(
            j,
            &topo.backends[j],
            &cg,
            &pins.0[j],
            false,
            mode,
        )?);
        cgroups.push(cg);
    }
    check_interrupted()?;

    let rt = tokio::runtime::Runtime::new()?;
    let broken = if scenario == Scenario::HandshakesInFlight {
        rt.block_on(handshakes_in_flight(&mut lbs, &topo, n, &tag))?
    } else {
        rt.block_on(async {
            let to = SocketAddr::from((topo::VIP, QUIC_PORT));
            let mut conns = Vec::new();
            for _ in 0..n {
                let ep = quic::client(udp_in(&topo.client)?)?;
                conns.push(quic::Conn::open(ep, to).await?);
            }
            progress(&format!("{tag}: {n} connections up"));
            let stop = Arc::new(AtomicBool::new(false));
            let broken = Arc::new(AtomicUsize::new(0));
            let mut eps = Vec::new();
            let mut tasks = Vec::new();
            for mut c in conns {
                eps.push(c.ep.clone());
                let (stop, broken) = (stop.clone(), broken.clone());
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if c.conn.close_reason().is_some() || !c.round_trip().await {
                            broken.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    c.conn.close(0u32.into(), b"done");
                }));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            match scenario {
                Scenario::BackendAddedLbOut => {
                    ring_change_lb_out(&mut lbs, &topo, Duration::from_secs(2)).await?;
                }
                Scenario::Rotated => {
                    // The draft's order: every LB has config 1 before any
                    // server issues it; config 0 stays routable until the
                    // servers have replaced their CIDs and retired it.
                    if cid {
                        for lb in &mut lbs {
                            lb.set_vip_cid(&vip(), mode.vip_cid(&[0, 1]))?;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    for s in &mut servers {
                        s.send("rotate")?;
                    }
                    // quinn replaces CIDs every second (the generator's lifetime).
                    tokio::time::sleep(Duration::from_secs(4)).await;
                    for s in &mut servers {
                        s.send("retire")?;
                    }
                    if cid {
                        for lb in &mut lbs {
                            lb.set_vip_cid(&vip(), mode.vip_cid(&[1]))?;
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    ring_change_lb_out(&mut lbs, &topo, Duration::from_secs(1)).await?;
                }
                Scenario::HandshakesInFlight => {}
                Scenario::Rebind => {
                    for ep in &eps {
                        ep.rebind(udp_in(&topo.client)?)?;
                    }
                }
                Scenario::Release => {
                    for (j, ((ns, cg), pin)) in
                        topo.backends.iter().zip(&cgroups).zip(&pins.0).enumerate()
                    {
                        servers.push(ServerProcess::start(j, ns, cg, pin, true, mode)?);
                    }
                    // New connections land on the new processes.
                    for _ in 0..(n / 10).max(5) {
                        let ep = quic::client(udp_in(&topo.client)?)?;
                        let mut c = quic::Conn::open(ep, to).await?;
                        if !c.round_trip().await {
                            return Err::<usize, Error>(
                                "a new connection after the release failed".into(),
                            );
                        }
                        c.conn.close(0u32.into(), b"done");
                    }
                }
            }
            check_interrupted()?;
            tokio::time::sleep(Duration::from_secs(4)).await;
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                let _ = t.await;
            }
            Ok(broken.load(Ordering::Relaxed))
        })?
    };
    drop(rt);
    progress(&format!("{tag}: {broken} of {n} connections broke"));
    drop(servers);
    drop(cgroups);
    drop(pins);
    drop(links);
    drop(lbs);
    drop(topo);
    Ok(broken)
}

/// Connections opened one after the other over 2 s (client link delayed);
/// half way, the ring change and LB1 out of ECMP. Broken: a handshake that
/// fails, or a connection that breaks afterwards.
async fn handshakes_in_flight(
    lbs: &mut [XdpLb],
    topo: &Topology,
    n: usize,
    tag: &str,
) -> Result<usize, Error> {
    let to = SocketAddr::from((topo::VIP, QUIC_PORT));
    let spread = Duration::from_secs(2);
    let stop = Arc::new(AtomicBool::new(false));
    let broken = Arc::new(AtomicUsize::new(0));
    let failed_handshakes = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..n {
        // The client's datagrams leave 100 ms late (see quic::client_delayed).
        let ep = quic::client_delayed(udp_in(&topo.client)?, Some(Duration::from_millis(100)))?;
        let (stop, broken, failed) = (stop.clone(), broken.clone(), failed_handshakes.clone());
        let start = spread * u32::try_from(i)? / u32::try_from(n.max(1))?;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(start).await;
            let Ok(mut c) = quic::Conn::open(ep, to).await else {
                broken.fetch_add(1, Ordering::Relaxed);
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            while !stop.load(Ordering::Relaxed) {
                if c.conn.close_reason().is_some() || !c.round_trip().await {
                    broken.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            c.conn.close(0u32.into(), b"done");
        }));
    }
    tokio::time::sleep(spread / 2).await;
    progress(&format!("{tag}: ring change with handshakes under way"));
    ring_change_lb_out(lbs, topo, Duration::ZERO).await?;
    check_interrupted()?;
    tokio::time::sleep(spread / 2 + Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    progress(&format!(
        "{tag}: {} handshakes failed",
        failed_handshakes.load(Ordering::Relaxed)
    ));
    Ok(broken.load(Ordering::Relaxed))
}

fn lab(args: &Args) -> Result<serde_json::Value, Error> {
    let n = if args.quick { 60 } else { args.conns };
    let mut out = Vec::new();
    for (s, mode) in [
        (Scenario::BackendAddedLbOut, CidMode::Flowpin),
        (Scenario::Rebind, CidMode::Flowpin),
        (Scenario::Release, CidMode::Flowpin),
        (Scenario::HandshakesInFlight, CidMode::QuicLbPlain),
        (Scenario::Rotated, CidMode::QuicLbPlain),
        (Scenario::BackendAddedLbOut, CidMode::QuicLbEncrypted),
        (Scenario::Rebind, CidMode::QuicLbEncrypted),
        (Scenario::Release, CidMode::QuicLbEncrypted),
    ] {
        let name = format!("{}{}", s.name(), mode.suffix());
        if args
            .only
            .as_ref()
            .is_some_and(|o| !name.contains(o.as_str()))
        {
            continue;
        }
        let with = run_once(s, mode, true, n)?;
        let without = run_once(s, mode, false, n)?;
        out.push(serde_json::json!({
            "name": name,
            "connections": n,
            "broken_with_cid": with,
            "broken_without_cid": without,
        }));
    }
    Ok(serde_json::json!({ "scenarios": out }))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(c) = &args.server_child {
        let parsed = (|| {
            Some(server::ServerArgs {
                index: c.first()?.parse().ok()?,
                netns: PathBuf::from(c.get(1)?),
                cgroup: PathBuf::from(c.get(2)?),
                pin: PathBuf::from(c.get(3)?),
                join: c.get(4)? == "join",
                mode: CidMode::parse(c.get(5)?)?,
            })
        })();
        let Some(parsed) = parsed else {
            eprintln!("bad --server-child arguments");
            return ExitCode::from(2);
        };
        return match server::child_main(parsed) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("quic_lab creates namespaces, cgroups and BPF programs: run it as root");
        return ExitCode::from(2);
    }
    if let Err(e) = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::Relaxed)) {
        eprintln!("cannot install the Ctrl-C handler: {e}");
        return ExitCode::FAILURE;
    }
    match lab(&args) {
        Ok(report) => {
            println!(
                "{:<72} {:>6} {:>10} {:>13}",
                "scenario", "conns", "with CID", "without CID"
            );
            for s in report["scenarios"].as_array().into_iter().flatten() {
                println!(
                    "{:<72} {:>6} {:>10} {:>13}",
                    s["name"].as_str().unwrap_or(""),
                    s["connections"].as_u64().unwrap_or(0),
                    s["broken_with_cid"].as_u64().unwrap_or(0),
                    s["broken_without_cid"].as_u64().unwrap_or(0)
                );
            }
            if args.json {
                println!("{report}");
            }
            let _ = std::io::stdout().flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("quic_lab failed: {e}");
            ExitCode::FAILURE
        }
    }
}
