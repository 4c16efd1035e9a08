//! Zero-downtime release harness: ways to release a server, measured side
//! by side under the same load, in a network namespace this program creates.
//!
//! A TCP echo and a UDP echo service share one port. A load generator keeps
//! opening short TCP connections (connect, request, reply, close) and holds
//! 1,000 long-lived UDP flows. Then 20 releases in a row: each starts a NEW
//! PROCESS (this binary re-executed in server mode) that takes over while
//! the old one drains and exits.
//!
//! | strategy | how the new process takes over |
//! |---|---|
//! | `naive` | the old process stops, then the new one binds |
//! | `reuseport` | plain `SO_REUSEPORT` with `net.ipv4.tcp_migrate_req=1` (as an expert runs it): the new one binds beside the old one, the old one drains and closes |
//! | `reuseport-no-migrate` | the same with the kernel default `tcp_migrate_req=0` (labelled row, not in the default set): closing a listener resets its queue |
//! | `fd-passing` | socket takeover as the talk describes it: the old process hands its sockets over a Unix socket (`SCM_RIGHTS`); both keep reading the shared UDP sockets while the old one drains |
//! | `fd-passing-forwarder` | the same, but only the new process reads the UDP sockets and forwards the packets of flows it does not own (by the connection ID the client echoes, as QUIC does) to the old process over the Unix socket |
//! | `flowpin` | `flowpin-sk-reuseport`: join the pinned group, add a generation, flip, old one drains |
//!
//! Counted per strategy: refused and reset TCP connections, timeouts, UDP
//! replies from the wrong process (every reply carries the label of the
//! process that answered; "wrong" = not the process that owns the flow
//! while that one still runs), lost UDP packets, and the CPU time of all
//! server processes. For the forwarder: the latency the forwarding hop adds
//! (new process receives → old process has sent the reply), p50/p99. A
//! second table compares UDP throughput of one socket read by one thread,
//! plain `SO_REUSEPORT` with one socket and thread per CPU, and flowpin
//! groups with the same sockets and threads (new flows by the kernel's
//! hash, like for like with plain reuseport, as `flowpin` in the JSON; and
//! by CPU).
//!
//! The run fails (exit 1) when flowpin lost, refused, reset, timed out or
//! misrouted anything, or the forwarder misrouted.
//!
//! ```text
//! cargo run --release --example release            # tables
//! cargo run --release --example release -- --json  # one JSON object
//! cargo run --release --example release -- --quick # seconds: the invariants only
//! cargo run --release --example release -- --releases 5 --strategies flowpin,naive
//! ```
//! Needs root (network namespaces, BPF).

mod load;
mod server;
mod throughput;

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde::Serialize;

use crate::load::{run_strategy, Counts};
use crate::throughput::{throughput, Load, Throughput};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const IP: &str = "127.0.0.1";
const UDP_SOCKETS_PER_PROCESS: usize = 2;

/// How the new process of a release takes over from the old one.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    /// The old process stops, then the new one binds.
    Naive,
    /// Plain SO_REUSEPORT, net.ipv4.tcp_migrate_req=1.
    Reuseport,
    /// Plain SO_REUSEPORT, net.ipv4.tcp_migrate_req=0 (the kernel default).
    ReuseportNoMigrate,
    /// Socket takeover (SCM_RIGHTS); both processes read the shared UDP sockets during the drain.
    FdPassing,
    /// Socket takeover; the new process forwards the old process's flows to it over a Unix socket.
    FdPassingForwarder,
    /// flowpin-sk-reuseport: generations in a BPF-steered group.
    Flowpin,
}

impl Strategy {
    /// The default set, in the order of the tables.
    const DEFAULT: [Strategy; 5] = [
        Strategy::Naive,
        Strategy::Reuseport,
        Strategy::FdPassing,
        Strategy::FdPassingForwarder,
        Strategy::Flowpin,
    ];

