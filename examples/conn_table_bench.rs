//! conn_table_bench: miss rate of established flows against table load,
//! for `xdp_lb`'s connection table and for the kernel's LRU hash map of the
//! same capacity, in the same run (issue 23).
//!
//! For each load (0.05 … 1.0), `N = load × capacity` UDP flows are cycled
//! round robin, `--passes` passes, one packet per flow per pass:
//!
//! - **flowpin**: every packet through `xdp_lb` with BPF_PROG_TEST_RUN, the
//!   thread pinned to CPU 0 (the table is per CPU; `capacity` is one CPU's
//!   table: `4 × sets_per_cpu` flows of 16 bytes). The table is cleared
//!   before each load; misses are the VIP's `lru_miss` counter in the passes
//!   after the first (a miss re-inserts the flow, as the program does).
//! - **lru_hash**: a `BPF_MAP_TYPE_LRU_HASH` set up as Katran runs it in
//!   production: per-CPU LRU lists (`BPF_F_NO_COMMON_LRU` on), sized
//!   `capacity × possible CPUs` so that the pinned CPU's share is
//!   `capacity` (with per-CPU lists, a CPU can only use its own share: a
//!   map of `capacity` entries would give it `capacity / ncpus`); key the
//!   40-byte 5-tuple (`flowpin_flow_key`), value 8 bytes. Lookup, and
//!   update on a miss, from user space on the pinned CPU (the kernel's LRU
//!   code either way; a syscall per packet, so no timing is reported).
//!   A fresh map per load.
//!
//! The miss rate of established flows = misses in passes 2.. / (N ×
//! (passes − 1)). The human table also prints flowpin's probation and
//! confirmed evictions and relocations, and the memory per flow of both
//! (flowpin: the table's bytes per CPU / its capacity; LRU hash: the map's
//! `memlock` from fdinfo / its entries).
//!
//! Run as root: `cargo run --release --example conn_table_bench -- --json`
//! (the last line is `{"loads":[{"load":0.05,"established_miss_rate":..,
//! "lru_hash_miss_rate":..},..]}`). `--quick`: a 4,096-flow table, seconds;
//! exits non-zero if flowpin misses any established flow at a load ≤ 0.5.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};

use clap::Parser;
use etherparse::PacketBuilder;
use flowpin::bpf::libbpf_rs::{self, libbpf_sys, MapCore, MapFlags, MapHandle, MapType};
use flowpin::bpf::xdp_attach::XdpVerdict;
use flowpin::bpf::xdp_lb::{Backend, Proto, Vip, VipFlags, XdpLb, XdpLbConfig, CONN_SET_BYTES};

#[derive(Parser, Debug)]
#[command(about = "established-flow miss rate vs table load: xdp_lb's table vs BPF LRU hash")]
struct Args {
    /// Flows per CPU the table holds (a power of two, ≥ 4096).
    #[arg(long, default_value_t = 524_288)]
    capacity: u32,
    /// Passes over the flows at each load (misses counted after the first).
    #[arg(long, default_value_t = 4)]
    passes: u32,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// A 4,096-flow table: seconds; fails if flowpin misses an established
    /// flow at a load ≤ 0.5.
    #[arg(long)]
    quick: bool,
}

const LOADS: [f64; 7] = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0];
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const PORT: u16 = 53;
const FLOW_KEY_BYTES: u32 = 40;
const LRU_VALUE_BYTES: u32 = 8;

struct Row {
    load: f64,
    flows: u32,
    flowpin_miss: f64,
    lru_miss: f64,
    probation_evictions: u64,
    confirmed_evictions: u64,
    relocations: u64,
}

/// Flow `i`: source 10.0.0.0/8 + i / 64, source port 1024 + i % 64.
fn flow(i: u32) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(0x0a00_0000 | (i >> 6)),
        1024 + (i & 63) as u16,
    )
}

fn packet(i: u32) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let (src, sport) = flow(i);
    let mut v = Vec::with_capacity(64);
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), VIP.octets(), 64)
        .udp(sport, PORT)
        .write(&mut v, b"q")?;
    Ok(v)
}

/// The LRU hash key of flow `i` (the layout of `flowpin_flow_key`).
fn key(i: u32) -> [u8; FLOW_KEY_BYTES as usize] {
    let (src, sport) = flow(i);
    let mut k = [0u8; FLOW_KEY_BYTES as usize];
    k[0..4].copy_from_slice(&src.octets());
    k[16..20].copy_from_slice(&VIP.octets());
    k[32..34].copy_from_slice(&sport.to_be_bytes());
    k[34..36].copy_from_slice(&PORT.to_be_bytes());
    k[36] = 17;
    k
}

/// flowpin: misses after the first pass / established lookups.
fn run_flowpin(
    lb: &XdpLb,
    vip: &Vip,
    n: u32,
    passes: u32,
) -> Result<(f64, flowpin::bpf::xdp_lb::LbStats), Box<dyn std::error::Error>> {
    lb.clear_connection_table()?;
    let g0 = lb.global_stats()?;
    let pkts = (0..n).map(packet).collect::<Result<Vec<_>, _>>()?;
    let mut before = 0;
    for pass in 0..passes {
        if pass == 1 {
            before = lb.vip_stats(vip)?.lru_miss;
        }
        for p in &pkts {
            let r = lb.test_run(p)?;
            if r.verdict != XdpVerdict::Tx {
                return Err(format!("verdict {:?}, want XDP_TX", r.verdict).into());
            }
        }
    }
    let misses = lb.vip_stats(vip)?.lru_miss - before;
    let g = lb.global_stats()?;
    let mut d = g;
    d.probation_evictions -= g0.probation_evictions;
    d.confirmed_evictions -= g0.confirmed_evictions;
    d.relocations -= g0.relocations;
    Ok((misses as f64 / (f64::from(n) * f64::from(passes - 1)), d))
}

