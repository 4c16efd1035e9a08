//! The service's own health check (`[backend] health_check`): a command or
//! an HTTP endpoint run every `interval_secs` on a task of its own; its
//! damped verdicts (rise/fall) come back to the agent's loop, which reports
//! them for every backend it registered (`Registration::report_health`):
//! an unhealthy service is drained on every LB.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::config::{parse_http_url, SelfCheckConfig};

/// A change of the service's damped state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Healthy?
    pub(crate) healthy: bool,
    /// Why not (the last failure), or "ok".
    pub(crate) reason: String,
}

/// Starts the check task; verdict changes arrive on the receiver (the
/// first decided state too). The task ends when the receiver is dropped.
pub(crate) fn start(cfg: SelfCheckConfig) -> mpsc::Receiver<Verdict> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(cfg.interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut passes, mut fails) = (0u32, 0u32);
        let mut state: Option<bool> = None;
        loop {
            tick.tick().await;
            let out = check_once(&cfg).await;
            let next = match &out {
                Ok(()) => {
                    passes += 1;
                    fails = 0;
                    // The first pass decides "healthy" at once (nothing to damp yet).
                    (passes >= cfg.rise || state.is_none()).then_some(true)
                }
                Err(_) => {
                    fails += 1;
                    passes = 0;
                    (fails >= cfg.fall).then_some(false)
                }
            };
            if let Some(n) = next {
                if state != Some(n) {
                    state = Some(n);
                    let reason = out.err().unwrap_or_else(|| "ok".into());
                    if tx.send(Verdict { healthy: n, reason }).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// One check: `Ok` passes, `Err` says why not.
pub(crate) async fn check_once(cfg: &SelfCheckConfig) -> Result<(), String> {
    let limit = Duration::from_secs(cfg.timeout_secs);
    if let Some(cmd) = &cfg.command {
        return run_command(cmd, limit).await;
    }
    let url = cfg.http.as_deref().unwrap_or_default();
    let (authority, path) = parse_http_url(url).ok_or_else(|| format!("bad URL {url:?}"))?;
    match tokio::time::timeout(limit, http_status(&authority, &path)).await {
        Err(_) => Err("timeout".into()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(s)) if (200..300).contains(&s) => Ok(()),
        Ok(Ok(s)) => Err(format!("http status {s}")),
    }
}

async fn run_command(cmd: &[String], limit: Duration) -> Result<(), String> {
    let (prog, args) = cmd.split_first().ok_or("empty command")?;
    let mut child = std::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("command exited with {st}")),
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for {prog}: {e}")),
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("timeout".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn http_status(authority: &str, path: &str) -> Result<u16, String> {
    let mut s = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]).await {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let line = std::str::from_utf8(&buf[..n]).unwrap_or_default();
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(command: Option<Vec<String>>, http: Option<String>) -> SelfCheckConfig {
        SelfCheckConfig {
            command,
            http,
            interval_secs: 1,
            timeout_secs: 1,
            fall: 3,
            rise: 2,
        }
    }

    #[tokio::test]
    async fn command_and_http_checks_pass_and_fail() {
        let ok = cfg(Some(vec!["true".into()]), None);
        assert_eq!(check_once(&ok).await, Ok(()));
        let bad = cfg(Some(vec!["false".into()]), None);
        assert!(check_once(&bad).await.is_err());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            for status in ["204 No Content", "503 Unavailable"] {
                let (mut s, _) = l.accept().await.expect("accept");
                let mut b = [0u8; 256];
                let _ = s.read(&mut b).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let http = cfg(None, Some(format!("http://127.0.0.1:{port}/healthz")));
        assert_eq!(check_once(&http).await, Ok(()));
        assert_eq!(check_once(&http).await, Err("http status 503".into()));
        server.await.expect("server");
        // Nothing listens any more.
        assert!(check_once(&http).await.is_err());
    }
}
