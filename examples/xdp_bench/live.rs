//! `xdp_bench --live`: the paths of `xdp_lb` on live frames.
//!
//! Two network namespaces (unique names, deleted on every exit path,
//! Ctrl-C included) joined by a veth pair. On the measured end (`lb`)
//! `xdp_lb` runs in native mode; on the peer (`client`) the reflector of
//! `flowpin_bpf_progs::xdp_reflect` turns every frame `xdp_lb` sent with
//! `XDP_TX` back into a client-to-VIP frame (outer IPv4 header stripped,
//! MACs restored; for `new_flow` a source never used before, for
//! `lru_hit_64k` the next of 65,536 flows round-robin) and sends it back
//! with `XDP_TX`. A burst of frames seeded from an `AF_PACKET` socket on
//! the client end then loops between the two NAPI instances through the
//! real veth `XDP_TX` path (frame in, `xdp_frame` across the ring, no skb)
//! until the bench drains it (reflector in drop mode). The burst stays
//! below the veth ring (256 frames), so no frame is ever dropped for room.
//!
//! `non_vip` loops too, through the stack: `xdp_lb` passes the frame
//! (`XDP_PASS`), the measured end's stack forwards it (a route for the
//! non-VIP address via the client, `ip_forward` on, redirects off) back out
//! of the same veth, and the reflector sends it back with `XDP_TX` (TTL
//! set back to 64). So the injection needs no feeder: the seeded burst
//! keeps the loop fed, and the `XDP_PASS` path's rate includes the stack's
//! forwarding work, as does its limit (the empty `XDP_PASS` program).
//!
//! Rate = frames the measured end's NAPI instance handled (the veth's
//! `rx_packets`, which counts every frame its XDP program saw) / CPU time
//! of its receive thread: threaded NAPI is turned on on both ends
//! (`/sys/class/net/<if>/threaded`), each kthread pinned to its own CPU,
//! and the measured one's CPU time read from its CPU-time clock
//! (`clock_getcpuclockid`, the `sum_exec_runtime` behind `/proc/<pid>/stat`'s
//! utime + stime, in ns). The limit: the empty program on the same loop
//! (`XDP_TX` for the `XDP_TX` paths, `XDP_PASS` for `non_vip`), swapped in
//! on the same BPF link (`bpf_link_update`: the NAPI thread and its rings
//! stay). Rounds alternate program and limit (program first in even
//! rounds, limit first in odd ones); medians are reported, the ratio being
//! the median of the per-round ratios.

use std::error::Error;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flowpin_bpf_progs::link::Link;
use flowpin_bpf_progs::xdp_attach::{XdpAttachMode, XdpLink, XdpMode, XdpTarget};
use flowpin_bpf_progs::xdp_lb::{Backend, Proto, Vip, VipFlags, VipStats, XdpLb, XdpLbConfig};
use flowpin_bpf_progs::xdp_pass::XdpPass;
use flowpin_bpf_progs::xdp_reflect::{ReflectMode, XdpReflect, XdpReflectConfig};
use flowpin_testing::{enable_threaded_napi, pin_thread, unique_name, NetNs, VethPair};
use nix::libc;
use nix::unistd::Pid;

type Res<T> = Result<T, Box<dyn Error>>;

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NON_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);
const BACKENDS: u8 = 100;
const FLOWS_64K: u32 = 65_536;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How the live part runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LiveOpts {
    /// Counted seconds per measurement.
    pub(crate) secs: f64,
    /// Not counted, before each measurement.
    pub(crate) settle: f64,
    /// Rounds (each: program and limit, alternating order).
    pub(crate) rounds: u32,
    /// Frames seeded into the loop.
    pub(crate) burst: usize,
}

/// One path's result.
pub(crate) struct LivePath {
    pub(crate) name: &'static str,
    pub(crate) verdict: &'static str,
    /// Median packets per CPU-second of the receive thread, program.
    pub(crate) mpps: f64,
    /// The same with the empty program.
    pub(crate) limit_mpps: f64,
    /// Median of the per-round ratios program / limit.
    pub(crate) ratio: f64,
    pub(crate) round_ratios: Vec<f64>,
    /// Median packets per second of wall time (program), for reference.
    pub(crate) wall_mpps: f64,
    /// Share of the receive thread's CPU the program's rounds got (median).
    pub(crate) cpu_share: f64,
    /// What xdp_lb's own counters say about the path.
    pub(crate) check: String,
    /// xdp_lb's connection-table misses per lookup over the program rounds.
    pub(crate) miss_rate: f64,
}

