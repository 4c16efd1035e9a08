//! `xdp_bench`'s QUIC-LB cases (issue 22): the cost of a QUIC short-header
//! packet routed by a QUIC-LB CID, plaintext and encrypted (single pass:
//! 4-octet server ID + 12-octet nonce; four-pass: 4 + 6), on the table
//! engine (the fastest offered) and the constant-time kfunc engine, each
//! VIP declaring its own configuration. Measured like the other cases
//! (`BPF_PROG_TEST_RUN`, repeat 1, interleaved with the empty program in
//! the same run, medians of rounds); every packet must be routed by its
//! server ID (checked on the counters and on one packet per case against
//! the model).

use std::net::{IpAddr, Ipv4Addr};

use flowpin::bpf::xdp_lb::{
    AesEngine, Backend, Proto, QuicLbConf, Vip, VipCid, VipFlags, XdpLb, XdpLbConfig,
};
use flowpin::bpf::xdp_pass::XdpPass;
use flowpin::tcp_opt::ServerId;
use flowpin_lb_model::{Outcome, Route};

/// The JSON names, in order.
pub(crate) const CASES: [&str; 5] = [
    "quic_lb_plain",
    "quic_lb_encrypted_1pass",
    "quic_lb_encrypted_4pass",
    "quic_lb_encrypted_1pass_ct",
    "quic_lb_encrypted_4pass_ct",
];

/// Per case: ns per packet (median over rounds) and the empty program's.
pub(crate) struct QuicLbFigures {
    /// (name, ns/packet).
    pub(crate) cases: Vec<(&'static str, f64)>,
    /// The empty program, same run.
    pub(crate) empty_ns: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the cases; `quic_short` builds the packet for a CID.
pub(crate) fn run(
    empty: &XdpPass,
    calls: u32,
    rounds: u32,
    quic_short: impl Fn(Ipv4Addr, u16, Ipv4Addr, &[u8]) -> Vec<u8>,
) -> Result<QuicLbFigures, Box<dyn std::error::Error>> {
    let vip_addr = Ipv4Addr::new(192, 0, 2, 50);
    let mut lb = XdpLb::load(XdpLbConfig::default())?;
    lb.set_next_hop([0x02, 0, 0, 0, 0, 0x0a], [0x02, 0, 0, 0, 0, 0x0b])?;
    let sid = 0x0a0b_0c03u32;
    let backends: Vec<Backend> = (1..=8u8)
        .map(|i| {
            Backend::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, i)))
                .server_id(ServerId::new(0x0a0b_0c00 + u32::from(i)).expect("non-zero server_id"))
        })
        .collect();
    let key = [
        0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 9, 0xcf, 0x4f, 0x3c,
    ];
    let confs = [
        QuicLbConf::plaintext(1, 4, 12),
        QuicLbConf::encrypted(1, 4, 12, key).engine(AesEngine::Table),
        QuicLbConf::encrypted(1, 4, 6, key).engine(AesEngine::Table),
        QuicLbConf::encrypted(1, 4, 12, key).engine(AesEngine::ConstantTime),
        QuicLbConf::encrypted(1, 4, 6, key).engine(AesEngine::ConstantTime),
    ];
    let mut vips = Vec::new();
    let mut pkts = Vec::new();
    for (i, conf) in confs.iter().enumerate() {
        let vip = Vip::new(vip_addr.into(), 4430 + i as u16, Proto::Udp);
        lb.add_vip(vip, VipFlags::QUIC)?;
        lb.set_backends(&vip, &backends)?;
        lb.set_vip_cid(&vip, VipCid::QuicLb(vec![*conf]))?;
        let nonce: Vec<u8> = (0..conf.nonce_len)
            .map(|j| j.wrapping_mul(29) ^ 0x5a)
            .collect();
        let cid = if conf.key.is_some() {
            flowpin_lb_model::cid::quic_lb_encrypt(conf, sid, &nonce).ok_or("encode")?
        } else {
            let mut c = vec![(conf.config_id << 5) | 16];
            c.extend_from_slice(&sid.to_be_bytes());
            c.extend_from_slice(&nonce);
            c
        };
        let mut pkt = quic_short(Ipv4Addr::new(10, 0, 0, 1), 1024, vip_addr, &cid);
        // The packet's UDP destination port is the VIP's.
        let dport = 4430 + i as u16;
        pkt[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&dport.to_be_bytes());
        let mut model = flowpin_lb_model::Model::of(&lb);
        let d = model.decide(&pkt);
        let got = lb.test_run(&pkt)?;
        match d.outcome {
            Outcome::Forwarded {
                route: Route::ServerId,
                backend,
            } => {
                assert_eq!(
                    backend,
                    IpAddr::V4(Ipv4Addr::new(10, 1, 0, 3)),
                    "{}",
                    CASES[i]
                )
            }
            o => panic!("{}: model says {o:?}", CASES[i]),
        }
        assert!(
            got.packet == d.packet,
            "{}: output differs from the model",
            CASES[i]
        );
        vips.push(vip);
        pkts.push(pkt);
    }
    let mut samples = vec![Vec::new(); CASES.len() + 1];
    for _ in 0..rounds {
        for (ci, slot) in samples.iter_mut().enumerate() {
            let mut sum = 0u64;
            for _ in 0..calls {
                let r = if ci == 0 {
                    empty.test_run(&pkts[0])?
                } else {
                    lb.test_run(&pkts[ci - 1])?
                };
                sum += u64::from(r.duration_ns);
            }
            slot.push(sum as f64 / f64::from(calls));
        }
    }
    for (i, vip) in vips.iter().enumerate() {
        let s = lb.vip_stats(vip)?;
        assert_eq!(
            (s.sid_routed, s.new_flows + s.lru_hit),
            (s.packets, 0),
            "{}: every packet routed by its server ID",
            CASES[i]
        );
    }
    let empty_ns = median(samples[0].clone());
    let cases = CASES
        .iter()
        .zip(&samples[1..])
        .map(|(n, v)| (*n, median(v.clone())))
        .collect();
    Ok(QuicLbFigures { cases, empty_ns })
}

