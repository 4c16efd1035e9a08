//! [`Dispatcher`]: the thin kernel layer. Every change takes the pin
//! directory's `flock`, reads the maps into a [`Table`], lets the model
//! check and plan it, and writes the plan.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use flowpin_bpf_abi::sk_lookup::{self as abi, FAMILY_V4, FAMILY_V6, MAX_LABELS};
use flowpin_bpf_progs::link::Link;
use flowpin_bpf_progs::sk_lookup::{
    summary_of, LabelStats, NetnsRef, SkLookup, SkLookupConfig, SkLookupError, SkLookupLink,
    SkLookupStats,
};
use nix::fcntl::{Flock, FlockArg};
use socket2::SockRef;

use crate::model::{destination_index, Registered, SocketFacts, Table};
use crate::{Binding, Error, Family, Label, Proto};

type Result<T> = std::result::Result<T, Error>;

/// Name of the pinned link under the pin directory.
pub const LINK_PIN: &str = "link";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn kernel(step: &'static str) -> impl FnOnce(SkLookupError) -> Error {
    move |source| Error::Kernel { step, source }
}

/// Configuration of a new [`Dispatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DispatcherConfig {
    /// Capacity of the bindings trie.
    pub max_bindings: u32,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            max_bindings: abi::DEFAULT_MAX_BINDINGS,
        }
    }
}

impl DispatcherConfig {
    /// Sets [`DispatcherConfig::max_bindings`].
    pub fn max_bindings(mut self, n: u32) -> Self {
        self.max_bindings = n;
        self
    }
}

/// One label with its bindings, sockets and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LabelInfo {
    /// The label.
    pub label: Label,
    /// Its id (stats and socket-map index).
    pub id: u32,
    /// Its bindings.
    pub bindings: usize,
    /// Cookie of its TCP listener, if registered.
    pub tcp: Option<u64>,
    /// Cookie of its UDP socket, if registered.
    pub udp: Option<u64>,
    /// Its counters.
    pub stats: LabelStats,
}

/// The sk_lookup program and its state, pinned under one bpffs directory
/// and shared by every process that opens it.
#[derive(Debug)]
pub struct Dispatcher {
    prog: SkLookup,
    dir: PathBuf,
    dir_file: File,
}

// The statfs f_type width differs between architectures.
#[allow(clippy::unnecessary_cast)]
fn is_bpffs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

fn pins_err(dir: &Path, why: impl Into<String>) -> Error {
    Error::Pins {
        path: dir.to_path_buf(),
        why: why.into(),
    }
}

fn open_dir(dir: &Path) -> Result<File> {
    File::open(dir).map_err(|e| pins_err(dir, format!("opening it for the lock: {e}")))
}

