//! Typed access to the maps of [`SkLookup`]: every value is read and written
//! as the skeleton's generated struct through `plain` (checked length and
//! alignment), never at hand-counted offsets.

use std::os::fd::{AsRawFd, BorrowedFd};

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::types::{
    fp_skl_binding, fp_skl_dest, fp_skl_key, fp_skl_label, fp_skl_label_name, fp_skl_stats,
};
use super::{
    KernelError, Result, SkLookup, SkLookupError, DESTINATIONS, LABEL_MAX, MAX_LABELS,
    STATS_UNMATCHED,
};

// SAFETY (all five): #[repr(C)] structs generated from sk_lookup.h made only
// of integers and integer arrays, without implicit padding (explicit `_pad`
// fields; `struct_layouts_have_no_padding` checks the sizes), so every bit
// pattern is valid and every byte is initialised.
//
// SAFETY: as above, for fp_skl_key.
unsafe impl plain::Plain for fp_skl_key {}
// SAFETY: see above.
unsafe impl plain::Plain for fp_skl_binding {}
// SAFETY: see above.
unsafe impl plain::Plain for fp_skl_label_name {}
// SAFETY: see above.
unsafe impl plain::Plain for fp_skl_label {}
// SAFETY: see above.
unsafe impl plain::Plain for fp_skl_dest {}
// SAFETY: see above.
unsafe impl plain::Plain for fp_skl_stats {}

pub(super) fn bytes<T: plain::Plain>(v: &T) -> &[u8] {
    // SAFETY: T: Plain has no padding, so all size_of::<T>() bytes are initialised.
    unsafe { plain::as_bytes(v) }
}

fn read<T: plain::Plain + Default>(map: &'static str, b: &[u8]) -> Result<T> {
    let mut v = T::default();
    plain::copy_from_bytes(&mut v, b).map_err(|_| SkLookupError::Layout {
        map,
        what: "value size",
        got: b.len() as u32,
        want: std::mem::size_of::<T>() as u32,
    })?;
    Ok(v)
}

fn kerr(map: &'static str, op: &'static str) -> impl Fn(libbpf_rs::Error) -> SkLookupError {
    move |e| KernelError::libbpf(map, op, &e, "").into()
}

/// Counters of one label (or of all), summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LabelStats {
    /// Lookups that matched a binding of the label.
    pub lookups: u64,
    /// Of those, handed to the label's socket.
    pub redirected: u64,
    /// Of those, no socket was registered for the protocol (regular lookup ran).
    pub no_socket: u64,
    /// Of those, the kernel refused the socket (`bpf_sk_assign` failed; regular lookup ran).
    pub errors: u64,
}

impl LabelStats {
    fn add(&mut self, s: &fp_skl_stats) {
        self.lookups = self.lookups.wrapping_add(s.lookups);
        self.redirected = self.redirected.wrapping_add(s.redirected);
        self.no_socket = self.no_socket.wrapping_add(s.no_socket);
        self.errors = self.errors.wrapping_add(s.errors);
    }
}

/// Counters of the whole program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkLookupStats {
    /// Summed over every label.
    pub labels: LabelStats,
    /// Lookups that matched no binding.
    pub unmatched: u64,
}

/// A registered socket as the maps hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    /// Cookie of the socket in the socket map.
    pub cookie: u64,
    /// Cookie recorded in `dest_meta` when it was registered: if it differs
    /// from [`Destination::cookie`], the metadata is stale.
    pub registered_cookie: u64,
    /// Family of the registered socket ([`FAMILY_V4`](super::FAMILY_V4) / [`FAMILY_V6`](super::FAMILY_V6)).
    pub family: u8,
    /// The registered IPv6 socket refuses IPv4.
    pub v6only: bool,
}

/// Label name as the map key (NUL-padded).
pub fn label_key(name: &str) -> Result<fp_skl_label_name> {
    if name.is_empty() || name.len() > LABEL_MAX || name.as_bytes().contains(&0) {
        return Err(SkLookupError::InvalidConfig(format!(
            "label {name:?} must be 1 to {LABEL_MAX} bytes without NUL"
        )));
    }
    let mut k = fp_skl_label_name::default();
    for (d, s) in k.name.iter_mut().zip(name.bytes()) {
        *d = s as _;
    }
    Ok(k)
}

fn label_name(k: &fp_skl_label_name) -> String {
    let b: Vec<u8> = k
        .name
        .iter()
        .map(|&c| c as u8)
        .take_while(|&c| c != 0)
        .collect();
    String::from_utf8_lossy(&b).into_owned()
}

