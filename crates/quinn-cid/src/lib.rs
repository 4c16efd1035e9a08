//! A [quinn](https://docs.rs/quinn) connection-ID generator whose every
//! connection ID routes: to the host, by the server_id `xdp_lb` reads, and
//! to the process, by the socket id the `sk_reuseport_select` program reads.
//!
//! ```text
//!  flowpin layout (default), 16 bytes:
//!  | 0x1r | server_id (4, BE) | socket id (2, BE) | random (9) |
//!     └ r: 4 random bits
//! ```
//!
//! The server_id is written in any [`CidLayout`]: the flowpin layout by
//! default, Katran's v1/v2/v3 layouts (for Katran load balancers), or IETF
//! QUIC-LB plaintext ([`CidLayout::QuicLb`]). The socket id (a
//! [`ReuseportGroup::socket_id`]) follows the layout's routing bits, at
//! [`CidLayout::server_data_offset`], which is the offset to give the
//! reuseport group (`GroupConfig::cid_sock_offset`). Every other bit is
//! drawn from the thread-local CSPRNG for each CID.
//!
//! [`ReuseportGroup::socket_id`]: https://docs.rs/flowpin-sk-reuseport
//!
//! ```
//! use flowpin_quinn::FlowpinCidGenerator;
//! use flowpin_tcp_opt::ServerId;
//!
//! let server_id = ServerId::new(1001).unwrap();
//! let generator = FlowpinCidGenerator::builder(server_id).socket_id(9).build()?;
//! let mut config = quinn_proto::EndpointConfig::default();
//! config.cid_generator(generator.factory());
//! # Ok::<(), flowpin_quinn::Error>(())
//! ```
//!
//! Why a crate of its own rather than a feature of `flowpin-tcp-opt`:
//! `tcp-opt` is the wire format shared with the BPF programs and has no
//! dependencies beyond `bytes`; this crate ties itself to quinn-proto's
//! trait, whose signature changed between quinn releases (0.10 → 0.11 added
//! `validate` and `Sync`). Kept apart, a quinn upgrade is a release of this
//! crate only. The facade `flowpin` exposes it behind its `quinn` feature.
//!
//! # What an observer learns
//!
//! The server_id and socket id are in clear. Anyone who sees the packets
//! learns which host and which process serve each connection, can count a
//! host's connections, and can link two CIDs of one connection across a
//! client's migration whenever few connections share a (server, socket)
//! pair — the linkability QUIC's fresh CIDs are meant to prevent (RFC 9000
//! §9.5). It can also aim traffic at one host. The random bits keep CIDs
//! unpredictable (no off-path guessing) but do not hide the routing fields.
//! The IETF QUIC-LB draft (draft-ietf-quic-load-balancers) addresses this by
//! encrypting the server ID and nonce with a key shared by servers and load
//! balancers (AES-128-ECB in one pass when they are 16 octets, a four-round
//! Feistel network otherwise), so that only the load balancers see the
//! mapping; it calls plaintext CIDs acceptable only where linkability does
//! not matter. flowpin's `xdp_lb` decodes plaintext CIDs only (BPF has no AES
//! helper); use them where the path is trusted, e.g. inside a data centre,
//! as the talk does with the TCP server_id option.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The quinn-proto this generator implements `ConnectionIdGenerator` for,
/// re-exported so an application configures its endpoint with the
/// matching version (`flowpin_quinn::quinn_proto::EndpointConfig`).
pub use quinn_proto;

use std::time::Duration;

use flowpin_tcp_opt::consts::{QUIC_CID_MAX_LEN, QUIC_CID_MIN_LEN};
use flowpin_tcp_opt::quic::ConnectionId as CidView;
use flowpin_tcp_opt::{CidLayout, ServerId};
use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};
use rand::RngCore;

/// Random bytes every CID keeps at least, besides the routing fields.
pub const MIN_RANDOM_BYTES: usize = 4;

/// The default CID length: room for the flowpin layout, a socket id and
/// 9 random bytes (76 random bits with the layout's free nibble).
pub const DEFAULT_CID_LEN: usize = 16;

/// A generator configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server_id does not fit the layout's bits.
    #[error(
        "server_id {id} does not fit the {layout} CID layout (max {max}); \
         choose a layout with more server_id bits (flowpin or Katran v3 hold 32)"
    )]
    ServerIdTooLarge {
        /// The server_id.
        id: u32,
        /// The layout's name.
        layout: &'static str,
        /// The largest server_id the layout holds.
        max: u32,
    },
    /// The CID length leaves too little room.
    #[error(
        "a {len}-byte CID cannot hold the {layout} layout ({routing} routing bytes) and \
         {MIN_RANDOM_BYTES} random bytes; use a length in {min}..={QUIC_CID_MAX_LEN}"
    )]
    CidLength {
        /// The requested length.
        len: usize,
        /// The layout's name.
        layout: &'static str,
        /// Bytes used by routing fields (layout + socket id).
        routing: usize,
        /// The shortest length that works.
        min: usize,
    },
}

/// Builder of a [`FlowpinCidGenerator`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Builder {
    server_id: ServerId,
    layout: CidLayout,
    socket_id: Option<u16>,
    cid_len: usize,
    lifetime: Option<Duration>,
}

impl Builder {
    /// The CID layout of the server_id (default [`CidLayout::Flowpin`]).
    pub fn layout(mut self, layout: CidLayout) -> Self {
        self.layout = layout;
        self
    }

    /// The socket id of the reuseport slot this endpoint's socket holds
    /// (`ReuseportGroup::socket_id(generation, slot)`); none by default.
    pub fn socket_id(mut self, id: u16) -> Self {
        self.socket_id = Some(id);
        self
    }

