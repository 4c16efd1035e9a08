//! The vocabulary of the load balancer's control API: VIPs, their flags and
//! backends.

use std::net::IpAddr;

use flowpin_bpf_abi::lb;
use flowpin_tcp_opt::ServerId;

/// Transport protocol of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

/// A virtual IP service: destination address, port and protocol. Port 0
/// with [`VipFlags::PORT_AGNOSTIC`] matches every port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vip {
    /// Destination address.
    pub addr: IpAddr,
    /// Destination port (0 for a port-agnostic VIP).
    pub port: u16,
    /// Protocol.
    pub proto: Proto,
}

impl Vip {
    /// A VIP.
    pub fn new(addr: IpAddr, port: u16, proto: Proto) -> Vip {
        Vip { addr, port, proto }
    }
}

impl std::fmt::Display for Vip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        match self.addr {
            IpAddr::V4(a) => write!(f, "{p}:{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "{p}:[{a}]:{}", self.port),
        }
    }
}

/// Per-VIP feature flags (the `FLOWPIN_VIP_*` bits of `flowpin_lb.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VipFlags(pub(crate) u32);

impl VipFlags {
    /// No flags.
    pub const NONE: VipFlags = VipFlags(0);
    /// Match every destination port (the VIP's port must be 0).
    pub const PORT_AGNOSTIC: VipFlags = VipFlags(lb::VIP_PORT_AGNOSTIC);
    /// UDP: no connection table, Maglev only.
    pub const SKIP_LRU_UDP: VipFlags = VipFlags(lb::VIP_SKIP_LRU_UDP);
    /// TCP: route by the server_id TCP option.
    pub const SERVER_ID: VipFlags = VipFlags(lb::VIP_SERVER_ID);
    /// UDP: QUIC, short-header packets routed by the server_id in the DCID.
    pub const QUIC: VipFlags = VipFlags(lb::VIP_QUIC);
    pub(crate) const ICMP_ECHO: VipFlags = VipFlags(lb::VIP_ICMP_ECHO);

    /// The raw bits.
    pub fn bits(self) -> u32 {
        self.0
    }
    /// Whether every bit of `other` is set.
    pub fn contains(self, other: VipFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for VipFlags {
    type Output = VipFlags;
    fn bitor(self, rhs: VipFlags) -> VipFlags {
        VipFlags(self.0 | rhs.0)
    }
}

/// A backend of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Tunnel destination (the backend host's address).
    pub addr: IpAddr,
    /// Maglev weight (0: no new flows, still reachable by server_id).
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

    /// Sets the Maglev weight (0: no new flows, still reachable by server_id).
    pub fn weight(mut self, weight: u32) -> Backend {
        self.weight = weight;
        self
    }

    /// Sets the host's server_id (`ServerId` or `Option<ServerId>`; `None`:
    /// not routed by server_id).
    pub fn server_id(mut self, id: impl Into<Option<ServerId>>) -> Backend {
        self.server_id = id.into();
        self
    }
}
