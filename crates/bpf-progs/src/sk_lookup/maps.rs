//! Typed access to the maps of [`SkLookup`]: every value is read and written
//! as its `flowpin_bpf_abi::sk_lookup` struct through `plain` (checked
//! length; the structs are padding-free), never at hand-counted offsets.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::types::{
    fp_skl_binding, fp_skl_dest, fp_skl_host_key, fp_skl_key, fp_skl_label, fp_skl_label_name,
    fp_skl_stats,
};
use super::{
    summary_shift, KernelError, Result, SkLookup, SkLookupError, DESTINATIONS, FAMILY_V6,
    IPPROTO_UDP, KEY_HEADER_BITS, KIND_HOST_ANY, KIND_HOST_PORT, KIND_NET_ANY, KIND_NET_PORT,
    LABEL_MAX, MAX_LABELS, PORT_ANY, STATS_UNMATCHED,
};

pub(super) fn bytes<T: plain::Plain>(v: &T) -> &[u8] {
    // SAFETY: the only `T`s here are the `flowpin_bpf_abi::sk_lookup`
    // structs, checked padding-free at compile time there, so all
    // size_of::<T>() bytes are initialised.
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

/// Entries per `BPF_MAP_LOOKUP_BATCH` call of [`SkLookup::read_bindings`].
pub const READ_BATCH: usize = 4096;

const ENOENT: i32 = 2;
const EINVAL: i32 = 22;
const EOPNOTSUPP: i32 = 95;
/// The kernel-internal "not supported" some map types answer batch ops with.
const ENOTSUPP: i32 = 524;
const INSERT_HINT: &str = "ENOSPC/E2BIG/ENOMEM: the bindings trie is full; EEXIST: a binding exists (written without the dispatcher's lock?)";

fn batch_opts() -> libbpf_rs::libbpf_sys::bpf_map_batch_opts {
    // Padding fields exist on some targets only.
    #[allow(clippy::needless_update)]
    libbpf_rs::libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_batch_opts>() as _,
        elem_flags: 0,
        flags: 0,
        ..Default::default()
    }
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
        *d = s;
    }
    Ok(k)
}

fn label_name(k: &fp_skl_label_name) -> String {
    let b: Vec<u8> = k.name.iter().copied().take_while(|&c| c != 0).collect();
    String::from_utf8_lossy(&b).into_owned()
}

/// Whether a binding key is a host prefix (`/32`, `/128`), kept in `hosts`.
fn is_host(k: &fp_skl_key) -> bool {
    let full = if k.family == FAMILY_V6 { 128 } else { 32 };
    k.prefixlen == KEY_HEADER_BITS + full
}

fn host_key(k: &fp_skl_key) -> fp_skl_host_key {
    fp_skl_host_key {
        protocol: k.protocol,
        family: k.family,
        port: k.port,
        addr: k.addr,
    }
}

fn trie_key(h: &fp_skl_host_key) -> fp_skl_key {
    let full = if h.family == FAMILY_V6 { 128 } else { 32 };
    fp_skl_key {
        prefixlen: KEY_HEADER_BITS + full,
        protocol: h.protocol,
        family: h.family,
        port: h.port,
        addr: h.addr,
    }
}

/// The summary word for a set of binding keys: per (protocol, family), which
/// of the program's four lookups can match (see `<flowpin/sk_lookup.h>`).
pub fn summary_of<'a>(keys: impl IntoIterator<Item = &'a fp_skl_key>) -> u32 {
    keys.into_iter().fold(0, |acc, k| {
        let kind = match (is_host(k), k.port == PORT_ANY) {
            (true, false) => KIND_HOST_PORT,
            (true, true) => KIND_HOST_ANY,
            (false, false) => KIND_NET_PORT,
            (false, true) => KIND_NET_ANY,
        };
        acc | kind << summary_shift(k.protocol == IPPROTO_UDP, k.family == FAMILY_V6)
    })
}

