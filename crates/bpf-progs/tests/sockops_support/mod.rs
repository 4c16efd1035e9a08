//! Test support of the `privileged_sockops*` tests: a client and a server
//! namespace with one cgroup each, socket creation inside a cgroup, an
//! `AF_PACKET` capture, and the raw IPv4 sender of the fake peers.
// Test-only code: a failed setup step should fail the test loudly.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flowpin_tcp_opt::{find_server_id, Layout, ServerId};
use flowpin_testing::{Cgroup, CgroupMembership, NetNs, VethPair};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

pub const CLI_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const SRV_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const CLI_IP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
pub const SRV_IP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
pub const CLI_MAC: &str = "02:00:00:77:00:01";
pub const SRV_MAC: &str = "02:00:00:77:00:02";

static CG_LOCK: Mutex<()> = Mutex::new(());

/// Runs `f` (which creates sockets) with the whole process in `cg`, or in
/// its own cgroup for `None`, under the binary-wide lock.
pub fn sockets_in<T>(cg: Option<&Cgroup>, f: impl FnOnce() -> T) -> T {
    let _g = CG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cg) = cg else {
        return f();
    };
    let member = CgroupMembership::join(cg).expect("move the test process into the cgroup");
    let r = f();
    member
        .leave()
        .expect("move the test process back to its cgroup");
    r
}

/// A bytes pattern that makes reordering or corruption visible.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Which side of a [`Pair`] is played by the test with raw packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fake {
    /// None: both are real stacks.
    None,
    /// The server.
    Server,
    /// The client.
    Client,
}

/// Client namespace (10.77.0.1, veth `vc`) and server namespace (10.77.0.2,
/// veth `vs`), with one child cgroup per side.
pub struct Pair {
    pub cli: NetNs,
    pub srv: NetNs,
    pub cg_cli: Cgroup,
    pub cg_srv: Cgroup,
    _veth: VethPair,
}

impl Pair {
    /// With a fake side, that namespace has no address: frames to it are
    /// captured but its kernel drops them silently, and the test answers
    /// with raw packets ([`RawSender`]).
    pub fn new(tag: &str, fake: Fake) -> Pair {
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(4)
            .collect();
        let cli = NetNs::new(&format!("c{tag}")).unwrap();
        let srv = NetNs::new(&format!("s{tag}")).unwrap();
        let veth = VethPair::new(&cli, "vc", &srv, "vs").unwrap();
        cli.ip(&["link", "set", "vc", "address", CLI_MAC]).unwrap();
        srv.ip(&["link", "set", "vs", "address", SRV_MAC]).unwrap();
        if fake == Fake::Client {
            cli.ip(&["route", "add", "10.77.0.0/24", "dev", "vc"])
                .unwrap();
        } else {
            cli.ip(&["addr", "add", "10.77.0.1/24", "dev", "vc"])
                .unwrap();
        }
        // Static neighbours: no ARP in the captures, and the fake server
        // needs none.
        cli.ip(&[
            "neigh",
            "replace",
            "10.77.0.2",
            "lladdr",
            SRV_MAC,
            "dev",
            "vc",
            "nud",
            "permanent",
        ])
        .unwrap();
        srv.ip(&[
            "neigh",
            "replace",
            "10.77.0.1",
            "lladdr",
            CLI_MAC,
            "dev",
            "vs",
            "nud",
            "permanent",
        ])
        .unwrap();
        if fake == Fake::Server {
            srv.ip(&["route", "add", "10.77.0.0/24", "dev", "vs"])
                .unwrap();
        } else {
            srv.ip(&["addr", "add", "10.77.0.2/24", "dev", "vs"])
                .unwrap();
        }
        if fake == Fake::None {
            cli.ip(&["-6", "addr", "add", "fd77::1/64", "dev", "vc", "nodad"])
                .unwrap();
            srv.ip(&["-6", "addr", "add", "fd77::2/64", "dev", "vs", "nodad"])
                .unwrap();
            cli.ip(&[
                "-6",
                "neigh",
                "replace",
                "fd77::2",
                "lladdr",
                SRV_MAC,
                "dev",
                "vc",
                "nud",
                "permanent",
            ])
            .unwrap();
            srv.ip(&[
                "-6",
                "neigh",
                "replace",
                "fd77::1",
                "lladdr",
                CLI_MAC,
                "dev",
                "vs",
                "nud",
                "permanent",
            ])
            .unwrap();
        }
        let cg_cli = Cgroup::new(&format!("c{tag}")).unwrap();
        let cg_srv = Cgroup::new(&format!("s{tag}")).unwrap();
        Pair {
            cli,
            srv,
            cg_cli,
            cg_srv,
            _veth: veth,
        }
    }

