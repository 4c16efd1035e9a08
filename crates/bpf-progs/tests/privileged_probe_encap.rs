//! Privileged, live: health probes through the data path (`probe_encap`).
//!
//! The routed topology of `flowpin_testing::RoutedLb` (client, router, LB,
//! backends; the VIP on every backend's `lo`, routed by the router to the
//! LB). The LB's namespace gets a default route via the router, so a socket
//! there connecting to the VIP sends its SYN out of `l0`, where
//! `probe_encap` (TCX egress) encapsulates a marked socket's packets (IPIP)
//! towards the backend its mark names. The router forwards the outer
//! packet to that backend, whose `xdp_decap` strips it; the service on the
//! VIP answers straight back to the LB (DSR).
//!
//! Backend 0 runs `xdp_decap`; backend 1 does not (its decap detached).
//! A service listens on the VIP on both. A probe to backend 0 connects and
//! reads the greeting; a probe to backend 1 fails; an unmarked connect to
//! the VIP from the LB host never reaches a backend (the router routes the
//! VIP back to the LB).
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowpin_bpf_progs::probe_encap::{probe_mark, Link, ProbeEncap, ProbeEncapConfig};
use flowpin_bpf_progs::xdp_decap::{XdpDecap, XdpDecapConfig};
use flowpin_testing::{disable_tx_checksum_offload, require_bpf, RoutedLb, RoutedLbConfig};
use socket2::{Domain, SockAddr, Socket, Type};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 221, 0, 1);
const NET: RoutedLbConfig = RoutedLbConfig {
    subnet: 121,
    vip: VIP,
    lb_mac: [0x02, 0x5e, 0, 0, 0x21, 2],
    router_mac: [0x02, 0x5e, 0, 0, 0x21, 1],
};
const PORT: u16 = 8090;

/// A TCP connect to the VIP with `mark` (None: unmarked); Ok(greeting).
fn probe(mark: Option<u32>) -> std::io::Result<u8> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    if let Some(m) = mark {
        s.set_mark(m)?;
    }
    s.connect_timeout(
        &SockAddr::from(SocketAddr::from((VIP, PORT))),
        Duration::from_millis(700),
    )?;
    s.set_read_timeout(Some(Duration::from_millis(700)))?;
    let mut s: std::net::TcpStream = s.into();
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    Ok(b[0])
}

#[test]
fn privileged_probe_encap_reaches_the_service_on_the_vip_through_the_tunnel() {
    if !require_bpf("privileged_probe_encap_reaches_the_service_on_the_vip_through_the_tunnel") {
        return;
    }
    let net = RoutedLb::new("fppe", &NET, 2).unwrap();
    // Backend 0 decapsulates; backend 1 has no decap attached.
    let decap = XdpDecap::load(XdpDecapConfig::default()).unwrap();
    decap
        .add_tunnel_addr(IpAddr::V4(NET.backend_addr(0)))
        .unwrap();
    let _decap_link = net.backends[0].run(|| decap.attach("b0")).unwrap().unwrap();

    // The service: on the VIP only, greets with its backend number.
    let stop = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    for j in 0..2u8 {
        let l = net.backends[usize::from(j)]
            .run(|| TcpListener::bind((VIP, PORT)).unwrap())
            .unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = stop.clone();
        servers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = std::io::Write::write_all(&mut s, &[j + 1]);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }

    net.lb
        .ip(&[
            "route",
            "add",
            "default",
            "via",
            &format!("10.{}.1.1", NET.subnet),
        ])
        .unwrap();
    net.lb
        .run(|| disable_tx_checksum_offload("l0"))
        .unwrap()
        .unwrap();
    let probes = ProbeEncap::load(ProbeEncapConfig::default().max_backends(16)).unwrap();
    probes
        .set_backend(0, IpAddr::V4(NET.backend_addr(0)))
        .unwrap();
    probes
        .set_backend(1, IpAddr::V4(NET.backend_addr(1)))
        .unwrap();
    assert_eq!(
        probes.backend(1).unwrap(),
        Some(IpAddr::V4(NET.backend_addr(1)))
    );
    assert_eq!(probes.backend(2).unwrap(), None);
    assert!(probes.set_backend(16, IpAddr::V4(VIP)).is_err());
    let mut link = net.lb.run(|| probes.attach_ifname("l0")).unwrap().unwrap();

    let lb = &net.lb;
    // Through the tunnel to backend 0: the service on the VIP answers.
    assert_eq!(lb.run(|| probe(Some(probe_mark(0)))).unwrap().unwrap(), 1);
    // Backend 1 has no decap: the encapsulated SYN is never seen by the service.
    assert!(lb.run(|| probe(Some(probe_mark(1)))).unwrap().is_err());
    // No backend at index 5: dropped at once.
    assert!(lb.run(|| probe(Some(probe_mark(5)))).unwrap().is_err());
    // Unmarked: not a probe, goes to the router, which routes the VIP back.
    assert!(lb.run(|| probe(None)).unwrap().is_err());
    let st = probes.stats().unwrap();
    assert!(st.encap_ipip >= 3, "{st:?}");
    assert!(st.dropped_no_backend >= 1, "{st:?}");
    assert!(st.not_probe >= 1, "{st:?}");
    assert!(decap.stats().unwrap().decapsulated() >= 2);

    // Attach decap on backend 1: now it passes too.
    let decap1 = XdpDecap::load(XdpDecapConfig::default()).unwrap();
    decap1
        .add_tunnel_addr(IpAddr::V4(NET.backend_addr(1)))
        .unwrap();
    let mut decap1_link = net.backends[1]
        .run(|| decap1.attach("b0"))
        .unwrap()
        .unwrap();
    assert_eq!(lb.run(|| probe(Some(probe_mark(1)))).unwrap().unwrap(), 2);
    // ... and detached again, it fails again.
    flowpin_bpf_progs::link::Link::detach(&mut decap1_link).unwrap();
    assert!(lb.run(|| probe(Some(probe_mark(1)))).unwrap().is_err());

    // Detached, the probe program encapsulates nothing.
    link.detach().unwrap();
    assert!(lb.run(|| probe(Some(probe_mark(0)))).unwrap().is_err());

    stop.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().unwrap();
    }
}
