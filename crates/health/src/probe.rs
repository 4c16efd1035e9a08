//! One probe: TCP connect, HTTP/1.1 `GET`, or a UDP request/reply, bounded
//! by a timeout, with its latency and, on failure, its [`FailReason`].
//!
//! A probe goes to the VIP with a socket mark ([`ProbeTarget::tunnel`]):
//! `probe_encap` on the LB host encapsulates it to the backend as `xdp_lb`
//! does, so it tests the path a client flow takes. Without a mark
//! ([`ProbeTarget::direct`]) it goes to the backend's own address (no
//! tunnel: for tests, or backends that serve on their address).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use crate::config::ProbeKind;

/// Why a probe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailReason {
    /// The connection was refused (RST to the SYN; ICMP port unreachable for UDP).
    Refused,
    /// The TCP handshake did not complete in time.
    ConnectTimeout,
    /// Connected (or sent), but the answer did not come in time.
    Timeout,
    /// The connection was reset or closed before the answer.
    Reset,
    /// The HTTP answer had another status (or was not HTTP).
    BadStatus,
    /// The UDP reply was not the expected one.
    BadReply,
    /// No route / host unreachable.
    Unreachable,
    /// Another local error (socket, mark: the prober needs CAP_NET_ADMIN).
    Local,
}

impl FailReason {
    /// Every reason, in label order.
    pub const ALL: [FailReason; 8] = [
        FailReason::Refused,
        FailReason::ConnectTimeout,
        FailReason::Timeout,
        FailReason::Reset,
        FailReason::BadStatus,
        FailReason::BadReply,
        FailReason::Unreachable,
        FailReason::Local,
    ];

    /// Snake-case name (metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::Refused => "refused",
            FailReason::ConnectTimeout => "connect_timeout",
            FailReason::Timeout => "timeout",
            FailReason::Reset => "reset",
            FailReason::BadStatus => "bad_status",
            FailReason::BadReply => "bad_reply",
            FailReason::Unreachable => "unreachable",
            FailReason::Local => "local",
        }
    }

    fn of(e: &io::Error) -> FailReason {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => FailReason::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => FailReason::Reset,
            io::ErrorKind::TimedOut => FailReason::Timeout,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                FailReason::Unreachable
            }
            _ => FailReason::Local,
        }
    }
}

impl std::fmt::Display for FailReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a probe goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProbeTarget {
    /// The destination of the probe's packets.
    pub dst: SocketAddr,
    /// The socket mark (`SO_MARK`, needs CAP_NET_ADMIN), if any.
    pub mark: Option<u32>,
}

impl ProbeTarget {
    /// To `vip:port` with `mark` (the `probe_encap` mark of the backend).
    pub fn tunnel(vip: IpAddr, port: u16, mark: u32) -> ProbeTarget {
        ProbeTarget {
            dst: SocketAddr::new(vip, port),
            mark: Some(mark),
        }
    }

    /// Straight to `backend:port`, unmarked.
    pub fn direct(backend: IpAddr, port: u16) -> ProbeTarget {
        ProbeTarget {
            dst: SocketAddr::new(backend, port),
            mark: None,
        }
    }
}

/// The result of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// Passed, or why not.
    pub result: Result<(), FailReason>,
    /// From the start to the answer (or the failure).
    pub latency: Duration,
}

impl ProbeOutcome {
    /// Whether it passed.
    pub fn passed(&self) -> bool {
        self.result.is_ok()
    }
}

/// Runs one probe of `kind` against `target` within `timeout`.
pub async fn probe_once(target: &ProbeTarget, kind: &ProbeKind, timeout: Duration) -> ProbeOutcome {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let result = match kind {
        ProbeKind::Tcp {} => tcp_connect(target, deadline).await.map(drop),
        ProbeKind::Http {
            path,
            expect_status,
        } => http(target, deadline, path, *expect_status).await,
        ProbeKind::Udp { send, expect } => udp(target, deadline, send, expect).await,
    };
    ProbeOutcome {
        result,
        latency: start.elapsed(),
    }
}

async fn tcp_connect(
    target: &ProbeTarget,
    deadline: tokio::time::Instant,
) -> Result<TcpStream, FailReason> {
    let sock = match target.dst {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|_| FailReason::Local)?;
    if let Some(m) = target.mark {
        SockRef::from(&sock)
            .set_mark(m)
            .map_err(|_| FailReason::Local)?;
    }
    // Close with RST, no TIME_WAIT: a probe every second per backend
    // would otherwise fill the table.
    let _ = SockRef::from(&sock).set_linger(Some(Duration::ZERO));
    match tokio::time::timeout_at(deadline, sock.connect(target.dst)).await {
        Err(_) => Err(FailReason::ConnectTimeout),
        Ok(Err(e)) => Err(FailReason::of(&e)),
        Ok(Ok(s)) => Ok(s),
    }
}

