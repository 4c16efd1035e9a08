//! Headers of the input frame, read through etherparse's checked views.
//! Each check below is one the program makes; a view that refuses its
//! bytes is the program's `drop_malformed`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    EtherType, Ethernet2HeaderSlice, IpNumber, Ipv4HeaderSlice, Ipv6HeaderSlice,
    SingleVlanHeaderSlice, TcpHeaderSlice, UdpHeaderSlice,
};
use flowpin_bpf_abi::lb::LB_MAX_EXT_HDRS;

use super::Outcome;

/// The L2 header: Ethernet and at most one 802.1Q tag.
#[derive(Debug, Clone, Copy)]
pub(super) struct L2 {
    /// Bytes of L2 header (14 or 18).
    pub(super) len: usize,
    /// The tag's TCI bytes, if tagged.
    pub(super) vlan_tci: Option<[u8; 2]>,
    /// The ethertype after the tag.
    pub(super) ether_type: EtherType,
}

/// The parsed packet.
#[derive(Debug, Clone, Copy)]
pub(super) struct Parsed {
    pub(super) l2: usize,
    pub(super) vlan_tci: Option<[u8; 2]>,
    pub(super) v6: bool,
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    pub(super) proto: IpNumber,
    pub(super) tos: u8,
    pub(super) ttl: u8,
    pub(super) df: bool,
    pub(super) nonfirst: bool,
    pub(super) mf: bool,
    pub(super) l4: usize,
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) syn: bool,
    /// TCP header length (data offset × 4); 0 for UDP and fragments.
    pub(super) doff: usize,
}

pub(super) fn l2(pkt: &[u8]) -> Result<L2, ()> {
    let eth = Ethernet2HeaderSlice::from_slice(pkt).map_err(|_| ())?;
    let mut l2 = L2 {
        len: eth.slice().len(),
        vlan_tci: None,
        ether_type: eth.ether_type(),
    };
    if l2.ether_type == EtherType::VLAN_TAGGED_FRAME {
        let vlan = SingleVlanHeaderSlice::from_slice(&pkt[l2.len..]).map_err(|_| ())?;
        let tag = vlan.slice();
        l2.vlan_tci = Some([tag[0], tag[1]]);
        l2.ether_type = vlan.ether_type();
        l2.len += tag.len();
    }
    Ok(l2)
}

pub(super) fn ipv4(pkt: &[u8], l2: &L2) -> Result<Parsed, Outcome> {
    let l3 = &pkt[l2.len..];
    // Version 4, IHL >= 5, the header within the frame.
    let ip = Ipv4HeaderSlice::from_slice(l3).map_err(|_| Outcome::Malformed)?;
    let ihl = ip.slice().len();
    let tot = usize::from(ip.total_len());
    if tot < ihl || tot > l3.len() {
        return Err(Outcome::Malformed);
    }
    let tos = ip.slice()[1];
    Ok(Parsed {
        l2: l2.len,
        vlan_tci: l2.vlan_tci,
        v6: false,
        src: Ipv4Addr::from(ip.source()).into(),
        dst: Ipv4Addr::from(ip.destination()).into(),
        proto: ip.protocol(),
        tos,
        ttl: ip.ttl(),
        df: ip.dont_fragment(),
        nonfirst: ip.fragments_offset().value() != 0,
        mf: ip.more_fragments(),
        l4: l2.len + ihl,
        sport: 0,
        dport: 0,
        syn: false,
        doff: 0,
    })
}

fn is_ext(nh: IpNumber) -> bool {
    nh == IpNumber::IPV6_HEADER_HOP_BY_HOP
        || nh == IpNumber::IPV6_ROUTE_HEADER
        || nh == IpNumber::IPV6_DESTINATION_OPTIONS
}

pub(super) fn ipv6(pkt: &[u8], l2: &L2) -> Result<Parsed, Outcome> {
    let l3 = &pkt[l2.len..];
    // Version 6, 40 bytes within the frame.
    let ip = Ipv6HeaderSlice::from_slice(l3).map_err(|_| Outcome::Malformed)?;
    let pl = usize::from(ip.payload_length());
    if pl == 0 || pl + ip.slice().len() > l3.len() {
        return Err(Outcome::Malformed);
    }
    // The extension chain, bounded like the program's walk: each header's
    // next-header and length bytes; the fragment header's offset.
    let len = pkt.len();
    let mut nh = ip.next_header();
    let mut off = l2.len + ip.slice().len();
    let mut nonfirst = false;
    for _ in 0..LB_MAX_EXT_HDRS {
        if is_ext(nh) {
            let h = pkt.get(off..off + 2).ok_or(Outcome::Malformed)?;
            nh = IpNumber(h[0]);
            off += (usize::from(h[1]) + 1) * 8;
            continue;
        }
        if nh == IpNumber::IPV6_FRAGMENTATION_HEADER {
            let h = pkt.get(off..off + 8).ok_or(Outcome::Malformed)?;
            nh = IpNumber(h[0]);
            off += 8;
            if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                nonfirst = true;
                break;
            }
            continue;
        }
        break;
    }
    if !nonfirst && (is_ext(nh) || nh == IpNumber::IPV6_FRAGMENTATION_HEADER) {
        return Err(Outcome::ExtHdrLimit);
    }
    if off > len {
        return Err(Outcome::Malformed);
    }
    Ok(Parsed {
        l2: l2.len,
        vlan_tci: l2.vlan_tci,
        v6: true,
        src: Ipv6Addr::from(ip.source()).into(),
        dst: Ipv6Addr::from(ip.destination()).into(),
        proto: nh,
        tos: ip.traffic_class(),
        ttl: ip.hop_limit(),
        df: false,
        nonfirst,
        mf: false,
        l4: off,
        sport: 0,
        dport: 0,
        syn: false,
        doff: 0,
    })
}

/// TCP/UDP ports (and TCP flags, header length) of a packet that is not a
/// non-first fragment; `Err` when the L4 header is truncated or invalid.
pub(super) fn ports(pkt: &[u8], mut p: Parsed) -> Result<Parsed, ()> {
    if p.nonfirst {
        return Ok(p);
    }
    let l4 = &pkt[p.l4..];
    if p.proto == IpNumber::TCP {
        // 20 bytes, data offset >= 5, the whole header within the frame.
        let tcp = TcpHeaderSlice::from_slice(l4).map_err(|_| ())?;
        p.doff = tcp.slice().len();
        p.syn = tcp.syn();
        p.sport = tcp.source_port();
        p.dport = tcp.destination_port();
    } else {
        let udp = UdpHeaderSlice::from_slice(l4).map_err(|_| ())?;
        p.sport = udp.source_port();
        p.dport = udp.destination_port();
    }
    Ok(p)
}
