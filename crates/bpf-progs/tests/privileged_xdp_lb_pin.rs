//! Privileged tests of `xdp_lb` state that outlives its control process:
//! a child process loads, configures, attaches, pins and exits; this
//! process reopens the pins, changes the ring, upgrades the program in
//! place, and removes every pin. Plus drain through BPF_PROG_TEST_RUN.
//!
//! As root these never skip (a kernel refusal fails them); as another user
//! they skip with one loud line.
#![allow(clippy::unwrap_used)] // tests may unwrap (clippy.toml covers #[test] fns only)

mod xdp_lb_support;

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use flowpin_bpf_progs::flow_hash::{flow_hash, FiveTuple};
use flowpin_bpf_progs::link::Link;
use flowpin_bpf_progs::pin::prog_id;
use flowpin_bpf_progs::xdp_lb::state::VipKey;
use flowpin_bpf_progs::xdp_lb::{
    Backend, Desired, DesiredVip, Proto, RingUpdate, Vip, VipFlags, XdpLb, XdpLbError, XdpLink,
    XdpTarget, XdpVerdict,
};
use flowpin_tcp_opt::ServerId;
use flowpin_testing::{require_root, unique_name, NetNs};
use xdp_lb_support::*;

const CHILD_DIR: &str = "FLOWPIN_TEST_PIN_CHILD_DIR";
const CHILD_NETNS: &str = "FLOWPIN_TEST_PIN_CHILD_NETNS";

/// Removes the pin directory on every exit path.
struct PinDir(PathBuf);
impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = XdpLb::unpin(&self.0);
    }
}

fn tcp_vip() -> Vip {
    Vip::new(vip4().into(), 80, Proto::Tcp)
}

fn backends(n: u8) -> Vec<Backend> {
    (1..=n)
        .map(|i| {
            Backend::new(backend4(i))
                .server_id(ServerId::new(100 + u32::from(i)).expect("non-zero server_id"))
        })
        .collect()
}

/// A non-SYN packet of flow `i`, without the server_id option.
fn flow_pkt(i: u32, syn: bool) -> Vec<u8> {
    tcp4(client4(i), 40000 + i as u16, vip4(), 80, syn, &[], b"x")
}

fn ring_slot_owner(lb: &XdpLb, i: u32) -> Option<IpAddr> {
    let t = FiveTuple {
        src: client4(i).into(),
        dst: vip4().into(),
        sport: 40000 + i as u16,
        dport: 80,
        proto: 6,
    };
    let ring = lb.state().ring_addrs(&tcp_vip());
    ring[(flow_hash(&t) % lb.config().ring_size) as usize]
}

/// The backend an encapsulated packet goes to.
fn sent_to(lb: &XdpLb, pkt: &[u8]) -> IpAddr {
    let r = lb.test_run(pkt).expect("test_run");
    assert_eq!(r.verdict, XdpVerdict::Tx, "packet not forwarded");
    let (h, _) = etherparse::Ipv4Header::from_slice(&r.packet[14..]).expect("outer ipv4");
    IpAddr::from(h.destination)
}

/// The child process of the outlives-its-process test (this test binary
/// re-executed into the same `#[test]` function, so it is not a test of its
/// own): load, configure, attach, pin, establish 64 flows, print their
/// backends, exit without cleaning up.
fn pin_child(dir: String, netns: String) -> ! {
    pin_to_one_cpu();
    let dir = PathBuf::from(dir);
    let mut lb = XdpLb::load(test_config()).unwrap();
    lb.add_vip(tcp_vip(), VipFlags::SERVER_ID).unwrap();
    lb.set_backends(&tcp_vip(), &backends(4)).unwrap();
    let mut link = lb
        .attach(XdpTarget::ifname_in_netns("lb0", &netns))
        .unwrap();
    lb.pin(&dir).unwrap();
    link.pin(dir.join("link")).unwrap();
    for i in 0..64 {
        println!("FLOW {i} {}", sent_to(&lb, &flow_pkt(i, false)));
    }
    // Exit with everything open: the process's fds close, the pins stay.
    std::process::exit(0);
}