impl Dispatcher {
    /// Loads the program and pins it with its maps under `dir` (created; its
    /// parent must be on bpffs). Fails if something is pinned there already.
    pub fn create(dir: impl AsRef<Path>, config: DispatcherConfig) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let parent = dir.parent().unwrap_or(Path::new("/"));
        if !is_bpffs(parent) {
            return Err(pins_err(
                &dir,
                format!("its parent {} is not on bpffs: use a path under /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)", parent.display()),
            ));
        }
        if dir.join("prog").exists() {
            return Err(pins_err(
                &dir,
                "a dispatcher is pinned there already: open it with Dispatcher::open, or remove it with Dispatcher::remove",
            ));
        }
        let prog = SkLookup::load(SkLookupConfig::new().max_bindings(config.max_bindings))
            .map_err(kernel("loading the sk_lookup program"))?;
        std::fs::create_dir_all(&dir).map_err(|e| pins_err(&dir, format!("creating it: {e}")))?;
        if let Err(e) = prog.pin(&dir) {
            let _ = SkLookup::unpin(&dir);
            return Err(kernel("pinning the program and maps")(e));
        }
        let dir_file = open_dir(&dir)?;
        Ok(Dispatcher {
            prog,
            dir,
            dir_file,
        })
    }

    /// Opens the dispatcher pinned under `dir` (by this or another process).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.join("prog").exists() {
            return Err(pins_err(
                &dir,
                "no dispatcher is pinned there: create one with Dispatcher::create",
            ));
        }
        let prog = SkLookup::from_pinned(&dir).map_err(kernel("opening the pinned maps"))?;
        let dir_file = open_dir(&dir)?;
        Ok(Dispatcher {
            prog,
            dir,
            dir_file,
        })
    }

    /// Removes every pin under `dir` (the link too, which detaches the
    /// program once no process holds it) and the directory.
    pub fn remove(dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        detach_pinned(dir)?;
        for n in [LINK_PIN] {
            match std::fs::remove_file(dir.join(n)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(pins_err(dir, format!("removing {n}: {e}")))
                }
                _ => {}
            }
        }
        SkLookup::unpin(dir).map_err(|e| pins_err(dir, format!("removing the pins: {e}")))
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.dir
    }

    /// The kernel layer (program fd, maps).
    pub fn kernel(&self) -> &SkLookup {
        &self.prog
    }

    fn lock(&self) -> Result<Flock<File>> {
        let f = self
            .dir_file
            .try_clone()
            .map_err(|e| pins_err(&self.dir, format!("dup for the lock: {e}")))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| pins_err(&self.dir, format!("flock(LOCK_EX): {e}")))
    }

    /// Attaches the program to a network namespace and pins the link as
    /// `<dir>/link`, so it stays attached when this process exits. Detach
    /// with [`detach`](Self::detach) or [`remove`](Self::remove).
    pub fn attach<'a>(&self, netns: impl Into<NetnsRef<'a>>) -> Result<()> {
        let _lock = self.lock()?;
        let path = self.dir.join(LINK_PIN);
        if path.exists() {
            return Err(pins_err(
                &self.dir,
                "the program is attached already (a link is pinned): detach it first",
            ));
        }
        let mut link = self
            .prog
            .attach(netns)
            .map_err(kernel("attaching to the network namespace"))?;
        link.pin(&path)
            .map_err(|e| kernel("pinning the link")(e.into()))
    }

    /// Attaches to a network namespace and returns the link, unpinned: the
    /// program is detached when it drops.
    pub fn attach_link<'a>(&self, netns: impl Into<NetnsRef<'a>>) -> Result<SkLookupLink> {
        self.prog
            .attach(netns)
            .map_err(kernel("attaching to the network namespace"))
    }

    /// Detaches the program now (`BPF_LINK_DETACH` on the pinned link:
    /// removing a pin alone releases the link only later, from a kernel work
    /// queue) and removes the pin. `false` if none was pinned.
    pub fn detach(&self) -> Result<bool> {
        let _lock = self.lock()?;
        detach_pinned(&self.dir)?;
        match std::fs::remove_file(self.dir.join(LINK_PIN)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(pins_err(&self.dir, format!("removing the link pin: {e}"))),
        }
    }

    /// Whether a link is pinned (the program is attached).
    pub fn is_attached(&self) -> bool {
        self.dir.join(LINK_PIN).exists()
    }

    /// The whole state, read from the maps.
    pub fn table(&self) -> Result<Table> {
        let mut t = Table::new(self.prog.max_bindings());
        let mut by_id = BTreeMap::new();
        for (name, id) in self.prog.read_labels().map_err(kernel("reading labels"))? {
            let label =
                Label::new(name).map_err(|e| pins_err(&self.dir, format!("labels map: {e}")))?;
            by_id.insert(id, label.clone());
            t.labels.insert(label, id);
        }
        for (k, v) in self
            .prog
            .read_bindings()
            .map_err(kernel("reading bindings"))?
        {
            let (Some(b), Some(l)) = (Binding::from_key(&k), by_id.get(&v.label)) else {
                return Err(pins_err(
                    &self.dir,
                    format!(
                        "the bindings map holds an entry flowpin did not write ({k:?} → {v:?})"
                    ),
                ));
            };
            t.bindings.insert(b, l.clone());
        }
        for &id in by_id.keys() {
            for p in [Proto::Tcp, Proto::Udp] {
                let d = self
                    .prog
                    .destination(destination_index(id, p))
                    .map_err(kernel("reading destinations"))?;
                if let Some(d) = d.filter(|d| d.cookie == d.registered_cookie) {
                    t.sockets.insert(
                        (id, p),
                        Registered {
                            family: if d.family == FAMILY_V4 {
                                Family::V4
                            } else {
                                Family::V6
                            },
                            v6only: d.v6only,
                            cookie: d.cookie,
                        },
                    );
                }
            }
        }
        Ok(t)
    }

    /// Adds one binding; its label is created if new.
    pub fn bind(&self, binding: Binding, label: &Label) -> Result<()> {
        self.bind_many(&[(binding, label.clone())])
    }

    /// Adds bindings, all or none. Under the lock: one read of the maps
    /// (batch lookups), every check in memory ([`Table::plan_bind`]), then
    /// the writes — host prefixes in one batch update of the hash, the
    /// others in one of the trie.
    pub fn bind_many(&self, bindings: &[(Binding, Label)]) -> Result<()> {
        let _lock = self.lock()?;
        let table = self.table()?;
        let plan = table.plan_bind(bindings)?;
        let before = summary_of(&table.keys());
        let after = before | summary_of(plan.insert.iter().map(|(k, _)| k));
        let mut created = Vec::new();
        let undo = |created: &[&Label]| {
            for l in created {
                let _ = self.prog.delete_label(l.as_str());
            }
        };
        for (label, id) in &plan.new_labels {
            let r = self
                .prog
                .reset_label_stats(*id)
                .and_then(|()| self.prog.insert_label(label.as_str(), *id));
            if let Err(e) = r {
                undo(&created);
                return Err(kernel("creating a label")(e));
            }
            created.push(label);
        }
        // The program may look for the new bindings before they are there,
        // never skip ones that are.
        if let Err(e) = self.prog.write_summary(after) {
            undo(&created);
            return Err(kernel("writing the summary")(e));
        }
        if let Err(e) = self.prog.insert_bindings(&plan.insert) {
            undo(&created);
            let _ = self.prog.write_summary(before);
            return Err(kernel("inserting bindings")(e));
        }
        Ok(())
    }

    /// Removes one binding. A label left without bindings is removed, with
    /// its registered sockets.
    pub fn unbind(&self, binding: Binding) -> Result<()> {
        self.unbind_many(&[binding])
    }

    /// Removes bindings, all or none.
    pub fn unbind_many(&self, bindings: &[Binding]) -> Result<()> {
        let _lock = self.lock()?;
        let table = self.table()?;
        let plan = table.plan_unbind(bindings)?;
        for k in &plan.delete {
            self.prog
                .delete_binding(k)
                .map_err(kernel("deleting a binding"))?;
        }
        // Cleared once the bindings are gone.
        let gone: std::collections::BTreeSet<&Binding> = bindings.iter().collect();
        let left: Vec<_> = table
            .bindings
            .keys()
            .filter(|b| !gone.contains(b))
            .map(Binding::key)
            .collect();
        self.prog
            .write_summary(summary_of(&left))
            .map_err(kernel("writing the summary"))?;
        for &i in &plan.clear_destinations {
            self.prog
                .remove_destination(i)
                .map_err(kernel("clearing a destination"))?;
        }
        for l in &plan.delete_labels {
            self.prog
                .delete_label(l.as_str())
                .map_err(kernel("deleting a label"))?;
        }
        Ok(())
    }

    /// Every binding and its label.
    pub fn bindings(&self) -> Result<Vec<(Binding, Label)>> {
        Ok(self.table()?.bindings.into_iter().collect())
    }

    /// Registers `socket` (a listening TCP socket or a bound, unconnected
    /// UDP socket, owned by the caller) as `label`'s destination for its
    /// protocol, replacing any socket registered before. It stays registered
    /// until it is closed (the kernel removes it) or
    /// [`unregister`](Self::unregister)ed.
    pub fn register<S: AsFd>(&self, label: &Label, socket: &S) -> Result<()> {
        let facts = socket_facts(socket)?;
        let cookie = socket_cookie(socket)?;
        let _lock = self.lock()?;
        let index = self.table()?.check_register(label, &facts)?;
        let meta = abi::Dest {
            cookie,
            family: u32::from(if facts.family == Some(Family::V4) {
                FAMILY_V4
            } else {
                FAMILY_V6
            }),
            v6only: u32::from(facts.v6only),
        };
        self.prog
            .set_destination(index, socket.as_fd(), &meta)
            .map_err(kernel("registering the socket"))
    }

    /// Unregisters `label`'s socket for `protocol`; `false` if none was there.
    pub fn unregister(&self, label: &Label, protocol: Proto) -> Result<bool> {
        let _lock = self.lock()?;
        let t = self.table()?;
        let id = *t
            .labels
            .get(label)
            .ok_or_else(|| Error::UnknownLabel(label.clone()))?;
        self.prog
            .remove_destination(destination_index(id, protocol))
            .map_err(kernel("removing the socket"))
    }

    /// Counters of `label`.
    pub fn label_stats(&self, label: &Label) -> Result<LabelStats> {
        let t = self.table()?;
        let id = *t
            .labels
            .get(label)
            .ok_or_else(|| Error::UnknownLabel(label.clone()))?;
        self.prog.label_stats(id).map_err(kernel("reading stats"))
    }

    /// Every label with its bindings, sockets and counters.
    pub fn labels(&self) -> Result<Vec<LabelInfo>> {
        let t = self.table()?;
        let mut out = Vec::new();
        for (label, &id) in &t.labels {
            out.push(LabelInfo {
                label: label.clone(),
                id,
                bindings: t.bindings.values().filter(|l| *l == label).count(),
                tcp: t.sockets.get(&(id, Proto::Tcp)).map(|r| r.cookie),
                udp: t.sockets.get(&(id, Proto::Udp)).map(|r| r.cookie),
                stats: self.prog.label_stats(id).map_err(kernel("reading stats"))?,
            });
        }
        Ok(out)
    }

    /// Counters summed over every label, and lookups that matched nothing.
    pub fn stats(&self) -> Result<SkLookupStats> {
        self.prog.stats().map_err(kernel("reading stats"))
    }

    /// Labels the maps hold at most.
    pub fn max_labels(&self) -> u32 {
        MAX_LABELS
    }
}

