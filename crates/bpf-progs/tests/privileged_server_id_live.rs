//! Privileged, live: server_id routing end to end with real TCP connections.
//!
//! One topology per test, in network namespaces, the same data path as a
//! one-armed Katran-style deployment:
//!
//! ```text
//!   client c0 ── rc ┐
//!                   router ── rl ── l0 lb      (xdp_lb native on l0, XDP_TX back
//!   backend j b0 ── rbj ┘                       to the router; xdp_pass on rl)
//! ```
//!
//! The router routes the VIP to the LB; `xdp_lb` encapsulates (IPIP) towards
//! the chosen backend's address and sends the frame back to the router, which
//! forwards it to that backend; `xdp_decap` on the backend's `b0` strips the
//! outer header; the VIP sits on the backend's `lo`; replies go from the
//! backend through the router straight to the client (DSR). `rl` computes
//! checksums in software ([`disable_tx_checksum_offload`]): the client's
//! segments cross native XDP on the LB, where a checksum left for "hardware"
//! would never be filled in.
//!
//! Every backend is modelled as its own host: its own namespace, its own
//! child cgroup with its own `sockops_server_id` instance (server role) and
//! server_id, attached before its listeners call `listen()`. The client's
//! sockets are created in a cgroup with the client role (or in the test's own
//! cgroup: no sock_ops, no echo). A socket belongs to the cgroup of the
//! process that created it, so every TCP socket of this binary is created
//! through `sockops_support::sockets_in`, which moves the whole process into
//! the cgroup for the creation, under a binary-wide lock.
//!
//! Each server greets a new connection with the 4-byte server_id its host
//! stamps, then echoes. Where a flow lands is predicted independently of the
//! program: `flowpin_maglev` builds the ring the same way `set_backends`
//! documents (backend address as text), `flow_hash` gives the slot. The
//! greeting proves where each SYN landed; after a ring change a flow routed
//! to another backend gets a RST from that backend's kernel (it has no such
//! connection), so "broken" is observed on the client socket.
//!
//! Every namespace, link, cgroup and program is a guard dropped on every exit
//! path; each test also checks that nothing is left behind.
// Test helpers outside #[test] fns too: a failed setup step fails the test.
#![allow(clippy::unwrap_used)]

mod sockops_support;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use flowpin_bpf_progs::flow_hash::{flow_hash, FiveTuple};
use flowpin_bpf_progs::sockops_server_id::{
    ServerIdOps, ServerIdOpsConfig, ServerStats, SockopsLink,
};
use flowpin_bpf_progs::xdp_decap::{XdpDecap, XdpDecapConfig};
use flowpin_bpf_progs::xdp_lb::{
    Backend, Proto, Vip, VipFlags, VipStats, XdpLb, XdpLbConfig, XdpLink, XdpMode,
    DEFAULT_RING_SIZE,
};
use flowpin_bpf_progs::xdp_pass::XdpPass;
use flowpin_maglev::Maglev;
use flowpin_tcp_opt::ServerId;
use flowpin_testing::{require_bpf, Cgroup, RoutedLb, RoutedLbConfig};
use socket2::{Domain, Socket, Type};
use sockops_support::sockets_in;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 1);
const MAC_LB: [u8; 6] = [0x02, 0x5e, 0, 0, 1, 2];
const MAC_RTR: [u8; 6] = [0x02, 0x5e, 0, 0, 1, 1];
/// Client, router, LB and backends in 10.110.0.0/16.
const NET: RoutedLbConfig = RoutedLbConfig {
    subnet: 110,
    vip: VIP,
    lb_mac: MAC_LB,
    router_mac: MAC_RTR,
};
const CLIENT: Ipv4Addr = NET.client_addr();
/// The VIP port with [`VipFlags::SERVER_ID`].
const PORT_SID: u16 = 8080;
/// The VIP port without it (plain LRU + Maglev).
const PORT_PLAIN: u16 = 8081;
/// How long a round trip on an established connection may take before the
/// connection counts as stalled.
const RTT_LIMIT: Duration = Duration::from_secs(3);

fn backend_addr(j: usize) -> Ipv4Addr {
    NET.backend_addr(j)
}

