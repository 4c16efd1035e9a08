//! Privileged: a BPF-steered reuseport group, live in network namespaces.
//!
//! Steering to the live generation, the flip, UDP flow affinity across a
//! flip, QUIC CID routing, migration of queued TCP requests when the old
//! listener closes, cross-process join through pinned maps, cleanup, and bad
//! input. Each test runs in its own namespace and its own bpffs directory.
// Test helpers outside #[test] functions unwrap too (clippy.toml only covers #[test]).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flowpin_sk_reuseport::{
    bind_reuseport, Generation, GroupConfig, GroupError, Proto, ReleaseError, ReuseportGroup,
    SelectMode,
};
use flowpin_testing::{require_bpf, NetNs};

static N: AtomicU32 = AtomicU32::new(0);

fn pin_dir(tag: &str) -> PathBuf {
    let n = N.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!(
        "/sys/fs/bpf/fprp-test-{}-{n}-{tag}",
        std::process::id()
    ))
}

fn cfg(tag: &str) -> GroupConfig {
    let mut c = GroupConfig::new(pin_dir(tag));
    c.unpin_on_drop = true;
    c.flow_table_size = 4096;
    c
}

fn udp(addr: SocketAddr) -> UdpSocket {
    let s: UdpSocket = bind_reuseport(addr, Proto::Udp).unwrap().into();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

fn tcp(addr: SocketAddr) -> TcpListener {
    let l: TcpListener = bind_reuseport(addr, Proto::Tcp).unwrap().into();
    l.set_nonblocking(true).unwrap();
    l
}

/// Accepts everything queued on each listener; returns the counts.
fn drain_accepts(ls: &[&TcpListener]) -> Vec<usize> {
    ls.iter()
        .map(|l| {
            let mut n = 0;
            loop {
                match l.accept() {
                    Ok(_) => n += 1,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break n,
                    Err(e) => panic!("accept: {e}"),
                }
            }
        })
        .collect()
}

fn connect_n(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect()
}

/// Receives one datagram on each server socket that has one; returns
/// (server index, client address) pairs.
fn recv_all(servers: &[&UdpSocket], expect: usize) -> Vec<(usize, SocketAddr)> {
    let mut out = Vec::new();
    for s in servers {
        s.set_nonblocking(true).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 1500];
    while out.len() < expect && std::time::Instant::now() < deadline {
        let mut got = false;
        for (i, s) in servers.iter().enumerate() {
            while let Ok((_, from)) = s.recv_from(&mut buf) {
                out.push((i, from));
                got = true;
            }
        }
        if !got {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    out
}

fn pin_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
    // SAFETY: sched_getcpu takes no arguments and only reads the caller's CPU.
    let now = unsafe { nix::libc::sched_getcpu() };
    assert_eq!(now, cpu as i32, "pinned to CPU {cpu} but running on {now}");
}

/// The CPUs a steering test checks: every CPU up to 3 (one per slot). A
/// machine with one CPU cannot show that steering follows the CPU: that is a
/// failure, not a silent pass on CPU 0.
fn steering_cpus(test: &str) -> usize {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    assert!(
        n >= 2,
        "{test}: CPU steering needs at least 2 CPUs to be checked; this machine has {n}"
    );
    n.min(3)
}

#[test]
fn privileged_tcp_steering_to_live_generation_and_flip() {
    if !require_bpf("privileged_tcp_steering_to_live_generation_and_flip") {
        return;
    }
    let ns = NetNs::new("rptcp").unwrap();
    ns.run(|| {
        let addr: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let group = ReuseportGroup::create(addr, Proto::Tcp, cfg("tcp")).unwrap();
        let a = [tcp(addr), tcp(addr)];
        let g1 = group.add_generation(&a).unwrap();
        assert_eq!(g1, Generation(1));
        // Not live yet: a TCP SYN finds no live generation and is refused.
        assert!(
            TcpStream::connect(addr).is_err(),
            "no live generation: refused"
        );
        group.activate(g1).unwrap();
        // A socket bound to the group but not in the map gets nothing.
        let warming = tcp(addr);
        let _c = connect_n(addr, 40);
        let n = drain_accepts(&[&a[0], &a[1], &warming]);
        assert_eq!(n[0] + n[1], 40, "every connection to generation 1: {n:?}");
        assert_eq!(n[2], 0, "the bound-but-not-added socket gets nothing");
        assert!(
            n[0] > 0 && n[1] > 0,
            "hash steering spreads over both slots: {n:?}"
        );

        // Generation 2 warms up: still everything to generation 1.
        let b = [tcp(addr), tcp(addr)];
        let g2 = group.add_generation(&b).unwrap();
        let _c = connect_n(addr, 10);
        assert_eq!(
            drain_accepts(&[&a[0], &a[1], &b[0], &b[1]])
                .iter()
                .take(2)
                .sum::<usize>(),
            10
        );
        // The flip.
        assert_eq!(group.activate(g2).unwrap(), Some(g1));
        let _c = connect_n(addr, 20);
        let n = drain_accepts(&[&a[0], &a[1], &b[0], &b[1]]);
        assert_eq!(
            (n[0] + n[1], n[2] + n[3]),
            (0, 20),
            "after the flip: all to generation 2 {n:?}"
        );

        let st = group.stats().unwrap();
        assert_eq!(st.get(g1).unwrap().new_flows, 50);
        assert_eq!(st.get(g2).unwrap().new_flows, 20);
        assert!(
            st.unassigned.no_live >= 1,
            "the refused SYN is counted: {st:?}"
        );
    })
    .unwrap();
}

#[test]
fn privileged_tcp_steering_by_cpu() {
    if !require_bpf("privileged_tcp_steering_by_cpu") {
        return;
    }
    let ncpu = steering_cpus("privileged_tcp_steering_by_cpu");
    let ns = NetNs::new("rpcpu").unwrap();
    ns.run(move || {
        let addr: SocketAddr = "127.0.0.1:7002".parse().unwrap();
        let mut c = cfg("cpu");
        c.tcp_mode = SelectMode::Cpu;
        let group = ReuseportGroup::create(addr, Proto::Tcp, c).unwrap();
        // Three sockets: CPU c maps to slot c % 3, so CPUs 0, 1 (and 2)
        // each have a slot of their own, and a program that ignored the CPU
        // (or always used CPU 0) would fail on CPU 1.
        let a = [tcp(addr), tcp(addr), tcp(addr)];
        group.activate(group.add_generation(&a).unwrap()).unwrap();
        for cpu in 0..ncpu {
            pin_cpu(cpu);
            let _c = connect_n(addr, 10);
            let n = drain_accepts(&[&a[0], &a[1], &a[2]]);
            let mut want = [0; 3];
            want[cpu % 3] = 10;
            assert_eq!(
                n,
                want,
                "SYNs handled on CPU {cpu} all go to slot {}",
                cpu % 3
            );
        }
    })
    .unwrap();
}

#[test]
fn privileged_udp_flow_affinity_across_flip() {
    if !require_bpf("privileged_udp_flow_affinity_across_flip") {
        return;
    }
    let ns = NetNs::new("rpudp").unwrap();
    ns.run(|| {
        let addr: SocketAddr = "127.0.0.1:7003".parse().unwrap();
        let group = ReuseportGroup::create(addr, Proto::Udp, cfg("udp")).unwrap();
        let a = [udp(addr), udp(addr)];
        let g1 = group.add_generation(&a).unwrap();
        group.activate(g1).unwrap();
        let clients: Vec<UdpSocket> = (0..60)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for c in &clients {
            c.send_to(b"\xc0hello", addr).unwrap();
        }
        let first: HashMap<SocketAddr, usize> = recv_all(&[&a[0], &a[1]], 60)
            .into_iter()
            .map(|(i, f)| (f, i))
            .collect();
        assert_eq!(first.len(), 60);
        assert!(first.values().any(|&i| i == 0) && first.values().any(|&i| i == 1));

        let b = [udp(addr), udp(addr)];
        let g2 = group.add_generation(&b).unwrap();
        group.activate(g2).unwrap();
        for c in &clients {
            c.send_to(b"\xc0again", addr).unwrap();
        }
        let again = recv_all(&[&a[0], &a[1], &b[0], &b[1]], 60);
        assert_eq!(again.len(), 60);
        for (i, from) in &again {
            assert_eq!(
                Some(i),
                first.get(from),
                "flow {from} stays on its first socket across the flip"
            );
        }
        // New flows go to generation 2.
        let fresh: Vec<UdpSocket> = (0..20)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for c in &fresh {
            c.send_to(b"\xc0new", addr).unwrap();
        }
        let got = recv_all(&[&a[0], &a[1], &b[0], &b[1]], 20);
        assert_eq!(got.len(), 20);
        assert!(
            got.iter().all(|(i, _)| *i >= 2),
            "new flows to generation 2: {got:?}"
        );

        // The old process closes slot 0: its flows re-home to generation 2, none lost.
        let [a0, _a1] = a;
        drop(a0);
        let on_slot0: Vec<&UdpSocket> = clients
            .iter()
            .filter(|c| first[&c.local_addr().unwrap()] == 0)
            .collect();
        for c in &on_slot0 {
            c.send_to(b"\xc0after-close", addr).unwrap();
        }
        let got = recv_all(&[&b[0], &b[1]], on_slot0.len());
        assert_eq!(
            got.len(),
            on_slot0.len(),
            "flows of the closed socket re-homed to the live generation"
        );
        let st = group.stats().unwrap();
        assert_eq!(
            st.get(g1).unwrap().drops.flow_rehomed,
            on_slot0.len() as u64
        );
        assert_eq!(st.get(g1).unwrap().new_flows, 60);
        assert_eq!(st.get(g2).unwrap().new_flows, 20 + on_slot0.len() as u64);
        let flows = group.kernel().flows().unwrap();
        assert_eq!(flows.len(), 80);
    })
    .unwrap();
}

/// A QUIC short-header packet whose DCID (flowpin layout, server_id 7)
/// names `slot` of `gen`.
fn quic_short(group: &ReuseportGroup, gen: Generation, slot: u32) -> Vec<u8> {
    let mut dcid = [0xA5u8; 8];
    let sid = flowpin_tcp_opt::ServerId::new(7).unwrap();
    group.encode_cid(&mut dcid, sid, gen, slot).unwrap();
    assert_eq!(
        flowpin_tcp_opt::decode_cid(&dcid).unwrap(),
        Some((flowpin_tcp_opt::CidLayout::Flowpin, sid)),
        "the L4 load balancer still reads the server_id"
    );
    let mut p = vec![0x40u8]; // short header: fixed bit set, long-header bit clear
    p.extend_from_slice(&dcid);
    p.extend_from_slice(b"payload");
    p
}

#[test]
fn privileged_quic_cid_routing_without_table() {
    if !require_bpf("privileged_quic_cid_routing_without_table") {
        return;
    }
    let ns = NetNs::new("rpcid").unwrap();
    ns.run(|| {
        let addr: SocketAddr = "127.0.0.1:7004".parse().unwrap();
        let mut c = cfg("cid");
        c.quic_cid = true;
        let group = ReuseportGroup::create(addr, Proto::Udp, c).unwrap();
        let a = [udp(addr), udp(addr)];
        let g1 = group.add_generation(&a).unwrap();
        group.activate(g1).unwrap();
        let b = [udp(addr), udp(addr)];
        let g2 = group.add_generation(&b).unwrap();
        group.activate(g2).unwrap();
        let all = [&a[0], &a[1], &b[0], &b[1]];
        // Fresh clients whose short-header packets name each socket in turn.
        for (want, (gen, slot)) in [(g1, 0), (g1, 1), (g2, 0), (g2, 1)].into_iter().enumerate() {
            for _ in 0..5 {
                let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                c.send_to(&quic_short(&group, gen, slot), addr).unwrap();
                let got = recv_all(&all, 1);
                assert_eq!(
                    got,
                    vec![(want, c.local_addr().unwrap())],
                    "CID names {gen} slot {slot}"
                );
            }
        }
        assert!(
            group.kernel().flows().unwrap().is_empty(),
            "CID routing uses no flow table"
        );
        // Long header (Initial): the flow path, to the live generation.
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(&[0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8], addr)
            .unwrap();
        let got = recv_all(&all, 1);
        assert!(
            got.len() == 1 && got[0].0 >= 2,
            "Initial goes to the live generation: {got:?}"
        );
        // A CID naming an empty slot falls back to the flow path.
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(&quic_short(&group, Generation(5), 7), addr)
            .unwrap();
        let got = recv_all(&all, 1);
        assert!(
            got.len() == 1 && got[0].0 >= 2,
            "unknown socket id: live generation {got:?}"
        );
        let st = group.stats().unwrap();
        assert_eq!(st.get(g1).unwrap().cid_routed, 10);
        assert_eq!(st.get(g2).unwrap().cid_routed, 10);
    })
    .unwrap();
}

/// Clients connect to one listener (queued, not accepted), a new generation
/// takes over, the old listener closes; returns (accepted by the new one,
/// clients whose request/response failed).
fn migration_scenario(addr: SocketAddr, group: Option<&ReuseportGroup>) -> (usize, usize) {
    let old = tcp(addr);
    let g1 = group.map(|g| {
        let g1 = g.add_generation(&[&old]).unwrap();
        g.activate(g1).unwrap();
        g1
    });
    let clients = connect_n(addr, 30);
    let new = tcp(addr);
    if let (Some(g), Some(_)) = (group, g1) {
        let g2 = g.add_generation(&[&new]).unwrap();
        g.activate(g2).unwrap();
    }
    drop(old); // the old process exits with 30 requests in its accept queue
    std::thread::sleep(Duration::from_millis(50));
    let mut accepted = Vec::new();
    loop {
        match new.accept() {
            Ok((s, _)) => accepted.push(s),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("accept: {e}"),
        }
    }
    let n = accepted.len();
    let mut failed = 0;
    for (mut c, mut s) in clients.into_iter().zip(
        accepted
            .into_iter()
            .map(Some)
            .chain(std::iter::repeat_with(|| None)),
    ) {
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let ok = c.write_all(b"ping").is_ok()
            && s.as_mut().is_some_and(|s| {
                s.set_nonblocking(false).unwrap();
                let mut b = [0u8; 4];
                s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok()
            })
            && {
                let mut b = [0u8; 4];
                c.read_exact(&mut b).is_ok()
            };
        if !ok {
            failed += 1;
        }
    }
    (n, failed)
}

#[test]
fn privileged_migration_of_queued_requests_zero_resets() {
    if !require_bpf("privileged_migration_of_queued_requests_zero_resets") {
        return;
    }
    let ns = NetNs::new("rpmig").unwrap();
    ns.run(|| {
        // Control: plain SO_REUSEPORT, no program, tcp_migrate_req=0: the queue is reset.
        std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", "0").unwrap();
        let (n, failed) = migration_scenario("127.0.0.1:7010".parse().unwrap(), None);
        assert_eq!(n, 0, "plain reuseport: nothing migrates");
        assert_eq!(
            failed, 30,
            "plain reuseport: every queued connection is reset"
        );

        let addr: SocketAddr = "127.0.0.1:7011".parse().unwrap();
        let group = ReuseportGroup::create(addr, Proto::Tcp, cfg("mig")).unwrap();
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
                .unwrap()
                .trim(),
            "1"
        );
        let (n, failed) = migration_scenario(addr, Some(&group));
        assert_eq!(
            (n, failed),
            (30, 0),
            "every queued request migrated, 0 resets"
        );
        let st = group.stats().unwrap();
        assert_eq!(st.get(Generation(2)).unwrap().migrated, 30);
    })
    .unwrap();
}

/// The live generation's only listener closes while the next generation is
/// still warming: the program finds no live socket for the queued requests,
/// leaves them to the kernel's hash (which picks the warming listener, the
/// one documented exception to "warming gets nothing") and counts each once
/// as `migrate_fallback`, not also as a drop.
#[test]
fn privileged_migration_without_live_socket_falls_back_and_counts_once() {
    if !require_bpf("privileged_migration_without_live_socket_falls_back_and_counts_once") {
        return;
    }
    let ns = NetNs::new("rpmigfb").unwrap();
    ns.run(|| {
        let addr: SocketAddr = "127.0.0.1:7012".parse().unwrap();
        let group = ReuseportGroup::create(addr, Proto::Tcp, cfg("migfb")).unwrap();
        let old = tcp(addr);
        let g1 = group.add_generation(&[&old]).unwrap();
        group.activate(g1).unwrap();
        let new = tcp(addr);
        let g2 = group.add_generation(&[&new]).unwrap(); // warming, never activated
        let clients = connect_n(addr, 30);
        std::thread::sleep(Duration::from_millis(50));
        drop(old);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            drain_accepts(&[&new]),
            vec![30],
            "the kernel's hash fallback moved every queued request to the only listener left"
        );
        let st = group.stats().unwrap();
        assert_eq!(st.unassigned.migrate_fallback, 30, "{st:?}");
        assert_eq!(
            st.get(g1).unwrap().drops.no_socket,
            0,
            "a migration fallback is not a drop: {st:?}"
        );
        assert_eq!(st.unassigned.no_live, 0, "{st:?}");
        assert_eq!(st.get(g2).unwrap().migrated, 0, "the program chose nothing");
        drop(clients);
    })
    .unwrap();
}

