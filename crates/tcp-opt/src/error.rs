//! The crate's error type.

use crate::consts::{QUIC_CID_MAX_LEN, QUIC_CID_MIN_LEN, TCPOPT_MAX_WALK};
use crate::quic::CidLayout;

/// Integer types of the error fields.
pub(crate) trait Saturating: TryFrom<usize> {
    const MAX: Self;
}
impl Saturating for u8 {
    const MAX: u8 = u8::MAX;
}
impl Saturating for u16 {
    const MAX: u16 = u16::MAX;
}
impl Saturating for u32 {
    const MAX: u32 = u32::MAX;
}

/// A length or offset for an error report, in the field's type. Offsets in
/// an options area never exceed `MAX_OPTION_WALK * 255`; lengths of absurd
/// inputs saturate. Small fields keep [`Error`] at 8 bytes, so that
/// `Result<Option<ServerId>, Error>` is returned in one register.
pub(crate) fn sat<T: Saturating>(n: usize) -> T {
    T::try_from(n).unwrap_or(T::MAX)
}

/// What was wrong with the bytes handed to a parser, or with a request to
/// write.
///
/// Offsets are relative to the start of the options area (the byte after
/// the fixed 20-byte TCP header) unless the variant says otherwise. A
/// load balancer treats every parse error like "no server_id" and falls back
/// to hashing; the error only says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option other than EOL/NOP starts in the last byte of the area, so
    /// it has no length byte.
    #[error(
        "malformed TCP options: option kind {kind} at offset {offset} has no length byte \
         (options area truncated); treat the header as carrying no server_id"
    )]
    TruncatedOption {
        /// Offset of the option's kind byte.
        offset: u16,
        /// The option kind.
        kind: u8,
    },
    /// An option's length byte is 0 or 1, which cannot even cover its own
    /// kind and length bytes (the kernel rejects it too).
    #[error(
        "malformed TCP options: option kind {kind} at offset {offset} has length {len}, \
         below the minimum of 2; treat the header as carrying no server_id"
    )]
    OptionLengthTooSmall {
        /// Offset of the option's kind byte.
        offset: u16,
        /// The option kind.
        kind: u8,
        /// The length byte.
        len: u8,
    },
    /// An option's length runs past the end of the options area.
    #[error(
        "malformed TCP options: option kind {kind} at offset {offset} has length {len} \
         but only {available} bytes are left in the options area; treat the header as \
         carrying no server_id"
    )]
    OptionPastEnd {
        /// Offset of the option's kind byte.
        offset: u16,
        /// The option kind.
        kind: u8,
        /// The length byte.
        len: u8,
        /// Bytes left in the area from `offset` (saturating at 65535).
        available: u16,
    },
    /// The first option that matches the layout (kind, and ExID for RFC
    /// 6994) has the wrong length for a server_id option.
    #[error(
        "malformed server_id option: kind {kind} at offset {offset} has length {len}, \
         the layout requires {expected}; check that both ends use the same layout"
    )]
    BadServerIdLength {
        /// Offset of the option's kind byte.
        offset: u16,
        /// The option kind.
        kind: u8,
        /// The length byte.
        len: u8,
        /// The length the layout requires.
        expected: u16,
    },
    /// A buffer wrapped as a server_id option holds another option (other
    /// kind, or another RFC 6994 ExID).
    #[error(
        "option kind {kind} is not the server_id option of the configured layout \
         (other kind, or another RFC 6994 ExID)"
    )]
    NotServerIdOption {
        /// The option kind found.
        kind: u8,
    },
    /// The walk examined [`MAX_OPTION_WALK`](crate::MAX_OPTION_WALK) options
    /// without reaching the end of the area (only possible for an area
    /// longer than a real TCP header allows); the BPF programs give up at the
    /// same point.
    #[error(
        "gave up after {TCPOPT_MAX_WALK} TCP options at offset {offset} without reaching \
         the end of the options area (a real area has at most 40 bytes)"
    )]
    TooManyOptions {
        /// Offset where the walk stopped.
        offset: u16,
    },
    /// A TCP header is shorter than 20 bytes.
    #[error("TCP header truncated: {len} bytes, the fixed header alone needs 20")]
    TruncatedHeader {
        /// Bytes available.
        len: u16,
    },
    /// A TCP header's data offset is below 5 words or beyond the buffer.
    #[error(
        "TCP header data offset {data_offset} (x4 = {} bytes) is invalid for a \
         {len}-byte buffer (must be 5..=15 words and within the buffer)",
        u32::from(*data_offset) * 4
    )]
    BadDataOffset {
        /// The data offset field, in 32-bit words.
        data_offset: u8,
        /// Bytes available.
        len: u32,
    },
    /// The output buffer cannot hold what was to be written.
    #[error("buffer too short: writing needs {needed} bytes, only {available} available")]
    BufferTooShort {
        /// Bytes needed.
        needed: u16,
        /// Bytes available.
        available: u16,
    },
    /// A compact layout was configured with kind 0 (EOL) or 1 (NOP), which
    /// cannot carry data.
    #[error(
        "option kind {kind} is EOL/NOP and cannot carry a server_id; configure another kind \
         for Layout::Compact"
    )]
    ReservedKind {
        /// The configured kind.
        kind: u8,
    },
    /// The server_id does not fit the bits a connection-ID layout has for it.
    #[error(
        "server_id {id} does not fit the {} connection-ID layout (max {}); use a layout \
         with more server_id bits",
        layout.name(),
        layout.max_server_id()
    )]
    ServerIdTooLarge {
        /// The server_id.
        id: u32,
        /// The layout.
        layout: CidLayout,
    },
    /// A connection ID is shorter than [`QUIC_CID_MIN_LEN`] or longer than
    /// [`QUIC_CID_MAX_LEN`].
    #[error(
        "QUIC connection ID of {len} bytes: a server_id needs {QUIC_CID_MIN_LEN}..={QUIC_CID_MAX_LEN} bytes"
    )]
    BadCidLength {
        /// The connection ID's length.
        len: u32,
    },
    /// A QUIC-LB configuration outside the draft's limits (codepoint 0..=6,
    /// server ID 1..=15 octets, 1..=4 for a routed flowpin server_id, nonce
    /// at least 4 octets, server ID + nonce at most 19), or server ID / nonce
    /// bytes of other lengths than configured.
    #[error(
        "QUIC-LB configuration (config id {config_id}, server ID {server_id_len} octets, \
         nonce {nonce_len} octets) is invalid: use config id 0..=6, a server ID of 1..=15 \
         octets (1..=4 for a flowpin server_id), a nonce of at least 4 octets, both \
         summing to at most 19"
    )]
    BadQuicLbConfig {
        /// The config rotation codepoint.
        config_id: u8,
        /// Server ID octets.
        server_id_len: u8,
        /// Nonce octets (0 where no nonce length was given).
        nonce_len: u8,
    },
    /// A QUIC-LB key that is not 32 hex digits (16 octets). The input is
    /// not repeated: it may be (almost) a key.
    #[error("QUIC-LB key is not 32 hex digits (16 octets); give the key as 32 hex digits")]
    BadQuicLbKey,
    /// A QUIC-LB configuration with a key was asked for a plaintext view
    /// of a CID ([`QuicLbConfig::decode`](crate::QuicLbConfig::decode)).
    #[error(
        "QUIC-LB config {config_id} is encrypted: its CIDs have no plaintext fields to borrow; \
         use QuicLbConfig::open or QuicLbConfig::server_id, which decrypt"
    )]
    QuicLbEncrypted {
        /// The config rotation codepoint.
        config_id: u8,
    },
    /// A flowpin server_id does not fit a QUIC-LB server ID of `len`
    /// octets (or `len` is not 1..=15).
    #[error(
        "server_id {id} does not fit a QUIC-LB server ID of {len} octets; use a server ID \
         length of 1..=15 octets large enough for it (4 holds every server_id)"
    )]
    BadQuicLbServerId {
        /// The server ID length asked for.
        len: u8,
        /// The server_id.
        id: u32,
    },
    /// Hex digits expected (an even number, few enough for the field).
    #[error(
        "expected hex digits (an even number, within the field's size), got {digits} characters"
    )]
    BadHex {
        /// Characters given.
        digits: u16,
    },
    /// A QUIC datagram is too short for the header it announces.
    #[error("QUIC packet truncated: {len} bytes, its header needs {needed}")]
    TruncatedQuicPacket {
        /// Bytes available.
        len: u16,
        /// Bytes the header needs.
        needed: u16,
    },
}