/// Detaches the link pinned under `dir`, if one is.
fn detach_pinned(dir: &Path) -> Result<()> {
    let path = dir.join(LINK_PIN);
    if !path.exists() {
        return Ok(());
    }
    SkLookupLink::from_pinned(&path)
        .and_then(|mut link| link.detach())
        .map_err(|e| kernel("detaching the pinned link")(e.into()))
}

fn socket_facts<S: AsFd>(s: &S) -> Result<SocketFacts> {
    let sock = SockRef::from(s);
    let q = |what: &'static str| move |source| Error::Socket { what, source };
    let ty = sock.r#type().map_err(q("getsockopt(SO_TYPE)"))?;
    let proto = sock.protocol().map_err(q("getsockopt(SO_PROTOCOL)"))?;
    let protocol = match (ty, proto) {
        (socket2::Type::STREAM, Some(p)) if p == socket2::Protocol::TCP => Some(Proto::Tcp),
        (socket2::Type::DGRAM, Some(p)) if p == socket2::Protocol::UDP => Some(Proto::Udp),
        _ => None,
    };
    let local = sock.local_addr().map_err(q("getsockname"))?;
    let (family, bound) = match local.as_socket() {
        Some(a) if a.is_ipv4() => (Some(Family::V4), a.port() != 0),
        Some(a) => (Some(Family::V6), a.port() != 0),
        None => (None, false),
    };
    let v6only =
        family == Some(Family::V6) && sock.only_v6().map_err(q("getsockopt(IPV6_V6ONLY)"))?;
    let connected = family.is_some() && sock.peer_addr().is_ok();
    let listening = protocol == Some(Proto::Tcp)
        && sock.is_listener().map_err(q("getsockopt(SO_ACCEPTCONN)"))?;
    Ok(SocketFacts {
        protocol,
        family,
        v6only,
        bound,
        connected,
        listening,
    })
}

fn socket_cookie<S: AsFd>(s: &S) -> Result<u64> {
    const SO_COOKIE: nix::libc::c_int = 57;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as nix::libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the live local
    // `cookie` and updates the live local `len`; the fd is borrowed for the call.
    let rc = unsafe {
        nix::libc::getsockopt(
            s.as_fd().as_raw_fd(),
            nix::libc::SOL_SOCKET,
            SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(Error::Socket {
            what: "getsockopt(SO_COOKIE)",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(cookie)
}
