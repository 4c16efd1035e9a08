//! Configuration of [`ServerIdOps`](super::ServerIdOps): role, option
//! layout, port and address filters.

use std::net::IpAddr;

use flowpin_bpf_abi::sockops as abi;
use flowpin_tcp_opt::{Layout, ServerId};

use super::ServerIdOpsError;

/// Most ports and most addresses a [`ServerIdOpsConfig`] may list: the
/// smaller of the filter maps' sizes, `flowpin_bpf_abi::sockops::MAX_PORTS`
/// and `MAX_ADDRS` (`FLOWPIN_SOCKOPS_MAX_PORTS` / `_MAX_ADDRS` of
/// `<flowpin/sockops_server_id.h>`).
pub const MAX_FILTER_ENTRIES: usize = if abi::MAX_PORTS < abi::MAX_ADDRS {
    abi::MAX_PORTS as usize
} else {
    abi::MAX_ADDRS as usize
};

/// Which role(s) an instance plays for the sockets of its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Stamp this server_id into the SYN-ACKs of configured listeners.
    Server(ServerId),
    /// Echo the server_id received in a SYN-ACK on every later packet.
    Client,
    /// Both: listeners stamp `ServerId`, outgoing connections echo.
    Both(ServerId),
}

impl Role {
    /// The server_id stamped by the server role, if on.
    pub fn server_id(self) -> Option<ServerId> {
        match self {
            Role::Server(id) | Role::Both(id) => Some(id),
            Role::Client => None,
        }
    }

    /// Whether the client role is on.
    pub fn is_client(self) -> bool {
        matches!(self, Role::Client | Role::Both(_))
    }
}

/// Load-time configuration of [`ServerIdOps`](super::ServerIdOps).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerIdOpsConfig {
    /// Server, client or both.
    pub role: Role,
    /// Option layout (default RFC 6994 with the default ExID). Both ends and
    /// the load balancers must agree.
    pub layout: Layout,
    /// Server role: only listeners on these local ports stamp their SYN-ACKs.
    /// Empty: every port.
    pub ports: Vec<u16>,
    /// Server role: only SYN-ACKs from these local addresses are stamped
    /// (checked per connection, so wildcard listeners work). IPv4 also
    /// matches IPv4 connections to dual-stack listeners. Empty: every address.
    pub addrs: Vec<IpAddr>,
}

impl ServerIdOpsConfig {
    /// Server role with `server_id`, every port and address, default layout.
    pub fn server(server_id: ServerId) -> Self {
        Self::new(Role::Server(server_id))
    }

    /// Client role, default layout.
    pub fn client() -> Self {
        Self::new(Role::Client)
    }

    /// Both roles.
    pub fn both(server_id: ServerId) -> Self {
        Self::new(Role::Both(server_id))
    }

    /// Any role, every port and address, default layout.
    pub fn new(role: Role) -> Self {
        ServerIdOpsConfig {
            role,
            layout: Layout::default(),
            ports: Vec::new(),
            addrs: Vec::new(),
        }
    }

    /// Sets [`ServerIdOpsConfig::layout`].
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Sets [`ServerIdOpsConfig::ports`].
    pub fn ports(mut self, ports: &[u16]) -> Self {
        self.ports = ports.to_vec();
        self
    }

    /// Sets [`ServerIdOpsConfig::addrs`].
    pub fn addrs(mut self, addrs: &[IpAddr]) -> Self {
        self.addrs = addrs.to_vec();
        self
    }

    pub(super) fn validate(&self) -> Result<(), ServerIdOpsError> {
        if self.ports.len() > MAX_FILTER_ENTRIES || self.addrs.len() > MAX_FILTER_ENTRIES {
            return Err(ServerIdOpsError::InvalidConfig(format!(
                "{} ports and {} addresses given, at most {MAX_FILTER_ENTRIES} of each",
                self.ports.len(),
                self.addrs.len()
            )));
        }
        if self.ports.contains(&0) {
            return Err(ServerIdOpsError::InvalidConfig(
                "port 0 in ports: a listener never has local port 0".into(),
            ));
        }
        if let Layout::Compact { kind } = self.layout {
            // EOL, NOP, and the kinds Linux writes itself (MSS, window scale,
            // SACK-permitted, SACK, timestamps, MD5, TCP-AO, MPTCP, Fast Open).
            if matches!(kind, 0..=5 | 8 | 19 | 29 | 30 | 34) {
                return Err(ServerIdOpsError::InvalidConfig(format!(
                    "Layout::Compact kind {kind} is a TCP option the kernel uses; pick an unassigned or experimental kind"
                )));
            }
        }
        Ok(())
    }
}
