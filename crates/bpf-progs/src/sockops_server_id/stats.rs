//! Counters of `sockops_server_id`, read from its struct-valued per-CPU
//! map `stats` (`struct flowpin_sockops_stats`) in one lookup, summed over
//! CPUs.

use crate::skel::sockops_server_id::types::flowpin_sockops_stats;

/// Counters of the server role, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Listeners on a configured port (their SYN-ACKs get the option).
    pub listeners: u64,
    /// Listeners on other ports (left alone).
    pub listeners_skipped: u64,
    /// SYN-ACKs sent carrying our server_id.
    pub written: u64,
    /// SYN-ACKs left alone: the local address is not configured.
    pub addr_skipped: u64,
    /// SYN-ACKs sent without the option: no room left in the header
    /// (e.g. TCP-MD5 + timestamps + window scale + MSS fill all 40 bytes).
    pub no_space: u64,
    /// Handshake-completing ACKs that echoed our server_id.
    pub echo_ok: u64,
    /// Handshake-completing ACKs without the option (client without the
    /// program, or it found no room).
    pub echo_missing: u64,
    /// Handshake-completing ACKs with another server_id or a malformed option.
    pub echo_wrong: u64,
}

/// Counters of the client role, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// `connect()`s seen.
    pub connects: u64,
    /// SYN-ACKs carrying a valid server_id (these connections echo it).
    pub parsed: u64,
    /// SYN-ACKs without the option: the server never sent one (an
    /// experimental option with another ExID, or another kind, is not ours
    /// and counts here). Nothing is written on these connections.
    pub missing: u64,
    /// SYN-ACKs whose option has our kind (and ExID) but a wrong length, or
    /// whose option list is unparsable. Ignored: nothing is written.
    pub malformed: u64,
    /// SYN-ACKs carrying server_id 0 ("none"). Not echoed.
    pub zero: u64,
    /// Packets sent carrying the echoed server_id.
    pub echoed: u64,
    /// Of [`ClientStats::echoed`], RST packets.
    pub echoed_rst: u64,
    /// Packets sent without the option because the header had no room left
    /// (e.g. timestamps + SACK blocks + TCP-MD5).
    pub no_space: u64,
}

/// All counters of one instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerIdOpsStats {
    /// Server role.
    pub server: ServerStats,
    /// Client role.
    pub client: ClientStats,
    /// BPF helper failures (setting callback flags, socket storage, storing
    /// the option). Should stay 0.
    pub errors: u64,
}

impl From<flowpin_sockops_stats> for ServerIdOpsStats {
    fn from(c: flowpin_sockops_stats) -> Self {
        ServerIdOpsStats {
            server: ServerStats {
                listeners: c.server_listen_matched,
                listeners_skipped: c.server_listen_skipped,
                written: c.server_written,
                addr_skipped: c.server_addr_skipped,
                no_space: c.server_no_space,
                echo_ok: c.server_echo_ok,
                echo_missing: c.server_echo_missing,
                echo_wrong: c.server_echo_wrong,
            },
            client: ClientStats {
                connects: c.client_connects,
                parsed: c.client_parsed,
                missing: c.client_missing,
                malformed: c.client_malformed,
                zero: c.client_zero,
                echoed: c.client_echoed,
                echoed_rst: c.client_echoed_rst,
                no_space: c.client_no_space,
            },
            errors: c.errors,
        }
    }
}
