//! A pure-Rust model of `xdp_lb`'s decision: the verdict, the backend, the
//! exact output packet and the counters the program bumps, for any input
//! frame. Tests and benches run the real program through
//! `BPF_PROG_TEST_RUN` and compare its output with this model byte for byte
//! ([`Model::of`] snapshots a loaded [`XdpLb`]).
//!
//! A `publish = false` crate: the oracle of `flowpin-bpf-progs`' privileged
//! tests (a dev-dependency there), `examples/xdp_bench` and any outside
//! harness (by path).
//!
//! The model is written independently of the C code: headers are read
//! through etherparse's checked views (`parse`), the server_id option walk
//! and QUIC connection-ID decoding use `flowpin-tcp-opt`'s views
//! (`balance`), and output headers are built with etherparse's header types,
//! which compute their own checksums (`emit`) — except the echo reply, whose
//! checksums the program updates incrementally by RFC 1624; the model does
//! the same so a wrong input checksum stays wrong in both. The constants
//! shared with the C code (VIP flags, quote lengths, TTL) come from
//! `flowpin-bpf-abi`.
//!
//! Files: `conn` (the connection table), `parse` (L2–L4 headers),
//! `balance` (VIP match, server_id, connection table, ring), `emit`
//! (encapsulation, ICMP too-big and echo replies).
//!
//! The connection table is modelled exactly (same sets, ways, LRU order,
//! second candidate set, relocation, probation bits and their counters)
//! for ONE CPU: callers of `BPF_PROG_TEST_RUN` that compare against the
//! model pin their thread to one CPU. Not modelled: a backend index reused
//! by another address after removal (entries here hold the address).
#![deny(missing_docs)]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};

use etherparse::{EtherType, IpNumber};
use flowpin_bpf_abi::lb as abi;
use flowpin_tcp_opt::Layout;

use flowpin_bpf_progs::xdp_lb::{LbStats, VipFlags, VipStats, XdpLb};

mod balance;
pub mod cid;
mod conn;
mod emit;
mod parse;

use conn::ConnTable;

/// The program's configuration as the model needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// Maglev table size.
    pub ring_size: u32,
    /// Egress L3 MTU.
    pub mtu: u16,
    /// Source MAC of encapsulated packets.
    pub local_mac: [u8; 6],
    /// Destination MAC of encapsulated packets.
    pub next_hop_mac: [u8; 6],
    /// Outer IPv4 source prefix (host bits zero).
    pub tun_src4: u32,
    /// Host bits of the outer IPv4 source taken from the flow hash.
    pub tun_src4_host_mask: u32,
    /// Outer IPv6 source prefix (host bits of the last word zero).
    pub tun_src6: Ipv6Addr,
    /// Host bits of the last 32 bits of the outer IPv6 source.
    pub tun_src6_host_mask: u32,
    /// server_id option layout.
    pub tcp_opt_layout: Layout,
    /// Server-chosen QUIC CID length.
    pub quic_cid_len: u8,
    /// QUIC-LB plaintext configuration decoded besides the other layouts.
    pub quic_lb: Option<flowpin_tcp_opt::QuicLb>,
    /// Connection-table sets per CPU (a power of two).
    pub conn_sets: u32,
    /// server_id-routed packets insert their flow into the connection
    /// table on a miss (`XdpLbConfig::warm_conn_from_server_id`).
    pub sid_warm_conn: bool,
}

/// One VIP as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelVip {
    /// Address.
    pub addr: IpAddr,
    /// Port (0: port-agnostic).
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// VIP id.
    pub id: u32,
    /// `FLOWPIN_VIP_*` flags.
    pub flags: u32,
    /// Ring: slot → backend (empty: no backends).
    pub ring: Vec<Option<IpAddr>>,
    /// server_id → backend.
    pub server_ids: HashMap<u32, IpAddr>,
    /// server_ids of backends removed from the VIP (`sid_retired`).
    pub retired_server_ids: std::collections::HashSet<u32>,
    /// The connection-ID layout it declared (QUIC VIPs).
    pub cid: flowpin_bpf_progs::xdp_lb::VipCid,
}

