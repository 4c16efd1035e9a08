//! Read-only views of [`LbState`]: the VIPs, their backends and ids, the
//! ring and the server_id routes as the kernel tables hold them.

use std::collections::HashMap;
use std::net::IpAddr;

use super::LbState;
use crate::xdp_lb::{Backend, Vip, VipFlags};

impl LbState {
    /// The configured VIPs.
    pub fn vips(&self) -> impl Iterator<Item = &Vip> + '_ {
        self.vips.keys()
    }

    /// The backends of a VIP as last set.
    pub fn backends(&self, vip: &Vip) -> Option<&[Backend]> {
        self.vips.get(vip).map(|s| s.backends.as_slice())
    }

    /// The id of a configured VIP.
    pub fn vip_id(&self, vip: &Vip) -> Option<u32> {
        self.vips.get(vip).map(|s| s.id)
    }

    /// The flags of a configured VIP.
    pub fn vip_flags(&self, vip: &Vip) -> Option<VipFlags> {
        self.vips.get(vip).map(|s| s.flags)
    }

    /// The global backend index of an address in use.
    pub fn backend_index(&self, addr: IpAddr) -> Option<u32> {
        self.backends.ids.get(&addr).map(|x| x.0)
    }

    /// Addresses with an ICMP echo entry.
    pub fn echo_addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.echo_refs.keys().copied()
    }

    /// The backend address of each ring slot of a VIP (empty when it has
    /// no backend with a weight).
    pub fn ring_addrs(&self, vip: &Vip) -> Vec<Option<IpAddr>> {
        let Some(st) = self.vips.get(vip) else {
            return Vec::new();
        };
        match &st.table {
            None => Vec::new(),
            Some(t) => t
                .ring()
                .iter()
                .map(|&i| st.backends.get(i as usize).map(|b| b.addr))
                .collect(),
        }
    }

    /// server_id → backend address routes of a VIP.
    pub fn server_id_addrs(&self, vip: &Vip) -> HashMap<u32, IpAddr> {
        let Some(st) = self.vips.get(vip) else {
            return HashMap::new();
        };
        st.backends
            .iter()
            .filter_map(|b| Some((b.server_id?.get(), b.addr)))
            .collect()
    }
}
