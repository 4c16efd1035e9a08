//! The fleet's health-check scenarios (issue 21): an HTTP check on the VIP
//! (the backends' health endpoint, `topo::HEALTH_PORT`) at 1 s × fall 3,
//! set in the registry for the scenario only and removed after it.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use flowpin_registry::{Proto, Vip};
use serde::Serialize;

use super::{cpu_ticks, digests_agree, status, vip_name, Fleet};
use crate::check_interrupted;
use crate::topo;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Probe interval, ms.
pub(crate) const INTERVAL_MS: u64 = 1000;
/// Failures in a row that make a backend down.
pub(crate) const FALL: u64 = 3;
/// The detection target: interval × fall + 1 s.
pub(crate) const DETECT_TARGET_MS: f64 = (INTERVAL_MS * FALL + 1000) as f64;

/// What a health scenario measured in one run.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct HealthRun {
    /// Failure → every LB drained the backend (`hung`, `port closed`),
    /// or the service back → every LB has it in the ring (`recovers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) detect_ms: Option<f64>,
    /// New connections opened meanwhile that failed (they hit the failed
    /// backend before detection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failed_new_connections: Option<u64>,
    /// New connections opened meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) new_connections: Option<u64>,
    /// `recovers`: the service back → every LB has it active again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) recover_ms: Option<f64>,
    /// `cut`: the LBs (1-based) whose verdict disagrees with the quorum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) disagreeing_lbs: Option<Vec<usize>>,
    /// `cut`: the backend stayed in every LB's ring, not draining.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kept_in_ring: Option<bool>,
    /// CPU of each `flowpin-node lb` process over the run (probes, traffic
    /// and registry together), % of one core.
    pub(crate) lb_cpu_percent: Vec<f64>,
    /// `hung` only: CPU of each LB node over [`IDLE_WINDOW`] without
    /// traffic, before the health check was set and after (every backend
    /// up): the difference is the probing (5 backends × 1 VIP × 1 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) lb_idle_cpu_percent_without_health: Option<Vec<f64>>,
    /// See [`HealthRun::lb_idle_cpu_percent_without_health`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) lb_idle_cpu_percent_with_health: Option<Vec<f64>>,
}

/// The window of the idle CPU comparison.
pub(crate) const IDLE_WINDOW: Duration = Duration::from_secs(3);

fn vip_key() -> Vip {
    Vip::new(topo::VIP.into(), topo::VIP_PORT, Proto::Tcp)
}

fn check() -> Result<flowpin_registry::health::HealthCheck, Error> {
    Ok(serde_json::from_value(serde_json::json!({
        "probe": { "kind": "http", "path": "/healthz", "expect_status": 200 },
        "interval_ms": INTERVAL_MS,
        "timeout_ms": 500,
        "rise": 2,
        "fall": FALL,
        "down_ms": 0,
        "port": topo::HEALTH_PORT,
    }))?)
}

/// The per-LB CPU ticks, to compute [`HealthRun::lb_cpu_percent`].
pub(crate) struct CpuMark(Instant, Vec<u64>);

