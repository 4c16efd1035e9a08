//! The server_id option on [`bytes::Buf`] / [`bytes::BufMut`] (quinn-proto's
//! `coding.rs` style).

use bytes::{Buf, BufMut};

use crate::error::sat;
use crate::option::ServerIdRepr;
use crate::{find_server_id, Error, Layout, ServerId};

/// Finds the server_id in an options area held in a [`Buf`], consuming the
/// whole area. Same walk and result as [`find_server_id`]; a contiguous
/// buffer is walked in place, a fragmented one is gathered first
/// ([`Buf::copy_to_bytes`], zero-copy for [`bytes::Bytes`]).
pub fn find_server_id_buf<B: Buf>(buf: &mut B, layout: Layout) -> Result<Option<ServerId>, Error> {
    let len = buf.remaining();
    if buf.chunk().len() == len {
        let found = find_server_id(buf.chunk(), layout);
        buf.advance(len);
        found
    } else {
        let area = buf.copy_to_bytes(len);
        find_server_id(&area, layout)
    }
}

impl ServerIdRepr {
    /// Puts the padded option ([`ServerIdRepr::buffer_len`] bytes) into a
    /// [`BufMut`]; nothing is written on error.
    pub fn encode<B: BufMut>(&self, buf: &mut B) -> Result<usize, Error> {
        let bytes = self.to_bytes()?;
        let n = self.buffer_len();
        if buf.remaining_mut() < n {
            return Err(Error::BufferTooShort {
                needed: sat(n),
                available: sat(buf.remaining_mut()),
            });
        }
        buf.put_slice(bytes.get(..n).unwrap_or_default());
        Ok(n)
    }

    /// Finds the server_id option of `layout` in an options area held in a
    /// [`Buf`] (consumed), as a [`ServerIdRepr`].
    pub fn decode<B: Buf>(buf: &mut B, layout: Layout) -> Result<Option<ServerIdRepr>, Error> {
        let len = buf.remaining();
        let area = buf.copy_to_bytes(len);
        match crate::option::find_server_id_option(&area, layout)? {
            Some(view) => ServerIdRepr::parse(&view),
            None => Ok(None),
        }
    }
}
