//! Privileged: checks of `xdp_lb` whose expected values come from outside
//! the program and its model: the kernel's ring map against
//! `Maglev::diff`, the connection table's placement and eviction order
//! (two sets per flow, probation first) derived by hand,
//! and output bytes (VLAN tag, outer IPv4 header, ICMP quote) compared with
//! what the headers must say, read with etherparse and a hand-written
//! Internet checksum.
#![allow(clippy::unwrap_used)] // tests may unwrap (clippy.toml covers #[test] fns only)

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use etherparse::{Ipv4HeaderSlice, PacketBuilder};
use flowpin_bpf_progs::flow_hash::{flow_hash, flow_hash2, FiveTuple};
use flowpin_bpf_progs::xdp_lb::{Backend, Proto, Vip, VipFlags, XdpLb, XdpLbConfig, XdpVerdict};
use flowpin_maglev::Maglev;
use flowpin_testing::require_bpf;
use libbpf_rs::query::{ProgInfoIter, ProgInfoQueryOptions};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const LOCAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const TUN_PREFIX: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 0);

fn config() -> XdpLbConfig {
    XdpLbConfig::default()
        .lru_memory_bytes(1 << 20)
        .local_mac(LOCAL_MAC)
        .next_hop_mac(NEXT_HOP_MAC)
        .tunnel_src_v4((TUN_PREFIX, 16))
}

fn pin_cpu0() {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

fn vip() -> Vip {
    Vip::new(VIP.into(), 80, Proto::Tcp)
}

fn backend(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1, 0, i))
}

fn backends(ids: &[u8]) -> Vec<Backend> {
    ids.iter().map(|&i| Backend::new(backend(i))).collect()
}

/// The Maglev table the ring must hold, built here from the key contract
/// (`IpAddr::to_string()`, weight as given).
fn maglev(b: &[Backend], m: u32) -> Maglev {
    let keys: Vec<(String, u32)> = b.iter().map(|b| (b.addr.to_string(), b.weight)).collect();
    Maglev::build_weighted(&keys, m).unwrap()
}

/// The kernel's `ring` map of this program, found through the program's
/// map ids (other processes may load programs with a map of the same name).
fn ring_map(lb: &XdpLb) -> MapHandle {
    // SAFETY: an all-zero bpf_prog_info is valid; the kernel fills it.
    let mut info: libbpf_rs::libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: a valid program fd, a pointer to our struct and its length;
    // no pointer fields are set, so the kernel writes only into `info`.
    let r = unsafe {
        libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(
            lb.program_fd().as_raw_fd(),
            &mut info,
            &mut len,
        )
    };
    assert_eq!(r, 0, "bpf_prog_get_info_by_fd");
    let opts = ProgInfoQueryOptions::default().include_map_ids(true);
    let prog = ProgInfoIter::with_query_opts(opts)
        .find(|p| p.id == info.id)
        .expect("our program in the kernel's list");
    prog.map_ids
        .iter()
        .filter_map(|&id| MapHandle::from_map_id(id).ok())
        .find(|m| m.name() == "ring")
        .expect("a map named ring among the program's maps")
}

/// The kernel's ring of `vip_id`, slot by slot.
fn kernel_ring(map: &MapHandle, vip_id: u32, m: u32) -> Vec<u32> {
    (0..m)
        .map(|s| {
            let k = (vip_id * m + s).to_le_bytes();
            let v = map.lookup(&k, MapFlags::ANY).unwrap().unwrap();
            u32::from_le_bytes(v[..4].try_into().unwrap())
        })
        .collect()
}

/// The kernel ring holds `t`: slots share a value exactly when `t` gives
/// them the same backend (the values are the program's backend ids, whose
/// numbering is the library's business).
fn assert_ring_is(ring: &[u32], t: &Maglev) {
    let mut id_of: HashMap<u32, u32> = HashMap::new();
    let mut backend_of: HashMap<u32, u32> = HashMap::new();
    for (s, (&k, &b)) in ring.iter().zip(t.ring()).enumerate() {
        assert_ne!(k, 0, "slot {s} holds no backend");
        assert_eq!(*id_of.entry(b).or_insert(k), k, "slot {s}: backend {b}");
        assert_eq!(*backend_of.entry(k).or_insert(b), b, "slot {s}: id {k}");
    }
}

