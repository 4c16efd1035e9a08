//! The interface's TX drop counter, watched: native `XDP_TX` into a veth
//! whose peer cannot take it (no XDP program there) drops every frame, and
//! only the sender's `tx_dropped` shows it. Read through rtnetlink
//! (`IFLA_STATS64`) on a scrape and every [`PERIOD`]; a rise while
//! `xdp_lb` forwarded packets is logged.

use std::path::Path;
use std::time::Duration;

use tracing::warn;

use crate::traps::rtnl::Rtnl;

/// How often the counter is sampled for the log.
pub(super) const PERIOD: Duration = Duration::from_secs(5);

/// The counter of one interface and what was seen last.
#[derive(Debug)]
pub(super) struct TxDrops {
    rtnl: Rtnl,
    ifname: String,
    /// `tx_dropped` at the last sample.
    last_dropped: Option<u64>,
    /// Packets `xdp_lb` matched to a VIP, at the last sample.
    last_lb_packets: u64,
}

impl TxDrops {
    /// Watches `ifname` in `ns` (the node's configured namespace). `None`
    /// (logged) when rtnetlink cannot be opened there.
    pub(super) fn open(ns: Option<&Path>, ifname: &str) -> Option<TxDrops> {
        match Rtnl::open(ns) {
            Ok(rtnl) => Some(TxDrops {
                rtnl,
                ifname: ifname.to_string(),
                last_dropped: None,
                last_lb_packets: 0,
            }),
            Err(e) => {
                warn!(interface = ifname, error = %e, "cannot open rtnetlink: the interface's TX drops are not watched");
                None
            }
        }
    }

    /// The interface's name.
    pub(super) fn ifname(&self) -> &str {
        &self.ifname
    }

    /// `tx_dropped` now (`None`: the interface is gone or rtnetlink failed).
    pub(super) fn read(&mut self) -> Option<u64> {
        self.rtnl
            .link_by_name(&self.ifname)
            .ok()
            .flatten()
            .map(|l| l.tx_dropped)
    }

    /// One sample: logs when `tx_dropped` rose while `xdp_lb` forwarded
    /// packets (`lb_packets`: its VIP packet total). Returns the rise.
    pub(super) fn sample(&mut self, lb_packets: u64) -> u64 {
        let Some(now) = self.read() else { return 0 };
        let sent = lb_packets.saturating_sub(self.last_lb_packets);
        let rise = self.last_dropped.map_or(0, |l| now.saturating_sub(l));
        if rise > 0 && sent > 0 {
            warn!(
                interface = %self.ifname,
                tx_dropped = rise,
                lb_packets = sent,
                "{} dropped {rise} frames on transmit while xdp_lb handled {sent} packets: with native XDP on a veth, the peer needs an XDP program (see the deployment checks at start-up)",
                self.ifname
            );
        }
        self.last_dropped = Some(now);
        self.last_lb_packets = lb_packets;
        rise
    }
}
