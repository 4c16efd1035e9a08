//! Test support shared by every privileged test, example and bench: network
//! namespaces, veth pairs and cgroups as guards that clean up on drop, and the
//! "may this test run BPF here?" check.
//!
//! Enabled by the `testing` feature. Everything here shells out to iproute2
//! (`ip`) for namespace and link management, the same tool an operator would
//! use, and enters namespaces with `setns(2)` from a dedicated thread so the
//! calling thread never changes namespace.
//!
//! ```no_run
//! use flowpin_bpf_progs::testing::{NetNs, VethPair};
//! let lb = NetNs::new("lb").unwrap();
//! let be = NetNs::new("be").unwrap();
//! let veth = VethPair::new(&lb, "veth0", &be, "veth1").unwrap();
//! lb.ip(&["addr", "add", "10.0.0.1/24", "dev", "veth0"]).unwrap();
//! let n = lb.run(|| std::net::TcpListener::bind("10.0.0.1:0").is_ok()).unwrap();
//! # drop((veth, n));
//! // namespaces and links are deleted when the guards drop
//! ```

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};

/// Errors of the test-support helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestingError {
    /// A command (usually `ip`) failed.
    #[error("`{cmd}` failed ({status}): {stderr} — is iproute2 installed and are we root?")]
    Command {
        /// The command line.
        cmd: String,
        /// Exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// An I/O error on a path.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `setns(2)` failed.
    #[error("setns into network namespace {ns}: {errno} (need CAP_SYS_ADMIN)")]
    Setns {
        /// Namespace name.
        ns: String,
        /// errno.
        errno: nix::Error,
    },
    /// No cgroup v2 mount was found in `/proc/self/mounts`.
    #[error("no cgroup2 file system is mounted (looked in /proc/self/mounts); mount one with `mount -t cgroup2 none /sys/fs/cgroup`")]
    NoCgroup2,
    /// The closure run in a namespace panicked.
    #[error("the closure run inside network namespace {0} panicked")]
    Panicked(String),
    /// An `ioctl(SIOCETHTOOL)` on an interface failed.
    #[error("SIOCETHTOOL {what} on interface {ifname}: {source} (does the interface exist in this thread's network namespace, and are we root?)")]
    Ethtool {
        /// The ethtool command that failed.
        what: &'static str,
        /// The interface.
        ifname: String,
        /// The underlying error (errno).
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, TestingError>;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `fp<tag>-<pid><n>`, the pid in
/// base 36 padded to 5 characters (so `<pid><n>` is unambiguous across
/// processes running at the same time), at most 15 bytes so it is also a
/// valid interface name (the tag is shortened to fit).
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let suffix = format!("{}{n}", pid_base36(std::process::id()));
    tag.truncate(15usize.saturating_sub(2 + suffix.len() + 1));
    format!("fp{tag}-{suffix}")
}

/// `pid` in base 36, exactly 5 characters: 36^5 > 2^22, Linux's largest
/// `pid_max`, so distinct pids never give the same string.
fn pid_base36(pid: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; 5];
    let mut v = pid;
    for d in out.iter_mut().rev() {
        *d = DIGITS[(v % 36) as usize];
        v /= 36;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// Runs a command and fails with its stderr if it exits non-zero.
pub fn run_cmd<I, S>(program: &str, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let cmdline = std::iter::once(program.to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(program)
        .args(&args)
        .output()
        .map_err(|e| TestingError::Command {
            cmd: cmdline.clone(),
            status: "could not start".into(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(TestingError::Command {
            cmd: cmdline,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// A network namespace created with `ip netns add`, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace with a unique name built from `tag`, with `lo` up.
    pub fn new(tag: &str) -> Result<Self> {
        let name = unique_name(tag);
        run_cmd("ip", ["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as listed by `ip netns`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace's bind mount, `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run_cmd("ip", a)
    }

    /// Runs any command inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        let mut a = vec!["netns", "exec", self.name.as_str(), program];
        a.extend_from_slice(args);
        run_cmd("ip", a)
    }

    /// Sets a sysctl inside the namespace, e.g. `("net.ipv4.ip_forward", "1")`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        let key = path.clone();
        let value = value.to_string();
        self.run(move || {
            fs::write(&key, value).map_err(|source| TestingError::Io {
                what: "writing sysctl",
                path: key.clone(),
                source,
            })
        })?
    }

    /// Runs `f` on a new thread that has entered this namespace and returns
    /// its result. Sockets created inside `f` belong to the namespace and
    /// keep belonging to it after `f` returns.
    pub fn run<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let path = self.path();
        let name = self.name.clone();
        std::thread::scope(|s| {
            s.spawn(move || {
                self.enter_current_thread_at(&path, &name)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(TestingError::Panicked(self.name.clone())))
        })
    }

    /// Spawns a long-running thread inside the namespace (e.g. a server).
    pub fn spawn<F, T>(&self, f: F) -> Result<std::thread::JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let path = self.path();
        let name = self.name.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            let entered = enter_netns(&path, &name);
            let ok = entered.is_ok();
            let _ = tx.send(entered);
            if !ok {
                panic!("could not enter namespace {name}");
            }
            f()
        });
        rx.recv()
            .map_err(|_| TestingError::Panicked(self.name.clone()))??;
        Ok(h)
    }

    /// Moves the calling thread into this namespace for good. Use only on
    /// threads you own (e.g. the main thread of a child process).
    pub fn enter_current_thread(&self) -> Result<()> {
        enter_netns(&self.path(), &self.name)
    }

    fn enter_current_thread_at(&self, path: &Path, name: &str) -> Result<()> {
        enter_netns(path, name)
    }
}

/// Moves the calling thread into the network namespace bound at `path`.
pub fn enter_netns(path: &Path, name: &str) -> Result<()> {
    let f = File::open(path).map_err(|source| TestingError::Io {
        what: "opening network namespace",
        path: path.to_path_buf(),
        source,
    })?;
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| TestingError::Setns {
        ns: name.to_string(),
        errno,
    })
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace also deletes the veth ends inside it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A veth pair with one end in each of two namespaces. Deleted on drop (and
/// also when either namespace goes away).
#[derive(Debug)]
pub struct VethPair {
    a_ns: String,
    a: String,
}

impl VethPair {
    /// Creates `a` in namespace `ns_a` and its peer `b` in `ns_b`, both up.
    pub fn new(ns_a: &NetNs, a: &str, ns_b: &NetNs, b: &str) -> Result<Self> {
        ns_a.ip(&[
            "link",
            "add",
            a,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "netns",
            ns_b.name(),
        ])?;
        let pair = VethPair {
            a_ns: ns_a.name().to_string(),
            a: a.to_string(),
        };
        ns_a.ip(&["link", "set", a, "up"])?;
        ns_b.ip(&["link", "set", b, "up"])?;
        Ok(pair)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &self.a_ns, "link", "del", &self.a])
            .output();
    }
}

/// Finds the cgroup v2 mount point in `/proc/self/mounts` (e.g.
/// `/sys/fs/cgroup/unified` or `/sys/fs/cgroup`).
pub fn cgroup2_mount() -> Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").map_err(|source| TestingError::Io {
        what: "reading",
        path: "/proc/self/mounts".into(),
        source,
    })?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let _dev = f.next()?;
            let dir = f.next()?;
            let fstype = f.next()?;
            (fstype == "cgroup2").then(|| PathBuf::from(dir))
        })
        .next()
        .ok_or(TestingError::NoCgroup2)
}

