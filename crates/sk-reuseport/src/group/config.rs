//! [`GroupConfig`]: what the creator of a group fixes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flowpin_bpf_progs::sk_reuseport_select::{self as sel, SelectMode};

/// Configuration of a group (fixed by the process that creates it).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// bpffs directory where the program and maps are pinned (created; its
    /// parent must be on bpffs, e.g. `/sys/fs/bpf/myservice`).
    pub pin_path: PathBuf,
    /// Slot choice for new TCP connections.
    pub tcp_mode: SelectMode,
    /// Slot choice for new UDP flows.
    pub udp_mode: SelectMode,
    /// Keep UDP flows on their first socket while it lives.
    pub udp_affinity: bool,
    /// Route QUIC short-header packets by the socket id in their DCID.
    pub quic_cid: bool,
    /// Byte offset of the 2-byte socket id inside the DCID.
    pub cid_sock_offset: u8,
    /// Entries of the UDP flow table (LRU).
    pub flow_table_size: u32,
    /// How long a retired generation keeps its UDP flows at most.
    pub drain_deadline: Duration,
    /// A retired generation without a packet for this long is removed.
    pub drain_idle: Duration,
    /// Set `net.ipv4.tcp_migrate_req=1` in the caller's namespace (TCP groups).
    pub set_migrate_sysctl: bool,
    /// Remove the pins when this handle drops (tests; a real release keeps
    /// them for the next process and calls
    /// [`ReuseportGroup::remove_pins`](super::ReuseportGroup::remove_pins)
    /// at the end).
    pub unpin_on_drop: bool,
}

impl GroupConfig {
    /// Defaults: hash steering, UDP affinity with 65,536 flows, QUIC CID
    /// routing off (turn it on for QUIC services only: any UDP payload whose
    /// first byte has the high bit clear looks like a short header), socket
    /// id at DCID offset 5 (after the flowpin CID layout's server_id), 60 s
    /// drain deadline, 10 s idle.
    pub fn new(pin_path: impl AsRef<Path>) -> Self {
        GroupConfig {
            pin_path: pin_path.as_ref().to_path_buf(),
            tcp_mode: SelectMode::Hash,
            udp_mode: SelectMode::Hash,
            udp_affinity: true,
            quic_cid: false,
            cid_sock_offset: sel::DEFAULT_CID_SOCK_OFFSET,
            flow_table_size: 65_536,
            drain_deadline: Duration::from_secs(60),
            drain_idle: Duration::from_secs(10),
            set_migrate_sysctl: true,
            unpin_on_drop: false,
        }
    }
}
