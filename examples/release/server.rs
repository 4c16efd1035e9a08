//! Server mode: this binary re-executed by the harness as one server
//! process of one release. Binds (or receives) its sockets the way its
//! strategy says, echoes TCP and UDP, and follows the harness's commands on
//! stdin (`handover`, `stop`, `ok`).

use std::io::{BufRead, ErrorKind, IoSlice, IoSliceMut, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowpin::sk_reuseport::{bind_reuseport, GroupConfig, Proto, ReuseportGroup, SelectMode};
use flowpin_testing::enter_netns;

use crate::{Args, Res, Strategy, IP, UDP_SOCKETS_PER_PROCESS};

struct Sockets {
    tcp: TcpListener,
    udp: Vec<UdpSocket>,
}

fn bind_plain(addr: SocketAddr) -> Res<Sockets> {
    // The old process has just exited; retry while the port is still held.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = (|| -> std::io::Result<Sockets> {
            let t = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            t.set_reuse_address(true)?;
            t.bind(&addr.into())?;
            t.listen(1024)?;
            let u = UdpSocket::bind(addr)?;
            Ok(Sockets {
                tcp: t.into(),
                udp: vec![u],
            })
        })();
        match r {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => return Err(format!("bind {addr}: {e}").into()),
        }
    }
}

fn bind_group(addr: SocketAddr) -> Res<Sockets> {
    let tcp: TcpListener = bind_reuseport(addr, Proto::Tcp)?.into();
    let mut udp = Vec::new();
    for _ in 0..UDP_SOCKETS_PER_PROCESS {
        let s: UdpSocket = bind_reuseport(addr, Proto::Udp)?.into();
        udp.push(s);
    }
    Ok(Sockets { tcp, udp })
}

/// fd-passing: receive the predecessor's sockets (TCP listener first) and
/// its label. The connection stays open: the forwarder sends the packets of
/// the predecessor's flows back over it.
fn take_over(path: &Path) -> Res<(Sockets, u32, UnixStream)> {
    let s = UnixStream::connect(path)?;
    let mut buf = [0u8; 4];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 8]);
    let msg = nix::sys::socket::recvmsg::<()>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(v) = c {
            for fd in v {
                // SAFETY: the kernel just installed this fd in our table for us
                // (SCM_RIGHTS); nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg.bytes != 4 {
        return Err("the predecessor did not send its label".into());
    }
    let prev = u32::from_be_bytes(buf);
    let mut it = fds.into_iter();
    let tcp = TcpListener::from(it.next().ok_or("no TCP listener received")?);
    let udp: Vec<UdpSocket> = it.map(UdpSocket::from).collect();
    if udp.is_empty() {
        return Err("no UDP socket received".into());
    }
    Ok((Sockets { tcp, udp }, prev, s))
}

/// Sends our sockets and label to the successor; returns the connection
/// (the forwarder's channel).
fn hand_over(ctl: &UnixListener, socks: &Sockets, label: u32) -> Res<UnixStream> {
    let (conn, _) = ctl.accept()?;
    let mut fds = vec![socks.tcp.as_raw_fd()];
    fds.extend(socks.udp.iter().map(|u| u.as_raw_fd()));
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(
        conn.as_raw_fd(),
        &[IoSlice::new(&label.to_be_bytes())],
        &cmsg,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )?;
    Ok(conn)
}

struct Flags {
    accepting: AtomicBool,
    /// Stop reading the UDP sockets now (queued packets are the successor's).
    udp_quit_now: AtomicBool,
    /// Answer what is queued, then stop reading the UDP sockets.
    udp_quit_when_empty: AtomicBool,
}

