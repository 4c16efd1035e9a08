//! `sk_lookup`: steer connections and datagrams for any address and any
//! port to a chosen socket, whatever that socket is bound to
//! (`BPF_PROG_TYPE_SK_LOOKUP`, Linux ≥ 5.9).
//!
//! The program runs when the kernel looks up the socket for a TCP SYN or a
//! UDP datagram in the network namespace it is attached to. It looks the
//! packet's (protocol, local address, local port) up in its *bindings* — a
//! hash of host prefixes (`/32`, `/128`) first, then an LPM trie of shorter
//! ones; a match names a *label*, and the socket registered for the
//! label (a TCP listener or a UDP socket, in a `SOCKMAP`) receives the
//! packet. Precedence: the longest address prefix wins, then a specific
//! port beats "any port" (the key scheme, the lookup order and why it
//! keeps the precedence are in `<flowpin/sk_lookup.h>` of
//! `flowpin-bpf-abi`). A one-word *summary* tells the program which
//! lookups can match at all, so a packet no binding can match costs one
//! array read. Anything else — no binding, no socket,
//! a socket the kernel refuses — falls through to the regular lookup. A
//! socket of a `SO_REUSEPORT` group is assigned with the group's own
//! selection left on, so the group's `sk_reuseport` program still picks.
//!
//! This is the thin kernel layer, in the shape shared by every program of
//! the crate: [`SkLookupConfig`] → [`SkLookup::load`] →
//! [`SkLookup::attach`] → [`SkLookupLink`] (a BPF link: detaches on drop
//! unless pinned; the [`Link`] verbs and [`SkLookupLink::from_pinned`]) →
//! [`SkLookup::stats`]. Map layouts and constants are those of
//! [`flowpin_bpf_abi::sk_lookup`] ([`types`] names them as in C), so the
//! pure model of `flowpin-sk-lookup` needs no skeleton. Bindings, labels
//! and registration rules live in that crate.
//!
//! # Maps
//!
//! | map | type | key → value |
//! |---|---|---|
//! | `bindings` | `LPM_TRIE` ([`SkLookupConfig::max_bindings`]) | [`types::fp_skl_key`] → [`types::fp_skl_binding`] (prefixes shorter than a host) |
//! | `hosts` | `HASH` ([`SkLookupConfig::max_bindings`]) | [`types::fp_skl_host_key`] → [`types::fp_skl_binding`] (host prefixes) |
//! | `summary` | `ARRAY[1]` | `0` → `u32`: [`KIND_HOST_PORT`]… bits at [`summary_shift`] |
//! | `destinations` | `SOCKMAP[DESTINATIONS]` | `label * 2 + slot` → socket |
//! | `labels` | `HASH[MAX_LABELS]` | [`types::fp_skl_label_name`] → [`types::fp_skl_label`] (user space only) |
//! | `dest_meta` | `ARRAY[DESTINATIONS]` | index → [`types::fp_skl_dest`] (user space only) |
//! | `stats` | `PERCPU_ARRAY[MAX_LABELS + 1]` | label id → [`types::fp_skl_stats`]; the last: unmatched lookups |
//!
//! ```no_run
//! use flowpin_bpf_progs::sk_lookup::{SkLookup, SkLookupConfig};
//! let prog = SkLookup::load(SkLookupConfig::new())?;
//! let link = prog.attach("/run/netns/edge")?; // detached when `link` drops
//! println!("{:?}", prog.stats()?);
//! # drop(link);
//! # Ok::<(), flowpin_bpf_progs::sk_lookup::SkLookupError>(())
//! ```

mod error;
mod link;
mod maps;

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use libbpf_rs::skel::SkelBuilder;
use libbpf_rs::{MapCore, MapHandle};

use crate::pinned_maps::{self, MapTable, ProgFd};

pub use crate::link::Link;
pub use error::{KernelError, SkLookupError};
pub use link::{NetnsRef, SkLookupLink};
pub use maps::{label_key, summary_of, Destination, LabelStats, SkLookupStats, READ_BATCH};

use crate::skel::sk_lookup::SkLookupSkelBuilder;

/// The map layouts of `<flowpin/sk_lookup.h>`: the Rust structs of
/// [`flowpin_bpf_abi::sk_lookup`] under their C names (a unit test checks
/// them against the types libbpf-cargo generates from the program's BTF).
pub mod types {
    pub use flowpin_bpf_abi::sk_lookup::{
        Binding as fp_skl_binding, Dest as fp_skl_dest, HostKey as fp_skl_host_key,
        Key as fp_skl_key, Label as fp_skl_label, LabelName as fp_skl_label_name,
        Stats as fp_skl_stats,
    };
}

// The constants of `<flowpin/sk_lookup.h>`: one Rust home, flowpin-bpf-abi
// (checked against the header by its drift test).
pub use flowpin_bpf_abi::sk_lookup::{
    summary_shift, DEFAULT_MAX_BINDINGS, DESTINATIONS, FAMILY_V4, FAMILY_V6, IPPROTO_TCP,
    IPPROTO_UDP, KEY_HEADER_BITS, KINDS, KIND_HOST_ANY, KIND_HOST_PORT, KIND_NET_ANY,
    KIND_NET_PORT, LABEL_MAX, MAX_LABELS, PORT_ANY, SLOTS_PER_LABEL, SLOT_TCP, SLOT_UDP,
    STATS_ENTRIES, STATS_UNMATCHED,
};

