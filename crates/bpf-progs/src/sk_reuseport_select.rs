//! The `sk_reuseport_select` program: picks the socket of a `SO_REUSEPORT`
//! group for every TCP connection request and UDP packet, by *generation*
//! (one release of the server) and *slot* (one socket per worker or CPU).
//!
//! This is the thin typed kernel layer: load the program, pin and re-open
//! its maps, attach it to a group, read and write the maps. The release
//! logic (which generation is live, what may be retired) lives in the
//! `flowpin-sk-reuseport` crate.
//!
//! # Attach method
//!
//! `setsockopt(SO_ATTACH_REUSEPORT_EBPF)` on any socket of the group
//! ([`SkReuseportSelect::attach`]). As of Linux 6.18 there is no BPF link
//! type for reuseport programs, so this is the only way: the program belongs
//! to the *group* (`struct sock_reuseport`) and stays attached as long as
//! one socket of the group lives, whoever attached it; attaching again
//! replaces it. The program is loaded from section `sk_reuseport/migrate`,
//! so its `expected_attach_type` is `BPF_SK_REUSEPORT_SELECT_OR_MIGRATE`
//! (Linux ≥ 5.14): the kernel also runs it when a listener closes, and it
//! moves the requests of the closed listener's queues to the live generation
//! instead of resetting them.
//!
//! # Maps (key scheme in `src/bpf/sk_reuseport_select.h`)
//!
//! | map | type | what |
//! |---|---|---|
//! | `socks` | `REUSEPORT_SOCKARRAY[MAX_GENS * MAX_SLOTS]` | key `gen_index * MAX_SLOTS + slot` → socket |
//! | `live` | `ARRAY[1]` of `u32` | the live generation; a flip is one write |
//! | `config` | `ARRAY[1]` of [`SelectConfig`] | modes, QUIC CID layout, group address |
//! | `gens` | `ARRAY[MAX_GENS]` of [`GenEntry`] | generation number, slots, state per index |
//! | `flows` | `LRU_HASH` | UDP flow → (generation, slot), size from config |
//! | `stats` | `PERCPU_ARRAY[MAX_GENS + 1]` | per generation index; the last is "no generation" |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, ProgramHandle};

use crate::skel::sk_reuseport_select::SkReuseportSelectSkelBuilder;

/// Generations the socket array has room for (a ring: index = generation % this).
pub const MAX_GENS: u32 = 8;
/// Sockets (workers) per generation.
pub const MAX_SLOTS: u32 = 64;
/// Entries of the socket array.
pub const SOCKS: u32 = MAX_GENS * MAX_SLOTS;
/// Stats index of events that belong to no generation.
pub const STATS_NO_GEN: u32 = MAX_GENS;
/// Largest byte offset of the socket id inside a QUIC destination CID.
pub const CID_MAX_OFFSET: u8 = 18;
/// Default byte offset of the socket id in the DCID: right after the
/// 4-byte server_id of the flowpin CID layout (`flowpin_tcp_opt::quic`,
/// `QUIC_CID_FLOWPIN_ID_OFFSET + 4` = 5).
pub const DEFAULT_CID_SOCK_OFFSET: u8 =
    (flowpin_tcp_opt::consts::QUIC_CID_FLOWPIN_ID_OFFSET + 4) as u8;
/// Number of drop reasons.
pub const DROP_REASONS: usize = 4;

/// `SO_ATTACH_REUSEPORT_EBPF` (asm-generic value; not exported by `libc` for glibc targets).
const SO_ATTACH_REUSEPORT_EBPF: nix::libc::c_int = 52;

