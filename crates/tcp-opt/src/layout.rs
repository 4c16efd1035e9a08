//! [`ServerId`] and the option [`Layout`]s.

use core::fmt;
use core::num::NonZeroU32;

use crate::consts::*;

/// The identity of a server (a host running services), as carried in the
/// TCP option and in QUIC connection IDs.
///
/// The value 0 ([`SERVER_ID_NONE`]) is reserved for "no server_id" on the
/// wire: [`ServerId::new(0)`](ServerId::new) returns `None`, and an option
/// carrying 0 parses as "none" (Katran's client sends 0 to ask the server to
/// resend its id). So a `ServerId` is never 0, and `Option<ServerId>` is the
/// size of a `u32`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerId(NonZeroU32);

impl ServerId {
    /// The server_id `id`, or `None` for the reserved 0.
    pub const fn new(id: u32) -> Option<ServerId> {
        match NonZeroU32::new(id) {
            Some(id) => Some(ServerId(id)),
            None => None,
        }
    }

    /// The numeric value (never 0).
    pub const fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Debug for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerId({})", self.0)
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<ServerId> for u32 {
    fn from(id: ServerId) -> u32 {
        id.get()
    }
}

/// How the server_id is laid out in the TCP option.
///
/// | layout | bytes on the wire | server_id order |
/// |---|---|---|
/// | `Rfc6994 { exid }` | `253 8 exid[2] id[4]` (254 accepted on parse) | network (big-endian) |
/// | `Compact { kind }` | `kind 6 id[4]` | network (big-endian) |
/// | `KatranCompat` | `0xB7 6 id[4]` (`0xB6` from the server) | host = little-endian |
///
/// Every layout takes 8 bytes of header once padded to 4-byte alignment
/// ([`Layout::aligned_len`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// RFC 6994 shared experimental option: kind [`TCPOPT_EXP_KIND`] (253;
    /// [`TCPOPT_EXP_KIND_ALT`] 254 is accepted on parse), length 8, a 2-byte
    /// experiment ID, then the 4-byte server_id, all big-endian. Experimental
    /// options with another ExID are someone else's and skipped.
    Rfc6994 {
        /// The experiment identifier ([`TCPOPT_DEFAULT_EXID`] by default).
        exid: u16,
    },
    /// The talk's 6-byte layout `{u8 kind; u8 len; u32 server_id}`, server_id
    /// big-endian.
    Compact {
        /// The option kind (pick an unassigned or experimental one).
        kind: u8,
    },
    /// Katran's TPR option, to interoperate with Katran deployments: kind
    /// [`TCPOPT_KATRAN_KIND`] (0xB7, sent by clients and parsed by Katran's
    /// load balancer) or [`TCPOPT_KATRAN_SYNACK_KIND`] (0xB6, sent by Katran
    /// servers), length 6, server_id in host byte order, which is
    /// little-endian on every platform Katran runs on. Both kinds are
    /// accepted on parse; see [`Sender`] for which one is written.
    KatranCompat,
}

impl Default for Layout {
    /// [`Layout::Rfc6994`] with [`TCPOPT_DEFAULT_EXID`].
    fn default() -> Layout {
        Layout::Rfc6994 {
            exid: TCPOPT_DEFAULT_EXID,
        }
    }
}

/// Which end writes the option; only [`Layout::KatranCompat`] cares (Katran's
/// server writes kind 0xB6, its client 0xB7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Sender {
    /// The connecting side (and every packet after the handshake in
    /// flowpin); Katran kind 0xB7, the one Katran's load balancer parses.
    #[default]
    Client,
    /// The listening side's SYN-ACK; Katran kind 0xB6.
    Server,
}

impl Layout {
    /// Length of the option itself (kind and length bytes included): 8 for
    /// RFC 6994, 6 otherwise. This is the value of the option's length byte
    /// and what a sock_ops program may pass to `bpf_reserve_hdr_opt()` in
    /// `HDR_OPT_LEN_CB` (the kernel rounds the reservation up to 4).
    pub const fn option_len(self) -> usize {
        match self {
            Layout::Rfc6994 { .. } => TCPOPT_RFC6994_LEN,
            Layout::Compact { .. } => TCPOPT_COMPACT_LEN,
            Layout::KatranCompat => TCPOPT_KATRAN_LEN,
        }
    }

