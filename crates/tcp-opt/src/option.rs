//! The TCP options area: a bounded walker, typed options, and the server_id
//! option as a zero-copy view ([`ServerIdOption`]) and a high-level
//! representation ([`ServerIdRepr`]).

use crate::consts::*;
use crate::error::sat;
use crate::{Error, Layout, Sender, ServerId};

/// Byte ranges inside an option, named once.
mod field {
    use crate::consts::*;

    pub(crate) type Field = core::ops::Range<usize>;

    pub(crate) const KIND: usize = TCPOPT_KIND_OFFSET;
    pub(crate) const LENGTH: usize = TCPOPT_LEN_OFFSET;
    pub(crate) const RFC6994_EXID: Field =
        TCPOPT_RFC6994_EXID_OFFSET..TCPOPT_RFC6994_EXID_OFFSET + 2;
    /// Width of every server_id field.
    pub(crate) const ID_LEN: usize = 4;

    // Standard options (RFC 9293, RFC 7323, RFC 2018).
    pub(crate) const MSS_KIND: u8 = 2;
    pub(crate) const MSS_LEN: usize = 4;
    pub(crate) const MSS_VALUE: Field = 2..4;
    pub(crate) const WSCALE_KIND: u8 = 3;
    pub(crate) const WSCALE_LEN: usize = 3;
    pub(crate) const WSCALE_VALUE: usize = 2;
    pub(crate) const SACK_PERM_KIND: u8 = 4;
    pub(crate) const SACK_PERM_LEN: usize = 2;
    pub(crate) const TS_KIND: u8 = 8;
    pub(crate) const TS_LEN: usize = 10;
    pub(crate) const TS_VAL: Field = 2..6;
    pub(crate) const TS_ECR: Field = 6..10;
}

/// The bounded walker's step function, shared by everything that walks.
///
/// Returns the option starting at `offset` (its whole bytes, kind and length
/// included; one byte for EOL and NOP) or the malformation found there.
/// The caller guarantees `offset < area.len()`.
#[inline]
fn step(area: &[u8], offset: usize) -> Result<&[u8], Error> {
    let rest = area.get(offset..).unwrap_or_default();
    let Some(&kind) = rest.first() else {
        return Ok(rest);
    };
    if kind == TCPOPT_EOL || kind == TCPOPT_NOP {
        return Ok(&rest[..1]);
    }
    let Some(&len) = rest.get(field::LENGTH) else {
        return Err(Error::TruncatedOption {
            offset: sat(offset),
            kind,
        });
    };
    if len < 2 {
        return Err(Error::OptionLengthTooSmall {
            offset: sat(offset),
            kind,
            len,
        });
    }
    rest.get(..usize::from(len)).ok_or(Error::OptionPastEnd {
        offset: sat(offset),
        kind,
        len,
        available: sat(rest.len()),
    })
}

/// One option of an options area, as the walker found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawOption<'a> {
    /// Offset of the option's kind byte in the options area.
    pub offset: usize,
    /// The whole option: kind, length and data (one byte for EOL/NOP).
    pub bytes: &'a [u8],
}

impl<'a> RawOption<'a> {
    /// The option kind.
    pub fn kind(&self) -> u8 {
        self.bytes.get(field::KIND).copied().unwrap_or(TCPOPT_EOL)
    }

    /// The option's data (after kind and length; empty for EOL/NOP).
    pub fn data(&self) -> &'a [u8] {
        self.bytes.get(2..).unwrap_or_default()
    }

    /// The option decoded into a [`TcpOption`].
    pub fn parse(&self) -> TcpOption<'a> {
        TcpOption::from_raw(self.bytes)
    }
}