    /// The CID length (default [`DEFAULT_CID_LEN`]); `xdp_lb` must be
    /// configured with the same `quic_cid_len`.
    pub fn cid_len(mut self, len: usize) -> Self {
        self.cid_len = len;
        self
    }

    /// Retire every CID after `lifetime` (quinn then issues new ones, all
    /// carrying the same routing fields); none by default.
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// Checks the configuration.
    pub fn build(self) -> Result<FlowpinCidGenerator, Error> {
        let layout = self.layout;
        let max = layout.max_server_id();
        if self.server_id.get() > max {
            return Err(Error::ServerIdTooLarge {
                id: self.server_id.get(),
                layout: layout.name(),
                max,
            });
        }
        let routing = layout.server_data_offset() + if self.socket_id.is_some() { 2 } else { 0 };
        let min = (routing + MIN_RANDOM_BYTES)
            .max(layout.min_cid_len())
            .max(QUIC_CID_MIN_LEN);
        if !(min..=QUIC_CID_MAX_LEN).contains(&self.cid_len) {
            return Err(Error::CidLength {
                len: self.cid_len,
                layout: layout.name(),
                routing,
                min,
            });
        }
        Ok(FlowpinCidGenerator {
            server_id: self.server_id,
            layout,
            socket_id: self.socket_id,
            cid_len: self.cid_len,
            lifetime: self.lifetime,
        })
    }
}

/// What a CID issued by a [`FlowpinCidGenerator`] routes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The host's server_id.
    pub server_id: ServerId,
    /// The socket id, if the generator has one.
    pub socket_id: Option<u16>,
}

/// A quinn [`ConnectionIdGenerator`] putting the host's server_id and the
/// process's socket id into every CID, the rest random.
#[derive(Debug, Clone)]
pub struct FlowpinCidGenerator {
    server_id: ServerId,
    layout: CidLayout,
    socket_id: Option<u16>,
    cid_len: usize,
    lifetime: Option<Duration>,
}

impl FlowpinCidGenerator {
    /// A builder for `server_id`: flowpin layout, no socket id,
    /// [`DEFAULT_CID_LEN`] bytes, no lifetime.
    pub fn builder(server_id: ServerId) -> Builder {
        Builder {
            server_id,
            layout: CidLayout::Flowpin,
            socket_id: None,
            cid_len: DEFAULT_CID_LEN,
            lifetime: None,
        }
    }

    /// The layout.
    pub fn layout(&self) -> CidLayout {
        self.layout
    }

    /// The server_id.
    pub fn server_id(&self) -> ServerId {
        self.server_id
    }

    /// The socket id.
    pub fn socket_id(&self) -> Option<u16> {
        self.socket_id
    }

    /// Where the socket id sits in the CID: configure the reuseport group's
    /// `cid_sock_offset` with it.
    pub fn socket_id_offset(&self) -> usize {
        self.layout.server_data_offset()
    }

    /// A factory for `quinn::EndpointConfig::cid_generator` (each endpoint
    /// gets its own generator, all issuing the same routing fields).
    pub fn factory(
        &self,
    ) -> impl Fn() -> Box<dyn ConnectionIdGenerator> + Send + Sync + Clone + 'static {
        let g = self.clone();
        move || Box::new(g.clone()) as Box<dyn ConnectionIdGenerator>
    }

    /// Writes a new CID into `out` (of [`ConnectionIdGenerator::cid_len`]
    /// bytes): random bytes, then the layout's marker and server_id, then
    /// the socket id.
    pub fn fill(&self, out: &mut [u8]) {
        rand::rng().fill_bytes(out);
        // The builder checked the length and the server_id against the
        // layout, so encoding cannot fail; a failure would leave random
        // bytes, which validate() then rejects.
        let _ = flowpin_tcp_opt::encode_cid(out, self.layout, self.server_id);
        if let Some(id) = self.socket_id {
            let off = self.socket_id_offset();
            if let Some(dst) = out.get_mut(off..off + 2) {
                dst.copy_from_slice(&id.to_be_bytes());
            }
        }
    }

    /// Reads the routing fields of `cid` as this generator writes them:
    /// `None` if its length, layout marker or server_id are not this
    /// generator's layout (the socket id is read, not compared).
    pub fn route(&self, cid: &[u8]) -> Option<Route> {
        if cid.len() != self.cid_len {
            return None;
        }
        let server_id = CidView::new_unchecked(cid).server_id_as(self.layout)?;
        let socket_id = match self.socket_id {
            None => None,
            Some(_) => {
                let off = self.socket_id_offset();
                let b = cid.get(off..off + 2)?;
                Some(u16::from_be_bytes([b[0], b[1]]))
            }
        };
        Some(Route {
            server_id,
            socket_id,
        })
    }
}

impl ConnectionIdGenerator for FlowpinCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut buf = [0u8; QUIC_CID_MAX_LEN];
        let cid = &mut buf[..self.cid_len];
        self.fill(cid);
        ConnectionId::new(cid)
    }

    /// A CID is ours if it has our length, layout, server_id and socket id.
    /// Rejecting the rest makes quinn drop a stray short-header packet (say,
    /// one of another process of the reuseport group) instead of answering
    /// it with a stateless reset.
    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        match self.route(cid) {
            Some(r) if r.server_id == self.server_id && r.socket_id == self.socket_id => Ok(()),
            _ => Err(InvalidCid),
        }
    }

    fn cid_len(&self) -> usize {
        self.cid_len
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        self.lifetime
    }
}