type Result<T> = std::result::Result<T, SkLookupError>;

/// Run counters of the program ([`SkLookup::run_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProgRunStats {
    /// Runs counted.
    pub runs: u64,
    /// Their summed run time, in ns.
    pub run_time_ns: u64,
}

/// Turns the kernel's BPF run-time stats (`run_cnt`, `run_time_ns` of
/// every program) on while the returned fd is open (`BPF_ENABLE_STATS`;
/// each run then costs two clock reads more).
pub fn enable_run_time_stats() -> Result<std::os::fd::OwnedFd> {
    // SAFETY: a plain syscall wrapper without pointers.
    let fd = unsafe {
        libbpf_rs::libbpf_sys::bpf_enable_stats(libbpf_rs::libbpf_sys::BPF_STATS_RUN_TIME)
    };
    if fd < 0 {
        return Err(KernelError::errno(
            "bpf stats",
            "bpf_enable_stats",
            -fd,
            "needs CAP_SYS_ADMIN",
        )
        .into());
    }
    // SAFETY: bpf_enable_stats returned a new fd nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// Load-time configuration of [`SkLookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkLookupConfig {
    /// Capacity of the bindings trie, and of the host-binding hash (entries
    /// are allocated on demand in both).
    pub max_bindings: u32,
}

impl Default for SkLookupConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SkLookupConfig {
    /// [`DEFAULT_MAX_BINDINGS`] bindings.
    pub fn new() -> Self {
        SkLookupConfig {
            max_bindings: DEFAULT_MAX_BINDINGS,
        }
    }

    /// Sets [`SkLookupConfig::max_bindings`].
    pub fn max_bindings(mut self, n: u32) -> Self {
        self.max_bindings = n;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.max_bindings == 0 || self.max_bindings > 1 << 24 {
            return Err(SkLookupError::InvalidConfig(format!(
                "max_bindings {} must be in 1..=16777216",
                self.max_bindings
            )));
        }
        Ok(())
    }
}

/// The loaded program and its maps, held as plain fds: the same type serves
/// the process that loaded it and processes that re-open its pins.
#[derive(Debug)]
pub struct SkLookup {
    prog: ProgFd,
    maps: SkLookupMaps,
}

crate::pinned_maps::map_table! {
    /// The maps of `sk_lookup`.
    #[derive(Debug)]
    struct SkLookupMaps {
        bindings: Map,
        hosts: Map,
        summary: Map,
        destinations: Map,
        labels: Map,
        dest_meta: Map,
        stats: Map,
    }
    extra {}
    pin_names:
        /// Files pinned by [`SkLookup::pin`] under its directory: the maps, then `prog`.
        pub const PIN_NAMES;
}

const LOAD_HINT: &str =
    "needs root (CAP_BPF + CAP_NET_ADMIN) and Linux >= 5.9 for BPF_PROG_TYPE_SK_LOOKUP";

impl SkLookup {
    /// Opens, sizes and loads the program (not attached yet).
    pub fn load(config: SkLookupConfig) -> Result<Self> {
        config.validate()?;
        let mut obj = MaybeUninit::uninit();
        let mut open = SkLookupSkelBuilder::default()
            .open(&mut obj)
            .map_err(|e| KernelError::libbpf("object sk_lookup", "open", &e, LOAD_HINT))?;
        open.maps
            .bindings
            .set_max_entries(config.max_bindings)
            .map_err(|e| KernelError::libbpf("map bindings", "set_max_entries", &e, ""))?;
        open.maps
            .hosts
            .set_max_entries(config.max_bindings)
            .map_err(|e| KernelError::libbpf("map hosts", "set_max_entries", &e, ""))?;
        let (prog, maps) = pinned_maps::load_table(open, None, "flowpin_sk_lookup", LOAD_HINT)?;
        Ok(SkLookup {
            prog: ProgFd::new(prog)?,
            maps,
        })
    }

    /// Pins the program and every map under `dir` (an existing bpffs
    /// directory): `dir/prog`, `dir/bindings`, ... ([`PIN_NAMES`]).
    pub fn pin(&self, dir: impl AsRef<Path>) -> Result<()> {
        Ok(pinned_maps::pin_into(
            dir.as_ref(),
            &self.maps,
            self.prog.as_fd(),
        )?)
    }

    /// Re-opens a program and maps pinned by [`pin`](Self::pin) (in this or
    /// another process) and checks that their layout is this build's;
    /// [`SkLookupError::NotPinned`] if nothing is pinned there.
    pub fn from_pinned(dir: impl AsRef<Path>) -> Result<Self> {
        let (prog, maps) = pinned_maps::open_table(dir.as_ref())?;
        let this = SkLookup {
            prog: ProgFd::new(prog)?,
            maps,
        };
        this.check_layout()?;
        Ok(this)
    }

