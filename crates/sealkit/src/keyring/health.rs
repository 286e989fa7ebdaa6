//! Health checks: every provider, the legacy key, the DEK store, configured secrets and
//! audit sinks.

use std::time::Instant;

use sealkit_core::{EncryptionContext, KeyUri};

use super::Keyring;
use crate::audit::Operation;
use crate::config::Mode;
use crate::health::HealthReport;
use crate::resilience::CircuitState;
use crate::{Error, Result};

impl Keyring {
    /// Checks every registered provider with a real round trip — a generate/unwrap of a data
    /// key under the default key where it belongs to that provider, otherwise a key listing
    /// (or, for a provider without an admin side, a metadata read, where "not found" still
    /// proves the service answered) — then the legacy key, every configured secret through
    /// each of its sources, and the audit sinks.
    pub async fn health(&self) -> Vec<HealthReport> {
        let mut reports = Vec::new();
        for scheme in self.schemes() {
            let started = Instant::now();
            let result = self.check_provider(scheme).await;
            let mut report = HealthReport::from_result(
                format!("provider {scheme}"),
                result.as_ref().map(|_| ()),
                started.elapsed(),
            );
            if self.circuit_state(scheme) == CircuitState::Open && report.problem.is_none() {
                report.problem = Some("circuit open".into());
                report.kind = Some(crate::ErrorKind::Unavailable);
            }
            self.audit(
                Operation::HealthCheck,
                None,
                self.inner
                    .default_key
                    .as_ref()
                    .filter(|k| k.scheme() == scheme),
                None,
                result.as_ref().err(),
            );
            reports.push(report);
        }
        if self.inner.mode != Mode::Kms {
            let started = Instant::now();
            let legacy = self.legacy().map(|_| ());
            reports.push(HealthReport::from_result(
                "legacy key",
                legacy.as_ref().map(|_| ()),
                started.elapsed(),
            ));
        }
        if let Some(store) = self.dek_store() {
            // A one-row read: the table exists and answers.
            let started = Instant::now();
            let read = store.list(None, 1).await.map(|_| ());
            reports.push(HealthReport::from_result(
                format!("DEK store {}", store.describe()),
                read.as_ref().map(|_| ()),
                started.elapsed(),
            ));
        }
        for chain in self.inner.secrets.values() {
            reports.extend(chain.check_links().await);
        }
        for sink in &self.inner.sinks {
            let started = Instant::now();
            let flushed = sink.flush();
            reports.push(HealthReport::from_result(
                format!("audit sink {sink:?}"),
                flushed.as_ref().map(|_| ()),
                started.elapsed(),
            ));
        }
        reports
    }

    /// One real round trip to the provider of `scheme`.
    async fn check_provider(&self, scheme: &str) -> Result<()> {
        let provider = self.provider(scheme)?.clone();
        let default_key = self
            .inner
            .default_key
            .as_ref()
            .filter(|k| k.scheme() == scheme);
        if let Some(key) = default_key {
            let probe =
                EncryptionContext::from_pairs([("sealkit", "health")]).expect("static context");
            let g = self
                .kms_call(scheme, Operation::HealthCheck, || {
                    provider.generate_data_key(key, &probe)
                })
                .await?;
            let back = self
                .kms_call(scheme, Operation::HealthCheck, || {
                    provider.unwrap(&g.wrapped, &probe)
                })
                .await?;
            return if back.expose() == g.plaintext.expose() {
                Ok(())
            } else {
                Err(Error::other(scheme, "round trip returned another key"))
            };
        }
        if let Ok(admin) = self.admin_for(scheme) {
            let admin = admin.clone();
            return self
                .kms_call(scheme, Operation::HealthCheck, || admin.list_keys(None))
                .await
                .map(|_| ());
        }
        let probe = KeyUri::parse(&format!("{scheme}://sealkit-health-probe"))?;
        match self
            .kms_call(scheme, Operation::HealthCheck, || {
                provider.key_metadata(&probe)
            })
            .await
        {
            Err(e) if e.kind() != crate::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
