//! The server_id in QUIC connection IDs.
//!
//! RFC 9000 lets the server choose the connection ID the client must echo;
//! putting the server_id in it lets every load balancer route statelessly,
//! exactly like the TCP option. Four layouts are understood, told apart by
//! the first byte `c` of the CID:
//!
//! | layout | `c` | server_id bits | max |
//! |---|---|---|---|
//! | [`CidLayout::KatranV1`] | `0b01xx_xxxx` | `((c & 0x3F) << 10) \| (cid[1] << 2) \| (cid[2] >> 6)` | 16 bits |
//! | [`CidLayout::KatranV2`] | `0b10xx_xxxx` | `cid[1..4]` big-endian | 24 bits |
//! | [`CidLayout::KatranV3`] | `0b11xx_xxxx` | `cid[1..5]` big-endian | 32 bits |
//! | [`CidLayout::Flowpin`] | `0x1?` (version nibble 1) | `cid[1..5]` big-endian | 32 bits |
//! | [`CidLayout::QuicLb`] | config rotation `c >> 5` as configured | `cid[1..1 + n]` big-endian | `8n` bits, n = 1..=4 |
//!
//! The Katran layouts are those of Katran's `parse_quic()`
//! (`katran/lib/bpf/pckt_parsing.h`, `QUIC_CONNID_VERSION_V1..V3`), pinned by
//! golden tests on the connection IDs of Katran's own test fixtures. The
//! flowpin layout lives in Katran's version-0 space (`c < 0x40`), so a Katran
//! load balancer hashes flowpin CIDs instead of misreading them; the low
//! nibble of `c` and the bytes after the server_id are the server's own
//! (e.g. a reuseport generation and entropy). Encoding only overwrites the
//! version and server_id bits, so fill the CID with random bytes first.
//!
//! The IETF QUIC-LB plaintext layout ([`crate::quic_lb`]) does not announce
//! itself in the first byte (its config rotation bits overlap the other
//! layouts' markers), so [`decode_cid`] never guesses it: read it with
//! [`decode_cid_as`] and the configured [`QuicLb`].
//!
//! A CID carries a server_id only if it is at least [`QUIC_CID_MIN_LEN`]
//! bytes long; server_id 0 means "none" in every layout.

use bytes::{Buf, BufMut};

use crate::consts::*;
use crate::error::sat;
use crate::quic_lb::{first_octet, QuicLb};
use crate::{Error, ServerId};

/// Bit positions inside a connection ID, named once.
mod field {
    use crate::consts::*;

    pub(crate) type Field = core::ops::Range<usize>;

    pub(crate) const FIRST: usize = 0;
    /// Katran v1: top 6 bits of the id in byte 0, 8 in byte 1, 2 at the top of byte 2.
    pub(crate) const V1_HIGH: usize = 0;
    pub(crate) const V1_MID: usize = 1;
    pub(crate) const V1_LOW: usize = 2;
    pub(crate) const V1_HIGH_SHIFT: u32 = 10;
    pub(crate) const V1_MID_SHIFT: u32 = 2;
    pub(crate) const V1_LOW_SHIFT: u32 = 6;
    pub(crate) const V1_LOW_MASK: u8 = 0xC0;
    pub(crate) const V2_ID: Field = QUIC_CID_KATRAN_V2_ID_OFFSET..QUIC_CID_KATRAN_V2_ID_OFFSET + 3;
    pub(crate) const V3_ID: Field = QUIC_CID_KATRAN_V3_ID_OFFSET..QUIC_CID_KATRAN_V3_ID_OFFSET + 4;
    pub(crate) const FLOWPIN_ID: Field = QUIC_CID_FLOWPIN_ID_OFFSET..QUIC_CID_FLOWPIN_ID_OFFSET + 4;
}

