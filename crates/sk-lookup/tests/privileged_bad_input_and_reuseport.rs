//! Bad input changes nothing (live, through the kernel), and a label that
//! names a socket of a SO_REUSEPORT group lets the group's sk_reuseport
//! program pick. Root only; as root nothing skips.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use flowpin_sk_lookup::{DispatcherConfig, Error, Proto};
use flowpin_sk_reuseport::{bind_reuseport, GroupConfig, ReuseportGroup};
use support::*;

#[test]
fn privileged_every_bad_input_is_refused_and_changes_nothing() {
    if !require_root("privileged_every_bad_input_is_refused_and_changes_nothing") {
        return;
    }
    let env = Env::with_config("sklbad", DispatcherConfig::default().max_bindings(4));
    let d = env.d();
    let (tcp4, v6) = (label("tcp4"), label("v6"));
    d.bind(bind(Proto::Tcp, "10.0.0.0/24", None), &tcp4)
        .unwrap();
    d.bind(bind(Proto::Tcp, "fd00::/64", None), &v6).unwrap();
    let before = d.table().unwrap();
    let summary = d.kernel().read_summary().unwrap();
    assert_ne!(summary, 0, "the summary shows the two bindings");
    let same = |what: &str| {
        assert_eq!(d.table().unwrap(), before, "{what} changed the state");
        assert_eq!(
            d.kernel().read_summary().unwrap(),
            summary,
            "{what} changed the summary"
        );
    };

    // Overlapping identical binding, alone or inside a batch.
    let e = d
        .bind(bind(Proto::Tcp, "10.0.0.0/24", None), &label("other"))
        .unwrap_err();
    assert!(matches!(e, Error::DuplicateBinding { .. }), "{e}");
    same("a duplicate binding");
    let batch = [
        (bind(Proto::Udp, "10.0.0.0/24", None), label("fresh")),
        (bind(Proto::Tcp, "10.0.0.0/24", None), label("fresh")),
    ];
    assert!(matches!(
        d.bind_many(&batch),
        Err(Error::DuplicateBinding { .. })
    ));
    same("a batch with a duplicate");
    // Host bits set.
    assert!(matches!(
        "10.0.0.1/24".parse::<flowpin_sk_lookup::Prefix>(),
        Err(Error::HostBits { .. })
    ));
    // More bindings than the trie holds (4): 2 present + 3.
    let three: Vec<_> = (1..=3)
        .map(|i| {
            (
                bind(Proto::Udp, &format!("10.0.{i}.0/24"), None),
                label("many"),
            )
        })
        .collect();
    let e = d.bind_many(&three).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooManyBindings {
                have: 2,
                adding: 3,
                max: 4
            }
        ),
        "{e}"
    );
    same("too many bindings");
    // The capacity counts host bindings (hash) and prefixes (trie) together.
    let mixed = [
        (bind(Proto::Udp, "10.0.9.9/32", None), label("many")),
        (bind(Proto::Udp, "10.0.9.0/24", Some(53)), label("many")),
        (bind(Proto::Tcp, "fd00::9/128", Some(80)), label("many")),
    ];
    let e = d.bind_many(&mixed).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooManyBindings {
                have: 2,
                adding: 3,
                max: 4
            }
        ),
        "{e}"
    );
    same("too many bindings, hosts and prefixes mixed");
    // Past the model, the kernel's own limit: a batch the maps cannot hold
    // leaves nothing behind (written straight to the kernel layer).
    let keys: Vec<_> = [
        "10.0.8.1/32",
        "10.0.8.0/24",
        "10.0.7.0/24",
        "10.0.6.0/24",
        "10.0.5.0/24",
    ]
    .iter()
    .map(|p| {
        (
            bind(Proto::Tcp, p, None).key(),
            flowpin_bpf_progs::sk_lookup::types::fp_skl_binding {
                label: 0,
                addr_bits: 24,
            },
        )
    })
    .collect();
    // 2 in the trie + 4 more: the kernel refuses the third (ENOSPC) after
    // the host binding went into the hash.
    let e = d.kernel().insert_bindings(&keys).unwrap_err();
    assert!(e.to_string().contains("bindings trie is full"), "{e}");
    same("a kernel refusal part-way through a batch");
    // Unknown label, unknown binding.
    env.in_ns(|| {
        let l = listener("127.0.0.1:0");
        assert!(matches!(
            d.register(&label("ghost"), &l),
            Err(Error::UnknownLabel(_))
        ));
        same("an unknown label");
        assert!(matches!(
            d.unbind(bind(Proto::Udp, "10.9.0.0/16", None)),
            Err(Error::UnknownBinding(_))
        ));
        // Wrong protocol: a UDP socket for a TCP-only label; a raw-ish socket (unix).
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(matches!(
            d.register(&tcp4, &u),
            Err(Error::WrongProtocol { .. })
        ));
        let (ux, _uy) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(matches!(
            d.register(&tcp4, &ux),
            Err(Error::WrongProtocol { .. }) | Err(Error::WrongFamily { .. })
        ));
        // Wrong family: IPv4 socket for IPv6 bindings; IPv6-only for IPv4.
        assert!(matches!(
            d.register(&v6, &l),
            Err(Error::WrongFamily { .. })
        ));
        let l6 = listener("[::1]:0");
        assert!(matches!(
            d.register(&tcp4, &l6),
            Err(Error::WrongFamily { .. })
        ));
        // Unbound socket, connected socket, not listening.
        let unbound =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        assert!(matches!(d.register(&tcp4, &unbound), Err(Error::Unbound)));
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        assert!(matches!(d.register(&tcp4, &client), Err(Error::Connected)));
        let bound =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        bound
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        assert!(matches!(
            d.register(&tcp4, &bound),
            Err(Error::NotListening)
        ));
        same("a refused socket");
        // And the data path still passes: nothing registered for tcp4.
        assert!(refused(sa("10.0.0.1:80")));
    });
    // A binding the registered socket cannot serve (IPv4 listener, IPv6 binding).
    env.in_ns(|| {
        let l = listener("127.0.0.1:0");
        d.register(&tcp4, &l).unwrap();
        let with_sock = d.table().unwrap();
        let e = d
            .bind(bind(Proto::Tcp, "fd00:1::/64", None), &tcp4)
            .unwrap_err();
        assert!(matches!(e, Error::WrongFamily { .. }), "{e}");
        assert_eq!(d.table().unwrap(), with_sock);
    });
}

