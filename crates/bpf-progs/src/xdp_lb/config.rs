//! Load-time configuration of `xdp_lb` and its encoding into the program's
//! `flowpin_lb_cfg` (the generated type: no hand-counted offsets).

use std::net::{Ipv4Addr, Ipv6Addr};

use flowpin_tcp_opt::{Layout, QuicLb};

use super::{LbConfig, XdpLbError, CONN_SET_BYTES, DEFAULT_RING_SIZE};
use crate::skel::xdp_lb::types::flowpin_lb_cfg;

type Result<T> = std::result::Result<T, XdpLbError>;

/// Load-time configuration: `XdpLbConfig::default()` then one setter per
/// field, e.g. `XdpLbConfig::default().max_vips(64).mtu(9000)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct XdpLbConfig {
    /// Maglev table size M (prime). Default [`DEFAULT_RING_SIZE`] (65537).
    pub ring_size: u32,
    /// Maximum number of VIPs (the ring map holds `max_vips * ring_size` slots).
    pub max_vips: u32,
    /// Maximum number of distinct backend addresses.
    pub max_backends: u32,
    /// Maximum number of (VIP, server_id) routes.
    pub max_server_ids: u32,
    /// Memory budget of the connection table, bytes (see the module docs).
    /// Default 16 MiB: 2^20 flows over all CPUs (on 2 CPUs, 512 Ki each).
    /// A table larger than the CPU caches and TLB reach costs new flows a
    /// cache and TLB miss each (measured with `xdp_bench --lru-mib`).
    pub lru_memory_bytes: u64,
    /// L3 MTU of the egress link: an encapsulated packet above it gets an ICMP too-big.
    pub mtu: u16,
    /// Layout of the server_id TCP option.
    pub tcp_opt_layout: Layout,
    /// Length of the server-chosen QUIC connection IDs (8..=20) of the QUIC
    /// VIPs that declare no layout ([`VipCid::Any`](super::VipCid::Any));
    /// a VIP that declares one ([`XdpLb::set_vip_cid`](super::XdpLb::set_vip_cid))
    /// carries its own length. Default 16, what `flowpin-quinn` issues.
    pub quic_cid_len: u8,
    /// Also decode IETF QUIC-LB plaintext CIDs of this configuration (CIDs
    /// whose config rotation bits are its codepoint; `0b111` is then never
    /// routed; other CIDs keep the flowpin / Katran layouts). Default: off.
    pub quic_lb: Option<QuicLb>,
    /// Our MAC (source of encapsulated packets).
    pub local_mac: [u8; 6],
    /// The next hop's MAC (destination of encapsulated packets).
    pub next_hop_mac: [u8; 6],
    /// Outer IPv4 source prefix; host bits come from the flow hash.
    pub tunnel_src_v4: (Ipv4Addr, u8),
    /// Outer IPv6 source prefix; host bits of the last 32 bits come from the flow hash.
    pub tunnel_src_v6: (Ipv6Addr, u8),
    /// Answer ICMP/ICMPv6 echo requests to VIP addresses.
    pub answer_icmp_echo: bool,
    /// One connection table shared by all CPUs instead of one per CPU. For
    /// hosts where a flow's packets do not stay on one CPU (veth, no RSS).
    /// Entries are written without locks: two CPUs racing on one set can
    /// lose an entry (the flow then takes the ring again). Default: false.
    pub conn_table_shared: bool,
    /// A TCP packet routed by its server_id also inserts its flow into the
    /// connection table when the table misses it, so the flow's packets
    /// without the option (kernel RSTs, `TIME_WAIT` ACKs, ACKs with no
    /// option room) still reach its backend after this LB lost its table or
    /// took the flow over from another LB (QUIC short-header packets all
    /// carry their CID: not needed there). Default: true. Cost, measured
    /// with `xdp_bench` (cases `server_id`, `server_id_flow`,
    /// `server_id_cold`): one table lookup per server_id-routed packet
    /// (+27 ns on a 2-core VM, table hit: the steady state, as the SYN
    /// already inserted the flow) and an insert once per flow when the
    /// table misses (+144 ns, only after a restart or an ECMP change).
    /// Without it, such a packet goes by the ring, and an ACK without
    /// option room mid-connection can reach another backend, which resets
    /// the connection.
    pub warm_conn_from_server_id: bool,
}

