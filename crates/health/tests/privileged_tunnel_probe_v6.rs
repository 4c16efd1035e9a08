//! Privileged, live: the prober through the data path with an IPv6 outer
//! header, the two forms `probe_encap` writes besides IPIP:
//!
//! - **IP6IP6**: an IPv6 VIP, IPv6 tunnel addresses;
//! - **4in6**: an IPv4 VIP, IPv6 tunnel addresses (the outer source is
//!   `ProbeEncapConfig::src6`, the LB's IPv6 address).
//!
//! `flowpin_testing::RoutedLb` (router, LB, two backends; the IPv4 VIP on
//! each backend's `lo`) made dual-stack here: an IPv6 /64 on every link,
//! default routes via the router, and for IP6IP6 an IPv6 VIP on each
//! backend's `lo`. `probe_encap` on the LB's `l0` encapsulates marked
//! probes to the backend their mark names ([`TunnelRoutes`]); both backends
//! run `xdp_decap` with their IPv6 tunnel address. A service listens
//! **only on the VIP** (TCP/HTTP and UDP) on both.
//!
//! Both go up; then backend 1's `xdp_decap` is detached: it goes down
//! (`connect_timeout` / `timeout`) within `interval × fall + 1 s` while
//! backend 0 stays up.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod tunnel_probe_support;

use flowpin_bpf_abi::vip::{Proto, Vip};
use flowpin_bpf_progs::probe_encap::{ProbeEncap, ProbeEncapConfig, ProbeStats};
use flowpin_bpf_progs::xdp_decap::{DecapForm, XdpDecap, XdpDecapConfig};
use flowpin_health::{FailReason, Health, HealthCheck, Prober, TunnelRoutes};
use flowpin_testing::{disable_tx_checksum_offload, require_bpf, RoutedLb, RoutedLbConfig};
use tunnel_probe_support::{serve, wait_states, HTTP, UDP};

/// `fd00:<n>:<net>::<host>`.
fn v6(n: u8, net: u16, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, u16::from(n), net, 0, 0, 0, 0, host)
}

/// The LB's IPv6 address on `l0`.
fn lb6(n: u8) -> Ipv6Addr {
    v6(n, 1, 2)
}

/// Backend `j`'s IPv6 (tunnel) address on `b0`.
fn backend6(n: u8, j: usize) -> Ipv6Addr {
    v6(n, 0x10 + j as u16, 2)
}

