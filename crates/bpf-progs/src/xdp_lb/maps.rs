//! The thin applier: writes the [`MapOp`]s of a [`Plan`](super::state::Plan)
//! into the program's maps, encoding each through the types libbpf-cargo
//! generated from `flowpin_lb.h`. If a write fails, the operations already
//! written are undone in reverse order ([`apply`], from `flowpin-lb-core`),
//! so the kernel is back at the previous configuration, and the error says
//! whether that worked.

use std::net::IpAddr;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::error::KernelError;
use crate::skel::xdp_lb::types::{
    flowpin_backend, flowpin_backend_desc, flowpin_backend_desc_key, flowpin_backend_stats,
    flowpin_cid_cfg, flowpin_lb_cfg, flowpin_sid_key, flowpin_sid_slot, flowpin_vip_key,
    flowpin_vip_meta, flowpin_vip_slot, flowpin_vip_stats,
};
use crate::skel::{bytes_of, CStruct};
use flowpin_bpf_abi::lb;
pub use flowpin_lb_core::{apply, MapWriter};
use flowpin_lb_core::{BackendDesc, CidEntry, MapOp, RingWrite, SidRoute, Slot, VipKey, VipMeta};

/// Ring slots per `update_batch` call.
const RING_BATCH: usize = 8192;

/// A change that did not fully reach the kernel (the applier's error,
/// [`flowpin_lb_core::ApplyError`], with the kernel's [`KernelError`]).
pub type ApplyError = flowpin_lb_core::ApplyError<KernelError>;

crate::pinned_maps::map_table! {
    /// The maps of a loaded `xdp_lb` (reach them with
    /// [`XdpLb::maps`](super::XdpLb::maps); layouts in `flowpin_lb.h`,
    /// generated into [`crate::skel::xdp_lb::types`]): declared once here,
    /// in pin order; loading, pinning, reopening and upgrading derive from
    /// this table.
    #[derive(Debug)]
    pub struct KernelMaps {
        vips: Map => vips,
        ring: Map => ring,
        backends: Map => backends,
        backend_descs: Map => backend_descs "each VIP's backend list, control side only",
        conn: Map => conn,
        vip_table: Map => vip_table,
        server_ids: Map => server_ids,
        sid_table: Map => sid_table,
        vip_stats: Map => vip_stats,
        lb_stats: Map => lb_stats,
        backend_stats: Map => backend_stats,
        sid_retired: Map => sid_retired,
        cid_cfgs: Map => cid_cfgs "per-VIP connection-ID configurations (QUIC-LB keys; pinned 0600)",
        cid_crypto: Map => cid_crypto "the constant-time AES contexts (kptrs) of encrypted QUIC-LB configurations",
        data: Section = ".data" => data "the `.data` section holding `lb_cfg`",
        meta: Meta => meta "layout version, load-time sizes, generation; pinned last",
    }
    extra {
        /// What `lb_cfg` holds (the applier changes `port_agnostic_vips`).
        cfg: flowpin_lb_cfg,
        ring_size: u32,
        ncpus: usize,
        /// The SEC("syscall") program installing constant-time AES
        /// contexts (`None` in a process that reopened the pins).
        crypto_setup: Option<std::os::fd::OwnedFd>,
    }
    pin_names:
        /// The files of a pinned `xdp_lb` (the maps, then the program).
        pub const PIN_NAMES;
}

impl KernelMaps {
    /// One map by its pin name ([`PIN_NAMES`]).
    pub fn map(&self, name: &str) -> Option<&MapHandle> {
        crate::pinned_maps::MapTable::map_named(self, name)
    }
}

pub(crate) fn c_addr(a: IpAddr) -> ([u32; 4], u8) {
    let k = VipKey {
        addr: a,
        port: 0,
        proto: 0,
    };
    let (b, fam) = k.addr_bytes();
    let mut w = [0u32; 4];
    for (w, c) in w.iter_mut().zip(b.chunks_exact(4)) {
        *w = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
    }
    (w, fam)
}

pub(crate) fn c_vip_key(k: &VipKey) -> flowpin_vip_key {
    let (addr, family) = c_addr(k.addr);
    flowpin_vip_key {
        addr,
        port: k.port.to_be(),
        proto: k.proto,
        family,
    }
}

