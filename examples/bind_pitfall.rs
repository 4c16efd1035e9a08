//! The bind() pitfall of mixing SO_REUSEPORT and plain binds on one port.
//!
//! The LPC 2021 talk hit `bind()` stalls with many sockets in one network
//! namespace when binds with and without `SO_REUSEPORT` were mixed on one
//! port across many addresses (`[::1]:443` without, `[::2]:443` with,
//! `[::]:443` with): one plain socket on the port turns off the bind
//! bucket's "fast reuseport" shortcut, and every later `bind()` walks all
//! sockets bound to the port, under a spin lock. Kernels since 6.1 hash
//! binds by address and port (`bhash2`) and walk far less.
//!
//! This program binds `--sockets` (20,000) TCP sockets in that pattern in a
//! namespace it creates, on `--addrs` IPv6 addresses added to `lo`, and
//! prints bind() p50/p99 (and the first vs last thousand binds, which show
//! any growth with the number of sockets). The baseline in the same run
//! binds the same number of sockets on another port, all with
//! `SO_REUSEPORT` (the fast path). Run it on your kernel:
//!
//! ```text
//! cargo run --release --example bind_pitfall
//! cargo run --release --example bind_pitfall -- --sockets 5000 --json
//! ```
//! Needs root (network namespace, addresses on lo).

use std::error::Error;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use clap::Parser;
use flowpin_testing::NetNs;
use socket2::{Domain, Socket, Type};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

#[derive(Parser, Debug)]
#[command(about = "bind() latency when mixing SO_REUSEPORT and plain binds on one port")]
struct Args {
    /// Sockets bound per pattern.
    #[arg(long, default_value_t = 20_000)]
    sockets: usize,
    /// IPv6 addresses added to lo (fd00::1:0 onwards).
    #[arg(long, default_value_t = 2_000)]
    addrs: usize,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Sockets per process: binds are spread over child processes holding at
    /// most this many sockets each (the fd limit is often 20,000 or lower).
    #[arg(long, default_value_t = 10_000)]
    per_process: usize,

    // ---- worker mode (this binary re-executed) ----
    #[arg(long, hide = true)]
    worker: Option<String>,
    #[arg(long, hide = true)]
    netns: Option<std::path::PathBuf>,
    #[arg(long, hide = true, default_value_t = 0)]
    port: u16,
    #[arg(long, hide = true, default_value_t = 0)]
    from: usize,
    #[arg(long, hide = true, default_value_t = 0)]
    to: usize,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Plain,
    Reuseport,
}

fn addr(i: usize) -> Ipv6Addr {
    let i = i as u32;
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 1, (i >> 16) as u16, i as u16)
}

/// Raises the soft fd limit to the hard one; returns it.
fn raise_nofile() -> Res<u64> {
    let mut lim = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct into a live local.
    if unsafe { nix::libc::getrlimit(nix::libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        )
        .into());
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit reads one rlimit struct from a live local.
    if unsafe { nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!(
            "setrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        )
        .into());
    }
    Ok(lim.rlim_cur)
}

/// The two patterns: the talk's mix, and the all-SO_REUSEPORT baseline.
fn plan(pattern: &str, sockets: usize, addrs: usize) -> Vec<(Ipv6Addr, Kind)> {
    // The talk's pattern: [::1]:443 without SO_REUSEPORT, then a mix of
    // specific addresses with it (and some without), and the wildcard with it.
    let mut mixed = vec![(Ipv6Addr::LOCALHOST, Kind::Plain)];
    for i in 1..sockets {
        let a = addr(i % addrs);
        mixed.push(match i % 10 {
            0 => (Ipv6Addr::UNSPECIFIED, Kind::Reuseport),
            1 => (a, Kind::Plain),
            _ => (a, Kind::Reuseport),
        });
    }
    if pattern == "mixed" {
        mixed
    } else {
        // Baseline: the same addresses, all SO_REUSEPORT (the fast path).
        mixed
            .into_iter()
            .map(|(a, _)| (a, Kind::Reuseport))
            .collect()
    }
}

