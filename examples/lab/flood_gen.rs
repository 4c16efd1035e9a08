//! The flood generator of the flood scenarios ([`crate::flood`]): spoofed
//! TCP SYNs or one-packet UDP flows towards the VIP, written as whole
//! Ethernet frames on an `AF_PACKET` socket of the client namespace's
//! interface (`PACKET_QDISC_BYPASS`, 64 frames per `sendmmsg`), every
//! frame from its own source address and port (198.18.0.0/15, the
//! benchmarking range, routed nowhere: the backends' answers die at the
//! router).
//!
//! The frame template is built once with `etherparse` (valid IPv4 and
//! TCP/UDP checksums: a backend drops a SYN with a bad checksum before its
//! TCP stack sees it, which would make the flood cheaper than a real one);
//! per frame only the source address and port change, and both checksums
//! are adjusted incrementally (RFC 1624).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use flowpin_testing::NetNs;
use nix::libc;

use crate::topo;
use crate::Error;

/// Frames per `sendmmsg` call.
const BATCH: usize = 64;
/// First spoofed source address: 198.18.0.0 (RFC 2544 benchmarking).
const SPOOF_BASE: u32 = 0xc612_0000;
/// Spoofed sources span a /15.
const SPOOF_MASK: u32 = (1 << 17) - 1;

/// What the flood sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloodKind {
    /// TCP SYNs to the VIP's TCP port.
    Syn,
    /// One UDP datagram per flow to `port` (a QUIC long-header-like
    /// payload that the lab's UDP servers ignore).
    Udp { port: u16 },
}

/// Where the frames go: the client's interface and the router's MAC on it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) ifname: String,
    pub(crate) src_mac: [u8; 6],
    pub(crate) dst_mac: [u8; 6],
}

/// A running flood; [`Flood::stop`] returns what it sent.
pub(crate) struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    started: Instant,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

/// What a flood sent.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FloodSent {
    pub(crate) packets: u64,
    pub(crate) secs: f64,
}

impl FloodSent {
    /// Offered rate, packets per second.
    pub(crate) fn pps(&self) -> f64 {
        if self.secs > 0.0 {
            self.packets as f64 / self.secs
        } else {
            0.0
        }
    }
}

impl Flood {
    /// Starts flooding from a thread in `client` (its own socket, in that
    /// namespace), as fast as it can (`max_pps` 0) or paced to `max_pps`.
    pub(crate) fn start(
        client: &NetNs,
        target: Target,
        kind: FloodKind,
        max_pps: u64,
    ) -> Result<Flood, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        // The socket is opened inside the namespace; errors come back at once.
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = client.spawn(move || -> Result<(), Error> {
            let sock = match PacketSocket::open(&target.ifname) {
                Ok(s) => {
                    let _ = tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return Err(e);
                }
            };
            flood_loop(&sock, &target, kind, max_pps, &stop2, &sent2)
        })?;
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("flood generator: {e}").into()),
            Err(_) => return Err("flood generator did not start".into()),
        }
        Ok(Flood {
            stop,
            sent,
            started: Instant::now(),
            thread: Some(thread),
        })
    }

    /// Frames sent so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops the generator; what it sent and for how long.
    pub(crate) fn stop(mut self) -> Result<FloodSent, Error> {
        self.stop.store(true, Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| "flood generator panicked")??;
        }
        Ok(FloodSent {
            packets: self.sent(),
            secs,
        })
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An `AF_PACKET` raw socket bound to one interface, send only.
struct PacketSocket {
    fd: OwnedFd,
}

fn os_err(what: &str) -> Error {
    format!("{what}: {}", std::io::Error::last_os_error()).into()
}

