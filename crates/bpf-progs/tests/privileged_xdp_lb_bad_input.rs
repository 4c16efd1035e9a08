//! Privileged bad-input tests of `xdp_lb`: truncation at every byte (so at
//! every header boundary), bad IHL, IPv6 extension chains, fragments,
//! zero-length UDP. Each has a defined verdict (asserted here), the output
//! is compared with the model byte for byte, and the counters with the
//! model's.
#![allow(clippy::unwrap_used)] // tests may unwrap (clippy.toml covers #[test] fns only)

mod xdp_lb_support;

use flowpin_bpf_progs::xdp_lb::{Backend, Proto, Vip, VipFlags};
use flowpin_lb_model::{Outcome, Verdict};
use flowpin_tcp_opt::ServerId;
use flowpin_testing::require_bpf;
use xdp_lb_support::*;

fn setup() -> Fx {
    let mut fx = Fx::new(test_config());
    let b4: Vec<Backend> = (1..=3)
        .map(|i| {
            Backend::new(backend4(i))
                .server_id(ServerId::new(100 + u32::from(i)).expect("non-zero server_id"))
        })
        .collect();
    let b6: Vec<Backend> = (1..=3)
        .map(|i| {
            Backend::new(backend6(i))
                .server_id(ServerId::new(200 + u32::from(i)).expect("non-zero server_id"))
        })
        .collect();
    for (vip, flags, b) in [
        (
            Vip::new(vip4().into(), 80, Proto::Tcp),
            VipFlags::SERVER_ID,
            &b4,
        ),
        (Vip::new(vip4().into(), 53, Proto::Udp), VipFlags::NONE, &b4),
        (
            Vip::new(vip6().into(), 443, Proto::Tcp),
            VipFlags::SERVER_ID,
            &b6,
        ),
        (
            Vip::new(vip6().into(), 443, Proto::Udp),
            VipFlags::QUIC,
            &b6,
        ),
    ] {
        fx.add_vip(vip, flags);
        fx.set_backends(&vip, b);
    }
    fx
}

/// Rewrites the IP length fields to the frame's length (so only the
/// truncated upper header is wrong).
fn fix_lengths(p: &mut [u8]) {
    let l2 = if p.len() >= 14 && p[12..14] == [0x81, 0x00] {
        18
    } else {
        14
    };
    if p.len() < l2 + 20 {
        return;
    }
    match p[l2] >> 4 {
        4 => {
            let tot = (p.len() - l2) as u16;
            p[l2 + 2..l2 + 4].copy_from_slice(&tot.to_be_bytes());
        }
        6 if p.len() >= l2 + 40 => {
            let pl = (p.len() - l2 - 40) as u16;
            p[l2 + 4..l2 + 6].copy_from_slice(&pl.to_be_bytes());
        }
        _ => {}
    }
}

/// IPv6 UDP packet with `n` extension headers of type `ext` (8 bytes each).
fn v6_with_ext(n: usize, ext: u8, sport: u16, hdr_ext_len: u8) -> Vec<u8> {
    let base = udp6(client6(1), sport, vip6(), 443, b"payload!");
    let (eth_ip, rest) = base.split_at(14 + 40);
    let mut p = eth_ip.to_vec();
    p[14 + 6] = if n > 0 { ext } else { 17 };
    for i in 0..n {
        let next = if i + 1 < n { ext } else { 17 };
        p.extend_from_slice(&[next, hdr_ext_len, 1, 4, 0, 0, 0, 0]);
        p.extend(std::iter::repeat_n(0u8, usize::from(hdr_ext_len) * 8));
    }
    p.extend_from_slice(rest);
    fix_lengths(&mut p);
    p
}

#[test]
fn privileged_truncated_at_every_header_boundary() {
    if !require_bpf("privileged_truncated_at_every_header_boundary") {
        return;
    }
    let mut fx = setup();
    let mut vlan = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .single_vlan(etherparse::VlanId::try_new(7).unwrap())
        .ipv4(client4(5).octets(), vip4().octets(), 30)
        .udp(999, 53)
        .write(&mut vlan, b"vlan-udp")
        .unwrap();
    let bases = vec![
        tcp4(
            client4(1),
            1111,
            vip4(),
            80,
            false,
            &sid_opt(101),
            b"payload",
        ),
        tcp6(
            client6(1),
            2222,
            vip6(),
            443,
            false,
            &sid_opt(201),
            b"payload",
        ),
        udp6(
            client6(2),
            3333,
            vip6(),
            443,
            &[0x41, 0x10, 0, 0, 0, 202, 1, 2, 3, 4],
        ),
        v6_with_ext(2, 60, 4444, 0),
        vlan,
    ];
    let mut checked = 0;
    for base in &bases {
        // The full packet is forwarded.
        assert_eq!(fx.check(base).verdict, Verdict::Tx, "base {}", hex(base));
        for len in 14..base.len() {
            // Raw truncation: the IP length fields no longer match: dropped.
            let d = fx.check(&base[..len]);
            assert_eq!(
                (d.verdict, d.outcome),
                (Verdict::Drop, Outcome::Malformed),
                "len {len} of {}",
                hex(base)
            );
            // Consistent lengths: dropped iff a header is cut.
            let mut p = base[..len].to_vec();
            fix_lengths(&mut p);
            let d = fx.check(&p);
            assert_ne!(
                d.verdict,
                Verdict::Pass,
                "a truncated VIP packet never passes ({len})"
            );
            checked += 2;
        }
    }
    assert!(checked > 300);
    fx.assert_stats();
}

