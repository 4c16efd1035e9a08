//! Test support for every privileged test, example, bench and outside
//! harness of flowpin: network namespaces, veth pairs and cgroups as guards
//! that clean up on drop, and the "may this test run here?" checks with the
//! accounting of what was skipped.
//!
//! A `publish = false` crate: any crate of the workspace (and a harness
//! outside it, by path) takes it as a dev-dependency. Everything here shells
//! out to iproute2 (`ip`) for namespace and link management, the same tool
//! an operator would use, and enters namespaces with `setns(2)` from a
//! dedicated thread so the calling thread never changes namespace.
//!
//! | what | items |
//! |---|---|
//! | network namespaces, veth | [`NetNs`], [`VethPair`], [`enter_netns`] |
//! | the routed LB topology of live tests (feature `bpf`) | [`RoutedLb`], [`RoutedLbConfig`] |
//! | threaded NAPI, CPU time of threads | [`enable_threaded_napi`], [`set_threaded_napi`], [`napi_threads`], [`pin_thread`], [`thread_cpu_ns`], [`process_cpu_ns`] |
//! | cgroup v2 | [`Cgroup`], [`cgroup2_mount`], [`current_cgroup`], [`CgroupMembership`] |
//! | may this test run? | [`require_bpf`] (feature `bpf`), [`require_root`], [`is_root`], [`record_skip`], [`SKIP_LOG_ENV`] |
//! | small things | [`unique_name`], [`run_cmd`], [`mac_str`], [`disable_tx_checksum_offload`] (feature `bpf`) |
//!
//! The default feature `bpf` adds what needs `flowpin-bpf-progs` (and so
//! clang at build time): [`require_bpf`], which loads a BPF program,
//! [`disable_tx_checksum_offload`] and [`RoutedLb`]. Without it (`default-features = false`)
//! a crate that needs no clang, such as `flowpin-registry`, gets the rest.
//!
//! ```no_run
//! use flowpin_testing::{NetNs, VethPair};
//! let lb = NetNs::new("lb").unwrap();
//! let be = NetNs::new("be").unwrap();
//! let veth = VethPair::new(&lb, "veth0", &be, "veth1").unwrap();
//! lb.ip(&["addr", "add", "10.0.0.1/24", "dev", "veth0"]).unwrap();
//! let n = lb.run(|| std::net::TcpListener::bind("10.0.0.1:0").is_ok()).unwrap();
//! # drop((veth, n));
//! // namespaces and links are deleted when the guards drop
//! ```
#![deny(missing_docs)]

mod cgroup;
mod napi;
mod netns;
#[cfg(feature = "bpf")]
mod routed;
mod skip;

pub use cgroup::{cgroup2_mount, current_cgroup, Cgroup, CgroupMembership};
pub use napi::{
    enable_threaded_napi, napi_threads, pin_thread, process_cpu_ns, set_threaded_napi,
    thread_cpu_ns,
};
pub use netns::{enter_netns, NetNs, VethPair};
#[cfg(feature = "bpf")]
pub use routed::{RoutedLb, RoutedLbConfig};
#[cfg(feature = "bpf")]
pub use skip::require_bpf;
pub use skip::{is_root, record_skip, require_root, SKIP_LOG_ENV};

use std::ffi::OsStr;
use std::io;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

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
    /// `/proc/self/cgroup` has no cgroup v2 line (`0::<path>`).
    #[error("/proc/self/cgroup has no cgroup v2 entry (a `0::<path>` line): is this kernel older than 4.5?")]
    NoOwnCgroup,
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
    /// Threaded NAPI was turned on, but no new `napi/<dev>-*` kernel thread
    /// appeared.
    #[error("no new napi/{dev}-* kernel thread appeared within 2 s of turning on threaded NAPI on {dev}: does the interface use NAPI (a veth: GRO on or an XDP program attached), and was threaded NAPI off before?")]
    NoNapiThread {
        /// The interface.
        dev: String,
    },
    /// `sched_setaffinity(2)` of a thread failed.
    #[error("pinning thread {pid} to CPU {cpu}: {errno} (is CPU {cpu} online, and does thread {pid} still exist?)")]
    Affinity {
        /// The thread.
        pid: u32,
        /// The CPU.
        cpu: usize,
        /// errno.
        errno: nix::Error,
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

/// A MAC address as `ip` writes it: `02:00:5e:00:01:02`.
pub fn mac_str(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
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

/// [`flowpin_bpf_progs::netdev::disable_tx_checksum_offload`] with this
/// crate's error type. `ethtool -K <ifname> tx off`: turns off TX checksum offload of an
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
#[cfg(feature = "bpf")]
pub fn disable_tx_checksum_offload(ifname: &str) -> Result<()> {
    flowpin_bpf_progs::netdev::disable_tx_checksum_offload(ifname).map_err(|e| {
        TestingError::Ethtool {
            what: e.op,
            ifname: ifname.to_string(),
            source: io::Error::other(e.to_string()),
        }
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
    fn mac_str_is_what_ip_writes() {
        assert_eq!(mac_str([0x02, 0, 0x5e, 0, 1, 0xab]), "02:00:5e:00:01:ab");
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
