//! Privileged: `xdp_decap` through `BPF_PROG_TEST_RUN`.
//!
//! Fixtures are built in code with etherparse. Every decapsulation case
//! compares the output frame byte for byte with the frame the backend's
//! stack must see (same MACs, ethertype of the inner protocol, the inner
//! packet unchanged); every other case checks the verdict, that the frame
//! is untouched, and which counter moved. A proptest feeds mutated and
//! truncated frames and compares with a reference model of the policy.
// Test helpers outside #[test] functions unwrap too (clippy.toml only covers #[test]).
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder,
    SingleVlanHeader, VlanId, VlanPcp,
};
use flowpin_bpf_progs::xdp_decap::{
    DecapForm, DecapStats, XdpAttachError, XdpDecap, XdpDecapConfig, XdpDecapError, XdpTarget,
    XdpVerdict,
};
use flowpin_testing::require_bpf;
use proptest::prelude::*;

const LB_MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
const BE_MAC: [u8; 6] = [0x02, 0x66, 0x77, 0x88, 0x99, 0xaa];
const TUN4: [u8; 4] = [10, 0, 0, 2];
const TUN4_B: [u8; 4] = [10, 0, 1, 2];
const OTHER4: [u8; 4] = [10, 0, 0, 3];
const LB4: [u8; 4] = [10, 0, 0, 1];
const TUN6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const TUN6_B: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2];
const OTHER6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
const LB6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const CLIENT4: [u8; 4] = [192, 0, 2, 10];
const VIP4: [u8; 4] = [198, 51, 100, 1];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const VIP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const PROTO_IPIP: u8 = 4;
const PROTO_IPV6: u8 = 41;

// ---------------------------------------------------------------- builders

