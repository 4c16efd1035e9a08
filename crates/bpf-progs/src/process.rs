//! Starting a server process where the programs expect it: inside a cgroup
//! v2 (the `sockops_server_id` server role must be attached to the
//! server's cgroup **before** it calls `listen()`, so the process has to be
//! in the cgroup from its first instruction) and, optionally, inside a
//! network namespace.
//!
//! ```no_run
//! use std::process::Command;
//! use flowpin_bpf_progs::process::CommandCgroupExt;
//! let mut nginx = Command::new("nginx")
//!     .args(["-g", "daemon off;"])
//!     .in_cgroup("/sys/fs/cgroup/backend")?   // cgroup.procs opened now, written before exec
//!     .in_netns("/run/netns/backend1")?       // namespace opened now, setns before exec
//!     .spawn()?;
//! # nginx.kill()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Places the child of a [`Command`] before it runs its program.
///
/// Each call opens what it needs **now, in the parent** (so a missing
/// cgroup or namespace is an error of this call, with a message naming the
/// path, not of `spawn()`), and the child uses the open file between `fork`
/// and `exec` (`pre_exec`) with async-signal-safe system calls only
/// (`write(2)`, `setns(2)`; no allocation), so the program never runs
/// outside the cgroup or namespace. A failure in the child makes `spawn()`
/// fail with that errno.
pub trait CommandCgroupExt {
    /// The child joins the cgroup v2 directory `cgroup` before `exec`: its
    /// `cgroup.procs` is opened now (an error names the path and says to
    /// create the cgroup, e.g. under [`crate::cgroup::cgroup2_mount`]) and
    /// the child writes its pid there.
    fn in_cgroup(&mut self, cgroup: impl AsRef<Path>) -> io::Result<&mut Command>;

    /// The child enters the network namespace at `netns` (`/run/netns/<name>`
    /// or `/proc/<pid>/ns/net`) before `exec`. The namespace file is opened
    /// now (an error names the path).
    fn in_netns(&mut self, netns: impl AsRef<Path>) -> io::Result<&mut Command>;
}

fn open_error(what: &str, path: &Path, e: io::Error, hint: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}; {hint}", path.display()))
}

impl CommandCgroupExt for Command {
    fn in_cgroup(&mut self, cgroup: impl AsRef<Path>) -> io::Result<&mut Command> {
        let cgroup = cgroup.as_ref();
        let procs = cgroup.join("cgroup.procs");
        let fd: OwnedFd = OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(|e| {
                open_error(
                    "cgroup",
                    cgroup,
                    e,
                    "it must be an existing cgroup v2 directory (create it under the cgroup2 mount, see flowpin_bpf_progs::cgroup::cgroup2_mount)",
                )
            })?
            .into();
        // SAFETY: the closure only calls write(2) (async-signal-safe) on an
        // fd opened before the fork, and builds its error from errno
        // (`io::Error::last_os_error` does not allocate).
        unsafe {
            self.pre_exec(move || {
                // "0" moves the writing process itself.
                let n = nix::libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1);
                if n != 1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
        };
        Ok(self)
    }

    fn in_netns(&mut self, netns: impl AsRef<Path>) -> io::Result<&mut Command> {
        let netns = netns.as_ref();
        let ns: OwnedFd = File::open(netns)
            .map_err(|e| {
                open_error(
                    "network namespace",
                    netns,
                    e,
                    "give /run/netns/<name> or /proc/<pid>/ns/net of a namespace that exists",
                )
            })?
            .into();
        // SAFETY: the closure only calls setns(2) (async-signal-safe) on an
        // fd opened before the fork, and builds its error from errno
        // (`io::Error::last_os_error` does not allocate).
        unsafe {
            self.pre_exec(move || {
                if nix::libc::setns(ns.as_raw_fd(), nix::libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
        };
        Ok(self)
    }
}
