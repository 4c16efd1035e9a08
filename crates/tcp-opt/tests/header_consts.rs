//! The C header the BPF programs include and the Rust constants must agree:
//! parse every `#define FLOWPIN_*` of `include/flowpin/tcp_opt.h` and check
//! it against the Rust constant of the same name (prefix dropped). A define
//! this test does not know, a constant missing from the header, or a line
//! it cannot read all fail.

use std::collections::BTreeMap;

use flowpin_tcp_opt::consts as c;

const HEADER: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/include/flowpin/tcp_opt.h"
));

/// Include guard: the only FLOWPIN_ define without a value.
const GUARD: &str = "FLOWPIN_TCP_OPT_H";

fn rust_constants() -> BTreeMap<&'static str, u64> {
    let table: &[(&str, u64)] = &[
        ("TCPOPT_EOL", c::TCPOPT_EOL as u64),
        ("TCPOPT_NOP", c::TCPOPT_NOP as u64),
        ("TCPOPT_KIND_OFFSET", c::TCPOPT_KIND_OFFSET as u64),
        ("TCPOPT_LEN_OFFSET", c::TCPOPT_LEN_OFFSET as u64),
        ("TCPOPT_EXP_KIND", c::TCPOPT_EXP_KIND as u64),
        ("TCPOPT_EXP_KIND_ALT", c::TCPOPT_EXP_KIND_ALT as u64),
        ("TCPOPT_RFC6994_LEN", c::TCPOPT_RFC6994_LEN as u64),
        (
            "TCPOPT_RFC6994_ALIGNED_LEN",
            c::TCPOPT_RFC6994_ALIGNED_LEN as u64,
        ),
        (
            "TCPOPT_RFC6994_EXID_OFFSET",
            c::TCPOPT_RFC6994_EXID_OFFSET as u64,
        ),
        (
            "TCPOPT_RFC6994_ID_OFFSET",
            c::TCPOPT_RFC6994_ID_OFFSET as u64,
        ),
        ("TCPOPT_DEFAULT_EXID", c::TCPOPT_DEFAULT_EXID as u64),
        ("TCPOPT_COMPACT_LEN", c::TCPOPT_COMPACT_LEN as u64),
        (
            "TCPOPT_COMPACT_ALIGNED_LEN",
            c::TCPOPT_COMPACT_ALIGNED_LEN as u64,
        ),
        (
            "TCPOPT_COMPACT_ID_OFFSET",
            c::TCPOPT_COMPACT_ID_OFFSET as u64,
        ),
        ("TCPOPT_KATRAN_KIND", c::TCPOPT_KATRAN_KIND as u64),
        (
            "TCPOPT_KATRAN_SYNACK_KIND",
            c::TCPOPT_KATRAN_SYNACK_KIND as u64,
        ),
        ("TCPOPT_KATRAN_LEN", c::TCPOPT_KATRAN_LEN as u64),
        (
            "TCPOPT_KATRAN_ALIGNED_LEN",
            c::TCPOPT_KATRAN_ALIGNED_LEN as u64,
        ),
        ("TCPOPT_KATRAN_ID_OFFSET", c::TCPOPT_KATRAN_ID_OFFSET as u64),
        ("TCP_HDR_LEN", c::TCP_HDR_LEN as u64),
        ("TCP_DOFF_OFFSET", c::TCP_DOFF_OFFSET as u64),
        ("TCP_DOFF_SHIFT", c::TCP_DOFF_SHIFT as u64),
        ("TCP_MAX_OPTIONS_LEN", c::TCP_MAX_OPTIONS_LEN as u64),
        ("TCPOPT_MAX_WALK", c::TCPOPT_MAX_WALK as u64),
        ("SERVER_ID_NONE", c::SERVER_ID_NONE as u64),
        ("LAYOUT_RFC6994", c::LAYOUT_RFC6994 as u64),
        ("LAYOUT_COMPACT", c::LAYOUT_COMPACT as u64),
        ("LAYOUT_KATRAN", c::LAYOUT_KATRAN as u64),
        ("QUIC_LONG_HEADER_BIT", c::QUIC_LONG_HEADER_BIT as u64),
        ("QUIC_LONG_TYPE_MASK", c::QUIC_LONG_TYPE_MASK as u64),
        ("QUIC_LONG_TYPE_SHIFT", c::QUIC_LONG_TYPE_SHIFT as u64),
        ("QUIC_VERSION_OFFSET", c::QUIC_VERSION_OFFSET as u64),
        ("QUIC_VERSION_2", c::QUIC_VERSION_2 as u64),
        (
            "QUIC_LONG_DCID_LEN_OFFSET",
            c::QUIC_LONG_DCID_LEN_OFFSET as u64,
        ),
        ("QUIC_LONG_DCID_OFFSET", c::QUIC_LONG_DCID_OFFSET as u64),
        ("QUIC_SHORT_DCID_OFFSET", c::QUIC_SHORT_DCID_OFFSET as u64),
        ("QUIC_CID_MIN_LEN", c::QUIC_CID_MIN_LEN as u64),
        ("QUIC_CID_MAX_LEN", c::QUIC_CID_MAX_LEN as u64),
        (
            "QUIC_CID_KATRAN_VERSION_MASK",
            c::QUIC_CID_KATRAN_VERSION_MASK as u64,
        ),
        (
            "QUIC_CID_KATRAN_VERSION_SHIFT",
            c::QUIC_CID_KATRAN_VERSION_SHIFT as u64,
        ),
        ("QUIC_CID_KATRAN_V1", c::QUIC_CID_KATRAN_V1 as u64),
        ("QUIC_CID_KATRAN_V2", c::QUIC_CID_KATRAN_V2 as u64),
        ("QUIC_CID_KATRAN_V3", c::QUIC_CID_KATRAN_V3 as u64),
        (
            "QUIC_CID_KATRAN_V1_BYTE0_MASK",
            c::QUIC_CID_KATRAN_V1_BYTE0_MASK as u64,
        ),
        (
            "QUIC_CID_KATRAN_V1_MAX_ID",
            c::QUIC_CID_KATRAN_V1_MAX_ID as u64,
        ),
        (
            "QUIC_CID_KATRAN_V2_ID_OFFSET",
            c::QUIC_CID_KATRAN_V2_ID_OFFSET as u64,
        ),
        (
            "QUIC_CID_KATRAN_V2_MAX_ID",
            c::QUIC_CID_KATRAN_V2_MAX_ID as u64,
        ),
        (
            "QUIC_CID_KATRAN_V3_ID_OFFSET",
            c::QUIC_CID_KATRAN_V3_ID_OFFSET as u64,
        ),
        (
            "QUIC_CID_FLOWPIN_VERSION_MASK",
            c::QUIC_CID_FLOWPIN_VERSION_MASK as u64,
        ),
        (
            "QUIC_CID_FLOWPIN_VERSION_SHIFT",
            c::QUIC_CID_FLOWPIN_VERSION_SHIFT as u64,
        ),
        (
            "QUIC_CID_FLOWPIN_VERSION",
            c::QUIC_CID_FLOWPIN_VERSION as u64,
        ),
        (
            "QUIC_CID_FLOWPIN_APP_MASK",
            c::QUIC_CID_FLOWPIN_APP_MASK as u64,
        ),
        (
            "QUIC_CID_FLOWPIN_ID_OFFSET",
            c::QUIC_CID_FLOWPIN_ID_OFFSET as u64,
        ),
        ("QUIC_LB_CR_SHIFT", c::QUIC_LB_CR_SHIFT as u64),
        ("QUIC_LB_LEN_MASK", c::QUIC_LB_LEN_MASK as u64),
        ("QUIC_LB_CR_UNROUTABLE", c::QUIC_LB_CR_UNROUTABLE as u64),
        ("QUIC_LB_SID_OFFSET", c::QUIC_LB_SID_OFFSET as u64),
        ("QUIC_LB_MAX_SID_LEN", c::QUIC_LB_MAX_SID_LEN as u64),
        ("QUIC_LB_MIN_NONCE_LEN", c::QUIC_LB_MIN_NONCE_LEN as u64),
        (
            "QUIC_LB_MAX_PLAINTEXT_LEN",
            c::QUIC_LB_MAX_PLAINTEXT_LEN as u64,
        ),
        (
            "QUIC_LB_MAX_ROUTED_SID_LEN",
            c::QUIC_LB_MAX_ROUTED_SID_LEN as u64,
        ),
        ("QUIC_LB_CFG_ON", c::QUIC_LB_CFG_ON as u64),
        ("QUIC_LB_CFG_ID_SHIFT", c::QUIC_LB_CFG_ID_SHIFT as u64),
        ("QUIC_LB_CFG_ID_MASK", c::QUIC_LB_CFG_ID_MASK as u64),
        (
            "QUIC_LB_CFG_SID_LEN_MASK",
            c::QUIC_LB_CFG_SID_LEN_MASK as u64,
        ),
    ];
    let map: BTreeMap<_, _> = table.iter().copied().collect();
    assert_eq!(
        map.len(),
        table.len(),
        "a constant is listed twice in the test table"
    );
    map
}