/// Worker mode: bind plan[from..to] on `port` in the namespace, print each
/// bind() time in ns, then "DONE", and hold the sockets until stdin closes.
fn worker(args: &Args, pattern: &str) -> Res<()> {
    use std::io::{Read, Write};
    let ns = args.netns.as_ref().ok_or("--netns")?;
    flowpin_testing::enter_netns(ns, &ns.display().to_string())?;
    raise_nofile()?;
    let p = plan(pattern, args.sockets, args.addrs);
    let (times, keep) = bind_all(&p[args.from..args.to.min(p.len())], args.port)?;
    let mut out = std::io::stdout().lock();
    for t in &times {
        writeln!(out, "{}", t.as_nanos())?;
    }
    writeln!(out, "DONE")?;
    out.flush()?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(keep);
    Ok(())
}

/// Binds the whole pattern through child processes of at most `per` sockets
/// each, all alive until the end; returns every bind() time.
fn run_pattern(args: &Args, ns: &NetNs, pattern: &str, port: u16) -> Res<Vec<Duration>> {
    use std::io::BufRead;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    let mut times = Vec::with_capacity(args.sockets);
    let mut from = 0;
    while from < args.sockets {
        let to = (from + args.per_process).min(args.sockets);
        let mut child = std::process::Command::new(&exe)
            .args(["--worker", pattern, "--port", &port.to_string()])
            .args([
                "--sockets",
                &args.sockets.to_string(),
                "--addrs",
                &args.addrs.to_string(),
            ])
            .args(["--from", &from.to_string(), "--to", &to.to_string()])
            .arg("--netns")
            .arg(ns.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let mut done = false;
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            if line == "DONE" {
                done = true;
                break;
            }
            times.push(Duration::from_nanos(line.parse()?));
        }
        if !done {
            let st = child.wait()?;
            return Err(format!("bind worker {from}..{to} failed ({st})").into());
        }
        children.push(child);
        from = to;
    }
    for mut c in children {
        drop(c.stdin.take());
        c.wait()?;
    }
    Ok(times)
}

/// Binds every (address, kind) of `plan` on `port`, timing each bind().
fn bind_all(plan: &[(Ipv6Addr, Kind)], port: u16) -> Res<(Vec<Duration>, Vec<Socket>)> {
    let mut times = Vec::with_capacity(plan.len());
    let mut keep = Vec::with_capacity(plan.len());
    for (a, kind) in plan {
        let s = Socket::new(Domain::IPV6, Type::STREAM, None)?;
        s.set_only_v6(true)?;
        // SO_REUSEADDR everywhere, so that the wildcard and the specific
        // addresses may coexist on the port while nothing listens.
        s.set_reuse_address(true)?;
        if let Kind::Reuseport = kind {
            s.set_reuse_port(true)?;
        }
        let sa: SocketAddr = SocketAddrV6::new(*a, port, 0, 0).into();
        let t = Instant::now();
        s.bind(&sa.into())
            .map_err(|e| format!("bind {sa} ({kind:?}): {e}"))?;
        times.push(t.elapsed());
        keep.push(s);
    }
    Ok((times, keep))
}

struct Summary {
    p50: f64,
    p99: f64,
    max: f64,
    first_1k: f64,
    last_1k: f64,
    total_ms: f64,
}

fn summarize(t: &[Duration]) -> Summary {
    let us = |d: &Duration| d.as_secs_f64() * 1e6;
    let mut v: Vec<f64> = t.iter().map(us).collect();
    let k = v.len().min(1000);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    let first_1k = mean(&v[..k]);
    let last_1k = mean(&v[v.len() - k..]);
    let total_ms = v.iter().sum::<f64>() / 1e3;
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Summary {
        p50: q(0.5),
        p99: q(0.99),
        max: q(1.0),
        first_1k,
        last_1k,
        total_ms,
    }
}

