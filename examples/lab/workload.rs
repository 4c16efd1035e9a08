//! Client workloads: long-lived streaming connections watched for resets and
//! stalls, and short connect-request-close (CRR) connections for the cost.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowpin_testing::NetNs;

use crate::proto::{parse_greeting, GREETING_LEN, PING_LEN, RESPONSE_LEN};
use crate::topo;

/// How often each long-lived connection sends a ping.
const PING_EVERY: Duration = Duration::from_millis(100);
/// A ping unanswered for this long marks the connection stalled.
pub(crate) const STALL_AFTER: Duration = Duration::from_millis(2500);

/// Why a connection broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broken {
    /// Reset (RST from a backend that did not know the flow) or other error.
    Reset,
    /// No answer within [`STALL_AFTER`].
    Stalled,
}

/// Final state of one long-lived connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnReport {
    /// Backend index that accepted it.
    pub(crate) backend: u16,
    /// Whether and how it broke.
    pub(crate) broken: Option<Broken>,
    /// Pings answered.
    pub(crate) answered: u64,
    /// Closed gracefully by the client ([`Streams::close_to`]).
    pub(crate) closed: bool,
}

struct Conn {
    stream: TcpStream,
    backend: u16,
    outstanding_since: Option<Instant>,
    last_ping: Instant,
    got: usize,
    answered: u64,
    seq: u64,
    broken: Option<Broken>,
    /// Closed by the client (FIN), on purpose: not broken.
    closed: bool,
}

fn io_err(e: std::io::Error) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

/// Opens one connection to the VIP and reads its greeting.
fn open_one() -> Result<(TcpStream, u16), Box<dyn std::error::Error + Send + Sync>> {
    let addr = SocketAddr::from((topo::VIP, topo::VIP_PORT));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(io_err)?;
    s.set_nodelay(true).map_err(io_err)?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(io_err)?;
    let mut g = [0u8; GREETING_LEN];
    s.read_exact(&mut g).map_err(io_err)?;
    let (backend, _sid) = parse_greeting(&g).ok_or("bad greeting from backend")?;
    Ok((s, backend))
}

/// A set of long-lived streaming connections driven by a background thread.
pub(crate) struct Streams {
    stop: Arc<AtomicBool>,
    /// Backend whose connections the client closes gracefully (`u32::MAX`: none).
    close: Arc<AtomicU32>,
    driver: Option<JoinHandle<Vec<ConnReport>>>,
}

impl Streams {
    /// Opens `n` connections from the client namespace and starts pinging.
    pub(crate) fn open(
        client: &NetNs,
        n: usize,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let conns = client.run(
            move || -> Result<Vec<Conn>, Box<dyn std::error::Error + Send + Sync>> {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let (stream, backend) = open_one()?;
                    stream.set_nonblocking(true).map_err(io_err)?;
                    v.push(Conn {
                        stream,
                        backend,
                        outstanding_since: None,
                        last_ping: Instant::now(),
                        got: 0,
                        answered: 0,
                        seq: 0,
                        broken: None,
                        closed: false,
                    });
                }
                Ok(v)
            },
        )??;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let close = Arc::new(AtomicU32::new(u32::MAX));
        let close2 = close.clone();
        let driver = std::thread::spawn(move || drive(conns, &stop2, &close2));
        Ok(Streams {
            stop,
            close,
            driver: Some(driver),
        })
    }

    /// The client closes (FIN) every connection to `backend` that is
    /// still healthy, as an application does when a server drains; those
    /// connections end without counting as broken.
    pub(crate) fn close_to(&self, backend: u16) {
        self.close.store(u32::from(backend), Ordering::Relaxed);
    }

    /// Stops the driver and returns each connection's fate.
    pub(crate) fn finish(mut self) -> Vec<ConnReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.driver
            .take()
            .and_then(|d| d.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.driver.take() {
            let _ = d.join();
        }
    }
}

