//! AWS Secrets Manager as a secret source.

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use sealkit_core::provider::{
    Secret, SecretSource, secret_field, split_secret_field, with_secret_field,
};
use sealkit_core::{Error, Result};
use secrecy::ExposeSecret;

use crate::AwsSettings;
use crate::error::map;

const PROVIDER: &str = "aws-secrets";

/// AWS Secrets Manager. A name is `SECRET-ID` or `SECRET-ID#field` (a field of a JSON secret,
/// such as `{"password": …}`); a version is a version id or a stage (`AWSCURRENT`,
/// `AWSPREVIOUS`, any all-caps label).
pub struct AwsSecrets {
    settings: AwsSettings,
    client: tokio::sync::OnceCell<Client>,
}

impl std::fmt::Debug for AwsSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSecrets")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AwsSecrets {
    /// A source with `settings`; the SDK configuration loads on first use.
    pub fn new(settings: AwsSettings) -> Self {
        Self {
            settings,
            client: tokio::sync::OnceCell::new(),
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async { Client::new(&self.settings.load().await) })
            .await
    }
}

fn is_stage(version: &str) -> bool {
    version
        .chars()
        .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
        && version
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase())
}

#[async_trait]
impl SecretSource for AwsSecrets {
    fn name(&self) -> &str {
        PROVIDER
    }

    async fn get_secret(&self, name: &str, version: Option<&str>) -> Result<Secret> {
        let (id, field) = split_secret_field(name);
        let what = format!("secret {id}");
        let mut request = self.client().await.get_secret_value().secret_id(id);
        request = match version {
            Some(v) if is_stage(v) => request.version_stage(v),
            Some(v) => request.version_id(v),
            None => request,
        };
        let out = request.send().await.map_err(|e| map(PROVIDER, e, &what))?;
        let served_version = out.version_id().map(str::to_string);
        let bytes = match (out.secret_string(), out.secret_binary(), field) {
            (Some(text), _, Some(field)) => secret_field(PROVIDER, &what, text.as_bytes(), field)?,
            (Some(text), _, None) => text.as_bytes().to_vec(),
            (None, Some(binary), None) => binary.as_ref().to_vec(),
            (None, Some(_), Some(field)) => {
                return Err(Error::invalid_input(format!(
                    "{what} is binary, so it has no field {field:?}"
                )));
            }
            (None, None, _) => {
                return Err(Error::not_found(PROVIDER, format!("a value of {what}")));
            }
        };
        Ok(Secret::new(bytes, served_version))
    }

    /// Puts a new version (`AWSCURRENT`), creating the secret if it does not exist. Text is
    /// stored as `SecretString`, other bytes as `SecretBinary`; `ID#FIELD` sets one field of a
    /// JSON object secret and keeps the others.
    async fn put_secret(&self, name: &str, value: &[u8]) -> Result<Option<String>> {
        let (id, field) = split_secret_field(name);
        let what = format!("secret {id}");
        let client = self.client().await;
        let body = match field {
            None => value.to_vec(),
            Some(field) => {
                let current = match self.get_secret(id, None).await {
                    Ok(secret) => Some(secret),
                    Err(e) if e.kind() == sealkit_core::ErrorKind::NotFound => None,
                    Err(e) => return Err(e),
                };
                let current = current.as_ref().map(|s| s.value.expose_secret().as_slice());
                with_secret_field(&what, current, field, value)?
            }
        };
        let text = std::str::from_utf8(&body).ok();
        let blob = || aws_sdk_secretsmanager::primitives::Blob::new(body.clone());
        let put = client.put_secret_value().secret_id(id);
        let put = match text {
            Some(t) => put.secret_string(t),
            None => put.secret_binary(blob()),
        };
        match put.send().await {
            Ok(out) => Ok(out.version_id().map(str::to_string)),
            Err(e) => match map(PROVIDER, e, &what) {
                e if e.kind() == sealkit_core::ErrorKind::NotFound => {
                    let create = client.create_secret().name(id);
                    let create = match text {
                        Some(t) => create.secret_string(t),
                        None => create.secret_binary(blob()),
                    };
                    let out = create
                        .send()
                        .await
                        .map_err(|e| map(PROVIDER, e, &format!("creating {what}")))?;
                    Ok(out.version_id().map(str::to_string))
                }
                e => Err(e),
            },
        }
    }
}