/// A connection-ID layout carrying a server_id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CidLayout {
    /// Katran v1: 16-bit server_id in bits 2..18.
    KatranV1,
    /// Katran v2: 24-bit server_id in bytes 1..4.
    KatranV2,
    /// Katran v3: 32-bit server_id in bytes 1..5.
    KatranV3,
    /// flowpin: version nibble [`QUIC_CID_FLOWPIN_VERSION`], 32-bit
    /// server_id in bytes 1..5, low nibble of byte 0 free for the server.
    Flowpin,
    /// IETF QUIC-LB plaintext: config rotation codepoint in the top 3 bits,
    /// the length − 1 in the low 5, a 1..=4-octet server ID from byte 1,
    /// then a nonce of at least 4 octets.
    QuicLb(QuicLb),
}

impl CidLayout {
    /// The largest server_id this layout holds.
    pub const fn max_server_id(self) -> u32 {
        match self {
            CidLayout::KatranV1 => QUIC_CID_KATRAN_V1_MAX_ID,
            CidLayout::KatranV2 => QUIC_CID_KATRAN_V2_MAX_ID,
            CidLayout::KatranV3 | CidLayout::Flowpin => u32::MAX,
            CidLayout::QuicLb(q) => q.max_server_id(),
        }
    }

    /// A short name for messages.
    pub const fn name(self) -> &'static str {
        match self {
            CidLayout::KatranV1 => "Katran v1",
            CidLayout::KatranV2 => "Katran v2",
            CidLayout::KatranV3 => "Katran v3",
            CidLayout::Flowpin => "flowpin",
            CidLayout::QuicLb(_) => "QUIC-LB",
        }
    }

    /// The first byte after the layout's routing bits: where a server's own
    /// data (e.g. a reuseport socket id) can start.
    pub const fn server_data_offset(self) -> usize {
        match self {
            // 2 bits of the id at the top of byte 2.
            CidLayout::KatranV1 => field::V1_LOW + 1,
            CidLayout::KatranV2 => QUIC_CID_KATRAN_V2_ID_OFFSET + 3,
            CidLayout::KatranV3 => QUIC_CID_KATRAN_V3_ID_OFFSET + 4,
            CidLayout::Flowpin => QUIC_CID_FLOWPIN_ID_OFFSET + 4,
            CidLayout::QuicLb(q) => QUIC_LB_SID_OFFSET + q.server_id_len(),
        }
    }

    /// The shortest CID of this layout that carries a server_id.
    pub const fn min_cid_len(self) -> usize {
        match self {
            CidLayout::QuicLb(q) if q.min_cid_len() > QUIC_CID_MIN_LEN => q.min_cid_len(),
            _ => QUIC_CID_MIN_LEN,
        }
    }

    /// Whether `c`, a CID's first byte, carries this layout's marker bits.
    pub const fn matches_first_byte(self, c: u8) -> bool {
        match self {
            CidLayout::QuicLb(q) => q.matches(c),
            layout => matches!(CidLayout::from_first_byte(c), Some(l) if l.same_kind(layout)),
        }
    }

    const fn same_kind(self, other: CidLayout) -> bool {
        matches!(
            (self, other),
            (CidLayout::KatranV1, CidLayout::KatranV1)
                | (CidLayout::KatranV2, CidLayout::KatranV2)
                | (CidLayout::KatranV3, CidLayout::KatranV3)
                | (CidLayout::Flowpin, CidLayout::Flowpin)
        )
    }

    /// The layout announced by a CID's first byte, if any.
    pub const fn from_first_byte(c: u8) -> Option<CidLayout> {
        match (c & QUIC_CID_KATRAN_VERSION_MASK) >> QUIC_CID_KATRAN_VERSION_SHIFT {
            QUIC_CID_KATRAN_V1 => Some(CidLayout::KatranV1),
            QUIC_CID_KATRAN_V2 => Some(CidLayout::KatranV2),
            QUIC_CID_KATRAN_V3 => Some(CidLayout::KatranV3),
            _ => {
                if (c & QUIC_CID_FLOWPIN_VERSION_MASK) >> QUIC_CID_FLOWPIN_VERSION_SHIFT
                    == QUIC_CID_FLOWPIN_VERSION
                {
                    Some(CidLayout::Flowpin)
                } else {
                    None
                }
            }
        }
    }
}

