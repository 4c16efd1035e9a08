//! Privileged tests of `xdp_lb` through BPF_PROG_TEST_RUN: every case
//! compares the program's verdict and output packet byte for byte with
//! `flowpin_lb_model`, and the program's counters with the model's.
#![allow(clippy::unwrap_used)] // tests may unwrap (clippy.toml covers #[test] fns only)

mod xdp_lb_support;

use std::net::{IpAddr, Ipv4Addr};

use flowpin_bpf_progs::flow_hash::{flow_hash, FiveTuple};
use flowpin_bpf_progs::xdp_lb::{Backend, Proto, Vip, VipFlags};
use flowpin_lb_model::{Outcome, Route, Verdict};
use flowpin_tcp_opt::ServerId;
use flowpin_testing::require_bpf;
use xdp_lb_support::*;

fn tcp_vip4() -> Vip {
    Vip::new(vip4().into(), 80, Proto::Tcp)
}
fn udp_vip4() -> Vip {
    Vip::new(vip4().into(), 53, Proto::Udp)
}
fn tcp_vip6() -> Vip {
    Vip::new(vip6().into(), 443, Proto::Tcp)
}
fn udp_vip6() -> Vip {
    Vip::new(vip6().into(), 443, Proto::Udp)
}

fn backends(addrs: &[IpAddr]) -> Vec<Backend> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            Backend::new(*a).server_id(ServerId::new(100 + i as u32).expect("non-zero server_id"))
        })
        .collect()
}

fn fx_with(vip: Vip, flags: VipFlags, b: &[IpAddr]) -> Fx {
    let mut fx = Fx::new(test_config());
    fx.add_vip(vip, flags);
    fx.set_backends(&vip, &backends(b));
    fx
}

fn forwarded(d: &flowpin_lb_model::Decision) -> (IpAddr, Route) {
    match d.outcome {
        Outcome::Forwarded { backend, route } => (backend, route),
        o => panic!("expected a forwarded packet, got {o:?}"),
    }
}

#[test]
fn privileged_tcp_v4_ipip() {
    if !require_bpf("privileged_tcp_v4_ipip") {
        return;
    }
    let b: Vec<IpAddr> = (1..=4).map(backend4).collect();
    let mut fx = fx_with(tcp_vip4(), VipFlags::NONE, &b);
    let mut seen = std::collections::HashSet::new();
    for i in 0..64 {
        let pkt = tcp4(
            client4(i),
            40000 + i as u16,
            vip4(),
            80,
            true,
            &[],
            b"hello",
        );
        let d = fx.check(&pkt);
        let (be, route) = forwarded(&d);
        assert_eq!(route, Route::Ring);
        assert_encap(&d.packet, &pkt, be);
        seen.insert(be);
    }
    assert_eq!(seen.len(), 4, "64 flows spread over all 4 backends");
    fx.assert_stats();
}

#[test]
fn privileged_udp_v4_ipip() {
    if !require_bpf("privileged_udp_v4_ipip") {
        return;
    }
    let b: Vec<IpAddr> = (1..=3).map(backend4).collect();
    let mut fx = fx_with(udp_vip4(), VipFlags::NONE, &b);
    for i in 0..32 {
        let pkt = udp4(client4(i), 5000 + i as u16, vip4(), 53, b"query");
        let d = fx.check(&pkt);
        let (be, _) = forwarded(&d);
        assert_encap(&d.packet, &pkt, be);
        // Second packet of the flow: connection table hit.
        let d2 = fx.check(&pkt);
        assert_eq!(forwarded(&d2), (be, Route::Lru));
    }
    fx.assert_stats();
}

#[test]
fn privileged_tcp_v6_ip6ip6() {
    if !require_bpf("privileged_tcp_v6_ip6ip6") {
        return;
    }
    let b: Vec<IpAddr> = (1..=4).map(backend6).collect();
    let mut fx = fx_with(tcp_vip6(), VipFlags::NONE, &b);
    for i in 0..32 {
        let pkt = tcp6(
            client6(i),
            40000 + i as u16,
            vip6(),
            443,
            i % 2 == 0,
            &[],
            b"x",
        );
        let d = fx.check(&pkt);
        let (be, _) = forwarded(&d);
        assert_encap(&d.packet, &pkt, be);
        assert_eq!(d.packet[14 + 6], 41, "IP6IP6 next header");
    }
    fx.assert_stats();
}

