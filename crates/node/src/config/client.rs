//! `client.toml`: the sock_ops client role on the cgroup of the proxy or
//! service that connects to the VIPs.
//!
//! ```toml
//! [client]
//! cgroup = "/sys/fs/cgroup/system.slice/envoy.service"
//! pin_dir = "/sys/fs/bpf/flowpin/client"   # optional (this default)
//! on_exit = "keep"                          # or "remove"
//!
//! [metrics]                                 # optional
//! listen = "127.0.0.1:9102"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{invalid, parse, read, ConfigError, MetricsSection};

/// What the client role does with its pins on SIGTERM / SIGINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientOnExit {
    /// Leave the program pinned and attached (the next `node client`
    /// reopens it; connections keep echoing meanwhile).
    #[default]
    Keep,
    /// Unpin: the program detaches; connections stop echoing.
    Remove,
}

/// `[client]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// cgroup v2 directory of the processes that connect to the VIPs.
    pub cgroup: PathBuf,
    /// Pin directory on bpffs (default `/sys/fs/bpf/flowpin/client`).
    #[serde(default)]
    pub pin_dir: Option<PathBuf>,
    /// What SIGTERM / SIGINT do with the pins (SIGUSR2 always keeps them).
    #[serde(default)]
    pub on_exit: ClientOnExit,
}

/// The parsed `client.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// `[client]`.
    pub client: ClientSection,
    /// `[metrics]` (optional).
    #[serde(default)]
    pub metrics: Option<MetricsSection>,
}

impl ClientConfig {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<ClientConfig, ConfigError> {
        Self::from_toml(path, &read(path)?)
    }

    /// Parses and validates `text` (named `path` in errors).
    pub fn from_toml(path: &Path, text: &str) -> Result<ClientConfig, ConfigError> {
        let c: ClientConfig = parse(path, text)?;
        if !c.client.cgroup.is_absolute() {
            return Err(invalid(
                "client.cgroup",
                format!(
                    "{}: write the absolute cgroup v2 directory, e.g. /sys/fs/cgroup/system.slice/envoy.service",
                    c.client.cgroup.display()
                ),
            ));
        }
        if !c.pin_dir().starts_with("/sys/fs/bpf") {
            return Err(invalid(
                "client.pin_dir",
                format!(
                    "{} is not under /sys/fs/bpf: pins live on bpffs, e.g. /sys/fs/bpf/flowpin/client",
                    c.pin_dir().display()
                ),
            ));
        }
        Ok(c)
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> PathBuf {
        self.client
            .pin_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/flowpin/client"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_config_defaults_and_errors() {
        let p = Path::new("client.toml");
        let c = ClientConfig::from_toml(p, "[client]\ncgroup = \"/sys/fs/cgroup/x\"\n").unwrap();
        assert_eq!(c.pin_dir(), PathBuf::from("/sys/fs/bpf/flowpin/client"));
        assert_eq!(c.client.on_exit, ClientOnExit::Keep);
        let e = ClientConfig::from_toml(p, "[client]\ncgroup = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("client.cgroup"), "{e}");
        let e = ClientConfig::from_toml(
            p,
            "[client]\ncgroup = \"/sys/fs/cgroup/x\"\npin_dir = \"/tmp/p\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("client.pin_dir"), "{e}");
        let e = ClientConfig::from_toml(p, "[client]\ncgroup = \"/x\"\nports = [1]\n").unwrap_err();
        assert!(e.to_string().contains("ports"), "{e}");
    }
}
