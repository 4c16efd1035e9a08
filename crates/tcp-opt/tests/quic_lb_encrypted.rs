//! Encrypted QUIC-LB CIDs: every test vector of draft-ietf-quic-load-balancers-21
//! ("Load Balancer Test Vectors", "Encrypted CIDs"), the draft's worked
//! four-pass example step by step, the AES block API the BPF side checks
//! itself against, and property tests of every mode.
#![allow(clippy::unwrap_used)]

use flowpin_tcp_opt::quic_lb::{
    aes128_decrypt_block, aes128_encrypt_block, config_id_of, unroutable_first_octet, QuicLbCipher,
    QuicLbConfig, QuicLbConfigs, QuicLbKey, QuicLbMode, QuicLbServerId,
};
use flowpin_tcp_opt::{Error, ServerId};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
        .collect()
}

fn block(s: &str) -> [u8; 16] {
    hex(s).try_into().expect("16 octets")
}

const VECTOR_KEY: &str = "8f95f09245765f80256934e50c66207f";

/// Encodes `sid`/`nonce` under `cfg`, compares with `cid`, and decodes it
/// back (server ID alone, and every field).
fn check_vector(cfg: QuicLbConfig, sid: &str, nonce: &str, cid: &str) {
    let (sid, nonce, cid) = (hex(sid), hex(nonce), hex(cid));
    let mut out = [0u8; 20];
    let n = cfg.encode(&sid, &nonce, &mut out).unwrap();
    assert_eq!(&out[..n], &cid[..], "{cfg:?}: encode");
    assert_eq!(
        cfg.server_id(&cid).unwrap().unwrap(),
        sid,
        "{cfg:?}: server_id"
    );
    let open = cfg.open(&cid).unwrap().unwrap();
    assert_eq!(open.server_id, sid);
    assert_eq!(open.nonce, nonce);
    assert_eq!(
        usize::from(open.len_bits) + 1,
        cid.len(),
        "self-encoded length"
    );
    assert_eq!(config_id_of(&cid), Some(cfg.config_id()));
    // The set of live configurations routes it too; codepoint 7 does not.
    let set: QuicLbConfigs = [cfg].into_iter().collect();
    assert_eq!(set.server_id(&cid).unwrap().unwrap(), sid);
    let mut unroutable = cid.clone();
    unroutable[0] |= 0xe0;
    assert_eq!(set.server_id(&unroutable), Ok(None));
}

#[test]
fn draft_encrypted_vector_1_four_pass_odd_three_lb_passes() {
    let key: QuicLbKey = VECTOR_KEY.parse().unwrap();
    let cfg = QuicLbConfig::encrypted(0, 3, 4, key).unwrap();
    assert_eq!((cfg.mode(), cfg.lb_passes()), (QuicLbMode::FourPass, 3));
    check_vector(cfg, "ed793a", "ee080dbf", "0720b1d07b359d3c");
}

#[test]
fn draft_encrypted_vector_2_four_pass_long_server_id_four_lb_passes() {
    let key: QuicLbKey = VECTOR_KEY.parse().unwrap();
    let cfg = QuicLbConfig::encrypted(1, 10, 5, key).unwrap();
    assert_eq!((cfg.mode(), cfg.lb_passes()), (QuicLbMode::FourPass, 4));
    check_vector(
        cfg,
        "ed793a51d49b8f5fab65",
        "ee080dbf48",
        "2fcc381bc74cb4fbad2823a3d1f8fed2",
    );
}

#[test]
fn draft_encrypted_vector_3_single_pass() {
    let key: QuicLbKey = VECTOR_KEY.parse().unwrap();
    let cfg = QuicLbConfig::encrypted(2, 8, 8, key).unwrap();
    assert_eq!((cfg.mode(), cfg.lb_passes()), (QuicLbMode::SinglePass, 1));
    check_vector(
        cfg,
        "ed793a51d49b8f5f",
        "ee080dbf48c0d1e5",
        "504dd2d05a7b0de9b2b9907afb5ecf8cc3",
    );
    // Single pass is AES-128-ECB of server ID || nonce, nothing more.
    let ct = aes128_encrypt_block(&key, block("ed793a51d49b8f5fee080dbf48c0d1e5"));
    assert_eq!(ct, block("4dd2d05a7b0de9b2b9907afb5ecf8cc3"));
}

