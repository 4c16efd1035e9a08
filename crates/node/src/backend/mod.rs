//! `node backend`: the backend host agent. `xdp_decap` on the ingress
//! interface and the sock_ops program in the server role (with the host's
//! allocated server_id) on the service's cgroup, both **pinned** under
//! `backend.pin_dir` ([`datapath`]); a registration under a lease.
//!
//! - Restart / upgrade: a new agent reopens the pins and swaps its own
//!   build's programs into the pinned links; the backend never stops
//!   while no agent runs (SIGUSR2, SIGKILL, or SIGTERM with
//!   `on_exit = "keep"`, leave pins and registration for it).
//! - etcd down at start: the data path runs, the agent retries with
//!   backoff (100 ms doubling to 5 s) and says so in plain words.
//! - A `host` / `server_id` conflict (another node with the same host) is
//!   refused at start (exit non-zero) and reported while running (log,
//!   `flowpin_backend_conflicts`, `/status`).
//! - Its own keys are watched: one deleted or changed outside the agent
//!   is re-asserted.
//! - SIGHUP reloads `weight`, `vips`, `drain_timeout_secs`, `on_exit`,
//!   `drain_command` (logged: what was applied); a broken file, or a
//!   change of a field fixed at start, is refused and the running
//!   configuration kept.
//! - Drain (SIGTERM, `on_exit = "drain"`): every backend entry goes
//!   `draining` (LBs take it out of their rings; its flows keep reaching
//!   it by server_id and the connection table), `drain_command` runs, then
//!   the agent waits until no connection to a VIP port is left (counted
//!   from `/proc/net/tcp{,6}` of the service's namespace) or
//!   `drain_timeout_secs` passed, revokes the lease and removes the pins.

use std::path::Path;
use std::time::{Duration, Instant};

use flowpin_registry::{BackendState, Vip};
use flowpin_tcp_opt::ServerId;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, info, warn};

use crate::config::{BackendConfig, BackendOnExit};
use crate::http::{self, Query};
use crate::traps::check_backend;
use crate::NodeError;

pub mod datapath;
mod drain;
pub mod metrics;
pub mod online;
mod self_check;

pub use drain::{count_live, live_connections};
pub use metrics::BackendStatus;

use datapath::DataPath;
use online::{Attempt, Online};

type Result<T> = std::result::Result<T, NodeError>;

/// The agent's state (the event loop owns it).
pub(crate) struct Agent {
    cfg: BackendConfig,
    dp: DataPath,
    server_id: Option<ServerId>,
    registered: bool,
    draining: bool,
    conflicts: Vec<String>,
    reasserted: u64,
    registry_retries: u64,
    reloads_ok: u64,
    reloads_failed: u64,
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr2: Signal,
}

/// How the agent leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Drain,
    Keep,
}

pub(crate) fn fatal(msg: impl Into<String>) -> NodeError {
    NodeError::Io(std::io::Error::other(msg.into()))
}

/// Takes `flock` on the pin directory without waiting: a second agent on
/// the same `pin_dir` is refused.
pub(crate) fn lock_pin_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    flowpin_bpf_progs::pin::create_pin_dir(dir)?;
    let f = std::fs::File::open(dir)?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        fatal(format!(
            "another flowpin-node process holds {} (its pin_dir): stop it first, or give this one its own pin_dir",
            dir.display()
        ))
    })
}

/// Reports the service's own verdict for every backend this host registered.
async fn report_self_health(online: &online::Online, v: &self_check::Verdict) {
    if v.healthy {
        info!("service health check passes: reported healthy");
    } else {
        warn!(reason = %v.reason, "service health check fails: reported unhealthy (the LBs drain this host)");
    }
    for (vip, spec) in online.registration.backends() {
        if let Err(e) = online
            .registration
            .report_health(&vip, spec.addr, v.healthy, &v.reason)
            .await
        {
            warn!(vip = %vip, error = %online::plain(&e), "health report not written");
        }
    }
}

fn answer(agent: &Agent, q: Query, tx: tokio::sync::oneshot::Sender<String>) {
    let body = match q {
        Query::Metrics => agent.metrics_text(),
        Query::Status => serde_json::to_string(&agent.status()).unwrap_or_default(),
        Query::Ready => {
            if !agent.conflicts.is_empty() {
                format!("registry conflict: {}", agent.conflicts.join("; "))
            } else if !agent.registered {
                "not registered yet (etcd unreachable or the claim is pending)".to_string()
            } else {
                crate::http::READY.to_string()
            }
        }
    };
    let _ = tx.send(body);
}

fn ports_of(vips: &[Vip]) -> Vec<u16> {
    let mut p: Vec<u16> = vips.iter().map(|v| v.port).collect();
    p.sort_unstable();
    p.dedup();
    p
}

