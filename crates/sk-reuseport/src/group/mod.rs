//! [`ReuseportGroup`]: a BPF-steered `SO_REUSEPORT` group shared by the
//! processes of successive releases through maps pinned on bpffs.
//!
//! Every operation reads the generation table from the kernel, applies one
//! transition of the plain-Rust [`ReleaseState`], and writes back what
//! changed, so any process holding the group (the creator, or one that
//! joined) sees and changes the same state. One controller at a time: the
//! handover between releases is sequential (the new process adds and
//! activates, the old one then exits).

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flowpin_bpf_progs::pin::PinLock;
use flowpin_bpf_progs::sk_reuseport_select::{
    self as sel, monotonic_ns, sock_key, GenEntry, RawGenState, SelectConfig, SelectError,
    SkReuseportSelect,
};
use socket2::SockRef;

use crate::release::{
    Activity, GenInfo, GenState, Generation, ReleaseError, ReleaseState, Retirement, MAX_GENS,
    MAX_SLOTS,
};

pub use flowpin_bpf_progs::sk_reuseport_select::{Proto, SelectMode};

use flowpin_bpf_progs::pin::is_bpffs;

/// Where bpffs is mounted (mounted there by [`ReuseportGroup::create`] if missing).
pub const BPFFS: &str = flowpin_bpf_progs::pin::BPFFS;

mod config;
mod error;
mod stats;

pub use config::GroupConfig;
pub use error::GroupError;
use error::{kernel, Result};
pub use stats::{Drops, GenerationStats, GroupStats};

/// A reuseport group steered by the `sk_reuseport_select` BPF program.
#[derive(Debug)]
pub struct ReuseportGroup {
    prog: SkReuseportSelect,
    cfg: SelectConfig,
    pin_path: PathBuf,
    unpin_on_drop: bool,
}

/// Mounts bpffs at `/sys/fs/bpf` if nothing is mounted there.
pub fn ensure_bpffs() -> Result<()> {
    flowpin_bpf_progs::pin::ensure_bpffs().map_err(|e| GroupError::Bpffs {
        path: BPFFS.into(),
        why: e.to_string(),
    })
}

/// Sets `net.ipv4.tcp_migrate_req=1` in the calling thread's network namespace.
pub fn enable_tcp_migrate_req() -> Result<()> {
    std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", "1").map_err(GroupError::Sysctl)
}

fn family_name(a: &SocketAddr) -> &'static str {
    if a.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

impl ReuseportGroup {
    /// Creates a group for `addr`/`proto`: loads the program, pins it and its
    /// maps under `config.pin_path`. Add sockets with
    /// [`add_generation`](Self::add_generation), then [`activate`](Self::activate).
    pub fn create(addr: SocketAddr, proto: Proto, config: GroupConfig) -> Result<Self> {
        ensure_bpffs()?;
        let dir = config.pin_path.clone();
        let parent = dir.parent().unwrap_or(Path::new("/")).to_path_buf();
        if !is_bpffs(&parent) {
            return Err(GroupError::Bpffs {
                path: dir,
                why: format!(
                    "its parent {} is not on bpffs: use a path under {BPFFS}",
                    parent.display()
                ),
            });
        }
        if dir.join("prog").exists() || dir.join("socks").exists() {
            return Err(GroupError::PinExists(dir));
        }
        if proto == Proto::Tcp && config.set_migrate_sysctl {
            enable_tcp_migrate_req()?;
        }
        let cfg = SelectConfig::new(addr, proto)
            .tcp_mode(config.tcp_mode)
            .udp_mode(config.udp_mode)
            .udp_affinity(config.udp_affinity)
            .quic_cid(config.quic_cid)
            .cid_sock_offset(config.cid_sock_offset)
            .flow_table_size(config.flow_table_size)
            .drain(config.drain_deadline, config.drain_idle);
        let prog = SkReuseportSelect::load(cfg.clone()).map_err(kernel("loading the program"))?;
        // The directory only once nothing but pinning can fail: an error
        // before this point leaves nothing behind on bpffs.
        std::fs::create_dir_all(&dir).map_err(|e| GroupError::Bpffs {
            path: dir.clone(),
            why: format!("creating the pin directory: {e}"),
        })?;
        if let Err(e) = prog.pin(&dir) {
            let _ = SkReuseportSelect::unpin(&dir);
            return Err(GroupError::Kernel {
                step: "pinning program and maps",
                source: e,
            });
        }
        Ok(ReuseportGroup {
            prog,
            cfg,
            pin_path: dir,
            unpin_on_drop: config.unpin_on_drop,
        })
    }

