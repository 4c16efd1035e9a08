//! Privileged: `sockops_server_id` on bad input, live in namespaces.
//!
//! - A fake server (raw packets from a namespace without the address, see
//!   `sockops_support`) answers a real client's SYN with hand-made SYN-ACK
//!   options: wrong length, wrong ExID, server_id 0, ... The client must
//!   ignore them, count them, write nothing, and the connection must work.
//! - Option area full: TCP-MD5 on both ends makes the client's SYN carry 40
//!   bytes of options (the server must still stamp its SYN-ACK), and with
//!   SACK off the server's SYN-ACK itself has no room left (the server must
//!   send it without the option, count it, and the connection must work).
// Test helpers outside #[test] fns too: a failed setup step fails the test.
#![allow(clippy::unwrap_used)]

mod sockops_support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use flowpin_bpf_progs::sockops_server_id::{ClientStats, ServerIdOps, ServerIdOpsConfig};
use flowpin_tcp_opt::{Layout, ServerId};
use flowpin_testing::require_bpf;
use socket2::{Domain, Socket, Type};
use sockops_support::*;

const ISS: u32 = 0x1000_0000;

/// A real client connects to the fake server on `port`; the fake answers the
/// SYN with MSS 1460 + `synack_opts`, reads "hello", answers "pong", and
/// closes after the client. Returns every segment of the connection.
fn fake_server_exchange(pair: &Pair, port: u16, synack_opts: &[u8]) -> Vec<Seg> {
    let mut cap = pair.capture();
    let raw = pair.raw_sender();
    let synack_opts = synack_opts.to_vec();
    let fake = std::thread::spawn(move || {
        let mut cur = 0;
        let syn = cap.wait_for(&mut cur, "client SYN", |s| {
            s.from_client && s.syn && !s.ack && s.server_port == port
        });
        let cport = syn.client_port;
        let mut opts = vec![2, 4, 0x05, 0xb4];
        opts.extend_from_slice(&synack_opts);
        let send = |seq, ack, syn, fin, options: &[u8], payload: &[u8]| {
            raw.send(&Out {
                sport: port,
                dport: cport,
                seq,
                ack: Some(ack),
                syn,
                fin,
                options,
                payload,
            })
        };
        send(ISS, syn.seq.wrapping_add(1), true, false, &opts, &[]);
        let mut got = Vec::new();
        let mut next = syn.seq.wrapping_add(1);
        while got.len() < 5 {
            let d = cap.wait_for(&mut cur, "client data", |s| {
                s.from_client && s.client_port == cport && !s.payload.is_empty()
            });
            if d.seq == next {
                got.extend_from_slice(&d.payload);
                next = next.wrapping_add(d.payload.len() as u32);
            }
        }
        assert_eq!(got, b"hello", "bytes the fake server received");
        send(ISS + 1, next, false, false, &[], b"pong");
        let fin = cap.wait_for(&mut cur, "client FIN", |s| {
            s.from_client && s.client_port == cport && s.fin
        });
        send(
            ISS + 5,
            fin.seq.wrapping_add(fin.seq_len()),
            false,
            true,
            &[],
            &[],
        );
        cap.wait_for(&mut cur, "the client's last ACK", |s| {
            s.from_client && s.client_port == cport && !s.fin && s.ack_no == ISS + 6
        });
        cap.drain()
            .into_iter()
            .filter(|s| s.client_port == cport && s.server_port == port)
            .collect::<Vec<_>>()
    });
    let mut c = pair.connect(port);
    c.write_all(b"hello").unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong", "bytes the client received");
    drop(c);
    fake.join().expect("fake server")
}

struct Case {
    name: &'static str,
    layout: Layout,
    synack_opts: &'static [u8],
    /// The server_id the client must echo, or None (must write nothing).
    echo: Option<u32>,
    want: fn(&ClientStats) -> bool,
}

