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
//! Each instance has its own maps and nothing is pinned: several instances
//! with different server_ids can run at the same time, one per cgroup.
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

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use flowpin_tcp_opt::{Layout, ServerId};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::percpu::{sum_u64_counters, PercpuError};
use crate::skel::sockops_server_id::SockopsServerIdSkelBuilder;

/// Most ports and most addresses a [`ServerIdOpsConfig`] may list
/// (`FLOWPIN_SOCKOPS_MAX_PORTS` / `_MAX_ADDRS` in the C header).
pub const MAX_FILTER_ENTRIES: usize = 64;

/// Errors of the `sockops_server_id` control API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerIdOpsError {
    /// The configuration is unusable.
    #[error("invalid ServerIdOpsConfig: {0}")]
    InvalidConfig(String),
    /// Opening the embedded BPF object failed.
    #[error("opening the sockops_server_id BPF object failed: {0}")]
    Open(#[source] libbpf_rs::Error),
    /// The kernel refused the program or its maps.
    #[error("loading sockops_server_id into the kernel failed (verifier rejection, kernel < 5.10 without bpf_*_hdr_opt, or missing CAP_BPF/CAP_NET_ADMIN): {0}")]
    Load(#[source] libbpf_rs::Error),
    /// Duplicating a program or map fd after load failed.
    #[error("taking a handle on {what} after load failed: {source}")]
    Handle {
        /// Program or map name.
        what: &'static str,
        /// libbpf's error (with errno).
        #[source]
        source: libbpf_rs::Error,
    },
    /// A map operation failed.
    #[error("{op} on map {map} failed: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// The operation (`update`, `lookup_percpu`, ...).
        op: &'static str,
        /// libbpf's error (with errno).
        #[source]
        source: libbpf_rs::Error,
    },
    /// A value read from a map had an unexpected size.
    #[error("map {map} returned a {got}-byte value, expected {want} bytes (program and Rust API out of sync)")]
    ValueSize {
        /// Map name.
        map: &'static str,
        /// Size read.
        got: usize,
        /// Size expected.
        want: usize,
    },
    /// The cgroup directory could not be opened.
    #[error("opening cgroup directory {path}: {source} (is it a directory on the cgroup2 file system, see /proc/self/mounts?)")]
    OpenCgroup {
        /// The path given.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `bpf_link_create(BPF_CGROUP_SOCK_OPS)` failed.
    #[error("bpf_link_create(BPF_CGROUP_SOCK_OPS) on cgroup {cgroup} failed: {source} (EBADF/ENOTDIR: not a cgroup v2 directory; EPERM: need CAP_BPF + CAP_NET_ADMIN)")]
    Attach {
        /// The cgroup (path, or `fd N`).
        cgroup: String,
        /// errno.
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, ServerIdOpsError>;

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

/// Load-time configuration of [`ServerIdOps`].
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

    fn validate(&self) -> Result<()> {
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

/// Counters of the server role, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Listeners on a configured port (their SYN-ACKs get the option).
    pub listeners: u64,
    /// Listeners on other ports (left alone).
    pub listeners_skipped: u64,
    /// SYN-ACKs sent carrying our server_id.
    pub written: u64,
    /// SYN-ACKs left alone: the local address is not configured.
    pub addr_skipped: u64,
    /// SYN-ACKs sent without the option: no room left in the header
    /// (e.g. TCP-MD5 + timestamps + window scale + MSS fill all 40 bytes).
    pub no_space: u64,
    /// Handshake-completing ACKs that echoed our server_id.
    pub echo_ok: u64,
    /// Handshake-completing ACKs without the option (client without the
    /// program, or it found no room).
    pub echo_missing: u64,
    /// Handshake-completing ACKs with another server_id or a malformed option.
    pub echo_wrong: u64,
}

/// Counters of the client role, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// `connect()`s seen.
    pub connects: u64,
    /// SYN-ACKs carrying a valid server_id (these connections echo it).
    pub parsed: u64,
    /// SYN-ACKs without the option: the server never sent one (an
    /// experimental option with another ExID, or another kind, is not ours
    /// and counts here). Nothing is written on these connections.
    pub missing: u64,
    /// SYN-ACKs whose option has our kind (and ExID) but a wrong length, or
    /// whose option list is unparsable. Ignored: nothing is written.
    pub malformed: u64,
    /// SYN-ACKs carrying server_id 0 ("none"). Not echoed.
    pub zero: u64,
    /// Packets sent carrying the echoed server_id.
    pub echoed: u64,
    /// Of [`ClientStats::echoed`], RST packets.
    pub echoed_rst: u64,
    /// Packets sent without the option because the header had no room left
    /// (e.g. timestamps + SACK blocks + TCP-MD5).
    pub no_space: u64,
}

/// All counters of one instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerIdOpsStats {
    /// Server role.
    pub server: ServerStats,
    /// Client role.
    pub client: ClientStats,
    /// BPF helper failures (setting callback flags, socket storage, storing
    /// the option). Should stay 0.
    pub errors: u64,
}

/// Counter indexes, mirroring `enum flowpin_sockops_counter` in
/// `src/bpf/sockops_server_id.h`.
mod idx {
    pub(super) const SERVER_LISTEN_MATCHED: usize = 0;
    pub(super) const SERVER_LISTEN_SKIPPED: usize = 1;
    pub(super) const SERVER_WRITTEN: usize = 2;
    pub(super) const SERVER_ADDR_SKIPPED: usize = 3;
    pub(super) const SERVER_NO_SPACE: usize = 4;
    pub(super) const SERVER_ECHO_OK: usize = 5;
    pub(super) const SERVER_ECHO_MISSING: usize = 6;
    pub(super) const SERVER_ECHO_WRONG: usize = 7;
    pub(super) const CLIENT_CONNECTS: usize = 8;
    pub(super) const CLIENT_PARSED: usize = 9;
    pub(super) const CLIENT_MISSING: usize = 10;
    pub(super) const CLIENT_MALFORMED: usize = 11;
    pub(super) const CLIENT_ZERO: usize = 12;
    pub(super) const CLIENT_ECHOED: usize = 13;
    pub(super) const CLIENT_ECHOED_RST: usize = 14;
    pub(super) const CLIENT_NO_SPACE: usize = 15;
    pub(super) const ERRORS: usize = 16;
    pub(super) const NR: usize = 17;
}

impl ServerIdOpsStats {
    fn from_counters(c: &[u64; idx::NR]) -> Self {
        ServerIdOpsStats {
            server: ServerStats {
                listeners: c[idx::SERVER_LISTEN_MATCHED],
                listeners_skipped: c[idx::SERVER_LISTEN_SKIPPED],
                written: c[idx::SERVER_WRITTEN],
                addr_skipped: c[idx::SERVER_ADDR_SKIPPED],
                no_space: c[idx::SERVER_NO_SPACE],
                echo_ok: c[idx::SERVER_ECHO_OK],
                echo_missing: c[idx::SERVER_ECHO_MISSING],
                echo_wrong: c[idx::SERVER_ECHO_WRONG],
            },
            client: ClientStats {
                connects: c[idx::CLIENT_CONNECTS],
                parsed: c[idx::CLIENT_PARSED],
                missing: c[idx::CLIENT_MISSING],
                malformed: c[idx::CLIENT_MALFORMED],
                zero: c[idx::CLIENT_ZERO],
                echoed: c[idx::CLIENT_ECHOED],
                echoed_rst: c[idx::CLIENT_ECHOED_RST],
                no_space: c[idx::CLIENT_NO_SPACE],
            },
            errors: c[idx::ERRORS],
        }
    }
}

/// A cgroup v2 directory to attach to: a path or an open directory.
#[derive(Debug, Clone, Copy)]
pub enum CgroupRef<'a> {
    /// A directory on the cgroup2 file system.
    Path(&'a Path),
    /// An open cgroup directory.
    Fd(BorrowedFd<'a>),
}

impl<'a> From<&'a Path> for CgroupRef<'a> {
    fn from(p: &'a Path) -> Self {
        CgroupRef::Path(p)
    }
}

impl<'a> From<&'a PathBuf> for CgroupRef<'a> {
    fn from(p: &'a PathBuf) -> Self {
        CgroupRef::Path(p.as_path())
    }
}

