//! Connection settings and authentication.

use std::time::Duration;

use sealkit_core::{Error, Result};
use vaultrs::client::{Client, VaultClient, VaultClientSettingsBuilder};
use zeroize::Zeroizing;

/// How to authenticate.
#[derive(Clone)]
#[non_exhaustive]
pub enum VaultAuth {
    /// A token (`VAULT_TOKEN`).
    Token(Zeroizing<String>),
    /// AppRole login at `mount` with a role id and secret id.
    AppRole {
        /// The auth mount (`approle`).
        mount: String,
        /// The role id.
        role_id: String,
        /// The secret id.
        secret_id: Zeroizing<String>,
    },
}

impl std::fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token([REDACTED])"),
            Self::AppRole { mount, role_id, .. } => {
                write!(
                    f,
                    "AppRole {{ mount: {mount:?}, role_id: {role_id:?}, secret_id: [REDACTED] }}"
                )
            }
        }
    }
}

/// Where Vault is and how to log in.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    address: String,
    auth: VaultAuth,
    namespace: Option<String>,
    timeout: Duration,
}

impl VaultConfig {
    /// A configuration for `address` with `auth`.
    pub fn new(address: impl Into<String>, auth: VaultAuth) -> Self {
        Self {
            address: address.into(),
            auth,
            namespace: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// Reads `SEALKIT_VAULT_ADDR` or `VAULT_ADDR`, and `VAULT_TOKEN` or AppRole variables.
    pub fn from_env() -> Result<Self> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        let address = var("SEALKIT_VAULT_ADDR")
            .or_else(|| var("VAULT_ADDR"))
            .ok_or_else(|| {
                Error::misconfigured(
                    "set VAULT_ADDR (or SEALKIT_VAULT_ADDR) to the Vault server's address",
                )
            })?;
        let auth = match (
            var("VAULT_ROLE_ID"),
            var("VAULT_SECRET_ID"),
            var("VAULT_TOKEN"),
        ) {
            (Some(role_id), Some(secret_id), _) => VaultAuth::AppRole {
                mount: var("SEALKIT_VAULT_APPROLE_MOUNT").unwrap_or_else(|| "approle".into()),
                role_id,
                secret_id: Zeroizing::new(secret_id),
            },
            (_, _, Some(token)) => VaultAuth::Token(Zeroizing::new(token)),
            _ => {
                return Err(Error::misconfigured(
                    "no Vault credentials: set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID for AppRole",
                ));
            }
        };
        let mut config = Self::new(address, auth);
        config.namespace = var("VAULT_NAMESPACE");
        Ok(config)
    }

    /// Sets the Vault Enterprise / OpenBao namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Sets the HTTP timeout of one request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Builds a client and logs in.
    pub(crate) async fn connect(&self) -> Result<VaultClient> {
        let token = match &self.auth {
            VaultAuth::Token(t) => t.to_string(),
            VaultAuth::AppRole { .. } => String::new(),
        };
        let mut settings = VaultClientSettingsBuilder::default();
        settings
            .address(&self.address)
            .token(token)
            .timeout(Some(self.timeout));
        if let Some(ns) = &self.namespace {
            settings.namespace(Some(ns.clone()));
        }
        let settings = settings.build().map_err(|e| {
            Error::misconfigured(format!("invalid Vault settings for {}: {e}", self.address))
        })?;
        let mut client = VaultClient::new(settings).map_err(|e| {
            Error::misconfigured(format!(
                "cannot build a Vault client for {}: {e}",
                self.address
            ))
        })?;
        if let VaultAuth::AppRole {
            mount,
            role_id,
            secret_id,
        } = &self.auth
        {
            let auth = vaultrs::auth::approle::login(&client, mount, role_id, secret_id)
                .await
                .map_err(|e| crate::error::map(e, &format!("AppRole login at auth/{mount}")))?;
            client.set_token(&auth.client_token);
        }
        Ok(client)
    }
}
