//! Validation: raw etcd entries in, the accepted VIPs and backends plus the
//! rejected entries out. Pure (no I/O), so every LB that sees the same
//! entries at the same revision computes the same result.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use flowpin_lb_core::weight;
use flowpin_tcp_opt::ServerId;

use crate::keys::{KeyKind, KeyLayout};
use crate::model::{
    BackendJson, BackendSpec, Proto, RejectKind, Rejection, Vip, VipEntry, VipSpec,
};

/// One key-value of etcd, as the watcher keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawEntry {
    pub(crate) value: Vec<u8>,
    pub(crate) create_revision: i64,
    pub(crate) mod_revision: i64,
}

/// A rejected value: its kind and what was wrong.
pub(crate) type Invalid = (RejectKind, String);

fn check_addr(what: &str, addr: IpAddr) -> Result<(), Invalid> {
    let bad = match addr {
        IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
    };
    if bad {
        return Err((
            RejectKind::BadAddress,
            format!("{what} address {addr} is unspecified, multicast or broadcast"),
        ));
    }
    Ok(())
}

/// Checks a VIP's address and flags.
pub(crate) fn check_vip(spec: &VipSpec) -> Result<(), Invalid> {
    check_addr("VIP", spec.addr)?;
    let f = spec.flags;
    let bad = |m: &str| Err((RejectKind::BadFlags, format!("VIP {}: {m}", spec.key())));
    if f.port_agnostic() != (spec.port == 0) {
        return bad("port 0 and the port_agnostic flag go together (set both or neither)");
    }
    if spec.proto == Proto::Tcp && (f.quic() || f.skip_lru_udp()) {
        return bad("quic and skip_lru_udp are UDP flags");
    }
    if spec.proto == Proto::Udp && f.server_id() {
        return bad("server_id is a TCP flag (UDP uses quic)");
    }
    Ok(())
}

/// Checks a backend's address and weight (the one rule for weights,
/// [`flowpin_lb_core::weight::validate`]: `0..=MAX_WEIGHT`, 0 = no new flows).
pub(crate) fn check_backend(spec: &BackendSpec) -> Result<(), Invalid> {
    check_addr("backend", spec.addr)?;
    weight::validate(spec.weight)
        .map_err(|e| (RejectKind::BadWeight, format!("backend {}: {e}", spec.addr)))
}

/// Parses and checks a VIP value stored under the key of `key`.
pub(crate) fn parse_vip(key: &Vip, value: &[u8]) -> Result<VipSpec, Invalid> {
    let spec: VipSpec = serde_json::from_slice(value).map_err(|e| {
        (
            RejectKind::MalformedValue,
            format!("not a VIP JSON value: {e}"),
        )
    })?;
    if spec.key() != *key {
        return Err((
            RejectKind::KeyMismatch,
            format!("value describes VIP {} but the key names {key}", spec.key()),
        ));
    }
    check_vip(&spec)?;
    Ok(spec)
}

/// Parses and checks a backend value stored under the key of (`vip`, `addr`).
pub(crate) fn parse_backend(addr: IpAddr, value: &[u8]) -> Result<BackendSpec, Invalid> {
    let json: BackendJson = serde_json::from_slice(value).map_err(|e| {
        (
            RejectKind::MalformedValue,
            format!("not a backend JSON value: {e}"),
        )
    })?;
    let spec = BackendSpec::from(json);
    if spec.addr != addr {
        return Err((
            RejectKind::KeyMismatch,
            format!(
                "value describes backend {} but the key names {addr}",
                spec.addr
            ),
        ));
    }
    check_backend(&spec)?;
    Ok(spec)
}

