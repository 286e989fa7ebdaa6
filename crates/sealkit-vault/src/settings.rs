//! Connection settings, authentication and the provider's registry entry.

use std::sync::Arc;
use std::time::Duration;

use sealkit_core::registry::{ProviderDescriptor, ProviderParts, ProviderSettings, Setting};
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

/// The settings the Vault provider reads, with their variables.
const SETTINGS: &[Setting] = &[
    Setting {
        name: "address",
        variables: &["SEALKIT_VAULT_ADDR", "VAULT_ADDR"],
        help: "the server's address, e.g. https://vault.internal:8200",
        secret: false,
    },
    Setting {
        name: "token",
        variables: &["VAULT_TOKEN"],
        help: "a token (or use AppRole)",
        secret: true,
    },
    Setting {
        name: "role_id",
        variables: &["VAULT_ROLE_ID"],
        help: "AppRole role id",
        secret: false,
    },
    Setting {
        name: "secret_id",
        variables: &["VAULT_SECRET_ID"],
        help: "AppRole secret id",
        secret: true,
    },
    Setting {
        name: "approle_mount",
        variables: &["SEALKIT_VAULT_APPROLE_MOUNT"],
        help: "AppRole auth mount (default approle)",
        secret: false,
    },
    Setting {
        name: "namespace",
        variables: &["VAULT_NAMESPACE"],
        help: "Vault Enterprise / OpenBao namespace",
        secret: false,
    },
    Setting {
        name: "timeout_ms",
        variables: &["SEALKIT_VAULT_TIMEOUT_MS"],
        help: "time one HTTP request may take (default 10000)",
        secret: false,
    },
];

/// Vault (Transit keys and KV v1/v2 secrets) as one value, for the facade's registry.
/// Detected when `VAULT_ADDR` (or `SEALKIT_VAULT_ADDR`) is set.
pub const PROVIDER: ProviderDescriptor = ProviderDescriptor {
    name: "vault",
    scheme: Some(crate::SCHEME),
    secret_sources: &["vault-kv1", "vault-kv2"],
    settings: SETTINGS,
    detect: |settings| settings.get("address").is_some(),
    build: build_from_settings,
};

fn build_from_settings(settings: &ProviderSettings) -> Result<ProviderParts> {
    let settings = VaultSettings::from_provider_settings(settings)?;
    Ok(ProviderParts::new()
        .with_managed_keys(Arc::new(crate::VaultTransit::new(settings.clone())))
        .with_secrets(Arc::new(crate::VaultKv::any_mount(
            settings.clone(),
            crate::KvVersion::V1,
        )))
        .with_secrets(Arc::new(crate::VaultKv::any_mount(
            settings,
            crate::KvVersion::V2,
        ))))
}

/// Where Vault is and how to log in.
#[derive(Clone, Debug)]
pub struct VaultSettings {
    address: String,
    auth: VaultAuth,
    namespace: Option<String>,
    timeout: Duration,
}

impl VaultSettings {
    /// How long one request may take unless [`VaultSettings::with_timeout`] says otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Settings for `address` with `auth`.
    pub fn new(address: impl Into<String>, auth: VaultAuth) -> Self {
        Self {
            address: address.into(),
            auth,
            namespace: None,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Reads `SEALKIT_VAULT_ADDR` or `VAULT_ADDR`, and `VAULT_TOKEN` or the AppRole variables
    /// (`VAULT_ROLE_ID`, `VAULT_SECRET_ID`, `SEALKIT_VAULT_APPROLE_MOUNT`), `VAULT_NAMESPACE`
    /// and `SEALKIT_VAULT_TIMEOUT_MS`.
    pub fn from_env() -> Result<Self> {
        Self::from_provider_settings(&PROVIDER.settings_from(&|name| std::env::var(name).ok()))
    }

    /// From a settings table (`address`, `token` or `role_id` + `secret_id`, …).
    pub fn from_provider_settings(settings: &ProviderSettings) -> Result<Self> {
        let address = settings.require(&PROVIDER, "address")?.to_string();
        let auth = match (
            settings.get("role_id"),
            settings.get("secret_id"),
            settings.get("token"),
        ) {
            (Some(role_id), Some(secret_id), _) => VaultAuth::AppRole {
                mount: settings
                    .get("approle_mount")
                    .unwrap_or("approle")
                    .to_string(),
                role_id: role_id.to_string(),
                secret_id: Zeroizing::new(secret_id.to_string()),
            },
            (_, _, Some(token)) => VaultAuth::Token(Zeroizing::new(token.to_string())),
            _ => {
                return Err(Error::misconfigured(
                    "no Vault credentials: set VAULT_TOKEN (`token`), or VAULT_ROLE_ID and VAULT_SECRET_ID (`role_id`, `secret_id`) for AppRole",
                ));
            }
        };
        let mut out = Self::new(address, auth);
        out.namespace = settings.get("namespace").map(str::to_string);
        if let Some(ms) = settings.parse::<u64>("timeout_ms")? {
            out.timeout = Duration::from_millis(ms);
        }
        Ok(out)
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