impl QuicLbFigures {
    fn own(&self, name: &str) -> f64 {
        self.cases
            .iter()
            .find(|c| c.0 == name)
            .map_or(f64::NAN, |c| c.1 - self.empty_ns)
    }

    /// The table, own costs (less the empty program) and the targets.
    pub(crate) fn print(&self) {
        println!(
            "\nQUIC-LB (one VIP per configuration; own = ns/packet less the empty program {:.1} ns, same run):",
            self.empty_ns
        );
        let plain = self.own("quic_lb_plain");
        for (name, ns) in &self.cases {
            let own = ns - self.empty_ns;
            println!(
                "  {name:<28} {ns:>8.1} ns/packet  own {own:>7.1} ns  {:>5.2}x plaintext",
                own / plain
            );
        }
        let e1 = self.own("quic_lb_encrypted_1pass");
        let e4 = self.own("quic_lb_encrypted_4pass");
        let worst = self.cases[1..]
            .iter()
            .map(|c| c.1 - self.empty_ns)
            .fold(0.0, f64::max);
        println!(
            "  targets: 1-pass (table) {:.2}x plaintext (<= 2x: {}), 4-pass (table) {:.2}x (<= 5x: {}), slowest encrypted own {worst:.1} ns (< 830 ns: {})",
            e1 / plain,
            if e1 <= 2.0 * plain { "met" } else { "MISSED" },
            e4 / plain,
            if e4 <= 5.0 * plain { "met" } else { "MISSED" },
            if worst < 830.0 { "met" } else { "MISSED" }
        );
    }

    /// `<case>_ns` (ns/packet, like the other cases) and `<case>_own_ns`.
    pub(crate) fn json(&self, obj: &mut serde_json::Map<String, serde_json::Value>) {
        for (name, ns) in &self.cases {
            obj.insert(
                format!("{name}_ns"),
                serde_json::json!((ns * 10.0).round() / 10.0),
            );
            obj.insert(
                format!("{name}_own_ns"),
                serde_json::json!(((ns - self.empty_ns) * 10.0).round() / 10.0),
            );
        }
    }
}
