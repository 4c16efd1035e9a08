//! The reflector on single frames (`BPF_PROG_TEST_RUN`): what it does to
//! `xdp_lb`'s output and to a plain frame in every mode. Privileged: as
//! root these never skip.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;

use etherparse::{Ipv4Header, PacketBuilder, SlicedPacket, TransportSlice};
use flowpin_testing::require_bpf;

use super::*;
use crate::xdp_attach::XdpVerdict;

const CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const LB: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const NEXT_HOP: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// A client → VIP TCP ACK with these MACs.
fn ack(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.octets(), VIP.octets(), 64)
        .tcp(sport, 80, 1, 64000)
        .ack(1)
        .write(&mut v, &[0xab; 20])
        .unwrap();
    v
}

/// `inner` (an Ethernet frame) wrapped the way xdp_lb does: IPv4-in-IPv4,
/// L2 rewritten for the next hop.
fn ipip(inner: &[u8]) -> Vec<u8> {
    let ip = &inner[14..];
    let mut outer = Ipv4Header::new(
        ip.len() as u16,
        64,
        etherparse::IpNumber::IPV4,
        [10, 255, 0, 1],
        [10, 1, 0, 7],
    )
    .unwrap();
    outer.header_checksum = outer.calc_header_checksum();
    let mut v = Vec::new();
    v.extend_from_slice(&NEXT_HOP);
    v.extend_from_slice(&LB);
    v.extend_from_slice(&[0x08, 0x00]);
    outer.write(&mut v).unwrap();
    v.extend_from_slice(ip);
    v
}

fn load(mode: ReflectMode) -> XdpReflect {
    XdpReflect::load(
        XdpReflectConfig::default()
            .macs(CLIENT, LB)
            .src_base(Ipv4Addr::new(10, 64, 0, 0))
            .mode(mode),
    )
    .unwrap()
}

/// Source address and port of a reflected frame; checks its IPv4 header
/// checksum on the way.
fn source(frame: &[u8]) -> (Ipv4Addr, u16) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
        panic!("not IPv4: {frame:02x?}")
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
    let Some(TransportSlice::Tcp(t)) = p.transport else {
        panic!("not TCP")
    };
    (ip.header().source_addr(), t.source_port())
}

#[test]
fn privileged_xdp_reflect_turns_xdp_lb_output_back_into_the_client_frame() {
    if !require_bpf("privileged_xdp_reflect_turns_xdp_lb_output_back_into_the_client_frame") {
        return;
    }
    let r = load(ReflectMode::Same);
    let client = ack(CLIENT, LB, Ipv4Addr::new(10, 9, 9, 9), 40000);
    let out = r.test_run(&ipip(&client)).unwrap();
    assert_eq!(out.verdict, XdpVerdict::Tx);
    assert_eq!(
        out.packet, client,
        "outer header stripped, MACs client -> LB"
    );
    // A plain frame (the empty XDP_TX program's output): MACs restored only.
    let swapped = ack(
        [0x02, 9, 9, 9, 9, 9],
        [0x02, 8, 8, 8, 8, 8],
        Ipv4Addr::new(10, 9, 9, 9),
        40000,
    );
    let out = r.test_run(&swapped).unwrap();
    assert_eq!((out.verdict, out.packet), (XdpVerdict::Tx, client.clone()));
    let s = r.stats().unwrap();
    assert_eq!((s.reflected, s.decapsulated, s.dropped), (2, 1, 0));
    // A frame the measured end's stack forwarded back: TTL restored.
    let mut forwarded = client.clone();
    forwarded[14 + 8] = 3;
    let out = r.test_run(&forwarded).unwrap();
    assert_eq!(out.packet[14 + 8], 64, "TTL set back to 64");
    assert_eq!(
        source(&out.packet).0,
        Ipv4Addr::new(10, 9, 9, 9),
        "checksum valid"
    );
    // The empty XDP_TX program sends the frame back untouched.
    let out = r.test_run_empty_tx(&client).unwrap();
    assert_eq!((out.verdict, out.packet), (XdpVerdict::Tx, client));
}

#[test]
fn privileged_xdp_reflect_modes_change_the_flow() {
    if !require_bpf("privileged_xdp_reflect_modes_change_the_flow") {
        return;
    }
    let r = load(ReflectMode::NewFlow);
    let client = ack(CLIENT, LB, Ipv4Addr::new(10, 9, 9, 9), 40000);
    // NewFlow: every pass a new source (the global sequence starts at 0 on load).
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(source(&r.test_run(&ipip(&client)).unwrap().packet));
    }
    assert_eq!(
        seen,
        [0u8, 1, 2]
            .map(|i| (Ipv4Addr::new(10, 64, 0, i), 1024))
            .to_vec()
    );
    // Cycle over 3 flows: the sequence goes on (3, 4, 5, 6 -> 0, 1, 2, 0),
    // the port is kept.
    r.set_mode(ReflectMode::Cycle { flows: 3 }).unwrap();
    let got: Vec<_> = (0..4)
        .map(|_| source(&r.test_run(&client).unwrap().packet))
        .collect();
    assert_eq!(
        got,
        [0u8, 1, 2, 0]
            .map(|i| (Ipv4Addr::new(10, 64, 0, i), 40000))
            .to_vec()
    );
    // Same: untouched.
    r.set_mode(ReflectMode::Same).unwrap();
    assert_eq!(r.test_run(&client).unwrap().packet, client);
    // Drop drains; a cycle of 0 flows is refused.
    r.set_mode(ReflectMode::Drop).unwrap();
    assert_eq!(r.test_run(&client).unwrap().verdict, XdpVerdict::Drop);
    assert!(matches!(
        r.set_mode(ReflectMode::Cycle { flows: 0 }),
        Err(XdpReflectError::InvalidConfig(_))
    ));
    let s = r.stats().unwrap();
    assert_eq!((s.reflected, s.decapsulated, s.dropped), (8, 3, 1));
}