fn serve_tcp(
    l: TcpListener,
    label: u32,
    flags: Arc<Flags>,
) -> std::thread::JoinHandle<TcpListener> {
    std::thread::spawn(move || {
        let _ = l.set_nonblocking(true);
        while flags.accepting.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                    let mut b = [0u8; 64];
                    if let Ok(n) = s.read(&mut b) {
                        let mut reply = format!("{label}:").into_bytes();
                        reply.extend_from_slice(&b[..n]);
                        let _ = s.write_all(&reply);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        l
    })
}

/// A UDP request is `[seq u32][cid u32]`: `cid` is the label of the server
/// that owns the flow, echoed by the client like a QUIC connection ID (0
/// before the first reply). The reply is `[label u32][seq u32]`.
fn reply_to(label: u32, req: &[u8]) -> [u8; 8] {
    let mut reply = [0u8; 8];
    reply[..4].copy_from_slice(&label.to_be_bytes());
    let k = req.len().min(4);
    reply[4..4 + k].copy_from_slice(&req[..k]);
    reply
}

fn cid_of(req: &[u8]) -> u32 {
    match req.get(4..8) {
        Some(c) => u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
        None => 0,
    }
}

fn now_ns() -> u64 {
    // The wall clock is shared by the two processes of a hand-over.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// fd-passing-forwarder, new process side: the channel to the predecessor,
/// `None` once the predecessor has said it is leaving.
struct Forward {
    /// Our own label: the connection id of the flows we own.
    own: u32,
    chan: Mutex<Option<UnixStream>>,
}

/// One forwarded packet: `[ipv4 4][port 2][stamp ns 8][len 1][payload]`.
const FRAME_HEAD: usize = 15;

impl Forward {
    /// Forwards the packet to the predecessor while it runs, unless the
    /// flow is ours (`cid` = our label) or new (`cid` 0); `false` = serve
    /// it here. Flows of processes older than the predecessor (their owner
    /// has left; the client has not heard from a newer one yet) go to the
    /// predecessor too, which took them over: one process answers a flow.
    fn forward(&self, cid: u32, from: SocketAddr, req: &[u8]) -> bool {
        if cid == 0 || cid == self.own {
            return false;
        }
        let SocketAddr::V4(from) = from else {
            return false;
        };
        let Ok(mut chan) = self.chan.lock() else {
            return false;
        };
        let Some(s) = chan.as_mut() else {
            return false;
        };
        let n = req.len().min(255);
        let mut f = Vec::with_capacity(FRAME_HEAD + n);
        f.extend_from_slice(&from.ip().octets());
        f.extend_from_slice(&from.port().to_be_bytes());
        f.extend_from_slice(&now_ns().to_be_bytes());
        f.push(n as u8);
        f.extend_from_slice(&req[..n]);
        s.write_all(&f).is_ok()
    }

    /// Waits for the predecessor's end of stream (it leaves), then closes
    /// our side, so it knows that nothing more is on its way.
    fn watch(self: Arc<Self>, mut reader: UnixStream) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut b = [0u8; 64];
            while matches!(reader.read(&mut b), Ok(n) if n > 0) {}
            if let Ok(mut chan) = self.chan.lock() {
                if let Some(s) = chan.take() {
                    let _ = s.shutdown(std::net::Shutdown::Write);
                }
            }
        })
    }
}

fn serve_udp(
    u: UdpSocket,
    label: u32,
    flags: Arc<Flags>,
    fwd: Option<Arc<Forward>>,
) -> std::thread::JoinHandle<UdpSocket> {
    std::thread::spawn(move || {
        let _ = u.set_read_timeout(Some(Duration::from_millis(20)));
        let mut b = [0u8; 64];
        let handle = |u: &UdpSocket, req: &[u8], from: SocketAddr| {
            if let Some(f) = &fwd {
                if f.forward(cid_of(req), from, req) {
                    return;
                }
            }
            let _ = u.send_to(&reply_to(label, req), from);
        };
        loop {
            if flags.udp_quit_now.load(Ordering::Relaxed) {
                break;
            }
            if flags.udp_quit_when_empty.load(Ordering::Relaxed) {
                // Answer what is queued now, then close. MSG_DONTWAIT per
                // call, not O_NONBLOCK: after an fd hand-over the file
                // description is shared with the successor, and flipping
                // its flags would make the successor's reads spin.
                let sock = socket2::SockRef::from(&u);
                loop {
                    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
                    let Ok((n, from)) =
                        sock.recv_from_with_flags(&mut buf, nix::libc::MSG_DONTWAIT)
                    else {
                        break;
                    };
                    let Some(from) = from.as_socket() else {
                        continue;
                    };
                    for (d, s) in b.iter_mut().zip(&buf[..n]) {
                        // SAFETY: recv_from_with_flags initialised the first n bytes.
                        *d = unsafe { s.assume_init() };
                    }
                    handle(&u, &b[..n], from);
                }
                break;
            }
            if let Ok((n, from)) = u.recv_from(&mut b) {
                handle(&u, &b[..n], from);
            }
        }
        u
    })
}

