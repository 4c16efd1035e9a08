//! The lab's network: namespaces, veth pairs, addresses and routes — one
//! builder for both halves of the lab (the classic scenarios with 2 LBs,
//! the fleet with 3 and etcd in a namespace of its own).
//!
//! ```text
//!                      ┌── lb1 (xdp_lb) ──┐  XDP_TX back to the router,
//!  client ── router ───┤   ECMP (L4 hash)  │  outer dst = backend tunnel addr
//!                      └── lb2 (xdp_lb) ──┘
//!             router ── be1 … be5  (xdp_decap + sock_ops server role, VIP on lo)
//!  replies: backend ── router ── client   (DSR, never through an LB)
//!  fleet:   root namespace (node processes) ── etcd   (a private /30)
//! ```

use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::process::{Command, Output};

use flowpin_bpf_progs::link::Link;
use flowpin_bpf_progs::xdp_attach::XdpLink;
use flowpin_bpf_progs::xdp_pass::XdpPass;
use flowpin_testing::{disable_tx_checksum_offload, run_cmd, unique_name, NetNs, TestingError};

use crate::Error;

/// The virtual IP clients connect to.
pub(crate) const VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
/// The service port on the VIP.
pub(crate) const VIP_PORT: u16 = 8080;
/// The client's address.
pub(crate) const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
/// Number of load balancers.
pub(crate) const LBS: usize = 2;
/// Number of backend hosts (the last one starts outside the ring).
pub(crate) const BACKENDS: usize = 5;

/// Address of LB `i` (0-based) on its link to the router.
pub(crate) fn lb_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, i as u8 + 1, 2)
}

/// Router address on the link to LB `i`.
pub(crate) fn router_lb_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, i as u8 + 1, 1)
}

/// Tunnel address of backend `j` (0-based): where LBs send encapsulated packets.
pub(crate) fn backend_addr(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 2, j as u8 + 1, 2)
}

/// The server_id of backend `j`.
pub(crate) fn server_id(j: usize) -> u32 {
    1000 + j as u32 + 1
}

/// Name of LB `i`'s interface facing the router (where `xdp_lb` runs).
/// The backends' HTTP health endpoint (on the VIP), probed by the fleet's health checks.
pub(crate) const HEALTH_PORT: u16 = VIP_PORT + 1;
pub(crate) const LB_IF: &str = "eth0";
/// Name of a backend's interface facing the router (where `xdp_decap` runs).
pub(crate) const BE_IF: &str = "eth0";

/// Where one end of a veth pair lives: the lab's own (root) namespace, or
/// one the lab made.
#[derive(Clone, Copy)]
enum Side<'a> {
    Root,
    Ns(&'a NetNs),
}

impl Side<'_> {
    fn ip(self, args: &[&str]) -> Result<Output, TestingError> {
        match self {
            Side::Root => run_cmd("ip", args),
            Side::Ns(ns) => ns.ip(args),
        }
    }
}

/// A veth pair `a` ↔ `b`, both ends up with their addresses (`addr/len`).
/// Dropping it deletes `a` (and with it `b`); a namespace deleted first
/// took both with it already.
struct Veth {
    a_ns: Option<String>,
    a: String,
}

