//! The lab's tiny application protocol.
//!
//! On accept the server sends an 8-byte greeting `b"FP"`, backend index
//! (u16 BE), server_id (u32 BE). Then for every 16-byte ping the client
//! sends, the server answers 256 bytes starting with the ping.

/// Length of a ping.
pub(crate) const PING_LEN: usize = 16;
/// Length of a response.
pub(crate) const RESPONSE_LEN: usize = 256;
/// Length of the greeting.
pub(crate) const GREETING_LEN: usize = 8;

/// The greeting of backend `index` with `server_id`.
pub(crate) fn greeting(index: u16, server_id: u32) -> [u8; GREETING_LEN] {
    let mut g = [0u8; GREETING_LEN];
    g[..2].copy_from_slice(b"FP");
    g[2..4].copy_from_slice(&index.to_be_bytes());
    g[4..].copy_from_slice(&server_id.to_be_bytes());
    g
}

/// Parses a greeting into (backend index, server_id).
pub(crate) fn parse_greeting(g: &[u8; GREETING_LEN]) -> Option<(u16, u32)> {
    if &g[..2] != b"FP" {
        return None;
    }
    Some((
        u16::from_be_bytes([g[2], g[3]]),
        u32::from_be_bytes([g[4], g[5], g[6], g[7]]),
    ))
}