    fn check_layout(&self) -> Result<()> {
        use std::mem::size_of;
        let checks: [(&'static str, &'static str, u32, usize); 14] = [
            (
                "hosts",
                "key size",
                self.maps.hosts.key_size(),
                size_of::<types::fp_skl_host_key>(),
            ),
            (
                "hosts",
                "value size",
                self.maps.hosts.value_size(),
                size_of::<types::fp_skl_binding>(),
            ),
            (
                "hosts",
                "max entries",
                self.maps.hosts.max_entries(),
                self.maps.bindings.max_entries() as usize,
            ),
            (
                "summary",
                "value size",
                self.maps.summary.value_size(),
                size_of::<u32>(),
            ),
            (
                "bindings",
                "key size",
                self.maps.bindings.key_size(),
                size_of::<types::fp_skl_key>(),
            ),
            (
                "bindings",
                "value size",
                self.maps.bindings.value_size(),
                size_of::<types::fp_skl_binding>(),
            ),
            (
                "destinations",
                "max entries",
                self.maps.destinations.max_entries(),
                DESTINATIONS as usize,
            ),
            (
                "labels",
                "key size",
                self.maps.labels.key_size(),
                size_of::<types::fp_skl_label_name>(),
            ),
            (
                "labels",
                "value size",
                self.maps.labels.value_size(),
                size_of::<types::fp_skl_label>(),
            ),
            (
                "labels",
                "max entries",
                self.maps.labels.max_entries(),
                MAX_LABELS as usize,
            ),
            (
                "dest_meta",
                "value size",
                self.maps.dest_meta.value_size(),
                size_of::<types::fp_skl_dest>(),
            ),
            (
                "dest_meta",
                "max entries",
                self.maps.dest_meta.max_entries(),
                DESTINATIONS as usize,
            ),
            (
                "stats",
                "value size",
                self.maps.stats.value_size(),
                size_of::<types::fp_skl_stats>(),
            ),
            (
                "stats",
                "max entries",
                self.maps.stats.max_entries(),
                STATS_ENTRIES as usize,
            ),
        ];
        for (map, what, got, want) in checks {
            if got as usize != want {
                return Err(SkLookupError::Layout {
                    map,
                    what,
                    got,
                    want: want as u32,
                });
            }
        }
        Ok(())
    }

    /// Removes the pins under `dir` (missing ones are fine) and the
    /// directory if it is then empty.
    pub fn unpin(dir: impl AsRef<Path>) -> Result<()> {
        Ok(pinned_maps::unpin_from::<SkLookupMaps>(dir.as_ref())?)
    }

    /// The program's fd (e.g. to attach it yourself).
    pub fn program_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// The program's kernel id.
    pub fn program_id(&self) -> u32 {
        self.prog.id()
    }

    /// One of the program's maps by its pin name ([`PIN_NAMES`]), for
    /// users who go lower (a [`libbpf_rs::MapHandle`] of the libbpf-rs this
    /// crate re-exports).
    pub fn map(&self, name: &str) -> Option<&MapHandle> {
        self.maps.map_named(name)
    }

    /// The bindings trie.
    pub fn bindings_map(&self) -> &MapHandle {
        &self.maps.bindings
    }

    /// The host-binding hash.
    pub fn hosts_map(&self) -> &MapHandle {
        &self.maps.hosts
    }

    /// The one-word summary of which lookups can match.
    pub fn summary_map(&self) -> &MapHandle {
        &self.maps.summary
    }

    /// The socket map.
    pub fn destinations_map(&self) -> &MapHandle {
        &self.maps.destinations
    }

    /// The label-name map.
    pub fn labels_map(&self) -> &MapHandle {
        &self.maps.labels
    }

    /// The registration metadata map.
    pub fn dest_meta_map(&self) -> &MapHandle {
        &self.maps.dest_meta
    }

    /// The per-CPU stats map.
    pub fn stats_map(&self) -> &MapHandle {
        &self.maps.stats
    }

    /// How often the program ran and for how long in all, as the kernel
    /// counts it (`bpf_prog_info.run_cnt` / `run_time_ns`): only while
    /// run-time stats are on ([`enable_run_time_stats`]).
    pub fn run_stats(&self) -> Result<ProgRunStats> {
        let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
        let mut len = std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_prog_info>() as u32;
        // SAFETY: `info` is a live, zeroed bpf_prog_info of `len` bytes; the
        // kernel writes at most `len` bytes and updates the live local `len`.
        let rc = unsafe {
            libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(
                self.prog.as_fd().as_raw_fd(),
                &mut info,
                &mut len,
            )
        };
        if rc < 0 {
            return Err(
                KernelError::errno("program flowpin_sk_lookup", "get_info", -rc, "").into(),
            );
        }
        Ok(ProgRunStats {
            runs: info.run_cnt,
            run_time_ns: info.run_time_ns,
        })
    }

    /// Capacity of the bindings trie (and of the host hash).
    pub fn max_bindings(&self) -> u32 {
        self.maps.bindings.max_entries()
    }
}

#[cfg(test)]
mod tests;
