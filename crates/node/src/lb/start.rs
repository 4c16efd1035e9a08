//! What `flowpin-node lb` checks before it attaches anything, and the
//! guard that keeps `on_exit = "remove"` on every way out.

use std::path::PathBuf;

use flowpin_bpf_progs::xdp_lb::XdpLb;
use tracing::{error, info, warn};

use super::{Result, StartError};
use crate::config::LbConfig;
use crate::traps::rtnl::Rtnl;
use crate::NodeError;

/// Everything `flowpin-node lb` needs besides the data path, checked before
/// it is attached: the namespace, the interface, bpffs for the pins, the
/// metrics listen socket (returned bound).
pub(super) fn preflight(cfg: &LbConfig) -> Result<std::net::TcpListener> {
    let fail =
        |what: String, why: String| -> NodeError { StartError::Preflight { what, why }.into() };
    if let Some(ns) = &cfg.lb.netns {
        if let Err(e) = std::fs::File::open(ns) {
            return Err(fail(
                format!("lb.netns {}", ns.display()),
                format!("{e}: create the namespace (`ip netns add NAME`) or fix lb.netns"),
            ));
        }
    }
    match Rtnl::open(cfg.lb.netns.as_deref()).and_then(|mut r| r.link_by_name(&cfg.lb.interface)) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(fail(
                format!("lb.interface {}", cfg.lb.interface),
                format!(
                    "no such interface in {} (`ip link` lists them): fix lb.interface or lb.netns",
                    cfg.lb
                        .netns
                        .as_deref()
                        .map_or("the node's namespace".into(), |p| p.display().to_string())
                ),
            ))
        }
        Err(e) => {
            warn!(error = %e, "rtnetlink unavailable: lb.interface not checked before attaching")
        }
    }
    if let Some(f) = &cfg.registry.file {
        if let Err(e) = crate::file_registry::FileSource::open(f) {
            return Err(fail(format!("registry.file {}", f.display()), e));
        }
    }
    let dir = &cfg.lb.pin_dir;
    let parent = dir.parent().unwrap_or(dir);
    if let Err(e) = std::fs::create_dir_all(parent) {
        return Err(fail(
            format!("lb.pin_dir {}", dir.display()),
            format!(
                "cannot create {}: {e} (is bpffs mounted at /sys/fs/bpf, are we root?)",
                parent.display()
            ),
        ));
    }
    if let Err(e) = nix::unistd::access(parent, nix::unistd::AccessFlags::W_OK) {
        return Err(fail(
            format!("lb.pin_dir {}", dir.display()),
            format!("{} is not writable: {e}", parent.display()),
        ));
    }
    let listen = cfg.metrics.listen;
    let listener = std::net::TcpListener::bind(listen).map_err(|e| {
        fail(
            format!("metrics.listen {listen}"),
            format!(
                "cannot listen: {e}. Another process may hold the port (`ss -ltnp 'sport = :{}'`): stop it or choose another metrics.listen; nothing was attached",
                listen.port()
            ),
        )
    })?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// `on_exit = "remove"` on every way out of [`run`] once the data path is
/// up (an error, a panic unwinding, a signal): unpins it, which detaches
/// `xdp_lb` once the process's own references are gone.
pub(super) struct RemoveOnExit {
    pub(super) dir: Option<PathBuf>,
}

impl Drop for RemoveOnExit {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            match XdpLb::unpin(&dir) {
                Ok(()) => {
                    info!(pin_dir = %dir.display(), "on_exit = remove: pins removed, xdp_lb detached")
                }
                Err(e) => {
                    error!(pin_dir = %dir.display(), error = %e, "on_exit = remove: pins not removed")
                }
            }
        }
    }
}
