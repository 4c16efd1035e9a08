//! A minimal zero-copy view of a TCP header: just enough to find the
//! options area (the data offset). Building whole packets is etherparse's
//! job; this view exists so the server_id can be read in place.

use crate::consts::*;
use crate::error::sat;
use crate::Error;

/// Byte ranges of the TCP header, named once.
mod field {
    use crate::consts::*;

    pub(crate) const DATA_OFFSET: usize = TCP_DOFF_OFFSET;
    pub(crate) const OPTIONS_START: usize = TCP_HDR_LEN;
}

/// Smallest valid data offset, in 32-bit words (a header without options).
const MIN_DATA_OFFSET: u8 = (TCP_HDR_LEN / 4) as u8;

/// A TCP header over a buffer that starts at the header's first byte (the
/// segment's payload may follow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpHeader<T> {
    /// Wraps `buffer` without checks; accessors never panic, but call
    /// [`TcpHeader::check`] before trusting them.
    pub const fn new_unchecked(buffer: T) -> TcpHeader<T> {
        TcpHeader { buffer }
    }

    /// Wraps `buffer` after [`TcpHeader::check`].
    pub fn new_checked(buffer: T) -> Result<TcpHeader<T>, Error> {
        let header = TcpHeader::new_unchecked(buffer);
        header.check()?;
        Ok(header)
    }

    /// Checks that the buffer holds the fixed header and that the data
    /// offset is at least 5 words and within the buffer.
    pub fn check(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < TCP_HDR_LEN {
            return Err(Error::TruncatedHeader { len: sat(len) });
        }
        let data_offset = self.data_offset();
        if data_offset < MIN_DATA_OFFSET || self.header_len() > len {
            return Err(Error::BadDataOffset {
                data_offset,
                len: sat(len),
            });
        }
        Ok(())
    }

    /// The buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The data offset field, in 32-bit words (0 if the buffer is too short).
    pub fn data_offset(&self) -> u8 {
        self.buffer
            .as_ref()
            .get(field::DATA_OFFSET)
            .map_or(0, |b| b >> TCP_DOFF_SHIFT)
    }

    /// The header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.data_offset()) * 4
    }

    /// The options area (empty if the view was not checked and the data
    /// offset is invalid).
    pub fn options(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(field::OPTIONS_START..self.header_len())
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpHeader<T> {
    /// The options area, writable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        self.buffer
            .as_mut()
            .get_mut(field::OPTIONS_START..end)
            .unwrap_or_default()
    }
}
