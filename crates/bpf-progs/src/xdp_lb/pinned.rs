//! `xdp_lb` state that outlives its control process: pin, reopen, upgrade
//! in place, several controllers.
//!
//! A pin directory holds every map and the program, one file each (names
//! in [`PIN_NAMES`]), mode 0600; the `meta` map holds the layout version
//! ([`flowpin_bpf_abi::lb::LB_LAYOUT_VERSION`]), the load-time sizes and the
//! size of every pinned struct, so a directory written by another layout is
//! refused with [`XdpLbError::IncompatiblePin`], never reused.
//!
//! [`XdpLb::open_pinned`] opens the maps and the program and rebuilds the
//! control state from `vips` and `backend_descs`
//! ([`LbState::rebuild`](super::LbState::rebuild)); the ring, the backend
//! entries, the server_id routes and the direct-mapped slots are derived
//! data: they are compared with the kernel's and any difference rewritten
//! (a controller killed half-way through a change; see `repair.rs`). Nothing is
//! loaded, so reopening is fast (see the README for the figure).
//!
//! [`XdpLb::upgrade`] loads this build's program against the same maps
//! (`reuse_fd` before load) and swaps it into an attached link
//! (`BPF_LINK_UPDATE`): no packet is unprocessed, no entry lost.
//!
//! Every change of a pinned instance takes an `flock` on the pin directory
//! and first catches up with other processes' changes (`meta.generation`).

use std::mem::size_of;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::maps::KernelMaps;
use super::state::{BackendDesc, MapOp, RingWrite, VipKey, VipMeta};
use super::{
    load_program, CidEntry, LbError, LbState, PinnedContents, QuicLbKey, Result, XdpLb,
    XdpLbConfig, XdpLbError, CONN_SET_BYTES,
};
use crate::error::KernelError;
use crate::pin::{open_pinned_fd, remove_pin_dir, PinLock};
use crate::pinned_maps::MapTable;
use crate::skel::xdp_lb::types::{
    flowpin_backend, flowpin_backend_desc, flowpin_backend_desc_key, flowpin_cid_cfg,
    flowpin_conn_set, flowpin_lb_cfg, flowpin_lb_meta, flowpin_sid_slot, flowpin_vip_key,
    flowpin_vip_meta,
};
use crate::skel::{bytes_of, read};
use flowpin_bpf_abi::lb;

pub(super) fn meta_of(config: &XdpLbConfig, conn_sets: u32, tables: u32) -> flowpin_lb_meta {
    let mut flags = 0;
    if config.answer_icmp_echo {
        flags |= lb::LB_META_ICMP_ECHO;
    }
    if config.warm_conn_from_server_id {
        flags |= lb::LB_META_SID_WARM_CONN;
    }
    flowpin_lb_meta {
        layout_version: lb::LB_LAYOUT_VERSION,
        ring_size: config.ring_size,
        max_vips: config.max_vips,
        max_backends: config.max_backends,
        max_server_ids: config.max_server_ids,
        conn_sets,
        conn_tables: tables,
        flags,
        generation: 0,
        size_vip_key: size_of::<flowpin_vip_key>() as u32,
        size_vip_meta: size_of::<flowpin_vip_meta>() as u32,
        size_backend: size_of::<flowpin_backend>() as u32,
        size_backend_desc: size_of::<flowpin_backend_desc>() as u32,
        size_conn_set: size_of::<flowpin_conn_set>() as u32,
        size_sid_slot: size_of::<flowpin_sid_slot>() as u32,
        size_lb_cfg: size_of::<flowpin_lb_cfg>() as u32,
    }
}

