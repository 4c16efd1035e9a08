//! The service vocabulary every crate of the suite shares: the transport
//! protocol ([`Proto`]), a load-balanced service ([`Vip`]: address, port,
//! protocol) and its features ([`VipFlags`], the `FLOWPIN_VIP_*` bits of
//! `flowpin_lb.h`).
//!
//! One type each, so the load balancer, the registry, sk_lookup and the
//! reuseport group never map one protocol enum onto another by hand. With
//! the `serde` feature they serialize as the registry stores them: `Proto`
//! as `"tcp"` / `"udp"`, `Vip` as `{"addr":…,"port":…,"proto":…}` and
//! `VipFlags` as `{"port_agnostic":false,"skip_lru_udp":false,"server_id":true,"quic":false}`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::lb;

/// Transport protocol of a VIP, a binding or a socket group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum Proto {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Proto {
    /// The IP protocol number: 6 or 17.
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    /// The protocol of an IP protocol number (`None` unless 6 or 17).
    pub const fn from_number(number: u8) -> Option<Proto> {
        match number {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }

    /// The lowercase name: `"tcp"` or `"udp"` (what [`Display`](fmt::Display)
    /// writes and [`FromStr`] reads).
    pub const fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not `tcp` or `udp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseProtoError(String);

impl fmt::Display for ParseProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown protocol {:?}: use \"tcp\" or \"udp\" (lowercase)",
            self.0
        )
    }
}

impl std::error::Error for ParseProtoError {}

impl FromStr for Proto {
    type Err = ParseProtoError;

    /// Parses `"tcp"` or `"udp"` (lowercase only, as written by `Display`).
    fn from_str(s: &str) -> Result<Proto, ParseProtoError> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(ParseProtoError(s.to_owned())),
        }
    }
}

/// A virtual IP service: destination address, port and protocol. Port 0
/// with [`VipFlags::PORT_AGNOSTIC`] matches every port.
///
/// Ordered by address, then port, then protocol. Displayed as
/// `tcp:192.0.2.10:80` or `udp:[2001:db8::1]:443`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Vip {
    /// Destination address.
    pub addr: IpAddr,
    /// Destination port (0 for a port-agnostic VIP).
    pub port: u16,
    /// Protocol.
    pub proto: Proto,
}

impl Vip {
    /// A VIP.
    pub const fn new(addr: IpAddr, port: u16, proto: Proto) -> Vip {
        Vip { addr, port, proto }
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{}:{a}:{}", self.proto, self.port),
            IpAddr::V6(a) => write!(f, "{}:[{a}]:{}", self.proto, self.port),
        }
    }
}

/// Per-VIP features: the `FLOWPIN_VIP_*` bits of `flowpin_lb.h` a control
/// plane may set. Combine with `|`; read with [`contains`](Self::contains)
/// or the named accessors ([`server_id`](Self::server_id), ...).
///
/// ```
/// use flowpin_bpf_abi::vip::VipFlags;
/// let f = VipFlags::PORT_AGNOSTIC | VipFlags::QUIC;
/// assert!(f.port_agnostic() && f.quic() && !f.server_id());
/// assert_eq!(f.to_string(), "port_agnostic|quic");
/// assert_eq!(VipFlags::from_bits(f.bits()), Some(f));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(from = "serde_repr::NamedFlags", into = "serde_repr::NamedFlags")
)]
pub struct VipFlags(u32);

