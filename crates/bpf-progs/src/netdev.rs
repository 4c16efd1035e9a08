//! Network-device settings an embedder of the XDP programs needs.

use std::io;
use std::os::fd::AsRawFd;

use crate::error::KernelError;

/// `ethtool -K <ifname> tx off`: turns off TX checksum offload of an
/// interface (`SIOCETHTOOL` / `ETHTOOL_STXCSUM`), so the kernel computes
/// TCP/UDP checksums in software before the interface transmits. `ethtool`
/// itself need not be installed.
///
/// Needed on a same-host sender's veth that feeds a native-XDP program
/// which sends frames back out (`XDP_TX`, e.g. `xdp_lb`): veth hands
/// packets over with `CHECKSUM_PARTIAL` (checksum left for "hardware"), XDP
/// turns them into raw frames and that state is lost, so the checksum would
/// never be filled in and the receiver would drop the segment.
///
/// The ioctl acts on the network namespace of the **calling thread**; for
/// an interface in another namespace wrap it in
/// [`netns::run_in`](crate::netns::run_in):
/// `netns::run_in("/run/netns/client", || disable_tx_checksum_offload("eth0"))`.
pub fn disable_tx_checksum_offload(ifname: &str) -> Result<(), KernelError> {
    ethtool_value(
        ifname,
        ETHTOOL_STXCSUM,
        0,
        "SIOCETHTOOL ETHTOOL_STXCSUM off",
    )
    .map(|_| ())
}

/// Whether TX checksum offload of `ifname` is on (`ETHTOOL_GTXCSUM`), in
/// the calling thread's network namespace.
pub fn tx_checksum_offload(ifname: &str) -> Result<bool, KernelError> {
    ethtool_value(ifname, ETHTOOL_GTXCSUM, 0, "SIOCETHTOOL ETHTOOL_GTXCSUM").map(|v| v != 0)
}

const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;

/// One `SIOCETHTOOL` with a `struct ethtool_value`; returns its `data`.
fn ethtool_value(ifname: &str, cmd: u32, data: u32, op: &'static str) -> Result<u32, KernelError> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let object = || format!("interface {ifname:?}");
    const HINT: &str = "does the interface exist in this thread's network namespace (see netns::run_in), and are we root (CAP_NET_ADMIN)?";
    if ifname.is_empty() || ifname.len() > 15 || ifname.contains('\0') {
        return Err(KernelError::io(
            object(),
            op,
            &io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface names are 1 to 15 bytes long, without NUL",
            ),
            "",
        ));
    }
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| KernelError::io(object(), "socket(AF_INET, SOCK_DGRAM)", &e, HINT))?;
    let mut val = EthtoolValue { cmd, data };
    // SAFETY: ifreq is plain old data (integers, arrays and a union of such
    // and pointers); all-zero is a valid value.
    let mut ifr: nix::libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as nix::libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut val as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL reads `ifr` (NUL-terminated name: at most 15
    // bytes were copied into the zeroed 16-byte array) and the
    // ethtool_value it points to; both live on this stack frame for the
    // whole call.
    let rc = unsafe { nix::libc::ioctl(sock.as_raw_fd(), nix::libc::SIOCETHTOOL as _, &mut ifr) };
    if rc < 0 {
        return Err(KernelError::io(
            object(),
            op,
            &io::Error::last_os_error(),
            HINT,
        ));
    }
    Ok(val.data)
}
