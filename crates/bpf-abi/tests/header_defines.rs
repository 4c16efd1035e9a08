//! The C headers the BPF programs include and the Rust constants of this
//! crate must agree. Every `#define` of `flowpin_lb.h` and
//! `sk_reuseport_select.h` is parsed and evaluated (numbers, other defines,
//! `+ - * <<` and parentheses) and checked against the Rust constant of the
//! same name. A define this test does not know, a Rust constant missing
//! from the header, or a line it cannot read all fail: a change on either
//! side is caught here, without root and without clang.

use std::collections::BTreeMap;

use flowpin_bpf_abi::{lb, reuseport};

const LB_H: &str = include_str!("../include/flowpin/flowpin_lb.h");
const RP_H: &str = include_str!("../include/flowpin/sk_reuseport_select.h");
const TCP_OPT_H: &str = include_str!("../../tcp-opt/include/flowpin/tcp_opt.h");

/// `#define NAME value` lines of a header (comments stripped); include
/// guards (no value) are left out.
fn defines(header: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in header.lines() {
        let Some(rest) = line.trim_start().strip_prefix("#define ") else {
            continue;
        };
        let rest = match rest.find("/*") {
            Some(i) => &rest[..i],
            None => rest,
        };
        let mut it = rest.trim().splitn(2, char::is_whitespace);
        let name = it.next().expect("a define has a name").to_string();
        let value = it.next().map(str::trim).unwrap_or("");
        if !value.is_empty() {
            out.push((name, value.to_string()));
        }
    }
    out
}

struct Eval<'a> {
    toks: Vec<String>,
    pos: usize,
    known: &'a BTreeMap<String, u64>,
}

impl Eval<'_> {
    fn run(expr: &str, known: &BTreeMap<String, u64>) -> Result<u64, String> {
        let mut toks = Vec::new();
        let b = expr.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i] as char;
            if c.is_whitespace() {
                i += 1;
            } else if c.is_ascii_alphanumeric() || c == '_' {
                let s = i;
                while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                toks.push(expr[s..i].to_string());
            } else if expr[i..].starts_with("<<") {
                toks.push("<<".into());
                i += 2;
            } else if "()+-*".contains(c) {
                toks.push(c.to_string());
                i += 1;
            } else {
                return Err(format!("cannot read `{c}` in `{expr}`"));
            }
        }
        let mut e = Eval {
            toks,
            pos: 0,
            known,
        };
        let v = e.shift()?;
        if e.pos != e.toks.len() {
            return Err(format!("trailing tokens in `{expr}`"));
        }
        Ok(v)
    }
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(String::as_str)
    }
    fn shift(&mut self) -> Result<u64, String> {
        let mut v = self.add()?;
        while self.peek() == Some("<<") {
            self.pos += 1;
            v <<= self.add()?;
        }
        Ok(v)
    }
    fn add(&mut self) -> Result<u64, String> {
        let mut v = self.mul()?;
        loop {
            match self.peek() {
                Some("+") => {
                    self.pos += 1;
                    v += self.mul()?;
                }
                Some("-") => {
                    self.pos += 1;
                    v -= self.mul()?;
                }
                _ => return Ok(v),
            }
        }
    }
    fn mul(&mut self) -> Result<u64, String> {
        let mut v = self.atom()?;
        while self.peek() == Some("*") {
            self.pos += 1;
            v *= self.atom()?;
        }
        Ok(v)
    }
    fn atom(&mut self) -> Result<u64, String> {
        let t = self.peek().ok_or("unexpected end")?.to_string();
        self.pos += 1;
        if t == "(" {
            let v = self.shift()?;
            if self.peek() != Some(")") {
                return Err("missing )".into());
            }
            self.pos += 1;
            return Ok(v);
        }
        if t.as_bytes()[0].is_ascii_digit() {
            let n = t.trim_end_matches(['u', 'U', 'l', 'L']);
            return match n.strip_prefix("0x").or_else(|| n.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16),
                None => n.parse(),
            }
            .map_err(|e| format!("bad number `{t}`: {e}"));
        }
        self.known
            .get(&t)
            .copied()
            .ok_or(format!("unknown name `{t}`"))
    }
}

/// Evaluates every define of `header` (after those of `deps`) into `known`.
fn evaluate(header: &str, known: &mut BTreeMap<String, u64>) -> Vec<String> {
    let mut names = Vec::new();
    for (name, value) in defines(header) {
        let v = Eval::run(&value, known).unwrap_or_else(|e| panic!("#define {name} {value}: {e}"));
        known.insert(name.clone(), v);
        names.push(name);
    }
    names
}

fn check(header_name: &str, names: &[String], known: &BTreeMap<String, u64>, rust: &[(&str, u64)]) {
    let rust: BTreeMap<&str, u64> = rust.iter().copied().collect();
    for name in names {
        let want = rust.get(name.as_str()).unwrap_or_else(|| {
            panic!("{header_name}: #define {name} has no Rust constant in flowpin-bpf-abi; add it (and to this test)")
        });
        assert_eq!(
            known[name], *want,
            "{header_name}: #define {name} = {} but the Rust constant is {want}",
            known[name]
        );
    }
    for name in rust.keys() {
        assert!(
            names.iter().any(|n| n == name),
            "the Rust constant for {name} has no #define in {header_name}"
        );
    }
}