/// Why a `meta` entry is not this build's layout (`None`: it is).
fn incompatibility(m: &flowpin_lb_meta) -> Option<String> {
    if m.layout_version != lb::LB_LAYOUT_VERSION {
        return Some(format!(
            "written by a flowpin build with layout version {}",
            m.layout_version
        ));
    }
    let mine = meta_of(&XdpLbConfig::default(), 0, 0);
    let sizes = [
        ("flowpin_vip_key", m.size_vip_key, mine.size_vip_key),
        ("flowpin_vip_meta", m.size_vip_meta, mine.size_vip_meta),
        ("flowpin_backend", m.size_backend, mine.size_backend),
        (
            "flowpin_backend_desc",
            m.size_backend_desc,
            mine.size_backend_desc,
        ),
        ("flowpin_conn_set", m.size_conn_set, mine.size_conn_set),
        ("flowpin_sid_slot", m.size_sid_slot, mine.size_sid_slot),
        ("flowpin_lb_cfg", m.size_lb_cfg, mine.size_lb_cfg),
    ];
    for (name, theirs, ours) in sizes {
        if theirs != ours {
            return Some(format!(
                "struct {name} is {theirs} bytes there, {ours} bytes in this build"
            ));
        }
    }
    None
}

fn config_of(m: &flowpin_lb_meta, cfg: &flowpin_lb_cfg, ncpus: usize) -> XdpLbConfig {
    let mut c = XdpLbConfig {
        ring_size: m.ring_size,
        max_vips: m.max_vips,
        max_backends: m.max_backends,
        max_server_ids: m.max_server_ids,
        lru_memory_bytes: u64::from(m.conn_sets) * CONN_SET_BYTES * u64::from(m.conn_tables),
        conn_table_shared: m.conn_tables == 1 && ncpus != 1,
        answer_icmp_echo: m.flags & lb::LB_META_ICMP_ECHO != 0,
        warm_conn_from_server_id: m.flags & lb::LB_META_SID_WARM_CONN != 0,
        ..XdpLbConfig::default()
    };
    c.set_from_c(cfg);
    c
}

fn lookup0(map: &MapHandle, name: &'static str) -> Result<Vec<u8>> {
    Ok(map
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .map_err(KernelError::map(name, "lookup"))?
        .unwrap_or_default())
}

pub(super) fn ip_of(addr: [u32; 4], family: u8) -> Option<std::net::IpAddr> {
    let mut b = [0u8; 16];
    for (d, w) in b.chunks_exact_mut(4).zip(addr) {
        d.copy_from_slice(&w.to_ne_bytes());
    }
    match family {
        lb::FAMILY_V4 => Some(std::net::IpAddr::from([b[0], b[1], b[2], b[3]])),
        lb::FAMILY_V6 => Some(std::net::IpAddr::from(b)),
        _ => None,
    }
}

/// Reads `vips` and `backend_descs`.
fn read_contents(maps: &KernelMaps) -> Result<PinnedContents> {
    let bad = |what: &str| LbError::PinnedStateCorrupt(format!("unreadable {what} entry"));
    let mut out = PinnedContents::default();
    for k in maps.vips.keys() {
        let Some(v) = maps
            .vips
            .lookup(&k, MapFlags::ANY)
            .map_err(KernelError::map("vips", "lookup"))?
        else {
            continue;
        };
        let key: flowpin_vip_key = read(&k).ok_or_else(|| bad("vips key"))?;
        let meta: flowpin_vip_meta = read(&v).ok_or_else(|| bad("vips value"))?;
        let addr = ip_of(key.addr, key.family).ok_or_else(|| bad("vips key family"))?;
        out.vips.push((
            VipKey {
                addr,
                port: u16::from_be(key.port),
                proto: key.proto,
            },
            VipMeta {
                vip_id: meta.vip_id,
                flags: meta.flags,
            },
        ));
    }
    for k in maps.backend_descs.keys() {
        let Some(v) = maps
            .backend_descs
            .lookup(&k, MapFlags::ANY)
            .map_err(KernelError::map("backend_descs", "lookup"))?
        else {
            continue;
        };
        let key: flowpin_backend_desc_key = read(&k).ok_or_else(|| bad("backend_descs key"))?;
        let d: flowpin_backend_desc = read(&v).ok_or_else(|| bad("backend_descs value"))?;
        let addr = ip_of(d.addr, d.family).ok_or_else(|| bad("backend_descs family"))?;
        out.descs.push((
            key.vip_id,
            key.pos,
            BackendDesc {
                addr,
                weight: d.weight,
                server_id: (d.has_server_id != 0).then_some(d.server_id),
                draining: d.state == lb::BACKEND_DRAINING,
                backend: d.backend,
            },
        ));
    }
    for &(_, m) in &out.vips {
        if m.vip_id == u32::MAX {
            continue;
        }
        for slot in 0..lb::CID_CFGS_PER_VIP as u8 {
            let idx = m.vip_id * lb::CID_CFGS_PER_VIP + u32::from(slot);
            let Some(v) = maps
                .cid_cfgs
                .lookup(&idx.to_ne_bytes(), MapFlags::ANY)
                .map_err(KernelError::map("cid_cfgs", "lookup"))?
            else {
                continue;
            };
            let c: flowpin_cid_cfg = read(&v).ok_or_else(|| bad("cid_cfgs value"))?;
            if c.layout != lb::CID_ANY {
                out.cid.push((
                    m.vip_id,
                    slot,
                    CidEntry {
                        layout: c.layout,
                        cid_len: c.cid_len,
                        sid_len: c.sid_len,
                        nonce_len: c.nonce_len,
                        engine: c.engine,
                        key: QuicLbKey(c.key),
                    },
                ));
            }
        }
    }
    Ok(out)
}