    /// A listener on 10.77.0.2:`port`, created in the server cgroup.
    pub fn listen(&self, port: u16) -> TcpListener {
        self.listen_in(Some(&self.cg_srv), port)
    }

    /// A listener on 10.77.0.2:`port`, created in `cg`.
    pub fn listen_in(&self, cg: Option<&Cgroup>, port: u16) -> TcpListener {
        self.listen_at(cg, SocketAddr::from((SRV_IP, port)))
    }

    /// A listener on `addr` in the server namespace, created in `cg`.
    pub fn listen_at(&self, cg: Option<&Cgroup>, addr: SocketAddr) -> TcpListener {
        sockets_in(cg, || {
            self.srv
                .run(move || TcpListener::bind(addr).unwrap())
                .unwrap()
        })
    }

    /// A connection to 10.77.0.2:`port`, created in the client cgroup.
    pub fn connect(&self, port: u16) -> TcpStream {
        self.connect_in(Some(&self.cg_cli), port)
    }

    /// A connection to 10.77.0.2:`port`, created in `cg`.
    pub fn connect_in(&self, cg: Option<&Cgroup>, port: u16) -> TcpStream {
        self.connect_to(cg, SocketAddr::from((SRV_IP, port)))
    }

    /// A connection from the client namespace to `addr`, created in `cg`.
    pub fn connect_to(&self, cg: Option<&Cgroup>, addr: SocketAddr) -> TcpStream {
        let s = sockets_in(cg, || {
            self.cli
                .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap())
                .unwrap()
        });
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Captures every frame on the server's veth from now on.
    pub fn capture(&self) -> Capture {
        Capture::open(&self.srv)
    }

    /// A raw IPv4 sender in the server namespace (fake server), sending
    /// from 10.77.0.2 to 10.77.0.1.
    pub fn raw_sender(&self) -> RawSender {
        RawSender::open(&self.srv, false)
    }

    /// A raw IPv4 sender in the client namespace (fake client), sending
    /// from 10.77.0.1 to 10.77.0.2.
    pub fn raw_client_sender(&self) -> RawSender {
        RawSender::open(&self.cli, true)
    }
}

/// One captured TCP segment between CLI_IP and SRV_IP.
#[derive(Clone)]
pub struct Seg {
    pub from_client: bool,
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub server_port: u16,
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub seq: u32,
    pub ack_no: u32,
    pub payload: Vec<u8>,
    pub options: Vec<u8>,
}

impl std::fmt::Debug for Seg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flags: String = [
            (self.syn, 'S'),
            (self.ack, '.'),
            (self.fin, 'F'),
            (self.rst, 'R'),
        ]
        .iter()
        .filter_map(|&(on, c)| on.then_some(c))
        .collect();
        write!(
            f,
            "{} {}:{}:{} [{flags}] seq {} ack {} len {} options {:?}",
            if self.from_client { "c->s" } else { "s->c" },
            self.client_ip,
            self.client_port,
            self.server_port,
            self.seq,
            self.ack_no,
            self.payload.len(),
            self.options
        )
    }
}

