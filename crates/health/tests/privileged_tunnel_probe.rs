//! Privileged, live: the prober through the data path.
//!
//! `flowpin_testing::RoutedLb` (router, LB, two backends; the VIP on each
//! backend's `lo`). The LB's namespace routes everything via the router, so
//! an unmarked packet to the VIP comes back to the LB; `probe_encap` on the
//! LB's `l0` encapsulates marked probes (IPIP) to the backend their mark
//! names ([`TunnelRoutes`]). Backend 0 runs `xdp_decap`, backend 1 does not.
//! A service listens **only on the VIP** on both: TCP (HTTP) and UDP.
//!
//! Backend 0 goes up (TCP, HTTP and UDP checks); backend 1 goes down
//! within `interval × fall + 1 s` with `connect_timeout` / `timeout`.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod tunnel_probe_support;

use flowpin_bpf_abi::vip::{Proto, Vip};
use flowpin_bpf_progs::probe_encap::{ProbeEncap, ProbeEncapConfig};
use flowpin_bpf_progs::xdp_decap::{XdpDecap, XdpDecapConfig};
use flowpin_health::{FailReason, Health, HealthCheck, Prober, TunnelRoutes};
use flowpin_testing::{disable_tx_checksum_offload, require_bpf, RoutedLb, RoutedLbConfig};
use tunnel_probe_support::{serve, wait_states, HTTP, UDP};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 222, 0, 1);
const NET: RoutedLbConfig = RoutedLbConfig {
    subnet: 122,
    vip: VIP,
    lb_mac: [0x02, 0x5e, 0, 0, 0x22, 2],
    router_mac: [0x02, 0x5e, 0, 0, 0x22, 1],
};

#[test]
fn privileged_prober_through_the_tunnel_up_and_down() {
    if !require_bpf("privileged_prober_through_the_tunnel_up_and_down") {
        return;
    }
    let net = RoutedLb::new("fphp", &NET, 2).unwrap();
    let decap = XdpDecap::load(XdpDecapConfig::default()).unwrap();
    decap
        .add_tunnel_addr(IpAddr::V4(NET.backend_addr(0)))
        .unwrap();
    let _decap_link = net.backends[0].run(|| decap.attach("b0")).unwrap().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = serve(&net, 0, IpAddr::V4(VIP), &stop);
    threads.extend(serve(&net, 1, IpAddr::V4(VIP), &stop));

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
    let encap = ProbeEncap::load(ProbeEncapConfig::default().max_backends(64)).unwrap();
    let _link = net.lb.run(|| encap.attach_ifname("l0")).unwrap().unwrap();
    let routes = Arc::new(TunnelRoutes::new(encap));

    let ms = Duration::from_millis;
    let check = |c: HealthCheck| c.timing(ms(200), ms(150)).damping(2, 3);
    let tcp_vip = Vip::new(IpAddr::V4(VIP), HTTP, Proto::Tcp);
    let udp_vip = Vip::new(IpAddr::V4(VIP), UDP, Proto::Udp);
    let b0 = IpAddr::V4(NET.backend_addr(0));
    let b1 = IpAddr::V4(NET.backend_addr(1));
    let http = check(HealthCheck::http("/healthz", 204));
    let udp = check(HealthCheck::udp("ping", "pong"));

    // The prober's runtime lives in the LB's namespace (its sockets are made there).
    let lb_thread = net
        .lb
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let prober = Prober::new(routes.clone());
                prober
                    .set_targets([
                        (tcp_vip, b0, http.clone()),
                        (tcp_vip, b1, http.clone()),
                        (udp_vip, b0, udp.clone()),
                        (udp_vip, b1, udp.clone()),
                    ])
                    .unwrap();
                assert!(routes.index_of(b0).is_some());
                let want = [
                    (tcp_vip, b0, Health::Up),
                    (udp_vip, b0, Health::Up),
                    (tcp_vip, b1, Health::Down),
                    (udp_vip, b1, Health::Down),
                ];
                wait_states(&prober, &routes, &want, &http).await;
                let st = prober.status();
                let down = st.get(&tcp_vip, b1).unwrap();
                assert_eq!(
                    down.last_failure,
                    Some(FailReason::ConnectTimeout),
                    "{down:?}"
                );
                assert_eq!(
                    st.get(&udp_vip, b1).unwrap().last_failure,
                    Some(FailReason::Timeout)
                );
                assert!(st.get(&tcp_vip, b0).unwrap().failures.is_empty(), "{st:?}");
                let stats = routes.encap().stats().unwrap();
                assert!(stats.encap_ipip > 8, "{stats:?}");
                assert_eq!(stats.dropped(), 0, "{stats:?}");
                // No longer probed: its entry is cleared.
                prober.set_targets([(tcp_vip, b0, http.clone())]).unwrap();
                assert_eq!(routes.index_of(b1), None);
            });
        })
        .unwrap();
    lb_thread.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}
