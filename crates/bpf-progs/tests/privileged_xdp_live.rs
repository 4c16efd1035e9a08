//! Privileged, live: real packets through XDP programs attached in native
//! mode to veth interfaces in network namespaces.
//!
//! * `privileged_xdp_live_decap_*`: a client namespace sends tunnelled UDP
//!   datagrams (IPIP, IP6IP6, IPv4-in-IPv6, built by the client kernel's raw
//!   IP sockets around an inner packet built with etherparse) to the
//!   backend's tunnel address; `xdp_decap` on the backend's veth strips the
//!   outer header, the backend's UDP server on the VIP (on `lo`) answers and
//!   the reply goes straight back to the client (DSR). Without `xdp_decap`
//!   nothing arrives (the backend has no tunnel device).
//!
//! Every namespace and link is a guard: deleted on every exit path.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use etherparse::PacketBuilder;
use flowpin_bpf_progs::xdp_decap::{DecapForm, XdpDecap, XdpDecapConfig, XdpMode};
use flowpin_testing::{disable_tx_checksum_offload, require_bpf, NetNs, VethPair};
use socket2::{Domain, Protocol, Socket, Type};

/// Client and backend namespaces joined by one veth pair; the VIP on the
/// backend's `lo`.
struct DecapTopo {
    client: NetNs,
    backend: NetNs,
    _veth: VethPair,
}

const C4: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 1);
const B4: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 2);
const VIP4: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const C6: Ipv6Addr = Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 1);
const B6: Ipv6Addr = Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 2);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd02, 0, 0, 0, 0, 0, 0, 1);

impl DecapTopo {
    fn new() -> Self {
        let client = NetNs::new("dlc").unwrap();
        let backend = NetNs::new("dlb").unwrap();
        no_dad(&client);
        no_dad(&backend);
        let veth = VethPair::new(&client, "c0", &backend, "b0").unwrap();
        client
            .ip(&["addr", "add", "10.101.0.1/24", "dev", "c0"])
            .unwrap();
        client
            .ip(&["addr", "add", "fd01::1/64", "dev", "c0", "nodad"])
            .unwrap();
        backend
            .ip(&["addr", "add", "10.101.0.2/24", "dev", "b0"])
            .unwrap();
        backend
            .ip(&["addr", "add", "fd01::2/64", "dev", "b0", "nodad"])
            .unwrap();
        backend
            .ip(&["addr", "add", "10.201.0.1/32", "dev", "lo"])
            .unwrap();
        backend
            .ip(&["addr", "add", "fd02::1/128", "dev", "lo"])
            .unwrap();
        // Replies come from the VIP: give the client a route back to it so
        // reverse-path filtering (if enabled) accepts them.
        client
            .ip(&["route", "add", "10.201.0.1/32", "via", "10.101.0.2"])
            .unwrap();
        client
            .ip(&["-6", "route", "add", "fd02::1/128", "via", "fd01::2"])
            .unwrap();
        for ns in [&client, &backend] {
            for k in ["all", "default"] {
                ns.sysctl(&format!("net.ipv4.conf.{k}.rp_filter"), "0")
                    .unwrap();
            }
        }
        DecapTopo {
            client,
            backend,
            _veth: veth,
        }
    }
}

fn no_dad(ns: &NetNs) {
    for k in ["all", "default"] {
        ns.sysctl(&format!("net.ipv6.conf.{k}.accept_dad"), "0")
            .unwrap();
    }
}

fn inner_udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let b = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    }
    .udp(src.port(), dst.port());
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// A raw IP socket in the client namespace whose kernel wraps every payload
/// in an outer header of `outer` family with protocol `proto` (4 or 41).
fn tunnel_socket(ns: &NetNs, outer: Domain, proto: i32) -> Socket {
    ns.run(move || Socket::new(outer, Type::RAW, Some(Protocol::from(proto))))
        .unwrap()
        .unwrap()
}