/// The draft prints this CID as `125779c9…`: a first octet of 0x12 is
/// codepoint 0, contradicting the row's `cr_bits 3`; the draft's own first
/// octet rule gives `(3 << 5) | 18 = 0x72`. The 18 encrypted octets are as
/// printed (they do not depend on the first octet).
#[test]
fn draft_encrypted_vector_4_four_pass_even_four_lb_passes() {
    let key: QuicLbKey = VECTOR_KEY.parse().unwrap();
    let cfg = QuicLbConfig::encrypted(3, 9, 9, key).unwrap();
    assert_eq!((cfg.mode(), cfg.lb_passes()), (QuicLbMode::FourPass, 3));
    check_vector(
        cfg,
        "ed793a51d49b8f5fab",
        "ee080dbf48c0d1e55d",
        "725779c9cc86beb3a3a4a3ca96fce4bfe0cdbc",
    );
    let printed = hex("125779c9cc86beb3a3a4a3ca96fce4bfe0cdbc");
    assert_eq!(config_id_of(&printed), Some(0), "the misprint is config 0");
    assert_eq!(cfg.server_id(&printed), Ok(None), "so not config 3's");
}

/// The draft's encryption example (§ "Encryption Example"), each AES
/// input/output of its four passes through the block API, then the whole.
#[test]
fn draft_four_pass_worked_example() {
    let key: QuicLbKey = "fdf726a9893ec05c0632d3956680baf0".parse().unwrap();
    let steps = [
        (
            "31441a90000000000000000000000701",
            "a255dd8cdacf01948d3a848c3c7fee23",
        ),
        (
            "0e3c1ff9000000000000000000000702",
            "e5e452cb9e1bedb0b2bf830506bf4c4e",
        ),
        (
            "d4a04850000000000000000000000703",
            "b7821ab3024fed0913b6a04d18e3216f",
        ),
        (
            "09be054a000000000000000000000704",
            "b334357cfdf81e3fafe180154eaf7378",
        ),
    ];
    let cipher = QuicLbCipher::new(&key);
    for (input, output) in steps {
        assert_eq!(aes128_encrypt_block(&key, block(input)), block(output));
        assert_eq!(aes128_decrypt_block(&key, block(output)), block(input));
        let mut b = block(input);
        cipher.encrypt_block(&mut b);
        assert_eq!(b, block(output));
        cipher.decrypt_block(&mut b);
        assert_eq!(b, block(input));
    }
    let cfg = QuicLbConfig::encrypted(0, 3, 4, key).unwrap();
    check_vector(cfg, "31441a", "9c69c275", "0767947d29be054a");
}

#[test]
fn keys_never_print_and_parse_strictly() {
    let key: QuicLbKey = VECTOR_KEY.parse().unwrap();
    let cfg = QuicLbConfig::encrypted(0, 3, 4, key).unwrap();
    for shown in [
        format!("{key:?}"),
        format!("{cfg:?}"),
        format!("{:?}", cfg.codec()),
        format!("{:?}", QuicLbCipher::new(&key)),
    ] {
        assert!(!shown.contains("8f95"), "{shown}");
        assert!(!shown.to_lowercase().contains("8f 95"), "{shown}");
    }
    assert_eq!(format!("{key:?}"), "QuicLbKey(<redacted>)");
    assert_eq!(key.expose_hex(), VECTOR_KEY);
    assert_eq!(format!("0x{VECTOR_KEY}").parse::<QuicLbKey>(), Ok(key));
    for bad in [
        "",
        "8f95",
        &VECTOR_KEY[1..],
        &format!("{VECTOR_KEY}00"),
        "zz95f09245765f80256934e50c66207f",
    ] {
        let err = bad.parse::<QuicLbKey>().unwrap_err();
        assert_eq!(err, Error::BadQuicLbKey);
        assert!(
            !err.to_string().contains("8f95f0"),
            "the error never repeats the key"
        );
    }
}

