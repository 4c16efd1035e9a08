//! Floods (issue 23): spoofed-source floods against a VIP while a backend
//! is added, each run with and without server_id routing.
//!
//! - `SYN flood (spoofed sources) while a backend is added`: a TCP VIP,
//!   the lab's long-lived streams ([`Streams`]).
//! - `UDP flood (spoofed sources) vs QUIC VIP while a backend is added`: a
//!   UDP VIP on port 443, with the QUIC flag (server_id in the destination
//!   connection ID) or without (connection table + ring); long-lived UDP
//!   flows shaped like QUIC ([`UdpFlows`]): the first packet a long header,
//!   the next ones short headers whose DCID carries the server_id the
//!   backend announced in its first answer.
//!
//! Each run: fresh LBs with a small connection table ([`TABLE_BYTES`], so
//! the flood inserts many times its size), the long-lived flows open and
//! confirmed, then the flood for [`FLOOD`]; [`RING_CHANGE_AFTER`] into it
//! backend 5 joins the ring on both LBs. Meanwhile a prober opens
//! legitimate new connections (or UDP flows) one after another and counts
//! those that complete an exchange.
//!
//! The flood is an XDP loop seeded from the client namespace: the
//! generator ([`crate::flood_gen`], `AF_PACKET`, paced to [`SEED_PPS`])
//! sends spoofed frames to the VIP; the router forwards them to the LBs;
//! on the router's veth end facing each LB, where the LB's `XDP_TX` output
//! lands, `xdp_flood` (instead of `xdp_pass`) admits up to [`LOOP_FRAMES`]
//! of them into a loop: each time the LB sends one out encapsulated, it is
//! turned straight back into a new spoofed SYN (UDP datagram) to the VIP
//! and `XDP_TX`ed to the LB, without the kernel stack. Legitimate traffic
//! passes untouched; seeds beyond the cap, and loop frames after
//! [`LOOP_LAPS`] laps, go on to the backends. The frames in flight stay far
//! below the veth rings (256 frames), so the loop never crowds legitimate
//! packets out of a ring.
//!
//! The row reports broken long-lived flows (the table keeps them: 0
//! expected with **and** without server_id), the share of legitimate new
//! flows that succeeded, the LBs' confirmed evictions (0 expected), and
//! the rates: offered (flood frames sent to the LBs: the generator's plus
//! the loop's), received (VIP packets the LBs processed), and what went on
//! to the backends. The lab fails on a broken flow or a confirmed
//! eviction ([`failures`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowpin_bpf_progs::xdp_flood::{FloodMode, FloodStats, XdpFlood, XdpFloodConfig};
use flowpin_bpf_progs::xdp_lb::{LbStats, Proto, Vip, VipFlags, XdpLb, XdpLbConfig, CONN_WAYS};
use flowpin_tcp_opt::{encode_cid, CidLayout, ServerId};
use flowpin_testing::NetNs;
use serde::Serialize;

use crate::flood_gen::{Flood, FloodKind, Target};
use crate::proto::{parse_greeting, GREETING_LEN, PING_LEN, RESPONSE_LEN};
use crate::run::{Run, Tally};
use crate::topo::{self, Topology};
use crate::workload::{Broken, ConnReport, Streams, STALL_AFTER};
use crate::{pause, Error, LbHost, RunDetail, INITIAL_RING, SPARE};

/// The UDP (QUIC) VIP's port.
const UDP_PORT: u16 = 443;
/// Connection-table memory per LB: 256 KiB, 4,096 sets of 4 ways (one
/// table shared by the CPUs; the 500 long-lived flows fill 1.5 % of it):
/// the flood inserts several times this many flows into each LB.
const TABLE_BYTES: u64 = 1 << 18;
/// How long the flood runs.
const FLOOD: Duration = Duration::from_secs(6);
/// When, into the flood, backend 5 joins the ring.
const RING_CHANGE_AFTER: Duration = Duration::from_secs(2);
/// The generator's rate (frames per second; `LAB_FLOOD_MAX_PPS` overrides,
/// 0 unpaced): it only seeds the loop and tops it up, and what the loop does
/// not admit goes on to the backends as a plain flood.
const SEED_PPS: u64 = 2_000;
/// Flood frames circulating in the XDP loops at most (both LBs together).
const LOOP_FRAMES: u32 = 8;
/// [`LOOP_FRAMES`], or `LAB_FLOOD_LOOP_FRAMES` (at most 192: the veth
/// rings hold 256 frames).
fn loop_frames() -> u32 {
    std::env::var("LAB_FLOOD_LOOP_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(LOOP_FRAMES, |n: u32| n.min(192))
}
/// A loop frame goes on to its backend after this many laps.
const LOOP_LAPS: u32 = 32_767;
/// A legitimate new flow succeeds if its exchange completes within this.
const NEW_FLOW_TIMEOUT: Duration = Duration::from_secs(2);

/// One of the flood scenarios.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FloodScenario {
    Syn,
    Udp,
}

