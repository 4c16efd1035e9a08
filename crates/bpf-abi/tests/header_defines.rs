//! The drift test: the C headers the BPF programs include and the Rust
//! constants must agree. Every `#define` of every header in
//! `include/flowpin/` is parsed and evaluated (numbers, other defines,
//! `+ - * <<`, parentheses, function-like macros) and checked against the
//! Rust constant (or function) of the same name, prefix dropped. A define
//! this test does not know, a Rust constant missing from the header, a
//! header nobody checks, or a line it cannot read all fail: a change on
//! either side is caught here, without root and without clang.

mod header_eval;

use std::collections::BTreeMap;

use flowpin_bpf_abi::{lb, reuseport, sk_lookup as skl, sockops};
use flowpin_tcp_opt::consts as tcp;
use header_eval::{apply, evaluate, Eval, Evaluated};

const LB_H: &str = include_str!("../include/flowpin/flowpin_lb.h");
const RP_H: &str = include_str!("../include/flowpin/sk_reuseport_select.h");
const SKL_H: &str = include_str!("../include/flowpin/sk_lookup.h");
const SOCKOPS_H: &str = include_str!("../include/flowpin/sockops_server_id.h");
const TCP_OPT_H: &str = include_str!("../include/flowpin/tcp_opt.h");

/// Every header this test checks; `every_header_is_checked` compares it
/// with the directory.
const HEADERS: [&str; 5] = [
    "flowpin_lb.h",
    "sk_reuseport_select.h",
    "sk_lookup.h",
    "sockops_server_id.h",
    "tcp_opt.h",
];

/// `(C name, Rust value)` pairs: `prefix` + the Rust constant's name.
macro_rules! rust {
    ($prefix:literal, $m:ident; $($c:ident),* $(,)?) => {
        vec![$((concat!($prefix, stringify!($c)), $m::$c as u64)),*]
    };
}

/// A Rust twin of a function-like macro: C name, argument lists to try,
/// the Rust function on them.
type RustFn = (&'static str, &'static [&'static [u64]], fn(&[u64]) -> u64);

fn check(
    header_name: &str,
    ev: &Evaluated,
    known: &BTreeMap<String, u64>,
    rust: &[(&str, u64)],
    fns: &[RustFn],
) {
    let table: BTreeMap<&str, u64> = rust.iter().copied().collect();
    assert_eq!(table.len(), rust.len(), "a constant is listed twice");
    for name in &ev.names {
        let want = table.get(name.as_str()).unwrap_or_else(|| {
            panic!("{header_name}: #define {name} has no Rust constant; add it (and to this test)")
        });
        assert_eq!(
            known[name], *want,
            "{header_name}: #define {name} = {:#x} but the Rust constant is {want:#x}",
            known[name]
        );
    }
    for name in table.keys() {
        assert!(
            ev.names.iter().any(|n| n == name),
            "the Rust constant for {name} has no #define in {header_name}"
        );
    }
    for (name, params, body) in &ev.functions {
        let (_, args, f) = fns
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| {
                panic!("{header_name}: #define {name}(...) has no Rust function; add it (and to this test)")
            });
        for a in *args {
            let c = apply(params, body, a, known)
                .unwrap_or_else(|e| panic!("{header_name}: {name}{a:?}: {e}"));
            assert_eq!(c, f(a), "{header_name}: {name}{a:?} = {c} in C");
        }
    }
    for (name, _, _) in fns {
        assert!(
            ev.functions.iter().any(|(n, _, _)| n == name),
            "the Rust function for {name} has no #define in {header_name}"
        );
    }
}

#[test]
fn every_header_is_checked() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/include/flowpin");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("include/flowpin exists")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    let mut checked = HEADERS.to_vec();
    checked.sort();
    assert_eq!(
        files, checked,
        "a header in include/flowpin that this test does not check (or the reverse)"
    );
    assert_eq!(
        flowpin_bpf_abi::INCLUDE_DIR,
        concat!(env!("CARGO_MANIFEST_DIR"), "/include")
    );
}

