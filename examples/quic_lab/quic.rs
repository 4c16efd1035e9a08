//! quinn endpoints of the lab: a fixed self-signed identity (generated once
//! per process from a fixed name; clients accept the server's certificate by
//! pinning its public key is overkill here, so they skip verification of a
//! lab-only name), an echo server and a client connection with one stream.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use flowpin::quinn::FlowpinCidGenerator;
use quinn::{Endpoint, EndpointConfig, TokioRuntime, TransportConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use crate::Error;

/// The server name clients ask for.
pub(crate) const NAME: &str = "quic-lab.flowpin.test";
/// A stream round trip slower than this breaks the connection (issue 14).
pub(crate) const STALL: Duration = Duration::from_millis(2500);

fn transport() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        10_000,
    ))));
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    // 1200-byte packets: room for xdp_lb's outer header on 1500-byte links.
    t.mtu_discovery_config(None);
    Arc::new(t)
}

/// An echo server on `sock` with `cids`.
pub(crate) fn server(sock: UdpSocket, cids: &FlowpinCidGenerator) -> Result<Endpoint, Error> {
    let ck = rcgen::generate_simple_self_signed(vec![NAME.into()])?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut sc = quinn::ServerConfig::with_single_cert(vec![ck.cert.der().clone()], key)?;
    sc.transport_config(transport());
    let mut ec = EndpointConfig::default();
    ec.cid_generator(cids.factory());
    sock.set_nonblocking(true)?;
    let ep = Endpoint::new(ec, Some(sc), sock, Arc::new(TokioRuntime))?;
    let e = ep.clone();
    tokio::spawn(async move {
        while let Some(inc) = e.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut recv, &mut send).await;
                    });
                }
            });
        }
    });
    Ok(ep)
}

/// The lab's servers make a new certificate per process: clients check the
/// handshake signature but accept any certificate (a lab, not a deployment).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A socket whose datagrams leave `delay` late: the lab's stand-in for a
/// long client path (this kernel has no `netem`), so that handshakes take
/// long enough to be under way when the network changes.
#[derive(Debug)]
struct Delayed {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    delay: Duration,
}

impl quinn::AsyncUdpSocket for Delayed {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, t: &quinn::udp::Transmit<'_>) -> std::io::Result<()> {
        let inner = self.inner.clone();
        let (destination, ecn, segment_size, src_ip) =
            (t.destination, t.ecn, t.segment_size, t.src_ip);
        let contents = t.contents.to_vec();
        let delay = self.delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // A full socket buffer drops it: QUIC retransmits.
            let _ = inner.try_send(&quinn::udp::Transmit {
                destination,
                ecn,
                contents: &contents,
                segment_size,
                src_ip,
            });
        });
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context<'_>,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// A client endpoint on `sock`.
pub(crate) fn client(sock: UdpSocket) -> Result<Endpoint, Error> {
    client_delayed(sock, None)
}

/// A client endpoint on `sock` whose datagrams leave `delay` late.
pub(crate) fn client_delayed(sock: UdpSocket, delay: Option<Duration>) -> Result<Endpoint, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let mut cc = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls)?,
    ));
    cc.transport_config(transport());
    sock.set_nonblocking(true)?;
    let mut ep = match delay {
        None => Endpoint::new(
            EndpointConfig::default(),
            None,
            sock,
            Arc::new(TokioRuntime),
        )?,
        Some(delay) => {
            use quinn::Runtime;
            let inner = TokioRuntime.wrap_udp_socket(sock)?;
            Endpoint::new_with_abstract_socket(
                EndpointConfig::default(),
                None,
                Arc::new(Delayed { inner, delay }),
                Arc::new(TokioRuntime),
            )?
        }
    };
    ep.set_default_client_config(cc);
    Ok(ep)
}

/// A connection with one long-lived stream.
pub(crate) struct Conn {
    pub(crate) ep: Endpoint,
    pub(crate) conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    seq: u8,
}

impl Conn {
    pub(crate) async fn open(ep: Endpoint, to: SocketAddr) -> Result<Conn, Error> {
        let conn = tokio::time::timeout(Duration::from_secs(5), ep.connect(to, NAME)?)
            .await
            .map_err(|_| "handshake timed out")??;
        let (send, recv) = conn.open_bi().await?;
        let mut c = Conn {
            ep,
            conn,
            send,
            recv,
            seq: 0,
        };
        if !c.round_trip().await {
            return Err("first round trip failed".into());
        }
        Ok(c)
    }

    /// 64 bytes there and back within [`STALL`].
    pub(crate) async fn round_trip(&mut self) -> bool {
        self.seq = self.seq.wrapping_add(1);
        let msg = [self.seq; 64];
        let work = async {
            self.send.write_all(&msg).await.ok()?;
            let mut back = [0u8; 64];
            self.recv.read_exact(&mut back).await.ok()?;
            (back == msg).then_some(())
        };
        matches!(tokio::time::timeout(STALL, work).await, Ok(Some(())))
    }
}