/// Errors of the sk_reuseport_select kernel layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// Opening or loading the BPF object failed.
    #[error("loading sk_reuseport_select ({step}): {source} — needs root (CAP_BPF + CAP_NET_ADMIN) and Linux >= 5.14")]
    Load {
        /// Which step failed.
        step: &'static str,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// A map operation failed.
    #[error("{op} on map `{map}` failed: {source}")]
    Map {
        /// The map.
        map: &'static str,
        /// The operation.
        op: &'static str,
        /// libbpf's error (with errno).
        #[source]
        source: libbpf_rs::Error,
    },
    /// The socket-array slot already holds a socket (`EEXIST` from `BPF_NOEXIST`).
    #[error("socket-array slot {key} is busy (already holds a socket); remove it first or use another slot")]
    SlotBusy {
        /// The socket-array key.
        key: u32,
    },
    /// The kernel refused the socket for the socket array (`EINVAL`: not
    /// bound/listening or no `SO_REUSEPORT`; `ENOTSUPP`: not TCP/UDP over IPv4/IPv6).
    #[error("the kernel refused the socket for socket-array slot {key}: {source} — it must be a bound (TCP: listening) SO_REUSEPORT TCP/UDP socket")]
    SocketRefused {
        /// The socket-array key.
        key: u32,
        /// libbpf's error (with errno).
        #[source]
        source: libbpf_rs::Error,
    },
    /// Pinning or opening a pin failed.
    #[error("{op} pin {path}: {source} (EEXIST: something is already pinned there, remove it; ENOENT: no such pin or directory; EPERM/EACCES: need root, and the directory must be on bpffs)")]
    Pin {
        /// What was done.
        op: &'static str,
        /// The bpffs path.
        path: PathBuf,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// `setsockopt(SO_ATTACH_REUSEPORT_EBPF)` failed.
    #[error("setsockopt(SO_ATTACH_REUSEPORT_EBPF) failed: {0} — the socket must be a SO_REUSEPORT TCP/UDP socket")]
    Attach(#[source] std::io::Error),
    /// A value is out of range.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A map returned a value of an unexpected size (stale or foreign pin).
    #[error("map `{map}` has values of {got} bytes, expected {want}: the pinned maps belong to another program version")]
    Layout {
        /// The map.
        map: &'static str,
        /// Size found.
        got: usize,
        /// Size expected.
        want: usize,
    },
}

type Result<T> = std::result::Result<T, SelectError>;

/// How a new flow picks a slot of the live generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SelectMode {
    /// By the kernel's 4-tuple hash of the packet (`md->hash`).
    #[default]
    Hash,
    /// By the CPU that handles the packet (`bpf_get_smp_processor_id() % slots`),
    /// for locality with one socket (thread) per CPU.
    Cpu,
}

impl SelectMode {
    fn raw(self) -> u32 {
        match self {
            SelectMode::Hash => 0,
            SelectMode::Cpu => 1,
        }
    }
    fn from_raw(v: u32) -> Self {
        if v == 1 {
            SelectMode::Cpu
        } else {
            SelectMode::Hash
        }
    }
}

/// Transport protocol of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP (listening sockets).
    Tcp,
    /// UDP (bound sockets).
    Udp,
}

/// Configuration of the program, kept in its `config` map (shared by every
/// process of the group) plus the flow-table size, fixed at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectConfig {
    /// Slot choice for new TCP connections.
    pub tcp_mode: SelectMode,
    /// Slot choice for new UDP flows.
    pub udp_mode: SelectMode,
    /// Keep UDP flows on the socket that first got them (flow table).
    pub udp_affinity: bool,
    /// Route QUIC short-header packets by the socket id in the DCID.
    pub quic_cid: bool,
    /// Byte offset of the 2-byte big-endian socket id in the DCID (≤ [`CID_MAX_OFFSET`]).
    pub cid_sock_offset: u8,
    /// Entries of the UDP flow table (LRU). Fixed when the program is loaded.
    pub flow_table_size: u32,
    /// The group's local address (stored for processes that join).
    pub addr: SocketAddr,
    /// The group's protocol (stored for processes that join).
    pub proto: Proto,
}