#[test]
fn privileged_sockops_client_ignores_and_counts_bad_synack_options() {
    let test = "sockops bad synack options";
    if !require_bpf(test) {
        return;
    }
    let rfc = Layout::default();
    let cases = [
        // Positive controls: the fake server harness does see an echo.
        Case {
            name: "valid RFC 6994 (control)",
            layout: rfc,
            synack_opts: &[253, 8, 0xF1, 0x0E, 0, 0, 0, 9],
            echo: Some(9),
            want: |c| c.parsed == 1 && c.echoed >= 3,
        },
        Case {
            name: "valid RFC 6994 on kind 254, after a foreign experimental option",
            layout: rfc,
            synack_opts: &[
                254, 8, 0x12, 0x34, 0xAA, 0xBB, 0xCC, 0xDD, 254, 8, 0xF1, 0x0E, 0, 0, 0x01, 0x02,
            ],
            echo: Some(0x0102),
            want: |c| c.parsed == 1,
        },
        // Bad input.
        Case {
            name: "RFC 6994, length 10",
            layout: rfc,
            synack_opts: &[253, 10, 0xF1, 0x0E, 0, 0, 0, 9, 0, 0],
            echo: None,
            want: |c| c.malformed == 1 && c.parsed == 0,
        },
        Case {
            name: "RFC 6994, length 6",
            layout: rfc,
            synack_opts: &[253, 6, 0xF1, 0x0E, 0, 9],
            echo: None,
            want: |c| c.malformed == 1 && c.parsed == 0,
        },
        Case {
            name: "RFC 6994, another ExID",
            layout: rfc,
            synack_opts: &[253, 8, 0x12, 0x34, 0, 0, 0, 9],
            echo: None,
            want: |c| c.missing == 1 && c.parsed == 0,
        },
        Case {
            name: "RFC 6994, server_id 0",
            layout: rfc,
            synack_opts: &[253, 8, 0xF1, 0x0E, 0, 0, 0, 0],
            echo: None,
            want: |c| c.zero == 1 && c.parsed == 0,
        },
        Case {
            name: "RFC 6994, server_id 0 first, a valid one second (first wins)",
            layout: rfc,
            synack_opts: &[
                253, 8, 0xF1, 0x0E, 0, 0, 0, 0, 253, 8, 0xF1, 0x0E, 0, 0, 0, 9,
            ],
            echo: None,
            want: |c| c.zero == 1 && c.parsed == 0,
        },
        Case {
            name: "Compact, length 8",
            layout: Layout::Compact { kind: 0xB5 },
            synack_opts: &[0xB5, 8, 0, 0, 0, 9, 0, 0],
            echo: None,
            want: |c| c.malformed == 1 && c.parsed == 0,
        },
        Case {
            name: "Katran, server_id 0",
            layout: Layout::KatranCompat,
            synack_opts: &[0xB6, 6, 0, 0, 0, 0],
            echo: None,
            want: |c| c.zero == 1 && c.parsed == 0,
        },
        Case {
            name: "Katran, valid (control, little-endian id)",
            layout: Layout::KatranCompat,
            synack_opts: &[0xB6, 6, 9, 0, 0, 0],
            echo: Some(9),
            want: |c| c.parsed == 1,
        },
    ];
    let pair = Pair::new(test, Fake::Server);
    for (i, case) in cases.iter().enumerate() {
        let client = ServerIdOps::load(ServerIdOpsConfig::client().layout(case.layout)).unwrap();
        let link = client.attach(pair.cg_cli.path()).unwrap();
        let segs = fake_server_exchange(&pair, 5000 + i as u16, case.synack_opts);
        drop(link);
        let name = case.name;
        let syn = segs.iter().find(|s| s.from_client && s.syn).expect("SYN");
        assert!(
            !has_server_id_kind(&syn.options, case.layout),
            "{name}: option in the SYN"
        );
        let after: Vec<&Seg> = segs.iter().filter(|s| s.from_client && !s.syn).collect();
        assert!(
            after.iter().any(|s| !s.payload.is_empty()),
            "{name}: data seen"
        );
        assert!(after.iter().any(|s| s.fin), "{name}: FIN seen");
        for s in &after {
            match case.echo {
                Some(want) => assert_eq!(
                    decode(s, case.layout).map(ServerId::get),
                    Some(want),
                    "{name}: {s:?}"
                ),
                None => assert!(
                    !has_server_id_kind(&s.options, case.layout),
                    "{name}: option written: {s:?}"
                ),
            }
        }
        let st = client.stats().unwrap();
        assert!((case.want)(&st.client), "{name}: counters {:?}", st.client);
        assert_eq!(st.client.connects, 1, "{name}");
        assert_eq!(st.errors, 0, "{name}");
        if case.echo.is_none() {
            assert_eq!(st.client.echoed, 0, "{name}: {:?}", st.client);
        } else {
            assert_eq!(
                st.client.echoed,
                after.len() as u64,
                "{name}: {:?}",
                st.client
            );
        }
    }
}

