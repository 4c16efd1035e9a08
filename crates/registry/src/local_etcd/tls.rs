//! The TLS and auth modes of [`LocalEtcd`](super::LocalEtcd): a CA, a
//! server certificate and a client certificate made for the run (`rcgen`),
//! written as PEM files in the run's directory; `auth enable` with one
//! `root`-role user.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};

use crate::error::{Error, Result};
use crate::security::{EtcdCredentials, EtcdTls};

/// The certificates of a TLS-mode [`LocalEtcd`](super::LocalEtcd), as PEM
/// files (the client's key file is for tests that pass file paths, e.g. a
/// node's config).
#[derive(Debug, Clone)]
pub struct LocalTls {
    dir: PathBuf,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

fn err(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |e| Error::LocalEtcd {
        what,
        detail: e.to_string(),
    }
}

impl LocalTls {
    pub(super) fn generate(run_dir: &Path, host: Ipv4Addr) -> Result<LocalTls> {
        let dir = run_dir.join("tls");
        let io = |e: std::io::Error| Error::LocalEtcd {
            what: "write certificates",
            detail: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(io)?;

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err("CA"))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "flowpin test CA");
        ca_params.distinguished_name = dn;
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(err("CA key"))?)
                .map_err(err("CA"))?;

        let mut server = CertificateParams::new(vec!["localhost".to_string()])
            .map_err(err("server certificate"))?;
        server
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(host)));
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().map_err(err("server key"))?;
        let server_cert = server
            .signed_by(&server_key, &ca)
            .map_err(err("server certificate"))?;

        let mut client =
            CertificateParams::new(Vec::<String>::new()).map_err(err("client certificate"))?;
        let mut dn = DistinguishedName::new();
        // Not an etcd user: with auth enabled, the certificate alone grants nothing.
        dn.push(DnType::CommonName, "flowpin-test-client");
        client.distinguished_name = dn;
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().map_err(err("client key"))?;
        let client_cert = client
            .signed_by(&client_key, &ca)
            .map_err(err("client certificate"))?;

        let t = LocalTls {
            dir,
            ca_pem: ca.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        };
        for (path, pem) in [
            (t.ca_file(), t.ca_pem.as_str()),
            (t.server_cert_file(), server_cert.pem().as_str()),
            (t.server_key_file(), server_key.serialize_pem().as_str()),
            (t.client_cert_file(), t.client_cert_pem.as_str()),
            (t.client_key_file(), t.client_key_pem.as_str()),
        ] {
            std::fs::write(path, pem).map_err(io)?;
        }
        Ok(t)
    }

    /// The CA certificate (PEM file).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// etcd's server certificate (for `localhost` and the host address).
    pub fn server_cert_file(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// etcd's server key.
    pub fn server_key_file(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }

    /// A client certificate signed by the CA.
    pub fn client_cert_file(&self) -> PathBuf {
        self.dir.join("client.pem")
    }

    /// The client certificate's key.
    pub fn client_key_file(&self) -> PathBuf {
        self.dir.join("client-key.pem")
    }

    /// The CA (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// TLS settings of a client: the CA, the client certificate and key.
    pub fn client(&self) -> EtcdTls {
        EtcdTls::new(self.ca_pem.as_bytes()).with_identity(
            self.client_cert_pem.as_bytes(),
            self.client_key_pem.as_bytes(),
        )
    }
}

/// Adds `creds`' user with the `root` role and enables authentication.
pub(super) async fn enable_auth(
    endpoint: &str,
    tls: Option<&EtcdTls>,
    creds: &EtcdCredentials,
) -> Result<()> {
    let e = |what: &'static str| {
        move |e: etcd_client::Error| Error::LocalEtcd {
            what,
            detail: e.to_string(),
        }
    };
    let opts = crate::security::apply(etcd_client::ConnectOptions::new(), tls, None);
    let mut c = etcd_client::Client::connect([endpoint], Some(opts))
        .await
        .map_err(e("connect to enable auth"))?;
    let password = creds.password().to_string();
    c.user_add(creds.user(), password, None)
        .await
        .map_err(e("user add"))?;
    if creds.user() != "root" {
        c.user_add("root", creds.password().to_string(), None)
            .await
            .map_err(e("user add root"))?;
        c.user_grant_role("root", "root")
            .await
            .map_err(e("grant root"))?;
    }
    c.user_grant_role(creds.user(), "root")
        .await
        .map_err(e("grant root role"))?;
    c.auth_enable().await.map_err(e("auth enable"))?;
    Ok(())
}
