//! Privileged tests of pinned `xdp_decap` and `sockops_server_id`: pin,
//! drop every handle of the process, reopen from the pins, upgrade in
//! place through the pinned link, refuse an incompatible layout, remove
//! every pin. The sock_ops test keeps a live connection across the upgrade:
//! the client keeps echoing its server_id (its socket storage survived).
//!
//! As root these never skip; as another user they skip with one loud line.
#![allow(clippy::unwrap_used)] // tests may unwrap (clippy.toml covers #[test] fns only)

mod sockops_support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flowpin_bpf_progs::link::Link;
use flowpin_bpf_progs::pin::prog_id;
use flowpin_bpf_progs::sockops_server_id::{
    Role, ServerIdOps, ServerIdOpsConfig, ServerIdOpsError, SockopsLink,
};
use flowpin_bpf_progs::xdp_decap::{
    XdpDecap, XdpDecapConfig, XdpDecapError, XdpLink, XdpTarget, XdpVerdict,
};
use flowpin_tcp_opt::ServerId;
use flowpin_testing::{require_root, unique_name, NetNs};
use libbpf_rs::{MapCore, MapFlags};
use sockops_support::{Fake, Pair};

/// Removes a pin directory on every exit path.
struct PinDir(PathBuf);
impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = XdpDecap::unpin(&self.0);
    }
}

fn pin_dir(tag: &str) -> PinDir {
    PinDir(PathBuf::from("/sys/fs/bpf").join(unique_name(tag)))
}

fn assert_0600(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let mode = e.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", e.path().display());
    }
}

fn ipip(dst: Ipv4Addr) -> Vec<u8> {
    let inner =
        etherparse::PacketBuilder::ipv4([10, 9, 0, 1], [192, 0, 2, 10], 63).tcp(40000, 80, 1, 1000);
    let mut l3 = Vec::new();
    inner.write(&mut l3, b"x").unwrap();
    let outer = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(
        [172, 16, 0, 1],
        dst.octets(),
        64,
    );
    let mut v = Vec::new();
    outer.write(&mut v, etherparse::IpNumber(4), &l3).unwrap();
    v
}