fn inner_v4_tcp(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(CLIENT4, VIP4, 63)
        .tcp(40000, 80, 0x1234_5678, 64240)
        .syn();
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn inner_v4_udp(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(CLIENT4, VIP4, 17).udp(5353, 53);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn inner_v6_udp(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv6(CLIENT6, VIP6, 60).udp(5353, 443);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn inner_v6_tcp(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv6(CLIENT6, VIP6, 60)
        .tcp(40001, 443, 7, 65535)
        .ack(99);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn eth(ether_type: u16) -> Vec<u8> {
    Ethernet2Header {
        source: LB_MAC,
        destination: BE_MAC,
        ether_type: EtherType(ether_type),
    }
    .to_bytes()
    .to_vec()
}

/// Ethernet + one 802.1Q tag (VLAN 42, PCP 5) announcing `ether_type`.
fn eth_vlan(ether_type: u16) -> Vec<u8> {
    let mut v = eth(0x8100);
    v.extend_from_slice(
        &SingleVlanHeader {
            pcp: VlanPcp::try_new(5).unwrap(),
            drop_eligible_indicator: false,
            vlan_id: VlanId::try_new(42).unwrap(),
            ether_type: EtherType(ether_type),
        }
        .to_bytes(),
    );
    v
}

fn outer_v4(dst: [u8; 4], proto: u8, options: &[u8], payload_len: usize) -> Vec<u8> {
    let mut h = Ipv4Header::new(payload_len as u16, 64, IpNumber(proto), LB4, dst).unwrap();
    h.options = options.try_into().unwrap();
    h.total_len = (h.header_len() + payload_len) as u16;
    h.identification = 0xbeef;
    h.header_checksum = h.calc_header_checksum();
    h.to_bytes().to_vec()
}

fn outer_v6(dst: [u8; 16], next_header: u8, payload_len: usize) -> Vec<u8> {
    Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::try_new(0x12345).unwrap(),
        payload_length: payload_len as u16,
        next_header: IpNumber(next_header),
        hop_limit: 64,
        source: LB6,
        destination: dst,
    }
    .to_bytes()
    .to_vec()
}

/// A destination-options extension header carrying the tunnel encapsulation
/// limit option (what Linux ip6 tunnels add), 8 bytes.
fn dest_opts_encap_limit(next_header: u8) -> Vec<u8> {
    vec![next_header, 0, 0x04, 0x01, 0x04, 0x01, 0x01, 0x00]
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn ipip(inner: &[u8]) -> Vec<u8> {
    cat(&[
        &eth(ETH_IPV4),
        &outer_v4(TUN4, PROTO_IPIP, &[], inner.len()),
        inner,
    ])
}

fn ip6ip6(inner: &[u8]) -> Vec<u8> {
    cat(&[
        &eth(ETH_IPV6),
        &outer_v6(TUN6, PROTO_IPV6, inner.len()),
        inner,
    ])
}

fn ip4in6(inner: &[u8]) -> Vec<u8> {
    cat(&[
        &eth(ETH_IPV6),
        &outer_v6(TUN6, PROTO_IPIP, inner.len()),
        inner,
    ])
}

fn ip6in4(inner: &[u8]) -> Vec<u8> {
    cat(&[
        &eth(ETH_IPV4),
        &outer_v4(TUN4, PROTO_IPV6, &[], inner.len()),
        inner,
    ])
}

/// What the backend's stack must receive: same MACs, inner ethertype, inner packet.
fn decapped(inner_type: u16, inner: &[u8]) -> Vec<u8> {
    cat(&[&eth(inner_type), inner])
}

fn loaded() -> XdpDecap {
    let d = XdpDecap::load(XdpDecapConfig::default()).expect("load xdp_decap");
    for a in [IpAddr::from(TUN4), IpAddr::from(TUN6)] {
        d.add_tunnel_addr(a).expect("add tunnel addr");
    }
    d
}

// ---------------------------------------------------------------- counters

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counter {
    Decap(DecapForm),
    PassedNotTunnel,
    PassedNotOurs,
    PassedMalformedOuter,
    PassedFragment,
    DroppedMalformed,
    DroppedEcn,
}

fn counter(s: &DecapStats, c: Counter) -> u64 {
    match c {
        Counter::Decap(f) => s.decapsulated_form(f),
        Counter::PassedNotTunnel => s.passed_not_tunnel,
        Counter::PassedNotOurs => s.passed_not_ours,
        Counter::PassedMalformedOuter => s.passed_malformed_outer,
        Counter::PassedFragment => s.passed_fragment,
        Counter::DroppedMalformed => s.dropped_malformed,
        Counter::DroppedEcn => s.dropped_ecn,
    }
}

const ALL_COUNTERS: [Counter; 10] = [
    Counter::Decap(DecapForm::Ipip),
    Counter::Decap(DecapForm::Ip6Ip6),
    Counter::Decap(DecapForm::Ip4InIp6),
    Counter::Decap(DecapForm::Ip6InIp4),
    Counter::PassedNotTunnel,
    Counter::PassedNotOurs,
    Counter::PassedMalformedOuter,
    Counter::PassedFragment,
    Counter::DroppedMalformed,
    Counter::DroppedEcn,
];

/// Runs `frame` once and checks the verdict, the output frame and that
/// exactly the counter `want` moved, by one (and `ecn_ce_propagated` by 0).
fn check(
    d: &XdpDecap,
    frame: &[u8],
    want_verdict: XdpVerdict,
    want_out: &[u8],
    want: Counter,
    what: &str,
) {
    check_ce(d, frame, want_verdict, want_out, want, 0, what);
}

/// [`check`], with `ecn_ce_propagated` expected to move by `ce`.
fn check_ce(
    d: &XdpDecap,
    frame: &[u8],
    want_verdict: XdpVerdict,
    want_out: &[u8],
    want: Counter,
    ce: u64,
    what: &str,
) {
    let before = d.stats().unwrap();
    let r = d
        .test_run(frame)
        .unwrap_or_else(|e| panic!("{what}: test run: {e}"));
    let after = d.stats().unwrap();
    assert_eq!(r.verdict, want_verdict, "{what}: verdict");
    if want_verdict != XdpVerdict::Drop {
        assert_eq!(r.packet, want_out, "{what}: output frame");
    }
    for c in ALL_COUNTERS {
        let delta = counter(&after, c) - counter(&before, c);
        let expect = u64::from(c == want);
        assert_eq!(
            delta, expect,
            "{what}: counter {c:?} moved by {delta}, expected {expect} (wanted {want:?})"
        );
    }
    assert_eq!(
        after.dropped_error, before.dropped_error,
        "{what}: dropped_error"
    );
    assert_eq!(
        after.ecn_ce_propagated - before.ecn_ce_propagated,
        ce,
        "{what}: ecn_ce_propagated"
    );
    assert_eq!(
        after.total(),
        before.total() + 1,
        "{what}: exactly one packet counted"
    );
}

fn check_decap(d: &XdpDecap, frame: &[u8], want_out: &[u8], form: DecapForm, what: &str) {
    check(
        d,
        frame,
        XdpVerdict::Pass,
        want_out,
        Counter::Decap(form),
        what,
    );
}

fn check_untouched(d: &XdpDecap, frame: &[u8], want: Counter, what: &str) {
    check(d, frame, XdpVerdict::Pass, frame, want, what);
}

fn check_drop(d: &XdpDecap, frame: &[u8], what: &str) {
    check(
        d,
        frame,
        XdpVerdict::Drop,
        &[],
        Counter::DroppedMalformed,
        what,
    );
}

// ---------------------------------------------------------------- fixtures

#[test]
fn privileged_xdp_decap_each_form_byte_for_byte() {
    if !require_bpf("privileged_xdp_decap_each_form_byte_for_byte") {
        return;
    }
    let d = loaded();
    let payload: Vec<u8> = (0..200u8).collect();

    let inner = inner_v4_tcp(&payload);
    check_decap(
        &d,
        &ipip(&inner),
        &decapped(ETH_IPV4, &inner),
        DecapForm::Ipip,
        "IPIP tcp",
    );
    let inner = inner_v4_udp(b"hello");
    check_decap(
        &d,
        &ipip(&inner),
        &decapped(ETH_IPV4, &inner),
        DecapForm::Ipip,
        "IPIP udp",
    );

    let inner = inner_v6_udp(&payload);
    check_decap(
        &d,
        &ip6ip6(&inner),
        &decapped(ETH_IPV6, &inner),
        DecapForm::Ip6Ip6,
        "IP6IP6 udp",
    );
    let inner = inner_v6_tcp(b"");
    check_decap(
        &d,
        &ip6ip6(&inner),
        &decapped(ETH_IPV6, &inner),
        DecapForm::Ip6Ip6,
        "IP6IP6 tcp ack",
    );

    let inner = inner_v4_tcp(&payload);
    check_decap(
        &d,
        &ip4in6(&inner),
        &decapped(ETH_IPV4, &inner),
        DecapForm::Ip4InIp6,
        "4in6: ethertype becomes IPv4",
    );

    let inner = inner_v6_tcp(&payload);
    check_decap(
        &d,
        &ip6in4(&inner),
        &decapped(ETH_IPV6, &inner),
        DecapForm::Ip6InIp4,
        "6in4: ethertype becomes IPv6",
    );

    let s = d.stats().unwrap();
    assert_eq!(s.decap_ipip, 2);
    assert_eq!(s.decap_ip6ip6, 2);
    assert_eq!(s.decap_4in6, 1);
    assert_eq!(s.decap_6in4, 1);
    assert_eq!(s.decapsulated(), 6);
    assert_eq!(s.passed(), 0);
    assert_eq!(s.dropped(), 0);
}

#[test]
fn privileged_xdp_decap_vlan_options_ext_headers_and_padding() {
    if !require_bpf("privileged_xdp_decap_vlan_options_ext_headers_and_padding") {
        return;
    }
    let d = loaded();
    let inner4 = inner_v4_tcp(b"vlan payload");
    let inner6 = inner_v6_udp(b"vlan payload six");

    // One 802.1Q tag: kept (TCI too), the tag's ethertype becomes the inner one.
    let f = cat(&[
        &eth_vlan(ETH_IPV4),
        &outer_v4(TUN4, PROTO_IPIP, &[], inner4.len()),
        &inner4,
    ]);
    check_decap(
        &d,
        &f,
        &cat(&[&eth_vlan(ETH_IPV4), &inner4]),
        DecapForm::Ipip,
        "IPIP in VLAN",
    );
    let f = cat(&[
        &eth_vlan(ETH_IPV6),
        &outer_v6(TUN6, PROTO_IPIP, inner4.len()),
        &inner4,
    ]);
    check_decap(
        &d,
        &f,
        &cat(&[&eth_vlan(ETH_IPV4), &inner4]),
        DecapForm::Ip4InIp6,
        "4in6 in VLAN",
    );
    let f = cat(&[
        &eth_vlan(ETH_IPV6),
        &outer_v6(TUN6, PROTO_IPV6, inner6.len()),
        &inner6,
    ]);
    check_decap(
        &d,
        &f,
        &cat(&[&eth_vlan(ETH_IPV6), &inner6]),
        DecapForm::Ip6Ip6,
        "IP6IP6 in VLAN",
    );

    // Outer IPv4 with 8 bytes of options (IHL 7): all 28 bytes stripped.
    let opts = [0x01, 0x01, 0x01, 0x00, 0x01, 0x01, 0x01, 0x00]; // NOPs + EOL
    let f = cat(&[
        &eth(ETH_IPV4),
        &outer_v4(TUN4, PROTO_IPIP, &opts, inner4.len()),
        &inner4,
    ]);
    assert_eq!(f[14] & 0x0f, 7);
    check_decap(
        &d,
        &f,
        &decapped(ETH_IPV4, &inner4),
        DecapForm::Ipip,
        "IPIP with outer options",
    );

    // Outer IPv6 with the tunnel encapsulation limit destination option.
    let ext = dest_opts_encap_limit(PROTO_IPV6);
    let f = cat(&[
        &eth(ETH_IPV6),
        &outer_v6(TUN6, 60, ext.len() + inner6.len()),
        &ext,
        &inner6,
    ]);
    check_decap(
        &d,
        &f,
        &decapped(ETH_IPV6, &inner6),
        DecapForm::Ip6Ip6,
        "IP6IP6 with dest opts",
    );
    // Hop-by-hop, then routing (type 0 style, empty), then dest opts: three headers.
    let hbh = vec![43, 0, 0x01, 0x04, 0, 0, 0, 0];
    let rt = vec![60, 0, 0, 0, 0, 0, 0, 0];
    let dst = dest_opts_encap_limit(PROTO_IPIP);
    let ext_len = hbh.len() + rt.len() + dst.len();
    let f = cat(&[
        &eth(ETH_IPV6),
        &outer_v6(TUN6, 0, ext_len + inner4.len()),
        &hbh,
        &rt,
        &dst,
        &inner4,
    ]);
    check_decap(
        &d,
        &f,
        &decapped(ETH_IPV4, &inner4),
        DecapForm::Ip4InIp6,
        "4in6 behind three ext headers",
    );

    // Ethernet padding after the outer packet stays after the inner one
    // (the stack trims by the inner length).
    let small = inner_v4_udp(b"");
    assert_eq!(small.len(), 28);
    let pad = [0u8; 6];
    let f = cat(&[
        &eth(ETH_IPV4),
        &outer_v4(TUN4, PROTO_IPIP, &[], small.len()),
        &small,
        &pad,
    ]);
    check_decap(
        &d,
        &f,
        &cat(&[&eth(ETH_IPV4), &small, &pad]),
        DecapForm::Ipip,
        "IPIP with Ethernet padding",
    );
    // Outer payload longer than the inner packet (padding inside the tunnel) is accepted.
    let f = cat(&[
        &eth(ETH_IPV4),
        &outer_v4(TUN4, PROTO_IPIP, &[], small.len() + 4),
        &small,
        &[0; 4],
    ]);
    check_decap(
        &d,
        &f,
        &cat(&[&eth(ETH_IPV4), &small, &[0; 4]]),
        DecapForm::Ipip,
        "IPIP with tunnel padding",
    );
}

#[test]
fn privileged_xdp_decap_not_ours_and_not_tunnel_pass_untouched() {
    if !require_bpf("privileged_xdp_decap_not_ours_and_not_tunnel_pass_untouched") {
        return;
    }
    let d = loaded();
    let inner4 = inner_v4_tcp(b"x");
    let inner6 = inner_v6_udp(b"y");

    // Tunnel packets to an address that is not ours.
    let f = cat(&[
        &eth(ETH_IPV4),
        &outer_v4(OTHER4, PROTO_IPIP, &[], inner4.len()),
        &inner4,
    ]);
    check_untouched(&d, &f, Counter::PassedNotOurs, "IPIP to another address");
    let f = cat(&[
        &eth(ETH_IPV4),
        &outer_v4(OTHER4, PROTO_IPV6, &[], inner6.len()),
        &inner6,
    ]);
    check_untouched(&d, &f, Counter::PassedNotOurs, "6in4 to another address");
    let f = cat(&[
        &eth(ETH_IPV6),
        &outer_v6(OTHER6, PROTO_IPV6, inner6.len()),
        &inner6,
    ]);
    check_untouched(&d, &f, Counter::PassedNotOurs, "IP6IP6 to another address");
    let f = cat(&[
        &eth(ETH_IPV6),
        &outer_v6(OTHER6, PROTO_IPIP, inner4.len()),
        &inner4,
    ]);
    check_untouched(&d, &f, Counter::PassedNotOurs, "4in6 to another address");
    // Our IPv4 address inside an IPv6 header's low bits is not "ours".
    let mut mapped = [0u8; 16];
    mapped[10] = 0xff;
    mapped[11] = 0xff;
    mapped[12..].copy_from_slice(&TUN4);
    let f = cat(&[
        &eth(ETH_IPV6),
        &outer_v6(mapped, PROTO_IPIP, inner4.len()),
        &inner4,
    ]);
    check_untouched(
        &d,
        &f,
        Counter::PassedNotOurs,
        "4in6 to v4-mapped tunnel address",
    );

    // Plain traffic, even to our tunnel address.
    let mut plain = Vec::new();
    PacketBuilder::ethernet2(LB_MAC, BE_MAC)
        .ipv4(CLIENT4, TUN4, 64)
        .tcp(1, 22, 0, 1000)
        .write(&mut plain, b"ssh")
        .unwrap();
    check_untouched(
        &d,
        &plain,
        Counter::PassedNotTunnel,
        "TCP to the tunnel address",
    );
    let mut plain6 = Vec::new();
    PacketBuilder::ethernet2(LB_MAC, BE_MAC)
        .ipv6(CLIENT6, TUN6, 64)
        .udp(1, 53)
        .write(&mut plain6, b"dns")
        .unwrap();
    check_untouched(
        &d,
        &plain6,
        Counter::PassedNotTunnel,
        "UDP to the tunnel v6 address",
    );
    let mut arp = eth(0x0806);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);
    check_untouched(&d, &arp, Counter::PassedNotTunnel, "ARP");
    // GRE (47) to our address is not one of our forms.
    let f = cat(&[
        &eth(ETH_IPV4),
        &outer_v4(TUN4, 47, &[], inner4.len()),
        &inner4,
    ]);
    check_untouched(&d, &f, Counter::PassedNotTunnel, "GRE to our address");
    // Protocol 94 (IANA "IPIP", not what Linux/Katran use) is not ours either.
    let f = cat(&[
        &eth(ETH_IPV4),
        &outer_v4(TUN4, 94, &[], inner4.len()),
        &inner4,
    ]);
    check_untouched(&d, &f, Counter::PassedNotTunnel, "proto 94 to our address");
    // More than four outer IPv6 extension headers: the walk gives up.
    let mut exts = Vec::new();
    for i in 0..5 {
        exts.extend(dest_opts_encap_limit(if i == 4 { PROTO_IPIP } else { 60 }));
    }
    let f = cat(&[
        &eth(ETH_IPV6),
        &outer_v6(TUN6, 60, exts.len() + inner4.len()),
        &exts,
        &inner4,
    ]);
    check_untouched(&d, &f, Counter::PassedNotTunnel, "five ext headers");

    let s = d.stats().unwrap();
    assert_eq!(s.decapsulated(), 0);
    assert_eq!(s.passed_not_ours, 5);
    assert_eq!(s.passed_not_tunnel, 6);
}

#[test]
fn privileged_xdp_decap_tunnel_addr_add_remove_several() {
    if !require_bpf("privileged_xdp_decap_tunnel_addr_add_remove_several") {
        return;
    }
    let d = XdpDecap::load(XdpDecapConfig::default().max_tunnel_addrs(2)).unwrap();
    let inner4 = inner_v4_tcp(b"a");
    let inner6 = inner_v6_tcp(b"b");
    let to4 = |dst| {
        cat(&[
            &eth(ETH_IPV4),
            &outer_v4(dst, PROTO_IPIP, &[], inner4.len()),
            &inner4,
        ])
    };
    let to6 = |dst| {
        cat(&[
            &eth(ETH_IPV6),
            &outer_v6(dst, PROTO_IPV6, inner6.len()),
            &inner6,
        ])
    };

    // Nothing configured: nothing is ours.
    check_untouched(&d, &to4(TUN4), Counter::PassedNotOurs, "no addresses yet");
    assert!(d.tunnel_addrs().unwrap().is_empty());

    for a in [
        IpAddr::from(TUN4),
        IpAddr::from(TUN4_B),
        IpAddr::from(TUN6),
        IpAddr::from(TUN6_B),
    ] {
        d.add_tunnel_addr(a).unwrap();
    }
    d.add_tunnel_addr(IpAddr::from(TUN4))
        .expect("adding twice is fine");
    let mut addrs = d.tunnel_addrs().unwrap();
    addrs.sort();
    let mut want = vec![
        IpAddr::from(TUN4),
        IpAddr::from(TUN4_B),
        IpAddr::from(TUN6),
        IpAddr::from(TUN6_B),
    ];
    want.sort();
    assert_eq!(addrs, want);

    // The map holds max_tunnel_addrs per family: a third one is refused with E2BIG.
    let err = d.add_tunnel_addr(IpAddr::from(OTHER4)).unwrap_err();
    assert!(
        matches!(
            err,
            XdpDecapError::Kernel(ref k) if k.object == "map tunnel_v4" && k.op == "update" && k.is(7)
        ),
        "{err}"
    );
    assert!(err.to_string().contains("max_tunnel_addrs"), "{err}");

    check_decap(
        &d,
        &to4(TUN4),
        &decapped(ETH_IPV4, &inner4),
        DecapForm::Ipip,
        "first v4",
    );
    check_decap(
        &d,
        &to4(TUN4_B),
        &decapped(ETH_IPV4, &inner4),
        DecapForm::Ipip,
        "second v4",
    );
    check_decap(
        &d,
        &to6(TUN6),
        &decapped(ETH_IPV6, &inner6),
        DecapForm::Ip6Ip6,
        "first v6",
    );
    check_decap(
        &d,
        &to6(TUN6_B),
        &decapped(ETH_IPV6, &inner6),
        DecapForm::Ip6Ip6,
        "second v6",
    );

    assert!(d.remove_tunnel_addr(IpAddr::from(TUN4)).unwrap());
    assert!(
        !d.remove_tunnel_addr(IpAddr::from(TUN4)).unwrap(),
        "already gone"
    );
    assert!(d.remove_tunnel_addr(IpAddr::from(TUN6_B)).unwrap());
    check_untouched(&d, &to4(TUN4), Counter::PassedNotOurs, "removed v4");
    check_decap(
        &d,
        &to4(TUN4_B),
        &decapped(ETH_IPV4, &inner4),
        DecapForm::Ipip,
        "kept v4",
    );
    check_untouched(&d, &to6(TUN6_B), Counter::PassedNotOurs, "removed v6");
    check_decap(
        &d,
        &to6(TUN6),
        &decapped(ETH_IPV6, &inner6),
        DecapForm::Ip6Ip6,
        "kept v6",
    );

    let s = d.stats().unwrap();
    assert_eq!((s.decap_ipip, s.decap_ip6ip6, s.passed_not_ours), (3, 3, 3));
    assert!(matches!(
        XdpDecap::load(XdpDecapConfig::default().max_tunnel_addrs(0)),
        Err(XdpDecapError::InvalidConfig(_))
    ));
}

#[test]
fn privileged_xdp_decap_outer_fragments_pass_to_the_stack() {
    if !require_bpf("privileged_xdp_decap_outer_fragments_pass_to_the_stack") {
        return;
    }
    let d = loaded();
    let inner4 = inner_v4_tcp(&[7; 64]);
    // More-fragments set.
    let mut f = ipip(&inner4);
    f[14 + 6] |= 0x20;
    fix_v4_csum(&mut f, 14);
    check_untouched(&d, &f, Counter::PassedFragment, "IPIP first fragment (MF)");
    // Non-zero offset (a later fragment).
    let mut f = ipip(&inner4);
    f[14 + 6] = 0x00;
    f[14 + 7] = 0x10;
    fix_v4_csum(&mut f, 14);
    check_untouched(&d, &f, Counter::PassedFragment, "IPIP later fragment");
    // DF alone is not a fragment.
    let mut f = ipip(&inner4);
    f[14 + 6] = 0x40;
    fix_v4_csum(&mut f, 14);
    check_decap(
        &d,
        &f,
        &decapped(ETH_IPV4, &inner4),
        DecapForm::Ipip,
        "DF only",
    );
    // IPv6 fragment header in the outer packet.
    let frag = [PROTO_IPIP, 0, 0, 1, 0, 0, 0, 9];
    let f = cat(&[
        &eth(ETH_IPV6),
        &outer_v6(TUN6, 44, frag.len() + inner4.len()),
        &frag,
        &inner4,
    ]);
    check_untouched(&d, &f, Counter::PassedFragment, "IPv6 outer fragment");
    // ...to an address that is not ours: just not ours.
    let f = cat(&[
        &eth(ETH_IPV6),
        &outer_v6(OTHER6, 44, frag.len() + inner4.len()),
        &frag,
        &inner4,
    ]);
    check_untouched(&d, &f, Counter::PassedNotOurs, "IPv6 fragment not ours");
}

fn fix_v4_csum(f: &mut [u8], l3: usize) {
    let ihl = usize::from(f[l3] & 0x0f) * 4;
    let h = Ipv4Header::from_slice(&f[l3..l3 + ihl]).unwrap().0;
    let c = h.calc_header_checksum();
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// `packet` (an IP packet) with its ECN field set to `ecn`; an IPv4 header
/// checksum is recomputed from scratch by etherparse.
fn with_inner_ecn(packet: &[u8], ecn: u8) -> Vec<u8> {
    let mut p = packet.to_vec();
    if p[0] >> 4 == 4 {
        let (mut h, rest) = Ipv4Header::from_slice(&p).unwrap();
        h.ecn = etherparse::IpEcn::try_new(ecn).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut v = h.to_bytes().to_vec();
        v.extend_from_slice(rest);
        p = v;
    } else {
        p[1] = (p[1] & !0x30) | (ecn << 4);
    }
    p
}

/// `frame` with the ECN field of the IP header at `l3` set to `ecn`.
fn with_outer_ecn(frame: &[u8], l3: usize, ecn: u8) -> Vec<u8> {
    let mut f = frame.to_vec();
    let rest = with_inner_ecn(&f[l3..], ecn);
    f.truncate(l3);
    f.extend_from_slice(&rest);
    f
}

/// RFC 6040 at the decapsulator: outer CE reaches an ECN-capable inner
/// packet (checksum right), a not ECN-capable one is dropped, every other
/// combination leaves the inner packet as it was.
#[test]
fn privileged_xdp_decap_ecn_ce_propagation() {
    if !require_bpf("privileged_xdp_decap_ecn_ce_propagation") {
        return;
    }
    let d = loaded();
    let i4 = inner_v4_tcp(b"ecn four");
    let i6 = inner_v6_udp(b"ecn six");
    type Wrap = fn(&[u8]) -> Vec<u8>;
    let forms: [(&str, &[u8], Wrap, DecapForm, u16); 4] = [
        ("IPIP", &i4, ipip, DecapForm::Ipip, ETH_IPV4),
        ("IP6IP6", &i6, ip6ip6, DecapForm::Ip6Ip6, ETH_IPV6),
        ("4in6", &i4, ip4in6, DecapForm::Ip4InIp6, ETH_IPV4),
        ("6in4", &i6, ip6in4, DecapForm::Ip6InIp4, ETH_IPV6),
    ];
    for (name, inner, wrap, form, inner_type) in forms {
        for outer_ecn in 0..4u8 {
            for inner_ecn in 0..4u8 {
                let inner_in = with_inner_ecn(inner, inner_ecn);
                let frame = with_outer_ecn(&wrap(&inner_in), 14, outer_ecn);
                let what = format!("{name} outer ECN {outer_ecn} inner ECN {inner_ecn}");
                if outer_ecn == 3 && inner_ecn == 0 {
                    check(
                        &d,
                        &frame,
                        XdpVerdict::Drop,
                        &[],
                        Counter::DroppedEcn,
                        &what,
                    );
                } else if outer_ecn == 3 && inner_ecn != 3 {
                    let want = decapped(inner_type, &with_inner_ecn(inner, 3));
                    check_ce(
                        &d,
                        &frame,
                        XdpVerdict::Pass,
                        &want,
                        Counter::Decap(form),
                        1,
                        &what,
                    );
                } else {
                    check_decap(&d, &frame, &decapped(inner_type, &inner_in), form, &what);
                }
            }
        }
    }
    let s = d.stats().unwrap();
    assert_eq!(s.ecn_ce_propagated, 8);
    assert_eq!(s.dropped_ecn, 4);
    assert_eq!(s.decapsulated(), 60);
}

// ---------------------------------------------------------------- malformed

/// A valid frame of each form with the offsets of its boundaries.
struct Layout {
    name: &'static str,
    frame: Vec<u8>,
    /// Start of the outer IP header.
    l3: usize,
    /// Bytes the program must have to read the outer header and any ext headers.
    outer_readable: usize,
    /// Start of the inner packet.
    inner: usize,
    form: DecapForm,
    inner_type: u16,
}

fn layouts() -> Vec<Layout> {
    let i4 = inner_v4_tcp(b"0123456789");
    let i6 = inner_v6_udp(b"abcdefghij");
    let ext = dest_opts_encap_limit(PROTO_IPV6);
    let opts = [1u8, 1, 1, 0];
    vec![
        Layout {
            name: "IPIP",
            frame: ipip(&i4),
            l3: 14,
            outer_readable: 14 + 20,
            inner: 34,
            form: DecapForm::Ipip,
            inner_type: ETH_IPV4,
        },
        Layout {
            name: "IP6IP6",
            frame: ip6ip6(&i6),
            l3: 14,
            outer_readable: 14 + 40,
            inner: 54,
            form: DecapForm::Ip6Ip6,
            inner_type: ETH_IPV6,
        },
        Layout {
            name: "4in6",
            frame: ip4in6(&i4),
            l3: 14,
            outer_readable: 14 + 40,
            inner: 54,
            form: DecapForm::Ip4InIp6,
            inner_type: ETH_IPV4,
        },
        Layout {
            name: "6in4",
            frame: ip6in4(&i6),
            l3: 14,
            outer_readable: 14 + 20,
            inner: 34,
            form: DecapForm::Ip6InIp4,
            inner_type: ETH_IPV6,
        },
        Layout {
            name: "IPIP+vlan+options",
            frame: cat(&[
                &eth_vlan(ETH_IPV4),
                &outer_v4(TUN4, PROTO_IPIP, &opts, i4.len()),
                &i4,
            ]),
            l3: 18,
            outer_readable: 18 + 20,
            inner: 18 + 24,
            form: DecapForm::Ipip,
            inner_type: ETH_IPV4,
        },
        Layout {
            name: "IP6IP6+destopts",
            frame: cat(&[
                &eth(ETH_IPV6),
                &outer_v6(TUN6, 60, ext.len() + i6.len()),
                &ext,
                &i6,
            ]),
            l3: 14,
            outer_readable: 14 + 40 + 2,
            inner: 14 + 48,
            form: DecapForm::Ip6Ip6,
            inner_type: ETH_IPV6,
        },
    ]
}

/// Cutting the frame anywhere, outer length fields unchanged: below the
/// outer header the program cannot tell it is ours (pass untouched); past
/// it the outer length disagrees with the frame (drop).
#[test]
fn privileged_xdp_decap_truncated_frame_at_every_byte() {
    if !require_bpf("privileged_xdp_decap_truncated_frame_at_every_byte") {
        return;
    }
    let d = loaded();
    for l in layouts() {
        for n in 0..=l.frame.len() {
            let f = &l.frame[..n];
            let what = format!("{} cut at {n} of {}", l.name, l.frame.len());
            if n < 14 {
                // The kernel refuses test runs shorter than an Ethernet header.
                let e = d.test_run(f).unwrap_err();
                assert!(
                    matches!(e, XdpDecapError::Xdp(XdpAttachError::TestRun { .. })),
                    "{what}: {e}"
                );
            } else if n < l.outer_readable {
                check_untouched(&d, f, Counter::PassedMalformedOuter, &what);
            } else if n < l.frame.len() {
                check_drop(&d, f, &what);
            } else {
                let out = cat(&[
                    &l.frame[..l.l3 - 2],
                    &l.inner_type.to_be_bytes(),
                    &l.frame[l.inner..],
                ]);
                check_decap(&d, f, &out, l.form, &what);
            }
        }
    }
}

/// Cutting the inner packet anywhere with the outer length fields made to
/// agree with the cut: the inner header check must catch every cut.
#[test]
fn privileged_xdp_decap_truncated_inner_at_every_byte() {
    if !require_bpf("privileged_xdp_decap_truncated_inner_at_every_byte") {
        return;
    }
    let d = loaded();
    for l in layouts() {
        let inner_len = l.frame.len() - l.inner;
        for k in 0..=inner_len {
            let mut f = l.frame[..l.inner + k].to_vec();
            set_outer_payload_len(&mut f, &l, k);
            let what = format!("{} inner cut at {k} of {inner_len}", l.name);
            if k < inner_len {
                check_drop(&d, &f, &what);
            } else {
                let out = cat(&[
                    &l.frame[..l.l3 - 2],
                    &l.inner_type.to_be_bytes(),
                    &l.frame[l.inner..],
                ]);
                check_decap(&d, &f, &out, l.form, &what);
            }
        }
    }
}

fn set_outer_payload_len(f: &mut [u8], l: &Layout, inner_len: usize) {
    let version = f[l.l3] >> 4;
    if version == 4 {
        let tot = (l.inner - l.l3 + inner_len) as u16;
        f[l.l3 + 2..l.l3 + 4].copy_from_slice(&tot.to_be_bytes());
        fix_v4_csum(f, l.l3);
    } else {
        let plen = (l.inner - l.l3 - 40 + inner_len) as u16;
        f[l.l3 + 4..l.l3 + 6].copy_from_slice(&plen.to_be_bytes());
    }
}

#[test]
fn privileged_xdp_decap_bad_headers() {
    if !require_bpf("privileged_xdp_decap_bad_headers") {
        return;
    }
    let d = loaded();
    let i4 = inner_v4_tcp(b"payload");
    let i6 = inner_v6_udp(b"payload");

    // Outer IPv4: IHL below 5, wrong version: unreadable, passed untouched.
    for (ihl, ver, what) in [
        (4u8, 4u8, "outer IHL 4"),
        (0, 4, "outer IHL 0"),
        (5, 6, "outer version 6 in IPv4 ethertype"),
    ] {
        let mut f = ipip(&i4);
        f[14] = (ver << 4) | ihl;
        check_untouched(&d, &f, Counter::PassedMalformedOuter, what);
    }
    // Outer IPv6 with version 4.
    let mut f = ip6ip6(&i6);
    f[14] = 0x45;
    check_untouched(
        &d,
        &f,
        Counter::PassedMalformedOuter,
        "outer version 4 in IPv6 ethertype",
    );
    // VLAN tag cut off.
    let f = eth_vlan(ETH_IPV4)[..16].to_vec();
    check_untouched(&d, &f, Counter::PassedMalformedOuter, "half a VLAN tag");

    // Ours, but IHL larger than the total length / than the frame.
    let mut f = ipip(&i4);
    f[14] = 0x4f; // IHL 15 = 60 bytes: inner bytes read as options, tot_len still fits
    let tot = u16::from_be_bytes([f[16], f[17]]);
    assert!(tot >= 60);
    // Then the "inner" header starts inside the real inner packet: wrong version.
    check_drop(&d, &f, "outer IHL 15 swallowing the inner header");
    let mut f = ipip(&i4);
    f[16..18].copy_from_slice(&16u16.to_be_bytes()); // tot_len < IHL*4
    check_drop(&d, &f, "outer total length below header length");
    let mut f = ipip(&i4);
    f[16..18].copy_from_slice(&u16::MAX.to_be_bytes());
    check_drop(&d, &f, "outer total length beyond the frame");
    let mut f = ip6ip6(&i6);
    f[18..20].copy_from_slice(&(i6.len() as u16 + 1).to_be_bytes());
    check_drop(&d, &f, "outer payload length beyond the frame");
    // Ext header claiming more bytes than the payload.
    let mut ext = dest_opts_encap_limit(PROTO_IPV6);
    ext[1] = 200;
    let f = cat(&[
        &eth(ETH_IPV6),
        &outer_v6(TUN6, 60, ext.len() + i6.len()),
        &ext,
        &i6,
    ]);
    check_drop(&d, &f, "ext header longer than the payload");
    // Ext header whose length runs past the frame: next one unreadable.
    let mut ext = dest_opts_encap_limit(60);
    ext[1] = 200;
    let f = cat(&[
        &eth(ETH_IPV6),
        &outer_v6(TUN6, 60, ext.len() + i6.len()),
        &ext,
        &i6,
    ]);
    check_untouched(
        &d,
        &f,
        Counter::PassedMalformedOuter,
        "ext header chain running off the frame",
    );

    // Inner headers.
    let mut bad = i4.clone();
    bad[0] = 0x65; // version 6, says proto 4
    check_drop(&d, &ipip(&bad), "IPIP with inner version 6");
    let mut bad = i4.clone();
    bad[0] = 0x44;
    check_drop(&d, &ipip(&bad), "IPIP with inner IHL 4");
    let mut bad = i4.clone();
    bad[2..4].copy_from_slice(&19u16.to_be_bytes());
    check_drop(&d, &ipip(&bad), "inner total length below 20");
    let mut bad = i4.clone();
    bad[2..4].copy_from_slice(&(i4.len() as u16 + 1).to_be_bytes());
    check_drop(
        &d,
        &ipip(&bad),
        "inner total length beyond the outer payload",
    );
    let mut bad = i4.clone();
    bad[0] = 0x4f;
    check_drop(
        &d,
        &ipip(&bad),
        "inner IHL 15 beyond the inner total length",
    );
    check_drop(&d, &ip6in4(&i4), "6in4 carrying IPv4");
    check_drop(&d, &ip4in6(&i6), "4in6 carrying IPv6");
    check_drop(&d, &ip6ip6(&i4), "IP6IP6 carrying IPv4");
    let mut bad = i6.clone();
    bad[4..6].copy_from_slice(&(i6.len() as u16).to_be_bytes());
    check_drop(
        &d,
        &ip6ip6(&bad),
        "inner payload length beyond the outer payload",
    );
    check_drop(&d, &ipip(&[]), "IPIP with no inner packet");
    check_drop(&d, &ip6ip6(&[]), "IP6IP6 with no inner packet");

    let s = d.stats().unwrap();
    assert_eq!(s.decapsulated(), 0);
    assert_eq!(s.dropped_malformed, 16);
    assert_eq!(s.passed_malformed_outer, 6);
    assert_eq!(s.total(), 22);
}

// ---------------------------------------------------------------- model + proptest

/// Reference model of the documented policy (see `xdp_decap.rs`).
fn model(f: &[u8], v4: &[[u8; 4]], v6: &[[u8; 16]]) -> (XdpVerdict, Vec<u8>, Counter, bool) {
    use Counter::*;
    let pass = |c| (XdpVerdict::Pass, f.to_vec(), c, false);
    let drop = (XdpVerdict::Drop, Vec::new(), DroppedMalformed, false);
    let be16 = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
    let mut l2 = 14;
    let mut et = be16(12);
    if et == 0x8100 || et == 0x88a8 {
        if f.len() < 18 {
            return pass(PassedMalformedOuter);
        }
        et = be16(16);
        l2 = 18;
    }
    let left = f.len() - l2;
    let (proto, outer_len, avail, form, outer_ecn);
    match et {
        ETH_IPV4 => {
            if left < 20 || f[l2] >> 4 != 4 || f[l2] & 0xf < 5 {
                return pass(PassedMalformedOuter);
            }
            let p = f[l2 + 9];
            if p != PROTO_IPIP && p != PROTO_IPV6 {
                return pass(PassedNotTunnel);
            }
            if !v4.iter().any(|a| a[..] == f[l2 + 16..l2 + 20]) {
                return pass(PassedNotOurs);
            }
            let ihl = usize::from(f[l2] & 0xf) * 4;
            let tot = usize::from(be16(l2 + 2));
            if tot < ihl || tot > left {
                return drop;
            }
            if be16(l2 + 6) & 0x3fff != 0 {
                return pass(PassedFragment);
            }
            proto = p;
            outer_ecn = f[l2 + 1] & 3;
            outer_len = ihl;
            avail = tot - ihl;
            form = if p == PROTO_IPIP {
                DecapForm::Ipip
            } else {
                DecapForm::Ip6InIp4
            };
        }
        ETH_IPV6 => {
            if left < 40 || f[l2] >> 4 != 6 {
                return pass(PassedMalformedOuter);
            }
            let mut nh = f[l2 + 6];
            let mut off = 40usize;
            for _ in 0..4 {
                if ![0u8, 43, 60].contains(&nh) {
                    break;
                }
                if left < off + 2 {
                    return pass(PassedMalformedOuter);
                }
                nh = f[l2 + off];
                off += (usize::from(f[l2 + off + 1]) + 1) * 8;
            }
            if ![44u8, PROTO_IPIP, PROTO_IPV6].contains(&nh) {
                return pass(PassedNotTunnel);
            }
            if !v6.iter().any(|a| a[..] == f[l2 + 24..l2 + 40]) {
                return pass(PassedNotOurs);
            }
            let plen = usize::from(be16(l2 + 4));
            if 40 + plen > left || off > 40 + plen {
                return drop;
            }
            if nh == 44 {
                return pass(PassedFragment);
            }
            proto = nh;
            outer_ecn = (f[l2 + 1] >> 4) & 3;
            outer_len = off;
            avail = 40 + plen - off;
            form = if nh == PROTO_IPV6 {
                DecapForm::Ip6Ip6
            } else {
                DecapForm::Ip4InIp6
            };
        }
        _ => return pass(PassedNotTunnel),
    }
    let inner = &f[l2 + outer_len..];
    let inner_type = if proto == PROTO_IPIP {
        if inner.len() < 20 || avail < 20 || inner[0] >> 4 != 4 || inner[0] & 0xf < 5 {
            return drop;
        }
        let ihl = usize::from(inner[0] & 0xf) * 4;
        let tot = usize::from(u16::from_be_bytes([inner[2], inner[3]]));
        if tot < ihl || tot > avail {
            return drop;
        }
        ETH_IPV4
    } else {
        if inner.len() < 40 || avail < 40 || inner[0] >> 4 != 6 {
            return drop;
        }
        if 40 + usize::from(u16::from_be_bytes([inner[4], inner[5]])) > avail {
            return drop;
        }
        ETH_IPV6
    };
    // RFC 6040: an outer CE mark goes to an ECN-capable inner header; a
    // not ECN-capable inner packet is dropped.
    let mut inner = inner.to_vec();
    let mut ce = false;
    if outer_ecn == 3 {
        let inner_ecn = if inner_type == ETH_IPV4 {
            inner[1] & 3
        } else {
            (inner[1] >> 4) & 3
        };
        match inner_ecn {
            0 => return (XdpVerdict::Drop, Vec::new(), DroppedEcn, false),
            3 => {}
            _ if inner_type == ETH_IPV4 => {
                // RFC 1624 incremental update (keeps a wrong checksum wrong,
                // as the program does).
                let old = u16::from_be_bytes([inner[0], inner[1]]);
                inner[1] |= 3;
                let new = u16::from_be_bytes([inner[0], inner[1]]);
                let hc = u16::from_be_bytes([inner[10], inner[11]]);
                let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
                sum = (sum & 0xffff) + (sum >> 16);
                sum = (sum & 0xffff) + (sum >> 16);
                inner[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
                ce = true;
            }
            _ => {
                inner[1] |= 0x30;
                ce = true;
            }
        }
    }
    let out = cat(&[&f[..l2 - 2], &inner_type.to_be_bytes(), &inner]);
    (XdpVerdict::Pass, out, Decap(form), ce)
}

#[test]
fn privileged_xdp_decap_model_agrees_on_fixtures() {
    if !require_bpf("privileged_xdp_decap_model_agrees_on_fixtures") {
        return;
    }
    // The model itself is checked against the hand-written expectations.
    for l in layouts() {
        let (v, out, c, _) = model(&l.frame, &[TUN4], &[TUN6]);
        assert_eq!(
            (v, c),
            (XdpVerdict::Pass, Counter::Decap(l.form)),
            "{}",
            l.name
        );
        assert_eq!(
            out,
            cat(&[
                &l.frame[..l.l3 - 2],
                &l.inner_type.to_be_bytes(),
                &l.frame[l.inner..]
            ])
        );
        let (v, out, c, _) = model(&l.frame, &[OTHER4], &[OTHER6]);
        assert_eq!(
            (v, out, c),
            (XdpVerdict::Pass, l.frame.clone(), Counter::PassedNotOurs)
        );
    }
}

fn base_frames() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = layouts().into_iter().map(|l| l.frame).collect();
    let i4 = inner_v4_udp(&[9; 30]);
    let hbh = vec![60, 0, 0x01, 0x04, 0, 0, 0, 0];
    let dst = dest_opts_encap_limit(PROTO_IPIP);
    v.push(cat(&[
        &eth(ETH_IPV6),
        &outer_v6(TUN6, 0, 16 + i4.len()),
        &hbh,
        &dst,
        &i4,
    ]));
    v.push(cat(&[
        &eth_vlan(ETH_IPV6),
        &outer_v6(TUN6, PROTO_IPIP, i4.len()),
        &i4,
    ]));
    // Outer CE over ECN-capable inner packets.
    v.push(with_outer_ecn(&ipip(&with_inner_ecn(&i4, 1)), 14, 3));
    let i6 = with_inner_ecn(&inner_v6_tcp(b"ce"), 2);
    v.push(with_outer_ecn(&ip6ip6(&i6), 14, 3));
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, .. ProptestConfig::default() })]

    /// Mutated and truncated frames: verdict, output bytes and counter as
    /// the model says; never an error, never `dropped_error`.
    #[test]
    fn privileged_xdp_decap_proptest_mutations_match_model(
        which in 0usize..10,
        muts in proptest::collection::vec((0usize..80, any::<u8>()), 0..4),
        cut in proptest::option::of(14usize..140),
        ours in any::<bool>(),
    ) {
        if !require_bpf("privileged_xdp_decap_proptest_mutations_match_model") {
            return Ok(());
        }
        thread_local! {
            static DECAP: XdpDecap = loaded();
        }
        let mut f = base_frames()[which].clone();
        for (pos, byte) in muts {
            if pos < f.len() {
                f[pos] = byte;
            }
        }
        if let Some(c) = cut {
            f.truncate(c.max(14));
        }
        let (v4, v6): (&[[u8; 4]], &[[u8; 16]]) = if ours { (&[TUN4], &[TUN6]) } else { (&[], &[]) };
        DECAP.with(|d| {
            if !ours {
                d.remove_tunnel_addr(IpAddr::from(TUN4)).unwrap();
                d.remove_tunnel_addr(IpAddr::from(TUN6)).unwrap();
            }
            let before = d.stats().unwrap();
            let r = d.test_run(&f).unwrap();
            let after = d.stats().unwrap();
            if !ours {
                d.add_tunnel_addr(IpAddr::from(TUN4)).unwrap();
                d.add_tunnel_addr(IpAddr::from(TUN6)).unwrap();
            }
            let (v, out, c, ce) = model(&f, v4, v6);
            prop_assert_eq!(r.verdict, v, "frame {:02x?}", f);
            if v == XdpVerdict::Pass {
                prop_assert_eq!(&r.packet, &out, "frame {:02x?}", f);
            }
            prop_assert_eq!(counter(&after, c), counter(&before, c) + 1, "counter {:?} frame {:02x?}", c, f);
            prop_assert_eq!(after.total(), before.total() + 1);
            prop_assert_eq!(after.dropped_error, 0);
            prop_assert_eq!(after.ecn_ce_propagated - before.ecn_ce_propagated, u64::from(ce));
            Ok(())
        })?;
    }
}

#[test]
fn privileged_xdp_decap_attach_native_generic_and_detach_on_drop() {
    use flowpin_bpf_progs::xdp_decap::{XdpAttachMode, XdpMode};
    use flowpin_testing::{NetNs, VethPair};
    if !require_bpf("privileged_xdp_decap_attach_native_generic_and_detach_on_drop") {
        return;
    }
    let a = NetNs::new("dca").unwrap();
    let b = NetNs::new("dcb").unwrap();
    let _veth = VethPair::new(&a, "dv0", &b, "dv1").unwrap();
    let d = loaded();
    let xdp_shown = |ns: &NetNs| {
        let out = ns.ip(&["-d", "link", "show", "dv0"]).unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let link = a.run(|| d.attach("dv0")).unwrap().expect("attach");
    assert_eq!(link.mode(), XdpMode::Native, "veth supports native XDP");
    let shown = xdp_shown(&a);
    assert!(
        shown.contains("xdp ") || shown.contains("xdp/id"),
        "ip link shows native xdp: {shown}"
    );
    // A second program on the same interface is refused while the link lives.
    let again = a.run(|| d.attach("dv0")).unwrap();
    assert!(
        matches!(
            again,
            Err(XdpDecapError::Xdp(XdpAttachError::Attach { .. }))
        ),
        "{again:?}"
    );
    drop(link);
    assert!(
        !xdp_shown(&a).contains("prog/xdp"),
        "detached on drop: {}",
        xdp_shown(&a)
    );
    let link = a
        .run(|| {
            let ifindex = flowpin_bpf_progs::xdp_attach::ifindex_by_name("dv0").unwrap();
            d.attach(XdpTarget::ifindex(ifindex).mode(XdpAttachMode::Generic))
        })
        .unwrap()
        .expect("generic attach");
    assert_eq!(link.mode(), XdpMode::Generic);
    assert!(xdp_shown(&a).contains("xdpgeneric"), "{}", xdp_shown(&a));
    drop(link);
    assert!(!xdp_shown(&a).contains("xdpgeneric"), "{}", xdp_shown(&a));
    let e = a.run(|| d.attach("nonexistent0")).unwrap().unwrap_err();
    assert!(
        matches!(
            e,
            XdpDecapError::Xdp(XdpAttachError::NoSuchInterface { .. })
        ),
        "{e}"
    );
}