/// Fields fixed at start (pins, identity, registry, listener): a SIGHUP
/// that changes one is refused.
fn restart_only(a: &BackendConfig, b: &BackendConfig) -> Vec<&'static str> {
    let (x, y) = (&a.backend, &b.backend);
    let mut out = Vec::new();
    for (name, differs) in [
        ("registry", a.registry != b.registry),
        ("metrics", a.metrics != b.metrics),
        ("backend.host", x.host != y.host),
        ("backend.address", x.address != y.address),
        ("backend.interface", x.interface != y.interface),
        ("backend.netns", x.netns != y.netns),
        ("backend.cgroup", x.cgroup != y.cgroup),
        ("backend.server_id", x.server_id != y.server_id),
        (
            "backend.lease_ttl_secs",
            x.lease_ttl_secs != y.lease_ttl_secs,
        ),
        ("backend.xdp_mode", x.xdp_mode != y.xdp_mode),
        ("backend.pin_dir", a.pin_dir() != b.pin_dir()),
    ] {
        if differs {
            out.push(name);
        }
    }
    out
}

impl Agent {
    /// Re-reads the file on SIGHUP; applies what can change at run time.
    async fn reload(&mut self, path: &Path, online: &Online) {
        let new = match BackendConfig::load(path) {
            Ok(c) => c,
            Err(e) => {
                self.reloads_failed += 1;
                error!(error = %e, "SIGHUP: new config refused, keeping the running one");
                return;
            }
        };
        let fixed = restart_only(&self.cfg, &new);
        if !fixed.is_empty() {
            self.reloads_failed += 1;
            error!(fields = ?fixed, "SIGHUP: new config refused, keeping the running one: these fields are fixed at start; restart the agent to change them (its pinned data path keeps running meanwhile)");
            return;
        }
        let (old_b, new_b) = (&self.cfg.backend, &new.backend);
        let mut applied = Vec::new();
        let old_vips = self.cfg.vip_keys();
        let new_vips = new.vip_keys();
        let removed: Vec<Vip> = old_vips
            .iter()
            .filter(|v| !new_vips.contains(v))
            .copied()
            .collect();
        let added: Vec<Vip> = new_vips
            .iter()
            .filter(|v| !old_vips.contains(v))
            .copied()
            .collect();
        let state = if self.draining {
            BackendState::Draining
        } else {
            BackendState::Active
        };
        let reg = &online.registration;
        for v in &removed {
            if let Err(e) = reg.remove_backend(v, old_b.address).await {
                self.reloads_failed += 1;
                error!(error = %online::plain(&e), "SIGHUP: removing VIP {v} failed; the running configuration stays");
                return;
            }
        }
        if !added.is_empty() || old_b.weight != new_b.weight {
            let entries: Vec<_> = new_vips
                .iter()
                .map(|v| {
                    let mut s = flowpin_registry::BackendSpec::new(
                        new_b.address,
                        new_b.weight,
                        self.server_id,
                    );
                    s.state = state;
                    (*v, s)
                })
                .collect();
            if let Err(e) = reg.add_backends(&entries).await {
                self.reloads_failed += 1;
                error!(error = %online::plain(&e), "SIGHUP: registering the new VIPs / weight failed; the running configuration stays");
                return;
            }
        }
        if let Err(e) = self.dp.set_ports(&ports_of(&new_vips)) {
            warn!(error = %e, "SIGHUP: sock_ops port filter not updated");
        }
        if old_b.weight != new_b.weight {
            applied.push(format!(
                "backend.weight {} -> {}",
                old_b.weight, new_b.weight
            ));
        }
        if !added.is_empty() || !removed.is_empty() {
            let show = |v: &[Vip]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
            applied.push(format!(
                "backend.vips added {:?} removed {:?}",
                show(&added),
                show(&removed)
            ));
        }
        if old_b.drain_timeout_secs != new_b.drain_timeout_secs {
            applied.push(format!(
                "backend.drain_timeout_secs {} -> {}",
                old_b.drain_timeout_secs, new_b.drain_timeout_secs
            ));
        }
        if old_b.on_exit != new_b.on_exit {
            applied.push(format!(
                "backend.on_exit {:?} -> {:?}",
                old_b.on_exit, new_b.on_exit
            ));
        }
        if old_b.drain_command != new_b.drain_command {
            applied.push("backend.drain_command".to_string());
        }
        self.cfg = new;
        self.reloads_ok += 1;
        if applied.is_empty() {
            info!("SIGHUP: configuration reloaded, nothing changed");
        } else {
            info!(applied = %applied.join("; "), "SIGHUP: configuration reloaded and applied");
        }
    }