/// A child cgroup (v2) created under the cgroup2 mount, removed on drop
/// after moving any process left in it back to the root cgroup.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    root: PathBuf,
}

impl Cgroup {
    /// Creates `<cgroup2 mount>/<unique name>`.
    pub fn new(tag: &str) -> Result<Self> {
        let root = cgroup2_mount()?;
        let path = root.join(unique_name(tag));
        fs::create_dir(&path).map_err(|source| TestingError::Io {
            what: "creating cgroup",
            path: path.clone(),
            source,
        })?;
        Ok(Cgroup { path, root })
    }

    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the cgroup directory (what `attach_cgroup` takes).
    pub fn open(&self) -> Result<File> {
        File::open(&self.path).map_err(|source| TestingError::Io {
            what: "opening cgroup",
            path: self.path.clone(),
            source,
        })
    }

    /// Moves process `pid` (0 = the caller) into this cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<()> {
        let procs = self.path.join("cgroup.procs");
        fs::write(&procs, pid.to_string()).map_err(|source| TestingError::Io {
            what: "writing",
            path: procs,
            source,
        })
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Ok(pids) = fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in pids.lines() {
                let _ = fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        let _ = fs::remove_dir(&self.path);
    }
}

/// Whether privileged BPF tests may run here.
///
/// Loads the empty XDP program. When the process runs as **root** (or under
/// `CI=true`) a refusal by the kernel is a bug or a broken machine, never a
/// reason to skip: this panics, so the test fails. Only a non-root run may
/// skip: it prints a loud line and records the skip (see [`SKIP_LOG_ENV`]),
/// so the suite can end with one line counting what it skipped.
pub fn require_bpf(test: &str) -> bool {
    match probe_bpf() {
        Ok(()) => true,
        Err(why) => {
            let root = nix::unistd::geteuid().is_root();
            let ci = std::env::var("CI").map(|v| v == "true").unwrap_or(false);
            if root || ci {
                panic!(
                    "privileged test `{test}`: the kernel refused BPF although this run is {}:                      {why}\n(a privileged test never skips as root or in CI: fix the kernel                      configuration or the program)",
                    if root { "root" } else { "CI=true" }
                );
            }
            record_skip(test, &why);
            false
        }
    }
}