fn sid(n: u32) -> ServerId {
    ServerId::new(n).unwrap()
}

/// Accept loops and echo threads; stopped and joined on drop.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Greets with `greeting` (the server_id the host stamps, big-endian), then
/// echoes until EOF, an error, or the stop flag.
fn echo(mut s: TcpStream, greeting: u32, stop: &AtomicBool) {
    if s.set_nonblocking(false).is_err()
        || s.set_read_timeout(Some(Duration::from_millis(100)))
            .is_err()
        || s.write_all(&greeting.to_be_bytes()).is_err()
    {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

fn serve(listener: TcpListener, greeting: u32, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let mut conns = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    let stop = stop.clone();
                    conns.push(std::thread::spawn(move || echo(s, greeting, &stop)));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
        for c in conns {
            let _ = c.join();
        }
    })
}

/// One backend host's programs (its namespace is in [`RoutedLb`]).
struct Host {
    addr: IpAddr,
    /// The server_id its sock_ops instance stamps (and its server greets with).
    stamps: u32,
    ops: ServerIdOps,
}

/// The whole lab. Fields drop in order: servers, sock_ops links and
/// programs, cgroups, XDP links and programs, then the network.
struct Lab {
    _servers: Servers,
    _sockops_links: Vec<SockopsLink>,
    client_ops: ServerIdOps,
    hosts: Vec<Host>,
    cg_client: Cgroup,
    cg_hosts: Vec<Cgroup>,
    _xdp_links: Vec<XdpLink>,
    lb: XdpLb,
    decaps: Vec<XdpDecap>,
    _pass: XdpPass,
    net: RoutedLb,
}

impl Lab {
    /// A client with the client role, one backend host per entry of
    /// `stamps` (its server_id), the LB with a `SERVER_ID` VIP on
    /// [`PORT_SID`] and a plain one on [`PORT_PLAIN`], no backends yet.
    fn new(tag: &str, stamps: &[u32]) -> Lab {
        let net = RoutedLb::new(tag, &NET, stamps.len()).expect("routed topology");
        let stop = Arc::new(AtomicBool::new(false));
        let mut servers = Servers {
            stop: stop.clone(),
            threads: Vec::new(),
        };
        let mut sockops_links = Vec::new();
        let mut hosts = Vec::new();
        let mut cg_hosts = Vec::new();
        let mut xdp_links = Vec::new();
        let mut decaps = Vec::new();

        let cg_client = Cgroup::new(&format!("{tag}c")).unwrap();
        let client_ops = ServerIdOps::load(ServerIdOpsConfig::client()).unwrap();
        sockops_links.push(client_ops.attach(cg_client.path()).unwrap());

        for (j, &stamp) in stamps.iter().enumerate() {
            let ns = &net.backends[j];
            let addr = IpAddr::V4(backend_addr(j));
            let decap = XdpDecap::load(XdpDecapConfig::default()).unwrap();
            decap.add_tunnel_addr(addr).unwrap();
            let link = ns.run(|| decap.attach("b0")).unwrap().unwrap();
            assert_eq!(link.mode(), XdpMode::Native, "xdp_decap native on veth");
            xdp_links.push(link);
            decaps.push(decap);

            let cg = Cgroup::new(&format!("{tag}h{j}")).unwrap();
            let ops = ServerIdOps::load(
                ServerIdOpsConfig::server(sid(stamp)).ports(&[PORT_SID, PORT_PLAIN]),
            )
            .unwrap();
            // Before listen(): a listener only stamps if the program saw it
            // start listening.
            sockops_links.push(ops.attach(cg.path()).unwrap());
            let listeners = sockets_in(Some(&cg), || {
                ns.run(|| {
                    [PORT_SID, PORT_PLAIN]
                        .map(|p| TcpListener::bind(SocketAddr::from((VIP, p))).unwrap())
                })
                .unwrap()
            });
            for l in listeners {
                servers.threads.push(serve(l, stamp, stop.clone()));
            }
            cg_hosts.push(cg);
            hosts.push(Host {
                addr,
                stamps: stamp,
                ops,
            });
        }

        let mut lb = XdpLb::load(
            XdpLbConfig::default()
                .local_mac(MAC_LB)
                .next_hop_mac(MAC_RTR)
                .lru_memory_bytes(1 << 20),
        )
        .unwrap();
        lb.add_vip(vip(PORT_SID), VipFlags::SERVER_ID).unwrap();
        lb.add_vip(vip(PORT_PLAIN), VipFlags::NONE).unwrap();
        let link = net.lb.run(|| lb.attach("l0")).unwrap().unwrap();
        assert_eq!(link.mode(), XdpMode::Native, "xdp_lb native on veth");
        xdp_links.push(link);
        // Native XDP_TX on a veth needs an XDP program on its peer.
        let pass = XdpPass::load(Default::default()).unwrap();
        xdp_links.push(net.router.run(|| pass.attach("rl")).unwrap().unwrap());

        Lab {
            _servers: servers,
            _sockops_links: sockops_links,
            client_ops,
            hosts,
            cg_client,
            cg_hosts,
            _xdp_links: xdp_links,
            lb,
            decaps,
            _pass: pass,
            net,
        }
    }