pub(crate) fn c_meta(m: &VipMeta) -> flowpin_vip_meta {
    flowpin_vip_meta {
        vip_id: m.vip_id,
        flags: m.flags,
    }
}

pub(crate) fn c_desc(d: &BackendDesc) -> flowpin_backend_desc {
    let (addr, family) = c_addr(d.addr);
    flowpin_backend_desc {
        addr,
        family,
        state: if d.draining {
            lb::BACKEND_DRAINING
        } else {
            lb::BACKEND_ACTIVE
        },
        has_server_id: u8::from(d.server_id.is_some()),
        pad: 0,
        weight: d.weight,
        server_id: d.server_id.unwrap_or(0),
        backend: d.backend,
    }
}

/// A `cid_cfgs` value; the round keys of its AES engine derived from the key
/// (table: `rk`, `drk`; constant-time: the bitsliced keys in `rk`).
pub(crate) fn c_cid(e: &CidEntry) -> flowpin_cid_cfg {
    let mut v = flowpin_cid_cfg {
        layout: e.layout,
        cid_len: e.cid_len,
        sid_len: e.sid_len,
        nonce_len: e.nonce_len,
        engine: e.engine,
        key: e.key.0,
        ..Default::default()
    };
    if e.layout == lb::CID_QUIC_LB_ENC && e.engine == lb::AES_TABLE {
        let (rk, drk) = super::aes_key::round_keys(&e.key.0);
        v.rk = rk;
        v.drk = drk;
    } else if e.layout == lb::CID_QUIC_LB_ENC {
        // Constant-time: the bitsliced engine's round keys.
        v.rk = super::aes_key::bitsliced_round_keys(&e.key.0);
    }
    v
}

fn c_sid_key(vip_id: u32, server_id: u32) -> flowpin_sid_key {
    flowpin_sid_key { vip_id, server_id }
}

impl KernelMaps {
    pub(crate) fn write_cfg(&self) -> Result<(), KernelError> {
        self.data
            .update(&0u32.to_ne_bytes(), bytes_of(&self.cfg), MapFlags::ANY)
            .map_err(KernelError::map(".data (lb_cfg)", "update"))
    }

    fn update<T: CStruct>(
        map: &MapHandle,
        name: &'static str,
        key: &[u8],
        v: &T,
    ) -> Result<(), KernelError> {
        map.update(key, bytes_of(v), MapFlags::ANY)
            .map_err(KernelError::map(name, "update"))
    }

    fn delete(map: &MapHandle, name: &'static str, key: &[u8]) -> Result<(), KernelError> {
        match map.delete(key) {
            Ok(()) => Ok(()),
            // Undoing an insert that never happened: nothing to delete.
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(KernelError::map(name, "delete")(e)),
        }
    }