/// Everything valid in `raw`, and everything rejected (sorted by key).
///
/// Conflicts are resolved the same way on every LB: among backends that
/// disagree on a server_id ↔ address binding, the entry created first
/// (lowest `create_revision`, then key) wins.
pub(crate) fn build(
    layout: &KeyLayout,
    raw: &BTreeMap<Vec<u8>, RawEntry>,
) -> (BTreeMap<Vip, VipEntry>, Vec<Rejection>) {
    let mut rejected = Vec::new();
    let mut reject = |key: &[u8], e: &RawEntry, (kind, reason): Invalid| {
        rejected.push(Rejection {
            key: String::from_utf8_lossy(key).into_owned(),
            mod_revision: e.mod_revision,
            kind,
            reason,
        });
    };
    let mut vips = BTreeMap::new();
    let mut backends = Vec::new();
    let mut health = Vec::new();
    for (key, e) in raw {
        match layout.parse(key) {
            Some(KeyKind::Vip(vip)) => match parse_vip(&vip, &e.value) {
                Ok(spec) => {
                    vips.insert(
                        vip,
                        VipEntry {
                            spec,
                            backends: BTreeMap::new(),
                            health: Default::default(),
                        },
                    );
                }
                Err(inv) => reject(key, e, inv),
            },
            Some(KeyKind::Backend(vip, addr)) => match parse_backend(addr, &e.value) {
                Ok(spec) => backends.push((key, e, vip, spec)),
                Err(inv) => reject(key, e, inv),
            },
            Some(KeyKind::Claim(_) | KeyKind::Host(_)) => {}
            Some(k) => health.push((key, e, k)),
            None => reject(
                key,
                e,
                (
                    RejectKind::MalformedKey,
                    format!("key is not in the layout under {}", layout.prefix()),
                ),
            ),
        }
    }
    backends.sort_by(|a, b| (a.1.create_revision, a.0).cmp(&(b.1.create_revision, b.0)));
    let mut id_owner: HashMap<ServerId, IpAddr> = HashMap::new();
    let mut addr_id: HashMap<IpAddr, Option<ServerId>> = HashMap::new();
    for (key, e, vip, spec) in backends {
        let Some(entry) = vips.get_mut(&vip) else {
            reject(
                key,
                e,
                (
                    RejectKind::UnknownVip,
                    format!(
                        "backend {} of VIP {vip}, which is not in the registry",
                        spec.addr
                    ),
                ),
            );
            continue;
        };
        if let Some(id) = spec.server_id {
            if let Some(owner) = id_owner.get(&id).filter(|o| **o != spec.addr) {
                let why = format!(
                    "server_id {id} of backend {} is already carried by backend {owner}",
                    spec.addr
                );
                reject(key, e, (RejectKind::DuplicateServerId, why));
                continue;
            }
        }
        if let Some(known) = addr_id.get(&spec.addr).filter(|k| **k != spec.server_id) {
            let show = |i: &Option<ServerId>| i.map_or("none".to_string(), |i| i.to_string());
            let why = format!(
                "backend {} registered with server_id {} here but {} elsewhere",
                spec.addr,
                show(&spec.server_id),
                show(known)
            );
            reject(key, e, (RejectKind::DuplicateServerId, why));
            continue;
        }
        if let Some(id) = spec.server_id {
            id_owner.insert(id, spec.addr);
        }
        addr_id.insert(spec.addr, spec.server_id);
        entry.backends.insert(spec.addr, spec);
    }
    for (key, e, kind) in health {
        if let Err(inv) = crate::health::apply(&mut vips, kind, &e.value) {
            reject(key, e, inv);
        }
    }
    rejected.sort_by(|a, b| a.key.cmp(&b.key));
    (vips, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackendState, VipFlags, MAX_WEIGHT};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn layout() -> KeyLayout {
        KeyLayout::new("/t").expect("valid prefix")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn vip() -> Vip {
        Vip::new(ip("10.0.0.1"), 80, Proto::Tcp)
    }

    fn raw(entries: &[(String, String, i64)]) -> BTreeMap<Vec<u8>, RawEntry> {
        entries
            .iter()
            .map(|(k, v, rev)| {
                (
                    k.clone().into_bytes(),
                    RawEntry {
                        value: v.clone().into_bytes(),
                        create_revision: *rev,
                        mod_revision: *rev,
                    },
                )
            })
            .collect()
    }

    fn vip_entry(l: &KeyLayout, rev: i64) -> (String, String, i64) {
        (
            l.vip(&vip()),
            r#"{"addr":"10.0.0.1","port":80,"proto":"tcp","flags":{"server_id":true}}"#.into(),
            rev,
        )
    }

    fn kinds(rej: &[Rejection]) -> Vec<RejectKind> {
        rej.iter().map(|r| r.kind).collect()
    }

    /// The stored JSON of a VIP is byte for byte what the registry wrote
    /// when its flags were a struct of bools and its identity `VipKey`.
    #[test]
    fn vip_values_keep_their_stored_json() {
        let mut spec = VipSpec::new(
            Vip::new(ip("2001:db8::1"), 0, Proto::Udp),
            VipFlags::PORT_AGNOSTIC | VipFlags::QUIC,
        );
        spec.updated_at_ms = Some(1_767_225_600_000);
        let json = r#"{"addr":"2001:db8::1","port":0,"proto":"udp","flags":{"port_agnostic":true,"skip_lru_udp":false,"server_id":false,"quic":true},"updated_at_ms":1767225600000}"#;
        assert_eq!(serde_json::to_string(&spec).expect("serialize"), json);
        let back: VipSpec = serde_json::from_str(json).expect("parse");
        assert_eq!(back, spec);
        let plain = VipSpec::new(vip(), VipFlags::NONE);
        assert_eq!(
            serde_json::to_string(&plain).expect("serialize"),
            r#"{"addr":"10.0.0.1","port":80,"proto":"tcp","flags":{"port_agnostic":false,"skip_lru_udp":false,"server_id":false,"quic":false}}"#
        );
        // Values written without flags, or with some, still parse.
        let old: VipSpec =
            serde_json::from_str(r#"{"addr":"10.0.0.1","port":80,"proto":"tcp"}"#).expect("parse");
        assert_eq!(old, plain);
        let (_, v, _) = vip_entry(&layout(), 1);
        let parsed: VipSpec = serde_json::from_str(&v).expect("parse");
        assert_eq!(parsed.flags, VipFlags::SERVER_ID);
        // The key layout: protocol segment as before.
        assert_eq!(layout().vip(&vip()), "/t/routing/vips/tcp/10.0.0.1/80");
    }

    #[test]
    fn valid_vip_and_backend_are_accepted() {
        let l = layout();
        let b = (
            l.backend(&vip(), ip("10.1.0.2")),
            r#"{"addr":"10.1.0.2","weight":3,"server_id":9,"state":"draining"}"#.into(),
            2,
        );
        // Weight 0 (no new flows) and MAX_WEIGHT are valid weights.
        let zero = (
            l.backend(&vip(), ip("10.1.0.3")),
            r#"{"addr":"10.1.0.3","weight":0}"#.into(),
            3,
        );
        let max = (
            l.backend(&vip(), ip("10.1.0.4")),
            format!(r#"{{"addr":"10.1.0.4","weight":{MAX_WEIGHT}}}"#),
            3,
        );
        let (vips, rej) = build(&l, &raw(&[vip_entry(&l, 1), b, zero, max]));
        assert!(rej.is_empty(), "{rej:?}");
        let got = vips[&vip()].backends[&ip("10.1.0.2")];
        assert_eq!(got.weight, 3);
        assert_eq!(got.server_id, ServerId::new(9));
        assert_eq!(got.state, BackendState::Draining);
        assert!(vips[&vip()].spec.flags.server_id());
        assert_eq!(vips[&vip()].backends[&ip("10.1.0.3")].weight, 0);
        assert_eq!(vips[&vip()].backends[&ip("10.1.0.4")].weight, MAX_WEIGHT);
        // Above the cap: the error says the rule.
        let over = BackendSpec::new(ip("10.1.0.5"), MAX_WEIGHT + 1, None);
        let (kind, why) = check_backend(&over).expect_err("above MAX_WEIGHT");
        assert_eq!(kind, RejectKind::BadWeight);
        assert!(
            why.contains("10.1.0.5") && why.contains("0 means no new flows"),
            "{why}"
        );
    }

    #[test]
    fn each_kind_of_bad_entry_is_rejected_with_its_kind() {
        let l = layout();
        let v = vip();
        let cases: Vec<((String, String, i64), RejectKind)> = vec![
            (
                ("/t/routing/vips/tcp/10.0.0.9/080".into(), "{}".into(), 5),
                RejectKind::MalformedKey,
            ),
            (
                (l.backend(&v, ip("10.1.0.3")), "{not json".into(), 5),
                RejectKind::MalformedValue,
            ),
            (
                (
                    l.backend(&v, ip("10.1.0.3")),
                    r#"{"addr":"10.1.0.3","weight":1,"colour":"red"}"#.into(),
                    5,
                ),
                RejectKind::MalformedValue,
            ),
            (
                (
                    l.backend(&v, ip("10.1.0.3")),
                    r#"{"addr":"10.1.0.4","weight":1}"#.into(),
                    5,
                ),
                RejectKind::KeyMismatch,
            ),
            (
                (
                    l.backend(&v, ip("0.0.0.0")),
                    r#"{"addr":"0.0.0.0","weight":1}"#.into(),
                    5,
                ),
                RejectKind::BadAddress,
            ),
            (
                (
                    l.backend(&v, ip("224.0.0.1")),
                    r#"{"addr":"224.0.0.1","weight":1}"#.into(),
                    5,
                ),
                RejectKind::BadAddress,
            ),
            (
                (
                    l.backend(&v, ip("10.1.0.3")),
                    format!(r#"{{"addr":"10.1.0.3","weight":{}}}"#, MAX_WEIGHT + 1),
                    5,
                ),
                RejectKind::BadWeight,
            ),
            (
                (
                    l.vip(&Vip::new(ip("10.0.0.2"), 53, Proto::Udp)),
                    r#"{"addr":"10.0.0.2","port":53,"proto":"udp","flags":{"server_id":true}}"#
                        .into(),
                    5,
                ),
                RejectKind::BadFlags,
            ),
            (
                (
                    l.vip(&Vip::new(ip("10.0.0.2"), 53, Proto::Tcp)),
                    r#"{"addr":"10.0.0.2","port":53,"proto":"tcp","flags":{"port_agnostic":true}}"#
                        .into(),
                    5,
                ),
                RejectKind::BadFlags,
            ),
            (
                (
                    l.backend(&Vip::new(ip("10.9.9.9"), 80, Proto::Tcp), ip("10.1.0.3")),
                    r#"{"addr":"10.1.0.3","weight":1}"#.into(),
                    5,
                ),
                RejectKind::UnknownVip,
            ),
        ];
        for (entry, kind) in cases {
            let key = entry.0.clone();
            let (vips, rej) = build(&l, &raw(&[vip_entry(&l, 1), entry]));
            assert_eq!(kinds(&rej), vec![kind], "{key}");
            assert_eq!(rej[0].key, key);
            assert_eq!(vips.len(), 1, "{key}: the good VIP stays");
            assert!(vips[&v].backends.is_empty(), "{key}");
        }
    }

    #[test]
    fn duplicate_server_id_first_created_wins() {
        let l = layout();
        let v = vip();
        let first = (
            l.backend(&v, ip("10.1.0.9")),
            r#"{"addr":"10.1.0.9","weight":1,"server_id":42}"#.into(),
            7,
        );
        let second = (
            l.backend(&v, ip("10.1.0.2")),
            r#"{"addr":"10.1.0.2","weight":1,"server_id":42}"#.into(),
            8,
        );
        let (vips, rej) = build(&l, &raw(&[vip_entry(&l, 1), first, second]));
        assert_eq!(kinds(&rej), vec![RejectKind::DuplicateServerId]);
        assert!(rej[0].key.ends_with("10.1.0.2"));
        assert!(vips[&v].backends.contains_key(&ip("10.1.0.9")));
        // The same address on two VIPs with the same id is fine; with another id it is not.
        let v2 = Vip::new(ip("10.0.0.1"), 443, Proto::Tcp);
        let vip2 = (
            l.vip(&v2),
            r#"{"addr":"10.0.0.1","port":443,"proto":"tcp"}"#.into(),
            1,
        );
        let same = (
            l.backend(&v2, ip("10.1.0.9")),
            r#"{"addr":"10.1.0.9","weight":1,"server_id":42}"#.into(),
            9,
        );
        let (vips, rej) = build(
            &l,
            &raw(&[
                vip_entry(&l, 1),
                vip2.clone(),
                (
                    l.backend(&v, ip("10.1.0.9")),
                    r#"{"addr":"10.1.0.9","weight":1,"server_id":42}"#.into(),
                    7,
                ),
                same,
            ]),
        );
        assert!(rej.is_empty(), "{rej:?}");
        assert_eq!(vips[&v2].backends.len(), 1);
        let other = (
            l.backend(&v2, ip("10.1.0.9")),
            r#"{"addr":"10.1.0.9","weight":1,"server_id":43}"#.into(),
            9,
        );
        let (_, rej) = build(
            &l,
            &raw(&[
                vip_entry(&l, 1),
                vip2,
                (
                    l.backend(&v, ip("10.1.0.9")),
                    r#"{"addr":"10.1.0.9","weight":1,"server_id":42}"#.into(),
                    7,
                ),
                other,
            ]),
        );
        assert_eq!(kinds(&rej), vec![RejectKind::DuplicateServerId]);
    }

    #[test]
    fn a_backend_written_before_its_vip_is_accepted_once_the_vip_exists() {
        let l = layout();
        let b = (
            l.backend(&vip(), ip("10.1.0.2")),
            r#"{"addr":"10.1.0.2","weight":1}"#.to_string(),
            1,
        );
        let (vips, rej) = build(&l, &raw(std::slice::from_ref(&b)));
        assert!(vips.is_empty());
        assert_eq!(kinds(&rej), vec![RejectKind::UnknownVip]);
        let (vips, rej) = build(&l, &raw(&[b, vip_entry(&l, 2)]));
        assert!(rej.is_empty(), "{rej:?}");
        assert_eq!(vips[&vip()].backends.len(), 1);
    }

    fn any_backend() -> impl Strategy<Value = BackendSpec> {
        (
            any::<u32>(),
            0u32..=MAX_WEIGHT + 2,
            any::<u32>(),
            any::<bool>(),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(a, w, id, drain, at)| BackendSpec {
                addr: IpAddr::V4(Ipv4Addr::from(a)),
                weight: w,
                server_id: ServerId::new(id),
                state: if drain {
                    BackendState::Draining
                } else {
                    BackendState::Active
                },
                updated_at_ms: at,
            })
    }

    proptest! {
        #[test]
        fn backend_json_round_trips_and_validation_matches_the_rules(b in any_backend()) {
            let bytes = serde_json::to_vec(&BackendJson::from(&b)).expect("serialize");
            let parsed = parse_backend(b.addr, &bytes);
            let addr_ok = check_addr("x", b.addr).is_ok();
            // The rule of `flowpin_lb_core::weight`: 0 (no new flows) to MAX_WEIGHT.
            let weight_ok = b.weight <= MAX_WEIGHT;
            match parsed {
                Ok(p) => { prop_assert!(addr_ok && weight_ok); prop_assert_eq!(p, b); }
                Err((kind, _)) => {
                    prop_assert!(!(addr_ok && weight_ok));
                    prop_assert_eq!(kind, if addr_ok { RejectKind::BadWeight } else { RejectKind::BadAddress });
                }
            }
        }

        #[test]
        fn vip_json_round_trips(a in any::<u32>(), port in any::<u16>(), udp in any::<bool>(),
                                pa in any::<bool>(), sl in any::<bool>(), sid in any::<bool>(), q in any::<bool>(),
                                at in proptest::option::of(any::<u64>())) {
            let proto = if udp { Proto::Udp } else { Proto::Tcp };
            let spec = VipSpec {
                updated_at_ms: at,
                ..VipSpec::new(Vip::new(IpAddr::V4(Ipv4Addr::from(a)), port, proto),
                    VipFlags::NONE.with(VipFlags::PORT_AGNOSTIC, pa).with(VipFlags::SKIP_LRU_UDP, sl).with(VipFlags::SERVER_ID, sid).with(VipFlags::QUIC, q))
            };
            let bytes = serde_json::to_vec(&spec).expect("serialize");
            match parse_vip(&spec.key(), &bytes) {
                Ok(p) => prop_assert_eq!(p, spec),
                Err((kind, _)) => prop_assert!(matches!(kind, RejectKind::BadFlags | RejectKind::BadAddress)),
            }
        }

        #[test]
        fn arbitrary_values_never_panic_and_never_pass_unchecked(value in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(b) = parse_backend(ip("10.1.0.2"), &value) {
                prop_assert!(check_backend(&b).is_ok());
                prop_assert_eq!(b.addr, ip("10.1.0.2"));
            }
            if let Ok(v) = parse_vip(&vip(), &value) {
                prop_assert_eq!(v.key(), vip());
            }
        }

        /// Whatever is written, the accepted set has unique server_ids per
        /// address and every backend's VIP exists.
        #[test]
        fn build_output_is_consistent(ids in proptest::collection::vec((0u8..6, 0u32..4, 0u8..3, 1i64..50), 0..20)) {
            let l = layout();
            let mut entries = vec![vip_entry(&l, 1)];
            for (host, id, which_vip, rev) in ids {
                let v = if which_vip == 2 { Vip::new(ip("10.0.0.7"), 80, Proto::Tcp) } else { vip() };
                let addr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, host + 1));
                entries.push((l.backend(&v, addr), format!(r#"{{"addr":"{addr}","weight":1,"server_id":{id}}}"#), rev));
            }
            let raw = raw(&entries);
            let (vips, rej) = build(&l, &raw);
            let accepted: usize = vips.values().map(|v| v.backends.len()).sum();
            prop_assert_eq!(accepted + rej.len() + 1, raw.len());
            let mut owner = HashMap::new();
            let mut by_addr = HashMap::new();
            for v in vips.values() {
                for b in v.backends.values() {
                    prop_assert_eq!(*by_addr.entry(b.addr).or_insert(b.server_id), b.server_id);
                    if let Some(id) = b.server_id {
                        prop_assert_eq!(*owner.entry(id).or_insert(b.addr), b.addr);
                    }
                }
            }
        }
    }
}
