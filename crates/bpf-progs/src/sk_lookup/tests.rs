//! Unprivileged checks of the configuration and the label keys. (The
//! constants and struct layouts of `<flowpin/sk_lookup.h>` are checked by
//! flowpin-bpf-abi's drift test and by `skel::tests`.)

use super::*;

#[test]
fn config_rejects_zero_bindings() {
    assert!(SkLookupConfig::new().max_bindings(0).validate().is_err());
    assert!(SkLookupConfig::new().max_bindings(1).validate().is_ok());
    assert_eq!(SkLookupConfig::default().max_bindings, DEFAULT_MAX_BINDINGS);
}

#[test]
fn label_keys_are_nul_padded_and_bounded() {
    let k = maps::label_key("proxy").unwrap();
    assert_eq!(&k.name[..5], b"proxy");
    assert!(k.name[5..].iter().all(|&c| c == 0));
    assert!(maps::label_key("").is_err());
    assert!(maps::label_key(&"x".repeat(LABEL_MAX + 1)).is_err());
    assert!(maps::label_key(&"x".repeat(LABEL_MAX)).is_ok());
    assert!(maps::label_key("a\0b").is_err());
}