    /// A snapshot arrived: report conflicts, re-assert missing keys.
    async fn on_snapshot(&mut self, online: &Online, snap: &flowpin_registry::Snapshot) {
        let ids: Vec<ServerId> = self.server_id.into_iter().collect();
        let vips = self.cfg.vip_keys();
        let c = online::conflicts(
            snap,
            online.registry.layout(),
            &ids,
            self.cfg.backend.address,
            &vips,
        );
        if c != self.conflicts {
            for x in &c {
                error!(conflict = %x, "registry conflict");
            }
            if c.is_empty() && !self.conflicts.is_empty() {
                info!("registry conflict resolved");
            }
            self.conflicts = c;
        }
        let mut mine = online.registration.backends();
        let gone = online::missing(snap, &mine);
        // Re-asserting keeps the state the registry holds (an operator's
        // drain / undrain), only the agent's own fields are restored.
        for (v, b) in &mut mine {
            if let Some(have) = snap.vips.get(v).and_then(|e| e.backends.get(&b.addr)) {
                b.state = have.state;
            }
        }
        if !gone.is_empty() {
            for (v, a) in &gone {
                warn!(vip = %v, backend = %a, revision = snap.revision, "this host's registry key was deleted or changed outside the agent: re-asserting it");
            }
            match online.registration.add_backends(&mine).await {
                Ok(_) => self.reasserted += gone.len() as u64,
                Err(e) => {
                    warn!(error = %online::plain(&e), "re-asserting failed; trying again at the next snapshot")
                }
            }
        }
    }
}

fn signals() -> Result<Signals> {
    Ok(Signals {
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
        hup: signal(SignalKind::hangup())?,
        usr2: signal(SignalKind::user_defined2())?,
    })
}

