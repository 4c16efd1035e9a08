//! Test support: a local etcd per test (or a loud skip when not root and no
//! etcd is installed), a cuttable TCP proxy, and small helpers.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowpin_registry::local_etcd::{etcd_binary, LocalEtcd};
use flowpin_registry::{Registry, RegistryConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A fresh etcd for one test. `None` (with a loud line, counted like every
/// skip: `flowpin_testing::record_skip`) only when not root and no etcd
/// binary is installed; as root a missing etcd fails the test.
pub async fn etcd(test: &str) -> Option<LocalEtcd> {
    if etcd_binary().is_none() && !flowpin_testing::is_root() {
        flowpin_testing::record_skip(
            test,
            "no etcd binary: install etcd-server or run ./scripts/setup.sh as root",
        );
        return None;
    }
    match LocalEtcd::start().await {
        Ok(e) => Some(e),
        Err(e) => panic!("{test}: {e}"),
    }
}

/// A registry client on `endpoint` under a per-test prefix.
pub async fn registry(endpoint: &str) -> Registry {
    Registry::connect(RegistryConfig::new([endpoint], "/flowpin/test"))
        .await
        .expect("connect")
}

/// Polls `f` until it is true or `limit` passes; returns the time it took.
pub async fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// A TCP proxy from a loopback port to `target` that can cut every
/// connection (and refuse new ones) and resume on the same port.
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let target = SocketAddr::from(([127, 0, 0, 1], target_port));
        let p = Proxy {
            addr,
            target,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        p.serve(listener);
        p
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&self, listener: TcpListener) {
        let tasks = Arc::clone(&self.tasks);
        let target = self.target;
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().expect("proxy tasks").push(conn);
            }
        });
        self.tasks.lock().expect("proxy tasks").push(accept);
    }

    /// Closes every connection and the listening socket.
    pub fn cut(&self) {
        for t in self.tasks.lock().expect("proxy tasks").drain(..) {
            t.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn resume(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("re-bind proxy");
        self.serve(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