#[test]
fn privileged_udp_v6_ip6ip6() {
    if !require_bpf("privileged_udp_v6_ip6ip6") {
        return;
    }
    let b: Vec<IpAddr> = (1..=2).map(backend6).collect();
    let mut fx = fx_with(udp_vip6(), VipFlags::NONE, &b);
    for i in 0..16 {
        let pkt = udp6(client6(i), 7000, vip6(), 443, b"datagram");
        let d = fx.check(&pkt);
        assert_encap(&d.packet, &pkt, forwarded(&d).0);
    }
    fx.assert_stats();
}

#[test]
fn privileged_ipv4_in_ipv6() {
    if !require_bpf("privileged_ipv4_in_ipv6") {
        return;
    }
    let b: Vec<IpAddr> = (1..=2).map(backend6).collect();
    let mut fx = fx_with(tcp_vip4(), VipFlags::NONE, &b);
    for i in 0..16 {
        let pkt = tcp4(client4(i), 1234, vip4(), 80, false, &[], b"abc");
        let d = fx.check(&pkt);
        assert_encap(&d.packet, &pkt, forwarded(&d).0);
        assert_eq!(d.packet[14 + 6], 4, "IPv4-in-IPv6 next header");
        assert_eq!(d.packet[14 + 7], 61, "hop limit copied from the inner TTL");
    }
    fx.assert_stats();
}

#[test]
fn privileged_ipv6_vip_refuses_ipv4_backends() {
    if !require_bpf("privileged_ipv6_vip_refuses_ipv4_backends") {
        return;
    }
    let mut fx = Fx::new(test_config());
    fx.add_vip(tcp_vip6(), VipFlags::NONE);
    let err = fx
        .lb
        .set_backends(&tcp_vip6(), &[Backend::new(backend4(1))]);
    // Refused for that reason (not any error), and nothing was written: the
    // VIP still has no backend.
    let msg = err
        .expect_err("IPv6 VIP with IPv4 backend must be refused")
        .to_string();
    assert!(
        msg.contains("IPv6 VIP cannot tunnel to IPv4 backend 10."),
        "refused for the wrong reason: {msg}"
    );
    fx.sync();
    let d = fx.check(&tcp6(client6(1), 1, vip6(), 443, true, &[], b""));
    assert_eq!(
        (d.verdict, d.outcome),
        (Verdict::Drop, Outcome::UnknownBackend)
    );
}

#[test]
fn privileged_vlan_tag_kept_and_ip_options() {
    if !require_bpf("privileged_vlan_tag_kept_and_ip_options") {
        return;
    }
    let b: Vec<IpAddr> = (1..=2).map(backend4).collect();
    let mut fx = fx_with(tcp_vip4(), VipFlags::NONE, &b);
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .single_vlan(etherparse::VlanId::try_new(42).unwrap())
        .ipv4(client4(1).octets(), vip4().octets(), 30)
        .tcp(999, 80, 1, 1000)
        .write(&mut v, b"vlan")
        .unwrap();
    let d = fx.check(&v);
    assert_eq!(d.verdict, Verdict::Tx);
    assert_eq!(&d.packet[12..14], &[0x81, 0x00], "802.1Q tag kept");
    // IPv4 with options (IHL 6: NOP NOP NOP EOL).
    let mut h = etherparse::Ipv4Header::new(
        24,
        50,
        etherparse::IpNumber::TCP,
        client4(2).octets(),
        vip4().octets(),
    )
    .unwrap();
    h.options = [1u8, 1, 1, 0].into();
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ip(etherparse::IpHeaders::Ipv4(h, Default::default()))
        .tcp(1000, 80, 1, 1000)
        .write(&mut v, b"opts")
        .unwrap();
    assert_eq!(v[14] & 0x0f, 6);
    let d = fx.check(&v);
    assert_encap(&d.packet, &v, forwarded(&d).0);
    fx.assert_stats();
}

