//! The TOML configuration of both roles, parsed with serde and validated
//! as a whole (every error says which field and what to write instead).
//!
//! ```toml
//! # lb.toml
//! [registry]
//! endpoints = ["http://127.0.0.1:2379"]
//! prefix = "/flowpin/prod"
//!
//! [lb]
//! interface = "eth0"
//! netns = "/run/netns/lb1"          # optional: the interface lives there
//! pin_dir = "/sys/fs/bpf/flowpin/lb1"
//! local_mac = "02:00:00:00:00:01"
//! next_hop_mac = "02:00:00:00:00:02"
//! tunnel_src_v4 = "10.200.0.0/16"
//! conn_table_shared = false
//!
//! [metrics]
//! listen = "127.0.0.1:9100"
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flowpin_registry::{Proto, Vip};
use serde::Deserialize;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, or a field of the wrong type / an unknown field.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message (line, column, what was expected).
        message: String,
    },
    /// A field has a value the node cannot use.
    #[error("config field `{field}`: {why}")]
    Invalid {
        /// The field, dotted (`lb.local_mac`).
        field: &'static str,
        /// What is wrong and what to write instead.
        why: String,
    },
}

type Result<T> = std::result::Result<T, ConfigError>;

mod registry;
pub use registry::{EtcdTlsSection, RegistrySection, Secret};

fn invalid(field: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        why: why.into(),
    }
}

/// The metrics / status HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address to listen on (default `127.0.0.1:9100`: loopback only, set
    /// an address of the host to let a Prometheus elsewhere scrape; port 0
    /// picks a free one, written to `port_file` if set).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// File to write the bound port to (for labs and tests).
    #[serde(default)]
    pub port_file: Option<PathBuf>,
}

/// The default status/metrics listener: loopback only.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9100);

fn default_listen() -> SocketAddr {
    DEFAULT_METRICS_LISTEN
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            listen: DEFAULT_METRICS_LISTEN,
            port_file: None,
        }
    }
}

/// XDP attach mode as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeConfig {
    /// Native, falling back to generic.
    #[default]
    Auto,
    /// Native only.
    Native,
    /// Generic (skb) only.
    Generic,
}

/// What the LB does with its pinned data path when it exits on SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnExit {
    /// Leave it pinned and running (the next `node lb` reopens it).
    #[default]
    Keep,
    /// Unpin everything: the program detaches.
    Remove,
}

/// `[lb]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbSection {
    /// The interface `xdp_lb` runs on.
    pub interface: String,
    /// Network namespace file of the interface (`/run/netns/<name>`).
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// Network namespace file of the interface's veth peer, when it lives
    /// in another namespace (optional): only used to read the peer's TX
    /// checksum offload, after the kernel confirms (`RTM_GETNSID`) that it
    /// is the peer's namespace. Without it that one check is reported as
    /// not done; the node never looks into namespaces it was not given.
    #[serde(default)]
    pub peer_netns: Option<PathBuf>,
    /// Pin directory on bpffs (maps, program, link).
    pub pin_dir: PathBuf,
    /// MAC of `interface` (source of encapsulated frames).
    pub local_mac: String,
    /// MAC of the next hop (the router).
    pub next_hop_mac: String,
    /// Outer IPv4 source prefix (`10.200.0.0/16`), varied per flow.
    #[serde(default)]
    pub tunnel_src_v4: Option<String>,
    /// One connection table shared by all CPUs (for NICs without RSS, e.g. veth).
    #[serde(default)]
    pub conn_table_shared: bool,
    /// Maglev table size (a prime); default 65537.
    #[serde(default)]
    pub ring_size: Option<u32>,
    /// Connection-table memory in MiB (default 16).
    #[serde(default)]
    pub lru_memory_mib: Option<u64>,
    /// XDP attach mode.
    #[serde(default)]
    pub xdp_mode: XdpModeConfig,
    /// What to do with the pins on SIGTERM.
    #[serde(default)]
    pub on_exit: OnExit,
    /// Health probes through the tunnel (`probe_encap`) and how verdicts
    /// count: `health = { rule = "quorum" }` (default) or `"local"`.
    #[serde(default)]
    pub health: HealthSection,
}

