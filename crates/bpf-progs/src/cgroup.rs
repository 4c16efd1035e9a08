//! Finding the cgroup v2 file system, where `sockops_server_id` attaches
//! and where [`crate::process::CommandCgroupExt::in_cgroup`] places a
//! server.
//!
//! Its mount point differs between hosts: `/sys/fs/cgroup` on a unified
//! (cgroup v2 only) host, `/sys/fs/cgroup/unified` on a hybrid one, anything
//! on a custom set-up. [`cgroup2_mount`] reads it from `/proc/self/mounts`.
//!
//! ```no_run
//! let root = flowpin_bpf_progs::cgroup::cgroup2_mount()?;
//! let servers = root.join("servers");   // create it, then attach sockops_server_id there
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::path::PathBuf;

/// The mount point of the cgroup v2 file system, as the calling process
/// sees it (the first `cgroup2` line of `/proc/self/mounts`). `NotFound`
/// with a message saying how to mount one when there is none.
pub fn cgroup2_mount() -> io::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .map_err(|e| io::Error::new(e.kind(), format!("reading /proc/self/mounts: {e}")))?;
    cgroup2_mount_in(&mounts).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no cgroup2 file system is mounted (looked in /proc/self/mounts); \
             mount one with `mount -t cgroup2 none /sys/fs/cgroup`",
        )
    })
}

pub use flowpin_bpf_abi::mounts::cgroup2_mount_in;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_has_one_when_bpf_tests_can_run() {
        // Every host that runs the privileged tests has cgroup2; on others
        // the error must say how to mount it.
        match cgroup2_mount() {
            Ok(p) => assert!(p.is_absolute(), "{p:?}"),
            Err(e) => assert!(e.to_string().contains("mount -t cgroup2"), "{e}"),
        }
    }
}
