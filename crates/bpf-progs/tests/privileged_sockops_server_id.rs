//! Privileged: `sockops_server_id` live, in network namespaces, checked on
//! the wire.
//!
//! Every test builds a client namespace and a server namespace joined by a
//! veth pair, a child cgroup v2 per side with its own program instance, and
//! captures every frame on the server's veth with an `AF_PACKET` socket. The
//! assertions are about the captured packets (decoded with
//! `flowpin_tcp_opt::find_server_id`), then about the counters, and every
//! test checks the bytes that went through the connection.
//!
//! Cgroup v2 membership is per process and a socket belongs to the cgroup of
//! the process that created it. So each TCP socket of this binary is created
//! by [`sockets_in`], which moves the whole test process into the wanted
//! cgroup (or keeps it in its own), creates the socket and moves it back,
//! under one mutex: tests run on parallel threads, but no socket is ever
//! created while the process sits in another test's cgroup.
// Test helpers outside #[test] fns too: a failed setup step fails the test.
#![allow(clippy::unwrap_used)]

mod sockops_support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use flowpin_bpf_progs::sockops_server_id::{ServerIdOps, ServerIdOpsConfig};
use flowpin_tcp_opt::{Layout, ServerId};
use flowpin_testing::require_bpf;
use sockops_support::*;

fn id(n: u32) -> ServerId {
    ServerId::new(n).unwrap()
}

/// One connection: client sends `len` bytes, the server echoes them, the
/// client half-closes, the server closes. Returns the client's local port.
fn echo_connection(pair: &Pair, port: u16, len: usize) -> u16 {
    let listener = pair.listen(port);
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut r = s.try_clone().unwrap();
        std::io::copy(&mut r, &mut s).unwrap();
        // EOF from the client: close (FIN).
    });
    let mut c = pair.connect(port);
    let local_port = c.local_addr().unwrap().port();
    let data = pattern(len);
    let mut w = c.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    server.join().unwrap();
    assert_eq!(back.len(), data.len(), "echoed byte count");
    assert!(back == data, "echoed bytes differ from the sent ones");
    drop(c);
    local_port
}

/// The full wire check of one healthy connection with the option.
fn assert_option_where_expected(segs: &[Seg], layout: Layout, sid: ServerId) -> WireCount {
    let syns: Vec<_> = segs
        .iter()
        .filter(|s| s.from_client && s.syn && !s.ack)
        .collect();
    assert!(!syns.is_empty(), "no client SYN captured");
    for s in &syns {
        assert!(
            !has_server_id_kind(&s.options, layout),
            "client SYN carries a server_id option: {s:?}"
        );
    }
    let synacks: Vec<_> = segs
        .iter()
        .filter(|s| !s.from_client && s.syn && s.ack)
        .collect();
    assert!(!synacks.is_empty(), "no SYN-ACK captured");
    for s in &synacks {
        assert_eq!(decode(s, layout), Some(sid), "SYN-ACK option: {s:?}");
        if layout == Layout::KatranCompat {
            assert!(
                option_kinds(&s.options).contains(&0xB6),
                "Katran server kind 0xB6 in the SYN-ACK"
            );
        }
    }
    let mut n = WireCount::default();
    for s in segs.iter().filter(|s| s.from_client && !s.syn) {
        assert_eq!(
            decode(s, layout),
            Some(sid),
            "client packet without the echoed server_id: {s:?}"
        );
        if layout == Layout::KatranCompat {
            assert!(
                !option_kinds(&s.options).contains(&0xB6),
                "Katran client writes kind 0xB7 only"
            );
        }
        n.client_after_syn += 1;
        if !s.payload.is_empty() {
            n.client_data += 1;
        }
        if s.fin {
            n.client_fin += 1;
        }
        if s.rst {
            n.client_rst += 1;
        }
        if s.payload.is_empty() && !s.fin && !s.rst {
            n.client_pure_ack += 1;
        }
    }
    for s in segs.iter().filter(|s| !s.from_client && !s.syn) {
        assert!(
            !has_server_id_kind(&s.options, layout),
            "server packet after the handshake carries the option: {s:?}"
        );
        if !s.payload.is_empty() {
            n.server_data += 1;
        }
    }
    n
}

