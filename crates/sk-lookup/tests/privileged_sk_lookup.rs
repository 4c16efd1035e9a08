//! Live tests of the sk_lookup program through the Dispatcher, in network
//! namespaces, modelled on the kernel selftest `prog_tests/sk_lookup.c`:
//! redirect by port and by address (TCP, UDP, IPv4, IPv6, v4-mapped),
//! any-port bindings, precedence, pass when no socket is registered,
//! restart, concurrency, cleanup. Root only; as root nothing skips.
#![allow(clippy::unwrap_used)]

mod support;

use flowpin_sk_lookup::{Dispatcher, Proto};
use support::*;

#[test]
fn privileged_tcp_redirect_by_port_and_by_address_v4_v6() {
    if !require_root("privileged_tcp_redirect_by_port_and_by_address_v4_v6") {
        return;
    }
    let env = Env::new("sklport");
    let (byport, byaddr, v6) = (label("byport"), label("byaddr"), label("v6"));
    env.d()
        .bind(bind(Proto::Tcp, "10.0.0.0/24", Some(8000)), &byport)
        .unwrap();
    env.d()
        .bind(bind(Proto::Tcp, "10.0.0.7/32", None), &byaddr)
        .unwrap();
    env.d()
        .bind(bind(Proto::Tcp, "fd00::/64", Some(443)), &v6)
        .unwrap();
    env.in_ns(|| {
        let a = listener("127.0.0.1:0");
        let b = listener("127.0.0.1:0");
        let c = listener("[::1]:0");
        env.d().register(&byport, &a).unwrap();
        env.d().register(&byaddr, &b).unwrap();
        env.d().register(&v6, &c).unwrap();
        // By port: every address of the /24 on port 8000.
        assert_eq!(reaches(sa("10.0.0.3:8000"), &a), Some(sa("10.0.0.3:8000")));
        assert_eq!(
            reaches(sa("10.0.0.200:8000"), &a),
            Some(sa("10.0.0.200:8000"))
        );
        assert!(
            refused(sa("10.0.0.3:8001")),
            "port 8001 has no binding and no socket"
        );
        // By address: every port of 10.0.0.7 (the /32 beats the /24 port 8000).
        for port in [1u16, 8000, 65535] {
            let dst = std::net::SocketAddr::new("10.0.0.7".parse().unwrap(), port);
            assert_eq!(reaches(dst, &b), Some(dst));
        }
        assert!(refused(sa("10.0.0.8:1")));
        // IPv6.
        assert_eq!(
            reaches(sa("[fd00::1234]:443"), &c),
            Some(sa("[fd00::1234]:443"))
        );
        assert!(refused(sa("[fd00::1234]:444")));
    });
    let s = env.d().label_stats(&byaddr).unwrap();
    assert_eq!(
        (s.lookups, s.redirected, s.no_socket, s.errors),
        (3, 3, 0, 0)
    );
    let s = env.d().label_stats(&byport).unwrap();
    assert_eq!((s.lookups, s.redirected), (2, 2));
    assert!(env.d().stats().unwrap().unmatched >= 3);
}

#[test]
fn privileged_udp_redirect_by_port_and_by_address_v4_v6() {
    if !require_root("privileged_udp_redirect_by_port_and_by_address_v4_v6") {
        return;
    }
    let env = Env::new("skludp");
    let (dns, host, v6) = (label("dns"), label("host"), label("v6"));
    env.d()
        .bind(bind(Proto::Udp, "10.0.0.0/24", Some(53)), &dns)
        .unwrap();
    env.d()
        .bind(bind(Proto::Udp, "10.0.0.9/32", None), &host)
        .unwrap();
    env.d()
        .bind(bind(Proto::Udp, "fd00::/64", None), &v6)
        .unwrap();
    env.in_ns(|| {
        let a = udp("127.0.0.1:0");
        let b = udp("127.0.0.1:0");
        let c = udp("[::1]:0");
        env.d().register(&dns, &a).unwrap();
        env.d().register(&host, &b).unwrap();
        env.d().register(&v6, &c).unwrap();
        assert!(udp_reaches(sa("10.0.0.1:53"), &a, b"q1"));
        assert!(udp_reaches(sa("10.0.0.99:53"), &a, b"q2"));
        assert!(!udp_reaches(sa("10.0.0.1:54"), &a, b"q3"));
        assert!(
            udp_reaches(sa("10.0.0.9:53"), &b, b"h1"),
            "the /32 beats the /24"
        );
        assert!(udp_reaches(sa("10.0.0.9:4000"), &b, b"h2"));
        assert!(udp_reaches(sa("[fd00::5]:7"), &c, b"six"));
    });
    assert_eq!(env.d().label_stats(&dns).unwrap().redirected, 2);
    assert_eq!(env.d().label_stats(&host).unwrap().redirected, 2);
    assert_eq!(env.d().label_stats(&v6).unwrap().redirected, 1);
}