#[test]
fn privileged_bad_ihl_and_version() {
    if !require_bpf("privileged_bad_ihl_and_version") {
        return;
    }
    let mut fx = setup();
    let good = tcp4(
        client4(1),
        1,
        vip4(),
        80,
        false,
        &[],
        b"abcdefghijklmnopqrstuvwxyz0123456789abcdefghijkl",
    );
    for ihl in 0u8..16 {
        let mut p = good.clone();
        p[14] = 0x40 | ihl;
        let d = fx.check(&p);
        if ihl < 5 {
            assert_eq!(
                (d.verdict, d.outcome),
                (Verdict::Drop, Outcome::Malformed),
                "IHL {ihl}"
            );
        } else {
            // IHL >= 5: the bytes after the 20-byte header count as IP
            // options and the ports are read at offset 4 * IHL (inside the
            // real TCP header or its payload), the TCP data offset at
            // 4 * IHL + 12. A data offset that is < 5 or runs past the
            // frame is malformed. Otherwise the packet is to the VIP's
            // address but is the VIP's flow only if those bytes say port
            // 80: then it is forwarded and carried unchanged in the tunnel;
            // else it is no VIP's and passes untouched.
            let l4 = 14 + 4 * usize::from(ihl);
            let dport = u16::from_be_bytes([p[l4 + 2], p[l4 + 3]]);
            let doff = usize::from(p[l4 + 12] >> 4);
            if doff < 5 || l4 + 4 * doff > p.len() {
                assert_eq!(
                    (d.verdict, d.outcome),
                    (Verdict::Drop, Outcome::Malformed),
                    "IHL {ihl}: TCP data offset {doff} at {l4}"
                );
            } else if dport == 80 {
                let Outcome::Forwarded { backend, .. } = d.outcome else {
                    panic!("IHL {ihl}: {:?}, expected forwarded", d.outcome);
                };
                assert_eq!(d.verdict, Verdict::Tx, "IHL {ihl}");
                assert_encap(&d.packet, &p, backend);
            } else {
                assert_eq!(
                    (d.verdict, d.outcome),
                    (Verdict::Pass, Outcome::NotVip),
                    "IHL {ihl}: ports read at offset {l4}, dport {dport}"
                );
                assert_eq!(d.packet, p, "IHL {ihl}: passed packets are not rewritten");
            }
        }
    }
    let mut p = good.clone();
    p[14] = 0x65; // version 6 inside an IPv4 ethertype
    assert_eq!(fx.check(&p).outcome, Outcome::Malformed);
    let mut p = good.clone();
    p[16..18].copy_from_slice(&10u16.to_be_bytes()); // total length < IHL
    assert_eq!(fx.check(&p).outcome, Outcome::Malformed);
    fx.assert_stats();
    assert!(fx.lb.global_stats().unwrap().drop_malformed >= 7);
}

#[test]
fn privileged_ipv6_extension_chains() {
    if !require_bpf("privileged_ipv6_extension_chains") {
        return;
    }
    let mut fx = setup();
    // Within the bound (8): forwarded, for each skippable type.
    for ext in [0u8, 43, 60] {
        let d = fx.check(&v6_with_ext(7, ext, 1000 + u16::from(ext), 0));
        assert_eq!(d.verdict, Verdict::Tx, "7 headers of type {ext}");
    }
    let d = fx.check(&v6_with_ext(8, 60, 1, 1));
    assert_eq!(d.verdict, Verdict::Tx, "8 headers: the bound");
    // Longer chains: passed to the stack, counted.
    for n in [9, 20, 60] {
        let d = fx.check(&v6_with_ext(n, 60, 2, 0));
        assert_eq!(
            (d.verdict, d.outcome),
            (Verdict::Pass, Outcome::ExtHdrLimit),
            "{n} headers"
        );
    }
    // A length that runs past the packet ("looping" 2 KiB hdr ext len).
    let mut p = v6_with_ext(2, 43, 3, 0);
    p[14 + 40 + 1] = 255;
    assert_eq!(fx.check(&p).outcome, Outcome::Malformed);
    // Chain of hop-by-hop headers whose next header points to itself,
    // truncated mid-header.
    let mut p = v6_with_ext(3, 0, 4, 0);
    p.truncate(14 + 40 + 8 + 1);
    fix_lengths(&mut p);
    assert_eq!(fx.check(&p).outcome, Outcome::Malformed);
    fx.assert_stats();
    assert_eq!(fx.lb.global_stats().unwrap().pass_ext_hdr_limit, 3);
}

