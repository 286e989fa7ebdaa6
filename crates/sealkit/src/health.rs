//! Health reports: one per checked component (a provider, a secret source, the audit log…).

use std::time::Duration;

use crate::{Error, ErrorKind};

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
    /// The kind of the failure, when the check failed with an error.
    pub kind: Option<ErrorKind>,
}

impl HealthReport {
    /// A report on `component`.
    pub fn new(component: impl Into<String>, problem: Option<String>, latency: Duration) -> Self {
        Self {
            component: component.into(),
            problem,
            latency,
            kind: None,
        }
    }

    /// A report on `component` from the outcome of its check.
    pub fn from_result(
        component: impl Into<String>,
        result: Result<(), &Error>,
        latency: Duration,
    ) -> Self {
        let mut report = Self::new(component, result.err().map(ToString::to_string), latency);
        report.kind = result.err().map(Error::kind);
        report
    }

    /// Whether the component is healthy.
    pub fn is_healthy(&self) -> bool {
        self.problem.is_none()
    }
}