fn healthy_connection_with(layout: Layout, test: &str) {
    healthy_connection(layout, test, false, |_| {}, |_| {});
}

/// One healthy connection checked on the wire and in the counters. With
/// `both`, each side's instance plays both roles (the server's own client
/// role and the client's own server role must stay out of the way).
fn healthy_connection(
    layout: Layout,
    test: &str,
    both: bool,
    setup: impl FnOnce(&Pair),
    after: impl FnOnce(&Pair),
) {
    if !require_bpf(test) {
        return;
    }
    let pair = Pair::new(test, Fake::None);
    setup(&pair);
    let sid = id(0x0A0B_0C0D);
    let port = 8080;
    let (server_cfg, client_cfg) = if both {
        (
            ServerIdOpsConfig::both(sid),
            ServerIdOpsConfig::both(id(0x7777)),
        )
    } else {
        (ServerIdOpsConfig::server(sid), ServerIdOpsConfig::client())
    };
    let server = ServerIdOps::load(server_cfg.layout(layout).ports(&[port])).unwrap();
    let client = ServerIdOps::load(client_cfg.layout(layout)).unwrap();
    let _ls = server.attach(pair.cg_srv.path()).unwrap();
    let _lc = client.attach(&pair.cg_cli.open().unwrap()).unwrap();
    let mut cap = pair.capture();

    let cport = echo_connection(&pair, port, 300_000);
    let segs = cap.wait_for_close(cport, port);

    let n = assert_option_where_expected(&segs, layout, sid);
    assert!(n.client_data >= 1, "client data packets seen: {n:?}");
    assert!(n.client_pure_ack >= 1, "client pure ACKs seen: {n:?}");
    assert_eq!(n.client_fin, 1, "client FIN seen: {n:?}");
    assert!(n.server_data >= 1, "server data packets seen: {n:?}");

    let s = server.stats().unwrap();
    let c = client.stats().unwrap();
    let synacks = segs.iter().filter(|s| !s.from_client && s.syn).count() as u64;
    assert_eq!(s.server.written, synacks, "{s:?}");
    assert_eq!(s.server.listeners, 1, "{s:?}");
    assert_eq!(
        s.server.echo_ok, 1,
        "the handshake ACK echoed our id: {s:?}"
    );
    assert_eq!(
        s.server.no_space + s.server.echo_missing + s.server.echo_wrong,
        0,
        "{s:?}"
    );
    assert_eq!(c.client.connects, 1, "{c:?}");
    assert_eq!(c.client.parsed, 1, "{c:?}");
    assert_eq!(
        c.client.missing + c.client.malformed + c.client.zero,
        0,
        "{c:?}"
    );
    assert_eq!(
        c.client.echoed, n.client_after_syn,
        "one echo per client packet on the wire: {c:?} {n:?}"
    );
    assert_eq!(s.errors + c.errors, 0);
    // Each side only acted in its role on this connection.
    assert_eq!(
        s.client,
        Default::default(),
        "the server's client role saw nothing"
    );
    assert_eq!(
        c.server,
        Default::default(),
        "the client's server role saw nothing"
    );
    after(&pair);
}

#[test]
fn privileged_sockops_both_roles_on_each_side() {
    healthy_connection(
        Layout::default(),
        "sockops both roles",
        true,
        |_| {},
        |_| {},
    );
}

/// SYN cookies (forced with tcp_syncookies=2): the SYN-ACK is sent without
/// a request socket kept, still from the listener with its flag; the child
/// is created from the client's ACK.
#[test]
fn privileged_sockops_syn_cookies() {
    healthy_connection(
        Layout::default(),
        "sockops syncookies",
        false,
        |pair| pair.srv.sysctl("net.ipv4.tcp_syncookies", "2").unwrap(),
        |pair| {
            let out = pair
                .srv
                .exec("nstat", &["-az", "TcpExtSyncookiesSent"])
                .unwrap();
            let out = String::from_utf8_lossy(&out.stdout);
            let sent: u64 = out
                .lines()
                .find_map(|l| l.strip_prefix("TcpExtSyncookiesSent"))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .expect("nstat prints TcpExtSyncookiesSent");
            assert!(sent >= 1, "the SYN-ACK was a cookie one: {out}");
        },
    );
}

