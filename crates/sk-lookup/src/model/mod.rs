//! The control logic, sans IO: bindings, labels and registered sockets as
//! plain data, and every change checked and turned into the map writes that
//! make it, without a syscall. [`Table::lookup`] is the Rust twin of the
//! program's decision, for tests.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU16;
use std::str::FromStr;

use flowpin_bpf_abi::sk_lookup::{
    self as abi, FAMILY_V4, FAMILY_V6, KEY_HEADER_BITS, LABEL_MAX, MAX_LABELS, PORT_ANY,
    SLOTS_PER_LABEL, SLOT_TCP, SLOT_UDP,
};

use crate::Error;

/// Transport protocol of a binding or a socket: TCP bindings steer
/// connection requests (SYNs) to a listener, UDP bindings steer datagrams to
/// a bound socket. The suite's one `Proto` (`flowpin_bpf_abi::vip::Proto`).
pub use flowpin_bpf_abi::vip::Proto;

/// The socket-array slot of a protocol within a label's slots.
fn slot_of(protocol: Proto) -> u32 {
    match protocol {
        Proto::Tcp => SLOT_TCP,
        Proto::Udp => SLOT_UDP,
    }
}

/// IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    fn byte(self) -> u8 {
        match self {
            Family::V4 => FAMILY_V4,
            Family::V6 => FAMILY_V6,
        }
    }
}

/// An address prefix with no host bits set, e.g. `10.0.0.0/24`. An
/// IPv4-mapped IPv6 prefix (`::ffff:10.0.0.0/120`) is the IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// `addr/len`; host bits set, or `len` past the address, is an error.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, Error> {
        let (addr, len) = match addr {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && len >= 96 => (
                IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED)),
                len - 96,
            ),
            a => (a, len),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(Error::PrefixLength { addr, len, max });
        }
        let bits = match addr {
            IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
            IpAddr::V6(a) => u128::from(a),
        };
        // Host bits of the 128-bit form: none for a /128 (a shift by 128
        // would overflow).
        let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        let host = if addr.is_ipv4() {
            host & (u128::MAX << 96)
        } else {
            host
        };
        if bits & host != 0 {
            return Err(Error::HostBits { addr, len });
        }
        Ok(Prefix { addr, len })
    }

    /// A single address (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => Prefix {
                addr: IpAddr::V4(a),
                len: 32,
            },
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Prefix {
                    addr: IpAddr::V4(v4),
                    len: 32,
                },
                None => Prefix {
                    addr: IpAddr::V6(a),
                    len: 128,
                },
            },
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is `0.0.0.0/0` or `::/0`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The family.
    pub fn family(&self) -> Family {
        if self.addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// Whether `ip` (of the same family; IPv4-mapped counts as IPv4) is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            a => a,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                self.len == 0 || (u32::from(n) ^ u32::from(a)) >> (32 - u32::from(self.len)) == 0
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                self.len == 0 || (u128::from(n) ^ u128::from(a)) >> (128 - u32::from(self.len)) == 0
            }
            _ => false,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = Error;
    /// `10.0.0.0/24`, `2001:db8::/32`, or a bare address (a host prefix).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Parse(format!("{s:?} is not an address prefix like 10.0.0.0/24"));
        match s.split_once('/') {
            Some((a, l)) => {
                Prefix::new(a.parse().map_err(|_| bad())?, l.parse().map_err(|_| bad())?)
            }
            None => Ok(Prefix::host(s.parse().map_err(|_| bad())?)),
        }
    }
}

/// The local port a binding matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Port {
    /// Every port.
    Any,
    /// One port.
    Port(NonZeroU16),
}

impl Port {
    /// One port; port 0 is an error (use [`Port::Any`]).
    pub fn new(port: u16) -> Result<Self, Error> {
        NonZeroU16::new(port)
            .map(Port::Port)
            .ok_or_else(|| Error::Parse("port 0: use Port::Any for every port".into()))
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Any => f.write_str("*"),
            Port::Port(p) => write!(f, "{p}"),
        }
    }
}

/// A binding: packets of `protocol` to an address in `prefix` and to `port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binding {
    /// Proto.
    pub protocol: Proto,
    /// Local address prefix.
    pub prefix: Prefix,
    /// Local port or any.
    pub port: Port,
}

impl Binding {
    /// A binding.
    pub fn new(protocol: Proto, prefix: Prefix, port: Port) -> Self {
        Binding {
            protocol,
            prefix,
            port,
        }
    }

