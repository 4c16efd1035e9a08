//! Privileged, live: real quinn endpoints through `xdp_lb` in network
//! namespaces, and through a BPF-steered reuseport group during a release.
//!
//! ```text
//!   client c0 ── rc ┐
//!                   router ── rl ── l0 lb          (xdp_lb native on l0, XDP_TX)
//!   backend j b0 ── rbj ┘                           (xdp_decap on b0, VIP on lo)
//! ```
//!
//! Each backend namespace runs quinn servers whose CIDs carry its server_id
//! (flowpin-quinn). The LB has the VIP twice: port 443 with the QUIC flag
//! (routed by CID) and port 444 without (connection table + Maglev ring).
//! Clients rebind to a new source port (NAT rebinding): the 4-tuple changes,
//! the LB's connection table misses, so only the CID can find the server.
//! A server that receives a packet of a connection it does not have drops it
//! (its generator's `validate` rejects the foreign CID), so a misrouted
//! connection stalls; a stall of 2.5 s counts as broken.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flowpin_bpf_progs::xdp_decap::{XdpDecap, XdpDecapConfig};
use flowpin_bpf_progs::xdp_lb::{
    Backend, Proto, Vip, VipFlags, XdpLb, XdpLbConfig, XdpLink, XdpMode,
};
use flowpin_bpf_progs::xdp_pass::XdpPass;
use flowpin_quinn::{FlowpinCidGenerator, DEFAULT_CID_LEN};
use flowpin_sk_reuseport::{bind_reuseport, GroupConfig, Proto as RpProto, ReuseportGroup};
use flowpin_tcp_opt::ServerId;
use flowpin_testing::{require_bpf, unique_name, NetNs, RoutedLb, RoutedLbConfig};
use support::{Conn, Tls};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 1);
const PORT_CID: u16 = 443;
const PORT_PLAIN: u16 = 444;
const MAC_LB: [u8; 6] = [0x02, 0x5f, 0, 0, 1, 2];
const MAC_RTR: [u8; 6] = [0x02, 0x5f, 0, 0, 1, 1];
/// Client, router, LB and backends in 10.111.0.0/16.
const NET: RoutedLbConfig = RoutedLbConfig {
    subnet: 111,
    vip: VIP,
    lb_mac: MAC_LB,
    router_mac: MAC_RTR,
};
const CLIENT: Ipv4Addr = NET.client_addr();
const BACKENDS: usize = 2;
/// Connections per VIP port.
const CONNS: usize = 24;

fn backend_addr(j: usize) -> Ipv4Addr {
    NET.backend_addr(j)
}

fn server_id(j: usize) -> ServerId {
    ServerId::new(101 + j as u32).unwrap()
}

fn udp_in(ns: &NetNs, addr: SocketAddr) -> UdpSocket {
    ns.run(move || UdpSocket::bind(addr)).unwrap().unwrap()
}