#[test]
fn privileged_pinned_decap_reopens_and_upgrades() {
    if !require_root("privileged_pinned_decap_reopens_and_upgrades") {
        return;
    }
    let ns = NetNs::new("dpin").unwrap();
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])
        .unwrap();
    ns.ip(&["link", "set", "d0", "up"]).unwrap();
    let dir = pin_dir("decpin");
    let tun: Ipv4Addr = "10.1.0.7".parse().unwrap();
    {
        let d = XdpDecap::load(XdpDecapConfig::default().max_tunnel_addrs(8)).unwrap();
        d.add_tunnel_addr(tun.into()).unwrap();
        let mut link = d
            .attach(XdpTarget::ifname_in_netns("d0", ns.path()))
            .unwrap();
        d.pin(&dir.0).unwrap();
        link.pin(dir.0.join("link")).unwrap();
        assert!(matches!(d.pin(&dir.0), Err(XdpDecapError::Kernel(e)) if e.is(17)));
    } // every handle of this process dropped: the pins hold everything
    assert_0600(&dir.0);
    let link = XdpLink::from_pinned_in_netns(dir.0.join("link"), ns.path()).unwrap();
    let mut d = XdpDecap::open_pinned(&dir.0).unwrap();
    assert_eq!(d.tunnel_addrs().unwrap(), vec![IpAddr::from(tun)]);
    assert_eq!(link.program_id().unwrap(), prog_id(d.program_fd()).unwrap());
    let before = d.stats().unwrap().decap_ipip;
    assert_eq!(d.test_run(&ipip(tun)).unwrap().verdict, XdpVerdict::Pass);
    let old_id = link.program_id().unwrap();
    d.upgrade(&link).unwrap();
    let new_id = link.program_id().unwrap();
    assert_ne!(old_id, new_id);
    assert_eq!(new_id, prog_id(d.program_fd()).unwrap());
    // The new program uses the same maps: our tunnel address, our counters.
    let r = d.test_run(&ipip(tun)).unwrap();
    assert_eq!(r.verdict, XdpVerdict::Pass);
    assert_eq!(r.packet.len(), ipip(tun).len() - 20, "decapsulated");
    assert_eq!(d.stats().unwrap().decap_ipip, before + 2);
    assert_eq!(
        prog_id(XdpDecap::open_pinned(&dir.0).unwrap().program_fd()).unwrap(),
        new_id,
        "the prog pin follows the upgrade"
    );
    // An incompatible layout is refused.
    let meta = libbpf_rs::MapHandle::from_pinned_path(dir.0.join("meta")).unwrap();
    meta.update(&0u32.to_ne_bytes(), &7u32.to_ne_bytes(), MapFlags::ANY)
        .unwrap();
    let err = XdpDecap::open_pinned(&dir.0).unwrap_err();
    assert!(
        matches!(
            err,
            XdpDecapError::IncompatiblePin {
                found: 7,
                expected: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("XdpDecap::unpin"));
    drop((d, link, meta));
    XdpDecap::unpin(&dir.0).unwrap();
    assert!(!dir.0.exists());
}

/// An upgrade through the handle that pinned (not one reopened from the
/// pins) repins the program too.
#[test]
fn privileged_decap_pinned_then_upgraded_by_the_same_handle_repins() {
    if !require_root("privileged_decap_pinned_then_upgraded_by_the_same_handle_repins") {
        return;
    }
    let ns = NetNs::new("dpup").unwrap();
    ns.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u1"])
        .unwrap();
    ns.ip(&["link", "set", "u0", "up"]).unwrap();
    let dir = pin_dir("decup");
    let mut d = XdpDecap::load(XdpDecapConfig::default().max_tunnel_addrs(8)).unwrap();
    let link = d
        .attach(XdpTarget::ifname_in_netns("u0", ns.path()))
        .unwrap();
    d.pin(&dir.0).unwrap();
    let old_id = link.program_id().unwrap();
    d.upgrade(&link).unwrap();
    let new_id = link.program_id().unwrap();
    assert_ne!(old_id, new_id);
    assert_eq!(
        prog_id(XdpDecap::open_pinned(&dir.0).unwrap().program_fd()).unwrap(),
        new_id,
        "the prog pin follows an upgrade through the handle that pinned"
    );
    drop((d, link));
    XdpDecap::unpin(&dir.0).unwrap();
    assert!(!dir.0.exists());
}

#[test]
fn privileged_pinned_sockops_keeps_a_live_connection_across_an_upgrade() {
    if !require_root("privileged_pinned_sockops_keeps_a_live_connection_across_an_upgrade") {
        return;
    }
    let pair = Pair::new("opin", Fake::None);
    let sid = ServerId::new(4242).unwrap();
    let (srv_dir, cli_dir) = (pin_dir("srvpin"), pin_dir("clipin"));
    let port = 18181;
    {
        let srv = ServerIdOps::load(ServerIdOpsConfig::server(sid).ports(&[port])).unwrap();
        let cli = ServerIdOps::load(ServerIdOpsConfig::client()).unwrap();
        srv.pin(&srv_dir.0).unwrap();
        cli.pin(&cli_dir.0).unwrap();
        srv.attach(pair.cg_srv.path())
            .unwrap()
            .pin(srv_dir.0.join("link"))
            .unwrap();
        cli.attach(pair.cg_cli.path())
            .unwrap()
            .pin(cli_dir.0.join("link"))
            .unwrap();
    }
    assert_0600(&srv_dir.0);
    let listener = pair.listen(port);
    let mut c = pair.connect(port);
    let (mut s, _) = listener.accept().unwrap();
    let mut buf = [0u8; 4];
    c.write_all(b"ping").unwrap();
    s.read_exact(&mut buf).unwrap();

    let mut srv = ServerIdOps::open_pinned(&srv_dir.0).unwrap();
    let mut cli = ServerIdOps::open_pinned(&cli_dir.0).unwrap();
    assert_eq!(srv.config().role, Role::Server(sid));
    assert_eq!(srv.config().ports, vec![port]);
    assert_eq!(cli.config().role, Role::Client);
    let echoed_before = cli.stats().unwrap().client.echoed;
    assert!(echoed_before >= 1, "the client echoed before the upgrade");
    assert!(srv.stats().unwrap().server.written >= 1);

    let srv_link = SockopsLink::from_pinned(srv_dir.0.join("link")).unwrap();
    let cli_link = SockopsLink::from_pinned(cli_dir.0.join("link")).unwrap();
    let (s_old, c_old) = (
        srv_link.program_id().unwrap(),
        cli_link.program_id().unwrap(),
    );
    srv.upgrade(&srv_link).unwrap();
    cli.upgrade(&cli_link).unwrap();
    assert_ne!(srv_link.program_id().unwrap(), s_old);
    assert_ne!(cli_link.program_id().unwrap(), c_old);
    assert_eq!(
        cli_link.program_id().unwrap(),
        prog_id(cli.program_fd()).unwrap()
    );

    // The connection made before the upgrade still echoes the server_id:
    // the new program found the socket's storage in the reused map.
    for _ in 0..5 {
        c.write_all(b"pong").unwrap();
        s.read_exact(&mut buf).unwrap();
    }
    let echoed_after = cli.stats().unwrap().client.echoed;
    assert!(
        echoed_after >= echoed_before + 5,
        "echoed {echoed_before} -> {echoed_after}"
    );
    assert_eq!(cli.stats().unwrap().errors, 0);
    // A new connection gets a stamped SYN-ACK from the new server program.
    let written = srv.stats().unwrap().server.written;
    let _c2 = pair.connect(port);
    let _s2 = listener.accept().unwrap();
    assert_eq!(srv.stats().unwrap().server.written, written + 1);

    // Incompatible layout refused.
    let meta = libbpf_rs::MapHandle::from_pinned_path(srv_dir.0.join("meta")).unwrap();
    let orig = meta
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .unwrap()
        .unwrap();
    let mut bad = orig.clone();
    bad[..4].copy_from_slice(&3u32.to_ne_bytes());
    meta.update(&0u32.to_ne_bytes(), &bad, MapFlags::ANY)
        .unwrap();
    assert!(matches!(
        ServerIdOps::open_pinned(&srv_dir.0),
        Err(ServerIdOpsError::IncompatiblePin { found: 3, .. })
    ));
    drop((srv, cli, srv_link, cli_link, meta));
    ServerIdOps::unpin(&srv_dir.0).unwrap();
    ServerIdOps::unpin(&cli_dir.0).unwrap();
    assert!(!srv_dir.0.exists() && !cli_dir.0.exists());
}
