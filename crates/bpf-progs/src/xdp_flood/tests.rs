//! The flood loop on single frames (`BPF_PROG_TEST_RUN`): a flood frame
//! becomes a new flood packet to the LB with valid checksums; legitimate,
//! short and malformed frames pass untouched; the population cap, the lap
//! limit and the drain. Privileged: as root these never skip.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;

use etherparse::{Ipv4Header, PacketBuilder, SlicedPacket, TransportSlice};
use flowpin_testing::require_bpf;

use super::*;
use crate::xdp_attach::XdpVerdict;

const LB: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const ROUTER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
const SPOOFED: Ipv4Addr = Ipv4Addr::new(198, 19, 7, 9);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);

/// An IPv4 packet (no Ethernet) from `src`: a TCP SYN to VIP:8080, or a
/// UDP datagram to VIP:443; the IPv4 ID as given.
fn inner(src: Ipv4Addr, sport: u16, udp: bool, id: u16) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ipv4(src.octets(), VIP.octets(), 63);
    if udp {
        b.udp(sport, 443)
            .write(&mut v, &[0xc0, 0, 0, 0, 1])
            .unwrap();
    } else {
        b.tcp(sport, 8080, 0x1234_5678, 64240)
            .syn()
            .write(&mut v, &[])
            .unwrap();
    }
    v[4..6].copy_from_slice(&id.to_be_bytes());
    let mut h = Ipv4Header::from_slice(&v).unwrap().0;
    h.header_checksum = h.calc_header_checksum();
    v[10..12].copy_from_slice(&h.header_checksum.to_be_bytes());
    v
}

/// `ip` wrapped the way xdp_lb sends it: Ethernet LB → router, IPv4-in-IPv4.
fn ipip(ip: &[u8]) -> Vec<u8> {
    let mut outer = Ipv4Header::new(
        ip.len() as u16,
        63,
        etherparse::IpNumber::IPV4,
        [10, 200, 0, 7],
        [10, 2, 3, 2],
    )
    .unwrap();
    outer.header_checksum = outer.calc_header_checksum();
    let mut v = Vec::new();
    v.extend_from_slice(&ROUTER);
    v.extend_from_slice(&LB);
    v.extend_from_slice(&[0x08, 0x00]);
    outer.write(&mut v).unwrap();
    v.extend_from_slice(ip);
    v
}

fn load(cfg: XdpFloodConfig) -> XdpFlood {
    XdpFlood::load(&cfg).unwrap()
}

fn looping() -> XdpFloodConfig {
    XdpFloodConfig::default().mode(FloodMode::Loop)
}

/// What a frame sent back to the LB carries: `(source, source port, IPv4
/// ID, TTL)`; asserts the MACs (router → LB) and every checksum.
fn sent_back(frame: &[u8]) -> (Ipv4Addr, u16, u16, u8) {
    assert_eq!(&frame[..6], &LB, "destination MAC: the LB");
    assert_eq!(&frame[6..12], &ROUTER, "source MAC: the router");
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4: {frame:02x?}")
    };
    let h = ip.header().to_header();
    assert_ne!(h.protocol, etherparse::IpNumber::IPV4, "outer header gone");
    assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
    assert_eq!(h.destination, VIP.octets());
    let sport = match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
            assert_eq!(t.checksum(), want, "TCP checksum");
            assert!(t.syn() && !t.ack(), "still a SYN");
            t.source_port()
        }
        Some(TransportSlice::Udp(u)) => {
            let want = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
            assert_eq!(u.checksum(), want, "UDP checksum");
            u.source_port()
        }
        other => panic!("unexpected transport {other:?}"),
    };
    (h.source.into(), sport, h.identification, h.time_to_live)
}

fn in_spoofed_range(a: Ipv4Addr) -> bool {
    u32::from(a) & !0x1_ffff == u32::from(Ipv4Addr::new(198, 18, 0, 0))
}

#[test]
fn privileged_xdp_flood_sends_a_flood_frame_back_as_a_new_flood_packet() {
    if !require_bpf("privileged_xdp_flood_sends_a_flood_frame_back_as_a_new_flood_packet") {
        return;
    }
    for udp in [false, true] {
        let f = load(looping());
        let seed = ipip(&inner(SPOOFED, 40000, udp, 0));
        let out = f.test_run(&seed).unwrap();
        assert_eq!(out.verdict, XdpVerdict::Tx, "udp={udp}");
        assert_eq!(out.packet.len(), seed.len() - 20, "outer header stripped");
        let (src, sport, id, ttl) = sent_back(&out.packet);
        assert!(in_spoofed_range(src), "{src}");
        assert_ne!((src, sport), (SPOOFED, 40000), "a new flow");
        assert_eq!((id, ttl), (0x8001, 64), "lap 1");
        assert_eq!(f.in_flight().unwrap(), 1);
        // The next lap: xdp_lb wraps it again; another new flow, lap 2.
        let out2 = f.test_run(&ipip(&out.packet[14..])).unwrap();
        assert_eq!(out2.verdict, XdpVerdict::Tx);
        let (src2, sport2, id2, _) = sent_back(&out2.packet);
        assert!(in_spoofed_range(src2));
        assert_ne!((src2, sport2), (src, sport), "every lap a new flow");
        assert_eq!(id2, 0x8002);
        assert_eq!(f.in_flight().unwrap(), 1, "still one frame in the loop");
        let s = f.stats().unwrap();
        assert_eq!(
            (s.admitted, s.reflected, s.seeds_passed, s.other),
            (1, 2, 0, 0)
        );
    }
}