impl FloodScenario {
    pub(crate) const ALL: [FloodScenario; 2] = [FloodScenario::Syn, FloodScenario::Udp];

    pub(crate) fn name(self) -> &'static str {
        match self {
            FloodScenario::Syn => "SYN flood (spoofed sources) while a backend is added",
            FloodScenario::Udp => {
                "UDP flood (spoofed sources) vs QUIC VIP while a backend is added"
            }
        }
    }

    /// Not in the first look: both rows take about a minute.
    pub(crate) fn in_first_look(self) -> bool {
        false
    }

    fn vip(self) -> Vip {
        match self {
            FloodScenario::Syn => crate::vip(),
            FloodScenario::Udp => Vip::new(IpAddr::V4(topo::VIP), UDP_PORT, Proto::Udp),
        }
    }

    fn flags(self, server_id_routing: bool) -> VipFlags {
        match (self, server_id_routing) {
            (_, false) => VipFlags::NONE,
            (FloodScenario::Syn, true) => VipFlags::SERVER_ID,
            (FloodScenario::Udp, true) => VipFlags::QUIC,
        }
    }
}

/// What a flood row adds to the lab's usual fields (both runs together).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(crate) struct FloodFigures {
    /// Confirmed connection-table entries the LBs evicted during the floods (0).
    pub(crate) confirmed_evictions: u64,
    /// Probation entries evicted (the flood's own).
    pub(crate) probation_evictions: u64,
    /// Flows the LBs inserted during the floods.
    pub(crate) lb_new_flows: u64,
    /// Legitimate new connections (UDP flows) that completed their
    /// exchange during the floods, over those tried.
    pub(crate) legit_new_success_ratio: f64,
    pub(crate) legit_new_tried: u64,
    /// Flood frames sent to the LBs per second: the generator's and the
    /// XDP loop's (mean of both runs).
    pub(crate) flood_offered_pps: f64,
    /// VIP packets the LBs received per second during the floods (mean of both runs).
    pub(crate) flood_received_pps: f64,
    /// Of the offered rate: the generator's `AF_PACKET` frames per second.
    pub(crate) flood_generator_pps: f64,
    /// Of the offered rate: loop frames sent back to the LBs per second.
    pub(crate) flood_loop_pps: f64,
    /// Flood frames that went on to the backends per second (seeds the
    /// loop did not admit, loop frames after their laps).
    pub(crate) flood_to_backends_pps: f64,
    /// The loops' population cap (frames in flight, both LBs).
    pub(crate) flood_loop_frames: u32,
    /// Connection-table entries per LB (sets × ways).
    pub(crate) table_entries: u64,
    /// Flows an LB inserted over its table size, per run (mean over LBs and runs).
    pub(crate) flood_table_turnovers: f64,
}

/// One run's flood figures.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FloodRun {
    confirmed_evictions: u64,
    probation_evictions: u64,
    new_flows: u64,
    legit_tried: u64,
    legit_ok: u64,
    offered_pps: f64,
    received_pps: f64,
    generator_pps: f64,
    loop_pps: f64,
    to_backends_pps: f64,
    table_entries: u64,
}