/// Parses `#define NAME value` lines (decimal or 0x hex). Returns the
/// defines, and the FLOWPIN_ lines that are not of that shape.
fn parse_header(text: &str) -> (BTreeMap<String, u64>, Vec<String>) {
    let mut defines = BTreeMap::new();
    let mut unreadable = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("#define ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let name = words.next().unwrap_or_default();
        if !name.starts_with("FLOWPIN_") || name == GUARD {
            continue;
        }
        let value = words.next().and_then(|v| {
            match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse::<u64>().ok(),
            }
        });
        match (value, words.next()) {
            (Some(value), None) => {
                let previous = defines.insert(name.to_string(), value);
                assert!(previous.is_none(), "{name} is defined twice in the header");
            }
            _ => unreadable.push(line.to_string()),
        }
    }
    (defines, unreadable)
}

#[test]
fn every_header_constant_matches_rust() {
    let (defines, unreadable) = parse_header(HEADER);
    assert!(
        unreadable.is_empty(),
        "FLOWPIN_ defines that are not `#define NAME <decimal|0xhex>`: {unreadable:?}"
    );
    let rust = rust_constants();

    let unknown: Vec<_> = defines
        .keys()
        .filter(|name| !rust.contains_key(name.trim_start_matches("FLOWPIN_")))
        .collect();
    assert!(
        unknown.is_empty(),
        "header defines with no Rust twin in this test: {unknown:?}"
    );

    let missing: Vec<_> = rust
        .keys()
        .filter(|name| !defines.contains_key(&format!("FLOWPIN_{name}")))
        .collect();
    assert!(
        missing.is_empty(),
        "Rust constants missing from the header: {missing:?}"
    );

    for (name, &value) in &defines {
        let want = rust[name.trim_start_matches("FLOWPIN_")];
        assert_eq!(
            value, want,
            "{name} = {value:#x} in the header but {want:#x} in Rust"
        );
    }
    assert_eq!(defines.len(), 65);
}

