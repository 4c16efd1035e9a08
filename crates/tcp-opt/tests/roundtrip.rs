//! Property tests: emit -> parse is the identity, emitting into existing
//! option areas and into arbitrary buffers, and parsing arbitrary bytes
//! never panics and agrees with the C pseudocode of the header.

use bytes::Buf;
use flowpin_tcp_opt::{
    find_server_id, find_server_id_buf, find_server_id_in_header, write_server_id,
    write_server_id_as, Layout, Options, Sender, ServerId, ServerIdOption, ServerIdRepr,
    MAX_OPTION_WALK,
};
use proptest::prelude::*;

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        Just(Layout::default()),
        any::<u16>().prop_map(|exid| Layout::Rfc6994 { exid }),
        (2u8..=255).prop_map(|kind| Layout::Compact { kind }),
        Just(Layout::KatranCompat),
    ]
}

fn server_id() -> impl Strategy<Value = ServerId> {
    (1u32..=u32::MAX).prop_map(|n| ServerId::new(n).expect("1..=MAX is non-zero"))
}

fn sender() -> impl Strategy<Value = Sender> {
    prop_oneof![Just(Sender::Client), Just(Sender::Server)]
}

/// A well-formed option that is not a server_id option of `layout`.
fn benign_option() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![1u8]),
        any::<u16>().prop_map(|mss| {
            let b = mss.to_be_bytes();
            vec![2, 4, b[0], b[1]]
        }),
        (0u8..15).prop_map(|s| vec![3, 3, s]),
        Just(vec![4, 2]),
        (any::<u32>(), any::<u32>()).prop_map(|(a, b)| {
            let mut v = vec![8, 10];
            v.extend_from_slice(&a.to_be_bytes());
            v.extend_from_slice(&b.to_be_bytes());
            v
        }),
        (5u8..=252, prop::collection::vec(any::<u8>(), 0..8)).prop_map(|(kind, data)| {
            let mut v = vec![kind, data.len() as u8 + 2];
            v.extend(data);
            v
        }),
    ]
}

fn is_server_id_kind(layout: Layout, option: &[u8]) -> bool {
    match layout {
        Layout::Rfc6994 { .. } => matches!(option[0], 253 | 254),
        Layout::Compact { kind } => option[0] == kind,
        Layout::KatranCompat => matches!(option[0], 0xB6 | 0xB7),
    }
}

/// Option-shaped noise: real options, our options, NOP/EOL, bad lengths
/// and raw bytes, so random areas hit every branch of the walk.
fn noisy_area() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        3 => benign_option(),
        2 => (layout(), any::<u32>()).prop_map(|(l, n)| {
            let mut b = [0u8; 8];
            match ServerId::new(n) {
                Some(id) => { write_server_id(&mut b, l, id).expect("8 bytes fit"); b.to_vec() }
                None => vec![253, 8, 0xF1, 0x0E, 0, 0, 0, 0],
            }
        }),
        1 => Just(vec![0u8]),
        1 => (any::<u8>(), 0u8..3).prop_map(|(k, l)| vec![k, l]),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(k, l)| vec![k, l]),
        2 => prop::collection::vec(any::<u8>(), 0..6),
    ];
    prop::collection::vec(token, 0..12).prop_map(|t| t.concat())
}

/// The walk exactly as the C header spells it, written independently of the
/// crate: Some(Some(id)) found, Some(None) none, None malformed.
fn reference_walk(opt: &[u8], layout: Layout) -> Option<Option<u32>> {
    let len = opt.len();
    let mut off = 0usize;
    for _ in 0..MAX_OPTION_WALK {
        if off >= len {
            return Some(None);
        }
        let kind = opt[off];
        if kind == 0 {
            return Some(None);
        }
        if kind == 1 {
            off += 1;
            continue;
        }
        if off + 1 >= len {
            return None;
        }
        let olen = opt[off + 1] as usize;
        if olen < 2 || off + olen > len {
            return None;
        }
        let o = &opt[off..off + olen];
        let (is_ours, expected, id_at, le) = match layout {
            Layout::Rfc6994 { exid } => (
                (kind == 253 || kind == 254)
                    && olen >= 4
                    && u16::from_be_bytes([o[2], o[3]]) == exid,
                8,
                4,
                false,
            ),
            Layout::Compact { kind: k } => (kind == k, 6, 2, false),
            Layout::KatranCompat => (kind == 0xB6 || kind == 0xB7, 6, 2, true),
        };
        if is_ours {
            if olen != expected {
                return None;
            }
            let b = [o[id_at], o[id_at + 1], o[id_at + 2], o[id_at + 3]];
            let id = if le {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            };
            return Some(if id == 0 { None } else { Some(id) });
        }
        off += olen;
    }
    if off >= len {
        Some(None)
    } else {
        None
    }
}

