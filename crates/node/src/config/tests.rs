//! Parsing and validation of both roles' TOML.

use super::*;

const LB: &str = r#"
[registry]
endpoints = ["http://127.0.0.1:2379"]
prefix = "/flowpin/lab"

[lb]
interface = "eth0"
netns = "/run/netns/lb1"
pin_dir = "/sys/fs/bpf/flowpin/lb1"
local_mac = "02:00:00:00:00:01"
next_hop_mac = "02:00:00:00:00:02"
tunnel_src_v4 = "10.200.0.0/16"
conn_table_shared = true

[metrics]
listen = "127.0.0.1:0"
"#;

const BE: &str = r#"
[registry]
endpoints = ["http://127.0.0.1:2379"]
prefix = "/flowpin/lab"

[backend]
host = "be1"
address = "10.2.1.2"
interface = "eth0"
cgroup = "/sys/fs/cgroup/unified/be1"

[[backend.vips]]
addr = "10.100.0.1"
port = 8080
"#;

fn lb(text: &str) -> Result<LbConfig> {
    LbConfig::from_toml(Path::new("lb.toml"), text)
}
fn be(text: &str) -> Result<BackendConfig> {
    BackendConfig::from_toml(Path::new("backend.toml"), text)
}
fn field_of(e: ConfigError) -> &'static str {
    match e {
        ConfigError::Invalid { field, .. } => field,
        other => panic!("expected an invalid field, got {other}"),
    }
}

#[test]
fn lb_example_parses_with_defaults() {
    let c = lb(LB).expect("valid");
    assert_eq!(c.lb.interface, "eth0");
    assert_eq!(c.lb.netns.as_deref(), Some(Path::new("/run/netns/lb1")));
    assert_eq!(c.lb.xdp_mode, XdpModeConfig::Auto);
    assert_eq!(c.lb.on_exit, OnExit::Keep);
    assert_eq!(c.lb.ring_size, None);
    assert_eq!(c.macs().0, [2, 0, 0, 0, 0, 1]);
    assert_eq!(c.macs().1, [2, 0, 0, 0, 0, 2]);
}

#[test]
fn lb_rejects_bad_fields_by_name() {
    let cases = [
        ("02:00:00:00:00:01\"", "02:00:00:00:01\"", "lb.local_mac"),
        ("/sys/fs/bpf/flowpin/lb1", "/tmp/lb1", "lb.pin_dir"),
        ("10.200.0.0/16", "10.200.0.0/33", "lb.tunnel_src_v4"),
        ("\"/flowpin/lab\"", "\"flowpin\"", "registry.prefix"),
        ("[\"http://127.0.0.1:2379\"]", "[]", "registry.endpoints"),
        (
            "[\"http://127.0.0.1:2379\"]",
            "[\"127.0.0.1:2379\"]",
            "registry.endpoints",
        ),
        (
            "conn_table_shared = true",
            "ring_size = 65536",
            "lb.ring_size",
        ),
    ];
    for (from, to, field) in cases {
        let text = LB.replacen(from, to, 1);
        assert_ne!(text, LB, "case {field} did not change the text");
        assert_eq!(field_of(lb(&text).expect_err(field)), field);
    }
}

#[test]
fn unknown_fields_and_bad_types_are_parse_errors() {
    let text = LB.replace("conn_table_shared = true", "conn_table_shard = true");
    assert!(matches!(lb(&text), Err(ConfigError::Parse { .. })));
    let text = LB.replace("conn_table_shared = true", "conn_table_shared = \"yes\"");
    assert!(matches!(lb(&text), Err(ConfigError::Parse { .. })));
    let text = LB
        .replace("xdp_mode", "")
        .replace("conn_table_shared = true", "xdp_mode = \"turbo\"");
    assert!(matches!(lb(&text), Err(ConfigError::Parse { .. })));
}

#[test]
fn sighup_reports_fields_that_need_a_restart() {
    let a = lb(LB).expect("valid");
    let b = lb(&LB.replace("02:00:00:00:00:02", "02:00:00:00:00:09")).expect("valid");
    assert!(a.restart_only_changes(&b).is_empty());
    let c = lb(&LB.replace("flowpin/lb1", "flowpin/lb9")).expect("valid");
    assert_eq!(a.restart_only_changes(&c), vec!["lb.pin_dir"]);
}

#[test]
fn backend_example_parses_with_defaults() {
    let c = be(BE).expect("valid");
    assert_eq!(c.backend.weight, 100);
    // The one weight rule (lb_core::weight): 0 (no new flows) and 65536 are
    // valid, 65537 is refused (backend_rejects_bad_fields_by_name).
    for w in [0, flowpin_lb_core::MAX_WEIGHT] {
        let text = BE.replacen(
            "host = \"be1\"",
            &format!("host = \"be1\"\nweight = {w}"),
            1,
        );
        assert_eq!(be(&text).expect("valid weight").backend.weight, w);
    }
    assert!(c.backend.server_id);
    assert_eq!(c.lease_ttl(), Duration::from_secs(5));
    assert_eq!(c.backend.drain_timeout_secs, 30);
    assert_eq!(
        c.vip_keys(),
        vec![Vip::new(
            "10.100.0.1".parse().expect("ip"),
            8080,
            Proto::Tcp
        )]
    );
    assert!(c.metrics.is_none());
}