#[test]
fn walk_bound_is_the_shared_constant() {
    assert_eq!(flowpin_tcp_opt::MAX_OPTION_WALK, c::TCPOPT_MAX_WALK);
    let (defines, _) = parse_header(HEADER);
    assert_eq!(
        defines["FLOWPIN_TCPOPT_MAX_WALK"],
        flowpin_tcp_opt::MAX_OPTION_WALK as u64
    );
}

#[test]
fn layout_methods_agree_with_the_header() {
    use flowpin_tcp_opt::Layout;
    let (d, _) = parse_header(HEADER);
    let rfc = Layout::default();
    let compact = Layout::Compact { kind: 0xFD };
    let katran = Layout::KatranCompat;
    assert_eq!(
        rfc,
        Layout::Rfc6994 {
            exid: d["FLOWPIN_TCPOPT_DEFAULT_EXID"] as u16
        }
    );
    assert_eq!(rfc.option_len() as u64, d["FLOWPIN_TCPOPT_RFC6994_LEN"]);
    assert_eq!(compact.option_len() as u64, d["FLOWPIN_TCPOPT_COMPACT_LEN"]);
    assert_eq!(katran.option_len() as u64, d["FLOWPIN_TCPOPT_KATRAN_LEN"]);
    assert_eq!(
        rfc.aligned_len() as u64,
        d["FLOWPIN_TCPOPT_RFC6994_ALIGNED_LEN"]
    );
    assert_eq!(
        compact.aligned_len() as u64,
        d["FLOWPIN_TCPOPT_COMPACT_ALIGNED_LEN"]
    );
    assert_eq!(
        katran.aligned_len() as u64,
        d["FLOWPIN_TCPOPT_KATRAN_ALIGNED_LEN"]
    );
    assert_eq!(u64::from(rfc.selector()), d["FLOWPIN_LAYOUT_RFC6994"]);
    assert_eq!(u64::from(compact.selector()), d["FLOWPIN_LAYOUT_COMPACT"]);
    assert_eq!(u64::from(katran.selector()), d["FLOWPIN_LAYOUT_KATRAN"]);
}

#[test]
fn parser_rejects_what_it_cannot_check() {
    // The checker itself must notice drift, unknown names and odd lines.
    let (d, bad) = parse_header("#define FLOWPIN_A 0x10\n#define FLOWPIN_B 7\n#define FLOWPIN_C (1 << 2)\n#define OTHER 3\n");
    assert_eq!(d.get("FLOWPIN_A"), Some(&16));
    assert_eq!(d.get("FLOWPIN_B"), Some(&7));
    assert_eq!(bad, vec!["#define FLOWPIN_C (1 << 2)".to_string()]);
    assert!(!d.contains_key("OTHER"));
}