#[test]
fn privileged_v4_mapped_ipv4_traffic_reaches_a_dual_stack_socket() {
    if !require_root("privileged_v4_mapped_ipv4_traffic_reaches_a_dual_stack_socket") {
        return;
    }
    let env = Env::new("sklmap");
    let l = label("dual");
    // Given as a v4-mapped IPv6 prefix: the same as 10.0.0.0/24.
    env.d()
        .bind(bind(Proto::Tcp, "::ffff:10.0.0.0/120", None), &l)
        .unwrap();
    env.d()
        .bind(bind(Proto::Tcp, "fd00::/64", None), &l)
        .unwrap();
    env.in_ns(|| {
        let s = dual_stack_listener();
        env.d().register(&l, &s).unwrap();
        assert_eq!(
            reaches(sa("10.0.0.4:99"), &s),
            Some(sa("[::ffff:10.0.0.4]:99"))
        );
        assert_eq!(reaches(sa("[fd00::4]:99"), &s), Some(sa("[fd00::4]:99")));
    });
    assert_eq!(env.d().label_stats(&l).unwrap().redirected, 2);
}

#[test]
fn privileged_precedence_longest_prefix_then_specific_port() {
    if !require_root("privileged_precedence_longest_prefix_then_specific_port") {
        return;
    }
    let env = Env::new("sklprec");
    let names = ["wide80", "narrowany", "narrow80", "host"];
    let bindings = [
        bind(Proto::Tcp, "10.0.0.0/16", Some(80)),
        bind(Proto::Tcp, "10.0.0.0/24", None),
        bind(Proto::Tcp, "10.0.0.0/24", Some(80)),
        bind(Proto::Tcp, "10.0.0.77/32", None),
    ];
    let all: Vec<_> = bindings
        .iter()
        .zip(names)
        .map(|(b, n)| (*b, label(n)))
        .collect();
    env.d().bind_many(&all).unwrap();
    env.in_ns(|| {
        let ls: Vec<_> = names.iter().map(|_| listener("127.0.0.1:0")).collect();
        for (n, l) in names.iter().zip(&ls) {
            env.d().register(&label(n), l).unwrap();
        }
        assert!(
            reaches(sa("10.0.0.5:80"), &ls[2]).is_some(),
            "same /24: port 80 beats any"
        );
        assert!(reaches(sa("10.0.0.5:81"), &ls[1]).is_some(), "/24 any");
        assert!(
            reaches(sa("10.0.0.77:80"), &ls[3]).is_some(),
            "/32 any beats /24 port 80"
        );
        // 10.0.1.0/24 is outside the /24 but inside the /16 (and not routed
        // locally in the namespace): add a route so the lookup runs.
    });
    env.ns
        .ip(&["route", "add", "local", "10.0.1.0/24", "dev", "lo"])
        .unwrap();
    env.in_ns(|| {
        let l = listener("127.0.0.1:0");
        env.d().unregister(&label("wide80"), Proto::Tcp).unwrap();
        env.d().register(&label("wide80"), &l).unwrap();
        assert!(reaches(sa("10.0.1.5:80"), &l).is_some(), "/16 port 80");
        assert!(refused(sa("10.0.1.5:81")));
    });
}

