//! Pinning on bpffs, shared by every program: the pin directory (bpffs
//! mounted at `/sys/fs/bpf` if missing), pins created `0600`, objects
//! reopened from their pins, a cross-process lock on the directory, and
//! swapping the program of a BPF link in place (`BPF_LINK_UPDATE`).
//!
//! A pin directory holds one program's maps (and, by convention, its
//! links): `XdpLb::pin(dir)` / `XdpLb::open_pinned(dir)` /
//! `XdpLb::unpin(dir)`, the same three for `XdpDecap` and `ServerIdOps`.
//! bpffs holds only BPF objects and directories (no regular files), so the
//! lock is a `flock(2)` on the directory itself.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::KernelError;

/// Opening a pinned object failed: nothing is pinned there, or the kernel
/// refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// Nothing is pinned at `path` (`ENOENT`): a wrong path, a directory
    /// that was never pinned, or pins already removed.
    #[error("nothing is pinned at {}: check the path (pins live on bpffs, under /sys/fs/bpf), pin the program or link there first, or it was removed (unpin)", path.display())]
    NotPinned {
        /// The pin (or pin directory) that does not exist.
        path: PathBuf,
    },
    /// Any other failure of the kernel call.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// `impl From<PinError> for $error`, for an error enum with a
/// `NotPinned { path }` and a `Kernel(KernelError)` variant.
macro_rules! from_pin_error {
    ($error:ty) => {
        impl From<$crate::pin::PinError> for $error {
            fn from(e: $crate::pin::PinError) -> Self {
                match e {
                    $crate::pin::PinError::NotPinned { path } => Self::NotPinned { path },
                    $crate::pin::PinError::Kernel(k) => Self::Kernel(k),
                }
            }
        }
    };
}
pub(crate) use from_pin_error;

/// `path` when it exists, else its first missing ancestor: what a
/// `NotPinned` error names (the pin directory rather than a file in it).
fn missing_part(path: &Path) -> PathBuf {
    let mut missing = path;
    while let Some(parent) = missing.parent() {
        if parent.as_os_str().is_empty() || parent.exists() {
            break;
        }
        missing = parent;
    }
    missing.to_path_buf()
}

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

const PIN_HINT: &str = "EEXIST: something is already pinned there (unpin it first); ENOENT: no such pin; EPERM/EACCES: need root, and the path must be on bpffs";

/// Whether `p` is on a bpffs mount.
// The statfs f_type width differs between architectures.
#[allow(clippy::unnecessary_cast)]
pub fn is_bpffs(p: impl AsRef<Path>) -> bool {
    nix::sys::statfs::statfs(p.as_ref()).is_ok_and(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

/// Mounts bpffs at [`BPFFS`] if nothing is mounted there.
pub fn ensure_bpffs() -> Result<(), KernelError> {
    let root = Path::new(BPFFS);
    if is_bpffs(root) {
        return Ok(());
    }
    std::fs::create_dir_all(root).map_err(|e| KernelError::io(BPFFS, "mkdir", &e, "need root"))?;
    nix::mount::mount(
        Some("bpf"),
        root,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| {
        KernelError::errno(
            BPFFS,
            "mount -t bpf",
            e as i32,
            "need CAP_SYS_ADMIN to mount bpffs",
        )
    })
}

/// Creates the pin directory `dir` (mode 0700; bpffs mounted if missing)
/// and checks it is on bpffs.
pub fn create_pin_dir(dir: impl AsRef<Path>) -> Result<(), KernelError> {
    let dir = dir.as_ref();
    ensure_bpffs()?;
    let obj = || format!("pin directory {}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| {
        KernelError::io(
            obj(),
            "mkdir",
            &e,
            "the pin directory must be under /sys/fs/bpf (bpffs)",
        )
    })?;
    if !is_bpffs(dir) {
        return Err(KernelError::errno(
            obj(),
            "statfs",
            22,
            "not on bpffs: put pins under /sys/fs/bpf",
        ));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| KernelError::io(obj(), "chmod 0700", &e, ""))?;
    Ok(())
}

fn c_path(path: &Path) -> std::ffi::CString {
    // A path from the OS has no interior NUL except by construction error;
    // such a path is mapped to an empty one, which the kernel rejects (ENOENT).
    std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

/// Pins the BPF object `fd` (map, program or link) at `path`, mode 0600.
pub fn pin_fd(fd: BorrowedFd<'_>, path: impl AsRef<Path>) -> Result<(), KernelError> {
    let path = path.as_ref();
    let p = c_path(path);
    // SAFETY: `fd` is a valid open fd for the duration of the call and `p`
    // a NUL-terminated string that outlives it.
    let rc = unsafe { libbpf_rs::libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), p.as_ptr()) };
    if rc < 0 {
        return Err(KernelError::errno(
            format!("pin {}", path.display()),
            "bpf_obj_pin",
            -rc,
            PIN_HINT,
        ));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| KernelError::io(format!("pin {}", path.display()), "chmod 0600", &e, ""))?;
    Ok(())
}

