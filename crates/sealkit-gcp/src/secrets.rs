//! Google Cloud Secret Manager as a secret source.

use async_trait::async_trait;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_secretmanager_v1::client::SecretManagerService;
use google_cloud_secretmanager_v1::model::{Replication, SecretPayload, replication};
use sealkit_core::provider::{
    Secret, SecretSource, secret_field, split_secret_field, with_secret_field,
};
use sealkit_core::{Error, Result};
use secrecy::ExposeSecret;

use crate::GcpSettings;
use crate::error::map;

const PROVIDER: &str = "gcp-secrets";

/// Google Cloud Secret Manager. A name is a secret id of the configured project
/// (`db-password`) or a full resource name (`projects/P/secrets/ID`, also with
/// `locations/L/`); a version is `latest` (the default), a version number or an alias.
pub struct GcpSecrets {
    settings: GcpSettings,
    client: tokio::sync::OnceCell<SecretManagerService>,
}

impl std::fmt::Debug for GcpSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpSecrets")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl GcpSecrets {
    /// A source with `settings`; the client is built on first use.
    pub fn new(settings: GcpSettings) -> Self {
        Self {
            settings,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// The client. Retries are left to the caller (the `sealkit` facade retries with
    /// backoff, under its own timeouts).
    async fn client(&self) -> Result<&SecretManagerService> {
        self.client
            .get_or_try_init(|| async {
                let mut builder = SecretManagerService::builder()
                    .with_retry_policy(NeverRetry)
                    .with_attempt_timeout(self.settings.timeout());
                if let Some(endpoint) = self.settings.secrets_endpoint() {
                    builder = builder.with_endpoint(endpoint).with_credentials(
                        google_cloud_auth::credentials::anonymous::Builder::new().build(),
                    );
                }
                builder.build().await.map_err(|e| {
                    Error::misconfigured(format!(
                        "cannot build the Secret Manager client: {e}; check the Application \
                         Default Credentials (GOOGLE_APPLICATION_CREDENTIALS)"
                    ))
                })
            })
            .await
    }

    /// The resource name of secret `name` (an id of the configured project, or a resource
    /// name as it is).
    pub fn secret_name(&self, name: &str) -> Result<String> {
        if name.starts_with("projects/") {
            if !is_secret_resource(name) {
                return Err(Error::invalid_input(format!(
                    "{name:?} is not a secret resource name; expected projects/P/secrets/ID"
                )));
            }
            return Ok(name.to_string());
        }
        if !is_id(name) {
            return Err(Error::invalid_input(format!(
                "{name:?} is not a secret id (letters, digits, '-' and '_'), nor \
                 projects/P/secrets/ID"
            )));
        }
        let project = self.settings.project().ok_or_else(|| {
            Error::misconfigured(format!(
                "secret {name} has no project; set GOOGLE_CLOUD_PROJECT or name it \
                 projects/P/secrets/{name}"
            ))
        })?;
        Ok(format!("projects/{project}/secrets/{name}"))
    }

    /// The resource name of version `version` (`latest` when `None`) of secret `name`.
    pub fn version_name(&self, name: &str, version: Option<&str>) -> Result<String> {
        let secret = self.secret_name(name)?;
        let version = version.unwrap_or("latest");
        if !is_id(version) {
            return Err(Error::invalid_input(format!(
                "{version:?} is not a secret version (latest, a number or an alias)"
            )));
        }
        Ok(format!("{secret}/versions/{version}"))
    }

    /// Creates secret `name`, replicated automatically, with no version yet.
    pub async fn create_secret(&self, name: &str) -> Result<()> {
        let secret = self.secret_name(name)?;
        let (parent, id) = secret
            .rsplit_once("/secrets/")
            .ok_or_else(|| Error::invalid_input(format!("{secret:?} names no secret")))?;
        self.client()
            .await?
            .create_secret()
            .set_parent(parent)
            .set_secret_id(id)
            .set_secret(
                google_cloud_secretmanager_v1::model::Secret::new().set_replication(
                    Replication::new().set_automatic(replication::Automatic::new()),
                ),
            )
            .send()
            .await
            .map_err(|e| map(PROVIDER, e, &format!("creating secret {secret}")))?;
        Ok(())
    }

    /// Adds `value` as the newest version of secret `name`, sent with its CRC32C so that the
    /// service checks it on the way in; returns the new version.
    pub async fn add_version(&self, name: &str, value: &[u8]) -> Result<String> {
        let secret = self.secret_name(name)?;
        let added = self
            .client()
            .await?
            .add_secret_version()
            .set_parent(&secret)
            .set_payload(
                SecretPayload::new()
                    .set_data(value.to_vec())
                    .set_data_crc32c(i64::from(crc32c::crc32c(value))),
            )
            .send()
            .await
            .map_err(|e| map(PROVIDER, e, &format!("adding a version to {secret}")))?;
        Ok(version_of(&added.name).unwrap_or_default())
    }
}

/// The version at the end of a version's resource name (`…/versions/3` → `3`).
fn version_of(resource: &str) -> Option<String> {
    resource
        .rsplit_once("/versions/")
        .map(|(_, v)| v.to_string())
}

/// A secret id, version number or alias: letters, digits, `-` and `_`, at most 255 bytes.
fn is_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 255
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `projects/P/secrets/ID` or `projects/P/locations/L/secrets/ID`.
fn is_secret_resource(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["projects", p, "secrets", id] => is_id(p) && is_id(id),
        ["projects", p, "locations", l, "secrets", id] => is_id(p) && is_id(l) && is_id(id),
        _ => false,
    }
}

