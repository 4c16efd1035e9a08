//! Network-device settings an embedder of the XDP programs (and the
//! benches and the lab, which measure them) needs: the offloads of an
//! interface, read and switched with `SIOCETHTOOL` like `ethtool -k` /
//! `ethtool -K` do, without `ethtool` installed.

use std::io;
use std::os::fd::AsRawFd;

use crate::error::KernelError;

/// An offload of an interface that `SIOCETHTOOL` reads and switches as one
/// `struct ethtool_value` (`ethtool -k` / `ethtool -K` names in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Offload {
    /// TX checksum offload (`tx`, `ETHTOOL_GTXCSUM` / `ETHTOOL_STXCSUM`).
    TxChecksum,
    /// TCP segmentation offload (`tso`, `ETHTOOL_GTSO` / `ETHTOOL_STSO`).
    Tso,
    /// Generic receive offload (`gro`, `ETHTOOL_GGRO` / `ETHTOOL_SGRO`).
    Gro,
}

impl Offload {
    /// The get command and its operation name in errors.
    fn get(self) -> (u32, &'static str) {
        match self {
            Offload::TxChecksum => (0x16, "SIOCETHTOOL ETHTOOL_GTXCSUM"),
            Offload::Tso => (0x1e, "SIOCETHTOOL ETHTOOL_GTSO"),
            Offload::Gro => (0x2b, "SIOCETHTOOL ETHTOOL_GGRO"),
        }
    }

    /// The set command and its operation name in errors (`on`/`off`).
    fn set(self, on: bool) -> (u32, &'static str) {
        match (self, on) {
            (Offload::TxChecksum, true) => (0x17, "SIOCETHTOOL ETHTOOL_STXCSUM on"),
            (Offload::TxChecksum, false) => (0x17, "SIOCETHTOOL ETHTOOL_STXCSUM off"),
            (Offload::Tso, true) => (0x1f, "SIOCETHTOOL ETHTOOL_STSO on"),
            (Offload::Tso, false) => (0x1f, "SIOCETHTOOL ETHTOOL_STSO off"),
            (Offload::Gro, true) => (0x2c, "SIOCETHTOOL ETHTOOL_SGRO on"),
            (Offload::Gro, false) => (0x2c, "SIOCETHTOOL ETHTOOL_SGRO off"),
        }
    }
}

/// Whether `offload` is on for `ifname` (`ethtool -k <ifname>`).
///
/// The ioctl acts on the network namespace of the **calling thread**; for
/// an interface in another namespace wrap it in
/// [`netns::run_in`](crate::netns::run_in). Fails (with the errno, e.g.
/// `ENODEV` for an interface not in this namespace) when the kernel refuses.
pub fn offload(ifname: &str, offload: Offload) -> Result<bool, KernelError> {
    let (cmd, op) = offload.get();
    ethtool_value(ifname, cmd, 0, op).map(|v| v != 0)
}

/// Turns `offload` of `ifname` on or off (`ethtool -K <ifname> <name>
/// on|off`), in the calling thread's network namespace (see [`offload`]).
///
/// E.g. veth receives with NAPI (and so can run threaded NAPI) only with
/// GRO on, and takes that path for a socket's TCP segments only when the
/// sending end has no TSO: `set_offload(dev, Offload::Gro, true)` and
/// `set_offload(dev, Offload::Tso, false)` on both ends.
pub fn set_offload(ifname: &str, offload: Offload, on: bool) -> Result<(), KernelError> {
    let (cmd, op) = offload.set(on);
    ethtool_value(ifname, cmd, u32::from(on), op).map(|_| ())
}

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
    set_offload(ifname, Offload::TxChecksum, false)
}

/// Whether TX checksum offload of `ifname` is on (`ETHTOOL_GTXCSUM`), in
/// the calling thread's network namespace.
pub fn tx_checksum_offload(ifname: &str) -> Result<bool, KernelError> {
    offload(ifname, Offload::TxChecksum)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_the_uapi_values() {
        // <linux/ethtool.h>
        assert_eq!(Offload::TxChecksum.get().0, 0x16);
        assert_eq!(Offload::TxChecksum.set(false).0, 0x17);
        assert_eq!(Offload::Tso.get().0, 0x1e);
        assert_eq!(Offload::Tso.set(true).0, 0x1f);
        assert_eq!(Offload::Gro.get().0, 0x2b);
        assert_eq!(Offload::Gro.set(true).0, 0x2c);
        for o in [Offload::TxChecksum, Offload::Tso, Offload::Gro] {
            assert_eq!(o.set(true).0, o.set(false).0);
            assert!(o.set(true).1.ends_with(" on"));
            assert!(o.set(false).1.ends_with(" off"));
        }
    }

    #[test]
    fn bad_interface_names_fail_before_the_ioctl_and_say_why() {
        for name in ["", "sixteen-bytes-xx", "a\0b"] {
            let e = set_offload(name, Offload::Gro, true).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name:?}: {e}");
            let s = e.to_string();
            assert!(s.contains("SIOCETHTOOL ETHTOOL_SGRO on"), "{s}");
            assert!(s.contains("1 to 15 bytes"), "{s}");
        }
        let e = offload("sixteen-bytes-xx", Offload::Tso).unwrap_err();
        assert!(e.to_string().contains("ETHTOOL_GTSO"), "{e}");
    }
}
