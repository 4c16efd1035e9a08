//! Arbitrary bytes as a TCP options area and as a whole TCP header: never
//! panics, and the walker, the finder and the writer agree.
#![no_main]

use flowpin_tcp_opt::{
    find_server_id, find_server_id_in_header, write_server_id, Layout, Options, ServerId,
    MAX_OPTION_WALK,
};
use libfuzzer_sys::fuzz_target;

fn layout(selector: u8, a: u8, b: u8) -> Layout {
    match selector % 4 {
        0 => Layout::default(),
        1 => Layout::Rfc6994 {
            exid: u16::from_be_bytes([a, b]),
        },
        2 => Layout::Compact { kind: a },
        _ => Layout::KatranCompat,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&[sel, a, b], rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    let layout = layout(sel, a, b);

    let found = find_server_id(rest, layout);
    let _ = find_server_id_in_header(rest, layout);

    // The walker never yields more than the bound (+ one error) and its
    // options tile the area from offset 0.
    let mut end = 0;
    let mut count = 0;
    for item in Options::new(rest) {
        count += 1;
        if let Ok(option) = item {
            assert_eq!(option.offset, end);
            end += option.bytes.len();
            let _ = option.parse();
        }
    }
    assert!(count <= MAX_OPTION_WALK + 1);
    assert!(end <= rest.len());

    // Writing our option in front of the area makes it the one found
    // (first wins), whatever follows.
    if let Some(id) = ServerId::new(u32::from_be_bytes([sel, a, b, 0x5A])) {
        let mut area = vec![0u8; layout.aligned_len()];
        if write_server_id(&mut area, layout, id).is_ok() {
            area.extend_from_slice(rest);
            assert_eq!(find_server_id(&area, layout), Ok(Some(id)));
        }
    }
    let _ = found;
});