/// Sends `n` tunnelled datagrams from the client's UDP socket address to
/// the VIP server, checks each arrives with its payload and that the reply
/// comes back to the client. Returns how many made it both ways.
fn exchange(
    tun: &Socket,
    tunnel_dst: IpAddr,
    client: &UdpSocket,
    server: &UdpSocket,
    n: usize,
) -> usize {
    let src = client.local_addr().unwrap();
    let dst = server.local_addr().unwrap();
    let mut ok = 0;
    for i in 0..n {
        let payload = format!("datagram {i} from {src} to {dst}").into_bytes();
        let pkt = inner_udp(src, dst, &payload);
        tun.send_to(&pkt, &SocketAddr::new(tunnel_dst, 0).into())
            .unwrap();
        let mut buf = [0u8; 2048];
        let Ok((len, from)) = server.recv_from(&mut buf) else {
            continue;
        };
        assert_eq!(
            &buf[..len],
            &payload[..],
            "the server got the inner payload"
        );
        assert_eq!(from, src, "the server sees the client's address");
        let mut reply = b"echo: ".to_vec();
        reply.extend_from_slice(&payload);
        server.send_to(&reply, from).unwrap();
        let (len, from) = client
            .recv_from(&mut buf)
            .expect("DSR reply reaches the client");
        assert_eq!(from, dst, "the reply comes from the VIP");
        assert_eq!(&buf[..len], &reply[..]);
        ok += 1;
    }
    ok
}