/// Layout of `struct fp_rp_config` (see the C header).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct RawConfig {
    tcp_mode: u32,
    udp_mode: u32,
    udp_affinity: u32,
    quic_cid: u32,
    cid_sock_offset: u32,
    proto: u32,
    addr: [u8; 16],
    port: u16,
    family: u16,
    flow_table_size: u32,
}

/// State of a generation entry, as stored in the `gens` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawGenState {
    /// Never used.
    Empty,
    /// Sockets in the array, not live yet.
    Warming,
    /// Takes new flows.
    Live,
    /// Serves existing flows only.
    Draining,
    /// Gone; the index may be reused.
    Retired,
}

impl RawGenState {
    fn raw(self) -> u32 {
        match self {
            RawGenState::Empty => 0,
            RawGenState::Warming => 1,
            RawGenState::Live => 2,
            RawGenState::Draining => 3,
            RawGenState::Retired => 4,
        }
    }
    fn from_raw(v: u32) -> Self {
        match v {
            1 => RawGenState::Warming,
            2 => RawGenState::Live,
            3 => RawGenState::Draining,
            4 => RawGenState::Retired,
            _ => RawGenState::Empty,
        }
    }
}

/// One entry of the `gens` map (`struct fp_rp_gen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenEntry {
    /// Generation number owning the index (0 = none).
    pub gen: u32,
    /// Slots used.
    pub nslots: u32,
    /// State.
    pub state: RawGenState,
    /// Draining deadline, `CLOCK_MONOTONIC` nanoseconds (0 = none).
    pub deadline_ns: u64,
}

/// Per-generation counters (`struct fp_rp_stats`), summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawStats {
    /// Packets (UDP) and connection requests (TCP) delivered.
    pub packets: u64,
    /// New TCP connections and new UDP flows.
    pub new_flows: u64,
    /// TCP requests migrated here from a closed listener.
    pub migrated: u64,
    /// QUIC short-header packets routed by CID.
    pub cid_routed: u64,
    /// Latest `bpf_ktime_get_coarse_ns()` of a delivery (max over CPUs).
    pub last_ns: u64,
    /// Drops by reason: [no live generation, no socket in live generation,
    /// migration without target (kernel fallback), UDP flow whose socket is gone (re-homed)].
    pub drops: [u64; DROP_REASONS],
}

/// A UDP flow of the flow table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowEntry {
    /// Remote address and port.
    pub remote: SocketAddr,
    /// Local address and port.
    pub local: SocketAddr,
    /// Generation that owns the flow.
    pub gen: u32,
    /// Slot within the generation.
    pub slot: u32,
    /// Last packet, `bpf_ktime_get_coarse_ns()`.
    pub last_ns: u64,
}

/// Socket-array key of `slot` in generation `gen` (index `gen % MAX_GENS`).
pub fn sock_key(gen: u32, slot: u32) -> u32 {
    (gen % MAX_GENS) * MAX_SLOTS + slot
}

/// Files pinned under a group's directory.
pub const PIN_NAMES: [&str; 7] = ["prog", "socks", "live", "config", "gens", "flows", "stats"];

/// The loaded program and its maps, held as plain fds (no skeleton lifetime),
/// so the same type serves the process that loaded it and processes that
/// re-open its pins.
#[derive(Debug)]
pub struct SkReuseportSelect {
    prog: ProgramHandle,
    socks: MapHandle,
    live: MapHandle,
    config: MapHandle,
    gens: MapHandle,
    flows: MapHandle,
    stats: MapHandle,
}

