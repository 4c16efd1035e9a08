//! Every malformed options area, named with the bytes that make it so.

use flowpin_tcp_opt::{
    find_server_id, find_server_id_in_header, Error, Layout, Options, ServerId, ServerIdOption,
    TcpHeader, MAX_OPTION_WALK,
};

const RFC: Layout = Layout::Rfc6994 { exid: 0xF10E };

fn id(n: u32) -> Option<ServerId> {
    ServerId::new(n)
}

/// The RFC 6994 server_id option (ExID 0xF10E) carrying `n`.
fn ours(n: u32) -> [u8; 8] {
    let b = n.to_be_bytes();
    [253, 8, 0xF1, 0x0E, b[0], b[1], b[2], b[3]]
}

#[test]
fn empty_area_has_no_server_id() {
    assert_eq!(find_server_id(&[], RFC), Ok(None));
}

#[test]
fn truncated_option_without_length_byte() {
    // MSS kind as the last byte.
    assert_eq!(
        find_server_id(&[0x02], RFC),
        Err(Error::TruncatedOption { offset: 0, kind: 2 })
    );
    // Our kind after two NOPs, cut before its length.
    assert_eq!(
        find_server_id(&[0x01, 0x01, 0xFD], RFC),
        Err(Error::TruncatedOption {
            offset: 2,
            kind: 253
        })
    );
}

#[test]
fn option_length_zero() {
    // Timestamps with length 0 would loop forever in a naive walker.
    assert_eq!(
        find_server_id(&[0x08, 0x00, 0x00, 0x00], RFC),
        Err(Error::OptionLengthTooSmall {
            offset: 0,
            kind: 8,
            len: 0
        })
    );
}

#[test]
fn option_length_one() {
    assert_eq!(
        find_server_id(&[0x01, 0x03, 0x01, 0x00], RFC),
        Err(Error::OptionLengthTooSmall {
            offset: 1,
            kind: 3,
            len: 1
        })
    );
}

#[test]
fn option_length_past_the_end() {
    // MSS claiming 4 bytes with 3 left.
    assert_eq!(
        find_server_id(&[0x02, 0x04, 0x05], RFC),
        Err(Error::OptionPastEnd {
            offset: 0,
            kind: 2,
            len: 4,
            available: 3
        })
    );
    // Our own option cut after 6 of its 8 bytes.
    assert_eq!(
        find_server_id(&[0xFD, 0x08, 0xF1, 0x0E, 0x00, 0x00], RFC),
        Err(Error::OptionPastEnd {
            offset: 0,
            kind: 253,
            len: 8,
            available: 6
        })
    );
    // Length 255 in a 40-byte area.
    let mut area = [0u8; 40];
    area[0] = 0x1E;
    area[1] = 0xFF;
    assert_eq!(
        find_server_id(&area, RFC),
        Err(Error::OptionPastEnd {
            offset: 0,
            kind: 0x1E,
            len: 255,
            available: 40
        })
    );
}

#[test]
fn eol_in_the_middle_ends_the_list() {
    // NOP, EOL, then a valid server_id option: after EOL is padding.
    let mut area = vec![0x01, 0x00];
    area.extend_from_slice(&ours(9));
    assert_eq!(find_server_id(&area, RFC), Ok(None));
    // Garbage after EOL is never read as options.
    assert_eq!(find_server_id(&[0x00, 0xFF, 0x00], RFC), Ok(None));
    let walked: Vec<_> = Options::new(&[0x01, 0x00, 0x02, 0x00]).collect();
    assert_eq!(walked.len(), 2, "NOP and EOL, then nothing: {walked:?}");
}

#[test]
fn forty_nops_fill_a_whole_area() {
    let area = [0x01; 40];
    assert_eq!(find_server_id(&area, RFC), Ok(None));
    assert_eq!(Options::new(&area).count(), 40);
    assert!(Options::new(&area).all(|o| o.is_ok()));
}

#[test]
fn nops_then_server_id_within_the_walk_bound() {
    // 32 NOPs and the option: 33 steps, the whole 40-byte area.
    let mut area = vec![0x01; 32];
    area.extend_from_slice(&ours(77));
    assert_eq!(find_server_id(&area, RFC), Ok(id(77)));
}

#[test]
fn forty_one_nops_exceed_the_walk_bound() {
    // Longer than any real options area: the walk gives up where BPF does.
    let area = [0x01; 41];
    assert_eq!(
        find_server_id(&area, RFC),
        Err(Error::TooManyOptions {
            offset: MAX_OPTION_WALK as u16
        })
    );
    // Forty NOPs then our option: never reached.
    let mut area = vec![0x01; 40];
    area.extend_from_slice(&ours(5));
    assert_eq!(
        find_server_id(&area, RFC),
        Err(Error::TooManyOptions { offset: 40 })
    );
}