fn udp_in(ns: &NetNs, addr: SocketAddr) -> UdpSocket {
    let s = ns.run(move || UdpSocket::bind(addr)).unwrap().unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

#[test]
fn privileged_xdp_live_decap_udp_all_forms_native_veth() {
    if !require_bpf("privileged_xdp_live_decap_udp_all_forms_native_veth") {
        return;
    }
    let t = DecapTopo::new();
    let decap = XdpDecap::load(XdpDecapConfig::default()).unwrap();
    decap.add_tunnel_addr(IpAddr::V4(B4)).unwrap();
    decap.add_tunnel_addr(IpAddr::V6(B6)).unwrap();

    let server4 = udp_in(&t.backend, SocketAddr::new(VIP4.into(), 7000));
    let server6 = udp_in(&t.backend, SocketAddr::new(VIP6.into(), 7000));
    let client4 = udp_in(&t.client, SocketAddr::new(C4.into(), 0));
    let client6 = udp_in(&t.client, SocketAddr::new(C6.into(), 0));
    let ipip = tunnel_socket(&t.client, Domain::IPV4, 4);
    let ip6ip6 = tunnel_socket(&t.client, Domain::IPV6, 41);
    let ip4in6 = tunnel_socket(&t.client, Domain::IPV6, 4);

    // Control: without xdp_decap the backend cannot open the tunnel.
    assert_eq!(
        exchange(&ipip, B4.into(), &client4, &server4, 1),
        0,
        "IPIP without decap"
    );
    assert_eq!(
        exchange(&ip6ip6, B6.into(), &client6, &server6, 1),
        0,
        "IP6IP6 without decap"
    );

    let link = t.backend.run(|| decap.attach("b0")).unwrap().unwrap();
    assert_eq!(link.mode(), XdpMode::Native, "veth has native XDP");
    let before = decap.stats().unwrap();

    const N: usize = 20;
    assert_eq!(exchange(&ipip, B4.into(), &client4, &server4, N), N, "IPIP");
    assert_eq!(
        exchange(&ip6ip6, B6.into(), &client6, &server6, N),
        N,
        "IP6IP6"
    );
    assert_eq!(
        exchange(&ip4in6, B6.into(), &client4, &server4, N),
        N,
        "IPv4 in IPv6"
    );

    let s = decap.stats().unwrap();
    let n = N as u64;
    assert_eq!(s.decapsulated_form(DecapForm::Ipip) - before.decap_ipip, n);
    assert_eq!(
        s.decapsulated_form(DecapForm::Ip6Ip6) - before.decap_ip6ip6,
        n
    );
    assert_eq!(
        s.decapsulated_form(DecapForm::Ip4InIp6) - before.decap_4in6,
        n
    );
    assert_eq!(s.dropped(), 0, "{s:?}");
    // Plain traffic to the backend's own address passes untouched.
    let plain = udp_in(&t.backend, SocketAddr::new(B4.into(), 7001));
    client4
        .send_to(b"plain", plain.local_addr().unwrap())
        .unwrap();
    let mut buf = [0u8; 16];
    let (len, _) = plain.recv_from(&mut buf).expect("plain UDP passes");
    assert_eq!(&buf[..len], b"plain");
    let s = decap.stats().unwrap();
    assert!(s.passed_not_tunnel > before.passed_not_tunnel, "{s:?}");

    // A tunnel address that is not configured: passed to the stack, which
    // cannot open it, so nothing arrives.
    assert!(decap.remove_tunnel_addr(IpAddr::V4(B4)).unwrap());
    assert_eq!(
        exchange(&ipip, B4.into(), &client4, &server4, 1),
        0,
        "removed tunnel address"
    );
    assert_eq!(
        decap.stats().unwrap().passed_not_ours - s.passed_not_ours,
        1
    );

    // Detach on drop: the datagrams stop arriving even with the address back.
    decap.add_tunnel_addr(IpAddr::V4(B4)).unwrap();
    assert_eq!(
        exchange(&ipip, B4.into(), &client4, &server4, 1),
        1,
        "address back"
    );
    drop(link);
    assert_eq!(
        exchange(&ipip, B4.into(), &client4, &server4, 1),
        0,
        "after detach"
    );
}

// ------------------------------------------------------------------------
// The full data path: client → xdp_lb (encap, XDP_TX) → xdp_decap → TCP
// server on the VIP; replies straight back to the client (DSR).
//
// One L2 segment, like a Katran deployment ("one-armed" LB): a bridge in a
// `sw` namespace joins the client, the LB and the backend. The client
// routes the VIP via the LB's address; xdp_lb on the LB's veth `l0`
// (native mode) encapsulates towards the backend's tunnel address, sets the
// next-hop MAC to the backend's and sends the frame back out of `l0`
// (XDP_TX; the peer `swl` carries xdp_pass so native XDP_TX works on veth).
// The bridge delivers it to the backend, whose xdp_decap on `b0` (native)
// strips the outer header; the VIP is on the backend's `lo`. The backend's
// replies (source VIP) go over the bridge straight to the client.
//
//   client c0 ─ swc ┐
//   lb     l0 ─ swl ┼ br0 (ns sw)
//   backend b0 ─ swb ┘
//
// `swl` computes TCP checksums in software (tx checksum offload off): XDP_TX
// sends raw frames, so a checksum left for "hardware" (CHECKSUM_PARTIAL, as
// veth does) would never be filled in.
// ------------------------------------------------------------------------

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Instant;

use flowpin_bpf_progs::xdp_lb::{Backend, Proto, Vip, VipFlags, XdpLb, XdpLbConfig};
use flowpin_bpf_progs::xdp_pass::XdpPass;

const MAC_C: [u8; 6] = [0x02, 0xf1, 0, 0, 0, 0x01];
const MAC_L: [u8; 6] = [0x02, 0xf1, 0, 0, 0, 0x02];
const MAC_B: [u8; 6] = [0x02, 0xf1, 0, 0, 0, 0x03];
const LB_BE4: Ipv4Addr = Ipv4Addr::new(10, 102, 0, 3);
const LB_VIP4: Ipv4Addr = Ipv4Addr::new(10, 202, 0, 1);
const LB_BE6: Ipv6Addr = Ipv6Addr::new(0xfd03, 0, 0, 0, 0, 0, 0, 3);
const LB_VIP6: Ipv6Addr = Ipv6Addr::new(0xfd04, 0, 0, 0, 0, 0, 0, 1);

struct LbTopo {
    _veths: Vec<VethPair>,
    client: NetNs,
    lb: NetNs,
    backend: NetNs,
    sw: NetNs,
}

impl LbTopo {
    fn new() -> Self {
        let client = NetNs::new("lvc").unwrap();
        let lb = NetNs::new("lvl").unwrap();
        let backend = NetNs::new("lvb").unwrap();
        let sw = NetNs::new("lvs").unwrap();
        // No duplicate address detection on the links made below: IPv6
        // (link-local included) is usable at once.
        for ns in [&client, &lb, &backend, &sw] {
            no_dad(ns);
        }
        sw.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
        sw.ip(&["link", "set", "br0", "up"]).unwrap();
        let mut veths = Vec::new();
        for (ns, dev, port, mac) in [
            (&client, "c0", "swc", MAC_C),
            (&lb, "l0", "swl", MAC_L),
            (&backend, "b0", "swb", MAC_B),
        ] {
            veths.push(VethPair::new(ns, dev, &sw, port).unwrap());
            ns.set_mac(dev, mac).unwrap();
            sw.ip(&["link", "set", port, "master", "br0"]).unwrap();
        }
        for (ns, n) in [(&client, 1), (&lb, 2), (&backend, 3)] {
            let dev = ["c0", "l0", "b0"][n - 1];
            ns.ip(&["addr", "add", &format!("10.102.0.{n}/24"), "dev", dev])
                .unwrap();
            ns.ip(&["addr", "add", &format!("fd03::{n}/64"), "dev", dev, "nodad"])
                .unwrap();
            for k in ["all", "default"] {
                ns.sysctl(&format!("net.ipv4.conf.{k}.rp_filter"), "0")
                    .unwrap();
            }
        }
        backend
            .ip(&["addr", "add", "10.202.0.1/32", "dev", "lo"])
            .unwrap();
        backend
            .ip(&["addr", "add", "fd04::1/128", "dev", "lo"])
            .unwrap();
        // The client reaches the VIPs through the LB.
        client
            .ip(&["route", "add", "10.202.0.1/32", "via", "10.102.0.2"])
            .unwrap();
        client
            .ip(&["-6", "route", "add", "fd04::1/128", "via", "fd03::2"])
            .unwrap();
        // Leave room for the outer header on the 1500-byte segment.
        client.ip(&["link", "set", "c0", "mtu", "1400"]).unwrap();
        sw.run(|| disable_tx_checksum_offload("swl"))
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}"));
        LbTopo {
            _veths: veths,
            client,
            lb,
            backend,
            sw,
        }
    }
}

