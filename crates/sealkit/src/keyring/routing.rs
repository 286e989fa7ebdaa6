//! Routing: which provider serves a key, and the instrumentation of every provider call
//! (resilience, counters, latency, errors) and of every audit event.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use sealkit_core::provider::{KeyAdmin, KeyEncryption};
use sealkit_core::{EncryptionContext, KeyRef, KeyUri};

use super::Keyring;
use crate::audit::{AuditEvent, Operation};
use crate::cache::CacheKey;
use crate::metrics_names as m;
use crate::{Error, Result};

impl Keyring {
    pub(super) fn provider(&self, scheme: &str) -> Result<&Arc<dyn KeyEncryption>> {
        self.inner.providers.get(scheme).ok_or_else(|| {
            Error::misconfigured(format!(
                "no provider for {scheme}:// keys is configured; enable its feature and set its environment (see docs/configuration.md)"
            ))
        })
    }

    pub(super) fn admin(&self, key: &KeyUri) -> Result<&Arc<dyn KeyAdmin>> {
        self.admin_for(key.scheme())
    }

    pub(super) fn admin_for(&self, scheme: &str) -> Result<&Arc<dyn KeyAdmin>> {
        self.inner.admins.get(scheme).ok_or_else(|| {
            Error::misconfigured(format!(
                "no key administration for {scheme}:// keys is configured"
            ))
        })
    }

    pub(super) fn default_key_required(&self) -> Result<&KeyUri> {
        self.inner.default_key.as_ref().ok_or_else(|| {
            Error::misconfigured("no default key: set default_key in the config or SEALKIT_DEFAULT_KEY, or use seal_with")
        })
    }

    pub(super) fn audit(
        &self,
        operation: Operation,
        key: Option<&KeyRef>,
        uri: Option<&KeyUri>,
        context: Option<&EncryptionContext>,
        error: Option<&Error>,
    ) {
        let inner = &self.inner;
        if !operation.is_key_operation() && !inner.audit_data_operations {
            return;
        }
        let mut event = AuditEvent::new(&inner.actor, operation);
        event.key = key.map(|k| k.uri.as_str()).or(uri.map(KeyUri::as_str));
        event.key_version = key.map(|k| k.version.as_str());
        event.context = context;
        event.error = error.map(Error::kind);
        if operation.is_key_operation() {
            tracing::info!(target: "sealkit::audit", actor = %inner.actor, operation = operation.as_str(), key = event.key, key_version = event.key_version, context = ?context.map(|c| c.to_string()), outcome = if error.is_none() { "success" } else { "failure" }, error = ?event.error.map(|k| k.as_str()));
        } else {
            tracing::debug!(target: "sealkit::audit", actor = %inner.actor, operation = operation.as_str(), key = event.key, key_version = event.key_version, outcome = if error.is_none() { "success" } else { "failure" }, error = ?event.error.map(|k| k.as_str()));
        }
        for sink in &inner.sinks {
            sink.record(&event);
        }
    }

    pub(super) fn count_error(&self, operation: Operation, provider: &str, error: &Error) {
        metrics::counter!(m::ERRORS_TOTAL, "operation" => operation.as_str(), "provider" => provider.to_string(), "error_type" => error.kind().as_str()).increment(1);
    }

    /// The DEK scope of a context: the pairs named by `dek_scope` (or `scope=shared`).
    pub(super) fn scope_of(&self, context: &EncryptionContext) -> EncryptionContext {
        let keys: Vec<&str> = self.inner.dek_scope.iter().map(String::as_str).collect();
        context.project(&keys).unwrap_or_else(|| {
            EncryptionContext::from_pairs([("scope", "shared")]).expect("a static, valid context")
        })
    }

    pub(super) fn scope_key(&self, out: &mut CacheKey, context: &EncryptionContext) {
        for (k, v) in context.iter() {
            if self.inner.dek_scope.iter().any(|s| s == k) {
                out.push_field(k.as_bytes());
                out.push_field(v.as_bytes());
            }
        }
    }

    pub(super) async fn kms_call<T, F, Fut>(
        &self,
        scheme: &str,
        operation: Operation,
        call: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let started = Instant::now();
        let mut calls = 0u64;
        let mut call = call;
        let result = self
            .inner
            .resilience
            .call(scheme, || {
                calls += 1;
                call()
            })
            .await;
        self.inner.kms_calls.fetch_add(calls, Ordering::Relaxed);
        metrics::counter!(m::KMS_CALLS_TOTAL, "provider" => scheme.to_string(), "operation" => operation.as_str()).increment(calls);
        metrics::histogram!(m::OPERATION_DURATION, "operation" => operation.as_str(), "provider" => scheme.to_string()).record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            self.count_error(operation, scheme, e);
        }
        result
    }
}