/// Whose health verdicts the LB applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HealthRule {
    /// A strict majority of the live LBs' verdicts (the fleet's rule).
    #[default]
    Quorum,
    /// Only this LB's own verdicts (a single LB; forced with a registry file).
    Local,
}

/// `[lb] health = { ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// Probe the backends of VIPs with a health check (default true).
    #[serde(default = "yes_health")]
    pub enabled: bool,
    /// `quorum` (default) or `local`.
    #[serde(default)]
    pub rule: HealthRule,
    /// This LB's identity in the verdict keys (default: host name, `-`,
    /// the pin directory's last component).
    #[serde(default)]
    pub id: Option<String>,
    /// TTL of the lease the verdicts live under, seconds (default 10).
    #[serde(default = "default_verdict_ttl")]
    pub verdict_ttl_secs: u64,
    /// Backends the probe program can tunnel to (default 4096).
    #[serde(default = "default_probe_backends")]
    pub max_backends: u32,
}

fn yes_health() -> bool {
    true
}
fn default_verdict_ttl() -> u64 {
    10
}
fn default_probe_backends() -> u32 {
    4096
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            enabled: true,
            rule: HealthRule::Quorum,
            id: None,
            verdict_ttl_secs: default_verdict_ttl(),
            max_backends: default_probe_backends(),
        }
    }
}

/// The parsed `lb.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbConfig {
    /// `[registry]`.
    pub registry: RegistrySection,
    /// `[lb]`.
    pub lb: LbSection,
    /// `[metrics]` (default: `127.0.0.1:9100`).
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// A VIP a backend serves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    /// VIP address.
    pub addr: IpAddr,
    /// VIP port.
    pub port: u16,
    /// `tcp` or `udp`.
    #[serde(default = "default_proto")]
    pub proto: String,
}

fn default_proto() -> String {
    "tcp".into()
}

/// `[backend]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    /// Host name the server_id is claimed for (stable across restarts).
    pub host: String,
    /// This host's tunnel address (what LBs encapsulate to).
    pub address: IpAddr,
    /// Ingress interface (`xdp_decap` runs there).
    pub interface: String,
    /// Network namespace file of the interface and the service.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// cgroup v2 directory of the service processes (sock_ops server role).
    pub cgroup: PathBuf,
    /// Maglev weight, `0..=65536` (the one rule, `flowpin_lb_core::weight`):
    /// the host's share of each VIP's ring; 0 registers it without new flows
    /// (still reachable by server_id and the connection table).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Register with a server_id (the sock_ops program writes it into SYN-ACKs).
    #[serde(default = "yes")]
    pub server_id: bool,
    /// Lease TTL in seconds (a dead host disappears after it).
    #[serde(default = "default_ttl")]
    pub lease_ttl_secs: u64,
    /// Longest drain on SIGTERM before deregistering anyway.
    #[serde(default = "default_drain")]
    pub drain_timeout_secs: u64,
    /// VIPs served.
    pub vips: Vec<VipConfig>,
    /// XDP attach mode.
    #[serde(default)]
    pub xdp_mode: XdpModeConfig,
    /// Pin directory on bpffs of the agent's data path (`decap/`,
    /// `sockops/`); default `/sys/fs/bpf/flowpin/backend-<host>`. A
    /// restarted or upgraded agent reopens what is pinned there.
    #[serde(default)]
    pub pin_dir: Option<PathBuf>,
    /// What SIGTERM / SIGINT do (SIGUSR2 always hands over: `keep`).
    #[serde(default)]
    pub on_exit: BackendOnExit,
    /// Run when draining starts (e.g. `["curl", "-X", "POST",
    /// "http://127.0.0.1:8080/drain"]`): asks the service to close its
    /// keep-alive connections. Not waited for.
    #[serde(default)]
    pub drain_command: Option<Vec<String>>,
    /// The service's own health check (optional): a command (exit 0
    /// passes) or an HTTP endpoint (2xx passes); a failing service is
    /// reported unhealthy to the registry and every LB drains it.
    #[serde(default)]
    pub health_check: Option<SelfCheckConfig>,
}