fn run_child(dir: &Path, ns: &NetNs) -> HashMap<u32, IpAddr> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "privileged_pinned_lb_outlives_its_process_and_upgrades_in_place",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_NETNS, ns.path())
        .output()
        .expect("spawn the child test process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let flows: HashMap<u32, IpAddr> = stdout
        .lines()
        .filter_map(|l| {
            let mut w = l[l.find("FLOW ")? + 5..].split(' ');
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect();
    assert_eq!(flows.len(), 64, "child output:\n{stdout}");
    flows
}

#[test]
fn privileged_pinned_lb_outlives_its_process_and_upgrades_in_place() {
    if let (Ok(dir), Ok(netns)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_NETNS)) {
        pin_child(dir, netns);
    }
    if !require_root("privileged_pinned_lb_outlives_its_process_and_upgrades_in_place") {
        return;
    }
    let ns = NetNs::new("pin").unwrap();
    ns.ip(&["link", "add", "lb0", "type", "veth", "peer", "name", "lb1"])
        .unwrap();
    ns.ip(&["link", "set", "lb0", "up"]).unwrap();
    ns.ip(&["link", "set", "lb1", "up"]).unwrap();
    let dir = PathBuf::from("/sys/fs/bpf").join(unique_name("lbpin"));
    let _guard = PinDir(dir.clone());

    let flows = run_child(&dir, &ns);
    pin_to_one_cpu();

    // The child is gone; its program is still attached through the pinned link.
    let link = XdpLink::from_pinned_in_netns(dir.join("link"), ns.path()).unwrap();
    let mut lb = XdpLb::open_pinned(&dir).unwrap();
    assert_eq!(
        link.program_id().unwrap(),
        prog_id(lb.program_fd()).unwrap()
    );
    assert_eq!(lb.backends(&tcp_vip()), Some(&backends(4)[..]));
    assert_eq!(
        lb.repaired_ring_slots(),
        0,
        "the ring matched the backend lists"
    );
    assert_eq!(
        lb.repaired_entries(),
        0,
        "every table matched the backend lists"
    );
    assert_eq!(lb.config().local_mac, LOCAL_MAC, "runtime config read back");
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let mode = e.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", e.path().display());
    }

    // A ring change: the flows established by the dead process keep their
    // backend (the connection table survived), although the ring moved
    // many of them.
    lb.set_backends(&tcp_vip(), &backends(8)).unwrap();
    let moved = flows
        .iter()
        .filter(|(i, b)| ring_slot_owner(&lb, **i) != Some(**b))
        .count();
    assert!(
        moved >= 16,
        "only {moved} of 64 flows moved in the ring: the test proves nothing"
    );
    for (&i, &b) in &flows {
        assert_eq!(
            sent_to(&lb, &flow_pkt(i, false)),
            b,
            "flow {i} changed backend"
        );
    }

    // Upgrade in place: a new program against the same maps, swapped into
    // the link; the connection table and the ring are kept.
    let before = link.program_id().unwrap();
    lb.upgrade(&link).unwrap();
    let after = link.program_id().unwrap();
    assert_ne!(before, after, "the link runs the new program");
    assert_eq!(after, prog_id(lb.program_fd()).unwrap());
    for (&i, &b) in &flows {
        assert_eq!(
            sent_to(&lb, &flow_pkt(i, false)),
            b,
            "flow {i} after upgrade"
        );
    }
    // A reopen after the upgrade finds the new program and the new backends.
    let again = XdpLb::open_pinned(&dir).unwrap();
    assert_eq!(prog_id(again.program_fd()).unwrap(), after);
    assert_eq!(again.backends(&tcp_vip()), Some(&backends(8)[..]));
    drop(again);

    // Two controllers: a change through one is seen by the other's next change.
    let mut other = XdpLb::open_pinned(&dir).unwrap();
    other.remove_backend(&tcp_vip(), backend4(8)).unwrap();
    lb.remove_backend(&tcp_vip(), backend4(7)).unwrap();
    assert_eq!(lb.backends(&tcp_vip()), Some(&backends(6)[..]));
    drop(other);
    assert_eq!(
        XdpLb::open_pinned(&dir).unwrap().backends(&tcp_vip()),
        Some(&backends(6)[..])
    );

    // A controller killed half-way through a ring change leaves ring slots
    // that disagree with the backend lists: the next open rewrites them.
    {
        use libbpf_rs::MapCore;
        let ring = lb.maps().ring();
        let want = lb.state().ring_indices(&tcp_vip());
        let wrong = want.iter().copied().max().unwrap() + 1;
        for slot in [0u32, 7, 4242, 65536] {
            ring.update(
                &slot.to_ne_bytes(),
                &wrong.to_ne_bytes(),
                libbpf_rs::MapFlags::ANY,
            )
            .unwrap();
        }
        let healed = XdpLb::open_pinned(&dir).unwrap();
        assert_eq!(healed.repaired_ring_slots(), 4);
        for slot in [0u32, 7, 4242, 65536] {
            let v = ring
                .lookup(&slot.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
                .unwrap()
                .unwrap();
            assert_eq!(
                u32::from_ne_bytes(v[..4].try_into().unwrap()),
                want[slot as usize]
            );
        }
        assert_eq!(XdpLb::open_pinned(&dir).unwrap().repaired_ring_slots(), 0);

        // Entries of a change that never reached `backend_descs`: an
        // orphan backend entry, an orphan server_id route (it would send
        // server_id 4242's packets to whatever reuses index 77), a missing
        // route, a stale direct-mapped slot.
        let orphan = |vip_id: u32, sid: u32| {
            let mut k = vip_id.to_ne_bytes().to_vec();
            k.extend_from_slice(&sid.to_ne_bytes());
            k
        };
        let mut be = [0u8; 20];
        be[..4].copy_from_slice(&[10, 9, 9, 9]);
        be[16] = 4;
        let m = lb.maps();
        m.backends()
            .update(&77u32.to_ne_bytes(), &be, libbpf_rs::MapFlags::ANY)
            .unwrap();
        m.server_ids()
            .update(
                &orphan(0, 4242),
                &77u32.to_ne_bytes(),
                libbpf_rs::MapFlags::ANY,
            )
            .unwrap();
        m.server_ids().delete(&orphan(0, 101)).unwrap();
        let slot = flowpin_bpf_abi::lb::sid_slot(0, 4242);
        let mut v = [0u8; 16];
        v[4..8].copy_from_slice(&4242u32.to_ne_bytes());
        v[8..12].copy_from_slice(&77u32.to_ne_bytes());
        v[12..].copy_from_slice(&flowpin_bpf_abi::lb::SLOT_ONE.to_ne_bytes());
        m.sid_table()
            .update(&slot.to_ne_bytes(), &v, libbpf_rs::MapFlags::ANY)
            .unwrap();
        let healed = XdpLb::open_pinned(&dir).unwrap();
        assert_eq!(
            healed.repaired_entries(),
            4,
            "exactly the four injected entries"
        );
        let m = healed.maps();
        let get =
            |map: &libbpf_rs::MapHandle, k: &[u8]| map.lookup(k, libbpf_rs::MapFlags::ANY).unwrap();
        assert_eq!(
            get(m.server_ids(), &orphan(0, 4242)),
            None,
            "orphan route left"
        );
        assert!(
            get(m.server_ids(), &orphan(0, 101)).is_some(),
            "route not restored"
        );
        assert_eq!(
            get(m.backends(), &77u32.to_ne_bytes()).unwrap()[16],
            0,
            "orphan backend left"
        );
        assert_eq!(
            get(m.sid_table(), &slot.to_ne_bytes()).unwrap()[12..],
            [0; 4]
        );
        assert_eq!(XdpLb::open_pinned(&dir).unwrap().repaired_entries(), 0);
        // VIP slots: a stale one (a VIP the state does not have, in a slot
        // it does not use) and a missing one (the TCP VIP's slot emptied).
        let key = VipKey {
            addr: vip4().into(),
            port: 80,
            proto: 6,
        };
        let real = key.slot();
        let stale = (0..m.vip_table().max_entries())
            .find(|&s| s != real && !healed.state().vip_slot_used(s))
            .unwrap();
        assert_eq!(m.vip_table().value_size(), 32, "flowpin_vip_slot layout");
        let mut v = [0u8; 32];
        v[..4].copy_from_slice(&[192, 0, 2, 99]);
        v[16..18].copy_from_slice(&81u16.to_be_bytes());
        v[18] = 6;
        v[19] = 4;
        v[20..24].copy_from_slice(&9u32.to_ne_bytes());
        v[28..].copy_from_slice(&flowpin_bpf_abi::lb::SLOT_ONE.to_ne_bytes());
        m.vip_table()
            .update(&stale.to_ne_bytes(), &v, libbpf_rs::MapFlags::ANY)
            .unwrap();
        let good = get(m.vip_table(), &real.to_ne_bytes()).unwrap();
        assert_eq!(good[28..], flowpin_bpf_abi::lb::SLOT_ONE.to_ne_bytes());
        m.vip_table()
            .update(&real.to_ne_bytes(), &[0u8; 32], libbpf_rs::MapFlags::ANY)
            .unwrap();
        let fixed = XdpLb::open_pinned(&dir).unwrap();
        assert_eq!(
            (fixed.repaired_entries(), fixed.repaired_ring_slots()),
            (2, 0),
            "exactly the stale and the missing VIP slot"
        );
        assert_eq!(
            get(m.vip_table(), &stale.to_ne_bytes()).unwrap(),
            [0u8; 32],
            "stale VIP slot left"
        );
        assert_eq!(
            get(m.vip_table(), &real.to_ne_bytes()).unwrap(),
            good,
            "VIP slot not restored"
        );
        assert_eq!(XdpLb::open_pinned(&dir).unwrap().repaired_entries(), 0);
        drop(fixed);
        // A backend record of a VIP that is gone (a remove_vip cut short):
        // the reopen still works, and deletes it.
        let mut key = 5u32.to_ne_bytes().to_vec();
        key.extend_from_slice(&0u32.to_ne_bytes());
        let mut desc = [0u8; 32];
        desc[..4].copy_from_slice(&[10, 9, 9, 8]);
        desc[16] = 4;
        desc[20..24].copy_from_slice(&1u32.to_ne_bytes());
        desc[28..32].copy_from_slice(&78u32.to_ne_bytes());
        m.backend_descs()
            .update(&key, &desc, libbpf_rs::MapFlags::ANY)
            .unwrap();
        let again = XdpLb::open_pinned(&dir).unwrap();
        assert_eq!(again.repaired_entries(), 1);
        assert_eq!(get(m.backend_descs(), &key), None, "orphan record left");
        assert_eq!(again.backends(&tcp_vip()), healed.backends(&tcp_vip()));
        let with_opt = tcp4(client4(9000), 9000, vip4(), 80, false, &sid_opt(101), b"x");
        assert_eq!(
            sent_to(&healed, &with_opt),
            backend4(1),
            "server_id 101 routes again"
        );
    }

    // An incompatible layout is refused, saying which version it holds.
    let meta = lb.maps().meta();
    use libbpf_rs::MapCore;
    let orig = meta
        .lookup(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
        .unwrap()
        .unwrap();
    let mut bad = orig.clone();
    bad[..4].copy_from_slice(&99u32.to_ne_bytes());
    meta.update(&0u32.to_ne_bytes(), &bad, libbpf_rs::MapFlags::ANY)
        .unwrap();
    let err = XdpLb::open_pinned(&dir).unwrap_err();
    assert!(
        matches!(err, XdpLbError::IncompatiblePin { found: 99, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("version 99") && msg.contains("XdpLb::unpin"),
        "{msg}"
    );
    meta.update(&0u32.to_ne_bytes(), &orig, libbpf_rs::MapFlags::ANY)
        .unwrap();
    // Nothing pinned there: its own error, naming the directory and what to do.
    let err = XdpLb::open_pinned(Path::new("/sys/fs/bpf/flowpin-no-such-dir")).unwrap_err();
    assert!(
        matches!(&err, XdpLbError::NotPinned { path } if path == Path::new("/sys/fs/bpf/flowpin-no-such-dir")),
        "{err}"
    );
    assert!(err.to_string().contains("XdpLb::pin"), "{err}");

    // Cleanup removes every pin; once no process holds the link, the
    // program leaves the interface.
    drop(lb);
    drop(link);
    XdpLb::unpin(&dir).unwrap();
    assert!(!dir.exists(), "pin directory left behind");
    let attached = ns
        .run(|| {
            let idx = nix::net::if_::if_nametoindex("lb0").unwrap();
            let mut q = libbpf_rs::libbpf_sys::bpf_xdp_query_opts {
                sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_xdp_query_opts>() as _,
                ..Default::default()
            };
            // SAFETY: `q` is a properly sized opts struct that outlives the call.
            let rc = unsafe { libbpf_rs::libbpf_sys::bpf_xdp_query(idx as i32, 0, &mut q) };
            assert_eq!(rc, 0);
            q.prog_id
        })
        .unwrap();
    assert_eq!(attached, 0, "xdp_lb still attached after unpin");
}

/// `XdpLb::reconcile` writes to the kernel exactly what the control state
/// says (a reopen rebuilds the desired state and repairs nothing), a flag
/// change keeps the VIP's id and counters, and an unchanged desired state
/// writes nothing.
#[test]
fn privileged_reconcile_writes_what_the_state_says() {
    if !require_root("privileged_reconcile_writes_what_the_state_says") {
        return;
    }
    pin_to_one_cpu();
    let dir = PathBuf::from("/sys/fs/bpf").join(unique_name("lbrec"));
    let _guard = PinDir(dir.clone());
    let mut lb = XdpLb::load(test_config()).unwrap();
    lb.pin(&dir).unwrap();
    let udp = Vip::new(vip4().into(), 0, Proto::Udp);
    let mut tcp = DesiredVip::new(VipFlags::SERVER_ID);
    for b in backends(4) {
        tcp = if b.addr == backend4(2) {
            tcp.draining_backend(b)
        } else {
            tcp.backend(b)
        };
    }
    let d1 = Desired::new().vip(tcp_vip(), tcp.clone()).vip(
        udp,
        DesiredVip::new(VipFlags::PORT_AGNOSTIC).backend(Backend::new(backend4(5)).weight(2)),
    );
    let u = lb.reconcile(&d1).unwrap();
    assert_eq!(u.slots_changed, 2 * lb.config().ring_size, "two new rings");
    assert_eq!(lb.state().desired(), d1);
    for i in 0..3 {
        assert_ne!(sent_to(&lb, &flow_pkt(i, true)), backend4(2), "drained");
    }
    let id = lb.vip_id(&tcp_vip());
    assert_eq!(lb.vip_stats(&tcp_vip()).unwrap().packets, 3);

    // Flags in place, a weight, the UDP VIP gone: one plan.
    tcp.flags = VipFlags::NONE;
    tcp.backends[0].weight = 5;
    let d2 = Desired::new().vip(tcp_vip(), tcp);
    lb.reconcile(&d2).unwrap();
    assert_eq!(lb.vip_id(&tcp_vip()), id, "same VIP id");
    assert_eq!(
        lb.vip_stats(&tcp_vip()).unwrap().packets,
        3,
        "counters kept: the VIP was never removed"
    );
    assert_eq!(lb.reconcile(&d2).unwrap(), RingUpdate::default());

    let re = XdpLb::open_pinned(&dir).unwrap();
    assert_eq!(
        re.repaired_ring_slots(),
        0,
        "the rings are what the state says"
    );
    assert_eq!(
        re.repaired_entries(),
        0,
        "every table is what the state says"
    );
    assert_eq!(re.state().desired(), d2);
    assert_eq!(
        re.state().ring_addrs(&tcp_vip()),
        lb.state().ring_addrs(&tcp_vip())
    );
}

#[test]
fn privileged_drain_keeps_old_flows_and_sends_new_ones_elsewhere() {
    if !require_root("privileged_drain_keeps_old_flows_and_sends_new_ones_elsewhere") {
        return;
    }
    pin_to_one_cpu();
    let mut lb = XdpLb::load(test_config()).unwrap();
    lb.add_vip(tcp_vip(), VipFlags::SERVER_ID).unwrap();
    lb.set_backends(&tcp_vip(), &backends(4)).unwrap();
    let flows: HashMap<u32, IpAddr> = (0..64)
        .map(|i| (i, sent_to(&lb, &flow_pkt(i, false))))
        .collect();
    let drained = flows[&0];
    let old: Vec<u32> = flows
        .iter()
        .filter(|(_, b)| **b == drained)
        .map(|(i, _)| *i)
        .collect();
    assert!(old.len() >= 4, "{} flows on the drained backend", old.len());
    lb.drain_backend(&tcp_vip(), drained).unwrap();
    assert!(lb.is_draining(&tcp_vip(), drained));
    assert_eq!(lb.backends(&tcp_vip()), Some(&backends(4)[..]));
    // Old flows: connection table.
    for &i in &old {
        assert_eq!(sent_to(&lb, &flow_pkt(i, false)), drained, "old flow {i}");
    }
    // Old flows carrying the option: server_id route.
    let sid = backends(4)
        .iter()
        .find(|b| b.addr == drained)
        .and_then(|b| b.server_id)
        .unwrap();
    let with_opt = tcp4(
        client4(5000),
        5000,
        vip4(),
        80,
        false,
        &sid_opt(sid.get()),
        b"x",
    );
    assert_eq!(sent_to(&lb, &with_opt), drained);
    // New flows: never the drained backend.
    for i in 1000..1256 {
        assert_ne!(sent_to(&lb, &flow_pkt(i, true)), drained, "new flow {i}");
    }
    // Removed once its connections closed: its old flows go elsewhere.
    lb.remove_backend(&tcp_vip(), drained).unwrap();
    for &i in &old {
        assert_ne!(
            sent_to(&lb, &flow_pkt(i, false)),
            drained,
            "flow {i} after removal"
        );
    }
}

const LB_CHILD_DIR: &str = "FLOWPIN_TEST_LB_CTL_DIR";
const LB_CHILD_K: &str = "FLOWPIN_TEST_LB_CTL_K";
const LB_CHILD_START: &str = "FLOWPIN_TEST_LB_CTL_START";
const LB_ROUNDS: u32 = 40;

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// The weight controller `k` gives its backend `i` in round `r`.
fn weight_of(k: u8, i: u8, r: u32) -> u32 {
    1 + (u32::from(k) + u32::from(i) + r) % 5
}

/// Controller `k`'s backends: `backend4(i)` for these `i`. The initial
/// list is 1..=8, so the two controllers' backends alternate: removing
/// one of yours shifts the positions of the other's after it.
fn owned(k: u8) -> [u8; 4] {
    [1 + k, 3 + k, 5 + k, 7 + k]
}

fn backend_of(i: u8, weight: u32) -> Backend {
    Backend::new(backend4(i))
        .server_id(ServerId::new(100 + u32::from(i)).expect("non-zero server_id"))
        .weight(weight)
}

/// A controller of the two-controller test (this test binary re-executed
/// into the same `#[test]` function, so it is not a test of its own):
/// reopens the pins and, `LB_ROUNDS` times, removes one of its backends
/// (the other's behind it move up a position), sets the weights of its
/// other three, adds the removed one back at the end of the list (with its
/// new weight), and drains / undrains its first.
fn lb_controller_child(dir: String, k: String) -> ! {
    let k: u8 = k.parse().unwrap();
    let start: u128 = std::env::var(LB_CHILD_START).unwrap().parse().unwrap();
    let mut lb = XdpLb::open_pinned(Path::new(&dir)).unwrap();
    while now_ms() < start {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let mine = owned(k);
    for r in 0..LB_ROUNDS {
        let x = mine[(r % 4) as usize];
        lb.remove_backend(&tcp_vip(), backend4(x)).unwrap();
        for &i in mine.iter().filter(|&&i| i != x) {
            lb.set_weight(&tcp_vip(), backend4(i), weight_of(k, i, r))
                .unwrap();
        }
        lb.add_backend(&tcp_vip(), backend_of(x, weight_of(k, x, r)))
            .unwrap();
        let d = backend4(mine[0]);
        if r % 2 == 0 {
            lb.drain_backend(&tcp_vip(), d).unwrap();
        } else {
            lb.undrain_backend(&tcp_vip(), d).unwrap();
        }
    }
    std::process::exit(0);
}

/// What the pinned maps hold for one VIP, read through the pins directly
/// (no `XdpLb`, no `open_pinned`, so no repair has run): each ring slot
/// resolved to an address through the pinned `backends` map, and the
/// backend list from `backend_descs` as (position, address, weight,
/// server_id, draining).
struct PinnedView {
    ring: Vec<Option<IpAddr>>,
    descs: Vec<(u32, IpAddr, u32, u32, bool)>,
}

fn read_pins(dir: &Path, vip_id: u32, ring_size: u32) -> PinnedView {
    use libbpf_rs::{MapCore, MapFlags, MapHandle};
    let open = |name: &str| MapHandle::from_pinned_path(dir.join(name)).unwrap();
    let (ring, backends, descs) = (open("ring"), open("backends"), open("backend_descs"));
    let u32_at = |v: &[u8], at: usize| u32::from_ne_bytes(v[at..at + 4].try_into().unwrap());
    let addr_of = |v: &[u8]| -> Option<IpAddr> {
        match v[16] {
            0 => None,
            4 => Some(IpAddr::from([v[0], v[1], v[2], v[3]])),
            f => panic!("backend family {f}"),
        }
    };
    let mut by_index: HashMap<u32, Option<IpAddr>> = HashMap::new();
    let ring = (0..ring_size)
        .map(|slot| {
            let key = (vip_id * ring_size + slot).to_ne_bytes();
            let v = ring.lookup(&key, MapFlags::ANY).unwrap().unwrap();
            let index = u32_at(&v, 0);
            *by_index.entry(index).or_insert_with(|| {
                let b = backends
                    .lookup(&index.to_ne_bytes(), MapFlags::ANY)
                    .unwrap()
                    .unwrap();
                addr_of(&b)
            })
        })
        .collect();
    let mut list: Vec<_> = descs
        .keys()
        .filter(|k| u32_at(k, 0) == vip_id)
        .map(|k| {
            let d = descs.lookup(&k, MapFlags::ANY).unwrap().unwrap();
            let addr = addr_of(&d).expect("a backend_descs entry without an address");
            let draining = d[17] == flowpin_bpf_abi::lb::BACKEND_DRAINING;
            (
                u32_at(&k, 4),
                addr,
                u32_at(&d, 20),
                u32_at(&d, 24),
                draining,
            )
        })
        .collect();
    list.sort_unstable();
    PinnedView { ring, descs: list }
}

/// Two controller processes change one pinned VIP at once, each its own
/// backends, with changes that overlap (removing one of yours moves the
/// other's up a position; adding it back appends after them). No change
/// may be lost and the kernel ring must be the Maglev ring of the final
/// backends: checked on the pinned maps themselves before anything
/// reopens them (a reopen would repair the ring), against a Maglev table
/// built here from the weights the controllers were told to leave.
#[test]
fn privileged_two_lb_controllers_lose_no_change() {
    if let (Ok(dir), Ok(k)) = (std::env::var(LB_CHILD_DIR), std::env::var(LB_CHILD_K)) {
        lb_controller_child(dir, k);
    }
    if !require_root("privileged_two_lb_controllers_lose_no_change") {
        return;
    }
    let dir = PathBuf::from("/sys/fs/bpf").join(unique_name("lb2c"));
    let _guard = PinDir(dir.clone());
    let mut lb = XdpLb::load(test_config()).unwrap();
    lb.add_vip(tcp_vip(), VipFlags::SERVER_ID).unwrap();
    lb.set_backends(&tcp_vip(), &backends(8)).unwrap();
    lb.pin(&dir).unwrap();
    let vip_id = lb.vip_id(&tcp_vip()).unwrap();
    let ring_size = lb.config().ring_size;
    drop(lb);
    let start = (now_ms() + 400).to_string();
    let children: Vec<_> = (0..2)
        .map(|k| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "privileged_two_lb_controllers_lose_no_change",
                    "--nocapture",
                ])
                .env(LB_CHILD_DIR, &dir)
                .env(LB_CHILD_K, k.to_string())
                .env(LB_CHILD_START, &start)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Both run at once from `start`.
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a controller failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // What each controller was told to leave (round LB_ROUNDS - 1 is odd:
    // both drained backends were put back).
    let mut want: Vec<(IpAddr, u32, u32)> = (0..2u8)
        .flat_map(|k| {
            owned(k).map(|i| {
                (
                    backend4(i),
                    weight_of(k, i, LB_ROUNDS - 1),
                    100 + u32::from(i),
                )
            })
        })
        .collect();
    want.sort_unstable();
    let pinned = read_pins(&dir, vip_id, ring_size);
    let positions: Vec<u32> = pinned.descs.iter().map(|d| d.0).collect();
    assert_eq!(
        positions,
        (0..8).collect::<Vec<u32>>(),
        "backend_descs positions: {:?}",
        pinned.descs
    );
    assert!(
        pinned.descs.iter().all(|d| !d.4),
        "a backend left draining: {:?}",
        pinned.descs
    );
    let mut got: Vec<(IpAddr, u32, u32)> = pinned.descs.iter().map(|d| (d.1, d.2, d.3)).collect();
    got.sort_unstable();
    assert_eq!(got, want, "a change was lost (the pinned backend lists)");
    // The Maglev ring of those weights, built independently (the fill
    // order depends only on the key set, so the list order does not matter).
    let keys: Vec<(String, u32)> = want.iter().map(|w| (w.0.to_string(), w.1)).collect();
    let table = flowpin_maglev::Maglev::build_weighted(&keys, ring_size).unwrap();
    let expected: Vec<Option<IpAddr>> = table
        .ring()
        .iter()
        .map(|&i| Some(want[i as usize].0))
        .collect();
    let wrong = (0..ring_size as usize)
        .filter(|&s| pinned.ring[s] != expected[s])
        .count();
    assert_eq!(
        wrong,
        0,
        "{wrong} of {ring_size} pinned ring slots differ from the Maglev ring of the final weights \
         (first: {:?})",
        (0..ring_size as usize)
            .find(|&s| pinned.ring[s] != expected[s])
            .map(|s| (s, pinned.ring[s], expected[s]))
    );

    // And a reopen agrees, with nothing to repair.
    let lb = XdpLb::open_pinned(&dir).unwrap();
    let mut listed: Vec<(IpAddr, u32, u32)> = lb
        .backends(&tcp_vip())
        .unwrap()
        .iter()
        .map(|b| (b.addr, b.weight, b.server_id.map_or(0, |s| s.get())))
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, want);
    assert!(!lb.is_draining(&tcp_vip(), backend4(1)));
    assert!(!lb.is_draining(&tcp_vip(), backend4(2)));
    assert_eq!(lb.repaired_ring_slots(), 0);
    assert_eq!(lb.repaired_entries(), 0);
}

const KILL_CHILD_DIR: &str = "FLOWPIN_TEST_LB_KILL_DIR";

/// The controller the kill test SIGKILLs (this test binary re-executed into
/// the same `#[test]` function): reopens the pins and starts replacing
/// backend 2 with backend 5; the test-only pause point stops it before one
/// of that change's map writes.
fn killed_controller_child(dir: String) -> ! {
    let mut lb = XdpLb::open_pinned(Path::new(&dir)).unwrap();
    assert_eq!(
        (lb.repaired_ring_slots(), lb.repaired_entries()),
        (0, 0),
        "the reopen wrote nothing (the pause point counts every write)"
    );
    lb.set_backends(&tcp_vip(), &replacement()).unwrap();
    println!("CHANGE COMPLETED: the pause point never fired");
    std::process::exit(0);
}

/// Backends 1, 3, 4 and a new 5 (server_id 105): 2 replaced.
fn replacement() -> Vec<Backend> {
    let mut b = backends(4);
    b.remove(1);
    b.push(backend_of(5, 1));
    b
}

/// A controller SIGKILLed between two map writes of a change (backend 5's
/// entry, its ring slots and its server_id route written; backend 2's route
/// deleted or not, the backend lists not yet): the next `open_pinned`
/// rebuilds the old backend list from `backend_descs` and undoes exactly
/// the writes the dead process made, no more.
#[test]
fn privileged_controller_killed_between_two_writes_is_repaired_on_reopen() {
    if let Ok(dir) = std::env::var(KILL_CHILD_DIR) {
        killed_controller_child(dir);
    }
    if !require_root("privileged_controller_killed_between_two_writes_is_repaired_on_reopen") {
        return;
    }
    use flowpin_bpf_progs::xdp_lb::maps::TEST_PAUSE_BEFORE_WRITE_ENV;
    use flowpin_bpf_progs::xdp_lb::state::MapOp;
    use std::io::BufRead;
    pin_to_one_cpu();
    let dir = PathBuf::from("/sys/fs/bpf").join(unique_name("lbkill"));
    let _guard = PinDir(dir.clone());
    let mut lb = XdpLb::load(test_config()).unwrap();
    lb.add_vip(tcp_vip(), VipFlags::SERVER_ID).unwrap();
    lb.set_backends(&tcp_vip(), &backends(4)).unwrap();
    lb.pin(&dir).unwrap();
    drop(lb);

    // The child's plan, as its reopen will make it; it is stopped before
    // the first backend list write, so everything before is undone.
    let plan = XdpLb::open_pinned(&dir)
        .unwrap()
        .state()
        .set_backends(&tcp_vip(), &replacement())
        .unwrap();
    let stop = plan
        .ops
        .iter()
        .position(|o| matches!(o, MapOp::BackendDesc { .. }))
        .unwrap();
    let done = &plan.ops[..stop];
    let ring_writes: usize = done
        .iter()
        .map(|o| match o {
            MapOp::Ring { writes, .. } => writes.len(),
            _ => 0,
        })
        .sum();
    let entry_writes = done
        .iter()
        .filter(|o| {
            matches!(
                o,
                MapOp::Backend { .. }
                    | MapOp::SidRoute { .. }
                    | MapOp::SidSlot { .. }
                    | MapOp::VipSlot { .. }
            )
        })
        .count();
    assert!(
        ring_writes > 0 && entry_writes >= 2,
        "the kill point is past nothing worth repairing: {done:?}"
    );

    println!(
        "killing the controller before write {stop} of {}: {ring_writes} ring slots and \
         {entry_writes} entries written",
        plan.ops.len()
    );
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "privileged_controller_killed_between_two_writes_is_repaired_on_reopen",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_CHILD_DIR, &dir)
        .env(TEST_PAUSE_BEFORE_WRITE_ENV, stop.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let paused = loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("FLOWPIN_XDP_LB_PAUSED") => break l,
            Some(Ok(l)) => seen.push(l),
            _ => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "the child never paused: {}\n{}\n{}",
                    out.status,
                    seen.join("\n"),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    };
    assert!(paused.ends_with(&format!(" {stop}")), "{paused}");
    // Between write `stop - 1` and write `stop`, holding the pin lock: killed.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status}");

    let healed = XdpLb::open_pinned(&dir).unwrap();
    assert_eq!(
        healed.repaired_ring_slots() as usize,
        ring_writes,
        "exactly the ring slots the dead controller wrote"
    );
    assert_eq!(
        healed.repaired_entries() as usize,
        entry_writes,
        "exactly the entries the dead controller wrote: {done:?}"
    );
    assert_eq!(healed.backends(&tcp_vip()), Some(&backends(4)[..]));
    // server_id 102 routes to backend 2 again; 105 is not routed to 5.
    let opt = |sid: u32, i: u32| tcp4(client4(i), 9000, vip4(), 80, false, &sid_opt(sid), b"x");
    assert_eq!(sent_to(&healed, &opt(102, 9100)), backend4(2));
    assert_ne!(sent_to(&healed, &opt(105, 9101)), backend4(5));
    let again = XdpLb::open_pinned(&dir).unwrap();
    assert_eq!(
        (again.repaired_ring_slots(), again.repaired_entries()),
        (0, 0)
    );
    // And the change, made again by a live controller, goes through.
    let mut lb = again;
    lb.set_backends(&tcp_vip(), &replacement()).unwrap();
    let re = XdpLb::open_pinned(&dir).unwrap();
    assert_eq!(re.backends(&tcp_vip()), Some(&replacement()[..]));
    assert_eq!((re.repaired_ring_slots(), re.repaired_entries()), (0, 0));
}
