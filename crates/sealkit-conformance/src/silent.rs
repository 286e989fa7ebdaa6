//! A service that accepts connections and never answers, to prove that every network call
//! ends by its client's own timeout.

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use sealkit_core::{ErrorKind, Result};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A listener on a free 127.0.0.1 port that accepts every connection, reads what it is sent
/// and never writes a byte. Stops (and drops its connections) when dropped.
#[derive(Debug)]
pub struct SilentService {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl SilentService {
    /// Starts the listener.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut sink = [0u8; 4096];
                    while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        Ok(Self { addr, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SilentService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks that `call`, made to a [`SilentService`], fails with a retryable error (so a
/// fallback chain moves on) instead of hanging. `bound` is a liveness bound far above the
/// client's configured timeout — a hang detector, not a performance figure.
pub async fn ends_against_a_silent_service<T: Debug>(
    what: &str,
    bound: Duration,
    call: impl Future<Output = Result<T>>,
) {
    match tokio::time::timeout(bound, call).await {
        Err(_) => panic!("{what} still waits for a silent service after {bound:?}"),
        Ok(Ok(value)) => panic!("{what} succeeded against a silent service: {value:?}"),
        Ok(Err(error)) => {
            assert_eq!(error.kind(), ErrorKind::Unavailable, "{what}: {error}");
            assert!(error.is_retryable(), "{what}: {error}");
        }
    }
}