    /// Backend `j` as the LB sees it: weight 1, server_id `lb_sid` (0: none).
    fn backend(&self, j: usize, lb_sid: u32) -> Backend {
        let b = Backend::new(self.hosts[j].addr);
        match ServerId::new(lb_sid) {
            Some(id) => b.server_id(id),
            None => b.without_server_id(),
        }
    }

    /// Sets the backends of both VIPs.
    fn set_backends(&mut self, backends: &[Backend]) {
        for port in [PORT_SID, PORT_PLAIN] {
            self.lb.set_backends(&vip(port), backends).unwrap();
        }
    }

    fn stamp_of(&self, addr: IpAddr) -> u32 {
        self.hosts.iter().find(|h| h.addr == addr).unwrap().stamps
    }

    /// Packets host `j`'s `xdp_decap` decapsulated so far: what the LB sent it.
    fn decapped(&self, j: usize) -> u64 {
        self.decaps[j].stats().unwrap().decapsulated()
    }

    fn server_stats(&self, j: usize) -> ServerStats {
        self.hosts[j].ops.stats().unwrap().server
    }

    /// Opens `n` connections to the VIP on `port` from client ports
    /// `first_port..`, their sockets created in `cg` (`None`: the test's own
    /// cgroup, no sock_ops). Checks each lands where `ring` predicts (by the
    /// server's greeting) and completes one round trip.
    fn open(
        &self,
        cg: Option<&Cgroup>,
        port: u16,
        first_port: u16,
        n: u16,
        ring: &Ring,
    ) -> Vec<Conn> {
        let socks: Vec<Socket> = sockets_in(cg, || {
            self.net
                .client
                .run(move || {
                    (0..n)
                        .map(|k| {
                            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                            s.bind(&SocketAddrV4::new(CLIENT, first_port + k).into())
                                .unwrap();
                            s
                        })
                        .collect()
                })
                .unwrap()
        });
        let to = SocketAddr::from((VIP, port));
        let mut conns = Vec::new();
        for s in socks {
            s.connect_timeout(&to.into(), Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect to {to} through the LB: {e}"));
            let mut stream = TcpStream::from(s);
            stream.set_read_timeout(Some(RTT_LIMIT)).unwrap();
            let local = stream.local_addr().unwrap();
            let mut g = [0u8; 4];
            stream
                .read_exact(&mut g)
                .unwrap_or_else(|e| panic!("greeting on {local} -> {to}: {e}"));
            let greeted = u32::from_be_bytes(g);
            let backend = ring.predict(local, to);
            assert_eq!(
                greeted,
                self.stamp_of(backend),
                "{local} -> {to}: the SYN landed on the host stamping {greeted}, \
                 flowpin_maglev + flow_hash predict {backend}"
            );
            let mut c = Conn {
                stream,
                local,
                vip: to,
                backend,
                rounds: 0,
            };
            c.round_trip()
                .unwrap_or_else(|e| panic!("first round trip on {local}: {e}"));
            conns.push(c);
        }
        conns
    }

    /// Namespace names and cgroup paths, to check they are gone after drop.
    fn inventory(&self) -> (Vec<String>, Vec<PathBuf>) {
        let n = &self.net;
        let names = [&n.client, &n.router, &n.lb]
            .into_iter()
            .chain(&n.backends)
            .map(|ns| ns.name().to_string())
            .collect();
        let cgs = std::iter::once(&self.cg_client)
            .chain(&self.cg_hosts)
            .map(|c| c.path().to_path_buf())
            .collect();
        (names, cgs)
    }
}

fn vip(port: u16) -> Vip {
    Vip::new(IpAddr::V4(VIP), port, Proto::Tcp)
}

/// The ring `xdp_lb` builds for a backend list, rebuilt with
/// `flowpin_maglev` (key: the backend address as text, as `set_backends`
/// documents).
struct Ring {
    addrs: Vec<IpAddr>,
    table: Vec<u32>,
}

impl Ring {
    fn new(backends: &[Backend]) -> Ring {
        let keys: Vec<(String, u32)> = backends
            .iter()
            .map(|b| (b.addr.to_string(), b.weight))
            .collect();
        let t = Maglev::build_weighted(&keys, DEFAULT_RING_SIZE).unwrap();
        Ring {
            addrs: backends.iter().map(|b| b.addr).collect(),
            table: t.ring().to_vec(),
        }
    }