#[test]
fn encrypted_config_refuses_the_plaintext_view_and_checks_lengths() {
    let key: QuicLbKey = VECTOR_KEY.parse().unwrap();
    let cfg = QuicLbConfig::encrypted(0, 3, 4, key).unwrap();
    assert_eq!(
        cfg.decode(&hex("0720b1d07b359d3c")),
        Err(Error::QuicLbEncrypted { config_id: 0 })
    );
    assert!(QuicLbConfig::encrypted(7, 3, 4, key).is_err());
    assert!(QuicLbConfig::encrypted(0, 3, 3, key).is_err());
    assert!(QuicLbConfig::encrypted(0, 15, 5, key).is_err());
    assert_eq!(
        cfg.server_id(&hex("0720b1d07b359d")),
        Err(Error::BadCidLength { len: 7 })
    );
    assert_eq!(cfg.server_id(&[]), Err(Error::BadCidLength { len: 0 }));
    // Server-use octets past the block are ignored.
    assert_eq!(
        cfg.server_id(&hex("0720b1d07b359d3cffff"))
            .unwrap()
            .unwrap(),
        hex("ed793a")
    );
    // encode_with_len: the length bits count the server's octets, which are
    // left alone; nothing is written on error.
    let codec = cfg.codec();
    let mut out = [0xaau8; 20];
    codec
        .encode_with_len(&hex("ed793a"), &hex("ee080dbf"), 10, &mut out)
        .unwrap();
    assert_eq!(&out[..10], &hex("0920b1d07b359d3caaaa")[..]);
    let mut untouched = [0x55u8; 20];
    assert!(codec
        .encode_with_len(&hex("ed793a"), &hex("ee080dbf"), 7, &mut untouched)
        .is_err());
    assert!(codec
        .encode_with_len(&hex("ed793a"), &hex("ee080dbf"), 21, &mut untouched)
        .is_err());
    assert!(codec
        .encode_with_len(&hex("ed79"), &hex("ee080dbf"), 8, &mut untouched)
        .is_err());
    assert_eq!(untouched, [0x55u8; 20]);
    assert_eq!(unroutable_first_octet(8), 0xe7);
}

#[test]
fn config_set_routes_by_codepoint_only() {
    let key: QuicLbKey = VECTOR_KEY.parse().unwrap();
    let plain = QuicLbConfig::new(0, 3, 4).unwrap();
    let enc = QuicLbConfig::encrypted(1, 3, 4, key).unwrap();
    let mut set: QuicLbConfigs = [plain, enc].into_iter().collect();
    let mut cid = [0u8; 8];
    enc.encode(&hex("010203"), &hex("04050607"), &mut cid)
        .unwrap();
    assert_eq!(set.server_id(&cid).unwrap().unwrap(), hex("010203"));
    assert_eq!(set.iter().count(), 2);
    // Rotated out: its CIDs become unroutable, config 0's still route.
    assert_eq!(set.remove(1), Some(enc));
    assert_eq!(set.server_id(&cid), Ok(None));
    assert_eq!(
        set.server_id(&hex("07c4605e4504cc4f")).unwrap().unwrap(),
        hex("c4605e")
    );
    assert_eq!(set.insert(plain), Some(plain), "replaces codepoint 0");
    assert!(!set.is_empty());
    assert!(QuicLbConfigs::new().server_id(&cid).unwrap().is_none());
}

