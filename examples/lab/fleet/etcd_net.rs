//! etcd's own network namespace: a namespace made by the lab, joined to the
//! root namespace (where the `node` processes run) by a veth pair on a
//! private /30 used nowhere else in the lab. The node processes reach etcd
//! over that veth only.

use std::net::Ipv4Addr;
use std::process::Command;

use flowpin_testing::{run_cmd, unique_name, NetNs, TestingError};

/// The namespace and the veth pair. Dropping it deletes the root end of the
/// veth (and with it the peer) and then the namespace; kill etcd first.
pub(crate) struct EtcdNet {
    root_if: String,
    pub(crate) ns: NetNs,
    /// etcd's address, inside the namespace.
    pub(crate) etcd_addr: Ipv4Addr,
}

/// The /30 of this run, in 10.255.0.0/16 (which the lab uses nowhere else),
/// picked by pid so two labs running at once do not share it: `(root end,
/// etcd end)`.
fn private_30() -> (Ipv4Addr, Ipv4Addr) {
    let subnet = std::process::id() % (1 << 14);
    let base = u32::from(Ipv4Addr::new(10, 255, 0, 0)) | (subnet << 2);
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

impl EtcdNet {
    pub(crate) fn build() -> Result<EtcdNet, TestingError> {
        let ns = NetNs::new("etcd")?;
        let root_if = unique_name("etcd");
        let (root_addr, etcd_addr) = private_30();
        run_cmd(
            "ip",
            [
                "link",
                "add",
                &root_if,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name(),
            ],
        )?;
        let net = EtcdNet {
            root_if,
            ns,
            etcd_addr,
        };
        run_cmd(
            "ip",
            [
                "addr",
                "add",
                &format!("{root_addr}/30"),
                "dev",
                &net.root_if,
            ],
        )?;
        run_cmd("ip", ["link", "set", &net.root_if, "up"])?;
        net.ns
            .ip(&["addr", "add", &format!("{etcd_addr}/30"), "dev", "eth0"])?;
        net.ns.ip(&["link", "set", "eth0", "up"])?;
        Ok(net)
    }
}

impl Drop for EtcdNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.root_if])
            .output();
    }
}
