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
//! # QUIC-LB configurations, encrypted ones included
//!
//! [`Builder::quic_lb`] issues CIDs of a [`QuicLbConfig`] of
//! draft-ietf-quic-load-balancers-21 in any mode: plaintext, single-pass
//! AES-128-ECB (server ID + nonce = 16 octets) or four-pass Feistel. The
//! server ID is the server_id big-endian in the configuration's server ID
//! length (1..=4 octets is what `xdp_lb` routes; longer ones get leading
//! zeros), the nonce is random for every CID. The **CID length follows the
//! configuration**: `1 + server ID + nonce` octets, plus 2 for a socket id,
//! which then takes the CID's last two octets, in clear
//! ([`FlowpinCidGenerator::socket_id_offset`]). That is the length
//! `xdp_lb` takes from the VIP's configuration; nothing else to keep in
//! step.
//!
//! Configurations rotate as the draft orders:
//! [`FlowpinCidGenerator::rotate_quic_lb`] switches every clone of a
//! generator to a new configuration (call it once every load balancer has
//! it: the registry's acknowledgements say when), CIDs of the old one stay
//! valid until [`FlowpinCidGenerator::retire_quic_lb`], and
//! [`FlowpinCidGenerator::issue_unroutable`] issues codepoint `0b111` CIDs
//! while no configuration is active. Set a [`Builder::lifetime`] so that
//! quinn replaces its CIDs, and connections move to the new configuration.
//!
//! ```
//! use flowpin_quinn::FlowpinCidGenerator;
//! use flowpin_tcp_opt::quic_lb::{QuicLbConfig, QuicLbKey};
//! use flowpin_tcp_opt::ServerId;
//! use quinn_proto::ConnectionIdGenerator;
//!
//! let key: QuicLbKey = "8f95f09245765f80256934e50c66207f".parse()?;
//! let config = QuicLbConfig::encrypted(1, 2, 6, key)?; // four-pass, 9-octet CIDs
//! let mut generator = FlowpinCidGenerator::builder(ServerId::new(1001).unwrap())
//!     .quic_lb(config)
//!     .build()?;
//! let cid = generator.generate_cid();
//! assert_eq!(cid.len(), 9);
//! assert_eq!(cid[0], 0x28, "codepoint 1, length 9 - 1");
//! assert_eq!(config.server_id(&cid)?.unwrap(), [0x03, 0xe9][..]); // 1001
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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
//! not matter. Use the layouts and plaintext QUIC-LB where the path is
//! trusted, e.g. inside a data centre, as the talk does with the TCP
//! server_id option, and an encrypted [`QuicLbConfig`] elsewhere.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The quinn-proto this generator implements `ConnectionIdGenerator` for,
/// re-exported so an application configures its endpoint with the
/// matching version (`flowpin_quinn::quinn_proto::EndpointConfig`).
pub use quinn_proto;

use std::time::Duration;

use flowpin_tcp_opt::consts::{QUIC_CID_MAX_LEN, QUIC_CID_MIN_LEN};
use flowpin_tcp_opt::quic::ConnectionId as CidView;
use flowpin_tcp_opt::quic_lb::QuicLbConfig;
use flowpin_tcp_opt::{CidLayout, ServerId};
use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};
use rand::RngCore;

/// Random bytes every CID keeps at least, besides the routing fields.
pub const MIN_RANDOM_BYTES: usize = 4;

mod quic_lb;

/// The default CID length of the flowpin and Katran layouts: room for the
/// flowpin layout, a socket id and 9 random bytes (76 random bits with the
/// layout's free nibble). With a QUIC-LB configuration
/// ([`Builder::quic_lb`]) the default is the configuration's length instead.
pub const DEFAULT_CID_LEN: usize = 16;