/// Reads a whole map with `BPF_MAP_LOOKUP_BATCH`, one syscall per
/// [`READ_BATCH`] entries. `None` if the kernel has no batch ops for it.
fn read_batch<K: plain::Plain + Default, V: plain::Plain + Default>(
    map: &MapHandle,
    name: &'static str,
) -> Result<Option<Vec<(K, V)>>> {
    let ksz = std::mem::size_of::<K>();
    let vsz = std::mem::size_of::<V>();
    let mut out = Vec::new();
    let mut keys = vec![0u8; READ_BATCH * ksz];
    let mut vals = vec![0u8; READ_BATCH * vsz];
    // The batch token: a key for tries (generic batch ops), a bucket index
    // (u32) for hashes.
    let mut token = vec![0u8; ksz.max(4)];
    let mut first = true;
    let opts = batch_opts();
    loop {
        let mut count = READ_BATCH as u32;
        let mut prev = token.clone();
        // SAFETY: `keys` and `vals` hold `count` keys and values of the
        // map's sizes (checked at open against K and V), `prev` and `token`
        // one batch token each; all live for the call, which writes at most
        // `count` entries and one token.
        let rc = unsafe {
            libbpf_rs::libbpf_sys::bpf_map_lookup_batch(
                map.as_fd().as_raw_fd(),
                if first {
                    std::ptr::null_mut()
                } else {
                    prev.as_mut_ptr().cast()
                },
                token.as_mut_ptr().cast(),
                keys.as_mut_ptr().cast(),
                vals.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        let errno = if rc < 0 { -rc } else { 0 };
        if first && count == 0 && matches!(errno, EINVAL | EOPNOTSUPP | ENOTSUPP) {
            return Ok(None);
        }
        if errno != 0 && errno != ENOENT {
            return Err(KernelError::errno(name, "lookup_batch", errno, "").into());
        }
        let n = (count as usize).min(READ_BATCH);
        for (k, v) in keys[..n * ksz]
            .chunks_exact(ksz)
            .zip(vals[..n * vsz].chunks_exact(vsz))
        {
            out.push((read(name, k)?, read(name, v)?));
        }
        if errno == ENOENT {
            return Ok(Some(out));
        }
        first = false;
    }
}

/// Reads a whole map one key at a time (kernels without batch ops).
fn read_one_by_one<K: plain::Plain + Default, V: plain::Plain + Default>(
    map: &MapHandle,
    name: &'static str,
) -> Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    for k in map.keys() {
        if let Some(v) = map
            .lookup(&k, MapFlags::ANY)
            .map_err(kerr(name, "lookup"))?
        {
            out.push((read(name, &k)?, read(name, &v)?));
        }
    }
    Ok(out)
}

fn read_all<K: plain::Plain + Default, V: plain::Plain + Default>(
    map: &MapHandle,
    name: &'static str,
) -> Result<Vec<(K, V)>> {
    match read_batch(map, name)? {
        Some(v) => Ok(v),
        None => read_one_by_one(map, name),
    }
}

/// Inserts entries absent from `map` in one `BPF_MAP_UPDATE_BATCH` (one
/// update each where the kernel has no batch ops for the map). All or none.
fn insert_all<K: plain::Plain, V: plain::Plain>(
    map: &MapHandle,
    name: &'static str,
    entries: &[(K, V)],
) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut keys = Vec::with_capacity(entries.len() * std::mem::size_of::<K>());
    let mut vals = Vec::with_capacity(entries.len() * std::mem::size_of::<V>());
    for (k, v) in entries {
        keys.extend_from_slice(bytes(k));
        vals.extend_from_slice(bytes(v));
    }
    let n = u32::try_from(entries.len()).map_err(|_| {
        SkLookupError::InvalidConfig(format!("{} bindings in one call", entries.len()))
    })?;
    let mut count = n;
    let opts = batch_opts();
    // SAFETY: `keys` and `vals` hold `n` keys and values of the map's sizes
    // (checked at open against K and V); the kernel reads them and writes
    // the number it applied into the live local `count`.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_update_batch(
            map.as_fd().as_raw_fd(),
            keys.as_ptr().cast(),
            vals.as_ptr().cast(),
            &mut count,
            &opts,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let errno = -rc;
    let applied = (count as usize).min(entries.len());
    if applied == 0 && matches!(errno, EINVAL | EOPNOTSUPP | ENOTSUPP) {
        for (i, (k, v)) in entries.iter().enumerate() {
            if let Err(e) = map.update(bytes(k), bytes(v), MapFlags::NO_EXIST) {
                remove_all(map, &entries[..i]);
                return Err(with_hint(
                    KernelError::libbpf(name, "update", &e, ""),
                    INSERT_HINT,
                ));
            }
        }
        return Ok(());
    }
    remove_all(map, &entries[..applied]);
    Err(with_hint(
        KernelError::errno(name, "update_batch", errno, ""),
        INSERT_HINT,
    ))
}

