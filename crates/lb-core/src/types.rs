//! The vocabulary of the load balancer's control API: VIPs, their flags and
//! backends. [`Proto`], [`Vip`] and [`VipFlags`] are the suite's
//! (`flowpin_bpf_abi::vip`); [`Backend`] is the load balancer's.

use std::net::IpAddr;

pub use flowpin_bpf_abi::vip::{Proto, Vip, VipFlags};
use flowpin_tcp_opt::ServerId;

/// A backend of a VIP.
///
/// `Backend::new(addr).weight(3).server_id(id)`; whether it is routed by
/// server_id is an explicit choice: [`server_id`](Self::server_id) takes a
/// real (non-zero) [`ServerId`], [`without_server_id`](Self::without_server_id)
/// clears it. From an `Option<ServerId>`, set the field:
/// `Backend { server_id, ..Backend::new(addr) }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Tunnel destination (the backend host's address).
    pub addr: IpAddr,
    /// Maglev weight, `0..=`[`MAX_WEIGHT`](crate::MAX_WEIGHT) (0: no new
    /// flows, still reachable by server_id and the connection table; see
    /// [`weight`](crate::weight)).
    pub weight: u32,
    /// The host's server_id (routing by TCP option / QUIC CID), if any.
    pub server_id: Option<ServerId>,
}

impl Backend {
    /// A backend at `addr` (its tunnel destination), weight 1, no
    /// server_id: `Backend::new(addr).weight(3).server_id(id)`.
    pub fn new(addr: IpAddr) -> Backend {
        Backend {
            addr,
            weight: 1,
            server_id: None,
        }
    }

    /// Sets the Maglev weight (0: no new flows, still reachable by
    /// server_id and the connection table; see [`weight`](crate::weight)).
    pub fn weight(mut self, weight: u32) -> Backend {
        self.weight = weight;
        self
    }

    /// Routes the backend by `id` (TCP option / QUIC CID). A `ServerId` is
    /// never 0: `ServerId::new(0)` is `None` and does not compile here.
    pub fn server_id(mut self, id: ServerId) -> Backend {
        self.server_id = Some(id);
        self
    }

    /// Not routed by server_id: reached through the ring and the
    /// connection table only.
    pub fn without_server_id(mut self) -> Backend {
        self.server_id = None;
        self
    }
}