#[test]
fn privileged_lru_hit_after_ring_change_flow_stays() {
    if !require_bpf("privileged_lru_hit_after_ring_change_flow_stays") {
        return;
    }
    let b: Vec<IpAddr> = (1..=3).map(backend4).collect();
    let mut fx = fx_with(tcp_vip4(), VipFlags::NONE, &b);
    let flows: Vec<(Ipv4Addr, u16)> = (0..200).map(|i| (client4(i), 30000 + i as u16)).collect();
    let mut first = Vec::new();
    for &(c, p) in &flows {
        let d = fx.check(&tcp4(c, p, vip4(), 80, true, &[], b""));
        first.push(forwarded(&d).0);
    }
    // Ring change: a fourth backend joins.
    let b2: Vec<IpAddr> = (1..=4).map(backend4).collect();
    fx.set_backends(&tcp_vip4(), &backends(&b2));
    let mut moved_in_ring = 0;
    for (i, &(c, p)) in flows.iter().enumerate() {
        let d = fx.check(&tcp4(c, p, vip4(), 80, false, &[], b"data"));
        let (be, route) = forwarded(&d);
        assert_eq!(route, Route::Lru);
        assert_eq!(be, first[i], "established flow stays on its backend");
        if d.hash.is_some() && be != ring_backend(&fx, c, p) {
            moved_in_ring += 1;
        }
    }
    assert!(
        moved_in_ring > 0,
        "some flows' ring slot changed, yet they stayed"
    );
    fx.assert_stats();
}

fn ring_backend(fx: &Fx, c: Ipv4Addr, p: u16) -> IpAddr {
    // What a brand-new flow with this tuple gets from the current ring: ask a
    // copy of the model with an empty connection table.
    let mut m = fx.model.clone();
    m.clear_connection_table();
    let d = m.decide(&tcp4(c, p, vip4(), 80, true, &[], b""));
    forwarded(&d).0
}

#[test]
fn privileged_new_flow_after_ring_change_follows_maglev() {
    if !require_bpf("privileged_new_flow_after_ring_change_follows_maglev") {
        return;
    }
    let b: Vec<IpAddr> = (1..=3).map(backend4).collect();
    let mut fx = fx_with(tcp_vip4(), VipFlags::NONE, &b);
    let b2: Vec<IpAddr> = (1..=4).map(backend4).collect();
    fx.set_backends(&tcp_vip4(), &backends(&b2));
    let mut on_new = 0;
    for i in 0..200 {
        let d = fx.check(&tcp4(client4(1000 + i), 20000, vip4(), 80, true, &[], b""));
        let (be, route) = forwarded(&d);
        assert_eq!(route, Route::Ring);
        if be == backend4(4) {
            on_new += 1;
        }
    }
    assert!(
        on_new > 20,
        "the new backend takes about a quarter of new flows ({on_new}/200)"
    );
    // Removing a backend: its slots move, nothing points at it any more.
    fx.set_backends(&tcp_vip4(), &backends(&b2[..3]));
    for i in 0..200 {
        let d = fx.check(&tcp4(client4(5000 + i), 20000, vip4(), 80, true, &[], b""));
        assert_ne!(forwarded(&d).0, backend4(4));
    }
    fx.assert_stats();
}

#[test]
fn privileged_non_vip_passes_untouched() {
    if !require_bpf("privileged_non_vip_passes_untouched") {
        return;
    }
    let mut fx = fx_with(tcp_vip4(), VipFlags::NONE, &[backend4(1)]);
    let cases = [
        tcp4(
            client4(1),
            1,
            Ipv4Addr::new(192, 0, 2, 11),
            80,
            false,
            &[],
            b"",
        ),
        tcp4(client4(1), 1, vip4(), 81, false, &[], b""),
        udp4(client4(1), 1, vip4(), 80, b""),
        tcp6(client6(1), 1, vip6(), 443, false, &[], b""),
    ];
    for pkt in cases {
        let d = fx.check(&pkt);
        assert_eq!((d.verdict, d.outcome), (Verdict::Pass, Outcome::NotVip));
        assert_eq!(d.packet, pkt);
    }
    // ARP
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    let d = fx.check(&arp);
    assert_eq!((d.verdict, d.outcome), (Verdict::Pass, Outcome::NotIp));
    fx.assert_stats();
}

