//! The server_id TCP header option and the QUIC connection-ID codec of
//! flowpin, in pure Rust: zero-copy, and it never panics on bad input.
//!
//! The server writes its `server_id` into a TCP option of its SYN-ACK, the
//! client echoes it on every later packet, and any load balancer routes by
//! it; QUIC does the same with the connection ID ([`quic`]). This crate is
//! that wire format. The BPF programs include the same constants from
//! `<flowpin/tcp_opt.h>` of `flowpin-bpf-abi` (mirrored in [`consts`]; its
//! drift test keeps them equal), which also spells out the walk below in C.
//!
//! # Layouts
//!
//! [`Layout::Rfc6994`] (the default, kind 253 with an ExID, 8 bytes),
//! [`Layout::Compact`] (the talk's `{u8 kind; u8 len; u32 server_id}`) and
//! [`Layout::KatranCompat`] (Katran's TPR option, kind 0xB7/0xB6,
//! little-endian id). Each takes 8 bytes of header once NOP-padded.
//!
//! # How options are walked
//!
//! Like the kernel and the BPF programs: EOL ends the list, NOP is skipped,
//! a length byte below 2 or running past the end is an error, and at most
//! [`MAX_OPTION_WALK`] options are examined. If several server_id options
//! are present, **the first one wins** (the kernel's `bpf_load_hdr_opt()`
//! also returns the first); if it carries the reserved server_id 0 the
//! result is "none". Options of other kinds (and RFC 6994 options with
//! another ExID) are data, never errors.
//!
//! # Example
//!
//! ```
//! use flowpin_tcp_opt::{find_server_id, write_server_id, Layout, ServerId};
//!
//! // The options area of a SYN-ACK: MSS 1460, SACK permitted, timestamps,
//! // NOP, window scale 7, and room for the server_id option.
//! let mut area = [0u8; 28];
//! area[..20].copy_from_slice(&[
//!     2, 4, 0x05, 0xb4, // MSS 1460
//!     4, 2, // SACK permitted
//!     8, 10, 0, 0, 0, 1, 0, 0, 0, 0, // timestamps
//!     1, // NOP
//!     3, 3, 7, // window scale 7
//! ]);
//! let id = ServerId::new(42).unwrap();
//! let layout = Layout::default(); // RFC 6994, ExID 0xF10E
//! let written = write_server_id(&mut area[20..], layout, id)?;
//! assert_eq!(written, layout.aligned_len());
//! assert_eq!(&area[20..], &[253, 8, 0xf1, 0x0e, 0, 0, 0, 42]);
//!
//! assert_eq!(find_server_id(&area, layout)?, Some(id));
//! // Another layout finds nothing there...
//! assert_eq!(find_server_id(&area, Layout::KatranCompat)?, None);
//! // ...and a malformed area is an error, not a panic.
//! assert!(find_server_id(&[2, 0, 0, 0], layout).is_err());
//! # Ok::<(), flowpin_tcp_opt::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod codec;
pub mod consts;
mod error;
mod layout;
pub mod option;
pub mod quic;
pub mod quic_lb;
pub mod tcp;

pub use codec::find_server_id_buf;
pub use error::Error;
pub use layout::{Layout, Sender, ServerId};
pub use option::{Options, RawOption, ServerIdOption, ServerIdRepr, TcpOption};
pub use quic::{decode_cid, decode_cid_as, encode_cid, CidLayout};
pub use quic_lb::{QuicLb, QuicLbCodec, QuicLbConfig, QuicLbConfigs, QuicLbKey, QuicLbMode};
pub use tcp::TcpHeader;

/// The most options any walk examines, NOPs included; equal to
/// `FLOWPIN_TCPOPT_MAX_WALK` in the C header, the bound of the BPF loops.
pub const MAX_OPTION_WALK: usize = consts::TCPOPT_MAX_WALK;

/// Finds the server_id in `options`, the options area of a TCP header (the
/// bytes after the fixed 20-byte header).
///
/// Returns `Ok(None)` if there is no server_id option of `layout` or the
/// first one carries the reserved 0, and an [`Error`] if the area is
/// malformed before or at that option (see the crate docs for the walk).
// Always inlined: the walk then specialises on the caller's layout, which
// halves its cost in the benchmark (benches/tcp_opt.rs).
#[inline(always)]
pub fn find_server_id(options: &[u8], layout: Layout) -> Result<Option<ServerId>, Error> {
    Ok(option::find_raw_server_id(options, layout)?.and_then(ServerId::new))
}

/// Finds the server_id in a TCP header: `tcp` starts at the header's first
/// byte and may continue with the payload; the options area is taken from
/// the data offset field.
pub fn find_server_id_in_header(tcp: &[u8], layout: Layout) -> Result<Option<ServerId>, Error> {
    find_server_id(TcpHeader::new_checked(tcp)?.options(), layout)
}

/// Writes the server_id option of `layout` at the start of `buf`, padded
/// with leading NOPs to [`Layout::aligned_len`] bytes (so it ends 4-byte
/// aligned when `buf` starts aligned), and returns the bytes written.
/// Nothing past them is touched; nothing at all on error.
///
/// For [`Layout::KatranCompat`] this writes the client kind 0xB7; use
/// [`write_server_id_as`] with [`Sender::Server`] for a Katran server's
/// SYN-ACK (0xB6).
pub fn write_server_id(buf: &mut [u8], layout: Layout, id: ServerId) -> Result<usize, Error> {
    write_server_id_as(buf, layout, id, Sender::Client)
}

/// [`write_server_id`] with an explicit [`Sender`] (which only changes
/// Katran's kind).
pub fn write_server_id_as(
    buf: &mut [u8],
    layout: Layout,
    id: ServerId,
    sender: Sender,
) -> Result<usize, Error> {
    ServerIdRepr {
        layout,
        sender,
        server_id: id,
    }
    .emit(buf)
}
