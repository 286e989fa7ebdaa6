//! A loopback TCP proxy that injects faults between a client and a real service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does with new connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultMode {
    /// Forward bytes unchanged.
    Pass,
    /// Wait this long before forwarding (a slow or overloaded service).
    Delay(Duration),
    /// Accept, then close at once (a reset / crashed service).
    Reset,
}

/// A proxy on a free 127.0.0.1 port forwarding to `target`; faults apply to new connections.
/// Stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    delay_ms: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `target` (e.g. `127.0.0.1:8200`).
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(AtomicU8::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (m, d, c) = (mode.clone(), delay_ms.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::Relaxed);
                let (mode, delay) = (m.load(Ordering::Relaxed), d.load(Ordering::Relaxed));
                tokio::spawn(async move {
                    match mode {
                        2 => drop(inbound),
                        _ => {
                            if mode == 1 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            if let Ok(mut outbound) = TcpStream::connect(target).await {
                                let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        }
                    }
                });
            }
        });
        Ok(Self { addr, mode, delay_ms, connections, task })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes what happens to new connections.
    pub fn set_mode(&self, mode: FaultMode) {
        let (code, delay) = match mode {
            FaultMode::Pass => (0, 0),
            FaultMode::Delay(d) => (1, d.as_millis() as u64),
            FaultMode::Reset => (2, 0),
        };
        self.delay_ms.store(delay, Ordering::Relaxed);
        self.mode.store(code, Ordering::Relaxed);
    }

    /// Connections accepted so far (retries show up here).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