impl Veth {
    fn new(
        (side_a, a, addr_a): (Side<'_>, &str, &str),
        (ns_b, b, addr_b): (&NetNs, &str, &str),
    ) -> Result<Veth, TestingError> {
        side_a.ip(&[
            "link",
            "add",
            a,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "netns",
            ns_b.name(),
        ])?;
        let veth = Veth {
            a_ns: match side_a {
                Side::Root => None,
                Side::Ns(ns) => Some(ns.name().to_string()),
            },
            a: a.to_string(),
        };
        side_a.ip(&["addr", "add", addr_a, "dev", a])?;
        ns_b.ip(&["addr", "add", addr_b, "dev", b])?;
        side_a.ip(&["link", "set", a, "up"])?;
        ns_b.ip(&["link", "set", b, "up"])?;
        Ok(veth)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let mut cmd = Command::new("ip");
        if let Some(ns) = &self.a_ns {
            cmd.args(["-n", ns]);
        }
        let _ = cmd.args(["link", "del", &self.a]).output();
    }
}

/// etcd's own network namespace (the fleet), joined to the root namespace,
/// where the node processes run, by a veth pair on a private /30 used
/// nowhere else in the lab: the node processes reach etcd over it only.
pub(crate) struct EtcdNs {
    pub(crate) ns: NetNs,
    /// etcd's address, inside the namespace.
    pub(crate) addr: Ipv4Addr,
}

/// The /30 of this run, in 10.255.0.0/16 (which the lab uses nowhere else),
/// picked by pid so two labs running at once do not share it: `(root end,
/// etcd end)`.
fn private_30() -> (Ipv4Addr, Ipv4Addr) {
    let subnet = std::process::id() % (1 << 14);
    let base = u32::from(Ipv4Addr::new(10, 255, 0, 0)) | (subnet << 2);
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

/// All namespaces and links of the lab, with `xdp_pass` on the router's
/// ends facing the LBs. Dropping it deletes everything: the XDP links
/// first, then the namespaces (their veth ends with them), then what is
/// left of the veth pairs.
pub(crate) struct Topology {
    _pass_links: Vec<XdpLink>,
    _pass: XdpPass,
    /// Client hosts.
    pub(crate) client: NetNs,
    /// The router spreading VIP traffic over the LBs by ECMP.
    pub(crate) router: NetNs,
    /// Load balancer hosts.
    pub(crate) lbs: Vec<NetNs>,
    /// Backend hosts.
    pub(crate) backends: Vec<NetNs>,
    /// etcd's namespace (the fleet only).
    pub(crate) etcd: Option<EtcdNs>,
    /// MAC address of the router's interface facing LB `i` (the LB's next hop).
    pub(crate) router_mac_to_lb: Vec<[u8; 6]>,
    /// MAC address of LB `i`'s interface.
    pub(crate) lb_mac: Vec<[u8; 6]>,
    _links: Vec<Veth>,
}

/// `aa:bb:cc:dd:ee:ff`.
pub(crate) fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The MAC address of `dev` in `ns`, read from `ip -br link show`. Fails
/// (rather than guessing) if the output holds no well-formed address: a
/// wrong next-hop MAC would silently black-hole every encapsulated packet.
pub(crate) fn mac_of(ns: &NetNs, dev: &str) -> Result<[u8; 6], TestingError> {
    let out = ns.ip(&["-br", "link", "show", "dev", dev])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let parse = |w: &str| -> Option<[u8; 6]> {
        let mut b = [0u8; 6];
        let mut parts = w.split(':');
        for byte in &mut b {
            *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
        }
        parts.next().is_none().then_some(b)
    };
    text.split_whitespace()
        .filter(|w| w.len() == 17)
        .find_map(parse)
        .ok_or_else(|| TestingError::Command {
            cmd: format!("ip -n {} -br link show dev {dev}", ns.name()),
            status: "no MAC address in the output".into(),
            stderr: text.trim().to_string(),
        })
}

impl Topology {
    /// Builds the whole network with `n_lbs` load balancers (the classic
    /// scenarios and `quic_lab` run [`LBS`], the fleet 3) and, with `etcd`,
    /// etcd's namespace. The router's veth ends facing the LBs get
    /// `xdp_pass` (native `XDP_TX` on veth needs a program on the peer). No
    /// LB and no backend program yet.
    pub(crate) fn build(n_lbs: usize, etcd: bool) -> Result<Self, Error> {
        let client = NetNs::new("cli")?;
        let router = NetNs::new("rtr")?;
        let mut links = Vec::new();
        let mut lbs = Vec::new();
        let mut backends = Vec::new();

        router.sysctl("net.ipv4.ip_forward", "1")?;
        router.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        router.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        router.sysctl("net.ipv4.conf.default.rp_filter", "0")?;

        links.push(Veth::new(
            (Side::Ns(&router), "r-cli", "10.0.1.1/24"),
            (&client, "eth0", &format!("{CLIENT}/24")),
        )?);
        // veth offloads checksums (CHECKSUM_PARTIAL); a packet that crosses
        // native XDP on the LB loses that state, so the client computes its
        // TCP checksums in software, as a real NIC would have on the wire.
        client.run(|| disable_tx_checksum_offload("eth0"))??;
        client.ip(&["route", "add", "default", "via", "10.0.1.1"])?;

        let mut router_mac_to_lb = Vec::new();
        let mut lb_mac = Vec::new();
        for i in 0..n_lbs {
            let lb = NetNs::new(&format!("lb{}", i + 1))?;
            let rif = format!("r-lb{}", i + 1);
            links.push(Veth::new(
                (
                    Side::Ns(&router),
                    &rif,
                    &format!("{}/24", router_lb_addr(i)),
                ),
                (&lb, LB_IF, &format!("{}/24", lb_addr(i))),
            )?);
            lb.ip(&[
                "route",
                "add",
                "default",
                "via",
                &router_lb_addr(i).to_string(),
            ])?;
            router.sysctl(&format!("net.ipv4.conf.{rif}.rp_filter"), "0")?;
            router_mac_to_lb.push(mac_of(&router, &rif)?);
            lb_mac.push(mac_of(&lb, LB_IF)?);
            lbs.push(lb);
        }
        for j in 0..BACKENDS {
            let be = NetNs::new(&format!("be{}", j + 1))?;
            let rif = format!("r-be{}", j + 1);
            links.push(Veth::new(
                (Side::Ns(&router), &rif, &format!("10.2.{}.1/24", j + 1)),
                (&be, BE_IF, &format!("{}/24", backend_addr(j))),
            )?);
            be.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            be.ip(&[
                "route",
                "add",
                "default",
                "via",
                &format!("10.2.{}.1", j + 1),
            ])?;
            be.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            be.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
            be.sysctl(&format!("net.ipv4.conf.{BE_IF}.rp_filter"), "0")?;
            router.sysctl(&format!("net.ipv4.conf.{rif}.rp_filter"), "0")?;
            backends.push(be);
        }
        let etcd = if etcd {
            let ns = NetNs::new("etcd")?;
            let (root_addr, addr) = private_30();
            links.push(Veth::new(
                (Side::Root, &unique_name("etcd"), &format!("{root_addr}/30")),
                (&ns, "eth0", &format!("{addr}/30")),
            )?);
            Some(EtcdNs { ns, addr })
        } else {
            None
        };

        let pass = XdpPass::load(Default::default())?;
        let mut pass_links = Vec::new();
        for i in 0..n_lbs {
            let name = format!("r-lb{}", i + 1);
            let p = &pass;
            pass_links.push(router.run(move || p.attach(&name))??);
        }

        let topo = Topology {
            _pass_links: pass_links,
            _pass: pass,
            client,
            router,
            lbs,
            backends,
            etcd,
            router_mac_to_lb,
            lb_mac,
            _links: links,
        };
        topo.set_ecmp(&vec![true; n_lbs])?;
        Ok(topo)
    }

    /// Runs `prog` instead of `xdp_pass` on the router's veth ends facing
    /// the LBs (where the LBs' `XDP_TX` output lands); `None` puts
    /// `xdp_pass` back. The flood scenarios' loop ([`crate::flood`]).
    pub(crate) fn set_router_lb_program(&self, prog: Option<BorrowedFd<'_>>) -> Result<(), Error> {
        let prog = prog.unwrap_or_else(|| self._pass.program_fd());
        for l in &self._pass_links {
            l.update_program(prog)?;
        }
        Ok(())
    }

    /// Every namespace of the network, for the lab's check that none is
    /// left behind.
    pub(crate) fn netns_paths(&self) -> Vec<PathBuf> {
        [&self.client, &self.router]
            .into_iter()
            .chain(&self.lbs)
            .chain(&self.backends)
            .chain(self.etcd.as_ref().map(|e| &e.ns))
            .map(NetNs::path)
            .collect()
    }

    /// Many short TCP connections from the client: a wide ephemeral port
    /// range and TIME_WAIT reuse (both halves of the lab's TCP workloads).
    pub(crate) fn tune_client_for_tcp(&self) -> Result<(), TestingError> {
        self.client
            .sysctl("net.ipv4.ip_local_port_range", "10000 65000")?;
        self.client.sysctl("net.ipv4.tcp_tw_reuse", "1")
    }

    /// Points the router's VIP route at the LBs marked `true` (ECMP over
    /// several, L4 hash policy). Taking an LB out reshuffles its flows.
    pub(crate) fn set_ecmp(&self, up: &[bool]) -> Result<(), TestingError> {
        let mut args: Vec<String> = vec!["route".into(), "replace".into(), format!("{VIP}/32")];
        let active: Vec<usize> = (0..self.lbs.len())
            .filter(|&i| up.get(i).copied().unwrap_or(false))
            .collect();
        if active.len() == 1 {
            let i = active[0];
            args.extend([
                "via".into(),
                lb_addr(i).to_string(),
                "dev".into(),
                format!("r-lb{}", i + 1),
            ]);
        } else {
            for i in active {
                args.extend([
                    "nexthop".into(),
                    "via".into(),
                    lb_addr(i).to_string(),
                    "dev".into(),
                    format!("r-lb{}", i + 1),
                ]);
            }
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.router.ip(&refs)?;
        // Cached routes must not keep flows on the old path.
        self.router.ip(&["route", "flush", "cache"])?;
        Ok(())
    }
}
