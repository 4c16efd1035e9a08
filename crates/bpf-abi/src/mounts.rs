//! Where the kernel file systems that BPF programs attach to are mounted,
//! read from a `/proc/<pid>/mounts` text: the cgroup v2 hierarchy (the
//! attach point of `sock_ops` programs). Pure parsing, no I/O, so the
//! library (`flowpin_bpf_progs::cgroup::cgroup2_mount`) and the test
//! support (`flowpin_testing::cgroup2_mount`) share one parser.

use std::path::PathBuf;

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
}
