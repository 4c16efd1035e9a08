//! Running code inside another network namespace without writing a
//! `setns` thread: [`run_in`] runs a closure on a short-lived thread that
//! has entered the namespace, and returns its result. Sockets, links and
//! fds made inside stay valid in the caller (fds are per process).
//!
//! The XDP programs take a namespace directly
//! ([`XdpTarget::ifname_in_netns`](crate::xdp_attach::XdpTarget::ifname_in_netns));
//! `run_in` is for everything else (e.g.
//! [`netdev::disable_tx_checksum_offload`](crate::netdev::disable_tx_checksum_offload)
//! on an interface of that namespace). A child process is started in a
//! namespace with [`CommandCgroupExt::in_netns`](crate::process::CommandCgroupExt::in_netns).
//!
//! ```no_run
//! use flowpin_bpf_progs::{netdev, netns};
//! netns::run_in("/run/netns/client", || netdev::disable_tx_checksum_offload("eth0"))??;
//! # Ok::<(), flowpin_bpf_progs::error::KernelError>(())
//! ```

use std::fs::File;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

use crate::error::KernelError;

/// The file of the network namespace `ip netns add <name>` made.
pub fn named(name: &str) -> std::path::PathBuf {
    Path::new("/run/netns").join(name)
}

/// Runs `f` on a new thread inside the network namespace at `netns` (a
/// namespace file: `/run/netns/<name>`, see [`named`], or
/// `/proc/<pid>/ns/net`) and returns its result. The calling thread's own
/// namespace is not touched. A panic in `f` is resumed in the caller.
pub fn run_in<T: Send>(
    netns: impl AsRef<Path>,
    f: impl FnOnce() -> T + Send,
) -> Result<T, KernelError> {
    let path = netns.as_ref();
    let object = || format!("network namespace {}", path.display());
    let ns = File::open(path).map_err(|e| {
        KernelError::io(
            object(),
            "open",
            &e,
            "the path must be a namespace file: /run/netns/<name> or /proc/<pid>/ns/net",
        )
    })?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                KernelError::errno(
                    object(),
                    "setns",
                    errno as i32,
                    "entering a network namespace needs CAP_SYS_ADMIN; the file must be a network namespace",
                )
            })?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
