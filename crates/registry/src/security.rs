//! TLS and user/password authentication towards etcd ([`EtcdTls`],
//! [`EtcdCredentials`]), set on a [`RegistryConfig`](crate::RegistryConfig).
//!
//! Secrets (the client key, the password) never appear in `Debug` output
//! or in errors.

use std::fmt;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

/// TLS towards etcd (the endpoints are `https://` URLs): the CA that signed
/// etcd's server certificate, and optionally a client certificate and key
/// (etcd's `--client-cert-auth`). All PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA certificate(s) etcd's certificate must chain to (PEM).
    pub ca_pem: Vec<u8>,
    /// The client certificate and its private key (PEM), for etcd's
    /// client-certificate authentication.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to verify etcd's certificate against, when it is not the
    /// endpoint's host (e.g. endpoints by IP, certificate for `etcd.internal`).
    pub domain: Option<String>,
}

impl EtcdTls {
    /// TLS trusting `ca_pem`, without a client certificate.
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> EtcdTls {
        EtcdTls {
            ca_pem: ca_pem.into(),
            identity: None,
            domain: None,
        }
    }

    /// With a client certificate and its key (PEM).
    pub fn with_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> EtcdTls {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Verifies etcd's certificate against `domain`.
    pub fn with_domain(mut self, domain: impl Into<String>) -> EtcdTls {
        self.domain = Some(domain.into());
        self
    }

    pub(crate) fn options(&self) -> TlsOptions {
        let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            t = t.identity(Identity::from_pem(cert, key));
        }
        if let Some(d) = &self.domain {
            t = t.domain_name(d.clone());
        }
        t
    }
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_pem", &format_args!("<{} bytes>", self.ca_pem.len()))
            .field(
                "identity",
                &self
                    .identity
                    .as_ref()
                    .map(|(c, _)| format!("<certificate {} bytes, key redacted>", c.len())),
            )
            .field("domain", &self.domain)
            .finish()
    }
}

/// An etcd user and its password (etcd's `auth enable`).
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdCredentials {
    user: String,
    password: String,
}

impl EtcdCredentials {
    /// `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> EtcdCredentials {
        EtcdCredentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password (to hand to etcd; never log it).
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for EtcdCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdCredentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Adds TLS and credentials to etcd client options.
pub(crate) fn apply(
    mut options: ConnectOptions,
    tls: Option<&EtcdTls>,
    credentials: Option<&EtcdCredentials>,
) -> ConnectOptions {
    if let Some(t) = tls {
        options = options.with_tls(t.options());
    }
    if let Some(c) = credentials {
        options = options
            .with_user(c.user.clone(), c.password.clone())
            .with_auto_token_refresh(true);
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key_or_the_password() {
        let t = EtcdTls::new("CA-PEM").with_identity("CERT-PEM", "SECRET-KEY-PEM");
        let c = EtcdCredentials::new("root", "hunter2-secret");
        let shown = format!("{t:?} {c:?}");
        assert!(!shown.contains("SECRET-KEY-PEM"), "{shown}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(shown.contains("root"), "{shown}");
    }
}