/// Opens the BPF object pinned at `path`; [`PinError::NotPinned`] if
/// nothing is pinned there.
pub fn open_pinned_fd(path: impl AsRef<Path>) -> Result<OwnedFd, PinError> {
    let path = path.as_ref();
    let p = c_path(path);
    // SAFETY: `p` is a NUL-terminated string that outlives the call.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_obj_get(p.as_ptr()) };
    if fd == -2 {
        return Err(PinError::NotPinned {
            path: missing_part(path),
        });
    }
    if fd < 0 {
        return Err(KernelError::errno(
            format!("pin {}", path.display()),
            "bpf_obj_get",
            -fd,
            PIN_HINT,
        )
        .into());
    }
    // SAFETY: bpf_obj_get returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes every pin under `dir`, then `dir` (a missing directory is not
/// an error). Links pinned there are detached once no process holds them.
pub fn remove_pin_dir(dir: impl AsRef<Path>) -> Result<(), KernelError> {
    let dir = dir.as_ref();
    let obj = || format!("pin directory {}", dir.display());
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(KernelError::io(obj(), "readdir", &e, "")),
    };
    for e in entries {
        let e = e.map_err(|e| KernelError::io(obj(), "readdir", &e, ""))?;
        let p = e.path();
        let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_pin_dir(&p)
        } else {
            std::fs::remove_file(&p)
                .or_else(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| KernelError::io(format!("pin {}", p.display()), "unlink", &e, ""))
        };
        r?;
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(KernelError::io(obj(), "rmdir", &e, "")),
    }
}

/// An exclusive `flock(2)` on a pin directory, held until dropped: every
/// read-modify-write of pinned state takes it, so controllers in several
/// processes never interleave their changes.
#[derive(Debug)]
pub struct PinLock {
    _dir: nix::fcntl::Flock<File>,
    path: PathBuf,
}

impl PinLock {
    /// Blocks until the lock on `dir` is ours.
    pub fn acquire(dir: impl AsRef<Path>) -> Result<PinLock, KernelError> {
        let dir = dir.as_ref();
        let f = File::open(dir).map_err(|e| {
            KernelError::io(format!("pin directory {}", dir.display()), "open", &e, "")
        })?;
        let lock =
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
                KernelError::errno(
                    format!("pin directory {}", dir.display()),
                    "flock",
                    e as i32,
                    "",
                )
            })?;
        Ok(PinLock {
            _dir: lock,
            path: dir.to_path_buf(),
        })
    }

    /// The locked directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Swaps the program of the BPF link `link` for `prog` atomically
/// (`BPF_LINK_UPDATE`): the hook runs the old program or the new one for
/// every packet, never none.
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> Result<(), KernelError> {
    // SAFETY: both fds are valid for the call; NULL opts means no
    // expected-old-program check.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_link_update(link.as_raw_fd(), prog.as_raw_fd(), std::ptr::null())
    };
    if rc < 0 {
        return Err(KernelError::errno(
            "link",
            "bpf_link_update",
            -rc,
            "EINVAL: the new program has another type or attach type than the link's",
        ));
    }
    Ok(())
}

/// The id of the BPF program behind `fd`.
pub fn prog_id(fd: BorrowedFd<'_>) -> Result<u32, KernelError> {
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: `info` is a writable bpf_prog_info of `len` bytes that outlives the call.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len)
    };
    if rc < 0 {
        return Err(KernelError::errno(
            "program",
            "bpf_prog_get_info_by_fd",
            -rc,
            "",
        ));
    }
    Ok(info.id)
}

/// Replaces the program pinned at `dir/prog` with `prog` (an upgrade):
/// pinned under a temporary name, then renamed over the old pin.
pub(crate) fn repin_prog(dir: &Path, prog: BorrowedFd<'_>) -> Result<(), KernelError> {
    let p = dir.join("prog");
    // bpffs refuses names with a dot.
    let tmp = dir.join("prog_upgrade");
    let _ = std::fs::remove_file(&tmp);
    pin_fd(prog, &tmp)?;
    std::fs::rename(&tmp, &p)
        .map_err(|e| KernelError::io(format!("pin {}", p.display()), "rename", &e, ""))
}

/// Opens the map pinned at `dir/name`.
pub(crate) fn map_at(dir: &Path, name: &str) -> Result<libbpf_rs::MapHandle, PinError> {
    let p = dir.join(name);
    libbpf_rs::MapHandle::from_pinned_path(&p).map_err(|e| {
        not_pinned_or(
            &p,
            &e,
            "not a map: a pin directory of another program, or a half-removed one (unpin it)",
        )
    })
}

/// `NotPinned` for `ENOENT`, else a [`KernelError`] with `hint`.
fn not_pinned_or(p: &Path, e: &libbpf_rs::Error, hint: &'static str) -> PinError {
    if e.kind() == libbpf_rs::ErrorKind::NotFound {
        return PinError::NotPinned {
            path: missing_part(p),
        };
    }
    KernelError::libbpf(format!("pin {}", p.display()), "open", e, hint).into()
}