const CHILD_ENV: &str = "FLOWPIN_RP_JOIN_CHILD";
const CHILD_NS_ENV: &str = "FLOWPIN_RP_JOIN_CHILD_NS";

/// Kills and reaps the child process if the test fails before waiting for it.
struct ChildGuard(Option<std::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The second process: joins, adds and activates its generation, echoes
/// "child" until it receives "quit".
fn join_child(pin: &str) {
    // Not `ip netns exec`: it remounts /sys in a new mount namespace, which
    // hides the bpffs at /sys/fs/bpf. Enter the namespace with setns instead.
    let ns = std::env::var(CHILD_NS_ENV).expect("child: namespace path");
    flowpin_testing::enter_netns(Path::new(&ns), &ns).expect("child: setns");
    let group = ReuseportGroup::join(pin).expect("child: join");
    let addr = group.addr();
    let s = udp(addr);
    let g = group.add_generation(&[&s]).expect("child: add_generation");
    let prev = group.activate(g).expect("child: activate");
    println!("READY {} {}", g.0, prev.map_or(0, |p| p.0));
    std::io::stdout().flush().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    while let Ok((n, from)) = s.recv_from(&mut buf) {
        if buf[..n].ends_with(b"quit") {
            break;
        }
        s.send_to(b"child", from).unwrap();
    }
}

#[test]
fn privileged_cross_process_join_via_pins() {
    if let Ok(pin) = std::env::var(CHILD_ENV) {
        return join_child(&pin);
    }
    if !require_bpf("privileged_cross_process_join_via_pins") {
        return;
    }
    let ns = NetNs::new("rpjoin").unwrap();
    let nspath = ns.path();
    ns.run(move || {
        let addr: SocketAddr = "127.0.0.1:7020".parse().unwrap();
        let c = cfg("join");
        let pin = c.pin_path.clone();
        let group = ReuseportGroup::create(addr, Proto::Udp, c).unwrap();
        let mine = udp(addr);
        let g1 = group.add_generation(&[&mine]).unwrap();
        group.activate(g1).unwrap();
        let old_clients: Vec<UdpSocket> = (0..20)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for c in &old_clients {
            c.send_to(b"\xc0hi", addr).unwrap();
        }
        assert_eq!(recv_all(&[&mine], 20).len(), 20);

        let exe = std::env::current_exe().unwrap();
        let mut child = ChildGuard(Some(
            Command::new(&exe)
                .args([
                    "--exact",
                    "privileged_cross_process_join_via_pins",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, &pin)
                .env(CHILD_NS_ENV, &nspath)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        ));
        let mut out = child.0.as_mut().unwrap().stdout.take().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        let ready = loop {
            match out.read(&mut byte) {
                Ok(1) => {
                    line.push(byte[0]);
                    let s = String::from_utf8_lossy(&line);
                    if let Some(pos) = s.find("READY") {
                        if s[pos..].ends_with('\n') {
                            break s[pos..].trim().to_string();
                        }
                    }
                }
                _ => panic!(
                    "child exited before READY: {}",
                    String::from_utf8_lossy(&line)
                ),
            }
        };
        assert_eq!(
            ready, "READY 2 1",
            "the child added generation 2 and flipped from 1"
        );
        assert_eq!(
            group.live().unwrap(),
            Some(Generation(2)),
            "the creator sees the child's flip"
        );

        // Old flows stay with this process; new ones reach the child.
        for c in &old_clients {
            c.send_to(b"\xc0again", addr).unwrap();
        }
        assert_eq!(
            recv_all(&[&mine], 20).len(),
            20,
            "existing flows stay on generation 1"
        );
        let newc = UdpSocket::bind("127.0.0.1:0").unwrap();
        newc.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for _ in 0..5 {
            newc.send_to(b"\xc0new", addr).unwrap();
            let mut b = [0u8; 16];
            let (n, _) = newc.recv_from(&mut b).unwrap();
            assert_eq!(&b[..n], b"child");
        }
        assert!(
            recv_all(&[&mine], 1).is_empty(),
            "new flow never reaches generation 1"
        );
        let st = group.stats().unwrap();
        assert_eq!(st.get(Generation(2)).unwrap().new_flows, 1);
        assert_eq!(st.get(Generation(2)).unwrap().packets, 5);
        newc.send_to(b"\xc0quit", addr).unwrap();
        let status = child.0.take().unwrap().wait().unwrap();
        assert!(status.success(), "child failed: {status}");
        // The child's socket is closed: generation 2 has no socket left; reap removes it.
        assert_eq!(
            group.stats().unwrap().get(Generation(2)).unwrap().sockets,
            0
        );
        group.activate(g1).unwrap();
        assert_eq!(group.reap().unwrap(), vec![Generation(2)]);
        assert!(Path::new(&pin).join("socks").exists());
    })
    .unwrap();
}

#[test]
fn privileged_cleanup_removes_pins_and_program() {
    if !require_bpf("privileged_cleanup_removes_pins_and_program") {
        return;
    }
    let ns = NetNs::new("rpclean").unwrap();
    ns.run(|| {
        let addr: SocketAddr = "127.0.0.1:7030".parse().unwrap();
        let c = cfg("clean");
        let pin = c.pin_path.clone();
        let prog_id;
        {
            let group = ReuseportGroup::create(addr, Proto::Udp, c).unwrap();
            prog_id = group.kernel().program_id();
            let s = udp(addr);
            group
                .activate(group.add_generation(&[&s]).unwrap())
                .unwrap();
            for n in flowpin_bpf_progs::sk_reuseport_select::PIN_NAMES {
                assert!(pin.join(n).exists(), "{n} pinned");
            }
            // Re-creating on the same path is refused while pins are there.
            assert!(matches!(
                ReuseportGroup::create(addr, Proto::Udp, GroupConfig::new(&pin)),
                Err(GroupError::PinExists(_))
            ));
        }
        assert!(!pin.exists(), "pin directory removed on drop");
        // Nothing left behind: the program is freed once pins, fds and sockets are gone.
        let mut freed = false;
        for _ in 0..100 {
            if libbpf_rs::ProgramHandle::from_prog_id(prog_id).is_err() {
                freed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(freed, "program {prog_id} still loaded");

        // remove_pins on a kept group.
        let mut c = cfg("clean2");
        c.unpin_on_drop = false;
        let pin2 = c.pin_path.clone();
        let g = ReuseportGroup::create(addr, Proto::Udp, c).unwrap();
        drop(g);
        assert!(pin2.join("prog").exists(), "kept for the next process");
        ReuseportGroup::remove_pins(&pin2).unwrap();
        assert!(!pin2.exists());
    })
    .unwrap();
}

#[test]
fn privileged_bad_input_is_refused_and_group_unharmed() {
    if !require_bpf("privileged_bad_input_is_refused_and_group_unharmed") {
        return;
    }
    let ns = NetNs::new("rpbad").unwrap();
    ns.run(|| {
        let addr: SocketAddr = "127.0.0.1:7040".parse().unwrap();
        let group = ReuseportGroup::create(addr, Proto::Udp, cfg("bad")).unwrap();
        let a = [udp(addr), udp(addr)];
        let g1 = group.add_generation(&a).unwrap();
        group.activate(g1).unwrap();

        let v6 = bind_reuseport("[::1]:7040".parse().unwrap(), Proto::Udp).unwrap();
        let e = group.add_generation(&[&v6]).unwrap_err();
        assert!(matches!(e, GroupError::WrongFamily { index: 0, .. }), "{e}");
        let other_port = bind_reuseport("127.0.0.1:7041".parse().unwrap(), Proto::Udp).unwrap();
        let ok = bind_reuseport(addr, Proto::Udp).unwrap();
        let e = group.add_generation(&[&ok, &other_port]).unwrap_err();
        assert!(
            matches!(e, GroupError::WrongAddress { index: 1, .. }),
            "{e}"
        );
        let t = bind_reuseport(addr, Proto::Tcp).unwrap();
        let e = group.add_generation(&[&t]).unwrap_err();
        assert!(matches!(e, GroupError::WrongProtocol { .. }), "{e}");
        let plain =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        plain
            .bind(&"127.0.0.1:7042".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let e = group.add_generation(&[&plain]).unwrap_err();
        assert!(matches!(e, GroupError::NotReuseport { index: 0 }), "{e}");
        // A full slot.
        let e = group.add_socket(g1, 0, &ok).unwrap_err();
        assert!(matches!(e, GroupError::SlotBusy { slot: 0, .. }), "{e}");
        let e = group.add_socket(g1, 5, &ok).unwrap_err();
        assert!(matches!(e, GroupError::SlotRange { .. }), "{e}");
        let e = group.retire(g1).unwrap_err();
        assert!(
            matches!(e, GroupError::Release(ReleaseError::RetireLive(_))),
            "{e}"
        );
        println!("errors read: {e}");
        // Stale pin paths.
        let e = ReuseportGroup::join("/sys/fs/bpf/flowpin-no-such-group").unwrap_err();
        assert!(matches!(e, GroupError::StalePin { .. }), "{e}");
        let half = pin_dir("half");
        std::fs::create_dir(&half).unwrap();
        let e = ReuseportGroup::join(&half).unwrap_err();
        std::fs::remove_dir(&half).unwrap();
        assert!(
            matches!(e, GroupError::StalePin { .. }) && e.to_string().contains("missing"),
            "{e}"
        );
        // A create that fails (here: a zero-sized flow table) leaves nothing on bpffs.
        let mut c = cfg("fail");
        c.flow_table_size = 0;
        let failed_pin = c.pin_path.clone();
        let e = ReuseportGroup::create(addr, Proto::Udp, c).unwrap_err();
        assert!(matches!(e, GroupError::Kernel { .. }), "{e}");
        assert!(!failed_pin.exists(), "failed create left {failed_pin:?}");

        // The group is unharmed: generation 1 still gets every new flow, nothing dropped.
        assert_eq!(
            group.state().unwrap().generations().len(),
            1,
            "no generation was added by the failures"
        );
        let clients: Vec<UdpSocket> = (0..20)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for c in &clients {
            c.send_to(b"\xc0x", addr).unwrap();
        }
        assert_eq!(recv_all(&[&a[0], &a[1]], 20).len(), 20);
        let st = group.stats().unwrap();
        assert_eq!(st.get(g1).unwrap().new_flows, 20);
        assert_eq!(st.unassigned, Default::default());
        let _ = ok.as_fd();
    })
    .unwrap();
}

#[test]
fn privileged_ipv6_group_keeps_flows_across_flip() {
    if !require_bpf("privileged_ipv6_group_keeps_flows_across_flip") {
        return;
    }
    let ns = NetNs::new("rpv6").unwrap();
    ns.run(|| {
        let addr: SocketAddr = "[::1]:7050".parse().unwrap();
        let group = ReuseportGroup::create(addr, Proto::Udp, cfg("v6")).unwrap();
        let a = [udp(addr), udp(addr)];
        let g1 = group.add_generation(&a).unwrap();
        group.activate(g1).unwrap();
        let clients: Vec<UdpSocket> = (0..30)
            .map(|_| UdpSocket::bind("[::1]:0").unwrap())
            .collect();
        for c in &clients {
            c.send_to(b"\xc0v6", addr).unwrap();
        }
        let first: HashMap<SocketAddr, usize> = recv_all(&[&a[0], &a[1]], 30)
            .into_iter()
            .map(|(i, f)| (f, i))
            .collect();
        assert_eq!(first.len(), 30);
        let b = [udp(addr)];
        group.activate(group.add_generation(&b).unwrap()).unwrap();
        for c in &clients {
            c.send_to(b"\xc0v6", addr).unwrap();
        }
        let again = recv_all(&[&a[0], &a[1], &b[0]], 30);
        assert_eq!(again.len(), 30);
        for (i, from) in &again {
            assert_eq!(Some(i), first.get(from), "IPv6 flow {from} stays put");
        }
        // The flow table holds the real IPv6 tuples.
        let flows = group.kernel().flows().unwrap();
        assert_eq!(flows.len(), 30);
        assert!(flows
            .iter()
            .all(|f| f.local == addr && f.remote.ip() == addr.ip()));
        let mut remotes: Vec<SocketAddr> = flows.iter().map(|f| f.remote).collect();
        remotes.sort();
        let mut want: Vec<SocketAddr> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
        want.sort();
        assert_eq!(remotes, want);
    })
    .unwrap();
}

#[test]
fn privileged_udp_steering_by_cpu() {
    if !require_bpf("privileged_udp_steering_by_cpu") {
        return;
    }
    let ncpu = steering_cpus("privileged_udp_steering_by_cpu");
    let ns = NetNs::new("rpucpu").unwrap();
    ns.run(move || {
        let addr: SocketAddr = "127.0.0.1:7060".parse().unwrap();
        let mut c = cfg("ucpu");
        c.udp_mode = SelectMode::Cpu;
        let group = ReuseportGroup::create(addr, Proto::Udp, c).unwrap();
        let a = [udp(addr), udp(addr), udp(addr)];
        group.activate(group.add_generation(&a).unwrap()).unwrap();
        for cpu in 0..ncpu {
            pin_cpu(cpu);
            let clients: Vec<UdpSocket> = (0..10)
                .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
                .collect();
            for c in &clients {
                c.send_to(b"\xc0cpu", addr).unwrap();
            }
            let got = recv_all(&[&a[0], &a[1], &a[2]], 10);
            assert_eq!(got.len(), 10);
            assert!(
                got.iter().all(|(i, _)| *i == cpu % 3),
                "new flows sent from CPU {cpu} go to slot {}: {got:?}",
                cpu % 3
            );
        }
    })
    .unwrap();
}

#[test]
fn privileged_retire_keeps_flows_until_deadline_then_reap_removes() {
    if !require_bpf("privileged_retire_keeps_flows_until_deadline_then_reap_removes") {
        return;
    }
    let ns = NetNs::new("rpret").unwrap();
    ns.run(|| {
        let addr: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let group = ReuseportGroup::create(addr, Proto::Udp, cfg("ret")).unwrap();
        group
            .set_drain(Duration::from_millis(300), Duration::from_secs(60))
            .unwrap();
        // A process that joins gets the group's settings, not defaults.
        assert_eq!(
            ReuseportGroup::join(group.pin_path())
                .unwrap()
                .drain_settings()
                .unwrap(),
            (Duration::from_millis(300), Duration::from_secs(60))
        );
        let a = [udp(addr)];
        let g1 = group.add_generation(&a).unwrap();
        group.activate(g1).unwrap();
        let clients: Vec<UdpSocket> = (0..10)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let send_all = || {
            for c in &clients {
                c.send_to(b"\xc0r", addr).unwrap();
            }
        };
        send_all();
        assert_eq!(recv_all(&[&a[0]], 10).len(), 10);
        let b = [udp(addr)];
        let g2 = group.add_generation(&b).unwrap();
        group.activate(g2).unwrap();
        assert!(matches!(
            group.retire(g1).unwrap(),
            flowpin_sk_reuseport::Retirement::Draining { .. }
        ));
        // Before the deadline: the flows stay on generation 1.
        assert!(group.reap().unwrap().is_empty());
        send_all();
        let got = recv_all(&[&a[0], &b[0]], 10);
        assert!(
            got.len() == 10 && got.iter().all(|(i, _)| *i == 0),
            "{got:?}"
        );
        std::thread::sleep(Duration::from_millis(350));
        // Past the deadline: reap removes generation 1 from the map, its
        // still-open socket gets nothing, its flows re-home to generation 2.
        assert_eq!(group.reap().unwrap(), vec![g1]);
        assert_eq!(
            group.state().unwrap().get(g1).unwrap().state,
            flowpin_sk_reuseport::GenState::Retired
        );
        send_all();
        let got = recv_all(&[&a[0], &b[0]], 10);
        assert!(
            got.len() == 10 && got.iter().all(|(i, _)| *i == 1),
            "{got:?}"
        );
        let st = group.stats().unwrap();
        assert_eq!(st.get(g1).unwrap().sockets, 0);
        assert_eq!(st.get(g1).unwrap().drops.flow_rehomed, 10);
    })
    .unwrap();
}