#[test]
fn backend_rejects_bad_fields_by_name() {
    let cases = [
        ("port = 8080", "port = 0", "backend.vips.port"),
        (
            "port = 8080",
            "port = 8080\nproto = \"sctp\"",
            "backend.vips.proto",
        ),
        (
            "address = \"10.2.1.2\"",
            "address = \"0.0.0.0\"",
            "backend.address",
        ),
        ("host = \"be1\"", "host = \"be/1\"", "backend.host"),
        (
            "host = \"be1\"",
            "host = \"be1\"\nweight = 65537",
            "backend.weight",
        ),
        (
            "host = \"be1\"",
            "host = \"be1\"\nlease_ttl_secs = 0",
            "backend.lease_ttl_secs",
        ),
    ];
    for (from, to, field) in cases {
        let text = BE.replacen(from, to, 1);
        assert_ne!(text, BE, "case {field} did not change the text");
        assert_eq!(field_of(be(&text).expect_err(field)), field);
    }
    let no_vips = BE
        .split("[[backend.vips]]")
        .next()
        .expect("head")
        .to_string()
        + "vips = []\n";
    assert_eq!(field_of(be(&no_vips).expect_err("no vips")), "backend.vips");
}

#[test]
fn mac_and_prefix_parsers() {
    assert_eq!(
        parse_mac("0a:1B:2c:3d:4e:5f"),
        Some([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f])
    );
    assert_eq!(parse_mac("0a:1b:2c:3d:4e"), None);
    assert_eq!(parse_mac("0a:1b:2c:3d:4e:5f:60"), None);
    assert_eq!(parse_mac("a:1b:2c:3d:4e:5f"), None);
    assert_eq!(
        parse_v4_prefix("10.0.0.0/8"),
        Some((Ipv4Addr::new(10, 0, 0, 0), 8))
    );
    assert_eq!(parse_v4_prefix("10.0.0.0"), None);
}

#[test]
fn lb_health_defaults_to_quorum_and_is_validated() {
    use flowpin_registry::health::QuorumRule;
    let c = lb(LB).expect("valid");
    assert!(c.lb.health.enabled);
    assert_eq!(c.lb.health.rule, HealthRule::Quorum);
    assert_eq!(c.quorum_rule(), QuorumRule::Majority);
    assert!(c.health_id().ends_with("-lb1"), "{}", c.health_id());
    let local = LB.replace(
        "conn_table_shared = true",
        "conn_table_shared = true\nhealth = { rule = \"local\", id = \"lb-a\" }",
    );
    let c = lb(&local).expect("valid");
    assert_eq!(c.quorum_rule(), QuorumRule::Local { lb: "lb-a".into() });
    for (bad, field) in [
        ("health = { rule = \"majority\" }", None),
        ("health = { id = \"a/b\" }", Some("lb.health.id")),
        (
            "health = { verdict_ttl_secs = 1 }",
            Some("lb.health.verdict_ttl_secs"),
        ),
        (
            "health = { max_backends = 0 }",
            Some("lb.health.max_backends"),
        ),
        ("health = { interval = 1 }", None),
    ] {
        let text = LB.replace(
            "conn_table_shared = true",
            &format!("conn_table_shared = true\n{bad}"),
        );
        let e = lb(&text).expect_err(bad);
        if let Some(f) = field {
            assert_eq!(field_of(e), f, "{bad}");
        }
    }
    // A registry file means one LB: local-only whatever the rule says.
    let file = LB.replace(
        "endpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/flowpin/lab\"",
        "file = \"/etc/flowpin/registry.toml\"",
    );
    let c = lb(&file).expect("valid with a file");
    assert!(matches!(c.quorum_rule(), QuorumRule::Local { .. }));
}

#[test]
fn backend_health_check_is_one_of_command_or_http() {
    let with = |h: &str| {
        be(&BE.replace(
            "[[backend.vips]]",
            &format!("health_check = {h}\n\n[[backend.vips]]"),
        ))
    };
    let c = with("{ http = \"http://127.0.0.1:8080/healthz\", fall = 2 }").expect("http");
    let h = c.backend.health_check.expect("check");
    assert_eq!((h.interval_secs, h.fall, h.rise), (1, 2, 2));
    assert!(with("{ command = [\"true\"] }").is_ok());
    for bad in [
        "{ }",
        "{ command = [\"true\"], http = \"http://127.0.0.1/\" }",
        "{ command = [] }",
        "{ http = \"https://x/\" }",
        "{ command = [\"true\"], fall = 0 }",
        "{ command = [\"true\"], interval_secs = 0 }",
    ] {
        assert_eq!(
            field_of(with(bad).expect_err(bad)),
            "backend.health_check",
            "{bad}"
        );
    }
    assert_eq!(
        parse_http_url("http://127.0.0.1:8080/healthz"),
        Some(("127.0.0.1:8080".into(), "/healthz".into()))
    );
    assert_eq!(
        parse_http_url("http://svc"),
        Some(("svc:80".into(), "/".into()))
    );
}
