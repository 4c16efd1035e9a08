//! `status` and `stats`: an LB's pinned maps, opened with
//! `XdpLb::inspect_pinned` (under the pin directory's lock for a consistent
//! read; nothing is written). `status --config` also asks the running node
//! for its `/status` (registry revision, connection).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flowpin_bpf_progs::xdp_lb::{LbStats, VipStats, XdpLb, XdpLink};
use flowpin_node::config::LbConfig;
use flowpin_node::lb::LINK_PIN;
use flowpin_node::status::LbStatus;
use flowpin_registry::lb::{ring_digest, vip_name};
use serde::Serialize;

use super::table::Table;
use super::{print_json, CliError, PinnedArgs};

struct Target {
    pin_dir: PathBuf,
    netns: Option<PathBuf>,
    listen: Option<SocketAddr>,
}

fn target(a: &PinnedArgs) -> Result<Target, CliError> {
    if let Some(dir) = &a.pin_dir {
        return Ok(Target {
            pin_dir: dir.clone(),
            netns: None,
            listen: None,
        });
    }
    let path = a
        .config
        .as_deref()
        .ok_or_else(|| CliError::Usage("give --config lb.toml or --pin-dir DIR".into()))?;
    let c = LbConfig::load(path)?;
    let mut listen = c.metrics.listen;
    if listen.port() == 0 {
        // A free port picked at start: the node wrote it to port_file.
        if let Some(port) = c
            .metrics
            .port_file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|p| p.trim().parse().ok())
        {
            listen.set_port(port);
        }
    }
    Ok(Target {
        pin_dir: c.lb.pin_dir,
        netns: c.lb.netns,
        listen: Some(listen),
    })
}

fn open(dir: &Path) -> Result<XdpLb, CliError> {
    if !dir.join("meta").exists() {
        return Err(CliError::Usage(format!(
            "no xdp_lb is pinned at {}: is `flowpin-node lb` running (or was it) with lb.pin_dir = {:?}?",
            dir.display(),
            dir.display().to_string()
        )));
    }
    Ok(XdpLb::inspect_pinned(dir)?)
}

#[derive(Serialize)]
struct VipOut {
    flags: String,
    digest: String,
    /// Connection-ID layout and QUIC-LB codepoints (never keys).
    cid: Option<flowpin_node::status::CidStatus>,
    backends: Vec<BackendOut>,
    packets: u64,
}

#[derive(Serialize)]
struct BackendOut {
    addr: IpAddr,
    weight: u32,
    server_id: Option<u32>,
    draining: bool,
}

#[derive(Serialize)]
struct StatusOut {
    pin_dir: PathBuf,
    /// Whether `<pin_dir>/link` exists (the program stays attached).
    link_pinned: bool,
    /// The attach mode read from the interface, when the link could be read.
    xdp_mode: Option<String>,
    ifindex: Option<u32>,
    ring_size: u32,
    conn_table_shared: bool,
    conn_entries: u64,
    vips: BTreeMap<String, VipOut>,
    /// The running node's `/status`, with `--config`.
    node: Option<LbStatus>,
    /// Why the node's `/status` could not be read.
    node_error: Option<String>,
}

/// GET `/status` of the node at `addr` (a plain HTTP/1.1 request, 2 s).
fn node_status(addr: SocketAddr) -> Result<LbStatus, String> {
    let addr = if addr.ip().is_unspecified() {
        SocketAddr::new(
            if addr.is_ipv4() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
            },
            addr.port(),
        )
    } else {
        addr
    };
    let t = Duration::from_secs(2);
    let body = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, t)?;
        s.set_read_timeout(Some(t))?;
        write!(
            s,
            "GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })()
    .map_err(|e| format!("no node answers at http://{addr}/status: {e}"))?;
    let body = body.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).map_err(|e| format!("http://{addr}/status: not a status ({e})"))
}

