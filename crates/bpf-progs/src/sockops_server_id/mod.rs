//! `sockops_server_id`: the server_id TCP header option, end to end on the
//! hosts.
//!
//! A `BPF_PROG_TYPE_SOCK_OPS` program attached to a cgroup v2:
//!
//! - **server role**: every SYN-ACK sent by a listener of the cgroup (on a
//!   configured port and local address) carries this host's server_id;
//!   nothing else the server sends does.
//! - **client role**: a connection whose SYN-ACK carried a valid server_id
//!   keeps it in `bpf_sk_storage` and carries it in every later packet it
//!   sends (the handshake ACK, data, pure ACKs, FIN and the RST of an abortive
//!   close). A connection whose SYN-ACK carried none, a malformed one or
//!   server_id 0 never runs the program again: nothing is written.
//!
//! The header-option callbacks are switched on per socket
//! (`bpf_sock_ops_cb_flags_set`) only where an option is written: on
//! configured listeners (for their SYN-ACKs) and on client connections that
//! received a server_id. Other sockets of the cgroup only pay the
//! once-per-connection callbacks (listen, connect, established).
//!
//! What the kernel does with the option on Linux 6.18, as checked on the
//! wire by `tests/privileged_sockops*.rs` (unless marked "kernel source"):
//!
//! | packet | carries the option |
//! |---|---|
//! | client SYN (also a TCP Fast Open SYN with data) | no |
//! | server SYN-ACK (configured listener; also with TFO, next to TCP-MD5, after a 40-byte SYN) | yes, the server's id |
//! | client handshake ACK, data, pure ACKs, FIN, the ACK of the server's FIN | yes, the echoed id |
//! | client RST of an abortive close (`SO_LINGER {on, 0}`, `tcp_send_active_reset`) | yes (counted in `echoed_rst`) |
//! | RST the client's kernel sends for a segment to a closed socket (`tcp_v4_send_reset`, per-netns control socket, no BPF callback) | no |
//! | ACKs re-sent from `TIME_WAIT` (`tcp_v4_send_ack`, control socket; kernel source) | no |
//! | server data, ACKs, FIN after the handshake | no |
//! | any packet whose other options leave less than 8 bytes (e.g. 4 SACK blocks; MPTCP DSS + timestamps; an MPTCP MP_JOIN SYN-ACK) | no: counted in `no_space` when 1..7 bytes were left; with 0 left the kernel does not call the program at all (uncounted) |
//!
//! A load balancer routing by server_id therefore has to fall back to its
//! flow table / hash for the packets without it (the SYN, kernel RSTs,
//! `TIME_WAIT` ACKs, ACKs with many SACK blocks). Over MPTCP most data
//! packets have no room left.
//!
//! Cost (measured on this 2-core, loaded lab machine, connect + 8-byte
//! request/response + close over veth between namespaces, p50 of 3000
//! connections): 53.3 µs without the program; +0.5–1 µs with the server
//! stamping and the client parsing; +3 µs (≈ 6 %) with the echo on every
//! client packet. Part of the echo's cost is on the receiver: any extra
//! option changes the header length, so the server's TCP header prediction
//! (fast path) never matches the client's packets (a 2 MB upload: 668
//! `TcpExtTCPHPHits` on the server without the program, 0 with it).
//!
//! Each instance has its own maps: several instances with different
//! server_ids can run at the same time, one per cgroup. Pin one
//! ([`ServerIdOps::pin`], and its link with [`Link::pin`]) to keep it
//! beyond its process; [`ServerIdOps::open_pinned`] finds it again and
//! [`ServerIdOps::upgrade`] swaps this build's program into the cgroup link,
//! keeping every map (the clients' per-socket server_ids included).
//!
//! ```no_run
//! use flowpin_bpf_progs::sockops_server_id::{ServerIdOps, ServerIdOpsConfig};
//! use flowpin_tcp_opt::ServerId;
//! let ops = ServerIdOps::load(ServerIdOpsConfig::server(ServerId::new(42).unwrap()).ports(&[443]))?;
//! let link = ops.attach("/sys/fs/cgroup/backend")?; // detached when `link` drops
//! println!("SYN-ACKs stamped: {}", ops.stats()?.server.written);
//! # drop(link);
//! # Ok::<(), flowpin_bpf_progs::sockops_server_id::ServerIdOpsError>(())
//! ```