/// `struct tcp_md5sig` of `<linux/tcp.h>` (the libc crate has no binding).
#[repr(C)]
struct TcpMd5Sig {
    addr: [u8; 128], // struct sockaddr_storage
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; 80],
}

fn set_md5_key(sock: &Socket, peer: Ipv4Addr) {
    use nix::libc;
    let mut m = TcpMd5Sig {
        addr: [0; 128],
        flags: 0,
        prefixlen: 0,
        keylen: 6,
        ifindex: 0,
        key: [0; 80],
    };
    m.addr[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    m.addr[4..8].copy_from_slice(&peer.octets());
    m.key[..6].copy_from_slice(b"flowpn");
    // SAFETY: setsockopt(TCP_MD5SIG) on a valid socket fd with a pointer to
    // a live, fully initialised struct of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&m as *const TcpMd5Sig).cast(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_MD5SIG: {}", std::io::Error::last_os_error());
}

/// A 100 kB echo over TCP-MD5; returns the connection's segments.
fn md5_echo(pair: &Pair, port: u16) -> Vec<Seg> {
    let mut cap = pair.capture();
    let listener: TcpListener = sockets_in(Some(&pair.cg_srv), || {
        pair.srv
            .run(|| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                set_md5_key(&s, CLI_IP);
                s.bind(&SocketAddr::from((SRV_IP, port)).into()).unwrap();
                s.listen(16).unwrap();
                s.into()
            })
            .unwrap()
    });
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut r = s.try_clone().unwrap();
        std::io::copy(&mut r, &mut s).unwrap();
    });
    let mut c: TcpStream = sockets_in(Some(&pair.cg_cli), || {
        pair.cli
            .run(|| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                set_md5_key(&s, SRV_IP);
                s.connect_timeout(
                    &SocketAddr::from((SRV_IP, port)).into(),
                    Duration::from_secs(5),
                )
                .unwrap();
                s.into()
            })
            .unwrap()
    });
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let cport = c.local_addr().unwrap().port();
    let data = pattern(100_000);
    let mut w = c.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    server.join().unwrap();
    assert!(
        back == data,
        "echoed bytes over TCP-MD5 differ ({} of {} bytes back)",
        back.len(),
        data.len()
    );
    cap.wait_for_close(cport, port)
}

#[test]
fn privileged_sockops_coexists_with_tcp_md5() {
    let test = "sockops tcp md5";
    if !require_bpf(test) {
        return;
    }
    let layout = Layout::default();
    let sid = ServerId::new(4242).unwrap();
    let pair = Pair::new(test, Fake::None);
    let server = ServerIdOps::load(ServerIdOpsConfig::server(sid)).unwrap();
    let client = ServerIdOps::load(ServerIdOpsConfig::client()).unwrap();
    let _ls = server.attach(pair.cg_srv.path()).unwrap();
    let _lc = client.attach(pair.cg_cli.path()).unwrap();

    // The SYN carries MD5 20 + MSS 4 + SACK-permitted 4 + window scale 4
    // (Linux leaves timestamps out of MD5-signed SYNs); the SYN-ACK has room
    // left for the server_id, and every client packet carries MD5 + echo.
    let segs = md5_echo(&pair, 4001);
    let syn = segs.iter().find(|s| s.from_client && s.syn).expect("SYN");
    assert!(
        option_kinds(&syn.options).contains(&19),
        "MD5 option (kind 19) in the SYN: {syn:?}"
    );
    assert!(!has_server_id_kind(&syn.options, layout));
    let synack = segs
        .iter()
        .find(|s| !s.from_client && s.syn)
        .expect("SYN-ACK");
    assert_eq!(
        decode(synack, layout),
        Some(sid),
        "SYN-ACK stamped next to MD5: {synack:?}"
    );
    assert!(
        option_kinds(&synack.options).contains(&19),
        "MD5 option kept in the SYN-ACK"
    );
    let mut n = 0;
    for s in segs.iter().filter(|s| s.from_client && !s.syn) {
        assert_eq!(decode(s, layout), Some(sid), "client echo over MD5: {s:?}");
        assert!(option_kinds(&s.options).contains(&19), "MD5 kept: {s:?}");
        n += 1;
    }
    for s in segs.iter().filter(|s| !s.from_client && !s.syn) {
        assert!(
            !has_server_id_kind(&s.options, layout),
            "server packet: {s:?}"
        );
    }
    let (ss, cs) = (server.stats().unwrap(), client.stats().unwrap());
    assert_eq!(
        (ss.server.written, ss.server.no_space, ss.server.echo_ok),
        (1, 0, 1),
        "{ss:?}"
    );
    assert_eq!(
        (cs.client.parsed, cs.client.no_space, cs.client.echoed),
        (1, 0, n),
        "{cs:?}"
    );
}

