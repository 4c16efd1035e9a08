//! xdp_bench: the paths of `xdp_lb` through BPF_PROG_TEST_RUN, one packet
//! per call (`repeat = 1`, so every call runs on a fresh input packet),
//! against the empty XDP program on the same packet in the same run.
//!
//! Cases: `empty` (xdp_pass), `non_vip` (TCP ACK to an address that is no
//! VIP), `lru_hit` (the same TCP ACK flow every call, warmed first),
//! `new_flow` (a TCP SYN from a new source address/port every call: ring
//! lookup + LRU insert, LRU at its default size), `server_id` (a TCP ACK
//! carrying a valid server_id option, a new flow every call: routed without
//! the ring; not yet in the connection table, so inserted — what happens
//! once per flow after an LB restart or an ECMP change), `quic_cid` (a QUIC short-header packet whose 16-byte
//! flowpin-layout connection ID carries a valid server_id, a new client
//! address every call: routed by CID without LRU or ring; the issue-14
//! target is a cost no higher than the TCP server_id routing in the same
//! run, compared with `server_id_cold`: neither touches the table),
//! `server_id_cold` (the `server_id` packets through a second `xdp_lb`
//! loaded with `warm_conn_from_server_id(false)`: routed without touching
//! the connection table at all; `server_id` itself inserts each new flow
//! into the table on a miss, the default), `server_id_flow` (one server_id
//! flow, the same packet every call, warm: a table hit, no insert — the
//! steady state of a long connection). Each call's verdict is checked, and the output packet is
//! compared with `flowpin_lb_model` (every call for fixed packets,
//! every 64th call for per-call packets).
//!
//! ns/packet is the kernel-measured run time of the program (the `duration`
//! BPF_PROG_TEST_RUN reports), averaged over a round; the table shows the
//! median of the rounds. Even at `repeat = 1` it includes the test-run
//! harness's own per-call work (building the xdp_buff, copying the packet),
//! which dominates the empty program: ratios to it are what to compare.
//! Wall-clock ns per syscall are printed too, for reference.
//!
//! The expected backend of the `lru_hit` flow is computed independently of
//! the program and its model: the Maglev ring built from the backends'
//! keys (`IpAddr::to_string()`) looked up with the pure-Rust flow hash. A
//! wrong verdict, output or backend fails the run (exit code != 0).
//!
//! Run as root: `cargo run --release --example xdp_bench -- --json`
//! (`--quick` for a seconds-long check of every invariant, as CI runs it;
//! `--calls N --rounds R` for custom runs). The last line is one JSON
//! object with `empty_ns`, `non_vip_ns`, `lru_hit_ns`, `new_flow_ns`,
//! `server_id_ns`, `quic_cid_ns` and the ratios, and the QUIC-LB cases
//! (`xdp_bench/quic_lb.rs`): `quic_lb_plain_ns`, `quic_lb_encrypted_1pass_ns`,
//! `quic_lb_encrypted_4pass_ns` (table AES, the fastest path offered),
//! `quic_lb_encrypted_1pass_ct_ns`, `quic_lb_encrypted_4pass_ct_ns`
//! (constant-time kfuncs), each also as `<case>_own_ns` (less the empty program).
//!
//! `--live` then measures the paths on live frames (see `xdp_bench/live.rs`:
//! native XDP on a veth pair, frames looping through `XDP_TX` against a
//! reflector, packets per CPU-second of the receive thread, the empty
//! program on the same loop as the limit, interleaved rounds) and prints
//! them beside the test-run figures; the JSON gains
//! `"live":{"lru_hit":{"mpps":..,"limit_mpps":..},"lru_hit_64k":{..},"new_flow":{..},"non_vip":{..}}`.
//! (`BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` would be the
//! other way to run live frames; this kernel refuses it.)

#[path = "xdp_bench/live.rs"]
mod live;
#[path = "xdp_bench/memory.rs"]
mod memory;
#[path = "xdp_bench/quic_lb.rs"]
mod quic_lb;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use clap::Parser;
use etherparse::PacketBuilder;
use flowpin::bpf::flow_hash::{flow_hash, FiveTuple};
use flowpin::bpf::xdp_attach::XdpVerdict;
use flowpin::bpf::xdp_lb::{Backend, Proto, Vip, VipFlags, XdpLb, XdpLbConfig};
use flowpin::bpf::xdp_pass::XdpPass;
use flowpin::tcp_opt::ServerId;
use flowpin_lb_model::{Outcome, Route, Verdict};