async fn http(
    target: &ProbeTarget,
    deadline: tokio::time::Instant,
    path: &str,
    expect: u16,
) -> Result<(), FailReason> {
    let mut s = tcp_connect(target, deadline).await?;
    let host = match target.dst.ip() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: flowpin-health\r\nConnection: close\r\n\r\n"
    );
    let io = async {
        s.write_all(req.as_bytes()).await?;
        let mut buf = [0u8; 64];
        let mut got = 0;
        // The status line: "HTTP/1.x NNN".
        while got < 12 {
            let n = s.read(&mut buf[got..]).await?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            got += n;
        }
        Ok(buf)
    };
    let buf = match tokio::time::timeout_at(deadline, io).await {
        Err(_) => return Err(FailReason::Timeout),
        Ok(Err(e)) => return Err(FailReason::of(&e)),
        Ok(Ok(b)) => b,
    };
    let status = std::str::from_utf8(&buf[9..12])
        .ok()
        .and_then(|s| s.parse::<u16>().ok());
    if buf.starts_with(b"HTTP/1.") && status == Some(expect) {
        Ok(())
    } else {
        Err(FailReason::BadStatus)
    }
}

async fn udp(
    target: &ProbeTarget,
    deadline: tokio::time::Instant,
    send: &str,
    expect: &str,
) -> Result<(), FailReason> {
    let any: SocketAddr = match target.dst {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(any).await.map_err(|_| FailReason::Local)?;
    if let Some(m) = target.mark {
        SockRef::from(&s)
            .set_mark(m)
            .map_err(|_| FailReason::Local)?;
    }
    s.connect(target.dst)
        .await
        .map_err(|e| FailReason::of(&e))?;
    let io = async {
        s.send(send.as_bytes()).await?;
        let mut buf = vec![0u8; crate::config::MAX_PAYLOAD.max(expect.len()) + 1];
        let n = s.recv(&mut buf).await?;
        buf.truncate(n);
        Ok::<_, io::Error>(buf)
    };
    match tokio::time::timeout_at(deadline, io).await {
        Err(_) => Err(FailReason::Timeout),
        Ok(Err(e)) => Err(FailReason::of(&e)),
        Ok(Ok(reply)) if reply.starts_with(expect.as_bytes()) => Ok(()),
        Ok(Ok(_)) => Err(FailReason::BadReply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tokio::net::TcpListener;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const T: Duration = Duration::from_millis(500);

    async fn http_server(answer: &'static [u8]) -> u16 {
        let l = TcpListener::bind((LO, 0)).await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut b = [0u8; 256];
                let _ = s.read(&mut b).await;
                let _ = s.write_all(answer).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn tcp_passes_on_a_listener_and_is_refused_without() {
        let l = TcpListener::bind((LO, 0)).await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let ok = probe_once(&ProbeTarget::direct(LO, port), &ProbeKind::Tcp {}, T).await;
        assert_eq!(ok.result, Ok(()));
        drop(l);
        let no = probe_once(&ProbeTarget::direct(LO, port), &ProbeKind::Tcp {}, T).await;
        assert_eq!(no.result, Err(FailReason::Refused));
    }

    #[tokio::test]
    async fn http_checks_the_status() {
        let ok = http_server(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let bad = http_server(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let kind = ProbeKind::Http {
            path: "/healthz".into(),
            expect_status: 200,
        };
        let r = probe_once(&ProbeTarget::direct(LO, ok), &kind, T).await;
        assert_eq!(r.result, Ok(()));
        let r = probe_once(&ProbeTarget::direct(LO, bad), &kind, T).await;
        assert_eq!(r.result, Err(FailReason::BadStatus));
    }

    #[tokio::test]
    async fn a_hung_service_times_out() {
        // Accepts (the kernel does) but never answers.
        let l = TcpListener::bind((LO, 0)).await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let kind = ProbeKind::Http {
            path: "/".into(),
            expect_status: 200,
        };
        let r = probe_once(
            &ProbeTarget::direct(LO, port),
            &kind,
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(r.result, Err(FailReason::Timeout));
        assert!(r.latency >= Duration::from_millis(190));
        drop(l);
    }

    #[tokio::test]
    async fn udp_checks_the_reply() {
        let s = UdpSocket::bind((LO, 0)).await.expect("bind");
        let port = s.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            while let Ok((n, from)) = s.recv_from(&mut b).await {
                let answer: &[u8] = if &b[..n] == b"ping" {
                    b"pong!"
                } else {
                    b"what"
                };
                let _ = s.send_to(answer, from).await;
            }
        });
        let good = ProbeKind::Udp {
            send: "ping".into(),
            expect: "pong".into(),
        };
        let other = ProbeKind::Udp {
            send: "hello".into(),
            expect: "pong".into(),
        };
        let t = ProbeTarget::direct(LO, port);
        assert_eq!(probe_once(&t, &good, T).await.result, Ok(()));
        assert_eq!(
            probe_once(&t, &other, T).await.result,
            Err(FailReason::BadReply)
        );
        // Nobody there: ICMP port unreachable.
        let closed = UdpSocket::bind((LO, 0)).await.expect("bind");
        let cport = closed.local_addr().expect("addr").port();
        drop(closed);
        let r = probe_once(&ProbeTarget::direct(LO, cport), &good, T).await;
        assert_eq!(r.result, Err(FailReason::Refused));
    }
}
