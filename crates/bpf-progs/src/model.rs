//! A pure-Rust model of `xdp_lb`'s decision: the verdict, the backend, the
//! exact output packet and the counters the program bumps, for any input
//! frame. Tests and benches run the real program through
//! `BPF_PROG_TEST_RUN` and compare its output with this model byte for byte.
//!
//! The model is written independently of the C code where it can be: the
//! server_id option walk and QUIC connection-ID decoding use
//! `flowpin-tcp-opt`, headers and checksums are built from scratch (full
//! checksums, except the echo reply, whose checksums the program updates
//! incrementally by RFC 1624 — the model does the same so a wrong input
//! checksum stays wrong in both).
//!
//! The connection table is modelled exactly (same sets, ways and LRU order)
//! for ONE CPU: callers of `BPF_PROG_TEST_RUN` that compare against the
//! model pin their thread to one CPU. Not modelled: a backend index reused
//! by another address after removal (entries here hold the address).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowpin_tcp_opt::quic::ConnectionId;
use flowpin_tcp_opt::Layout;

use crate::flow_hash::{flow_hash, flow_hash2, FiveTuple};
use crate::xdp_lb::{host_mask, LbStats, VipFlags, VipStats, XdpLb};

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
    /// Connection-table sets per CPU (a power of two).
    pub conn_sets: u32,
}

#[derive(Debug, Clone, Default)]
struct ConnSet {
    hash: [(u32, u32); 4],
    backend: [Option<IpAddr>; 4],
    order: u32,
}

const ORDER_INIT: u32 = 0xE4;

fn order_front(o: u32, w: u32) -> u32 {
    let e = [o & 3, (o >> 2) & 3, (o >> 4) & 3, (o >> 6) & 3];
    if w == e[0] {
        o
    } else if w == e[1] {
        w | (e[0] << 2) | (e[2] << 4) | (e[3] << 6)
    } else if w == e[2] {
        w | (e[0] << 2) | (e[1] << 4) | (e[3] << 6)
    } else {
        w | (e[0] << 2) | (e[1] << 4) | (e[2] << 6)
    }
}

impl ConnSet {
    fn find(&self, fp: (u32, u32)) -> Option<usize> {
        (0..4).find(|&w| self.hash[w] == fp && self.backend[w].is_some())
    }
    fn order(&self) -> u32 {
        if self.order == 0 {
            ORDER_INIT
        } else {
            self.order
        }
    }
    fn lookup(&mut self, fp: (u32, u32)) -> Option<IpAddr> {
        let w = self.find(fp)?;
        let o = self.order();
        if o & 3 != w as u32 {
            self.order = order_front(o, w as u32);
        }
        self.backend[w]
    }
    fn insert(&mut self, fp: (u32, u32), backend: IpAddr) {
        let o = self.order();
        let w = self.find(fp).unwrap_or(((o >> 6) & 3) as usize);
        self.hash[w] = fp;
        self.backend[w] = Some(backend);
        self.order = order_front(o, w as u32);
    }
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
    conn: HashMap<u32, ConnSet>,
    /// Global counters the program would have bumped.
    pub global: LbStats,
    /// Per-VIP-id counters the program would have bumped.
    pub vip_stats: HashMap<u32, VipStats>,
}

const VIP_PORT_AGNOSTIC: u32 = 1 << 0;
const VIP_SKIP_LRU_UDP: u32 = 1 << 1;
const VIP_SERVER_ID: u32 = 1 << 2;
const VIP_QUIC: u32 = 1 << 3;
const MAX_EXT_HDRS: usize = 8;
const ICMP4_QUOTE: usize = 68;
const ICMP6_QUOTE: usize = 248;
const DEFAULT_TTL: u8 = 64;

fn be16(p: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([p[o], p[o + 1]])
}

/// Ones'-complement sum of `data` (big-endian 16-bit words), unfolded.
fn sum16(data: &[u8]) -> u64 {
    let mut s = 0u64;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        s += u64::from(w);
    }
    s
}

