//! A loopback TCP proxy that injects faults between a client and a real service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
            while let Ok((inbound, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::Relaxed);
                let (m, d) = (m.clone(), d.clone());
                tokio::spawn(async move {
                    if m.load(Ordering::Relaxed) == 2 {
                        return; // reset: close at once
                    }
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        relay(inbound, outbound, m, d).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            mode,
            delay_ms,
            connections,
            task,
        })
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

/// Forwards both ways; faults apply to every request chunk, also on kept-alive connections:
/// a delay before each client chunk is forwarded, a reset closes the connection.
async fn relay(
    inbound: TcpStream,
    outbound: TcpStream,
    mode: Arc<AtomicU8>,
    delay_ms: Arc<AtomicU64>,
) {
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let (m, d) = (mode.clone(), delay_ms);
    let upstream = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match in_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            match m.load(Ordering::Relaxed) {
                2 => return,
                1 => tokio::time::sleep(Duration::from_millis(d.load(Ordering::Relaxed))).await,
                _ => {}
            }
            if out_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match out_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if mode.load(Ordering::Relaxed) == 2 || in_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Either direction ending closes the connection (dropping both halves).
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
