//! Finding the test peers that `cargo xtask peers up` started.

/// The value of `var` (set by `cargo xtask test` from `target/peers/peers.env`).
///
/// When it is absent: with `CI` set this panics with a message naming the peer (a test must
/// never pass silently without its peer); otherwise it prints why the test skips and returns
/// `None`.
pub fn peer_env(var: &str, peer: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{peer} is not running ({var} is unset): run the tests with `cargo xtask test`, which starts it"
        ),
        _ => {
            eprintln!(
                "skipped: {peer} is not running ({var} is unset); `cargo xtask test` starts it"
            );
            None
        }
    }
}

/// A name unique to this process and call, for keys and secrets created by a test.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A peer process a test started for itself: killed and reaped when dropped, so that a failing
/// test leaves no server behind.
#[derive(Debug)]
pub struct OwnedPeer(std::process::Child);

impl OwnedPeer {
    /// Takes ownership of `child`.
    pub fn new(child: std::process::Child) -> Self {
        Self(child)
    }

    /// Kills the process now and waits for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for OwnedPeer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The test OpenBao's address and root token (each through [`peer_env`]).
pub fn vault_peer() -> Option<(String, String)> {
    Some((
        peer_env("SEALKIT_TEST_VAULT_ADDR", "OpenBao")?,
        peer_env("SEALKIT_TEST_VAULT_TOKEN", "OpenBao")?,
    ))
}