#[test]
fn flowpin_lb_h_matches_the_rust_constants() {
    let mut known = BTreeMap::new();
    let names = evaluate(LB_H, &mut known);
    check(
        "flowpin_lb.h",
        &names,
        &known,
        &[
            ("FLOWPIN_VIP_PORT_AGNOSTIC", lb::VIP_PORT_AGNOSTIC.into()),
            ("FLOWPIN_VIP_SKIP_LRU_UDP", lb::VIP_SKIP_LRU_UDP.into()),
            ("FLOWPIN_VIP_SERVER_ID", lb::VIP_SERVER_ID.into()),
            ("FLOWPIN_VIP_QUIC", lb::VIP_QUIC.into()),
            ("FLOWPIN_VIP_ICMP_ECHO", lb::VIP_ICMP_ECHO.into()),
            ("FLOWPIN_FAMILY_V4", lb::FAMILY_V4.into()),
            ("FLOWPIN_FAMILY_V6", lb::FAMILY_V6.into()),
            ("FLOWPIN_LB_MAX_EXT_HDRS", lb::LB_MAX_EXT_HDRS.into()),
            ("FLOWPIN_LB_ICMP4_QUOTE", lb::LB_ICMP4_QUOTE.into()),
            ("FLOWPIN_LB_ICMP6_QUOTE", lb::LB_ICMP6_QUOTE.into()),
            ("FLOWPIN_LB_DEFAULT_TTL", lb::LB_DEFAULT_TTL.into()),
            ("FLOWPIN_FLOW_HASH_SEED", lb::FLOW_HASH_SEED.into()),
            ("FLOWPIN_FLOW_HASH_SEED2", lb::FLOW_HASH_SEED2.into()),
            ("FLOWPIN_VIP_SLOTS", lb::VIP_SLOTS.into()),
            ("FLOWPIN_VIP_SLOT_SHIFT", lb::VIP_SLOT_SHIFT.into()),
            ("FLOWPIN_CONN_WAYS", lb::CONN_WAYS.into()),
            ("FLOWPIN_CONN_ORDER_INIT", lb::CONN_ORDER_INIT.into()),
            ("FLOWPIN_SID_SLOTS", lb::SID_SLOTS.into()),
            ("FLOWPIN_SID_SLOT_SHIFT", lb::SID_SLOT_SHIFT.into()),
            ("FLOWPIN_SLOT_EMPTY", lb::SLOT_EMPTY.into()),
            ("FLOWPIN_SLOT_ONE", lb::SLOT_ONE.into()),
            ("FLOWPIN_SLOT_SHARED", lb::SLOT_SHARED.into()),
            ("FLOWPIN_LB_LAYOUT_VERSION", lb::LB_LAYOUT_VERSION.into()),
            (
                "FLOWPIN_SID_RETIRED_ENTRIES",
                lb::SID_RETIRED_ENTRIES.into(),
            ),
            (
                "FLOWPIN_DECAP_LAYOUT_VERSION",
                lb::DECAP_LAYOUT_VERSION.into(),
            ),
            ("FLOWPIN_LB_META_ICMP_ECHO", lb::LB_META_ICMP_ECHO.into()),
            (
                "FLOWPIN_LB_META_SID_WARM_CONN",
                lb::LB_META_SID_WARM_CONN.into(),
            ),
            ("FLOWPIN_BACKEND_ACTIVE", lb::BACKEND_ACTIVE.into()),
            ("FLOWPIN_BACKEND_DRAINING", lb::BACKEND_DRAINING.into()),
        ],
    );
}

#[test]
fn sk_reuseport_select_h_matches_the_rust_constants() {
    let mut known = BTreeMap::new();
    evaluate(TCP_OPT_H, &mut known);
    let names = evaluate(RP_H, &mut known);
    use reuseport as r;
    check(
        "sk_reuseport_select.h",
        &names,
        &known,
        &[
            ("FP_RP_MAX_GENS", r::MAX_GENS.into()),
            ("FP_RP_MAX_SLOTS", r::MAX_SLOTS.into()),
            ("FP_RP_SOCKS", r::SOCKS.into()),
            ("FP_RP_STATS_NO_GEN", r::STATS_NO_GEN.into()),
            ("FP_RP_STATS_ENTRIES", r::STATS_ENTRIES.into()),
            ("FP_RP_GEN_NONE", r::GEN_NONE.into()),
            ("FP_RP_STATE_EMPTY", r::STATE_EMPTY.into()),
            ("FP_RP_STATE_WARMING", r::STATE_WARMING.into()),
            ("FP_RP_STATE_LIVE", r::STATE_LIVE.into()),
            ("FP_RP_STATE_DRAINING", r::STATE_DRAINING.into()),
            ("FP_RP_STATE_RETIRED", r::STATE_RETIRED.into()),
            ("FP_RP_MODE_HASH", r::MODE_HASH.into()),
            ("FP_RP_MODE_CPU", r::MODE_CPU.into()),
            ("FP_RP_DROP_NO_LIVE", r::DROP_NO_LIVE.into()),
            ("FP_RP_DROP_NO_SOCKET", r::DROP_NO_SOCKET.into()),
            ("FP_RP_DROP_MIGRATE", r::DROP_MIGRATE.into()),
            ("FP_RP_DROP_FLOW_GONE", r::DROP_FLOW_GONE.into()),
            ("FP_RP_DROP_REASONS", r::DROP_REASONS.into()),
            ("FP_RP_CID_MAX_OFFSET", r::CID_MAX_OFFSET.into()),
            (
                "FP_RP_CID_DEFAULT_SOCK_OFFSET",
                r::CID_DEFAULT_SOCK_OFFSET.into(),
            ),
        ],
    );
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
}
