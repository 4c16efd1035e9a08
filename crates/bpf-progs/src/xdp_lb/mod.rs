//! `xdp_lb`: the XDP L4 load balancer and its typed control API.
//!
//! The program (`src/bpf/xdp_lb.bpf.c`) matches packets to VIPs
//! (address, port, protocol), picks a backend (server_id option or QUIC
//! connection ID → per-CPU LRU connection table → the VIP's Maglev ring),
//! encapsulates (IPIP, IP6IP6 or IPv4-in-IPv6) and sends the packet back out
//! to the configured next hop (`XDP_TX`). Everything else passes untouched.
//! The `flowpin-lb-model` crate (`crates/lb-model`, the test oracle, not
//! published) predicts every decision and output byte of it in plain Rust;
//! the privileged tests compare the two byte for byte.
//!
//! ```no_run
//! use flowpin_bpf_progs::xdp_lb::{Backend, Proto, Vip, VipFlags, XdpLb, XdpLbConfig};
//! use flowpin_tcp_opt::ServerId;
//! let mut lb = XdpLb::load(XdpLbConfig::default())?;
//! lb.set_next_hop([0x02, 0, 0, 0, 0, 1], [0x02, 0, 0, 0, 0, 2])?;
//! let vip = Vip::new("192.0.2.10".parse().unwrap(), 80, Proto::Tcp);
//! lb.add_vip(vip, VipFlags::SERVER_ID)?;
//! let sid = ServerId::new(7).expect("server_id 0 is reserved");
//! let backend = Backend::new("10.0.0.2".parse().unwrap()).weight(3).server_id(sid);
//! lb.set_backends(&vip, &[backend])?;
//! let link = lb.attach("eth0")?;
//! println!("xdp_lb attached in {} mode", link.mode());
//! # Ok::<(), flowpin_bpf_progs::xdp_lb::XdpLbError>(())
//! ```
//!
//! # State that outlives the control process
//!
//! [`XdpLb::pin`] pins every map and the program under a directory;
//! [`XdpLb::open_pinned`] (another process, after a crash or a release)
//! rebuilds the control state from the maps — `vips` and the
//! `backend_descs` records of each VIP's backend list, weight, server_id,
//! drain state and backend index — so [`XdpLb::backends`] returns what was
//! set before, and the connection table and ring never stopped working.
//! [`XdpLb::upgrade`] swaps this build's program into an attached link
//! keeping every map; [`XdpLb::drain_backend`] takes a backend out of the
//! ring while its flows keep reaching it. Changes of a pinned instance take
//! the pin directory's lock and catch up with other processes' changes
//! first (`meta.generation`). Layout versions, the ring check on reopen
//! and the figures: see `pinned.rs` and the README.
//!
//! # Verdicts
//!
//! | packet | verdict | counter |
//! |---|---|---|
//! | not IPv4/IPv6 (ARP, ...), not TCP/UDP/ICMP, no VIP matches | `XDP_PASS`, untouched | — |
//! | truncated Ethernet/VLAN/IP/TCP/UDP header, IPv4 IHL < 5, IP length field larger than the frame or smaller than the header, TCP data offset < 5 | `XDP_DROP` | `drop_malformed` |
//! | IPv6 extension chain (hop-by-hop, routing, destination options, fragment) longer than 8 headers | `XDP_PASS` | `pass_ext_hdr_limit` |
//! | first fragment (offset 0): it carries the L4 header | handled by ports like any packet | — |
//! | non-first fragment: hashed by addresses (ports 0), only to a port-agnostic VIP of its address and protocol; so the fragments of one datagram can reach different backends unless the VIP is port-agnostic | `XDP_TX` or `XDP_PASS` | `pass_fragment_no_vip` |
//! | VIP without a live backend | `XDP_DROP` | `drop_unknown_backend`, per VIP `unknown_backend` |
//! | encapsulated packet above the MTU | `XDP_TX` of an ICMP frag-needed / ICMPv6 packet-too-big to the client (source: the VIP) | `icmp_too_big_sent`, per VIP `too_big` |
//! | ICMP/ICMPv6 echo request to a VIP address | `XDP_TX` of the echo reply, in place | `icmp_echo_replies` |
//! | UDP with an empty payload or a zero length field (not validated) | forwarded like any packet | per VIP `packets` |
//! | otherwise | `XDP_TX`, encapsulated | per VIP `packets`, `bytes`, route counters |
//!
//! # Connection table
//!
//! A per-CPU LRU cache, 4-way set-associative, in one `BPF_MAP_TYPE_ARRAY`
//! (each CPU owns its own range of sets, like Katran's per-CPU LRU maps, so
//! CPUs never share a lock or a cache line): a lookup is an inlined array
//! access plus key compares. Each flow has two candidate sets (A from the
//! flow hash, B from the second hash; a lookup tries A, then B); an insert
//! takes a free way of A or B, else moves a resident of A or B to its other
//! set when that has room (one level of cuckoo relocation), else evicts —
//! probation entries first. A flow's first packet inserts it on probation;
//! a later packet (TCP: a non-SYN, UDP: a second one) confirms it, and a
//! confirmed entry is evicted only when neither candidate set nor any of
//! their residents' other sets holds a probation entry: a flood of one-packet
//! flows churns the probation entries and leaves confirmed flows alone, and
//! below half load no established flow is ever evicted (`conn_table_bench`).
//! Counters: [`LbStats::new_flows`], [`LbStats::confirmations`],
//! [`LbStats::probation_evictions`], [`LbStats::confirmed_evictions`],
//! [`LbStats::relocations`]; flood detection: [`flood_signal`]. A `BPF_MAP_TYPE_LRU_HASH` (per-CPU lists or not) was
//! measured first: its insert alone cost ~300 ns here, more than the whole
//! new-flow budget.
//!
//! A flow is identified by a 64-bit fingerprint (two independent 32-bit
//! murmur3 hashes of its 5-tuple, [`crate::flow_hash`]): a set of 4 flows
//! then fits one cache line, so a new flow costs one cache miss (two when
//! its first set is full), not three.
//! Two flows are confused only if both hashes collide (about 2^-64 per
//! pair of flows in one set).
//!
//! Size from [`XdpLbConfig::lru_memory_bytes`]: a set is
//! [`CONN_SET_BYTES`] = 64 bytes (4 × (hash, hash2, backend index), the LRU
//! order, the probation bits, padding) and holds 4 flows, so
//! `sets_per_cpu = 2^floor(log2(budget / (64 * ncpus)))` and the table
//! holds `4 * sets_per_cpu` flows per CPU (16 bytes per flow per CPU; the
//! array uses `64 * sets_per_cpu * ncpus <= budget` bytes). Each CPU only
//! sees the flows it handled (NIC RSS keeps a flow on one CPU).

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr};

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use flowpin_tcp_opt::Layout;
use libbpf_rs::skel::SkelBuilder;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::error::KernelError;
pub use crate::link::Link;
use crate::pinned_maps::MapTable;
use crate::skel::xdp_lb::types::{
    flowpin_backend_stats, flowpin_conn_set, flowpin_lb_meta, flowpin_lb_stats, flowpin_sid_key,
    flowpin_vip_stats,
};
use crate::skel::xdp_lb::XdpLbSkelBuilder;
use crate::skel::{read, sum_counters};
use crate::xdp_attach::{attach_xdp, xdp_test_run};
pub use crate::xdp_attach::{
    XdpAttachError, XdpAttachMode, XdpLink, XdpMode, XdpTarget, XdpTestRun, XdpVerdict,
};

