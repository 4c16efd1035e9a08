//! Headers built by etherparse (the project's packet builder) carry our
//! option where the kernel would put it, and we find it there.

use etherparse::{PacketBuilder, SlicedPacket, TcpHeader, TcpOptionElement, TransportSlice};
use flowpin_tcp_opt::{
    find_server_id, find_server_id_in_header, write_server_id, Layout, ServerId,
};

#[test]
fn synack_built_by_etherparse_carries_the_option() {
    let sid = ServerId::new(0x00C0_FFEE).expect("non-zero");
    let layout = Layout::default();

    // The Linux SYN-ACK option set (MSS, SACK-perm, timestamps, NOP, wscale).
    let mut tcp = TcpHeader::new(8443, 47756, 0x6590_bc4f, 65483);
    tcp.syn = true;
    tcp.ack = true;
    tcp.acknowledgment_number = 0x927e_6175;
    tcp.set_options(&[
        TcpOptionElement::MaximumSegmentSize(65495),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::Timestamp(0xdc75_06d2, 0xa765_0356),
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(10),
    ])
    .expect("fits in 40 bytes");
    let standard = tcp.options.as_slice().to_vec();
    assert_eq!(find_server_id(&standard, layout), Ok(None));

    // Append ours after the kernel's options, as bpf_store_hdr_opt does.
    let mut options = standard.clone();
    let at = options.len();
    options.resize(at + layout.aligned_len(), 0);
    write_server_id(&mut options[at..], layout, sid).expect("room for 8 bytes");
    tcp.set_options_raw(&options).expect("fits in 40 bytes");

    // Through a whole packet and back.
    let builder = PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])
        .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
        .tcp_header(tcp);
    let payload = b"hello";
    let mut packet = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut packet, payload).expect("serialize");

    let sliced = SlicedPacket::from_ethernet(&packet).expect("parse");
    let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
        panic!("no TCP in {sliced:?}");
    };
    assert_eq!(tcp.options(), &options[..]);
    assert_eq!(find_server_id(tcp.options(), layout), Ok(Some(sid)));
    assert_eq!(find_server_id_in_header(tcp.slice(), layout), Ok(Some(sid)));
    assert_eq!(tcp.payload(), payload);
}
