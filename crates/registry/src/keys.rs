//! The key layout: where each kind of entry lives under the cluster prefix.
//!
//! Every key is UTF-8 and in canonical form (addresses as Rust prints them,
//! decimal numbers without leading zeros), so one VIP or backend has exactly
//! one key; a key that parses but is not canonical is rejected.

use std::net::IpAddr;

use flowpin_tcp_opt::ServerId;

use crate::error::Error;
use crate::model::{Proto, Vip};

/// Longest accepted host identity, in bytes (a DNS name's limit).
pub const MAX_HOST_LEN: usize = 253;

/// What a key under the prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// `routing/vips/{proto}/{ip}/{port}`.
    Vip(Vip),
    /// `routing/backends/{proto}/{vip_ip}/{vip_port}/{backend_ip}`.
    Backend(Vip, IpAddr),
    /// `ids/claims/{server_id}`.
    Claim(ServerId),
    /// `ids/hosts/{host}`.
    Host(String),
    /// `routing/health/{proto}/{ip}/{port}`: the VIP's health check.
    HealthCheck(Vip),
    /// `routing/verdicts/{proto}/{vip_ip}/{vip_port}/{backend_ip}/{lb}`: one
    /// LB's verdict on a backend, under that LB's lease.
    Verdict(Vip, IpAddr, String),
    /// `routing/selfhealth/{proto}/{vip_ip}/{vip_port}/{backend_ip}`: the
    /// backend's own report, under its registration's lease.
    SelfHealth(Vip, IpAddr),
}

/// The keys of one cluster: a prefix (ending in `/`) and the layout below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
}

impl KeyLayout {
    /// The layout under `prefix` (e.g. `/flowpin/prod`; a trailing `/` is
    /// added when missing). The prefix must be non-empty, printable ASCII.
    pub fn new(prefix: &str) -> Result<KeyLayout, Error> {
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::BadPrefix {
                prefix: prefix.to_string(),
            });
        }
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(KeyLayout { prefix })
    }

    /// The prefix, ending in `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Prefix of everything a load balancer watches (VIPs and backends).
    pub fn routing_prefix(&self) -> String {
        format!("{}routing/", self.prefix)
    }

    /// Key of a VIP.
    pub fn vip(&self, vip: &Vip) -> String {
        format!("{}routing/vips/{}", self.prefix, vip_segments(vip))
    }

    /// Key of a backend of a VIP.
    pub fn backend(&self, vip: &Vip, backend: IpAddr) -> String {
        format!(
            "{}routing/backends/{}/{backend}",
            self.prefix,
            vip_segments(vip)
        )
    }

    /// Key of a VIP's health check.
    pub fn health_check(&self, vip: &Vip) -> String {
        format!("{}routing/health/{}", self.prefix, vip_segments(vip))
    }

    /// Key of LB `lb`'s verdict on a backend of a VIP.
    pub fn verdict(&self, vip: &Vip, backend: IpAddr, lb: &str) -> String {
        format!(
            "{}routing/verdicts/{}/{backend}/{lb}",
            self.prefix,
            vip_segments(vip)
        )
    }

    /// Key of a backend's own health report for a VIP.
    pub fn self_health(&self, vip: &Vip, backend: IpAddr) -> String {
        format!(
            "{}routing/selfhealth/{}/{backend}",
            self.prefix,
            vip_segments(vip)
        )
    }

    /// Key of a server_id claim.
    pub fn claim(&self, id: ServerId) -> String {
        format!("{}ids/claims/{id}", self.prefix)
    }

    /// Key of a host's server_id binding.
    pub fn host(&self, host: &str) -> String {
        format!("{}ids/hosts/{host}", self.prefix)
    }

    /// What `key` names, or `None` if it is outside the prefix, off the
    /// layout, or not canonical.
    pub fn parse(&self, key: &[u8]) -> Option<KeyKind> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(self.prefix.as_str())?;
        let parts: Vec<&str> = rest.split('/').collect();
        let kind = match parts.as_slice() {
            ["routing", "vips", proto, ip, port] => KeyKind::Vip(parse_vip(proto, ip, port)?),
            ["routing", "backends", proto, ip, port, backend] => {
                KeyKind::Backend(parse_vip(proto, ip, port)?, parse_ip(backend)?)
            }
            ["routing", "health", proto, ip, port] => {
                KeyKind::HealthCheck(parse_vip(proto, ip, port)?)
            }
            ["routing", "verdicts", proto, ip, port, backend, lb] if valid_host(lb) => {
                KeyKind::Verdict(
                    parse_vip(proto, ip, port)?,
                    parse_ip(backend)?,
                    (*lb).to_string(),
                )
            }
            ["routing", "selfhealth", proto, ip, port, backend] => {
                KeyKind::SelfHealth(parse_vip(proto, ip, port)?, parse_ip(backend)?)
            }
            ["ids", "claims", id] => KeyKind::Claim(ServerId::new(parse_canonical_u32(id)?)?),
            ["ids", "hosts", host] if valid_host(host) => KeyKind::Host((*host).to_string()),
            _ => return None,
        };
        Some(kind)
    }
}

/// Whether `host` is a usable host identity: 1..=253 bytes of printable ASCII
/// without `/`.
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

fn vip_segments(vip: &Vip) -> String {
    format!("{}/{}/{}", vip.proto.as_str(), vip.addr, vip.port)
}

