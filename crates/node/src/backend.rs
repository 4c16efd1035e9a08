//! `node backend`: `xdp_decap` on the ingress interface, the sock_ops
//! program in the server role (with the host's allocated server_id) on the
//! service's cgroup, a registration under a lease; on SIGTERM it drains.
//!
//! Drain: every backend entry goes `draining` (LBs take it out of their
//! rings; its flows keep reaching it by server_id and the connection
//! table), then the node waits until no connection to a VIP port is left
//! (counted from `/proc/net/tcp{,6}` of the service's namespace) or
//! `drain_timeout_secs` passed, then revokes the lease. The programs are
//! not pinned: they detach when this process exits.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use flowpin_bpf_progs::sockops_server_id::{ServerIdOps, ServerIdOpsConfig};
use flowpin_bpf_progs::xdp_decap::{XdpDecap, XdpDecapConfig};
use flowpin_bpf_progs::xdp_lb::{XdpAttachMode, XdpTarget};
use flowpin_registry::{BackendSpec, BackendState, Registry};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::config::{BackendConfig, XdpModeConfig};
use crate::traps::check_backend;
use crate::NodeError;

type Result<T> = std::result::Result<T, NodeError>;

/// TCP states that are not a live connection (`include/net/tcp_states.h`):
/// TIME_WAIT 6, CLOSE 7, LISTEN 10.
const NOT_LIVE: [u8; 3] = [6, 7, 10];

/// Counts live TCP connections (any state but TIME_WAIT, CLOSE, LISTEN)
/// whose local port is in `ports`, in the text of `/proc/net/tcp` or
/// `/proc/net/tcp6`.
pub fn count_live(proc_net_tcp: &str, ports: &[u16]) -> usize {
    proc_net_tcp
        .lines()
        .skip(1)
        .filter(|line| {
            let mut f = line.split_whitespace();
            let (Some(_sl), Some(local), Some(_remote), Some(st)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                return false;
            };
            let Some(port) = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            else {
                return false;
            };
            let Ok(state) = u8::from_str_radix(st, 16) else {
                return false;
            };
            ports.contains(&port) && !NOT_LIVE.contains(&state)
        })
        .count()
}

/// Live connections to `ports` in the namespace `ns` (ours if `None`).
pub fn live_connections(ns: Option<&Path>, ports: &[u16]) -> usize {
    let read = || {
        ["tcp", "tcp6"]
            .iter()
            .map(|f| {
                std::fs::read_to_string(format!("/proc/thread-self/net/{f}"))
                    .map(|t| count_live(&t, ports))
                    .unwrap_or(0)
            })
            .sum()
    };
    match ns {
        Some(p) => flowpin_bpf_progs::netns::run_in(p, read).unwrap_or(0),
        None => read(),
    }
}

/// Runs `node backend` until SIGTERM / SIGINT, then drains.
pub async fn run(config_path: &Path) -> Result<()> {
    let cfg = BackendConfig::load(config_path)?;
    let b = &cfg.backend;
    let vips = cfg.vip_keys();
    let ports: Vec<u16> = vips.iter().map(|v| v.port).collect();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let rc = cfg.registry.registry_config()?;
    let registry = Registry::connect(rc).await?;
    let claim = if b.server_id {
        let c = registry.allocate_server_id(&b.host).await?;
        info!(host = %b.host, server_id = %c.server_id(), "server_id allocated");
        Some(c)
    } else {
        None
    };
    let sid = claim.as_ref().map(|c| c.server_id());

    let decap = XdpDecap::load(XdpDecapConfig::default())?;
    decap.add_tunnel_addr(b.address)?;
    let mode = match b.xdp_mode {
        XdpModeConfig::Auto => XdpAttachMode::NativeOrGeneric,
        XdpModeConfig::Native => XdpAttachMode::Native,
        XdpModeConfig::Generic => XdpAttachMode::Generic,
    };
    let mut target = XdpTarget::ifname(b.interface.clone()).mode(mode);
    if let Some(ns) = &b.netns {
        target = target.in_netns(ns);
    }
    let decap_link = decap.attach(target)?;
    info!(interface = %b.interface, mode = %decap_link.mode(), tunnel = %b.address, "xdp_decap attached");
    let ops_link = match sid {
        Some(id) => {
            let ops = ServerIdOps::load(ServerIdOpsConfig::server(id).ports(&ports))?;
            let link = ops.attach(b.cgroup.as_path())?;
            info!(cgroup = %b.cgroup.display(), server_id = %id, ?ports, "sock_ops server role attached");
            Some((ops, link))
        }
        None => None,
    };
    let vip_addrs: Vec<IpAddr> = vips.iter().map(|v| v.addr).collect();
    for t in check_backend(b.netns.as_deref(), &b.interface, b.address, &vip_addrs) {
        warn!(check = t.check, "{}", t.message);
    }

    let registration = registry.register(cfg.lease_ttl()).await?;
    let entries: Vec<_> = vips
        .iter()
        .map(|v| (*v, BackendSpec::new(b.address, b.weight, sid)))
        .collect();
    registration.add_backends(&entries).await?;
    info!(lease = registration.lease_id(), ttl = ?cfg.lease_ttl(), vips = vips.len(), "registered: LBs route to this host");

    tokio::select! {
        _ = term.recv() => info!("SIGTERM: draining"),
        _ = int.recv() => info!("SIGINT: draining"),
    }
    registration.set_state_all(BackendState::Draining).await?;
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
            _ = term.recv() => { warn!("second SIGTERM: deregistering now"); break; }
        }
    }
    registration.deregister().await?;
    info!(drained_in = ?t0.elapsed(), "deregistered; detaching");
    drop(ops_link);
    drop(decap_link);
    drop(claim);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100640A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100640A:1F90 0201000A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0100640A:1F90 0201000A:9C41 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0
   3: 0100640A:1F90 0201000A:9C42 08 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   4: 0100007F:0050 0100007F:9C43 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
";

    #[test]
    fn counts_live_connections_on_the_port_only() {
        // established + close_wait on 8080; listen and time_wait excluded; port 80 excluded.
        assert_eq!(count_live(TCP, &[8080]), 2);
        assert_eq!(count_live(TCP, &[80]), 1);
        assert_eq!(count_live(TCP, &[8080, 80]), 3);
        assert_eq!(count_live(TCP, &[443]), 0);
        assert_eq!(count_live("garbage\nmore garbage ::: x", &[8080]), 0);
    }
}
