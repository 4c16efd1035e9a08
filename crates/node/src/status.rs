//! What `GET /status` of `flowpin-node lb` answers: [`LbStatus`] as JSON.
//!
//! The node serializes these types; a client (the lab, a test, an
//! operator's tool) deserializes the same types instead of guessing at
//! keys. Unknown keys are ignored when reading, so a newer node can add
//! fields without breaking an older reader.
//!
//! ```json
//! {"role":"lb","pid":4242,"revision":17,"registry_connected":true,
//!  "reopened":false,"xdp_mode":"native","apply_errors":0,
//!  "vips":{"10.100.0.1:8080/tcp":{"digest":"5f0c2e9a1b3d4c6e",
//!          "backends":3,"draining":1,
//!          "backend_addrs":["10.2.1.2","10.2.2.2","10.2.3.2"]}}}
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod cid;
pub use cid::{CidStatus, QuicLbConfStatus};

/// The role a node process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NodeRole {
    /// `flowpin-node lb`: `xdp_lb` following the registry.
    Lb,
    /// `flowpin-node backend`: decap, sock_ops server role, registration.
    Backend,
}

/// The JSON status of `flowpin-node lb` (`GET /status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LbStatus {
    /// Always [`NodeRole::Lb`].
    pub role: NodeRole,
    /// The node's process id.
    pub pid: u32,
    /// etcd revision of the last registry snapshot applied without error
    /// (0 before the first one). It moves with changes under `routing/`
    /// (see `flowpin_registry::Snapshot::revision`): wait for
    /// `revision >= r`, `r` the revision a write returned.
    pub revision: i64,
    /// Whether the registry watch is connected to etcd.
    pub registry_connected: bool,
    /// Whether the data path was reopened from its pins at start-up (a
    /// restart), rather than loaded.
    pub reopened: bool,
    /// How the XDP program is attached, as the link reports it (e.g.
    /// `native`, `generic`).
    pub xdp_mode: String,
    /// Snapshot applications that failed (each re-planned).
    pub apply_errors: u64,
    /// Per VIP, by its name `addr:port/proto` in lower case (e.g.
    /// `10.100.0.1:8080/tcp`), sorted.
    pub vips: BTreeMap<String, VipStatus>,
    /// Every health-checked backend: this LB's probes next to the fleet's
    /// decision (empty without health checks; absent from older nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<BackendHealth>,
}

/// One health-checked backend of an [`LbStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BackendHealth {
    /// The VIP's name, `addr:port/proto`.
    pub vip: String,
    /// The backend's address.
    pub backend: IpAddr,
    /// This LB's damped verdict: `up`, `down` or `unknown`.
    pub state: String,
    /// What the fleet applies: `healthy`, `drained` or `removed`.
    pub fleet: String,
    /// Live LBs with a verdict on it.
    pub verdicts: usize,
    /// This LB's verdict differs from the quorum's.
    pub disagrees: bool,
    /// The backend reported itself unhealthy.
    pub self_reported_down: bool,
    /// Latency of this LB's last probe, µs.
    pub last_latency_us: Option<u64>,
    /// Why this LB's last probe failed.
    pub last_failure: Option<String>,
    /// Probes this LB ran.
    pub probes: u64,
    /// This LB's probe failures by reason.
    pub failures: BTreeMap<String, u64>,
}

/// One VIP of an [`LbStatus`], as the LB holds it in its maps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VipStatus {
    /// Digest of the VIP's Maglev ring: two LBs with one digest send a new
    /// flow to the same backend.
    pub digest: RingDigest,
    /// Backends of the VIP, draining ones included.
    pub backends: usize,
    /// Of those, how many are draining (no new flows).
    pub draining: usize,
    /// Their addresses, in the order the LB holds them.
    pub backend_addrs: Vec<IpAddr>,
    /// The VIP's connection-ID layout and QUIC-LB configurations (never
    /// keys); absent from nodes that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<CidStatus>,
}

