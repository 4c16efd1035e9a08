//! [`FileRef`]: an attach target named by a path or given as an open file
//! (a cgroup v2 directory, a network namespace file). [`CgroupRef`] and
//! [`NetnsRef`] are its names at their attach points.
//!
//! Every path type converts into it, borrowed or owned (`&str`, `String`,
//! `&String`, `&Path`, `PathBuf`, `&PathBuf`, `&OsStr`, `OsString`), as
//! everywhere else in this crate a path argument is `impl AsRef<Path>`;
//! an open file converts from `&File` or a `BorrowedFd`.
//!
//! [`CgroupRef`]: crate::sockops_server_id::CgroupRef
//! [`NetnsRef`]: crate::sk_lookup::NetnsRef

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// A file to attach a program to: a path, or an already open file.
#[derive(Debug, Clone)]
pub enum FileRef<'a> {
    /// A path (opened by the attach call).
    Path(Cow<'a, Path>),
    /// An open file.
    Fd(BorrowedFd<'a>),
}

/// `From<$t> for FileRef` for a borrowed path type.
macro_rules! from_borrowed_path {
    ($($t:ty),*) => {$(
        impl<'a> From<&'a $t> for FileRef<'a> {
            fn from(p: &'a $t) -> Self {
                FileRef::Path(Cow::Borrowed(Path::new(p)))
            }
        }
    )*};
}
from_borrowed_path!(Path, PathBuf, str, String, OsStr, OsString);

/// `From<$t> for FileRef` for an owned path type.
macro_rules! from_owned_path {
    ($($t:ty),*) => {$(
        impl From<$t> for FileRef<'_> {
            fn from(p: $t) -> Self {
                FileRef::Path(Cow::Owned(PathBuf::from(p)))
            }
        }
    )*};
}
from_owned_path!(PathBuf, String, OsString);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_shape_converts() {
        fn path_of<'a>(r: impl Into<FileRef<'a>>) -> PathBuf {
            match r.into() {
                FileRef::Path(p) => p.into_owned(),
                FileRef::Fd(_) => PathBuf::new(),
            }
        }
        let want = PathBuf::from("/sys/fs/cgroup/x");
        let s = String::from("/sys/fs/cgroup/x");
        assert_eq!(path_of("/sys/fs/cgroup/x"), want);
        assert_eq!(path_of(&s), want);
        assert_eq!(path_of(s.clone()), want);
        assert_eq!(path_of(want.as_path()), want);
        assert_eq!(path_of(&want), want);
        assert_eq!(path_of(want.clone()), want);
        assert_eq!(path_of(OsString::from(&s)), want);
        assert_eq!(path_of(OsStr::new(&s)), want);
    }
}
