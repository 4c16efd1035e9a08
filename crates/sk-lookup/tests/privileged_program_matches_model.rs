//! The program against its Rust twin ([`Table::lookup`]): random sets of
//! bindings — host prefixes (the `hosts` hash) and shorter ones (the trie),
//! specific and any port, TCP and UDP, IPv4 and IPv6 — and random lookups
//! run through `BPF_PROG_TEST_RUN`, which reports the cookie of the socket
//! the program assigned. Every case ends by unbinding everything, which
//! must leave the summary word at 0.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};

use flowpin_sk_lookup::{Binding, Label, Port, Prefix, Proto};
use libbpf_rs::libbpf_sys;
use proptest::prelude::*;
use support::*;

const PORTS: [u16; 3] = [80, 443, 8080];

/// One binding drawn from a small universe, so that bindings overlap.
fn binding() -> impl Strategy<Value = Binding> {
    (any::<bool>(), any::<bool>(), 0usize..4, 0u8..8, 0u8..4).prop_map(
        |(udp, v6, port, len_pick, host)| {
            let protocol = if udp { Proto::Udp } else { Proto::Tcp };
            let port = match port {
                3 => Port::Any,
                i => Port::new(PORTS[i]).unwrap(),
            };
            let prefix = if v6 {
                let len = [0u8, 16, 64, 120, 126, 127, 128, 128][usize::from(len_pick)];
                let a = u128::from(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(host)));
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                Prefix::new(IpAddr::V6(Ipv6Addr::from(a & mask)), len).unwrap()
            } else {
                let len = [0u8, 8, 16, 24, 30, 31, 32, 32][usize::from(len_pick)];
                let a = u32::from(Ipv4Addr::new(10, 0, 0, host));
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                Prefix::new(IpAddr::V4(Ipv4Addr::from(a & mask)), len).unwrap()
            };
            Binding::new(protocol, prefix, port)
        },
    )
}

/// (protocol, local address, local port) of a lookup.
fn query() -> impl Strategy<Value = (Proto, IpAddr, u16)> {
    (any::<bool>(), any::<bool>(), 0u8..6, 0usize..4).prop_map(|(udp, v6, host, port)| {
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(host)))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, host))
        };
        let port = [80, 443, 8080, 9][port];
        (if udp { Proto::Udp } else { Proto::Tcp }, ip, port)
    })
}

/// Runs the program once on a lookup; the cookie of the socket it
/// assigned, 0 if none.
fn test_run(prog_fd: i32, protocol: Proto, ip: IpAddr, port: u16) -> u64 {
    let mut ctx = libbpf_sys::bpf_sk_lookup {
        protocol: u32::from(protocol.number()),
        local_port: u32::from(port),
        remote_port: 40000u16.to_be(),
        ..Default::default()
    };
    match ip {
        IpAddr::V4(a) => {
            ctx.family = libc_af(false);
            ctx.local_ip4 = u32::from_ne_bytes(a.octets());
            ctx.remote_ip4 = u32::from_ne_bytes([10, 9, 9, 9]);
        }
        IpAddr::V6(a) => {
            ctx.family = libc_af(true);
            for (w, c) in ctx.local_ip6.iter_mut().zip(a.octets().chunks_exact(4)) {
                *w = u32::from_ne_bytes(c.try_into().unwrap());
            }
            ctx.remote_ip6 = [0xfd, 0, 0, 9u32.to_be()];
        }
    }
    let mut out = ctx;
    let mut opts = libbpf_sys::bpf_test_run_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _,
        ctx_in: (&ctx as *const libbpf_sys::bpf_sk_lookup).cast(),
        ctx_size_in: std::mem::size_of::<libbpf_sys::bpf_sk_lookup>() as u32,
        ctx_out: (&mut out as *mut libbpf_sys::bpf_sk_lookup).cast(),
        ctx_size_out: std::mem::size_of::<libbpf_sys::bpf_sk_lookup>() as u32,
        ..Default::default()
    };
    // SAFETY: `opts` points at two live bpf_sk_lookup structs of the sizes
    // it gives; the kernel reads one and writes the other.
    let rc = unsafe { libbpf_sys::bpf_prog_test_run_opts(prog_fd, &mut opts) };
    assert_eq!(rc, 0, "BPF_PROG_TEST_RUN on sk_lookup failed: {rc}");
    assert_eq!(opts.retval, 1, "the program always passes (SK_PASS)");
    // SAFETY: the kernel writes the selected socket's cookie (or 0) into
    // the union's `cookie` member.
    unsafe { out.__bindgen_anon_1.cookie }
}

fn libc_af(v6: bool) -> u32 {
    if v6 {
        nix::libc::AF_INET6 as u32
    } else {
        nix::libc::AF_INET as u32
    }
}

fn dual_stack_udp() -> UdpSocket {
    let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None).unwrap();
    s.set_only_v6(false).unwrap();
    s.bind(&"[::]:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.into()
}

#[test]
fn privileged_program_matches_the_model_across_hash_and_trie() {
    if !require_root("privileged_program_matches_the_model_across_hash_and_trie") {
        return;
    }
    let env = Env::new("sklmodel");
    let d = env.d();
    let prog_fd = std::os::fd::AsRawFd::as_raw_fd(&d.kernel().program_fd());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let case = (
        proptest::collection::btree_set(binding(), 1..24),
        proptest::collection::vec(query(), 64),
    );
    runner
        .run(&case, |(bindings, queries)| {
            // One label per binding; every label gets a dual-stack socket
            // of its protocol.
            let all: Vec<(Binding, Label)> = bindings
                .iter()
                .enumerate()
                .map(|(i, b)| (*b, label(&format!("l{i}"))))
                .collect();
            d.bind_many(&all).unwrap();
            let (tcp, udp): (Vec<TcpListener>, Vec<UdpSocket>) = env.in_ns(|| {
                let mut tcp = Vec::new();
                let mut udp = Vec::new();
                for (b, l) in &all {
                    match b.protocol {
                        Proto::Tcp => {
                            let s = dual_stack_listener();
                            d.register(l, &s).unwrap();
                            tcp.push(s);
                        }
                        Proto::Udp => {
                            let s = dual_stack_udp();
                            d.register(l, &s).unwrap();
                            udp.push(s);
                        }
                    }
                }
                (tcp, udp)
            });
            let table = d.table().unwrap();
            for (protocol, ip, port) in queries {
                let want = table
                    .lookup(protocol, ip, port)
                    .map(|l| table.sockets[&(table.labels[l], protocol)].cookie)
                    .unwrap_or(0);
                let got = test_run(prog_fd, protocol, ip, port);
                prop_assert_eq!(
                    got,
                    want,
                    "{} {}:{} with bindings {:?}",
                    protocol,
                    ip,
                    port,
                    bindings
                );
            }
            drop((tcp, udp));
            let keys: Vec<Binding> = all.iter().map(|(b, _)| *b).collect();
            d.unbind_many(&keys).unwrap();
            prop_assert_eq!(d.kernel().read_summary().unwrap(), 0);
            prop_assert!(d.bindings().unwrap().is_empty());
            Ok(())
        })
        .unwrap();
}