#[test]
fn flowpin_lb_h_matches_the_rust_constants() {
    let mut known = BTreeMap::new();
    let ev = evaluate(LB_H, &mut known);
    let rust = rust!("FLOWPIN_", lb;
        VIP_PORT_AGNOSTIC, VIP_SKIP_LRU_UDP, VIP_SERVER_ID, VIP_QUIC, VIP_ICMP_ECHO,
        FAMILY_V4, FAMILY_V6, LB_MAX_EXT_HDRS, LB_ICMP4_QUOTE, LB_ICMP6_QUOTE, LB_DEFAULT_TTL,
        FLOW_HASH_SEED, FLOW_HASH_SEED2, VIP_SLOTS, VIP_SLOT_SHIFT, CONN_WAYS, CONN_ORDER_INIT,
        CONN_SETS_PER_FLOW,
        SID_SLOTS, SID_SLOT_SHIFT, SLOT_EMPTY, SLOT_ONE, SLOT_SHARED, LB_LAYOUT_VERSION,
        SID_RETIRED_ENTRIES, DECAP_LAYOUT_VERSION, LB_META_ICMP_ECHO, LB_META_SID_WARM_CONN,
        BACKEND_ACTIVE, BACKEND_DRAINING, CID_CFGS_PER_VIP, CID_MODE_SLOT, CID_ANY, CID_FLOWPIN,
        CID_KATRAN, CID_QUIC_LB, CID_QUIC_LB_ENC, AES_CONST_TIME, AES_TABLE, QUIC_LB_SINGLE_PASS_LEN,
    );
    check("flowpin_lb.h", &ev, &known, &rust, &[]);
}

#[test]
fn sk_reuseport_select_h_matches_the_rust_constants() {
    let mut known = BTreeMap::new();
    evaluate(TCP_OPT_H, &mut known);
    let ev = evaluate(RP_H, &mut known);
    let rust = rust!("FP_RP_", reuseport;
        MAX_GENS, MAX_SLOTS, SOCKS, STATS_NO_GEN, STATS_ENTRIES, GEN_NONE, STATE_EMPTY,
        STATE_WARMING, STATE_LIVE, STATE_DRAINING, STATE_RETIRED, MODE_HASH, MODE_CPU,
        DROP_NO_LIVE, DROP_NO_SOCKET, DROP_MIGRATE, DROP_FLOW_GONE, DROP_REASONS,
        CID_MAX_OFFSET, CID_DEFAULT_SOCK_OFFSET,
    );
    check("sk_reuseport_select.h", &ev, &known, &rust, &[]);
}

#[test]
fn sk_lookup_h_matches_the_rust_constants() {
    let mut known = BTreeMap::new();
    let ev = evaluate(SKL_H, &mut known);
    let rust = rust!("FP_SKL_", skl;
        MAX_LABELS, SLOTS_PER_LABEL, SLOT_TCP, SLOT_UDP, DESTINATIONS, STATS_UNMATCHED,
        STATS_ENTRIES, DEFAULT_MAX_BINDINGS, LABEL_MAX, FAMILY_V4, FAMILY_V6, PORT_ANY,
        KEY_HEADER_BITS, KIND_HOST_PORT, KIND_HOST_ANY, KIND_NET_PORT, KIND_NET_ANY, KINDS,
    );
    let fns: [RustFn; 1] = [(
        "FP_SKL_SUMMARY_SHIFT",
        &[&[0, 0], &[0, 1], &[1, 0], &[1, 1]],
        |a| u64::from(skl::summary_shift(a[0] == 1, a[1] == 1)),
    )];
    check("sk_lookup.h", &ev, &known, &rust, &fns);
    assert_eq!(
        (ev.names.len(), ev.functions.len()),
        (18, 1),
        "a new #define in sk_lookup.h needs a Rust twin"
    );
}

#[test]
fn sockops_server_id_h_matches_the_rust_constants() {
    let mut known = BTreeMap::new();
    let ev = evaluate(SOCKOPS_H, &mut known);
    let rust = rust!("FLOWPIN_SOCKOPS_", sockops; MAX_PORTS, MAX_ADDRS, LAYOUT_VERSION);
    check("sockops_server_id.h", &ev, &known, &rust, &[]);
}