#[derive(Parser, Debug)]
#[command(about = "xdp_lb per-path cost vs the empty XDP program (BPF_PROG_TEST_RUN, repeat = 1)")]
struct Args {
    /// Calls per round and case.
    #[arg(long, default_value_t = 200_000)]
    calls: u32,
    /// Rounds (the median round is reported).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// Seconds, not minutes: 2,000 calls x 2 rounds per case, every
    /// invariant checked (what CI runs).
    #[arg(long)]
    quick: bool,
    /// Connection-table memory budget in MiB (default: XdpLbConfig's default).
    #[arg(long)]
    lru_mib: Option<u64>,
    /// Also measure every path on live frames (veth pair, XDP_TX loop).
    #[arg(long)]
    live: bool,
    /// Counted seconds per live measurement (with --quick: 0.2).
    #[arg(long, default_value_t = 1.5)]
    live_secs: f64,
    /// Live rounds, each the program and the empty program in alternating
    /// order (with --quick: 3).
    #[arg(long, default_value_t = 7)]
    live_rounds: u32,
    /// Frames seeded into the live loop (at most 250: the veth ring holds 256).
    #[arg(long, default_value_t = 192)]
    live_burst: usize,
}

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const SERVER_ID_BASE: u32 = 1000;
const QUIC_PORT: u16 = 443;
/// The flowpin-quinn generator's default CID length.
const QUIC_CID_LEN: u8 = 16;

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, syn: bool, opts: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1, 64000);
    let b = if syn { b.syn() } else { b.ack(1) };
    let b = if opts.is_empty() {
        b
    } else {
        b.options_raw(opts).expect("options")
    };
    let mut v = Vec::new();
    b.write(&mut v, &[]).expect("build packet");
    v
}

fn quic_short(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, cid: &[u8]) -> Vec<u8> {
    let mut q = vec![0x40u8];
    q.extend_from_slice(cid);
    q.extend_from_slice(&[0xa7; 40]);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, QUIC_PORT)
        .write(&mut v, &q)
        .expect("build packet");
    v
}

/// Sets source address and port of a built IPv4/TCP or UDP frame (checksums are not
/// looked at by the program; the model sees the same bytes).
fn set_src(pkt: &mut [u8], i: u32) {
    let a = Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff));
    pkt[26..30].copy_from_slice(&a.octets());
    pkt[34..36].copy_from_slice(&(1024 + (i >> 24) as u16 + (i as u16 % 60000)).to_be_bytes());
}