#[test]
fn privileged_sockops_rfc6994_on_the_wire_where_expected_and_nowhere_else() {
    healthy_connection_with(Layout::default(), "sockops rfc6994 on the wire");
}

#[test]
fn privileged_sockops_compact_layout_on_the_wire() {
    healthy_connection_with(Layout::Compact { kind: 0xB5 }, "sockops compact");
}

#[test]
fn privileged_sockops_katran_layout_on_the_wire() {
    healthy_connection_with(Layout::KatranCompat, "sockops katran");
}

#[test]
fn privileged_sockops_no_option_when_the_server_never_sent_one() {
    let test = "sockops no option from server";
    if !require_bpf(test) {
        return;
    }
    let pair = Pair::new(test, Fake::None);
    let layout = Layout::default();
    // The server instance only stamps port 9000; our listener is on 8080.
    let server = ServerIdOps::load(ServerIdOpsConfig::server(id(5)).ports(&[9000])).unwrap();
    let client = ServerIdOps::load(ServerIdOpsConfig::client()).unwrap();
    let _ls = server.attach(pair.cg_srv.path()).unwrap();
    let _lc = client.attach(pair.cg_cli.path()).unwrap();
    let mut cap = pair.capture();

    let cport = echo_connection(&pair, 8080, 100_000);
    let segs = cap.wait_for_close(cport, 8080);
    assert!(segs.iter().any(|s| s.from_client && s.fin));
    for s in &segs {
        assert!(
            !has_server_id_kind(&s.options, layout),
            "option on the wire: {s:?}"
        );
    }
    let s = server.stats().unwrap();
    let c = client.stats().unwrap();
    assert_eq!(
        (
            s.server.listeners,
            s.server.listeners_skipped,
            s.server.written
        ),
        (0, 1, 0),
        "{s:?}"
    );
    assert_eq!(
        s.server.echo_ok + s.server.echo_missing,
        0,
        "unconfigured children are left alone: {s:?}"
    );
    assert_eq!(
        (
            c.client.connects,
            c.client.missing,
            c.client.parsed,
            c.client.echoed
        ),
        (1, 1, 0, 0),
        "{c:?}"
    );
}

#[test]
fn privileged_sockops_address_filter_and_detach_on_drop() {
    let test = "sockops addr filter";
    if !require_bpf(test) {
        return;
    }
    let pair = Pair::new(test, Fake::None);
    let layout = Layout::default();
    // Configured for another local address: the listener matches (port), but
    // no SYN-ACK from 10.77.0.2 is stamped.
    let other =
        ServerIdOps::load(ServerIdOpsConfig::server(id(6)).addrs(&["10.9.9.9".parse().unwrap()]))
            .unwrap();
    let client = ServerIdOps::load(ServerIdOpsConfig::client()).unwrap();
    let lc = client.attach(pair.cg_cli.path()).unwrap();
    {
        let _lo = other.attach(pair.cg_srv.path()).unwrap();
        let mut cap = pair.capture();
        let cport = echo_connection(&pair, 8081, 10_000);
        let segs = cap.wait_for_close(cport, 8081);
        assert!(segs.iter().all(|s| !has_server_id_kind(&s.options, layout)));
        let s = other.stats().unwrap();
        assert_eq!(
            (s.server.listeners, s.server.addr_skipped, s.server.written),
            (1, 1, 0),
            "{s:?}"
        );
    }
    // Our address: stamped.
    let ours = ServerIdOps::load(ServerIdOpsConfig::server(id(7)).addrs(&[SRV_IP.into()])).unwrap();
    let ls = ours.attach(pair.cg_srv.path()).unwrap();
    let mut cap = pair.capture();
    let cport = echo_connection(&pair, 8082, 10_000);
    let segs = cap.wait_for_close(cport, 8082);
    assert_option_where_expected(&segs, layout, id(7));
    assert_eq!(ours.stats().unwrap().server.written, 1);
    // Detached on drop: neither side acts any more.
    drop(ls);
    drop(lc);
    let before = (ours.stats().unwrap(), client.stats().unwrap());
    let mut cap = pair.capture();
    let cport = echo_connection(&pair, 8083, 10_000);
    let segs = cap.wait_for_close(cport, 8083);
    assert!(
        segs.iter().all(|s| !has_server_id_kind(&s.options, layout)),
        "no option after detach"
    );
    assert_eq!(
        (ours.stats().unwrap(), client.stats().unwrap()),
        before,
        "no counter moved after detach"
    );
}

