//! What to probe and how often: [`HealthCheck`], stored with a VIP in the
//! registry (JSON) and validated before it is written or applied.
//!
//! ```json
//! {"probe":{"kind":"http","path":"/healthz","expect_status":200},
//!  "interval_ms":1000,"timeout_ms":500,"rise":2,"fall":3,"down_ms":30000}
//! ```
//!
//! Every field but `probe` has a default ([`HealthCheck::new`]); an unknown
//! field is an error (a typo never silently turns a check off).

use std::fmt;
use std::time::Duration;

use flowpin_bpf_abi::vip::Proto;
use serde::{Deserialize, Serialize};

/// Shortest accepted probe interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest accepted probe interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Largest accepted `rise` / `fall`.
pub const MAX_STREAK: u32 = 100;
/// Longest accepted HTTP path and UDP payloads, in bytes.
pub const MAX_PAYLOAD: usize = 1024;

/// One probe of a backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum ProbeKind {
    /// The TCP handshake completes (`{"kind":"tcp"}`).
    Tcp {},
    /// `GET path HTTP/1.1` answers with `expect_status`.
    Http {
        /// The request path (starts with `/`).
        path: String,
        /// The status code that passes (100..=599).
        #[serde(default = "default_status")]
        expect_status: u16,
    },
    /// A datagram `send` gets a reply starting with `expect` (empty: any
    /// reply passes).
    Udp {
        /// The request payload (UTF-8 text, 1..=MAX_PAYLOAD bytes).
        send: String,
        /// The expected start of the reply.
        #[serde(default)]
        expect: String,
    },
}

fn default_status() -> u16 {
    200
}

impl ProbeKind {
    /// `"tcp"`, `"http"` or `"udp"`.
    pub fn name(&self) -> &'static str {
        match self {
            ProbeKind::Tcp {} => "tcp",
            ProbeKind::Http { .. } => "http",
            ProbeKind::Udp { .. } => "udp",
        }
    }

    /// The transport the probe uses.
    pub fn proto(&self) -> Proto {
        match self {
            ProbeKind::Tcp {} | ProbeKind::Http { .. } => Proto::Tcp,
            ProbeKind::Udp { .. } => Proto::Udp,
        }
    }
}

/// The health check of one VIP: the probe, its timing and its damping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HealthCheck {
    /// What one probe does.
    pub probe: ProbeKind,
    /// Time between two probes of one backend, ms.
    #[serde(default = "d_interval")]
    pub interval_ms: u64,
    /// Time one probe may take, ms (≤ `interval_ms`).
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    /// Consecutive passes that make a down (or new) backend up.
    #[serde(default = "d_rise")]
    pub rise: u32,
    /// Consecutive failures that make an up backend down.
    #[serde(default = "d_fall")]
    pub fall: u32,
    /// Time down before the backend leaves the ring altogether (it is
    /// drained at once), ms; 0: never leaves, stays drained.
    #[serde(default = "d_down")]
    pub down_ms: u64,
    /// The port probed; `None`: the VIP's port (required for a
    /// port-agnostic VIP, whose port is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

fn d_interval() -> u64 {
    1000
}
fn d_timeout() -> u64 {
    500
}
fn d_rise() -> u32 {
    2
}
fn d_fall() -> u32 {
    3
}
fn d_down() -> u64 {
    30_000
}

/// Why a [`HealthCheck`] is refused. Nothing invalid is ever applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HealthConfigError {
    /// `interval_ms` out of range.
    #[error("interval_ms {0} is out of range: use {min}..={max}", min = MIN_INTERVAL.as_millis(), max = MAX_INTERVAL.as_millis())]
    Interval(u64),
    /// `timeout_ms` is 0 or longer than the interval.
    #[error("timeout_ms {timeout} must be 1..=interval_ms ({interval}): a probe has to end before the next starts")]
    Timeout {
        /// The timeout given.
        timeout: u64,
        /// The interval.
        interval: u64,
    },
    /// `rise` or `fall` out of range.
    #[error("{what} {value} is out of range: use 1..={MAX_STREAK}")]
    Streak {
        /// `rise` or `fall`.
        what: &'static str,
        /// The value given.
        value: u32,
    },
    /// The HTTP path is not an absolute path of printable ASCII.
    #[error("HTTP path {0:?} is not usable: give an absolute path (starting with '/') of printable ASCII without spaces, at most {MAX_PAYLOAD} bytes")]
    Path(String),
    /// The expected HTTP status is not a status code.
    #[error("expect_status {0} is not an HTTP status: use 100..=599")]
    Status(u16),
    /// A UDP payload is empty or too long.
    #[error("UDP {what} is {len} bytes: use {min}..={MAX_PAYLOAD}")]
    Payload {
        /// `send` or `expect`.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The least accepted.
        min: usize,
    },
    /// The probe's transport is not the VIP's.
    #[error("a {probe} probe cannot check a {vip} VIP: use {hint}")]
    Transport {
        /// The probe kind.
        probe: &'static str,
        /// The VIP's protocol.
        vip: Proto,
        /// What fits.
        hint: &'static str,
    },
    /// A port-agnostic VIP (port 0) without a probe port.
    #[error("the VIP is port-agnostic (port 0): set \"port\" to the port to probe")]
    NoPort,
    /// The probe port is 0.
    #[error("port 0 cannot be probed: give the service's port")]
    ZeroPort,
}

