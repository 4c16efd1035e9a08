//! The lab's network: namespaces, veth pairs, addresses and routes.
//!
//! ```text
//!                      ┌── lb1 (xdp_lb) ──┐  XDP_TX back to the router,
//!  client ── router ───┤   ECMP (L4 hash)  │  outer dst = backend tunnel addr
//!                      └── lb2 (xdp_lb) ──┘
//!             router ── be1 … be5  (xdp_decap + sock_ops server role, VIP on lo)
//!  replies: backend ── router ── client   (DSR, never through an LB)
//! ```

use std::net::Ipv4Addr;

use flowpin_testing::{disable_tx_checksum_offload, NetNs, TestingError, VethPair};

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
pub(crate) const LB_IF: &str = "eth0";
/// Name of a backend's interface facing the router (where `xdp_decap` runs).
pub(crate) const BE_IF: &str = "eth0";

/// All namespaces and links of the lab. Dropping it deletes everything.
pub(crate) struct Topology {
    /// Client hosts.
    pub(crate) client: NetNs,
    /// The router spreading VIP traffic over the LBs by ECMP.
    pub(crate) router: NetNs,
    /// Load balancer hosts.
    pub(crate) lbs: Vec<NetNs>,
    /// Backend hosts.
    pub(crate) backends: Vec<NetNs>,
    /// MAC address of the router's interface facing LB `i` (the LB's next hop).
    pub(crate) router_mac_to_lb: Vec<[u8; 6]>,
    /// MAC address of LB `i`'s interface.
    pub(crate) lb_mac: Vec<[u8; 6]>,
    _links: Vec<VethPair>,
}

/// The MAC address of `dev` in `ns`, read from `ip -br link show`. Fails
/// (rather than guessing) if the output holds no well-formed address: a
/// wrong next-hop MAC would silently black-hole every encapsulated packet.
fn mac_of(ns: &NetNs, dev: &str) -> Result<[u8; 6], TestingError> {
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
    /// Builds the whole network (no BPF yet).
    pub(crate) fn build() -> Result<Self, TestingError> {
        Self::build_with(LBS)
    }

    /// The same network with `n_lbs` load balancers (the fleet runs 3).
    pub(crate) fn build_with(n_lbs: usize) -> Result<Self, TestingError> {
        let client = NetNs::new("cli")?;
        let router = NetNs::new("rtr")?;
        let mut links = Vec::new();
        let mut lbs = Vec::new();
        let mut backends = Vec::new();

        router.sysctl("net.ipv4.ip_forward", "1")?;
        router.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        router.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        router.sysctl("net.ipv4.conf.default.rp_filter", "0")?;

        links.push(VethPair::new(&client, "eth0", &router, "r-cli")?);
        client.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"])?;
        // veth offloads checksums (CHECKSUM_PARTIAL); a packet that crosses
        // native XDP on the LB loses that state, so the client computes its
        // TCP checksums in software, as a real NIC would have on the wire.
        client.run(|| disable_tx_checksum_offload("eth0"))??;
        client.ip(&["route", "add", "default", "via", "10.0.1.1"])?;
        router.ip(&["addr", "add", "10.0.1.1/24", "dev", "r-cli"])?;

        let mut router_mac_to_lb = Vec::new();
        let mut lb_mac = Vec::new();
        for i in 0..n_lbs {
            let lb = NetNs::new(&format!("lb{}", i + 1))?;
            let rif = format!("r-lb{}", i + 1);
            links.push(VethPair::new(&router, &rif, &lb, LB_IF)?);
            router.ip(&[
                "addr",
                "add",
                &format!("{}/24", router_lb_addr(i)),
                "dev",
                &rif,
            ])?;
            lb.ip(&["addr", "add", &format!("{}/24", lb_addr(i)), "dev", LB_IF])?;
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
            links.push(VethPair::new(&router, &rif, &be, BE_IF)?);
            router.ip(&["addr", "add", &format!("10.2.{}.1/24", j + 1), "dev", &rif])?;
            be.ip(&[
                "addr",
                "add",
                &format!("{}/24", backend_addr(j)),
                "dev",
                BE_IF,
            ])?;
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
        let topo = Topology {
            client,
            router,
            lbs,
            backends,
            router_mac_to_lb,
            lb_mac,
            _links: links,
        };
        topo.set_ecmp(&vec![true; n_lbs])?;
        Ok(topo)
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