struct Case {
    name: &'static str,
    /// (median kernel ns, median wall ns)
    result: (f64, f64),
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn expect_verdict(case: &str, got: XdpVerdict, want: Verdict) {
    let ok = matches!(
        (got, want),
        (XdpVerdict::Tx, Verdict::Tx)
            | (XdpVerdict::Pass, Verdict::Pass)
            | (XdpVerdict::Drop, Verdict::Drop)
    );
    assert!(ok, "{case}: verdict {got:?}, expected {want:?}");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = Args::parse();
    if args.quick {
        args.calls = 2_000;
        args.rounds = 2;
        args.live_secs = 0.2;
        args.live_rounds = 3;
    }
    // The connection table is per CPU: keep every call on one CPU, as NIC
    // RSS keeps a flow on one CPU.
    let mut cpus = nix::sched::CpuSet::new();
    cpus.set(0)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus)?;
    let empty = XdpPass::load(Default::default())?;
    let mut config = XdpLbConfig::default().quic_cid_len(QUIC_CID_LEN);
    if let Some(mib) = args.lru_mib {
        config.lru_memory_bytes = mib << 20;
    }
    let mut lb = XdpLb::load(config.clone())?;
    lb.set_next_hop([0x02, 0, 0, 0, 0, 0x0a], [0x02, 0, 0, 0, 0, 0x0b])?;
    let mut cold = XdpLb::load(config.warm_conn_from_server_id(false))?;
    cold.set_next_hop([0x02, 0, 0, 0, 0, 0x0a], [0x02, 0, 0, 0, 0, 0x0b])?;
    let backends: Vec<Backend> = (1..=8u8)
        .map(|i| {
            Backend::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, i))).server_id(
                ServerId::new(SERVER_ID_BASE + u32::from(i)).expect("non-zero server_id"),
            )
        })
        .collect();
    let plain = Vip::new(VIP.into(), 80, Proto::Tcp);
    let routed = Vip::new(VIP.into(), 443, Proto::Tcp);
    lb.add_vip(plain, VipFlags::NONE)?;
    lb.add_vip(routed, VipFlags::SERVER_ID)?;
    lb.set_backends(&plain, &backends)?;
    lb.set_backends(&routed, &backends)?;
    let quic = Vip::new(VIP.into(), QUIC_PORT, Proto::Udp);
    lb.add_vip(quic, VipFlags::QUIC)?;
    lb.set_backends(&quic, &backends)?;
    cold.add_vip(routed, VipFlags::SERVER_ID)?;
    cold.set_backends(&routed, &backends)?;
    let model = flowpin_lb_model::Model::of(&lb);
    eprintln!(
        "xdp_lb loaded: ring {} slots/VIP, connection table {} flows over all CPUs ({} MiB budget), {} calls x {} rounds per case",
        lb.config().ring_size,
        lb.lru_entries(),
        lb.config().lru_memory_bytes >> 20,
        args.calls,
        args.rounds
    );

    let ack = tcp(Ipv4Addr::new(10, 9, 9, 9), 40000, VIP, 80, false, &[]);
    let non_vip = tcp(
        Ipv4Addr::new(10, 9, 9, 9),
        40000,
        Ipv4Addr::new(192, 0, 2, 99),
        80,
        false,
        &[],
    );
    let syn = tcp(Ipv4Addr::new(10, 0, 0, 1), 1024, VIP, 80, true, &[]);
    let mut opt = [0u8; 8];
    let sid = flowpin::tcp_opt::ServerId::new(SERVER_ID_BASE + 3).ok_or("server_id")?;
    let n = flowpin::tcp_opt::write_server_id(&mut opt, flowpin::tcp_opt::Layout::default(), sid)?;
    let mut sid_opts = vec![1u8, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    sid_opts.extend_from_slice(&opt[..n]);
    let sid_pkt = tcp(Ipv4Addr::new(10, 0, 0, 1), 1024, VIP, 443, false, &sid_opts);
    let mut cid = [0x3cu8; QUIC_CID_LEN as usize];
    flowpin::tcp_opt::encode_cid(&mut cid, flowpin::tcp_opt::CidLayout::Flowpin, sid)?;
    let quic_pkt = quic_short(Ipv4Addr::new(10, 0, 0, 1), 1024, VIP, &cid);

    // Warm the lru_hit flow and learn its expected output.
    let mut m = model.clone();
    m.decide(&ack);
    lb.test_run(&ack)?;
    let ack_out = m.decide(&ack);
    // The backend it must go to, computed without the program or its
    // model: Maglev over the backends' keys, looked up with the flow hash.
    let keys: Vec<(String, u32)> = backends.iter().map(|b| (b.addr.to_string(), 1)).collect();
    let ring = flowpin::maglev::Maglev::build_weighted(&keys, lb.config().ring_size)?;
    let tuple = FiveTuple {
        src: IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)),
        dst: IpAddr::V4(VIP),
        sport: 40000,
        dport: 80,
        proto: 6,
    };
    let want_backend = backends[ring.lookup(u64::from(flow_hash(&tuple))) as usize].addr;
    if ack_out.outcome
        != (Outcome::Forwarded {
            backend: want_backend,
            route: Route::Lru,
        })
    {
        return Err(format!(
            "lru_hit flow: model says {:?}, Maglev + flow hash say {want_backend} by the LRU",
            ack_out.outcome
        )
        .into());
    }
    let (want_outer, _) = outer_dst(&ack_out.packet).ok_or("lru_hit output is no IPv4 tunnel")?;
    if want_outer != want_backend {
        return Err(format!("lru_hit output tunnels to {want_outer}, not {want_backend}").into());
    }
    let non_vip_out = model.clone().decide(&non_vip);
    assert_eq!(non_vip_out.verdict, Verdict::Pass);

    let mut cases: Vec<Case> = Vec::new();
    let names = [
        "empty",
        "non_vip",
        "lru_hit",
        "new_flow",
        "server_id",
        "quic_cid",
        "server_id_cold",
        "server_id_flow",
    ];
    let mut kernel: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut flow_counter: u32 = 0;
    let mut check_model = model.clone();
    for _round in 0..args.rounds {
        for (ci, name) in names.iter().enumerate() {
            let mut pkt = match *name {
                "empty" | "lru_hit" => ack.clone(),
                "non_vip" => non_vip.clone(),
                "new_flow" => syn.clone(),
                "quic_cid" => quic_pkt.clone(),
                _ => sid_pkt.clone(),
            };
            let mut sum_ns: u64 = 0;
            let start = Instant::now();
            for call in 0..args.calls {
                let per_call = matches!(
                    *name,
                    "new_flow" | "server_id" | "quic_cid" | "server_id_cold"
                );
                if per_call {
                    flow_counter = flow_counter.wrapping_add(1);
                    set_src(&mut pkt, flow_counter);
                }
                let r = match *name {
                    "empty" => empty.test_run(&pkt)?,
                    "server_id_cold" => cold.test_run(&pkt)?,
                    _ => lb.test_run(&pkt)?,
                };
                sum_ns += u64::from(r.duration_ns);
                match *name {
                    "empty" => expect_verdict(name, r.verdict, Verdict::Pass),
                    "non_vip" => {
                        expect_verdict(name, r.verdict, Verdict::Pass);
                        assert!(r.packet == non_vip_out.packet, "non_vip output differs");
                    }
                    "lru_hit" => {
                        expect_verdict(name, r.verdict, Verdict::Tx);
                        assert!(
                            r.packet == ack_out.packet,
                            "lru_hit output differs from the model"
                        );
                    }
                    _ => {
                        expect_verdict(name, r.verdict, Verdict::Tx);
                        if args.quick || call % 64 == 0 {
                            check_model.clear_connection_table();
                            let d = check_model.decide(&pkt);
                            let want_route = if *name == "new_flow" {
                                Route::Ring
                            } else {
                                Route::ServerId
                            };
                            match d.outcome {
                                Outcome::Forwarded { route, .. } => {
                                    assert_eq!(route, want_route, "{name}")
                                }
                                o => panic!("{name}: model says {o:?}"),
                            }
                            assert!(
                                r.packet == d.packet,
                                "{name}: output differs from the model"
                            );
                        }
                    }
                }
            }
            let elapsed = start.elapsed().as_nanos() as f64;
            kernel[ci].push(sum_ns as f64 / f64::from(args.calls));
            wall[ci].push(elapsed / f64::from(args.calls));
        }
    }
    for (ci, name) in names.iter().enumerate() {
        cases.push(Case {
            name,
            result: (median(kernel[ci].clone()), median(wall[ci].clone())),
        });
    }
    let st = lb.vip_stats(&routed)?;
    assert_eq!(
        st.lru_hit + st.new_flows,
        0,
        "server_id case never touched the LRU or the ring"
    );
    let qs = lb.vip_stats(&quic)?;
    assert_eq!(
        (qs.lru_hit + qs.lru_miss + qs.new_flows, qs.sid_routed),
        (0, qs.packets),
        "every quic_cid packet routed by its CID, none by the LRU or the ring"
    );
    let base = cases[0].result.0;
    let targets = [
        None,
        Some(1.3),
        Some(2.3),
        Some(5.0),
        Some(5.0),
        Some(2.5),
        Some(2.5),
        Some(2.5),
    ];
    println!(
        "{:<10} {:>10} {:>8} {:>8} {:>12}",
        "case", "ns/packet", "ratio", "target", "wall ns/call"
    );
    for (c, t) in cases.iter().zip(targets) {
        println!(
            "{:<10} {:>10.1} {:>7.2}x {:>8} {:>12.0}",
            c.name,
            c.result.0,
            c.result.0 / base,
            t.map(|t| format!("<={t}x")).unwrap_or_else(|| "-".into()),
            c.result.1
        );
    }
    let (sid_ns, quic_ns) = (cases[4].result.0, cases[5].result.0);
    let (cold_ns, flow_ns) = (cases[6].result.0, cases[7].result.0);
    // QUIC packets never warm the table: compare with the TCP path that does not either.
    let sid_routing_ns = cold_ns;
    println!(
        "keeping the connection table warm from server_id packets: new flow {:+.1} ns/packet ({sid_ns:.1} vs {cold_ns:.1} cold), long flow {:+.1} ns/packet ({flow_ns:.1} vs {cold_ns:.1} cold)",
        sid_ns - cold_ns,
        flow_ns - cold_ns
    );
    assert!(
        cold.connection_table_len()? == 0,
        "server_id_cold inserted into the connection table"
    );
    println!(
        "quic_cid vs server_id_cold: {:.2}x ({})",
        quic_ns / sid_routing_ns,
        if quic_ns <= sid_routing_ns {
            "no more than the TCP server_id path"
        } else {
            "MORE than the TCP server_id path"
        }
    );
    let qlb = quic_lb::run(&empty, args.calls, args.rounds, quic_short)?;
    qlb.print();
    let live = if args.live {
        let opts = live::LiveOpts {
            secs: args.live_secs,
            settle: if args.quick { 0.1 } else { 0.3 },
            rounds: args.live_rounds,
            burst: args.live_burst,
        };
        let l = live::run(&opts)?;
        print_live(&l, &opts, &cases);
        Some(l)
    } else {
        None
    };
    if args.json {
        let mut obj = serde_json::Map::new();
        if let Some(l) = &live {
            obj.insert("live".into(), live_json(l));
        }
        for c in &cases {
            obj.insert(
                format!("{}_ns", c.name),
                serde_json::json!((c.result.0 * 10.0).round() / 10.0),
            );
        }
        for c in &cases[1..] {
            obj.insert(
                format!("{}_ratio", c.name),
                serde_json::json!((c.result.0 / base * 100.0).round() / 100.0),
            );
        }
        obj.insert(
            "quic_cid_vs_server_id".into(),
            serde_json::json!((quic_ns / sid_routing_ns * 100.0).round() / 100.0),
        );
        qlb.json(&mut obj);
        obj.insert("calls".into(), serde_json::json!(args.calls));
        obj.insert("rounds".into(), serde_json::json!(args.rounds));
        obj.insert("lru_entries".into(), serde_json::json!(lb.lru_entries()));
        obj.insert(
            "lru_mib".into(),
            serde_json::json!(lb.config().lru_memory_bytes >> 20),
        );
        println!("{}", serde_json::Value::Object(obj));
    }
    Ok(())
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The live table, beside the test-run figures of the same paths.
fn print_live(l: &live::Live, opts: &live::LiveOpts, cases: &[Case]) {
    let tr = |name: &str| cases.iter().find(|c| c.name == name).map(|c| c.result.0);
    let empty = tr("empty").unwrap_or(f64::NAN);
    println!(
        "\nlive frames: xdp_lb {} on a veth pair, {} frames looping through XDP_TX (non_vip: XDP_PASS, forwarded back by the stack), \
         packets per CPU-second of the receive thread (threaded NAPI, CPU {}); limit = the empty program on the same loop; \
         {} interleaved rounds of {} s, medians; load average {} before, {} after",
        l.mode, opts.burst, l.lb_cpu, opts.rounds, opts.secs, l.load_before, l.load_after
    );
    println!(
        "{:<12} {:<8} {:>10} {:>10} {:>7} {:>11} {:>13} {:>9} {:>8}",
        "path",
        "verdict",
        "Mpps/CPU-s",
        "limit",
        "ratio",
        "own ns/pkt",
        "test-run own",
        "wall Mpps",
        "CPU use"
    );
    for p in &l.paths {
        let test_run_own = tr(p.name).map(|ns| ns - empty);
        println!(
            "{:<12} {:<8} {:>10.2} {:>10.2} {:>7.2} {:>11.1} {:>13} {:>9.2} {:>7.0}%",
            p.name,
            p.verdict,
            p.mpps,
            p.limit_mpps,
            p.ratio,
            p.own_ns(),
            test_run_own.map_or("-".into(), |ns| format!("{ns:.1} ns")),
            p.wall_mpps,
            p.cpu_share * 100.0
        );
    }
    for p in &l.paths {
        let rounds: Vec<String> = p.round_ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "  {:<12} per-round ratios [{}]; {}{}",
            p.name,
            rounds.join(", "),
            p.check,
            if p.name == "lru_hit_64k" {
                format!(" (miss rate {:.3} %)", p.miss_rate * 100.0)
            } else {
                String::new()
            }
        );
    }
    for x in &l.line_loads {
        println!(
            "  line load (user space, CPU {}, {} random lines of a {} MiB area with 4 KiB pages, one CPU's table): {:.1} ns back to back, {:.1} ns after {:.0} ns of work (asked: {:.0} ns, one lru_hit packet's time on the loop)",
            l.lb_cpu,
            x.lines,
            x.area_bytes >> 20,
            x.back_to_back_ns,
            x.spaced_ns,
            x.spacing_ns,
            x.spacing_target_ns
        );
    }
    let (b64, bnew) = line_load_budgets(l);
    let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.0} ns"));
    let own = |n: &str| l.paths.iter().find(|p| p.name == n).map(|p| p.own_ns());
    let extra_64k = own("lru_hit_64k").zip(own("lru_hit")).map(|(a, b)| a - b);
    println!(
        "  what the targets leave for that one line load per packet: lru_hit_64k >= 0.45 leaves {} (limit x 1.22 - lru_hit's own; observed: 64k costs {} more than lru_hit), new_flow >= 0.5 leaves {} for the whole path (limit x 1.0)",
        f(b64),
        f(extra_64k),
        f(bnew)
    );
}

