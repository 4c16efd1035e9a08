//! Golden bytes: TCP headers captured from Linux, and Katran's own test
//! fixtures, so the layouts are pinned to real traffic and to Katran.

use flowpin_tcp_opt::{
    find_server_id, find_server_id_in_header, write_server_id, write_server_id_as, Error, Layout,
    Options, Sender, ServerId, ServerIdOption, ServerIdRepr, TcpHeader, TcpOption,
};

fn id(n: u32) -> ServerId {
    ServerId::new(n).expect("test ids are non-zero")
}

/// A SYN-ACK captured with AF_PACKET on loopback, Linux 6.18 (fresh network
/// namespace, `connect()` to a listener on 127.0.0.1:8443), TCP header only:
/// data offset 10 words; options MSS 65495, SACK permitted, timestamps
/// (TSval 0xdc7506d2, TSecr 0xa7650356), NOP, window scale 10.
const SYNACK_LINUX: [u8; 40] = [
    0x20, 0xfb, 0xb6, 0x8c, 0x65, 0x90, 0xbc, 0x4f, 0x92, 0x7e, 0x61, 0x75, 0xa0, 0x12, 0xff, 0xcb,
    0xfe, 0x30, 0x00, 0x00, // fixed header
    0x02, 0x04, 0xff, 0xd7, // MSS 65495
    0x04, 0x02, // SACK permitted
    0x08, 0x0a, 0xdc, 0x75, 0x06, 0xd2, 0xa7, 0x65, 0x03, 0x56, // timestamps
    0x01, // NOP
    0x03, 0x03, 0x0a, // window scale 10
];

/// The same SYN-ACK as a flowpin server sends it: the kernel puts the
/// sock_ops program's option (`bpf_store_hdr_opt`) after its own, so the
/// RFC 6994 option (ExID 0xF10E, server_id 42) is appended and the data
/// offset grows from 10 to 12 words. (Built from the capture above, the
/// checksum was not recomputed: the codec does not read it.)
const SYNACK_LINUX_RFC6994: [u8; 48] = [
    0x20, 0xfb, 0xb6, 0x8c, 0x65, 0x90, 0xbc, 0x4f, 0x92, 0x7e, 0x61, 0x75, 0xc0, 0x12, 0xff, 0xcb,
    0xfe, 0x30, 0x00, 0x00, // fixed header, data offset 12
    0x02, 0x04, 0xff, 0xd7, 0x04, 0x02, 0x08, 0x0a, 0xdc, 0x75, 0x06, 0xd2, 0xa7, 0x65, 0x03, 0x56,
    0x01, 0x03, 0x03, 0x0a, // the captured options
    0xfd, 0x08, 0xf1, 0x0e, 0x00, 0x00, 0x00, 0x2a, // kind 253, len 8, ExID, server_id 42
];

/// The client's ACK of the same handshake (captured), data offset 8:
/// NOP, NOP, timestamps.
const ACK_LINUX: [u8; 32] = [
    0xb6, 0x8c, 0x20, 0xfb, 0x92, 0x7e, 0x61, 0x75, 0x65, 0x90, 0xbc, 0x50, 0x80, 0x10, 0x00, 0x40,
    0xfe, 0x28, 0x00, 0x00, // fixed header
    0x01, 0x01, 0x08, 0x0a, 0xa7, 0x65, 0x03, 0x56, 0xdc, 0x75, 0x06, 0xd2,
];

/// That ACK echoing server_id 0x01020304 in the compact layout (kind 0xFD),
/// NOP-padded as `write_server_id` does; data offset 10.
const ACK_LINUX_COMPACT: [u8; 40] = [
    0xb6, 0x8c, 0x20, 0xfb, 0x92, 0x7e, 0x61, 0x75, 0x65, 0x90, 0xbc, 0x50, 0xa0, 0x10, 0x00, 0x40,
    0xfe, 0x28, 0x00, 0x00, // fixed header, data offset 10
    0x01, 0x01, 0x08, 0x0a, 0xa7, 0x65, 0x03, 0x56, 0xdc, 0x75, 0x06,
    0xd2, // captured options
    0x01, 0x01, 0xfd, 0x06, 0x01, 0x02, 0x03, 0x04, // NOP NOP kind len server_id
];