#[test]
fn duplicate_server_id_options_first_wins() {
    let mut area = ours(1).to_vec();
    area.extend_from_slice(&ours(2));
    assert_eq!(find_server_id(&area, RFC), Ok(id(1)));

    // A first option carrying 0 means "none"; the second is not consulted.
    let mut area = ours(0).to_vec();
    area.extend_from_slice(&ours(2));
    assert_eq!(find_server_id(&area, RFC), Ok(None));

    // Katran: the server kind 0xB6 before the client kind 0xB7.
    let area = [0xB6, 6, 3, 0, 0, 0, 0xB7, 6, 4, 0, 0, 0];
    assert_eq!(find_server_id(&area, Layout::KatranCompat), Ok(id(3)));
}

#[test]
fn duplicate_with_a_malformed_first_is_an_error() {
    // Our kind and ExID with length 6: the first match is malformed.
    let mut area = vec![0xFD, 0x06, 0xF1, 0x0E, 0x00, 0x01];
    area.extend_from_slice(&ours(2));
    assert_eq!(
        find_server_id(&area, RFC),
        Err(Error::BadServerIdLength {
            offset: 0,
            kind: 253,
            len: 6,
            expected: 8
        })
    );
    // Katran kind with length 8.
    assert_eq!(
        find_server_id(&[0xB7, 8, 1, 0, 0, 0, 0, 0], Layout::KatranCompat),
        Err(Error::BadServerIdLength {
            offset: 0,
            kind: 0xB7,
            len: 8,
            expected: 6
        })
    );
}

#[test]
fn other_experiments_are_data() {
    // Kind 253 with another ExID, then kind 254 too short for an ExID,
    // then ours.
    let mut area = vec![0xFD, 0x06, 0x12, 0x34, 0xAA, 0xBB, 0xFE, 0x02];
    area.extend_from_slice(&ours(6));
    assert_eq!(find_server_id(&area, RFC), Ok(id(6)));
    // Kind 253 of length 3: its single byte cannot be an ExID.
    let mut area = vec![0xFD, 0x03, 0xF1];
    area.extend_from_slice(&ours(7));
    assert_eq!(find_server_id(&area, RFC), Ok(id(7)));
}

#[test]
fn malformed_after_the_match_is_not_reached() {
    // The walk stops at the first match, like the BPF loop.
    let mut area = ours(8).to_vec();
    area.extend_from_slice(&[0x02, 0x00]);
    assert_eq!(find_server_id(&area, RFC), Ok(id(8)));
    // But before the match it is an error.
    let mut area = vec![0x02, 0x00];
    area.extend_from_slice(&ours(8));
    assert!(find_server_id(&area, RFC).is_err());
}

#[test]
fn tcp_header_truncated() {
    assert_eq!(
        find_server_id_in_header(&[0u8; 19], RFC),
        Err(Error::TruncatedHeader { len: 19 })
    );
    assert_eq!(
        find_server_id_in_header(&[], RFC),
        Err(Error::TruncatedHeader { len: 0 })
    );
}

#[test]
fn tcp_header_data_offset_below_five() {
    let mut tcp = [0u8; 20];
    tcp[12] = 4 << 4;
    assert_eq!(
        find_server_id_in_header(&tcp, RFC),
        Err(Error::BadDataOffset {
            data_offset: 4,
            len: 20
        })
    );
}

#[test]
fn tcp_header_data_offset_past_the_buffer() {
    // Data offset 15 (60 bytes) on a 28-byte buffer.
    let mut tcp = [0u8; 28];
    tcp[12] = 15 << 4;
    assert_eq!(
        find_server_id_in_header(&tcp, RFC),
        Err(Error::BadDataOffset {
            data_offset: 15,
            len: 28
        })
    );
}

#[test]
fn tcp_header_payload_is_not_options() {
    // Data offset 5: our option bytes in the payload must not be found.
    let mut segment = vec![0u8; 20];
    segment[12] = 5 << 4;
    segment.extend_from_slice(&ours(3));
    assert_eq!(find_server_id_in_header(&segment, RFC), Ok(None));
    assert_eq!(
        TcpHeader::new_checked(&segment[..]).unwrap().options(),
        &[] as &[u8]
    );
}

#[test]
fn views_on_short_or_foreign_buffers() {
    assert_eq!(
        ServerIdOption::new_checked(&[0xFD][..], RFC).unwrap_err(),
        Error::BufferTooShort {
            needed: 8,
            available: 1
        }
    );
    assert_eq!(
        ServerIdOption::new_checked(&[0x02, 0x04, 0x05, 0xB4][..], RFC).unwrap_err(),
        Error::NotServerIdOption { kind: 2 }
    );
    // Unchecked views never panic, even on an empty buffer.
    let empty = ServerIdOption::new_unchecked(&[][..], RFC);
    assert_eq!(
        (
            empty.kind(),
            empty.length(),
            empty.exid(),
            empty.server_id()
        ),
        (0, 0, None, None)
    );
    let mut short = [0u8; 3];
    let mut view = ServerIdOption::new_unchecked(&mut short[..], RFC);
    assert!(view.set_raw_server_id(1).is_err());
    assert_eq!(short, [0; 3]);
}

#[test]
fn every_error_says_what_to_do() {
    let message = find_server_id(&[0x08, 0x00], RFC).unwrap_err().to_string();
    assert!(message.contains("length 0"), "{message}");
    assert!(message.contains("no server_id"), "{message}");
}