impl Default for XdpLbConfig {
    fn default() -> Self {
        XdpLbConfig {
            ring_size: DEFAULT_RING_SIZE,
            max_vips: 16,
            max_backends: 4096,
            max_server_ids: 65536,
            lru_memory_bytes: 16 << 20,
            mtu: 1500,
            tcp_opt_layout: Layout::default(),
            quic_cid_len: 16,
            quic_lb: None,
            local_mac: [0; 6],
            next_hop_mac: [0; 6],
            tunnel_src_v4: (Ipv4Addr::new(172, 16, 0, 0), 16),
            tunnel_src_v6: ("fc00:f10e::".parse().unwrap_or(Ipv6Addr::UNSPECIFIED), 96),
            answer_icmp_echo: true,
            conn_table_shared: false,
            warm_conn_from_server_id: true,
        }
    }
}

impl XdpLbConfig {
    /// Sets [`XdpLbConfig::ring_size`].
    pub fn ring_size(mut self, ring_size: u32) -> Self {
        self.ring_size = ring_size;
        self
    }

    /// Sets [`XdpLbConfig::max_vips`].
    pub fn max_vips(mut self, max_vips: u32) -> Self {
        self.max_vips = max_vips;
        self
    }

    /// Sets [`XdpLbConfig::max_backends`].
    pub fn max_backends(mut self, max_backends: u32) -> Self {
        self.max_backends = max_backends;
        self
    }

    /// Sets [`XdpLbConfig::max_server_ids`].
    pub fn max_server_ids(mut self, max_server_ids: u32) -> Self {
        self.max_server_ids = max_server_ids;
        self
    }

    /// Sets [`XdpLbConfig::lru_memory_bytes`].
    pub fn lru_memory_bytes(mut self, lru_memory_bytes: u64) -> Self {
        self.lru_memory_bytes = lru_memory_bytes;
        self
    }

    /// Sets [`XdpLbConfig::mtu`].
    pub fn mtu(mut self, mtu: u16) -> Self {
        self.mtu = mtu;
        self
    }

    /// Sets [`XdpLbConfig::tcp_opt_layout`].
    pub fn tcp_opt_layout(mut self, tcp_opt_layout: Layout) -> Self {
        self.tcp_opt_layout = tcp_opt_layout;
        self
    }

    /// Sets [`XdpLbConfig::quic_cid_len`].
    pub fn quic_cid_len(mut self, quic_cid_len: u8) -> Self {
        self.quic_cid_len = quic_cid_len;
        self
    }

    /// Sets [`XdpLbConfig::quic_lb`].
    pub fn quic_lb(mut self, quic_lb: impl Into<Option<QuicLb>>) -> Self {
        self.quic_lb = quic_lb.into();
        self
    }

    /// Sets [`XdpLbConfig::local_mac`].
    pub fn local_mac(mut self, local_mac: [u8; 6]) -> Self {
        self.local_mac = local_mac;
        self
    }

    /// Sets [`XdpLbConfig::next_hop_mac`].
    pub fn next_hop_mac(mut self, next_hop_mac: [u8; 6]) -> Self {
        self.next_hop_mac = next_hop_mac;
        self
    }

    /// Sets [`XdpLbConfig::tunnel_src_v4`].
    pub fn tunnel_src_v4(mut self, tunnel_src_v4: (Ipv4Addr, u8)) -> Self {
        self.tunnel_src_v4 = tunnel_src_v4;
        self
    }

    /// Sets [`XdpLbConfig::tunnel_src_v6`].
    pub fn tunnel_src_v6(mut self, tunnel_src_v6: (Ipv6Addr, u8)) -> Self {
        self.tunnel_src_v6 = tunnel_src_v6;
        self
    }

    /// Sets [`XdpLbConfig::answer_icmp_echo`].
    pub fn answer_icmp_echo(mut self, answer_icmp_echo: bool) -> Self {
        self.answer_icmp_echo = answer_icmp_echo;
        self
    }

    /// Sets [`XdpLbConfig::conn_table_shared`].
    pub fn conn_table_shared(mut self, conn_table_shared: bool) -> Self {
        self.conn_table_shared = conn_table_shared;
        self
    }
}