impl<'a> From<&'a str> for CgroupRef<'a> {
    fn from(p: &'a str) -> Self {
        CgroupRef::Path(Path::new(p))
    }
}

impl<'a> From<&'a File> for CgroupRef<'a> {
    fn from(f: &'a File) -> Self {
        CgroupRef::Fd(f.as_fd())
    }
}

impl<'a> From<BorrowedFd<'a>> for CgroupRef<'a> {
    fn from(fd: BorrowedFd<'a>) -> Self {
        CgroupRef::Fd(fd)
    }
}

/// The program attached to one cgroup. Detached when dropped.
#[derive(Debug)]
pub struct SockopsLink {
    link: OwnedFd,
    cgroup: String,
}

impl SockopsLink {
    /// The cgroup attached to (its path, or `fd N`).
    pub fn cgroup(&self) -> &str {
        &self.cgroup
    }

    /// The BPF link's fd.
    pub fn link_fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }

    /// Detaches now (same as dropping).
    pub fn detach(self) {}
}

/// A loaded `sockops_server_id` instance. Owns only file descriptors (the
/// program and its maps): nothing is pinned, instances are independent, and
/// links made by [`ServerIdOps::attach`] keep the program running on their
/// own.
#[derive(Debug)]
pub struct ServerIdOps {
    prog: OwnedFd,
    counters: MapHandle,
    config: ServerIdOpsConfig,
}

