//! Finding the server_id in a TCP options area: `flowpin::tcp_opt` against a
//! naive byte loop, in the same run, on realistic options areas.
//!
//! Run: `cargo bench --bench tcp_opt` (criterion prints the time per call,
//! i.e. ns per packet).
//!
//! Inputs (options areas, the bytes after the fixed 20-byte TCP header):
//! - `synack`: a Linux 6.18 SYN-ACK captured on loopback (MSS, SACK-perm,
//!   timestamps, NOP, wscale) with the RFC 6994 server_id option appended
//!   last, as the kernel places a sock_ops option: the worst realistic walk.
//! - `ack`: the client's ACK (NOP, NOP, timestamps) echoing the option.
//! - `ack_no_option`: the same ACK without it (a non-flowpin client): the
//!   load balancer's miss path.
//! - `katran_ack`: Katran's TPR test packet options (KatranCompat).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowpin::tcp_opt::{find_server_id, Layout, ServerId};

const SYNACK: [u8; 28] = [
    0x02, 0x04, 0xff, 0xd7, 0x04, 0x02, 0x08, 0x0a, 0xdc, 0x75, 0x06, 0xd2, 0xa7, 0x65, 0x03, 0x56,
    0x01, 0x03, 0x03, 0x0a, 0xfd, 0x08, 0xf1, 0x0e, 0x00, 0x00, 0x00, 0x2a,
];
const ACK: [u8; 20] = [
    0x01, 0x01, 0x08, 0x0a, 0xa7, 0x65, 0x03, 0x56, 0xdc, 0x75, 0x06, 0xd2, 0xfd, 0x08, 0xf1, 0x0e,
    0x00, 0x00, 0x00, 0x2a,
];
const ACK_NO_OPTION: [u8; 12] = [
    0x01, 0x01, 0x08, 0x0a, 0xa7, 0x65, 0x03, 0x56, 0xdc, 0x75, 0x06, 0xd2,
];
const KATRAN_ACK: [u8; 8] = [0xb7, 0x06, 0x01, 0x04, 0x00, 0x00, 0x01, 0x01];

/// The baseline: the byte loop one writes first, indexing the slice
/// directly (bounds-checked, same semantics as the crate for well-formed
/// input: EOL stops, NOP skips, bad lengths give up, first match wins).
fn naive_find(opts: &[u8], layout: Layout) -> Option<u32> {
    let mut i = 0;
    while i < opts.len() {
        let kind = opts[i];
        if kind == 0 {
            return None;
        }
        if kind == 1 {
            i += 1;
            continue;
        }
        if i + 1 >= opts.len() {
            return None;
        }
        let len = opts[i + 1] as usize;
        if len < 2 || i + len > opts.len() {
            return None;
        }
        let o = &opts[i..i + len];
        match layout {
            Layout::Rfc6994 { exid } => {
                if (kind == 253 || kind == 254)
                    && len == 8
                    && u16::from_be_bytes([o[2], o[3]]) == exid
                {
                    return Some(u32::from_be_bytes([o[4], o[5], o[6], o[7]]));
                }
            }
            Layout::Compact { kind: k } => {
                if kind == k && len == 6 {
                    return Some(u32::from_be_bytes([o[2], o[3], o[4], o[5]]));
                }
            }
            Layout::KatranCompat => {
                if (kind == 0xb6 || kind == 0xb7) && len == 6 {
                    return Some(u32::from_le_bytes([o[2], o[3], o[4], o[5]]));
                }
            }
        }
        i += len;
    }
    None
}

fn bench_find(c: &mut Criterion) {
    let cases: [(&str, &[u8], Layout, Option<u32>); 4] = [
        ("synack", &SYNACK, Layout::default(), Some(42)),
        ("ack", &ACK, Layout::default(), Some(42)),
        ("ack_no_option", &ACK_NO_OPTION, Layout::default(), None),
        ("katran_ack", &KATRAN_ACK, Layout::KatranCompat, Some(1025)),
    ];
    let mut group = c.benchmark_group("tcp_opt_find_server_id");
    group.throughput(Throughput::Elements(1));
    for (name, area, layout, want) in cases {
        // Both must agree before their speed means anything.
        assert_eq!(
            find_server_id(area, layout).map(|id| id.map(ServerId::get)),
            Ok(want)
        );
        assert_eq!(naive_find(area, layout), want);
        // The layout is configuration: opaque to the optimiser, but loaded
        // once, not re-stored every iteration (a byte store then a wider
        // load of the same enum stalls store forwarding and would measure
        // the harness, not the parser).
        let layout = black_box(layout);
        group.bench_with_input(BenchmarkId::new("flowpin", name), &area, |b, area| {
            b.iter(|| find_server_id(black_box(area), layout))
        });
        group.bench_with_input(
            BenchmarkId::new("naive_byte_loop", name),
            &area,
            |b, area| b.iter(|| naive_find(black_box(area), layout)),
        );
    }
    group.finish();
}

criterion_group!(benches, bench_find);
criterion_main!(benches);
