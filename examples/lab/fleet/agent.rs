//! The fleet's agent-side pieces: the client role run by `flowpin-node
//! client` (pinned sock_ops client role on the clients' cgroup), the
//! backend agents' restarts and upgrades, and the counters that say whether
//! a backend lost a packet while no agent ran.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowpin_bpf_progs::sockops_server_id::ServerIdOps;
use flowpin_bpf_progs::xdp_decap::XdpDecap;
use flowpin_node::backend::BackendStatus;
use flowpin_node::client::ClientStatus;
use flowpin_testing::unique_name;

use super::{http_get, Fleet, NodeProc};
use crate::{check_interrupted, Created};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Removes a backend's or a client's pins (`decap/`, `sockops/`, the
/// directory).
pub(crate) fn unpin_all(dir: &Path) {
    let _ = XdpDecap::unpin(dir.join("decap"));
    let _ = ServerIdOps::unpin(dir.join("sockops"));
    let _ = std::fs::remove_dir(dir);
}

/// A unique pin directory of the lab (its name holds `lab`: the leftover
/// check finds it).
pub(crate) fn pin_dir(tag: &str) -> PathBuf {
    Path::new("/sys/fs/bpf").join(unique_name(&format!("fleet-lab-{tag}")))
}

/// Waits for a port file and for `/status` to answer `ok`.
fn wait_port(
    port_file: &Path,
    proc_: &mut NodeProc,
    ok: impl Fn(&str) -> bool,
    limit: Duration,
) -> Result<u16, Error> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(p) = std::fs::read_to_string(port_file)
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
        {
            if http_get(p, "/status").is_some_and(|b| ok(&b)) {
                return Ok(p);
            }
        }
        if Instant::now() > deadline || !proc_.running() {
            return Err(format!(
                "flowpin-node {} did not come up; its log:\n{}",
                proc_.role,
                proc_.log_tail()
            )
            .into());
        }
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `flowpin-node client` on the clients' cgroup; its pins go on drop.
pub(crate) struct ClientNode {
    pub(crate) proc_: NodeProc,
    pin_dir: PathBuf,
    port_file: PathBuf,
    port: u16,
}

impl Drop for ClientNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.proc_.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        unpin_all(&self.pin_dir);
    }
}

impl ClientNode {
    /// Writes `client.toml` in `dir` for `cgroup`.
    pub(crate) fn new(dir: &Path, cgroup: &Path) -> Result<ClientNode, Error> {
        let pin_dir = pin_dir("client");
        let port_file = dir.join("client.port");
        let config = dir.join("client.toml");
        std::fs::write(
            &config,
            format!(
                "[client]\ncgroup = \"{}\"\npin_dir = \"{}\"\non_exit = \"keep\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\nport_file = \"{}\"\n",
                cgroup.display(),
                pin_dir.display(),
                port_file.display()
            ),
        )?;
        Ok(ClientNode {
            proc_: NodeProc {
                child: None,
                config,
                log: dir.join("client.log"),
                role: "client",
            },
            pin_dir,
            port_file,
            port: 0,
        })
    }

    /// (Re)starts it and waits for its `/status`; whether it reopened its
    /// pins.
    pub(crate) fn start(&mut self, node: &Path, created: &mut Created) -> Result<bool, Error> {
        let _ = std::fs::remove_file(&self.port_file);
        self.proc_ = NodeProc::spawn(
            node,
            "client",
            self.proc_.config.clone(),
            self.proc_.log.clone(),
            created,
        )?;
        self.port = wait_port(
            &self.port_file,
            &mut self.proc_,
            |b| serde_json::from_str::<ClientStatus>(b).is_ok(),
            Duration::from_secs(20),
        )?;
        Ok(http_get(self.port, "/status")
            .and_then(|b| serde_json::from_str::<ClientStatus>(&b).ok())
            .is_some_and(|s| s.reopened))
    }

    /// Packets the client role echoed a server_id on.
    pub(crate) fn echoed(&self) -> u64 {
        ServerIdOps::open_pinned(self.pin_dir.join("sockops"))
            .and_then(|o| o.stats())
            .map_or(0, |s| s.client.echoed)
    }
}

/// The counters around an agent restart: packets the LBs sent to the
/// backend, packets its `xdp_decap` decapsulated, the clients' TCP
/// retransmissions.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LossCounters {
    pub(crate) lb_sent: u64,
    pub(crate) decapsulated: u64,
    pub(crate) client_retransmits: u64,
}

