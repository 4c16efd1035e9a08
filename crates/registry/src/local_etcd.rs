//! A throwaway single-member etcd, for tests, benches and labs: on loopback
//! with free ports by default, or on a given address inside a named network
//! namespace ([`LocalEtcdOptions`]); a temporary data directory; killed and
//! removed on drop.
//!
//! The binary is `$FLOWPIN_ETCD` or `etcd` on `PATH` (Debian package
//! `etcd-server`, installed by `scripts/setup.sh`).

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::security::{EtcdCredentials, EtcdTls};

mod tls;
pub use tls::LocalTls;

/// A running local etcd. Dropping it kills the process and removes its data.
#[derive(Debug)]
pub struct LocalEtcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    binary: PathBuf,
    host: Ipv4Addr,
    netns: Option<String>,
    client_port: u16,
    peer_port: u16,
    tls: Option<LocalTls>,
    credentials: Option<EtcdCredentials>,
    auth_enabled: bool,
}

/// Where a [`LocalEtcd`] listens. The default is loopback on two free ports
/// in the caller's namespace.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LocalEtcdOptions {
    /// The address etcd binds (clients and peer URL).
    pub host: Ipv4Addr,
    /// A network namespace (its name, as `ip netns list` shows it) to run
    /// etcd in, through `ip netns exec`. etcd then uses the standard ports
    /// 2379 (clients) and 2380 (peer): the namespace is the caller's own.
    pub netns: Option<String>,
    /// Serve clients over TLS with certificates made for the run (a CA, a
    /// server certificate for the host, a client certificate), and require
    /// a client certificate signed by that CA (`--client-cert-auth`).
    pub tls: bool,
    /// Enable etcd authentication with this user (made `root`-role) and
    /// password.
    pub auth: Option<(String, String)>,
}

impl Default for LocalEtcdOptions {
    fn default() -> Self {
        LocalEtcdOptions {
            host: Ipv4Addr::LOCALHOST,
            netns: None,
            tls: false,
            auth: None,
        }
    }
}

impl LocalEtcdOptions {
    /// etcd on `host:2379` inside the network namespace named `netns`; the
    /// caller made `host` reachable from where its clients run (e.g. a veth
    /// pair into that namespace).
    pub fn in_netns(netns: impl Into<String>, host: Ipv4Addr) -> Self {
        LocalEtcdOptions {
            host,
            netns: Some(netns.into()),
            tls: false,
            auth: None,
        }
    }

    /// With TLS (see [`LocalEtcdOptions::tls`]).
    pub fn with_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// With authentication enabled for `user` / `password` (see
    /// [`LocalEtcdOptions::auth`]).
    pub fn with_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }
}

/// The etcd binary this module would run, if there is one.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLOWPIN_ETCD") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| Error::LocalEtcd {
        what: "free port",
        detail: e.to_string(),
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::LocalEtcd {
            what: "free port",
            detail: e.to_string(),
        })
}

impl LocalEtcd {
    /// Starts etcd on two free loopback ports and waits until it serves
    /// requests (up to 20 s).
    pub async fn start() -> Result<LocalEtcd> {
        Self::start_with(LocalEtcdOptions::default()).await
    }