fn main() -> Res<()> {
    let args = Args::parse();
    if args.sockets == 0 || args.addrs < 2 {
        return Err("need --sockets > 0 and --addrs >= 2".into());
    }
    if let Some(pattern) = args.worker.clone() {
        return worker(&args, &pattern);
    }
    let limit = raise_nofile()?;
    if args.per_process == 0 || args.per_process as u64 + 64 > limit {
        return Err(format!(
            "--per-process {} does not fit the fd limit {limit}",
            args.per_process
        )
        .into());
    }
    let ns = NetNs::new("bindpit")?;
    let mut batch = String::new();
    for i in 0..args.addrs {
        batch.push_str(&format!("addr add {}/128 dev lo nodad\n", addr(i)));
    }
    let file =
        std::env::temp_dir().join(format!("flowpin-bind-pitfall-{}.batch", std::process::id()));
    std::fs::write(&file, batch)?;
    let added = ns.ip(&["-batch", &file.display().to_string()]);
    let _ = std::fs::remove_file(&file);
    added?;

    let uniform_t = run_pattern(&args, &ns, "uniform", 444)?;
    let mixed_t = run_pattern(&args, &ns, "mixed", 443)?;
    let (m, u) = (summarize(&mixed_t), summarize(&uniform_t));
    // Break the binds down by what they bind.
    let split = |pattern: &str, t: &[Duration], pick: &dyn Fn(&(Ipv6Addr, Kind)) -> bool| {
        let p = plan(pattern, args.sockets, args.addrs);
        let v: Vec<Duration> = p
            .iter()
            .zip(t)
            .filter(|(x, _)| pick(x))
            .map(|(_, d)| *d)
            .collect();
        (!v.is_empty()).then(|| summarize(&v))
    };
    let wild = |x: &(Ipv6Addr, Kind)| x.0.is_unspecified();
    let spec_rp = |x: &(Ipv6Addr, Kind)| !x.0.is_unspecified() && matches!(x.1, Kind::Reuseport);
    let spec_plain = |x: &(Ipv6Addr, Kind)| !x.0.is_unspecified() && matches!(x.1, Kind::Plain);
    let rows: Vec<(&str, Option<Summary>)> = vec![
        ("mixed: all binds", Some(m)),
        (
            "mixed: [::]:443 with SO_REUSEPORT (10 %)",
            split("mixed", &mixed_t, &wild),
        ),
        (
            "mixed: [fd00::x]:443 with SO_REUSEPORT (80 %)",
            split("mixed", &mixed_t, &spec_rp),
        ),
        (
            "mixed: [fd00::x]/[::1]:443 without (10 %)",
            split("mixed", &mixed_t, &spec_plain),
        ),
        ("baseline, all SO_REUSEPORT: all binds", Some(u)),
        (
            "baseline: [::]:444 binds",
            split("uniform", &uniform_t, &wild),
        ),
    ];
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kernel = kernel.trim();
    if args.json {
        let obj = |s: &Summary| {
            format!(
                "{{\"p50_us\": {:.2}, \"p99_us\": {:.2}, \"max_us\": {:.1}, \"first_1k_mean_us\": {:.2}, \"last_1k_mean_us\": {:.2}, \"total_ms\": {:.1}}}",
                s.p50, s.p99, s.max, s.first_1k, s.last_1k, s.total_ms
            )
        };
        let body: Vec<String> = rows
            .iter()
            .filter_map(|(n, s)| s.as_ref().map(|s| format!("\"{n}\": {}", obj(s))))
            .collect();
        println!(
            "{{\"kernel\": \"{kernel}\", \"sockets\": {}, \"addrs\": {}, {}}}",
            args.sockets,
            args.addrs,
            body.join(", ")
        );
        return Ok(());
    }
    println!(
        "\nbind() of {} TCP sockets per pattern on one port across {} IPv6 addresses on lo, kernel {kernel}\n",
        args.sockets, args.addrs
    );
    println!(
        "| {:<48} | {:>8} | {:>8} | {:>9} | {:>11} | {:>10} | {:>9} |",
        "binds", "p50 µs", "p99 µs", "max µs", "first 1k µs", "last 1k µs", "total ms"
    );
    println!(
        "|{:-<50}|{:->10}|{:->10}|{:->11}|{:->13}|{:->12}|{:->11}|",
        "", "", "", "", "", "", ""
    );
    for (name, s) in &rows {
        if let Some(s) = s {
            println!(
                "| {:<48} | {:>8.2} | {:>8.2} | {:>9.1} | {:>11.2} | {:>10.2} | {:>9.1} |",
                name, s.p50, s.p99, s.max, s.first_1k, s.last_1k, s.total_ms
            );
        }
    }
    println!("\nfirst/last 1k = mean bind() time of the first and the last thousand binds: growth means bind() walks the sockets already bound.");
    Ok(())
}
