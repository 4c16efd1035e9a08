//! The metrics / status / health endpoint (`/metrics`, `/status`,
//! `/healthz`: the loop answers, `/readyz`: the role is ready) (axum on the node's tokio runtime). A
//! request is a message to the role's event loop, which owns all state and
//! answers with the rendered body: no locks, nothing computed while idle.

use std::net::SocketAddr;
use std::path::Path;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::config::MetricsSection;
use crate::NodeError;

/// What a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Query {
    /// Prometheus text format.
    Metrics,
    /// JSON status.
    Status,
    /// Readiness: the role answers `ready` (HTTP 200) or why not (503).
    Ready,
}

/// A query and where to send the body.
pub(crate) type Request = (Query, oneshot::Sender<String>);

/// What a ready role answers to [`Query::Ready`].
pub(crate) const READY: &str = "ready";

async fn ask_body(tx: &mpsc::Sender<Request>, q: Query) -> Option<String> {
    let (rtx, rrx) = oneshot::channel();
    tx.send((q, rtx)).await.ok()?;
    rrx.await.ok()
}

async fn ask(tx: &mpsc::Sender<Request>, q: Query, content_type: &'static str) -> Response {
    let (rtx, rrx) = oneshot::channel();
    if tx.send((q, rtx)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "node shutting down").into_response();
    }
    match rrx.await {
        Ok(body) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "node shutting down").into_response(),
    }
}

/// Writes the bound port to `path` (if set) through a temporary file, so a
/// reader never sees it half written; a failure is logged, not fatal.
pub(crate) fn write_port_file(path: Option<&Path>, addr: SocketAddr) {
    if let Some(p) = path {
        let tmp = p.with_extension("tmp");
        if std::fs::write(&tmp, addr.port().to_string())
            .and_then(|()| std::fs::rename(&tmp, p))
            .is_err()
        {
            warn!(file = %p.display(), "cannot write the metrics port file");
        }
    }
}

/// Logs where the endpoint answers.
pub(crate) fn log_endpoint(addr: SocketAddr) {
    info!(%addr, "metrics on http://{addr}/metrics, status on http://{addr}/status");
}

/// Starts the endpoint of a role whose `metrics` section is optional
/// (backend, client): with a section, binds `metrics.listen` (an address in
/// use is a fatal error saying what to do), writes `metrics.port_file` and
/// returns the request stream; without one, returns a stream that never
/// yields, kept open by the returned sender (hold it as long as the loop runs).
pub(crate) async fn start_optional(
    metrics: Option<&MetricsSection>,
) -> Result<(Option<mpsc::Sender<Request>>, mpsc::Receiver<Request>), NodeError> {
    match metrics {
        Some(m) => {
            let (addr, rx) = serve(m.listen).await.map_err(|e| {
                crate::backend::fatal(format!(
                    "metrics.listen {}: {e}: another process uses it; pick another address or stop that process",
                    m.listen
                ))
            })?;
            write_port_file(m.port_file.as_deref(), addr);
            log_endpoint(addr);
            Ok((None, rx))
        }
        None => {
            let (tx, rx) = mpsc::channel(1);
            Ok((Some(tx), rx))
        }
    }
}

/// Binds `listen` and serves `/metrics` and `/status` in a task. Returns
/// the bound address (port 0 picks one) and the request stream.
pub(crate) async fn serve(
    listen: SocketAddr,
) -> std::io::Result<(SocketAddr, mpsc::Receiver<Request>)> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    serve_on(listener)
}

/// Serves `/metrics` and `/status` on a socket bound beforehand (so that a
/// port in use is found before anything else is done), in a task.
pub(crate) fn serve_on(
    listener: std::net::TcpListener,
) -> std::io::Result<(SocketAddr, mpsc::Receiver<Request>)> {
    let (tx, rx) = mpsc::channel::<Request>(16);
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(tx): State<mpsc::Sender<Request>>| async move {
                ask(
                    &tx,
                    Query::Metrics,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .await
            }),
        )
        .route(
            "/healthz",
            // Alive: the event loop answers (whatever it says).
            get(|State(tx): State<mpsc::Sender<Request>>| async move {
                match ask_body(&tx, Query::Ready).await {
                    Some(_) => (StatusCode::OK, "ok\n").into_response(),
                    None => {
                        (StatusCode::SERVICE_UNAVAILABLE, "node shutting down\n").into_response()
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(|State(tx): State<mpsc::Sender<Request>>| async move {
                match ask_body(&tx, Query::Ready).await {
                    Some(b) if b == READY => (StatusCode::OK, format!("{b}\n")).into_response(),
                    Some(b) => (StatusCode::SERVICE_UNAVAILABLE, format!("{b}\n")).into_response(),
                    None => {
                        (StatusCode::SERVICE_UNAVAILABLE, "node shutting down\n").into_response()
                    }
                }
            }),
        )
        .route(
            "/status",
            get(|State(tx): State<mpsc::Sender<Request>>| async move {
                ask(&tx, Query::Status, "application/json").await
            }),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok((addr, rx))
}
