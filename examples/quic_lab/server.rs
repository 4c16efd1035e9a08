//! A QUIC server process of the lab: one per backend host and release, in
//! the host's namespace and cgroup, serving on the host's reuseport group.
//!
//! The first process of a host (`create`) attaches `xdp_decap`, creates the
//! group (pinned) and serves as generation 1; a release (`join`) is a new
//! process that joins the group, binds its socket, adds it as a new
//! generation, flips it live and retires the old one, which keeps its QUIC
//! connections (the socket id in their CIDs leads to it). Every CID carries
//! the host's server_id (for xdp_lb) and the socket id (for the group). The
//! process prints `ready` once it serves and exits when stdin closes.
//!
//! In the QUIC-LB modes the CIDs are QUIC-LB CIDs of configuration 0 (the
//! socket id ends them) with a 1 s lifetime, so quinn keeps replacing them;
//! the line `rotate` on stdin makes the server issue configuration 1 (the
//! lab sends it once every LB has it, the draft's order), `retire` stops
//! accepting configuration 0's CIDs.

use std::io::{BufRead, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;

use flowpin::bpf::xdp_decap::{XdpDecap, XdpDecapConfig};
use flowpin::quinn::FlowpinCidGenerator;
use flowpin::sk_reuseport::{bind_reuseport, GroupConfig, Proto, ReuseportGroup};
use flowpin::tcp_opt::{CidLayout, ServerId};
use flowpin_testing::enter_netns;

use crate::cid::CidMode;
use crate::{quic, topo, Error, QUIC_PORT};

/// Arguments of `quic_lab --server-child <index> <netns> <cgroup> <pin> <create|join> <mode>`.
pub(crate) struct ServerArgs {
    pub(crate) index: usize,
    pub(crate) netns: PathBuf,
    pub(crate) cgroup: PathBuf,
    pub(crate) pin: PathBuf,
    pub(crate) join: bool,
    pub(crate) mode: CidMode,
}

pub(crate) fn child_main(a: ServerArgs) -> Result<(), Error> {
    enter_netns(&a.netns, &a.netns.display().to_string())?;
    std::fs::write(
        a.cgroup.join("cgroup.procs"),
        std::process::id().to_string(),
    )?;
    let addr = SocketAddr::from((topo::VIP, QUIC_PORT));
    let mut _decap = None;
    let group = if a.join {
        ReuseportGroup::join(&a.pin)?
    } else {
        let decap = XdpDecap::load(XdpDecapConfig::default())?;
        decap.add_tunnel_addr(topo::backend_addr(a.index).into())?;
        let link = decap.attach(topo::BE_IF)?;
        _decap = Some((decap, link));
        let mut cfg = GroupConfig::new(&a.pin);
        cfg.quic_cid = true;
        cfg.cid_sock_offset = match a.mode {
            CidMode::Flowpin => CidLayout::Flowpin.server_data_offset() as u8,
            // The socket id ends a QUIC-LB CID.
            _ => (a.mode.cid_len() - 2) as u8,
        };
        ReuseportGroup::create(addr, Proto::Udp, cfg)?
    };
    let sock: UdpSocket = bind_reuseport(addr, Proto::Udp)?.into();
    let previous = group.live()?;
    let gen = group.add_generation(&[&sock])?;
    let sid = ServerId::new(topo::server_id(a.index)).ok_or("server_id 0")?;
    let mut builder =
        FlowpinCidGenerator::builder(sid).socket_id(ReuseportGroup::socket_id(gen, 0));
    if let Some(config) = a.mode.config(0) {
        builder = builder
            .quic_lb(config)
            .lifetime(std::time::Duration::from_secs(1));
    }
    let cids = builder.build()?;
    let rt = tokio::runtime::Runtime::new()?;
    let _ep = rt.block_on(async { quic::server(sock, &cids) })?;
    group.activate(gen)?;
    if let Some(old) = previous {
        group.retire(old)?;
    }
    println!("ready");
    std::io::stdout().flush()?;
    for line in std::io::stdin().lock().lines() {
        match line?.trim() {
            "rotate" => {
                if let Some(next) = a.mode.config(1) {
                    cids.rotate_quic_lb(next)?;
                }
            }
            "retire" => {
                cids.retire_quic_lb(0);
            }
            _ => {}
        }
    }
    drop(rt);
    Ok(())
}
