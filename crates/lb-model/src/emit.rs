//! The packets the program sends: the encapsulated packet (IPIP, IP6IP6,
//! IPv4 in IPv6), ICMP fragmentation-needed / ICMPv6 packet-too-big, and
//! echo replies. Headers are etherparse's header types, which compute
//! their own checksums; the echo reply updates the received checksums
//! incrementally (RFC 1624), as the program does.

use std::net::IpAddr;

use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::{
    EtherType, Ethernet2Header, Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type, IpDscp, IpEcn,
    IpFragOffset, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header,
};
use flowpin_bpf_abi::lb as abi;

use super::parse::Parsed;
use super::{keep, Decision, Model, Outcome, Route, Verdict};
use flowpin_bpf_progs::xdp_lb::VipStats;

const DEFAULT_TTL: u8 = abi::LB_DEFAULT_TTL;

/// RFC 1624 eqn. 3: the checksum `check` after the 16-bit word `old` it
/// covers became `new` (big-endian words).
pub(super) fn csum_replace(check: u16, old: u16, new: u16) -> u16 {
    let mut s = u32::from(!check) + u32::from(!old) + u32::from(new);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

fn be16(p: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([p[o], p[o + 1]])
}

/// An Ethernet header (with the received 802.1Q tag, if any).
fn l2_header(dst: [u8; 6], src: [u8; 6], vlan: Option<[u8; 2]>, ether_type: EtherType) -> Vec<u8> {
    let mut out = Vec::with_capacity(18);
    let outer = if vlan.is_some() {
        EtherType::VLAN_TAGGED_FRAME
    } else {
        ether_type
    };
    out.extend_from_slice(
        &Ethernet2Header {
            destination: dst,
            source: src,
            ether_type: outer,
        }
        .to_bytes(),
    );
    if let Some(tci) = vlan {
        out.extend_from_slice(&tci);
        out.extend_from_slice(&ether_type.0.to_be_bytes());
    }
    out
}

fn macs(pkt: &[u8]) -> ([u8; 6], [u8; 6]) {
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(&pkt[0..6]);
    src.copy_from_slice(&pkt[6..12]);
    (dst, src)
}

fn ipv4_header(
    total_len: usize,
    tos: u8,
    df: bool,
    ttl: u8,
    proto: IpNumber,
    src: [u8; 4],
    dst: [u8; 4],
) -> Vec<u8> {
    let mut ip = Ipv4Header {
        dscp: IpDscp::try_new(tos >> 2).unwrap_or(IpDscp::ZERO),
        ecn: IpEcn::try_new(tos & 3).unwrap_or(IpEcn::ZERO),
        total_len: total_len as u16,
        identification: 0,
        dont_fragment: df,
        more_fragments: false,
        fragment_offset: IpFragOffset::ZERO,
        time_to_live: ttl,
        protocol: proto,
        header_checksum: 0,
        source: src,
        destination: dst,
        options: Default::default(),
    };
    ip.header_checksum = ip.calc_header_checksum();
    ip.to_bytes().to_vec()
}

impl Model {
    pub(super) fn icmp_echo(&mut self, pkt: &[u8], p: &Parsed) -> Decision {
        let pass = keep(pkt, Verdict::Pass, Outcome::IcmpPass);
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

    pub(super) fn encap(
        &mut self,
        pkt: &[u8],
        p: &Parsed,
        backend: IpAddr,
        route: Route,
        hash: u32,
        vs: &mut VipStats,
    ) -> Decision {
        let inner = &pkt[p.l2..];
        let (next_hop, local) = (self.cfg.next_hop_mac, self.cfg.local_mac);
        let mut out = match backend {
            IpAddr::V4(b) => {
                if p.v6 {
                    self.global.encap_error += 1;
                    return Decision {
                        hash: Some(hash),
                        ..keep(pkt, Verdict::Drop, Outcome::EncapError)
                    };
                }
                if inner.len() + Ipv4Header::MIN_LEN > usize::from(self.cfg.mtu) {
                    return self.too_big(pkt, p, Ipv4Header::MIN_LEN as u16, hash, vs);
                }
                let src = self.cfg.tun_src4 | (hash & self.cfg.tun_src4_host_mask);
                let mut out = l2_header(next_hop, local, p.vlan_tci, EtherType::IPV4);
                out.extend_from_slice(&ipv4_header(
                    inner.len() + Ipv4Header::MIN_LEN,
                    p.tos,
                    p.df,
                    p.ttl,
                    IpNumber::IPV4,
                    src.to_be_bytes(),
                    b.octets(),
                ));
                out
            }
            IpAddr::V6(b) => {
                if inner.len() + Ipv6Header::LEN > usize::from(self.cfg.mtu) {
                    return self.too_big(pkt, p, Ipv6Header::LEN as u16, hash, vs);
                }
                let mut src = self.cfg.tun_src6.octets();
                let last = u32::from_be_bytes([src[12], src[13], src[14], src[15]])
                    | (hash & self.cfg.tun_src6_host_mask);
                src[12..16].copy_from_slice(&last.to_be_bytes());
                let ip = Ipv6Header {
                    traffic_class: p.tos,
                    flow_label: Ipv6FlowLabel::try_new(hash & 0xfffff)
                        .unwrap_or(Ipv6FlowLabel::ZERO),
                    payload_length: inner.len() as u16,
                    next_header: if p.v6 { IpNumber::IPV6 } else { IpNumber::IPV4 },
                    hop_limit: p.ttl,
                    source: src,
                    destination: b.octets(),
                };
                let mut out = l2_header(next_hop, local, p.vlan_tci, EtherType::IPV6);
                out.extend_from_slice(&ip.to_bytes());
                out
            }
        };
        out.extend_from_slice(inner);
        Decision {
            verdict: Verdict::Tx,
            packet: out,
            outcome: Outcome::Forwarded { backend, route },
            hash: Some(hash),
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
        let q = if p.v6 {
            abi::LB_ICMP6_QUOTE
        } else {
            abi::LB_ICMP4_QUOTE
        } as usize;
        if pkt.len() < p.l2 + q {
            self.global.drop_too_big += 1;
            return Decision {
                hash: Some(hash),
                ..keep(pkt, Verdict::Drop, Outcome::TooBig(false))
            };
        }
        let quote = &pkt[p.l2..p.l2 + q];
        let (dst_mac, src_mac) = macs(pkt);
        // Back to the client (its MAC, its address), from the VIP.
        let mut out;
        match (p.dst, p.src) {
            (IpAddr::V6(vip), IpAddr::V6(client)) => {
                let icmp = Icmpv6Header::with_checksum(
                    Icmpv6Type::PacketTooBig {
                        mtu: u32::from(mtu),
                    },
                    vip.octets(),
                    client.octets(),
                    quote,
                );
                let Ok(icmp) = icmp else {
                    return keep(pkt, Verdict::Drop, Outcome::TooBig(false));
                };
                let ip = Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::ZERO,
                    payload_length: (icmp.header_len() + q) as u16,
                    next_header: IpNumber::IPV6_ICMP,
                    hop_limit: DEFAULT_TTL,
                    source: vip.octets(),
                    destination: client.octets(),
                };
                out = l2_header(src_mac, dst_mac, p.vlan_tci, EtherType::IPV6);
                out.extend_from_slice(&ip.to_bytes());
                out.extend_from_slice(&icmp.to_bytes());
            }
            (IpAddr::V4(vip), IpAddr::V4(client)) => {
                let icmp = Icmpv4Header::with_checksum(
                    Icmpv4Type::DestinationUnreachable(
                        DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
                    ),
                    quote,
                );
                out = l2_header(src_mac, dst_mac, p.vlan_tci, EtherType::IPV4);
                out.extend_from_slice(&ipv4_header(
                    Ipv4Header::MIN_LEN + icmp.header_len() + q,
                    0,
                    false,
                    DEFAULT_TTL,
                    IpNumber::ICMP,
                    vip.octets(),
                    client.octets(),
                ));
                out.extend_from_slice(&icmp.to_bytes());
            }
            _ => return keep(pkt, Verdict::Drop, Outcome::TooBig(false)),
        }
        out.extend_from_slice(quote);
        self.global.icmp_too_big_sent += 1;
        Decision {
            verdict: Verdict::Tx,
            packet: out,
            outcome: Outcome::TooBig(true),
            hash: Some(hash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn ipv4_header_of_a_known_packet() {
        // Wikipedia's IPv4 checksum example: checksum 0xb861.
        let h = ipv4_header(
            0x73,
            0,
            true,
            64,
            IpNumber::UDP,
            [192, 168, 0, 1],
            [192, 168, 0, 199],
        );
        assert_eq!(h, HEADER);
    }

    #[test]
    fn incremental_update_matches_full_recompute() {
        let mut h = HEADER;
        let old = be16(&h, 8);
        h[8] = 0x07;
        let new = be16(&h, 8);
        let c = csum_replace(be16(&HEADER, 10), old, new);
        h[10] = 0;
        h[11] = 0;
        let full = etherparse::Ipv4HeaderSlice::from_slice(&h)
            .map(|s| s.to_header().calc_header_checksum())
            .unwrap_or(0);
        assert_eq!(c, full);
    }
}
