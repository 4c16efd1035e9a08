//! What the pins fix, compared with the config at start, and what a SIGHUP
//! changes.
//!
//! A reopened data path keeps the sizes it was loaded with (`ring_size`,
//! the connection table's memory and sharing) and the attachment it was
//! made with (interface, namespace, XDP mode). At start every one of them is
//! compared with the config: the attachment is **applied** (the pinned
//! program is detached and attached again as the config says; the maps,
//! connection table included, stay, so established flows keep their
//! backend), a size is **refused** with the field, both values and the
//! command that resolves it (a new size needs new maps: keep the pinned
//! value, or remove the pins and start afresh). Nothing is changed when
//! anything is refused.

use std::path::Path;

use flowpin_bpf_progs::link::Link;
use flowpin_bpf_progs::xdp_lb::XdpLbConfig;
use flowpin_bpf_progs::xdp_lb::{XdpLb, XdpLink, XdpMode, CONN_SET_BYTES, DEFAULT_RING_SIZE};
use tracing::{info, warn};

use crate::config::{LbConfig, XdpModeConfig};
use crate::traps::rtnl::Rtnl;

/// Why `flowpin-node lb` did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Config fields the pinned data path cannot take.
    #[error("the config differs from the pinned data path in fields that need new maps; nothing was changed:\n{}", .0.join("\n"))]
    Refused(Vec<String>),
    /// A resource the node needs is missing or taken (checked before the
    /// data path is attached).
    #[error("{what}: {why}")]
    Preflight {
        /// The resource (`metrics.listen 127.0.0.1:9100`).
        what: String,
        /// What is wrong and what to do.
        why: String,
    },
    /// Another node holds the pin directory.
    #[error(transparent)]
    Lock(#[from] crate::pin_lock::PinLockError),
}

/// The attachment the config asks for differs from the pinned link's.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// Fields applied by attaching again (`lb.xdp_mode`, `lb.interface/lb.netns`).
    pub(super) reattach: Vec<String>,
}

fn possible_cpus() -> Option<u32> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible").ok()?;
    let mut n = 0;
    for part in s.trim().split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<u32>().ok()? - a.parse::<u32>().ok()? + 1,
            None => 1,
        };
    }
    Some(n)
}

/// The size fields: refusals (empty: the pins match the config).
pub(super) fn refused_sizes(cfg: &LbConfig, lb: &XdpLb) -> Vec<String> {
    let pinned = lb.config();
    let dir = cfg.lb.pin_dir.display();
    let fresh = format!(
        "or replace the data path: stop this node, `rm -r {dir}` and start it again (the new maps start empty: flows through this LB are hashed afresh and established connections may move)"
    );
    let mut out = Vec::new();
    let want_ring = cfg.lb.ring_size.unwrap_or(DEFAULT_RING_SIZE);
    if want_ring != pinned.ring_size {
        out.push(format!(
            "lb.ring_size: config {want_ring}, pinned data path {}: set lb.ring_size = {} to keep it, {fresh}",
            pinned.ring_size, pinned.ring_size
        ));
    }
    let sets = lb.conn_sets_per_cpu();
    let tables = (pinned.lru_memory_bytes / (CONN_SET_BYTES * u64::from(sets.max(1)))).max(1);
    let ncpus = possible_cpus().unwrap_or(tables as u32);
    let want_tables = if cfg.lb.conn_table_shared {
        1
    } else {
        u64::from(ncpus)
    };
    if want_tables != tables {
        out.push(format!(
            "lb.conn_table_shared: config {}, pinned data path {} ({tables} table(s)): set lb.conn_table_shared = {} to keep it, {fresh}",
            cfg.lb.conn_table_shared,
            tables == 1 && ncpus != 1,
            tables == 1 && ncpus != 1
        ));
    } else {
        let want_mib = cfg.lb.lru_memory_mib.unwrap_or(16);
        let want_sets = XdpLbConfig::default()
            .lru_memory_bytes(want_mib << 20)
            .conn_sets_per_cpu(tables as u32);
        if want_sets != sets {
            let pinned_mib = pinned.lru_memory_bytes as f64 / f64::from(1u32 << 20);
            out.push(format!(
                "lb.lru_memory_mib: config {want_mib} MiB, pinned data path {pinned_mib} MiB ({sets} sets per table): set lb.lru_memory_mib = {pinned_mib} to keep it, {fresh}"
            ));
        }
    }
    out
}

fn mode_matches(want: XdpModeConfig, have: XdpMode) -> bool {
    match want {
        XdpModeConfig::Auto => true,
        XdpModeConfig::Native => have == XdpMode::Native,
        XdpModeConfig::Generic => have == XdpMode::Generic,
    }
}

/// What differs between the pinned link and the configured attachment.
/// `rtnl` is a socket in the configured namespace.
pub(super) fn plan(cfg: &LbConfig, link: &XdpLink, rtnl: &mut Rtnl) -> Plan {
    let mut plan = Plan::default();
    let here = cfg
        .lb
        .netns
        .as_deref()
        .map_or("the node's namespace".into(), |p: &Path| {
            p.display().to_string()
        });
    // The link's interface is the configured one when the configured
    // interface has that ifindex and carries an XDP program in the
    // configured namespace (an ifindex alone may repeat across namespaces).
    match rtnl.link_by_name(&cfg.lb.interface) {
        Ok(Some(me)) if me.index == link.ifindex() && me.xdp => {}
        other => {
            let now = match other {
                Ok(Some(me)) => format!(
                    "ifindex {}, {}",
                    me.index,
                    if me.xdp {
                        "XDP attached"
                    } else {
                        "no XDP program"
                    }
                ),
                Ok(None) => "absent".into(),
                Err(e) => format!("unreadable: {e}"),
            };
            plan.reattach.push(format!(
                "lb.interface/lb.netns: the pinned link is on ifindex {}, the config's {} in {here} is {now}",
                link.ifindex(),
                cfg.lb.interface
            ));
            return plan;
        }
    }
    if !mode_matches(cfg.lb.xdp_mode, link.mode()) {
        plan.reattach.push(
            format!(
                "lb.xdp_mode: config {:?}, pinned link {}",
                cfg.lb.xdp_mode,
                link.mode()
            )
            .to_lowercase(),
        );
    }
    plan
}

