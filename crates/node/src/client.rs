//! `flowpin-node client`: the sock_ops program in the **client role** on
//! the cgroup of the proxy or service that connects to the VIPs. Its
//! connections echo the server_id each backend stamps into its SYN-ACK on
//! every later packet, so the LBs route them by server_id (through ring
//! changes, LB restarts, lost connection tables). The third piece of a
//! deployment, next to `lb` and `backend`.
//!
//! The program and its link are pinned under `<client.pin_dir>/sockops`: a restarted
//! or upgraded `node client` reopens them and swaps this build's program in
//! (`BPF_LINK_UPDATE`, the per-socket server_ids stay in the reused map),
//! so established connections keep echoing while no `node client` runs.
//! SIGTERM / SIGINT follow `on_exit` (`keep` by default; `remove` detaches),
//! SIGUSR2 always keeps; SIGHUP re-reads the file (`on_exit` applies, a
//! broken file or a changed `cgroup` / `pin_dir` / `metrics` is refused).

use std::path::Path;

use flowpin_bpf_progs::link::Link;
use flowpin_bpf_progs::sockops_server_id::{Role, ServerIdOps, ServerIdOpsConfig, SockopsLink};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::backend::{fatal, lock_pin_dir};
use crate::config::{ClientConfig, ClientOnExit};
use crate::http::{self, Query};
use crate::NodeError;

type Result<T> = std::result::Result<T, NodeError>;

/// The link pin inside the pin directory.
pub const LINK_PIN: &str = "link";

/// What `GET /status` of `flowpin-node client` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClientStatus {
    /// Always `"client"`.
    pub role: String,
    /// The process id.
    pub pid: u32,
    /// The cgroup the program is attached to.
    pub cgroup: String,
    /// Whether the pinned program was reopened at start (restart, upgrade).
    pub reopened: bool,
    /// `connect()`s seen.
    pub connects: u64,
    /// SYN-ACKs that carried a server_id (those connections echo it).
    pub parsed: u64,
    /// SYN-ACKs without one.
    pub missing: u64,
    /// Packets sent echoing a server_id.
    pub echoed: u64,
}

/// Where the program is pinned: `<pin_dir>/sockops` (the agent locks
/// `pin_dir` itself).
fn ops_dir(pin_dir: &Path) -> std::path::PathBuf {
    pin_dir.join("sockops")
}

/// The pinned client role.
struct ClientPath {
    ops: ServerIdOps,
    _link: SockopsLink,
    reopened: bool,
}

/// Reopens the pinned client role (and upgrades it to this build's
/// program) or loads, attaches and pins a new one.
fn open_or_load(cfg: &ClientConfig) -> Result<ClientPath> {
    let dir = ops_dir(&cfg.pin_dir());
    let link_pin = dir.join(LINK_PIN);
    if dir.join("meta").exists() && link_pin.exists() {
        let mut ops = ServerIdOps::open_pinned(&dir)?;
        if ops.config().role != Role::Client {
            return Err(fatal(format!(
                "{} holds a sock_ops program in the {:?} role, not the client role: give client.pin_dir its own directory",
                dir.display(),
                ops.config().role
            )));
        }
        let link = SockopsLink::from_pinned(&link_pin)?;
        let old = link.program_id()?;
        ops.upgrade(&link)?;
        info!(pin_dir = %dir.display(), old_prog = old, new_prog = link.program_id()?, "reopened the pinned sock_ops client role and swapped in this build's program: connections kept echoing");
        return Ok(ClientPath {
            ops,
            _link: link,
            reopened: true,
        });
    }
    // A program without its link: an interrupted start.
    ServerIdOps::unpin(&dir)?;
    let ops = ServerIdOps::load(ServerIdOpsConfig::client())?;
    ops.pin(&dir)?;
    let mut link = match ops.attach(cfg.client.cgroup.as_path()) {
        Ok(l) => l,
        Err(e) => {
            let _ = ServerIdOps::unpin(&dir);
            return Err(e.into());
        }
    };
    link.pin(&link_pin)?;
    info!(cgroup = %cfg.client.cgroup.display(), pin_dir = %dir.display(), "sock_ops client role loaded, pinned and attached: connections from this cgroup echo the backends' server_id");
    Ok(ClientPath {
        ops,
        _link: link,
        reopened: false,
    })
}

struct Client {
    cfg: ClientConfig,
    path: ClientPath,
    reloads_ok: u64,
    reloads_failed: u64,
}

impl Client {
    fn status(&self) -> ClientStatus {
        let s = self.path.ops.stats().unwrap_or_default().client;
        ClientStatus {
            role: "client".into(),
            pid: std::process::id(),
            cgroup: self.cfg.client.cgroup.display().to_string(),
            reopened: self.path.reopened,
            connects: s.connects,
            parsed: s.parsed,
            missing: s.missing,
            echoed: s.echoed,
        }
    }