    /// The trie key (see the key scheme in `<flowpin/sk_lookup.h>`).
    pub fn key(&self) -> abi::Key {
        let mut k = abi::Key {
            prefixlen: KEY_HEADER_BITS + u32::from(self.prefix.len),
            protocol: self.protocol.number(),
            family: self.prefix.family().byte(),
            port: match self.port {
                Port::Any => PORT_ANY,
                Port::Port(p) => p.get().to_be(),
            },
            addr: [0; 16],
        };
        match self.prefix.addr {
            IpAddr::V4(a) => k.addr[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => k.addr = a.octets(),
        }
        k
    }

    /// The binding a trie key holds, if it is one flowpin writes.
    pub fn from_key(k: &abi::Key) -> Option<Self> {
        let protocol = Proto::from_number(k.protocol)?;
        let len = u8::try_from(k.prefixlen.checked_sub(KEY_HEADER_BITS)?).ok()?;
        let addr = match k.family {
            FAMILY_V4 => IpAddr::V4(Ipv4Addr::new(k.addr[0], k.addr[1], k.addr[2], k.addr[3])),
            FAMILY_V6 => IpAddr::V6(Ipv6Addr::from(k.addr)),
            _ => return None,
        };
        let port = match NonZeroU16::new(u16::from_be(k.port)) {
            None => Port::Any,
            Some(p) => Port::Port(p),
        };
        Some(Binding {
            protocol,
            prefix: Prefix::new(addr, len).ok()?,
            port,
        })
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} port {}", self.protocol, self.prefix, self.port)
    }
}

/// A label: the name of a destination (1 to 32 bytes, no NUL).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(String);

impl Label {
    /// Checks the name.
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        if name.is_empty() || name.len() > LABEL_MAX || name.contains('\0') {
            return Err(Error::LabelName(name));
        }
        Ok(Label(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the control logic needs to know of a socket to register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketFacts {
    /// Its protocol, `None` if neither TCP nor UDP.
    pub protocol: Option<Proto>,
    /// Its family, `None` if neither IPv4 nor IPv6.
    pub family: Option<Family>,
    /// IPv6 socket with `IPV6_V6ONLY`.
    pub v6only: bool,
    /// Bound to a local port.
    pub bound: bool,
    /// Connected to a peer.
    pub connected: bool,
    /// TCP: listening.
    pub listening: bool,
}

/// A registered socket as the maps know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// Its family.
    pub family: Family,
    /// IPv6 only.
    pub v6only: bool,
    /// `SO_COOKIE`.
    pub cookie: u64,
}

impl Registered {
    fn serves(&self, f: Family) -> bool {
        match (self.family, f) {
            (Family::V4, Family::V4) | (Family::V6, Family::V6) => true,
            (Family::V6, Family::V4) => !self.v6only,
            (Family::V4, Family::V6) => false,
        }
    }
}

/// The whole control state: what the maps hold, as plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Label → id.
    pub labels: BTreeMap<Label, u32>,
    /// Binding → label.
    pub bindings: BTreeMap<Binding, Label>,
    /// (label id, protocol) → registered socket.
    pub sockets: BTreeMap<(u32, Proto), Registered>,
    /// Capacity of the bindings trie.
    pub max_bindings: u32,
}

/// Map writes that make a change, in the order to apply them.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Labels to create (name, id); their stats are reset first.
    pub new_labels: Vec<(Label, u32)>,
    /// Bindings to insert.
    pub insert: Vec<(abi::Key, abi::Binding)>,
    /// Bindings to delete.
    pub delete: Vec<abi::Key>,
    /// Destination indexes to clear (sockets of removed labels).
    pub clear_destinations: Vec<u32>,
    /// Labels to delete, last.
    pub delete_labels: Vec<Label>,
}

/// Socket-map index of `label_id`'s socket for `protocol`.
pub fn destination_index(label_id: u32, protocol: Proto) -> u32 {
    label_id * SLOTS_PER_LABEL + slot_of(protocol)
}

impl Table {
    /// An empty table for a trie of `max_bindings`.
    pub fn new(max_bindings: u32) -> Self {
        Table {
            max_bindings,
            ..Table::default()
        }
    }

    /// The map key of every binding.
    pub fn keys(&self) -> Vec<abi::Key> {
        self.bindings.keys().map(Binding::key).collect()
    }

    /// Checks new bindings and plans their writes. Any bad entry refuses the
    /// whole call. Labels are created as needed.
    pub fn plan_bind(&self, new: &[(Binding, Label)]) -> Result<Plan, Error> {
        let mut plan = Plan::default();
        let mut seen = BTreeSet::new();
        let mut ids: BTreeMap<Label, u32> = self.labels.clone();
        let mut used: BTreeSet<u32> = self.labels.values().copied().collect();
        let total = self.bindings.len() + new.len();
        if total > self.max_bindings as usize {
            return Err(Error::TooManyBindings {
                have: self.bindings.len(),
                adding: new.len(),
                max: self.max_bindings as usize,
            });
        }
        for (b, label) in new {
            if let Some(l) = self.bindings.get(b) {
                return Err(Error::DuplicateBinding {
                    binding: *b,
                    label: l.clone(),
                });
            }
            if !seen.insert(*b) {
                return Err(Error::DuplicateBinding {
                    binding: *b,
                    label: label.clone(),
                });
            }
            let id = match ids.get(label) {
                Some(id) => *id,
                None => {
                    let id = (0..MAX_LABELS)
                        .find(|i| !used.contains(i))
                        .ok_or(Error::TooManyLabels { max: MAX_LABELS })?;
                    used.insert(id);
                    ids.insert(label.clone(), id);
                    plan.new_labels.push((label.clone(), id));
                    id
                }
            };
            if let Some(r) = self.sockets.get(&(id, b.protocol)) {
                if !r.serves(b.prefix.family()) {
                    return Err(Error::WrongFamily {
                        label: label.clone(),
                        why: format!(
                            "its registered {} socket is {} and cannot receive {} traffic of {b}",
                            b.protocol,
                            family_desc(r.family, r.v6only),
                            fam(b.prefix.family())
                        ),
                    });
                }
            }
            plan.insert.push((
                b.key(),
                abi::Binding {
                    label: id,
                    addr_bits: u32::from(b.prefix.len),
                },
            ));
        }
        Ok(plan)
    }