/// Octets of the socket id in a CID.
const SOCKET_ID_LEN: usize = 2;

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
    /// The server_id does not fit a QUIC-LB configuration's server ID.
    #[error(
        "server_id {id} does not fit a QUIC-LB server ID of {server_id_len} octets; \
         use a configuration with a longer server ID (4 octets hold every server_id)"
    )]
    QuicLbServerIdTooLarge {
        /// The server_id.
        id: u32,
        /// The configuration's server ID length.
        server_id_len: usize,
    },
    /// The generator's CID length cannot hold a QUIC-LB configuration's
    /// CIDs (and the socket id).
    #[error(
        "a {len}-byte CID cannot hold the CIDs of QUIC-LB config {config_id} and the socket id \
         ({min} bytes); rotate only among configurations of at most {len} bytes, or build the \
         generator with a longer cid_len (at most 20)"
    )]
    QuicLbCidLength {
        /// The generator's CID length.
        len: usize,
        /// The configuration's codepoint.
        config_id: u8,
        /// Bytes the configuration needs.
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
    cid_len: Option<usize>,
    lifetime: Option<Duration>,
    quic_lb: Option<QuicLbConfig>,
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

    /// The CID length. Default: [`DEFAULT_CID_LEN`] for the layouts (give
    /// `xdp_lb`'s global decode the same `quic_cid_len`); with a QUIC-LB
    /// configuration, its [`cid_len`](QuicLbConfig::cid_len) (+ 2 with a
    /// socket id), the length `xdp_lb` takes from the VIP's configuration.
    /// A longer one pads QUIC-LB CIDs with random server-use octets (the
    /// self-described length counts them), which leaves room to rotate to
    /// configurations with longer CIDs.
    pub fn cid_len(mut self, len: usize) -> Self {
        self.cid_len = Some(len);
        self
    }

    /// Issue CIDs of this QUIC-LB configuration (any mode; see the crate
    /// docs) instead of a [`layout`](Self::layout).
    pub fn quic_lb(mut self, config: QuicLbConfig) -> Self {
        self.quic_lb = Some(config);
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
        if let Some(config) = self.quic_lb {
            let tail = if self.socket_id.is_some() {
                SOCKET_ID_LEN
            } else {
                0
            };
            let min = quic_lb::QuicLbIssuer::min_cid_len(&config, tail);
            let cid_len = self.cid_len.unwrap_or(min);
            if cid_len > QUIC_CID_MAX_LEN {
                return Err(Error::QuicLbCidLength {
                    len: cid_len,
                    config_id: config.config_id(),
                    min,
                });
            }
            let issuer = quic_lb::QuicLbIssuer::new(self.server_id, config, cid_len, tail)?;
            return Ok(FlowpinCidGenerator {
                server_id: self.server_id,
                layout: self.layout,
                socket_id: self.socket_id,
                cid_len,
                lifetime: self.lifetime,
                quic_lb: Some(issuer),
            });
        }
        let layout = self.layout;
        let cid_len = self.cid_len.unwrap_or(DEFAULT_CID_LEN);
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
        if !(min..=QUIC_CID_MAX_LEN).contains(&cid_len) {
            return Err(Error::CidLength {
                len: cid_len,
                layout: layout.name(),
                routing,
                min,
            });
        }
        Ok(FlowpinCidGenerator {
            server_id: self.server_id,
            layout,
            socket_id: self.socket_id,
            cid_len,
            lifetime: self.lifetime,
            quic_lb: None,
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
    quic_lb: Option<quic_lb::QuicLbIssuer>,
}

impl FlowpinCidGenerator {
    /// A builder for `server_id`: flowpin layout, no socket id,
    /// [`DEFAULT_CID_LEN`] bytes, no lifetime.
    pub fn builder(server_id: ServerId) -> Builder {
        Builder {
            server_id,
            layout: CidLayout::Flowpin,
            socket_id: None,
            cid_len: None,
            lifetime: None,
            quic_lb: None,
        }
    }

    /// The QUIC-LB configuration new CIDs use; `None` without
    /// [`Builder::quic_lb`] or while issuing unroutable CIDs.
    pub fn quic_lb_issuing(&self) -> Option<QuicLbConfig> {
        self.quic_lb.as_ref()?.issuing()
    }

    /// The QUIC-LB configurations whose CIDs [`validate`](ConnectionIdGenerator::validate)
    /// accepts (the issuing one and those not yet retired).
    pub fn quic_lb_accepted(&self) -> Vec<QuicLbConfig> {
        self.quic_lb
            .as_ref()
            .map(quic_lb::QuicLbIssuer::accepted)
            .unwrap_or_default()
    }

    /// Issues new CIDs with `config` from now on, in this generator and all
    /// its clones (every endpoint of its [`factory`](Self::factory)); CIDs
    /// of earlier configurations stay valid until
    /// [`retire_quic_lb`](Self::retire_quic_lb). Call it only once every
    /// live load balancer has the configuration (the draft's order). An
    /// error, and nothing changes, if the generator was built without
    /// [`Builder::quic_lb`], or `config` does not fit its length or
    /// server_id.
    pub fn rotate_quic_lb(&self, config: QuicLbConfig) -> Result<(), Error> {
        match &self.quic_lb {
            Some(q) => q.rotate(config),
            None => Err(Error::QuicLbCidLength {
                len: self.cid_len,
                config_id: config.config_id(),
                min: config.cid_len(),
            }),
        }
    }

    /// Stops accepting CIDs of codepoint `config_id` (once connections have
    /// moved to newer CIDs); returns the retired configuration. If it was
    /// the issuing one, new CIDs are unroutable until the next rotation.
    pub fn retire_quic_lb(&self, config_id: u8) -> Option<QuicLbConfig> {
        self.quic_lb.as_ref()?.retire(config_id)
    }

    /// Issues unroutable CIDs (codepoint `0b111`, length self-described)
    /// until the next [`rotate_quic_lb`](Self::rotate_quic_lb): what the
    /// draft asks of a server with no active configuration. No effect
    /// without [`Builder::quic_lb`].
    pub fn issue_unroutable(&self) {
        if let Some(q) = &self.quic_lb {
            q.issue_unroutable();
        }
    }

    /// The layout (unused with a QUIC-LB configuration).
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
    /// `cid_sock_offset` with it. The layout's
    /// [`server_data_offset`](CidLayout::server_data_offset); with a QUIC-LB
    /// configuration the CID's last two octets (`cid_len - 2`).
    pub fn socket_id_offset(&self) -> usize {
        match self.quic_lb {
            Some(_) => self.cid_len.saturating_sub(SOCKET_ID_LEN),
            None => self.layout.server_data_offset(),
        }
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
        if let Some(q) = &self.quic_lb {
            q.fill(out);
        } else {
            // The builder checked the length and the server_id against the
            // layout, so encoding cannot fail; a failure would leave random
            // bytes, which validate() then rejects.
            let _ = flowpin_tcp_opt::encode_cid(out, self.layout, self.server_id);
        }
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
    /// With a QUIC-LB configuration: `None` also for an unroutable CID.
    pub fn route(&self, cid: &[u8]) -> Option<Route> {
        if cid.len() != self.cid_len {
            return None;
        }
        let server_id = match &self.quic_lb {
            Some(q) => q.server_id(cid)?,
            None => CidView::new_unchecked(cid).server_id_as(self.layout)?,
        };
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

    /// The socket id of `cid` (if the generator has one) and whether it is
    /// ours.
    fn own_socket(&self, cid: &[u8]) -> bool {
        match self.socket_id {
            None => true,
            Some(id) => {
                let off = self.socket_id_offset();
                cid.get(off..off + SOCKET_ID_LEN) == Some(&id.to_be_bytes()[..])
            }
        }
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
    /// With a QUIC-LB configuration: one of the accepted configurations,
    /// or an unroutable CID of our length and socket id.
    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        if let Some(q) = &self.quic_lb {
            if q.is_unroutable(cid) && self.own_socket(cid) {
                return Ok(());
            }
        }
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
