//! Shared set-up of the privileged tests: a namespace with AnyIP routes
//! (10.0.0.0/24, fd00::/64 local on lo), a dispatcher pinned under a unique
//! bpffs directory and attached to the namespace; all removed on drop.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flowpin_sk_lookup::{Binding, Dispatcher, DispatcherConfig, Label, Port, Proto};
use flowpin_testing::{unique_name, NetNs};

/// The shared root check and skip accounting.
pub use flowpin_testing::require_root;

pub struct Env {
    pub ns: NetNs,
    pub dir: PathBuf,
    pub d: Option<Dispatcher>,
}

impl Env {
    pub fn new(tag: &str) -> Env {
        Self::with_config(tag, DispatcherConfig::default())
    }

    pub fn with_config(tag: &str, cfg: DispatcherConfig) -> Env {
        let ns = NetNs::new(tag).expect("netns");
        ns.ip(&["route", "add", "local", "10.0.0.0/24", "dev", "lo"])
            .expect("anyip v4");
        ns.ip(&["-6", "route", "add", "local", "fd00::/64", "dev", "lo"])
            .expect("anyip v6");
        let dir = PathBuf::from("/sys/fs/bpf").join(unique_name(tag));
        let d = Dispatcher::create(&dir, cfg).expect("create dispatcher");
        d.attach(ns.path().as_path()).expect("attach");
        Env {
            ns,
            dir,
            d: Some(d),
        }
    }

    pub fn d(&self) -> &Dispatcher {
        self.d.as_ref().expect("dispatcher")
    }

    pub fn in_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.ns.run(f).expect("run in netns")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.d = None;
        let _ = Dispatcher::remove(&self.dir);
    }
}

pub fn label(s: &str) -> Label {
    Label::new(s).unwrap()
}

pub fn bind(p: Proto, prefix: &str, port: Option<u16>) -> Binding {
    Binding::new(
        p,
        prefix.parse().unwrap(),
        port.map_or(Port::Any, |p| Port::new(p).unwrap()),
    )
}

pub fn listener(addr: &str) -> TcpListener {
    let l = TcpListener::bind(addr).expect("bind listener");
    l.set_nonblocking(true).unwrap();
    l
}

pub fn dual_stack_listener() -> TcpListener {
    let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
    s.set_only_v6(false).unwrap();
    // Bound to [::]: the kernel makes a socket bound to a plain IPv6 address
    // IPv6-only whatever IPV6_V6ONLY says.
    s.bind(&"[::]:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(128).unwrap();
    let l: TcpListener = s.into();
    l.set_nonblocking(true).unwrap();
    l
}

/// Connects to `dst`, sends a byte; `Some(local addr seen by the server)`
/// if `l` accepted it within 2 s, `None` if the connection was refused.
pub fn reaches(dst: SocketAddr, l: &TcpListener) -> Option<SocketAddr> {
    let mut c = TcpStream::connect_timeout(&dst, Duration::from_secs(2)).ok()?;
    c.write_all(b"x").unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match l.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false).unwrap();
                let mut b = [0u8; 1];
                s.read_exact(&mut b).unwrap();
                return Some(s.local_addr().unwrap());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => panic!(
                "connected to {dst} but {:?} never accepted: {e}",
                l.local_addr()
            ),
        }
    }
}

/// Whether a connection to `dst` is refused.
pub fn refused(dst: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&dst, Duration::from_secs(2)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

pub fn udp(addr: &str) -> UdpSocket {
    let s = UdpSocket::bind(addr).expect("bind udp");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

/// Sends `msg` to `dst` from a fresh socket; whether `rx` got it.
pub fn udp_reaches(dst: SocketAddr, rx: &UdpSocket, msg: &[u8]) -> bool {
    let any = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let tx = UdpSocket::bind(any).unwrap();
    tx.send_to(msg, dst).unwrap();
    let mut buf = [0u8; 64];
    match rx.recv_from(&mut buf) {
        Ok((n, _)) => &buf[..n] == msg,
        Err(_) => false,
    }
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}
