//! One `flowpin-node lb` per pin directory: an exclusive, non-blocking
//! `flock` held for the node's life on a lock directory next to the pin
//! directory (`<parent>/<name>-node-lock`, on bpffs like the pins, which allows no dot in a name). The pin
//! directory itself is not used: `xdp_lb` takes a (blocking) `flock` on it
//! for every change, and a second lock on it from this process would wait
//! for itself.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PinLockError {
    /// Another process holds it.
    #[error("pin directory {pin_dir} is in use by another `flowpin-node lb` (lock {lock} held): two nodes on one pin directory would fight over the data path. Stop the other one (`fuser -v {lock}` shows it) or give this one its own lb.pin_dir")]
    Busy {
        /// The pin directory.
        pin_dir: PathBuf,
        /// The lock directory.
        lock: PathBuf,
    },
    /// The lock directory cannot be made or opened.
    #[error("cannot make or open the lock {lock} of pin directory {pin_dir}: {source} (is bpffs mounted at /sys/fs/bpf, and are we root?)")]
    Io {
        /// The pin directory.
        pin_dir: PathBuf,
        /// The lock directory.
        lock: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The held lock; released (and its directory removed) on drop.
#[derive(Debug)]
pub struct PinDirLock {
    _lock: Flock<File>,
    path: PathBuf,
}

/// The lock directory of `pin_dir`.
pub fn lock_path(pin_dir: &Path) -> PathBuf {
    let name = pin_dir
        .file_name()
        .map_or_else(|| "pins".into(), |n| n.to_string_lossy().into_owned());
    pin_dir.with_file_name(format!("{name}-node-lock"))
}

impl PinDirLock {
    /// Takes the lock of `pin_dir` or says who has it. Never waits.
    pub fn acquire(pin_dir: &Path) -> Result<PinDirLock, PinLockError> {
        let lock = lock_path(pin_dir);
        let io = |source| PinLockError::Io {
            pin_dir: pin_dir.to_path_buf(),
            lock: lock.clone(),
            source,
        };
        loop {
            match std::fs::create_dir_all(&lock) {
                Ok(()) => {}
                Err(e) => return Err(io(e)),
            }
            let f = File::open(&lock).map_err(io)?;
            let held = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((_, Errno::EWOULDBLOCK)) => {
                    return Err(PinLockError::Busy {
                        pin_dir: pin_dir.to_path_buf(),
                        lock,
                    })
                }
                Err((_, e)) => return Err(io(std::io::Error::from(e))),
            };
            // The previous holder removes the directory when it exits: if
            // ours was removed (and maybe made anew) between open and
            // flock, lock the one that is there now.
            let same = match (held.metadata(), std::fs::metadata(&lock)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if same {
                return Ok(PinDirLock {
                    _lock: held,
                    path: lock,
                });
            }
        }
    }

    /// The lock directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDirLock {
    fn drop(&mut self) {
        // Removed while still held: a waiter that opened it sees the
        // inode change and retries on a new one.
        let _ = std::fs::remove_dir(&self.path);
    }
}