#[test]
fn privileged_sockops_two_instances_with_different_ids_at_once() {
    let test = "sockops two instances";
    if !require_bpf(test) {
        return;
    }
    // Two server cgroups in the same server namespace, each with its own
    // instance, one listener each; one client instance.
    let pair = Pair::new(test, Fake::None);
    let cg_b = flowpin_testing::Cgroup::new("sockopsb").unwrap();
    let a = ServerIdOps::load(ServerIdOpsConfig::server(id(101))).unwrap();
    let b = ServerIdOps::load(ServerIdOpsConfig::server(id(202))).unwrap();
    let client = ServerIdOps::load(ServerIdOpsConfig::client()).unwrap();
    let _la = a.attach(pair.cg_srv.path()).unwrap();
    let _lb = b.attach(cg_b.path()).unwrap();
    let _lc = client.attach(pair.cg_cli.path()).unwrap();
    let mut cap = pair.capture();
    let la = pair.listen(7001);
    let lb = pair.listen_in(Some(&cg_b), 7002);
    let mut conns = Vec::new();
    for (l, port) in [(la, 7001u16), (lb, 7002u16)] {
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let mut c = pair.connect(port);
        c.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        h.join().unwrap();
        conns.push((c.local_addr().unwrap().port(), port));
        drop(c);
    }
    cap.wait_for_close(conns[1].0, conns[1].1);
    let segs = cap.drain();
    for (cport, sport, want) in [(conns[0].0, conns[0].1, 101), (conns[1].0, conns[1].1, 202)] {
        let mine: Vec<Seg> = segs
            .iter()
            .filter(|s| s.client_port == cport && s.server_port == sport)
            .cloned()
            .collect();
        assert_option_where_expected(&mine, Layout::default(), id(want));
    }
    assert_eq!(a.stats().unwrap().server.written, 1);
    assert_eq!(b.stats().unwrap().server.written, 1);
    assert_eq!(client.stats().unwrap().client.parsed, 2);
}

/// RST: the client's abortive close goes through tcp_transmit_skb and the
/// header-option callbacks, so it carries the id; the RST the kernel sends
/// for a segment that no socket wants any more (tcp_v4_send_reset on the
/// per-netns control socket) does not.
#[test]
fn privileged_sockops_client_rst_paths() {
    let test = "sockops rst";
    if !require_bpf(test) {
        return;
    }
    let pair = Pair::new(test, Fake::None);
    let layout = Layout::default();
    let sid = id(77);
    let server = ServerIdOps::load(ServerIdOpsConfig::server(sid)).unwrap();
    let client = ServerIdOps::load(ServerIdOpsConfig::client()).unwrap();
    let _ls = server.attach(pair.cg_srv.path()).unwrap();
    let _lc = client.attach(pair.cg_cli.path()).unwrap();
    let mut cap = pair.capture();

    // 1. Abortive close (SO_LINGER 0) by the client.
    let listener = pair.listen(6001);
    let h = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"pong").unwrap();
        let mut rest = Vec::new();
        // The client's RST ends the connection.
        let r = s.read_to_end(&mut rest);
        assert!(r.is_err() || rest.is_empty());
    });
    let mut c = pair.connect(6001);
    let cport1 = c.local_addr().unwrap().port();
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    h.join().unwrap();

    // 2. The client closes normally, then the server keeps sending: the
    //    orphaned client socket answers data after close with a reset.
    let listener = pair.listen(6002);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"pong").unwrap();
        rx.recv().unwrap(); // the client has closed
        std::thread::sleep(Duration::from_millis(100));
        let _ = s.write_all(b"data after the client closed");
        std::thread::sleep(Duration::from_millis(300));
    });
    let mut c = pair.connect(6002);
    let cport2 = c.local_addr().unwrap().port();
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    drop(c);
    tx.send(()).unwrap();
    h.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let segs = cap.drain();

    let conn1: Vec<Seg> = segs
        .iter()
        .filter(|s| s.client_port == cport1)
        .cloned()
        .collect();
    let n1 = assert_option_where_expected(&conn1, layout, sid);
    assert_eq!(n1.client_rst, 1, "one RST from SO_LINGER 0 close: {n1:?}");
    assert_eq!(n1.client_fin, 0);

    let conn2: Vec<Seg> = segs
        .iter()
        .filter(|s| s.client_port == cport2)
        .cloned()
        .collect();
    let rsts: Vec<&Seg> = conn2.iter().filter(|s| s.from_client && s.rst).collect();
    assert!(!rsts.is_empty(), "the closed client resets the late data");
    for r in &rsts {
        assert!(
            !has_server_id_kind(&r.options, layout),
            "kernel RST (no socket context) has no BPF option: {r:?}"
        );
    }
    // Everything else the client sent on connection 2 carries the id.
    let before_rst: Vec<Seg> = conn2
        .iter()
        .filter(|s| !(s.from_client && s.rst))
        .cloned()
        .collect();
    let n2 = assert_option_where_expected(&before_rst, layout, sid);
    assert_eq!(n2.client_fin, 1);
    let c = client.stats().unwrap();
    assert_eq!(
        c.client.echoed_rst, 1,
        "only the abortive close RST went through the callbacks: {c:?}"
    );
}