/// `[backend] health_check = { command = [...] }` or `{ http = "..." }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfCheckConfig {
    /// The program and its arguments; exit status 0 passes.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// `http://host:port/path` (plain HTTP); a 2xx status passes.
    #[serde(default)]
    pub http: Option<String>,
    /// Seconds between checks (default 1).
    #[serde(default = "one_sec")]
    pub interval_secs: u64,
    /// Seconds a check may take (default 1).
    #[serde(default = "one_sec")]
    pub timeout_secs: u64,
    /// Failures in a row that report the service unhealthy (default 3).
    #[serde(default = "three")]
    pub fall: u32,
    /// Passes in a row that report it healthy again (default 2).
    #[serde(default = "two")]
    pub rise: u32,
}

fn one_sec() -> u64 {
    1
}
fn three() -> u32 {
    3
}
fn two() -> u32 {
    2
}

/// `http://host:port/path` → (`host:port`, `/path`); `None` if not plain HTTP.
pub fn parse_http_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Some((authority, path.to_string()))
}

/// What the backend agent does on SIGTERM / SIGINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendOnExit {
    /// Leave: drain, deregister, remove the pins (the programs detach).
    #[default]
    Drain,
    /// Hand over to the next agent (a restart, an upgrade): pins and
    /// registration stay; the backends leave the LBs after `lease_ttl_secs`
    /// if no agent takes over.
    Keep,
}

fn default_weight() -> u32 {
    100
}
fn yes() -> bool {
    true
}
fn default_ttl() -> u64 {
    5
}
fn default_drain() -> u64 {
    30
}

/// The parsed `backend.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `[registry]`.
    pub registry: RegistrySection,
    /// `[backend]`.
    pub backend: BackendSection,
    /// `[metrics]` (optional for a backend).
    #[serde(default)]
    pub metrics: Option<MetricsSection>,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Parses `a.b.c.d/len` (IPv4).
pub fn parse_v4_prefix(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, l) = s.split_once('/')?;
    let len: u8 = l.parse().ok()?;
    (len <= 32).then_some((a.parse().ok()?, len))
}

impl LbConfig {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<LbConfig> {
        Self::from_toml(path, &read(path)?)
    }

    /// Parses and validates `text` (named `path` in errors).
    pub fn from_toml(path: &Path, text: &str) -> Result<LbConfig> {
        let c: LbConfig = parse(path, text)?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        self.registry.validate_for(true)?;
        let lb = &self.lb;
        if lb.interface.is_empty() || lb.interface.len() > 15 {
            return Err(invalid(
                "lb.interface",
                "an interface name is 1 to 15 bytes",
            ));
        }
        if !lb.pin_dir.starts_with("/sys/fs/bpf") {
            return Err(invalid(
                "lb.pin_dir",
                format!(
                    "{} is not under /sys/fs/bpf: pins live on bpffs, e.g. /sys/fs/bpf/flowpin/lb1",
                    lb.pin_dir.display()
                ),
            ));
        }
        for (field, v) in [
            ("lb.local_mac", &lb.local_mac),
            ("lb.next_hop_mac", &lb.next_hop_mac),
        ] {
            if parse_mac(v).is_none() {
                return Err(invalid(
                    field,
                    format!("{v:?} is not a MAC address: write six hex bytes, aa:bb:cc:dd:ee:ff"),
                ));
            }
        }
        if let Some(p) = &lb.tunnel_src_v4 {
            if parse_v4_prefix(p).is_none() {
                return Err(invalid(
                    "lb.tunnel_src_v4",
                    format!("{p:?} is not an IPv4 prefix: write it as 10.200.0.0/16"),
                ));
            }
        }
        let h = &lb.health;
        if let Some(id) = &h.id {
            if !flowpin_registry::keys::valid_host(id) {
                return Err(invalid(
                    "lb.health.id",
                    format!("{id:?} is not an LB identity: 1 to 253 printable bytes without '/' or spaces"),
                ));
            }
        }
        if !(2..=3600).contains(&h.verdict_ttl_secs) {
            return Err(invalid(
                "lb.health.verdict_ttl_secs",
                format!(
                    "{} is out of range: write 2 to 3600 seconds (default 10)",
                    h.verdict_ttl_secs
                ),
            ));
        }
        if !(1..=65536).contains(&h.max_backends) {
            return Err(invalid(
                "lb.health.max_backends",
                format!(
                    "{} is out of range: write 1 to 65536 (default 4096)",
                    h.max_backends
                ),
            ));
        }
        if let Some(m) = lb.ring_size {
            if m < 3 || !is_prime(m) {
                return Err(invalid(
                    "lb.ring_size",
                    format!("{m} is not a prime ≥ 3: Maglev needs a prime table size, e.g. 65537"),
                ));
            }
        }
        Ok(())
    }

