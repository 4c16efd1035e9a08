//! Privileged property test: random and mutated packets through
//! BPF_PROG_TEST_RUN; the verdict and the output packet must equal the
//! model's, and at the end every counter must equal the model's.
#![allow(clippy::unwrap_used)] // tests may unwrap (clippy.toml covers #[test] fns only)

mod xdp_lb_support;

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowpin_bpf_progs::xdp_lb::{Backend, Proto, Vip, VipFlags, XdpVerdict};
use flowpin_lb_model::Verdict;
use flowpin_tcp_opt::ServerId;
use flowpin_testing::require_bpf;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use xdp_lb_support::*;

#[derive(Debug, Clone)]
struct Spec {
    v6: bool,
    vlan: bool,
    tcp: bool,
    syn: bool,
    dst: u8,
    src: u8,
    sport: u16,
    dport: u8,
    opts: Vec<u8>,
    payload: Vec<u8>,
    mutation: Mutation,
}

#[derive(Debug, Clone)]
enum Mutation {
    None,
    Flip(Vec<(usize, u8)>),
    Truncate(usize),
    Random(Vec<u8>),
}

const PORTS: [u16; 4] = [80, 443, 53, 8080];

fn build(s: &Spec) -> Vec<u8> {
    if let Mutation::Random(b) = &s.mutation {
        let mut p = b.clone();
        p.resize(p.len().max(14), 0);
        return p;
    }
    let dport = PORTS[usize::from(s.dport) % PORTS.len()];
    let base = etherparse::PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let mut out = Vec::new();
    let mut opts = s.opts.clone();
    opts.truncate(40);
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    macro_rules! finish {
        ($b:expr) => {{
            let b = $b;
            if s.tcp {
                let t = b.tcp(s.sport, dport, 7, 1000);
                let t = if s.syn { t.syn() } else { t.ack(1) };
                let t = if opts.is_empty() {
                    t
                } else {
                    t.options_raw(&opts).unwrap()
                };
                t.write(&mut out, &s.payload).unwrap();
            } else {
                b.udp(s.sport, dport).write(&mut out, &s.payload).unwrap();
            }
        }};
    }
    let vlan = etherparse::VlanId::try_new(5).unwrap();
    if s.sport % 7 == 1 {
        // ICMP echo request (answered for VIP addresses).
        if s.v6 {
            base.ipv6(src6(s.src).octets(), dst6(s.dst).octets(), 9)
                .icmpv6_echo_request(s.sport, 1)
                .write(&mut out, &s.payload)
                .unwrap();
        } else {
            base.ipv4(src4(s.src).octets(), dst4(s.dst).octets(), 9)
                .icmpv4_echo_request(s.sport, 1)
                .write(&mut out, &s.payload)
                .unwrap();
        }
    } else {
        match (s.v6, s.vlan) {
            (false, false) => finish!(base.ipv4(src4(s.src).octets(), dst4(s.dst).octets(), 9)),
            (false, true) => {
                finish!(base
                    .single_vlan(vlan)
                    .ipv4(src4(s.src).octets(), dst4(s.dst).octets(), 9))
            }
            (true, false) => finish!(base.ipv6(src6(s.src).octets(), dst6(s.dst).octets(), 9)),
            (true, true) => {
                finish!(base
                    .single_vlan(vlan)
                    .ipv6(src6(s.src).octets(), dst6(s.dst).octets(), 9))
            }
        }
    }
    match &s.mutation {
        Mutation::Flip(f) => {
            for (pos, x) in f {
                let i = pos % out.len();
                out[i] ^= x;
            }
        }
        Mutation::Truncate(n) => out.truncate((n % out.len()).max(14)),
        _ => {}
    }
    out
}

fn src4(i: u8) -> Ipv4Addr {
    client4(u32::from(i))
}
fn src6(i: u8) -> Ipv6Addr {
    client6(u32::from(i))
}
fn dst4(i: u8) -> Ipv4Addr {
    if i.is_multiple_of(3) {
        Ipv4Addr::new(192, 0, 2, 99)
    } else {
        vip4()
    }
}
fn dst6(i: u8) -> Ipv6Addr {
    if i.is_multiple_of(3) {
        "2001:db8::99".parse().unwrap()
    } else {
        vip6()
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::None),
        3 => prop::collection::vec((any::<usize>(), 1u8..=255), 1..4).prop_map(Mutation::Flip),
        2 => any::<usize>().prop_map(Mutation::Truncate),
        1 => prop::collection::vec(any::<u8>(), 14..120).prop_map(Mutation::Random),
    ]
}