use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use flowpin_tcp_opt::{Layout, ServerId};
use libbpf_rs::skel::SkelBuilder;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::error::KernelError;
use crate::pinned_maps::{self, MapTable, PinnedProg};
use crate::skel::sockops_server_id::types::{flowpin_sockops_meta, flowpin_sockops_stats};
use crate::skel::sockops_server_id::SockopsServerIdSkelBuilder;

mod cgroup;
mod config;
mod stats;

pub use crate::link::Link;
pub use cgroup::{CgroupRef, SockopsLink};
pub use config::{Role, ServerIdOpsConfig, MAX_FILTER_ENTRIES};
pub use stats::{ClientStats, ServerIdOpsStats, ServerStats};

/// Errors of the `sockops_server_id` control API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerIdOpsError {
    /// The configuration is unusable.
    #[error("invalid ServerIdOpsConfig: {0}")]
    InvalidConfig(String),
    /// A kernel call failed: open, load, a map, the cgroup or the link.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Nothing is pinned at `path` ([`ServerIdOps::open_pinned`]).
    #[error("nothing is pinned at {}: check the path, or load and pin a sockops_server_id there first (ServerIdOps::pin)", path.display())]
    NotPinned {
        /// The missing pin or pin directory.
        path: std::path::PathBuf,
    },
    /// A [`Link`] verb failed (pin, update, detach).
    #[error(transparent)]
    Link(#[from] crate::link::LinkError),
    /// The pin directory holds a layout this build cannot use.
    #[error("pin directory {dir} holds sockops_server_id layout version {found}; this build uses version {expected}: detach it, remove the pins with ServerIdOps::unpin and load again, or run the flowpin build that wrote them")]
    IncompatiblePin {
        /// The pin directory.
        dir: std::path::PathBuf,
        /// The version it holds (0: unreadable).
        found: u32,
        /// The version of this build.
        expected: u32,
    },
}

crate::pin::from_pin_error!(ServerIdOpsError);

type Result<T> = std::result::Result<T, ServerIdOpsError>;

/// A loaded `sockops_server_id` instance. Owns only file descriptors (the
/// program and its maps): nothing is pinned, instances are independent, and
/// links made by [`ServerIdOps::attach`] keep the program running on their
/// own.
#[derive(Debug)]
pub struct ServerIdOps {
    prog: PinnedProg,
    maps: SockopsMaps,
    config: ServerIdOpsConfig,
}

/// Layout version of a pinned instance (`FLOWPIN_SOCKOPS_LAYOUT_VERSION`;
/// its one Rust home is flowpin-bpf-abi).
pub use flowpin_bpf_abi::sockops::LAYOUT_VERSION;

crate::pinned_maps::map_table! {
    /// The maps of `sockops_server_id`.
    #[derive(Debug)]
    struct SockopsMaps {
        stats: Map,
        server_ports: Map,
        server_addrs: Map,
        sk_server_id: Map,
        meta: Meta,
    }
    extra {}
    pin_names:
        /// The files of a pinned `sockops_server_id`: the maps, then `prog`.
        pub const PIN_NAMES;
}

fn meta_of(config: &ServerIdOpsConfig) -> flowpin_sockops_meta {
    let server_id = config.role.server_id();
    let (kind, exid) = match config.layout {
        Layout::Rfc6994 { exid } => (flowpin_tcp_opt::consts::TCPOPT_EXP_KIND, exid),
        Layout::Compact { kind } => (kind, 0),
        _ => (0, 0),
    };
    flowpin_sockops_meta {
        layout_version: LAYOUT_VERSION,
        server_id: server_id.map_or(0, ServerId::get),
        server: u8::from(server_id.is_some()),
        client: u8::from(config.role.is_client()),
        layout: config.layout.selector() as u8,
        kind,
        exid,
        filter_ports: u8::from(!config.ports.is_empty()),
        filter_addrs: u8::from(!config.addrs.is_empty()),
    }
}

