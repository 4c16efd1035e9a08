//! Shared by the tunnel-probe tests (IPIP, IP6IP6, 4in6): the services a
//! backend runs on the VIP, and the wait for the prober's verdicts.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowpin_bpf_abi::vip::Vip;
use flowpin_health::{Health, HealthCheck, Prober, TunnelRoutes};
use flowpin_testing::RoutedLb;

/// The HTTP check's port on the VIP.
pub(crate) const HTTP: u16 = 8080;
/// The UDP check's port on the VIP.
pub(crate) const UDP: u16 = 5353;

/// The service of backend `j`: HTTP 204 and a UDP echo of `ping`, bound
/// only to `vip`.
pub(crate) fn serve(
    net: &RoutedLb,
    j: usize,
    vip: IpAddr,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let tcp = net.backends[j]
        .run(move || TcpListener::bind((vip, HTTP)).unwrap())
        .unwrap();
    let udp = net.backends[j]
        .run(move || UdpSocket::bind((vip, UDP)).unwrap())
        .unwrap();
    tcp.set_nonblocking(true).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let s1 = stop.clone();
    let s2 = stop.clone();
    vec![
        std::thread::spawn(move || {
            while !s1.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_millis(300)))
                            .unwrap();
                        let mut b = [0u8; 512];
                        let _ = s.read(&mut b);
                        let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }),
        std::thread::spawn(move || {
            let mut b = [0u8; 64];
            while !s2.load(Ordering::Relaxed) {
                if let Ok((n, from)) = udp.recv_from(&mut b) {
                    if &b[..n] == b"ping" {
                        let _ = udp.send_to(b"pong", from);
                    }
                }
            }
        }),
    ]
}

/// Waits until every `(vip, backend, state)` of `want` holds, at most
/// `interval × fall + 1 s` (the check's detection time + 1 s).
pub(crate) async fn wait_states(
    prober: &Prober,
    routes: &TunnelRoutes,
    want: &[(Vip, IpAddr, Health)],
    check: &HealthCheck,
) {
    let t0 = Instant::now();
    loop {
        if want.iter().all(|(v, b, h)| prober.state(v, *b) == *h) {
            return;
        }
        assert!(
            t0.elapsed() < check.detection_time() + Duration::from_secs(1),
            "not decided in time ({want:?}): {:#?}\nprobe_encap: {:?}",
            prober.status(),
            routes.encap().stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
