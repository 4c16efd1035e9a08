//! Unprivileged checks: every `#define` of `sk_lookup.h` shared with Rust,
//! and the generated layouts.

use super::types::*;
use super::*;

fn define(h: &str, name: &str) -> String {
    let line = h
        .lines()
        .find(|l| l.starts_with(&format!("#define {name} ")))
        .unwrap_or_else(|| panic!("#define {name} not in sk_lookup.h"));
    line[format!("#define {name} ").len()..].trim().to_string()
}

fn num(h: &str, name: &str) -> u64 {
    define(h, name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number"))
}

#[test]
fn every_shared_define_matches_the_rust_constant() {
    let h = include_str!("../bpf/sk_lookup.h");
    assert_eq!(num(h, "FP_SKL_MAX_LABELS"), u64::from(MAX_LABELS));
    assert_eq!(num(h, "FP_SKL_SLOTS_PER_LABEL"), u64::from(SLOTS_PER_LABEL));
    assert_eq!(num(h, "FP_SKL_SLOT_TCP"), u64::from(SLOT_TCP));
    assert_eq!(num(h, "FP_SKL_SLOT_UDP"), u64::from(SLOT_UDP));
    assert_eq!(
        define(h, "FP_SKL_DESTINATIONS"),
        "(FP_SKL_MAX_LABELS * FP_SKL_SLOTS_PER_LABEL)"
    );
    assert_eq!(DESTINATIONS, MAX_LABELS * SLOTS_PER_LABEL);
    assert_eq!(define(h, "FP_SKL_STATS_UNMATCHED"), "FP_SKL_MAX_LABELS");
    assert_eq!(STATS_UNMATCHED, MAX_LABELS);
    assert_eq!(define(h, "FP_SKL_STATS_ENTRIES"), "(FP_SKL_MAX_LABELS + 1)");
    assert_eq!(
        num(h, "FP_SKL_DEFAULT_MAX_BINDINGS"),
        u64::from(DEFAULT_MAX_BINDINGS)
    );
    assert_eq!(num(h, "FP_SKL_LABEL_MAX"), LABEL_MAX as u64);
    assert_eq!(num(h, "FP_SKL_FAMILY_V4"), u64::from(FAMILY_V4));
    assert_eq!(num(h, "FP_SKL_FAMILY_V6"), u64::from(FAMILY_V6));
    assert_eq!(num(h, "FP_SKL_PORT_ANY"), u64::from(PORT_ANY));
    assert_eq!(num(h, "FP_SKL_KEY_HEADER_BITS"), u64::from(KEY_HEADER_BITS));
    assert_eq!(num(h, "FP_SKL_KIND_HOST_PORT"), u64::from(KIND_HOST_PORT));
    assert_eq!(num(h, "FP_SKL_KIND_HOST_ANY"), u64::from(KIND_HOST_ANY));
    assert_eq!(num(h, "FP_SKL_KIND_NET_PORT"), u64::from(KIND_NET_PORT));
    assert_eq!(num(h, "FP_SKL_KIND_NET_ANY"), u64::from(KIND_NET_ANY));
    assert_eq!(num(h, "FP_SKL_KINDS"), u64::from(KINDS));
    assert_eq!(
        define(h, "FP_SKL_SUMMARY_SHIFT(udp, v6)"),
        "(((udp) * 2 + (v6)) * FP_SKL_KINDS)"
    );
    for (udp, v6) in [(false, false), (false, true), (true, false), (true, true)] {
        assert_eq!(
            summary_shift(udp, v6),
            (u32::from(udp) * 2 + u32::from(v6)) * KINDS
        );
    }
    // Every #define of the header is checked above.
    let defines = h
        .lines()
        .filter(|l| l.starts_with("#define FP_SKL_"))
        .count();
    assert_eq!(
        defines, 19,
        "a new #define in sk_lookup.h needs a check here"
    );
}

#[test]
fn key_header_bits_cover_protocol_family_and_port() {
    use std::mem::{offset_of, size_of};
    assert_eq!(offset_of!(fp_skl_key, protocol), 4);
    assert_eq!(
        offset_of!(fp_skl_key, addr) - offset_of!(fp_skl_key, protocol),
        KEY_HEADER_BITS as usize / 8
    );
    assert_eq!(
        size_of::<fp_skl_key>(),
        4 + KEY_HEADER_BITS as usize / 8 + 16
    );
}

#[test]
fn struct_layouts_have_no_padding() {
    use std::mem::size_of;
    // Each size is the sum of its fields: nothing implicit for `plain` to expose.
    assert_eq!(size_of::<fp_skl_key>(), 4 + 1 + 1 + 2 + 16);
    assert_eq!(size_of::<fp_skl_host_key>(), 1 + 1 + 2 + 16);
    assert_eq!(size_of::<fp_skl_binding>(), 4 + 4);
    assert_eq!(size_of::<fp_skl_label_name>(), LABEL_MAX);
    assert_eq!(size_of::<fp_skl_label>(), 4 + 4);
    assert_eq!(size_of::<fp_skl_dest>(), 8 + 4 + 4);
    assert_eq!(size_of::<fp_skl_stats>(), 4 * 8);
}

#[test]
fn config_rejects_zero_bindings() {
    assert!(SkLookupConfig::new().max_bindings(0).validate().is_err());
    assert!(SkLookupConfig::new().max_bindings(1).validate().is_ok());
    assert_eq!(SkLookupConfig::default().max_bindings, DEFAULT_MAX_BINDINGS);
}

#[test]
fn label_keys_are_nul_padded_and_bounded() {
    let k = maps::label_key("proxy").unwrap();
    assert_eq!(
        k.name[..5].iter().map(|&c| c as u8).collect::<Vec<_>>(),
        b"proxy"
    );
    assert!(k.name[5..].iter().all(|&c| c == 0));
    assert!(maps::label_key("").is_err());
    assert!(maps::label_key(&"x".repeat(LABEL_MAX + 1)).is_err());
    assert!(maps::label_key(&"x".repeat(LABEL_MAX)).is_ok());
    assert!(maps::label_key("a\0b").is_err());
}