mod aes_key;
mod config;
mod conn_table;
mod error;
pub mod maps;
mod pinned;
mod repair;
mod stats;

pub use config::{TunnelSources, XdpLbConfig};
pub use error::XdpLbError;
/// The control model (plans, ring, backend ids, rebuild) lives in
/// `flowpin-lb-core`: this module applies its plans to the kernel.
pub use flowpin_lb_core::state;
pub use flowpin_lb_core::{
    AesEngine, Backend, CidEntry, Desired, DesiredVip, LbConfig, LbError, LbState, PinnedContents,
    Plan, Proto, QuicLbConf, QuicLbKey, RingUpdate, Vip, VipCid, VipFlags, DEFAULT_RING_SIZE,
};
pub use maps::PIN_NAMES;
pub use stats::{flood_signal, new_flow_rate, BackendStats, LbStats, Stats, VipStats};

#[cfg(test)]
use config::host_mask;
pub use maps::KernelMaps;

/// Bytes of one connection-table set of 4 flows (see the module docs).
pub const CONN_SET_BYTES: u64 = std::mem::size_of::<flowpin_conn_set>() as u64;
/// Flows per connection-table set.
pub const CONN_WAYS: u32 = flowpin_bpf_abi::lb::CONN_WAYS;

type Result<T> = std::result::Result<T, XdpLbError>;