impl LivePath {
    /// Own cost per packet: 1/rate − 1/limit, ns.
    pub(crate) fn own_ns(&self) -> f64 {
        1e3 / self.mpps - 1e3 / self.limit_mpps
    }
}

/// Everything `run` measured.
pub(crate) struct Live {
    pub(crate) paths: Vec<LivePath>,
    pub(crate) lb_cpu: usize,
    pub(crate) mode: XdpMode,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    /// One table line's load on this machine: 65,536 lines, then every
    /// line of one CPU's table (`memory.rs`).
    pub(crate) line_loads: Vec<super::memory::LineLoad>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Sleeps `secs`, failing early on Ctrl-C.
fn nap(secs: f64) -> Res<()> {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return Err("interrupted (Ctrl-C): namespaces and links removed".into());
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, syn: bool) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, 80, 1, 64000);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut v = Vec::new();
    b.write(&mut v, &[]).expect("build packet");
    v
}

/// An `AF_PACKET` socket bound to one interface, sending whole frames
/// past the qdisc.
struct Injector {
    fd: OwnedFd,
}

impl Injector {
    /// Opens it inside `ns` (the socket stays in that namespace).
    fn new(ns: &NetNs, ifname: &str) -> Res<Self> {
        let ifname = ifname.to_string();
        let fd = ns.run(move || -> Result<OwnedFd, String> {
            use nix::sys::socket::{bind, socket, AddressFamily, LinkAddr, SockFlag, SockType};
            let ifindex =
                nix::net::if_::if_nametoindex(ifname.as_str()).map_err(|e| e.to_string())?;
            // Protocol 0: this socket only sends, it never receives.
            let fd = socket(
                AddressFamily::Packet,
                SockType::Raw,
                SockFlag::empty(),
                None,
            )
            .map_err(|e| format!("AF_PACKET socket: {e}"))?;
            // SAFETY: sockaddr_ll is plain old data; zeroed is a valid value.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: `sll` is a complete sockaddr_ll of the length given,
            // alive for the call; LinkAddr copies it.
            let addr = unsafe {
                <LinkAddr as nix::sys::socket::SockaddrLike>::from_raw(
                    (&sll as *const libc::sockaddr_ll).cast(),
                    Some(std::mem::size_of::<libc::sockaddr_ll>() as u32),
                )
            }
            .ok_or("sockaddr_ll")?;
            bind(fd.as_raw_fd(), &addr).map_err(|e| format!("bind AF_PACKET to {ifname}: {e}"))?;
            let one: libc::c_int = 1;
            // SAFETY: setsockopt with a valid fd and a c_int option value
            // that outlives the call (PACKET_QDISC_BYPASS takes an int).
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_QDISC_BYPASS,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            if rc != 0 {
                return Err(format!(
                    "PACKET_QDISC_BYPASS: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(fd)
        })??;
        Ok(Injector { fd })
    }

    /// Sends one frame; `Ok(false)` if the veth ring was full (ENOBUFS).
    fn try_send(&self, frame: &[u8]) -> Res<bool> {
        match nix::sys::socket::send(
            self.fd.as_raw_fd(),
            frame,
            nix::sys::socket::MsgFlags::empty(),
        ) {
            Ok(_) => Ok(true),
            Err(nix::errno::Errno::ENOBUFS) | Err(nix::errno::Errno::EAGAIN) => Ok(false),
            Err(e) => Err(format!("AF_PACKET send: {e}").into()),
        }
    }

    /// Sends every frame, waiting while the ring is full.
    fn send_all(&self, frames: &[Vec<u8>]) -> Res<()> {
        for f in frames {
            let t0 = Instant::now();
            while !self.try_send(f)? {
                if t0.elapsed() > Duration::from_secs(2) {
                    return Err("the veth ring stayed full for 2 s while seeding".into());
                }
                std::thread::yield_now();
            }
        }
        Ok(())
    }
}

/// CPUs online (`/sys/devices/system/cpu/online`, e.g. `0-1`): not this
/// thread's affinity, which the test-run part narrowed to CPU 0.
fn cpus_online() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| {
            s.trim()
                .split(',')
                .filter_map(|r| r.rsplit('-').next()?.parse::<usize>().ok())
                .max()
        })
        .map_or(1, |m| m + 1)
}

/// Turns threaded NAPI on for `ifname` in `ns` and returns the pid of its
/// NAPI kthread (`napi/<ifname>-<napi id>`), pinned to `cpu`. The veth
/// has one NAPI instance once an XDP program is attached.
fn threaded_napi(ns: &NetNs, ifname: &str, cpu: usize) -> Res<i32> {
    let found = enable_threaded_napi(ns, ifname)
        .map_err(|e| format!("turning on threaded NAPI on {ifname}: {e}"))?;
    let &[pid] = found.as_slice() else {
        return Err(format!(
            "{} NAPI threads named napi/{ifname}-* after turning on threaded NAPI (expected 1)",
            found.len()
        )
        .into());
    };
    pin_thread(pid, cpu)?;
    Ok(i32::try_from(pid)?)
}

/// CPU time of thread `pid` so far, ns.
fn cpu_ns(pid: i32) -> Res<u64> {
    let clk = nix::time::clock_getcpuclockid(Pid::from_raw(pid))
        .map_err(|e| format!("clock_getcpuclockid({pid}): {e}"))?;
    let t = nix::time::clock_gettime(clk)?;
    Ok(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

/// `/proc/net/dev` of the measured namespace, opened from a thread inside
/// it (the file keeps showing that namespace); `rx_packets` of one
/// interface.
struct RxCounter {
    file: File,
    ifname: String,
}

impl RxCounter {
    fn new(ns: &NetNs, ifname: &str) -> Res<Self> {
        let file = ns.run(|| File::open("/proc/thread-self/net/dev"))??;
        let c = RxCounter {
            file,
            ifname: ifname.to_string(),
        };
        c.read()?;
        Ok(c)
    }

    fn read(&self) -> Res<u64> {
        let mut f = &self.file;
        f.seek(SeekFrom::Start(0))?;
        let mut s = String::new();
        f.read_to_string(&mut s)?;
        for line in s.lines() {
            if let Some((name, rest)) = line.split_once(':') {
                if name.trim() == self.ifname {
                    return rest
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| format!("/proc/net/dev: bad line {line:?}").into());
                }
            }
        }
        Err(format!("{} not in the namespace's /proc/net/dev", self.ifname).into())
    }
}

/// One counted measurement.
struct Sample {
    packets: u64,
    cpu_ns: u64,
    wall_s: f64,
    /// rx_packets grew in the 50 ms after the measurement: the loop is alive.
    alive: bool,
}

impl Sample {
    fn mpps(&self) -> f64 {
        if self.cpu_ns == 0 {
            0.0
        } else {
            self.packets as f64 * 1e3 / self.cpu_ns as f64
        }
    }
}

struct Bench {
    _veth: VethPair,
    lb_ns: NetNs,
    cl_ns: NetNs,
    lb_if: String,
    lb: XdpLb,
    vip: Vip,
    pass: XdpPass,
    reflect: XdpReflect,
    lb_link: XdpLink,
    _reflect_link: XdpLink,
    inj: Injector,
    rx: RxCounter,
    napi_pid: i32,
    lb_cpu: usize,
}

/// The paths: name, verdict, reflector mode, seed frames.
struct PathSpec {
    name: &'static str,
    tx: bool,
    mode: ReflectMode,
    frame: fn(usize) -> Vec<u8>,
}

const PATHS: [PathSpec; 4] = [
    PathSpec {
        name: "lru_hit",
        tx: true,
        mode: ReflectMode::Same,
        frame: |_| tcp(Ipv4Addr::new(10, 9, 9, 9), 40000, VIP, false),
    },
    PathSpec {
        name: "lru_hit_64k",
        tx: true,
        mode: ReflectMode::Cycle { flows: FLOWS_64K },
        frame: |i| tcp(Ipv4Addr::from(0x0a00_0000 + i as u32), 40000, VIP, false),
    },
    PathSpec {
        name: "new_flow",
        tx: true,
        mode: ReflectMode::NewFlow,
        frame: |i| tcp(Ipv4Addr::from(0x0a00_0000 + i as u32), 1024, VIP, true),
    },
    PathSpec {
        name: "non_vip",
        tx: false,
        mode: ReflectMode::Same,
        frame: |_| tcp(Ipv4Addr::new(10, 9, 9, 9), 40000, NON_VIP, false),
    },
];

impl Bench {
    fn new() -> Res<Self> {
        let ncpu = cpus_online();
        // One CPU for both ends (as the issue measured): each NAPI
        // instance drains its ring in full batches while the other waits,
        // as a busy NIC queue does. Not CPU 0, where this thread runs.
        let (lb_cpu, cl_cpu) = (ncpu - 1, ncpu - 1);
        let lb_ns = NetNs::new("lvlb")?;
        let cl_ns = NetNs::new("lvcl")?;
        // No IPv6: no router solicitations or DAD frames in the loop.
        for ns in [&lb_ns, &cl_ns] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        // The non-VIP loop: the measured end forwards non-VIP frames back
        // to the client (same interface), without redirects or rp_filter.
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.default.send_redirects", "0"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            lb_ns.sysctl(k, v)?;
        }
        let lb_if = unique_name("l");
        let cl_if = unique_name("c");
        let veth = VethPair::new(&lb_ns, &lb_if, &cl_ns, &cl_if)?;
        lb_ns.set_mac(&lb_if, LB_MAC)?;
        cl_ns.set_mac(&cl_if, CLIENT_MAC)?;
        lb_ns.ip(&["addr", "add", "10.99.0.2/24", "dev", &lb_if])?;
        lb_ns.ip(&[
            "neigh",
            "replace",
            "10.99.0.1",
            "lladdr",
            &flowpin_testing::mac_str(CLIENT_MAC),
            "nud",
            "permanent",
            "dev",
            &lb_if,
        ])?;
        lb_ns.ip(&["route", "add", &format!("{NON_VIP}/32"), "via", "10.99.0.1"])?;

        let mut lb = XdpLb::load(XdpLbConfig::default())?;
        lb.set_next_hop(LB_MAC, CLIENT_MAC)?;
        let vip = Vip::new(VIP.into(), 80, Proto::Tcp);
        lb.add_vip(vip, VipFlags::NONE)?;
        let backends: Vec<Backend> = (1..=BACKENDS)
            .map(|i| Backend::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, i))))
            .collect();
        lb.set_backends(&vip, &backends)?;
        let pass = XdpPass::load(Default::default())?;
        let reflect = XdpReflect::load(XdpReflectConfig::default().macs(CLIENT_MAC, LB_MAC))?;

        let native = |ns: &NetNs, ifname: &str| {
            XdpTarget::ifname_in_netns(ifname, ns.path()).mode(XdpAttachMode::Native)
        };
        let reflect_link = reflect.attach(native(&cl_ns, &cl_if))?;
        let lb_link = lb.attach(native(&lb_ns, &lb_if))?;
        let napi_pid = threaded_napi(&lb_ns, &lb_if, lb_cpu)?;
        threaded_napi(&cl_ns, &cl_if, cl_cpu)?;
        let inj = Injector::new(&cl_ns, &cl_if)?;
        let rx = RxCounter::new(&lb_ns, &lb_if)?;
        Ok(Bench {
            _veth: veth,
            lb_ns,
            cl_ns,
            lb_if,
            lb,
            vip,
            pass,
            reflect,
            lb_link,
            _reflect_link: reflect_link,
            inj,
            rx,
            napi_pid,
            lb_cpu,
        })
    }

    /// Waits until the measured end sees no frame for 30 ms (at most 2 s).
    fn quiet(&self) -> Res<()> {
        let t0 = Instant::now();
        let mut last = self.rx.read()?;
        loop {
            nap(0.03)?;
            let now = self.rx.read()?;
            if now == last {
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(2) {
                return Err("the loop did not drain within 2 s".into());
            }
            last = now;
        }
    }

    /// Drains the loop, then seeds `burst` fresh frames of `spec`.
    fn reseed(&self, spec: &PathSpec, burst: usize) -> Res<()> {
        self.reflect.set_mode(ReflectMode::Drop)?;
        self.quiet()?;
        self.reflect.set_mode(spec.mode)?;
        let frames: Vec<Vec<u8>> = (0..burst).map(spec.frame).collect();
        self.inj.send_all(&frames)
    }

    /// Settles, then counts for `opts.secs`; xdp_lb's VIP counters before
    /// and after the counted time.
    fn measure(&self, opts: &LiveOpts) -> Res<(Sample, VipStats, VipStats)> {
        nap(opts.settle)?;
        let before = self.vip_stats()?;
        let (c0, r0, t0) = (cpu_ns(self.napi_pid)?, self.rx.read()?, Instant::now());
        nap(opts.secs)?;
        let (c1, r1, el) = (
            cpu_ns(self.napi_pid)?,
            self.rx.read()?,
            t0.elapsed().as_secs_f64(),
        );
        let after = self.vip_stats()?;
        nap(0.05)?;
        let alive = self.rx.read()? > r1;
        let s = Sample {
            packets: r1 - r0,
            cpu_ns: c1.saturating_sub(c0),
            wall_s: el,
            alive,
        };
        Ok((s, before, after))
    }

    fn vip_stats(&self) -> Res<VipStats> {
        Ok(self.lb.vip_stats(&self.vip)?)
    }

    fn path(&self, spec: &PathSpec, opts: &LiveOpts) -> Res<LivePath> {
        let limit_fd = if spec.tx {
            self.reflect.empty_tx_fd()
        } else {
            self.pass.program_fd()
        };
        if matches!(spec.mode, ReflectMode::Cycle { .. }) {
            // Warm-up, not counted: xdp_lb sees every flow of the cycle
            // (twice) before the first round.
            self.lb_link.update_program(self.lb.program_fd())?;
            self.reseed(spec, opts.burst)?;
            let start = self.vip_stats()?.packets;
            let t0 = Instant::now();
            while self.vip_stats()?.packets < start + 2 * u64::from(FLOWS_64K) {
                if t0.elapsed() > Duration::from_secs(10) {
                    return Err(format!("{}: warm-up: the loop does not run", spec.name).into());
                }
                nap(0.02)?;
            }
        }
        let (mut prog, mut limit, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut wall, mut share) = (Vec::new(), Vec::new());
        let mut lb_delta = VipStats::default();
        for round in 0..opts.rounds {
            let order = if round.is_multiple_of(2) {
                [true, false]
            } else {
                [false, true]
            };
            let mut r = [0f64; 2];
            for is_prog in order {
                if is_prog {
                    self.lb_link.update_program(self.lb.program_fd())?;
                } else {
                    self.lb_link.update_program(limit_fd)?;
                }
                self.reseed(spec, opts.burst)?;
                let (s, before, after) = self.measure(opts)?;
                let what = if is_prog {
                    "xdp_lb"
                } else {
                    "the empty program"
                };
                if s.packets == 0 || s.cpu_ns == 0 || !s.alive {
                    return Err(format!(
                        "{}: the loop did not run with {what} (round {round}: {} packets, {} ns CPU, alive after: {})",
                        spec.name, s.packets, s.cpu_ns, s.alive
                    )
                    .into());
                }
                if is_prog {
                    add_delta(&mut lb_delta, &before, &after);
                    prog.push(s.mpps());
                    wall.push(s.packets as f64 / s.wall_s / 1e6);
                    share.push(s.cpu_ns as f64 / 1e9 / s.wall_s);
                    r[0] = s.mpps();
                } else {
                    limit.push(s.mpps());
                    r[1] = s.mpps();
                }
            }
            ratios.push(r[0] / r[1]);
        }
        self.reflect.set_mode(ReflectMode::Drop)?;
        self.quiet()?;
        self.lb_link.update_program(self.lb.program_fd())?;
        let (check, miss_rate) = check_path(spec.name, &lb_delta)?;
        Ok(LivePath {
            name: spec.name,
            verdict: if spec.tx { "XDP_TX" } else { "XDP_PASS" },
            mpps: median(prog),
            limit_mpps: median(limit),
            ratio: median(ratios.clone()),
            round_ratios: ratios,
            wall_mpps: median(wall),
            cpu_share: median(share),
            check,
            miss_rate,
        })
    }
}