#[test]
fn privileged_set_backends_writes_exactly_the_maglev_diff() {
    if !require_bpf("privileged_set_backends_writes_exactly_the_maglev_diff") {
        return;
    }
    let mut lb = XdpLb::load(config()).unwrap();
    let m = lb.config().ring_size;
    lb.add_vip(vip(), VipFlags::NONE).unwrap();
    let id = lb.vip_id(&vip()).unwrap();
    let map = ring_map(&lb);
    let steps: [&[u8]; 5] = [
        &[1, 2, 3, 4],
        &[1, 2, 3, 4, 5],
        &[1, 2, 4, 5],
        &[1, 2, 4, 5],
        &[5, 4, 2, 1],
    ];
    let first = backends(steps[0]);
    lb.set_backends(&vip(), &first).unwrap();
    let mut before = kernel_ring(&map, id, m);
    let mut table = maglev(&first, m);
    assert_ring_is(&before, &table);
    for ids in &steps[1..] {
        let b = backends(ids);
        let upd = lb.set_backends(&vip(), &b).unwrap();
        let after = kernel_ring(&map, id, m);
        let next = maglev(&b, m);
        assert_ring_is(&after, &next);
        let diff = Maglev::diff(&table, &next).unwrap();
        let want: BTreeSet<u32> = diff.changes.iter().map(|c| c.slot).collect();
        let got: BTreeSet<u32> = (0..m)
            .filter(|&s| before[s as usize] != after[s as usize])
            .collect();
        assert_eq!(got, want, "{ids:?}: the slots that changed in the kernel");
        assert_eq!(
            upd.slots_changed as usize,
            want.len(),
            "{ids:?}: slots written vs Maglev::diff"
        );
        before = after;
        table = next;
    }
    // The last two steps are the same set (in another order): nothing written.
    let upd = lb.set_backends(&vip(), &backends(&[1, 2, 4, 5])).unwrap();
    assert_eq!(
        (upd.slots_changed, upd.backends_added, upd.backends_removed),
        (0, 0, 0)
    );
    assert_eq!(kernel_ring(&map, id, m), before);
}

fn tcp_frame(src: Ipv4Addr, sport: u16, syn: bool, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src.octets(), VIP.octets(), 64)
        .tcp(sport, 80, 1, 64000);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn tuple(src: Ipv4Addr, sport: u16) -> FiveTuple {
    FiveTuple {
        src: IpAddr::V4(src),
        dst: IpAddr::V4(VIP),
        sport,
        dport: 80,
        proto: 6,
    }
}

