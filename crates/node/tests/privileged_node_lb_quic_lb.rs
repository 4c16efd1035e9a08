//! Privileged (root): `flowpin-node lb` applies a VIP's QUIC-LB
//! configurations from a real etcd (`LocalEtcd`) into the pinned maps and
//! acknowledges them under its lease only once the maps hold them
//! (issue 22), in a network namespace made for the test.
//!
//! 1. A UDP VIP with two configurations (0: plaintext, 1: encrypted).
//!    The node starts; as soon as its acknowledgement holds both, the pinned
//!    maps (read by the test) hold both; `/status` shows the layout and
//!    codepoints and no key.
//!    Then configuration 2 (encrypted, `"engine":"table"`) is added: the
//!    node's watch on `quic_lb/configs/` applies and acknowledges it within
//!    seconds (the full read runs only every 30 s otherwise), with the table
//!    engine in the maps and `/status`; a value naming an unknown engine is
//!    rejected with its reason and never applied.
//! 2. Configuration 0 is retired: the acknowledgement names its new value.
//! 3. It is removed (`collect_retired_quic_lb`): the maps keep 1 and 2, and
//!    the acknowledgement says so.
//! 4. The node's log never holds the key.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowpin_bpf_progs::xdp_lb::XdpLb;
use flowpin_lb_core::{AesEngine, VipCid};
use flowpin_node::status::LbStatus;
use flowpin_registry::quic_lb::{QuicLbConfigRef, QuicLbConfigSpec, QuicLbEngine};
use flowpin_registry::{BackendSpec, Proto, Registry, ServerId, Vip, VipFlags, VipSpec};
use flowpin_tcp_opt::quic_lb::QuicLbKey;
use flowpin_testing::require_bpf;

mod node_rig;
use node_rig::http_get;
use node_rig::lb::{LbCleanup, LbLab};

/// The draft's test-vector key (never to appear in a log or `/status`).
const KEY_HEX: &str = "8f95f09245765f80256934e50c66207f";