fn be(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
}

fn check_len(len: usize) -> Result<(), Error> {
    if (QUIC_CID_MIN_LEN..=QUIC_CID_MAX_LEN).contains(&len) {
        Ok(())
    } else {
        Err(Error::BadCidLength { len: sat(len) })
    }
}

/// A zero-copy view of a connection ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionId<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ConnectionId<T> {
    /// Wraps `buffer` without checks; accessors never panic (they read
    /// missing bytes as absent), but call [`ConnectionId::check`] first.
    pub const fn new_unchecked(buffer: T) -> ConnectionId<T> {
        ConnectionId { buffer }
    }

    /// Wraps `buffer` after [`ConnectionId::check`].
    pub fn new_checked(buffer: T) -> Result<ConnectionId<T>, Error> {
        let cid = ConnectionId::new_unchecked(buffer);
        cid.check()?;
        Ok(cid)
    }

    /// Checks the length is within
    /// [`QUIC_CID_MIN_LEN`]`..=`[`QUIC_CID_MAX_LEN`].
    pub fn check(&self) -> Result<(), Error> {
        check_len(self.buffer.as_ref().len())
    }

    /// The buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The layout announced by the first byte.
    pub fn layout(&self) -> Option<CidLayout> {
        self.buffer
            .as_ref()
            .get(field::FIRST)
            .and_then(|&c| CidLayout::from_first_byte(c))
    }

    /// The server_id bits read as `layout`, 0 included (`None` if the
    /// buffer is too short for them).
    pub fn raw_server_id(&self, layout: CidLayout) -> Option<u32> {
        let b = self.buffer.as_ref();
        match layout {
            CidLayout::KatranV1 => {
                let (&high, &mid, &low) = (
                    b.get(field::V1_HIGH)?,
                    b.get(field::V1_MID)?,
                    b.get(field::V1_LOW)?,
                );
                Some(
                    (u32::from(high & QUIC_CID_KATRAN_V1_BYTE0_MASK) << field::V1_HIGH_SHIFT)
                        | (u32::from(mid) << field::V1_MID_SHIFT)
                        | u32::from(low >> field::V1_LOW_SHIFT),
                )
            }
            CidLayout::KatranV2 => b.get(field::V2_ID).map(be),
            CidLayout::KatranV3 => b.get(field::V3_ID).map(be),
            CidLayout::Flowpin => b.get(field::FLOWPIN_ID).map(be),
            CidLayout::QuicLb(q) => b
                .get(QUIC_LB_SID_OFFSET..QUIC_LB_SID_OFFSET + q.server_id_len())
                .map(be),
        }
    }

    /// The server_id read as `layout`, `None` if the first byte does not
    /// carry `layout`'s marker bits, the buffer is too short for them, or
    /// the id is 0.
    pub fn server_id_as(&self, layout: CidLayout) -> Option<ServerId> {
        let &first = self.buffer.as_ref().get(field::FIRST)?;
        if !layout.matches_first_byte(first) {
            return None;
        }
        ServerId::new(self.raw_server_id(layout)?)
    }

    /// The layout and server_id, `None` if the first byte announces no
    /// layout or the server_id is 0.
    pub fn server_id(&self) -> Option<(CidLayout, ServerId)> {
        let layout = self.layout()?;
        let id = ServerId::new(self.raw_server_id(layout)?)?;
        Some((layout, id))
    }

    /// The application nibble of a flowpin CID (low 4 bits of byte 0).
    pub fn flowpin_app_bits(&self) -> Option<u8> {
        match self.layout()? {
            CidLayout::Flowpin => self
                .buffer
                .as_ref()
                .get(field::FIRST)
                .map(|c| c & QUIC_CID_FLOWPIN_APP_MASK),
            _ => None,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ConnectionId<T> {
    /// Writes the version bits of `layout` and `id`, leaving every other
    /// bit as it was. The CID must pass [`ConnectionId::check`].
    pub fn set_server_id(&mut self, layout: CidLayout, id: ServerId) -> Result<(), Error> {
        self.check()?;
        let id = id.get();
        if id > layout.max_server_id() {
            return Err(Error::ServerIdTooLarge { id, layout });
        }
        let b = self.buffer.as_mut();
        let len = b.len();
        let short = Error::BadCidLength { len: sat(len) };
        let version = |v: u8| v << QUIC_CID_KATRAN_VERSION_SHIFT;
        match layout {
            CidLayout::KatranV1 => {
                // id <= 0xFFFF here: the casts keep exactly the bits named.
                let high = ((id >> field::V1_HIGH_SHIFT) as u8) & QUIC_CID_KATRAN_V1_BYTE0_MASK;
                let mid = (id >> field::V1_MID_SHIFT) as u8;
                let low = ((id as u8) << field::V1_LOW_SHIFT) & field::V1_LOW_MASK;
                *b.get_mut(field::V1_HIGH).ok_or(short)? = version(QUIC_CID_KATRAN_V1) | high;
                *b.get_mut(field::V1_MID).ok_or(short)? = mid;
                let third = b.get_mut(field::V1_LOW).ok_or(short)?;
                *third = (*third & !field::V1_LOW_MASK) | low;
            }
            CidLayout::KatranV2 => {
                let first = b.get_mut(field::FIRST).ok_or(short)?;
                *first = (*first & !QUIC_CID_KATRAN_VERSION_MASK) | version(QUIC_CID_KATRAN_V2);
                b.get_mut(field::V2_ID)
                    .ok_or(short)?
                    .copy_from_slice(id.to_be_bytes().get(1..).unwrap_or_default());
            }
            CidLayout::KatranV3 => {
                let first = b.get_mut(field::FIRST).ok_or(short)?;
                *first = (*first & !QUIC_CID_KATRAN_VERSION_MASK) | version(QUIC_CID_KATRAN_V3);
                b.get_mut(field::V3_ID)
                    .ok_or(short)?
                    .copy_from_slice(&id.to_be_bytes());
            }
            CidLayout::Flowpin => {
                let first = b.get_mut(field::FIRST).ok_or(short)?;
                *first = (*first & QUIC_CID_FLOWPIN_APP_MASK)
                    | (QUIC_CID_FLOWPIN_VERSION << QUIC_CID_FLOWPIN_VERSION_SHIFT);
                b.get_mut(field::FLOWPIN_ID)
                    .ok_or(short)?
                    .copy_from_slice(&id.to_be_bytes());
            }
            CidLayout::QuicLb(q) => {
                if len < q.min_cid_len() {
                    return Err(short);
                }
                *b.get_mut(field::FIRST).ok_or(short)? = first_octet(q.config_id(), len);
                let n = q.server_id_len();
                b.get_mut(QUIC_LB_SID_OFFSET..QUIC_LB_SID_OFFSET + n)
                    .ok_or(short)?
                    .copy_from_slice(id.to_be_bytes().get(4 - n..).unwrap_or_default());
            }
        }
        Ok(())
    }

    /// Sets the application nibble of a flowpin CID (only the low 4 bits of
    /// `bits` are used; other layouts are left alone).
    pub fn set_flowpin_app_bits(&mut self, bits: u8) {
        if self.layout() == Some(CidLayout::Flowpin) {
            if let Some(c) = self.buffer.as_mut().get_mut(field::FIRST) {
                *c = (*c & !QUIC_CID_FLOWPIN_APP_MASK) | (bits & QUIC_CID_FLOWPIN_APP_MASK);
            }
        }
    }
}

/// Writes `id` into `cid` in `layout`: the version bits and the server_id
/// bits are overwritten, every other bit is kept (fill `cid` with random
/// bytes first). `cid` must be [`QUIC_CID_MIN_LEN`]`..=`[`QUIC_CID_MAX_LEN`]
/// bytes and `id` must fit [`CidLayout::max_server_id`].
pub fn encode_cid(cid: &mut [u8], layout: CidLayout, id: ServerId) -> Result<(), Error> {
    ConnectionId::new_unchecked(cid).set_server_id(layout, id)
}

/// Reads the layout and server_id of a connection ID: `Ok(None)` if its
/// first byte announces no known layout or its server_id is 0, an error if
/// its length is out of [`QUIC_CID_MIN_LEN`]`..=`[`QUIC_CID_MAX_LEN`].
pub fn decode_cid(cid: &[u8]) -> Result<Option<(CidLayout, ServerId)>, Error> {
    Ok(ConnectionId::new_checked(cid)?.server_id())
}

/// Reads the server_id of a connection ID in a known `layout` (needed for
/// [`CidLayout::QuicLb`], which [`decode_cid`] cannot recognise): `Ok(None)`
/// if the first byte does not carry the layout's marker or the server_id is
/// 0, an error if the length is out of `layout.min_cid_len()..=`[`QUIC_CID_MAX_LEN`].
pub fn decode_cid_as(cid: &[u8], layout: CidLayout) -> Result<Option<ServerId>, Error> {
    if !(layout.min_cid_len()..=QUIC_CID_MAX_LEN).contains(&cid.len()) {
        return Err(Error::BadCidLength {
            len: sat(cid.len()),
        });
    }
    Ok(ConnectionId::new_unchecked(cid).server_id_as(layout))
}

/// [`decode_cid`] over the next `len` bytes of a [`Buf`] (consumed).
pub fn decode_cid_buf<B: Buf>(
    buf: &mut B,
    len: usize,
) -> Result<Option<(CidLayout, ServerId)>, Error> {
    check_len(len)?;
    if buf.remaining() < len {
        return Err(Error::TruncatedQuicPacket {
            len: sat(buf.remaining()),
            needed: sat(len),
        });
    }
    let mut cid = [0u8; QUIC_CID_MAX_LEN];
    let cid = cid.get_mut(..len).unwrap_or_default();
    buf.copy_to_slice(cid);
    decode_cid(cid)
}

/// Puts a connection ID into a [`BufMut`]: `template` (random bytes of the
/// CID's length) with the version and server_id bits of `layout` and `id`.
pub fn put_cid<B: BufMut>(
    buf: &mut B,
    template: &[u8],
    layout: CidLayout,
    id: ServerId,
) -> Result<(), Error> {
    check_len(template.len())?;
    if buf.remaining_mut() < template.len() {
        return Err(Error::BufferTooShort {
            needed: sat(template.len()),
            available: sat(buf.remaining_mut()),
        });
    }
    let mut cid = [0u8; QUIC_CID_MAX_LEN];
    let cid = cid.get_mut(..template.len()).unwrap_or_default();
    cid.copy_from_slice(template);
    encode_cid(cid, layout, id)?;
    buf.put_slice(cid);
    Ok(())
}

/// Type of a long-header QUIC packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LongPacketType {
    /// Initial: the DCID was chosen by the client.
    Initial,
    /// 0-RTT: the DCID was chosen by the client.
    ZeroRtt,
    /// Handshake: server-chosen DCID.
    Handshake,
    /// Retry: server-chosen DCID.
    Retry,
    /// Version Negotiation (version 0): no server-chosen DCID.
    VersionNegotiation,
}

impl LongPacketType {
    /// Whether the DCID of such a packet was chosen by the server (so its
    /// server_id can be trusted for routing).
    pub const fn has_server_cid(self) -> bool {
        matches!(self, LongPacketType::Handshake | LongPacketType::Retry)
    }
}

/// The part of a QUIC packet header that routing needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuicHeader<'a> {
    /// A long header packet.
    Long {
        /// The QUIC version.
        version: u32,
        /// The packet type (QUIC v2 types mapped, RFC 9369).
        packet_type: LongPacketType,
        /// The destination connection ID (any length up to 255).
        dcid: &'a [u8],
    },
    /// A short header (1-RTT) packet.
    Short {
        /// The destination connection ID, of the configured length.
        dcid: &'a [u8],
    },
}