fn role_of(m: &flowpin_sockops_meta) -> Option<Role> {
    let id = ServerId::new(m.server_id);
    Some(match (m.server != 0, m.client != 0) {
        (true, true) => Role::Both(id?),
        (true, false) => Role::Server(id?),
        (false, true) => Role::Client,
        (false, false) => return None,
    })
}

fn layout_of(m: &flowpin_sockops_meta) -> Layout {
    use flowpin_tcp_opt::consts as k;
    match u32::from(m.layout) {
        x if x == k::LAYOUT_COMPACT => Layout::Compact { kind: m.kind },
        x if x == k::LAYOUT_KATRAN => Layout::KatranCompat,
        _ => Layout::Rfc6994 { exid: m.exid },
    }
}

fn addr_key(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

const LOAD_HINT: &str =
    "verifier rejection, kernel < 5.10 without bpf_*_hdr_opt, or missing CAP_BPF/CAP_NET_ADMIN";

/// Opens, configures and loads the program for `config`; with `reuse`,
/// against those maps. Writes `meta`.
fn load_program(
    config: &ServerIdOpsConfig,
    reuse: Option<&SockopsMaps>,
) -> Result<(OwnedFd, SockopsMaps)> {
    let mut storage = MaybeUninit::uninit();
    let mut open = SockopsServerIdSkelBuilder::default()
        .open(&mut storage)
        .map_err(KernelError::object("object sockops_server_id", "open", ""))?;
    let meta = meta_of(config);
    {
        let ro = open.maps.rodata_data.as_deref_mut().ok_or_else(|| {
            ServerIdOpsError::InvalidConfig(
                "the BPF object has no mmapable .rodata (libbpf too old?)".into(),
            )
        })?;
        ro.cfg_server = meta.server;
        ro.cfg_client = meta.client;
        ro.cfg_server_id = meta.server_id;
        ro.cfg_layout = meta.layout;
        if meta.kind != 0 {
            ro.cfg_kind = meta.kind;
        }
        if let Layout::Rfc6994 { exid } = config.layout {
            ro.cfg_exid = exid;
        }
        ro.cfg_filter_ports = meta.filter_ports;
        ro.cfg_filter_addrs = meta.filter_addrs;
    }
    let (prog, maps) = pinned_maps::load_table(open, reuse, "sockops_server_id", LOAD_HINT)?;
    pinned_maps::write_meta(&maps.meta, crate::skel::bytes_of(&meta))?;
    Ok((prog, maps))
}

impl ServerIdOps {
    /// Opens, configures and loads the program (not yet attached).
    pub fn load(config: ServerIdOpsConfig) -> Result<Self> {
        config.validate()?;
        let (prog, maps) = load_program(&config, None)?;
        for port in &config.ports {
            maps.server_ports
                .update(&port.to_ne_bytes(), &[1], MapFlags::ANY)
                .map_err(KernelError::map("server_ports", "update"))?;
        }
        for addr in &config.addrs {
            maps.server_addrs
                .update(&addr_key(*addr), &[1], MapFlags::ANY)
                .map_err(KernelError::map("server_addrs", "update"))?;
        }
        Ok(ServerIdOps {
            prog: PinnedProg::loaded(prog),
            maps,
            config,
        })
    }

    /// Pins the program and its maps under `dir` (created on bpffs, pins
    /// 0600). Pin the cgroup link from [`attach`](Self::attach) with
    /// [`Link::pin`], conventionally as `dir/link`.
    pub fn pin(&self, dir: impl AsRef<Path>) -> Result<()> {
        Ok(self.prog.pin(dir.as_ref(), &self.maps)?)
    }

    /// Reopens an instance pinned by [`pin`](Self::pin); its configuration
    /// is read back from the pinned `meta` map and filter maps. A
    /// directory of another layout version is refused;
    /// [`ServerIdOpsError::NotPinned`] if nothing is pinned there.
    pub fn open_pinned(dir: impl AsRef<Path>) -> Result<ServerIdOps> {
        let dir = dir.as_ref();
        let (raw, found) = pinned_maps::read_meta::<SockopsMaps>(dir)?;
        let incompatible = || ServerIdOpsError::IncompatiblePin {
            dir: dir.to_path_buf(),
            found,
            expected: LAYOUT_VERSION,
        };
        if found != LAYOUT_VERSION || raw.len() != std::mem::size_of::<flowpin_sockops_meta>() {
            return Err(incompatible());
        }
        let meta: flowpin_sockops_meta = crate::skel::read(&raw).ok_or_else(incompatible)?;
        let role = role_of(&meta).ok_or_else(|| {
            ServerIdOpsError::InvalidConfig(format!(
                "pinned meta of {} has no role (server_id {})",
                dir.display(),
                meta.server_id
            ))
        })?;
        let (prog, maps) = pinned_maps::open_table::<SockopsMaps>(dir)?;
        let mut ports: Vec<u16> = maps
            .server_ports
            .keys()
            .filter_map(|k| Some(u16::from_ne_bytes(<[u8; 2]>::try_from(k.as_slice()).ok()?)))
            .collect();
        ports.sort_unstable();
        let mut addrs: Vec<IpAddr> = maps
            .server_addrs
            .keys()
            .filter_map(|k| {
                let a = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(k.as_slice()).ok()?);
                Some(a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4))
            })
            .collect();
        addrs.sort_unstable();
        let config = ServerIdOpsConfig::new(role)
            .layout(layout_of(&meta))
            .ports(&ports)
            .addrs(&addrs);
        Ok(ServerIdOps {
            prog: PinnedProg::reopened(prog, dir),
            maps,
            config,
        })
    }

    /// Removes a pinned directory (every pin in it, links included, and
    /// the directory). A missing directory is not an error.
    pub fn unpin(dir: impl AsRef<Path>) -> Result<()> {
        Ok(crate::pin::remove_pin_dir(dir)?)
    }

    /// Upgrades in place: loads this build's program with the same
    /// configuration against these maps (`reuse_fd`: the clients'
    /// per-socket server_ids, the filters and counters stay) and swaps it
    /// into `link` atomically (cgroup `BPF_LINK_UPDATE`).
    pub fn upgrade(&mut self, link: &SockopsLink) -> Result<()> {
        self.prog.upgrade(link, || {
            load_program(&self.config, Some(&self.maps)).map(|(prog, _)| prog)
        })
    }

    /// The configuration this instance was loaded with.
    pub fn config(&self) -> &ServerIdOpsConfig {
        &self.config
    }

    /// The program's fd.
    pub fn program_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// The port filter map (`u16` port, host order → `u8` 1), for users who
    /// go lower (a [`libbpf_rs::MapHandle`] of the libbpf-rs this crate
    /// re-exports).
    pub fn server_ports_map(&self) -> &MapHandle {
        &self.maps.server_ports
    }

    /// The address filter map (IPv6 or v4-mapped address → `u8` 1).
    pub fn server_addrs_map(&self) -> &MapHandle {
        &self.maps.server_addrs
    }

    /// One of the program's maps by its pin name ([`PIN_NAMES`]), for
    /// users who go lower.
    pub fn map(&self, name: &str) -> Option<&MapHandle> {
        self.maps.map_named(name)
    }

    /// Attaches to a cgroup v2 (a directory path of any path type, or an
    /// open directory) with a BPF link. Other programs attached to the
    /// cgroup keep running. Detached when the returned link drops, unless
    /// it is pinned.
    ///
    /// A socket belongs to the cgroup of the process that created it (an
    /// accepted socket to its listener's). The program acts at `listen()`
    /// and at connection establishment, so: attach **before the server calls
    /// `listen()`** (a listener that was already listening is never
    /// stamped; [`crate::process::CommandCgroupExt`] starts a server inside
    /// the cgroup); a client connection is handled if the program is
    /// attached when its handshake completes.
    pub fn attach<'a>(&self, cgroup: impl Into<CgroupRef<'a>>) -> Result<SockopsLink> {
        Ok(cgroup::attach(self.prog.as_fd(), cgroup.into())?)
    }

    /// The counters, summed over all CPUs (one `lookup_percpu`).
    pub fn stats(&self) -> Result<ServerIdOpsStats> {
        let per_cpu = self
            .maps
            .stats
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(KernelError::map("stats", "lookup_percpu"))?
            .unwrap_or_default();
        let sum: flowpin_sockops_stats = crate::skel::sum_counters(&per_cpu).ok_or_else(|| {
            KernelError::errno(
                "map stats",
                "lookup_percpu",
                22,
                "a value shorter than struct flowpin_sockops_stats: program and library out of sync",
            )
        })?;
        Ok(sum.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowpin_tcp_opt::ServerId;

    #[test]
    fn config_rejects_port_zero_and_too_many_entries() {
        let id = ServerId::new(7).unwrap();
        assert!(ServerIdOpsConfig::server(id)
            .ports(&[0])
            .validate()
            .is_err());
        let many: Vec<u16> = (1..=65).collect();
        assert!(ServerIdOpsConfig::server(id)
            .ports(&many)
            .validate()
            .is_err());
        for kind in [0, 1, 2, 8, 19, 30] {
            assert!(ServerIdOpsConfig::client()
                .layout(Layout::Compact { kind })
                .validate()
                .is_err());
        }
        assert!(ServerIdOpsConfig::client()
            .layout(Layout::Compact { kind: 0xB5 })
            .validate()
            .is_ok());
        assert!(ServerIdOpsConfig::both(id)
            .ports(&[443])
            .addrs(&["10.0.0.1".parse().unwrap()])
            .validate()
            .is_ok());
    }

    #[test]
    fn the_pinned_meta_gives_the_config_back() {
        let id = ServerId::new(7).unwrap();
        for (cfg, role) in [
            (ServerIdOpsConfig::server(id), Role::Server(id)),
            (ServerIdOpsConfig::client(), Role::Client),
            (
                ServerIdOpsConfig::both(id).layout(Layout::Compact { kind: 0xB5 }),
                Role::Both(id),
            ),
            (
                ServerIdOpsConfig::client().layout(Layout::KatranCompat),
                Role::Client,
            ),
        ] {
            let m = meta_of(&cfg);
            assert_eq!(role_of(&m), Some(role));
            assert_eq!(layout_of(&m), cfg.layout);
        }
    }

    #[test]
    fn ipv4_filter_addresses_are_v4_mapped() {
        assert_eq!(
            addr_key("10.1.2.3".parse().unwrap()),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]
        );
    }

    #[test]
    fn filters_hold_at_most_what_the_maps_hold() {
        // The maps' sizes are the header's (flowpin-bpf-abi's drift test
        // checks MAX_PORTS and MAX_ADDRS against it).
        let id = ServerId::new(7).unwrap();
        let ports = |n: u32| (1..=n).map(|p| p as u16).collect::<Vec<_>>();
        let addrs = |n: u32| {
            (1..=n)
                .map(|i| IpAddr::from([10, 0, (i >> 8) as u8, i as u8]))
                .collect::<Vec<_>>()
        };
        let max_ports = flowpin_bpf_abi::sockops::MAX_PORTS;
        let max_addrs = flowpin_bpf_abi::sockops::MAX_ADDRS;
        let cfg = ServerIdOpsConfig::server(id);
        assert!(cfg.clone().ports(&ports(max_ports)).validate().is_ok());
        assert!(cfg.clone().ports(&ports(max_ports + 1)).validate().is_err());
        assert!(cfg.clone().addrs(&addrs(max_addrs)).validate().is_ok());
        assert!(cfg.addrs(&addrs(max_addrs + 1)).validate().is_err());
        assert_eq!(MAX_FILTER_ENTRIES as u32, max_ports.min(max_addrs));
    }
}