impl FloodFigures {
    /// Both runs of a row.
    pub(crate) fn of(a: &FloodRun, b: &FloodRun) -> FloodFigures {
        let tried = a.legit_tried + b.legit_tried;
        let entries = a.table_entries.max(b.table_entries).max(1);
        FloodFigures {
            confirmed_evictions: a.confirmed_evictions + b.confirmed_evictions,
            probation_evictions: a.probation_evictions + b.probation_evictions,
            lb_new_flows: a.new_flows + b.new_flows,
            legit_new_success_ratio: if tried == 0 {
                0.0
            } else {
                (a.legit_ok + b.legit_ok) as f64 / tried as f64
            },
            legit_new_tried: tried,
            flood_offered_pps: (a.offered_pps + b.offered_pps) / 2.0,
            flood_received_pps: (a.received_pps + b.received_pps) / 2.0,
            flood_generator_pps: (a.generator_pps + b.generator_pps) / 2.0,
            flood_loop_pps: (a.loop_pps + b.loop_pps) / 2.0,
            flood_to_backends_pps: (a.to_backends_pps + b.to_backends_pps) / 2.0,
            flood_loop_frames: loop_frames(),
            table_entries: entries,
            flood_table_turnovers: (a.new_flows + b.new_flows) as f64
                / (2 * topo::LBS) as f64
                / entries as f64,
        }
    }
}

/// Why a flood row fails the lab, beyond the common check of a flow broken
/// with server_id (`failures` in main.rs): a long-lived flow broken
/// without server_id (the table keeps them), a confirmed eviction, or no
/// legitimate new flow tried.
pub(crate) fn failures(name: &str, without: usize, f: &FloodFigures) -> Vec<String> {
    let mut v = Vec::new();
    if without > 0 {
        v.push(format!(
            "{name}: {without} long-lived connections broke without server_id: the connection table lost established flows to the flood"
        ));
    }
    if f.confirmed_evictions > 0 {
        v.push(format!(
            "{name}: the LBs evicted {} confirmed connection-table entries during the flood (expected 0: probation entries go first)",
            f.confirmed_evictions
        ));
    }
    if f.legit_new_tried == 0 {
        v.push(format!(
            "{name}: no legitimate new connection was tried during the flood"
        ));
    }
    v
}

fn start_lb(
    topo: &Topology,
    i: usize,
    s: FloodScenario,
    server_id_routing: bool,
) -> Result<LbHost, Error> {
    let config = XdpLbConfig::default()
        .local_mac(topo.lb_mac[i])
        .next_hop_mac(topo.router_mac_to_lb[i])
        .tunnel_src_v4((std::net::Ipv4Addr::new(10, 200 + i as u8, 0, 0), 16))
        .conn_table_shared(true)
        .lru_memory_bytes(TABLE_BYTES);
    let mut lb = XdpLb::load(config)?;
    lb.add_vip(s.vip(), s.flags(server_id_routing))?;
    lb.set_backends(&s.vip(), &crate::backends(&INITIAL_RING))?;
    let link = {
        let lb_ref = &lb;
        topo.lbs[i].run(move || lb_ref.attach(topo::LB_IF))??
    };
    Ok(LbHost { lb, _link: link })
}

fn sum_global(lbs: &[LbHost]) -> Result<LbStats, Error> {
    let mut t = LbStats::default();
    for h in lbs {
        let g = h.lb.global_stats()?;
        t.new_flows += g.new_flows;
        t.confirmations += g.confirmations;
        t.probation_evictions += g.probation_evictions;
        t.confirmed_evictions += g.confirmed_evictions;
        t.drop_malformed += g.drop_malformed;
        t.drop_unknown_backend += g.drop_unknown_backend;
        t.drop_too_big += g.drop_too_big;
    }
    Ok(t)
}

fn vip_packets(lbs: &[LbHost], vip: &Vip) -> Result<(u64, u64), Error> {
    let (mut p, mut r) = (0, 0);
    for h in lbs {
        let s = h.lb.vip_stats(vip)?;
        p += s.packets;
        r += s.sid_routed;
    }
    Ok((p, r))
}

/// The client's long-lived flows of either kind.
enum Legit {
    Tcp(Streams),
    Udp(UdpFlows),
}

impl Legit {
    fn finish(self) -> Vec<ConnReport> {
        match self {
            Legit::Tcp(s) => s.finish(),
            Legit::Udp(u) => u.finish(),
        }
    }
}

