//! The control rules, in memory, without root.

use std::net::IpAddr;

use proptest::prelude::*;

use super::*;

fn l(s: &str) -> Label {
    Label::new(s).unwrap()
}

fn b(p: Proto, prefix: &str, port: Option<u16>) -> Binding {
    Binding::new(
        p,
        prefix.parse().unwrap(),
        port.map_or(Port::Any, |p| Port::new(p).unwrap()),
    )
}

fn table(entries: &[(Binding, &str)]) -> Table {
    let mut t = Table::new(100);
    let plan = t
        .plan_bind(&entries.iter().map(|(b, s)| (*b, l(s))).collect::<Vec<_>>())
        .unwrap();
    for (label, id) in plan.new_labels {
        t.labels.insert(label, id);
    }
    for (b, s) in entries {
        t.bindings.insert(*b, l(s));
    }
    t
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn prefixes_with_host_bits_or_too_long_are_refused() {
    assert!(matches!(
        "10.0.0.1/24".parse::<Prefix>(),
        Err(Error::HostBits { .. })
    ));
    assert!(matches!(
        "2001:db8::1/64".parse::<Prefix>(),
        Err(Error::HostBits { .. })
    ));
    assert!(matches!(
        "10.0.0.0/33".parse::<Prefix>(),
        Err(Error::PrefixLength { .. })
    ));
    assert!("0.0.0.0/0".parse::<Prefix>().unwrap().is_empty());
    assert!(matches!(
        "1.0.0.0/0".parse::<Prefix>(),
        Err(Error::HostBits { .. })
    ));
    assert_eq!("10.0.0.7".parse::<Prefix>().unwrap().len(), 32);
    assert!(matches!("nonsense".parse::<Prefix>(), Err(Error::Parse(_))));
}

#[test]
fn v4_mapped_prefixes_are_ipv4() {
    let p: Prefix = "::ffff:10.0.0.0/120".parse().unwrap();
    assert_eq!(p, "10.0.0.0/24".parse().unwrap());
    assert_eq!(p.family(), Family::V4);
    assert!(p.contains(ip("::ffff:10.0.0.9")));
}

#[test]
fn keys_follow_the_header_scheme_and_round_trip() {
    let bind = b(Proto::Udp, "10.1.0.0/16", Some(53));
    let k = bind.key();
    assert_eq!(k.prefixlen, KEY_HEADER_BITS + 16);
    assert_eq!(k.protocol, 17);
    assert_eq!(k.family, FAMILY_V4);
    assert_eq!(k.port, 53u16.to_be());
    assert_eq!(&k.addr[..4], &[10, 1, 0, 0]);
    assert_eq!(Binding::from_key(&k), Some(bind));
    let any = b(Proto::Tcp, "2001:db8::/32", None);
    assert_eq!(any.key().port, PORT_ANY);
    assert_eq!(Binding::from_key(&any.key()), Some(any));
}

#[test]
fn longest_prefix_wins_then_a_specific_port() {
    let t = table(&[
        (b(Proto::Tcp, "10.0.0.0/8", Some(80)), "wide80"),
        (b(Proto::Tcp, "10.0.0.0/24", None), "narrow-any"),
        (b(Proto::Tcp, "10.0.0.0/24", Some(443)), "narrow443"),
        (b(Proto::Tcp, "10.0.0.7/32", None), "host"),
    ]);
    // /24 any port beats /8 port 80.
    assert_eq!(
        t.lookup(Proto::Tcp, ip("10.0.0.1"), 80),
        Some(&l("narrow-any"))
    );
    // Same /24: port 443 beats any port.
    assert_eq!(
        t.lookup(Proto::Tcp, ip("10.0.0.1"), 443),
        Some(&l("narrow443"))
    );
    // /32 any port beats /24 port 443.
    assert_eq!(t.lookup(Proto::Tcp, ip("10.0.0.7"), 443), Some(&l("host")));
    // Outside the /24: only the /8 port 80.
    assert_eq!(t.lookup(Proto::Tcp, ip("10.9.0.1"), 80), Some(&l("wide80")));
    assert_eq!(t.lookup(Proto::Tcp, ip("10.9.0.1"), 81), None);
    // Another protocol, another family: nothing.
    assert_eq!(t.lookup(Proto::Udp, ip("10.0.0.1"), 80), None);
    assert_eq!(t.lookup(Proto::Tcp, ip("::1"), 80), None);
}

#[test]
fn duplicate_bindings_are_refused_whole() {
    let t = table(&[(b(Proto::Tcp, "10.0.0.0/24", None), "a")]);
    let err = t
        .plan_bind(&[(b(Proto::Tcp, "10.0.0.0/24", None), l("b"))])
        .unwrap_err();
    assert!(
        matches!(err, Error::DuplicateBinding { ref label, .. } if label == &l("a")),
        "{err}"
    );
    let twice = [
        (b(Proto::Udp, "10.0.0.0/24", Some(1)), l("x")),
        (b(Proto::Udp, "10.0.0.0/24", Some(1)), l("y")),
    ];
    assert!(matches!(
        t.plan_bind(&twice),
        Err(Error::DuplicateBinding { .. })
    ));
    // Same prefix, other port or protocol: fine.
    assert!(t
        .plan_bind(&[(b(Proto::Udp, "10.0.0.0/24", None), l("a"))])
        .is_ok());
}

#[test]
fn capacity_is_checked_before_anything_is_planned() {
    let mut t = Table::new(2);
    t.bindings
        .insert(b(Proto::Tcp, "10.0.0.0/24", None), l("a"));
    t.labels.insert(l("a"), 0);
    let new = [
        (b(Proto::Tcp, "10.0.1.0/24", None), l("a")),
        (b(Proto::Tcp, "10.0.2.0/24", None), l("a")),
    ];
    assert!(matches!(
        t.plan_bind(&new),
        Err(Error::TooManyBindings {
            have: 1,
            adding: 2,
            max: 2
        })
    ));
    assert!(t.plan_bind(&new[..1]).is_ok());
}

#[test]
fn new_labels_get_the_smallest_free_id() {
    let mut t = Table::new(10);
    t.labels.insert(l("a"), 0);
    t.labels.insert(l("c"), 2);
    let plan = t
        .plan_bind(&[
            (b(Proto::Tcp, "10.0.0.0/24", None), l("b")),
            (b(Proto::Udp, "10.0.0.0/24", None), l("b")),
            (b(Proto::Tcp, "10.0.1.0/24", None), l("d")),
        ])
        .unwrap();
    assert_eq!(plan.new_labels, vec![(l("b"), 1), (l("d"), 3)]);
    assert_eq!(plan.insert[0].1.label, 1);
    assert_eq!(plan.insert[1].1.label, 1);
    assert_eq!(plan.insert[2].1.addr_bits, 24);
}

fn tcp_listener(family: Family) -> SocketFacts {
    SocketFacts {
        protocol: Some(Proto::Tcp),
        family: Some(family),
        v6only: false,
        bound: true,
        connected: false,
        listening: true,
    }
}

#[test]
fn register_checks_label_protocol_family_and_state() {
    let t = table(&[
        (b(Proto::Tcp, "10.0.0.0/24", None), "v4"),
        (b(Proto::Tcp, "2001:db8::/64", None), "v6"),
    ]);
    let v4 = tcp_listener(Family::V4);
    assert_eq!(
        t.check_register(&l("v4"), &v4).unwrap(),
        destination_index(0, Proto::Tcp)
    );
    // A dual-stack IPv6 listener serves IPv4 bindings; an IPv6-only one does not.
    let dual = tcp_listener(Family::V6);
    assert!(t.check_register(&l("v4"), &dual).is_ok());
    let v6only = SocketFacts {
        v6only: true,
        ..dual
    };
    assert!(matches!(
        t.check_register(&l("v4"), &v6only),
        Err(Error::WrongFamily { .. })
    ));
    // An IPv4 socket cannot serve IPv6 bindings.
    assert!(matches!(
        t.check_register(&l("v6"), &v4),
        Err(Error::WrongFamily { .. })
    ));
    assert!(matches!(
        t.check_register(&l("nope"), &v4),
        Err(Error::UnknownLabel(_))
    ));
    let udp = SocketFacts {
        protocol: Some(Proto::Udp),
        listening: false,
        ..v4
    };
    assert!(matches!(
        t.check_register(&l("v4"), &udp),
        Err(Error::WrongProtocol { .. })
    ));
    let raw = SocketFacts {
        protocol: None,
        ..v4
    };
    assert!(matches!(
        t.check_register(&l("v4"), &raw),
        Err(Error::WrongProtocol { .. })
    ));
    let unbound = SocketFacts {
        bound: false,
        listening: false,
        ..v4
    };
    assert!(matches!(
        t.check_register(&l("v4"), &unbound),
        Err(Error::Unbound)
    ));
    let connected = SocketFacts {
        connected: true,
        listening: false,
        ..v4
    };
    assert!(matches!(
        t.check_register(&l("v4"), &connected),
        Err(Error::Connected)
    ));
    let idle = SocketFacts {
        listening: false,
        ..v4
    };
    assert!(matches!(
        t.check_register(&l("v4"), &idle),
        Err(Error::NotListening)
    ));
}

#[test]
fn a_binding_the_registered_socket_cannot_serve_is_refused() {
    let mut t = table(&[(b(Proto::Tcp, "10.0.0.0/24", None), "a")]);
    t.sockets.insert(
        (0, Proto::Tcp),
        Registered {
            family: Family::V4,
            v6only: false,
            cookie: 1,
        },
    );
    let v6 = [(b(Proto::Tcp, "2001:db8::/64", None), l("a"))];
    assert!(matches!(t.plan_bind(&v6), Err(Error::WrongFamily { .. })));
    // UDP has no socket registered yet: fine.
    assert!(t
        .plan_bind(&[(b(Proto::Udp, "2001:db8::/64", None), l("a"))])
        .is_ok());
}

#[test]
fn unbinding_the_last_binding_removes_the_label_and_its_sockets() {
    let t = table(&[
        (b(Proto::Tcp, "10.0.0.0/24", None), "a"),
        (b(Proto::Udp, "10.0.0.0/24", None), "a"),
        (b(Proto::Tcp, "10.0.1.0/24", None), "b"),
    ]);
    let one = t
        .plan_unbind(&[b(Proto::Tcp, "10.0.0.0/24", None)])
        .unwrap();
    assert!(one.delete_labels.is_empty());
    let both = t
        .plan_unbind(&[
            b(Proto::Tcp, "10.0.0.0/24", None),
            b(Proto::Udp, "10.0.0.0/24", None),
        ])
        .unwrap();
    assert_eq!(both.delete_labels, vec![l("a")]);
    assert_eq!(both.clear_destinations, vec![0, 1]);
    assert!(matches!(
        t.plan_unbind(&[b(Proto::Udp, "10.0.9.0/24", None)]),
        Err(Error::UnknownBinding(_))
    ));
}

#[test]
fn label_names_are_bounded() {
    assert!(Label::new("").is_err());
    assert!(Label::new("x".repeat(33)).is_err());
    assert!(Label::new("x".repeat(32)).is_ok());
    assert!(Label::new("a\0b").is_err());
    assert!(Label::new(String::from_utf8(vec![b'a', 0]).unwrap()).is_err());
}

proptest! {
    /// The model's pick is the longest matching prefix, then the specific
    /// port: checked against a brute-force ranking of every binding.
    #[test]
    fn lookup_picks_the_best_rank(
        bindings in proptest::collection::vec((0u8..=32, any::<u32>(), proptest::option::of(1u16..4)), 1..20),
        dst in any::<u32>(),
        port in 1u16..4,
    ) {
        let mut t = Table::new(100);
        for (i, (len, addr, p)) in bindings.iter().enumerate() {
            let mask = if *len == 0 { 0 } else { u32::MAX << (32 - u32::from(*len)) };
            let prefix = Prefix::new(IpAddr::V4((addr & mask).into()), *len).unwrap();
            let port = p.map_or(Port::Any, |p| Port::new(p).unwrap());
            t.bindings.entry(Binding::new(Proto::Tcp, prefix, port)).or_insert(l(&format!("l{i}")));
        }
        let dst_ip = IpAddr::V4(dst.into());
        let best = t.bindings.iter()
            .filter(|(b, _)| b.prefix.contains(dst_ip) && (b.port == Port::Any || b.port == Port::new(port).unwrap()))
            .map(|(b, _)| (b.prefix.len(), b.port != Port::Any))
            .max();
        let got = t.lookup(Proto::Tcp, dst_ip, port)
            .map(|lab| t.bindings.iter().find(|(_, x)| *x == lab).map(|(b, _)| (b.prefix.len(), b.port != Port::Any)).unwrap());
        prop_assert_eq!(got, best);
    }
}

#[test]
fn host_prefixes_parse_in_both_families() {
    for s in [
        "10.0.0.7/32",
        "fd00::7/128",
        "::/0",
        "0.0.0.0/0",
        "::ffff:10.0.0.7/128",
    ] {
        let p: Prefix = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(
            p.len() == 32 || p.len() == 128,
            p.addr().to_string().ends_with('7')
        );
    }
    assert_eq!(
        "fd00::7/128".parse::<Prefix>().unwrap(),
        Prefix::host("fd00::7".parse().unwrap())
    );
}

#[test]
fn the_programs_protocol_numbers_are_the_suites_proto() {
    use flowpin_bpf_progs::sk_lookup::{IPPROTO_TCP, IPPROTO_UDP};
    assert_eq!(Proto::Tcp.number(), IPPROTO_TCP);
    assert_eq!(Proto::Udp.number(), IPPROTO_UDP);
    assert_eq!(Proto::from_number(IPPROTO_TCP), Some(Proto::Tcp));
    assert_eq!(Proto::from_number(IPPROTO_UDP), Some(Proto::Udp));
}
