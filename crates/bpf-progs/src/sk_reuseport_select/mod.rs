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
//! replaces it. The [`ReuseportLink`] that `attach` returns is therefore
//! the one link of this crate that does **not** detach on drop (dropping a
//! process's handle must not take the program away from the other
//! processes of the group, like a link pinned to the group);
//! [`Link::detach`] detaches explicitly
//! (`SO_DETACH_REUSEPORT_BPF` through the socket the link keeps) and
//! [`Link::update_program`] swaps the
//! group's program. The program is loaded from section `sk_reuseport/migrate`,
//! so its `expected_attach_type` is `BPF_SK_REUSEPORT_SELECT_OR_MIGRATE`
//! (Linux ≥ 5.14): the kernel also runs it when a listener closes, and it
//! moves the requests of the closed listener's queues to the live generation
//! instead of resetting them.
//!
//! # Maps (key scheme in `<flowpin/sk_reuseport_select.h>` of `flowpin-bpf-abi`)
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
use std::path::Path;

use flowpin_bpf_abi::reuseport as abi;
use libbpf_rs::skel::SkelBuilder;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::error::KernelError;
use crate::pinned_maps::{self, MapTable, ProgFd};
use crate::skel::sk_reuseport_select::types::{
    fp_rp_config, fp_rp_flow, fp_rp_flow_key, fp_rp_gen,
};
use crate::skel::sk_reuseport_select::SkReuseportSelectSkelBuilder;
use crate::skel::{bytes_of, read, CStruct};

mod error;
mod link;
mod types;

pub use crate::link::Link;
pub use error::SelectError;
pub use flowpin_bpf_abi::reuseport::{sock_key, MAX_GENS, MAX_SLOTS, SOCKS, STATS_NO_GEN};
pub use link::ReuseportLink;
pub use types::{
    FlowEntry, GenEntry, Proto, RawGenState, RawStats, SelectConfig, SelectMode, CID_MAX_OFFSET,
    DEFAULT_CID_SOCK_OFFSET, DROP_REASONS,
};

type Result<T> = std::result::Result<T, SelectError>;

const LOAD_HINT: &str = "needs root (CAP_BPF + CAP_NET_ADMIN) and Linux >= 5.14";

/// The loaded program and its maps, held as plain fds (no skeleton lifetime),
/// so the same type serves the process that loaded it and processes that
/// re-open its pins.
#[derive(Debug)]
pub struct SkReuseportSelect {
    prog: ProgFd,
    maps: SelectMaps,
}

crate::pinned_maps::map_table! {
    /// The maps of `sk_reuseport_select`.
    #[derive(Debug)]
    struct SelectMaps {
        socks: Map,
        live: Map,
        config: Map,
        gens: Map,
        flows: Map,
        stats: Map,
    }
    extra {}
    pin_names:
        /// Files pinned under a group's directory: the maps, then `prog`.
        pub const PIN_NAMES;
}

fn read_pod<T: CStruct>(map: &'static str, b: &[u8]) -> Result<T> {
    read(b).ok_or_else(|| {
        KernelError::out_of_sync(
            format!("map {map}"),
            "lookup",
            b.len(),
            std::mem::size_of::<T>(),
        )
        .into()
    })
}

