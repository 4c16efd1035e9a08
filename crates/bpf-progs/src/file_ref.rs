//! [`FileRef`]: an attach target named by a path or given as an open file
//! (a cgroup v2 directory, a network namespace file). [`CgroupRef`] and
//! [`NetnsRef`] are its names at their attach points.
//!
//! [`CgroupRef`]: crate::sockops_server_id::CgroupRef
//! [`NetnsRef`]: crate::sk_lookup::NetnsRef

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// A file to attach a program to: a path, or an already open file.
#[derive(Debug, Clone, Copy)]
pub enum FileRef<'a> {
    /// A path (opened by the attach call).
    Path(&'a Path),
    /// An open file.
    Fd(BorrowedFd<'a>),
}

impl<'a> From<&'a Path> for FileRef<'a> {
    fn from(p: &'a Path) -> Self {
        FileRef::Path(p)
    }
}

impl<'a> From<&'a PathBuf> for FileRef<'a> {
    fn from(p: &'a PathBuf) -> Self {
        FileRef::Path(p.as_path())
    }
}

impl<'a> From<&'a str> for FileRef<'a> {
    fn from(p: &'a str) -> Self {
        FileRef::Path(Path::new(p))
    }
}

impl<'a> From<&'a File> for FileRef<'a> {
    fn from(f: &'a File) -> Self {
        FileRef::Fd(f.as_fd())
    }
}

impl<'a> From<BorrowedFd<'a>> for FileRef<'a> {
    fn from(fd: BorrowedFd<'a>) -> Self {
        FileRef::Fd(fd)
    }
}
