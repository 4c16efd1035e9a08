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
//!     .in_cgroup("/sys/fs/cgroup/backend")   // cgroup.procs written before exec
//!     .in_netns("/run/netns/backend1")       // setns before exec
//!     .spawn()?;
//! # nginx.kill()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Places the child of a [`Command`] before it runs its program. Both
/// steps run in the child between `fork` and `exec` (`pre_exec`), so the
/// program never runs outside the cgroup or namespace; a failure makes
/// `spawn()` fail with that error.
pub trait CommandCgroupExt {
    /// The child joins the cgroup v2 directory `cgroup` (its pid is written
    /// to `<cgroup>/cgroup.procs`) before `exec`. The path is checked now:
    /// a missing `cgroup.procs` fails at `spawn()` with `NotFound`.
    fn in_cgroup(&mut self, cgroup: impl AsRef<Path>) -> &mut Command;

    /// The child enters the network namespace at `netns` (`/run/netns/<name>`
    /// or `/proc/<pid>/ns/net`) before `exec`. The namespace file is opened
    /// now, in the parent.
    fn in_netns(&mut self, netns: impl AsRef<Path>) -> &mut Command;
}

impl CommandCgroupExt for Command {
    fn in_cgroup(&mut self, cgroup: impl AsRef<Path>) -> &mut Command {
        let procs = cgroup.as_ref().join("cgroup.procs");
        // Allocate before fork: only async-signal-safe calls in pre_exec.
        let path = CString::new(procs.as_os_str().as_bytes());
        // SAFETY: the closure only calls open(2), write(2) and close(2)
        // (async-signal-safe) on memory allocated before the fork.
        unsafe {
            self.pre_exec(move || {
                let path = path.as_ref().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "NUL in cgroup path")
                })?;
                let fd = nix::libc::open(path.as_ptr(), nix::libc::O_WRONLY | nix::libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // "0" moves the writing process itself.
                let n = nix::libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = io::Error::last_os_error();
                nix::libc::close(fd);
                if n != 1 {
                    return Err(err);
                }
                Ok(())
            })
        }
    }

    fn in_netns(&mut self, netns: impl AsRef<Path>) -> &mut Command {
        let ns: io::Result<OwnedFd> = File::open(netns.as_ref()).map(OwnedFd::from);
        // SAFETY: the closure only calls setns(2) (async-signal-safe) on an
        // fd opened before the fork.
        unsafe {
            self.pre_exec(move || {
                let ns = ns.as_ref().map_err(|e| {
                    io::Error::new(e.kind(), format!("network namespace file: {e}"))
                })?;
                if nix::libc::setns(ns.as_raw_fd(), nix::libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }
}