/// Accepts one connection on any of `ls` within 2 s; its index.
fn accepted_by(ls: &[&TcpListener]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        for (i, l) in ls.iter().enumerate() {
            if l.accept().is_ok() {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no listener accepted");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn privileged_a_reuseport_group_behind_a_label_keeps_choosing() {
    if !require_root("privileged_a_reuseport_group_behind_a_label_keeps_choosing") {
        return;
    }
    let env = Env::new("sklrp");
    let l = label("group");
    env.d()
        .bind(bind(Proto::Tcp, "10.0.0.0/24", None), &l)
        .unwrap();
    let pin = std::path::PathBuf::from(format!("{}-rp", env.dir.display()));
    env.in_ns(|| {
        let addr: SocketAddr = "127.0.0.1:7443".parse().unwrap();
        let mut cfg = GroupConfig::new(&pin);
        cfg.unpin_on_drop = true;
        let group = ReuseportGroup::create(addr, Proto::Tcp, cfg).unwrap();
        let g1: Vec<TcpListener> = (0..2)
            .map(|_| bind_reuseport(addr, Proto::Tcp).unwrap().into())
            .collect();
        for s in &g1 {
            s.set_nonblocking(true).unwrap();
        }
        let gen1 = group.add_generation(&g1).unwrap();
        group.activate(gen1).unwrap();
        // A socket sits in one socket map at a time (both use
        // sk_user_data): a socket of the group's array is refused...
        let e = env.d().register(&l, &g1[0]).unwrap_err();
        assert!(e.to_string().contains("EBUSY"), "{e}");
        // ...so the label names an anchor: a member of the group that is in
        // no generation, which the group's program never picks itself.
        let anchor: TcpListener = bind_reuseport(addr, Proto::Tcp).unwrap().into();
        anchor.set_nonblocking(true).unwrap();
        env.d().register(&l, &anchor).unwrap();
        let mut hits = [0usize; 3];
        for port in 1..=40u16 {
            let _c =
                TcpStream::connect(SocketAddr::new("10.0.0.1".parse().unwrap(), port)).unwrap();
            hits[accepted_by(&[&g1[0], &g1[1], &anchor])] += 1;
        }
        assert!(
            hits[0] > 0 && hits[1] > 0,
            "the group's program picks both sockets: {hits:?}"
        );
        // A new generation goes live: traffic steered to g1[0]'s label now
        // reaches the new generation, chosen by the group's program.
        let g2: TcpListener = bind_reuseport(addr, Proto::Tcp).unwrap().into();
        g2.set_nonblocking(true).unwrap();
        let gen2 = group.add_generation(std::slice::from_ref(&g2)).unwrap();
        group.activate(gen2).unwrap();
        for port in 100..120u16 {
            let _c =
                TcpStream::connect(SocketAddr::new("10.0.0.2".parse().unwrap(), port)).unwrap();
            assert_eq!(
                accepted_by(&[&g2, &g1[0], &g1[1]]),
                0,
                "port {port} missed the live generation"
            );
        }
        let s = group.stats().unwrap();
        assert_eq!(s.get(gen2).unwrap().new_flows, 20);
    });
    assert_eq!(env.d().label_stats(&l).unwrap().redirected, 60);
    assert!(!pin.exists());
}