/// The pinned maps' QUIC-LB codepoints of `vip` (read from the kernel).
fn pinned_confs(pin_dir: &Path, vip: &Vip) -> Vec<(u8, u8, u8, bool)> {
    let lb = XdpLb::inspect_pinned(pin_dir).expect("inspect_pinned");
    match lb.state().vip_cid(vip) {
        Some(VipCid::QuicLb(c)) => c
            .iter()
            .map(|c| (c.config_id, c.server_id_len, c.nonce_len, c.key.is_some()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The pinned maps' AES engine per codepoint of `vip` (encrypted ones).
fn pinned_engines(pin_dir: &Path, vip: &Vip) -> Vec<(u8, AesEngine)> {
    let lb = XdpLb::inspect_pinned(pin_dir).expect("inspect_pinned");
    match lb.state().vip_cid(vip) {
        Some(VipCid::QuicLb(c)) => c
            .iter()
            .filter(|c| c.key.is_some())
            .map(|c| (c.config_id, c.engine))
            .collect(),
        _ => Vec::new(),
    }
}

/// Waits until the only LB acknowledgement equals the stored
/// configurations (their current values); returns them.
fn wait_acked(
    rt: &tokio::runtime::Runtime,
    reg: &Registry,
    want_ids: &[u8],
) -> BTreeSet<QuicLbConfigRef> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = rt.block_on(reg.quic_lb_view()).expect("quic_lb view");
        let stored: BTreeSet<_> = view.configs.iter().map(|c| c.at).collect();
        let ids: Vec<u8> = stored.iter().map(|r| r.config_id).collect();
        if ids == want_ids && view.lb_acks.len() == 1 && view.lb_acks[0].status.configs == stored {
            return stored;
        }
        assert!(
            Instant::now() < deadline,
            "no acknowledgement of {want_ids:?} within 20 s: {:?}",
            view.lb_acks
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The test's `[lb]` lines (after the interface, namespace, pins and MACs).
const LB_LINES: &str = "ring_size = 251\nlru_memory_mib = 1\nxdp_mode = \"generic\"";

#[test]
fn privileged_lb_node_applies_and_acknowledges_quic_lb_configs() {
    if !require_bpf("privileged_lb_node_applies_and_acknowledges_quic_lb_configs") {
        return;
    }
    let lab = LbLab::new(["nqlb", "qlb", "qrt", "node-qlb"], LB_LINES);
    let LbLab {
        rt,
        reg,
        dir,
        pin_dir,
        port_file,
        config,
        ..
    } = &lab;
    let log = dir.path().join("node.log");
    let mut cleanup = LbCleanup::new(pin_dir);

    let vip = Vip::new("10.100.0.7".parse().expect("ip"), 443, Proto::Udp);
    let key: QuicLbKey = KEY_HEX.parse().expect("key");
    let host = rt
        .block_on(async {
            reg.put_vip(&VipSpec::new(vip, VipFlags::QUIC)).await?;
            reg.put_quic_lb_config(&vip, 0, &QuicLbConfigSpec::new(4, 6, None))
                .await?;
            reg.put_quic_lb_config(&vip, 1, &QuicLbConfigSpec::new(4, 12, Some(key)))
                .await?;
            let h = reg.register(Duration::from_secs(30)).await?;
            let b: IpAddr = "10.2.1.2".parse().expect("ip");
            h.add_backends(&[(vip, BackendSpec::new(b, 100, ServerId::new(1001)))])
                .await?;
            Ok::<_, flowpin_registry::Error>(h)
        })
        .expect("registry writes");

    // 1. Start: both applied, then acknowledged.
    cleanup.child = Some(
        Command::new(env!("CARGO_BIN_EXE_flowpin-node"))
            .args(["lb", "--config"])
            .arg(config)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .stdout(std::fs::File::create(dir.path().join("out")).expect("out file"))
            .spawn()
            .expect("spawn flowpin-node lb"),
    );
    wait_acked(rt, reg, &[0, 1]);
    // Acknowledged only once the maps hold them.
    assert_eq!(
        pinned_confs(pin_dir, &vip),
        vec![(0, 4, 6, false), (1, 4, 12, true)]
    );
    let port: u16 = std::fs::read_to_string(port_file)
        .expect("port")
        .trim()
        .parse()
        .expect("port number");
    let body = http_get(port, "/status").expect("/status");
    assert!(!body.to_lowercase().contains(KEY_HEX), "key in /status");
    let st: LbStatus = serde_json::from_str(&body).expect("LbStatus");
    let cid = st.vips["10.100.0.7:443/udp"].cid.clone().expect("cid");
    assert_eq!(cid.layout, "quic-lb");
    let shown: Vec<(u8, bool)> = cid
        .quic_lb
        .iter()
        .map(|c| (c.config_id, c.encrypted))
        .collect();
    assert_eq!(shown, vec![(0, false), (1, true)], "{cid:?}");
    assert_eq!(
        cid.to_string(),
        "quic-lb 0:sid4+nonce6,1:sid4+nonce12/enc-ct"
    );
    // Nothing issuable is retiring; both are issuable now.
    let view = rt.block_on(reg.quic_lb_view()).expect("view");
    assert_eq!(view.issuable().len(), 2);

    // 1b. A value with an unknown engine: rejected with its reason, never
    // applied. Then configuration 2 with the table engine, chosen
    // explicitly: applied and acknowledged promptly (the watch).
    let bad_key = format!(
        "{}quic_lb/configs/udp/10.100.0.7/443/3",
        reg.layout().prefix()
    );
    rt.block_on(reg.etcd().put(
        bad_key.as_bytes(),
        format!(r#"{{"server_id_len":4,"nonce_len":12,"key":"{KEY_HEX}","engine":"fast"}}"#),
        None,
    ))
    .expect("put a bad value");
    let view = rt.block_on(reg.quic_lb_view()).expect("view");
    let why = view
        .rejected
        .iter()
        .find(|(k, _)| k.ends_with("/443/3"))
        .map(|(_, why)| why.clone())
        .expect("the unknown engine is rejected");
    assert!(
        why.contains("fast") && why.contains("constant-time") && why.contains("table"),
        "{why}"
    );
    assert!(!why.to_lowercase().contains(KEY_HEX), "key in the reason");
    let t0 = Instant::now();
    rt.block_on(reg.put_quic_lb_config(
        &vip,
        2,
        &QuicLbConfigSpec::new(4, 12, Some(key)).with_engine(QuicLbEngine::Table),
    ))
    .expect("put config 2");
    wait_acked(rt, reg, &[0, 1, 2]);
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "config 2 acknowledged after {took:?}: the watch on quic_lb/configs/ did not wake the node"
    );
    assert_eq!(
        pinned_engines(pin_dir, &vip),
        vec![(1, AesEngine::ConstantTime), (2, AesEngine::Table)]
    );
    let body = http_get(port, "/status").expect("/status");
    let st: LbStatus = serde_json::from_str(&body).expect("LbStatus");
    assert_eq!(
        st.vips["10.100.0.7:443/udp"]
            .cid
            .clone()
            .expect("cid")
            .to_string(),
        "quic-lb 0:sid4+nonce6,1:sid4+nonce12/enc-ct,2:sid4+nonce12/enc-table"
    );
    rt.block_on(reg.etcd().delete(bad_key.as_bytes(), None))
        .expect("delete the bad value");

    // 2. Retire 0: the acknowledgement names its new value.
    assert!(rt
        .block_on(reg.retire_quic_lb_config(&vip, 0))
        .expect("retire"));
    let acked = wait_acked(rt, reg, &[0, 1, 2]);
    let view = rt.block_on(reg.quic_lb_view()).expect("view");
    assert_eq!(
        view.issuable()
            .iter()
            .map(|c| c.at.config_id)
            .collect::<Vec<_>>(),
        vec![1, 2],
        "a retiring config is not issued; acked {acked:?}"
    );
    assert_eq!(
        pinned_confs(pin_dir, &vip).len(),
        3,
        "retiring stays routable"
    );

    // 3. Removed: the maps keep only 1.
    let removed = rt
        .block_on(reg.collect_retired_quic_lb(Duration::ZERO))
        .expect("collect");
    assert_eq!(
        removed.iter().map(|r| r.config_id).collect::<Vec<_>>(),
        vec![0]
    );
    wait_acked(rt, reg, &[1, 2]);
    assert_eq!(
        pinned_confs(pin_dir, &vip),
        vec![(1, 4, 12, true), (2, 4, 12, true)]
    );

    // 4. The key never reached the log.
    drop(cleanup);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("QUIC-LB configurations acknowledged"),
        "{text}"
    );
    assert!(text.contains("QUIC-LB registry entry rejected"), "{text}");
    assert!(!text.to_lowercase().contains(KEY_HEX), "key in the log");
    drop(host);
}
