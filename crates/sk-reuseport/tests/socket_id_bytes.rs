//! The socket id a QUIC connection ID carries, against bytes written by
//! hand from the scheme in `sk_reuseport_select.h`:
//! `key = (generation % 8) * 64 + slot`, 2 bytes, big-endian.

use flowpin_sk_reuseport::{Generation, ReuseportGroup};

#[test]
fn socket_id_bytes_follow_the_documented_scheme() {
    let cases: [(u32, u32, [u8; 2]); 7] = [
        (1, 0, [0x00, 0x40]),   // generation 1 → index 1 → 64
        (1, 63, [0x00, 0x7f]),  // last slot of index 1
        (2, 5, [0x00, 0x85]),   // 128 + 5
        (7, 5, [0x01, 0xc5]),   // 7 * 64 + 5 = 453
        (8, 3, [0x00, 0x03]),   // generation 8 wraps to index 0
        (9, 63, [0x00, 0x7f]),  // generation 9 shares index 1 with generation 1
        (15, 63, [0x01, 0xff]), // 7 * 64 + 63 = 511, the largest key
    ];
    for (gen, slot, bytes) in cases {
        assert_eq!(
            ReuseportGroup::socket_id(Generation(gen), slot).to_be_bytes(),
            bytes,
            "generation {gen}, slot {slot}"
        );
    }
}