fn lru_map(capacity: u32, ncpus: u32) -> Result<MapHandle, Box<dyn std::error::Error>> {
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as libbpf_sys::size_t,
        map_flags: libbpf_sys::BPF_F_NO_COMMON_LRU,
        ..Default::default()
    };
    Ok(MapHandle::create(
        MapType::LruHash,
        Some("ctb_lru"),
        FLOW_KEY_BYTES,
        LRU_VALUE_BYTES,
        capacity * ncpus,
        &opts,
    )?)
}

/// The map's `memlock` (bytes) from /proc/self/fdinfo.
fn memlock(m: &MapHandle) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", m.as_fd().as_raw_fd())).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

fn run_lru(m: &MapHandle, n: u32, passes: u32) -> Result<f64, Box<dyn std::error::Error>> {
    let keys: Vec<_> = (0..n).map(key).collect();
    let value = [1u8; LRU_VALUE_BYTES as usize];
    let mut misses = 0u64;
    for pass in 0..passes {
        for k in &keys {
            if m.lookup(k, MapFlags::ANY)?.is_none() {
                misses += u64::from(pass > 0);
                m.update(k, &value, MapFlags::ANY)?;
            }
        }
    }
    Ok(misses as f64 / (f64::from(n) * f64::from(passes - 1)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let capacity = if args.quick { 4096 } else { args.capacity };
    if !capacity.is_power_of_two() || capacity < 4096 || args.passes < 2 {
        return Err("--capacity must be a power of two ≥ 4096 and --passes ≥ 2".into());
    }
    let mut cpus = nix::sched::CpuSet::new();
    cpus.set(0)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus)?;
    let ncpus = libbpf_rs::num_possible_cpus()? as u32;
    let sets = capacity / 4;
    let mut lb = XdpLb::load(
        XdpLbConfig::default()
            .lru_memory_bytes(CONN_SET_BYTES * u64::from(sets) * u64::from(ncpus)),
    )?;
    if lb.conn_sets_per_cpu() != sets {
        return Err(format!("got {} sets per CPU, want {sets}", lb.conn_sets_per_cpu()).into());
    }
    let vip = Vip::new(VIP.into(), PORT, Proto::Udp);
    lb.add_vip(vip, VipFlags::NONE)?;
    let backends: Vec<Backend> = (1..=8)
        .map(|i| Backend::new(Ipv4Addr::new(10, 200, 0, i).into()))
        .collect();
    lb.set_backends(&vip, &backends)?;

    let mut rows = Vec::new();
    let mut lru_bytes = None;
    for &load in &LOADS {
        let n = ((f64::from(capacity) * load) as u32).max(1);
        let (flowpin_miss, g) = run_flowpin(&lb, &vip, n, args.passes)?;
        let m = lru_map(capacity, ncpus)?;
        let lru_miss = run_lru(&m, n, args.passes)?;
        lru_bytes = lru_bytes.or_else(|| memlock(&m).map(|b| b / u64::from(capacity * ncpus)));
        rows.push(Row {
            load,
            flows: n,
            flowpin_miss,
            lru_miss,
            probation_evictions: g.probation_evictions,
            confirmed_evictions: g.confirmed_evictions,
            relocations: g.relocations,
        });
    }

    println!(
        "conn_table_bench: {capacity} flows per CPU, {} passes, round robin (misses after the first pass)",
        args.passes
    );
    println!("flowpin: 4-way sets, two candidate sets per flow, cuckoo relocation, probation");
    println!("lru_hash: BPF_MAP_TYPE_LRU_HASH, BPF_F_NO_COMMON_LRU (per-CPU lists), {} entries ({capacity} per CPU)", capacity * ncpus);
    println!(
        "memory per flow per CPU: flowpin {} bytes (a 64-byte set holds 4); lru_hash {} bytes (memlock / entries)",
        CONN_SET_BYTES / 4,
        lru_bytes.map_or("?".to_string(), |b| b.to_string())
    );
    println!(
        "{:>6} {:>9} {:>14} {:>14} {:>11} {:>11} {:>11}",
        "load", "flows", "flowpin miss", "lru_hash miss", "prob.evict", "conf.evict", "relocated"
    );
    for r in &rows {
        println!(
            "{:>6.2} {:>9} {:>13.4}% {:>13.4}% {:>11} {:>11} {:>11}",
            r.load,
            r.flows,
            r.flowpin_miss * 100.0,
            r.lru_miss * 100.0,
            r.probation_evictions,
            r.confirmed_evictions,
            r.relocations
        );
    }
    println!(
        "bytes per established flow: flowpin {} per CPU (no more than before this table: same 64-byte sets), \
         lru_hash {}",
        CONN_SET_BYTES / 4,
        lru_bytes.map_or("?".to_string(), |b| b.to_string())
    );
    let bad: Vec<_> = rows
        .iter()
        .filter(|r| r.load <= 0.5 && r.flowpin_miss > 0.0)
        .map(|r| r.load)
        .collect();
    if args.json {
        let loads: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "load": r.load,
                    "established_miss_rate": r.flowpin_miss,
                    "lru_hash_miss_rate": r.lru_miss,
                    "flows": r.flows,
                    "confirmed_evictions": r.confirmed_evictions,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "loads": loads,
                "capacity": capacity,
                "bytes_per_flow": CONN_SET_BYTES / 4,
            })
        );
    }
    if !bad.is_empty() {
        return Err(format!(
            "flowpin missed established flows at load(s) {bad:?} (≤ 0.5 must be 0)"
        )
        .into());
    }
    Ok(())
}