/// The loaded `xdp_lb` program and its maps. Mutating calls take `&mut self`
/// (one control plane per instance). Links made by [`XdpLb::attach`] keep
/// the program alive on their own.
#[derive(Debug)]
pub struct XdpLb {
    prog: OwnedFd,
    maps: KernelMaps,
    config: XdpLbConfig,
    conn_sets: u32,
    /// Number of connection tables (CPUs, or 1 when shared).
    ncpus: u32,
    state: LbState,
    /// Where the maps are pinned (set by `pin` / `open_pinned`): changes
    /// then take the directory's lock and bump `meta.generation`.
    pin_dir: std::sync::OnceLock<std::path::PathBuf>,
    /// The `meta` entry as this process last wrote or read it.
    meta: flowpin_lb_meta,
    /// Ring slots `open_pinned` found different from the rebuilt state and rewrote.
    repaired_ring_slots: u32,
    /// Other entries `open_pinned` found different and rewrote.
    repaired_entries: u32,
}

/// A program loaded from this build, against fresh maps or pinned ones.
struct Loaded {
    prog: OwnedFd,
    maps: KernelMaps,
    conn_sets: u32,
    tables: u32,
    meta: flowpin_lb_meta,
}

/// Opens, sizes and loads `xdp_lb` for `config`; with `reuse`, against
/// those maps (`reuse_fd` before load: an upgrade keeps every entry).
fn load_program(config: &XdpLbConfig, reuse: Option<&KernelMaps>) -> Result<Loaded> {
    let ncpus = libbpf_rs::num_possible_cpus()
        .map_err(|e| KernelError::libbpf("/sys/devices/system/cpu/possible", "read", &e, ""))?;
    let tables = if config.conn_table_shared {
        1
    } else {
        ncpus as u32
    };
    let conn_sets = config.conn_sets_per_cpu(tables);
    let mut storage = MaybeUninit::uninit();
    let mut open = XdpLbSkelBuilder::default()
        .open(&mut storage)
        .map_err(KernelError::object("object xdp_lb", "open", ""))?;
    let ring_slots = config.max_vips * config.ring_size;
    let resize = |m: &mut libbpf_rs::OpenMapMut<'_>, map, value| {
        m.set_max_entries(value)
            .map_err(KernelError::map(map, "set_max_entries"))
    };
    resize(&mut open.maps.vips, "vips", config.max_vips * 4 + 16)?;
    resize(&mut open.maps.ring, "ring", ring_slots)?;
    resize(&mut open.maps.backends, "backends", config.max_backends)?;
    resize(&mut open.maps.conn, "conn", conn_sets * tables)?;
    resize(
        &mut open.maps.server_ids,
        "server_ids",
        config.max_server_ids,
    )?;
    resize(
        &mut open.maps.backend_descs,
        "backend_descs",
        config.max_backend_descs(),
    )?;
    resize(&mut open.maps.vip_stats, "vip_stats", config.max_vips)?;
    for (m, name) in [
        (&mut open.maps.cid_cfgs, "cid_cfgs"),
        (&mut open.maps.cid_crypto, "cid_crypto"),
    ] {
        resize(
            m,
            name,
            config.max_vips * flowpin_bpf_abi::lb::CID_CFGS_PER_VIP,
        )?;
    }
    resize(
        &mut open.maps.backend_stats,
        "backend_stats",
        config.max_backends,
    )?;
    if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
        ro.ring_size = config.ring_size;
        ro.conn_sets = conn_sets;
        ro.conn_percpu = u32::from(!config.conn_table_shared);
        ro.sid_warm_conn = u32::from(config.warm_conn_from_server_id);
    }
    let cfg = reuse.map_or_else(|| config.to_c(0), |m| m.cfg);
    let (prog, maps) = crate::pinned_maps::load(
        open,
        reuse,
        "xdp_lb",
        "verifier rejection, too little memory for the connection table/ring maps, pinned maps of another layout, or missing CAP_BPF/CAP_NET_ADMIN",
        |prog, obj| {
            let source = crate::pinned_maps::from_object(obj);
            let setup = obj
                .progs()
                .find(|p| p.name() == "xdp_lb_crypto_setup")
                .and_then(|p| p.as_fd().try_clone_to_owned().ok());
            let maps = KernelMaps::build(source, (cfg, config.ring_size, ncpus, setup))?;
            Ok((prog, maps))
        },
    )?;
    let meta = pinned::meta_of(config, conn_sets, tables);
    Ok(Loaded {
        prog,
        maps,
        conn_sets,
        tables,
        meta,
    })
}

