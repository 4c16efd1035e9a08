//! The LB node's flood signal (issue 23): `flowpin_lb_new_flows_per_second`
//! and `flowpin_lb_flood` rise under a burst of new flows, and the
//! connection table's counters (`flowpin_lb_conn_*_total`) count them.
//! Through BPF_PROG_TEST_RUN on a real `xdp_lb`; the metrics are what the
//! node's `/metrics` registers (`flowpin_node::lb::flood_metrics`).
#![allow(clippy::unwrap_used)] // tests may unwrap (clippy.toml covers #[test] fns only)

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use flowpin_bpf_progs::xdp_lb::{Backend, Proto, Vip, VipFlags, XdpLb, XdpLbConfig};
use flowpin_node::lb::flood_metrics::{register, FloodMeter};
use flowpin_testing::require_bpf;
use prometheus_client::registry::Registry;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);

/// A TCP SYN from `src:sport` to the VIP, port 80 (checksums are not
/// checked by `xdp_lb`).
fn syn(src: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&VIP.octets());
    let tcp = &mut f[34..54];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64000u16.to_be_bytes());
    f
}

/// The value of the sample `name` (no labels) in the text exposition.
fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse::<f64>().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

fn scrape(lb: &XdpLb, meter: &mut FloodMeter, threshold: f64) -> String {
    let mut reg = Registry::with_prefix("flowpin");
    let stats = lb.stats().unwrap();
    register(&mut reg, Some(&stats), meter, Instant::now(), threshold);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
    out
}

#[test]
fn flood_metric_rises_under_a_burst_of_new_flows() {
    if !require_bpf("flood_metric_rises_under_a_burst_of_new_flows") {
        return;
    }
    let mut lb = XdpLb::load(XdpLbConfig::default()).unwrap();
    let vip = Vip::new(IpAddr::V4(VIP), 80, Proto::Tcp);
    lb.add_vip(vip, VipFlags::NONE).unwrap();
    let backends: Vec<Backend> = (1..=3)
        .map(|i| Backend::new(IpAddr::V4(Ipv4Addr::new(10, 2, i, 2))))
        .collect();
    lb.set_backends(&vip, &backends).unwrap();
    let threshold = 1000.0;
    let mut meter = FloodMeter::default();

    // Quiet: no new flow, no flood.
    let t = scrape(&lb, &mut meter, threshold);
    assert_eq!(value(&t, "flowpin_lb_conn_new_flows_total"), 0.0);
    std::thread::sleep(Duration::from_millis(200));
    let t = scrape(&lb, &mut meter, threshold);
    assert_eq!(value(&t, "flowpin_lb_new_flows_per_second"), 0.0);
    assert_eq!(value(&t, "flowpin_lb_flood"), 0.0);
    assert_eq!(
        value(&t, "flowpin_lb_flood_threshold_new_flows_per_second"),
        threshold
    );

    // A burst: 3,000 SYNs, each its own flow.
    let burst = 3000u32;
    let start = Instant::now();
    for i in 0..burst {
        let src = Ipv4Addr::from(0xc612_0000 | i);
        let r = lb.test_run(&syn(src, 1024 + (i % 60000) as u16)).unwrap();
        assert_eq!(r.verdict, flowpin_bpf_progs::xdp_attach::XdpVerdict::Tx);
    }
    std::thread::sleep(Duration::from_millis(200));
    let elapsed = start.elapsed().as_secs_f64();
    let t = scrape(&lb, &mut meter, threshold);
    assert_eq!(
        value(&t, "flowpin_lb_conn_new_flows_total"),
        f64::from(burst)
    );
    let rate = value(&t, "flowpin_lb_new_flows_per_second");
    // The burst over the time between the scrapes (at least `elapsed`).
    assert!(
        rate > 0.0 && rate <= f64::from(burst) / elapsed,
        "rate {rate} for {burst} flows in >= {elapsed} s"
    );
    assert!(
        rate > threshold,
        "rate {rate} under the threshold {threshold}"
    );
    assert_eq!(value(&t, "flowpin_lb_flood"), 1.0);
    assert_eq!(value(&t, "flowpin_lb_conn_confirmed_evictions_total"), 0.0);

    // Quiet again: the rate falls back to 0 and the flood gauge with it.
    std::thread::sleep(Duration::from_millis(200));
    let t = scrape(&lb, &mut meter, threshold);
    assert_eq!(value(&t, "flowpin_lb_new_flows_per_second"), 0.0);
    assert_eq!(value(&t, "flowpin_lb_flood"), 0.0);
}