#[test]
fn privileged_xdp_flood_passes_legit_short_and_malformed_frames_untouched() {
    if !require_bpf("privileged_xdp_flood_passes_legit_short_and_malformed_frames_untouched") {
        return;
    }
    let f = load(looping());
    let flood = ipip(&inner(SPOOFED, 40000, false, 0));
    let mut frames = vec![
        // Legitimate: the client's own SYN and UDP datagram, encapsulated.
        ipip(&inner(CLIENT, 40000, false, 0)),
        ipip(&inner(CLIENT, 40000, true, 0)),
        // A spoofed source but not encapsulated (the router's own traffic).
        {
            let mut v = [ROUTER, LB].concat();
            v.extend_from_slice(&[0x08, 0x00]);
            v.extend_from_slice(&inner(SPOOFED, 40000, false, 0));
            v
        },
        // Just an Ethernet header; an ARP frame.
        flood[..14].to_vec(),
        {
            let mut v = flood.clone();
            v[12..14].copy_from_slice(&[0x08, 0x06]);
            v
        },
    ];
    // Truncated anywhere in the outer header, the inner header or the TCP header.
    for cut in [20, 33, 34, 40, 53, 54, 60, 73] {
        frames.push(flood[..cut].to_vec());
    }
    // Outer header with options; inner header with options; a fragment;
    // another inner protocol (ICMP).
    let mut opts = flood.clone();
    opts[14] = 0x46;
    frames.push(opts);
    let mut inner_opts = flood.clone();
    inner_opts[34] = 0x46;
    frames.push(inner_opts);
    let mut frag = flood.clone();
    frag[34 + 6] = 0x20; // MF
    frames.push(frag);
    let mut icmp = flood.clone();
    icmp[34 + 9] = 1;
    frames.push(icmp);
    for (i, fr) in frames.iter().enumerate() {
        let out = f.test_run(fr).unwrap();
        assert_eq!(out.verdict, XdpVerdict::Pass, "frame {i}");
        assert_eq!(&out.packet, fr, "frame {i} untouched");
    }
    assert_eq!(f.in_flight().unwrap(), 0);
    let s = f.stats().unwrap();
    assert_eq!(
        (s.other, s.reflected, s.admitted),
        (frames.len() as u64, 0, 0)
    );
}

#[test]
fn privileged_xdp_flood_caps_the_population_retires_after_laps_and_drains() {
    if !require_bpf("privileged_xdp_flood_caps_the_population_retires_after_laps_and_drains") {
        return;
    }
    let cfg = looping().max_in_flight(2).laps(3);
    let f = load(cfg.clone());
    let seed = ipip(&inner(SPOOFED, 40000, false, 0));
    // Two seeds join, the third passes on to its backend untouched.
    let a = f.test_run(&seed).unwrap();
    let b = f.test_run(&seed).unwrap();
    assert_eq!((a.verdict, b.verdict), (XdpVerdict::Tx, XdpVerdict::Tx));
    let c = f.test_run(&seed).unwrap();
    assert_eq!((c.verdict, &c.packet), (XdpVerdict::Pass, &seed));
    assert_eq!(f.in_flight().unwrap(), 2);
    // Frame a: lap 1 → lap 2 → retired (passed on) on its third arrival.
    let a2 = f.test_run(&ipip(&a.packet[14..])).unwrap();
    assert_eq!(a2.verdict, XdpVerdict::Tx);
    let back = ipip(&a2.packet[14..]);
    let a3 = f.test_run(&back).unwrap();
    assert_eq!((a3.verdict, &a3.packet), (XdpVerdict::Pass, &back));
    assert_eq!(f.in_flight().unwrap(), 1);
    // Drain: frame b is dropped, a seed passes.
    f.configure(&cfg.clone().mode(FloodMode::Drain)).unwrap();
    let b2 = f.test_run(&ipip(&b.packet[14..])).unwrap();
    assert_eq!(b2.verdict, XdpVerdict::Drop);
    assert_eq!(f.test_run(&seed).unwrap().verdict, XdpVerdict::Pass);
    assert_eq!(f.in_flight().unwrap(), 0);
    // Off: everything passes.
    f.configure(&cfg.mode(FloodMode::Off)).unwrap();
    assert_eq!(f.test_run(&seed).unwrap().verdict, XdpVerdict::Pass);
    let s = f.stats().unwrap();
    assert_eq!(
        (
            s.admitted,
            s.reflected,
            s.seeds_passed,
            s.retired,
            s.drained
        ),
        (2, 3, 3, 1, 1)
    );
    f.reset_in_flight().unwrap();
    assert_eq!(f.in_flight().unwrap(), 0);
}

#[test]
fn xdp_flood_config_is_checked() {
    let bad = [
        XdpFloodConfig::default().laps(0),
        XdpFloodConfig::default().laps(0x8000),
        XdpFloodConfig::default().spoofed(Ipv4Addr::new(198, 18, 0, 0), 0),
        XdpFloodConfig::default().spoofed(Ipv4Addr::new(198, 18, 0, 0), 33),
    ];
    for c in bad {
        assert!(
            matches!(c.value(), Err(XdpFloodError::InvalidConfig(_))),
            "{c:?}"
        );
    }
    let v = XdpFloodConfig::default().value().unwrap();
    let word = |i: usize| u32::from_ne_bytes(v[i * 4..i * 4 + 4].try_into().unwrap());
    assert_eq!(
        (word(0), word(1), word(2), word(3), word(4)),
        (0, 64, 4096, 0xc612_0000, 0x1_ffff)
    );
}
