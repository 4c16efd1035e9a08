//! The agent's data path, pinned so that it outlives the agent:
//! `<pin_dir>/decap/` (`xdp_decap`, its maps, its XDP link) and
//! `<pin_dir>/sockops/` (the sock_ops server role, its maps, its cgroup
//! link). A new agent (a restart, an upgrade) reopens both and swaps this
//! build's programs into the pinned links (`BPF_LINK_UPDATE`: every packet
//! and every socket event sees the old program or the new one, never
//! none), so the backend never stops while no agent runs.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use flowpin_bpf_progs::libbpf_rs::{MapCore, MapFlags};
use flowpin_bpf_progs::link::Link;
use flowpin_bpf_progs::sockops_server_id::{Role, ServerIdOps, ServerIdOpsConfig, SockopsLink};
use flowpin_bpf_progs::xdp_decap::{XdpDecap, XdpDecapConfig};
use flowpin_bpf_progs::xdp_lb::{XdpAttachMode, XdpLink, XdpTarget};
use flowpin_tcp_opt::ServerId;
use tracing::{info, warn};

use crate::config::{BackendConfig, XdpModeConfig};
use crate::NodeError;

type Result<T> = std::result::Result<T, NodeError>;

/// The link pin inside each program's directory.
pub const LINK_PIN: &str = "link";

/// The pinned programs of one backend host.
pub struct DataPath {
    /// `xdp_decap`.
    pub decap: XdpDecap,
    /// Its XDP link (pinned).
    pub decap_link: XdpLink,
    /// The sock_ops server role and its cgroup link (pinned), when the
    /// host has a server_id.
    pub ops: Option<(ServerIdOps, SockopsLink)>,
    /// Whether `xdp_decap` was reopened from its pins.
    pub reopened: bool,
    pin_dir: PathBuf,
}

fn decap_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("decap")
}

fn ops_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("sockops")
}

fn target(cfg: &BackendConfig) -> XdpTarget {
    let b = &cfg.backend;
    let mode = match b.xdp_mode {
        XdpModeConfig::Auto => XdpAttachMode::NativeOrGeneric,
        XdpModeConfig::Native => XdpAttachMode::Native,
        XdpModeConfig::Generic => XdpAttachMode::Generic,
    };
    let t = XdpTarget::ifname(b.interface.clone()).mode(mode);
    match &b.netns {
        Some(ns) => t.in_netns(ns),
        None => t,
    }
}

/// Makes the tunnel addresses of `decap` exactly `[want]`.
fn sync_tunnel_addr(decap: &XdpDecap, want: IpAddr) -> Result<()> {
    let have = decap.tunnel_addrs()?;
    if !have.contains(&want) {
        decap.add_tunnel_addr(want)?;
        info!(tunnel = %want, "tunnel address added to the pinned xdp_decap");
    }
    for a in have.into_iter().filter(|a| *a != want) {
        decap.remove_tunnel_addr(a)?;
        info!(tunnel = %a, "old tunnel address removed from the pinned xdp_decap");
    }
    Ok(())
}

/// Reopens the pinned `xdp_decap` and upgrades it to this build's program,
/// or loads, pins and attaches a new one.
fn open_decap(cfg: &BackendConfig, pin_dir: &Path) -> Result<(XdpDecap, XdpLink, bool)> {
    let dir = decap_dir(pin_dir);
    let link_pin = dir.join(LINK_PIN);
    if dir.join("meta").exists() && link_pin.exists() {
        let mut decap = XdpDecap::open_pinned(&dir)?;
        let link = match &cfg.backend.netns {
            Some(ns) => XdpLink::from_pinned_in_netns(&link_pin, ns)?,
            None => XdpLink::from_pinned(&link_pin)?,
        };
        let old = link.program_id()?;
        decap.upgrade(&link)?;
        sync_tunnel_addr(&decap, cfg.backend.address)?;
        info!(
            pin_dir = %dir.display(),
            mode = %link.mode(),
            old_prog = old,
            new_prog = link.program_id()?,
            "reopened the pinned xdp_decap and swapped in this build's program: decapsulation never stopped"
        );
        return Ok((decap, link, true));
    }
    if dir.exists() {
        warn!(pin_dir = %dir.display(), "incomplete xdp_decap pins (no link): removing them and attaching anew");
        XdpDecap::unpin(&dir)?;
    }
    let decap = XdpDecap::load(XdpDecapConfig::default())?;
    decap.add_tunnel_addr(cfg.backend.address)?;
    decap.pin(&dir)?;
    let mut link = match decap.attach(target(cfg)) {
        Ok(l) => l,
        Err(e) => {
            let _ = XdpDecap::unpin(&dir);
            return Err(e.into());
        }
    };
    link.pin(&link_pin)?;
    info!(interface = %cfg.backend.interface, mode = %link.mode(), tunnel = %cfg.backend.address, pin_dir = %dir.display(), "xdp_decap loaded, pinned and attached");
    Ok((decap, link, false))
}

