//! Deployment traps that lose packets silently, checked at start-up: each
//! finding is logged with what to do and exported as a metric.
//!
//! Link facts come from `ip -json` (iproute2, run inside the interface's
//! namespace): a veth's peer ifindex (`link_index`), whether it lives in
//! another namespace (`link_netnsid`), and the `xdp` object of an
//! interface with a program attached.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use flowpin_bpf_progs::netdev::tx_checksum_offload;
use flowpin_bpf_progs::netns;
use serde_json::Value;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trap {
    /// Short name (metric label).
    pub(crate) check: &'static str,
    /// What is wrong and what to do.
    pub(crate) message: String,
}

fn ip_json(ns: Option<&Path>, args: &[&str]) -> Option<Value> {
    let run = || {
        Command::new("ip")
            .arg("-json")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
    };
    match ns {
        Some(p) => netns::run_in(p, run).ok().flatten(),
        None => run(),
    }
}

fn links(ns: Option<&Path>) -> Vec<Value> {
    ip_json(ns, &["-details", "link", "show"])
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn find_link(links: &[Value], pred: impl Fn(&Value) -> bool) -> Option<&Value> {
    links.iter().find(|l| pred(l))
}

fn is_veth(l: &Value) -> bool {
    l.pointer("/linkinfo/info_kind").and_then(Value::as_str) == Some("veth")
}

fn has_xdp(l: &Value) -> bool {
    l.get("xdp").is_some()
}

fn name_of(l: &Value) -> String {
    l.get("ifname")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string()
}

/// The peer of a veth: its link object and its namespace (`None`: ours).
/// Searches our namespace, then every `/run/netns/*`.
fn veth_peer(ns: Option<&Path>, me: &Value) -> Option<(Value, Option<PathBuf>)> {
    let my_index = me.get("ifindex")?.as_u64()?;
    let peer_index = me.get("link_index")?.as_u64()?;
    let other_ns = me.get("link_netnsid").is_some();
    let matches = |l: &Value| {
        l.get("ifindex").and_then(Value::as_u64) == Some(peer_index)
            && l.get("link_index").and_then(Value::as_u64) == Some(my_index)
            && is_veth(l)
    };
    if !other_ns {
        let here = links(ns);
        return find_link(&here, matches).map(|l| (l.clone(), ns.map(Path::to_path_buf)));
    }
    let dir = std::fs::read_dir("/run/netns").ok()?;
    for e in dir.flatten() {
        let p = e.path();
        if Some(p.as_path()) == ns {
            continue;
        }
        let ls = links(Some(&p));
        if let Some(l) = find_link(&ls, matches) {
            return Some((l.clone(), Some(p)));
        }
    }
    None
}

/// LB checks on the interface `xdp_lb` runs on, attached in `native` mode or not.
pub(crate) fn check_lb(
    ns: Option<&Path>,
    ifname: &str,
    native: bool,
    local_mac: [u8; 6],
) -> Vec<Trap> {
    let mut out = Vec::new();
    let all = links(ns);
    let Some(me) = find_link(&all, |l| {
        l.get("ifname").and_then(Value::as_str) == Some(ifname)
    }) else {
        out.push(Trap {
            check: "interface_unknown",
            message: format!("cannot read interface {ifname} with `ip -json link` (is iproute2 installed?): deployment checks skipped"),
        });
        return out;
    };
    let mac = format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        local_mac[0], local_mac[1], local_mac[2], local_mac[3], local_mac[4], local_mac[5]
    );
    if me.get("address").and_then(Value::as_str) != Some(mac.as_str()) {
        out.push(Trap {
            check: "local_mac_mismatch",
            message: format!(
                "lb.local_mac {mac} is not {ifname}'s address {:?}: encapsulated frames leave with a wrong source MAC; set lb.local_mac to the interface's address",
                me.get("address").and_then(Value::as_str).unwrap_or("?")
            ),
        });
    }
    if !is_veth(me) {
        return out;
    }
    match veth_peer(ns, me) {
        None => out.push(Trap {
            check: "veth_peer_unknown",
            message: format!(
                "{ifname} is a veth whose peer is in a namespace not under /run/netns: cannot check that it has an XDP program; without one, native XDP_TX drops every packet (only the peer's RX / our TX drop counters show it)"
            ),
        }),
        Some((peer, peer_ns)) => {
            let pname = name_of(&peer);
            if native && !has_xdp(&peer) {
                out.push(Trap {
                    check: "veth_peer_without_xdp",
                    message: format!(
                        "{ifname} runs xdp_lb in native mode but its veth peer {pname} has no XDP program: every XDP_TX frame is dropped (only {ifname}'s TX drop counter shows it). Attach an XDP program to {pname} (e.g. flowpin's xdp_pass: `ip link set dev {pname} xdp obj ...`), or run with lb.xdp_mode = \"generic\""
                    ),
                });
            }
            let offload = match &peer_ns {
                Some(p) => netns::run_in(p, || tx_checksum_offload(&pname))
                    .ok()
                    .and_then(Result::ok),
                None => tx_checksum_offload(&pname).ok(),
            };
            if native && offload == Some(true) {
                out.push(Trap {
                    check: "sender_tx_checksum_offload",
                    message: format!(
                        "the veth peer {pname} has TX checksum offload on: packets sent by a process on that host reach native XDP with the checksum left to \"hardware\", and after XDP_TX the backend drops them. If senders live on that host, run `ethtool -K {pname} tx off` (flowpin_bpf_progs::netdev::disable_tx_checksum_offload)"
                    ),
                });
            }
        }
    }
    out
}

/// Backend checks: `xdp_decap` is the program on the ingress interface,
/// the tunnel address is on it, every VIP address is local.
pub(crate) fn check_backend(
    ns: Option<&Path>,
    ifname: &str,
    tunnel_addr: IpAddr,
    vips: &[IpAddr],
) -> Vec<Trap> {
    let mut out = Vec::new();
    let all = links(ns);
    match find_link(&all, |l| l.get("ifname").and_then(Value::as_str) == Some(ifname)) {
        None => out.push(Trap {
            check: "interface_unknown",
            message: format!("cannot read interface {ifname} with `ip -json link`: deployment checks skipped"),
        }),
        Some(me) if !has_xdp(me) => out.push(Trap {
            check: "backend_without_xdp_decap",
            message: format!(
                "{ifname} has no XDP program: encapsulated packets from the LBs are not decapsulated and reach no socket. Check backend.interface names the ingress interface"
            ),
        }),
        Some(_) => {}
    }
    let addrs: Vec<String> = ip_json(ns, &["addr", "show"])
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .flat_map(|l| {
            l.get("addr_info")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|a| a.get("local").and_then(Value::as_str).map(str::to_string))
        .collect();
    let local = |a: &IpAddr| addrs.iter().any(|s| s.parse::<IpAddr>().ok() == Some(*a));
    if !local(&tunnel_addr) {
        out.push(Trap {
            check: "tunnel_address_not_local",
            message: format!(
                "backend.address {tunnel_addr} is not an address of this host: LBs send the tunnel there and xdp_decap only opens packets addressed to it. Add it (`ip addr add {tunnel_addr}/32 dev {ifname}`) or fix backend.address"
            ),
        });
    }
    for v in vips {
        if !local(v) {
            out.push(Trap {
                check: "vip_not_local",
                message: format!(
                    "VIP {v} is not an address of this host: decapsulated packets to it are dropped by the stack. Add it on lo (`ip addr add {v}/32 dev lo`)"
                ),
            });
        }
    }
    out
}
