//! Each program's maps declared once: [`map_table!`] declares a program's
//! maps (name = pin name, kind, the object's name when it differs) and
//! generates the struct holding their handles; loading (with the maps of
//! an earlier instance reused), pinning, reopening from pins, unpinning and
//! upgrading derive from that one table, as Katran and cilium/ebpf's
//! `CollectionSpec` do. Adding a map to a program is one line in its table.
//!
//! ```text
//! map_table! {
//!     /// The maps of xdp_decap.
//!     pub(crate) struct DecapMaps {
//!         tunnel_v4: Map,
//!         tunnel_v6: Map,
//!         stats: Map,
//!         meta: Meta,            // pinned last: a directory holding it is complete
//!     }
//!     extra { }                  // other fields: MapTable::build(source, (extra, ...))
//!     pin_names: pub const PIN_NAMES;  // the pin files: the table's, then "prog"
//! }
//! ```

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use libbpf_rs::skel::{OpenSkel, Skel};
use libbpf_rs::{MapCore, MapHandle, Object, OpenObject};

use crate::error::KernelError;
use crate::link::{Link, LinkError};
use crate::pin::{PinError, PinLock};

/// The name of a program's pin.
pub(crate) const PROG_PIN: &str = "prog";

/// A loaded program held by its fd, with its kernel id.
#[derive(Debug)]
pub(crate) struct ProgFd {
    fd: OwnedFd,
    id: u32,
}

impl ProgFd {
    /// Reads the id of the program behind `fd`.
    pub(crate) fn new(fd: OwnedFd) -> Result<Self, KernelError> {
        let id = crate::pin::prog_id(fd.as_fd())?;
        Ok(ProgFd { fd, id })
    }

    /// The program's kernel id.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }
}

impl AsFd for ProgFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What part a map plays in its program's pin directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapKind {
    /// A map of its own (`SEC(".maps")`), pinned under its name.
    Map,
    /// A global-data section (`.data`): libbpf names it `<object>.data`;
    /// found by that suffix, pinned under the field's name.
    Section,
    /// The layout/version map: pinned last, after the program, so a
    /// directory holding it is complete.
    Meta,
}

/// One map of a program's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MapSpec {
    /// Its pin file name (and the name in error messages).
    pub(crate) pin: &'static str,
    /// Its name in the BPF object (a [`MapKind::Section`]: the suffix).
    pub(crate) object: &'static str,
    /// What part it plays.
    pub(crate) kind: MapKind,
}

impl MapSpec {
    /// Whether the object's map `name` is this one.
    pub(crate) fn matches(&self, name: &std::ffi::OsStr) -> bool {
        let name = name.to_string_lossy();
        match self.kind {
            MapKind::Section => name.ends_with(self.object),
            MapKind::Map | MapKind::Meta => name == self.object,
        }
    }
}

/// What [`map_table!`] implements: the table, the handles in its order,
/// and building the struct from a source of maps.
pub(crate) trait MapTable: Sized {
    /// The fields after the maps, as a tuple (`()`: none).
    type Extra;

    /// The table, in declaration order.
    const MAPS: &'static [MapSpec];

    /// The handles, in the order of [`MAPS`](Self::MAPS).
    fn handles(&self) -> Vec<&MapHandle>;