/// Environment variable naming a file to which every skipped privileged
/// test appends one line (`<test>\t<why>`). `scripts/test.sh` sets it and
/// ends the run with one loud line counting the skips.
pub const SKIP_LOG_ENV: &str = "FLOWPIN_SKIP_LOG";

fn record_skip(test: &str, why: &str) {
    use std::io::Write;
    // Written straight to fd 2 (not `eprintln!`, which the test harness
    // captures), so a plain `cargo test` shows the skip too.
    let _ = writeln!(
        std::io::stderr(),
        "!!!!! SKIPPED privileged test `{test}` (not root, the kernel refused BPF: {why})"
    );
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{test}\t{}", why.replace(['\n', '\t'], " "));
        }
    }
}

fn probe_bpf() -> std::result::Result<(), String> {
    use libbpf_rs::skel::{OpenSkel, SkelBuilder};
    let mut obj = std::mem::MaybeUninit::uninit();
    let open = crate::skel::xdp_pass::XdpPassSkelBuilder::default()
        .open(&mut obj)
        .map_err(|e| e.to_string())?;
    open.load().map(|_| ()).map_err(|e| e.to_string())
}

/// [`crate::netdev::disable_tx_checksum_offload`] with this module's error
/// type. `ethtool -K <ifname> tx off`: turns off TX checksum offload of an
/// interface (`SIOCETHTOOL` / `ETHTOOL_STXCSUM`), so the kernel computes
/// TCP/UDP checksums in software before the interface transmits. `ethtool`
/// itself need not be installed.
///
/// Needed on the veth that feeds a native-XDP program which sends frames
/// back out (`XDP_TX`, e.g. `xdp_lb`): veth hands packets over with
/// `CHECKSUM_PARTIAL` (checksum left for "hardware"), XDP turns them into
/// raw frames and that state is lost, so the checksum would never be filled
/// in and the receiver would drop the segment.
///
/// The ioctl acts on the network namespace of the **calling thread**: call
/// it from inside the namespace that holds `ifname`, e.g.
/// `ns.run(|| disable_tx_checksum_offload("veth0"))`.
pub fn disable_tx_checksum_offload(ifname: &str) -> Result<()> {
    crate::netdev::disable_tx_checksum_offload(ifname).map_err(|e| TestingError::Ethtool {
        what: e.op,
        ifname: ifname.to_string(),
        source: io::Error::other(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_base36_is_fixed_width_and_injective_on_collision_prone_pids() {
        // With plain decimal "<pid><n>", pid 1234 call 56 and pid 12345
        // call 6 both gave "123456".
        assert_eq!(pid_base36(0), "00000");
        assert_eq!(pid_base36(35), "0000z");
        assert_eq!(pid_base36(36), "00010");
        assert_eq!(pid_base36(4_194_304), "2hwcg");
        assert_ne!(
            format!("{}{}", pid_base36(1234), 56),
            format!("{}{}", pid_base36(12345), 6)
        );
    }

    #[test]
    fn unique_names_fit_an_interface_name_and_differ() {
        let a = unique_name("a-long-tag-with-dashes");
        let b = unique_name("a-long-tag-with-dashes");
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert!(n.len() <= 15, "{n} is longer than IFNAMSIZ - 1");
            assert!(n.starts_with("fp"), "{n}");
            assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        }
    }
}
