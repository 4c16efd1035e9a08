//! Arbitrary bytes as a QUIC datagram and as a connection ID: never panics,
//! and encode -> decode round-trips.
#![no_main]

use flowpin_tcp_opt::quic::server_id_from_datagram;
use flowpin_tcp_opt::{decode_cid, encode_cid, CidLayout, ServerId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[short_len, sel, x, y], rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let _ = server_id_from_datagram(rest, usize::from(short_len % 24));
    let _ = decode_cid(rest);

    let layout = match sel % 4 {
        0 => CidLayout::KatranV1,
        1 => CidLayout::KatranV2,
        2 => CidLayout::KatranV3,
        _ => CidLayout::Flowpin,
    };
    let raw = u32::from_be_bytes([sel, x, y, short_len]) % layout.max_server_id();
    if let Some(id) = ServerId::new(raw) {
        let mut cid = rest.to_vec();
        if encode_cid(&mut cid, layout, id).is_ok() {
            assert_eq!(decode_cid(&cid), Ok(Some((layout, id))));
        }
    }
});
