//! The connection table as the program keeps it for one CPU: sets of
//! `CONN_WAYS` flows, each way a 64-bit fingerprint and a backend, the LRU
//! order packed 2 bits per way (`flowpin_lb.h`).

use std::net::IpAddr;

use flowpin_bpf_abi::lb::CONN_ORDER_INIT;

#[derive(Debug, Clone, Default)]
pub(super) struct ConnSet {
    hash: [(u32, u32); 4],
    backend: [Option<IpAddr>; 4],
    order: u32,
}

fn order_front(o: u32, w: u32) -> u32 {
    let e = [o & 3, (o >> 2) & 3, (o >> 4) & 3, (o >> 6) & 3];
    if w == e[0] {
        o
    } else if w == e[1] {
        w | (e[0] << 2) | (e[2] << 4) | (e[3] << 6)
    } else if w == e[2] {
        w | (e[0] << 2) | (e[1] << 4) | (e[3] << 6)
    } else {
        w | (e[0] << 2) | (e[1] << 4) | (e[2] << 6)
    }
}

impl ConnSet {
    fn find(&self, fp: (u32, u32)) -> Option<usize> {
        (0..4).find(|&w| self.hash[w] == fp && self.backend[w].is_some())
    }
    fn order(&self) -> u32 {
        if self.order == 0 {
            CONN_ORDER_INIT
        } else {
            self.order
        }
    }
    pub(super) fn lookup(&mut self, fp: (u32, u32)) -> Option<IpAddr> {
        let w = self.find(fp)?;
        let o = self.order();
        if o & 3 != w as u32 {
            self.order = order_front(o, w as u32);
        }
        self.backend[w]
    }
    pub(super) fn insert(&mut self, fp: (u32, u32), backend: IpAddr) {
        let o = self.order();
        let w = self.find(fp).unwrap_or(((o >> 6) & 3) as usize);
        self.hash[w] = fp;
        self.backend[w] = Some(backend);
        self.order = order_front(o, w as u32);
    }
}