/// Katran's PacketBuilderTest `TcpWithTPROption` (katran/lib/testing/tools/
/// PacketBuilderTest.cpp): Ether/IPv4/TCP ACK with options
/// `(0xb7, '\x01\x04\x00\x00'), NOP, NOP` and payload "katran test pkt",
/// TPR id 1025; this is its base64 golden packet decoded.
const KATRAN_TPR_ACK_1025: [u8; 77] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08,
    0x00, // Ethernet
    0x45, 0x00, 0x00, 0x3f, 0x00, 0x01, 0x00, 0x00, 0x40, 0x06, 0xad, 0x46, 0xc0, 0xa8, 0x01, 0x01,
    0x0a, 0xc8, 0x01, 0x01, // IPv4 192.168.1.1 -> 10.200.1.1
    0x7a, 0x69, 0x00, 0x50, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x70, 0x10, 0x20, 0x00,
    0x4e, 0xd0, 0x00, 0x00, // TCP 31337 -> 80, ACK, data offset 7
    0xb7, 0x06, 0x01, 0x04, 0x00, 0x00, 0x01, 0x01, // TPR option, NOP, NOP
    b'k', b'a', b't', b'r', b'a', b'n', b' ', b't', b'e', b's', b't', b' ', b'p', b'k', b't',
];
/// Offset of the TCP header in the Katran packets (Ethernet 14 + IPv4 20).
const KATRAN_TCP_AT: usize = 34;

/// Katran's PacketBuilderTest `TcpWithTPROptionSYN`: the SYN of Katran's
/// TPR fixture 1, TPR id 0x13 (the TCP header and payload of its base64
/// golden packet).
const KATRAN_TPR_SYN_19_TCP: [u8; 43] = [
    0x7a, 0x69, 0x00, 0x50, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x70, 0x02, 0x20, 0x00,
    0x3c, 0xe2, 0x00, 0x00, // TCP SYN, data offset 7
    0xb7, 0x06, 0x13, 0x00, 0x00, 0x00, 0x01, 0x01, // TPR option (id 19), NOP, NOP
    b'k', b'a', b't', b'r', b'a', b'n', b' ', b't', b'e', b's', b't', b' ', b'p', b'k', b't',
];

const ALL_LAYOUTS: [Layout; 3] = [
    Layout::Rfc6994 { exid: 0xF10E },
    Layout::Compact { kind: 0xFD },
    Layout::KatranCompat,
];

#[test]
fn linux_synack_options_decode() {
    let header = TcpHeader::new_checked(&SYNACK_LINUX[..]).unwrap();
    assert_eq!(header.header_len(), 40);
    let options: Vec<_> = Options::new(header.options())
        .map(|o| o.unwrap().parse())
        .collect();
    assert_eq!(
        options,
        [
            TcpOption::MaxSegmentSize(65495),
            TcpOption::SackPermitted,
            TcpOption::Timestamp {
                tsval: 0xdc75_06d2,
                tsecr: 0xa765_0356
            },
            TcpOption::NoOperation,
            TcpOption::WindowScale(10),
        ]
    );
    for layout in ALL_LAYOUTS {
        assert_eq!(
            find_server_id_in_header(&SYNACK_LINUX, layout),
            Ok(None),
            "{layout:?}"
        );
    }
}