    /// Installs (`Some(key)`) or clears the constant-time AES context of
    /// `cid_crypto[idx]` by running the SEC("syscall") program
    /// `xdp_lb_crypto_setup` with the key as its context (the key is never
    /// logged: errors name the slot only).
    fn crypto(&self, idx: u32, key: Option<&[u8; 16]>) -> Result<(), KernelError> {
        use std::os::fd::AsRawFd;
        let Some(prog) = &self.crypto_setup else {
            if key.is_none() {
                return Ok(()); // nothing was installed by this process
            }
            return Err(KernelError::errno(
                "cid_crypto",
                "install AES context",
                95,
                "a process that reopened the pins cannot install the kernel AES context of a \
                 constant-time four-pass QUIC-LB configuration (server ID + nonce other than 16 \
                 octets); reload the program (XdpLb::load or XdpLb::upgrade) or use \
                 AesEngine::Table",
            ));
        };
        let mut args = crate::skel::xdp_lb::types::flowpin_crypto_args {
            idx,
            install: u32::from(key.is_some()),
            key: key.copied().unwrap_or_default(),
            err: 0,
        };
        let mut opts = libbpf_rs::libbpf_sys::bpf_test_run_opts {
            sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_test_run_opts>() as _,
            ctx_in: std::ptr::from_mut(&mut args).cast(),
            ctx_size_in: std::mem::size_of_val(&args) as u32,
            ..Default::default()
        };
        // SAFETY: ctx_in points to `args`, alive and of the stated size for
        // the whole call; a syscall program's context is copied back there
        // (at most that many bytes).
        let rc =
            unsafe { libbpf_rs::libbpf_sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) };
        args.key = [0; 16];
        let err = if rc < 0 { -rc } else { -args.err };
        if err != 0 {
            return Err(KernelError::errno(
                "cid_crypto",
                "install AES context (xdp_lb_crypto_setup)",
                err,
                "the kernel needs the BPF crypto kfuncs (Linux >= 6.10) and ecb(aes-fixed-time) \
                 (/proc/crypto); or choose AesEngine::Table",
            ));
        }
        Ok(())
    }

    fn write_ring(&self, vip_id: u32, writes: &[RingWrite]) -> Result<(), KernelError> {
        let base = vip_id * self.ring_size;
        for chunk in writes.chunks(RING_BATCH) {
            let keys: Vec<u8> = chunk
                .iter()
                .flat_map(|w| (base + w.slot).to_ne_bytes())
                .collect();
            let vals: Vec<u8> = chunk.iter().flat_map(|w| w.backend.to_ne_bytes()).collect();
            self.ring
                .update_batch(
                    &keys,
                    &vals,
                    chunk.len() as u32,
                    MapFlags::ANY,
                    MapFlags::ANY,
                )
                .map_err(KernelError::map("ring", "update_batch"))?;
        }
        Ok(())
    }
}

/// Test-only pause point: when this variable holds `N`, the process's
/// map write number `N` (0-based, counting every [`MapWriter::write`] of
/// every [`KernelMaps`] in the process, undos included) is not made: the
/// process prints `FLOWPIN_XDP_LB_PAUSED <N>` on stdout and waits there,
/// holding the pin lock, for a signal (the tests SIGKILL it, as a
/// controller killed between two map writes of a change). Unset (always,
/// outside tests): one cached lookup per write, nothing else.
#[doc(hidden)]
pub const TEST_PAUSE_BEFORE_WRITE_ENV: &str = "FLOWPIN_XDP_LB_TEST_PAUSE_BEFORE_WRITE";

fn test_pause_point() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;
    static AT: OnceLock<Option<usize>> = OnceLock::new();
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let Some(at) = *AT.get_or_init(|| {
        std::env::var(TEST_PAUSE_BEFORE_WRITE_ENV)
            .ok()?
            .parse()
            .ok()
    }) else {
        return;
    };
    if WRITES.fetch_add(1, Ordering::SeqCst) == at {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "FLOWPIN_XDP_LB_PAUSED {at}");
        let _ = out.flush();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

impl MapWriter for KernelMaps {
    type Error = KernelError;