#[test]
fn privileged_quinn_rebinding_client_keeps_its_connection_only_with_cid_routing() {
    if !require_bpf("privileged_quinn_rebinding_client_keeps_its_connection_only_with_cid_routing")
    {
        return;
    }
    let net = RoutedLb::new("qlive", &NET, BACKENDS).expect("routed topology");
    let mut xdp_links: Vec<XdpLink> = Vec::new();
    let mut decaps = Vec::new();
    for (j, ns) in net.backends.iter().enumerate() {
        let decap = XdpDecap::load(XdpDecapConfig::default()).unwrap();
        decap.add_tunnel_addr(backend_addr(j).into()).unwrap();
        xdp_links.push(ns.run(|| decap.attach("b0")).unwrap().unwrap());
        decaps.push(decap);
    }
    let mut lb = XdpLb::load(
        XdpLbConfig::default()
            .local_mac(MAC_LB)
            .next_hop_mac(MAC_RTR)
            .lru_memory_bytes(1 << 20)
            .quic_cid_len(DEFAULT_CID_LEN as u8),
    )
    .unwrap();
    let vip = |p| Vip::new(VIP.into(), p, Proto::Udp);
    lb.add_vip(vip(PORT_CID), VipFlags::QUIC).unwrap();
    lb.add_vip(vip(PORT_PLAIN), VipFlags::NONE).unwrap();
    let backends: Vec<Backend> = (0..BACKENDS)
        .map(|j| Backend::new(backend_addr(j).into()).server_id(server_id(j)))
        .collect();
    for p in [PORT_CID, PORT_PLAIN] {
        lb.set_backends(&vip(p), &backends).unwrap();
    }
    let link = net.lb.run(|| lb.attach("l0")).unwrap().unwrap();
    assert_eq!(link.mode(), XdpMode::Native);
    xdp_links.push(link);
    let pass = XdpPass::load(Default::default()).unwrap();
    xdp_links.push(net.router.run(|| pass.attach("rl")).unwrap().unwrap());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let tls = Tls::new();
    let accepted: Vec<Arc<AtomicUsize>> = (0..BACKENDS).map(|_| Arc::default()).collect();
    let (broken_cid, broken_plain) = rt.block_on(async {
        let mut servers = Vec::new();
        for (j, ns) in net.backends.iter().enumerate() {
            let gen = FlowpinCidGenerator::builder(server_id(j)).build().unwrap();
            for p in [PORT_CID, PORT_PLAIN] {
                let s = udp_in(ns, SocketAddr::from((VIP, p)));
                servers.push(support::server(&tls, s, &gen, accepted[j].clone()));
            }
        }
        let mut conns: Vec<(u16, Option<Conn>)> = Vec::new();
        for p in [PORT_CID, PORT_PLAIN] {
            for _ in 0..CONNS {
                let ep = support::client(&tls, udp_in(&net.client, SocketAddr::from((CLIENT, 0))));
                conns.push((p, Some(Conn::open(ep, SocketAddr::from((VIP, p))).await)));
            }
        }
        let total: usize = accepted.iter().map(|a| a.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 2 * CONNS);
        for a in &accepted {
            assert!(
                a.load(Ordering::Relaxed) > 0,
                "the ring spreads connections over both backends"
            );
        }
        // NAT rebinding: every client moves to a new source port.
        for c in conns.iter().filter_map(|(_, c)| c.as_ref()) {
            c.rebind(udp_in(&net.client, SocketAddr::from((CLIENT, 0))));
        }
        let mut broken = (0, 0);
        for _round in 0..3 {
            let rounds = round_all(&mut conns).await;
            for (p, ok) in rounds {
                if !ok {
                    if p == PORT_CID {
                        broken.0 += 1
                    } else {
                        broken.1 += 1
                    }
                }
            }
        }
        for c in conns.iter().filter_map(|(_, c)| c.as_ref()) {
            c.conn.close(0u32.into(), b"done");
        }
        for s in &servers {
            s.close(0u32.into(), b"done");
        }
        broken
    });
    drop(rt);
    let st = lb.vip_stats(&vip(PORT_CID)).unwrap();
    eprintln!(
        "CID VIP after rebinding: {st:?}; broken with CID {broken_cid}, without {broken_plain}"
    );
    assert_eq!(
        broken_cid, 0,
        "CID routing keeps every rebinding client on its server"
    );
    assert!(
        broken_plain > 0,
        "without CID routing some of {CONNS} rebinding clients must land on the other backend"
    );
    assert!(st.sid_routed > 0 && st.sid_fallback_unknown == 0);
    drop(xdp_links);
    drop(net);
}

/// One round trip on every live connection, concurrently; a connection
/// that fails is dropped from `conns` (counted once). Returns (port, ok).
async fn round_all(conns: &mut [(u16, Option<Conn>)]) -> Vec<(u16, bool)> {
    let mut set = tokio::task::JoinSet::new();
    for (i, (p, slot)) in conns.iter_mut().enumerate() {
        if let Some(mut c) = slot.take() {
            let p = *p;
            set.spawn(async move {
                let ok = c.round_trip().await;
                (i, p, c, ok)
            });
        }
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        let (i, p, c, ok) = r.unwrap();
        if ok {
            conns[i].1 = Some(c);
        } else {
            c.conn.close(1u32.into(), b"stalled");
        }
        out.push((p, ok));
    }
    out
}

