//! A watch on the QUIC-LB configurations (`quic_lb/configs/`): wakes a load
//! balancer as soon as an operator adds, retires or removes one, so that it
//! reads them again ([`Registry::quic_lb_view`]) instead of polling.
//! Acknowledgements and server reports (`quic_lb/acks/`, `quic_lb/issuing/`)
//! do not wake it: its own acknowledgement would.

use std::time::Duration;

use etcd_client::WatchOptions;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::lease::timed;
use crate::Registry;

/// Deadline of the watch request.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Wakes on every change of a VIP's QUIC-LB configurations (see the module
/// documentation). Changes that arrive while the previous one is unread
/// are one wake-up; after a reconnection it wakes once (changes made while
/// it was cut off are read then). The background task ends with it.
#[derive(Debug)]
pub struct QuicLbConfigWatch {
    rx: mpsc::Receiver<()>,
    task: JoinHandle<()>,
}

impl Drop for QuicLbConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl QuicLbConfigWatch {
    /// Waits until the configurations changed (or may have: a reconnect).
    /// Never returns if the background task ended (it does not, while the
    /// watch lives).
    pub async fn changed(&mut self) {
        if self.rx.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

impl Registry {
    /// Starts a [`QuicLbConfigWatch`] (a background task of the current
    /// tokio runtime that reconnects with backoff when etcd is away).
    pub fn watch_quic_lb_configs(&self) -> QuicLbConfigWatch {
        let client = self.etcd();
        let prefix = format!("{}quic_lb/configs/", self.layout().prefix());
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut quiet = false;
            loop {
                let mut c = client.clone();
                let opts = WatchOptions::new().with_prefix();
                match timed(
                    "watch quic_lb configs",
                    TIMEOUT,
                    c.watch(prefix.clone(), Some(opts)),
                )
                .await
                {
                    Ok(mut stream) => loop {
                        let msg = tokio::select! {
                            m = stream.message() => m,
                            () = tx.closed() => return,
                        };
                        match msg {
                            Ok(Some(resp)) if !resp.canceled() => {
                                if resp.created() {
                                    backoff = Duration::from_millis(100);
                                    quiet = false;
                                }
                                if resp.created() || !resp.events().is_empty() {
                                    // Full: a wake-up is pending already.
                                    let _ = tx.try_send(());
                                }
                            }
                            Ok(_) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "QUIC-LB config watch failed; reconnecting");
                                break;
                            }
                        }
                    },
                    Err(e) => {
                        if !quiet {
                            tracing::warn!(error = %e, "QUIC-LB config watch not established; retrying with backoff");
                            quiet = true;
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
        QuicLbConfigWatch { rx, task }
    }
}
