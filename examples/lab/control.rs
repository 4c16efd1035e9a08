//! The LB control side as its own process (`lab --lb-control ...`): it
//! loads `xdp_lb` on an LB host, pins its state and link, and applies the
//! lab's changes; or, started with `reopen`, it finds a pinned LB again
//! (`XdpLb::open_pinned`, `XdpLink::from_pinned`) — as a real LB agent does
//! after a crash, a release or an upgrade of itself.
//!
//! Protocol: the child prints `ready <ms to load or reopen>`, then answers
//! each stdin line with one `ok ...` / `err ...` line:
//!
//! | command | action |
//! |---|---|
//! | `ring 0,1,2,3` | `set_backends` with those backends |
//! | `drain 3` / `remove 3` | `drain_backend` / `remove_backend` |
//! | `upgrade` | `XdpLb::upgrade` into the pinned link (this build's program): `ok <old program id> <new program id>` |
//! | `stats` | `ok <packets dropped by the program> <packets routed by server_id>` |
//!
//! It exits when stdin closes, and dies with the lab (`PR_SET_PDEATHSIG`),
//! leaving its pins for the next controller; the lab removes them
//! ([`PinDirs`]) on every exit path.

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use flowpin_bpf_progs::link::Link;
use flowpin_bpf_progs::xdp_attach::{XdpLink, XdpTarget};
use flowpin_bpf_progs::xdp_lb::{LbStats, VipFlags, XdpLb, XdpLbConfig};

use crate::topo::{self, mac_text, Topology};
use crate::Error;

/// Packets the program dropped (every drop counter of `xdp_lb`).
pub(crate) fn dropped(s: &LbStats) -> u64 {
    s.drop_malformed + s.drop_unknown_backend + s.drop_too_big
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut b = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut b {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(b)
}

/// Arguments of `lab --lb-control <index> <pin dir> <netns> <load|reopen>
/// <sid|nosid> <lb mac> <next hop mac>`.
#[derive(Debug)]
pub(crate) struct ControlArgs {
    index: usize,
    pin_dir: PathBuf,
    netns: PathBuf,
    reopen: bool,
    server_id_routing: bool,
    lb_mac: [u8; 6],
    next_hop_mac: [u8; 6],
}

impl ControlArgs {
    pub(crate) fn parse(v: &[String]) -> Option<ControlArgs> {
        Some(ControlArgs {
            index: v.first()?.parse().ok()?,
            pin_dir: PathBuf::from(v.get(1)?),
            netns: PathBuf::from(v.get(2)?),
            reopen: v.get(3)? == "reopen",
            server_id_routing: v.get(4)? == "sid",
            lb_mac: parse_mac(v.get(5)?)?,
            next_hop_mac: parse_mac(v.get(6)?)?,
        })
    }
}

/// Entry point of the `lb-control` role.
pub(crate) fn child_main(a: ControlArgs) -> Result<(), Error> {
    // Never outlive the lab, even if it is SIGKILLed.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    let t = Instant::now();
    let (mut lb, link) = if a.reopen {
        let lb = XdpLb::open_pinned(&a.pin_dir)?;
        let link = XdpLink::from_pinned_in_netns(a.pin_dir.join("link"), &a.netns)?;
        (lb, link)
    } else {
        // The same LB as the lab's in-process ones (main.rs `start_lb`).
        let config = XdpLbConfig::default()
            .local_mac(a.lb_mac)
            .next_hop_mac(a.next_hop_mac)
            .tunnel_src_v4((std::net::Ipv4Addr::new(10, 200 + a.index as u8, 0, 0), 16))
            .conn_table_shared(true);
        let mut lb = XdpLb::load(config)?;
        let flags = if a.server_id_routing {
            VipFlags::SERVER_ID
        } else {
            VipFlags::NONE
        };
        lb.add_vip(crate::vip(), flags)?;
        lb.set_backends(&crate::vip(), &crate::backends(&crate::INITIAL_RING))?;
        let mut link = lb.attach(XdpTarget::ifname_in_netns(topo::LB_IF, &a.netns))?;
        lb.pin(&a.pin_dir)?;
        link.pin(a.pin_dir.join("link"))?;
        (lb, link)
    };
    let mut out = std::io::stdout();
    writeln!(out, "ready {:.2}", t.elapsed().as_secs_f64() * 1e3)?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut w = line.split_whitespace();
        let idx = |s: Option<&str>| -> Result<IpAddr, Error> {
            let j: usize = s.ok_or("missing backend index")?.parse()?;
            Ok(IpAddr::V4(topo::backend_addr(j)))
        };
        let vip = crate::vip();
        let r: Result<String, Error> = match w.next() {
            Some("ring") => (|| {
                let ring: Vec<usize> = w
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
                lb.set_backends(&vip, &crate::backends(&ring))?;
                Ok("ok".to_string())
            })(),
            Some("drain") => idx(w.next())
                .and_then(|a| Ok(lb.drain_backend(&vip, a).map(|_| "ok".to_string())?)),
            Some("remove") => idx(w.next())
                .and_then(|a| Ok(lb.remove_backend(&vip, a).map(|_| "ok".to_string())?)),
            Some("upgrade") => (|| {
                let before = link.program_id()?;
                lb.upgrade(&link)?;
                Ok(format!("ok {before} {}", link.program_id()?))
            })(),
            Some("stats") => (|| {
                let g = lb.global_stats()?;
                let v = lb.vip_stats(&vip)?;
                Ok(format!("ok {} {}", dropped(&g), v.sid_routed))
            })(),
            other => Err(format!("unknown command {other:?}").into()),
        };
        match r {
            Ok(s) => writeln!(out, "{s}")?,
            Err(e) => writeln!(out, "err {e}")?,
        }
        out.flush()?;
    }
    Ok(())
}