impl XdpLb {
    /// Opens, sizes and loads the program (not yet attached).
    pub fn load(config: XdpLbConfig) -> Result<Self> {
        config.validate()?;
        let loaded = load_program(&config, None)?;
        loaded.maps.write_cfg()?;
        loaded.maps.write_meta(&loaded.meta)?;
        Ok(XdpLb {
            prog: loaded.prog,
            maps: loaded.maps,
            conn_sets: loaded.conn_sets,
            ncpus: loaded.tables,
            state: LbState::new(&config.lb_config()),
            config,
            pin_dir: std::sync::OnceLock::new(),
            meta: loaded.meta,
            repaired_ring_slots: 0,
            repaired_entries: 0,
        })
    }

    /// The program's fd (for `attach_xdp`, queries, or test runs).
    pub fn program_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// The configuration in force (after `set_*` calls).
    pub fn config(&self) -> &XdpLbConfig {
        &self.config
    }

    /// The control state: what the kernel tables hold.
    pub fn state(&self) -> &LbState {
        &self.state
    }

    /// Flows the connection table holds, all CPUs together (derived from
    /// the memory budget).
    pub fn lru_entries(&self) -> u32 {
        self.conn_sets * CONN_WAYS * self.ncpus
    }

    /// Connection-table sets per CPU.
    pub fn conn_sets_per_cpu(&self) -> u32 {
        self.conn_sets
    }

    /// Attaches to `target` (an ifindex, a name, or an [`XdpTarget`] with a
    /// namespace and mode); dropping the link detaches unless it is pinned.
    pub fn attach(&self, target: impl Into<XdpTarget>) -> Result<XdpLink> {
        Ok(attach_xdp(self.program_fd(), target)?)
    }

    /// Runs the program once on `packet` through `BPF_PROG_TEST_RUN` (maps
    /// are the live ones: counters and the connection table change).
    ///
    /// The test run executes on the **calling thread's current CPU**, and
    /// the connection table is per CPU (unless
    /// [`XdpLbConfig::conn_table_shared`]): a flow inserted by one call is
    /// only found by a later call that runs on the same CPU. A test that
    /// checks connection-table hits must pin its thread to one CPU first
    /// (`sched_setaffinity`, e.g. `nix::sched::sched_setaffinity`), or the
    /// scheduler moving it between calls looks like lost flows.
    pub fn test_run(&self, packet: &[u8]) -> Result<XdpTestRun> {
        Ok(xdp_test_run(self.program_fd(), packet)?)
    }

    /// The program's maps, for users who go lower (layouts in
    /// `flowpin_lb.h`, generated into [`crate::skel::xdp_lb::types`];
    /// [`libbpf_rs::MapHandle`]s of the libbpf-rs this crate re-exports).
    /// Writing them behind [`XdpLb`]'s back desynchronises its [`LbState`].
    pub fn maps(&self) -> &KernelMaps {
        &self.maps
    }

    /// Changes the runtime configuration (`lb_cfg`), under the pin lock
    /// when pinned (after catching up with other processes' changes).
    fn write_cfg(&mut self, change: impl FnOnce(&mut XdpLbConfig)) -> Result<()> {
        let _lock = self.lock_and_resync()?;
        change(&mut self.config);
        let agnostic = self.maps.cfg.port_agnostic_vips;
        self.maps.cfg = self.config.to_c(agnostic);
        self.maps.write_cfg()?;
        self.bump_generation()
    }

    /// Sets our MAC and the next hop's MAC (Ethernet header of encapsulated packets).
    pub fn set_next_hop(&mut self, local_mac: [u8; 6], next_hop_mac: [u8; 6]) -> Result<()> {
        self.write_cfg(|c| {
            c.local_mac = local_mac;
            c.next_hop_mac = next_hop_mac;
        })
    }

    /// Sets the egress L3 MTU.
    pub fn set_mtu(&mut self, mtu: u16) -> Result<()> {
        if mtu < 576 {
            return Err(XdpLbError::InvalidConfig(format!("mtu {mtu} is below 576")));
        }
        self.write_cfg(|c| c.mtu = mtu)
    }

    /// Sets the outer source prefixes (host bits come from the flow hash).
    pub fn set_tunnel_sources(&mut self, v4: (Ipv4Addr, u8), v6: (Ipv6Addr, u8)) -> Result<()> {
        if v4.1 > 32 || v6.1 > 128 {
            return Err(XdpLbError::InvalidConfig(
                "tunnel source prefix length out of range".into(),
            ));
        }
        self.write_cfg(|c| {
            c.tunnel_src_v4 = v4;
            c.tunnel_src_v6 = v6;
        })
    }