/// Runs `s` once; the broken long-lived flows (to healthy backends: all
/// are), the details and the flood figures.
pub(crate) fn run_once(
    topo: &Topology,
    s: FloodScenario,
    server_id_routing: bool,
    n: usize,
) -> Result<(usize, RunDetail, FloodRun), Error> {
    let run = Run::classic(topo, s.name(), server_id_routing)?;
    let servers = match s {
        FloodScenario::Udp => Some(UdpServers::start(topo)?),
        FloodScenario::Syn => None,
    };
    let mut lbs = Vec::new();
    for i in 0..topo::LBS {
        lbs.push(start_lb(topo, i, s, server_id_routing)?);
    }
    let table_entries = u64::from(lbs[0].lb.conn_sets_per_cpu()) * u64::from(CONN_WAYS);
    run.progress(format!(
        "fresh LBs attached (connection table of {table_entries} entries each), both in ECMP"
    ));
    let legit = match s {
        FloodScenario::Syn => Legit::Tcp(Streams::open(&topo.client, n)?),
        FloodScenario::Udp => Legit::Udp(UdpFlows::open(&topo.client, n)?),
    };
    run.progress(format!("{n} long-lived flows running"));
    pause(Duration::from_millis(1000))?;

    let vip = s.vip();
    let g0 = sum_global(&lbs)?;
    let (p0, _) = vip_packets(&lbs, &vip)?;
    let target = Target {
        ifname: "eth0".into(),
        src_mac: topo::mac_of(&topo.client, "eth0")?,
        dst_mac: topo::mac_of(&topo.router, "r-cli")?,
    };
    let kind = match s {
        FloodScenario::Syn => FloodKind::Syn,
        FloodScenario::Udp => FloodKind::Udp { port: UDP_PORT },
    };
    let max_pps = std::env::var("LAB_FLOOD_MAX_PPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEED_PPS);
    debug_drops(&run, topo, "before flood")?;
    let flood_loop = FloodLoop::start(topo)?;
    let flood = Flood::start(&topo.client, target, kind, max_pps)?;
    let t0 = Instant::now();
    let prober = Prober::start(&topo.client, s)?;
    run.progress("flood started; prober opening legitimate new flows");
    pause(RING_CHANGE_AFTER)?;
    let ring: Vec<usize> = INITIAL_RING.iter().copied().chain([SPARE]).collect();
    for h in lbs.iter_mut() {
        h.lb.set_backends(&vip, &crate::backends(&ring))?;
    }
    run.progress(format!(
        "backend 5 added to the ring on both LBs ({} flood frames sent so far)",
        flood.sent()
    ));
    pause(FLOOD.saturating_sub(t0.elapsed()))?;
    let sent = flood.stop()?;
    let secs = t0.elapsed().as_secs_f64();
    let (looped, in_flight) = flood_loop.drain()?;
    debug_drops(&run, topo, "after drain")?;
    let (legit_tried, legit_ok) = prober.stop()?;
    let g1 = sum_global(&lbs)?;
    let (p1, _) = vip_packets(&lbs, &vip)?;
    let fr = FloodRun {
        confirmed_evictions: g1.confirmed_evictions - g0.confirmed_evictions,
        probation_evictions: g1.probation_evictions - g0.probation_evictions,
        new_flows: g1.new_flows - g0.new_flows,
        legit_tried,
        legit_ok,
        offered_pps: (sent.packets + looped.reflected) as f64 / secs,
        received_pps: (p1 - p0) as f64 / secs,
        generator_pps: sent.pps(),
        loop_pps: looped.reflected as f64 / secs,
        to_backends_pps: (looped.seeds_passed + looped.retired) as f64 / secs,
        table_entries,
    };
    run.progress(format!(
        "flood over: offered {:.0} pkt/s ({} generator frames and {} loop frames in {:.1} s; {} seeds joined the loop, {in_flight} in flight at the end), the LBs received {:.0} VIP pkt/s, {:.0} pkt/s went on to the backends; {} new flows inserted ({:.1}x the table per LB), {} probation / {} confirmed evictions; legitimate new flows {legit_ok}/{legit_tried} succeeded",
        fr.offered_pps,
        sent.packets,
        looped.reflected,
        secs,
        looped.admitted,
        fr.received_pps,
        fr.to_backends_pps,
        fr.new_flows,
        fr.new_flows as f64 / (table_entries.max(1) * topo::LBS as u64) as f64,
        fr.probation_evictions,
        fr.confirmed_evictions
    ));
    // Long enough for a stalled ping to be detected.
    pause(STALL_AFTER + Duration::from_millis(300))?;
    let reports = legit.finish();
    debug_drops(&run, topo, "end")?;
    let (_, sid_routed) = vip_packets(&lbs, &vip)?;
    let lb_drops = {
        let g = sum_global(&lbs)?;
        crate::control::dropped(&g)
    };
    drop(flood_loop);
    drop(lbs);
    drop(servers);
    let t = Tally::of(&reports, None);
    run.require(&reports, sid_routed)?;
    run.progress(format!(
        "done: {} of {} long-lived flows broke ({} reset/moved, {} stalled)",
        t.broken(),
        t.healthy,
        t.reset,
        t.stalled
    ));
    Ok((
        t.broken(),
        RunDetail {
            healthy: t.healthy,
            reset: t.reset,
            stalled: t.stalled,
            sid_routed,
            lb_packets_before: None,
            lb_packets_after: None,
            lb_drops,
        },
        fr,
    ))
}

/// The XDP loop: `xdp_flood` on the router's veth ends facing the LBs;
/// dropping puts `xdp_pass` back (the loop, drained or not, is gone then:
/// `xdp_pass` hands its frames to the router, which forwards them on).
struct FloodLoop<'a> {
    topo: &'a Topology,
    prog: XdpFlood,
    cfg: XdpFloodConfig,
}