#[test]
fn flowpin_server_ids_in_quic_lb_server_ids() {
    let id = ServerId::new(0x0102_0304).unwrap();
    let sid = QuicLbServerId::from_server_id(id, 6).unwrap();
    assert_eq!(sid, hex("000001020304"));
    assert_eq!(sid.to_server_id(), Some(id));
    assert_eq!(
        QuicLbServerId::from_server_id(ServerId::new(0x1ff).unwrap(), 2).unwrap(),
        hex("01ff")
    );
    assert!(QuicLbServerId::from_server_id(id, 3).is_err());
    assert!(QuicLbServerId::from_server_id(id, 0).is_err());
    assert!(QuicLbServerId::from_server_id(id, 16).is_err());
    assert_eq!(
        QuicLbServerId::from_slice(&hex("0100000001"))
            .unwrap()
            .to_server_id(),
        None
    );
    assert_eq!(
        QuicLbServerId::from_slice(&[0, 0]).unwrap().to_server_id(),
        None
    );
    assert_eq!("0a0b".parse::<QuicLbServerId>().unwrap(), hex("0a0b"));
    assert!("0a0".parse::<QuicLbServerId>().is_err());
}

fn any_config() -> impl Strategy<Value = QuicLbConfig> {
    (0u8..7, 1u8..=15, 4u8..=18, any::<Option<[u8; 16]>>())
        .prop_filter("sid + nonce <= 19", |(_, s, n, _)| s + n <= 19)
        .prop_map(|(cr, s, n, key)| {
            QuicLbConfig::new(cr, s, n)
                .unwrap()
                .with_key(key.map(QuicLbKey::new))
        })
}

proptest! {
    #[test]
    fn every_mode_round_trips(
        cfg in any_config(),
        seed in proptest::collection::vec(any::<u8>(), 19),
    ) {
        let (sid, nonce) = seed.split_at(cfg.server_id_len());
        let nonce = &nonce[..cfg.nonce_len()];
        let mut out = [0u8; 20];
        let n = cfg.encode(sid, nonce, &mut out).unwrap();
        prop_assert_eq!(n, cfg.cid_len());
        prop_assert_eq!(usize::from(out[0] & 0x1f) + 1, n);
        prop_assert_eq!(config_id_of(&out), Some(cfg.config_id()));
        let codec = cfg.codec();
        prop_assert_eq!(codec.server_id(&out[..n]).unwrap().unwrap(), sid);
        let open = codec.open(&out[..n]).unwrap().unwrap();
        prop_assert_eq!(open.server_id, sid);
        prop_assert_eq!(open.nonce, nonce);
        if cfg.key().is_some() {
            prop_assert_ne!(&out[1..n], &seed[..n - 1], "encrypted differs from plaintext");
        } else {
            prop_assert_eq!(&out[1..n], &seed[..n - 1]);
        }
        // Another codepoint is not this configuration's.
        let mut other = out;
        other[0] ^= 1 << 5;
        prop_assert_eq!(codec.server_id(&other[..n]).unwrap(), None);
    }

    /// Four-pass is a permutation: decrypting any block and encrypting the
    /// result gives it back (so every CID decodes to one server ID).
    #[test]
    fn four_pass_is_a_permutation(
        key in any::<[u8; 16]>(),
        s in 1u8..=15,
        n in 4u8..=18,
        raw in proptest::collection::vec(any::<u8>(), 20),
    ) {
        prop_assume!(s + n <= 19 && s + n != 16);
        let cfg = QuicLbConfig::encrypted(0, s, n, QuicLbKey::new(key)).unwrap();
        let mut cid = raw;
        cid.truncate(cfg.cid_len());
        cid[0] = (cfg.cid_len() - 1) as u8;
        let open = cfg.open(&cid).unwrap().unwrap();
        let mut again = [0u8; 20];
        cfg.encode(&open.server_id, &open.nonce, &mut again).unwrap();
        prop_assert_eq!(&again[..cfg.cid_len()], &cid[..]);
    }
}