#[test]
fn privileged_quinn_release_old_server_keeps_its_connections_new_one_takes_new() {
    if !require_bpf("privileged_quinn_release_old_server_keeps_its_connections_new_one_takes_new") {
        return;
    }
    let ns = NetNs::new("qrel").unwrap();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 4433));
    let sid = ServerId::new(7).unwrap();
    let mut cfg = GroupConfig::new(std::path::Path::new("/sys/fs/bpf").join(unique_name("qrel")));
    cfg.quic_cid = true;
    cfg.cid_sock_offset = flowpin_tcp_opt::CidLayout::Flowpin.server_data_offset() as u8;
    cfg.unpin_on_drop = true;
    let group = ReuseportGroup::create(addr, RpProto::Udp, cfg).unwrap();
    let bind = || -> UdpSocket {
        ns.run(|| bind_reuseport(addr, RpProto::Udp))
            .unwrap()
            .unwrap()
            .into()
    };

    let rt = tokio::runtime::Runtime::new().unwrap();
    let tls = Tls::new();
    let (old_count, new_count) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let broken = rt.block_on(async {
        // Generation 1: the "old process".
        let a = bind();
        let g1 = group.add_generation(&[&a]).unwrap();
        group.activate(g1).unwrap();
        let gen_a = FlowpinCidGenerator::builder(sid)
            .socket_id(ReuseportGroup::socket_id(g1, 0))
            .build()
            .unwrap();
        let server_a = support::server(&tls, a, &gen_a, old_count.clone());
        let mut old: Vec<(u16, Option<Conn>)> = Vec::new();
        for _ in 0..CONNS {
            let ep = support::client(
                &tls,
                udp_in(&ns, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            );
            old.push((1, Some(Conn::open(ep, addr).await)));
        }
        assert_eq!(old_count.load(Ordering::Relaxed), CONNS);

        // The release: generation 2 joins, warms up, takes the flip.
        let b = bind();
        let g2 = group.add_generation(&[&b]).unwrap();
        let gen_b = FlowpinCidGenerator::builder(sid)
            .socket_id(ReuseportGroup::socket_id(g2, 0))
            .build()
            .unwrap();
        let server_b = support::server(&tls, b, &gen_b, new_count.clone());
        group.activate(g2).unwrap();
        group.retire(g1).unwrap();
        let mut new: Vec<(u16, Option<Conn>)> = Vec::new();
        for _ in 0..CONNS {
            let ep = support::client(
                &tls,
                udp_in(&ns, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            );
            new.push((2, Some(Conn::open(ep, addr).await)));
        }
        assert_eq!(
            new_count.load(Ordering::Relaxed),
            CONNS,
            "new connections go to the new server"
        );
        assert_eq!(
            old_count.load(Ordering::Relaxed),
            CONNS,
            "and none to the old one"
        );

        let mut broken = 0;
        for round in 0..4 {
            if round == 2 {
                // The old server's clients rebind: the UDP flow table misses,
                // only the socket id in the CID leads back to the old server.
                for c in old.iter().filter_map(|(_, c)| c.as_ref()) {
                    c.rebind(udp_in(&ns, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))));
                }
            }
            for conns in [&mut old, &mut new] {
                broken += round_all(conns).await.iter().filter(|(_, ok)| !ok).count();
            }
        }
        for c in old.iter().chain(&new).filter_map(|(_, c)| c.as_ref()) {
            c.conn.close(0u32.into(), b"done");
        }
        server_a.close(0u32.into(), b"done");
        server_b.close(0u32.into(), b"done");
        broken
    });
    drop(rt);
    let stats = group.stats().unwrap();
    eprintln!("group after the release: {stats:?}");
    assert_eq!(broken, 0, "no connection broke during the release");
    let g1 = stats.generations.iter().find(|g| g.gen.0 == 1).unwrap();
    assert!(
        g1.cid_routed > 0,
        "the old server's packets were routed by CID"
    );
    drop(group);
    drop(ns);
}