#[async_trait]
impl SecretSource for GcpSecrets {
    fn name(&self) -> &str {
        PROVIDER
    }

    async fn get_secret(&self, name: &str, version: Option<&str>) -> Result<Secret> {
        let (name, field) = split_secret_field(name);
        let resource = self.version_name(name, version)?;
        let what = format!("secret version {resource}");
        let response = self
            .client()
            .await?
            .access_secret_version()
            .set_name(&resource)
            .send()
            .await
            .map_err(|e| map(PROVIDER, e, &what))?;
        let payload = response
            .payload
            .ok_or_else(|| Error::not_found(PROVIDER, format!("a payload of {what}")))?;
        if let Some(expected) = payload.data_crc32c
            && i64::from(crc32c::crc32c(&payload.data)) != expected
        {
            return Err(Error::unavailable(
                PROVIDER,
                format!(
                    "{what}: the payload failed its CRC32C check (corrupted in transit); retry"
                ),
            ));
        }
        let value = match field {
            Some(field) => secret_field(PROVIDER, &what, &payload.data, field)?,
            None => payload.data.to_vec(),
        };
        Ok(Secret::new(value, version_of(&response.name)))
    }

    /// Adds a version, creating the secret (replicated automatically) if it does not exist;
    /// `ID#FIELD` sets one field of a JSON object secret and keeps the others.
    async fn put_secret(&self, name: &str, value: &[u8]) -> Result<Option<String>> {
        let (id, field) = split_secret_field(name);
        let current = match self.get_secret(id, None).await {
            Ok(secret) => Some(secret),
            Err(e) if e.kind() == sealkit_core::ErrorKind::NotFound => None,
            Err(e) if e.kind() == sealkit_core::ErrorKind::KeyDisabled && field.is_none() => None,
            Err(e) => return Err(e),
        };
        let body = match field {
            None => value.to_vec(),
            Some(field) => {
                let what = format!("secret {}", self.secret_name(id)?);
                let bytes = current.as_ref().map(|s| s.value.expose_secret().as_slice());
                with_secret_field(&what, bytes, field, value)?
            }
        };
        match self.add_version(id, &body).await {
            Ok(version) => Ok(Some(version)),
            Err(e) if e.kind() == sealkit_core::ErrorKind::NotFound => {
                self.create_secret(id).await?;
                Ok(Some(self.add_version(id, &body).await?))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_against_the_project_or_stand_as_given() {
        let source = GcpSecrets::new(GcpSettings::default().with_project("p1"));
        assert_eq!(
            source.version_name("db-password", None).unwrap(),
            "projects/p1/secrets/db-password/versions/latest"
        );
        assert_eq!(
            source
                .version_name("projects/p2/secrets/k", Some("3"))
                .unwrap(),
            "projects/p2/secrets/k/versions/3"
        );
        assert_eq!(
            source
                .version_name("projects/p2/locations/eu/secrets/k", Some("prod"))
                .unwrap(),
            "projects/p2/locations/eu/secrets/k/versions/prod"
        );
    }

    #[test]
    fn bad_names_and_versions_are_refused_before_any_call() {
        let source = GcpSecrets::new(GcpSettings::default().with_project("p1"));
        for (name, version) in [
            ("a/../b", None),
            ("", None),
            ("projects/p/secrets", None),
            ("projects/p/secrets/k/versions/1", None),
            ("ok", Some("1/../../x")),
            ("ok", Some("")),
        ] {
            let error = source.version_name(name, version).unwrap_err();
            assert!(
                matches!(error, Error::InvalidInput { .. }),
                "{name} {version:?}: {error}"
            );
        }
        let unprojected = GcpSecrets::new(GcpSettings::default());
        let error = unprojected.version_name("db-password", None).unwrap_err();
        assert!(
            error.to_string().contains("GOOGLE_CLOUD_PROJECT"),
            "{error}"
        );
    }
}