    /// This LB's identity in its health verdicts.
    pub fn health_id(&self) -> String {
        if let Some(id) = &self.lb.health.id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let dir = self
            .lb
            .pin_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id: String = format!("{host}-{dir}")
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && c != '/' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        id
    }

    /// The quorum rule the LB applies (local-only with a registry file).
    pub fn quorum_rule(&self) -> flowpin_registry::health::QuorumRule {
        use flowpin_registry::health::QuorumRule;
        if self.registry.file.is_some() || self.lb.health.rule == HealthRule::Local {
            QuorumRule::Local {
                lb: self.health_id(),
            }
        } else {
            QuorumRule::Majority
        }
    }

    /// The MACs, parsed (validated at load).
    pub fn macs(&self) -> ([u8; 6], [u8; 6]) {
        (
            parse_mac(&self.lb.local_mac).unwrap_or_default(),
            parse_mac(&self.lb.next_hop_mac).unwrap_or_default(),
        )
    }

    /// Fields a SIGHUP cannot change (they need a restart), as a list of
    /// names that differ between `self` and `new`.
    pub fn restart_only_changes(&self, new: &LbConfig) -> Vec<&'static str> {
        let (a, b) = (&self.lb, &new.lb);
        let mut out = Vec::new();
        if a.interface != b.interface || a.netns != b.netns {
            out.push("lb.interface/lb.netns");
        }
        if a.health != b.health {
            out.push("lb.health");
        }
        if a.pin_dir != b.pin_dir {
            out.push("lb.pin_dir");
        }
        if a.ring_size != b.ring_size
            || a.conn_table_shared != b.conn_table_shared
            || a.lru_memory_mib != b.lru_memory_mib
        {
            out.push("lb.ring_size/lb.conn_table_shared");
        }
        if a.xdp_mode != b.xdp_mode {
            out.push("lb.xdp_mode");
        }
        if self.metrics != new.metrics {
            out.push("metrics");
        }
        out
    }
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

impl BackendConfig {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<BackendConfig> {
        Self::from_toml(path, &read(path)?)
    }