/// `ring[base .. base + n]` with `bpf_map_lookup_batch`.
fn read_ring(ring: &MapHandle, base: u32, n: u32) -> Result<Vec<u32>> {
    Ok(read_array(ring, "ring", base, n)?
        .chunks_exact(4)
        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The values of `map[base .. base + n]` (an array map with `u32` keys),
/// concatenated, read with `bpf_map_lookup_batch` into one buffer.
pub(super) fn read_array(
    map: &MapHandle,
    name: &'static str,
    base: u32,
    n: u32,
) -> Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let vsize = map.value_size() as usize;
    let mut out: Vec<u8> = Vec::with_capacity(n as usize * vsize);
    let mut keys = vec![0u32; n as usize];
    let mut vals = vec![0u8; n as usize * vsize];
    // The batch cursor is the last key read: start after base - 1.
    let mut cursor: u32 = base.wrapping_sub(1);
    let mut first = base == 0;
    let mut got = 0u32;
    while got < n {
        let want = n - got;
        let mut count = want;
        let mut next: u32 = 0;
        let opts = libbpf_rs::libbpf_sys::bpf_map_batch_opts {
            sz: size_of::<libbpf_rs::libbpf_sys::bpf_map_batch_opts>() as _,
            ..Default::default()
        };
        let in_batch: *mut std::ffi::c_void = if first {
            std::ptr::null_mut()
        } else {
            (&mut cursor as *mut u32).cast()
        };
        // SAFETY: keys holds `want` u32 keys and vals `want` values of the
        // map's value size, `count` says so; in/out batch point to live u32s.
        let rc = unsafe {
            libbpf_rs::libbpf_sys::bpf_map_lookup_batch(
                map.as_fd().as_raw_fd(),
                in_batch,
                (&mut next as *mut u32).cast(),
                keys.as_mut_ptr().cast(),
                vals.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        if rc < 0 && -rc != 2 {
            return Err(KernelError::errno(format!("map {name}"), "lookup_batch", -rc, "").into());
        }
        let count = count.min(want);
        out.extend_from_slice(&vals[..count as usize * vsize]);
        got += count;
        if count == 0 || rc < 0 {
            break;
        }
        cursor = next;
        first = false;
    }
    if got != n {
        return Err(KernelError::out_of_sync(
            format!("map {name}"),
            "lookup_batch",
            got as usize,
            n as usize,
        )
        .into());
    }
    Ok(out)
}

impl XdpLb {
    /// Pins the maps and the program under `dir` (created on bpffs, mounted
    /// at `/sys/fs/bpf` if missing; pins 0600), so the data path and its
    /// state outlive this process. Pin links made by
    /// [`attach`](Self::attach) with [`Link::pin`](crate::link::Link::pin),
    /// conventionally as `dir/link` (then [`unpin`](Self::unpin) removes it
    /// too). Later changes through this instance take the directory's lock.
    pub fn pin(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        crate::pinned_maps::pin_dir(dir, &self.maps, self.prog.as_fd())?;
        let _ = self.pin_dir.set(dir.to_path_buf());
        Ok(())
    }

    /// Reopens an `xdp_lb` pinned by [`pin`](Self::pin) (by this process
    /// or another, possibly dead one): the maps and the program already
    /// running, and the control state rebuilt from the maps, so
    /// [`backends`](Self::backends) returns what was set before. A
    /// directory of another layout version is refused
    /// ([`XdpLbError::IncompatiblePin`]). Nothing is loaded: the pinned
    /// program keeps running; [`upgrade`](Self::upgrade) swaps in this build's.
    /// [`XdpLbError::NotPinned`] if nothing is pinned there.
    pub fn open_pinned(dir: impl AsRef<Path>) -> Result<XdpLb> {
        let dir = dir.as_ref();
        let (raw, found) = crate::pinned_maps::read_meta::<KernelMaps>(dir)?;
        let incompatible = |found, detail: String| XdpLbError::IncompatiblePin {
            dir: dir.to_path_buf(),
            found,
            expected: lb::LB_LAYOUT_VERSION,
            detail,
        };
        if raw.len() != size_of::<flowpin_lb_meta>() {
            return Err(incompatible(
                found,
                format!(
                    "its meta entry is {} bytes, this build's {}",
                    raw.len(),
                    size_of::<flowpin_lb_meta>()
                ),
            ));
        }
        let _lock = PinLock::acquire(dir)?;
        let mut lb = Self::open_locked(dir)?;
        let _ = lb.pin_dir.set(dir.to_path_buf());
        lb.repair()?;
        Ok(lb)
    }

    fn open_locked(dir: &Path) -> Result<XdpLb> {
        let (raw, _) = crate::pinned_maps::read_meta::<KernelMaps>(dir)?;
        let meta: flowpin_lb_meta = read(&raw)
            .ok_or_else(|| LbError::PinnedStateCorrupt("meta entry unreadable".into()))?;
        if let Some(detail) = incompatibility(&meta) {
            return Err(XdpLbError::IncompatiblePin {
                dir: dir.to_path_buf(),
                found: meta.layout_version,
                expected: lb::LB_LAYOUT_VERSION,
                detail,
            });
        }
        let ncpus = libbpf_rs::num_possible_cpus()
            .map_err(|e| KernelError::libbpf("/sys/devices/system/cpu/possible", "read", &e, ""))?;
        let source = crate::pinned_maps::pinned_at(dir);
        let mut maps =
            KernelMaps::build(source, (Default::default(), meta.ring_size, ncpus, None))?;
        let raw_cfg = lookup0(&maps.data, "data")?;
        maps.cfg = read(&raw_cfg).ok_or_else(|| {
            KernelError::out_of_sync(
                "map .data (lb_cfg)",
                "lookup",
                raw_cfg.len(),
                size_of::<flowpin_lb_cfg>(),
            )
        })?;
        let config = config_of(&meta, &maps.cfg, ncpus);
        let prog = open_pinned_fd(dir.join(crate::pinned_maps::PROG_PIN))?;
        let state = LbState::rebuild(&config.lb_config(), &read_contents(&maps)?)?;
        Ok(XdpLb {
            prog,
            maps,
            conn_sets: meta.conn_sets,
            ncpus: meta.conn_tables,
            state,
            config,
            pin_dir: std::sync::OnceLock::new(),
            meta,
            repaired_ring_slots: 0,
            repaired_entries: 0,
        })
    }

    /// Compares every VIP's kernel ring with the rebuilt state's and
    /// rewrites the slots that differ.
    pub(super) fn repair_rings(&mut self) -> Result<()> {
        let m = self.config.ring_size;
        let mut repaired = 0;
        let vips: Vec<_> = self.state.vip_ids().collect();
        for (vip, id) in vips {
            let want = self.state.ring_indices(&vip);
            let have = read_ring(&self.maps.ring, id * m, m)?;
            let writes: Vec<RingWrite> = (0..m)
                .zip(want.iter().zip(&have))
                .filter(|(_, (w, h))| w != h)
                .map(|(slot, (&backend, &prev))| RingWrite {
                    slot,
                    backend,
                    prev,
                })
                .collect();
            if !writes.is_empty() {
                repaired += writes.len() as u32;
                super::maps::apply(&mut self.maps, &[MapOp::Ring { vip_id: id, writes }])?;
            }
        }
        self.repaired_ring_slots = repaired;
        Ok(())
    }

    /// Ring slots [`open_pinned`](Self::open_pinned) found different from
    /// the state rebuilt from the backend lists, and rewrote (0 unless a
    /// controller died half-way through a change).
    pub fn repaired_ring_slots(&self) -> u32 {
        self.repaired_ring_slots
    }

    /// Other entries (`backends`, `server_ids`, `sid_table`, `vip_table`)
    /// [`open_pinned`](Self::open_pinned) found different from the rebuilt
    /// state, and rewrote or removed.
    pub fn repaired_entries(&self) -> u32 {
        self.repaired_entries
    }

    /// The pin directory, once pinned or reopened.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.get().map(PathBuf::as_path)
    }

    /// Removes a pinned `xdp_lb` directory: every pin in it (maps,
    /// program, links pinned there) and the directory. The program stays
    /// attached while a process holds a link to it. A missing directory is
    /// not an error.
    pub fn unpin(dir: impl AsRef<Path>) -> Result<()> {
        Ok(remove_pin_dir(dir)?)
    }

    /// Upgrades in place: loads this build's program against this
    /// instance's maps (`reuse_fd` before load: every VIP, ring slot and
    /// connection-table entry stays) and swaps it into `link`
    /// atomically (`BPF_LINK_UPDATE`: every packet runs the old program or
    /// the new one). When pinned, the `prog` pin is replaced too.
    pub fn upgrade(&mut self, link: &super::XdpLink) -> Result<()> {
        self.prog = crate::pinned_maps::upgrade(self.pin_dir.get(), link, || {
            load_program(&self.config, Some(&self.maps)).map(|loaded| loaded.prog)
        })?;
        Ok(())
    }

    /// Under the pin lock (when pinned): if another process changed the
    /// pinned state since we last looked, rebuild ours from the maps.
    pub(super) fn lock_and_resync(&mut self) -> Result<Option<PinLock>> {
        let Some(dir) = self.pin_dir.get().cloned() else {
            return Ok(None);
        };
        let lock = PinLock::acquire(&dir)?;
        let raw = lookup0(&self.maps.meta, "meta")?;
        let meta: flowpin_lb_meta = read(&raw)
            .ok_or_else(|| LbError::PinnedStateCorrupt("meta entry unreadable".into()))?;
        if meta.generation != self.meta.generation {
            let raw_cfg = lookup0(&self.maps.data, "data")?;
            if let Some(cfg) = read::<flowpin_lb_cfg>(&raw_cfg) {
                self.maps.cfg = cfg;
                self.config.set_from_c(&cfg);
            }
            self.state = LbState::rebuild(&self.config.lb_config(), &read_contents(&self.maps)?)?;
            self.meta = meta;
        }
        Ok(Some(lock))
    }

    /// After a committed change of a pinned instance: `meta.generation` + 1.
    pub(super) fn bump_generation(&mut self) -> Result<()> {
        if self.pin_dir.get().is_none() {
            return Ok(());
        }
        self.meta.generation = self.meta.generation.wrapping_add(1);
        Ok(self.maps.write_meta(&self.meta)?)
    }
}

impl KernelMaps {
    pub(crate) fn write_meta(&self, m: &flowpin_lb_meta) -> std::result::Result<(), KernelError> {
        crate::pinned_maps::write_meta(&self.meta, bytes_of(m))
    }
}