    /// Builds the struct: every map from `source` (table order), then the
    /// extra fields.
    fn build<E>(
        source: impl FnMut(&'static MapSpec) -> Result<MapHandle, E>,
        extra: Self::Extra,
    ) -> Result<Self, E>;

    /// The map pinned as `name`.
    fn map_named(&self, name: &str) -> Option<&MapHandle> {
        let i = Self::MAPS.iter().position(|s| s.pin == name)?;
        self.handles().into_iter().nth(i)
    }
}

/// Declares a program's maps once (see the [module docs](self)): generates
/// the struct (one `MapHandle` field per map, then the `extra` fields), its
/// [`MapTable`] impl, a public getter for each map declared
/// `name: Kind => getter "what it holds"`, and the public list of pin names.
// Unused when only `xdp_pass` (no maps) or no program is built.
#[allow(unused_macros)]
macro_rules! map_table {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            $( $field:ident : $kind:ident $(= $object:literal)? $(=> $getter:ident $($gdoc:literal)?)? ),+ $(,)?
        }
        extra { $( $(#[$eattr:meta])* $efield:ident : $ety:ty ),* $(,)? }
        pin_names: $(#[$pattr:meta])* $pvis:vis const $pin_names:ident;
    ) => {
        $(#[$attr])*
        $vis struct $name {
            $( pub(crate) $field: ::libbpf_rs::MapHandle, )+
            $( $(#[$eattr])* pub(crate) $efield: $ety, )*
        }

        impl $crate::pinned_maps::MapTable for $name {
            type Extra = ($($ety,)*);

            const MAPS: &'static [$crate::pinned_maps::MapSpec] = &[
                $( $crate::pinned_maps::map_table!(@spec $field $kind $($object)?), )+
            ];

            fn handles(&self) -> Vec<&::libbpf_rs::MapHandle> {
                vec![$( &self.$field ),+]
            }

            fn build<E>(
                mut source: impl FnMut(&'static $crate::pinned_maps::MapSpec) -> ::std::result::Result<::libbpf_rs::MapHandle, E>,
                extra: Self::Extra,
            ) -> ::std::result::Result<Self, E> {
                let ($($efield,)*) = extra;
                ::std::result::Result::Ok($name {
                    $( $field: source(&$crate::pinned_maps::map_table!(@spec $field $kind $($object)?))?, )+
                    $( $efield, )*
                })
            }
        }

        impl $name {
            $($(
                #[doc = concat!(
                    "The `", stringify!($field), "` map", $(" (", $gdoc, ")",)?
                    ": a [`libbpf_rs::MapHandle`] of the libbpf-rs this crate re-exports."
                )]
                pub fn $getter(&self) -> &::libbpf_rs::MapHandle {
                    &self.$field
                }
            )?)+
        }

        $(#[$pattr])*
        $pvis const $pin_names: &[&str] = &[
            $( stringify!($field), )+
            $crate::pinned_maps::PROG_PIN,
        ];
    };
    (@spec $field:ident $kind:ident) => {
        $crate::pinned_maps::MapSpec {
            pin: stringify!($field),
            object: stringify!($field),
            kind: $crate::pinned_maps::MapKind::$kind,
        }
    };
    (@spec $field:ident $kind:ident $object:literal) => {
        $crate::pinned_maps::MapSpec {
            pin: stringify!($field),
            object: $object,
            kind: $crate::pinned_maps::MapKind::$kind,
        }
    };
}
#[allow(unused_imports)] // as above
pub(crate) use map_table;

/// A source for [`MapTable::build`]: the maps of a loaded object.
pub(crate) fn from_object(
    obj: &Object,
) -> impl FnMut(&'static MapSpec) -> Result<MapHandle, KernelError> + '_ {
    move |spec| {
        let map = obj.maps().find(|m| spec.matches(m.name())).ok_or_else(|| {
            KernelError::errno(
                format!("map {}", spec.pin),
                "find in object",
                2,
                "the BPF object has no such map: the program and this library are out of sync",
            )
        })?;
        MapHandle::try_from(&map).map_err(KernelError::map(spec.pin, "dup"))
    }
}

/// A source for [`MapTable::build`]: the maps pinned under `dir`.
pub(crate) fn pinned_at(
    dir: &Path,
) -> impl FnMut(&'static MapSpec) -> Result<MapHandle, PinError> + '_ {
    move |spec| crate::pin::map_at(dir, spec.pin)
}

/// The [`MapKind::Meta`] entry (key 0) pinned under `dir`, and the
/// layout version in its first 4 bytes (0: none).
pub(crate) fn read_meta<M: MapTable>(dir: &Path) -> Result<(Vec<u8>, u32), PinError> {
    let name = M::MAPS
        .iter()
        .find(|s| s.kind == MapKind::Meta)
        .map_or("meta", |s| s.pin);
    let meta = crate::pin::map_at(dir, name)?;
    let raw = meta
        .lookup(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
        .map_err(KernelError::map("meta", "lookup"))?
        .unwrap_or_default();
    let version = raw
        .get(..4)
        .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    Ok((raw, version))
}

/// Before load: every map of the table in `open` reuses `maps`' map
/// (`reuse_fd`), so the program loads against an earlier instance's maps
/// (an upgrade keeps every entry).
pub(crate) fn reuse<M: MapTable>(open: &mut OpenObject, maps: &M) -> Result<(), KernelError> {
    let handles = maps.handles();
    let mut reused = 0;
    for mut om in open.maps_mut() {
        if let Some(i) = M::MAPS.iter().position(|s| s.matches(om.name())) {
            om.reuse_fd(handles[i].as_fd())
                .map_err(KernelError::map(M::MAPS[i].pin, "reuse_fd"))?;
            reused += 1;
        }
    }
    if reused != M::MAPS.len() {
        return Err(KernelError::errno(
            "object",
            "reuse_fd",
            2,
            "the BPF object lacks maps of the table: the program and this library are out of sync",
        ));
    }
    Ok(())
}

/// Loads an opened skeleton (configured by the caller), with the maps of
/// `reuse_maps` when given, then hands its program `prog` (dup'ed) and
/// the loaded object to `build`, which takes what it keeps (the table's
/// maps: [`from_object`]); all of it outlives the skeleton.
pub(crate) fn load<'obj, O, M, T>(
    mut open: O,
    reuse_maps: Option<&M>,
    prog: &'static str,
    load_hint: &'static str,
    build: impl FnOnce(OwnedFd, &Object) -> Result<T, KernelError>,
) -> Result<T, KernelError>
where
    O: OpenSkel<'obj>,
    M: MapTable,
{
    if let Some(m) = reuse_maps {
        reuse(open.open_object_mut(), m)?;
    }
    let object = || format!("program {prog}");
    let skel = open
        .load()
        .map_err(|e| KernelError::libbpf(object(), "load", &e, load_hint))?;
    let obj = skel.object();
    let fd = obj
        .progs()
        .find(|p| p.name() == prog)
        .ok_or_else(|| {
            KernelError::errno(
                object(),
                "find in object",
                2,
                "the BPF object has no such program: the program and this library are out of sync",
            )
        })?
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| KernelError::io(object(), "dup", &e, ""))?;
    build(fd, obj)
}

/// [`load`] for a table without extra fields: the program and the maps.
pub(crate) fn load_table<'obj, O, M>(
    open: O,
    reuse_maps: Option<&M>,
    prog: &'static str,
    load_hint: &'static str,
) -> Result<(OwnedFd, M), KernelError>
where
    O: OpenSkel<'obj>,
    M: MapTable<Extra = ()>,
{
    load(open, reuse_maps, prog, load_hint, |fd, obj| {
        Ok((fd, M::build(from_object(obj), ())?))
    })
}

/// The program and the maps of a table without extra fields pinned under
/// `dir` (by [`pin_dir`] or [`pin_into`]).
pub(crate) fn open_table<M: MapTable<Extra = ()>>(dir: &Path) -> Result<(OwnedFd, M), PinError> {
    let maps = M::build(pinned_at(dir), ())?;
    let prog = crate::pin::open_pinned_fd(dir.join(PROG_PIN))?;
    Ok((prog, maps))
}

/// Writes `value` at key 0 of a [`MapKind::Meta`] map.
pub(crate) fn write_meta(meta: &MapHandle, value: &[u8]) -> Result<(), KernelError> {
    meta.update(&0u32.to_ne_bytes(), value, libbpf_rs::MapFlags::ANY)
        .map_err(KernelError::map("meta", "update"))
}

/// Pins `maps` and `prog` under `dir` (created on bpffs, 0700; pins 0600),
/// under the directory's lock: the maps in table order, then the program,
/// then the [`MapKind::Meta`] map, so a directory holding `meta` is
/// complete. Refused with `EEXIST` if `dir` holds a `meta` already; on a
/// failure the pins made are removed.
pub(crate) fn pin_dir<M: MapTable>(
    dir: &Path,
    maps: &M,
    prog: BorrowedFd<'_>,
) -> Result<(), KernelError> {
    crate::pin::create_pin_dir(dir)?;
    let _lock = PinLock::acquire(dir)?;
    let handles = maps.handles();
    let table = M::MAPS.iter().zip(&handles);
    let meta = table.clone().filter(|(s, _)| s.kind == MapKind::Meta);
    if let Some((s, _)) = meta.clone().next() {
        if dir.join(s.pin).exists() {
            return Err(KernelError::errno(
                format!("pin directory {}", dir.display()),
                "pin",
                17,
                "it already holds a pinned program: reopen it with open_pinned, or remove it with unpin",
            ));
        }
    }
    let mut objects: Vec<(&str, BorrowedFd<'_>)> = table
        .clone()
        .filter(|(s, _)| s.kind != MapKind::Meta)
        .map(|(s, h)| (s.pin, h.as_fd()))
        .collect();
    objects.push((PROG_PIN, prog));
    objects.extend(meta.map(|(s, h)| (s.pin, h.as_fd())));
    for (i, (name, fd)) in objects.iter().enumerate() {
        if let Err(e) = crate::pin::pin_fd(*fd, dir.join(name)) {
            for (n, _) in &objects[..i] {
                let _ = std::fs::remove_file(dir.join(n));
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Pins `prog` and `maps` into the existing bpffs directory `dir`: the
/// program, then the maps in table order (no lock, no completeness
/// marker: for programs whose owner manages the directory).
pub(crate) fn pin_into<M: MapTable>(
    dir: &Path,
    maps: &M,
    prog: BorrowedFd<'_>,
) -> Result<(), KernelError> {
    crate::pin::pin_fd(prog, dir.join(PROG_PIN))?;
    for (s, h) in M::MAPS.iter().zip(maps.handles()) {
        crate::pin::pin_fd(h.as_fd(), dir.join(s.pin))?;
    }
    Ok(())
}

/// Removes the pins [`pin_into`] made under `dir` (missing ones are fine),
/// then `dir` if it is empty.
pub(crate) fn unpin_from<M: MapTable>(dir: &Path) -> Result<(), KernelError> {
    let names = std::iter::once(PROG_PIN).chain(M::MAPS.iter().map(|s| s.pin));
    for n in names {
        let p = dir.join(n);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(KernelError::io(
                    format!("pin {}", p.display()),
                    "unlink",
                    &e,
                    "",
                ))
            }
            _ => {}
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e)
            if e.kind() != std::io::ErrorKind::NotFound
                && e.kind() != std::io::ErrorKind::DirectoryNotEmpty =>
        {
            Err(KernelError::io(
                format!("pin directory {}", dir.display()),
                "rmdir",
                &e,
                "",
            ))
        }
        _ => Ok(()),
    }
}

/// The upgrade sequence shared by every pinnable program: under the pin
/// directory's lock (when pinned), `load` this build's program against the
/// same maps, swap it into `link` (`BPF_LINK_UPDATE`), and replace the
/// `prog` pin. Returns the new program.
pub(crate) fn upgrade<E>(
    pin_dir: Option<&PathBuf>,
    link: &impl Link,
    load: impl FnOnce() -> Result<OwnedFd, E>,
) -> Result<OwnedFd, E>
where
    E: From<KernelError> + From<LinkError>,
{
    let _lock = pin_dir.map(PinLock::acquire).transpose()?;
    let prog = load()?;
    link.update_program(prog.as_fd())?;
    if let Some(dir) = pin_dir {
        crate::pin::repin_prog(dir, prog.as_fd())?;
    }
    Ok(prog)
}

/// A loaded program and the directory it is pinned in (set once: by
/// [`pin`](Self::pin), or when reopened from its pins): the pin / reopen /
/// upgrade part every pinnable program's handle shares.
#[derive(Debug)]
pub(crate) struct PinnedProg {
    fd: OwnedFd,
    dir: std::sync::OnceLock<PathBuf>,
}

impl PinnedProg {
    /// A program just loaded, not pinned.
    pub(crate) fn loaded(fd: OwnedFd) -> Self {
        PinnedProg {
            fd,
            dir: std::sync::OnceLock::new(),
        }
    }

    /// A program reopened from its pins under `dir`.
    pub(crate) fn reopened(fd: OwnedFd, dir: &Path) -> Self {
        PinnedProg {
            fd,
            dir: std::sync::OnceLock::from(dir.to_path_buf()),
        }
    }

    /// Pins `maps` and the program under `dir` per [`pin_dir`] and
    /// remembers `dir` (where [`upgrade`](Self::upgrade) replaces the `prog` pin).
    pub(crate) fn pin<M: MapTable>(&self, dir: &Path, maps: &M) -> Result<(), KernelError> {
        pin_dir(dir, maps, self.fd.as_fd())?;
        let _ = self.dir.set(dir.to_path_buf());
        Ok(())
    }

    /// Replaces the program per [`upgrade`]: `load` this build's program,
    /// swap it into `link`, and repin it when pinned.
    pub(crate) fn upgrade<E>(
        &mut self,
        link: &impl Link,
        load: impl FnOnce() -> Result<OwnedFd, E>,
    ) -> Result<(), E>
    where
        E: From<KernelError> + From<LinkError>,
    {
        self.fd = upgrade(self.dir.get(), link, load)?;
        Ok(())
    }
}

impl AsFd for PinnedProg {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