/// fd-passing-forwarder, old process side: answers the packets the
/// successor forwards until it closes the channel; returns the latency of
/// each (successor's receipt → our reply sent), in ns.
fn serve_forwarded(
    mut chan: UnixStream,
    u: UdpSocket,
    label: u32,
) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut lat = Vec::new();
        let mut head = [0u8; FRAME_HEAD];
        let mut payload = [0u8; 255];
        while chan.read_exact(&mut head).is_ok() {
            let n = head[14] as usize;
            if chan.read_exact(&mut payload[..n]).is_err() {
                break;
            }
            let ip = Ipv4Addr::new(head[0], head[1], head[2], head[3]);
            let port = u16::from_be_bytes([head[4], head[5]]);
            let mut stamp = [0u8; 8];
            stamp.copy_from_slice(&head[6..14]);
            let from = SocketAddr::V4(SocketAddrV4::new(ip, port));
            let _ = u.send_to(&reply_to(label, &payload[..n]), from);
            lat.push(now_ns().saturating_sub(u64::from_be_bytes(stamp)));
        }
        lat
    })
}

fn say(line: &str) -> Res<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{line}")?;
    o.flush()?;
    Ok(())
}

/// CPU time (user + system) this process has used, all threads, µs.
fn cpu_us() -> u64 {
    // SAFETY: getrusage writes a `rusage` we own; all-zero is a valid value.
    let mut ru: nix::libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer to our struct.
    if unsafe { nix::libc::getrusage(nix::libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let us = |t: nix::libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

pub(crate) fn serve(args: &Args, strategy: Strategy) -> Res<()> {
    if let Some(ns) = &args.netns {
        // setns on the main thread before any other thread exists, so every
        // thread of this process lives in the namespace. (Not `ip netns exec`:
        // it remounts /sys, hiding the bpffs at /sys/fs/bpf.)
        enter_netns(ns, &ns.display().to_string())?;
    }
    let addr: SocketAddr = SocketAddr::new(IP.parse()?, args.port);
    let label = args.label;
    let mut groups: Option<(ReuseportGroup, ReuseportGroup)> = None;
    let mut gens = None;
    let mut fwd: Option<Arc<Forward>> = None;
    let mut watcher = None;
    let socks = match strategy {
        Strategy::Naive => bind_plain(addr)?,
        Strategy::Reuseport | Strategy::ReuseportNoMigrate => bind_group(addr)?,
        Strategy::FdPassing | Strategy::FdPassingForwarder => match &args.takeover {
            Some(p) => {
                let (s, _prev, chan) = take_over(p)?;
                if strategy == Strategy::FdPassingForwarder {
                    let f = Arc::new(Forward {
                        own: label,
                        chan: Mutex::new(Some(chan.try_clone()?)),
                    });
                    watcher = Some(f.clone().watch(chan));
                    fwd = Some(f);
                }
                s
            }
            None => bind_group(addr)?,
        },
        Strategy::Flowpin => {
            let pin = args.pin.clone().ok_or("flowpin needs --pin")?;
            let (tg, ug) = if args.first {
                let mut tc = GroupConfig::new(pin.join("tcp"));
                tc.tcp_mode = SelectMode::Hash;
                let mut uc = GroupConfig::new(pin.join("udp"));
                uc.flow_table_size = 16_384;
                (
                    ReuseportGroup::create(addr, Proto::Tcp, tc)?,
                    ReuseportGroup::create(addr, Proto::Udp, uc)?,
                )
            } else {
                (
                    ReuseportGroup::join(pin.join("tcp"))?,
                    ReuseportGroup::join(pin.join("udp"))?,
                )
            };
            let s = bind_group(addr)?;
            // Bound but not in the maps: this process gets nothing yet (warm-up).
            let tgen = tg.add_generation(&[&s.tcp])?;
            let ugen = ug.add_generation(&s.udp)?;
            ug.activate(ugen)?;
            tg.activate(tgen)?;
            gens = Some((tgen, ugen));
            groups = Some((tg, ug));
            s
        }
    };
    let flags = Arc::new(Flags {
        accepting: AtomicBool::new(true),
        udp_quit_now: AtomicBool::new(false),
        udp_quit_when_empty: AtomicBool::new(false),
    });
    let ctl = match &args.ctl {
        Some(p) => Some(UnixListener::bind(p)?),
        None => None,
    };
    // fd-passing hands over the very same sockets, so keep raw copies for the handover.
    let tcp_t = serve_tcp(socks.tcp.try_clone()?, label, flags.clone());
    let mut udp_t = Vec::new();
    for u in &socks.udp {
        udp_t.push(serve_udp(u.try_clone()?, label, flags.clone(), fwd.clone()));
    }
    say("READY")?;

    let stdin = std::io::stdin();
    let mut line = String::new();
    let mut next = || -> Res<String> {
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Err("harness closed stdin".into());
        }
        Ok(line.trim().to_string())
    };

    let mut forwarded = None;
    let mut chan_out = None;
    let mut cmd = next()?;
    if cmd == "handover" {
        let ctl = ctl.as_ref().ok_or("handover without --ctl")?;
        let chan = hand_over(ctl, &socks, label)?;
        // The successor accepts new TCP connections from now on; we keep
        // serving the ones we accepted.
        flags.accepting.store(false, Ordering::Relaxed);
        if strategy == Strategy::FdPassingForwarder {
            // The successor reads the UDP sockets and forwards our flows'
            // packets to us over `chan`.
            flags.udp_quit_now.store(true, Ordering::Relaxed);
            chan_out = Some(chan.try_clone()?);
            let u = socks.udp.first().ok_or("no UDP socket")?.try_clone()?;
            forwarded = Some(serve_forwarded(chan, u, label));
        }
        // fd-passing: both processes keep reading the shared UDP sockets
        // during the drain, as the talk describes: the kernel cannot tell
        // which process a packet belongs to.
        say("HANDED")?;
        cmd = next()?;
    }
    if cmd != "stop" {
        return Err(format!("expected stop, got {cmd}").into());
    }
    // Old UDP flows stay with us while we drain (flowpin and the forwarder
    // keep them here; the others cannot tell flows apart).
    if strategy != Strategy::Naive {
        std::thread::sleep(Duration::from_millis(args.drain_ms));
    }
    say("CLOSING")?;
    if next()? != "ok" {
        return Err("expected ok".into());
    }
    if let (Some((tg, ug)), Some((tgen, ugen))) = (&groups, gens) {
        // Take our UDP sockets out of the map: our flows re-home to the live
        // generation, and we answer what is already queued before closing.
        // (The last process of the run is still live: nobody to hand over to.)
        if ug.live()? != Some(ugen) {
            ug.remove(ugen)?;
            // Packets that picked our sockets just before the removal may
            // still be on their way to our queues (other CPUs, RCU): keep
            // serving a moment, then answer the rest and close.
            std::thread::sleep(Duration::from_millis(20));
        }
        if tg.live()? != Some(tgen) {
            tg.retire(tgen)?;
        }
    }
    // Forwarder: say we leave (end of stream); the successor stops
    // forwarding, closes its side, and we answer what it sent before.
    if let Some(c) = chan_out {
        c.shutdown(std::net::Shutdown::Write)?;
    }
    if let Some(t) = forwarded {
        let lat = t.join().map_err(|_| "forwarded-packet server panicked")?;
        let list: Vec<String> = lat.iter().map(|n| n.to_string()).collect();
        say(&format!("FWDLAT {}", list.join(",")))?;
    }
    flags.udp_quit_when_empty.store(true, Ordering::Relaxed);
    for t in udp_t {
        let _ = t.join();
    }
    flags.accepting.store(false, Ordering::Relaxed);
    let _ = tcp_t.join();
    // Our predecessor has left long ago (or we had none); the watcher ended then.
    drop(watcher);
    drop(socks); // closing the listener: flowpin migrates its queue; plain reuseport resets it unless tcp_migrate_req
    if let Some(p) = &args.ctl {
        let _ = std::fs::remove_file(p);
    }
    say(&format!("CPU {}", cpu_us()))?;
    Ok(())
}
