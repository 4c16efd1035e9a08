//! `[registry]`: where etcd is, its TLS and the user to authenticate as
//! (the part of the configuration every role shares).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{invalid, parse, read, ConfigError, Result};

/// Where the registry is, and how to authenticate to it.
///
/// ```toml
/// [registry]
/// endpoints = ["https://10.0.0.10:2379"]
/// prefix = "/flowpin/prod"
/// user = "flowpin"                              # etcd auth (optional)
/// password_file = "/etc/flowpin/etcd-password"  # or password = "..."
/// [registry.tls]                                # https endpoints
/// ca_file = "/etc/flowpin/etcd-ca.pem"
/// cert_file = "/etc/flowpin/etcd-client.pem"    # client certificate (optional)
/// key_file = "/etc/flowpin/etcd-client-key.pem"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// etcd client URLs (`https://` with `[registry.tls]`).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// The cluster's key prefix.
    #[serde(default)]
    pub prefix: String,
    /// Instead of etcd, an LB may follow a file of VIPs and backends
    /// (`registry = { file = "/etc/flowpin/vips.toml" }`, TOML or `.json`;
    /// see [`crate::file_registry`]), read again when it changes.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// TLS towards etcd.
    #[serde(default)]
    pub tls: Option<EtcdTlsSection>,
    /// etcd user (etcd with authentication enabled).
    #[serde(default)]
    pub user: Option<String>,
    /// The user's password, inline (prefer `password_file`).
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the user's password (a trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// `[registry.tls]`: PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTlsSection {
    /// The CA that signed etcd's server certificate.
    pub ca_file: PathBuf,
    /// A client certificate (etcd's `--client-cert-auth`), with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name etcd's certificate is checked against, when it is not the
    /// endpoints' host.
    #[serde(default)]
    pub domain: Option<String>,
}

/// A secret from the config (a password): shown as `<redacted>` by `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

fn validate_registry(r: &RegistrySection) -> Result<()> {
    if r.endpoints.is_empty() {
        return Err(invalid(
            "registry.endpoints",
            "empty: list at least one etcd client URL, e.g. [\"http://127.0.0.1:2379\"]",
        ));
    }
    if let Some(e) = r
        .endpoints
        .iter()
        .find(|e| !(e.starts_with("http://") || e.starts_with("https://")))
    {
        return Err(invalid(
            "registry.endpoints",
            format!("{e:?} is not a URL: write it as http://host:port"),
        ));
    }
    if !r.prefix.starts_with('/') || r.prefix.len() < 2 {
        return Err(invalid(
            "registry.prefix",
            format!(
                "{:?}: a cluster prefix starts with / and names the cluster, e.g. \"/flowpin/prod\"",
                r.prefix
            ),
        ));
    }
    Ok(())
}

impl RegistrySection {
    /// Plain `http://` endpoints under `prefix`, no TLS, no user.
    pub fn plain(endpoints: Vec<String>, prefix: String) -> RegistrySection {
        RegistrySection {
            endpoints,
            prefix,
            file: None,
            tls: None,
            user: None,
            password: None,
            password_file: None,
        }
    }

    /// [`validate`](Self::validate) for a role that may (`allow_file`: the
    /// LB) or may not (the backend agent, which registers itself in etcd)
    /// follow a file instead of etcd.
    pub fn validate_for(&self, allow_file: bool) -> Result<()> {
        let Some(f) = &self.file else {
            return self.validate();
        };
        if !allow_file {
            return Err(invalid(
                "registry.file",
                "a backend registers itself in etcd: set registry.endpoints and registry.prefix",
            ));
        }
        if !self.endpoints.is_empty() || self.tls.is_some() || self.user.is_some() {
            return Err(invalid(
                "registry.file",
                format!(
                    "{} and etcd settings (endpoints, tls, user) are both set: follow either a file or etcd",
                    f.display()
                ),
            ));
        }
        Ok(())
    }

    /// Checks the section (endpoints are URLs of the right scheme, the
    /// prefix names a cluster, TLS and user settings are complete).
    pub fn validate(&self) -> Result<()> {
        validate_registry(self)?;
        let https = |e: &String| e.starts_with("https://");
        match &self.tls {
            Some(t) => {
                if let Some(e) = self.endpoints.iter().find(|e| !https(e)) {
                    return Err(invalid(
                        "registry.endpoints",
                        format!(
                            "{e:?}: with [registry.tls], write the endpoints as https://host:port"
                        ),
                    ));
                }
                if t.cert_file.is_some() != t.key_file.is_some() {
                    return Err(invalid(
                        "registry.tls.cert_file",
                        "a client certificate needs its key: set both cert_file and key_file, or neither",
                    ));
                }
            }
            None => {
                if let Some(e) = self.endpoints.iter().find(|e| https(e)) {
                    return Err(invalid(
                        "registry.tls",
                        format!("{e:?} is https: add [registry.tls] with ca_file (the CA that signed etcd's certificate)"),
                    ));
                }
            }
        }
        match (&self.user, &self.password, &self.password_file) {
            (Some(u), _, _) if u.is_empty() => {
                Err(invalid("registry.user", "empty: write the etcd user name"))
            }
            (Some(_), None, None) => Err(invalid(
                "registry.password_file",
                "registry.user is set without a password: set password_file (or password)",
            )),
            (_, Some(_), Some(_)) => Err(invalid(
                "registry.password",
                "both password and password_file are set: keep one",
            )),
            (None, Some(_), _) | (None, _, Some(_)) => Err(invalid(
                "registry.user",
                "a password without a user: set registry.user",
            )),
            _ => Ok(()),
        }
    }

    /// The registry client's configuration, with the TLS files and the
    /// password file read.
    pub fn registry_config(&self) -> Result<flowpin_registry::RegistryConfig> {
        let mut c = flowpin_registry::RegistryConfig::new(self.endpoints.clone(), &self.prefix);
        let bytes = |p: &Path| {
            std::fs::read(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        if let Some(t) = &self.tls {
            let mut tls = flowpin_registry::EtcdTls::new(bytes(&t.ca_file)?);
            if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
                tls = tls.with_identity(bytes(cert)?, bytes(key)?);
            }
            if let Some(d) = &t.domain {
                tls = tls.with_domain(d.clone());
            }
            c = c.with_tls(tls);
        }
        if let Some(user) = &self.user {
            let password = match (&self.password, &self.password_file) {
                (Some(p), _) => p.0.clone(),
                (None, Some(f)) => read(f)?.trim_end_matches(['\n', '\r']).to_string(),
                (None, None) => String::new(),
            };
            c = c.with_credentials(flowpin_registry::EtcdCredentials::new(
                user.clone(),
                password,
            ));
        }
        Ok(c)
    }

    /// The `[registry]` section of a config file of any role, validated
    /// (for commands that only talk to the registry).
    pub fn load_from(path: &Path) -> Result<RegistrySection> {
        let text = read(path)?;
        let table: toml::Table = parse(path, &text)?;
        let value = table.get("registry").cloned().ok_or_else(|| {
            invalid(
                "registry",
                format!(
                    "{} has no [registry] section: add one (endpoints, prefix)",
                    path.display()
                ),
            )
        })?;
        let section: RegistrySection =
            value
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: format!("[registry]: {e}"),
                })?;
        section.validate()?;
        Ok(section)
    }
}