/// The same question answered with the public building blocks: the
/// [`Options`] iterator and the checked [`ServerIdOption`] view.
fn walk_with_iterator(area: &[u8], layout: Layout) -> Option<Option<u32>> {
    for item in Options::new(area) {
        let option = item.ok()?;
        if option.bytes.len() < 2 {
            continue; // NOP or EOL (EOL ends the iterator)
        }
        match ServerIdOption::new_checked(option.bytes, layout) {
            Ok(view) => return Some(ServerId::new(view.raw_server_id()).map(ServerId::get)),
            Err(flowpin_tcp_opt::Error::NotServerIdOption { .. }) => continue,
            Err(_) => return None,
        }
    }
    Some(None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn emit_then_parse_is_identity(layout in layout(), id in server_id(), sender in sender()) {
        let mut buf = [0u8; 8];
        let n = write_server_id_as(&mut buf, layout, id, sender).unwrap();
        prop_assert_eq!(n, layout.aligned_len());
        prop_assert_eq!(n % 4, 0);
        prop_assert_eq!(find_server_id(&buf[..n], layout), Ok(Some(id)));
        let start = n - layout.option_len();
        prop_assert!(buf[..start].iter().all(|&b| b == 1), "padding is NOPs");
        let view = ServerIdOption::new_checked(&buf[start..n], layout).unwrap();
        let want_sender = if layout == Layout::KatranCompat { sender } else { Sender::Client };
        prop_assert_eq!(
            ServerIdRepr::parse(&view),
            Ok(Some(ServerIdRepr { layout, sender: want_sender, server_id: id }))
        );
        // The BufMut encoding is the same bytes.
        let mut out = Vec::new();
        let repr = ServerIdRepr { layout, sender, server_id: id };
        prop_assert_eq!(repr.encode(&mut out), Ok(n));
        prop_assert_eq!(&out[..], &buf[..]);
        prop_assert_eq!(ServerIdRepr::decode(&mut &out[..], layout), Ok(Some(ServerIdRepr { sender: want_sender, ..repr })));
    }

    #[test]
    fn emit_into_an_existing_options_area(
        layout in layout(),
        id in server_id(),
        others in prop::collection::vec(benign_option(), 0..8),
    ) {
        let others: Vec<Vec<u8>> = others.into_iter().filter(|o| !is_server_id_kind(layout, o)).collect();
        let mut area: Vec<u8> = others.concat();
        while !area.len().is_multiple_of(4) {
            area.push(1);
        }
        let prefix_len = area.len();
        prop_assume!(prefix_len + layout.aligned_len() <= 40);
        area.resize(40, 0xEE);
        let n = write_server_id(&mut area[prefix_len..], layout, id).unwrap();
        area.truncate(prefix_len + n);
        prop_assert_eq!(area.len() % 4, 0);
        prop_assert_eq!(find_server_id(&area, layout), Ok(Some(id)));

        // The options before ours are untouched and still walk the same.
        let walked: Vec<_> = Options::new(&area).map(|o| o.unwrap().bytes.to_vec()).collect();
        let nops = layout.aligned_len() - layout.option_len();
        let mut want: Vec<Vec<u8>> = others.clone();
        want.extend(std::iter::repeat_n(vec![1u8], prefix_len - others.concat().len() + nops));
        want.push(area[area.len() - layout.option_len()..].to_vec());
        prop_assert_eq!(walked, want);

        // And inside a whole TCP header.
        let mut tcp = vec![0u8; 20];
        tcp[12] = (((20 + area.len()) / 4) as u8) << 4;
        tcp.extend_from_slice(&area);
        tcp.extend_from_slice(b"payload");
        prop_assert_eq!(find_server_id_in_header(&tcp, layout), Ok(Some(id)));
    }

    #[test]
    fn emit_into_arbitrary_buffers_touches_only_its_bytes(
        layout in layout(),
        id in server_id(),
        buf in prop::collection::vec(any::<u8>(), 0..48),
        at in 0usize..48,
    ) {
        let at = at.min(buf.len());
        let mut out = buf.clone();
        match write_server_id(&mut out[at..], layout, id) {
            Ok(n) => {
                prop_assert_eq!(&out[..at], &buf[..at]);
                prop_assert_eq!(&out[at + n..], &buf[at + n..]);
                prop_assert_eq!(find_server_id(&out[at..at + n], layout), Ok(Some(id)));
            }
            Err(_) => {
                prop_assert!(buf.len() - at < layout.aligned_len());
                prop_assert_eq!(out, buf);
            }
        }
    }

    #[test]
    fn parse_of_noise_agrees_with_the_c_walk(area in noisy_area(), layout in layout()) {
        let ours = find_server_id(&area, layout);
        let reference = reference_walk(&area, layout);
        match (&ours, reference) {
            (Ok(found), Some(want)) => prop_assert_eq!(found.map(ServerId::get), want),
            (Err(_), None) => {}
            _ => prop_assert!(false, "crate {:?} vs C walk {:?} on {:02x?}", ours, reference, area),
        }
        prop_assert_eq!(walk_with_iterator(&area, layout), reference, "iterator on {:02x?}", area);
    }

    /// Areas that start like every established Linux segment (NOP, NOP,
    /// timestamps) take the crate's fast path: it must agree with the walk,
    /// also for layouts whose own kind is 8 or 1.
    #[test]
    fn timestamp_prefix_agrees_with_the_c_walk(
        ts in prop::array::uniform8(any::<u8>()),
        rest in noisy_area(),
        layout in prop_oneof![
            layout(),
            Just(Layout::Compact { kind: 8 }),
            Just(Layout::Compact { kind: 10 }),
        ],
    ) {
        let mut area = vec![1u8, 1, 8, 10];
        area.extend_from_slice(&ts);
        area.extend_from_slice(&rest);
        let ours = find_server_id(&area, layout);
        let reference = reference_walk(&area, layout);
        match (&ours, reference) {
            (Ok(found), Some(want)) => prop_assert_eq!(found.map(ServerId::get), want),
            (Err(_), None) => {}
            _ => prop_assert!(false, "crate {:?} vs C walk {:?} on {:02x?}", ours, reference, area),
        }
    }

    #[test]
    fn parse_of_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..96), layout in layout()) {
        let found = find_server_id(&bytes, layout);
        let reference = reference_walk(&bytes, layout);
        prop_assert_eq!(found.is_ok(), reference.is_some());
        let _ = find_server_id_in_header(&bytes, layout);
        let walked: Vec<_> = Options::new(&bytes).collect();
        prop_assert!(walked.len() <= MAX_OPTION_WALK + 1);
        let mut end = 0;
        for o in walked.iter().flatten() {
            prop_assert_eq!(o.offset, end);
            end += o.bytes.len();
            let _ = o.parse();
        }
        prop_assert!(end <= bytes.len());
        // The Buf form agrees, contiguous or split in two chunks.
        let split = bytes.len() / 3;
        let mut chained = (&bytes[..split]).chain(&bytes[split..]);
        prop_assert_eq!(find_server_id_buf(&mut chained, layout), found);
        prop_assert_eq!(chained.remaining(), 0);
        prop_assert_eq!(find_server_id_buf(&mut &bytes[..], layout), found);
    }

    #[test]
    fn header_and_options_area_agree(
        area in noisy_area(),
        doff_extra in 0usize..4,
        layout in layout(),
        payload in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut area = area;
        area.truncate(40);
        while area.len() % 4 != 0 {
            area.push(0);
        }
        let mut tcp = vec![0u8; 20];
        tcp[12] = (((20 + area.len()) / 4) as u8) << 4 | (doff_extra as u8);
        tcp.extend_from_slice(&area);
        tcp.extend_from_slice(&payload);
        prop_assert_eq!(find_server_id_in_header(&tcp, layout), find_server_id(&area, layout));
    }
}
