//! Where AWS is and who we are, and the provider's registry entry.

use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use sealkit_core::Result;
use sealkit_core::registry::{ProviderDescriptor, ProviderParts, ProviderSettings, Setting};
use zeroize::Zeroizing;

/// The settings the AWS provider reads, with their variables. Credentials come from the
/// SDK's default chain (environment, profile, web identity, instance metadata) unless static
/// ones are set in the configuration file.
const SETTINGS: &[Setting] = &[
    Setting {
        name: "region",
        variables: &["AWS_REGION", "AWS_DEFAULT_REGION"],
        help: "the region, e.g. eu-west-1",
        secret: false,
    },
    Setting {
        name: "endpoint",
        variables: &["SEALKIT_AWS_ENDPOINT", "AWS_ENDPOINT_URL"],
        help: "another endpoint (a VPC endpoint, an emulator)",
        secret: false,
    },
    Setting {
        name: "access_key_id",
        variables: &[],
        help: "static credentials (configuration file only; the default chain otherwise)",
        secret: false,
    },
    Setting {
        name: "secret_access_key",
        variables: &[],
        help: "static credentials (configuration file only)",
        secret: true,
    },
    Setting {
        name: "timeout_ms",
        variables: &["SEALKIT_AWS_TIMEOUT_MS"],
        help: "time one request may take, from connecting to the last byte (default 10000)",
        secret: false,
    },
    Setting {
        name: "connect_timeout_ms",
        variables: &["SEALKIT_AWS_CONNECT_TIMEOUT_MS"],
        help: "time to connect (default 3000)",
        secret: false,
    },
    Setting {
        name: "deletion_window_days",
        variables: &["SEALKIT_AWS_DELETION_WINDOW_DAYS"],
        help: "days before a deleted key is gone, 7 to 30 (default 30)",
        secret: false,
    },
];

/// AWS (KMS keys and Secrets Manager secrets) as one value, for the facade's registry.
/// Detected when a region or an endpoint is set.
pub const PROVIDER: ProviderDescriptor = ProviderDescriptor {
    name: "aws",
    scheme: Some(crate::SCHEME),
    secret_sources: &["aws-secrets"],
    settings: SETTINGS,
    detect: |settings| settings.get("region").is_some() || settings.get("endpoint").is_some(),
    build: build_from_settings,
};

fn build_from_settings(settings: &ProviderSettings) -> Result<ProviderParts> {
    let settings = AwsSettings::from_provider_settings(settings)?;
    Ok(ProviderParts::new()
        .with_managed_keys(Arc::new(crate::AwsKms::new(settings.clone())))
        .with_secrets(Arc::new(crate::AwsSecrets::new(settings))))
}

/// Region, endpoint and (optionally) static credentials; the rest comes from the AWS SDK's
/// default chain (environment, profile, web identity, instance metadata…).
#[derive(Clone)]
pub struct AwsSettings {
    region: Option<String>,
    endpoint: Option<String>,
    static_credentials: Option<(String, Zeroizing<String>)>,
    deletion_window_days: i32,
    timeout: Duration,
    connect_timeout: Duration,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            region: None,
            endpoint: None,
            static_credentials: None,
            deletion_window_days: 30,
            timeout: Self::DEFAULT_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSettings")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("deletion_window_days", &self.deletion_window_days)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field(
                "static_credentials",
                &self.static_credentials.as_ref().map(|(id, _)| id),
            )
            .finish()
    }
}

impl AwsSettings {
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`), `SEALKIT_AWS_ENDPOINT` (or `AWS_ENDPOINT_URL`)
    /// and `SEALKIT_AWS_DELETION_WINDOW_DAYS`; credentials from the SDK's default chain.
    pub fn from_env() -> Result<Self> {
        Self::from_provider_settings(&PROVIDER.settings_from(&|name| std::env::var(name).ok()))
    }

    /// From a settings table (`region`, `endpoint`, `access_key_id` + `secret_access_key`,
    /// `deletion_window_days`).
    pub fn from_provider_settings(settings: &ProviderSettings) -> Result<Self> {
        let mut out = Self {
            region: settings.get("region").map(str::to_string),
            endpoint: settings.get("endpoint").map(str::to_string),
            ..Self::default()
        };
        if let (Some(id), Some(secret)) = (
            settings.get("access_key_id"),
            settings.get("secret_access_key"),
        ) {
            out = out.with_static_credentials(id, secret);
        }
        if let Some(days) = settings.parse::<i32>("deletion_window_days")? {
            out = out.with_deletion_window_days(days)?;
        }
        if let Some(ms) = settings.parse::<u64>("timeout_ms")? {
            out = out.with_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = settings.parse::<u64>("connect_timeout_ms")? {
            out = out.with_connect_timeout(Duration::from_millis(ms));
        }
        Ok(out)
    }

    /// How long one request may take unless [`AwsSettings::with_timeout`] says otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long connecting may take unless [`AwsSettings::with_connect_timeout`] says
    /// otherwise.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

    /// Bounds each request, from connecting to the last byte of the answer (the SDK's own
    /// retries are off: the facade retries, under its own policy).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bounds connecting.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Days a deleted key stays restorable (AWS allows 7 to 30; default 30).
    pub fn with_deletion_window_days(mut self, days: i32) -> Result<Self> {
        if !(7..=30).contains(&days) {
            return Err(sealkit_core::Error::misconfigured(format!(
                "deletion_window_days = {days}: AWS KMS accepts 7 to 30"
            )));
        }
        self.deletion_window_days = days;
        Ok(self)
    }

    /// Days a deleted key stays restorable.
    pub fn deletion_window_days(&self) -> i32 {
        self.deletion_window_days
    }

    /// Sets the region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sends requests to `url` (an emulator, a VPC endpoint).
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Uses fixed credentials instead of the default chain.
    pub fn with_static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.static_credentials = Some((
            access_key_id.into(),
            Zeroizing::new(secret_access_key.into()),
        ));
        self
    }

    /// Loads the SDK configuration.
    pub(crate) async fn load(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(self.connect_timeout)
                    .operation_attempt_timeout(self.timeout)
                    .operation_timeout(self.timeout)
                    .build(),
            )
            .retry_config(RetryConfig::disabled());
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some((id, secret)) = &self.static_credentials {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret.as_str(),
                None,
                None,
                "sealkit-static",
            ));
        }
        loader.load().await
    }
}