/// Applies `plan`: detaches the pinned link and attaches the pinned program
/// as the config says, pinned at `link_pin`. Packets that arrive in the
/// microseconds between the two reach the stack unbalanced; the maps (and
/// so established flows) are untouched.
pub(super) fn reattach(
    cfg: &LbConfig,
    lb: &XdpLb,
    mut link: XdpLink,
    link_pin: &Path,
    plan: &Plan,
) -> crate::lb::Result<XdpLink> {
    for f in &plan.reattach {
        warn!(change = %f, "the config differs from the pinned attachment: attaching again as configured (maps and connection table kept)");
    }
    link.unpin()?;
    link.detach()?;
    drop(link);
    let mut new = lb.attach(super::target(cfg))?;
    new.pin(link_pin)?;
    info!(mode = %new.mode(), interface = %cfg.lb.interface, applied = ?plan.reattach, "xdp_lb attached again as configured");
    Ok(new)
}

/// What a SIGHUP did with each changed field.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SighupReport {
    /// Applied now.
    pub applied: Vec<&'static str>,
    /// Applied at the next start (re-attach).
    pub on_restart: Vec<&'static str>,
    /// Refused at the next start while the pins exist (new maps needed).
    pub needs_new_pins: Vec<&'static str>,
}

/// Sorts every field that differs between `old` and `new`.
pub fn sighup_report(old: &LbConfig, new: &LbConfig) -> SighupReport {
    let (a, b) = (&old.lb, &new.lb);
    let mut r = SighupReport::default();
    let mut field = |changed: bool, name: &'static str, bucket: u8| {
        if changed {
            match bucket {
                0 => r.applied.push(name),
                1 => r.on_restart.push(name),
                _ => r.needs_new_pins.push(name),
            }
        }
    };
    field(a.local_mac != b.local_mac, "lb.local_mac", 0);
    field(a.next_hop_mac != b.next_hop_mac, "lb.next_hop_mac", 0);
    field(a.tunnel_src_v4 != b.tunnel_src_v4, "lb.tunnel_src_v4", 0);
    field(a.on_exit != b.on_exit, "lb.on_exit", 0);
    field(old.registry != new.registry, "registry", 0);
    field(a.interface != b.interface, "lb.interface", 1);
    field(a.netns != b.netns, "lb.netns", 1);
    field(a.xdp_mode != b.xdp_mode, "lb.xdp_mode", 1);
    field(a.peer_netns != b.peer_netns, "lb.peer_netns", 1);
    field(a.pin_dir != b.pin_dir, "lb.pin_dir", 1);
    field(old.metrics != new.metrics, "metrics", 1);
    field(a.ring_size != b.ring_size, "lb.ring_size", 2);
    field(
        a.conn_table_shared != b.conn_table_shared,
        "lb.conn_table_shared",
        2,
    );
    field(a.lru_memory_mib != b.lru_memory_mib, "lb.lru_memory_mib", 2);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[registry]
endpoints = ["http://127.0.0.1:2379"]
prefix = "/flowpin/t"
[lb]
interface = "eth0"
pin_dir = "/sys/fs/bpf/flowpin/t"
local_mac = "02:00:00:00:00:01"
next_hop_mac = "02:00:00:00:00:02"
[metrics]
listen = "127.0.0.1:0"
"#;

    fn with(extra: &str) -> LbConfig {
        let text = BASE.replace("[metrics]", &format!("{extra}\n[metrics]"));
        LbConfig::from_toml(Path::new("t.toml"), &text).expect("config")
    }

    #[test]
    fn sighup_sorts_every_changed_field() {
        let a = with("");
        assert_eq!(sighup_report(&a, &a), SighupReport::default());
        let b = with("xdp_mode = \"generic\"\nring_size = 1009\ntunnel_src_v4 = \"10.9.0.0/16\"\non_exit = \"remove\"");
        let r = sighup_report(&a, &b);
        assert_eq!(r.applied, ["lb.tunnel_src_v4", "lb.on_exit"]);
        assert_eq!(r.on_restart, ["lb.xdp_mode"]);
        assert_eq!(r.needs_new_pins, ["lb.ring_size"]);
    }

    #[test]
    fn metrics_listen_defaults_to_loopback() {
        let text = BASE.replace("[metrics]\nlisten = \"127.0.0.1:0\"\n", "");
        let c = LbConfig::from_toml(Path::new("t.toml"), &text).expect("config");
        assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:9100");
        let text = BASE.replace("listen = \"127.0.0.1:0\"\n", "");
        let c = LbConfig::from_toml(Path::new("t.toml"), &text).expect("config");
        assert!(c.metrics.listen.ip().is_loopback());
    }

    #[test]
    fn cpu_list_parses() {
        assert!(possible_cpus().is_some_and(|n| n >= 1));
    }
}