/// What the live targets leave for the one table-line load the
/// cache-missing paths pay, ns per packet: `lru_hit_64k` >= 0.45 leaves
/// limit × (1/0.45 − 1) − lru_hit's own cost; `new_flow` >= 0.5 leaves
/// limit × (1/0.5 − 1) for everything, the load included. `None` without
/// the paths.
fn line_load_budgets(l: &live::Live) -> (Option<f64>, Option<f64>) {
    let path = |n: &str| l.paths.iter().find(|p| p.name == n);
    let hit_own = path("lru_hit").map(|p| p.own_ns().max(0.0));
    let b64 =
        path("lru_hit_64k").and_then(|p| Some(1e3 / p.limit_mpps * (1.0 / 0.45 - 1.0) - hit_own?));
    let bnew = path("new_flow").map(|p| 1e3 / p.limit_mpps * (1.0 / 0.5 - 1.0));
    (b64, bnew)
}

fn live_json(l: &live::Live) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for p in &l.paths {
        m.insert(
            p.name.into(),
            serde_json::json!({
                "mpps": r2(p.mpps),
                "limit_mpps": r2(p.limit_mpps),
                "ratio": r2(p.ratio),
                "own_ns": (p.own_ns() * 10.0).round() / 10.0,
                "round_ratios": p.round_ratios.iter().map(|r| r2(*r)).collect::<Vec<_>>(),
                "verdict": p.verdict,
                "table_miss_rate": p.miss_rate,
            }),
        );
    }
    let (b64, bnew) = line_load_budgets(l);
    m.insert(
        "line_loads".into(),
        serde_json::json!(l
            .line_loads
            .iter()
            .map(|x| serde_json::json!({
                "lines": x.lines,
                "area_bytes": x.area_bytes,
                "back_to_back_ns": (x.back_to_back_ns * 10.0).round() / 10.0,
                "spacing_ns": (x.spacing_ns * 10.0).round() / 10.0,
                "spaced_ns": (x.spaced_ns * 10.0).round() / 10.0,
            }))
            .collect::<Vec<_>>()),
    );
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    m.insert(
        "line_load_budget_ns".into(),
        serde_json::json!({"lru_hit_64k": b64.map(r1), "new_flow": bnew.map(r1)}),
    );
    m.insert("load_before".into(), l.load_before.clone().into());
    m.insert("load_after".into(), l.load_after.clone().into());
    serde_json::Value::Object(m)
}

/// The outer destination and protocol of an IPv4 tunnel packet (IP-in-IP
/// or GUE: whatever the program wrote), read from the bytes.
fn outer_dst(frame: &[u8]) -> Option<(IpAddr, u8)> {
    let ip = etherparse::Ipv4HeaderSlice::from_slice(frame.get(14..)?).ok()?;
    Some((IpAddr::V4(ip.destination_addr()), ip.protocol().0))
}