impl Fleet {
    /// Sets the VIP's health check and waits until every LB reports every
    /// backend of `want` up, healthy.
    pub(crate) fn health_on(&self, want: &[usize]) -> Result<CpuMark, Error> {
        let c = check()?;
        self.rt
            .block_on(self.reg.put_health_check(&vip_key(), &c))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let all = self.lbs.iter().all(|n| {
                status(n.port).is_some_and(|s| {
                    want.iter().all(|&j| {
                        let a = IpAddr::V4(topo::backend_addr(j));
                        s.health
                            .iter()
                            .any(|h| h.backend == a && h.state == "up" && h.fleet == "healthy")
                    })
                })
            });
            if all {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the LBs did not report backends {want:?} up within 15 s after the health check was set: {:?}",
                    self.lbs.iter().map(|n| status(n.port).map(|s| s.health)).collect::<Vec<_>>()
                )
                .into());
            }
            check_interrupted()?;
            std::thread::sleep(Duration::from_millis(20));
        }
        self.cpu_mark()
    }

    /// CPU % of each LB over [`IDLE_WINDOW`] from now.
    pub(crate) fn idle_cpu(&self) -> Result<Vec<f64>, Error> {
        let m = self.cpu_mark()?;
        crate::pause(IDLE_WINDOW)?;
        Ok(self.cpu_since(&m))
    }

    fn cpu_mark(&self) -> Result<CpuMark, Error> {
        let t = self
            .lbs
            .iter()
            .map(|n| cpu_ticks(n.proc_.pid().ok_or("an LB is gone")?))
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(CpuMark(Instant::now(), t))
    }

    /// CPU % of each LB since `m`.
    pub(crate) fn cpu_since(&self, m: &CpuMark) -> Vec<f64> {
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as f64;
        let secs = m.0.elapsed().as_secs_f64().max(1e-3);
        self.lbs
            .iter()
            .zip(&m.1)
            .map(|(n, a)| {
                let b = n.proc_.pid().and_then(|p| cpu_ticks(p).ok()).unwrap_or(*a);
                (b.saturating_sub(*a)) as f64 / hz / secs * 100.0
            })
            .collect()
    }

    /// Removes the VIP's health check.
    pub(crate) fn health_off(&self) -> Result<(), Error> {
        self.rt.block_on(self.reg.delete_health_check(&vip_key()))?;
        Ok(())
    }

    /// Whether every LB has backend `j` draining (and one digest).
    fn drained_everywhere(&self, j: usize) -> bool {
        let a = IpAddr::V4(topo::backend_addr(j));
        self.lbs.iter().all(|n| {
            status(n.port).is_some_and(|s| {
                s.health
                    .iter()
                    .any(|h| h.backend == a && h.fleet != "healthy")
                    && s.vips
                        .get(&vip_name(topo::VIP))
                        .is_some_and(|v| v.draining == 1)
            })
        }) && digests_agree(&self.lbs, &vip_name(topo::VIP))
    }

    /// From a failure of backend `j`'s service until every LB drained it,
    /// opening a new connection to the VIP from the clients every 20 ms:
    /// `(ms, failed new connections, new connections)`.
    pub(crate) fn detect_drain(
        &self,
        j: usize,
        t0: Instant,
        limit: Duration,
    ) -> Result<(f64, u64, u64), Error> {
        let (mut failed, mut total) = (0u64, 0u64);
        loop {
            if self.drained_everywhere(j) {
                return Ok((t0.elapsed().as_secs_f64() * 1000.0, failed, total));
            }
            if t0.elapsed() > limit {
                return Err(format!(
                    "backend {} was not drained by every LB within {limit:?}: {:?}",
                    j + 1,
                    self.lbs
                        .iter()
                        .map(|n| status(n.port).map(|s| s.health))
                        .collect::<Vec<_>>()
                )
                .into());
            }
            check_interrupted()?;
            total += 1;
            if !self.topo.client.run(new_connection)? {
                failed += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every LB has `want` with none draining; the time.
    pub(crate) fn wait_recovered(&self, want: &[usize]) -> Result<f64, Error> {
        Ok(self
            .wait_backends(want, 0, Duration::from_secs(15))?
            .as_secs_f64()
            * 1000.0)
    }

    /// The LBs (1-based) whose health verdict on backend `j` disagrees
    /// with the quorum.
    pub(crate) fn disagreeing(&self, j: usize) -> Vec<usize> {
        let a = IpAddr::V4(topo::backend_addr(j));
        self.lbs
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                status(n.port)
                    .is_some_and(|s| s.health.iter().any(|h| h.backend == a && h.disagrees))
            })
            .map(|(i, _)| i + 1)
            .collect()
    }

    /// Cuts (or restores) the tunnel path from LB `i` to backend `j`: a
    /// policy-routing blackhole in the router for packets from LB `i`'s
    /// own address (the outer source of its probes) to the backend's
    /// tunnel address. The data path's packets (outer source in
    /// `10.{200+i}.0.0/16`) are not matched: only what LB `i`'s host sends
    /// itself to the backend is cut.
    pub(crate) fn cut_path(&self, i: usize, j: usize, cut: bool) -> Result<(), Error> {
        let from = topo::lb_addr(i).to_string();
        let to = topo::backend_addr(j).to_string();
        self.topo.router.ip(&[
            "rule",
            if cut { "add" } else { "del" },
            "from",
            &from,
            "to",
            &to,
            "priority",
            "100",
            "blackhole",
        ])?;
        Ok(())
    }

    /// Waits until LB `i` reports backend `j` down and in disagreement
    /// while the others keep it up; the time.
    pub(crate) fn wait_disagreement(&self, i: usize, j: usize, t0: Instant) -> Result<f64, Error> {
        let a = IpAddr::V4(topo::backend_addr(j));
        loop {
            let s = status(self.lbs[i].port);
            if s.is_some_and(|s| {
                s.health
                    .iter()
                    .any(|h| h.backend == a && h.state == "down" && h.disagrees)
            }) {
                return Ok(t0.elapsed().as_secs_f64() * 1000.0);
            }
            if t0.elapsed() > Duration::from_secs(15) {
                return Err(format!(
                    "LB {} did not report backend {} down against the quorum within 15 s: {:?}",
                    i + 1,
                    j + 1,
                    status(self.lbs[i].port).map(|s| s.health)
                )
                .into());
            }
            check_interrupted()?;
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every LB has exactly the backends `want`, none draining, one digest.
    pub(crate) fn kept_everywhere(&self, want: &[usize]) -> bool {
        self.wait_backends(want, 0, Duration::ZERO).is_ok()
    }
}

/// One new connection to the VIP: whether the backend greeted it.
fn new_connection() -> bool {
    let addr = SocketAddr::from((topo::VIP, topo::VIP_PORT));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    let mut g = [0u8; crate::proto::GREETING_LEN];
    std::io::Read::read_exact(&mut s, &mut g).is_ok()
}
