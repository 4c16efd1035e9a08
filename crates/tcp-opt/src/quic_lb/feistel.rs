//! The draft's four-pass Feistel network (§ "General Case: Four-Pass
//! Encryption"): the server ID and nonce, `len` octets in all (5..=19,
//! never 16), split into two halves of `half = ceil(len / 2)` octets, each
//! pass encrypting one half expanded to a block and XORing the result into
//! the other. With an odd `len` the middle octet is shared: the left half
//! keeps its high nibble, the right half its low nibble, and the nibbles
//! that are not theirs are cleared after every pass.

use super::key::{QuicLbCipher, QUIC_LB_BLOCK_LEN};

/// Longest half: `ceil(19 / 2)`.
const MAX_HALF: usize = 10;

/// One half of the Feistel state.
type Half = [u8; MAX_HALF];

/// The draft's `expand(len, pass, half)`: the half's octets, zeros, then
/// `len` and `pass` as the block's last two octets.
fn expand(len: usize, pass: u8, half: &Half, half_len: usize) -> [u8; QUIC_LB_BLOCK_LEN] {
    let mut block = [0u8; QUIC_LB_BLOCK_LEN];
    block[..half_len].copy_from_slice(&half[..half_len]);
    block[QUIC_LB_BLOCK_LEN - 2] = len as u8;
    block[QUIC_LB_BLOCK_LEN - 1] = pass;
    block
}

/// `dst ^= truncate(AES(expand(len, pass, src)), half_len)`, then clears the
/// nibble of `dst` that belongs to the other half when `len` is odd (`dst`
/// is the left half when `dst_is_left`).
fn round(
    cipher: &QuicLbCipher,
    len: usize,
    pass: u8,
    src: &Half,
    dst: &mut Half,
    dst_is_left: bool,
) {
    let half_len = len.div_ceil(2);
    let mut block = expand(len, pass, src, half_len);
    cipher.encrypt_block(&mut block);
    for (d, k) in dst.iter_mut().zip(&block).take(half_len) {
        *d ^= k;
    }
    clear_foreign_nibble(len, dst, dst_is_left);
}

fn clear_foreign_nibble(len: usize, half: &mut Half, is_left: bool) {
    if len % 2 == 1 {
        if is_left {
            half[len.div_ceil(2) - 1] &= 0xf0;
        } else {
            half[0] &= 0x0f;
        }
    }
}

/// Splits `block` (the `len` octets after the first octet) into halves.
fn split(block: &[u8]) -> (Half, Half) {
    let len = block.len();
    let half_len = len.div_ceil(2);
    let (mut left, mut right) = ([0u8; MAX_HALF], [0u8; MAX_HALF]);
    left[..half_len].copy_from_slice(&block[..half_len]);
    right[..half_len].copy_from_slice(&block[len - half_len..]);
    clear_foreign_nibble(len, &mut left, true);
    clear_foreign_nibble(len, &mut right, false);
    (left, right)
}

/// Writes the halves back over `block` (the shared nibble of an odd length
/// from each side).
fn join(left: &Half, right: &Half, block: &mut [u8]) {
    let len = block.len();
    let half_len = len.div_ceil(2);
    block[len - half_len..].copy_from_slice(&right[..half_len]);
    if len % 2 == 1 {
        block[..half_len - 1].copy_from_slice(&left[..half_len - 1]);
        block[half_len - 1] = left[half_len - 1] | right[0];
    } else {
        block[..half_len].copy_from_slice(&left[..half_len]);
    }
}

/// Encrypts `block` (server ID then nonce, 5..=19 octets) in place.
pub(super) fn encrypt(cipher: &QuicLbCipher, block: &mut [u8]) {
    let len = block.len();
    let (mut left, mut right) = split(block);
    round(cipher, len, 1, &left, &mut right, false);
    round(cipher, len, 2, &right, &mut left, true);
    round(cipher, len, 3, &left, &mut right, false);
    round(cipher, len, 4, &right, &mut left, true);
    join(&left, &right, block);
}

/// Decrypts `block` in place (all four passes: server ID and nonce).
pub(super) fn decrypt(cipher: &QuicLbCipher, block: &mut [u8]) {
    let len = block.len();
    let (mut left, mut right) = split(block);
    round(cipher, len, 4, &right, &mut left, true);
    round(cipher, len, 3, &left, &mut right, false);
    round(cipher, len, 2, &right, &mut left, true);
    round(cipher, len, 1, &left, &mut right, false);
    join(&left, &right, block);
}

/// The first `server_id.len()` octets of the decrypted `block`, in as few
/// passes as the draft allows: three when the server ID lies within the
/// left half (`server_id.len() <= len / 2`, i.e. the nonce is at least as
/// long), four otherwise. `block` is not modified.
pub(super) fn decrypt_server_id(cipher: &QuicLbCipher, block: &[u8], server_id: &mut [u8]) {
    let len = block.len();
    let (mut left, mut right) = split(block);
    round(cipher, len, 4, &right, &mut left, true);
    round(cipher, len, 3, &left, &mut right, false);
    round(cipher, len, 2, &right, &mut left, true);
    let sid_len = server_id.len();
    if sid_len <= len / 2 {
        server_id.copy_from_slice(&left[..sid_len]);
        return;
    }
    round(cipher, len, 1, &left, &mut right, false);
    let mut plain = [0u8; 19];
    join(&left, &right, &mut plain[..len]);
    server_id.copy_from_slice(&plain[..sid_len]);
}

/// Passes the load balancer runs to extract a server ID of `sid_len` octets
/// from a four-pass CID of `len` octets: 3 or 4.
pub(super) const fn lb_passes(len: usize, sid_len: usize) -> u8 {
    if sid_len <= len / 2 {
        3
    } else {
        4
    }
}