impl XdpLbConfig {
    /// Connection-table sets per table the memory budget buys for `ncpus`
    /// tables (a power of two, at least 1).
    pub fn conn_sets_per_cpu(&self, ncpus: u32) -> u32 {
        let sets = self.lru_memory_bytes / (CONN_SET_BYTES * u64::from(ncpus.max(1)));
        let sets = sets.clamp(1, 1 << 24);
        1u32 << (63 - sets.leading_zeros())
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(XdpLbError::InvalidConfig(s));
        if flowpin_maglev::next_prime(self.ring_size) != Some(self.ring_size) {
            return bad(format!(
                "ring_size {} is not a prime (try 65537)",
                self.ring_size
            ));
        }
        if self.max_vips == 0 || self.max_backends < 2 || self.max_server_ids == 0 {
            return bad("max_vips and max_server_ids must be >= 1, max_backends >= 2".into());
        }
        let slots = u64::from(self.max_vips) * u64::from(self.ring_size);
        if slots > u64::from(u32::MAX >> 2) {
            return bad(format!("max_vips * ring_size = {slots} slots is too many"));
        }
        if self.lru_memory_bytes < CONN_SET_BYTES * 64 {
            return bad(format!(
                "lru_memory_bytes must be at least {}",
                CONN_SET_BYTES * 64
            ));
        }
        if self.mtu < 576 {
            return bad(format!("mtu {} is below 576", self.mtu));
        }
        if !(8..=20).contains(&self.quic_cid_len) {
            return bad(format!("quic_cid_len {} not in 8..=20", self.quic_cid_len));
        }
        if let Some(q) = self.quic_lb {
            if usize::from(self.quic_cid_len) < q.min_cid_len() {
                return bad(format!(
                    "quic_cid_len {} is too short for QUIC-LB CIDs with a {}-octet server ID \
                     and a 4-octet nonce: use at least {}",
                    self.quic_cid_len,
                    q.server_id_len(),
                    q.min_cid_len()
                ));
            }
        }
        if self.tunnel_src_v4.1 > 32 || self.tunnel_src_v6.1 > 128 {
            return bad("tunnel source prefix length out of range".into());
        }
        Ok(())
    }
}

/// The outer source addresses of encapsulated packets as the program forms
/// them from [`XdpLbConfig::tunnel_src_v4`] and
/// [`XdpLbConfig::tunnel_src_v6`] (its `lb_cfg.tun_src*` fields): a prefix
/// with its host bits zero, ORed with `flow hash & host mask`. In IPv6 only
/// the last 32 bits vary: a prefix shorter than /96 counts as /96.
///
/// What a model of the program (the `flowpin-lb-model` test oracle) needs to
/// predict outer source addresses; [`XdpLbConfig::tunnel_sources`] gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TunnelSources {
    /// IPv4 prefix, host bits zero.
    pub v4: Ipv4Addr,
    /// Host bits of the IPv4 source, taken from the flow hash.
    pub v4_host_mask: u32,
    /// IPv6 prefix, host bits of its last 32 bits zero.
    pub v6: Ipv6Addr,
    /// Host bits of the last 32 bits of the IPv6 source, taken from the flow hash.
    pub v6_host_mask: u32,
}

impl XdpLbConfig {
    /// The outer source prefixes and host masks the program uses (see
    /// [`TunnelSources`]).
    pub fn tunnel_sources(&self) -> TunnelSources {
        let (p4, l4) = self.tunnel_src_v4;
        let v4_host_mask = host_mask(l4, 32);
        let (p6, l6) = self.tunnel_src_v6;
        let v6_host_mask = host_mask(l6.max(96), 128);
        let mut o6 = p6.octets();
        let last = u32::from_be_bytes([o6[12], o6[13], o6[14], o6[15]]) & !v6_host_mask;
        o6[12..16].copy_from_slice(&last.to_be_bytes());
        TunnelSources {
            v4: Ipv4Addr::from(u32::from(p4) & !v4_host_mask),
            v4_host_mask,
            v6: Ipv6Addr::from(o6),
            v6_host_mask,
        }
    }
}

pub(crate) fn host_mask(prefix_len: u8, bits: u8) -> u32 {
    // Host bits of the last 32 bits of a `bits`-bit address with `prefix_len`.
    let net_bits_in_word = u32::from(prefix_len.saturating_sub(bits - 32));
    if net_bits_in_word >= 32 {
        0
    } else {
        u32::MAX >> net_bits_in_word
    }
}

