//! Where Google Cloud is and which project to use, and the provider's registry entry.

use std::sync::Arc;
use std::time::Duration;

use sealkit_core::Result;
use sealkit_core::registry::{ProviderDescriptor, ProviderParts, ProviderSettings, Setting};

/// The settings the Google Cloud provider reads, with their variables. Credentials are
/// Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud, workload
/// identity, the metadata server), read by Google's client on its first call.
const SETTINGS: &[Setting] = &[
    Setting {
        name: "project",
        variables: &PROJECT_VARIABLES,
        help: "the project of short secret names",
        secret: false,
    },
    Setting {
        name: "credentials",
        variables: &["GOOGLE_APPLICATION_CREDENTIALS"],
        help: "a credentials file (read by Google's client, as ADC)",
        secret: false,
    },
    Setting {
        name: "secrets_endpoint",
        variables: &[SECRETS_ENDPOINT_VARIABLE],
        help: "another Secret Manager endpoint (an emulator), called without credentials",
        secret: false,
    },
    Setting {
        name: "kms_endpoint",
        variables: &[KMS_ENDPOINT_VARIABLE],
        help: "another Cloud KMS endpoint (a test peer), called with the `credentials` key file, or without credentials",
        secret: false,
    },
    Setting {
        name: "location",
        variables: &["SEALKIT_GCP_KMS_LOCATION"],
        help: "the Cloud KMS location whose keys `keys list` shows (default global)",
        secret: false,
    },
    Setting {
        name: "timeout_ms",
        variables: &["SEALKIT_GCP_TIMEOUT_MS"],
        help: "time one request may take (default 10000)",
        secret: false,
    },
];

/// Google Cloud (Cloud KMS keys, Secret Manager secrets) as one value, for the facade's
/// registry. Detected when a project, a credentials file or an endpoint override is set.
pub const PROVIDER: ProviderDescriptor = ProviderDescriptor {
    name: "gcp",
    scheme: Some(crate::kms::SCHEME),
    secret_sources: &["gcp-secrets"],
    settings: SETTINGS,
    detect: |settings| !settings.is_empty(),
    build: build_from_settings,
};

fn build_from_settings(settings: &ProviderSettings) -> Result<ProviderParts> {
    let settings = GcpSettings::from_provider_settings(settings)?;
    Ok(ProviderParts::new()
        .with_managed_keys(Arc::new(crate::GcpKms::new(settings.clone())))
        .with_secrets(Arc::new(crate::GcpSecrets::new(settings))))
}

/// The project that short secret names belong to, an optional endpoint override and the time
/// one request may take.
#[derive(Debug, Clone)]
pub struct GcpSettings {
    project: Option<String>,
    credentials: Option<std::path::PathBuf>,
    secrets_endpoint: Option<String>,
    kms_endpoint: Option<String>,
    location: String,
    timeout: Duration,
}

impl Default for GcpSettings {
    fn default() -> Self {
        Self {
            project: None,
            credentials: None,
            secrets_endpoint: None,
            kms_endpoint: None,
            location: "global".into(),
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

/// The variable that overrides the Cloud KMS endpoint.
pub const KMS_ENDPOINT_VARIABLE: &str = "SEALKIT_GCP_KMS_ENDPOINT";

impl GcpSettings {
    /// How long one request may take unless [`GcpSettings::with_timeout`] says otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// The project from [`PROJECT_VARIABLES`], the endpoint from
    /// [`SECRETS_ENDPOINT_VARIABLE`] and `SEALKIT_GCP_TIMEOUT_MS`.
    pub fn from_env() -> Result<Self> {
        Self::from_provider_settings(&PROVIDER.settings_from(&|name| std::env::var(name).ok()))
    }

    /// From a settings table (`project`, `secrets_endpoint`, `timeout_ms`; `credentials` is
    /// read by Google's client from `GOOGLE_APPLICATION_CREDENTIALS`).
    pub fn from_provider_settings(settings: &ProviderSettings) -> Result<Self> {
        let mut out = Self {
            project: settings.get("project").map(str::to_string),
            secrets_endpoint: settings.get("secrets_endpoint").map(str::to_string),
            kms_endpoint: settings.get("kms_endpoint").map(str::to_string),
            credentials: settings.get("credentials").map(std::path::PathBuf::from),
            ..Self::default()
        };
        if let Some(location) = settings.get("location") {
            out.location = location.to_string();
        }
        if let Some(ms) = settings.parse::<u64>("timeout_ms")? {
            out.timeout = Duration::from_millis(ms);
        }
        Ok(out)
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

    /// A service-account key file for requests to an endpoint override (Google's client reads
    /// Application Default Credentials, `GOOGLE_APPLICATION_CREDENTIALS`, by itself otherwise).
    pub fn with_credentials_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.credentials = Some(path.into());
        self
    }

    /// The service-account key file, if one is set.
    pub fn credentials_file(&self) -> Option<&std::path::Path> {
        self.credentials.as_deref()
    }

    /// Sends Cloud KMS requests to `url` (a test peer, a private endpoint), without
    /// credentials unless a key file is set ([`GcpSettings::with_credentials_file`]).
    pub fn with_kms_endpoint(mut self, url: impl Into<String>) -> Self {
        self.kms_endpoint = Some(url.into());
        self
    }

    /// The Cloud KMS endpoint override.
    pub fn kms_endpoint(&self) -> Option<&str> {
        self.kms_endpoint.as_deref()
    }

    /// `projects/P/locations/L` of the configured project and location, whose keys
    /// `list_keys` lists.
    pub fn kms_location(&self) -> Option<String> {
        self.project
            .as_ref()
            .map(|p| format!("projects/{p}/locations/{}", self.location))
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
