//! Health reports: one per checked component (a provider, a secret source, the audit log…).

use std::time::Duration;

/// One component's health.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HealthReport {
    /// What was checked (`provider local`, `audit log`, `legacy key`…).
    pub component: String,
    /// `None` when healthy, else what is wrong.
    pub problem: Option<String>,
    /// How long the check took.
    pub latency: Duration,
}

impl HealthReport {
    /// A report on `component`.
    pub fn new(component: impl Into<String>, problem: Option<String>, latency: Duration) -> Self {
        Self {
            component: component.into(),
            problem,
            latency,
        }
    }

    /// Whether the component is healthy.
    pub fn is_healthy(&self) -> bool {
        self.problem.is_none()
    }
}