/// TCP Fast Open: the server's child socket exists before its SYN-ACK is
/// sent (PASSIVE_ESTABLISHED_CB runs on the SYN), so the program keeps the
/// write callback until the client's first packet arrives. The SYN-ACK is
/// stamped, the client echoes, the server's data carry nothing.
#[test]
fn privileged_sockops_tcp_fast_open() {
    let test = "sockops tfo";
    if !require_bpf(test) {
        return;
    }
    let layout = Layout::default();
    let sid = id(555);
    let pair = Pair::new(test, Fake::None);
    // Client: TFO without a cookie (0x1 | 0x4); server: TFO on every listener,
    // no cookie required (0x2 | 0x200 | 0x400).
    pair.cli.sysctl("net.ipv4.tcp_fastopen", "5").unwrap();
    pair.srv.sysctl("net.ipv4.tcp_fastopen", "1538").unwrap();
    let server = ServerIdOps::load(ServerIdOpsConfig::server(sid)).unwrap();
    let client = ServerIdOps::load(ServerIdOpsConfig::client()).unwrap();
    let _ls = server.attach(pair.cg_srv.path()).unwrap();
    let _lc = client.attach(pair.cg_cli.path()).unwrap();
    let mut cap = pair.capture();
    let listener = pair.listen(6100);
    let h = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        let reply = pattern(50_000);
        s.write_all(&reply).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        (buf, rest.len())
    });
    let mut c: std::net::TcpStream = sockets_in(Some(&pair.cg_cli), || {
        pair.cli
            .run(|| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                nix::sys::socket::setsockopt(
                    &s,
                    nix::sys::socket::sockopt::TcpFastOpenConnect,
                    &true,
                )
                .unwrap();
                s.connect(&std::net::SocketAddr::from((SRV_IP, 6100)).into())
                    .unwrap();
                s.into()
            })
            .unwrap()
    });
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let cport = c.local_addr().unwrap().port();
    c.write_all(b"hello").unwrap(); // goes out in the SYN
    let mut got = vec![0u8; 50_000];
    c.read_exact(&mut got).unwrap();
    assert!(got == pattern(50_000), "reply bytes");
    c.shutdown(Shutdown::Write).unwrap();
    let (first, rest) = h.join().unwrap();
    assert_eq!((&first, rest), (b"hello", 0));
    drop(c);
    let segs = cap.wait_for_close(cport, 6100);
    let syn = segs.iter().find(|s| s.from_client && s.syn).expect("SYN");
    assert_eq!(
        syn.payload, b"hello",
        "the data went out in the SYN (TFO): {syn:?}"
    );
    assert!(
        segs.iter()
            .any(|s| !s.from_client && s.syn && s.ack && s.ack_no == syn.seq.wrapping_add(6)),
        "the SYN-ACK acknowledges the SYN's data"
    );
    let n = assert_option_where_expected(&segs, layout, sid);
    assert!(n.server_data >= 1 && n.client_fin == 1, "{n:?}");
    let s = server.stats().unwrap();
    assert_eq!(
        s.server.written as usize,
        segs.iter().filter(|s| !s.from_client && s.syn).count(),
        "{s:?}"
    );
    assert_eq!(client.stats().unwrap().client.parsed, 1);
    assert_eq!(s.errors, 0);
}