/// `status`.
pub(crate) fn status(a: &PinnedArgs) -> Result<(), CliError> {
    let t = target(a)?;
    let lb = open(&t.pin_dir)?;
    let link_pin = t.pin_dir.join(LINK_PIN);
    let link = if link_pin.exists() {
        match &t.netns {
            Some(ns) => XdpLink::from_pinned_in_netns(&link_pin, ns).ok(),
            None => XdpLink::from_pinned(&link_pin).ok(),
        }
    } else {
        None
    };
    let st = lb.state();
    let stats = lb.stats()?;
    let vips = st
        .vips()
        .map(|v| {
            let backends = lb
                .backends(v)
                .unwrap_or_default()
                .iter()
                .map(|b| BackendOut {
                    addr: b.addr,
                    weight: b.weight,
                    server_id: b.server_id.map(u32::from),
                    draining: lb.is_draining(v, b.addr),
                })
                .collect();
            let out = VipOut {
                flags: st.vip_flags(v).unwrap_or_default().to_string(),
                digest: format!("{:016x}", ring_digest(&st.ring_addrs(v))),
                cid: st.vip_cid(v).map(flowpin_node::status::CidStatus::from),
                backends,
                packets: stats.vips.get(v).map_or(0, |s| s.packets),
            };
            (vip_name(v), out)
        })
        .collect();
    let (node, node_error) = match t.listen.map(node_status) {
        Some(Ok(s)) => (Some(s), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let out = StatusOut {
        pin_dir: t.pin_dir.clone(),
        link_pinned: link_pin.exists(),
        xdp_mode: link.as_ref().map(|l| l.mode().to_string()),
        ifindex: link.as_ref().map(XdpLink::ifindex),
        ring_size: lb.config().ring_size,
        conn_table_shared: lb.config().conn_table_shared,
        conn_entries: stats.global.conn_entries,
        vips,
        node,
        node_error,
    };
    if a.json {
        return print_json(&out);
    }
    println!("pin_dir      {}", out.pin_dir.display());
    println!(
        "attached     {}",
        match (&out.xdp_mode, out.link_pinned) {
            (Some(m), _) => format!("yes, {m} mode, ifindex {}", out.ifindex.unwrap_or_default()),
            (None, true) => "link pinned (its interface could not be read)".into(),
            (None, false) => "no link pinned: the program is not attached by a link".into(),
        }
    );
    println!(
        "ring_size    {}   conn_table {}   conn_entries {}",
        out.ring_size,
        if out.conn_table_shared {
            "shared"
        } else {
            "per-cpu"
        },
        out.conn_entries
    );
    match (&out.node, &out.node_error) {
        (Some(n), _) => println!(
            "node         pid {}, registry {}, revision {}, apply errors {}",
            n.pid,
            if n.registry_connected {
                "connected"
            } else {
                "DISCONNECTED"
            },
            n.revision,
            n.apply_errors
        ),
        (None, Some(e)) => println!("node         {e}"),
        (None, None) => {}
    }
    println!();
    let mut table = Table::new(&[
        "VIP", "FLAGS", "CID", "BACKENDS", "DRAINING", "DIGEST", "PACKETS",
    ]);
    for (name, v) in &out.vips {
        let draining: Vec<String> = v
            .backends
            .iter()
            .filter(|b| b.draining)
            .map(|b| b.addr.to_string())
            .collect();
        table.row(vec![
            name.clone(),
            v.flags.clone(),
            v.cid
                .as_ref()
                .map_or_else(|| "-".into(), ToString::to_string),
            v.backends
                .iter()
                .map(|b| b.addr.to_string())
                .collect::<Vec<_>>()
                .join(","),
            if draining.is_empty() {
                "-".into()
            } else {
                draining.join(",")
            },
            v.digest.clone(),
            v.packets.to_string(),
        ]);
    }
    print!("{}", table.render());
    if let Some(n) = out.node.as_ref().filter(|n| !n.health.is_empty()) {
        println!();
        print!("{}", health_table(&n.health));
    }
    Ok(())
}

/// The health part of the node's status: one row per checked backend.
fn health_table(health: &[flowpin_node::status::BackendHealth]) -> String {
    let mut t = Table::new(&[
        "VIP",
        "BACKEND",
        "MINE",
        "FLEET",
        "VERDICTS",
        "LATENCY",
        "FAILURES",
        "DISAGREES",
    ]);
    for h in health {
        let failures: Vec<String> = h.failures.iter().map(|(r, n)| format!("{r}={n}")).collect();
        t.row(vec![
            h.vip.clone(),
            h.backend.to_string(),
            h.state.clone(),
            if h.self_reported_down {
                format!("{} (self-reported down)", h.fleet)
            } else {
                h.fleet.clone()
            },
            h.verdicts.to_string(),
            h.last_latency_us
                .map_or_else(|| "-".into(), |us| format!("{:.1}ms", us as f64 / 1000.0)),
            if failures.is_empty() {
                "-".into()
            } else {
                failures.join(",")
            },
            if h.disagrees { "YES" } else { "no" }.into(),
        ]);
    }
    t.render()
}

fn lb_counters(s: &LbStats) -> BTreeMap<&'static str, u64> {
    BTreeMap::from([
        ("drop_malformed", s.drop_malformed),
        ("drop_unknown_backend", s.drop_unknown_backend),
        ("drop_too_big", s.drop_too_big),
        ("icmp_too_big_sent", s.icmp_too_big_sent),
        ("encap_error", s.encap_error),
        ("icmp_echo_replies", s.icmp_echo_replies),
        ("pass_fragment_no_vip", s.pass_fragment_no_vip),
        ("pass_ext_hdr_limit", s.pass_ext_hdr_limit),
        ("new_flows", s.new_flows),
        ("confirmations", s.confirmations),
        ("probation_evictions", s.probation_evictions),
        ("confirmed_evictions", s.confirmed_evictions),
        ("relocations", s.relocations),
        ("conn_entries", s.conn_entries),
    ])
}

fn vip_counters(s: &VipStats) -> BTreeMap<&'static str, u64> {
    BTreeMap::from([
        ("packets", s.packets),
        ("bytes", s.bytes),
        ("lru_hit", s.lru_hit),
        ("lru_miss", s.lru_miss),
        ("new_flows", s.new_flows),
        ("sid_routed", s.sid_routed),
        ("sid_fallback_unknown", s.sid_fallback_unknown),
        ("sid_fallback_removed", s.sid_fallback_removed),
        ("sid_fallback_zero", s.sid_fallback_zero),
        ("sid_fallback_malformed", s.sid_fallback_malformed),
        ("sid_missing", s.sid_missing),
        ("quic_long_header", s.quic_long_header),
        ("too_big", s.too_big),
        ("unknown_backend", s.unknown_backend),
    ])
}