impl VipStatus {
    /// The status of a VIP whose ring has `digest` and whose backends are
    /// `backend_addrs`, `draining` of them draining.
    pub fn new(digest: RingDigest, backend_addrs: Vec<IpAddr>, draining: usize) -> Self {
        VipStatus {
            digest,
            backends: backend_addrs.len(),
            draining,
            backend_addrs,
            cid: None,
        }
    }
}

impl LbStatus {
    /// The status of an LB node (`role` [`NodeRole::Lb`], this process's
    /// id) with no VIP yet; fill [`LbStatus::vips`] after.
    pub fn new(
        revision: i64,
        registry_connected: bool,
        reopened: bool,
        xdp_mode: impl Into<String>,
        apply_errors: u64,
    ) -> Self {
        LbStatus {
            role: NodeRole::Lb,
            pid: std::process::id(),
            revision,
            registry_connected,
            reopened,
            xdp_mode: xdp_mode.into(),
            apply_errors,
            vips: BTreeMap::new(),
            health: Vec::new(),
        }
    }
}

/// SipHash-1-3 of every ring slot's backend (see the node's `plan`
/// module): written in JSON and in the `flowpin_lb_ring_digest` metric as
/// 16 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RingDigest(pub u64);

impl fmt::Display for RingDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A ring digest that is not 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ring digest {0:?} is not 16 hex digits (e.g. 5f0c2e9a1b3d4c6e)")]
pub struct ParseDigestError(String);

impl FromStr for RingDigest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseDigestError(s.to_string()));
        }
        u64::from_str_radix(s, 16)
            .map(RingDigest)
            .map_err(|_| ParseDigestError(s.to_string()))
    }
}

impl Serialize for RingDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RingDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LbStatus {
        let mut s = LbStatus::new(17, true, false, "native", 0);
        s.pid = 4242;
        s.vips.insert(
            "10.100.0.1:8080/tcp".into(),
            VipStatus::new(
                RingDigest(0x5f0c_2e9a_1b3d_4c6e),
                vec![
                    "10.2.1.2".parse().expect("ip"),
                    "10.2.2.2".parse().expect("ip"),
                    "10.2.3.2".parse().expect("ip"),
                ],
                1,
            ),
        );
        s
    }

    /// The JSON keys and value shapes the node has always served.
    #[test]
    fn status_json_keeps_its_keys() {
        let v = serde_json::to_value(sample()).expect("serialize");
        let want = serde_json::json!({
            "role": "lb",
            "pid": 4242,
            "revision": 17,
            "registry_connected": true,
            "reopened": false,
            "xdp_mode": "native",
            "apply_errors": 0,
            "vips": {
                "10.100.0.1:8080/tcp": {
                    "digest": "5f0c2e9a1b3d4c6e",
                    "backends": 3,
                    "draining": 1,
                    "backend_addrs": ["10.2.1.2", "10.2.2.2", "10.2.3.2"],
                }
            }
        });
        assert_eq!(v, want);
    }

    #[test]
    fn status_round_trips_and_ignores_unknown_keys() {
        let s = sample();
        let text = serde_json::to_string(&s).expect("serialize");
        assert_eq!(serde_json::from_str::<LbStatus>(&text).expect("parse"), s);
        let mut v = serde_json::to_value(&s).expect("serialize");
        v["added_later"] = serde_json::json!(1);
        assert_eq!(serde_json::from_value::<LbStatus>(v).expect("parse"), s);
    }

    #[test]
    fn digest_is_sixteen_hex_digits() {
        assert_eq!(RingDigest(0xab).to_string(), "00000000000000ab");
        assert_eq!("00000000000000ab".parse(), Ok(RingDigest(0xab)));
        for bad in [
            "ab",
            "+000000000000000",
            "00000000000000zz",
            "000000000000000ab",
        ] {
            assert!(bad.parse::<RingDigest>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<RingDigest>("\"xyz\"").is_err());
    }
}
