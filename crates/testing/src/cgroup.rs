//! cgroup v2 guards: a child cgroup removed on drop, and this process's
//! membership in one, undone on drop.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::{unique_name, Result, TestingError};

/// Finds the cgroup v2 mount point in `/proc/self/mounts` (e.g.
/// `/sys/fs/cgroup/unified` or `/sys/fs/cgroup`), with the suite's one
/// parser ([`flowpin_bpf_abi::mounts::cgroup2_mount_in`]).
pub fn cgroup2_mount() -> Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").map_err(|source| TestingError::Io {
        what: "reading",
        path: "/proc/self/mounts".into(),
        source,
    })?;
    flowpin_bpf_abi::mounts::cgroup2_mount_in(&mounts).ok_or(TestingError::NoCgroup2)
}

/// The cgroup v2 this process is in: `<cgroup2 mount>/<path>` from the
/// `0::<path>` line of `/proc/self/cgroup`.
pub fn current_cgroup() -> Result<PathBuf> {
    let own = fs::read_to_string("/proc/self/cgroup").map_err(|source| TestingError::Io {
        what: "reading",
        path: "/proc/self/cgroup".into(),
        source,
    })?;
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or(TestingError::NoOwnCgroup)?;
    Ok(cgroup2_mount()?.join(rel.trim_start_matches('/')))
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

/// This whole process's stay in a [`Cgroup`]: [`CgroupMembership::join`]
/// moves the process in, [`CgroupMembership::leave`] (or, best effort,
/// dropping the guard) moves it back to the cgroup it was in before.
///
/// Sockets take the cgroup of the process that creates them, so this is how
/// a test or the lab makes sockets a `sock_ops` program attached to the
/// cgroup sees. It moves every thread of the process: callers that run
/// such sections from several threads serialize them.
#[derive(Debug)]
#[must_use = "the process moves back when the membership drops"]
pub struct CgroupMembership {
    original: PathBuf,
    left: bool,
}

impl CgroupMembership {
    /// Moves this process into `cg`, remembering the cgroup it is in now.
    pub fn join(cg: &Cgroup) -> Result<Self> {
        let original = current_cgroup()?;
        cg.add_pid(std::process::id())?;
        Ok(CgroupMembership {
            original,
            left: false,
        })
    }

    /// The cgroup the process goes back to.
    pub fn original(&self) -> &Path {
        &self.original
    }

    /// Moves the process back to the cgroup it was in before
    /// [`CgroupMembership::join`], reporting a failure (dropping the guard
    /// does the same but cannot report).
    pub fn leave(mut self) -> Result<()> {
        self.left = true;
        move_back(&self.original)
    }
}

fn move_back(original: &Path) -> Result<()> {
    let procs = original.join("cgroup.procs");
    fs::write(&procs, std::process::id().to_string()).map_err(|source| TestingError::Io {
        what: "moving this process back into",
        path: procs,
        source,
    })
}

impl Drop for CgroupMembership {
    fn drop(&mut self) {
        if !self.left {
            let _ = move_back(&self.original);
        }
    }
}