    /// Sets the server_id TCP option layout.
    pub fn set_tcp_opt_layout(&mut self, layout: Layout) -> Result<()> {
        self.write_cfg(|c| c.tcp_opt_layout = layout)
    }

    /// Plans a change from the current state, writes it and commits it.
    /// When pinned, under the pin directory's lock, after catching up with
    /// changes other processes made (`meta.generation`), and bumping it after.
    fn change(
        &mut self,
        plan: impl FnOnce(&LbState) -> std::result::Result<Plan, LbError>,
    ) -> Result<(RingUpdate, Option<u32>)> {
        let _lock = self.lock_and_resync()?;
        let plan = plan(&self.state)?;
        // On a failed write the kernel is rolled back, the state unchanged.
        maps::apply(&mut self.maps, &plan.ops)?;
        let out = (plan.update, plan.vip_id);
        self.state.commit(plan);
        self.bump_generation()?;
        Ok(out)
    }

    fn apply_commit_with(
        &mut self,
        plan: impl FnOnce(&LbState) -> std::result::Result<Plan, LbError>,
    ) -> Result<RingUpdate> {
        self.change(plan).map(|(u, _)| u)
    }

    /// Adds a VIP (no backends yet: its packets are dropped as
    /// `unknown_backend` until [`set_backends`](Self::set_backends)).
    /// Returns its id (index of its ring and counters).
    pub fn add_vip(&mut self, vip: Vip, flags: VipFlags) -> Result<u32> {
        let (_, id) = self.change(|s| s.add_vip(vip, flags))?;
        id.ok_or_else(|| LbError::Internal("add_vip planned no id".into()).into())
    }

    /// Changes a VIP's flags in place (its id, counters, ring and
    /// connections stay; see [`LbState::set_vip_flags`]).
    pub fn set_vip_flags(&mut self, vip: &Vip, flags: VipFlags) -> Result<()> {
        self.apply_commit_with(|s| s.set_vip_flags(vip, flags))
            .map(|_| ())
    }

    /// Takes the load balancer to `desired` (every VIP, its flags and
    /// backends) in one plan: only what differs is written, in the
    /// ordering of [`state`], and a failed write rolls the whole change
    /// back (see [`LbState::reconcile`]). Returns what changed, over every VIP.
    pub fn reconcile(&mut self, desired: &Desired) -> Result<RingUpdate> {
        self.apply_commit_with(|s| s.reconcile(desired))
    }

    /// Sets the connection-ID layout a QUIC VIP declares: only that layout
    /// is decoded, in short headers and in the long headers whose DCID the
    /// server chose (see [`LbState::set_vip_cid`]). QUIC-LB keys go to the
    /// `cid_cfgs` map (pinned 0600), never to a log.
    pub fn set_vip_cid(&mut self, vip: &Vip, cid: VipCid) -> Result<()> {
        self.apply_commit_with(|s| s.set_vip_cid(vip, cid))
            .map(|_| ())
    }

    /// Removes a VIP: its packets pass untouched from now on; its ring,
    /// server_id routes and unused backends are cleared.
    pub fn remove_vip(&mut self, vip: &Vip) -> Result<()> {
        self.apply_commit_with(|s| s.remove_vip(vip)).map(|_| ())
    }

    /// Sets the backends of a VIP. Builds its Maglev ring with
    /// `flowpin-maglev` (key: the backend address as text, so every load
    /// balancer builds the same ring) and writes only the slots
    /// [`Maglev::diff`](flowpin_maglev::Maglev::diff) reports, in an order
    /// that never leaves a slot or a server_id route pointing at a removed
    /// backend (see [`state`]). If a write fails the kernel is rolled back
    /// and the error says so.
    pub fn set_backends(&mut self, vip: &Vip, backends: &[Backend]) -> Result<RingUpdate> {
        self.apply_commit_with(|s| s.set_backends(vip, backends))
    }

    /// Removes one backend of a VIP.
    pub fn remove_backend(&mut self, vip: &Vip, addr: std::net::IpAddr) -> Result<RingUpdate> {
        self.apply_commit_with(|s| s.remove_backend(vip, addr))
    }

    /// Adds one backend to a VIP, after its current backends.
    pub fn add_backend(&mut self, vip: &Vip, backend: Backend) -> Result<RingUpdate> {
        self.apply_commit_with(|s| s.add_backend(vip, backend))
    }