fn parse_vip(proto: &str, ip: &str, port: &str) -> Option<Vip> {
    let proto: Proto = proto.parse().ok()?;
    let addr = parse_ip(ip)?;
    let port = u16::try_from(parse_canonical_u32(port)?).ok()?;
    Some(Vip::new(addr, port, proto))
}

/// An address in the form Rust prints it (so one address has one key).
fn parse_ip(s: &str) -> Option<IpAddr> {
    let ip: IpAddr = s.parse().ok()?;
    (ip.to_string() == s).then_some(ip)
}

/// A decimal without sign or leading zeros.
fn parse_canonical_u32(s: &str) -> Option<u32> {
    let n: u32 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn layout() -> KeyLayout {
        KeyLayout::new("/flowpin/test").expect("valid prefix")
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ]
    }

    fn any_vip() -> impl Strategy<Value = Vip> {
        (
            any_ip(),
            any::<u16>(),
            prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)],
        )
            .prop_map(|(a, p, proto)| Vip::new(a, p, proto))
    }

    #[test]
    fn prefix_gets_a_trailing_slash_and_bad_prefixes_are_refused() {
        assert_eq!(layout().prefix(), "/flowpin/test/");
        assert_eq!(KeyLayout::new("/a/").expect("valid").prefix(), "/a/");
        assert!(KeyLayout::new("").is_err());
        assert!(KeyLayout::new("/with space").is_err());
        assert!(KeyLayout::new("/tab\t").is_err());
    }

    #[test]
    fn documented_examples() {
        let l = layout();
        let vip = Vip::new("10.0.0.1".parse().expect("ip"), 80, Proto::Tcp);
        assert_eq!(l.vip(&vip), "/flowpin/test/routing/vips/tcp/10.0.0.1/80");
        assert_eq!(
            l.backend(&vip, "2001:db8::2".parse().expect("ip")),
            "/flowpin/test/routing/backends/tcp/10.0.0.1/80/2001:db8::2"
        );
        let id = ServerId::new(7).expect("non-zero");
        assert_eq!(l.claim(id), "/flowpin/test/ids/claims/7");
        assert_eq!(l.host("web-1"), "/flowpin/test/ids/hosts/web-1");
    }

    #[test]
    fn non_canonical_and_foreign_keys_do_not_parse() {
        let l = layout();
        for key in [
            "/flowpin/test/routing/vips/tcp/010.0.0.1/80",
            "/flowpin/test/routing/vips/tcp/10.0.0.1/080",
            "/flowpin/test/routing/vips/tcp/10.0.0.1/65536",
            "/flowpin/test/routing/vips/sctp/10.0.0.1/80",
            "/flowpin/test/routing/vips/tcp/2001:db8:0:0::1/80",
            "/flowpin/test/routing/vips/tcp/10.0.0.1",
            "/flowpin/test/routing/vips/tcp/10.0.0.1/80/extra",
            "/flowpin/test/routing/backends/tcp/10.0.0.1/80/not-an-ip",
            "/flowpin/test/ids/claims/0",
            "/flowpin/test/ids/claims/007",
            "/flowpin/test/ids/claims/4294967296",
            "/flowpin/test/ids/hosts/",
            "/flowpin/other/routing/vips/tcp/10.0.0.1/80",
            "/flowpin/test/unknown",
        ] {
            assert_eq!(l.parse(key.as_bytes()), None, "{key}");
        }
        assert_eq!(l.parse(b"/flowpin/test/routing/vips/tcp/\xff/80"), None);
    }

    proptest! {
        #[test]
        fn vip_and_backend_keys_round_trip(vip in any_vip(), b in any_ip()) {
            let l = layout();
            prop_assert_eq!(l.parse(l.vip(&vip).as_bytes()), Some(KeyKind::Vip(vip)));
            prop_assert_eq!(l.parse(l.backend(&vip, b).as_bytes()), Some(KeyKind::Backend(vip, b)));
        }

        #[test]
        fn health_keys_round_trip(vip in any_vip(), b in any_ip(), lb in "[a-zA-Z0-9.:_-]{1,64}") {
            let l = layout();
            prop_assert_eq!(l.parse(l.health_check(&vip).as_bytes()), Some(KeyKind::HealthCheck(vip)));
            prop_assert_eq!(l.parse(l.verdict(&vip, b, &lb).as_bytes()), Some(KeyKind::Verdict(vip, b, lb.clone())));
            prop_assert_eq!(l.parse(l.self_health(&vip, b).as_bytes()), Some(KeyKind::SelfHealth(vip, b)));
        }

        #[test]
        fn id_and_host_keys_round_trip(id in 1u32.., host in "[a-zA-Z0-9.:_-]{1,64}") {
            let l = layout();
            let id = ServerId::new(id).expect("non-zero");
            prop_assert_eq!(l.parse(l.claim(id).as_bytes()), Some(KeyKind::Claim(id)));
            prop_assert_eq!(l.parse(l.host(&host).as_bytes()), Some(KeyKind::Host(host.clone())));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80),
                              tail in "[a-z0-9./:]{0,40}") {
            let l = layout();
            let _ = l.parse(&bytes);
            let _ = l.parse(format!("/flowpin/test/{tail}").as_bytes());
        }
    }
}