fn sum_stats(map: &MapHandle, index: u32) -> Result<LabelStats> {
    let per_cpu = map
        .lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
        .map_err(kerr("map stats", "lookup_percpu"))?
        .unwrap_or_default();
    let mut out = LabelStats::default();
    for cpu in per_cpu {
        out.add(&read::<fp_skl_stats>("stats", &cpu)?);
    }
    Ok(out)
}

impl SkLookup {
    /// Every binding of the trie.
    pub fn read_bindings(&self) -> Result<Vec<(fp_skl_key, fp_skl_binding)>> {
        let mut out = Vec::new();
        for k in self.bindings.keys() {
            if let Some(v) = self
                .bindings
                .lookup(&k, MapFlags::ANY)
                .map_err(kerr("map bindings", "lookup"))?
            {
                out.push((read("bindings", &k)?, read("bindings", &v)?));
            }
        }
        Ok(out)
    }

    /// Inserts new bindings (`BPF_NOEXIST`), in one `BPF_MAP_UPDATE_BATCH`
    /// when the kernel supports it for LPM tries, else one update each. On a
    /// failure the bindings of this call already inserted are removed again.
    pub fn insert_bindings(&self, entries: &[(fp_skl_key, fp_skl_binding)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut keys = Vec::with_capacity(entries.len() * std::mem::size_of::<fp_skl_key>());
        let mut vals = Vec::with_capacity(entries.len() * std::mem::size_of::<fp_skl_binding>());
        for (k, v) in entries {
            keys.extend_from_slice(bytes(k));
            vals.extend_from_slice(bytes(v));
        }
        let batch = self.bindings.update_batch(
            &keys,
            &vals,
            entries.len() as u32,
            MapFlags::NO_EXIST,
            MapFlags::ANY,
        );
        let err = match batch {
            Ok(()) => return Ok(()),
            Err(e) => KernelError::libbpf("map bindings", "update_batch", &e, ""),
        };
        // EINVAL/EOPNOTSUPP/ENOTSUPP: no batch ops for this map type; anything
        // else (EEXIST, E2BIG, ENOMEM) stopped part-way.
        if !(err.is(22) || err.is(95) || err.is(524)) {
            self.rollback(entries);
            return Err(with_hint(
                err,
                "bindings trie full (E2BIG/ENOMEM) or a binding exists (EEXIST)",
            ));
        }
        for (i, (k, v)) in entries.iter().enumerate() {
            if let Err(e) = self.bindings.update(bytes(k), bytes(v), MapFlags::NO_EXIST) {
                self.rollback(&entries[..i]);
                return Err(with_hint(
                    KernelError::libbpf("map bindings", "update", &e, ""),
                    "bindings trie full (E2BIG/ENOMEM) or a binding exists (EEXIST)",
                ));
            }
        }
        Ok(())
    }

    fn rollback(&self, entries: &[(fp_skl_key, fp_skl_binding)]) {
        for (k, _) in entries {
            let _ = self.bindings.delete(bytes(k));
        }
    }

    /// Removes one binding (exact key); `false` if there was none.
    pub fn delete_binding(&self, key: &fp_skl_key) -> Result<bool> {
        match self.bindings.delete(bytes(key)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(kerr("map bindings", "delete")(e)),
        }
    }

    /// Every label: name and id.
    pub fn read_labels(&self) -> Result<Vec<(String, u32)>> {
        let mut out = Vec::new();
        for k in self.labels.keys() {
            if let Some(v) = self
                .labels
                .lookup(&k, MapFlags::ANY)
                .map_err(kerr("map labels", "lookup"))?
            {
                let name: fp_skl_label_name = read("labels", &k)?;
                let l: fp_skl_label = read("labels", &v)?;
                out.push((label_name(&name), l.id));
            }
        }
        Ok(out)
    }

    /// Creates label `name` with `id` (`BPF_NOEXIST`).
    pub fn insert_label(&self, name: &str, id: u32) -> Result<()> {
        check(id, MAX_LABELS, "label id")?;
        let v = fp_skl_label { id, _pad: 0 };
        self.labels
            .update(bytes(&label_key(name)?), bytes(&v), MapFlags::NO_EXIST)
            .map_err(kerr("map labels", "update"))
    }

    /// Deletes label `name`; `false` if there was none.
    pub fn delete_label(&self, name: &str) -> Result<bool> {
        match self.labels.delete(bytes(&label_key(name)?)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(kerr("map labels", "delete")(e)),
        }
    }

    /// Puts socket `sock` at `index` of the socket map (replacing any) and
    /// records `meta` for it. The kernel refuses sockets that are not TCP
    /// listeners or bound UDP sockets.
    pub fn set_destination(
        &self,
        index: u32,
        sock: BorrowedFd<'_>,
        meta: &fp_skl_dest,
    ) -> Result<()> {
        check(index, DESTINATIONS, "destination index")?;
        let fd = sock.as_raw_fd() as u64;
        self.dest_meta
            .update(&index.to_ne_bytes(), bytes(meta), MapFlags::ANY)
            .map_err(kerr("map dest_meta", "update"))?;
        self.destinations
            .update(&index.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| {
                SkLookupError::from(KernelError::libbpf(
                    "map destinations",
                    "update",
                    &e,
                    "the socket must be a TCP listener or a bound UDP socket; EBUSY: it is in another socket map already (e.g. a reuseport group's socket array: register another member of the group, one in no generation)",
                ))
            })
    }

    /// Removes the socket at `index`; `false` if there was none.
    pub fn remove_destination(&self, index: u32) -> Result<bool> {
        check(index, DESTINATIONS, "destination index")?;
        let _ = self.dest_meta.update(
            &index.to_ne_bytes(),
            bytes(&fp_skl_dest::default()),
            MapFlags::ANY,
        );
        match self.destinations.delete(&index.to_ne_bytes()) {
            Ok(()) => Ok(true),
            // A socket map answers EINVAL for an empty slot of a valid index.
            Err(e)
                if matches!(
                    e.kind(),
                    libbpf_rs::ErrorKind::NotFound | libbpf_rs::ErrorKind::InvalidInput
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(kerr("map destinations", "delete")(e)),
        }
    }

    /// The socket at `index`, if one is there (a closed socket leaves the map by itself).
    pub fn destination(&self, index: u32) -> Result<Option<Destination>> {
        check(index, DESTINATIONS, "destination index")?;
        let cookie = match self
            .destinations
            .lookup(&index.to_ne_bytes(), MapFlags::ANY)
        {
            Ok(Some(v)) => {
                let mut b = [0u8; 8];
                let src = v.get(..8).ok_or(SkLookupError::Layout {
                    map: "destinations",
                    what: "value size",
                    got: v.len() as u32,
                    want: 8,
                })?;
                b.copy_from_slice(src);
                u64::from_ne_bytes(b)
            }
            Ok(None) => return Ok(None),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(kerr("map destinations", "lookup")(e)),
        };
        let meta = self
            .dest_meta
            .lookup(&index.to_ne_bytes(), MapFlags::ANY)
            .map_err(kerr("map dest_meta", "lookup"))?
            .map(|v| read::<fp_skl_dest>("dest_meta", &v))
            .transpose()?
            .unwrap_or_default();
        Ok(Some(Destination {
            cookie,
            registered_cookie: meta.cookie,
            family: meta.family as u8,
            v6only: meta.v6only != 0,
        }))
    }

    /// Counters of label `id`, summed over CPUs.
    pub fn label_stats(&self, id: u32) -> Result<LabelStats> {
        check(id, MAX_LABELS, "label id")?;
        sum_stats(&self.stats, id)
    }

    /// Zeroes the counters of label `id` (a new label reusing an id starts at 0).
    pub fn reset_label_stats(&self, id: u32) -> Result<()> {
        check(id, MAX_LABELS, "label id")?;
        let ncpu =
            libbpf_rs::num_possible_cpus().map_err(kerr("map stats", "num_possible_cpus"))?;
        let zero = vec![bytes(&fp_skl_stats::default()).to_vec(); ncpu];
        self.stats
            .update_percpu(&id.to_ne_bytes(), &zero, MapFlags::ANY)
            .map_err(kerr("map stats", "update_percpu"))
    }

    /// All counters: summed over every label, and unmatched lookups.
    pub fn stats(&self) -> Result<SkLookupStats> {
        let mut out = SkLookupStats::default();
        for id in 0..MAX_LABELS {
            let s = sum_stats(&self.stats, id)?;
            out.labels.lookups += s.lookups;
            out.labels.redirected += s.redirected;
            out.labels.no_socket += s.no_socket;
            out.labels.errors += s.errors;
        }
        out.unmatched = sum_stats(&self.stats, STATS_UNMATCHED)?.lookups;
        Ok(out)
    }
}

fn check(index: u32, end: u32, what: &'static str) -> Result<()> {
    if index >= end {
        return Err(SkLookupError::OutOfRange {
            what,
            index,
            max: end - 1,
        });
    }
    Ok(())
}

fn with_hint(mut e: KernelError, hint: &'static str) -> SkLookupError {
    e.hint = hint;
    e.into()
}
