//! The routed topology of the live load-balancer tests: a client and an LB
//! behind one router, backends behind the same router, the VIP routed to the
//! LB and present on every backend's `lo` (direct server return).
//!
//! ```text
//!  client c0 ──── rc router rl ──── l0 lb (xdp_lb)
//!  10.N.0.2/24   .0.1    .1.1        10.N.1.2/24
//!                  │ rb<j>: 10.N.(10+j).1/24
//!                  └──── b0 backend j: 10.N.(10+j).2/24, VIP/32 on lo
//! ```
//!
//! `N` is [`RoutedLbConfig::subnet`], one per test file, so tests of several
//! crates can run at the same time. The LB's and the router's link
//! addresses are fixed ([`RoutedLbConfig::lb_mac`],
//! [`RoutedLbConfig::router_mac`]) so `xdp_lb` can be configured with them
//! before anything is attached.

use std::net::Ipv4Addr;

use crate::{disable_tx_checksum_offload, NetNs, Result, VethPair};

/// Addresses and links of a [`RoutedLb`] network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutedLbConfig {
    /// Second octet of every subnet (`10.<subnet>.x.y`).
    pub subnet: u8,
    /// The VIP: routed by the router to the LB, and on every backend's `lo`.
    pub vip: Ipv4Addr,
    /// MAC of the LB's interface `l0` (`xdp_lb`'s local MAC).
    pub lb_mac: [u8; 6],
    /// MAC of the router's interface `rl` facing the LB (`xdp_lb`'s next hop).
    pub router_mac: [u8; 6],
}

impl RoutedLbConfig {
    /// The client's address, `10.<subnet>.0.2` on `c0`.
    pub const fn client_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, 0, 2)
    }

    /// Backend `j`'s address, `10.<subnet>.<10 + j>.2` on `b0` (`j` < 245).
    pub const fn backend_addr(&self, j: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, 10 + j as u8, 2)
    }
}

/// The namespaces and links of the routed topology (see the module docs).
/// Dropping it deletes them, and with them every XDP attachment on their
/// interfaces.
///
/// The router passes forwarded packets on; the caller attaches the XDP
/// programs: `xdp_lb` on the LB's `l0`, `xdp_decap` on each backend's `b0`
/// and an `XDP_PASS` program on the router's `rl` (native `XDP_TX` out of
/// `l0` needs a program on the veth peer).
#[derive(Debug)]
pub struct RoutedLb {
    _links: Vec<VethPair>,
    /// The client (`c0`).
    pub client: NetNs,
    /// The router (`rc`, `rl`, `rb<j>`), forwarding on.
    pub router: NetNs,
    /// The LB (`l0`).
    pub lb: NetNs,
    /// The backends (`b0` each).
    pub backends: Vec<NetNs>,
}

impl RoutedLb {
    /// Builds the network with `n_backends` backends; namespace names are
    /// built from `tag`.
    ///
    /// Reverse-path filtering is off everywhere (the router sees outer
    /// sources from the LB's tunnel prefix it has no route back to), the
    /// client's MTU is 1400 (room for the outer header on the router's
    /// 1500-byte links) and the router's `rl` computes TX checksums in
    /// software (see [`disable_tx_checksum_offload`]).
    pub fn new(tag: &str, cfg: &RoutedLbConfig, n_backends: usize) -> Result<Self> {
        let n = cfg.subnet;
        let client = NetNs::new(&format!("{tag}c"))?;
        let router = NetNs::new(&format!("{tag}r"))?;
        let lb = NetNs::new(&format!("{tag}l"))?;
        let backends = (0..n_backends)
            .map(|j| NetNs::new(&format!("{tag}b{j}")))
            .collect::<Result<Vec<_>>>()?;
        // Before any link exists, so every interface inherits it.
        for ns in [&client, &router, &lb].into_iter().chain(&backends) {
            for k in ["all", "default"] {
                ns.sysctl(&format!("net.ipv4.conf.{k}.rp_filter"), "0")?;
            }
        }
        router.sysctl("net.ipv4.ip_forward", "1")?;

        let mut links = vec![VethPair::new(&client, "c0", &router, "rc")?];
        let client_net = format!("{}/24", cfg.client_addr());
        client.ip(&["addr", "add", &client_net, "dev", "c0"])?;
        client.ip(&["link", "set", "c0", "mtu", "1400"])?;
        client.ip(&["route", "add", "default", "via", &format!("10.{n}.0.1")])?;
        router.ip(&["addr", "add", &format!("10.{n}.0.1/24"), "dev", "rc"])?;

        links.push(VethPair::new(&lb, "l0", &router, "rl")?);
        lb.set_mac("l0", cfg.lb_mac)?;
        router.set_mac("rl", cfg.router_mac)?;
        lb.ip(&["addr", "add", &format!("10.{n}.1.2/24"), "dev", "l0"])?;
        router.ip(&["addr", "add", &format!("10.{n}.1.1/24"), "dev", "rl"])?;
        let vip = format!("{}/32", cfg.vip);
        router.ip(&["route", "add", &vip, "via", &format!("10.{n}.1.2")])?;
        router.sysctl("net.ipv4.conf.rl.rp_filter", "0")?;
        router.run(|| disable_tx_checksum_offload("rl"))??;

        for (j, be) in backends.iter().enumerate() {
            let rif = format!("rb{j}");
            links.push(VethPair::new(be, "b0", &router, &rif)?);
            let be_net = format!("{}/24", cfg.backend_addr(j));
            be.ip(&["addr", "add", &be_net, "dev", "b0"])?;
            be.ip(&["addr", "add", &vip, "dev", "lo"])?;
            let gw = format!("10.{n}.{}.1", 10 + j);
            be.ip(&["route", "add", "default", "via", &gw])?;
            router.ip(&["addr", "add", &format!("{gw}/24"), "dev", &rif])?;
        }
        Ok(RoutedLb {
            _links: links,
            client,
            router,
            lb,
            backends,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_documented_plan() {
        let cfg = RoutedLbConfig {
            subnet: 110,
            vip: Ipv4Addr::new(10, 210, 0, 1),
            lb_mac: [2, 0, 0, 0, 1, 2],
            router_mac: [2, 0, 0, 0, 1, 1],
        };
        assert_eq!(cfg.client_addr(), Ipv4Addr::new(10, 110, 0, 2));
        assert_eq!(cfg.backend_addr(0), Ipv4Addr::new(10, 110, 10, 2));
        assert_eq!(cfg.backend_addr(3), Ipv4Addr::new(10, 110, 13, 2));
    }
}