    fn name(self) -> &'static str {
        match self {
            Strategy::Naive => "naive",
            Strategy::Reuseport => "reuseport",
            Strategy::ReuseportNoMigrate => "reuseport-no-migrate",
            Strategy::FdPassing => "fd-passing",
            Strategy::FdPassingForwarder => "fd-passing-forwarder",
            Strategy::Flowpin => "flowpin",
        }
    }

    fn passes_fds(self) -> bool {
        matches!(self, Strategy::FdPassing | Strategy::FdPassingForwarder)
    }
}

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Zero-downtime release harness: naive / reuseport / fd-passing (+ forwarder) / flowpin"
)]
struct Args {
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Seconds, not minutes: 3 releases of flowpin and the forwarder, 200
    /// flows, a 1 s throughput check; fails on any broken invariant.
    #[arg(long)]
    quick: bool,
    /// Releases in a row per strategy.
    #[arg(long, default_value_t = 20)]
    releases: u32,
    /// Long-lived UDP flows.
    #[arg(long, default_value_t = 1000)]
    udp_flows: usize,
    /// Each UDP flow sends one packet per this many milliseconds.
    #[arg(long, default_value_t = 100)]
    udp_period_ms: u64,
    /// Pause between releases (ms).
    #[arg(long, default_value_t = 300)]
    interval_ms: u64,
    /// How long an old process keeps serving its UDP flows after the handover (ms).
    #[arg(long, default_value_t = 150)]
    drain_ms: u64,
    /// Strategies to run (comma-separated), in this order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Strategy::DEFAULT)]
    strategies: Vec<Strategy>,
    /// Counted seconds per receiver for the UDP throughput table, split over
    /// the rounds (0 = skip the table).
    #[arg(long, default_value_t = 12.0)]
    throughput_secs: f64,
    /// Rounds of the throughput table, at least 5: plain reuseport and the
    /// flowpin group by hash back to back in each, in alternating order.
    #[arg(long, default_value_t = 12)]
    throughput_rounds: usize,
    /// Warm-up of each throughput measurement, not counted (ms).
    #[arg(long, default_value_t = 300)]
    warmup_ms: u64,
    /// Offered load of each UDP throughput sender, datagrams/s (open loop:
    /// above what one reader takes, so the readers are what is measured).
    #[arg(long, default_value_t = 1_000_000.0)]
    udp_offered_pps: f64,

    // ---- server mode (this binary re-executed by the harness) ----
    #[arg(long, hide = true, value_enum)]
    serve: Option<Strategy>,
    #[arg(long, hide = true, default_value_t = 0)]
    label: u32,
    #[arg(long, hide = true)]
    netns: Option<PathBuf>,
    #[arg(long, hide = true, default_value_t = 0)]
    port: u16,
    #[arg(long, hide = true)]
    pin: Option<PathBuf>,
    #[arg(long, hide = true)]
    ctl: Option<PathBuf>,
    #[arg(long, hide = true)]
    takeover: Option<PathBuf>,
    #[arg(long, hide = true)]
    first: bool,
}

fn main() {
    let mut args = Args::parse();
    let r = match args.serve {
        Some(s) => server::serve(&args, s),
        None => {
            if args.quick {
                args.releases = 3;
                args.udp_flows = 200;
                args.interval_ms = 200;
                args.strategies = vec![Strategy::FdPassingForwarder, Strategy::Flowpin];
                args.throughput_secs = 1.0;
                args.throughput_rounds = throughput::MIN_ROUNDS;
                args.warmup_ms = 100;
            }
            harness(&args)
        }
    };
    if let Err(e) = r {
        eprintln!("release: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- output

/// One strategy's counts, as in the JSON.
#[derive(Serialize, Debug)]
struct StrategyJson {
    refused: u64,
    reset: u64,
    timeouts: u64,
    misrouted: u64,
    lost: u64,
}

impl From<&Counts> for StrategyJson {
    fn from(c: &Counts) -> Self {
        StrategyJson {
            refused: c.refused,
            reset: c.reset,
            timeouts: c.timeouts,
            misrouted: c.misrouted,
            lost: c.lost,
        }
    }
}

#[derive(Serialize, Debug)]
struct LatencyJson {
    p50: f64,
    p99: f64,
}

#[derive(Serialize, Debug)]
struct ThroughputJson {
    one_socket: f64,
    reuseport: f64,
    flowpin: f64,
    /// Median over the rounds of flowpin (hash) / plain reuseport.
    flowpin_over_reuseport: f64,
    /// That ratio in every round, in round order.
    flowpin_over_reuseport_rounds: Vec<f64>,
    rounds: usize,
    /// Whether the median holds 0.95.
    flowpin_over_reuseport_holds: bool,
}

/// `release --json`: a key per strategy that ran, then the forwarder's
/// latency and the throughput table (`null` when not measured).
#[derive(Serialize, Debug, Default)]
struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    naive: Option<StrategyJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reuseport: Option<StrategyJson>,
    #[serde(
        rename = "reuseport-no-migrate",
        skip_serializing_if = "Option::is_none"
    )]
    reuseport_no_migrate: Option<StrategyJson>,
    #[serde(rename = "fd-passing", skip_serializing_if = "Option::is_none")]
    fd_passing: Option<StrategyJson>,
    #[serde(
        rename = "fd-passing-forwarder",
        skip_serializing_if = "Option::is_none"
    )]
    fd_passing_forwarder: Option<StrategyJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flowpin: Option<StrategyJson>,
    forwarder_latency_us: Option<LatencyJson>,
    udp_throughput: Option<ThroughputJson>,
}

