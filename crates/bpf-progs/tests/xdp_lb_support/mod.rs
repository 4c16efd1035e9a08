//! Shared fixtures of the xdp_lb privileged tests: a loaded program with its
//! model, packet builders (etherparse), and the byte-for-byte check.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;
use flowpin_bpf_progs::xdp_lb::{Backend, Vip, XdpLb, XdpLbConfig, XdpVerdict};
use flowpin_lb_model::{Decision, Model, Verdict};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const LOCAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

pub fn vip4() -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 10)
}
pub fn vip6() -> Ipv6Addr {
    "2001:db8::10".parse().unwrap()
}
pub fn client4(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a64_0000u32 + i)
}
pub fn client6(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0001_0000u128 + u128::from(i))
}
pub fn backend4(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1, 0, i))
}
pub fn backend6(i: u8) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(
        0xfd00_0000_0000_0000_0000_0000_0000_0000u128 + u128::from(i),
    ))
}

pub fn test_config() -> XdpLbConfig {
    XdpLbConfig::default()
        .lru_memory_bytes(1 << 20)
        .local_mac(LOCAL_MAC)
        .next_hop_mac(NEXT_HOP_MAC)
}

/// The program and its model, kept in step.
pub struct Fx {
    pub lb: XdpLb,
    pub model: Model,
}

impl Fx {
    pub fn new(config: XdpLbConfig) -> Fx {
        pin_to_one_cpu();
        let lb = XdpLb::load(config).expect("load xdp_lb");
        let model = flowpin_lb_model::Model::of(&lb);
        Fx { lb, model }
    }

    /// Re-reads the control plane's state into the model (keeping its
    /// connection table and counters), as the program sees new map contents.
    pub fn sync(&mut self) {
        self.model
            .reconfigure(flowpin_lb_model::Model::of(&self.lb));
    }

    pub fn add_vip(&mut self, vip: Vip, flags: flowpin_bpf_progs::xdp_lb::VipFlags) -> u32 {
        let id = self.lb.add_vip(vip, flags).expect("add_vip");
        self.sync();
        id
    }

    pub fn set_backends(&mut self, vip: &Vip, b: &[Backend]) {
        self.lb.set_backends(vip, b).expect("set_backends");
        self.sync();
    }

    /// Runs `pkt` through the program and the model; asserts the verdict
    /// and the output bytes are identical; returns the model's decision.
    pub fn check(&mut self, pkt: &[u8]) -> Decision {
        let want = self.model.decide(pkt);
        let got = self.lb.test_run(pkt).expect("test_run");
        let v = match got.verdict {
            XdpVerdict::Tx => Verdict::Tx,
            XdpVerdict::Pass => Verdict::Pass,
            XdpVerdict::Drop => Verdict::Drop,
            other => panic!("unexpected verdict {other:?} for {}", hex(pkt)),
        };
        assert_eq!(
            v,
            want.verdict,
            "verdict differs (model outcome {:?}) for input\n{}",
            want.outcome,
            hex(pkt)
        );
        if got.packet != want.packet {
            panic!(
                "output differs (outcome {:?})\ninput  {}\nmodel  {}\nkernel {}",
                want.outcome,
                hex(pkt),
                hex(&want.packet),
                hex(&got.packet)
            );
        }
        want
    }

    /// The program's counters equal the model's.
    pub fn assert_stats(&self) {
        let g = self.lb.global_stats().expect("global stats");
        assert_eq!(g, self.model.global, "global counters: kernel vs model");
        let st = self.lb.stats().expect("stats");
        for (vip, s) in st.vips {
            let id = self.lb.vip_id(&vip).expect("vip id");
            assert_eq!(s, self.model.vip(id), "counters of {vip}: kernel vs model");
        }
    }
}

/// The connection table is per CPU and the model models one CPU: run every
/// test packet of this thread on the same CPU.
pub fn pin_to_one_cpu() {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).expect("cpu 0");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("sched_setaffinity");
}

pub fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join("")
}

pub fn tcp4(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    syn: bool,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src.octets(), dst.octets(), 61)
        .tcp(sport, dport, 1000, 64000);
    let b = if syn { b.syn() } else { b.ack(77) };
    let b = if opts.is_empty() {
        b
    } else {
        b.options_raw(opts).expect("tcp options")
    };
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("build");
    v
}

pub fn tcp6(
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    syn: bool,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(src.octets(), dst.octets(), 59)
        .tcp(sport, dport, 1000, 64000);
    let b = if syn { b.syn() } else { b.ack(77) };
    let b = if opts.is_empty() {
        b
    } else {
        b.options_raw(opts).expect("tcp options")
    };
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("build");
    v
}

pub fn udp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src.octets(), dst.octets(), 61)
        .udp(sport, dport)
        .write(&mut v, payload)
        .expect("build");
    v
}

pub fn udp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(src.octets(), dst.octets(), 59)
        .udp(sport, dport)
        .write(&mut v, payload)
        .expect("build");
    v
}

/// Outer header sanity, checked with etherparse independently of the model:
/// Ethernet to the next hop, a valid outer header to `backend`, and the
/// original L3 packet as payload.
pub fn assert_encap(out: &[u8], input: &[u8], backend: IpAddr) {
    use etherparse::{Ipv4Header, Ipv6Header};
    assert_eq!(&out[0..6], &NEXT_HOP_MAC);
    assert_eq!(&out[6..12], &LOCAL_MAC);
    match backend {
        IpAddr::V4(b) => {
            let (h, rest) = Ipv4Header::from_slice(&out[14..]).expect("outer ipv4");
            assert_eq!(h.destination, b.octets());
            assert_eq!(h.protocol.0, 4);
            assert_eq!(
                h.header_checksum,
                h.calc_header_checksum(),
                "outer checksum"
            );
            assert_eq!(usize::from(h.total_len), out.len() - 14);
            assert_eq!(rest, &input[14..]);
        }
        IpAddr::V6(b) => {
            let (h, rest) = Ipv6Header::from_slice(&out[14..]).expect("outer ipv6");
            assert_eq!(h.destination, b.octets());
            assert_eq!(usize::from(h.payload_length), out.len() - 54);
            assert_eq!(rest, &input[14..]);
        }
    }
}

/// RFC 6994 server_id option (default ExID) preceded by NOP NOP.
pub fn sid_opt(id: u32) -> Vec<u8> {
    let mut b = [0u8; 8];
    let n = flowpin_tcp_opt::write_server_id(
        &mut b,
        flowpin_tcp_opt::Layout::default(),
        flowpin_tcp_opt::ServerId::new(id).expect("non-zero"),
    )
    .expect("write option");
    let mut v = vec![1u8, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]; // NOP NOP timestamps
    v.extend_from_slice(&b[..n]);
    v
}