impl PacketSocket {
    fn open(ifname: &str) -> Result<PacketSocket, Error> {
        let name = std::ffi::CString::new(ifname)?;
        // SAFETY: plain syscalls on values we own; the name is a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(os_err(&format!("interface {ifname}")));
        }
        // Protocol 0: the socket receives nothing (send only).
        // SAFETY: socket(2) with constant arguments.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(os_err("socket(AF_PACKET)"));
        }
        // SAFETY: `raw` is a new descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: bind(2) with a sockaddr_ll of the stated length.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(os_err(&format!("bind AF_PACKET to {ifname}")));
        }
        let one: libc::c_int = 1;
        // SAFETY: setsockopt(2) with an int option value of the stated size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if r < 0 {
            return Err(os_err("PACKET_QDISC_BYPASS"));
        }
        Ok(PacketSocket { fd })
    }

    /// Sends `frames` (whole Ethernet frames) with one `sendmmsg`; the
    /// number the kernel took (0 when its queue is full).
    fn send_batch(&self, frames: &mut [Vec<u8>]) -> usize {
        let mut iov: Vec<libc::iovec> = frames
            .iter_mut()
            .map(|f| libc::iovec {
                iov_base: f.as_mut_ptr().cast(),
                iov_len: f.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: mmsghdr is plain data; all-zero is a valid value.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: every mmsghdr points at one iovec, every iovec at a live
        // frame buffer; all outlive the call. The socket is bound, so no
        // address is needed.
        let r =
            unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
        usize::try_from(r).unwrap_or(0)
    }
}

/// A frame template and the byte offsets the generator patches.
struct Template {
    frame: Vec<u8>,
    /// Sum (ones' complement, unfolded) of the IPv4 header with source 0.
    ip_base: u32,
    /// Sum of the L4 checksum's inputs with source address and port 0.
    l4_base: u32,
    l4_csum_off: usize,
    sport_off: usize,
    /// UDP: a computed checksum of 0 is sent as 0xffff.
    udp: bool,
}

const ETH_LEN: usize = 14;
const IP_SRC_OFF: usize = ETH_LEN + 12;
const IP_CSUM_OFF: usize = ETH_LEN + 10;

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

impl Template {
    fn new(t: &Target, kind: FloodKind) -> Result<Template, Error> {
        let b = PacketBuilder::ethernet2(t.src_mac, t.dst_mac).ipv4(
            [0, 0, 0, 0],
            topo::VIP.octets(),
            64,
        );
        let mut frame = Vec::new();
        let (udp, payload): (bool, Vec<u8>) = match kind {
            FloodKind::Syn => {
                let b = b.tcp(0, topo::VIP_PORT, 0x1234_5678, 64240).syn();
                b.write(&mut frame, &[])?;
                (false, Vec::new())
            }
            FloodKind::Udp { port } => {
                // QUIC long header (Initial-like): first byte 0xc0, version 1.
                let mut p = vec![0u8; 40];
                p[0] = 0xc0;
                p[4] = 1;
                let b = b.udp(0, port);
                b.write(&mut frame, &p)?;
                (true, p)
            }
        };
        let _ = payload;
        let l4_off = ETH_LEN + 20;
        let (l4_csum_off, sport_off) = (l4_off + if udp { 6 } else { 16 }, l4_off);
        // The checksums the builder wrote cover source 0.0.0.0:0; their
        // complements are the base sums the patches add to.
        let ip_csum = u16::from_be_bytes([frame[IP_CSUM_OFF], frame[IP_CSUM_OFF + 1]]);
        let l4_csum = u16::from_be_bytes([frame[l4_csum_off], frame[l4_csum_off + 1]]);
        Ok(Template {
            frame,
            ip_base: u32::from(!ip_csum),
            l4_base: u32::from(!l4_csum),
            l4_csum_off,
            sport_off,
            udp,
        })
    }

    /// Writes flow `n`'s source (address and port) and checksums into `f`.
    fn patch(&self, f: &mut [u8], n: u32) {
        let src = SPOOF_BASE | (n & SPOOF_MASK);
        let sport = 1024 + ((n >> 17) as u16 ^ (n as u16).rotate_left(5)) % 64000;
        f[IP_SRC_OFF..IP_SRC_OFF + 4].copy_from_slice(&src.to_be_bytes());
        f[self.sport_off..self.sport_off + 2].copy_from_slice(&sport.to_be_bytes());
        let addr = (src >> 16) + (src & 0xffff);
        let ip = !fold(self.ip_base + addr);
        f[IP_CSUM_OFF..IP_CSUM_OFF + 2].copy_from_slice(&ip.to_be_bytes());
        let mut l4 = !fold(self.l4_base + addr + u32::from(sport));
        if self.udp && l4 == 0 {
            l4 = 0xffff;
        }
        f[self.l4_csum_off..self.l4_csum_off + 2].copy_from_slice(&l4.to_be_bytes());
    }
}

fn flood_loop(
    sock: &PacketSocket,
    target: &Target,
    kind: FloodKind,
    max_pps: u64,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> Result<(), Error> {
    let t = Template::new(target, kind)?;
    let mut frames: Vec<Vec<u8>> = (0..BATCH).map(|_| t.frame.clone()).collect();
    // A multiplicative sequence: consecutive flows far apart in address
    // and port, none repeating for 2^32 frames.
    let mut n: u32 = 0x9e37_79b9;
    let start = Instant::now();
    let mut total = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if max_pps > 0 {
            let due = (start.elapsed().as_secs_f64() * max_pps as f64) as u64;
            if total >= due {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
        }
        for f in frames.iter_mut() {
            n = n.wrapping_mul(0x0019_660d).wrapping_add(0x3c6e_f35f);
            t.patch(f, n);
        }
        let k = sock.send_batch(&mut frames);
        if k == 0 {
            // Queue full (or the interface is going away): yield.
            std::thread::yield_now();
        }
        total += k as u64;
        sent.store(total, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The incremental checksums equal freshly computed ones.
    #[test]
    fn patched_checksums_are_valid() {
        let target = Target {
            ifname: "x".into(),
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
        };
        for kind in [FloodKind::Syn, FloodKind::Udp { port: 443 }] {
            let t = Template::new(&target, kind).expect("template");
            for n in [1u32, 0xdead_beef, 0x1_ffff, 77] {
                let mut f = t.frame.clone();
                t.patch(&mut f, n);
                let p = etherparse::SlicedPacket::from_ethernet(&f).expect("parse");
                let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
                    panic!("not IPv4");
                };
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum());
                match &p.transport {
                    Some(etherparse::TransportSlice::Tcp(tcp)) => {
                        let want = tcp
                            .to_header()
                            .calc_checksum_ipv4(&h, tcp.payload())
                            .expect("checksum");
                        assert_eq!(tcp.checksum(), want);
                    }
                    Some(etherparse::TransportSlice::Udp(udp)) => {
                        let want = udp
                            .to_header()
                            .calc_checksum_ipv4(&h, udp.payload())
                            .expect("checksum");
                        assert_eq!(udp.checksum(), want);
                    }
                    other => panic!("unexpected transport {other:?}"),
                }
            }
        }
    }
}