/// Runs `node backend` until SIGTERM / SIGINT (then per `on_exit`) or
/// SIGUSR2 (hand over: keep pins and registration).
pub async fn run(config_path: &Path) -> Result<()> {
    let cfg = BackendConfig::load(config_path)?;
    let mut sig = signals()?;
    // Every resource is checked before the data path is touched.
    let (_http_tx, mut requests) = http::start_optional(cfg.metrics.as_ref()).await?;
    let pin_dir = cfg.pin_dir();
    let _lock = lock_pin_dir(&pin_dir)?;
    let dp = DataPath::open(&cfg, &pin_dir)?;
    let vips = cfg.vip_keys();
    let vip_addrs: Vec<_> = vips.iter().map(|v| v.addr).collect();
    let b = &cfg.backend;
    for t in check_backend(b.netns.as_deref(), &b.interface, b.address, &vip_addrs) {
        warn!(check = t.check, "{}", t.message);
    }
    let mut agent = Agent {
        cfg: cfg.clone(),
        dp,
        server_id: None,
        registered: false,
        draining: false,
        conflicts: Vec::new(),
        reasserted: 0,
        registry_retries: 0,
        reloads_ok: 0,
        reloads_failed: 0,
    };

    // Online: retried with backoff while etcd is down; requests answered.
    let mut delay = Duration::from_millis(100);
    let online = loop {
        let attempt = {
            let fut = async {
                let claimed = online::claim(&cfg).await?;
                let sid = claimed.server_id();
                Ok::<_, Attempt>((claimed, sid))
            };
            tokio::pin!(fut);
            let r = loop {
                tokio::select! {
                    r = &mut fut => break Some(r),
                    Some((q, tx)) = requests.recv() => answer(&agent, q, tx),
                    _ = sig.term.recv() => break None,
                    _ = sig.int.recv() => break None,
                }
            };
            match r {
                Some(Ok((claimed, sid))) => {
                    // sock_ops before the registration: the LBs route by
                    // server_id only once SYN-ACKs carry it.
                    agent.server_id = sid;
                    match agent.dp.set_server_id(&cfg, sid, &ports_of(&vips)) {
                        Ok(()) => {
                            let fut = online::register(&cfg, claimed);
                            tokio::pin!(fut);
                            loop {
                                tokio::select! {
                                    r = &mut fut => break Some(r),
                                    Some((q, tx)) = requests.recv() => answer(&agent, q, tx),
                                    _ = sig.term.recv() => break None,
                                    _ = sig.int.recv() => break None,
                                }
                            }
                        }
                        Err(e) => Some(Err(Attempt::Fatal(e.to_string()))),
                    }
                }
                Some(Err(e)) => Some(Err(e)),
                None => None,
            }
        };
        match attempt {
            None => {
                info!("signal before the registry answered: exiting, the pinned data path stays");
                return Ok(());
            }
            Some(Ok(o)) => break o,
            Some(Err(Attempt::Fatal(msg))) => {
                error!("{msg}");
                if !agent.dp.reopened {
                    // Nothing ran here before this agent: leave nothing behind.
                    if let Err(e) = agent.dp.remove() {
                        warn!(error = %e, "removing the pins failed");
                    }
                }
                return Err(fatal(msg));
            }
            Some(Err(Attempt::Retry(why))) => {
                agent.registry_retries += 1;
                warn!(
                    "etcd is not reachable at {} ({why}): not registered yet, the data path keeps running; retrying in {delay:?}",
                    cfg.registry.endpoints.join(", ")
                );
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        Some((q, tx)) = requests.recv() => answer(&agent, q, tx),
                        _ = sig.term.recv() => return Ok(()),
                        _ = sig.int.recv() => return Ok(()),
                    }
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    agent.registered = true;
    let mut online = online;
    let first = online.watch.current();
    agent.on_snapshot(&online, &first).await;
    if agent.conflicts.is_empty() {
        info!(lease = online.registration.lease_id(), ttl = ?cfg.lease_ttl(), vips = vips.len(), server_id = ?agent.server_id.map(u32::from), "registered: LBs route to this host");
    } else {
        error!(conflicts = ?agent.conflicts, "registered, but the LBs do not route to this host: see the conflicts");
    }
    for v in &vips {
        if !first.vips.contains_key(v) {
            warn!(vip = %v, "this VIP is not declared in the registry: LBs route it once it is");
        }
    }

    let mut self_checks = cfg.backend.health_check.clone().map(self_check::start);
    let exit = loop {
        let next_self = async {
            match self_checks.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(v) = next_self => report_self_health(&online, &v).await,
            snap = online.watch.next() => match snap {
                Some(s) => agent.on_snapshot(&online, &s).await,
                None => {
                    // The watch reconnects by itself; it ends only if its
                    // task did. Start a new one (no busy loop meanwhile).
                    warn!("registry watch ended; starting a new one in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match online.registry.watch().await {
                        Ok(w) => online.watch = w,
                        Err(e) => warn!(error = %online::plain(&e), "registry watch not restarted; trying again"),
                    }
                }
            },
            Some((q, tx)) = requests.recv() => answer(&agent, q, tx),
            _ = sig.hup.recv() => agent.reload(config_path, &online).await,
            _ = sig.usr2.recv() => { info!("SIGUSR2: handing over to the next agent"); break Exit::Keep; }
            _ = sig.term.recv() => { info!("SIGTERM"); break exit_of(&agent.cfg); }
            _ = sig.int.recv() => { info!("SIGINT"); break exit_of(&agent.cfg); }
        }
    };
    match exit {
        Exit::Keep => {
            let Online {
                registration,
                claim,
                ..
            } = online;
            registration.abandon();
            drop(claim);
            info!("exiting; pins and registration kept: the next agent reopens them (the backends leave the LBs after lease_ttl_secs if none does)");
            Ok(())
        }
        Exit::Drain => drain_and_leave(agent, online, &mut sig, &mut requests).await,
    }
}

fn exit_of(cfg: &BackendConfig) -> Exit {
    match cfg.backend.on_exit {
        BackendOnExit::Drain => Exit::Drain,
        BackendOnExit::Keep => Exit::Keep,
    }
}

async fn drain_and_leave(
    mut agent: Agent,
    online: Online,
    sig: &mut Signals,
    requests: &mut tokio::sync::mpsc::Receiver<http::Request>,
) -> Result<()> {
    info!("draining");
    agent.draining = true;
    online
        .registration
        .set_state_all(BackendState::Draining)
        .await?;
    if let Some(cmd) = &agent.cfg.backend.drain_command {
        drain::spawn_drain_command(cmd);
    }
    let b = agent.cfg.backend.clone();
    let ports = ports_of(&agent.cfg.vip_keys());
    let deadline = Instant::now() + Duration::from_secs(b.drain_timeout_secs);
    let t0 = Instant::now();
    let mut last = usize::MAX;
    loop {
        let n = live_connections(b.netns.as_deref(), &ports);
        if n != last {
            info!(
                connections = n,
                "draining: live connections on the VIP ports"
            );
            last = n;
        }
        if n == 0 {
            break;
        }
        if Instant::now() >= deadline {
            warn!(
                connections = n,
                timeout = b.drain_timeout_secs,
                "drain timeout: deregistering with connections left"
            );
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            Some((q, tx)) = requests.recv() => answer(&agent, q, tx),
            _ = sig.term.recv() => { warn!("second SIGTERM: deregistering now"); break; }
        }
    }
    let Online {
        registration,
        claim,
        ..
    } = online;
    registration.deregister().await?;
    info!(drained_in = ?t0.elapsed(), "deregistered; removing the pins (the programs detach)");
    agent.dp.remove()?;
    drop(claim);
    Ok(())
}