fn map_err(map: &'static str, op: &'static str) -> impl FnOnce(libbpf_rs::Error) -> SelectError {
    move |e| KernelError::map(map, op)(e).into()
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
    pub fn load(config: SelectConfig) -> Result<Self> {
        let cfg = &config;
        if cfg.cid_sock_offset > CID_MAX_OFFSET {
            return Err(SelectError::InvalidConfig(format!(
                "cid_sock_offset {} > {CID_MAX_OFFSET}: a QUIC CID is at most 20 bytes",
                cfg.cid_sock_offset
            )));
        }
        if cfg.flow_table_size == 0 {
            return Err(SelectError::InvalidConfig(
                "flow_table_size must be > 0".into(),
            ));
        }
        let mut obj = std::mem::MaybeUninit::uninit();
        let mut open = SkReuseportSelectSkelBuilder::default()
            .open(&mut obj)
            .map_err(KernelError::object(
                "object sk_reuseport_select",
                "open",
                "",
            ))?;
        open.maps
            .flows
            .set_max_entries(cfg.flow_table_size)
            .map_err(KernelError::map("flows", "set_max_entries"))?;
        let (prog, maps) = pinned_maps::load_table(open, None, "flowpin_select", LOAD_HINT)?;
        let this = SkReuseportSelect {
            prog: ProgFd::new(prog)?,
            maps,
        };
        this.set_config(cfg)?;
        Ok(this)
    }

    /// Pins the program and every map under `dir` (a bpffs directory that
    /// must exist): `dir/prog`, `dir/socks`, ... (see [`PIN_NAMES`]).
    pub fn pin(&self, dir: impl AsRef<Path>) -> Result<()> {
        Ok(pinned_maps::pin_into(
            dir.as_ref(),
            &self.maps,
            self.prog.as_fd(),
        )?)
    }

    /// Re-opens a program and maps pinned by [`pin`](Self::pin) (in this
    /// or another process) and checks their layout;
    /// [`SelectError::NotPinned`] if nothing is pinned there.
    pub fn from_pinned(dir: impl AsRef<Path>) -> Result<Self> {
        let (prog, maps) = pinned_maps::open_table(dir.as_ref())?;
        let this = SkReuseportSelect {
            prog: ProgFd::new(prog)?,
            maps,
        };
        let checks: [(&'static str, usize, usize); 5] = [
            ("socks", this.maps.socks.value_size() as usize, 8),
            (
                "config",
                this.maps.config.value_size() as usize,
                std::mem::size_of::<fp_rp_config>(),
            ),
            (
                "gens",
                this.maps.gens.value_size() as usize,
                std::mem::size_of::<fp_rp_gen>(),
            ),
            (
                "flows",
                this.maps.flows.value_size() as usize,
                std::mem::size_of::<fp_rp_flow>(),
            ),
            (
                "stats",
                this.maps.stats.value_size() as usize,
                std::mem::size_of::<abi::Stats>(),
            ),
        ];
        for (map, got, want) in checks {
            if got != want {
                return Err(KernelError::out_of_sync(
                    format!("pinned map {map}"),
                    "open",
                    got,
                    want,
                )
                .into());
            }
        }
        if this.maps.socks.max_entries() != SOCKS || this.maps.gens.max_entries() != MAX_GENS {
            return Err(SelectError::Invalid(format!(
                "pinned maps socks/gens have {}/{} entries, this build expects {SOCKS}/{MAX_GENS}: the pins belong to another flowpin version",
                this.maps.socks.max_entries(),
                this.maps.gens.max_entries()
            )));
        }
        Ok(this)
    }

    /// Removes the pins under `dir` (missing ones are ignored) and the
    /// directory itself if it is then empty.
    pub fn unpin(dir: impl AsRef<Path>) -> Result<()> {
        Ok(pinned_maps::unpin_from::<SelectMaps>(dir.as_ref())?)
    }

    /// Attaches the program to the reuseport group of `sock` with
    /// `SO_ATTACH_REUSEPORT_EBPF` (replaces any program the group had). It
    /// stays attached while a socket of the group lives: see the module
    /// docs for why the returned link does not detach on drop.
    pub fn attach(&self, sock: BorrowedFd<'_>) -> Result<ReuseportLink> {
        Ok(ReuseportLink::attach(
            sock,
            self.prog.as_fd(),
            self.prog.id(),
        )?)
    }

    /// The program's fd.
    pub fn program_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// One of the program's maps by its pin name (`socks`, `live`,
    /// `config`, `gens`, `flows`, `stats`; see the module docs), for users
    /// who go lower (a [`libbpf_rs::MapHandle`] of the libbpf-rs this crate
    /// re-exports).
    pub fn map(&self, name: &str) -> Option<&MapHandle> {
        self.maps.map_named(name)
    }

    /// The program's kernel id.
    pub fn program_id(&self) -> u32 {
        self.prog.id()
    }

    /// Writes `cfg` to the `config` map (flow-table size is fixed at load and ignored here).
    pub fn set_config(&self, cfg: &SelectConfig) -> Result<()> {
        let (addr, family) = match cfg.addr.ip() {
            IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), 4u16),
            IpAddr::V6(a) => (a.octets(), 6u16),
        };
        let raw = fp_rp_config {
            tcp_mode: cfg.tcp_mode.raw(),
            udp_mode: cfg.udp_mode.raw(),
            udp_affinity: cfg.udp_affinity as u32,
            quic_cid: cfg.quic_cid as u32,
            cid_sock_offset: u32::from(cfg.cid_sock_offset),
            proto: u32::from(cfg.proto.number()),
            addr,
            port: cfg.addr.port(),
            family,
            flow_table_size: self.maps.flows.max_entries(),
            drain_deadline_ms: cfg.drain_deadline_ms,
            drain_idle_ms: cfg.drain_idle_ms,
        };
        self.maps
            .config
            .update(&0u32.to_ne_bytes(), bytes_of(&raw), MapFlags::ANY)
            .map_err(map_err("config", "update"))
    }

    /// Reads the `config` map.
    pub fn config(&self) -> Result<SelectConfig> {
        let v = self
            .maps
            .config
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(map_err("config", "lookup"))?
            .ok_or_else(|| SelectError::Invalid("config map has no entry 0".into()))?;
        let raw: fp_rp_config = read_pod("config", &v)?;
        let v6 = Ipv6Addr::from(raw.addr);
        let ip = if raw.family == 4 {
            IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED))
        } else {
            IpAddr::V6(v6)
        };
        let proto = u8::try_from(raw.proto)
            .ok()
            .and_then(Proto::from_number)
            .ok_or_else(|| {
                SelectError::Invalid(format!(
                    "config map holds protocol {}: the group was never configured (stale pin?)",
                    raw.proto
                ))
            })?;
        Ok(SelectConfig {
            tcp_mode: SelectMode::from_raw(raw.tcp_mode),
            udp_mode: SelectMode::from_raw(raw.udp_mode),
            udp_affinity: raw.udp_affinity != 0,
            quic_cid: raw.quic_cid != 0,
            cid_sock_offset: raw.cid_sock_offset.min(u32::from(CID_MAX_OFFSET)) as u8,
            flow_table_size: raw.flow_table_size,
            addr: SocketAddr::new(ip, raw.port),
            proto,
            drain_deadline_ms: raw.drain_deadline_ms,
            drain_idle_ms: raw.drain_idle_ms,
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
            .maps
            .socks
            .update(&key.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::NO_EXIST)
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::AlreadyExists => {
                Err(SelectError::SlotBusy { key })
            }
            Err(e) => Err(SelectError::SocketRefused {
                key,
                source: KernelError::map("socks", "update")(e),
            }),
        }
    }

    /// Removes slot `key` from the socket array; `Ok(false)` if it was empty.
    pub fn remove_socket(&self, key: u32) -> Result<bool> {
        match self.maps.socks.delete(&key.to_ne_bytes()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(map_err("socks", "delete")(e)),
        }
    }

    /// Cookie of the socket in slot `key` (`None` if empty: never filled,
    /// removed, or the socket was closed).
    pub fn socket_cookie(&self, key: u32) -> Result<Option<u64>> {
        match self.maps.socks.lookup(&key.to_ne_bytes(), MapFlags::ANY) {
            Ok(Some(v)) => Ok(Some(u64::from_ne_bytes(
                v.get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| KernelError::out_of_sync("map socks", "lookup", v.len(), 8))?,
            ))),
            Ok(None) => Ok(None),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(map_err("socks", "lookup")(e)),
        }
    }

    /// The live generation (0 = none).
    pub fn live(&self) -> Result<u32> {
        let v = self
            .maps
            .live
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(map_err("live", "lookup"))?
            .unwrap_or_default();
        let b: [u8; 4] = v
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| KernelError::out_of_sync("map live", "lookup", v.len(), 4))?;
        Ok(u32::from_ne_bytes(b))
    }

    /// Sets the live generation: the flip, one map write.
    pub fn set_live(&self, gen: u32) -> Result<()> {
        self.maps
            .live
            .update(&0u32.to_ne_bytes(), &gen.to_ne_bytes(), MapFlags::ANY)
            .map_err(map_err("live", "update"))
    }

    /// Reads entry `index` of the `gens` map.
    pub fn gen_entry(&self, index: u32) -> Result<GenEntry> {
        let v = self
            .maps
            .gens
            .lookup(&index.to_ne_bytes(), MapFlags::ANY)
            .map_err(map_err("gens", "lookup"))?
            .unwrap_or_default();
        let raw: fp_rp_gen = read_pod("gens", &v)?;
        Ok(GenEntry {
            gen: raw.r#gen,
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
        let raw = fp_rp_gen {
            r#gen: e.gen,
            nslots: e.nslots,
            state: e.state.raw(),
            _pad: 0,
            deadline_ns: e.deadline_ns,
        };
        self.maps
            .gens
            .update(&index.to_ne_bytes(), bytes_of(&raw), MapFlags::ANY)
            .map_err(map_err("gens", "update"))
    }

    /// Counters of stats index `index` (a generation index, or
    /// [`STATS_NO_GEN`]), summed over CPUs (one `lookup_percpu`).
    pub fn stats_of(&self, index: u32) -> Result<RawStats> {
        let per_cpu = self
            .maps
            .stats
            .lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
            .map_err(map_err("stats", "lookup_percpu"))?
            .unwrap_or_default();
        let mut s = RawStats::default();
        for v in per_cpu {
            let c: abi::Stats = read_pod("stats", &v)?;
            s.add(&c);
        }
        Ok(s)
    }

    /// Counters of the whole program: every generation index and the
    /// "no generation" entry, summed over CPUs (one `lookup_percpu` per
    /// index, `MAX_GENS + 1` in all).
    pub fn stats(&self) -> Result<RawStats> {
        let mut total = RawStats::default();
        for index in 0..=STATS_NO_GEN {
            let per_cpu = self
                .maps
                .stats
                .lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
                .map_err(map_err("stats", "lookup_percpu"))?
                .unwrap_or_default();
            for v in per_cpu {
                total.add(&read_pod::<abi::Stats>("stats", &v)?);
            }
        }
        Ok(total)
    }

    /// Zeroes stats index `index` on every CPU.
    pub fn reset_stats(&self, index: u32) -> Result<()> {
        let ncpu = libbpf_rs::num_possible_cpus()
            .map_err(|e| KernelError::libbpf("/sys/devices/system/cpu/possible", "read", &e, ""))?;
        let zero = vec![vec![0u8; std::mem::size_of::<abi::Stats>()]; ncpu];
        self.maps
            .stats
            .update_percpu(&index.to_ne_bytes(), &zero, MapFlags::ANY)
            .map_err(map_err("stats", "update_percpu"))
    }

    /// Every entry of the UDP flow table.
    pub fn flows(&self) -> Result<Vec<FlowEntry>> {
        let mut out = Vec::new();
        for k in self.maps.flows.keys() {
            let Some(v) = self
                .maps
                .flows
                .lookup(&k, MapFlags::ANY)
                .map_err(map_err("flows", "lookup"))?
            else {
                continue; // evicted meanwhile
            };
            let key: fp_rp_flow_key = read_pod("flows", &k)?;
            let f: fp_rp_flow = read_pod("flows", &v)?;
            out.push(FlowEntry {
                remote: addr_from(key.raddr, key.rport),
                local: addr_from(key.laddr, key.lport),
                gen: f.r#gen,
                slot: f.slot,
                last_ns: f.last_ns,
            });
        }
        Ok(out)
    }

    /// Entries of the flow table (fixed at load).
    pub fn flow_table_size(&self) -> u32 {
        self.maps.flows.max_entries()
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