/// Plain-old-data map values: `#[repr(C)]` without implicit padding (every
/// struct here spells its padding out as fields), any bit pattern valid.
///
/// # Safety
/// Implement only for types with those properties.
unsafe trait Pod: Copy + Default {}
// SAFETY: integers are plain old data.
unsafe impl Pod for u32 {}
// SAFETY: integers are plain old data.
unsafe impl Pod for u64 {}
// SAFETY: #[repr(C)], u32/u16/byte-array fields laid out without gaps (48 bytes, size test below).
unsafe impl Pod for RawConfig {}
// SAFETY: #[repr(C)], 4 × u32 then u64, no gaps (24 bytes).
unsafe impl Pod for RawGen {}
// SAFETY: #[repr(C)], only u64 fields.
unsafe impl Pod for RawStatsC {}
// SAFETY: #[repr(C)], two byte arrays then two u16, no gaps (36 bytes).
unsafe impl Pod for RawFlowKey {}
// SAFETY: #[repr(C)], 2 × u32 then u64, no gaps (16 bytes).
unsafe impl Pod for RawFlow {}

fn bytes_of<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: T is Pod: every byte of it is initialised (no padding), so
    // viewing it as a byte slice of its size is sound.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

fn read_pod<T: Pod>(map: &'static str, b: &[u8]) -> Result<T> {
    let want = std::mem::size_of::<T>();
    if b.len() < want {
        return Err(SelectError::Layout {
            map,
            got: b.len(),
            want,
        });
    }
    let mut v = T::default();
    // SAFETY: `b` holds at least size_of::<T>() bytes, T is Pod (any bit
    // pattern valid) and a byte copy has no alignment requirement.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), (&mut v as *mut T).cast::<u8>(), want) };
    Ok(v)
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct RawGen {
    gen: u32,
    nslots: u32,
    state: u32,
    pad: u32,
    deadline_ns: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct RawStatsC {
    packets: u64,
    new_flows: u64,
    migrated: u64,
    cid_routed: u64,
    last_ns: u64,
    drops: [u64; DROP_REASONS],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct RawFlowKey {
    raddr: [u8; 16],
    laddr: [u8; 16],
    rport: u16,
    lport: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct RawFlow {
    gen: u32,
    slot: u32,
    last_ns: u64,
}

fn map_err(map: &'static str, op: &'static str) -> impl FnOnce(libbpf_rs::Error) -> SelectError {
    move |source| SelectError::Map { map, op, source }
}

fn addr_from(raw: [u8; 16], port_be: u16) -> SocketAddr {
    let v6 = Ipv6Addr::from(raw);
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    };
    SocketAddr::new(ip, u16::from_be(port_be))
}

impl SkReuseportSelect {
    /// Loads the program with `cfg` (flow-table size applied before load,
    /// the rest written to the `config` map).
    pub fn load(cfg: &SelectConfig) -> Result<Self> {
        if cfg.cid_sock_offset > CID_MAX_OFFSET {
            return Err(SelectError::Invalid(format!(
                "cid_sock_offset {} > {CID_MAX_OFFSET}: a QUIC CID is at most 20 bytes",
                cfg.cid_sock_offset
            )));
        }
        if cfg.flow_table_size == 0 {
            return Err(SelectError::Invalid("flow_table_size must be > 0".into()));
        }
        let mut obj = std::mem::MaybeUninit::uninit();
        let mut open = SkReuseportSelectSkelBuilder::default()
            .open(&mut obj)
            .map_err(|source| SelectError::Load {
                step: "open",
                source,
            })?;
        open.maps
            .flows
            .set_max_entries(cfg.flow_table_size)
            .map_err(|source| SelectError::Load {
                step: "set flows max_entries",
                source,
            })?;
        let skel = open.load().map_err(|source| SelectError::Load {
            step: "load",
            source,
        })?;
        let h = |m: &libbpf_rs::Map<'_>, name: &'static str| {
            MapHandle::try_from(m).map_err(|source| SelectError::Load { step: name, source })
        };
        let this = SkReuseportSelect {
            prog: ProgramHandle::try_from(&skel.progs.flowpin_select).map_err(|source| {
                SelectError::Load {
                    step: "dup program fd",
                    source,
                }
            })?,
            socks: h(&skel.maps.socks, "dup socks fd")?,
            live: h(&skel.maps.live, "dup live fd")?,
            config: h(&skel.maps.config, "dup config fd")?,
            gens: h(&skel.maps.gens, "dup gens fd")?,
            flows: h(&skel.maps.flows, "dup flows fd")?,
            stats: h(&skel.maps.stats, "dup stats fd")?,
        };
        this.set_config(cfg)?;
        Ok(this)
    }

    /// Pins the program and every map under `dir` (a bpffs directory that
    /// must exist): `dir/prog`, `dir/socks`, ... (see [`PIN_NAMES`]).
    pub fn pin(&mut self, dir: &Path) -> Result<()> {
        let p = |n: &str| dir.join(n);
        let pin_err = |path: PathBuf| {
            move |source| SelectError::Pin {
                op: "creating",
                path,
                source,
            }
        };
        self.prog.pin(p("prog")).map_err(pin_err(p("prog")))?;
        self.socks.pin(p("socks")).map_err(pin_err(p("socks")))?;
        self.live.pin(p("live")).map_err(pin_err(p("live")))?;
        self.config.pin(p("config")).map_err(pin_err(p("config")))?;
        self.gens.pin(p("gens")).map_err(pin_err(p("gens")))?;
        self.flows.pin(p("flows")).map_err(pin_err(p("flows")))?;
        self.stats.pin(p("stats")).map_err(pin_err(p("stats")))?;
        Ok(())
    }

    /// Re-opens a program and maps pinned by [`pin`](Self::pin) (in this
    /// or another process) and checks their layout.
    pub fn from_pinned(dir: &Path) -> Result<Self> {
        let p = |n: &str| dir.join(n);
        let open_err = |path: PathBuf| {
            move |source| SelectError::Pin {
                op: "opening",
                path,
                source,
            }
        };
        let m = |n: &str| MapHandle::from_pinned_path(p(n)).map_err(open_err(p(n)));
        let this = SkReuseportSelect {
            prog: ProgramHandle::from_pinned_path(p("prog")).map_err(open_err(p("prog")))?,
            socks: m("socks")?,
            live: m("live")?,
            config: m("config")?,
            gens: m("gens")?,
            flows: m("flows")?,
            stats: m("stats")?,
        };
        let checks: [(&'static str, usize, usize); 5] = [
            ("socks", this.socks.value_size() as usize, 8),
            (
                "config",
                this.config.value_size() as usize,
                std::mem::size_of::<RawConfig>(),
            ),
            (
                "gens",
                this.gens.value_size() as usize,
                std::mem::size_of::<RawGen>(),
            ),
            (
                "flows",
                this.flows.value_size() as usize,
                std::mem::size_of::<RawFlow>(),
            ),
            (
                "stats",
                this.stats.value_size() as usize,
                std::mem::size_of::<RawStatsC>(),
            ),
        ];
        for (map, got, want) in checks {
            if got != want {
                return Err(SelectError::Layout { map, got, want });
            }
        }
        if this.socks.max_entries() != SOCKS || this.gens.max_entries() != MAX_GENS {
            return Err(SelectError::Layout {
                map: "socks/gens",
                got: this.socks.max_entries() as usize,
                want: SOCKS as usize,
            });
        }
        Ok(this)
    }

    /// Removes the pins under `dir` (missing ones are ignored) and the
    /// directory itself if it is then empty.
    pub fn unpin(dir: &Path) -> std::io::Result<()> {
        for n in PIN_NAMES {
            match std::fs::remove_file(dir.join(n)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Attaches the program to the reuseport group of `sock` with
    /// `SO_ATTACH_REUSEPORT_EBPF` (replaces any program the group had).
    pub fn attach(&self, sock: BorrowedFd<'_>) -> Result<()> {
        let fd: nix::libc::c_int = self.prog.as_fd().as_raw_fd();
        // SAFETY: setsockopt with a valid socket fd (borrowed for the call),
        // a pointer to a live c_int and its exact size.
        let rc = unsafe {
            nix::libc::setsockopt(
                sock.as_raw_fd(),
                nix::libc::SOL_SOCKET,
                SO_ATTACH_REUSEPORT_EBPF,
                (&fd as *const nix::libc::c_int).cast(),
                std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(SelectError::Attach(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// The program's kernel id.
    pub fn prog_id(&self) -> u32 {
        self.prog.id()
    }

    /// Writes `cfg` to the `config` map (flow-table size is fixed at load and ignored here).
    pub fn set_config(&self, cfg: &SelectConfig) -> Result<()> {
        let (addr, family) = match cfg.addr.ip() {
            IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), 4u16),
            IpAddr::V6(a) => (a.octets(), 6u16),
        };
        let raw = RawConfig {
            tcp_mode: cfg.tcp_mode.raw(),
            udp_mode: cfg.udp_mode.raw(),
            udp_affinity: cfg.udp_affinity as u32,
            quic_cid: cfg.quic_cid as u32,
            cid_sock_offset: u32::from(cfg.cid_sock_offset),
            proto: match cfg.proto {
                Proto::Tcp => 6,
                Proto::Udp => 17,
            },
            addr,
            port: cfg.addr.port(),
            family,
            flow_table_size: self.flows.max_entries(),
        };
        self.config
            .update(&0u32.to_ne_bytes(), bytes_of(&raw), MapFlags::ANY)
            .map_err(map_err("config", "update"))
    }

    /// Reads the `config` map.
    pub fn config(&self) -> Result<SelectConfig> {
        let v = self
            .config
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(map_err("config", "lookup"))?
            .ok_or_else(|| SelectError::Invalid("config map has no entry 0".into()))?;
        let raw: RawConfig = read_pod("config", &v)?;
        let v6 = Ipv6Addr::from(raw.addr);
        let ip = if raw.family == 4 {
            IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED))
        } else {
            IpAddr::V6(v6)
        };
        let proto = match raw.proto {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            p => {
                return Err(SelectError::Invalid(format!(
                    "config map holds protocol {p}: the group was never configured (stale pin?)"
                )))
            }
        };
        Ok(SelectConfig {
            tcp_mode: SelectMode::from_raw(raw.tcp_mode),
            udp_mode: SelectMode::from_raw(raw.udp_mode),
            udp_affinity: raw.udp_affinity != 0,
            quic_cid: raw.quic_cid != 0,
            cid_sock_offset: raw.cid_sock_offset.min(u32::from(CID_MAX_OFFSET)) as u8,
            flow_table_size: raw.flow_table_size,
            addr: SocketAddr::new(ip, raw.port),
            proto,
        })
    }

    /// Puts `sock` into socket-array slot `key` (`BPF_NOEXIST`: a busy slot is an error).
    pub fn insert_socket(&self, key: u32, sock: BorrowedFd<'_>) -> Result<()> {
        if key >= SOCKS {
            return Err(SelectError::Invalid(format!(
                "socket-array key {key} >= {SOCKS}"
            )));
        }
        let fd = sock.as_raw_fd() as u64;
        match self
            .socks
            .update(&key.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::NO_EXIST)
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::AlreadyExists => {
                Err(SelectError::SlotBusy { key })
            }
            Err(source) => Err(SelectError::SocketRefused { key, source }),
        }
    }

    /// Removes slot `key` from the socket array; `Ok(false)` if it was empty.
    pub fn remove_socket(&self, key: u32) -> Result<bool> {
        match self.socks.delete(&key.to_ne_bytes()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(SelectError::Map {
                map: "socks",
                op: "delete",
                source,
            }),
        }
    }

    /// Cookie of the socket in slot `key` (`None` if empty: never filled,
    /// removed, or the socket was closed).
    pub fn socket_cookie(&self, key: u32) -> Result<Option<u64>> {
        match self.socks.lookup(&key.to_ne_bytes(), MapFlags::ANY) {
            Ok(Some(v)) => Ok(Some(read_pod::<u64>("socks", &v)?)),
            Ok(None) => Ok(None),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SelectError::Map {
                map: "socks",
                op: "lookup",
                source,
            }),
        }
    }

    /// The live generation (0 = none).
    pub fn live(&self) -> Result<u32> {
        let v = self
            .live
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(map_err("live", "lookup"))?
            .unwrap_or_default();
        read_pod("live", &v)
    }

    /// Sets the live generation: the flip, one map write.
    pub fn set_live(&self, gen: u32) -> Result<()> {
        self.live
            .update(&0u32.to_ne_bytes(), &gen.to_ne_bytes(), MapFlags::ANY)
            .map_err(map_err("live", "update"))
    }

    /// Reads entry `index` of the `gens` map.
    pub fn gen_entry(&self, index: u32) -> Result<GenEntry> {
        let v = self
            .gens
            .lookup(&index.to_ne_bytes(), MapFlags::ANY)
            .map_err(map_err("gens", "lookup"))?
            .unwrap_or_default();
        let raw: RawGen = read_pod("gens", &v)?;
        Ok(GenEntry {
            gen: raw.gen,
            nslots: raw.nslots,
            state: RawGenState::from_raw(raw.state),
            deadline_ns: raw.deadline_ns,
        })
    }

    /// Writes entry `index` of the `gens` map.
    pub fn set_gen_entry(&self, index: u32, e: &GenEntry) -> Result<()> {
        if index >= MAX_GENS {
            return Err(SelectError::Invalid(format!(
                "generation index {index} >= {MAX_GENS}"
            )));
        }
        let raw = RawGen {
            gen: e.gen,
            nslots: e.nslots,
            state: e.state.raw(),
            pad: 0,
            deadline_ns: e.deadline_ns,
        };
        self.gens
            .update(&index.to_ne_bytes(), bytes_of(&raw), MapFlags::ANY)
            .map_err(map_err("gens", "update"))
    }

    /// Counters of stats index `index` (a generation index, or [`STATS_NO_GEN`]), summed over CPUs.
    pub fn stats(&self, index: u32) -> Result<RawStats> {
        let per_cpu = self
            .stats
            .lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
            .map_err(map_err("stats", "lookup_percpu"))?
            .unwrap_or_default();
        let mut s = RawStats::default();
        for v in per_cpu {
            let c: RawStatsC = read_pod("stats", &v)?;
            s.packets += c.packets;
            s.new_flows += c.new_flows;
            s.migrated += c.migrated;
            s.cid_routed += c.cid_routed;
            s.last_ns = s.last_ns.max(c.last_ns);
            for (d, x) in s.drops.iter_mut().zip(c.drops) {
                *d += x;
            }
        }
        Ok(s)
    }

    /// Zeroes stats index `index` on every CPU.
    pub fn reset_stats(&self, index: u32) -> Result<()> {
        let ncpu = libbpf_rs::num_possible_cpus().map_err(map_err("stats", "num_possible_cpus"))?;
        let zero = vec![vec![0u8; std::mem::size_of::<RawStatsC>()]; ncpu];
        self.stats
            .update_percpu(&index.to_ne_bytes(), &zero, MapFlags::ANY)
            .map_err(map_err("stats", "update_percpu"))
    }

    /// Every entry of the UDP flow table.
    pub fn flows(&self) -> Result<Vec<FlowEntry>> {
        let mut out = Vec::new();
        for k in self.flows.keys() {
            let Some(v) = self
                .flows
                .lookup(&k, MapFlags::ANY)
                .map_err(map_err("flows", "lookup"))?
            else {
                continue; // evicted meanwhile
            };
            let key: RawFlowKey = read_pod("flows", &k)?;
            let f: RawFlow = read_pod("flows", &v)?;
            out.push(FlowEntry {
                remote: addr_from(key.raddr, key.rport),
                local: addr_from(key.laddr, key.lport),
                gen: f.gen,
                slot: f.slot,
                last_ns: f.last_ns,
            });
        }
        Ok(out)
    }

    /// Entries of the flow table (fixed at load).
    pub fn flow_table_size(&self) -> u32 {
        self.flows.max_entries()
    }
}

/// `CLOCK_MONOTONIC` now in nanoseconds, the clock of `bpf_ktime_get_coarse_ns()`.
pub fn monotonic_ns() -> u64 {
    let mut ts = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the live local `ts`.
    let rc = unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/bpf/sk_reuseport_select.h"
        ))
        .unwrap()
    }

    fn define(h: &str, name: &str) -> u32 {
        let line = h
            .lines()
            .find(|l| l.starts_with(&format!("#define {name} ")))
            .unwrap_or_else(|| panic!("{name} not in header"));
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    #[test]
    fn rust_constants_match_the_c_header() {
        let h = header();
        assert_eq!(define(&h, "FP_RP_MAX_GENS"), MAX_GENS);
        assert_eq!(define(&h, "FP_RP_MAX_SLOTS"), MAX_SLOTS);
        assert_eq!(define(&h, "FP_RP_DROP_REASONS") as usize, DROP_REASONS);
        assert_eq!(
            define(&h, "FP_RP_CID_MAX_OFFSET"),
            u32::from(CID_MAX_OFFSET)
        );
        assert_eq!(define(&h, "FP_RP_MODE_CPU"), SelectMode::Cpu.raw());
        assert!(h.contains(
            "#define FP_RP_CID_DEFAULT_SOCK_OFFSET (FLOWPIN_QUIC_CID_FLOWPIN_ID_OFFSET + 4)"
        ));
        // Right after the flowpin CID layout's 4-byte server_id: byte 0 is
        // the layout's version byte, bytes 1..5 the server_id.
        assert_eq!(DEFAULT_CID_SOCK_OFFSET, 5);
        assert_eq!(define(&h, "FP_RP_STATE_LIVE"), RawGenState::Live.raw());
        assert_eq!(
            define(&h, "FP_RP_STATE_RETIRED"),
            RawGenState::Retired.raw()
        );
        assert_eq!(
            define(&h, "FP_RP_STATE_DRAINING"),
            RawGenState::Draining.raw()
        );
    }

    #[test]
    fn struct_sizes_match_the_c_layouts() {
        // Against the layouts libbpf-cargo generated from the object's BTF
        // (the C structs as the compiler laid them out), not hand-counted literals.
        use crate::skel::sk_reuseport_select::types as c;
        use std::mem::{align_of, size_of};
        assert_eq!(size_of::<RawConfig>(), size_of::<c::fp_rp_config>());
        assert_eq!(size_of::<RawGen>(), size_of::<c::fp_rp_gen>());
        assert_eq!(size_of::<RawStatsC>(), size_of::<c::fp_rp_stats>());
        assert_eq!(size_of::<RawFlowKey>(), size_of::<c::fp_rp_flow_key>());
        assert_eq!(size_of::<RawFlow>(), size_of::<c::fp_rp_flow>());
        assert!(align_of::<RawConfig>() >= align_of::<c::fp_rp_config>());
        assert!(align_of::<RawGen>() >= align_of::<c::fp_rp_gen>());
    }

    #[test]
    fn sock_key_follows_the_documented_scheme() {
        assert_eq!(sock_key(1, 0), MAX_SLOTS);
        assert_eq!(sock_key(8, 3), 3);
        assert_eq!(sock_key(9, 63), MAX_SLOTS + 63);
    }

    #[test]
    fn addr_from_unmaps_ipv4() {
        let v4 = Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets();
        assert_eq!(addr_from(v4, 53u16.to_be()), "10.1.2.3:53".parse().unwrap());
        let v6 = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(addr_from(v6, 443u16.to_be()), "[::1]:443".parse().unwrap());
    }
}
