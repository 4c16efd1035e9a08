//! Global backend indices of `xdp_lb`'s `backends` array.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use crate::LbError;

/// Global backend indices: one per distinct address, shared by the VIPs
/// that use it (reference counted); index 0 is never a backend.
#[derive(Debug, Clone, Default)]
pub(crate) struct BackendAlloc {
    pub(crate) ids: HashMap<IpAddr, (u32, u32)>,
    pub(crate) free: VecDeque<u32>,
    pub(crate) next: u32,
}

impl BackendAlloc {
    /// Takes a reference on `addr`'s index; `Some(id)` if a new entry must be written.
    pub(crate) fn acquire(&mut self, addr: IpAddr, max: u32) -> Result<(u32, bool), LbError> {
        if let Some((id, refs)) = self.ids.get_mut(&addr) {
            *refs += 1;
            return Ok((*id, false));
        }
        let id = match self.free.pop_front() {
            Some(id) => id,
            None if self.next < max => {
                self.next += 1;
                self.next - 1
            }
            None => return Err(LbError::TooManyBackends { max }),
        };
        self.ids.insert(addr, (id, 1));
        Ok((id, true))
    }
    /// Drops a reference on `addr`'s index; `Some(id)` if its entry must be cleared.
    pub(crate) fn release(&mut self, addr: IpAddr) -> Option<u32> {
        let (id, refs) = self.ids.get_mut(&addr)?;
        *refs -= 1;
        if *refs > 0 {
            return None;
        }
        let id = *id;
        self.ids.remove(&addr);
        // FIFO reuse: an index is reused as late as possible, so stale
        // connection-table entries of a removed backend expire first.
        self.free.push_back(id);
        Some(id)
    }
}