#[test]
fn privileged_icmp_echo_answered_for_vips_only() {
    if !require_bpf("privileged_icmp_echo_answered_for_vips_only") {
        return;
    }
    let mut fx = fx_with(tcp_vip4(), VipFlags::NONE, &[backend4(1)]);
    fx.add_vip(tcp_vip6(), VipFlags::NONE);
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(client4(9).octets(), vip4().octets(), 20)
        .icmpv4_echo_request(7, 1)
        .write(&mut v, b"ping payload")
        .unwrap();
    let d = fx.check(&v);
    assert_eq!(
        (d.verdict, d.outcome),
        (Verdict::Tx, Outcome::IcmpEchoReply)
    );
    let p = etherparse::SlicedPacket::from_ethernet(&d.packet).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
        panic!("ipv4")
    };
    assert_eq!(ip.header().source(), vip4().octets());
    assert_eq!(
        ip.header().to_header().calc_header_checksum(),
        ip.header().header_checksum()
    );
    let Some(etherparse::TransportSlice::Icmpv4(ic)) = p.transport else {
        panic!("icmp")
    };
    let hdr = ic.header();
    assert_eq!(
        hdr.checksum,
        hdr.icmp_type.calc_checksum(ic.payload()),
        "ICMP checksum valid"
    );
    assert!(matches!(
        hdr.icmp_type,
        etherparse::Icmpv4Type::EchoReply(_)
    ));
    // Not a VIP address: passes.
    let mut v2 = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(client4(9).octets(), [192, 0, 2, 99], 20)
        .icmpv4_echo_request(7, 1)
        .write(&mut v2, b"x")
        .unwrap();
    assert_eq!(fx.check(&v2).verdict, Verdict::Pass);
    // IPv6 echo.
    let mut v6 = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(client6(3).octets(), vip6().octets(), 20)
        .icmpv6_echo_request(9, 2)
        .write(&mut v6, b"ping6")
        .unwrap();
    let d = fx.check(&v6);
    assert_eq!(
        (d.verdict, d.outcome),
        (Verdict::Tx, Outcome::IcmpEchoReply)
    );
    let p = etherparse::SlicedPacket::from_ethernet(&d.packet).unwrap();
    let Some(etherparse::NetSlice::Ipv6(ip)) = &p.net else {
        panic!("ipv6")
    };
    let (src, dst) = (ip.header().source(), ip.header().destination());
    let Some(etherparse::TransportSlice::Icmpv6(ic)) = p.transport else {
        panic!("icmpv6")
    };
    let hdr = ic.header();
    assert_eq!(
        hdr.checksum,
        hdr.icmp_type.calc_checksum(src, dst, ic.payload()).unwrap()
    );
    fx.assert_stats();
    assert_eq!(fx.lb.global_stats().unwrap().icmp_echo_replies, 2);
}

#[test]
fn privileged_too_big_sends_icmp() {
    if !require_bpf("privileged_too_big_sends_icmp") {
        return;
    }
    let mut fx = fx_with(tcp_vip4(), VipFlags::NONE, &[backend4(1)]);
    fx.add_vip(tcp_vip6(), VipFlags::NONE);
    fx.set_backends(&tcp_vip6(), &backends(&[backend6(1)]));
    // 1500-byte IPv4 packet + 20 bytes IPIP > MTU 1500.
    let payload = vec![0xabu8; 1500 - 40];
    let pkt = tcp4(client4(1), 5555, vip4(), 80, false, &[], &payload);
    let d = fx.check(&pkt);
    assert_eq!((d.verdict, d.outcome), (Verdict::Tx, Outcome::TooBig(true)));
    let p = etherparse::SlicedPacket::from_ethernet(&d.packet).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
        panic!("ipv4")
    };
    assert_eq!(ip.header().destination(), client4(1).octets());
    assert_eq!(
        ip.header().to_header().calc_header_checksum(),
        ip.header().header_checksum()
    );
    let Some(etherparse::TransportSlice::Icmpv4(ic)) = p.transport else {
        panic!("icmp")
    };
    let hdr = ic.header();
    assert_eq!(hdr.checksum, hdr.icmp_type.calc_checksum(ic.payload()));
    match hdr.icmp_type {
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu },
        ) => {
            assert_eq!(next_hop_mtu, 1480)
        }
        o => panic!("expected frag needed, got {o:?}"),
    }
    // Just fits: 1480-byte packet + 20 = 1500.
    let pkt = tcp4(
        client4(1),
        5555,
        vip4(),
        80,
        false,
        &[],
        &payload[..1480 - 40],
    );
    assert!(matches!(fx.check(&pkt).outcome, Outcome::Forwarded { .. }));
    // IPv6: 1461 + 40 > 1500.
    let pkt = tcp6(
        client6(1),
        5555,
        vip6(),
        443,
        false,
        &[],
        &vec![1u8; 1461 - 60],
    );
    let d = fx.check(&pkt);
    assert_eq!((d.verdict, d.outcome), (Verdict::Tx, Outcome::TooBig(true)));
    let p = etherparse::SlicedPacket::from_ethernet(&d.packet).unwrap();
    let Some(etherparse::NetSlice::Ipv6(ip)) = &p.net else {
        panic!("ipv6")
    };
    let (src, dst) = (ip.header().source(), ip.header().destination());
    let Some(etherparse::TransportSlice::Icmpv6(ic)) = p.transport else {
        panic!("icmpv6")
    };
    let hdr = ic.header();
    assert_eq!(
        hdr.checksum,
        hdr.icmp_type.calc_checksum(src, dst, ic.payload()).unwrap()
    );
    assert_eq!(
        hdr.icmp_type,
        etherparse::Icmpv6Type::PacketTooBig { mtu: 1460 }
    );
    fx.assert_stats();
    assert_eq!(fx.lb.global_stats().unwrap().icmp_too_big_sent, 2);
}