    /// Joins the group pinned at `pin_path` (by another process, usually the
    /// previous release): re-opens its program and maps.
    pub fn join(pin_path: impl AsRef<Path>) -> Result<Self> {
        let dir = pin_path.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(GroupError::StalePin {
                path: dir,
                why: "no such directory: the group was removed (its creator called remove_pins) or never created".into(),
            });
        }
        let missing: Vec<&str> = sel::PIN_NAMES
            .iter()
            .copied()
            .filter(|n| !dir.join(n).exists())
            .collect();
        if !missing.is_empty() {
            return Err(GroupError::StalePin {
                path: dir,
                why: format!("pins {missing:?} are missing: a half-removed or foreign group; remove it and create a new one"),
            });
        }
        let prog = SkReuseportSelect::from_pinned(&dir).map_err(|e| GroupError::StalePin {
            path: dir.clone(),
            why: e.to_string(),
        })?;
        let cfg = prog.config().map_err(|e| GroupError::StalePin {
            path: dir.clone(),
            why: e.to_string(),
        })?;
        Ok(ReuseportGroup {
            prog,
            cfg,
            pin_path: dir,
            unpin_on_drop: false,
        })
    }

    /// Sets the group's drain deadline and idle time, used by
    /// [`retire`](Self::retire) and [`reap`](Self::reap) of every process
    /// of the group (they live in the pinned `config` map: a process that
    /// joins gets the group's settings).
    pub fn set_drain(&self, deadline: Duration, idle: Duration) -> Result<()> {
        let _lock = self.lock()?;
        let cfg = self
            .prog
            .config()
            .map_err(kernel("reading the config map"))?
            .drain(deadline, idle);
        self.prog
            .set_config(&cfg)
            .map_err(kernel("writing the config map"))
    }

    /// The group's drain deadline and idle time (from the pinned `config` map).
    pub fn drain_settings(&self) -> Result<(Duration, Duration)> {
        let cfg = self
            .prog
            .config()
            .map_err(kernel("reading the config map"))?;
        Ok((
            Duration::from_millis(u64::from(cfg.drain_deadline_ms)),
            Duration::from_millis(u64::from(cfg.drain_idle_ms)),
        ))
    }

    /// The group's cross-process lock: an exclusive `flock` on the pin
    /// directory (bpffs holds no regular files), taken by every
    /// read-modify-write of the group's maps, so controllers in several
    /// processes never compute the same generation or clear each other's
    /// sockets.
    fn lock(&self) -> Result<PinLock> {
        PinLock::acquire(&self.pin_path).map_err(|source| GroupError::Lock {
            path: self.pin_path.clone(),
            source,
        })
    }

    /// Removes the pins when this handle drops.
    pub fn set_unpin_on_drop(&mut self, yes: bool) {
        self.unpin_on_drop = yes;
    }

    /// The group's address.
    pub fn addr(&self) -> SocketAddr {
        self.cfg.addr
    }

    /// The group's protocol.
    pub fn proto(&self) -> Proto {
        self.cfg.proto
    }

    /// The pin directory.
    pub fn pin_path(&self) -> &Path {
        &self.pin_path
    }

    /// The kernel layer (maps), for inspection.
    pub fn kernel(&self) -> &SkReuseportSelect {
        &self.prog
    }

    /// The release state, read from the kernel.
    pub fn state(&self) -> Result<ReleaseState> {
        let mut entries = [None; MAX_GENS as usize];
        for (i, e) in entries.iter_mut().enumerate() {
            let raw = self
                .prog
                .gen_entry(i as u32)
                .map_err(kernel("reading the gens map"))?;
            *e = match raw.state {
                RawGenState::Empty => None,
                s => Some(GenInfo {
                    gen: Generation(raw.gen),
                    slots: raw.nslots,
                    state: match s {
                        RawGenState::Warming => GenState::Warming,
                        RawGenState::Live => GenState::Live,
                        RawGenState::Draining => GenState::Draining {
                            deadline_ns: (raw.deadline_ns != 0).then_some(raw.deadline_ns),
                        },
                        _ => GenState::Retired,
                    },
                }),
            };
        }
        Ok(ReleaseState::from_entries(entries))
    }

    fn write_entry(&self, info: &GenInfo) -> Result<()> {
        let (state, deadline_ns) = match info.state {
            GenState::Warming => (RawGenState::Warming, 0),
            GenState::Live => (RawGenState::Live, 0),
            GenState::Draining { deadline_ns } => (RawGenState::Draining, deadline_ns.unwrap_or(0)),
            GenState::Retired => (RawGenState::Retired, 0),
        };
        self.prog
            .set_gen_entry(
                info.gen.index(),
                &GenEntry {
                    gen: info.gen.0,
                    nslots: info.slots,
                    state,
                    deadline_ns,
                },
            )
            .map_err(kernel("writing the gens map"))
    }

    fn write_changes(&self, before: &ReleaseState, after: &ReleaseState) -> Result<()> {
        for (b, a) in before.entries().iter().zip(after.entries()) {
            if b != a {
                if let Some(a) = a {
                    self.write_entry(a)?;
                }
            }
        }
        Ok(())
    }

    fn check_socket<S: AsFd>(&self, index: usize, s: &S) -> Result<()> {
        let sock = SockRef::from(s);
        let q = |step: &'static str| {
            move |source| GroupError::Socket {
                index,
                step,
                source,
            }
        };
        let local = sock.local_addr().map_err(q("getsockname"))?;
        let want = self.cfg.addr;
        let Some(got) = local.as_socket() else {
            return Err(GroupError::WrongFamily {
                index,
                expected: family_name(&want),
                got: "not IP",
            });
        };
        if got.is_ipv4() != want.is_ipv4() {
            return Err(GroupError::WrongFamily {
                index,
                expected: family_name(&want),
                got: family_name(&got),
            });
        }
        let ty = sock.r#type().map_err(q("getsockopt(SO_TYPE)"))?;
        let got_proto = if ty == socket2::Type::STREAM {
            Proto::Tcp
        } else {
            Proto::Udp
        };
        if got_proto != self.cfg.proto {
            return Err(GroupError::WrongProtocol {
                index,
                expected: self.cfg.proto,
                got: got_proto,
            });
        }
        if !sock.reuse_port().map_err(q("getsockopt(SO_REUSEPORT)"))? {
            return Err(GroupError::NotReuseport { index });
        }
        if got != want {
            return Err(GroupError::WrongAddress {
                index,
                expected: want,
                got,
            });
        }
        if self.cfg.proto == Proto::Tcp
            && !sock.is_listener().map_err(q("getsockopt(SO_ACCEPTCONN)"))?
        {
            return Err(GroupError::NotListening { index });
        }
        Ok(())
    }

    fn clear_index(&self, index: u32) -> Result<()> {
        for slot in 0..MAX_SLOTS {
            self.prog
                .remove_socket(index * MAX_SLOTS + slot)
                .map_err(kernel("clearing the socket array"))?;
        }
        Ok(())
    }

    /// Adds a generation: `sockets[i]` becomes slot `i`. The sockets must be
    /// bound to the group's address with `SO_REUSEPORT` (TCP: listening).
    /// The generation warms up (gets nothing) until [`activate`](Self::activate).
    /// Also (re)attaches the program to the group through `sockets[0]`.
    pub fn add_generation<S: AsFd>(&self, sockets: &[S]) -> Result<Generation> {
        for (i, s) in sockets.iter().enumerate() {
            self.check_socket(i, s)?;
        }
        let _lock = self.lock()?;
        self.reap_locked()?;
        let before = self.state()?;
        let mut after = before.clone();
        let info = after.add(sockets.len())?;
        let idx = info.gen.index();
        self.clear_index(idx)?;
        self.prog
            .reset_stats(idx)
            .map_err(kernel("resetting the stats of the index"))?;
        for (slot, s) in sockets.iter().enumerate() {
            if let Err(e) = self
                .prog
                .insert_socket(idx * MAX_SLOTS + slot as u32, s.as_fd())
            {
                self.clear_index(idx)?;
                return Err(match e {
                    SelectError::SlotBusy { .. } => GroupError::SlotBusy {
                        gen: info.gen,
                        slot: slot as u32,
                    },
                    e => GroupError::Kernel {
                        step: "inserting a socket into the socket array",
                        source: e,
                    },
                });
            }
        }
        self.write_changes(&before, &after)?;
        if let Some(first) = sockets.first() {
            self.prog
                .attach(first.as_fd())
                .map_err(kernel("attaching the program (SO_ATTACH_REUSEPORT_EBPF)"))?;
        }
        Ok(info.gen)
    }

    /// Puts `sock` into `slot` of `gen` (e.g. a restarted worker). A slot
    /// that still holds a live socket is refused with [`GroupError::SlotBusy`].
    pub fn add_socket<S: AsFd>(&self, gen: Generation, slot: u32, sock: &S) -> Result<()> {
        self.check_socket(0, sock)?;
        let _lock = self.lock()?;
        let st = self.state()?;
        let info = st.get(gen).ok_or(ReleaseError::Unknown(gen))?;
        if info.state == GenState::Retired {
            return Err(ReleaseError::Retired(gen).into());
        }
        if slot >= info.slots {
            return Err(GroupError::SlotRange {
                gen,
                slot,
                slots: info.slots,
            });
        }
        match self.prog.insert_socket(sock_key(gen.0, slot), sock.as_fd()) {
            Ok(()) => Ok(()),
            Err(SelectError::SlotBusy { .. }) => Err(GroupError::SlotBusy { gen, slot }),
            Err(e) => Err(GroupError::Kernel {
                step: "inserting a socket into the socket array",
                source: e,
            }),
        }
    }

    fn sockets_left(&self, gen: Generation, slots: u32) -> Result<u32> {
        let mut n = 0;
        for slot in 0..slots.min(MAX_SLOTS) {
            if self
                .prog
                .socket_cookie(sock_key(gen.0, slot))
                .map_err(kernel("reading the socket array"))?
                .is_some()
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Makes `gen` live: from now on new TCP connections and new UDP flows go
    /// to its sockets. The flip is one write of the `live` map; the previous
    /// live generation drains (keeps its UDP flows and QUIC connections).
    pub fn activate(&self, gen: Generation) -> Result<Option<Generation>> {
        let _lock = self.lock()?;
        let before = self.state()?;
        let mut after = before.clone();
        let prev = after.activate(gen)?;
        let slots = after.get(gen).map_or(0, |g| g.slots);
        if self.sockets_left(gen, slots)? == 0 {
            return Err(GroupError::EmptyGeneration(gen));
        }
        // The states first (BPF does not read them for steering), then the flip.
        self.write_changes(&before, &after)?;
        self.prog
            .set_live(gen.0)
            .map_err(kernel("flipping the live map"))?;
        Ok(prev)
    }

    /// Retires `gen`: a warming generation is removed now; a draining one
    /// keeps its existing UDP flows until the drain deadline or until idle
    /// (removed by [`reap`](Self::reap)). The live generation is refused.
    pub fn retire(&self, gen: Generation) -> Result<Retirement> {
        let _lock = self.lock()?;
        let (deadline, _) = self.drain_settings()?;
        let before = self.state()?;
        let mut after = before.clone();
        let r = after.retire(gen, monotonic_ns(), deadline.as_nanos() as u64)?;
        if r == Retirement::RemoveNow {
            self.clear_index(gen.index())?;
        }
        self.write_changes(&before, &after)?;
        Ok(r)
    }

    /// Removes `gen`'s sockets from the map now, whatever its flows (not the live one).
    pub fn remove(&self, gen: Generation) -> Result<()> {
        let _lock = self.lock()?;
        let before = self.state()?;
        let mut after = before.clone();
        after.finish(gen)?;
        self.clear_index(gen.index())?;
        self.write_changes(&before, &after)
    }

    /// Removes draining generations that are due: no socket left, past the
    /// deadline, or idle (see [`ReleaseState::due`]). Returns them.
    pub fn reap(&self) -> Result<Vec<Generation>> {
        let _lock = self.lock()?;
        self.reap_locked()
    }

    fn reap_locked(&self) -> Result<Vec<Generation>> {
        let (_, idle) = self.drain_settings()?;
        let before = self.state()?;
        let mut activity = Vec::new();
        for g in before.generations() {
            if matches!(g.state, GenState::Draining { .. }) {
                let left = self.sockets_left(g.gen, g.slots)?;
                let last = self
                    .prog
                    .stats_of(g.gen.index())
                    .map_err(kernel("reading stats"))?
                    .last_ns;
                activity.push((
                    g.gen,
                    Activity {
                        sockets_left: left,
                        last_ns: last,
                    },
                ));
            }
        }
        let due = before.due(monotonic_ns(), idle.as_nanos() as u64, |g| {
            activity.iter().find(|(x, _)| *x == g).map_or(
                Activity {
                    sockets_left: 0,
                    last_ns: 0,
                },
                |(_, a)| *a,
            )
        });
        let mut after = before.clone();
        for g in &due {
            after.finish(*g)?;
            self.clear_index(g.index())?;
        }
        self.write_changes(&before, &after)?;
        Ok(due)
    }

    /// The live generation.
    pub fn live(&self) -> Result<Option<Generation>> {
        let g = self.prog.live().map_err(kernel("reading the live map"))?;
        Ok((g != 0).then_some(Generation(g)))
    }

    /// The socket id of `slot` of `gen` to put in QUIC connection IDs
    /// (2 bytes, big-endian, at DCID offset `cid_sock_offset`).
    pub fn socket_id(gen: Generation, slot: u32) -> u16 {
        sock_key(gen.0, slot) as u16
    }

    /// Writes a QUIC connection ID that routes to `slot` of `gen`: the
    /// flowpin CID layout with `server_id` (for the L4 load balancer, see
    /// `flowpin_tcp_opt::quic`) and the socket id at the group's
    /// `cid_sock_offset`. Fill `cid` with random bytes first; it must be 8 to
    /// 20 bytes and long enough for the socket id.
    pub fn encode_cid(
        &self,
        cid: &mut [u8],
        server_id: flowpin_tcp_opt::ServerId,
        gen: Generation,
        slot: u32,
    ) -> Result<()> {
        let off = usize::from(self.cfg.cid_sock_offset);
        if cid.len() < off + 2 {
            return Err(GroupError::Cid(format!(
                "a {}-byte CID has no room for the socket id at offset {off}",
                cid.len()
            )));
        }
        flowpin_tcp_opt::encode_cid(cid, flowpin_tcp_opt::CidLayout::Flowpin, server_id)
            .map_err(|e| GroupError::Cid(e.to_string()))?;
        cid[off..off + 2].copy_from_slice(&Self::socket_id(gen, slot).to_be_bytes());
        Ok(())
    }

    /// Removes the pins of the group at `pin_path` (the sockets keep the
    /// program attached while they live). Missing pins are fine.
    pub fn remove_pins(pin_path: impl AsRef<Path>) -> Result<()> {
        let p = pin_path.as_ref();
        SkReuseportSelect::unpin(p).map_err(|e| GroupError::Bpffs {
            path: p.into(),
            why: format!("removing pins: {e}"),
        })
    }
}

impl Drop for ReuseportGroup {
    fn drop(&mut self) {
        if self.unpin_on_drop {
            let _ = SkReuseportSelect::unpin(&self.pin_path);
        }
    }
}