#[test]
fn linux_synack_with_rfc6994_option() {
    let layout = Layout::default();
    assert_eq!(
        find_server_id_in_header(&SYNACK_LINUX_RFC6994, layout),
        Ok(Some(id(42)))
    );
    // Only the matching layout sees it; another ExID does not.
    assert_eq!(
        find_server_id_in_header(&SYNACK_LINUX_RFC6994, Layout::Rfc6994 { exid: 0x1234 }),
        Ok(None)
    );
    assert_eq!(
        find_server_id_in_header(&SYNACK_LINUX_RFC6994, Layout::Compact { kind: 0xB0 }),
        Ok(None)
    );
    // A compact layout configured on the same kind sees a server_id option
    // of the wrong length: malformed, not skipped.
    assert_eq!(
        find_server_id_in_header(&SYNACK_LINUX_RFC6994, Layout::Compact { kind: 253 }),
        Err(Error::BadServerIdLength {
            offset: 20,
            kind: 253,
            len: 8,
            expected: 6
        })
    );
    assert_eq!(
        find_server_id_in_header(&SYNACK_LINUX_RFC6994, Layout::KatranCompat),
        Ok(None)
    );

    // Writing the option into the captured SYN-ACK gives the golden bytes.
    let mut built = [0u8; 48];
    built[..40].copy_from_slice(&SYNACK_LINUX);
    built[12] = (12 << 4) | (built[12] & 0x0f);
    assert_eq!(write_server_id(&mut built[40..], layout, id(42)), Ok(8));
    assert_eq!(built, SYNACK_LINUX_RFC6994);

    // The last option is the server_id option, seen through the view.
    let header = TcpHeader::new_checked(&SYNACK_LINUX_RFC6994[..]).unwrap();
    let option = Options::new(header.options()).last().unwrap().unwrap();
    assert_eq!(option.offset, 20);
    let view = ServerIdOption::new_checked(option.bytes, layout).unwrap();
    assert_eq!(
        (view.kind(), view.length(), view.exid()),
        (253, 8, Some(0xF10E))
    );
    assert_eq!(view.server_id(), Some(id(42)));
}

#[test]
fn linux_ack_with_compact_option() {
    let layout = Layout::Compact { kind: 0xFD };
    assert_eq!(find_server_id_in_header(&ACK_LINUX, layout), Ok(None));
    assert_eq!(
        find_server_id_in_header(&ACK_LINUX_COMPACT, layout),
        Ok(Some(id(0x0102_0304)))
    );
    let mut built = [0u8; 40];
    built[..32].copy_from_slice(&ACK_LINUX);
    built[12] = (10 << 4) | (built[12] & 0x0f);
    assert_eq!(
        write_server_id(&mut built[32..], layout, id(0x0102_0304)),
        Ok(8)
    );
    assert_eq!(built, ACK_LINUX_COMPACT);
}

#[test]
fn katran_tpr_fixture_ack_is_server_id_1025() {
    assert_eq!(KATRAN_TPR_ACK_1025[14], 0x45, "IPv4 without options");
    let tcp = &KATRAN_TPR_ACK_1025[KATRAN_TCP_AT..];
    assert_eq!(
        find_server_id_in_header(tcp, Layout::KatranCompat),
        Ok(Some(id(1025)))
    );
    // Host (little-endian) order: read as network order it would be wrong.
    assert_eq!(
        find_server_id_in_header(tcp, Layout::Compact { kind: 0xB7 }),
        Ok(Some(id(0x0104_0000)))
    );
    let view = ServerIdOption::new_checked(&tcp[20..26], Layout::KatranCompat).unwrap();
    assert_eq!(
        ServerIdRepr::parse(&view),
        Ok(Some(ServerIdRepr {
            layout: Layout::KatranCompat,
            sender: Sender::Client,
            server_id: id(1025)
        }))
    );
}

#[test]
fn katran_tpr_fixture_syn_is_server_id_19() {
    assert_eq!(
        find_server_id_in_header(&KATRAN_TPR_SYN_19_TCP, Layout::KatranCompat),
        Ok(Some(id(19)))
    );
}