#[test]
fn privileged_connection_table_uses_two_sets_and_evicts_probation_first() {
    if !require_bpf("privileged_connection_table_uses_two_sets_and_evicts_probation_first") {
        return;
    }
    pin_cpu0(); // the table is per CPU
                // A small table (16 sets per CPU, or what the 4 KiB minimum gives):
                // flows sharing both candidate sets are easy to find.
    let ncpus = libbpf_rs::num_possible_cpus().unwrap() as u64;
    let want = (4096 / (64 * ncpus)).next_power_of_two().max(16);
    let mut lb = XdpLb::load(config().lru_memory_bytes(64 * want * ncpus)).unwrap();
    lb.add_vip(vip(), VipFlags::NONE).unwrap();
    lb.set_backends(&vip(), &backends(&[1, 2, 3])).unwrap();
    let sets = lb.conn_sets_per_cpu();
    assert_eq!(u64::from(sets), want);
    // Ten flows whose set A (flow hash) is `a` and set B (second hash) is
    // `b != a`: together they have 8 ways, and every resident's other set
    // is the other of the two, so nothing can move elsewhere.
    let src = |i: u32| Ipv4Addr::from(0x0a00_0000 | i);
    let sets_of = |a: Ipv4Addr| {
        let t = tuple(a, 1000);
        (flow_hash(&t) & (sets - 1), flow_hash2(&t) & (sets - 1))
    };
    let (a, b) = (0..)
        .map(|i| sets_of(src(i)))
        .find(|(a, b)| a != b)
        .unwrap();
    let f: Vec<Ipv4Addr> = (0..)
        .map(src)
        .filter(|&x| sets_of(x) == (a, b))
        .take(10)
        .collect();
    let run = |lb: &XdpLb, a: Ipv4Addr, syn: bool| {
        let r = lb.test_run(&tcp_frame(a, 1000, syn, b"x")).unwrap();
        assert_eq!(r.verdict, XdpVerdict::Tx, "{a}");
    };
    let hits = |lb: &XdpLb| {
        let s = lb.vip_stats(&vip()).unwrap();
        (s.lru_hit, s.lru_miss)
    };
    let found = |lb: &XdpLb, x: Ipv4Addr| {
        let h = hits(lb);
        run(lb, x, false);
        let h2 = hits(lb);
        assert_eq!(h2.0 + h2.1, h.0 + h.1 + 1);
        h2.0 == h.0 + 1
    };
    // SYNs of f0..f7: f0..f3 fill set A, f4..f7 go to set B (all on
    // probation). The client's ACK confirms f0..f5; f6, f7 stay on probation.
    for &x in &f[..8] {
        run(&lb, x, true);
    }
    for &x in &f[..6] {
        assert!(found(&lb, x), "{x} is in one of its sets");
    }
    let g = lb.global_stats().unwrap();
    assert_eq!((g.new_flows, g.confirmations), (8, 6), "{g:?}");
    // f8: both sets full, nothing can move; the oldest probation entry
    // (f6: B's order is f5 f4 f7 f6) is evicted, no confirmed one.
    run(&lb, f[8], true);
    let g = lb.global_stats().unwrap();
    assert_eq!(
        (g.probation_evictions, g.confirmed_evictions),
        (1, 0),
        "{g:?}"
    );
    for &x in f[..6].iter().chain([&f[7], &f[8]]) {
        assert!(found(&lb, x), "{x} must still be in the table");
    }
    // f6 is gone; its ACK misses and re-inserts it. All 8 residents are now
    // confirmed: the least recently used way of set A (f0) is evicted.
    assert!(!found(&lb, f[6]), "f6 must have been evicted");
    let g = lb.global_stats().unwrap();
    assert_eq!(
        (g.probation_evictions, g.confirmed_evictions),
        (1, 1),
        "{g:?}"
    );
    assert!(
        !found(&lb, f[0]),
        "f0 (LRU of set A) must have been evicted"
    );
}