fn fold(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// RFC 1624 eqn. 3 on big-endian words.
fn csum_replace(check: u16, old: u16, new: u16) -> u16 {
    let mut s = u32::from(!check) + u32::from(!old) + u32::from(new);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

#[derive(Debug, Clone, Copy)]
struct Parsed {
    l2: usize,
    vlan_tci: Option<[u8; 2]>,
    v6: bool,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    tos: u8,
    ttl: u8,
    df: bool,
    nonfirst: bool,
    mf: bool,
    l4: usize,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    doff: usize,
}

enum SidResult {
    None,
    Found(u32),
    Malformed,
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
                .filter(|v| v.flags & VIP_PORT_AGNOSTIC != 0)
                .count(),
            vips: vips
                .into_iter()
                .map(|v| ((v.addr, v.port, v.proto), v))
                .collect(),
            echo: echo.into_iter().collect(),
            alive,
            conn: HashMap::new(),
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
        let keep = |verdict, outcome| Decision {
            verdict,
            packet: pkt.to_vec(),
            outcome,
            hash: None,
        };
        let len = pkt.len();
        if len < 14 {
            return self.malformed(pkt);
        }
        let mut l2 = 14;
        let mut ethertype = be16(pkt, 12);
        let mut vlan_tci = None;
        if ethertype == 0x8100 {
            if len < 18 {
                return self.malformed(pkt);
            }
            vlan_tci = Some([pkt[14], pkt[15]]);
            ethertype = be16(pkt, 16);
            l2 = 18;
        }
        let parsed = match ethertype {
            0x0800 => self.parse_v4(pkt, l2, vlan_tci),
            0x86dd => self.parse_v6(pkt, l2, vlan_tci),
            _ => return keep(Verdict::Pass, Outcome::NotIp),
        };
        let p = match parsed {
            Ok(p) => p,
            Err(Outcome::Malformed) => return self.malformed(pkt),
            Err(Outcome::ExtHdrLimit) => {
                self.global.pass_ext_hdr_limit += 1;
                return keep(Verdict::Pass, Outcome::ExtHdrLimit);
            }
            Err(o) => return keep(Verdict::Pass, o),
        };
        if p.proto == 1 && !p.v6 || p.proto == 58 && p.v6 {
            return self.icmp(pkt, &p);
        }
        if p.proto != 6 && p.proto != 17 {
            return keep(Verdict::Pass, Outcome::NotVip);
        }
        let mut p = p;
        if !p.nonfirst {
            if p.proto == 6 {
                if p.l4 + 20 > len {
                    return self.malformed(pkt);
                }
                let doff = usize::from(pkt[p.l4 + 12] >> 4) * 4;
                if doff < 20 || p.l4 + doff > len {
                    return self.malformed(pkt);
                }
                p.doff = doff;
                p.tcp_flags = pkt[p.l4 + 13];
            } else if p.l4 + 8 > len {
                return self.malformed(pkt);
            }
            p.sport = be16(pkt, p.l4);
            p.dport = be16(pkt, p.l4 + 2);
        }
        self.balance(pkt, &p)
    }

    fn malformed(&mut self, pkt: &[u8]) -> Decision {
        self.global.drop_malformed += 1;
        Decision {
            verdict: Verdict::Drop,
            packet: pkt.to_vec(),
            outcome: Outcome::Malformed,
            hash: None,
        }
    }

    fn parse_v4(
        &self,
        pkt: &[u8],
        l2: usize,
        vlan_tci: Option<[u8; 2]>,
    ) -> Result<Parsed, Outcome> {
        let len = pkt.len();
        if len < l2 + 20 || pkt[l2] >> 4 != 4 {
            return Err(Outcome::Malformed);
        }
        let ihl = usize::from(pkt[l2] & 0xf) * 4;
        if ihl < 20 {
            return Err(Outcome::Malformed);
        }
        let tot = usize::from(be16(pkt, l2 + 2));
        if tot < ihl || tot > len - l2 || l2 + ihl > len {
            return Err(Outcome::Malformed);
        }
        let frag = be16(pkt, l2 + 6);
        let o = |i: usize| {
            [
                pkt[l2 + i],
                pkt[l2 + i + 1],
                pkt[l2 + i + 2],
                pkt[l2 + i + 3],
            ]
        };
        Ok(Parsed {
            l2,
            vlan_tci,
            v6: false,
            src: Ipv4Addr::from(o(12)).into(),
            dst: Ipv4Addr::from(o(16)).into(),
            proto: pkt[l2 + 9],
            tos: pkt[l2 + 1],
            ttl: pkt[l2 + 8],
            df: frag & 0x4000 != 0,
            nonfirst: frag & 0x1fff != 0,
            mf: frag & 0x2000 != 0,
            l4: l2 + ihl,
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            doff: 0,
        })
    }

    fn parse_v6(
        &self,
        pkt: &[u8],
        l2: usize,
        vlan_tci: Option<[u8; 2]>,
    ) -> Result<Parsed, Outcome> {
        let len = pkt.len();
        if len < l2 + 40 || pkt[l2] >> 4 != 6 {
            return Err(Outcome::Malformed);
        }
        let pl = usize::from(be16(pkt, l2 + 4));
        if pl == 0 || pl + 40 > len - l2 {
            return Err(Outcome::Malformed);
        }
        let addr = |o: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&pkt[l2 + o..l2 + o + 16]);
            IpAddr::V6(Ipv6Addr::from(a))
        };
        let mut nh = pkt[l2 + 6];
        let mut off = l2 + 40;
        let mut nonfirst = false;
        let ext = |nh: u8| nh == 0 || nh == 43 || nh == 60;
        for _ in 0..MAX_EXT_HDRS {
            if ext(nh) {
                if off + 2 > len {
                    return Err(Outcome::Malformed);
                }
                let next = pkt[off];
                off += (usize::from(pkt[off + 1]) + 1) * 8;
                nh = next;
                continue;
            }
            if nh == 44 {
                if off + 8 > len {
                    return Err(Outcome::Malformed);
                }
                let next = pkt[off];
                let fo = be16(pkt, off + 2);
                off += 8;
                nh = next;
                if fo & 0xfff8 != 0 {
                    nonfirst = true;
                    break;
                }
                continue;
            }
            break;
        }
        if !nonfirst && (ext(nh) || nh == 44) {
            return Err(Outcome::ExtHdrLimit);
        }
        if off > len {
            return Err(Outcome::Malformed);
        }
        Ok(Parsed {
            l2,
            vlan_tci,
            v6: true,
            src: addr(8),
            dst: addr(24),
            proto: nh,
            tos: (be16(pkt, l2) >> 4) as u8,
            ttl: pkt[l2 + 7],
            df: false,
            nonfirst,
            mf: false,
            l4: off,
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            doff: 0,
        })
    }

    fn icmp(&mut self, pkt: &[u8], p: &Parsed) -> Decision {
        let pass = Decision {
            verdict: Verdict::Pass,
            packet: pkt.to_vec(),
            outcome: Outcome::IcmpPass,
            hash: None,
        };
        if p.nonfirst {
            return pass;
        }
        if p.l4 + 8 > pkt.len() {
            return self.malformed(pkt);
        }
        let (echo_req, echo_rep) = if p.v6 { (128u8, 129u8) } else { (8, 0) };
        if p.mf || pkt[p.l4] != echo_req || !self.echo.contains(&p.dst) {
            return pass;
        }
        let mut out = pkt.to_vec();
        out.copy_within(6..12, 0);
        out[6..12].copy_from_slice(&pkt[0..6]);
        let l2 = p.l2;
        if p.v6 {
            out[l2 + 8..l2 + 24].copy_from_slice(&pkt[l2 + 24..l2 + 40]);
            out[l2 + 24..l2 + 40].copy_from_slice(&pkt[l2 + 8..l2 + 24]);
            out[l2 + 7] = DEFAULT_TTL;
        } else {
            out[l2 + 12..l2 + 16].copy_from_slice(&pkt[l2 + 16..l2 + 20]);
            out[l2 + 16..l2 + 20].copy_from_slice(&pkt[l2 + 12..l2 + 16]);
            let old = u16::from_be_bytes([pkt[l2 + 8], pkt[l2 + 9]]);
            let new = u16::from_be_bytes([DEFAULT_TTL, pkt[l2 + 9]]);
            let c = csum_replace(be16(pkt, l2 + 10), old, new);
            out[l2 + 10..l2 + 12].copy_from_slice(&c.to_be_bytes());
            out[l2 + 8] = DEFAULT_TTL;
        }
        let code = pkt[p.l4 + 1];
        let c = csum_replace(
            be16(pkt, p.l4 + 2),
            u16::from_be_bytes([echo_req, code]),
            u16::from_be_bytes([echo_rep, code]),
        );
        out[p.l4 + 2..p.l4 + 4].copy_from_slice(&c.to_be_bytes());
        out[p.l4] = echo_rep;
        self.global.icmp_echo_replies += 1;
        Decision {
            verdict: Verdict::Tx,
            packet: out,
            outcome: Outcome::IcmpEchoReply,
            hash: None,
        }
    }

    fn tcp_server_id(&self, pkt: &[u8], p: &Parsed) -> SidResult {
        let opts = &pkt[p.l4 + 20..p.l4 + p.doff];
        if opts.is_empty() {
            return SidResult::None;
        }
        match flowpin_tcp_opt::option::find_server_id_option(opts, self.cfg.tcp_opt_layout) {
            Ok(None) => SidResult::None,
            Ok(Some(o)) => SidResult::Found(o.raw_server_id()),
            Err(_) => SidResult::Malformed,
        }
    }

    fn quic_server_id(&self, pkt: &[u8], q: usize) -> SidResult {
        let cid_len = usize::from((self.cfg.quic_cid_len & 0x1f).max(8));
        let c = q + 1;
        if c + 8 > pkt.len() || c + cid_len > pkt.len() {
            return SidResult::Malformed;
        }
        let Ok(cid) = ConnectionId::new_checked(&pkt[c..c + cid_len]) else {
            return SidResult::Malformed;
        };
        match cid.layout().and_then(|l| cid.raw_server_id(l)) {
            Some(id) => SidResult::Found(id),
            None => SidResult::None,
        }
    }

    fn balance(&mut self, pkt: &[u8], p: &Parsed) -> Decision {
        let keep = |verdict, outcome| Decision {
            verdict,
            packet: pkt.to_vec(),
            outcome,
            hash: None,
        };
        let mut vip = if p.nonfirst {
            None
        } else {
            self.vips.get(&(p.dst, p.dport, p.proto)).cloned()
        };
        if vip.is_none() {
            let pass = |m: &mut Model| {
                if p.nonfirst {
                    m.global.pass_fragment_no_vip += 1;
                    keep(Verdict::Pass, Outcome::FragmentNoVip)
                } else {
                    keep(Verdict::Pass, Outcome::NotVip)
                }
            };
            if self.port_agnostic == 0 {
                return pass(self);
            }
            vip = self
                .vips
                .get(&(p.dst, 0, p.proto))
                .filter(|v| v.flags & VIP_PORT_AGNOSTIC != 0)
                .cloned();
            if vip.is_none() {
                return pass(self);
            }
        }
        let Some(vip) = vip else {
            return keep(Verdict::Pass, Outcome::NotVip);
        };
        let tuple = FiveTuple {
            src: p.src,
            dst: p.dst,
            sport: p.sport,
            dport: p.dport,
            proto: p.proto,
        };
        let hash = flow_hash(&tuple);
        let mut vs = self.vip(vip.id);
        vs.packets += 1;
        vs.bytes += pkt.len() as u64;
        let mut chosen: Option<(IpAddr, Route)> = None;
        let mut sid_res = None;
        if vip.flags & VIP_SERVER_ID != 0 && p.proto == 6 && !p.nonfirst && p.tcp_flags & 0x02 == 0
        {
            sid_res = Some(self.tcp_server_id(pkt, p));
        } else if vip.flags & VIP_QUIC != 0 && p.proto == 17 && !p.nonfirst {
            let q = p.l4 + 8;
            if q + 1 > pkt.len() {
                sid_res = Some(SidResult::Malformed);
            } else if pkt[q] & 0x80 != 0 {
                vs.quic_long_header += 1;
            } else {
                sid_res = Some(self.quic_server_id(pkt, q));
            }
        }
        match sid_res {
            Some(SidResult::Found(0)) => vs.sid_fallback_zero += 1,
            Some(SidResult::Found(sid)) => match vip.server_ids.get(&sid) {
                Some(a) if self.alive.contains(a) => {
                    vs.sid_routed += 1;
                    chosen = Some((*a, Route::ServerId));
                }
                _ => vs.sid_fallback_unknown += 1,
            },
            Some(SidResult::Malformed) => vs.sid_fallback_malformed += 1,
            Some(SidResult::None) => vs.sid_missing += 1,
            None => {}
        }
        if chosen.is_none() {
            let use_lru = !(p.proto == 17 && vip.flags & VIP_SKIP_LRU_UDP != 0);
            let set = hash & (self.cfg.conn_sets - 1);
            let fp = (hash, flow_hash2(&tuple));
            if use_lru && !(p.proto == 6 && p.tcp_flags & 0x02 != 0) {
                let found = self.conn.entry(set).or_default().lookup(fp);
                match found.filter(|a| self.alive.contains(a)) {
                    Some(a) => {
                        vs.lru_hit += 1;
                        chosen = Some((a, Route::Lru));
                    }
                    None => vs.lru_miss += 1,
                }
            }
            if chosen.is_none() {
                let slot = (hash % self.cfg.ring_size) as usize;
                match vip.ring.get(slot).copied().flatten() {
                    Some(a) if self.alive.contains(&a) => {
                        vs.new_flows += 1;
                        if use_lru {
                            self.conn.entry(set).or_default().insert(fp, a);
                        }
                        chosen = Some((a, Route::Ring));
                    }
                    _ => {
                        vs.unknown_backend += 1;
                        self.vip_stats.insert(vip.id, vs);
                        self.global.drop_unknown_backend += 1;
                        return Decision {
                            hash: Some(hash),
                            ..keep(Verdict::Drop, Outcome::UnknownBackend)
                        };
                    }
                }
            }
        }
        let Some((backend, route)) = chosen else {
            return keep(Verdict::Drop, Outcome::UnknownBackend);
        };
        let d = self.encap(pkt, p, backend, route, hash, &mut vs);
        self.vip_stats.insert(vip.id, vs);
        d
    }

    fn l2_header(&self, dst: &[u8], src: &[u8], vlan: Option<[u8; 2]>, ethertype: u16) -> Vec<u8> {
        let mut out = Vec::with_capacity(18);
        out.extend_from_slice(dst);
        out.extend_from_slice(src);
        if let Some(tci) = vlan {
            out.extend_from_slice(&0x8100u16.to_be_bytes());
            out.extend_from_slice(&tci);
        }
        out.extend_from_slice(&ethertype.to_be_bytes());
        out
    }

    fn encap(
        &mut self,
        pkt: &[u8],
        p: &Parsed,
        backend: IpAddr,
        route: Route,
        hash: u32,
        vs: &mut VipStats,
    ) -> Decision {
        let inner = &pkt[p.l2..];
        let ok = |packet| Decision {
            verdict: Verdict::Tx,
            packet,
            outcome: Outcome::Forwarded { backend, route },
            hash: Some(hash),
        };
        match backend {
            IpAddr::V4(b) => {
                if p.v6 {
                    self.global.encap_error += 1;
                    return Decision {
                        verdict: Verdict::Drop,
                        packet: pkt.to_vec(),
                        outcome: Outcome::EncapError,
                        hash: Some(hash),
                    };
                }
                if inner.len() + 20 > usize::from(self.cfg.mtu) {
                    return self.too_big(pkt, p, 20, hash, vs);
                }
                let mut out = self.l2_header(
                    &self.cfg.next_hop_mac,
                    &self.cfg.local_mac,
                    p.vlan_tci,
                    0x0800,
                );
                let src = self.cfg.tun_src4 | (hash & self.cfg.tun_src4_host_mask);
                let mut ip = [0u8; 20];
                ip[0] = 0x45;
                ip[1] = p.tos;
                ip[2..4].copy_from_slice(&((inner.len() + 20) as u16).to_be_bytes());
                ip[6] = if p.df { 0x40 } else { 0 };
                ip[8] = p.ttl;
                ip[9] = 4;
                ip[12..16].copy_from_slice(&src.to_be_bytes());
                ip[16..20].copy_from_slice(&b.octets());
                let c = fold(sum16(&ip));
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                out.extend_from_slice(&ip);
                out.extend_from_slice(inner);
                ok(out)
            }
            IpAddr::V6(b) => {
                if inner.len() + 40 > usize::from(self.cfg.mtu) {
                    return self.too_big(pkt, p, 40, hash, vs);
                }
                let mut out = self.l2_header(
                    &self.cfg.next_hop_mac,
                    &self.cfg.local_mac,
                    p.vlan_tci,
                    0x86dd,
                );
                let first = (6u32 << 28) | (u32::from(p.tos) << 20) | (hash & 0xfffff);
                let mut ip = [0u8; 40];
                ip[0..4].copy_from_slice(&first.to_be_bytes());
                ip[4..6].copy_from_slice(&(inner.len() as u16).to_be_bytes());
                ip[6] = if p.v6 { 41 } else { 4 };
                ip[7] = p.ttl;
                let mut s = self.cfg.tun_src6.octets();
                let last = u32::from_be_bytes([s[12], s[13], s[14], s[15]])
                    | (hash & self.cfg.tun_src6_host_mask);
                s[12..16].copy_from_slice(&last.to_be_bytes());
                ip[8..24].copy_from_slice(&s);
                ip[24..40].copy_from_slice(&b.octets());
                out.extend_from_slice(&ip);
                out.extend_from_slice(inner);
                ok(out)
            }
        }
    }

    fn too_big(
        &mut self,
        pkt: &[u8],
        p: &Parsed,
        overhead: u16,
        hash: u32,
        vs: &mut VipStats,
    ) -> Decision {
        vs.too_big += 1;
        let mtu = self.cfg.mtu - overhead;
        let q = if p.v6 { ICMP6_QUOTE } else { ICMP4_QUOTE };
        if pkt.len() < p.l2 + q {
            self.global.drop_too_big += 1;
            return Decision {
                verdict: Verdict::Drop,
                packet: pkt.to_vec(),
                outcome: Outcome::TooBig(false),
                hash: Some(hash),
            };
        }
        let quote = &pkt[p.l2..p.l2 + q];
        let mut out;
        if p.v6 {
            out = self.l2_header(&pkt[6..12], &pkt[0..6], p.vlan_tci, 0x86dd);
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&((8 + q) as u16).to_be_bytes());
            ip[6] = 58;
            ip[7] = DEFAULT_TTL;
            let (IpAddr::V6(src), IpAddr::V6(dst)) = (p.dst, p.src) else {
                unreachable!("IPv6 packet with IPv4 addresses")
            };
            ip[8..24].copy_from_slice(&src.octets());
            ip[24..40].copy_from_slice(&dst.octets());
            let mut icmp = vec![2u8, 0, 0, 0];
            icmp.extend_from_slice(&u32::from(mtu).to_be_bytes());
            icmp.extend_from_slice(quote);
            let pseudo = sum16(&ip[8..40]) + sum16(&((8 + q) as u32).to_be_bytes()) + 58;
            let c = fold(pseudo + sum16(&icmp));
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&ip);
            out.extend_from_slice(&icmp);
        } else {
            out = self.l2_header(&pkt[6..12], &pkt[0..6], p.vlan_tci, 0x0800);
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + 8 + q) as u16).to_be_bytes());
            ip[8] = DEFAULT_TTL;
            ip[9] = 1;
            let (IpAddr::V4(src), IpAddr::V4(dst)) = (p.dst, p.src) else {
                unreachable!("IPv4 packet with IPv6 addresses")
            };
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            let c = fold(sum16(&ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let mut icmp = vec![3u8, 4, 0, 0, 0, 0];
            icmp.extend_from_slice(&mtu.to_be_bytes());
            icmp.extend_from_slice(quote);
            let c = fold(sum16(&icmp));
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&ip);
            out.extend_from_slice(&icmp);
        }
        self.global.icmp_too_big_sent += 1;
        Decision {
            verdict: Verdict::Tx,
            packet: out,
            outcome: Outcome::TooBig(true),
            hash: Some(hash),
        }
    }
}