#[test]
fn privileged_pass_when_no_socket_is_registered() {
    if !require_root("privileged_pass_when_no_socket_is_registered") {
        return;
    }
    let env = Env::new("sklpass");
    let l = label("nobody");
    env.d()
        .bind(bind(Proto::Tcp, "10.0.0.0/24", None), &l)
        .unwrap();
    env.d()
        .bind(bind(Proto::Udp, "10.0.0.0/24", None), &l)
        .unwrap();
    env.in_ns(|| {
        // A socket bound the ordinary way still gets its traffic.
        let plain = listener("10.0.0.5:9000");
        assert_eq!(
            reaches(sa("10.0.0.5:9000"), &plain),
            Some(sa("10.0.0.5:9000"))
        );
        assert!(refused(sa("10.0.0.5:9001")));
        let u = udp("10.0.0.5:9000");
        assert!(udp_reaches(sa("10.0.0.5:9000"), &u, b"plain"));
        // Registered, then closed: the kernel drops it from the map; pass again.
        let gone = listener("127.0.0.1:0");
        env.d().register(&l, &gone).unwrap();
        assert!(reaches(sa("10.0.0.5:9001"), &gone).is_some());
        drop(gone);
        // The socket closes once every copy of its fd is gone: a child
        // another test thread forks holds one until it execs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while env.d().labels().unwrap()[0].tcp.is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(
            reaches(sa("10.0.0.5:9000"), &plain),
            Some(sa("10.0.0.5:9000"))
        );
    });
    let s = env.d().label_stats(&l).unwrap();
    // TCP 9000, TCP 9001, UDP 9000, TCP 9000 after the close: no socket;
    // TCP 9001 while registered: redirected.
    assert_eq!((s.lookups, s.redirected, s.no_socket), (5, 1, 4), "{s:?}");
    assert_eq!(s.errors, 0);
    let info = env.d().labels().unwrap();
    assert_eq!(info[0].tcp, None, "a closed socket is no longer registered");
}

#[test]
fn privileged_restart_and_second_process_handles_keep_the_state() {
    if !require_root("privileged_restart_and_second_process_handles_keep_the_state") {
        return;
    }
    let mut env = Env::new("sklrestart");
    let l = label("svc");
    env.d()
        .bind(bind(Proto::Tcp, "10.0.0.0/24", None), &l)
        .unwrap();
    let before = env.d().table().unwrap();
    // The controller goes away; the pinned link and maps stay.
    env.d = None;
    let other = Dispatcher::open(&env.dir).unwrap();
    assert_eq!(other.table().unwrap(), before);
    assert!(other.is_attached());
    env.in_ns(|| {
        let s = listener("127.0.0.1:0");
        other.register(&l, &s).unwrap();
        assert!(reaches(sa("10.0.0.1:1"), &s).is_some());
    });
    // Concurrent read-modify-writes from independent handles: none is lost.
    std::thread::scope(|sc| {
        for t in 0..4u8 {
            let dir = env.dir.clone();
            sc.spawn(move || {
                let d = Dispatcher::open(&dir).unwrap();
                for i in 0..25u8 {
                    let b = bind(Proto::Udp, &format!("10.{t}.{i}.0/24"), None);
                    d.bind(b, &label(&format!("t{t}"))).unwrap();
                }
            });
        }
    });
    let t = other.table().unwrap();
    assert_eq!(t.bindings.len(), 1 + 100);
    assert_eq!(t.labels.len(), 5);
    env.d = Some(other);
}

#[test]
fn privileged_remove_cleans_every_pin_and_detaches() {
    if !require_root("privileged_remove_cleans_every_pin_and_detaches") {
        return;
    }
    let env = Env::new("sklclean");
    let l = label("svc");
    env.d()
        .bind(bind(Proto::Tcp, "10.0.0.0/24", None), &l)
        .unwrap();
    let prog_id = env.d().kernel().program_id();
    env.in_ns(|| {
        let s = listener("127.0.0.1:0");
        env.d().register(&l, &s).unwrap();
        assert!(reaches(sa("10.0.0.1:1"), &s).is_some());
        // detach: traffic takes the regular path.
        assert!(env.d().detach().unwrap());
        assert!(refused(sa("10.0.0.1:1")));
        assert!(!env.d().detach().unwrap());
    });
    // Attach again with an unpinned link: detached when it drops.
    let link = env.d().attach_link(env.ns.path().as_path()).unwrap();
    env.in_ns(|| {
        let s = listener("127.0.0.1:0");
        env.d().register(&l, &s).unwrap();
        assert!(reaches(sa("10.0.0.1:2"), &s).is_some());
        drop(link);
        assert!(refused(sa("10.0.0.1:2")));
    });
    let dir = env.dir.clone();
    drop(env);
    assert!(!dir.exists(), "pin directory left behind");
    // No handle and no pin left: the program is gone from the kernel. The
    // last reference (the link's) is dropped from a kernel work queue after
    // the pin's inode is freed (RCU): allow it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while prog_fd_by_id(prog_id) >= 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        prog_fd_by_id(prog_id) < 0,
        "program {prog_id} still loaded after 5 s"
    );
}