impl<'a> FloodLoop<'a> {
    fn start(topo: &'a Topology) -> Result<FloodLoop<'a>, Error> {
        let cfg = XdpFloodConfig::default()
            .mode(FloodMode::Loop)
            .max_in_flight(loop_frames())
            .laps(LOOP_LAPS);
        let prog = XdpFlood::load(&cfg)?;
        topo.set_router_lb_program(Some(prog.program_fd()))?;
        Ok(FloodLoop { topo, prog, cfg })
    }

    /// Empties the loop (its frames dropped); the counters of the loop's
    /// run and the frames that were in flight.
    fn drain(&self) -> Result<(FloodStats, i64), Error> {
        let s = self.prog.stats()?;
        let in_flight = self.prog.in_flight()?;
        self.prog
            .configure(&self.cfg.clone().mode(FloodMode::Drain))?;
        std::thread::sleep(Duration::from_millis(100));
        Ok((s, in_flight))
    }
}

impl Drop for FloodLoop<'_> {
    fn drop(&mut self) {
        let _ = self.topo.set_router_lb_program(None);
    }
}

/// With `LAB_FLOOD_DEBUG` set: the backends' UDP receive-buffer drops and
/// the drop counters of the veths between the router and the LBs (and
/// their `ethtool -S` drop/error counters when ethtool is installed).
fn debug_drops(run: &Run, topo: &Topology, when: &str) -> Result<(), Error> {
    if std::env::var_os("LAB_FLOOD_DEBUG").is_none() {
        return Ok(());
    }
    let mut line = format!("DEBUG drops {when}:");
    for (j, be) in topo.backends.iter().enumerate() {
        let snmp = be.run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
        let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
        if let [h, v] = udp[..] {
            for (k, val) in h.split_whitespace().zip(v.split_whitespace()) {
                if k == "RcvbufErrors" {
                    line.push_str(&format!(" be{j}.{k}={val}"));
                }
            }
        }
    }
    for (ns, name) in [
        (&topo.router, "r-lb1"),
        (&topo.router, "r-lb2"),
        (&topo.lbs[0], "eth0"),
        (&topo.lbs[1], "eth0"),
    ] {
        let out = ns.ip(&["-s", "-s", "link", "show", "dev", name])?;
        let t = String::from_utf8_lossy(&out.stdout).to_string();
        let lines: Vec<&str> = t.lines().map(str::trim).collect();
        // RX: bytes packets errors dropped ...; the line after is the values.
        let mut vals = Vec::new();
        for (k, l) in lines.iter().enumerate() {
            if l.starts_with("RX:") || l.starts_with("TX:") {
                if let Some(v) = lines.get(k + 1) {
                    let f: Vec<&str> = v.split_whitespace().collect();
                    vals.push(format!(
                        "{}drop={}",
                        &l[..2],
                        f.get(3).copied().unwrap_or("?")
                    ));
                }
            }
        }
        line.push_str(&format!(" | {}/{name} {}", ns.name(), vals.join(",")));
        // The veth's own counters (XDP_TX errors, ring drops), if ethtool is installed.
        if let Ok(o) = std::process::Command::new("ip")
            .args(["netns", "exec", ns.name(), "ethtool", "-S", name])
            .output()
        {
            let t = String::from_utf8_lossy(&o.stdout).to_string();
            for l in t.lines().map(str::trim) {
                if !l.ends_with(": 0") && (l.contains("drop") || l.contains("err")) {
                    line.push_str(&format!(" [{l}]"));
                }
            }
        }
    }
    run.progress(line);
    Ok(())
}