/// Best-effort removal of entries this call inserted (the undo of a failure).
fn remove_all<K: plain::Plain, V>(map: &MapHandle, entries: &[(K, V)]) {
    for (k, _) in entries {
        let _ = map.delete(bytes(k));
    }
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
    /// Every binding: the trie's and the host hash's (as trie keys of a
    /// full-length prefix), read with `BPF_MAP_LOOKUP_BATCH` — one syscall
    /// per [`READ_BATCH`] entries — or one lookup per key on kernels without
    /// batch ops for these map types.
    pub fn read_bindings(&self) -> Result<Vec<(fp_skl_key, fp_skl_binding)>> {
        let mut out: Vec<(fp_skl_key, fp_skl_binding)> =
            read_all(&self.maps.bindings, "map bindings")?;
        let hosts: Vec<(fp_skl_host_key, fp_skl_binding)> =
            read_all(&self.maps.hosts, "map hosts")?;
        out.extend(hosts.iter().map(|(k, v)| (trie_key(k), *v)));
        Ok(out)
    }

    /// Inserts bindings that are in neither map: host prefixes into `hosts`,
    /// the others into the trie, each in one `BPF_MAP_UPDATE_BATCH` (one
    /// update per entry on kernels without batch ops). All or none: on a
    /// failure the entries of this call already inserted are removed again.
    ///
    /// The caller guarantees absence (the `flowpin-sk-lookup` dispatcher
    /// checks it against the maps under its lock): the batch runs with
    /// `BPF_ANY`, because the kernel's generic batch update accepts no
    /// per-element flag but `BPF_F_LOCK` (`generic_map_update_batch`;
    /// `BPF_NOEXIST` there is EINVAL). The one-by-one fallback keeps
    /// `BPF_NOEXIST`. The caller also sets the summary bits first
    /// ([`write_summary`](Self::write_summary)).
    pub fn insert_bindings(&self, entries: &[(fp_skl_key, fp_skl_binding)]) -> Result<()> {
        let hosts: Vec<(fp_skl_host_key, fp_skl_binding)> = entries
            .iter()
            .filter(|(k, _)| is_host(k))
            .map(|(k, v)| (host_key(k), *v))
            .collect();
        let nets: Vec<(fp_skl_key, fp_skl_binding)> = entries
            .iter()
            .filter(|(k, _)| !is_host(k))
            .copied()
            .collect();
        insert_all(&self.maps.hosts, "map hosts", &hosts)?;
        if let Err(e) = insert_all(&self.maps.bindings, "map bindings", &nets) {
            remove_all(&self.maps.hosts, &hosts);
            return Err(e);
        }
        Ok(())
    }

    /// Writes the summary word (see [`summary_of`]): which lookups the
    /// program makes.
    pub fn write_summary(&self, word: u32) -> Result<()> {
        self.maps
            .summary
            .update(&0u32.to_ne_bytes(), &word.to_ne_bytes(), MapFlags::ANY)
            .map_err(kerr("map summary", "update"))
    }

    /// The summary word the program reads.
    pub fn read_summary(&self) -> Result<u32> {
        let v = self
            .maps
            .summary
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(kerr("map summary", "lookup"))?
            .unwrap_or_default();
        let mut b = [0u8; 4];
        b.copy_from_slice(v.get(..4).ok_or(SkLookupError::Layout {
            map: "summary",
            what: "value size",
            got: v.len() as u32,
            want: 4,
        })?);
        Ok(u32::from_ne_bytes(b))
    }

    /// Removes one binding (exact key); `false` if there was none.
    /// A host prefix is removed from `hosts`, any other from the trie.
    pub fn delete_binding(&self, key: &fp_skl_key) -> Result<bool> {
        let r = if is_host(key) {
            self.maps.hosts.delete(bytes(&host_key(key)))
        } else {
            self.maps.bindings.delete(bytes(key))
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(kerr("map bindings", "delete")(e)),
        }
    }

    /// Every label: name and id.
    pub fn read_labels(&self) -> Result<Vec<(String, u32)>> {
        let mut out = Vec::new();
        for k in self.maps.labels.keys() {
            if let Some(v) = self
                .maps
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
        self.maps
            .labels
            .update(bytes(&label_key(name)?), bytes(&v), MapFlags::NO_EXIST)
            .map_err(kerr("map labels", "update"))
    }

    /// Deletes label `name`; `false` if there was none.
    pub fn delete_label(&self, name: &str) -> Result<bool> {
        match self.maps.labels.delete(bytes(&label_key(name)?)) {
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
        self.maps
            .dest_meta
            .update(&index.to_ne_bytes(), bytes(meta), MapFlags::ANY)
            .map_err(kerr("map dest_meta", "update"))?;
        self.maps.destinations
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
        let _ = self.maps.dest_meta.update(
            &index.to_ne_bytes(),
            bytes(&fp_skl_dest::default()),
            MapFlags::ANY,
        );
        match self.maps.destinations.delete(&index.to_ne_bytes()) {
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
            .maps
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
            .maps
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
        sum_stats(&self.maps.stats, id)
    }

    /// Zeroes the counters of label `id` (a new label reusing an id starts at 0).
    pub fn reset_label_stats(&self, id: u32) -> Result<()> {
        check(id, MAX_LABELS, "label id")?;
        let ncpu =
            libbpf_rs::num_possible_cpus().map_err(kerr("map stats", "num_possible_cpus"))?;
        let zero = vec![bytes(&fp_skl_stats::default()).to_vec(); ncpu];
        self.maps
            .stats
            .update_percpu(&id.to_ne_bytes(), &zero, MapFlags::ANY)
            .map_err(kerr("map stats", "update_percpu"))
    }

    /// All counters: summed over every label, and unmatched lookups.
    pub fn stats(&self) -> Result<SkLookupStats> {
        let mut out = SkLookupStats::default();
        for id in 0..MAX_LABELS {
            let s = sum_stats(&self.maps.stats, id)?;
            out.labels.lookups += s.lookups;
            out.labels.redirected += s.redirected;
            out.labels.no_socket += s.no_socket;
            out.labels.errors += s.errors;
        }
        out.unmatched = sum_stats(&self.maps.stats, STATS_UNMATCHED)?.lookups;
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