/// IPv6, and the address filter on both families: an IPv6 listener on a
/// configured IPv6 address is stamped; a dual-stack listener on `[::]`
/// accepting an IPv4 connection matches the configured IPv4 address (as
/// ::ffff:a.b.c.d); an IPv6 connection to that same dual-stack listener from
/// an address that is not configured is left alone.
#[test]
fn privileged_sockops_ipv6_and_dual_stack_address_filter() {
    let test = "sockops ipv6";
    if !require_bpf(test) {
        return;
    }
    let layout = Layout::default();
    let sid = id(66);
    let pair = Pair::new(test, Fake::None);
    let server = ServerIdOps::load(
        ServerIdOpsConfig::server(sid)
            .addrs(&[SRV_IP6.into(), SRV_IP.into()])
            .ports(&[7100, 7200]),
    )
    .unwrap();
    let client = ServerIdOps::load(ServerIdOpsConfig::client()).unwrap();
    let _ls = server.attach(pair.cg_srv.path()).unwrap();
    let _lc = client.attach(pair.cg_cli.path()).unwrap();
    let mut cap = pair.capture();
    let v6: SocketAddr = (SRV_IP6, 7100).into();
    let dual_v4: SocketAddr = (SRV_IP, 7200).into();
    let l6 = pair.listen_at(Some(&pair.cg_srv), v6);
    let ldual = pair.listen_at(
        Some(&pair.cg_srv),
        (std::net::Ipv6Addr::UNSPECIFIED, 7200).into(),
    );
    let mut ports = Vec::new();
    for (l, to) in [(l6, v6), (ldual, dual_v4)] {
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let mut c = pair.connect_to(Some(&pair.cg_cli), to);
        c.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello", "{to}");
        h.join().unwrap();
        ports.push((c.local_addr().unwrap().port(), to.port()));
        c.shutdown(Shutdown::Both).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let segs = cap.drain();
    for (cport, sport) in &ports {
        let mine: Vec<Seg> = segs
            .iter()
            .filter(|s| s.client_port == *cport && s.server_port == *sport)
            .cloned()
            .collect();
        assert!(
            mine.iter().any(|s| s.from_client && !s.payload.is_empty()),
            "captured {cport}->{sport}"
        );
        assert_option_where_expected(&mine, layout, sid);
    }
    assert!(
        segs.iter().any(|s| s.client_ip.is_ipv6() && s.syn),
        "the IPv6 handshake was captured"
    );
    let st = server.stats().unwrap();
    assert_eq!(
        (
            st.server.listeners,
            st.server.written,
            st.server.addr_skipped
        ),
        (2, 2, 0),
        "{st:?}"
    );
    assert_eq!(client.stats().unwrap().client.parsed, 2);

    // Only the IPv4 address configured: an IPv6 connection to the same
    // dual-stack listener gets nothing.
    let only_v4 =
        ServerIdOps::load(ServerIdOpsConfig::server(id(67)).addrs(&[SRV_IP.into()])).unwrap();
    drop(_ls);
    let _ls4 = only_v4.attach(pair.cg_srv.path()).unwrap();
    let l = pair.listen_at(
        Some(&pair.cg_srv),
        (std::net::Ipv6Addr::UNSPECIFIED, 7300).into(),
    );
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
    });
    let mut c = pair.connect_to(Some(&pair.cg_cli), (SRV_IP6, 7300).into());
    c.write_all(b"hello").unwrap();
    h.join().unwrap();
    let st = only_v4.stats().unwrap();
    assert_eq!(
        (
            st.server.listeners,
            st.server.written,
            st.server.addr_skipped
        ),
        (1, 0, 1),
        "{st:?}"
    );
}
