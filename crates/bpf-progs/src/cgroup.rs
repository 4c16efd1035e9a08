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

/// The first `cgroup2` mount point of a `/proc/<pid>/mounts` text.
/// Mount points are octal-escaped there (a space is `\040`); they are
/// unescaped.
pub fn cgroup2_mount_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let _dev = f.next()?;
        let dir = f.next()?;
        let fstype = f.next()?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape(dir)))
    })
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_line_on_hybrid_and_unified_hosts() {
        let hybrid = "sysfs /sys sysfs rw 0 0\n\
                      tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nsdelegate 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n";
        assert_eq!(
            cgroup2_mount_in(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount_in(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount_in("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"),
            None
        );
        assert_eq!(cgroup2_mount_in(""), None);
    }

    #[test]
    fn unescapes_octal_mount_points() {
        let m = "none /mnt/my\\040cgroups cgroup2 rw 0 0\n";
        assert_eq!(cgroup2_mount_in(m), Some(PathBuf::from("/mnt/my cgroups")));
        // A lone backslash or a short escape stays as it is.
        assert_eq!(unescape("a\\b\\04"), "a\\b\\04");
    }

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