/// A TCP option, decoded (smoltcp style: anything not understood is
/// [`TcpOption::Unknown`] data, not an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TcpOption<'a> {
    /// End of option list (kind 0).
    EndOfList,
    /// No-operation padding (kind 1).
    NoOperation,
    /// Maximum segment size (kind 2, length 4).
    MaxSegmentSize(u16),
    /// Window scale shift (kind 3, length 3).
    WindowScale(u8),
    /// SACK permitted (kind 4, length 2).
    SackPermitted,
    /// Timestamps (kind 8, length 10).
    Timestamp {
        /// TSval.
        tsval: u32,
        /// TSecr.
        tsecr: u32,
    },
    /// Any other option, or a known kind with an unexpected length.
    Unknown {
        /// The option kind.
        kind: u8,
        /// The option's data, after kind and length.
        data: &'a [u8],
    },
}

fn be_u32(bytes: &[u8], range: field::Field) -> Option<u32> {
    let b: [u8; 4] = bytes.get(range)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

impl<'a> TcpOption<'a> {
    fn from_raw(bytes: &'a [u8]) -> TcpOption<'a> {
        let kind = bytes.get(field::KIND).copied().unwrap_or(TCPOPT_EOL);
        let len = bytes.len();
        let known = match kind {
            TCPOPT_EOL => Some(TcpOption::EndOfList),
            TCPOPT_NOP => Some(TcpOption::NoOperation),
            field::MSS_KIND if len == field::MSS_LEN => bytes
                .get(field::MSS_VALUE)
                .and_then(|b| b.try_into().ok())
                .map(|b| TcpOption::MaxSegmentSize(u16::from_be_bytes(b))),
            field::WSCALE_KIND if len == field::WSCALE_LEN => bytes
                .get(field::WSCALE_VALUE)
                .map(|&s| TcpOption::WindowScale(s)),
            field::SACK_PERM_KIND if len == field::SACK_PERM_LEN => Some(TcpOption::SackPermitted),
            field::TS_KIND if len == field::TS_LEN => {
                match (be_u32(bytes, field::TS_VAL), be_u32(bytes, field::TS_ECR)) {
                    (Some(tsval), Some(tsecr)) => Some(TcpOption::Timestamp { tsval, tsecr }),
                    _ => None,
                }
            }
            _ => None,
        };
        known.unwrap_or(TcpOption::Unknown {
            kind,
            data: bytes.get(2..).unwrap_or_default(),
        })
    }
}

/// Iterator over the options of an options area, walking like the kernel
/// and the BPF programs: EOL ends the walk, NOP is one byte, a length below
/// 2 or past the end is an error, and at most [`TCPOPT_MAX_WALK`] options
/// are examined (then [`Error::TooManyOptions`] unless the end was reached).
///
/// Yields `Ok` options (EOL included, as the last item) until the end, or
/// one `Err` and then nothing.
#[derive(Clone, Debug)]
pub struct Options<'a> {
    area: &'a [u8],
    offset: usize,
    steps: usize,
    done: bool,
}

impl<'a> Options<'a> {
    /// Walks `area`, the options area (bytes after the fixed TCP header).
    pub const fn new(area: &'a [u8]) -> Options<'a> {
        Options {
            area,
            offset: 0,
            steps: 0,
            done: false,
        }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<RawOption<'a>, Error>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.offset >= self.area.len() {
            return None;
        }
        if self.steps == TCPOPT_MAX_WALK {
            self.done = true;
            return Some(Err(Error::TooManyOptions {
                offset: sat(self.offset),
            }));
        }
        self.steps += 1;
        match step(self.area, self.offset) {
            Ok(bytes) => {
                let offset = self.offset;
                if bytes.first() == Some(&TCPOPT_EOL) {
                    self.done = true;
                }
                self.offset += bytes.len();
                Some(Ok(RawOption { offset, bytes }))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// A zero-copy view of a server_id option (smoltcp style): the same type
/// reads an option found in a packet and writes a new one.
///
/// The buffer starts at the option's kind byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerIdOption<T: AsRef<[u8]>> {
    buffer: T,
    layout: Layout,
}

impl<T: AsRef<[u8]>> ServerIdOption<T> {
    /// Wraps `buffer` without any check; accessors then return `None`/0
    /// instead of panicking on a short buffer, but call
    /// [`ServerIdOption::check`] before trusting them.
    pub const fn new_unchecked(buffer: T, layout: Layout) -> ServerIdOption<T> {
        ServerIdOption { buffer, layout }
    }

    /// Wraps `buffer` after [`ServerIdOption::check`].
    pub fn new_checked(buffer: T, layout: Layout) -> Result<ServerIdOption<T>, Error> {
        let option = ServerIdOption::new_unchecked(buffer, layout);
        option.check()?;
        Ok(option)
    }

    /// Checks that the buffer holds a whole option of this layout: the
    /// kind (and ExID) match and the length byte is
    /// [`Layout::option_len`], within the buffer.
    pub fn check(&self) -> Result<(), Error> {
        let bytes = self.buffer.as_ref();
        let need = self.layout.option_len();
        let (Some(&kind), Some(&len)) = (bytes.get(field::KIND), bytes.get(field::LENGTH)) else {
            return Err(Error::BufferTooShort {
                needed: sat(need),
                available: sat(bytes.len()),
            });
        };
        if !self.layout.matches(bytes) {
            return Err(Error::NotServerIdOption { kind });
        }
        if usize::from(len) != need {
            return Err(Error::BadServerIdLength {
                offset: 0,
                kind,
                len,
                expected: sat(need),
            });
        }
        if bytes.len() < need {
            return Err(Error::OptionPastEnd {
                offset: 0,
                kind,
                len,
                available: sat(bytes.len()),
            });
        }
        Ok(())
    }

    /// The layout this view reads.
    pub const fn layout(&self) -> Layout {
        self.layout
    }

    /// The buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The kind byte.
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref().get(field::KIND).copied().unwrap_or(0)
    }

    /// The length byte.
    pub fn length(&self) -> u8 {
        self.buffer
            .as_ref()
            .get(field::LENGTH)
            .copied()
            .unwrap_or(0)
    }

    /// The RFC 6994 experiment ID (`None` for the other layouts).
    pub fn exid(&self) -> Option<u16> {
        match self.layout {
            Layout::Rfc6994 { .. } => self
                .buffer
                .as_ref()
                .get(field::RFC6994_EXID)
                .and_then(|b| b.try_into().ok())
                .map(u16::from_be_bytes),
            _ => None,
        }
    }

    /// The server_id field as a number, 0 included (0 if the buffer is too
    /// short).
    pub fn raw_server_id(&self) -> u32 {
        let at = self.layout.id_offset();
        self.buffer
            .as_ref()
            .get(at..at + field::ID_LEN)
            .and_then(|b| b.try_into().ok())
            .map_or(SERVER_ID_NONE, |b| self.layout.decode_id(b))
    }

    /// The server_id, `None` if the field holds the reserved 0.
    pub fn server_id(&self) -> Option<ServerId> {
        ServerId::new(self.raw_server_id())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ServerIdOption<T> {
    fn put(&mut self, at: usize, bytes: &[u8]) -> Result<(), Error> {
        let buf = self.buffer.as_mut();
        let available = buf.len();
        let dst = buf
            .get_mut(at..at + bytes.len())
            .ok_or(Error::BufferTooShort {
                needed: sat(at + bytes.len()),
                available: sat(available),
            })?;
        dst.copy_from_slice(bytes);
        Ok(())
    }

    /// Sets the kind byte.
    pub fn set_kind(&mut self, kind: u8) -> Result<(), Error> {
        self.put(field::KIND, &[kind])
    }

    /// Sets the length byte.
    pub fn set_length(&mut self, len: u8) -> Result<(), Error> {
        self.put(field::LENGTH, &[len])
    }

    /// Sets the RFC 6994 experiment ID (does nothing for other layouts).
    pub fn set_exid(&mut self, exid: u16) -> Result<(), Error> {
        match self.layout {
            Layout::Rfc6994 { .. } => self.put(field::RFC6994_EXID.start, &exid.to_be_bytes()),
            _ => Ok(()),
        }
    }

    /// Sets the server_id field (0 allowed: it means "none").
    pub fn set_raw_server_id(&mut self, id: u32) -> Result<(), Error> {
        let bytes = self.layout.encode_id(id);
        self.put(self.layout.id_offset(), &bytes)
    }
}

/// The high-level form of a server_id option (smoltcp's `Repr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServerIdRepr {
    /// The layout.
    pub layout: Layout,
    /// Who writes it (selects Katran's kind; see [`Sender`]).
    pub sender: Sender,
    /// The server_id.
    pub server_id: ServerId,
}

impl ServerIdRepr {
    /// Parses a checked view. Returns `None` when the option carries the
    /// reserved server_id 0. `sender` is inferred from Katran's kind (0xB6 =
    /// server) and is [`Sender::Client`] for the other layouts.
    pub fn parse<T: AsRef<[u8]>>(
        option: &ServerIdOption<T>,
    ) -> Result<Option<ServerIdRepr>, Error> {
        option.check()?;
        let sender = match option.layout() {
            Layout::KatranCompat if option.kind() == TCPOPT_KATRAN_SYNACK_KIND => Sender::Server,
            _ => Sender::Client,
        };
        Ok(option.server_id().map(|server_id| ServerIdRepr {
            layout: option.layout(),
            sender,
            server_id,
        }))
    }

    /// Bytes [`ServerIdRepr::emit`] writes: the option padded with leading
    /// NOPs to [`Layout::aligned_len`].
    pub const fn buffer_len(&self) -> usize {
        self.layout.aligned_len()
    }

    /// The padded option as bytes (what [`ServerIdRepr::emit`] writes).
    pub fn to_bytes(&self) -> Result<[u8; 8], Error> {
        let mut out = [TCPOPT_NOP; 8];
        let opt_len = self.layout.option_len();
        let pad = self.layout.aligned_len() - opt_len;
        let kind = self.layout.write_kind(self.sender);
        if kind == TCPOPT_EOL || kind == TCPOPT_NOP {
            return Err(Error::ReservedKind { kind });
        }
        let mut view = ServerIdOption::new_unchecked(&mut out[pad..pad + opt_len], self.layout);
        view.set_kind(kind)?;
        // option_len is at most 8: the cast cannot truncate.
        view.set_length(opt_len as u8)?;
        if let Layout::Rfc6994 { exid } = self.layout {
            view.set_exid(exid)?;
        }
        view.set_raw_server_id(self.server_id.get())?;
        Ok(out)
    }

    /// Writes the option, padded with leading NOPs so that it ends on a
    /// 4-byte boundary when `buf` starts on one, at the start of `buf`.
    /// Returns the bytes written ([`ServerIdRepr::buffer_len`]); nothing
    /// after them is touched, and nothing at all on error.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let bytes = self.to_bytes()?;
        let n = self.buffer_len();
        let available = buf.len();
        let dst = buf.get_mut(..n).ok_or(Error::BufferTooShort {
            needed: sat(n),
            available: sat(available),
        })?;
        dst.copy_from_slice(bytes.get(..n).unwrap_or_default());
        Ok(n)
    }
}

/// What the hot loop compares each option against, computed once per walk.
#[derive(Clone, Copy)]
struct Matcher {
    kinds: [u8; 2],
    exid: Option<u16>,
    expected: usize,
}

impl Matcher {
    #[inline]
    const fn new(layout: Layout) -> Matcher {
        match layout {
            Layout::Rfc6994 { exid } => Matcher {
                kinds: [TCPOPT_EXP_KIND, TCPOPT_EXP_KIND_ALT],
                exid: Some(exid),
                expected: TCPOPT_RFC6994_LEN,
            },
            Layout::Compact { kind } => Matcher {
                kinds: [kind, kind],
                exid: None,
                expected: TCPOPT_COMPACT_LEN,
            },
            Layout::KatranCompat => Matcher {
                kinds: [TCPOPT_KATRAN_KIND, TCPOPT_KATRAN_SYNACK_KIND],
                exid: None,
                expected: TCPOPT_KATRAN_LEN,
            },
        }
    }
}

#[cold]
#[inline(never)]
fn malformed(area: &[u8], offset: usize) -> Error {
    // Re-run the step to build the precise error off the hot path.
    match step(area, offset) {
        Err(e) => e,
        Ok(_) => Error::TooManyOptions {
            offset: sat(offset),
        },
    }
}

#[cold]
#[inline(never)]
fn bad_length(offset: usize, kind: u8, len: usize, expected: usize) -> Error {
    Error::BadServerIdLength {
        offset: sat(offset),
        kind,
        // `len` came from a length byte.
        len: len as u8,
        expected: sat(expected),
    }
}

/// TCP timestamps option (RFC 7323): kind and length.
const TCPOPT_TIMESTAMP: u8 = 8;
const TCPOPT_TIMESTAMP_LEN: u8 = 10;

/// The walk of [`find_server_id`](crate::find_server_id): the first option
/// matching `layout`, as `(offset, whole option bytes)`, with its length
/// checked. Same walk as [`Options`] (the property tests hold the two and
/// the header's C pseudocode together), written as one tight loop.
#[inline(always)]
fn locate(area: &[u8], layout: Layout) -> Result<Option<(usize, &[u8])>, Error> {
    let m = Matcher::new(layout);
    // Fast path for the area every established Linux segment starts with:
    // NOP, NOP, timestamps (kind 8, length 10). Skipping those three options
    // at once is exactly what the walk below does for them, as long as
    // kind 8 is not the layout's own kind; they count as three steps.
    let (mut offset, start) = match area {
        [TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TIMESTAMP, TCPOPT_TIMESTAMP_LEN, ..]
            if area.len() >= 2 + usize::from(TCPOPT_TIMESTAMP_LEN)
                && m.kinds[0] != TCPOPT_TIMESTAMP
                && m.kinds[1] != TCPOPT_TIMESTAMP =>
        {
            (2 + usize::from(TCPOPT_TIMESTAMP_LEN), 3)
        }
        _ => (0usize, 0),
    };
    for _ in start..TCPOPT_MAX_WALK {
        let Some(&kind) = area.get(offset) else {
            return Ok(None);
        };
        if kind == TCPOPT_EOL {
            return Ok(None);
        }
        if kind == TCPOPT_NOP {
            offset += 1;
            continue;
        }
        let len = match area.get(offset + field::LENGTH) {
            Some(&len) if len >= 2 => usize::from(len),
            _ => return Err(malformed(area, offset)),
        };
        let Some(option) = area.get(offset..offset + len) else {
            return Err(malformed(area, offset));
        };
        if kind == m.kinds[0] || kind == m.kinds[1] {
            let ours = match m.exid {
                None => true,
                Some(exid) => match option.get(field::RFC6994_EXID) {
                    Some(&[high, low]) => u16::from_be_bytes([high, low]) == exid,
                    _ => false,
                },
            };
            if ours {
                if len != m.expected {
                    return Err(bad_length(offset, kind, len, m.expected));
                }
                return Ok(Some((offset, option)));
            }
        }
        offset += len;
    }
    if offset >= area.len() {
        Ok(None)
    } else {
        Err(Error::TooManyOptions {
            offset: sat(offset),
        })
    }
}

/// Walks `options` and returns the first option matching `layout` (see
/// [`find_server_id`](crate::find_server_id)) as a checked view.
pub fn find_server_id_option(
    options: &[u8],
    layout: Layout,
) -> Result<Option<ServerIdOption<&[u8]>>, Error> {
    Ok(locate(options, layout)?.map(|(_, bytes)| ServerIdOption::new_unchecked(bytes, layout)))
}

/// The server_id of the first option matching `layout`, 0 included.
#[inline(always)]
pub(crate) fn find_raw_server_id(options: &[u8], layout: Layout) -> Result<Option<u32>, Error> {
    let Some((_, option)) = locate(options, layout)? else {
        return Ok(None);
    };
    let at = layout.id_offset();
    Ok(option
        .get(at..at + field::ID_LEN)
        .and_then(|b| b.try_into().ok())
        .map(|b| layout.decode_id(b)))
}