    /// Bytes the option occupies in the header once padded with NOPs to a
    /// multiple of 4: what [`write_server_id`](crate::write_server_id)
    /// returns, and how much `HDR_OPT_LEN_CB` ends up reserving (8 for every
    /// layout).
    pub const fn aligned_len(self) -> usize {
        match self {
            Layout::Rfc6994 { .. } => TCPOPT_RFC6994_ALIGNED_LEN,
            Layout::Compact { .. } => TCPOPT_COMPACT_ALIGNED_LEN,
            Layout::KatranCompat => TCPOPT_KATRAN_ALIGNED_LEN,
        }
    }

    /// The selector of this layout in BPF program configuration
    /// ([`LAYOUT_RFC6994`], [`LAYOUT_COMPACT`], [`LAYOUT_KATRAN`]).
    pub const fn selector(self) -> u32 {
        match self {
            Layout::Rfc6994 { .. } => LAYOUT_RFC6994,
            Layout::Compact { .. } => LAYOUT_COMPACT,
            Layout::KatranCompat => LAYOUT_KATRAN,
        }
    }

    /// The kind byte this layout writes for `sender`.
    pub const fn write_kind(self, sender: Sender) -> u8 {
        match (self, sender) {
            (Layout::Rfc6994 { .. }, _) => TCPOPT_EXP_KIND,
            (Layout::Compact { kind }, _) => kind,
            (Layout::KatranCompat, Sender::Client) => TCPOPT_KATRAN_KIND,
            (Layout::KatranCompat, Sender::Server) => TCPOPT_KATRAN_SYNACK_KIND,
        }
    }

    /// Offset of the server_id inside the option.
    pub(crate) const fn id_offset(self) -> usize {
        match self {
            Layout::Rfc6994 { .. } => TCPOPT_RFC6994_ID_OFFSET,
            Layout::Compact { .. } => TCPOPT_COMPACT_ID_OFFSET,
            Layout::KatranCompat => TCPOPT_KATRAN_ID_OFFSET,
        }
    }

    /// Whether the option `kind` with body `option` (the whole option, kind
    /// and length bytes included, already bounds-checked by the walker) is
    /// this layout's server_id option. Its length is checked afterwards, so
    /// that a matching option of the wrong length is reported, not skipped.
    pub(crate) fn matches(self, option: &[u8]) -> bool {
        let Some(&kind) = option.get(TCPOPT_KIND_OFFSET) else {
            return false;
        };
        match self {
            Layout::Rfc6994 { exid } => {
                (kind == TCPOPT_EXP_KIND || kind == TCPOPT_EXP_KIND_ALT)
                    && option
                        .get(TCPOPT_RFC6994_EXID_OFFSET..TCPOPT_RFC6994_EXID_OFFSET + 2)
                        .is_some_and(|e| e == exid.to_be_bytes())
            }
            Layout::Compact { kind: k } => kind == k,
            Layout::KatranCompat => kind == TCPOPT_KATRAN_KIND || kind == TCPOPT_KATRAN_SYNACK_KIND,
        }
    }

    /// Reads the server_id from the 4 bytes at [`Layout::id_offset`].
    pub(crate) const fn decode_id(self, bytes: [u8; 4]) -> u32 {
        match self {
            Layout::KatranCompat => u32::from_le_bytes(bytes),
            Layout::Rfc6994 { .. } | Layout::Compact { .. } => u32::from_be_bytes(bytes),
        }
    }

    /// The 4 bytes of `id` in this layout's byte order.
    pub(crate) const fn encode_id(self, id: u32) -> [u8; 4] {
        match self {
            Layout::KatranCompat => id.to_le_bytes(),
            Layout::Rfc6994 { .. } | Layout::Compact { .. } => id.to_be_bytes(),
        }
    }
}
