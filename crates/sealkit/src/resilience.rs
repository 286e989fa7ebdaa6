//! Retries with exponential backoff and full jitter, per-attempt timeouts, and a circuit
//! breaker per provider.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sealkit_core::SecureRandom;

use crate::config::ResilienceConfig;
use crate::random::OsRandom;
use crate::{Error, Result};

#[derive(Default)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

/// The state of one provider's circuit, for health reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the deadline, then one is let through.
    Open,
}

pub(crate) struct Resilience {
    config: ResilienceConfig,
    breakers: Mutex<HashMap<String, Breaker>>,
}

impl Resilience {
    pub(crate) fn new(config: ResilienceConfig) -> Self {
        Self {
            config,
            breakers: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn state(&self, provider: &str) -> CircuitState {
        let breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        match breakers.get(provider).and_then(|b| b.open_until) {
            Some(until) if until > Instant::now() => CircuitState::Open,
            _ => CircuitState::Closed,
        }
    }

    fn check_open(&self, provider: &str) -> Result<()> {
        let breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = breakers.get(provider).and_then(|b| b.open_until) {
            let now = Instant::now();
            if until > now {
                return Err(Error::unavailable(
                    provider,
                    format!(
                        "circuit open after {} consecutive failures; calls resume in {} s",
                        self.config.failure_threshold,
                        (until - now).as_secs() + 1
                    ),
                ));
            }
        }
        Ok(())
    }

    fn record(&self, provider: &str, failed: bool) {
        let mut breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let b = breakers.entry(provider.to_string()).or_default();
        if failed {
            b.consecutive_failures += 1;
            if b.consecutive_failures >= self.config.failure_threshold.max(1) {
                b.open_until = Some(Instant::now() + Duration::from_secs(self.config.open_secs));
                tracing::warn!(
                    provider,
                    failures = b.consecutive_failures,
                    "circuit opened"
                );
            }
        } else {
            if b.open_until.is_some() {
                tracing::info!(provider, "circuit closed");
            }
            *b = Breaker::default();
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.config.max_backoff_ms.max(1);
        let exp = self
            .config
            .initial_backoff_ms
            .saturating_mul(1u64 << attempt.min(20))
            .min(cap);
        let mut r = [0u8; 8];
        let _ = OsRandom.fill(&mut r);
        Duration::from_millis(u64::from_le_bytes(r) % (exp + 1))
    }

    /// Runs `call` with retries on retryable errors, a timeout per attempt, and the breaker.
    pub(crate) async fn call<T, F, Fut>(&self, provider: &str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.check_open(provider)?;
        let attempts = self.config.max_attempts.max(1);
        let timeout = Duration::from_millis(self.config.timeout_ms.max(1));
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt - 1)).await;
            }
            let outcome = match tokio::time::timeout(timeout, call()).await {
                Ok(r) => r,
                Err(_) => Err(Error::unavailable(
                    provider,
                    format!("no answer within {} ms", timeout.as_millis()),
                )),
            };
            match outcome {
                Ok(v) => {
                    self.record(provider, false);
                    return Ok(v);
                }
                Err(e) if e.is_retryable() => {
                    tracing::debug!(provider, attempt, error = %e, "retryable provider error");
                    last = Some(e);
                }
                Err(e) => {
                    // The provider answered: it is up, even if it said no.
                    self.record(provider, false);
                    return Err(e);
                }
            }
        }
        self.record(provider, true);
        Err(last.unwrap_or_else(|| Error::unavailable(provider, "no attempt made")))
    }
}