/// `bpf_prog_get_fd_by_id`: a new fd (closed again), or a negative errno.
fn prog_fd_by_id(id: u32) -> i32 {
    // SAFETY: a bpf(2) query by id, no pointers.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd >= 0 {
        // SAFETY: we own the fd just opened.
        unsafe { nix::libc::close(fd) };
    }
    fd
}

/// Host prefixes live in the `hosts` hash, shorter ones in the trie: the
/// program's order across the two keeps "longest prefix, then specific port".
#[test]
fn privileged_precedence_across_the_host_hash_and_the_trie() {
    if !require_root("privileged_precedence_across_the_host_hash_and_the_trie") {
        return;
    }
    let env = Env::new("sklmix");
    let names = [
        "net80",
        "netany",
        "hostany",
        "host443",
        "udphost53",
        "v6net80",
        "v6host",
        "v6host80",
    ];
    let bindings = [
        bind(Proto::Tcp, "10.0.0.0/24", Some(80)),
        bind(Proto::Tcp, "10.0.0.0/24", None),
        bind(Proto::Tcp, "10.0.0.77/32", None),
        bind(Proto::Tcp, "10.0.0.77/32", Some(443)),
        bind(Proto::Udp, "10.0.0.77/32", Some(53)),
        bind(Proto::Tcp, "fd00::/64", Some(80)),
        bind(Proto::Tcp, "fd00::7/128", None),
        bind(Proto::Tcp, "fd00::8/128", Some(80)),
    ];
    let all: Vec<_> = bindings
        .iter()
        .zip(names)
        .map(|(b, n)| (*b, label(n)))
        .collect();
    env.d().bind_many(&all).unwrap();
    assert_eq!(
        env.d().bindings().unwrap().len(),
        all.len(),
        "read back from both maps"
    );
    env.in_ns(|| {
        let ls: Vec<_> = names[..5]
            .iter()
            .map(|_| listener("127.0.0.1:0"))
            .chain(names[5..].iter().map(|_| listener("[::1]:0")))
            .collect();
        for (n, l) in names.iter().zip(&ls) {
            if *n != "udphost53" {
                env.d().register(&label(n), l).unwrap();
            }
        }
        let at = |dst: &str, i: usize, why: &str| {
            assert_eq!(reaches(sa(dst), &ls[i]), Some(sa(dst)), "{dst}: {why}");
        };
        at("10.0.0.77:443", 3, "/32 port beats /32 any");
        at("10.0.0.77:80", 2, "/32 any (hash) beats /24 port 80 (trie)");
        at("10.0.0.77:53", 2, "a UDP host binding does not catch TCP");
        at("10.0.0.5:443", 1, "the /32 port binding is for .77 only");
        at("10.0.0.5:80", 0, "/24 port beats /24 any");
        at(
            "[fd00::7]:80",
            6,
            "/128 any (hash) beats /64 port 80 (trie)",
        );
        at("[fd00::8]:80", 7, "/128 port 80");
        at("[fd00::5]:80", 5, "/64 port 80");
        assert!(
            refused(sa("[fd00::8]:81")),
            "/128 port 80 only, nothing for 81"
        );
    });
    // Unbinding a host binding falls back to the trie.
    env.d()
        .unbind(bind(Proto::Tcp, "10.0.0.77/32", None))
        .unwrap();
    env.in_ns(|| {
        let l = listener("127.0.0.1:0");
        env.d().unregister(&label("net80"), Proto::Tcp).unwrap();
        env.d().register(&label("net80"), &l).unwrap();
        assert_eq!(
            reaches(sa("10.0.0.77:80"), &l),
            Some(sa("10.0.0.77:80")),
            "/24 port 80 once the /32 any is gone"
        );
    });
}