    /// Starts etcd where `opts` says and waits until it serves requests
    /// (up to 20 s).
    pub async fn start_with(opts: LocalEtcdOptions) -> Result<LocalEtcd> {
        let binary = etcd_binary().ok_or_else(|| Error::LocalEtcd {
            what: "find binary",
            detail: "no etcd on PATH and FLOWPIN_ETCD unset: install it (apt-get install etcd-server, or ./scripts/setup.sh)".into(),
        })?;
        let dir = tempfile::Builder::new()
            .prefix("flowpin-etcd-")
            .tempdir()
            .map_err(|e| Error::LocalEtcd {
                what: "temporary directory",
                detail: e.to_string(),
            })?;
        let mut etcd = LocalEtcd {
            child: None,
            dir,
            binary,
            host: opts.host,
            client_port: if opts.netns.is_some() {
                2379
            } else {
                free_port()?
            },
            peer_port: if opts.netns.is_some() {
                2380
            } else {
                free_port()?
            },
            netns: opts.netns,
            tls: None,
            credentials: None,
            auth_enabled: false,
        };
        if opts.tls {
            etcd.tls = Some(LocalTls::generate(etcd.dir.path(), etcd.host)?);
        }
        if etcd.netns.is_none() && etcd.peer_port == etcd.client_port {
            etcd.peer_port = free_port()?;
        }
        // A port found free can be taken before etcd binds it (another
        // test's etcd, a client's ephemeral port): then etcd exits at once
        // with "address already in use" and writes no data; pick two new
        // ports and start again, a few times.
        let mut retries = 4;
        loop {
            match etcd.restart().await {
                Err(Error::LocalEtcd {
                    what: "start",
                    detail,
                }) if etcd.netns.is_none()
                    && retries > 0
                    && detail.contains("address already in use") =>
                {
                    retries -= 1;
                    let _ = std::fs::remove_dir_all(etcd.data_dir());
                    etcd.client_port = free_port()?;
                    etcd.peer_port = free_port()?;
                }
                r => break r?,
            }
        }
        if let Some((user, password)) = opts.auth {
            let creds = EtcdCredentials::new(user, password);
            tls::enable_auth(&etcd.endpoint(), etcd.client_tls().as_ref(), &creds).await?;
            etcd.credentials = Some(creds);
            etcd.auth_enabled = true;
        }
        Ok(etcd)
    }

    /// The client URL, e.g. `http://127.0.0.1:40123` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.client_port)
    }

    /// The certificates of the TLS mode (files in the run's directory).
    pub fn tls(&self) -> Option<&LocalTls> {
        self.tls.as_ref()
    }

    /// What a client needs for the TLS mode: the CA and the client
    /// certificate and key.
    pub fn client_tls(&self) -> Option<EtcdTls> {
        self.tls.as_ref().map(LocalTls::client)
    }

    /// The user and password of the auth mode.
    pub fn credentials(&self) -> Option<&EtcdCredentials> {
        self.credentials.as_ref()
    }

    /// A registry configuration for this etcd under `prefix`, with its TLS
    /// and credentials.
    pub fn registry_config(&self, prefix: &str) -> crate::RegistryConfig {
        let mut c = crate::RegistryConfig::new([self.endpoint()], prefix);
        c.tls = self.client_tls();
        c.credentials = self.credentials.clone();
        c
    }

    /// The client port.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The last lines of etcd's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Kills etcd (SIGKILL) and waits for it; the data directory stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts etcd on the same ports and data directory and waits until
    /// it serves requests.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        let spawn_err = |e: std::io::Error| Error::LocalEtcd {
            what: "spawn",
            detail: e.to_string(),
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(spawn_err)?;
        let log2 = log.try_clone().map_err(spawn_err)?;
        let client = self.endpoint();
        let peer = format!("http://{}:{}", self.host, self.peer_port);
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                // `ip netns exec` execs etcd in place: the child's pid is
                // etcd's, so kill() reaches it.
                c.args(["netns", "exec", ns]).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cert-file={}", t.server_cert_file().display()))
                .arg(format!("--key-file={}", t.server_key_file().display()))
                .arg(format!("--trusted-ca-file={}", t.ca_file().display()))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .arg("--name=flowpin-test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=flowpin-test={peer}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(spawn_err)?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(20)).await
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        let endpoint = self.endpoint();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(Error::LocalEtcd {
                        what: "start",
                        detail: format!("etcd exited with {status}; its log:\n{}", self.log_tail()),
                    });
                }
            }
            let opts = crate::security::apply(
                etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_millis(500)),
                self.client_tls().as_ref(),
                self.credentials.as_ref().filter(|_| self.auth_enabled),
            );
            let probe = async {
                let mut c = etcd_client::Client::connect([endpoint.as_str()], Some(opts)).await?;
                c.status().await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(Error::LocalEtcd {
                    what: "start",
                    detail: format!(
                        "etcd did not serve within {limit:?}; its log:\n{}",
                        self.log_tail()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The directory holding data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}