#[test]
fn tcp_opt_h_matches_the_rust_constants() {
    let mut known = BTreeMap::new();
    let ev = evaluate(TCP_OPT_H, &mut known);
    let rust = rust!("FLOWPIN_", tcp;
        TCPOPT_EOL, TCPOPT_NOP, TCPOPT_KIND_OFFSET, TCPOPT_LEN_OFFSET,
        TCPOPT_EXP_KIND, TCPOPT_EXP_KIND_ALT, TCPOPT_RFC6994_LEN, TCPOPT_RFC6994_ALIGNED_LEN,
        TCPOPT_RFC6994_EXID_OFFSET, TCPOPT_RFC6994_ID_OFFSET, TCPOPT_DEFAULT_EXID,
        TCPOPT_COMPACT_LEN, TCPOPT_COMPACT_ALIGNED_LEN, TCPOPT_COMPACT_ID_OFFSET,
        TCPOPT_KATRAN_KIND, TCPOPT_KATRAN_SYNACK_KIND, TCPOPT_KATRAN_LEN,
        TCPOPT_KATRAN_ALIGNED_LEN, TCPOPT_KATRAN_ID_OFFSET,
        TCP_HDR_LEN, TCP_DOFF_OFFSET, TCP_DOFF_SHIFT, TCP_MAX_OPTIONS_LEN, TCPOPT_MAX_WALK,
        SERVER_ID_NONE, LAYOUT_RFC6994, LAYOUT_COMPACT, LAYOUT_KATRAN,
        QUIC_LONG_HEADER_BIT, QUIC_LONG_TYPE_MASK, QUIC_LONG_TYPE_SHIFT, QUIC_VERSION_OFFSET,
        QUIC_VERSION_2, QUIC_LONG_DCID_LEN_OFFSET, QUIC_LONG_DCID_OFFSET, QUIC_SHORT_DCID_OFFSET,
        QUIC_CID_MIN_LEN, QUIC_CID_MAX_LEN,
        QUIC_CID_KATRAN_VERSION_MASK, QUIC_CID_KATRAN_VERSION_SHIFT, QUIC_CID_KATRAN_V1,
        QUIC_CID_KATRAN_V2, QUIC_CID_KATRAN_V3, QUIC_CID_KATRAN_V1_BYTE0_MASK,
        QUIC_CID_KATRAN_V1_MAX_ID, QUIC_CID_KATRAN_V2_ID_OFFSET, QUIC_CID_KATRAN_V2_MAX_ID,
        QUIC_CID_KATRAN_V3_ID_OFFSET,
        QUIC_CID_FLOWPIN_VERSION_MASK, QUIC_CID_FLOWPIN_VERSION_SHIFT, QUIC_CID_FLOWPIN_VERSION,
        QUIC_CID_FLOWPIN_APP_MASK, QUIC_CID_FLOWPIN_ID_OFFSET,
        QUIC_LB_CR_SHIFT, QUIC_LB_LEN_MASK, QUIC_LB_CR_UNROUTABLE, QUIC_LB_SID_OFFSET,
        QUIC_LB_MAX_SID_LEN, QUIC_LB_MIN_NONCE_LEN, QUIC_LB_MAX_PLAINTEXT_LEN,
        QUIC_LB_MAX_ROUTED_SID_LEN, QUIC_LB_CFG_ON, QUIC_LB_CFG_ID_SHIFT, QUIC_LB_CFG_ID_MASK,
        QUIC_LB_CFG_SID_LEN_MASK,
    );
    check("tcp_opt.h", &ev, &known, &rust, &[]);
    assert_eq!(ev.names.len(), 65);
}

#[test]
fn tcp_opt_walk_bound_is_the_shared_constant() {
    let mut d = BTreeMap::new();
    evaluate(TCP_OPT_H, &mut d);
    assert_eq!(flowpin_tcp_opt::MAX_OPTION_WALK, tcp::TCPOPT_MAX_WALK);
    assert_eq!(
        d["FLOWPIN_TCPOPT_MAX_WALK"],
        flowpin_tcp_opt::MAX_OPTION_WALK as u64
    );
}

