//! Shared by the live quinn tests: TLS for a test name, server and client
//! endpoints on given sockets, an echo server, a client connection with one
//! long-lived bidirectional stream and a bounded round trip.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowpin_quinn::FlowpinCidGenerator;
use quinn::{Endpoint, EndpointConfig, TokioRuntime, TransportConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The name in the test certificate.
pub(crate) const NAME: &str = "flowpin.test";
/// A round trip slower than this counts as a stalled stream (issue 14).
pub(crate) const STALL: Duration = Duration::from_millis(2500);

pub(crate) struct Tls {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Tls {
    pub(crate) fn new() -> Tls {
        let ck = rcgen::generate_simple_self_signed(vec![NAME.into()]).unwrap();
        Tls {
            cert: ck.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
        }
    }

    fn transport() -> Arc<TransportConfig> {
        let mut t = TransportConfig::default();
        t.max_idle_timeout(Some(Duration::from_secs(6).try_into().unwrap()));
        t.keep_alive_interval(Some(Duration::from_secs(1)));
        // The client link has a 1400-byte MTU and xdp_lb adds an outer
        // header: stay at the 1200-byte QUIC minimum.
        t.mtu_discovery_config(None);
        Arc::new(t)
    }

    pub(crate) fn server_config(&self) -> quinn::ServerConfig {
        let mut c = quinn::ServerConfig::with_single_cert(
            vec![self.cert.clone()],
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
        )
        .unwrap();
        c.transport_config(Self::transport());
        c
    }

    pub(crate) fn client_config(&self) -> quinn::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let mut c = quinn::ClientConfig::with_root_certificates(Arc::new(roots)).unwrap();
        c.transport_config(Self::transport());
        c
    }
}

/// A server endpoint on `sock` whose CIDs come from `gen`; echoes every
/// bidirectional stream; counts the connections it accepted.
pub(crate) fn server(
    tls: &Tls,
    sock: UdpSocket,
    gen: &FlowpinCidGenerator,
    accepted: Arc<AtomicUsize>,
) -> Endpoint {
    let mut ec = EndpointConfig::default();
    ec.cid_generator(gen.factory());
    sock.set_nonblocking(true).unwrap();
    let ep = Endpoint::new(ec, Some(tls.server_config()), sock, Arc::new(TokioRuntime)).unwrap();
    let e = ep.clone();
    tokio::spawn(async move {
        while let Some(inc) = e.accept().await {
            let accepted = accepted.clone();
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                accepted.fetch_add(1, Ordering::Relaxed);
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut recv, &mut send).await;
                        let _ = send.finish();
                    });
                }
            });
        }
    });
    ep
}

/// A client endpoint on `sock`.
pub(crate) fn client(tls: &Tls, sock: UdpSocket) -> Endpoint {
    sock.set_nonblocking(true).unwrap();
    let mut ep = Endpoint::new(
        EndpointConfig::default(),
        None,
        sock,
        Arc::new(TokioRuntime),
    )
    .unwrap();
    ep.set_default_client_config(tls.client_config());
    ep
}

/// One connection with one long-lived stream.
pub(crate) struct Conn {
    pub(crate) ep: Endpoint,
    pub(crate) conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    seq: u64,
}

impl Conn {
    pub(crate) async fn open(ep: Endpoint, to: SocketAddr) -> Conn {
        let conn = tokio::time::timeout(Duration::from_secs(5), ep.connect(to, NAME).unwrap())
            .await
            .expect("handshake within 5 s")
            .unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        let mut c = Conn {
            ep,
            conn,
            send,
            recv,
            seq: 0,
        };
        assert!(c.round_trip().await, "first round trip");
        c
    }

    /// Writes 64 bytes and reads them back within [`STALL`]; false if the
    /// stream stalled or the connection failed.
    pub(crate) async fn round_trip(&mut self) -> bool {
        self.seq += 1;
        let msg = [self.seq as u8; 64];
        let work = async {
            self.send.write_all(&msg).await.ok()?;
            let mut back = [0u8; 64];
            self.recv.read_exact(&mut back).await.ok()?;
            (back == msg).then_some(())
        };
        matches!(tokio::time::timeout(STALL, work).await, Ok(Some(())))
    }

    /// Moves the connection to a new UDP socket (NAT rebinding).
    pub(crate) fn rebind(&self, sock: UdpSocket) {
        sock.set_nonblocking(true).unwrap();
        self.ep.rebind(sock).unwrap();
    }
}