#[test]
fn katran_write_matches_katran_bytes() {
    // Katran's struct tcp_opt { u8 kind; u8 len; u32 server_id; } stored
    // from a little-endian host, NOP-padded in front by us.
    let mut buf = [0u8; 8];
    assert_eq!(
        write_server_id(&mut buf, Layout::KatranCompat, id(1025)),
        Ok(8)
    );
    assert_eq!(buf, [0x01, 0x01, 0xb7, 0x06, 0x01, 0x04, 0x00, 0x00]);
    assert_eq!(
        &buf[2..],
        &KATRAN_TPR_ACK_1025[KATRAN_TCP_AT + 20..KATRAN_TCP_AT + 26]
    );
    // A Katran server's SYN-ACK uses kind 0xB6 (TCP_SRV_HDR_OPT_KIND).
    assert_eq!(
        write_server_id_as(&mut buf, Layout::KatranCompat, id(1025), Sender::Server),
        Ok(8)
    );
    assert_eq!(buf, [0x01, 0x01, 0xb6, 0x06, 0x01, 0x04, 0x00, 0x00]);
    assert_eq!(
        find_server_id(&buf, Layout::KatranCompat),
        Ok(Some(id(1025)))
    );
    let view = ServerIdOption::new_checked(&buf[2..], Layout::KatranCompat).unwrap();
    assert_eq!(
        ServerIdRepr::parse(&view).unwrap().unwrap().sender,
        Sender::Server
    );
}

#[test]
fn each_layout_writes_its_documented_bytes() {
    let sid = id(0xA1B2_C3D4);
    let cases: [(Layout, [u8; 8]); 4] = [
        (
            Layout::default(),
            [253, 8, 0xF1, 0x0E, 0xA1, 0xB2, 0xC3, 0xD4],
        ),
        (
            Layout::Rfc6994 { exid: 0xBEEF },
            [253, 8, 0xBE, 0xEF, 0xA1, 0xB2, 0xC3, 0xD4],
        ),
        (
            Layout::Compact { kind: 0xFD },
            [1, 1, 0xFD, 6, 0xA1, 0xB2, 0xC3, 0xD4],
        ),
        (
            Layout::KatranCompat,
            [1, 1, 0xB7, 6, 0xD4, 0xC3, 0xB2, 0xA1],
        ),
    ];
    for (layout, want) in cases {
        let mut buf = [0xEE; 10];
        assert_eq!(write_server_id(&mut buf, layout, sid), Ok(8), "{layout:?}");
        assert_eq!(buf[..8], want, "{layout:?}");
        assert_eq!(buf[8..], [0xEE, 0xEE], "{layout:?}: wrote past its length");
        assert_eq!(
            find_server_id(&buf[..8], layout),
            Ok(Some(sid)),
            "{layout:?}"
        );
    }
}

#[test]
fn rfc6994_accepts_kind_254() {
    let area = [254, 8, 0xF1, 0x0E, 0, 0, 1, 0];
    assert_eq!(find_server_id(&area, Layout::default()), Ok(Some(id(256))));
}

#[test]
fn write_errors_leave_the_buffer_alone() {
    let mut buf = [0xEE; 7];
    assert_eq!(
        write_server_id(&mut buf, Layout::default(), id(1)),
        Err(Error::BufferTooShort {
            needed: 8,
            available: 7
        })
    );
    assert_eq!(buf, [0xEE; 7]);
    let mut buf = [0xEE; 8];
    for kind in [0, 1] {
        assert_eq!(
            write_server_id(&mut buf, Layout::Compact { kind }, id(1)),
            Err(Error::ReservedKind { kind })
        );
        assert_eq!(buf, [0xEE; 8]);
    }
}

#[test]
fn server_id_zero_is_none() {
    assert_eq!(ServerId::new(0), None);
    assert_eq!(ServerId::new(7).map(ServerId::get), Some(7));
    assert_eq!(std::mem::size_of::<Option<ServerId>>(), 4);
    // One register wide (see the note on the error fields).
    assert_eq!(std::mem::size_of::<Result<Option<ServerId>, Error>>(), 8);
    // An option carrying 0 means "none" (Katran's client asks for a resend).
    assert_eq!(
        find_server_id(&[0xb7, 6, 0, 0, 0, 0], Layout::KatranCompat),
        Ok(None)
    );
}
