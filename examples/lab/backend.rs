//! A backend host: its own process, in its own network namespace and its own
//! child cgroup, running its own `xdp_decap` and sock_ops (server role)
//! instances and a small TCP server that serves long-lived streams.
//!
//! The lab starts it by re-executing itself with `--backend-child`; the child
//! prints `ready` once it serves, obeys `sockops on|off` lines on stdin and
//! exits when stdin closes (so it never outlives the lab, even on Ctrl-C).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use flowpin_bpf_progs::sockops_server_id::{ServerIdOps, ServerIdOpsConfig};
use flowpin_bpf_progs::xdp_decap::{XdpDecap, XdpDecapConfig};
use flowpin_testing::{enter_netns, NetNs};

use crate::proto::{greeting, PING_LEN, RESPONSE_LEN};
use crate::topo;

/// Arguments of the child process.
#[derive(Debug, Clone)]
pub(crate) struct BackendArgs {
    /// Backend index (0-based).
    pub(crate) index: usize,
    /// `/run/netns/<name>` of its namespace.
    pub(crate) netns: PathBuf,
    /// Its cgroup directory.
    pub(crate) cgroup: PathBuf,
    /// Only the TCP server: the programs belong to a `flowpin-node backend` process
    /// of the same host (the fleet section).
    pub(crate) serve_only: bool,
}

/// Entry point of `lab --backend-child <index> <netns path> <cgroup path>`.
pub(crate) fn child_main(
    args: BackendArgs,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let name = args.netns.display().to_string();
    enter_netns(&args.netns, &name)?;
    // Move this whole process into the backend's own cgroup before any socket exists.
    std::fs::write(
        args.cgroup.join("cgroup.procs"),
        std::process::id().to_string(),
    )?;

    let server_id = topo::server_id(args.index);
    if args.serve_only {
        let listener = TcpListener::bind(SocketAddr::from((topo::VIP, topo::VIP_PORT)))?;
        let index = args.index as u16;
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || serve(conn, index, server_id));
            }
        });
        // The service's health endpoint (the fleet's health checks probe
        // it through the tunnel): in this process, so a hung or killed
        // server fails it.
        let health = TcpListener::bind(SocketAddr::from((topo::VIP, topo::HEALTH_PORT)))?;
        std::thread::spawn(move || {
            for conn in health.incoming().flatten() {
                std::thread::spawn(move || serve_health(conn));
            }
        });
        println!("ready");
        std::io::stdout().flush()?;
        // Until the lab closes stdin (or kills this process).
        for line in std::io::stdin().lock().lines() {
            line?;
        }
        return Ok(());
    }
    let decap = XdpDecap::load(XdpDecapConfig::default())?;
    decap.add_tunnel_addr(topo::backend_addr(args.index).into())?;
    let _decap_link = decap.attach(topo::BE_IF)?;

    let sid = flowpin_tcp_opt::ServerId::new(server_id).ok_or("server_id 0 is reserved")?;
    let ops = ServerIdOps::load(ServerIdOpsConfig::server(sid).ports(&[topo::VIP_PORT]))?;
    let mut ops_link = Some(ops.attach(&args.cgroup)?);

    let listener = TcpListener::bind(SocketAddr::from((topo::VIP, topo::VIP_PORT)))?;
    let index = args.index as u16;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve(conn, index, server_id));
        }
    });
    println!("ready");
    std::io::stdout().flush()?;

    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        match line?.trim() {
            "sockops off" => ops_link = None,
            "sockops on" if ops_link.is_none() => ops_link = Some(ops.attach(&args.cgroup)?),
            _ => {}
        }
        println!("ok");
        std::io::stdout().flush()?;
    }
    drop(ops_link);
    Ok(())
}

/// Answers one HTTP request with `200 OK` once its header has arrived.
fn serve_health(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

fn serve(mut conn: TcpStream, index: u16, server_id: u32) {
    let _ = conn.set_nodelay(true);
    if conn.write_all(&greeting(index, server_id)).is_err() {
        return;
    }
    let mut ping = [0u8; PING_LEN];
    let mut resp = [0x5au8; RESPONSE_LEN];
    loop {
        if conn.read_exact(&mut ping).is_err() {
            return;
        }
        resp[..PING_LEN].copy_from_slice(&ping);
        if conn.write_all(&resp).is_err() {
            return;
        }
    }
}

/// The lab's handle on a running backend process; kills it on drop.
pub(crate) struct BackendProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl BackendProcess {
    /// Starts backend `index` in `ns`, inside cgroup `cgroup`, and waits for `ready`.
    pub(crate) fn start(
        index: usize,
        ns: &NetNs,
        cgroup: &Path,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Self::spawn(index, ns, cgroup, false)
    }

    /// Starts only the TCP server of backend `index` (no BPF: a `node
    /// backend` process attaches the host's programs), and waits for `ready`.
    pub(crate) fn start_server_only(
        index: usize,
        ns: &NetNs,
        cgroup: &Path,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Self::spawn(index, ns, cgroup, true)
    }

    fn spawn(
        index: usize,
        ns: &NetNs,
        cgroup: &Path,
        serve_only: bool,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        if serve_only {
            cmd.arg("--serve-only");
        }
        let mut child = cmd
            .arg("--backend-child")
            .arg(index.to_string())
            .arg(ns.path())
            .arg(cgroup)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut p = BackendProcess {
            child,
            stdin,
            stdout,
        };
        p.expect_line("ready")?;
        Ok(p)
    }

    fn expect_line(&mut self, want: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.trim() != want {
            return Err(format!("backend said {line:?}, expected {want:?}").into());
        }
        Ok(())
    }

    /// SIGKILL (a crashed host): its sockets go with it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The child's process id (to check that it is gone after the lab).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Attaches (`true`) or detaches its sock_ops program.
    pub(crate) fn set_sockops(
        &mut self,
        on: bool,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let stdin = self.stdin.as_mut().ok_or("backend stdin closed")?;
        writeln!(stdin, "sockops {}", if on { "on" } else { "off" })?;
        stdin.flush()?;
        self.expect_line("ok")
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        self.stdin = None; // EOF: the child exits on its own.
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