    /// Drains one backend of a VIP: it leaves the ring (no new flows) while
    /// its existing flows keep reaching it through its server_id route and
    /// the connection table (its index and `backends` entry stay).
    /// [`backends`](Self::backends) still lists it; take it out with
    /// [`remove_backend`](Self::remove_backend) once its connections closed.
    pub fn drain_backend(&mut self, vip: &Vip, addr: std::net::IpAddr) -> Result<RingUpdate> {
        self.apply_commit_with(|s| s.drain_backend(vip, addr))
    }

    /// Puts a draining backend back into the ring.
    pub fn undrain_backend(&mut self, vip: &Vip, addr: std::net::IpAddr) -> Result<RingUpdate> {
        self.apply_commit_with(|s| s.undrain_backend(vip, addr))
    }

    /// Whether a backend of a VIP is draining.
    pub fn is_draining(&self, vip: &Vip, addr: std::net::IpAddr) -> bool {
        self.state.is_draining(vip, addr)
    }

    /// Changes one backend's Maglev weight.
    pub fn set_weight(
        &mut self,
        vip: &Vip,
        addr: std::net::IpAddr,
        weight: u32,
    ) -> Result<RingUpdate> {
        self.apply_commit_with(|s| s.set_weight(vip, addr, weight))
    }

    /// The backends of a VIP as last set.
    pub fn backends(&self, vip: &Vip) -> Option<&[Backend]> {
        self.state.backends(vip)
    }

    /// The id of a configured VIP.
    pub fn vip_id(&self, vip: &Vip) -> Option<u32> {
        self.state.vip_id(vip)
    }

    /// Counters of one VIP, summed over CPUs.
    pub fn vip_stats(&self, vip: &Vip) -> Result<VipStats> {
        let id = self.state.vip_id(vip).ok_or(LbError::UnknownVip(*vip))?;
        let s: flowpin_vip_stats = self.read_counters(&self.maps.vip_stats, "vip_stats", id)?;
        Ok(s.into())
    }

    /// Counters of one backend (packets forwarded to it and their bytes),
    /// summed over CPUs. A backend shared by several VIPs has one index, so
    /// one set of counters; they restart at 0 when its index is allocated
    /// again after it was removed from every VIP.
    pub fn backend_stats(&self, addr: std::net::IpAddr) -> Result<BackendStats> {
        let id = self
            .state
            .backend_index(addr)
            .ok_or(XdpLbError::UnknownBackend(addr))?;
        let s: flowpin_backend_stats =
            self.read_counters(&self.maps.backend_stats, "backend_stats", id)?;
        Ok(s.into())
    }

    /// The server_ids of `vip` marked retired in `sid_retired` (their
    /// backend was removed from the VIP): a packet carrying one falls back
    /// and counts `sid_fallback_removed`.
    pub fn retired_server_ids(&self, vip: &Vip) -> Result<std::collections::HashSet<u32>> {
        let id = self.state.vip_id(vip).ok_or(LbError::UnknownVip(*vip))?;
        let mut out = std::collections::HashSet::new();
        for k in self.maps.sid_retired.keys() {
            if let Some(k) = read::<flowpin_sid_key>(&k) {
                if k.vip_id == id {
                    out.insert(k.server_id);
                }
            }
        }
        Ok(out)
    }

    /// Global counters, summed over CPUs.
    pub fn global_stats(&self) -> Result<LbStats> {
        let s: flowpin_lb_stats = self.read_counters(&self.maps.lb_stats, "lb_stats", 0)?;
        Ok(s.into())
    }

    fn read_counters<T: crate::skel::CStruct>(
        &self,
        map: &MapHandle,
        name: &'static str,
        key: u32,
    ) -> Result<T> {
        let per_cpu = map
            .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
            .map_err(KernelError::map(name, "lookup_percpu"))?
            .unwrap_or_default();
        sum_counters(&per_cpu).ok_or_else(|| {
            KernelError::out_of_sync(
                format!("map {name}"),
                "lookup_percpu",
                per_cpu.first().map_or(0, Vec::len),
                std::mem::size_of::<T>(),
            )
            .into()
        })
    }

    /// All counters, summed over CPUs.
    pub fn stats(&self) -> Result<Stats> {
        let mut vips = HashMap::new();
        for vip in self.state.vips() {
            vips.insert(*vip, self.vip_stats(vip)?);
        }
        Ok(Stats {
            global: self.global_stats()?,
            vips,
        })
    }
}

#[cfg(test)]
mod tests;