#[test]
fn tcp_opt_layout_methods_agree_with_the_header() {
    use flowpin_tcp_opt::Layout;
    let mut d = BTreeMap::new();
    evaluate(TCP_OPT_H, &mut d);
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
fn the_evaluator_reads_what_the_headers_use() {
    let known = BTreeMap::from([("A".to_string(), 8u64), ("B".to_string(), 64)]);
    assert_eq!(Eval::run("(A * B)", &known), Ok(512));
    assert_eq!(Eval::run("(1u << 4)", &known), Ok(16));
    assert_eq!(Eval::run("0x666c6f77u", &known), Ok(0x666c_6f77));
    assert_eq!(Eval::run("(A + 1)", &known), Ok(9));
    assert!(Eval::run("C", &known).is_err());
    assert!(Eval::run("1 / 2", &known).is_err());
    assert!(Eval::run("(-1)", &known).is_err());
    let f = header_eval::defines(
        "#define F(x, y) (((x) * 2 + (y)) * B)\n#define G 3 /* c */\n#define H_H\n",
    );
    assert_eq!(f.len(), 2, "{f:?}");
    let header_eval::Define::Function { params, body, .. } = &f[0] else {
        panic!("{f:?}")
    };
    assert_eq!(apply(params, body, &[1, 1], &known), Ok(192));
    assert!(apply(params, body, &[1], &known).is_err());
    assert_eq!(
        f[1],
        header_eval::Define::Object {
            name: "G".into(),
            value: "3".into()
        }
    );
}

/// Every spelling of `#define` the preprocessor accepts is read, with the
/// value the preprocessor would give it; comments (also over several lines
/// and holding `#define`s) and other directives are not defines.
#[test]
fn the_reader_takes_every_define_spelling() {
    use header_eval::{defines, Define};
    let obj = |name: &str, value: &str| Define::Object {
        name: name.into(),
        value: value.into(),
    };
    let header = concat!(
        "#ifndef GUARD_H\n",
        "#define GUARD_H\n",
        "#define\tTAB_AFTER\t1\n",
        "#define TAB_VALUE\t\t2\n",
        "# define SPACE_AFTER_HASH 3\n",
        "#  define TWO_SPACES 4\n",
        "  #\tdefine INDENTED_TAB 5\n",
        "\t#define INDENTED 6\n",
        "#define BLOCK_COMMENT 7 /* seven */\n",
        "#define LINE_COMMENT 8 // eight\n",
        "#define CONTINUED (1 + \\\n\t2)\n",
        "#define \\\n  NAME_ON_NEXT 9\n",
        "#define FN(x, \\\n y) ((x) * (y)) /* a\n multi-line comment */\n",
        "/* #define IN_A_COMMENT 10\n#define ALSO_IN_IT 11 */\n",
        "// #define IN_A_LINE_COMMENT 12\n",
        "#define AFTER_COMMENTS 13 /* a */ /* b */\n",
        "#undef TAB_AFTER\n",
        "#include <linux/types.h>\n",
        "#endif /* GUARD_H */\n",
    );
    let d = defines(header);
    assert_eq!(
        d,
        vec![
            obj("TAB_AFTER", "1"),
            obj("TAB_VALUE", "2"),
            obj("SPACE_AFTER_HASH", "3"),
            obj("TWO_SPACES", "4"),
            obj("INDENTED_TAB", "5"),
            obj("INDENTED", "6"),
            obj("BLOCK_COMMENT", "7"),
            obj("LINE_COMMENT", "8"),
            obj("CONTINUED", "(1 + \t2)"),
            obj("NAME_ON_NEXT", "9"),
            Define::Function {
                name: "FN".into(),
                params: vec!["x".into(), "y".into()],
                body: "((x) * (y))".into(),
            },
            obj("AFTER_COMMENTS", "13"),
        ]
    );
    let known = BTreeMap::new();
    assert_eq!(Eval::run("(1 + \t2)", &known), Ok(3));
    // The lines after a multi-line comment are still lines of their own.
    assert_eq!(
        header_eval::logical_text("a /* x\ny */ b\nc")
            .lines()
            .count(),
        3
    );
    // A `define` directive the reader cannot take fails, never skips.
    for bad in ["#define\n", "#define (x) 1\n", "#defineX 1\n"] {
        assert!(
            std::panic::catch_unwind(|| defines(bad)).is_err(),
            "`{bad}` read without complaint"
        );
    }
}