impl LossCounters {
    /// `self` − `before`: (sent, decapsulated, lost, retransmits).
    pub(crate) fn since(&self, before: &LossCounters) -> (u64, u64, u64, u64) {
        let sent = self.lb_sent - before.lb_sent;
        let got = self.decapsulated - before.decapsulated;
        (
            sent,
            got,
            sent.saturating_sub(got),
            self.client_retransmits - before.client_retransmits,
        )
    }
}

/// Packets the LB at `port` forwarded to `backend` (its `/metrics`:
/// `flowpin_backend_packets_total`, repeated under each VIP of the
/// backend, hence the max; `flowpin_lb_…` accepted too).
fn lb_backend_packets(port: u16, backend: &str) -> Option<u64> {
    let text = http_get(port, "/metrics")?;
    let label = format!("backend=\"{backend}\"");
    Some(
        text.lines()
            .filter(|l| {
                (l.starts_with("flowpin_backend_packets_total{")
                    || l.starts_with("flowpin_lb_backend_packets_total{"))
                    && l.contains(&label)
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .map(|v| v as u64)
            .fold(0, u64::max),
    )
}

impl Fleet {
    /// Backend `j`'s pin directory.
    pub(crate) fn agent_pins(&self, j: usize) -> &Path {
        &self.backends[j].pin_dir
    }

    fn decapsulated(&self, j: usize) -> Result<u64, Error> {
        Ok(XdpDecap::open_pinned(self.agent_pins(j).join("decap"))?
            .stats()?
            .decapsulated())
    }

    fn client_retransmits(&self) -> Result<u64, Error> {
        let snmp = self
            .topo
            .client
            .run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
        let tcp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Tcp:")).collect();
        let (names, vals) = match tcp.as_slice() {
            [n, v, ..] => (n, v),
            _ => return Err("no Tcp lines in /proc/net/snmp".into()),
        };
        let i = names
            .split_whitespace()
            .position(|n| n == "RetransSegs")
            .ok_or("no RetransSegs")?;
        Ok(vals
            .split_whitespace()
            .nth(i)
            .ok_or("short Tcp line")?
            .parse()?)
    }

    /// The counters of backend `j`, read at an instant no packet reached
    /// it during the LBs' reading (its decap count the same before and
    /// after), so LB and backend counts describe the same packets.
    pub(crate) fn loss_counters(&self, j: usize) -> Result<LossCounters, Error> {
        let addr = crate::topo::backend_addr(j).to_string();
        for _ in 0..500 {
            let before = self.decapsulated(j)?;
            let mut sent = 0;
            for lb in &self.lbs {
                sent +=
                    lb_backend_packets(lb.port, &addr).ok_or("an LB did not answer /metrics")?;
            }
            if self.decapsulated(j)? == before {
                return Ok(LossCounters {
                    lb_sent: sent,
                    decapsulated: before,
                    client_retransmits: self.client_retransmits()?,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err("backend counters never quiet for one reading of the LBs".into())
    }

    /// Stops backend `j`'s agent with `sig` (SIGKILL: a crash; SIGUSR2: a
    /// hand-over) and starts `binary` with the same config; returns when
    /// the new agent is registered, with whether it reopened the pins.
    pub(crate) fn restart_agent(
        &mut self,
        j: usize,
        sig: nix::sys::signal::Signal,
        binary: &Path,
        gap: Duration,
        created: &mut Created,
    ) -> Result<bool, Error> {
        if let Some(mut n) = self.backends[j].node.take() {
            n.signal(sig);
            n.wait_exit(Duration::from_secs(5));
        }
        crate::pause(gap)?;
        let b = &self.backends[j];
        let port_file = b.port_file.clone();
        let _ = std::fs::remove_file(&port_file);
        let mut p = NodeProc::spawn(binary, "backend", b.config.clone(), b.log.clone(), created)?;
        let port = wait_port(
            &port_file,
            &mut p,
            |b| serde_json::from_str::<BackendStatus>(b).is_ok_and(|s| s.registered),
            Duration::from_secs(20),
        );
        self.backends[j].node = Some(p);
        let port = port?;
        Ok(http_get(port, "/status")
            .and_then(|b| serde_json::from_str::<BackendStatus>(&b).ok())
            .is_some_and(|s| s.reopened))
    }

    /// A copy of the node binary under another name: "the new build" of an
    /// upgrade (same code; the agent swaps its programs in all the same).
    pub(crate) fn upgraded_binary(&self) -> Result<PathBuf, Error> {
        let to = self._tmp.path().join("flowpin-node-upgraded");
        if !to.exists() {
            std::fs::copy(&self.node, &to)?;
        }
        Ok(to)
    }
}