/// The program's return code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `XDP_DROP`.
    Drop,
    /// `XDP_PASS`.
    Pass,
    /// `XDP_TX`.
    Tx,
}

/// How a forwarded packet's backend was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// server_id (TCP option or QUIC CID).
    ServerId,
    /// Connection table hit.
    Lru,
    /// Maglev ring.
    Ring,
}

/// Why the program did what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not IPv4/IPv6.
    NotIp,
    /// Not TCP/UDP/ICMP, or no VIP matched.
    NotVip,
    /// Truncated or invalid headers.
    Malformed,
    /// IPv6 extension chain longer than the bound.
    ExtHdrLimit,
    /// Non-first fragment without a port-agnostic VIP.
    FragmentNoVip,
    /// The VIP has no backend for this packet.
    UnknownBackend,
    /// IPv6 packet, IPv4 backend.
    EncapError,
    /// ICMP not answered (not an echo request, or not to a VIP address).
    IcmpPass,
    /// ICMP echo reply sent.
    IcmpEchoReply,
    /// Too big: ICMP too-big sent (`true`) or dropped (`false`).
    TooBig(bool),
    /// Encapsulated to `backend`.
    Forwarded {
        /// Tunnel destination.
        backend: IpAddr,
        /// How it was chosen.
        route: Route,
    },
}

/// The model's prediction for one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Verdict.
    pub verdict: Verdict,
    /// The output packet (the input, untouched, for `Pass`/`Drop`).
    pub packet: Vec<u8>,
    /// Why.
    pub outcome: Outcome,
    /// The flow hash (for packets that matched a VIP).
    pub hash: Option<u32>,
}

/// The model: configuration snapshot + its own connection table + counters.
#[derive(Debug, Clone)]
pub struct Model {
    cfg: ModelConfig,
    vips: HashMap<(IpAddr, u16, u8), ModelVip>,
    port_agnostic: usize,
    echo: HashSet<IpAddr>,
    alive: HashSet<IpAddr>,
    conn: ConnTable,
    /// Global counters the program would have bumped.
    pub global: LbStats,
    /// Per-VIP-id counters the program would have bumped.
    pub vip_stats: HashMap<u32, VipStats>,
}

impl Model {
    /// A model of a program with this configuration, these VIPs and these
    /// echo-answering addresses, with an empty connection table.
    pub fn new(cfg: ModelConfig, vips: Vec<ModelVip>, echo: Vec<IpAddr>) -> Model {
        let mut alive = HashSet::new();
        for v in &vips {
            alive.extend(v.ring.iter().flatten().copied());
            alive.extend(v.server_ids.values().copied());
        }
        Model {
            cfg,
            port_agnostic: vips
                .iter()
                .filter(|v| v.flags & abi::VIP_PORT_AGNOSTIC != 0)
                .count(),
            vips: vips
                .into_iter()
                .map(|v| ((v.addr, v.port, v.proto), v))
                .collect(),
            echo: echo.into_iter().collect(),
            alive,
            conn: ConnTable::default(),
            global: LbStats::default(),
            vip_stats: HashMap::new(),
        }
    }

    /// Takes `other`'s configuration (VIPs, rings, routes, settings) and
    /// keeps this model's connection table and counters: what happens to
    /// the program when the control plane changes its maps.
    /// Counters of a VIP id that now belongs to another VIP (or none) start
    /// from zero, as `add_vip` clears them in the program.
    pub fn reconfigure(&mut self, other: Model) {
        let ident = |m: &Model| -> HashMap<u32, (IpAddr, u16, u8)> {
            m.vips.iter().map(|(k, v)| (v.id, *k)).collect()
        };
        let (old, new) = (ident(self), ident(&other));
        self.vip_stats
            .retain(|id, _| old.contains_key(id) && old.get(id) == new.get(id));
        self.cfg = other.cfg;
        self.vips = other.vips;
        self.port_agnostic = other.port_agnostic;
        self.echo = other.echo;
        self.alive = other.alive;
    }