#[test]
fn privileged_fragments_first_by_ports_others_by_addresses() {
    if !require_bpf("privileged_fragments_first_by_ports_others_by_addresses") {
        return;
    }
    let mut fx = setup();
    // IPv4 first fragment (MF, offset 0): has ports, forwarded by the VIP.
    let mut first = udp4(client4(1), 999, vip4(), 53, &[7u8; 32]);
    first[20] = 0x20; // MF
    let c = {
        let h = etherparse::Ipv4HeaderSlice::from_slice(&first[14..])
            .unwrap()
            .to_header();
        h.calc_header_checksum()
    };
    first[24..26].copy_from_slice(&c.to_be_bytes());
    let d = fx.check(&first);
    assert_eq!(d.verdict, Verdict::Tx);
    // Non-first fragment (offset 8 units): no port-agnostic VIP: passed, counted.
    let mut later = udp4(client4(1), 999, vip4(), 53, &[7u8; 32]);
    later[20] = 0x00;
    later[21] = 0x08;
    let d = fx.check(&later);
    assert_eq!(
        (d.verdict, d.outcome),
        (Verdict::Pass, Outcome::FragmentNoVip)
    );
    // With a port-agnostic VIP of that address: forwarded, hashed by addresses.
    let any = Vip::new(vip4().into(), 0, Proto::Udp);
    fx.add_vip(any, VipFlags::PORT_AGNOSTIC);
    fx.set_backends(&any, &[Backend::new(backend4(9))]);
    let d = fx.check(&later);
    assert_eq!(d.verdict, Verdict::Tx);
    match d.outcome {
        Outcome::Forwarded { backend, .. } => assert_eq!(backend, backend4(9)),
        o => panic!("{o:?}"),
    }
    // IPv6 fragment header: first fragment by ports, later passed.
    let mut v6 = udp6(client6(1), 999, vip6(), 443, &[1u8; 16]);
    let (head, rest) = v6.split_at(54);
    let mut p = head.to_vec();
    p[14 + 6] = 44;
    p.extend_from_slice(&[17, 0, 0x00, 0x01, 0, 0, 0, 1]); // offset 0, M=1
    p.extend_from_slice(rest);
    fix_lengths(&mut p);
    assert_eq!(fx.check(&p).verdict, Verdict::Tx, "IPv6 first fragment");
    p[54 + 2..54 + 4].copy_from_slice(&[0x00, 0x41]); // offset 8 units, M=1
    let d = fx.check(&p);
    assert_eq!(
        (d.verdict, d.outcome),
        (Verdict::Pass, Outcome::FragmentNoVip)
    );
    v6.clear();
    fx.assert_stats();
    assert_eq!(fx.lb.global_stats().unwrap().pass_fragment_no_vip, 2);
}

#[test]
fn privileged_zero_length_udp_and_tcp_header_only() {
    if !require_bpf("privileged_zero_length_udp_and_tcp_header_only") {
        return;
    }
    let mut fx = setup();
    let p = udp4(client4(1), 1, vip4(), 53, &[]);
    assert_eq!(
        fx.check(&p).verdict,
        Verdict::Tx,
        "empty UDP datagram forwarded"
    );
    let mut p0 = p.clone();
    p0[38..40].copy_from_slice(&0u16.to_be_bytes()); // UDP length 0: not validated, forwarded
    assert_eq!(fx.check(&p0).verdict, Verdict::Tx);
    let p = udp6(client6(1), 1, vip6(), 443, &[]);
    let d = fx.check(&p);
    assert_eq!(d.verdict, Verdict::Tx, "empty QUIC datagram: hashed");
    let p = tcp4(client4(2), 2, vip4(), 80, false, &[], &[]);
    assert_eq!(fx.check(&p).verdict, Verdict::Tx);
    // TCP data offset < 5.
    let mut p = tcp4(client4(2), 2, vip4(), 80, false, &[], b"0123456789abcdef");
    p[14 + 20 + 12] = 0x40;
    assert_eq!(fx.check(&p).outcome, Outcome::Malformed);
    fx.assert_stats();
}
