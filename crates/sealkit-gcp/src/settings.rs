//! Where Google Cloud is and which project to use.

use std::time::Duration;

/// The project that short secret names belong to, an optional endpoint override and the time
/// one request may take.
#[derive(Debug, Clone)]
pub struct GcpSettings {
    project: Option<String>,
    secrets_endpoint: Option<String>,
    timeout: Duration,
}

impl Default for GcpSettings {
    fn default() -> Self {
        Self {
            project: None,
            secrets_endpoint: None,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// Variables that name the default project, in the order the Google tools read them.
pub const PROJECT_VARIABLES: [&str; 3] = [
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "CLOUDSDK_CORE_PROJECT",
];

/// The variable that overrides the Secret Manager endpoint.
pub const SECRETS_ENDPOINT_VARIABLE: &str = "SEALKIT_GCP_SECRETS_ENDPOINT";

fn non_empty_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl GcpSettings {
    /// How long one request may take unless [`GcpSettings::with_timeout`] says otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// The project from [`PROJECT_VARIABLES`] and the endpoint from
    /// [`SECRETS_ENDPOINT_VARIABLE`].
    pub fn from_env() -> Self {
        Self {
            project: PROJECT_VARIABLES.iter().find_map(|v| non_empty_var(v)),
            secrets_endpoint: non_empty_var(SECRETS_ENDPOINT_VARIABLE),
            ..Self::default()
        }
    }

    /// Whether the environment configures Google Cloud (a project, credentials or an endpoint
    /// override).
    pub fn configured_in_env() -> bool {
        PROJECT_VARIABLES
            .iter()
            .chain(&["GOOGLE_APPLICATION_CREDENTIALS", SECRETS_ENDPOINT_VARIABLE])
            .any(|v| non_empty_var(v).is_some())
    }

    /// Sets the project of short secret names.
    pub fn with_project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// Sends Secret Manager requests to `url` (an emulator, a private endpoint), without
    /// credentials.
    pub fn with_secrets_endpoint(mut self, url: impl Into<String>) -> Self {
        self.secrets_endpoint = Some(url.into());
        self
    }

    /// Bounds each request (connect, send, receive) to `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The per-request time limit.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The project of short secret names.
    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    /// The Secret Manager endpoint override.
    pub fn secrets_endpoint(&self) -> Option<&str> {
        self.secrets_endpoint.as_deref()
    }
}