    /// Plans the removal of bindings. A label left without a binding is
    /// removed with its registered sockets.
    pub fn plan_unbind(&self, old: &[Binding]) -> Result<Plan, Error> {
        let mut plan = Plan::default();
        let mut left: BTreeMap<&Label, usize> = BTreeMap::new();
        for l in self.bindings.values() {
            *left.entry(l).or_default() += 1;
        }
        let mut seen = BTreeSet::new();
        for b in old {
            let l = self.bindings.get(b).ok_or(Error::UnknownBinding(*b))?;
            if !seen.insert(*b) {
                return Err(Error::UnknownBinding(*b));
            }
            plan.delete.push(b.key());
            let n = left.get_mut(l).ok_or(Error::UnknownBinding(*b))?;
            *n -= 1;
            if *n == 0 {
                let id = self
                    .labels
                    .get(l)
                    .copied()
                    .ok_or_else(|| Error::UnknownLabel(l.clone()))?;
                plan.clear_destinations
                    .push(destination_index(id, Proto::Tcp));
                plan.clear_destinations
                    .push(destination_index(id, Proto::Udp));
                plan.delete_labels.push(l.clone());
            }
        }
        Ok(plan)
    }

    /// Checks a socket for `label` and returns its socket-map index.
    pub fn check_register(&self, label: &Label, s: &SocketFacts) -> Result<u32, Error> {
        let id = *self
            .labels
            .get(label)
            .ok_or_else(|| Error::UnknownLabel(label.clone()))?;
        let protocol = s.protocol.ok_or(Error::WrongProtocol {
            label: label.clone(),
            why: "the socket is neither a TCP (SOCK_STREAM) nor a UDP (SOCK_DGRAM) socket".into(),
        })?;
        let family = s.family.ok_or(Error::WrongFamily {
            label: label.clone(),
            why: "the socket is neither AF_INET nor AF_INET6".into(),
        })?;
        let mine: Vec<&Binding> = self
            .bindings
            .iter()
            .filter(|(_, l)| *l == label)
            .map(|(b, _)| b)
            .collect();
        if !mine.iter().any(|b| b.protocol == protocol) {
            return Err(Error::WrongProtocol {
                label: label.clone(),
                why: format!("the socket is {protocol} but every binding of the label is for another protocol"),
            });
        }
        let r = Registered {
            family,
            v6only: s.v6only,
            cookie: 0,
        };
        if let Some(b) = mine
            .iter()
            .find(|b| b.protocol == protocol && !r.serves(b.prefix.family()))
        {
            return Err(Error::WrongFamily {
                label: label.clone(),
                why: format!(
                    "the socket is {} and cannot receive the {} traffic of binding {b}",
                    family_desc(family, s.v6only),
                    fam(b.prefix.family())
                ),
            });
        }
        if !s.bound {
            return Err(Error::Unbound);
        }
        if s.connected {
            return Err(Error::Connected);
        }
        if protocol == Proto::Tcp && !s.listening {
            return Err(Error::NotListening);
        }
        Ok(destination_index(id, protocol))
    }

    /// The label the program picks for a packet (its Rust twin): the longest
    /// prefix, then a specific port over any port.
    pub fn lookup(&self, protocol: Proto, ip: IpAddr, port: u16) -> Option<&Label> {
        self.bindings
            .iter()
            .filter(|(b, _)| {
                b.protocol == protocol
                    && b.prefix.contains(ip)
                    && b.prefix.family() == family_of(ip)
                    && (b.port == Port::Any
                        || NonZeroU16::new(port).is_some_and(|p| b.port == Port::Port(p)))
            })
            .max_by_key(|(b, _)| (b.prefix.len, b.port != Port::Any))
            .map(|(_, l)| l)
    }
}

fn family_of(ip: IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

fn fam(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

fn family_desc(f: Family, v6only: bool) -> &'static str {
    match (f, v6only) {
        (Family::V4, _) => "IPv4",
        (Family::V6, true) => "IPv6-only",
        (Family::V6, false) => "dual-stack IPv6",
    }
}

#[cfg(test)]
mod tests;