fn options() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(Vec::new()),
        2 => (100u32..106).prop_map(sid_opt),
        1 => prop::collection::vec(prop_oneof![Just(1u8), Just(0u8), Just(253u8), Just(8u8), any::<u8>()], 0..40),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (
            any::<bool>(),
            prop::bool::weighted(0.2),
            any::<bool>(),
            any::<bool>(),
            any::<u8>(),
            0u8..16,
            any::<u16>(),
            any::<u8>(),
        ),
        options(),
        prop::collection::vec(any::<u8>(), 0..64),
        mutation(),
    )
        .prop_map(
            |((v6, vlan, tcp, syn, dst, src, sport, dport), opts, payload, mutation)| {
                let mut s = Spec {
                    v6,
                    vlan,
                    tcp,
                    syn,
                    dst,
                    src,
                    sport,
                    dport,
                    opts,
                    payload,
                    mutation,
                };
                // One case in four: a well-formed server_id packet to a server_id VIP
                // (mutations may still break it).
                if sport % 4 == 0 {
                    s.tcp = true;
                    s.syn = false;
                    s.dst = 1;
                    s.dport = if s.v6 { 1 } else { 0 };
                    s.opts = sid_opt(if s.v6 { 104 } else { 101 } + u32::from(src % 3));
                }
                s
            },
        )
}

#[test]
fn privileged_proptest_random_and_mutated_packets_match_model() {
    if !require_bpf("privileged_proptest_random_and_mutated_packets_match_model") {
        return;
    }
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
                .server_id(ServerId::new(103 + u32::from(i)).expect("non-zero server_id"))
        })
        .collect();
    let vips = [
        (
            Vip::new(IpAddr::V4(vip4()), 80, Proto::Tcp),
            VipFlags::SERVER_ID,
            &b4,
        ),
        (
            Vip::new(IpAddr::V4(vip4()), 53, Proto::Udp),
            VipFlags::SKIP_LRU_UDP,
            &b4,
        ),
        (
            Vip::new(IpAddr::V4(vip4()), 443, Proto::Udp),
            VipFlags::QUIC,
            &b6,
        ),
        (
            Vip::new(IpAddr::V6(vip6()), 443, Proto::Tcp),
            VipFlags::SERVER_ID,
            &b6,
        ),
        (
            Vip::new(IpAddr::V6(vip6()), 0, Proto::Udp),
            VipFlags::PORT_AGNOSTIC | VipFlags::QUIC,
            &b6,
        ),
    ];
    for (v, f, b) in vips {
        fx.add_vip(v, f);
        fx.set_backends(&v, b);
    }
    // A small MTU so large payloads also exercise too-big.
    fx.lb.set_mtu(600).unwrap();
    fx.sync();
    let fx = RefCell::new(fx);
    let seen = RefCell::new(std::collections::HashMap::<String, u32>::new());
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&(spec(), any::<bool>()), |(s, big)| {
        let mut pkt = build(&s);
        if big && matches!(s.mutation, Mutation::None) {
            // Grow the payload past the MTU, fixing the IP length fields.
            let l2 = if s.vlan { 18 } else { 14 };
            pkt.extend(std::iter::repeat_n(0x5a, 700));
            if s.v6 {
                let pl = (pkt.len() - l2 - 40) as u16;
                pkt[l2 + 4..l2 + 6].copy_from_slice(&pl.to_be_bytes());
            } else {
                let tot = (pkt.len() - l2) as u16;
                pkt[l2 + 2..l2 + 4].copy_from_slice(&tot.to_be_bytes());
            }
        }
        let mut fx = fx.borrow_mut();
        let want = fx.model.decide(&pkt);
        let got = fx
            .lb
            .test_run(&pkt)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let v = match got.verdict {
            XdpVerdict::Tx => Verdict::Tx,
            XdpVerdict::Pass => Verdict::Pass,
            XdpVerdict::Drop => Verdict::Drop,
            o => return Err(TestCaseError::fail(format!("verdict {o:?}"))),
        };
        if v != want.verdict || got.packet != want.packet {
            return Err(TestCaseError::fail(format!(
                "kernel {v:?} vs model {:?} ({:?})\ninput  {}\nmodel  {}\nkernel {}",
                want.verdict,
                want.outcome,
                hex(&pkt),
                hex(&want.packet),
                hex(&got.packet)
            )));
        }
        let key = format!("{:?}", want.outcome);
        let key = key
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or_default()
            .to_string();
        *seen.borrow_mut().entry(key).or_default() += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    fx.borrow().assert_stats();
    // The generator reaches every kind of decision.
    let seen = seen.into_inner();
    for k in [
        "Forwarded",
        "NotVip",
        "Malformed",
        "TooBig",
        "IcmpEchoReply",
    ] {
        assert!(
            seen.get(k).copied().unwrap_or(0) > 0,
            "no {k} case among {seen:?}"
        );
    }
    let fx = fx.into_inner();
    let routed: u64 = fx.model.vip_stats.values().map(|s| s.sid_routed).sum();
    assert!(routed > 0, "no packet routed by server_id");
    eprintln!("decisions: {seen:?}, routed by server_id: {routed}");
}