    /// Forgets the connection table.
    pub fn clear_connection_table(&mut self) {
        self.conn.clear();
        self.global.conn_entries = 0;
    }

    /// Adds a backend of a VIP that is reachable but owns no ring slot
    /// (e.g. a weight-0 backend without server_id), for liveness checks.
    pub fn mark_alive(&mut self, addr: IpAddr) {
        self.alive.insert(addr);
    }

    /// The counters of a VIP id so far.
    pub fn vip(&self, id: u32) -> VipStats {
        self.vip_stats.get(&id).copied().unwrap_or_default()
    }

    /// Predicts the program's handling of `pkt` and updates the model's
    /// connection table and counters like the program would.
    pub fn decide(&mut self, pkt: &[u8]) -> Decision {
        let Ok(l2) = parse::l2(pkt) else {
            return self.malformed(pkt);
        };
        let parsed = match l2.ether_type {
            EtherType::IPV4 => parse::ipv4(pkt, &l2),
            EtherType::IPV6 => parse::ipv6(pkt, &l2),
            _ => return keep(pkt, Verdict::Pass, Outcome::NotIp),
        };
        let p = match parsed {
            Ok(p) => p,
            Err(Outcome::Malformed) => return self.malformed(pkt),
            Err(Outcome::ExtHdrLimit) => {
                self.global.pass_ext_hdr_limit += 1;
                return keep(pkt, Verdict::Pass, Outcome::ExtHdrLimit);
            }
            Err(o) => return keep(pkt, Verdict::Pass, o),
        };
        let icmp = if p.v6 {
            IpNumber::IPV6_ICMP
        } else {
            IpNumber::ICMP
        };
        if p.proto == icmp {
            return self.icmp_echo(pkt, &p);
        }
        if p.proto != IpNumber::TCP && p.proto != IpNumber::UDP {
            return keep(pkt, Verdict::Pass, Outcome::NotVip);
        }
        match parse::ports(pkt, p) {
            Ok(p) => self.balance(pkt, &p),
            Err(()) => self.malformed(pkt),
        }
    }

    fn malformed(&mut self, pkt: &[u8]) -> Decision {
        self.global.drop_malformed += 1;
        keep(pkt, Verdict::Drop, Outcome::Malformed)
    }
}

/// The input packet, untouched, with `verdict` and `outcome`.
fn keep(pkt: &[u8], verdict: Verdict, outcome: Outcome) -> Decision {
    Decision {
        verdict,
        packet: pkt.to_vec(),
        outcome,
        hash: None,
    }
}

impl Model {
    /// A snapshot of `lb`'s configuration as a model that predicts the
    /// program's decisions (with an empty connection table of its own).
    pub fn of(lb: &XdpLb) -> Model {
        let c = lb.config();
        let tun = c.tunnel_sources();
        let cfg = ModelConfig {
            ring_size: c.ring_size,
            mtu: c.mtu,
            local_mac: c.local_mac,
            next_hop_mac: c.next_hop_mac,
            tun_src4: u32::from(tun.v4),
            tun_src4_host_mask: tun.v4_host_mask,
            tun_src6: tun.v6,
            tun_src6_host_mask: tun.v6_host_mask,
            tcp_opt_layout: c.tcp_opt_layout,
            quic_cid_len: c.quic_cid_len,
            quic_lb: c.quic_lb,
            conn_sets: lb.conn_sets_per_cpu(),
            sid_warm_conn: c.warm_conn_from_server_id,
        };
        let vips = lb
            .state()
            .vips()
            .map(|v| ModelVip {
                addr: v.addr,
                port: v.port,
                proto: v.proto.number(),
                id: lb.state().vip_id(v).unwrap_or(0),
                flags: lb.state().vip_flags(v).map_or(0, VipFlags::bits),
                ring: lb.state().ring_addrs(v),
                server_ids: lb.state().server_id_addrs(v),
                retired_server_ids: lb.retired_server_ids(v).unwrap_or_default(),
                cid: lb.state().vip_cid(v).cloned().unwrap_or_default(),
            })
            .collect();
        Model::new(cfg, vips, lb.state().echo_addrs().collect())
    }
}