    /// Parses and validates `text` (named `path` in errors).
    pub fn from_toml(path: &Path, text: &str) -> Result<BackendConfig> {
        let c: BackendConfig = parse(path, text)?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        self.registry.validate_for(false)?;
        let b = &self.backend;
        if b.host.is_empty() || b.host.contains('/') {
            return Err(invalid(
                "backend.host",
                format!("{:?}: a host name, non-empty, without '/'", b.host),
            ));
        }
        if b.address.is_unspecified() || b.address.is_multicast() {
            return Err(invalid(
                "backend.address",
                format!(
                    "{} cannot be a tunnel destination: write this host's unicast address",
                    b.address
                ),
            ));
        }
        if let Err(e) = flowpin_lb_core::weight::validate(b.weight) {
            return Err(invalid("backend.weight", e.to_string()));
        }
        let ttl = Duration::from_secs(b.lease_ttl_secs);
        if ttl < flowpin_registry::MIN_TTL || ttl > flowpin_registry::MAX_TTL {
            return Err(invalid(
                "backend.lease_ttl_secs",
                format!(
                    "{} s is outside {:?}..={:?}",
                    b.lease_ttl_secs,
                    flowpin_registry::MIN_TTL,
                    flowpin_registry::MAX_TTL
                ),
            ));
        }
        if b.vips.is_empty() {
            return Err(invalid(
                "backend.vips",
                "empty: list the VIPs this host serves, [[backend.vips]] addr = \"10.100.0.1\" port = 8080",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for v in &b.vips {
            let key = vip_key(v)?;
            if !seen.insert(key) {
                return Err(invalid(
                    "backend.vips",
                    format!("{key} is listed twice: list each VIP once"),
                ));
            }
        }
        if let Some(d) = &b.pin_dir {
            if !d.starts_with("/sys/fs/bpf") {
                return Err(invalid(
                    "backend.pin_dir",
                    format!(
                        "{} is not under /sys/fs/bpf: pins live on bpffs, e.g. /sys/fs/bpf/flowpin/backend",
                        d.display()
                    ),
                ));
            }
        }
        if let Some(h) = &b.health_check {
            let field = "backend.health_check";
            match (&h.command, &h.http) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(invalid(
                        field,
                        "give exactly one of command = [\"prog\", \"arg\"] or http = \"http://127.0.0.1:8080/healthz\"",
                    ))
                }
                (Some(c), None) if c.is_empty() => {
                    return Err(invalid(field, "command is empty: write the program and its arguments"))
                }
                (None, Some(u)) if parse_http_url(u).is_none() => {
                    return Err(invalid(
                        field,
                        format!("{u:?} is not a plain HTTP URL: write http://host:port/path"),
                    ))
                }
                _ => {}
            }
            if h.interval_secs == 0
                || h.timeout_secs == 0
                || h.timeout_secs > h.interval_secs.max(1) * 10
            {
                return Err(invalid(
                    field,
                    "interval_secs and timeout_secs are at least 1 (timeout at most 10 intervals)",
                ));
            }
            if h.fall == 0 || h.rise == 0 {
                return Err(invalid(field, "fall and rise are at least 1"));
            }
        }
        if b.drain_command.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(invalid(
                "backend.drain_command",
                "empty: write the program and its arguments, e.g. [\"curl\", \"-X\", \"POST\", \"http://127.0.0.1:8080/drain\"], or leave it out",
            ));
        }
        Ok(())
    }

    /// The pin directory (`backend.pin_dir`, default
    /// `/sys/fs/bpf/flowpin/backend-<host>`).
    pub fn pin_dir(&self) -> PathBuf {
        self.backend.pin_dir.clone().unwrap_or_else(|| {
            PathBuf::from(format!("/sys/fs/bpf/flowpin/backend-{}", self.backend.host))
        })
    }

    /// The VIPs as registry keys (validated at load).
    pub fn vip_keys(&self) -> Vec<Vip> {
        self.backend
            .vips
            .iter()
            .filter_map(|v| vip_key(v).ok())
            .collect()
    }

    /// The lease TTL.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.backend.lease_ttl_secs)
    }
}

fn vip_key(v: &VipConfig) -> Result<Vip> {
    let proto: Proto = v.proto.parse().map_err(|_| {
        invalid(
            "backend.vips.proto",
            format!("{:?}: write \"tcp\" or \"udp\"", v.proto),
        )
    })?;
    if v.port == 0 {
        return Err(invalid(
            "backend.vips.port",
            "0: a backend serves a VIP on one port",
        ));
    }
    Ok(Vip::new(v.addr, v.port, proto))
}

mod client;
pub use client::{ClientConfig, ClientOnExit, ClientSection};

#[cfg(test)]
mod tests;