    /// The backend the ring gives the flow `client -> vip` (TCP).
    fn predict(&self, client: SocketAddr, vip: SocketAddr) -> IpAddr {
        let h = flow_hash(&FiveTuple {
            src: client.ip(),
            dst: vip.ip(),
            sport: client.port(),
            dport: vip.port(),
            proto: 6,
        });
        self.addrs[self.table[(h % DEFAULT_RING_SIZE) as usize] as usize]
    }
}

/// A client connection and the backend it was established with.
struct Conn {
    stream: TcpStream,
    local: SocketAddr,
    vip: SocketAddr,
    backend: IpAddr,
    rounds: u64,
}

fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl Conn {
    /// Sends 3000 bytes unique to this connection and round and reads them
    /// back. `Err`: reset, closed, stalled past [`RTT_LIMIT`] or corrupted.
    fn round_trip(&mut self) -> io::Result<()> {
        self.rounds += 1;
        let seed =
            (u64::from(self.local.port()) << 16) ^ (u64::from(self.vip.port()) << 40) ^ self.rounds;
        let data = payload(seed, 3000);
        self.stream.write_all(&data)?;
        let mut got = vec![0u8; data.len()];
        self.stream.read_exact(&mut got)?;
        if got != data {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "echoed bytes differ",
            ));
        }
        Ok(())
    }
}

/// One round trip on every connection, all at once; the error kinds.
fn round_all(conns: &mut [Conn]) -> Vec<Option<ErrorKind>> {
    std::thread::scope(|sc| {
        let hs: Vec<_> = conns
            .iter_mut()
            .map(|c| sc.spawn(move || c.round_trip().err().map(|e| e.kind())))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Asserts the outcome of a round after a change: exactly the connections
/// `expect_broken` says broke, each with a reset (the packets reached a
/// live host that had no such connection), the others echoed their bytes.
fn assert_outcome(
    what: &str,
    conns: &[Conn],
    results: &[Option<ErrorKind>],
    expect_broken: impl Fn(&Conn) -> bool,
) -> usize {
    let mut broken = 0;
    for (c, r) in conns.iter().zip(results) {
        if expect_broken(c) {
            broken += 1;
            assert_eq!(
                *r,
                Some(ErrorKind::ConnectionReset),
                "{what}: {} -> {} (established with {}) should have been reset",
                c.local,
                c.vip,
                c.backend
            );
        } else {
            assert_eq!(
                *r, None,
                "{what}: {} -> {} (established with {}) should have survived",
                c.local, c.vip, c.backend
            );
        }
    }
    broken
}

fn count(conns: &[Conn], f: impl Fn(&Conn) -> bool) -> u64 {
    conns.iter().filter(|c| f(c)).count() as u64
}

/// Drops the lab and checks no namespace or cgroup of it is left.
fn teardown(lab: Lab) {
    let (names, cgs) = lab.inventory();
    drop(lab);
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    for n in names {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str())),
            "namespace {n} left behind"
        );
    }
    for c in cgs {
        assert!(!c.exists(), "cgroup {} left behind", c.display());
    }
}