impl Model {
    /// A snapshot of `lb`'s configuration as a model that predicts the
    /// program's decisions (with an empty connection table of its own).
    pub fn of(lb: &XdpLb) -> Model {
        let c = lb.config();
        let cfg = ModelConfig {
            ring_size: c.ring_size,
            mtu: c.mtu,
            local_mac: c.local_mac,
            next_hop_mac: c.next_hop_mac,
            tun_src4: u32::from(c.tunnel_src_v4.0) & !host_mask(c.tunnel_src_v4.1, 32),
            tun_src4_host_mask: host_mask(c.tunnel_src_v4.1, 32),
            tun_src6: {
                let m6 = host_mask(c.tunnel_src_v6.1.max(96), 128);
                let mut o6 = c.tunnel_src_v6.0.octets();
                let last = u32::from_be_bytes([o6[12], o6[13], o6[14], o6[15]]) & !m6;
                o6[12..16].copy_from_slice(&last.to_be_bytes());
                Ipv6Addr::from(o6)
            },
            tun_src6_host_mask: host_mask(c.tunnel_src_v6.1.max(96), 128),
            tcp_opt_layout: c.tcp_opt_layout,
            quic_cid_len: c.quic_cid_len,
            conn_sets: lb.conn_sets_per_cpu(),
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
            })
            .collect();
        Model::new(cfg, vips, lb.state().echo_addrs().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_ipv4_header() {
        // RFC 1071 style example: header from Wikipedia's IPv4 checksum article.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(fold(sum16(&h)), 0xb861);
    }

    #[test]
    fn incremental_update_matches_full_recompute() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = fold(sum16(&h));
        let old = be16(&h, 8);
        h[8] = 0x07;
        let new = be16(&h, 8);
        assert_eq!(csum_replace(c, old, new), fold(sum16(&h)));
    }
}