    fn write(&mut self, op: &MapOp) -> Result<(), KernelError> {
        test_pause_point();
        match op {
            MapOp::ResetVipStats { vip_id } => {
                let zero = vec![bytes_of(&flowpin_vip_stats::default()).to_vec(); self.ncpus];
                self.vip_stats
                    .update_percpu(&vip_id.to_ne_bytes(), &zero, MapFlags::ANY)
                    .map_err(KernelError::map("vip_stats", "update_percpu"))
            }
            MapOp::ResetBackendStats { id } => {
                let zero = vec![bytes_of(&flowpin_backend_stats::default()).to_vec(); self.ncpus];
                self.backend_stats
                    .update_percpu(&id.to_ne_bytes(), &zero, MapFlags::ANY)
                    .map_err(KernelError::map("backend_stats", "update_percpu"))
            }
            MapOp::SidRetired {
                vip_id,
                server_id,
                retired,
            } => {
                let k = c_sid_key(*vip_id, *server_id);
                if *retired {
                    self.sid_retired
                        .update(bytes_of(&k), &[1u8], MapFlags::ANY)
                        .map_err(KernelError::map("sid_retired", "update"))
                } else {
                    Self::delete(&self.sid_retired, "sid_retired", bytes_of(&k))
                }
            }
            MapOp::Backend { id, addr, .. } => {
                let v = match addr {
                    Some(a) => {
                        let (addr, family) = c_addr(*a);
                        flowpin_backend {
                            addr,
                            family,
                            pad: [0; 3],
                        }
                    }
                    None => flowpin_backend::default(),
                };
                Self::update(&self.backends, "backends", &id.to_ne_bytes(), &v)
            }
            MapOp::Ring { vip_id, writes } => self.write_ring(*vip_id, writes),
            MapOp::Vip { key, meta, .. } => {
                let k = c_vip_key(key);
                match meta {
                    Some(m) => Self::update(&self.vips, "vips", bytes_of(&k), &c_meta(m)),
                    None => Self::delete(&self.vips, "vips", bytes_of(&k)),
                }
            }
            MapOp::VipSlot { slot, value, .. } => {
                let v = match value {
                    Slot::Empty => flowpin_vip_slot::default(),
                    Slot::One((k, m)) => flowpin_vip_slot {
                        key: c_vip_key(k),
                        meta: c_meta(m),
                        state: lb::SLOT_ONE,
                    },
                    Slot::Shared => flowpin_vip_slot {
                        state: lb::SLOT_SHARED,
                        ..Default::default()
                    },
                };
                Self::update(&self.vip_table, "vip_table", &slot.to_ne_bytes(), &v)
            }
            MapOp::SidRoute {
                vip_id,
                server_id,
                backend,
                ..
            } => {
                let k = c_sid_key(*vip_id, *server_id);
                match backend {
                    Some(b) => self
                        .server_ids
                        .update(bytes_of(&k), &b.to_ne_bytes(), MapFlags::ANY)
                        .map_err(KernelError::map("server_ids", "update")),
                    None => Self::delete(&self.server_ids, "server_ids", bytes_of(&k)),
                }
            }
            MapOp::SidSlot { slot, value, .. } => {
                let v = match value {
                    Slot::Empty => flowpin_sid_slot::default(),
                    Slot::One(SidRoute {
                        vip_id,
                        server_id,
                        backend,
                    }) => flowpin_sid_slot {
                        vip_id: *vip_id,
                        server_id: *server_id,
                        backend: *backend,
                        state: lb::SLOT_ONE,
                    },
                    Slot::Shared => flowpin_sid_slot {
                        state: lb::SLOT_SHARED,
                        ..Default::default()
                    },
                };
                Self::update(&self.sid_table, "sid_table", &slot.to_ne_bytes(), &v)
            }
            MapOp::BackendDesc {
                vip_id, pos, value, ..
            } => {
                let k = flowpin_backend_desc_key {
                    vip_id: *vip_id,
                    pos: *pos,
                };
                match value {
                    Some(d) => Self::update(
                        &self.backend_descs,
                        "backend_descs",
                        bytes_of(&k),
                        &c_desc(d),
                    ),
                    None => Self::delete(&self.backend_descs, "backend_descs", bytes_of(&k)),
                }
            }
            MapOp::CidConfig {
                vip_id,
                slot,
                value,
                ..
            } => {
                let idx = vip_id * lb::CID_CFGS_PER_VIP + u32::from(*slot);
                let v = value.as_ref().map_or_else(flowpin_cid_cfg::default, c_cid);
                // The kernel context serves the constant-time encryptions of
                // the four-pass network; the single pass decrypts with the
                // bitsliced engine and its round keys in `cid_cfgs` alone.
                let ct = value.as_ref().filter(|e| {
                    e.layout == lb::CID_QUIC_LB_ENC
                        && e.engine == lb::AES_CONST_TIME
                        && u32::from(e.sid_len) + u32::from(e.nonce_len)
                            != lb::QUIC_LB_SINGLE_PASS_LEN
                });
                // The context exists before the entry that uses it, and
                // goes after the entry stops using it.
                if let Some(e) = ct {
                    self.crypto(idx, Some(&e.key.0))?;
                }
                Self::update(&self.cid_cfgs, "cid_cfgs", &idx.to_ne_bytes(), &v)?;
                if ct.is_none() && *slot < lb::CID_MODE_SLOT as u8 {
                    self.crypto(idx, None)?;
                }
                Ok(())
            }
            MapOp::PortAgnosticVips { count, .. } => {
                self.cfg.port_agnostic_vips = *count;
                self.write_cfg()
            }
        }
    }
}
