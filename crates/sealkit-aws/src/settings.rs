//! Where AWS is and who we are.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use zeroize::Zeroizing;

/// Region, endpoint and (optionally) static credentials; the rest comes from the AWS SDK's
/// default chain (environment, profile, web identity, instance metadata…).
#[derive(Clone, Default)]
pub struct AwsSettings {
    region: Option<String>,
    endpoint: Option<String>,
    static_credentials: Option<(String, Zeroizing<String>)>,
}

impl std::fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSettings")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field(
                "static_credentials",
                &self.static_credentials.as_ref().map(|(id, _)| id),
            )
            .finish()
    }
}

impl AwsSettings {
    /// The SDK's defaults, with `SEALKIT_AWS_ENDPOINT` as an endpoint override.
    pub fn from_env() -> Self {
        let endpoint = std::env::var("SEALKIT_AWS_ENDPOINT")
            .ok()
            .filter(|v| !v.is_empty());
        Self {
            endpoint,
            ..Self::default()
        }
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
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
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