/// Opens legitimate new flows one after another during the flood.
struct Prober {
    stop: Arc<AtomicBool>,
    tried: Arc<AtomicU64>,
    ok: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    fn start(client: &NetNs, s: FloodScenario) -> Result<Prober, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let tried = Arc::new(AtomicU64::new(0));
        let ok = Arc::new(AtomicU64::new(0));
        let (s2, t2, o2) = (stop.clone(), tried.clone(), ok.clone());
        let thread = client.spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let good = match s {
                    FloodScenario::Syn => tcp_exchange().is_ok(),
                    FloodScenario::Udp => udp_exchange().is_ok(),
                };
                t2.fetch_add(1, Ordering::Relaxed);
                if good {
                    o2.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })?;
        Ok(Prober {
            stop,
            tried,
            ok,
            thread: Some(thread),
        })
    }

    /// Stops (after the attempt under way); `(tried, succeeded)`.
    fn stop(mut self) -> Result<(u64, u64), Error> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| "prober panicked")?;
        }
        Ok((
            self.tried.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
        ))
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One legitimate new TCP connection: connect, greeting, one ping, close.
fn tcp_exchange() -> Result<(), Error> {
    let addr = SocketAddr::from((topo::VIP, topo::VIP_PORT));
    let mut s = TcpStream::connect_timeout(&addr, NEW_FLOW_TIMEOUT)?;
    s.set_read_timeout(Some(NEW_FLOW_TIMEOUT))?;
    let mut g = [0u8; GREETING_LEN];
    s.read_exact(&mut g)?;
    parse_greeting(&g).ok_or("bad greeting")?;
    s.write_all(&[9u8; PING_LEN])?;
    let mut r = [0u8; RESPONSE_LEN];
    s.read_exact(&mut r)?;
    Ok(())
}

