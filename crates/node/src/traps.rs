//! Deployment traps that lose packets silently, checked at start-up: each
//! finding is logged with what to do and exported as a metric.
//!
//! The LB's link facts come from rtnetlink ([`rtnl`]): its veth peer is the
//! one the kernel names (`IFLA_LINK` + `IFLA_LINK_NETNSID`), read without
//! entering any namespace the node was not configured with. The backend's
//! come from `ip -json` run in the backend's own configured namespace.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use flowpin_bpf_progs::netdev::tx_checksum_offload;
use flowpin_bpf_progs::netns;
use serde_json::Value;

pub(crate) mod rtnl;
#[cfg(test)]
mod tests;

use rtnl::Rtnl;

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

fn has_xdp(l: &Value) -> bool {
    l.get("xdp").is_some()
}

/// Where the veth peer of the LB's interface is, as the kernel says.
fn peer_place(nsid: Option<i32>, ns: Option<&Path>) -> String {
    let ours = ns.map_or("the node's namespace".to_string(), |p| {
        p.display().to_string()
    });
    match nsid {
        None => format!("in the same namespace ({ours})"),
        Some(id) => format!("in the namespace with nsid {id} as seen from {ours}"),
    }
}

/// LB checks on the interface `xdp_lb` runs on (in `ns`, the node's
/// configured namespace), attached in `native` mode or not. The veth peer
/// is found through rtnetlink (`IFLA_LINK` + `IFLA_LINK_NETNSID`, then
/// `RTM_GETLINK` with `IFLA_TARGET_NETNSID`): never by looking into other
/// namespaces. Its TX checksum offload is read with the ethtool ioctl in
/// our namespace, or in `peer_netns` (`lb.peer_netns`) when the operator
/// names the peer's namespace and the kernel confirms it is that one.
pub(crate) fn check_lb(
    ns: Option<&Path>,
    ifname: &str,
    native: bool,
    local_mac: [u8; 6],
    peer_netns: Option<&Path>,
) -> Vec<Trap> {
    let mut out = Vec::new();
    let here = ns.map_or("the node's namespace".to_string(), |p| {
        p.display().to_string()
    });
    let unknown = |why: String| {
        Trap {
        check: "interface_unknown",
        message: format!("cannot read interface {ifname} in {here} through rtnetlink ({why}): deployment checks skipped"),
    }
    };
    let mut rtnl = match Rtnl::open(ns) {
        Ok(r) => r,
        Err(e) => return vec![unknown(e.to_string())],
    };
    let me = match rtnl.link_by_name(ifname) {
        Ok(Some(me)) => me,
        Ok(None) => return vec![unknown("no such interface".into())],
        Err(e) => return vec![unknown(e.to_string())],
    };
    let mac = mac_str(local_mac);
    if me.mac != Some(local_mac) {
        out.push(Trap {
            check: "local_mac_mismatch",
            message: format!(
                "lb.local_mac {mac} is not {ifname}'s address {}: encapsulated frames leave with a wrong source MAC; set lb.local_mac to the interface's address",
                me.mac.map_or("?".into(), mac_str)
            ),
        });
    }
    if !me.veth {
        return out;
    }
    let place = peer_place(me.link_netnsid, ns);
    let peer = match me.link {
        None => Err("the kernel reports no peer (IFLA_LINK)".to_string()),
        Some(idx) => match rtnl.link_by_index(idx, me.link_netnsid) {
            Ok(Some(p)) if p.veth && p.link == Some(me.index) => Ok(p),
            Ok(Some(p)) => Err(format!(
                "ifindex {idx} {place} is {}, not a veth pointing back at {ifname}",
                p.name
            )),
            Ok(None) => Err(format!("no ifindex {idx} {place}")),
            Err(e) => Err(format!("RTM_GETLINK of ifindex {idx} {place}: {e}")),
        },
    };
    let peer = match peer {
        Ok(p) => p,
        Err(why) => {
            out.push(Trap {
                check: "veth_peer_unknown",
                message: format!(
                    "{ifname} is a veth whose peer cannot be read ({why}): cannot check that it has an XDP program; without one, native XDP_TX drops every packet (only {ifname}'s TX drop counter shows it)"
                ),
            });
            return out;
        }
    };
    let pname = peer.name.as_str();
    if native && !peer.xdp {
        out.push(Trap {
            check: "veth_peer_without_xdp",
            message: format!(
                "{ifname} runs xdp_lb in native mode but its veth peer {pname} ({place}) has no XDP program: every XDP_TX frame is dropped (only {ifname}'s TX drop counter shows it). Attach an XDP program to {pname} (e.g. flowpin's xdp_pass), or run with lb.xdp_mode = \"generic\""
            ),
        });
    }
    if !native {
        return out;
    }
    let offload_in = |p: &Path| {
        netns::run_in(p, || tx_checksum_offload(pname))
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
    };
    let offload = match (me.link_netnsid, peer_netns) {
        (None, _) => match ns {
            Some(p) => offload_in(p),
            None => tx_checksum_offload(pname).map_err(|e| e.to_string()),
        },
        (Some(_), None) => Err(format!(
            "the peer is {place}; set lb.peer_netns to that namespace's file to check it"
        )),
        (Some(id), Some(pn)) => match rtnl.nsid_of(pn) {
            Ok(Some(got)) if got == id => offload_in(pn),
            Ok(got) => {
                out.push(Trap {
                    check: "peer_netns_mismatch",
                    message: format!(
                        "lb.peer_netns {} is not the namespace of {ifname}'s veth peer {pname} (that one is nsid {id}; lb.peer_netns is {}): fix lb.peer_netns or remove it",
                        pn.display(),
                        got.map_or("not known to this namespace".into(), |g| format!("nsid {g}"))
                    ),
                });
                return out;
            }
            Err(e) => Err(format!("RTM_GETNSID of {}: {e}", pn.display())),
        },
    };
    match offload {
        Ok(true) => out.push(Trap {
            check: "sender_tx_checksum_offload",
            message: format!(
                "the veth peer {pname} ({place}) has TX checksum offload on: packets sent by a process on that host reach native XDP with the checksum left to \"hardware\", and after XDP_TX the backend drops them. If senders live on that host, run `ethtool -K {pname} tx off` there (flowpin_bpf_progs::netdev::disable_tx_checksum_offload)"
            ),
        }),
        Ok(false) => {}
        Err(why) => out.push(Trap {
            check: "veth_peer_offload_unchecked",
            message: format!(
                "TX checksum offload of {ifname}'s veth peer {pname} not checked ({why}); if senders on that host have it on, their packets are dropped after XDP_TX"
            ),
        }),
    }
    out
}

fn mac_str(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
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
