//! Reading and emptying the connection table from user space (the table
//! itself: see the module docs and `xdp_lb_conn.h`).

use libbpf_rs::{MapCore, MapFlags};

use super::{stats, Result, XdpLb, CONN_SET_BYTES};
use crate::error::KernelError;
use crate::skel::xdp_lb::types::flowpin_conn_set;
use crate::skel::{bytes_of, read};

impl XdpLb {
    /// Empties the connection table (all CPUs). Flows then follow the ring again.
    pub fn clear_connection_table(&self) -> Result<()> {
        let total = self.conn_sets * self.ncpus;
        let chunk = 1024u32;
        let empty = bytes_of(&flowpin_conn_set::default()).to_vec();
        let zeros = empty.repeat(chunk as usize);
        let mut start = 0;
        while start < total {
            let n = chunk.min(total - start);
            let keys: Vec<u8> = (start..start + n).flat_map(|k| k.to_ne_bytes()).collect();
            self.maps
                .conn
                .update_batch(
                    &keys,
                    &zeros[..n as usize * empty.len()],
                    n,
                    MapFlags::ANY,
                    MapFlags::ANY,
                )
                .map_err(KernelError::map("conn", "update_batch"))?;
            start += n;
        }
        stats::reset_conn_entries(&self.maps.lb_stats)
    }

    /// Flows currently in the connection table, all CPUs together (reads
    /// the whole table: for tests and tools, not for a hot loop).
    pub fn connection_table_len(&self) -> Result<usize> {
        let mut n = 0;
        for k in 0..self.conn_sets * self.ncpus {
            let v = self
                .maps
                .conn
                .lookup(&k.to_ne_bytes(), MapFlags::ANY)
                .map_err(KernelError::map("conn", "lookup"))?
                .unwrap_or_default();
            let set: flowpin_conn_set = read(&v).ok_or_else(|| {
                KernelError::out_of_sync("map conn", "lookup", v.len(), CONN_SET_BYTES as usize)
            })?;
            n += set.backend.iter().filter(|&&b| b != 0).count();
        }
        Ok(n)
    }
}
