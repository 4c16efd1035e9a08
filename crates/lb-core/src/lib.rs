//! The control core of flowpin's XDP load balancer (`xdp_lb`), in pure
//! Rust: no clang, no libbpf, no syscalls.
//!
//! [`LbState`] is what the kernel tables hold (VIPs, their flags, their
//! backends with weights, server_ids and drain state, each VIP's Maglev
//! ring, the global backend indices, the direct-mapped slots). Every change
//! is planned from `&self` into a [`Plan`]: the ordered [`MapOp`]s that take
//! the kernel there, each carrying the value it replaces. An applier
//! ([`apply`] over a [`MapWriter`]) writes them and undoes what it wrote if
//! one fails; [`LbState::commit`] then makes the plan's outcome the state.
//! `flowpin_bpf_progs::xdp_lb::XdpLb` is that applier for the kernel maps;
//! this crate's tests use an in-memory one.
//!
//! ```
//! use flowpin_lb_core::{apply, Backend, Desired, DesiredVip, LbConfig, LbState, MapOp, MapWriter};
//! use flowpin_lb_core::{Proto, Vip, VipFlags};
//! use flowpin_tcp_opt::ServerId;
//!
//! /// Stands in for the kernel maps: counts the writes.
//! struct Maps(usize);
//! impl MapWriter for Maps {
//!     type Error = std::convert::Infallible;
//!     fn write(&mut self, _op: &MapOp) -> Result<(), Self::Error> {
//!         self.0 += 1;
//!         Ok(())
//!     }
//! }
//!
//! let mut state = LbState::new(&LbConfig::default().ring_size(251));
//! let mut maps = Maps(0);
//! let vip = Vip::new("192.0.2.10".parse()?, 80, Proto::Tcp);
//! let sid = ServerId::new(7).expect("server_id 0 is reserved");
//! let desired = Desired::new().vip(
//!     vip,
//!     DesiredVip::new(VipFlags::SERVER_ID)
//!         .backend(Backend::new("10.0.0.2".parse()?).weight(3).server_id(sid))
//!         .backend(Backend::new("10.0.0.3".parse()?).without_server_id()),
//! );
//! let plan = state.reconcile(&desired)?;
//! apply(&mut maps, &plan.ops)?; // on a failure: rolled back, state unchanged
//! state.commit(plan);
//! assert_eq!(state.backends(&vip).map(<[Backend]>::len), Some(2));
//! // Already there: nothing to write.
//! assert!(state.reconcile(&desired)?.ops.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Backend weights follow one rule, written in [`weight`]: `0..=`[`MAX_WEIGHT`],
//! 0 meaning "no new flows, still reachable by server_id and the connection
//! table".
//!
//! The service vocabulary ([`Proto`], [`Vip`], [`VipFlags`]) is
//! `flowpin_bpf_abi::vip`'s, shared by every crate of the suite.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod apply;
mod backend_ids;
mod cid;
mod config;
mod error;
mod ops;
mod overlay;
mod rebuild;
mod ring;
pub mod state;
mod types;
pub mod weight;

#[cfg(test)]
mod cid_tests;
#[cfg(test)]
mod fake_maps;
#[cfg(test)]
mod rebuild_tests;
#[cfg(test)]
mod reconcile_tests;
#[cfg(test)]
mod state_tests;

pub use apply::{apply, ApplyError, MapWriter};
pub use cid::{AesEngine, CidEntry, QuicLbConf, QuicLbKey, VipCid};
pub use config::{LbConfig, DEFAULT_RING_SIZE};
pub use error::LbError;
pub use ops::{BackendDesc, MapOp, RingWrite, SidRoute, Slot, VipKey, VipMeta};
pub use rebuild::PinnedContents;
pub use state::{Desired, DesiredVip, LbState, Plan, RingUpdate};
pub use types::{Backend, Proto, Vip, VipFlags};
pub use weight::MAX_WEIGHT;
