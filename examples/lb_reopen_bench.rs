//! lb_reopen_bench: how long a restarted LB control process takes to find
//! its data path again. One `xdp_lb` with a VIP of 1,000 backends (with
//! server_ids) and M = 65537 is loaded, configured and pinned; then
//! `XdpLb::open_pinned` runs `--runs` times (open every pin, read `vips`
//! and `backend_descs`, rebuild the control state with its Maglev table,
//! read the kernel ring back and compare it slot by slot). In the same run,
//! the baseline: what a restart without pins costs — `XdpLb::load` plus
//! `add_vip` + `set_backends` of the same 1,000 backends (and every flow's
//! connection-table entry lost).
//!
//! Run as root: `cargo run --release --example lb_reopen_bench`
//! (`--backends N --runs R --json`). Pins go under
//! `/sys/fs/bpf/flowpin-reopen-bench-<pid>` and are removed on exit
//! (including a panic; Ctrl-C is handled too).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use flowpin::bpf::xdp_lb::{Backend, Proto, Vip, VipFlags, XdpLb, XdpLbConfig};
use flowpin::tcp_opt::ServerId;

#[derive(Parser, Debug)]
#[command(
    about = "time of XdpLb::open_pinned (VIP with N backends, M = 65537) vs a fresh load + configure"
)]
struct Args {
    /// Backends of the VIP.
    #[arg(long, default_value_t = 1000)]
    backends: u32,
    /// Timed runs of each.
    #[arg(long, default_value_t = 20)]
    runs: u32,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

struct Pins(PathBuf);
impl Drop for Pins {
    fn drop(&mut self) {
        let _ = XdpLb::unpin(&self.0);
    }
}

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[0]), ms(v[v.len() / 2]), ms(v[v.len() - 1]))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/flowpin-reopen-bench-{}",
        std::process::id()
    ));
    let pins = Pins(dir.clone());
    {
        let d = dir.clone();
        ctrlc::set_handler(move || {
            let _ = XdpLb::unpin(&d);
            std::process::exit(130);
        })?;
    }
    let vip = Vip::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 80, Proto::Tcp);
    let backends: Vec<Backend> = (0..args.backends)
        .map(|i| {
            Backend::new(IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i + 1)))
                .weight(1 + i % 3)
                .server_id(ServerId::new(1000 + i).expect("non-zero server_id"))
        })
        .collect();
    let config = XdpLbConfig::default()
        .max_backends(args.backends + 16)
        .lru_memory_bytes(4 << 20);
    let mut fresh = Vec::new();
    let mut lb = None;
    for _ in 0..args.runs.min(5) {
        let t = Instant::now();
        let mut l = XdpLb::load(config.clone())?;
        l.add_vip(vip, VipFlags::SERVER_ID)?;
        l.set_backends(&vip, &backends)?;
        fresh.push(t.elapsed());
        lb = Some(l);
    }
    let lb = lb.ok_or("no run")?;
    lb.pin(&dir)?;
    drop(lb);
    let mut reopen = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        let l = XdpLb::open_pinned(&dir)?;
        reopen.push(t.elapsed());
        assert_eq!(l.backends(&vip).map(<[Backend]>::len), Some(backends.len()));
        assert_eq!(l.repaired_ring_slots(), 0);
    }
    let (rmin, rmed, rmax) = stats(reopen);
    let (fmin, fmed, fmax) = stats(fresh);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "VIP with {} backends, M = {}; /proc/loadavg: {}",
        args.backends,
        config.ring_size,
        load.trim()
    );
    println!("{:<34} {:>8} {:>8} {:>8}", "", "min ms", "p50 ms", "max ms");
    println!(
        "{:<34} {rmin:>8.2} {rmed:>8.2} {rmax:>8.2}",
        "open_pinned (target < 50 ms)"
    );
    println!(
        "{:<34} {fmin:>8.2} {fmed:>8.2} {fmax:>8.2}",
        "baseline: load + add_vip + set_backends"
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "backends": args.backends,
                "ring_size": config.ring_size,
                "runs": args.runs,
                "open_pinned_ms": {"min": rmin, "p50": rmed, "max": rmax},
                "load_and_configure_ms": {"min": fmin, "p50": fmed, "max": fmax},
            })
        );
    }
    drop(pins);
    Ok(())
}