impl VipFlags {
    /// No flags.
    pub const NONE: VipFlags = VipFlags(0);
    /// Match every destination port (the VIP's port must be 0).
    pub const PORT_AGNOSTIC: VipFlags = VipFlags(lb::VIP_PORT_AGNOSTIC);
    /// UDP only: no connection table, Maglev only.
    pub const SKIP_LRU_UDP: VipFlags = VipFlags(lb::VIP_SKIP_LRU_UDP);
    /// TCP only: route by the server_id TCP option.
    pub const SERVER_ID: VipFlags = VipFlags(lb::VIP_SERVER_ID);
    /// UDP only: QUIC, short-header packets routed by the server_id in the DCID.
    pub const QUIC: VipFlags = VipFlags(lb::VIP_QUIC);
    /// Every flag above.
    pub const ALL: VipFlags =
        VipFlags(lb::VIP_PORT_AGNOSTIC | lb::VIP_SKIP_LRU_UDP | lb::VIP_SERVER_ID | lb::VIP_QUIC);

    /// The raw bits, as the `vips` map stores them.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The flags of raw bits; `None` if a bit is not one of the flags above
    /// (e.g. the `FLOWPIN_VIP_ICMP_ECHO` bit of an address's ICMP entry,
    /// which the load balancer manages itself).
    pub const fn from_bits(bits: u32) -> Option<VipFlags> {
        if bits & !Self::ALL.0 == 0 {
            Some(VipFlags(bits))
        } else {
            None
        }
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: VipFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// These flags with `flag` set (`on`) or cleared.
    #[must_use]
    pub const fn with(self, flag: VipFlags, on: bool) -> VipFlags {
        if on {
            VipFlags(self.0 | flag.0)
        } else {
            VipFlags(self.0 & !flag.0)
        }
    }

    /// Sets (`on`) or clears `flag`.
    pub fn set(&mut self, flag: VipFlags, on: bool) {
        *self = self.with(flag, on);
    }

    /// [`PORT_AGNOSTIC`](Self::PORT_AGNOSTIC) is set.
    pub const fn port_agnostic(self) -> bool {
        self.contains(Self::PORT_AGNOSTIC)
    }

    /// [`SKIP_LRU_UDP`](Self::SKIP_LRU_UDP) is set.
    pub const fn skip_lru_udp(self) -> bool {
        self.contains(Self::SKIP_LRU_UDP)
    }

    /// [`SERVER_ID`](Self::SERVER_ID) is set.
    pub const fn server_id(self) -> bool {
        self.contains(Self::SERVER_ID)
    }

    /// [`QUIC`](Self::QUIC) is set.
    pub const fn quic(self) -> bool {
        self.contains(Self::QUIC)
    }

    /// `(name, flag)` of every flag, in bit order.
    const NAMED: [(&'static str, VipFlags); 4] = [
        ("port_agnostic", VipFlags::PORT_AGNOSTIC),
        ("skip_lru_udp", VipFlags::SKIP_LRU_UDP),
        ("server_id", VipFlags::SERVER_ID),
        ("quic", VipFlags::QUIC),
    ];
}

impl std::ops::BitOr for VipFlags {
    type Output = VipFlags;
    fn bitor(self, rhs: VipFlags) -> VipFlags {
        VipFlags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for VipFlags {
    fn bitor_assign(&mut self, rhs: VipFlags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for VipFlags {
    /// The set flags' names joined by `|` (`none` when empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for (name, flag) in Self::NAMED {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(feature = "serde")]
mod serde_repr {
    use super::VipFlags;

    /// The JSON form: one bool per flag, absent = false, unknown names
    /// refused (the registry's stored format).
    #[derive(serde::Serialize, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    #[derive(Default)]
    pub(super) struct NamedFlags {
        port_agnostic: bool,
        skip_lru_udp: bool,
        server_id: bool,
        quic: bool,
    }

    impl From<NamedFlags> for VipFlags {
        fn from(n: NamedFlags) -> VipFlags {
            VipFlags::NONE
                .with(VipFlags::PORT_AGNOSTIC, n.port_agnostic)
                .with(VipFlags::SKIP_LRU_UDP, n.skip_lru_udp)
                .with(VipFlags::SERVER_ID, n.server_id)
                .with(VipFlags::QUIC, n.quic)
        }
    }

    impl From<VipFlags> for NamedFlags {
        fn from(f: VipFlags) -> NamedFlags {
            NamedFlags {
                port_agnostic: f.port_agnostic(),
                skip_lru_udp: f.skip_lru_udp(),
                server_id: f.server_id(),
                quic: f.quic(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_numbers_and_names_round_trip() {
        for p in [Proto::Tcp, Proto::Udp] {
            assert_eq!(Proto::from_number(p.number()), Some(p));
            assert_eq!(p.to_string().parse::<Proto>(), Ok(p));
        }
        assert_eq!(Proto::Tcp.number(), 6);
        assert_eq!(Proto::Udp.number(), 17);
        assert_eq!(Proto::from_number(1), None);
        let err = "TCP".parse::<Proto>().expect_err("uppercase refused");
        assert!(err.to_string().contains("\"TCP\""), "{err}");
    }

    #[test]
    fn vips_display_and_order_by_address_port_protocol() {
        let a = Vip::new("192.0.2.10".parse().expect("ip"), 80, Proto::Tcp);
        let b = Vip::new("2001:db8::1".parse().expect("ip"), 443, Proto::Udp);
        assert_eq!(a.to_string(), "tcp:192.0.2.10:80");
        assert_eq!(b.to_string(), "udp:[2001:db8::1]:443");
        let c = Vip::new(a.addr, 80, Proto::Udp);
        let d = Vip::new(a.addr, 81, Proto::Tcp);
        let mut v = vec![b, d, c, a];
        v.sort();
        assert_eq!(v, vec![a, c, d, b]);
    }

    #[test]
    fn flags_are_the_header_bits_and_refuse_others() {
        assert_eq!(VipFlags::SERVER_ID.bits(), lb::VIP_SERVER_ID);
        let f = VipFlags::NONE.with(VipFlags::SERVER_ID, true);
        assert!(f.server_id() && !f.quic() && !f.port_agnostic() && !f.skip_lru_udp());
        assert_eq!(f.with(VipFlags::SERVER_ID, false), VipFlags::NONE);
        assert_eq!(VipFlags::from_bits(lb::VIP_ICMP_ECHO), None);
        assert_eq!(
            VipFlags::from_bits(VipFlags::ALL.bits()),
            Some(VipFlags::ALL)
        );
        assert_eq!(VipFlags::NONE.to_string(), "none");
        assert_eq!(
            VipFlags::ALL.to_string(),
            "port_agnostic|skip_lru_udp|server_id|quic"
        );
        let mut g = VipFlags::QUIC;
        g |= VipFlags::PORT_AGNOSTIC;
        g.set(VipFlags::QUIC, false);
        assert_eq!(g, VipFlags::PORT_AGNOSTIC);
    }
}

#[cfg(all(test, feature = "serde"))]
mod serde_tests {
    use super::*;

    #[test]
    fn the_json_forms_are_the_registry_format() {
        let v = Vip::new("10.0.0.1".parse().expect("ip"), 80, Proto::Tcp);
        let j = serde_json::to_string(&v).expect("json");
        assert_eq!(j, r#"{"addr":"10.0.0.1","port":80,"proto":"tcp"}"#);
        assert_eq!(serde_json::from_str::<Vip>(&j).expect("parse"), v);
        let f = VipFlags::SERVER_ID;
        let j = serde_json::to_string(&f).expect("json");
        assert_eq!(
            j,
            r#"{"port_agnostic":false,"skip_lru_udp":false,"server_id":true,"quic":false}"#
        );
        assert_eq!(serde_json::from_str::<VipFlags>(&j).expect("parse"), f);
        // Absent fields are false; unknown ones are refused.
        let q: VipFlags = serde_json::from_str(r#"{"quic":true}"#).expect("parse");
        assert_eq!(q, VipFlags::QUIC);
        assert!(serde_json::from_str::<VipFlags>(r#"{"icmp":true}"#).is_err());
        assert!(serde_json::from_str::<Proto>(r#""TCP""#).is_err());
    }
}