/// Accepts one connection on `listener` (non-blocking poll, 20 s deadline)
/// and echoes everything until EOF. Returns the bytes echoed.
fn echo_one(listener: TcpListener) -> std::thread::JoinHandle<std::io::Result<usize>> {
    std::thread::spawn(move || {
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut s, _) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        };
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n])?;
            total += n;
        }
        s.shutdown(Shutdown::Write)?;
        Ok(total)
    })
}

/// Connects from the client namespace to `vip`, sends `data` and checks the
/// same bytes come back.
fn tcp_echo_through_lb(t: &LbTopo, vip: SocketAddr, data: &[u8]) {
    let listener = t
        .backend
        .run(move || TcpListener::bind(vip))
        .unwrap()
        .unwrap();
    let server = echo_one(listener);
    let mut stream = t
        .client
        .run(move || TcpStream::connect_timeout(&vip, Duration::from_secs(5)))
        .unwrap()
        .unwrap_or_else(|e| panic!("TCP connect to {vip} through the LB: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let to_send = data.to_vec();
    let w = std::thread::spawn(move || {
        writer.write_all(&to_send)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut got = Vec::with_capacity(data.len());
    stream
        .read_to_end(&mut got)
        .unwrap_or_else(|e| panic!("reading the echo from {vip} after {} bytes: {e}", got.len()));
    w.join().unwrap().unwrap();
    assert_eq!(got.len(), data.len(), "echoed length via {vip}");
    assert!(got == data, "echoed bytes via {vip} differ");
    assert_eq!(server.join().unwrap().unwrap(), data.len());
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn privileged_xdp_live_tcp_through_xdp_lb_and_xdp_decap_dsr() {
    if !require_bpf("privileged_xdp_live_tcp_through_xdp_lb_and_xdp_decap_dsr") {
        return;
    }
    let t = LbTopo::new();

    // Backend: decap for its tunnel addresses.
    let decap = XdpDecap::load(XdpDecapConfig::default()).unwrap();
    decap.add_tunnel_addr(IpAddr::V4(LB_BE4)).unwrap();
    decap.add_tunnel_addr(IpAddr::V6(LB_BE6)).unwrap();
    let decap_link = t.backend.run(|| decap.attach("b0")).unwrap().unwrap();
    assert_eq!(decap_link.mode(), XdpMode::Native);

    // LB: three VIPs, one per encapsulation form.
    let mut lb = XdpLb::load(
        XdpLbConfig::default()
            .local_mac(MAC_L)
            .next_hop_mac(MAC_B)
            .mtu(1500)
            .lru_memory_bytes(1 << 20),
    )
    .unwrap();
    let vip_ipip = Vip::new(LB_VIP4.into(), 8080, Proto::Tcp);
    let vip_ip6ip6 = Vip::new(LB_VIP6.into(), 8080, Proto::Tcp);
    let vip_4in6 = Vip::new(LB_VIP4.into(), 8081, Proto::Tcp);
    for (vip, be) in [
        (vip_ipip, IpAddr::V4(LB_BE4)),
        (vip_ip6ip6, IpAddr::V6(LB_BE6)),
        (vip_4in6, IpAddr::V6(LB_BE6)),
    ] {
        lb.add_vip(vip, VipFlags::NONE).unwrap();
        lb.set_backends(&vip, &[Backend::new(be)]).unwrap();
    }
    let lb_link = t.lb.run(|| lb.attach("l0")).unwrap().unwrap();
    assert_eq!(lb_link.mode(), XdpMode::Native, "xdp_lb native on veth");
    let pass = XdpPass::load(Default::default()).unwrap();
    let _pass_link = t.sw.run(|| pass.attach("swl")).unwrap().unwrap();

    const MIB: usize = 1 << 20;
    for (i, (vip, form)) in [
        (vip_ipip, DecapForm::Ipip),
        (vip_ip6ip6, DecapForm::Ip6Ip6),
        (vip_4in6, DecapForm::Ip4InIp6),
    ]
    .into_iter()
    .enumerate()
    {
        let before_lb = lb.vip_stats(&vip).unwrap();
        let before = decap.stats().unwrap();
        let data = pseudo_random(MIB, 0x5eed + i as u64);
        tcp_echo_through_lb(&t, SocketAddr::new(vip.addr, vip.port), &data);

        let vs = lb.vip_stats(&vip).unwrap();
        let lb_packets = vs.packets - before_lb.packets;
        let ds = decap.stats().unwrap();
        let decapped = ds.decapsulated_form(form) - before.decapsulated_form(form);
        eprintln!("{vip}: xdp_lb packets {lb_packets} (new flows {}, lru hits {}), xdp_decap {form:?} {decapped}",
            vs.new_flows - before_lb.new_flows, vs.lru_hit - before_lb.lru_hit);
        // 1 MiB at an MSS of at most 1360 bytes is at least 771 segments,
        // every one of them through xdp_lb and xdp_decap.
        let min_segments = (MIB / 1360) as u64;
        assert!(
            lb_packets >= min_segments,
            "{vip}: xdp_lb saw {lb_packets} packets: {vs:?}"
        );
        assert!(
            decapped >= min_segments,
            "{vip}: xdp_decap {form:?} {decapped}: {ds:?}"
        );
        assert!(
            decapped <= lb_packets,
            "{vip}: more decapsulated than the LB sent"
        );
        // The SYN picks the backend on the ring (a retransmitted SYN would
        // too); every later packet of the flow hits the connection table.
        assert!(vs.new_flows - before_lb.new_flows >= 1, "{vip}: {vs:?}");
        assert!(
            vs.lru_hit - before_lb.lru_hit >= min_segments,
            "{vip}: {vs:?}"
        );
    }
    let g = lb.global_stats().unwrap();
    assert_eq!(g.encap_error, 0, "{g:?}");
    assert_eq!(g.icmp_too_big_sent, 0, "{g:?}");
    let ds = decap.stats().unwrap();
    assert_eq!(ds.dropped(), 0, "{ds:?}");
    assert_eq!(ds.passed_not_ours, 0, "{ds:?}");
}