/// The lab's handle on one LB control process.
pub(crate) struct LbControl {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Milliseconds the child took to load (or reopen) and configure its LB.
    pub(crate) ready_ms: f64,
}

impl LbControl {
    /// Starts the controller of LB `i` on `pin_dir`: a fresh LB (`reopen`
    /// false) or the one pinned there.
    pub(crate) fn start(
        topo: &Topology,
        i: usize,
        pin_dir: &Path,
        reopen: bool,
        server_id_routing: bool,
    ) -> Result<LbControl, Error> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--lb-control")
            .arg(i.to_string())
            .arg(pin_dir)
            .arg(topo.lbs[i].path())
            .arg(if reopen { "reopen" } else { "load" })
            .arg(if server_id_routing { "sid" } else { "nosid" })
            .arg(mac_text(topo.lb_mac[i]))
            .arg(mac_text(topo.router_mac_to_lb[i]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut c = LbControl {
            child,
            stdin,
            stdout,
            ready_ms: 0.0,
        };
        let line = c.read_line()?;
        c.ready_ms = line
            .strip_prefix("ready ")
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| format!("LB{} control said {line:?}, expected ready", i + 1))?;
        Ok(c)
    }

    fn read_line(&mut self) -> Result<String, Error> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err("the LB control process exited (see its error above)".into());
        }
        Ok(line.trim().to_string())
    }

    /// Sends one command; its `ok` answer (without `ok`), or an error.
    pub(crate) fn cmd(&mut self, c: &str) -> Result<String, Error> {
        let stdin = self.stdin.as_mut().ok_or("LB control stdin closed")?;
        writeln!(stdin, "{c}")?;
        stdin.flush()?;
        let line = self.read_line()?;
        match line.strip_prefix("ok") {
            Some(rest) => Ok(rest.trim().to_string()),
            None => Err(format!("LB control: {c}: {line}").into()),
        }
    }

    /// (packets dropped by the program, packets routed by server_id).
    pub(crate) fn stats(&mut self) -> Result<(u64, u64), Error> {
        let s = self.cmd("stats")?;
        let mut w = s.split_whitespace().map(str::parse::<u64>);
        match (w.next(), w.next()) {
            (Some(Ok(d)), Some(Ok(r))) => Ok((d, r)),
            _ => Err(format!("bad stats answer {s:?}").into()),
        }
    }

    /// SIGKILL, as a crash would.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stdin = None;
    }
}

impl Drop for LbControl {
    fn drop(&mut self) {
        self.stdin = None; // EOF: the child exits on its own, pins stay.
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pin directories of one run's LBs; removed (with the links pinned in
/// them) when dropped — on success, error, Ctrl-C and panic alike.
pub(crate) struct PinDirs(pub(crate) Vec<PathBuf>);

impl PinDirs {
    pub(crate) fn new() -> PinDirs {
        PinDirs(
            (0..topo::LBS)
                .map(|i| {
                    let d = PathBuf::from(format!(
                        "/sys/fs/bpf/flowpin-lab-{}-lb{}",
                        std::process::id(),
                        i + 1
                    ));
                    let _ = XdpLb::unpin(&d);
                    d
                })
                .collect(),
        )
    }
}

impl Drop for PinDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            if let Err(e) = XdpLb::unpin(d) {
                eprintln!("removing pins {}: {e}", d.display());
            }
        }
    }
}
