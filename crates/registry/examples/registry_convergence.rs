//! Convergence of the registry on a local etcd: the time from a write until a
//! watcher's snapshot holds it (p50/p99 over many changes, at several VIP
//! sizes), against a raw etcd watch (event received, no validation) in the
//! same run as the baseline; and the time for an expired or revoked backend
//! to leave the snapshot.
//!
//! ```text
//! cargo run --release -p flowpin-registry --example registry_convergence -- --changes 200
//! ```

use std::net::IpAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use etcd_client::{EventType, WatchOptions};
use flowpin_registry::local_etcd::LocalEtcd;
use flowpin_registry::{
    BackendSpec, Proto, Registry, RegistryConfig, ServerId, Snapshot, SnapshotWatch, Vip, VipFlags,
    VipSpec,
};

#[derive(Parser)]
struct Args {
    /// Changes measured per row.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// Lease-expiry rounds.
    #[arg(long, default_value_t = 3)]
    expiries: usize,
}

fn addr(n: u32) -> IpAddr {
    IpAddr::from([10, (n >> 16) as u8 | 0x40, (n >> 8) as u8, n as u8])
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn row(name: &str, mut d: Vec<Duration>) {
    d.sort();
    let ms = |x: Duration| x.as_secs_f64() * 1e3;
    println!(
        "| {name:<44} | {:>4} | {:>8.2} | {:>8.2} | {:>8.2} |",
        d.len(),
        ms(pct(&d, 0.5)),
        ms(pct(&d, 0.99)),
        ms(*d.last().expect("samples"))
    );
}

/// Waits (at most 10 s) for a snapshot satisfying `pred`.
async fn until(
    watch: &mut SnapshotWatch,
    what: &str,
    pred: impl FnMut(&Snapshot) -> bool,
) -> Result<(), Box<dyn std::error::Error>> {
    match tokio::time::timeout(Duration::from_secs(10), watch.wait_for(pred)).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("watch task ended".into()),
        Err(_) => {
            let s = watch.current();
            Err(format!(
                "timed out waiting for {what}: snapshot at revision {} with {} backends, stats {:?}, first rejection {:?}",
                s.revision,
                s.backend_count(),
                watch.stats(),
                s.rejected.first()
            )
            .into())
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let etcd = LocalEtcd::start().await?;
    let reg = Registry::connect(RegistryConfig::new([etcd.endpoint()], "/flowpin/bench")).await?;
    let vip = Vip::new("10.0.0.1".parse()?, 80, Proto::Tcp);
    reg.put_vip(&VipSpec::new(vip, VipFlags::SERVER_ID)).await?;
    let mut watch = reg.watch().await?;
    let mut raw = reg.etcd();
    let value = |n: u32| format!(r#"{{"addr":"{}","weight":1,"server_id":{}}}"#, addr(n), n);

    println!(
        "| {:<44} | {:>4} | {:>8} | {:>8} | {:>8} |",
        "write → visible", "n", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "|{:-<46}|{:-<6}|{:-<10}|{:-<10}|{:-<10}|",
        "", "", "", "", ""
    );

    // Baseline: a raw etcd watch on the same prefix, event received.
    let mut stream = raw
        .watch(
            reg.layout().routing_prefix(),
            Some(WatchOptions::new().with_prefix()),
        )
        .await?;
    stream.message().await?; // created
    let mut base = Vec::new();
    for i in 0..args.changes as u32 {
        let n = 1_000_000 + i;
        let key = reg.layout().backend(&vip, addr(n));
        let t = Instant::now();
        raw.put(key.clone(), value(n), None).await?;
        'wait: loop {
            let resp = stream.message().await?.ok_or("raw watch ended")?;
            for ev in resp.events() {
                if ev.event_type() == EventType::Put
                    && ev.kv().is_some_and(|kv| kv.key() == key.as_bytes())
                {
                    break 'wait;
                }
            }
        }
        base.push(t.elapsed());
        raw.delete(key, None).await?;
    }
    drop(stream);
    row("raw etcd watch event (baseline)", base);

    let mut next = 1u32;
    let mut hosts = Vec::new();
    for size in [0usize, 100, 1000] {
        // Grow the VIP to `size` backends (in transactions of 100).
        while watch.current().backend_count() < size {
            let host = reg.register(Duration::from_secs(60)).await?;
            let batch: Vec<_> = (0..100)
                .map(|_| {
                    next += 1;
                    (vip, BackendSpec::new(addr(next), 1, ServerId::new(next)))
                })
                .collect();
            let want = watch.current().backend_count() + 100;
            host.add_backends(&batch).await?;
            hosts.push(host); // keep them for the run
            until(&mut watch, "the VIP to grow", |s| s.backend_count() >= want).await?;
        }
        let mut d = Vec::new();
        for _ in 0..args.changes {
            next += 1;
            let key = reg.layout().backend(&vip, addr(next));
            let a = addr(next);
            let t = Instant::now();
            raw.put(key.clone(), value(next), None).await?;
            until(&mut watch, "change", |s| {
                s.backends(&vip).is_some_and(|b| b.contains_key(&a))
            })
            .await?;
            d.push(t.elapsed());
            raw.delete(key, None).await?;
            until(&mut watch, "change", |s| {
                s.backends(&vip).is_some_and(|b| !b.contains_key(&a))
            })
            .await?;
        }
        row(&format!("registry snapshot, VIP with {size} backends"), d);
    }

    println!();
    println!(
        "| {:<44} | {:>4} | {:>8} | {:>8} | {:>8} |",
        "backend removal → gone from snapshot", "n", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "|{:-<46}|{:-<6}|{:-<10}|{:-<10}|{:-<10}|",
        "", "", "", "", ""
    );
    for (label, ttl, abandon) in [
        (
            "lease expiry (host died), TTL 2 s",
            Duration::from_secs(2),
            true,
        ),
        (
            "lease expiry (host died), TTL 5 s",
            Duration::from_secs(5),
            true,
        ),
        (
            "deregister (lease revoked), TTL 10 s",
            Duration::from_secs(10),
            false,
        ),
    ] {
        let mut d = Vec::new();
        for _ in 0..args.expiries {
            next += 1;
            let a = addr(next);
            let host = reg.register(ttl).await?;
            host.add_backend(&vip, &BackendSpec::new(a, 1, ServerId::new(next)))
                .await?;
            until(&mut watch, "change", |s| {
                s.backends(&vip).is_some_and(|b| b.contains_key(&a))
            })
            .await?;
            // Let a keep-alive renew the lease, as on a host that ran a while.
            tokio::time::sleep(ttl / 2).await;
            let t = Instant::now();
            if abandon {
                host.abandon();
            } else {
                host.deregister().await?;
            }
            until(&mut watch, "change", |s| {
                s.backends(&vip).is_some_and(|b| !b.contains_key(&a))
            })
            .await?;
            d.push(t.elapsed());
        }
        row(label, d);
    }
    let stats = watch.stats();
    println!(
        "\nwatch: {} snapshots, {} reconnects, {} rejections",
        stats.snapshots,
        stats.reconnects,
        stats.reject_counts.total()
    );
    Ok(())
}