fn drive(mut conns: Vec<Conn>, stop: &AtomicBool, close: &AtomicU32) -> Vec<ConnReport> {
    let mut buf = [0u8; RESPONSE_LEN];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let close_to = close.load(Ordering::Relaxed);
        for c in conns.iter_mut().filter(|c| c.broken.is_none() && !c.closed) {
            if u32::from(c.backend) == close_to {
                // Between pings only: an answer in flight would be a reset.
                if c.outstanding_since.is_none() && c.got == 0 {
                    let _ = c.stream.shutdown(std::net::Shutdown::Write);
                    c.closed = true;
                    continue;
                }
            }
            // Read whatever arrived.
            loop {
                match c.stream.read(&mut buf[..RESPONSE_LEN - c.got]) {
                    Ok(0) => {
                        c.broken = Some(Broken::Reset);
                        break;
                    }
                    Ok(k) => {
                        c.got += k;
                        if c.got == RESPONSE_LEN {
                            c.got = 0;
                            c.answered += 1;
                            c.outstanding_since = None;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        c.broken = Some(Broken::Reset);
                        break;
                    }
                }
            }
            if c.broken.is_some() {
                continue;
            }
            match c.outstanding_since {
                Some(t) if now.duration_since(t) > STALL_AFTER => c.broken = Some(Broken::Stalled),
                Some(_) => {}
                None if now.duration_since(c.last_ping) >= PING_EVERY => {
                    c.seq += 1;
                    let mut ping = [0u8; PING_LEN];
                    ping[..8].copy_from_slice(&c.seq.to_be_bytes());
                    match c.stream.write(&ping) {
                        Ok(PING_LEN) => {
                            c.outstanding_since = Some(now);
                            c.last_ping = now;
                        }
                        Ok(_) => c.broken = Some(Broken::Reset), // 16 bytes never split on an idle socket
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => c.broken = Some(Broken::Reset),
                    }
                }
                None => {}
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Stalls are detected inside the loop: callers keep it running for longer
    // than STALL_AFTER after their last change.
    conns
        .into_iter()
        .map(|c| ConnReport {
            backend: c.backend,
            broken: c.broken,
            answered: c.answered,
            closed: c.closed,
        })
        .collect()
}

/// Result of a CRR run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CrrResult {
    /// Completed connect-request-close transactions per second.
    pub(crate) rps: f64,
    /// Median latency of one transaction, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Failed transactions.
    pub(crate) errors: u64,
}

impl CrrResult {
    /// Combines rounds of equal duration: mean rate, mean of percentiles, summed errors.
    pub(crate) fn merge(rounds: &[CrrResult]) -> CrrResult {
        let n = rounds.len().max(1) as f64;
        CrrResult {
            rps: rounds.iter().map(|r| r.rps).sum::<f64>() / n,
            p50_us: rounds.iter().map(|r| r.p50_us).sum::<f64>() / n,
            p99_us: rounds.iter().map(|r| r.p99_us).sum::<f64>() / n,
            errors: rounds.iter().map(|r| r.errors).sum(),
        }
    }
}

/// Runs connect-request-close transactions from `threads` client threads for `dur`.
pub(crate) fn crr(
    client: &NetNs,
    threads: usize,
    dur: Duration,
) -> Result<CrrResult, Box<dyn std::error::Error + Send + Sync>> {
    let mut handles = Vec::new();
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for t in 0..threads {
        handles.push(client.spawn(move || {
            // One client thread per CPU, pinned: a thread that migrates
            // (or two that share a CPU while the other idles) shows up as
            // tail latency that belongs to neither side of the comparison.
            let mut set = nix::sched::CpuSet::new();
            if set.set(t % ncpu).is_ok() {
                let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
            }
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let end = Instant::now() + dur;
            while Instant::now() < end {
                let t = Instant::now();
                let ok = (|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                    let (mut s, _) = open_one()?;
                    s.write_all(&[7u8; PING_LEN]).map_err(io_err)?;
                    let mut r = [0u8; RESPONSE_LEN];
                    s.read_exact(&mut r).map_err(io_err)?;
                    Ok(())
                })();
                match ok {
                    Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1e6),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        })?);
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().map_err(|_| "CRR thread panicked")?;
        all.extend(l);
        errors += e;
    }
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        all[((all.len() - 1) as f64 * p).round() as usize]
    };
    Ok(CrrResult {
        rps: all.len() as f64 / dur.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        errors,
    })
}