/// The client's option area full: a duplicate ACK carrying 4 SACK blocks
/// (4 + 4 x 8 = 36 bytes; the kernel writes its own options first) leaves no
/// room for the echo. That ACK goes without it, counted in
/// `client.no_space`; every other packet carries it; the data arrive intact.
#[test]
fn privileged_sockops_client_option_area_full_with_sack_blocks() {
    let test = "sockops sack full";
    if !require_bpf(test) {
        return;
    }
    let layout = Layout::default();
    let pair = Pair::new(test, Fake::Server);
    let client = ServerIdOps::load(ServerIdOpsConfig::client()).unwrap();
    let _lc = client.attach(pair.cg_cli.path()).unwrap();
    let port = 5500;
    let mut cap = pair.capture();
    let raw = pair.raw_sender();
    let reply = pattern(800);
    let reply2 = reply.clone();
    let fake = std::thread::spawn(move || {
        let mut cur = 0;
        let syn = cap.wait_for(&mut cur, "client SYN", |s| {
            s.from_client && s.syn && s.server_port == port
        });
        let cport = syn.client_port;
        let send = |seq, ack, syn, fin, options: &[u8], payload: &[u8]| {
            raw.send(&Out {
                sport: port,
                dport: cport,
                seq,
                ack: Some(ack),
                syn,
                fin,
                options,
                payload,
            })
        };
        // MSS 1460, SACK permitted, server_id 9.
        let opts = [2, 4, 0x05, 0xb4, 1, 1, 4, 2, 253, 8, 0xF1, 0x0E, 0, 0, 0, 9];
        let cnext = syn.seq.wrapping_add(1);
        send(ISS, cnext, true, false, &opts, &[]);
        let d = cap.wait_for(&mut cur, "client data", |s| {
            s.from_client && s.client_port == cport && !s.payload.is_empty()
        });
        assert_eq!(d.payload, b"hello");
        let cnext = cnext.wrapping_add(5);
        // 8 segments of 100 bytes: odd ones first (4 holes → 4 SACK blocks),
        // then the even ones.
        for k in (1..8).step_by(2).chain((0..8).step_by(2)) {
            send(
                ISS + 1 + 100 * k as u32,
                cnext,
                false,
                false,
                &[],
                &reply2[100 * k..100 * (k + 1)],
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let fin = cap.wait_for(&mut cur, "client FIN", |s| {
            s.from_client && s.client_port == cport && s.fin
        });
        send(
            ISS + 801,
            fin.seq.wrapping_add(fin.seq_len()),
            false,
            true,
            &[],
            &[],
        );
        cap.wait_for(&mut cur, "the client's last ACK", |s| {
            s.from_client && s.client_port == cport && !s.fin && s.ack_no == ISS + 802
        });
        cap.drain()
            .into_iter()
            .filter(|s| s.client_port == cport && s.server_port == port)
            .collect::<Vec<_>>()
    });
    let mut c = pair.connect(port);
    c.write_all(b"hello").unwrap();
    let mut got = vec![0u8; reply.len()];
    c.read_exact(&mut got).unwrap();
    assert!(got == reply, "the reordered reply arrives intact");
    drop(c);
    let segs = fake.join().expect("fake server");

    let sack_blocks = |s: &Seg| -> usize {
        // Walk the options for SACK (kind 5).
        let o = &s.options;
        let mut i = 0;
        while i < o.len() {
            match o[i] {
                0 => break,
                1 => i += 1,
                5 => return (usize::from(o[i + 1]) - 2) / 8,
                _ => i += usize::from(o.get(i + 1).copied().unwrap_or(2)).max(2),
            }
        }
        0
    };
    let mut full = 0;
    let mut with = 0;
    for s in segs.iter().filter(|s| s.from_client && !s.syn) {
        if sack_blocks(s) == 4 {
            assert!(
                !has_server_id_kind(&s.options, layout),
                "no room next to 4 SACK blocks: {s:?}"
            );
            full += 1;
        } else {
            assert_eq!(decode(s, layout).map(ServerId::get), Some(9), "{s:?}");
            with += 1;
        }
    }
    assert!(full >= 1, "a 4-block SACK was sent: {segs:#?}");
    assert!(
        segs.iter()
            .any(|s| s.from_client && sack_blocks(s) == 3 && decode(s, layout).is_some()),
        "3 SACK blocks (28 bytes) still leave room for the echo"
    );
    let st = client.stats().unwrap();
    assert_eq!(st.client.no_space, full, "{st:?}");
    assert_eq!(st.client.echoed, with, "{st:?}");
    assert_eq!(st.errors, 0);
}

/// A fake client's SYN fills the whole 40-byte option area: MSS, window
/// scale, SACK permitted, a server_id option claiming 99, and an unknown
/// 23-byte option. The server does not parse SYNs: it stamps its own id into
/// the SYN-ACK (which has room: the kernel answers only the options it
/// knows). The fake client then echoes a wrong id (77): the server counts
/// `echo_wrong` and serves the connection normally.
#[test]
fn privileged_sockops_server_stamps_after_a_full_syn_and_counts_a_wrong_echo() {
    let test = "sockops full syn";
    if !require_bpf(test) {
        return;
    }
    let layout = Layout::default();
    let sid = ServerId::new(31).unwrap();
    let pair = Pair::new(test, Fake::Client);
    let server = ServerIdOps::load(ServerIdOpsConfig::server(sid)).unwrap();
    let _ls = server.attach(pair.cg_srv.path()).unwrap();
    let port = 5600;
    let listener = pair.listen(port);
    let srv = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        (buf, rest)
    });
    let mut cap = pair.capture();
    let raw = pair.raw_client_sender();
    let cport = 40_000;
    let iss = 0x2000_0000u32;
    let send = |seq, ack, syn, fin, options: &[u8], payload: &[u8]| {
        raw.send(&Out {
            sport: cport,
            dport: port,
            seq,
            ack,
            syn,
            fin,
            options,
            payload,
        })
    };
    let mut syn_opts = vec![
        2, 4, 0x05, 0xb4, 3, 3, 7, 4, 2, 253, 8, 0xF1, 0x0E, 0, 0, 0, 99, 0xB5, 23,
    ];
    syn_opts.extend(std::iter::repeat_n(0xEE, 21));
    assert_eq!(syn_opts.len(), 40);
    send(iss, None, true, false, &syn_opts, &[]);
    let mut cur = 0;
    let synack = cap.wait_for(&mut cur, "SYN-ACK", |s| {
        !s.from_client && s.syn && s.client_port == cport
    });
    assert_eq!(
        decode(&synack, layout),
        Some(sid),
        "the server's own id, not the SYN's: {synack:?}"
    );
    let snext = synack.seq.wrapping_add(1);
    let wrong_echo = [253, 8, 0xF1, 0x0E, 0, 0, 0, 77];
    send(iss + 1, Some(snext), false, false, &wrong_echo, &[]);
    send(iss + 1, Some(snext), false, false, &wrong_echo, b"hello");
    let back = cap.wait_for(&mut cur, "the server's echo", |s| {
        !s.from_client && s.client_port == cport && !s.payload.is_empty()
    });
    assert_eq!(back.payload, b"hello");
    assert!(
        !has_server_id_kind(&back.options, layout),
        "server data: {back:?}"
    );
    let snext = snext.wrapping_add(5);
    send(iss + 6, Some(snext), false, true, &wrong_echo, &[]);
    let sfin = cap.wait_for(&mut cur, "the server's FIN", |s| {
        !s.from_client && s.client_port == cport && s.fin
    });
    assert!(
        !has_server_id_kind(&sfin.options, layout),
        "server FIN: {sfin:?}"
    );
    send(
        iss + 7,
        Some(sfin.seq.wrapping_add(1)),
        false,
        false,
        &[],
        &[],
    );
    let (first, rest) = srv.join().unwrap();
    assert_eq!((&first, rest.len()), (b"hello", 0), "bytes the server read");
    let st = server.stats().unwrap();
    assert_eq!((st.server.written, st.server.no_space), (1, 0), "{st:?}");
    assert_eq!(
        (
            st.server.echo_ok,
            st.server.echo_wrong,
            st.server.echo_missing
        ),
        (0, 1, 0),
        "{st:?}"
    );
    assert_eq!(st.errors, 0);
}