#[test]
fn privileged_flow_hash_golden() {
    if !require_bpf("privileged_flow_hash_golden") {
        return;
    }
    // A /96 IPv6 tunnel prefix: the last 32 bits of the outer source are
    // the program's flow hash; compare with the Rust function.
    let mut fx = Fx::new(test_config().tunnel_src_v6(("fc00:1::".parse().unwrap(), 96)));
    fx.add_vip(tcp_vip4(), VipFlags::NONE);
    fx.set_backends(&tcp_vip4(), &backends(&[backend6(1)]));
    fx.add_vip(udp_vip6(), VipFlags::NONE);
    fx.set_backends(&udp_vip6(), &backends(&[backend6(2)]));
    for i in 0..100u32 {
        let c = client4(i * 7919);
        let sport = (i * 31 + 1) as u16;
        let d = fx.check(&tcp4(c, sport, vip4(), 80, true, &[], b""));
        let got = u32::from_be_bytes(d.packet[14 + 20..14 + 24].try_into().unwrap());
        let want = flow_hash(&FiveTuple {
            src: c.into(),
            dst: vip4().into(),
            sport,
            dport: 80,
            proto: 6,
        });
        assert_eq!(got, want, "v4 flow {i}");
        let c6 = client6(i * 104729);
        let d = fx.check(&udp6(c6, sport, vip6(), 443, b"q"));
        let got = u32::from_be_bytes(d.packet[14 + 20..14 + 24].try_into().unwrap());
        let want = flow_hash(&FiveTuple {
            src: c6.into(),
            dst: vip6().into(),
            sport,
            dport: 443,
            proto: 17,
        });
        assert_eq!(got, want, "v6 flow {i}");
    }
}

#[test]
fn privileged_port_agnostic_and_skip_lru_udp() {
    if !require_bpf("privileged_port_agnostic_and_skip_lru_udp") {
        return;
    }
    let mut fx = Fx::new(test_config());
    let any = Vip::new(vip4().into(), 0, Proto::Udp);
    fx.add_vip(any, VipFlags::PORT_AGNOSTIC | VipFlags::SKIP_LRU_UDP);
    fx.set_backends(&any, &backends(&[backend4(1), backend4(2)]));
    for port in [1u16, 53, 443, 65535] {
        let pkt = udp4(client4(1), 999, vip4(), port, b"p");
        let d = fx.check(&pkt);
        assert_eq!(forwarded(&d).1, Route::Ring);
        let d = fx.check(&pkt);
        assert_eq!(
            forwarded(&d).1,
            Route::Ring,
            "no connection table for this VIP"
        );
    }
    assert_eq!(fx.lb.connection_table_len().unwrap(), 0);
    fx.assert_stats();
}