impl Report {
    fn slot(&mut self, s: Strategy) -> &mut Option<StrategyJson> {
        match s {
            Strategy::Naive => &mut self.naive,
            Strategy::Reuseport => &mut self.reuseport,
            Strategy::ReuseportNoMigrate => &mut self.reuseport_no_migrate,
            Strategy::FdPassing => &mut self.fd_passing,
            Strategy::FdPassingForwarder => &mut self.fd_passing_forwarder,
            Strategy::Flowpin => &mut self.flowpin,
        }
    }
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Percentile (nearest rank) of latencies in ns, as µs.
fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// The invariants every run checks: flowpin loses, refuses, resets, times
/// out and misroutes nothing; the forwarder misroutes nothing.
fn broken_invariants(results: &[(Strategy, Counts)], tp: Option<&Throughput>) -> Vec<String> {
    let mut bad = Vec::new();
    for (s, c) in results {
        let j = StrategyJson::from(c);
        match s {
            Strategy::Flowpin => {
                if j.refused + j.reset + j.timeouts + j.misrouted + j.lost > 0 {
                    bad.push(format!("flowpin must show 0 of everything: {j:?}"));
                }
                if c.udp_replies == 0 || c.tcp_ok == 0 {
                    bad.push(format!(
                        "flowpin served nothing (tcp ok {}, udp replies {})",
                        c.tcp_ok, c.udp_replies
                    ));
                }
            }
            Strategy::FdPassingForwarder => {
                if j.misrouted > 0 {
                    bad.push(format!("the forwarder must misroute nothing: {j:?}"));
                }
                if c.forward_latency_ns.is_empty() {
                    bad.push("the forwarder forwarded no packet: nothing was measured".into());
                }
            }
            _ => {}
        }
    }
    if let Some(t) = tp {
        if !(t.one_socket > 0.0 && t.reuseport > 0.0 && t.flowpin > 0.0 && t.flowpin_cpu > 0.0) {
            bad.push("a throughput receiver received nothing".into());
        }
    }
    bad
}

fn harness(args: &Args) -> Res<()> {
    if !(args.udp_offered_pps.is_finite() && args.udp_offered_pps >= 1.0) {
        return Err(format!(
            "--udp-offered-pps {} must be a rate of at least 1 datagram/s",
            args.udp_offered_pps
        )
        .into());
    }
    let t0 = Instant::now();
    let mut results = Vec::new();
    for (i, &s) in args.strategies.iter().enumerate() {
        if !args.json {
            eprintln!("running {}: {} releases ...", s.name(), args.releases);
        }
        let c = run_strategy(args, s, 9000 + i as u16)?;
        results.push((s, c));
    }
    let tp = if args.throughput_secs > 0.0 {
        if !args.json {
            eprintln!(
                "measuring UDP throughput ({} s counted per receiver) ...",
                args.throughput_secs
            );
        }
        let ncpu = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(64);
        let load = Load {
            ncpu,
            offered_pps: args.udp_offered_pps,
            warmup: Duration::from_millis(args.warmup_ms),
        };
        Some((
            throughput(args.throughput_secs, args.throughput_rounds, load)?,
            ncpu,
        ))
    } else {
        None
    };
    let mut lat: Vec<u64> = results
        .iter()
        .flat_map(|(_, c)| c.forward_latency_ns.iter().copied())
        .collect();
    lat.sort_unstable();
    let bad = broken_invariants(&results, tp.as_ref().map(|(t, _)| t));

    if args.json {
        let mut r = Report::default();
        for (s, c) in &results {
            *r.slot(*s) = Some(c.into());
        }
        r.forwarder_latency_us = (!lat.is_empty()).then(|| LatencyJson {
            p50: percentile_us(&lat, 50.0),
            p99: percentile_us(&lat, 99.0),
        });
        r.udp_throughput = tp.as_ref().map(|(t, _)| ThroughputJson {
            one_socket: t.one_socket.round(),
            reuseport: t.reuseport.round(),
            flowpin: t.flowpin.round(),
            flowpin_over_reuseport: r3(t.flowpin_over_reuseport),
            flowpin_over_reuseport_rounds: t
                .flowpin_over_reuseport_rounds
                .iter()
                .map(|r| r3(*r))
                .collect(),
            rounds: t.rounds,
            flowpin_over_reuseport_holds: t.flowpin_over_reuseport >= throughput::HOLDS_RATIO,
        });
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print_tables(args, &results, &lat, tp.as_ref());
        eprintln!("\ntotal time {:.1} s", t0.elapsed().as_secs_f64());
    }
    if !bad.is_empty() {
        return Err(format!("broken invariants:\n  {}", bad.join("\n  ")).into());
    }
    Ok(())
}

fn print_tables(
    args: &Args,
    results: &[(Strategy, Counts)],
    lat: &[u64],
    tp: Option<&(Throughput, usize)>,
) {
    println!(
        "\n{} releases per strategy, each a new process; load: short TCP connections (2 clients) + {} UDP flows (1 packet / {} ms each); drain {} ms\n",
        args.releases, args.udp_flows, args.udp_period_ms, args.drain_ms
    );
    println!(
        "| {:<20} | {:>7} | {:>5} | {:>8} | {:>9} | {:>6} | {:>8} | {:>9} | {:>14} |",
        "strategy",
        "refused",
        "reset",
        "timeouts",
        "misrouted",
        "lost",
        "tcp ok",
        "udp sent",
        "server CPU ms"
    );
    println!(
        "|{:-<22}|{:->9}|{:->7}|{:->10}|{:->11}|{:->8}|{:->10}|{:->11}|{:->16}|",
        "", "", "", "", "", "", "", "", ""
    );
    for (s, c) in results {
        println!(
            "| {:<20} | {:>7} | {:>5} | {:>8} | {:>9} | {:>6} | {:>8} | {:>9} | {:>14.0} |",
            s.name(),
            c.refused,
            c.reset,
            c.timeouts,
            c.misrouted,
            c.lost,
            c.tcp_ok,
            c.udp_sent,
            c.server_cpu_ms
        );
    }
    if !lat.is_empty() {
        println!(
            "\nfd-passing-forwarder: {} packets forwarded to the old process; added latency (new process receives → old process has replied): p50 {:.1} µs, p99 {:.1} µs",
            lat.len(),
            percentile_us(lat, 50.0),
            percentile_us(lat, 99.0)
        );
    }
    if let Some((t, ncpu)) = tp {
        println!(
            "\nUDP throughput: {ncpu} senders (one per CPU, 16 flows each) offering {:.0} datagrams/s each (UDP GSO, 64 x 64-byte datagrams per send), readers recv() one datagram per call; {} s counted per receiver over {} rounds (reuseport and flowpin by hash back to back, alternating order), {} ms warm-up each (medians)\n",
            args.udp_offered_pps, args.throughput_secs, t.rounds, args.warmup_ms
        );
        println!("| {:<52} | {:>12} |", "receiver", "datagrams/s");
        println!("|{:-<54}|{:->14}|", "", "");
        println!(
            "| {:<52} | {:>12.0} |",
            "one socket, one thread (socket takeover)", t.one_socket
        );
        println!(
            "| {:<52} | {:>12.0} |",
            format!("plain SO_REUSEPORT: {ncpu} sockets, {ncpu} pinned threads"),
            t.reuseport
        );
        println!(
            "| {:<52} | {:>12.0} |",
            format!("flowpin group: {ncpu} sockets, new flows by hash"),
            t.flowpin
        );
        println!(
            "| {:<52} | {:>12.0} |",
            format!("flowpin group: {ncpu} sockets, new flows by CPU"),
            t.flowpin_cpu
        );
        println!(
            "| {:<52} | {:>11.2}x |",
            "flowpin / reuseport (median of per-round ratios)", t.flowpin_over_reuseport
        );
        println!(
            "| {:<52} | {:>11.2}x |",
            "flowpin / one socket (median of per-round ratios)", t.flowpin_over_one_socket
        );
        let rounds: Vec<String> = t
            .flowpin_over_reuseport_rounds
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect();
        println!(
            "\nflowpin (hash) / plain SO_REUSEPORT, same sockets and threads, back to back in alternating order, per round: [{}]\nmedian of {} rounds: {:.3} -> {} {:.2}",
            rounds.join(", "),
            t.rounds,
            t.flowpin_over_reuseport,
            if t.flowpin_over_reuseport >= throughput::HOLDS_RATIO {
                "holds >="
            } else {
                "does NOT hold >="
            },
            throughput::HOLDS_RATIO
        );
    }
}