/// RFC 1071 Internet checksum, written here rather than borrowed.
fn inet_checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn privileged_vlan_tag_and_outer_ipv4_header_from_the_inner_packet() {
    if !require_bpf("privileged_vlan_tag_and_outer_ipv4_header_from_the_inner_packet") {
        return;
    }
    let mut lb = XdpLb::load(config()).unwrap();
    lb.add_vip(vip(), VipFlags::NONE).unwrap();
    let bs = backends(&[1, 2, 3, 4]);
    lb.set_backends(&vip(), &bs).unwrap();
    let table = maglev(&bs, lb.config().ring_size);
    let client = Ipv4Addr::new(198, 51, 100, 23);
    for (tci, tos, ttl, df) in [(0x2123u16, 0xb8u8, 37u8, true), (0xe00f, 0x02, 250, false)] {
        // Untagged frame, then the 802.1Q tag and the IP fields put in by hand.
        let mut f = tcp_frame(client, 4242, true, b"payload");
        f[15] = tos;
        f[22] = ttl;
        f[20] = if df { 0x40 } else { 0 };
        f[21] = 0;
        f[24..26].copy_from_slice(&[0, 0]);
        let c = inet_checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let inner_ip = f[14..].to_vec();
        let mut frame = f[..12].to_vec();
        frame.extend_from_slice(&0x8100u16.to_be_bytes());
        frame.extend_from_slice(&tci.to_be_bytes());
        frame.extend_from_slice(&f[12..]);

        let r = lb.test_run(&frame).unwrap();
        assert_eq!(r.verdict, XdpVerdict::Tx);
        let o = &r.packet;
        assert_eq!(o[..6], NEXT_HOP_MAC, "destination MAC: the next hop");
        assert_eq!(o[6..12], LOCAL_MAC, "source MAC: the LB");
        assert_eq!(o[12..14], [0x81, 0x00], "still 802.1Q");
        assert_eq!(
            u16::from_be_bytes([o[14], o[15]]),
            tci,
            "TCI (PCP, DEI, VID) kept"
        );
        assert_eq!(o[16..18], [0x08, 0x00], "outer IPv4 inside the tag");
        let outer = Ipv4HeaderSlice::from_slice(&o[18..]).unwrap();
        assert_eq!(outer.ihl(), 5);
        assert_eq!(
            outer.dcp().value() << 2 | outer.ecn().value(),
            tos,
            "TOS copied from the inner header"
        );
        assert_eq!(outer.ttl(), ttl, "TTL copied from the inner header");
        assert_eq!(outer.identification(), 0);
        assert_eq!(outer.dont_fragment(), df, "DF copied from the inner header");
        assert!(!outer.more_fragments());
        assert_eq!(outer.fragments_offset().value(), 0);
        assert_eq!(outer.protocol().0, 4, "IP-in-IP");
        assert_eq!(usize::from(outer.total_len()), inner_ip.len() + 20);
        assert_eq!(inet_checksum(&o[18..38]), 0, "outer header checksum");
        let h = flow_hash(&tuple(client, 4242));
        let src = u32::from(outer.source_addr());
        assert_eq!(
            src & 0xffff_0000,
            u32::from(TUN_PREFIX),
            "outer source inside 10.200.0.0/16"
        );
        assert_eq!(
            src & 0xffff,
            h & 0xffff,
            "host bits of the outer source = flow hash"
        );
        let want = bs[table.lookup(u64::from(h)) as usize].addr;
        assert_eq!(
            IpAddr::V4(outer.destination_addr()),
            want,
            "Maglev's backend"
        );
        assert_eq!(o[38..], inner_ip[..], "the inner packet, byte for byte");
    }
}

#[test]
fn privileged_icmp_frag_needed_quotes_the_first_68_bytes() {
    if !require_bpf("privileged_icmp_frag_needed_quotes_the_first_68_bytes") {
        return;
    }
    let mut lb = XdpLb::load(config().mtu(576)).unwrap();
    lb.add_vip(vip(), VipFlags::NONE).unwrap();
    lb.set_backends(&vip(), &backends(&[1, 2])).unwrap();
    let client = Ipv4Addr::new(198, 51, 100, 99);
    let payload: Vec<u8> = (0..600u32).map(|i| (i * 7 + 3) as u8).collect();
    let f = tcp_frame(client, 5555, false, &payload);
    assert!(f.len() - 14 + 20 > 576, "too big once encapsulated");
    let r = lb.test_run(&f).unwrap();
    assert_eq!(r.verdict, XdpVerdict::Tx, "answered to the client");
    let o = &r.packet;
    assert_eq!(o.len(), 14 + 20 + 8 + 68);
    assert_eq!(o[..6], f[6..12], "to the client's MAC");
    assert_eq!(o[6..12], f[..6], "from the MAC the client sent to");
    assert_eq!(o[12..14], [0x08, 0x00]);
    let ip = Ipv4HeaderSlice::from_slice(&o[14..]).unwrap();
    assert_eq!(ip.source_addr(), VIP);
    assert_eq!(ip.destination_addr(), client);
    assert_eq!(ip.protocol().0, 1, "ICMP");
    assert_eq!(usize::from(ip.total_len()), 20 + 8 + 68);
    assert_eq!(inet_checksum(&o[14..34]), 0, "IP header checksum");
    let icmp = &o[34..];
    assert_eq!(
        (icmp[0], icmp[1]),
        (3, 4),
        "destination unreachable, fragmentation needed"
    );
    assert_eq!(icmp[4..6], [0, 0], "unused");
    assert_eq!(
        u16::from_be_bytes([icmp[6], icmp[7]]),
        576 - 20,
        "next-hop MTU: room for the inner packet"
    );
    assert_eq!(
        inet_checksum(icmp),
        0,
        "ICMP checksum over header and quote"
    );
    assert_eq!(
        icmp[8..],
        f[14..14 + 68],
        "the first 68 bytes of the client's IP packet"
    );
}
