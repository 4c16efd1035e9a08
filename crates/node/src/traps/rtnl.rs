//! The link facts the deployment checks need, asked of the kernel through
//! rtnetlink (`netlink-packet-route` + `netlink-sys`): one link by name or
//! ifindex, in the socket's own namespace or, for a veth peer elsewhere, in
//! the namespace the kernel names by nsid (`IFLA_TARGET_NETNSID`, the
//! `IFLA_LINK_NETNSID` of our own link); and the nsid of a namespace file
//! (`RTM_GETNSID` with `NETNSA_FD`). Nothing is run inside a namespace the
//! node was not configured with: the kernel answers for the peer.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use flowpin_bpf_progs::netns;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkInfo, LinkMessage, LinkXdp, XdpAttached,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// What the kernel says about one link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LinkFacts {
    /// ifindex (in the link's own namespace).
    pub(crate) index: u32,
    /// Name.
    pub(crate) name: String,
    /// `IFLA_INFO_KIND` is `veth`.
    pub(crate) veth: bool,
    /// `IFLA_LINK`: for a veth, the peer's ifindex (in the peer's namespace).
    pub(crate) link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the peer's namespace as an nsid of the link's
    /// namespace; `None` when the peer is in the same namespace.
    pub(crate) link_netnsid: Option<i32>,
    /// An XDP program is attached (any mode).
    pub(crate) xdp: bool,
    /// The hardware address.
    pub(crate) mac: Option<[u8; 6]>,
    /// `IFLA_STATS64` `tx_dropped` (veth counts failed `XDP_TX` there).
    pub(crate) tx_dropped: u64,
    /// `IFLA_STATS64` `tx_packets`.
    pub(crate) tx_packets: u64,
}

impl LinkFacts {
    fn from_message(m: &LinkMessage) -> LinkFacts {
        let mut f = LinkFacts {
            index: m.header.index,
            ..LinkFacts::default()
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => f.name.clone_from(n),
                LinkAttribute::Link(l) => f.link = Some(*l),
                LinkAttribute::LinkNetNsId(id) => f.link_netnsid = Some(*id),
                LinkAttribute::Address(a) => f.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                LinkAttribute::Stats64(s) => {
                    f.tx_dropped = s.tx_dropped;
                    f.tx_packets = s.tx_packets;
                }
                LinkAttribute::LinkInfo(infos) => {
                    f.veth |= infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                }
                LinkAttribute::Xdp(xs) => {
                    f.xdp |= xs.iter().any(|x| match x {
                        LinkXdp::Attached(a) => !matches!(a, XdpAttached::None),
                        LinkXdp::ProgId(id) => *id != 0,
                        _ => false,
                    });
                }
                _ => {}
            }
        }
        f
    }
}

/// An rtnetlink socket bound in one namespace (the node's: the socket is
/// made there and then used from any thread).
#[derive(Debug)]
pub(crate) struct Rtnl {
    sock: Socket,
    seq: u32,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Rtnl {
    /// A socket in `netns` (a namespace file the node is configured with),
    /// or in the caller's namespace.
    pub(crate) fn open(netns: Option<&Path>) -> io::Result<Rtnl> {
        let make = || -> io::Result<Socket> {
            let mut s = Socket::new(NETLINK_ROUTE)?;
            s.bind_auto()?;
            s.connect(&SocketAddr::new(0, 0))?;
            Ok(s)
        };
        let sock = match netns {
            Some(p) => netns::run_in(p, make).map_err(other)??,
            None => make()?,
        };
        Ok(Rtnl { sock, seq: 0 })
    }

    /// Sends one request and returns the answer with its sequence number
    /// (`None`: the kernel answered `ENODEV`, no such link).
    fn ask(&mut self, msg: RouteNetlinkMessage) -> io::Result<Option<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        packet.header.sequence_number = self.seq;
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut answer = None;
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            let mut off = 0;
            while off < data.len() {
                let m: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&data[off..]).map_err(other)?;
                let len = m.header.length as usize;
                if m.header.sequence_number == self.seq {
                    match m.payload {
                        NetlinkPayload::InnerMessage(r) => answer = Some(r),
                        // The ACK (code None) closes the exchange.
                        NetlinkPayload::Error(e) => {
                            return match e.code.map(|c| c.get().abs()) {
                                None => Ok(answer),
                                Some(c) if c == nix::libc::ENODEV => Ok(None),
                                Some(c) => Err(io::Error::from_raw_os_error(c)),
                            };
                        }
                        NetlinkPayload::Done(_) => return Ok(answer),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
            }
        }
    }

    fn get_link(&mut self, msg: LinkMessage) -> io::Result<Option<LinkFacts>> {
        match self.ask(RouteNetlinkMessage::GetLink(msg))? {
            Some(RouteNetlinkMessage::NewLink(l)) => Ok(Some(LinkFacts::from_message(&l))),
            Some(other_msg) => Err(other(format!(
                "unexpected rtnetlink answer to RTM_GETLINK: {other_msg:?}"
            ))),
            None => Ok(None),
        }
    }

    /// The link named `name` in the socket's namespace.
    pub(crate) fn link_by_name(&mut self, name: &str) -> io::Result<Option<LinkFacts>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(m)
    }

    /// The link with ifindex `index` in the socket's namespace (`nsid`
    /// `None`) or in the namespace that is `nsid` as seen from it.
    pub(crate) fn link_by_index(
        &mut self,
        index: u32,
        nsid: Option<i32>,
    ) -> io::Result<Option<LinkFacts>> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if let Some(id) = nsid {
            // IFLA_TARGET_NETNSID (the crate's name: IfNetnsId).
            m.attributes.push(LinkAttribute::IfNetnsId(id));
        }
        self.get_link(m)
    }

    /// The nsid the socket's namespace gives the namespace file `path`
    /// (`None`: none assigned, so no link of ours points there).
    pub(crate) fn nsid_of(&mut self, path: &Path) -> io::Result<Option<i32>> {
        let f = std::fs::File::open(path)?;
        let fd = u32::try_from(f.as_raw_fd()).map_err(other)?;
        let mut m = NsidMessage::default();
        m.attributes.push(NsidAttribute::Fd(fd));
        match self.ask(RouteNetlinkMessage::GetNsId(m))? {
            Some(RouteNetlinkMessage::NewNsId(a)) => {
                Ok(a.attributes.iter().find_map(|x| match x {
                    NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                    _ => None,
                }))
            }
            Some(other_msg) => Err(other(format!(
                "unexpected rtnetlink answer to RTM_GETNSID: {other_msg:?}"
            ))),
            None => Ok(None),
        }
    }
}