#[derive(Serialize)]
struct StatsOut {
    global: BTreeMap<&'static str, u64>,
    vips: BTreeMap<String, BTreeMap<&'static str, u64>>,
    backends: BTreeMap<IpAddr, BTreeMap<&'static str, u64>>,
}

/// `stats`.
pub(crate) fn stats(a: &PinnedArgs) -> Result<(), CliError> {
    let t = target(a)?;
    let lb = open(&t.pin_dir)?;
    let s = lb.stats()?;
    let mut backends = BTreeMap::new();
    for v in lb.state().vips() {
        for b in lb.backends(v).unwrap_or_default() {
            if let std::collections::btree_map::Entry::Vacant(e) = backends.entry(b.addr) {
                let bs = lb.backend_stats(b.addr)?;
                e.insert(BTreeMap::from([
                    ("packets", bs.packets),
                    ("bytes", bs.bytes),
                ]));
            }
        }
    }
    let out = StatsOut {
        global: lb_counters(&s.global),
        vips: s
            .vips
            .iter()
            .map(|(v, vs)| (vip_name(v), vip_counters(vs)))
            .collect(),
        backends,
    };
    if a.json {
        return print_json(&out);
    }
    let mut g = Table::new(&["COUNTER", "VALUE"]);
    for (k, v) in &out.global {
        g.row(vec![(*k).into(), v.to_string()]);
    }
    print!("{}", g.render());
    for (name, c) in &out.vips {
        println!("\nVIP {name}");
        let mut t = Table::new(&["COUNTER", "VALUE"]);
        for (k, v) in c {
            t.row(vec![(*k).into(), v.to_string()]);
        }
        print!("{}", t.render());
    }
    if !out.backends.is_empty() {
        println!();
        let mut t = Table::new(&["BACKEND", "PACKETS", "BYTES"]);
        for (addr, c) in &out.backends {
            t.row(vec![
                addr.to_string(),
                c.get("packets").copied().unwrap_or(0).to_string(),
                c.get("bytes").copied().unwrap_or(0).to_string(),
            ]);
        }
        print!("{}", t.render());
    }
    Ok(())
}