impl Seg {
    /// Sequence space the segment occupies.
    pub fn seq_len(&self) -> u32 {
        self.payload.len() as u32 + u32::from(self.syn) + u32::from(self.fin)
    }
}

/// Counts of one connection's segments by kind (see the tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct WireCount {
    pub client_after_syn: u64,
    pub client_data: u64,
    pub client_pure_ack: u64,
    pub client_fin: u64,
    pub client_rst: u64,
    pub server_data: u64,
}

/// The server_id of a captured segment per `flowpin_tcp_opt` (None when
/// absent or malformed).
pub fn decode(s: &Seg, layout: Layout) -> Option<ServerId> {
    find_server_id(&s.options, layout).ok().flatten()
}

/// Whether any option of the layout's kind(s) is present at all (whatever
/// its length or ExID).
pub fn has_server_id_kind(opts: &[u8], layout: Layout) -> bool {
    let is_kind = |k: u8| match layout {
        Layout::Rfc6994 { .. } => k == 253 || k == 254,
        Layout::Compact { kind } => k == kind,
        _ => k == 0xB6 || k == 0xB7,
    };
    let mut i = 0;
    while i < opts.len() {
        let k = opts[i];
        if k == 0 {
            break;
        }
        if k == 1 {
            i += 1;
            continue;
        }
        if is_kind(k) {
            return true;
        }
        match opts.get(i + 1) {
            Some(&l) if l >= 2 => i += usize::from(l),
            _ => break,
        }
    }
    false
}

/// An `AF_PACKET` socket in a namespace, reading every frame (both
/// directions) of its interfaces.
pub struct Capture {
    sock: Socket,
    kept: Vec<Seg>,
}

const ETH_P_ALL: u16 = 0x0003;

impl Capture {
    pub fn open(ns: &NetNs) -> Capture {
        let sock = ns
            .run(|| {
                Socket::new(
                    Domain::PACKET,
                    Type::RAW,
                    Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
                )
                .unwrap()
            })
            .unwrap();
        sock.set_nonblocking(true).unwrap();
        sock.set_recv_buffer_size(8 << 20).unwrap();
        Capture {
            sock,
            kept: Vec::new(),
        }
    }

    /// Reads every frame queued so far; returns all TCP segments between the
    /// two test addresses captured since the capture was opened.
    pub fn drain(&mut self) -> Vec<Seg> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match (&self.sock).read(&mut buf) {
                Ok(n) => {
                    if let Some(s) = parse_frame(&buf[..n]) {
                        self.kept.push(s);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("capture read: {e}"),
            }
        }
        self.kept.clone()
    }

