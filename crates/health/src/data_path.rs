//! Probes through the data path (feature `bpf`): [`TunnelRoutes`] gives
//! each probed backend an index of the `probe_encap` program's backend
//! table (its tunnel address) and probes the VIP with that index's mark, so
//! the probe is encapsulated to the backend as `xdp_lb` encapsulates client
//! traffic.
//!
//! ```no_run
//! # fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use flowpin_bpf_progs::probe_encap::{ProbeEncap, ProbeEncapConfig};
//! use flowpin_health::{Prober, TunnelRoutes};
//! let encap = ProbeEncap::load(ProbeEncapConfig::default())?;
//! let _link = encap.attach_ifname("eth0")?; // keep it: dropping detaches
//! let prober = Prober::new(Arc::new(TunnelRoutes::new(encap)));
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use flowpin_bpf_progs::probe_encap::{probe_mark, ProbeEncap};

use crate::probe::ProbeTarget;
use crate::prober::{ProbeRoutes, RouteError};

#[derive(Debug, Default)]
struct Slots {
    by_addr: BTreeMap<IpAddr, u32>,
    free: Vec<u32>,
    next: u32,
}

/// [`ProbeRoutes`] over a loaded `probe_encap` (attach it yourself, to the
/// interface the VIP is routed out of).
#[derive(Debug)]
pub struct TunnelRoutes {
    encap: ProbeEncap,
    slots: Mutex<Slots>,
}

impl TunnelRoutes {
    /// Routes through `encap`'s backend table.
    pub fn new(encap: ProbeEncap) -> TunnelRoutes {
        TunnelRoutes {
            encap,
            slots: Mutex::new(Slots::default()),
        }
    }

    /// The program (its stats, its fd).
    pub fn encap(&self) -> &ProbeEncap {
        &self.encap
    }

    /// The index (and so the mark) `backend` has, if it is probed.
    pub fn index_of(&self, backend: IpAddr) -> Option<u32> {
        self.lock().by_addr.get(&backend).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ProbeRoutes for TunnelRoutes {
    fn target(&self, vip: IpAddr, port: u16, backend: IpAddr) -> Result<ProbeTarget, RouteError> {
        let mut s = self.lock();
        let index = match s.by_addr.get(&backend) {
            Some(i) => *i,
            None => {
                let i = match s.free.pop() {
                    Some(i) => i,
                    None if s.next < self.encap.max_backends() => {
                        s.next += 1;
                        s.next - 1
                    }
                    None => {
                        return Err(RouteError {
                            backend,
                            reason: format!(
                                "the probe_encap table is full ({} backends): load it with a larger ProbeEncapConfig::max_backends",
                                self.encap.max_backends()
                            ),
                        })
                    }
                };
                self.encap.set_backend(i, backend).map_err(|e| RouteError {
                    backend,
                    reason: e.to_string(),
                })?;
                s.by_addr.insert(backend, i);
                i
            }
        };
        Ok(ProbeTarget::tunnel(vip, port, probe_mark(index)))
    }

    fn release(&self, backend: IpAddr) {
        let mut s = self.lock();
        if let Some(i) = s.by_addr.remove(&backend) {
            if let Err(e) = self.encap.clear_backend(i) {
                tracing::warn!(%backend, error = %e, "clearing a probe_encap entry failed");
            }
            s.free.push(i);
        }
    }
}