    fn metrics_text(&self) -> String {
        use prometheus_client::registry::Registry as Prom;
        let mut reg = Prom::with_prefix("flowpin_client");
        let s = self.path.ops.stats().unwrap_or_default();
        let c = |n: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(n);
            c
        };
        reg.register(
            "connects",
            "connect()s seen in the cgroup",
            c(s.client.connects),
        );
        reg.register(
            "synack_server_id_parsed",
            "SYN-ACKs that carried a server_id (those connections echo it)",
            c(s.client.parsed),
        );
        reg.register(
            "synack_server_id_missing",
            "SYN-ACKs without a server_id (the backend has no server role)",
            c(s.client.missing),
        );
        reg.register(
            "synack_server_id_malformed",
            "SYN-ACKs with a malformed server_id option",
            c(s.client.malformed),
        );
        reg.register(
            "echoed_packets",
            "Packets sent echoing the server_id",
            c(s.client.echoed),
        );
        reg.register(
            "echo_no_space",
            "Packets sent without the echo: no room left in the TCP header",
            c(s.client.no_space),
        );
        reg.register("sockops_errors", "BPF helper failures", c(s.errors));
        reg.register(
            "config_reloads_applied",
            "SIGHUP reloads applied",
            c(self.reloads_ok),
        );
        reg.register(
            "config_reloads_refused",
            "SIGHUP reloads refused",
            c(self.reloads_failed),
        );
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
            error!(error = %e, "metrics encoding failed");
        }
        out
    }

    fn reload(&mut self, path: &Path) {
        let new = match ClientConfig::load(path) {
            Ok(c) => c,
            Err(e) => {
                self.reloads_failed += 1;
                error!(error = %e, "SIGHUP: new config refused, keeping the running one");
                return;
            }
        };
        let mut fixed = Vec::new();
        if new.client.cgroup != self.cfg.client.cgroup {
            fixed.push("client.cgroup");
        }
        if new.pin_dir() != self.cfg.pin_dir() {
            fixed.push("client.pin_dir");
        }
        if new.metrics != self.cfg.metrics {
            fixed.push("metrics");
        }
        if !fixed.is_empty() {
            self.reloads_failed += 1;
            error!(fields = ?fixed, "SIGHUP: new config refused, keeping the running one: these fields are fixed at start; restart `node client` (connections keep echoing meanwhile)");
            return;
        }
        let applied = if new.client.on_exit == self.cfg.client.on_exit {
            "nothing changed".to_string()
        } else {
            format!(
                "client.on_exit {:?} -> {:?}",
                self.cfg.client.on_exit, new.client.on_exit
            )
        };
        self.cfg = new;
        self.reloads_ok += 1;
        info!(applied = %applied, "SIGHUP: configuration reloaded");
    }
}

/// Runs `flowpin-node client` until a signal says to stop.
pub async fn run(config_path: &Path) -> Result<()> {
    let cfg = ClientConfig::load(config_path)?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let (_keep_tx, mut requests) = http::start_optional(cfg.metrics.as_ref()).await?;
    let dir = cfg.pin_dir();
    let _lock = lock_pin_dir(&dir)?;
    let path = open_or_load(&cfg)?;
    let mut client = Client {
        cfg,
        path,
        reloads_ok: 0,
        reloads_failed: 0,
    };
    let remove = loop {
        tokio::select! {
            Some((q, tx)) = requests.recv() => {
                let body = match q {
                    Query::Metrics => client.metrics_text(),
                    Query::Status => serde_json::to_string(&client.status()).unwrap_or_default(),
                    // Attached and pinned before the listener answers.
                    Query::Ready => crate::http::READY.to_string(),
                };
                let _ = tx.send(body);
            }
            _ = hup.recv() => client.reload(config_path),
            _ = usr2.recv() => { info!("SIGUSR2: handing over to the next `node client`"); break false; }
            _ = term.recv() => break client.cfg.client.on_exit == ClientOnExit::Remove,
            _ = int.recv() => break client.cfg.client.on_exit == ClientOnExit::Remove,
        }
    };
    if remove {
        drop(client);
        ServerIdOps::unpin(ops_dir(&dir))?;
        if let Err(e) = std::fs::remove_dir(&dir) {
            warn!(error = %e, "pin directory not removed");
        }
        info!("exiting; pins removed, the client role detached");
    } else {
        info!(pin_dir = %dir.display(), "exiting; the pinned client role keeps echoing (the next `node client` reopens it)");
    }
    Ok(())
}