impl HealthCheck {
    /// A check with `probe` and the defaults: every 1 s, 500 ms timeout,
    /// rise 2, fall 3, out of the ring after 30 s down.
    pub fn new(probe: ProbeKind) -> HealthCheck {
        HealthCheck {
            probe,
            interval_ms: d_interval(),
            timeout_ms: d_timeout(),
            rise: d_rise(),
            fall: d_fall(),
            down_ms: d_down(),
            port: None,
        }
    }

    /// A TCP connect check.
    pub fn tcp() -> HealthCheck {
        HealthCheck::new(ProbeKind::Tcp {})
    }

    /// An HTTP `GET path` check expecting `status`.
    pub fn http(path: &str, status: u16) -> HealthCheck {
        HealthCheck::new(ProbeKind::Http {
            path: path.to_string(),
            expect_status: status,
        })
    }

    /// A UDP check: `send`, expect a reply starting with `expect`.
    pub fn udp(send: &str, expect: &str) -> HealthCheck {
        HealthCheck::new(ProbeKind::Udp {
            send: send.to_string(),
            expect: expect.to_string(),
        })
    }

    /// Sets interval and timeout.
    pub fn timing(mut self, interval: Duration, timeout: Duration) -> Self {
        self.interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets rise and fall.
    pub fn damping(mut self, rise: u32, fall: u32) -> Self {
        self.rise = rise;
        self.fall = fall;
        self
    }

    /// Sets the time down before leaving the ring (0: never).
    pub fn down_after(mut self, d: Duration) -> Self {
        self.down_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets the probe port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The longest time from the first failed probe to a down verdict:
    /// `interval × fall` (plus one timeout for the last probe).
    pub fn detection_time(&self) -> Duration {
        self.interval() * self.fall + self.timeout()
    }

    /// Checks the fields on their own (every one, first error returned).
    pub fn validate(&self) -> Result<(), HealthConfigError> {
        let iv = Duration::from_millis(self.interval_ms);
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&iv) {
            return Err(HealthConfigError::Interval(self.interval_ms));
        }
        if self.timeout_ms == 0 || self.timeout_ms > self.interval_ms {
            return Err(HealthConfigError::Timeout {
                timeout: self.timeout_ms,
                interval: self.interval_ms,
            });
        }
        for (what, value) in [("rise", self.rise), ("fall", self.fall)] {
            if !(1..=MAX_STREAK).contains(&value) {
                return Err(HealthConfigError::Streak { what, value });
            }
        }
        if self.port == Some(0) {
            return Err(HealthConfigError::ZeroPort);
        }
        match &self.probe {
            ProbeKind::Tcp {} => {}
            ProbeKind::Http {
                path,
                expect_status,
            } => {
                let ok = path.starts_with('/')
                    && path.len() <= MAX_PAYLOAD
                    && path.bytes().all(|b| b.is_ascii_graphic());
                if !ok {
                    return Err(HealthConfigError::Path(path.clone()));
                }
                if !(100..=599).contains(expect_status) {
                    return Err(HealthConfigError::Status(*expect_status));
                }
            }
            ProbeKind::Udp { send, expect } => {
                if send.is_empty() || send.len() > MAX_PAYLOAD {
                    return Err(HealthConfigError::Payload {
                        what: "send",
                        len: send.len(),
                        min: 1,
                    });
                }
                if expect.len() > MAX_PAYLOAD {
                    return Err(HealthConfigError::Payload {
                        what: "expect",
                        len: expect.len(),
                        min: 0,
                    });
                }
            }
        }
        Ok(())
    }

    /// [`validate`](Self::validate), and the check fits a VIP of `proto`
    /// on `port` (a TCP/HTTP probe for a TCP VIP, UDP for UDP; a probe port
    /// for a port-agnostic VIP).
    pub fn validate_for(&self, proto: Proto, port: u16) -> Result<(), HealthConfigError> {
        self.validate()?;
        if self.probe.proto() != proto {
            let hint = match proto {
                Proto::Tcp => "a tcp or http probe",
                Proto::Udp => "a udp probe",
            };
            return Err(HealthConfigError::Transport {
                probe: self.probe.name(),
                vip: proto,
                hint,
            });
        }
        if port == 0 && self.port.is_none() {
            return Err(HealthConfigError::NoPort);
        }
        Ok(())
    }

    /// The port probed on a VIP of `vip_port`.
    pub fn probe_port(&self, vip_port: u16) -> u16 {
        self.port.unwrap_or(vip_port)
    }
}

impl fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.probe {
            ProbeKind::Tcp {} => write!(f, "tcp")?,
            ProbeKind::Http {
                path,
                expect_status,
            } => write!(f, "http GET {path} -> {expect_status}")?,
            ProbeKind::Udp { send, .. } => write!(f, "udp {send:?}")?,
        }
        write!(
            f,
            " every {}ms (timeout {}ms, rise {}, fall {}, out after {}ms down)",
            self.interval_ms, self.timeout_ms, self.rise, self.fall, self.down_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_and_defaults() {
        let c: HealthCheck =
            serde_json::from_str(r#"{"probe":{"kind":"http","path":"/healthz"}}"#).expect("json");
        assert_eq!(c, HealthCheck::http("/healthz", 200));
        assert_eq!(
            (c.interval_ms, c.timeout_ms, c.rise, c.fall),
            (1000, 500, 2, 3)
        );
        let back: HealthCheck =
            serde_json::from_str(&serde_json::to_string(&c).expect("ser")).expect("de");
        assert_eq!(back, c);
        let u: HealthCheck = serde_json::from_str(
            r#"{"probe":{"kind":"udp","send":"ping","expect":"pong"},"fall":5}"#,
        )
        .expect("json");
        assert_eq!(u, HealthCheck::udp("ping", "pong").damping(2, 5));
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        for bad in [
            r#"{"probe":{"kind":"tcp"},"intervall_ms":1000}"#,
            r#"{"probe":{"kind":"icmp"}}"#,
            r#"{"probe":{"kind":"http"}}"#,
            r#"{"probe":{"kind":"tcp","path":"/"}}"#,
            r#"{"interval_ms":1000}"#,
        ] {
            assert!(serde_json::from_str::<HealthCheck>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_bad_value_is_refused_with_its_reason() {
        let t = HealthCheck::tcp();
        assert_eq!(t.validate(), Ok(()));
        let cases: Vec<(HealthCheck, HealthConfigError)> = vec![
            (
                t.clone()
                    .timing(Duration::from_millis(50), Duration::from_millis(10)),
                HealthConfigError::Interval(50),
            ),
            (
                t.clone().timing(Duration::from_secs(1), Duration::ZERO),
                HealthConfigError::Timeout {
                    timeout: 0,
                    interval: 1000,
                },
            ),
            (
                t.clone()
                    .timing(Duration::from_secs(1), Duration::from_secs(2)),
                HealthConfigError::Timeout {
                    timeout: 2000,
                    interval: 1000,
                },
            ),
            (
                t.clone().damping(0, 3),
                HealthConfigError::Streak {
                    what: "rise",
                    value: 0,
                },
            ),
            (
                t.clone().damping(2, 101),
                HealthConfigError::Streak {
                    what: "fall",
                    value: 101,
                },
            ),
            (t.clone().port(0), HealthConfigError::ZeroPort),
            (
                HealthCheck::http("healthz", 200),
                HealthConfigError::Path("healthz".into()),
            ),
            (
                HealthCheck::http("/a b", 200),
                HealthConfigError::Path("/a b".into()),
            ),
            (HealthCheck::http("/", 99), HealthConfigError::Status(99)),
            (
                HealthCheck::udp("", "x"),
                HealthConfigError::Payload {
                    what: "send",
                    len: 0,
                    min: 1,
                },
            ),
        ];
        for (c, want) in cases {
            assert_eq!(c.validate(), Err(want.clone()), "{c}");
            assert!(!want.to_string().is_empty());
        }
    }

    #[test]
    fn the_probe_must_fit_the_vip() {
        assert!(HealthCheck::tcp().validate_for(Proto::Tcp, 80).is_ok());
        assert!(HealthCheck::http("/", 200)
            .validate_for(Proto::Tcp, 80)
            .is_ok());
        assert!(HealthCheck::udp("p", "")
            .validate_for(Proto::Udp, 53)
            .is_ok());
        let e = HealthCheck::tcp()
            .validate_for(Proto::Udp, 53)
            .expect_err("tcp on udp");
        assert!(e.to_string().contains("a udp probe"), "{e}");
        assert!(matches!(
            HealthCheck::udp("p", "").validate_for(Proto::Tcp, 80),
            Err(HealthConfigError::Transport { .. })
        ));
        assert_eq!(
            HealthCheck::tcp().validate_for(Proto::Tcp, 0),
            Err(HealthConfigError::NoPort)
        );
        assert!(HealthCheck::tcp()
            .port(80)
            .validate_for(Proto::Tcp, 0)
            .is_ok());
        assert_eq!(HealthCheck::tcp().port(81).probe_port(0), 81);
        assert_eq!(HealthCheck::tcp().probe_port(80), 80);
    }

    #[test]
    fn detection_time_is_interval_times_fall_plus_timeout() {
        let c = HealthCheck::tcp().timing(Duration::from_secs(1), Duration::from_millis(500));
        assert_eq!(c.detection_time(), Duration::from_millis(3500));
    }
}
