//! Privileged tests of `xdp_lb`'s connection table through
//! BPF_PROG_TEST_RUN, thread pinned to one CPU: two candidate sets per flow
//! and cuckoo relocation (no established flow forgotten at half load),
//! probation (a flood of ≥ 10× the table size in one-packet flows evicts no
//! confirmed flow). Every packet is compared byte for byte with
//! `flowpin_lb_model`, and the counters with the model's.
#![allow(clippy::unwrap_used)] // tests may unwrap (clippy.toml covers #[test] fns only)

mod xdp_lb_support;

use std::net::{IpAddr, Ipv4Addr};

use flowpin_bpf_progs::xdp_lb::{Backend, Proto, Vip, VipFlags};
use flowpin_lb_model::{Outcome, Route};
use flowpin_testing::require_bpf;
use xdp_lb_support::*;

/// 256 sets (1024 flows) per CPU.
const SETS: u32 = 256;

fn small_table() -> Fx {
    let ncpus = libbpf_rs::num_possible_cpus().expect("possible cpus") as u64;
    let fx = Fx::new(test_config().lru_memory_bytes(64 * u64::from(SETS) * ncpus));
    assert_eq!(fx.lb.conn_sets_per_cpu(), SETS);
    fx
}

fn setup(fx: &mut Fx, vip: Vip) {
    fx.add_vip(vip, VipFlags::NONE);
    let b: Vec<Backend> = (1..=4).map(|i| Backend::new(backend4(i))).collect();
    fx.set_backends(&vip, &b);
}

fn route(d: &flowpin_lb_model::Decision) -> Route {
    match d.outcome {
        Outcome::Forwarded { route, .. } => route,
        o => panic!("expected a forwarded packet, got {o:?}"),
    }
}

/// Flow `i` of a family of distinct client tuples.
fn client(family: u32, i: u32) -> (Ipv4Addr, u16) {
    let a = Ipv4Addr::from(0x0a00_0000 | (family << 20) | (i >> 4));
    (a, 20000 + (i & 15) as u16)
}

#[test]
fn privileged_half_load_round_robin_forgets_no_flow() {
    if !require_bpf("privileged_half_load_round_robin_forgets_no_flow") {
        return;
    }
    let mut fx = small_table();
    let vip = Vip::new(vip4().into(), 53, Proto::Udp);
    setup(&mut fx, vip);
    let n = SETS * 4 / 2;
    for pass in 0..3 {
        for i in 0..n {
            let (c, p) = client(1, i);
            let d = fx.check(&udp4(c, p, vip4(), 53, b"q"));
            if pass > 0 {
                assert_eq!(route(&d), Route::Lru, "flow {i} forgotten in pass {pass}");
            }
        }
    }
    fx.assert_stats();
    let g = fx.lb.global_stats().unwrap();
    assert_eq!(g.new_flows, u64::from(n));
    assert_eq!(g.confirmations, u64::from(n));
    assert_eq!(g.confirmed_evictions + g.probation_evictions, 0, "{g:?}");
    // At half load some sets fill: flows land in their second set, and
    // residents move (relocation) — the cases the model must mirror.
    assert!(g.relocations > 0, "{g:?}");
    assert_eq!(fx.lb.connection_table_len().unwrap(), n as usize);
}

