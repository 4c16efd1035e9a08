//! [`GroupError`]: what failed, at which step.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use flowpin_bpf_progs::sk_reuseport_select::{Proto, SelectError};

use crate::release::{Generation, ReleaseError};

/// Errors of the group API: each names the step that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// bpffs could not be mounted or the pin path is not on bpffs.
    #[error("pin path {path}: {why}")]
    Bpffs {
        /// The path.
        path: PathBuf,
        /// What is wrong and what to do.
        why: String,
    },
    /// `create` found pins already there.
    #[error("pin path {0} already holds a group; join it with ReuseportGroup::join, or remove it with ReuseportGroup::remove_pins")]
    PinExists(PathBuf),
    /// `join` found no usable group at the pin path.
    #[error("stale pin path {path}: {why}")]
    StalePin {
        /// The path.
        path: PathBuf,
        /// What was found.
        why: String,
    },
    /// Taking the group's cross-process lock (`flock` on the pin directory) failed.
    #[error("locking the group at {path}: {source} (was the pin directory removed?)")]
    Lock {
        /// The pin directory.
        path: PathBuf,
        /// The failed call.
        source: flowpin_bpf_progs::error::KernelError,
    },
    /// A kernel call of the thin layer failed.
    #[error("{step}: {source}")]
    Kernel {
        /// Which step.
        step: &'static str,
        /// The kernel layer's error.
        #[source]
        source: SelectError,
    },
    /// Socket `index` is of another address family than the group.
    #[error("socket #{index} is {got}, the group is {expected}: create the socket with the group's family")]
    WrongFamily {
        /// Position in the slice given.
        index: usize,
        /// The group's family.
        expected: &'static str,
        /// The socket's family.
        got: &'static str,
    },
    /// Socket `index` is of another protocol than the group.
    #[error("socket #{index} is {got:?}, the group is {expected:?}")]
    WrongProtocol {
        /// Position in the slice given.
        index: usize,
        /// The group's protocol.
        expected: Proto,
        /// The socket's protocol.
        got: Proto,
    },
    /// Socket `index` is bound to another address or port.
    #[error("socket #{index} is bound to {got}, the group is {expected}: bind it to the group's address")]
    WrongAddress {
        /// Position in the slice given.
        index: usize,
        /// The group's address.
        expected: SocketAddr,
        /// The socket's address.
        got: SocketAddr,
    },
    /// Socket `index` lacks `SO_REUSEPORT`.
    #[error("socket #{index} does not have SO_REUSEPORT: set it (socket2 set_reuse_port(true)) before bind()")]
    NotReuseport {
        /// Position in the slice given.
        index: usize,
    },
    /// TCP socket `index` is not listening.
    #[error("TCP socket #{index} is not listening: call listen() before adding it")]
    NotListening {
        /// Position in the slice given.
        index: usize,
    },
    /// A socket query failed.
    #[error("socket #{index}: {step} failed: {source}")]
    Socket {
        /// Position in the slice given.
        index: usize,
        /// Which query.
        step: &'static str,
        /// errno.
        #[source]
        source: io::Error,
    },
    /// The slot already holds a socket.
    #[error("slot {slot} of {gen} is busy (holds a live socket): remove it or pick a free slot")]
    SlotBusy {
        /// The generation.
        gen: Generation,
        /// The slot.
        slot: u32,
    },
    /// A slot number past the generation's slots.
    #[error("slot {slot} is out of range: {gen} has {slots} slots")]
    SlotRange {
        /// The generation.
        gen: Generation,
        /// The slot.
        slot: u32,
        /// Its slot count.
        slots: u32,
    },
    /// Activating a generation whose sockets are all gone.
    #[error("{0} has no socket left in the map (closed?); add a new generation")]
    EmptyGeneration(Generation),
    /// The release state machine refused the transition.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// A QUIC connection ID could not be written.
    #[error("encoding a QUIC connection ID: {0}")]
    Cid(String),
    /// Setting `net.ipv4.tcp_migrate_req` failed.
    #[error("setting net.ipv4.tcp_migrate_req=1 (writing /proc/sys/net/ipv4/tcp_migrate_req): {0} — needs root in this network namespace; or set it yourself and pass GroupConfig::set_migrate_sysctl = false")]
    Sysctl(#[source] io::Error),
}

pub(super) type Result<T> = std::result::Result<T, GroupError>;

pub(super) fn kernel(step: &'static str) -> impl FnOnce(SelectError) -> GroupError {
    move |source| GroupError::Kernel { step, source }
}