    /// Waits (up to 5 s) until both sides of the connection
    /// `client_port`↔`server_port` have sent a FIN or one a RST, plus a
    /// grace period for the last ACKs; returns that connection's segments.
    pub fn wait_for_close(&mut self, client_port: u16, server_port: u16) -> Vec<Seg> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mine = |segs: Vec<Seg>| -> Vec<Seg> {
            segs.into_iter()
                .filter(|s| s.client_port == client_port && s.server_port == server_port)
                .collect()
        };
        loop {
            let segs = mine(self.drain());
            let cfin = segs.iter().any(|s| s.from_client && (s.fin || s.rst));
            let sfin = segs.iter().any(|s| !s.from_client && (s.fin || s.rst));
            if (cfin && sfin) || Instant::now() > deadline {
                std::thread::sleep(Duration::from_millis(200));
                return mine(self.drain());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (up to 5 s) for a segment matching `pred` among the segments
    /// not yet returned by an earlier `wait_for` (`cursor` tracks that).
    pub fn wait_for(&mut self, cursor: &mut usize, what: &str, pred: impl Fn(&Seg) -> bool) -> Seg {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let segs = self.drain();
            if let Some((i, s)) = segs.iter().enumerate().skip(*cursor).find(|(_, s)| pred(s)) {
                *cursor = i + 1;
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; captured: {segs:#?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn parse_frame(frame: &[u8]) -> Option<Seg> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let (src, dst): (IpAddr, IpAddr) = match p.net? {
        NetSlice::Ipv4(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        _ => return None,
    };
    let TransportSlice::Tcp(tcp) = p.transport? else {
        return None;
    };
    // Clients: 10.77.0.0/24 but the server (10.77.0.1, and 10.77.0.3 for a
    // second MPTCP subflow), and fd77::1.
    let is_client = |a: IpAddr| match a {
        IpAddr::V4(a) => a.octets()[..3] == CLI_IP.octets()[..3] && a != SRV_IP,
        IpAddr::V6(a) => a == CLI_IP6,
    };
    let is_server = |a: IpAddr| a == IpAddr::V4(SRV_IP) || a == IpAddr::V6(SRV_IP6);
    let from_client = if is_client(src) && is_server(dst) {
        true
    } else if is_server(src) && is_client(dst) {
        false
    } else {
        return None;
    };
    let (client_port, server_port) = if from_client {
        (tcp.source_port(), tcp.destination_port())
    } else {
        (tcp.destination_port(), tcp.source_port())
    };
    Some(Seg {
        from_client,
        client_ip: if from_client { src } else { dst },
        client_port,
        server_port,
        syn: tcp.syn(),
        ack: tcp.ack(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        seq: tcp.sequence_number(),
        ack_no: tcp.acknowledgment_number(),
        payload: tcp.payload().to_vec(),
        options: tcp.options().to_vec(),
    })
}

/// Sends hand-built IPv4/TCP packets from the server namespace
/// (`IPPROTO_RAW`, so the source address need not be local).
pub struct RawSender {
    sock: Socket,
    from_client: bool,
}

/// One segment a fake side sends.
pub struct Out<'a> {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    /// The acknowledgment number; `None`: no ACK flag.
    pub ack: Option<u32>,
    pub syn: bool,
    pub fin: bool,
    pub options: &'a [u8],
    pub payload: &'a [u8],
}

impl RawSender {
    pub fn open(ns: &NetNs, from_client: bool) -> RawSender {
        let sock = ns
            .run(|| Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255))).unwrap())
            .unwrap();
        RawSender { sock, from_client }
    }

    /// Sends from this side's address to the other one. `options` is padded
    /// with NOPs to a multiple of 4.
    pub fn send(&self, o: &Out<'_>) {
        let mut opts = o.options.to_vec();
        while !opts.len().is_multiple_of(4) {
            opts.push(1);
        }
        let mut tcp = etherparse::TcpHeader::new(o.sport, o.dport, o.seq, 65535);
        tcp.syn = o.syn;
        tcp.fin = o.fin;
        tcp.ack = o.ack.is_some();
        tcp.psh = !o.payload.is_empty();
        tcp.acknowledgment_number = o.ack.unwrap_or(0);
        tcp.set_options_raw(&opts).unwrap();
        let (src, dst) = if self.from_client {
            (CLI_IP, SRV_IP)
        } else {
            (SRV_IP, CLI_IP)
        };
        let b = etherparse::PacketBuilder::ipv4(src.octets(), dst.octets(), 64).tcp_header(tcp);
        let mut pkt = Vec::with_capacity(b.size(o.payload.len()));
        b.write(&mut pkt, o.payload).unwrap();
        let to = SockAddr::from(SocketAddrV4::new(dst, 0));
        self.sock.send_to(&pkt, &to).unwrap();
    }
}

/// The kinds of the options in an options area (not every byte: timestamps
/// and ids may contain any value).
pub fn option_kinds(area: &[u8]) -> Vec<u8> {
    flowpin_tcp_opt::Options::new(area)
        .map_while(Result::ok)
        .map(|o| o.kind())
        .collect()
}