fn add_delta(acc: &mut VipStats, before: &VipStats, after: &VipStats) {
    acc.packets += after.packets - before.packets;
    acc.lru_hit += after.lru_hit - before.lru_hit;
    acc.lru_miss += after.lru_miss - before.lru_miss;
    acc.new_flows += after.new_flows - before.new_flows;
}

/// What xdp_lb's counters must say about each path over its rounds, and
/// the connection-table miss rate.
fn check_path(name: &str, d: &VipStats) -> Res<(String, f64)> {
    let lookups = d.lru_hit + d.lru_miss;
    let miss = if lookups == 0 {
        0.0
    } else {
        d.lru_miss as f64 / lookups as f64
    };
    let p = d.packets.max(1) as f64;
    // The counters of one packet are bumped one after the other and read
    // while the loop runs: a few packets may be half counted.
    let near = |a: u64, b: u64| a.abs_diff(b) <= 256;
    let ok = match name {
        // One flow: every packet a table hit (but the very first).
        "lru_hit" => d.lru_hit as f64 >= 0.999 * p,
        // SYNs: every packet a new flow by the ring.
        "new_flow" => near(d.new_flows, d.packets),
        // 64 K flows cycling: table lookups all (hits or misses).
        "lru_hit_64k" => near(lookups, d.packets),
        // Not a VIP: the VIP saw nothing.
        _ => d.packets == 0,
    };
    let text = format!(
        "VIP packets {}, table hits {}, misses {}, new flows {}",
        d.packets, d.lru_hit, d.lru_miss, d.new_flows
    );
    if !ok || (name != "non_vip" && d.packets == 0) {
        return Err(format!("{name}: xdp_lb's counters do not match the path: {text}").into());
    }
    Ok((text, miss))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Builds the loop, measures every path, removes everything.
pub(crate) fn run(opts: &LiveOpts) -> Res<Live> {
    if opts.burst == 0 || opts.burst > 250 {
        return Err(format!(
            "--live-burst {} must be 1..=250 (the veth ring holds 256 frames: more would drop)",
            opts.burst
        )
        .into());
    }
    // Ctrl-C: stop at the next nap, the guards remove namespaces and links.
    if let Err(e) = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::Relaxed)) {
        eprintln!("xdp_bench: no Ctrl-C handler ({e}); Ctrl-C may leave namespaces behind");
    }
    let load_before = loadavg();
    let b = Bench::new()?;
    let mode = b.lb_link.mode();
    eprintln!(
        "live: {} (netns {}) <-> client (netns {}), xdp_lb {mode}, NAPI thread {} on CPU {} (the client's too), {} frames looping, {} rounds x ({} s + {} s settle) x 2 per path",
        b.lb_if,
        b.lb_ns.name(),
        b.cl_ns.name(),
        b.napi_pid,
        b.lb_cpu,
        opts.burst,
        opts.rounds,
        opts.secs,
        opts.settle
    );
    let mut paths = Vec::new();
    for spec in &PATHS {
        paths.push(b.path(spec, opts)?);
    }
    let rs = b.reflect.stats()?;
    if rs.reflected == 0 || rs.decapsulated == 0 {
        return Err(format!("the reflector reflected nothing: {rs:?}").into());
    }
    let lb_cpu = b.lb_cpu;
    let area =
        b.lb.conn_sets_per_cpu() as usize * flowpin_bpf_progs::xdp_lb::CONN_SET_BYTES as usize;
    drop(b);
    let load_after = loadavg();
    // The work of one lru_hit packet on the loop, between two loads.
    let spacing = paths
        .iter()
        .find(|p| p.name == "lru_hit")
        .map_or(100.0, |p| 1e3 / p.mpps)
        .clamp(1.0, 10_000.0);
    let mut line_loads = Vec::new();
    for lines in [FLOWS_64K as usize, area / 64] {
        line_loads.push(super::memory::measure(area, lines, spacing, lb_cpu)?);
    }
    Ok(Live {
        paths,
        lb_cpu,
        mode,
        load_before,
        load_after,
        line_loads,
    })
}
