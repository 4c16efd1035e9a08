//! Zero-downtime release with a BPF-steered `SO_REUSEPORT` group.
//!
//! Every release of a server is a *generation*: a set of sockets (one per
//! worker or CPU) bound to the same address with `SO_REUSEPORT`. The
//! `sk_reuseport_select` BPF program (crate `flowpin-bpf-progs`) picks, for
//! every TCP connection request and UDP packet, a socket of the right
//! generation:
//!
//! - new TCP connections and new UDP flows go to the **live** generation
//!   (by flow hash or by CPU, selectable); flipping it is one map write;
//! - a UDP flow stays on the socket that first got it while that socket
//!   lives (LRU flow table); QUIC short-header packets go to the socket whose
//!   id is in their connection ID, with no table;
//! - when the old process closes its listeners, the requests queued on them
//!   migrate to the live generation (`BPF_SK_REUSEPORT_SELECT_OR_MIGRATE`,
//!   `net.ipv4.tcp_migrate_req=1`) instead of being reset;
//! - a socket bound but not yet added gets nothing, so a new process warms
//!   up before it takes traffic.
//!
//! ```no_run
//! use flowpin_sk_reuseport::{GroupConfig, Proto, ReuseportGroup};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let addr = "127.0.0.1:8443".parse()?;
//! // First process: create the group, pinned under bpffs.
//! let group = ReuseportGroup::create(addr, Proto::Udp, GroupConfig::new("/sys/fs/bpf/myservice-udp"))?;
//! let sock = flowpin_sk_reuseport::bind_reuseport(addr, Proto::Udp)?;
//! let g1 = group.add_generation(&[sock])?;
//! group.activate(g1)?;
//! // Next release, in a new process:
//! let group = ReuseportGroup::join("/sys/fs/bpf/myservice-udp")?;
//! let sock = flowpin_sk_reuseport::bind_reuseport(addr, Proto::Udp)?;
//! let g2 = group.add_generation(&[sock])?; // warms up: gets nothing yet
//! group.activate(g2)?;                     // the flip: new flows go to g2
//! group.retire(g1)?;                       // g1 keeps its flows until idle / deadline
//! # Ok(()) }
//! ```
//!
//! The release logic ([`release`]) is plain Rust tested without a kernel;
//! [`ReuseportGroup`] is a thin layer applying its transitions to the maps.
//!
//! # Measured
//!
//! `examples/release.rs` (root package) releases a TCP + UDP echo server 20
//! times under load, each release a new process, with four strategies;
//! `examples/bind_pitfall.rs` measures `bind()` when `SO_REUSEPORT` and
//! plain binds are mixed on one port. Results on Linux 6.18 (flowpin: 0
//! refused, 0 reset, 0 misrouted; UDP throughput 1.7× one socket; bind()
//! with the talk's mixed pattern still ~10× slower than all-`SO_REUSEPORT`,
//! wildcard binds p99 ~4 ms) are in this crate's `README.md`.
#![deny(missing_docs)]

pub mod group;
pub mod release;

use std::net::SocketAddr;

pub use group::{
    enable_tcp_migrate_req, ensure_bpffs, Drops, GenerationStats, GroupConfig, GroupError,
    GroupStats, Proto, ReuseportGroup, SelectMode,
};
pub use release::{GenInfo, GenState, Generation, ReleaseError, ReleaseState, Retirement};

/// A socket for a group: `SO_REUSEPORT` set before `bind(addr)`; TCP
/// sockets listen with a backlog of 1024. (IPv6 sockets are IPv6-only.)
pub fn bind_reuseport(addr: SocketAddr, proto: Proto) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let (ty, p) = match proto {
        Proto::Tcp => (Type::STREAM, socket2::Protocol::TCP),
        Proto::Udp => (Type::DGRAM, socket2::Protocol::UDP),
    };
    let s = Socket::new(Domain::for_address(addr), ty, Some(p))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    if proto == Proto::Tcp {
        s.listen(1024)?;
    }
    Ok(s)
}