/// IPv6 on every link of `net` (see the module docs); `vip6` on every
/// backend's `lo`.
fn dual_stack(net: &RoutedLb, n: u8, vip6: Option<Ipv6Addr>) {
    net.router
        .sysctl("net.ipv6.conf.all.forwarding", "1")
        .unwrap();
    let addr = |ns: &flowpin_testing::NetNs, a: Ipv6Addr, len: u8, dev: &str| {
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{a}/{len}"),
            "dev",
            dev,
            "nodad",
        ])
        .unwrap();
    };
    addr(&net.router, v6(n, 1, 1), 64, "rl");
    addr(&net.lb, lb6(n), 64, "l0");
    net.lb
        .ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &v6(n, 1, 1).to_string(),
        ])
        .unwrap();
    for (j, be) in net.backends.iter().enumerate() {
        let gw = v6(n, 0x10 + j as u16, 1);
        addr(&net.router, gw, 64, &format!("rb{j}"));
        addr(be, backend6(n, j), 64, "b0");
        be.ip(&["-6", "route", "add", "default", "via", &gw.to_string()])
            .unwrap();
        if let Some(v) = vip6 {
            addr(be, v, 128, "lo");
        }
    }
    // Neighbour discovery waits for the link-local addresses' DAD: until
    // then nothing crosses the router (the first ~2 s of probes failed).
    let t0 = Instant::now();
    for ns in [&net.router, &net.lb].into_iter().chain(&net.backends) {
        loop {
            let o = ns.ip(&["-6", "addr", "show", "tentative"]).unwrap();
            if o.stdout.is_empty() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "IPv6 addresses still tentative in {}: {}",
                ns.name(),
                String::from_utf8_lossy(&o.stdout)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The test of one form: `vip` (v4: 4in6, v6: IP6IP6) to IPv6 tunnel
/// addresses; returns `probe_encap`'s and `xdp_decap`'s counters.
fn run(tag: &str, cfg: RoutedLbConfig, vip: IpAddr) -> (ProbeStats, u64, u64) {
    let n = cfg.subnet;
    let net = RoutedLb::new(tag, &cfg, 2).unwrap();
    dual_stack(
        &net,
        n,
        if let IpAddr::V6(v) = vip {
            Some(v)
        } else {
            None
        },
    );
    net.lb
        .ip(&["route", "add", "default", "via", &format!("10.{n}.1.1")])
        .unwrap();
    net.lb
        .run(|| disable_tx_checksum_offload("l0"))
        .unwrap()
        .unwrap();
    let b0 = IpAddr::V6(backend6(n, 0));
    let b1 = IpAddr::V6(backend6(n, 1));
    let decap = XdpDecap::load(XdpDecapConfig::default()).unwrap();
    decap.add_tunnel_addr(b0).unwrap();
    decap.add_tunnel_addr(b1).unwrap();
    let _decap0 = net.backends[0].run(|| decap.attach("b0")).unwrap().unwrap();
    let decap1 = net.backends[1].run(|| decap.attach("b0")).unwrap().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = serve(&net, 0, vip, &stop);
    threads.extend(serve(&net, 1, vip, &stop));

    let encap =
        ProbeEncap::load(ProbeEncapConfig::default().max_backends(64).src6(lb6(n))).unwrap();
    let _link = net.lb.run(|| encap.attach_ifname("l0")).unwrap().unwrap();
    let routes = Arc::new(TunnelRoutes::new(encap));

    let ms = Duration::from_millis;
    let check = |c: HealthCheck| c.timing(ms(200), ms(150)).damping(2, 3);
    let tcp_vip = Vip::new(vip, HTTP, Proto::Tcp);
    let udp_vip = Vip::new(vip, UDP, Proto::Udp);
    let http = check(HealthCheck::http("/healthz", 204));
    let udp = check(HealthCheck::udp("ping", "pong"));

    // The prober lives in the LB's namespace (its sockets are made there);
    // it waits for both up, then for backend 1 down once told its decap is
    // detached.
    let (up_tx, up_rx) = std::sync::mpsc::channel();
    let (detached_tx, detached_rx) = std::sync::mpsc::channel::<()>();
    let r2 = routes.clone();
    let lb_thread = net
        .lb
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let prober = Prober::new(r2.clone());
                prober
                    .set_targets([
                        (tcp_vip, b0, http.clone()),
                        (tcp_vip, b1, http.clone()),
                        (udp_vip, b0, udp.clone()),
                        (udp_vip, b1, udp.clone()),
                    ])
                    .unwrap();
                use Health::{Down, Up};
                wait_states(
                    &prober,
                    &r2,
                    &[
                        (tcp_vip, b0, Up),
                        (udp_vip, b0, Up),
                        (tcp_vip, b1, Up),
                        (udp_vip, b1, Up),
                    ],
                    &http,
                )
                .await;
                up_tx.send(()).unwrap();
                tokio::task::spawn_blocking(move || detached_rx.recv().unwrap())
                    .await
                    .unwrap();
                wait_states(
                    &prober,
                    &r2,
                    &[
                        (tcp_vip, b0, Up),
                        (udp_vip, b0, Up),
                        (tcp_vip, b1, Down),
                        (udp_vip, b1, Down),
                    ],
                    &http,
                )
                .await;
                let st = prober.status();
                assert_eq!(
                    st.get(&tcp_vip, b1).unwrap().last_failure,
                    Some(FailReason::ConnectTimeout),
                    "{st:#?}"
                );
                assert_eq!(
                    st.get(&udp_vip, b1).unwrap().last_failure,
                    Some(FailReason::Timeout),
                    "{st:#?}"
                );
                assert!(st.get(&tcp_vip, b0).unwrap().failures.is_empty(), "{st:#?}");
                assert!(st.get(&udp_vip, b0).unwrap().failures.is_empty(), "{st:#?}");
            });
        })
        .unwrap();
    if up_rx.recv_timeout(Duration::from_secs(10)).is_err() {
        panic!(
            "both backends not up through the tunnel; xdp_decap: {:?}",
            decap.stats()
        );
    }
    drop(decap1);
    detached_tx.send(()).unwrap();
    lb_thread.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let stats = routes.encap().stats().unwrap();
    let d = decap.stats().unwrap();
    (
        stats,
        d.decapsulated_form(DecapForm::Ip6Ip6),
        d.decapsulated_form(DecapForm::Ip4InIp6),
    )
}

#[test]
fn privileged_prober_through_an_ip6ip6_tunnel_up_and_down() {
    if !require_bpf("privileged_prober_through_an_ip6ip6_tunnel_up_and_down") {
        return;
    }
    let cfg = RoutedLbConfig {
        subnet: 123,
        vip: Ipv4Addr::new(10, 223, 0, 1),
        lb_mac: [0x02, 0x5e, 0, 0, 0x23, 2],
        router_mac: [0x02, 0x5e, 0, 0, 0x23, 1],
    };
    let vip = IpAddr::V6(v6(123, 0xff, 1));
    let (stats, ip6ip6, in6) = run("fph6", cfg, vip);
    assert!(stats.encap_ip6ip6 > 8, "{stats:?}");
    assert_eq!(stats.encap_ipip + stats.encap_4in6, 0, "{stats:?}");
    assert_eq!(stats.dropped(), 0, "{stats:?}");
    assert!(ip6ip6 > 8 && in6 == 0, "decap: ip6ip6 {ip6ip6}, 4in6 {in6}");
}

#[test]
fn privileged_prober_through_a_4in6_tunnel_up_and_down() {
    if !require_bpf("privileged_prober_through_a_4in6_tunnel_up_and_down") {
        return;
    }
    let cfg = RoutedLbConfig {
        subnet: 124,
        vip: Ipv4Addr::new(10, 224, 0, 1),
        lb_mac: [0x02, 0x5e, 0, 0, 0x24, 2],
        router_mac: [0x02, 0x5e, 0, 0, 0x24, 1],
    };
    let (stats, ip6ip6, in6) = run("fp46", cfg, IpAddr::V4(cfg.vip));
    assert!(stats.encap_4in6 > 8, "{stats:?}");
    assert_eq!(stats.encap_ipip + stats.encap_ip6ip6, 0, "{stats:?}");
    assert_eq!(stats.dropped(), 0, "{stats:?}");
    assert!(in6 > 8 && ip6ip6 == 0, "decap: ip6ip6 {ip6ip6}, 4in6 {in6}");
}