/// Makes the server-ports filter of `ops` exactly `ports`.
fn sync_ports(ops: &ServerIdOps, ports: &[u16]) -> Result<()> {
    let map = ops.server_ports_map();
    let have: Vec<u16> = map
        .keys()
        .filter_map(|k| Some(u16::from_ne_bytes(<[u8; 2]>::try_from(k.as_slice()).ok()?)))
        .collect();
    for p in ports.iter().filter(|p| !have.contains(p)) {
        map.update(&p.to_ne_bytes(), &[1], MapFlags::ANY)
            .map_err(|e| std::io::Error::other(format!("sock_ops server_ports update: {e}")))?;
    }
    for p in have.iter().filter(|p| !ports.contains(p)) {
        map.delete(&p.to_ne_bytes())
            .map_err(|e| std::io::Error::other(format!("sock_ops server_ports delete: {e}")))?;
    }
    Ok(())
}

/// Reopens the pinned sock_ops server role (upgraded to this build's
/// program) if it stamps `id`, or loads, attaches and pins a new one.
fn open_ops(
    cfg: &BackendConfig,
    pin_dir: &Path,
    id: ServerId,
    ports: &[u16],
) -> Result<(ServerIdOps, SockopsLink)> {
    let dir = ops_dir(pin_dir);
    let link_pin = dir.join(LINK_PIN);
    if dir.join("meta").exists() && link_pin.exists() {
        let mut ops = ServerIdOps::open_pinned(&dir)?;
        let link = SockopsLink::from_pinned(&link_pin)?;
        if ops.config().role == Role::Server(id) {
            ops.upgrade(&link)?;
            sync_ports(&ops, ports)?;
            info!(pin_dir = %dir.display(), server_id = %id, ?ports, "reopened the pinned sock_ops server role and swapped in this build's program: SYN-ACKs kept their server_id");
            return Ok((ops, link));
        }
        warn!(pinned = ?ops.config().role, server_id = %id, "the pinned sock_ops program stamps another server_id: replacing it");
        drop((ops, link));
        ServerIdOps::unpin(&dir)?;
    } else if dir.exists() {
        ServerIdOps::unpin(&dir)?;
    }
    let ops = ServerIdOps::load(ServerIdOpsConfig::server(id).ports(ports))?;
    ops.pin(&dir)?;
    let mut link = match ops.attach(cfg.backend.cgroup.as_path()) {
        Ok(l) => l,
        Err(e) => {
            let _ = ServerIdOps::unpin(&dir);
            return Err(e.into());
        }
    };
    link.pin(&link_pin)?;
    info!(cgroup = %cfg.backend.cgroup.display(), server_id = %id, ?ports, pin_dir = %dir.display(), "sock_ops server role loaded, pinned and attached");
    Ok((ops, link))
}

impl DataPath {
    /// Opens (or loads) `xdp_decap` under `pin_dir`.
    pub fn open(cfg: &BackendConfig, pin_dir: &Path) -> Result<DataPath> {
        let (decap, decap_link, reopened) = open_decap(cfg, pin_dir)?;
        Ok(DataPath {
            decap,
            decap_link,
            ops: None,
            reopened,
            pin_dir: pin_dir.to_path_buf(),
        })
    }

    /// Sets the sock_ops server role for `id` (`None`: no server_id; a
    /// pinned program is removed).
    pub fn set_server_id(
        &mut self,
        cfg: &BackendConfig,
        id: Option<ServerId>,
        ports: &[u16],
    ) -> Result<()> {
        match id {
            Some(id) => self.ops = Some(open_ops(cfg, &self.pin_dir, id, ports)?),
            None => {
                self.ops = None;
                let dir = ops_dir(&self.pin_dir);
                if dir.exists() {
                    ServerIdOps::unpin(&dir)?;
                    info!("server_id off: the pinned sock_ops program removed");
                }
            }
        }
        Ok(())
    }

    /// Applies a new VIP port set to the sock_ops filter.
    pub fn set_ports(&self, ports: &[u16]) -> Result<()> {
        match &self.ops {
            Some((ops, _)) => sync_ports(ops, ports),
            None => Ok(()),
        }
    }

    /// Removes every pin: the programs detach when this is dropped.
    pub fn remove(self) -> Result<()> {
        let dir = self.pin_dir.clone();
        drop(self);
        XdpDecap::unpin(decap_dir(&dir))?;
        ServerIdOps::unpin(ops_dir(&dir))?;
        if let Err(e) = std::fs::remove_dir(&dir) {
            warn!(pin_dir = %dir.display(), error = %e, "pin directory not removed");
        }
        Ok(())
    }
}