fn sid_delta(after: &VipStats, before: &VipStats) -> [u64; 5] {
    [
        after.sid_routed - before.sid_routed,
        after.sid_fallback_unknown - before.sid_fallback_unknown,
        after.sid_fallback_zero - before.sid_fallback_zero,
        after.sid_fallback_malformed - before.sid_fallback_malformed,
        after.sid_missing - before.sid_missing,
    ]
}

/// Two backends, 40 long-lived connections per kind; then a third backend
/// joins the ring and the connection table is wiped (an LB whose table never
/// saw the flows, e.g. after an ECMP reshuffle). Connections that echo the
/// server_id to a `SERVER_ID` VIP all survive; without the echo (client
/// without sock_ops) or without the VIP flag, exactly the flows the new ring
/// sends elsewhere break (as `flowpin_maglev` predicts, flow by flow). Then
/// one host is drained (weight 0): its echoing connections survive, new
/// connections avoid it.
#[test]
fn privileged_server_id_live_routes_by_server_id_after_the_ring_changed() {
    if !require_bpf("privileged_server_id_live_routes_by_server_id_after_the_ring_changed") {
        return;
    }
    const N: u16 = 40;
    let mut lab = Lab::new("sr", &[11, 22, 33]);
    let two = [lab.backend(0, 11), lab.backend(1, 22)];
    lab.set_backends(&two);
    let ring2 = Ring::new(&two);

    // Client role + SERVER_ID VIP; no sock_ops + SERVER_ID VIP; client role
    // + plain VIP.
    let mut echoing = lab.open(Some(&lab.cg_client), PORT_SID, 41000, N, &ring2);
    let mut silent = lab.open(None, PORT_SID, 42000, N, &ring2);
    let mut plain = lab.open(Some(&lab.cg_client), PORT_PLAIN, 43000, N, &ring2);
    for (j, stamp) in [(0, 11), (1, 22)] {
        let on = |cs: &[Conn]| count(cs, |c| c.backend == lab.hosts[j].addr);
        let s = lab.server_stats(j);
        assert_eq!(
            s.written,
            on(&echoing) + on(&silent) + on(&plain),
            "host {stamp}: one stamped SYN-ACK per connection: {s:?}"
        );
        assert_eq!(s.echo_ok, on(&echoing) + on(&plain), "host {stamp}: {s:?}");
        assert_eq!(s.echo_missing, on(&silent), "host {stamp}: {s:?}");
    }
    let cs = lab.client_ops.stats().unwrap().client;
    assert_eq!(cs.parsed, 2 * u64::from(N), "{cs:?}");
    assert_eq!(cs.missing, 0, "{cs:?}");
    assert_eq!(
        lab.server_stats(2).written,
        0,
        "host 33 is not in the ring yet"
    );

    let before_sid = lab.lb.vip_stats(&vip(PORT_SID)).unwrap();
    let before_plain = lab.lb.vip_stats(&vip(PORT_PLAIN)).unwrap();
    assert_eq!(lab.decapped(2), 0, "host 33 got nothing yet");

    // The change: a third backend, in a different order, and an empty table.
    let three = [lab.backend(2, 33), lab.backend(1, 22), lab.backend(0, 11)];
    lab.set_backends(&three);
    lab.lb.clear_connection_table().unwrap();
    let ring3 = Ring::new(&three);
    let moves = |c: &Conn| ring3.predict(c.local, c.vip) != c.backend;
    for (what, cs) in [
        ("echoing", &echoing),
        ("silent", &silent),
        ("plain", &plain),
    ] {
        assert!(
            count(cs, moves) > 0,
            "{what}: the new ring must move some of these flows, or this test proves nothing"
        );
    }

    let r_echoing = round_all(&mut echoing);
    let r_silent = round_all(&mut silent);
    let r_plain = round_all(&mut plain);
    let after_sid = lab.lb.vip_stats(&vip(PORT_SID)).unwrap();
    let after_plain = lab.lb.vip_stats(&vip(PORT_PLAIN)).unwrap();
    eprintln!(
        "ring change 2 -> 3 backends, table wiped, {N} connections each: \
         flows the ring moved: echoing {}, silent {}, plain {}",
        count(&echoing, moves),
        count(&silent, moves),
        count(&plain, moves)
    );

    // Routed by server_id: nothing breaks.
    assert_outcome("client role, SERVER_ID VIP", &echoing, &r_echoing, |_| {
        false
    });
    // Fallback (option missing) and plain VIP: exactly the moved flows break.
    let b_silent = assert_outcome("no sock_ops, SERVER_ID VIP", &silent, &r_silent, moves);
    let b_plain = assert_outcome("client role, plain VIP", &plain, &r_plain, moves);
    eprintln!(
        "broken: echoing 0/{N}, silent {b_silent}/{N}, plain {b_plain}/{N}; \
         SERVER_ID VIP {after_sid:?}"
    );
    assert!(b_silent > 0 && b_plain > 0);

    let [routed, unknown, zero, malformed, missing] = sid_delta(&after_sid, &before_sid);
    let n = u64::from(N);
    // Every echoing connection sent at least its data through the LB.
    assert!(routed >= n, "sid_routed +{routed}: {after_sid:?}");
    // Every silent connection sent its data; counted as missing, not routed.
    assert!(missing >= n, "sid_missing +{missing}: {after_sid:?}");
    assert_eq!((unknown, zero, malformed), (0, 0, 0), "{after_sid:?}");
    // The surviving silent flows fell back to the (wiped) table, then the ring.
    let survived_silent = n - b_silent as u64;
    assert!(
        after_sid.new_flows - before_sid.new_flows >= survived_silent,
        "{after_sid:?}"
    );
    // No server_id accounting on the plain VIP, whatever the packets carry.
    assert_eq!(
        sid_delta(&after_plain, &VipStats::default()),
        [0; 5],
        "{after_plain:?}"
    );
    assert!(after_plain.new_flows > before_plain.new_flows);
    // The echoing flows the ring moved still talk to their old host: the new
    // host accepted nothing. The broken flows the ring gave it did reach it
    // (their data, at least one packet each), and it reset them.
    assert_eq!(lab.server_stats(2).written, 0);
    let c = lab.hosts[2].addr;
    let to_c = |cs: &[Conn]| count(cs, |x| ring3.predict(x.local, x.vip) == c);
    assert!(
        lab.decapped(2) >= to_c(&silent) + to_c(&plain),
        "host 33 decapsulated {}",
        lab.decapped(2)
    );
    let g = lab.lb.global_stats().unwrap();
    assert_eq!(g.encap_error, 0, "{g:?}");
    assert_eq!(g.drop_unknown_backend, 0, "{g:?}");

    // Then host 11 is drained (weight 0: out of the ring, its server_id
    // still routed) and the table wiped again: its echoing connections
    // survive, the flows of the others go where the ring says, and new
    // connections never land on it.
    let keep = |cs: &mut Vec<Conn>, rs: &[Option<ErrorKind>]| {
        let mut ok = rs.iter().map(Option::is_none);
        cs.retain(|_| ok.next().unwrap());
    };
    keep(&mut silent, &r_silent);
    keep(&mut plain, &r_plain);
    for cs in [&mut echoing, &mut silent, &mut plain] {
        for c in cs.iter_mut() {
            c.backend = ring3.predict(c.local, c.vip);
        }
    }
    // The echoing ones stay with the host they were established with.
    for c in echoing.iter_mut() {
        c.backend = ring2.predict(c.local, c.vip);
    }
    let a = lab.hosts[0].addr;
    let drained = [
        lab.backend(2, 33),
        lab.backend(1, 22),
        Backend::new(a)
            .weight(0)
            .server_id(ServerId::new(11).expect("non-zero server_id")),
    ];
    lab.set_backends(&drained);
    lab.lb.clear_connection_table().unwrap();
    let ring_d = Ring::new(&drained);
    let moves_d = |c: &Conn| ring_d.predict(c.local, c.vip) != c.backend;
    let on_a = |cs: &[Conn]| count(cs, |c| c.backend == a);
    assert!(on_a(&echoing) > 0 && on_a(&silent) > 0 && on_a(&plain) > 0);
    let before = lab.lb.vip_stats(&vip(PORT_SID)).unwrap();
    let r_echoing = round_all(&mut echoing);
    let r_silent = round_all(&mut silent);
    let r_plain = round_all(&mut plain);
    let after = lab.lb.vip_stats(&vip(PORT_SID)).unwrap();
    assert_outcome("drained, client role", &echoing, &r_echoing, |_| false);
    let b_silent = assert_outcome("drained, no sock_ops", &silent, &r_silent, moves_d);
    let b_plain = assert_outcome("drained, plain VIP", &plain, &r_plain, moves_d);
    eprintln!(
        "host 11 drained: echoing on it {} survived; broken: silent {b_silent}/{} \
         (on it {}), plain {b_plain}/{} (on it {})",
        on_a(&echoing),
        silent.len(),
        on_a(&silent),
        plain.len(),
        on_a(&plain)
    );
    // Every flow still on the drained host without the echo broke.
    assert!(b_silent as u64 >= on_a(&silent) && b_plain as u64 >= on_a(&plain));
    let [routed, unknown, zero, malformed, _] = sid_delta(&after, &before);
    assert!(routed >= echoing.len() as u64, "{after:?}");
    assert_eq!((unknown, zero, malformed), (0, 0, 0), "{after:?}");
    let fresh = lab.open(Some(&lab.cg_client), PORT_SID, 44000, 20, &ring_d);
    assert_eq!(on_a(&fresh), 0, "no new connection on a drained host");

    drop((echoing, silent, plain, fresh));
    teardown(lab);
}