/// The server's option area full, with real stacks: an MPTCP connection's
/// second subflow. Its SYN-ACK carries MSS 4 + SACK-permitted/timestamps 12
/// plus window scale 4 and MP_JOIN 16 = 36 bytes, so the 8-byte server_id does
/// not fit: that SYN-ACK goes without it, counted in `server.no_space`, the
/// client counts it missing, and the connection keeps working. (The first
/// subflow's SYN-ACK, MP_CAPABLE 12, has exactly 8 bytes left: stamped.)
#[test]
fn privileged_sockops_full_synack_on_an_mptcp_join_is_counted() {
    let test = "sockops mptcp join";
    if !require_bpf(test) {
        return;
    }
    let layout = Layout::default();
    let sid = ServerId::new(808).unwrap();
    let pair = Pair::new(test, Fake::None);
    pair.cli
        .ip(&["addr", "add", "10.77.0.3/24", "dev", "vc"])
        .unwrap();
    pair.srv
        .ip(&[
            "neigh",
            "replace",
            "10.77.0.3",
            "lladdr",
            CLI_MAC,
            "dev",
            "vs",
            "nud",
            "permanent",
        ])
        .unwrap();
    for ns in [&pair.cli, &pair.srv] {
        ns.ip(&[
            "mptcp",
            "limits",
            "set",
            "subflow",
            "2",
            "add_addr_accepted",
            "2",
        ])
        .unwrap();
    }
    pair.cli
        .ip(&[
            "mptcp",
            "endpoint",
            "add",
            "10.77.0.3",
            "dev",
            "vc",
            "subflow",
        ])
        .unwrap();
    let server = ServerIdOps::load(ServerIdOpsConfig::server(sid)).unwrap();
    let client = ServerIdOps::load(ServerIdOpsConfig::client()).unwrap();
    let _ls = server.attach(pair.cg_srv.path()).unwrap();
    let _lc = client.attach(pair.cg_cli.path()).unwrap();
    let mut cap = pair.capture();
    let port = 5700;
    let listener: TcpListener = sockets_in(Some(&pair.cg_srv), || {
        pair.srv
            .run(|| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, Some(socket2::Protocol::MPTCP))
                    .unwrap();
                s.bind(&SocketAddr::from((SRV_IP, port)).into()).unwrap();
                s.listen(16).unwrap();
                s.into()
            })
            .unwrap()
    });
    let h = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut r = s.try_clone().unwrap();
        std::io::copy(&mut r, &mut s).unwrap();
    });
    let mut c: TcpStream = sockets_in(Some(&pair.cg_cli), || {
        pair.cli
            .run(|| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, Some(socket2::Protocol::MPTCP))
                    .unwrap();
                s.connect_timeout(
                    &SocketAddr::from((SRV_IP, port)).into(),
                    Duration::from_secs(5),
                )
                .unwrap();
                s.into()
            })
            .unwrap()
    });
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // One round trip makes the MPTCP connection fully established; then the
    // path manager opens the second subflow. Wait for its handshake.
    c.write_all(b"hello").unwrap();
    let mut hello = [0u8; 5];
    c.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"hello");
    let mut cur = 0;
    let join_synack = cap.wait_for(&mut cur, "the MP_JOIN SYN-ACK", |s| {
        !s.from_client && s.syn && s.client_ip == IpAddr::from([10, 77, 0, 3])
    });
    cap.wait_for(&mut cur, "the MP_JOIN third ACK", |s| {
        s.from_client && !s.syn && s.client_ip == IpAddr::from([10, 77, 0, 3])
    });
    let data = pattern(200_000);
    let mut w = c.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    h.join().unwrap();
    assert!(
        back == data,
        "echo over MPTCP ({} of {} bytes)",
        back.len(),
        data.len()
    );
    std::thread::sleep(Duration::from_millis(200));
    let segs = cap.drain();

    let first_synack = segs
        .iter()
        .find(|s| !s.from_client && s.syn && s.client_ip == IpAddr::V4(CLI_IP))
        .expect("first subflow SYN-ACK");
    assert!(
        option_kinds(&first_synack.options).contains(&30),
        "MP_CAPABLE (kind 30): {first_synack:?}"
    );
    assert_eq!(
        decode(first_synack, layout),
        Some(sid),
        "first subflow stamped: {first_synack:?}"
    );
    assert!(
        option_kinds(&join_synack.options).contains(&30),
        "MP_JOIN (kind 30): {join_synack:?}"
    );
    assert!(join_synack.options.len() >= 36, "{join_synack:?}");
    assert!(
        !has_server_id_kind(&join_synack.options, layout),
        "no room on the join SYN-ACK: {join_synack:?}"
    );
    for s in segs
        .iter()
        .filter(|s| s.client_ip == IpAddr::from([10, 77, 0, 3]))
    {
        assert!(
            !has_server_id_kind(&s.options, layout),
            "nothing on the join subflow: {s:?}"
        );
    }
    let (ss, cs) = (server.stats().unwrap(), client.stats().unwrap());
    let join_synacks = segs
        .iter()
        .filter(|s| !s.from_client && s.syn && s.client_ip != IpAddr::V4(CLI_IP))
        .count() as u64;
    assert_eq!(ss.server.no_space, join_synacks, "{ss:?}");
    assert_eq!(ss.server.written, 1, "{ss:?}");
    assert_eq!((cs.client.parsed, cs.client.missing), (1, 1), "{cs:?}");
    assert_eq!(ss.errors + cs.errors, 0);
    // The first subflow's client packets: MPTCP's options (DSS 26 bytes, 28
    // padded; MP_CAPABLE with data 22, 24 padded) + timestamps 12 leave less
    // than the 8 bytes we need on most of them. With 1..7 bytes left the
    // program's reservation fails: counted in no_space. With 0 left the
    // kernel does not even call the program (bpf_skops_hdr_opt_len() returns
    // early): uncounted. Either way the packet goes without the echo.
    let first: Vec<&Seg> = segs
        .iter()
        .filter(|s| s.from_client && !s.syn && s.client_ip == IpAddr::V4(CLI_IP))
        .collect();
    let with = first
        .iter()
        .filter(|s| decode(s, layout) == Some(sid))
        .count() as u64;
    let tight = first
        .iter()
        .filter(|s| (33..40).contains(&s.options.len()))
        .count() as u64;
    let full = first
        .iter()
        .filter(|s| s.options.len() == 40 && !has_server_id_kind(&s.options, layout))
        .count() as u64;
    assert_eq!(cs.client.echoed, with, "{cs:?}");
    assert!(
        with >= 1,
        "the handshake ACK (MP_CAPABLE 20 + timestamps 12) still has room: {first:#?}"
    );
    assert_eq!(
        with + tight + full,
        first.len() as u64,
        "every first-subflow packet is echoed or has no room: {first:#?}"
    );
    assert_eq!(cs.client.no_space, tight, "{cs:?}");
    eprintln!(
        "MPTCP first subflow: {} client packets, {with} with the echo, {tight} with 1..7 bytes left (counted), {full} with 0 left (uncounted)",
        first.len()
    );
}