#[test]
fn privileged_vip_without_backends_drops_unknown_backend() {
    if !require_bpf("privileged_vip_without_backends_drops_unknown_backend") {
        return;
    }
    let mut fx = Fx::new(test_config());
    fx.add_vip(tcp_vip4(), VipFlags::NONE);
    let d = fx.check(&tcp4(client4(1), 1, vip4(), 80, true, &[], b""));
    assert_eq!(
        (d.verdict, d.outcome),
        (Verdict::Drop, Outcome::UnknownBackend)
    );
    // remove_vip: passes again.
    fx.lb.remove_vip(&tcp_vip4()).unwrap();
    fx.sync();
    let d = fx.check(&tcp4(client4(1), 1, vip4(), 80, true, &[], b""));
    assert_eq!(d.verdict, Verdict::Pass);
    assert_eq!(fx.lb.global_stats().unwrap().drop_unknown_backend, 1);
}

#[test]
fn privileged_shared_connection_table() {
    if !require_bpf("privileged_shared_connection_table") {
        return;
    }
    let mut fx = Fx::new(test_config().conn_table_shared(true));
    fx.add_vip(tcp_vip4(), VipFlags::NONE);
    fx.set_backends(&tcp_vip4(), &backends(&[backend4(1), backend4(2)]));
    // The flows are learned on CPU 0 (Fx pins there) ...
    for i in 0..50 {
        fx.check(&tcp4(client4(i), 7, vip4(), 80, true, &[], b""));
    }
    assert_eq!(fx.lb.connection_table_len().unwrap(), 50);
    fx.set_backends(
        &tcp_vip4(),
        &backends(&[backend4(1), backend4(2), backend4(3)]),
    );
    // ... and found on CPU 1: one table for all CPUs. (Per-CPU tables would
    // miss here and route by the new ring.)
    // A machine without CPU 1 fails here: a shared table is only told
    // apart from per-CPU tables on 2+ CPUs.
    let mut set = nix::sched::CpuSet::new();
    set.set(1).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .expect("CPU 1 (a shared table is only told apart on 2+ CPUs)");
    // SAFETY: sched_getcpu takes no arguments and only reads the caller's CPU.
    assert_eq!(unsafe { nix::libc::sched_getcpu() }, 1, "running on CPU 1");
    for i in 0..50 {
        let d = fx.check(&tcp4(client4(i), 7, vip4(), 80, false, &[], b"x"));
        assert_eq!(forwarded(&d).1, Route::Lru);
    }
    fx.lb.clear_connection_table().unwrap();
    fx.model.clear_connection_table();
    assert_eq!(fx.lb.connection_table_len().unwrap(), 0);
    let d = fx.check(&tcp4(client4(1), 7, vip4(), 80, false, &[], b"x"));
    assert_eq!(forwarded(&d).1, Route::Ring);
    fx.assert_stats();
}

#[test]
fn privileged_removed_vip_leaves_nothing_behind() {
    if !require_bpf("privileged_removed_vip_leaves_nothing_behind") {
        return;
    }
    let mut fx = Fx::new(test_config());
    let a = tcp_vip4();
    let id = fx.add_vip(a, VipFlags::SERVER_ID);
    fx.set_backends(&a, &backends(&[backend4(1), backend4(2)]));
    fx.check(&tcp4(client4(1), 1, vip4(), 80, true, &[], b""));
    fx.lb.remove_vip(&a).unwrap();
    fx.sync();
    assert_eq!(
        fx.check(&tcp4(client4(1), 1, vip4(), 80, false, &[], b""))
            .verdict,
        Verdict::Pass
    );
    // The next VIP reuses the id: empty ring, no server_id routes, zero counters.
    let b = udp_vip6();
    assert_eq!(fx.add_vip(b, VipFlags::QUIC), id);
    assert_eq!(fx.lb.vip_stats(&b).unwrap(), Default::default());
    let mut q = vec![0x41u8, 0x10, 0, 0, 0, 101];
    q.extend_from_slice(&[0; 20]);
    let d = fx.check(&udp6(client6(1), 1, vip6(), 443, &q));
    assert_eq!(
        (d.verdict, d.outcome),
        (Verdict::Drop, Outcome::UnknownBackend)
    );
    fx.assert_stats();
}