impl XdpLbConfig {
    /// The program's runtime configuration (`flowpin_lb_cfg`, its `.data`
    /// section) for this config and `port_agnostic_vips` port-agnostic VIPs.
    /// Entries of the `backend_descs` map: (VIP, backend) pairs over all VIPs.
    pub(crate) fn max_backend_descs(&self) -> u32 {
        self.max_backends.saturating_mul(4).max(1024)
    }

    /// What the control state ([`LbState`](super::LbState)) plans within:
    /// the ring size, the VIP and backend limits, the ICMP echo entries.
    pub fn lb_config(&self) -> LbConfig {
        LbConfig::default()
            .ring_size(self.ring_size)
            .max_vips(self.max_vips)
            .max_backends(self.max_backends)
            .answer_icmp_echo(self.answer_icmp_echo)
    }

    /// Sets [`XdpLbConfig::warm_conn_from_server_id`].
    pub fn warm_conn_from_server_id(mut self, yes: bool) -> Self {
        self.warm_conn_from_server_id = yes;
        self
    }

    /// Takes the runtime fields (`lb_cfg`: MACs, MTU, option layout, QUIC,
    /// tunnel sources) from what a pinned program holds.
    pub(crate) fn set_from_c(&mut self, c: &flowpin_lb_cfg) {
        use flowpin_tcp_opt::consts as k;
        self.local_mac = c.local_mac;
        self.next_hop_mac = c.next_hop_mac;
        self.mtu = c.mtu;
        self.tcp_opt_layout = match u32::from(c.tcpopt_layout) {
            x if x == k::LAYOUT_COMPACT => Layout::Compact {
                kind: c.tcpopt_kind,
            },
            x if x == k::LAYOUT_KATRAN => Layout::KatranCompat,
            _ => Layout::Rfc6994 {
                exid: c.tcpopt_exid,
            },
        };
        self.quic_cid_len = c.quic_cid_len;
        self.quic_lb = if c.quic_lb & k::QUIC_LB_CFG_ON != 0 {
            QuicLb::new(
                (c.quic_lb >> k::QUIC_LB_CFG_ID_SHIFT) & k::QUIC_LB_CFG_ID_MASK,
                c.quic_lb & k::QUIC_LB_CFG_SID_LEN_MASK,
            )
            .ok()
        } else {
            None
        };
        let l4 = 32 - c.tun_src4_host_mask.count_ones() as u8;
        self.tunnel_src_v4 = (Ipv4Addr::from(c.tun_src4), l4);
        let mut o6 = [0u8; 16];
        for (d, w) in o6.chunks_exact_mut(4).zip(c.tun_src6) {
            d.copy_from_slice(&w.to_ne_bytes());
        }
        let l6 = 128 - c.tun_src6_host_mask.count_ones() as u8;
        self.tunnel_src_v6 = (Ipv6Addr::from(o6), l6);
    }

    pub(crate) fn to_c(&self, port_agnostic_vips: u32) -> flowpin_lb_cfg {
        let (tcpopt_layout, tcpopt_kind, tcpopt_exid) = match self.tcp_opt_layout {
            Layout::Rfc6994 { exid } => (
                flowpin_tcp_opt::consts::LAYOUT_RFC6994 as u8,
                flowpin_tcp_opt::consts::TCPOPT_EXP_KIND,
                exid,
            ),
            Layout::Compact { kind } => (flowpin_tcp_opt::consts::LAYOUT_COMPACT as u8, kind, 0),
            Layout::KatranCompat => (flowpin_tcp_opt::consts::LAYOUT_KATRAN as u8, 0, 0),
        };
        let tun = self.tunnel_sources();
        let mut tun_src6 = [0u32; 4];
        for (w, c) in tun_src6.iter_mut().zip(tun.v6.octets().chunks_exact(4)) {
            *w = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
        }
        flowpin_lb_cfg {
            local_mac: self.local_mac,
            next_hop_mac: self.next_hop_mac,
            mtu: self.mtu,
            tcpopt_layout,
            tcpopt_kind,
            tcpopt_exid,
            quic_cid_len: self.quic_cid_len,
            quic_lb: self.quic_lb.map_or(0, QuicLb::lb_config_byte),
            tun_src4: u32::from(tun.v4),
            tun_src4_host_mask: tun.v4_host_mask,
            tun_src6,
            tun_src6_host_mask: tun.v6_host_mask,
            port_agnostic_vips,
        }
    }
}

impl From<&XdpLbConfig> for LbConfig {
    fn from(c: &XdpLbConfig) -> LbConfig {
        c.lb_config()
    }
}