/// The fallbacks, live: a client without sock_ops (option missing), a host
/// stamping a server_id the LB does not know, and the server_id of a backend
/// removed while its connections are open. Each is counted under its
/// reason; the connections survive where the fallback (table, then ring)
/// lands on their backend, and the removed backend's ones are reset by the
/// host the ring now picks.
#[test]
fn privileged_server_id_live_fallbacks_missing_unknown_and_removed_backend() {
    if !require_bpf("privileged_server_id_live_fallbacks_missing_unknown_and_removed_backend") {
        return;
    }
    const N_ECHO: u16 = 30;
    const N_SILENT: u16 = 12;
    // Host 2 stamps 44, but the LB knows it without a server_id.
    let mut lab = Lab::new("sf", &[11, 22, 44]);
    let (a, b, d) = (lab.hosts[0].addr, lab.hosts[1].addr, lab.hosts[2].addr);
    let three = [lab.backend(0, 11), lab.backend(1, 22), lab.backend(2, 0)];
    lab.set_backends(&three);
    let ring = Ring::new(&three);
    let start = lab.lb.vip_stats(&vip(PORT_SID)).unwrap();

    let mut echoing = lab.open(Some(&lab.cg_client), PORT_SID, 41000, N_ECHO, &ring);
    let mut silent = lab.open(None, PORT_SID, 42000, N_SILENT, &ring);
    let on = |cs: &[Conn], x: IpAddr| count(cs, |c| c.backend == x);
    let (e_a, e_b, e_d) = (on(&echoing, a), on(&echoing, b), on(&echoing, d));
    let (s_b, s_silent) = (on(&silent, b), u64::from(N_SILENT));
    eprintln!("echoing on 11/22/unknown 44: {e_a}/{e_b}/{e_d}; silent on 22: {s_b}/{s_silent}");
    assert!(e_d > 0 && e_b > 0 && s_b > 0, "pick other client ports");

    // 1. Each reason counted; every connection worked (open() did a round
    //    trip): handshake ACK + data at least, per connection.
    let st1 = lab.lb.vip_stats(&vip(PORT_SID)).unwrap();
    let [routed, unknown, zero, malformed, missing] = sid_delta(&st1, &start);
    assert!(routed >= 2 * (e_a + e_b), "{st1:?}");
    assert!(unknown >= 2 * e_d, "id 44 is unknown to the LB: {st1:?}");
    assert!(missing >= 2 * s_silent, "{st1:?}");
    assert_eq!((zero, malformed), (0, 0), "{st1:?}");
    let s44 = lab.server_stats(2);
    assert_eq!(s44.echo_ok, e_d, "the client echoed 44: {s44:?}");

    // 2. Table wiped, ring unchanged: the fallbacks take the ring, which
    //    still gives their backend.
    lab.lb.clear_connection_table().unwrap();
    let r2_echo = round_all(&mut echoing);
    let r2_silent = round_all(&mut silent);
    assert_outcome("table wiped, echoing", &echoing, &r2_echo, |_| false);
    assert_outcome("table wiped, silent", &silent, &r2_silent, |_| false);
    let st2 = lab.lb.vip_stats(&vip(PORT_SID)).unwrap();
    let [routed, unknown, _, _, missing] = sid_delta(&st2, &st1);
    assert!(routed >= e_a + e_b, "{st2:?}");
    assert!(unknown >= e_d, "{st2:?}");
    assert!(missing >= s_silent, "{st2:?}");
    assert!(
        st2.new_flows - st1.new_flows >= e_d + s_silent,
        "the fallbacks found an empty table and took the ring: {st2:?}"
    );

    // 3. Backend 22 removed while its connections are open; its clients
    //    keep echoing 22.
    // Removed from both VIPs, so the LB forgets the host: a table entry of
    // a host still serving another VIP would keep its flows there.
    let two = [lab.backend(0, 11), lab.backend(2, 0)];
    lab.set_backends(&two);
    let ring2 = Ring::new(&two);
    // A flow of a remaining host that the new ring gives to another host
    // survives only through the connection table, which is per CPU: not
    // asserted (there are normally none: Maglev keeps a remaining
    // backend's slots). Flows routed by server_id do not depend on it.
    let uncertain = |c: &Conn, by_sid: bool| {
        c.backend != b && !(by_sid && c.backend == a) && ring2.predict(c.local, c.vip) != c.backend
    };
    let b_decapped = lab.decapped(1);
    let r3_echo = round_all(&mut echoing);
    let r3_silent = round_all(&mut silent);
    let st3 = lab.lb.vip_stats(&vip(PORT_SID)).unwrap();
    assert_eq!(
        lab.decapped(1),
        b_decapped,
        "the LB sent nothing more to the removed host"
    );
    let n_uncertain =
        count(&echoing, |c| uncertain(c, true)) + count(&silent, |c| uncertain(c, false));
    eprintln!("after removing 22: flows of 11/44 the new ring moves (not asserted): {n_uncertain}");
    for (what, cs, rs, by_sid) in [
        ("echoing", &echoing, &r3_echo, true),
        ("silent", &silent, &r3_silent, false),
    ] {
        for (c, r) in cs.iter().zip(rs) {
            if uncertain(c, by_sid) {
                continue;
            }
            // The removed backend's connections reach a live host (the
            // ring's pick), which resets them; the others are unharmed.
            let want = (c.backend == b).then_some(ErrorKind::ConnectionReset);
            assert_eq!(
                *r, want,
                "{what}: {} (established with {}) after 22 was removed",
                c.local, c.backend
            );
        }
    }
    let [routed, unknown, zero, malformed, _] = sid_delta(&st3, &st2);
    assert!(routed >= e_a, "{st3:?}");
    // The removed backend's id is unknown now, like 44.
    assert!(unknown >= e_b + e_d, "{st3:?}");
    assert_eq!((zero, malformed), (0, 0), "{st3:?}");
    // Its flows (echoing or not) went to the ring: the table's entries
    // point at a backend that is gone.
    assert!(st3.new_flows - st2.new_flows >= e_b + s_b, "{st3:?}");
    let g = lab.lb.global_stats().unwrap();
    assert_eq!(g.drop_unknown_backend, 0, "{g:?}");
    assert_eq!(g.encap_error, 0, "{g:?}");

    drop((echoing, silent));
    teardown(lab);
}