impl<'a> QuicHeader<'a> {
    /// Parses the header of the UDP payload `payload`. A short header's
    /// DCID length is not on the wire: pass the length the servers use.
    pub fn parse(payload: &'a [u8], short_dcid_len: usize) -> Result<QuicHeader<'a>, Error> {
        let truncated = |needed: usize| Error::TruncatedQuicPacket {
            len: sat(payload.len()),
            needed: sat(needed),
        };
        let &first = payload.first().ok_or(truncated(1))?;
        if first & QUIC_LONG_HEADER_BIT == 0 {
            let end = QUIC_SHORT_DCID_OFFSET + short_dcid_len;
            let dcid = payload
                .get(QUIC_SHORT_DCID_OFFSET..end)
                .ok_or(truncated(end))?;
            return Ok(QuicHeader::Short { dcid });
        }
        let version = payload
            .get(QUIC_VERSION_OFFSET..QUIC_VERSION_OFFSET + 4)
            .map(be)
            .ok_or(truncated(QUIC_LONG_DCID_OFFSET))?;
        let dcid_len = payload
            .get(QUIC_LONG_DCID_LEN_OFFSET)
            .map(|&l| usize::from(l))
            .ok_or(truncated(QUIC_LONG_DCID_OFFSET))?;
        let end = QUIC_LONG_DCID_OFFSET + dcid_len;
        let dcid = payload
            .get(QUIC_LONG_DCID_OFFSET..end)
            .ok_or(truncated(end))?;
        let bits = (first & QUIC_LONG_TYPE_MASK) >> QUIC_LONG_TYPE_SHIFT;
        let packet_type = match (version, bits) {
            (0, _) => LongPacketType::VersionNegotiation,
            (QUIC_VERSION_2, 0) => LongPacketType::Retry,
            (QUIC_VERSION_2, 1) => LongPacketType::Initial,
            (QUIC_VERSION_2, 2) => LongPacketType::ZeroRtt,
            (QUIC_VERSION_2, _) => LongPacketType::Handshake,
            (_, 0) => LongPacketType::Initial,
            (_, 1) => LongPacketType::ZeroRtt,
            (_, 2) => LongPacketType::Handshake,
            (_, _) => LongPacketType::Retry,
        };
        Ok(QuicHeader::Long {
            version,
            packet_type,
            dcid,
        })
    }

    /// The destination connection ID.
    pub const fn dcid(&self) -> &'a [u8] {
        match *self {
            QuicHeader::Long { dcid, .. } | QuicHeader::Short { dcid } => dcid,
        }
    }
}

/// The server_id a load balancer should route a QUIC datagram by: the
/// DCID's, unless the packet is an Initial, 0-RTT or Version Negotiation
/// packet (client-chosen DCID), the DCID is shorter than
/// [`QUIC_CID_MIN_LEN`], or it announces no known layout (all `Ok(None)`:
/// fall back to hashing). Errors on a truncated header.
pub fn server_id_from_datagram(
    payload: &[u8],
    short_dcid_len: usize,
) -> Result<Option<(CidLayout, ServerId)>, Error> {
    let header = QuicHeader::parse(payload, short_dcid_len)?;
    if let QuicHeader::Long { packet_type, .. } = header {
        if !packet_type.has_server_cid() {
            return Ok(None);
        }
    }
    let dcid = header.dcid();
    if dcid.len() < QUIC_CID_MIN_LEN {
        return Ok(None);
    }
    // Longer than RFC 9000 allows (other versions): the first bytes still
    // carry the layout, as Katran reads them.
    Ok(ConnectionId::new_unchecked(dcid).server_id())
}