/// One legitimate new UDP flow: a long-header first packet, then two
/// short-header packets to the announced server_id, all answered by the
/// same backend.
fn udp_exchange() -> Result<(), Error> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(SocketAddr::from((topo::VIP, UDP_PORT)))?;
    sock.set_read_timeout(Some(NEW_FLOW_TIMEOUT))?;
    let mut first: Option<(u16, u32)> = None;
    for seq in 0..3u64 {
        sock.send(&udp_ping(seq, first.map(|f| f.1)))?;
        let mut b = [0u8; 64];
        let k = sock.recv(&mut b)?;
        let (idx, sid, echoed) = parse_udp_reply(&b[..k]).ok_or("bad UDP answer")?;
        if echoed != seq {
            return Err("UDP answer to another ping".into());
        }
        match first {
            None => first = Some((idx, sid)),
            Some((i, _)) if i != idx => return Err("UDP flow moved to another backend".into()),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Magic of the lab's UDP pings (after the QUIC-like header), so the
/// servers ignore the flood.
const UDP_MAGIC: &[u8; 4] = b"FPUD";
/// DCID length of the QUIC-like pings (the LB's minimum).
const DCID_LEN: usize = 8;

/// A ping: QUIC long header while the server_id is unknown, short header
/// with the server_id in the DCID (flowpin layout) after; magic; sequence.
fn udp_ping(seq: u64, sid: Option<u32>) -> Vec<u8> {
    let mut p = vec![0u8; 1 + DCID_LEN + 4 + 8];
    match sid.and_then(ServerId::new) {
        Some(sid) => {
            p[0] = 0x40;
            // The layout is valid for any non-zero id: cannot fail for 8 bytes.
            let _ = encode_cid(&mut p[1..1 + DCID_LEN], CidLayout::Flowpin, sid);
        }
        None => p[0] = 0xc0,
    }
    p[1 + DCID_LEN..5 + DCID_LEN].copy_from_slice(UDP_MAGIC);
    p[5 + DCID_LEN..].copy_from_slice(&seq.to_be_bytes());
    p
}

/// `(backend index, server_id, echoed sequence)` of an answer.
fn parse_udp_reply(b: &[u8]) -> Option<(u16, u32, u64)> {
    if b.len() != 16 || &b[..2] != b"FU" {
        return None;
    }
    Some((
        u16::from_be_bytes([b[2], b[3]]),
        u32::from_be_bytes(b[4..8].try_into().ok()?),
        u64::from_be_bytes(b[8..16].try_into().ok()?),
    ))
}

/// A 4 MiB receive buffer (`SO_RCVBUFFORCE`: the lab runs as root): the
/// servers are threads of the lab, which the flood's CPU load can keep off
/// a CPU for a while; the default buffer (~200 small datagrams) then
/// overflows with the long-lived flows' pings and the flood frames that
/// reach the backends, and the lab would count the servers' losses as
/// broken flows.
fn big_receive_buffer(s: &UdpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let bytes: nix::libc::c_int = 4 << 20;
    // SAFETY: setsockopt(2) on a socket we own, with an int option value of the stated size.
    let r = unsafe {
        nix::libc::setsockopt(
            s.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_RCVBUFFORCE,
            (&bytes as *const nix::libc::c_int).cast(),
            std::mem::size_of::<nix::libc::c_int>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The backends' UDP servers (threads of the lab in each backend's
/// namespace, bound to VIP:443): answer a ping with their index, their
/// server_id and the ping's sequence; ignore anything else (the flood).
struct UdpServers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl UdpServers {
    fn start(topo: &Topology) -> Result<UdpServers, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (j, ns) in topo.backends.iter().enumerate() {
            let sock = ns.run(|| -> std::io::Result<UdpSocket> {
                let s = UdpSocket::bind(SocketAddr::from((topo::VIP, UDP_PORT)))?;
                s.set_read_timeout(Some(Duration::from_millis(50)))?;
                big_receive_buffer(&s)?;
                Ok(s)
            })??;
            let stop2 = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut b = [0u8; 2048];
                let sid = topo::server_id(j);
                while !stop2.load(Ordering::Relaxed) {
                    let Ok((k, from)) = sock.recv_from(&mut b) else {
                        continue;
                    };
                    let m = 1 + DCID_LEN;
                    if k != m + 12 || &b[m..m + 4] != UDP_MAGIC {
                        continue;
                    }
                    let mut r = [0u8; 16];
                    r[..2].copy_from_slice(b"FU");
                    r[2..4].copy_from_slice(&(j as u16).to_be_bytes());
                    r[4..8].copy_from_slice(&sid.to_be_bytes());
                    r[8..16].copy_from_slice(&b[m + 4..m + 12]);
                    let _ = sock.send_to(&r, from);
                }
            }));
        }
        Ok(UdpServers { stop, threads })
    }
}

impl Drop for UdpServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Long-lived UDP flows: each its own socket (source port), a ping every
/// 100 ms; broken if unanswered for [`STALL_AFTER`] (stalled) or answered
/// by another backend than the first (moved: counted as reset).
pub(crate) struct UdpFlows {
    stop: Arc<AtomicBool>,
    driver: Option<JoinHandle<Vec<ConnReport>>>,
}

struct UdpFlow {
    sock: UdpSocket,
    first: Option<(u16, u32)>,
    seq: u64,
    outstanding_since: Option<Instant>,
    last_ping: Instant,
    answered: u64,
    broken: Option<Broken>,
}

impl UdpFlows {
    /// Opens `n` flows from the client namespace; each has its first answer.
    pub(crate) fn open(client: &NetNs, n: usize) -> Result<UdpFlows, Error> {
        let flows = client.run(move || -> Result<Vec<UdpFlow>, Error> {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let sock = UdpSocket::bind("0.0.0.0:0")?;
                sock.connect(SocketAddr::from((topo::VIP, UDP_PORT)))?;
                sock.set_read_timeout(Some(Duration::from_secs(2)))?;
                sock.send(&udp_ping(0, None))?;
                let mut b = [0u8; 64];
                let k = sock.recv(&mut b)?;
                let (idx, sid, _) = parse_udp_reply(&b[..k]).ok_or("bad UDP answer")?;
                sock.set_nonblocking(true)?;
                v.push(UdpFlow {
                    sock,
                    first: Some((idx, sid)),
                    seq: 0,
                    outstanding_since: None,
                    last_ping: Instant::now(),
                    answered: 1,
                    broken: None,
                });
            }
            Ok(v)
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let driver = std::thread::spawn(move || drive_udp(flows, &stop2));
        Ok(UdpFlows {
            stop,
            driver: Some(driver),
        })
    }

    /// Stops the driver and returns each flow's fate.
    pub(crate) fn finish(mut self) -> Vec<ConnReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.driver
            .take()
            .and_then(|d| d.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for UdpFlows {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.driver.take() {
            let _ = d.join();
        }
    }
}

fn drive_udp(mut flows: Vec<UdpFlow>, stop: &AtomicBool) -> Vec<ConnReport> {
    let mut b = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for f in flows.iter_mut().filter(|f| f.broken.is_none()) {
            loop {
                match f.sock.recv(&mut b) {
                    Ok(k) => {
                        let Some((idx, _, seq)) = parse_udp_reply(&b[..k]) else {
                            continue;
                        };
                        if f.first.map(|x| x.0) != Some(idx) {
                            f.broken = Some(Broken::Reset);
                            break;
                        }
                        if seq == f.seq && f.outstanding_since.is_some() {
                            f.outstanding_since = None;
                            f.answered += 1;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    // ICMP errors (port unreachable) show here: a broken flow.
                    Err(_) => {
                        f.broken = Some(Broken::Reset);
                        break;
                    }
                }
            }
            if f.broken.is_some() {
                continue;
            }
            match f.outstanding_since {
                Some(t) if now.duration_since(t) > STALL_AFTER => f.broken = Some(Broken::Stalled),
                Some(_) => {}
                None if now.duration_since(f.last_ping) >= Duration::from_millis(100) => {
                    f.seq += 1;
                    // A lost datagram is not a broken flow: UDP retries
                    // (the ping is re-sent below while outstanding).
                    if f.sock.send(&udp_ping(f.seq, f.first.map(|x| x.1))).is_ok() {
                        f.outstanding_since = Some(now);
                        f.last_ping = now;
                    }
                }
                None => {}
            }
            // Re-send an outstanding ping every 500 ms (loss is not a break).
            if let Some(t) = f.outstanding_since {
                if now.duration_since(f.last_ping) >= Duration::from_millis(500)
                    && now.duration_since(t) <= STALL_AFTER
                {
                    let _ = f.sock.send(&udp_ping(f.seq, f.first.map(|x| x.1)));
                    f.last_ping = now;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    flows
        .into_iter()
        .map(|f| ConnReport {
            backend: f.first.map(|x| x.0).unwrap_or(u16::MAX),
            broken: f.broken,
            answered: f.answered,
            closed: false,
        })
        .collect()
}

/// The table's line for a flood row.
pub(crate) fn table_line(name: &str, f: &FloodFigures) -> String {
    format!(
        "  {name:<58} flood offered {:.0} pkt/s (generator {:.0}, XDP loop {:.0}, {} frames), LBs received {:.0} VIP pkt/s, backends {:.0} pkt/s; {} new flows (per LB and run {:.1}x its table of {} entries); evictions: {} probation, {} confirmed; legitimate new flows succeeded {:.1}% of {}\n",
        f.flood_offered_pps,
        f.flood_generator_pps,
        f.flood_loop_pps,
        f.flood_loop_frames,
        f.flood_received_pps,
        f.flood_to_backends_pps,
        f.lb_new_flows,
        f.flood_table_turnovers,
        f.table_entries,
        f.probation_evictions,
        f.confirmed_evictions,
        100.0 * f.legit_new_success_ratio,
        f.legit_new_tried
    )
}