#[test]
fn privileged_syn_flood_evicts_no_confirmed_flow() {
    if !require_bpf("privileged_syn_flood_evicts_no_confirmed_flow") {
        return;
    }
    let mut fx = small_table();
    let vip = Vip::new(vip4().into(), 80, Proto::Tcp);
    setup(&mut fx, vip);
    // Established: half the table, SYN then the client's ACK (confirmed).
    let est: Vec<(Ipv4Addr, u16)> = (0..SETS * 2).map(|i| client(1, i)).collect();
    let mut backend = Vec::new();
    for &(c, p) in &est {
        let d = fx.check(&tcp4(c, p, vip4(), 80, true, &[], b""));
        assert_eq!(route(&d), Route::Ring);
        let d = fx.check(&tcp4(c, p, vip4(), 80, false, &[], b""));
        assert_eq!(route(&d), Route::Lru);
        match d.outcome {
            Outcome::Forwarded { backend: b, .. } => backend.push(b),
            _ => unreachable!(),
        }
    }
    let g0 = fx.lb.global_stats().unwrap();
    assert_eq!(g0.confirmations, est.len() as u64);
    // The flood: 10× the table size in spoofed one-packet SYNs, established
    // flows refreshed in between (one ACK every 8 flood packets).
    let flood = SETS * 4 * 10;
    let mut next = 0;
    for i in 0..flood {
        let (c, p) = client(2, i);
        let d = fx.check(&tcp4(c, p, vip4(), 80, true, &[], b""));
        assert_eq!(route(&d), Route::Ring);
        if i % 8 == 0 {
            let (c, p) = est[next % est.len()];
            let d = fx.check(&tcp4(c, p, vip4(), 80, false, &[], b"data"));
            assert_eq!(route(&d), Route::Lru, "established flow {next} evicted");
            next += 1;
        }
    }
    // Every established flow is still there, on its backend.
    for (k, &(c, p)) in est.iter().enumerate() {
        let d = fx.check(&tcp4(c, p, vip4(), 80, false, &[], b"data"));
        assert_eq!(route(&d), Route::Lru, "established flow {k} evicted");
        assert!(matches!(d.outcome, Outcome::Forwarded { backend: b, .. } if b == backend[k]));
    }
    fx.assert_stats();
    let g = fx.lb.global_stats().unwrap();
    assert_eq!(g.confirmed_evictions, 0, "{g:?}");
    assert_eq!(g.new_flows, est.len() as u64 + u64::from(flood));
    assert!(
        g.probation_evictions >= u64::from(flood) - u64::from(SETS * 2),
        "{g:?}"
    );
    // A spoofed source never confirms.
    assert_eq!(g.confirmations, est.len() as u64);
    let _: IpAddr = backend[0];
}

#[test]
fn privileged_udp_second_packet_confirms_and_flood_evicts_probation_first() {
    if !require_bpf("privileged_udp_second_packet_confirms_and_flood_evicts_probation_first") {
        return;
    }
    let mut fx = small_table();
    let vip = Vip::new(vip4().into(), 443, Proto::Udp);
    setup(&mut fx, vip);
    let (c, p) = client(3, 1);
    let d = fx.check(&udp4(c, p, vip4(), 443, b"1"));
    assert_eq!(route(&d), Route::Ring);
    assert_eq!(fx.lb.global_stats().unwrap().confirmations, 0);
    let d = fx.check(&udp4(c, p, vip4(), 443, b"2"));
    assert_eq!(route(&d), Route::Lru);
    assert_eq!(fx.lb.global_stats().unwrap().confirmations, 1);
    // One-packet UDP flows: 10× the table.
    for i in 0..SETS * 4 * 10 {
        let (fc, fp) = client(4, i);
        fx.check(&udp4(fc, fp, vip4(), 443, b"x"));
    }
    let d = fx.check(&udp4(c, p, vip4(), 443, b"3"));
    assert_eq!(route(&d), Route::Lru);
    fx.assert_stats();
    let g = fx.lb.global_stats().unwrap();
    assert_eq!(g.confirmed_evictions, 0, "{g:?}");
    assert!(g.probation_evictions > 0);
}

#[test]
fn privileged_full_table_turns_over_with_confirmed_evictions() {
    if !require_bpf("privileged_full_table_turns_over_with_confirmed_evictions") {
        return;
    }
    // Twice the capacity in confirmed flows: the table must make room.
    let mut fx = small_table();
    let vip = Vip::new(vip4().into(), 53, Proto::Udp);
    setup(&mut fx, vip);
    for i in 0..SETS * 8 {
        let (c, p) = client(5, i);
        fx.check(&udp4(c, p, vip4(), 53, b"1"));
        fx.check(&udp4(c, p, vip4(), 53, b"2"));
    }
    fx.assert_stats();
    let g = fx.lb.global_stats().unwrap();
    assert!(g.confirmed_evictions > 0, "{g:?}");
    assert!(g.relocations > 0, "{g:?}");
}
