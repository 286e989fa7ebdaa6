//! Health checks: every provider, the legacy key, configured secrets and audit sinks.

use std::time::Instant;

use sealkit_core::EncryptionContext;

use super::Keyring;
use crate::Error;
use crate::audit::Operation;
use crate::config::Mode;
use crate::health::HealthReport;
use crate::resilience::CircuitState;

impl Keyring {
    /// Checks every provider (a real generate/unwrap round trip on the default key where it
    /// belongs to that provider, otherwise a metadata call), the legacy key and the audit sinks.
    pub async fn health(&self) -> Vec<HealthReport> {
        let mut reports = Vec::new();
        let probe = EncryptionContext::from_pairs([("sealkit", "health")]).expect("static context");
        for scheme in self.schemes() {
            let started = Instant::now();
            let provider = self.inner.providers[scheme].clone();
            let problem = match self
                .inner
                .default_key
                .as_ref()
                .filter(|k| k.scheme() == scheme)
            {
                Some(key) => {
                    let round_trip = async {
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
                        if back.expose() == g.plaintext.expose() {
                            Ok(())
                        } else {
                            Err(Error::other(scheme, "round trip returned another key"))
                        }
                    };
                    round_trip.await.err().map(|e| e.to_string())
                }
                None => None,
            };
            let mut report = HealthReport {
                component: format!("provider {scheme}"),
                problem,
                latency: started.elapsed(),
            };
            if self.circuit_state(scheme) == CircuitState::Open && report.problem.is_none() {
                report.problem = Some("circuit open".into());
            }
            self.audit(
                Operation::HealthCheck,
                None,
                self.inner
                    .default_key
                    .as_ref()
                    .filter(|k| k.scheme() == scheme),
                None,
                None,
            );
            reports.push(report);
        }
        if self.inner.mode != Mode::Kms {
            let started = Instant::now();
            reports.push(HealthReport {
                component: "legacy key".into(),
                problem: self.legacy().err().map(|e| e.to_string()),
                latency: started.elapsed(),
            });
        }
        for chain in self.inner.secrets.values() {
            reports.extend(chain.check_links().await);
        }
        for sink in &self.inner.sinks {
            let started = Instant::now();
            reports.push(HealthReport {
                component: format!("audit sink {sink:?}"),
                problem: sink.flush().err().map(|e| e.to_string()),
                latency: started.elapsed(),
            });
        }
        reports
    }
}