const MAP_PORTS: &str = "server_ports";
const MAP_ADDRS: &str = "server_addrs";
const MAP_COUNTERS: &str = "counters";

fn addr_key(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl ServerIdOps {
    /// Opens, configures and loads the program (not yet attached).
    pub fn load(config: ServerIdOpsConfig) -> Result<Self> {
        config.validate()?;
        let mut storage = MaybeUninit::uninit();
        let mut open = SockopsServerIdSkelBuilder::default()
            .open(&mut storage)
            .map_err(ServerIdOpsError::Open)?;
        {
            let ro = open.maps.rodata_data.as_deref_mut().ok_or_else(|| {
                ServerIdOpsError::InvalidConfig(
                    "the BPF object has no mmapable .rodata (libbpf too old?)".into(),
                )
            })?;
            let server_id = config.role.server_id();
            ro.cfg_server = u8::from(server_id.is_some());
            ro.cfg_client = u8::from(config.role.is_client());
            ro.cfg_server_id = server_id.map_or(0, ServerId::get);
            ro.cfg_layout = config.layout.selector() as u8;
            match config.layout {
                Layout::Rfc6994 { exid } => {
                    ro.cfg_kind = flowpin_tcp_opt::consts::TCPOPT_EXP_KIND;
                    ro.cfg_exid = exid;
                }
                Layout::Compact { kind } => ro.cfg_kind = kind,
                _ => {}
            }
            ro.cfg_filter_ports = u8::from(!config.ports.is_empty());
            ro.cfg_filter_addrs = u8::from(!config.addrs.is_empty());
        }
        let skel = open.load().map_err(ServerIdOpsError::Load)?;
        for port in &config.ports {
            skel.maps
                .server_ports
                .update(&port.to_ne_bytes(), &[1], MapFlags::ANY)
                .map_err(|source| ServerIdOpsError::Map {
                    map: MAP_PORTS,
                    op: "update",
                    source,
                })?;
        }
        for addr in &config.addrs {
            skel.maps
                .server_addrs
                .update(&addr_key(*addr), &[1], MapFlags::ANY)
                .map_err(|source| ServerIdOpsError::Map {
                    map: MAP_ADDRS,
                    op: "update",
                    source,
                })?;
        }
        let prog = skel
            .progs
            .sockops_server_id
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| ServerIdOpsError::Handle {
                what: "program sockops_server_id",
                source: e.into(),
            })?;
        let counters = MapHandle::try_from(&skel.maps.counters).map_err(|source| {
            ServerIdOpsError::Handle {
                what: "map counters",
                source,
            }
        })?;
        Ok(ServerIdOps {
            prog,
            counters,
            config,
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

    /// Attaches to a cgroup v2 (a directory path or an open directory) with
    /// a BPF link. Other programs attached to the cgroup keep running.
    /// Detached when the returned link drops.
    ///
    /// A socket belongs to the cgroup of the process that created it (an
    /// accepted socket to its listener's). The program acts at `listen()`
    /// and at connection establishment, so: attach **before the server calls
    /// `listen()`** (a listener that was already listening is never
    /// stamped); a client connection is handled if the program is attached
    /// when its handshake completes.
    pub fn attach<'a>(&self, cgroup: impl Into<CgroupRef<'a>>) -> Result<SockopsLink> {
        match cgroup.into() {
            CgroupRef::Path(path) => {
                let dir = File::open(path).map_err(|source| ServerIdOpsError::OpenCgroup {
                    path: path.to_path_buf(),
                    source,
                })?;
                self.attach_fd(dir.as_fd(), path.display().to_string())
            }
            CgroupRef::Fd(fd) => self.attach_fd(fd, format!("fd {}", fd.as_raw_fd())),
        }
    }

    fn attach_fd(&self, cgroup: BorrowedFd<'_>, name: String) -> Result<SockopsLink> {
        // SAFETY: both fds are valid open fds for the duration of the call;
        // a NULL opts pointer is allowed by bpf_link_create (no options).
        let fd = unsafe {
            libbpf_rs::libbpf_sys::bpf_link_create(
                self.prog.as_raw_fd(),
                cgroup.as_raw_fd(),
                libbpf_rs::libbpf_sys::BPF_CGROUP_SOCK_OPS,
                std::ptr::null(),
            )
        };
        if fd < 0 {
            return Err(ServerIdOpsError::Attach {
                cgroup: name,
                source: io::Error::from_raw_os_error(-fd),
            });
        }
        // SAFETY: bpf_link_create returned a new fd that nothing else owns.
        let link = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SockopsLink { link, cgroup: name })
    }

    /// The counters, summed over all CPUs.
    pub fn stats(&self) -> Result<ServerIdOpsStats> {
        let mut sum = [0u64; idx::NR];
        for (key, total) in (0u32..).zip(sum.iter_mut()) {
            // One u64 per key of the per-CPU array.
            sum_u64_counters(&self.counters, key, std::slice::from_mut(total)).map_err(
                |e| match e {
                    PercpuError::Lookup(source) => ServerIdOpsError::Map {
                        map: MAP_COUNTERS,
                        op: "lookup_percpu",
                        source,
                    },
                    PercpuError::Short { got, want } => ServerIdOpsError::ValueSize {
                        map: MAP_COUNTERS,
                        got,
                        want,
                    },
                },
            )?;
        }
        Ok(ServerIdOpsStats::from_counters(&sum))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn ipv4_filter_addresses_are_v4_mapped() {
        assert_eq!(
            addr_key("10.1.2.3".parse().unwrap()),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]
        );
    }

    #[test]
    fn counter_indexes_match_the_c_header() {
        let h = include_str!("bpf/sockops_server_id.h");
        let want = [
            ("SERVER_LISTEN_MATCHED", idx::SERVER_LISTEN_MATCHED),
            ("SERVER_LISTEN_SKIPPED", idx::SERVER_LISTEN_SKIPPED),
            ("SERVER_WRITTEN", idx::SERVER_WRITTEN),
            ("SERVER_ADDR_SKIPPED", idx::SERVER_ADDR_SKIPPED),
            ("SERVER_NO_SPACE", idx::SERVER_NO_SPACE),
            ("SERVER_ECHO_OK", idx::SERVER_ECHO_OK),
            ("SERVER_ECHO_MISSING", idx::SERVER_ECHO_MISSING),
            ("SERVER_ECHO_WRONG", idx::SERVER_ECHO_WRONG),
            ("CLIENT_CONNECTS", idx::CLIENT_CONNECTS),
            ("CLIENT_PARSED", idx::CLIENT_PARSED),
            ("CLIENT_MISSING", idx::CLIENT_MISSING),
            ("CLIENT_MALFORMED", idx::CLIENT_MALFORMED),
            ("CLIENT_ZERO", idx::CLIENT_ZERO),
            ("CLIENT_ECHOED", idx::CLIENT_ECHOED),
            ("CLIENT_ECHOED_RST", idx::CLIENT_ECHOED_RST),
            ("CLIENT_NO_SPACE", idx::CLIENT_NO_SPACE),
            ("ERRORS", idx::ERRORS),
            ("NR_COUNTERS", idx::NR),
        ];
        for (name, value) in want {
            let needle = format!("FLOWPIN_SOCKOPS_{name} = {value},");
            assert!(h.contains(&needle), "header lacks `{needle}`");
        }
        assert!(h.contains(&format!(
            "#define FLOWPIN_SOCKOPS_MAX_PORTS {MAX_FILTER_ENTRIES}"
        )));
        assert!(h.contains(&format!(
            "#define FLOWPIN_SOCKOPS_MAX_ADDRS {MAX_FILTER_ENTRIES}"
        )));
    }
}
