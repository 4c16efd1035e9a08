//! Two controller processes drive one pinned reuseport group at the same
//! time: each adds a generation with its own socket, checks the socket is
//! in the map at its generation's slots, lets the other run, checks again,
//! and removes it. With the group's cross-process lock no generation is
//! computed twice and no process's `clear_index` deletes the other's
//! sockets. The children are this test binary, re-executed into this same
//! test function (so they are not counted as tests). The documented
//! refusal of a full index ring is retried; anything else fails.
//!
//! As root this never skips; as another user it skips with one loud line.
#![allow(clippy::unwrap_used)] // tests may unwrap (clippy.toml covers #[test] fns only)

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use flowpin_bpf_progs::sk_reuseport_select::sock_key;
use flowpin_sk_reuseport::{
    bind_reuseport, GenState, GroupConfig, GroupError, Proto, ReleaseError, ReuseportGroup,
};
use flowpin_testing::{require_root, unique_name};

const CHILD_PIN: &str = "FLOWPIN_TEST_RP_CHILD_PIN";
const CHILD_ADDR: &str = "FLOWPIN_TEST_RP_CHILD_ADDR";
const CHILD_START: &str = "FLOWPIN_TEST_RP_CHILD_START";
const ROUNDS: u32 = 200;

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn cookie(s: &impl AsFd) -> u64 {
    let mut v: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as nix::libc::socklen_t;
    // SAFETY: `v` and `len` are live, writable and sized for SO_COOKIE (a u64).
    let rc = unsafe {
        nix::libc::getsockopt(
            s.as_fd().as_raw_fd(),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_COOKIE,
            (&mut v as *mut u64).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt(SO_COOKIE)");
    v
}

/// The child controller: what each of the two re-executed processes runs
/// (inside the same `#[test]` function, so a child is not a test of its
/// own). Exits 0 when nothing was lost, 3 when a socket was, 4 on a refusal
/// that is not the documented one.
///
/// A refusal is expected: generation indices wrap at
/// `MAX_GENS` (8), so when one controller runs
/// that many generations ahead, `add_generation` finds the index it needs
/// held by the *other* controller's live generation and says so
/// (`NoFreeIndex`, documented). That is retried. A `NoFreeIndex` whose
/// blocker is one of this controller's own generations (all removed before
/// the next add) would mean a lost change, and fails.
fn controller_child(pin: String, addr: String) -> ! {
    let addr: SocketAddr = addr.parse().unwrap();
    let group = ReuseportGroup::join(&pin).unwrap();
    // Both children start their rounds at the same instant.
    let start: u128 = std::env::var(CHILD_START).unwrap().parse().unwrap();
    while now_ms() < start {
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut lost = 0;
    let mut refused = 0u32;
    let mut mine: HashSet<u32> = HashSet::new();
    for _ in 0..ROUNDS {
        let s: UdpSocket = bind_reuseport(addr, Proto::Udp).unwrap().into();
        let gen = loop {
            match group.add_generation(&[&s]) {
                Ok(g) => break g,
                Err(GroupError::Release(ReleaseError::NoFreeIndex { blocking, .. }))
                    if !mine.contains(&blocking.0) && refused < 100_000 =>
                {
                    refused += 1;
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) => {
                    println!("REFUSED-UNEXPECTED {e}");
                    std::process::exit(4);
                }
            }
        };
        mine.insert(gen.0);
        let mine_cookie = Some(cookie(&s));
        let key = sock_key(gen.0, 0);
        let at = || group.kernel().socket_cookie(key).unwrap();
        if at() != mine_cookie {
            lost += 1;
        }
        std::thread::yield_now();
        if at() != mine_cookie {
            lost += 1;
        }
        println!("GEN {}", gen.0);
        group.remove(gen).unwrap();
    }
    println!("REFUSED {refused}");
    println!("LOST {lost}");
    std::process::exit(if lost == 0 { 0 } else { 3 });
}

#[test]
fn privileged_two_controllers_one_group_lose_nothing() {
    if let (Ok(pin), Ok(addr)) = (std::env::var(CHILD_PIN), std::env::var(CHILD_ADDR)) {
        controller_child(pin, addr);
    }
    if !require_root("privileged_two_controllers_one_group_lose_nothing") {
        return;
    }
    let pin = PathBuf::from("/sys/fs/bpf").join(unique_name("rp2c"));
    // A port the kernel says is free now (a pid-derived port collided with
    // other tests' sockets).
    let addr: SocketAddr = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = GroupConfig::new(&pin);
    config.unpin_on_drop = true;
    config.flow_table_size = 1024;
    let group = ReuseportGroup::create(addr, Proto::Udp, config).unwrap();
    let start = (now_ms() + 500).to_string();
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "privileged_two_controllers_one_group_lose_nothing",
                    "--nocapture",
                ])
                .env(CHILD_PIN, &pin)
                .env(CHILD_ADDR, addr.to_string())
                .env(CHILD_START, &start)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut gens = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "a controller lost sockets or failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("LOST 0"), "{stdout}");
        gens.extend(
            stdout
                .lines()
                .filter_map(|l| l[l.find("GEN ")? + 4..].trim().parse::<u32>().ok()),
        );
    }
    assert_eq!(gens.len(), 2 * ROUNDS as usize);
    let distinct: HashSet<u32> = gens.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        gens.len(),
        "a generation was handed out twice"
    );
    let st = group.state().unwrap();
    assert!(
        st.generations()
            .iter()
            .all(|g| g.state == GenState::Retired),
        "every generation was removed: {st:?}"
    );
    drop(group);
    assert!(!pin.exists(), "pins left behind");
}
