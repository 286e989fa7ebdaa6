//! Where the vaults are, how to sign in to Microsoft Entra ID, and the provider's registry
//! entry.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sealkit_core::registry::{ProviderDescriptor, ProviderParts, ProviderSettings, Setting};
use sealkit_core::{Error, Result};
use secrecy::SecretString;

/// The settings the Azure provider reads, with their variables (Azure's own names where
/// Azure's tools have one).
const SETTINGS: &[Setting] = &[
    Setting {
        name: "vault",
        variables: &[VAULT_VARIABLE],
        help: "the vault host of short secret names and `keys list` (myvault.vault.azure.net)",
        secret: false,
    },
    Setting {
        name: "tenant_id",
        variables: &["AZURE_TENANT_ID"],
        help: "the Microsoft Entra tenant (directory) id",
        secret: false,
    },
    Setting {
        name: "client_id",
        variables: &["AZURE_CLIENT_ID"],
        help: "the application (client) id, or a user-assigned managed identity's client id",
        secret: false,
    },
    Setting {
        name: "client_secret",
        variables: &["AZURE_CLIENT_SECRET"],
        help: "the application's client secret (sign-in with a client secret)",
        secret: true,
    },
    Setting {
        name: "federated_token_file",
        variables: &["AZURE_FEDERATED_TOKEN_FILE"],
        help: "a federated token file (workload identity sign-in)",
        secret: false,
    },
    Setting {
        name: "identity_endpoint",
        variables: &["IDENTITY_ENDPOINT"],
        help: "App Service's managed-identity endpoint (read by Azure's client with IDENTITY_HEADER)",
        secret: false,
    },
    Setting {
        name: "authority_host",
        variables: &["AZURE_AUTHORITY_HOST"],
        help: "the Entra authority (default https://login.microsoftonline.com)",
        secret: false,
    },
    Setting {
        name: "connect_to",
        variables: &[CONNECT_TO_VARIABLE],
        help: "HOST:PORT that vault requests are sent to, whatever vault they name (a private endpoint, a test peer)",
        secret: false,
    },
    Setting {
        name: "ca_file",
        variables: &[CA_FILE_VARIABLE],
        help: "a PEM certificate authority trusted besides the system's",
        secret: false,
    },
    Setting {
        name: "timeout_ms",
        variables: &["SEALKIT_AZURE_TIMEOUT_MS"],
        help: "time one request may take (default 10000)",
        secret: false,
    },
];

/// The variable naming the default vault host.
pub const VAULT_VARIABLE: &str = "SEALKIT_AZURE_VAULT";
/// The variable that sends vault requests to another address.
pub const CONNECT_TO_VARIABLE: &str = "SEALKIT_AZURE_CONNECT_TO";
/// The variable naming an extra trusted certificate authority.
pub const CA_FILE_VARIABLE: &str = "SEALKIT_AZURE_CA_FILE";

/// Azure Key Vault (keys and secrets) as one value, for the facade's registry. Detected when
/// any of its settings is set (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `IDENTITY_ENDPOINT`, …).
pub const PROVIDER: ProviderDescriptor = ProviderDescriptor {
    name: "azure",
    scheme: Some(crate::keys::SCHEME),
    secret_sources: &[crate::secrets::SOURCE],
    settings: SETTINGS,
    detect: |settings| !settings.is_empty(),
    build: build_from_settings,
};

fn build_from_settings(settings: &ProviderSettings) -> Result<ProviderParts> {
    let clients =
        crate::client::SharedClients::new(AzureSettings::from_provider_settings(settings)?);
    Ok(ProviderParts::new()
        .with_managed_keys(Arc::new(crate::AzureKeyVault::sharing(clients.clone())))
        .with_secrets(Arc::new(crate::AzureSecrets::sharing(clients))))
}

/// How Sealkit signs in to Microsoft Entra ID.
#[derive(Debug, Clone)]
pub enum SignIn {
    /// An application with a client secret (`AZURE_CLIENT_SECRET`).
    ClientSecret {
        /// The tenant.
        tenant_id: String,
        /// The application (client) id.
        client_id: String,
        /// The secret.
        secret: SecretString,
    },
    /// Workload identity: a federated token file exchanged for tokens
    /// (`AZURE_FEDERATED_TOKEN_FILE`, as AKS projects it).
    WorkloadIdentity {
        /// The tenant.
        tenant_id: String,
        /// The application (client) id.
        client_id: String,
        /// The federated token file, read again when it changes.
        token_file: PathBuf,
    },
    /// A managed identity (App Service's `IDENTITY_ENDPOINT`, else the VM's IMDS); a
    /// user-assigned one by its client id.
    ManagedIdentity {
        /// A user-assigned identity's client id; `None` for the system-assigned one.
        client_id: Option<String>,
    },
}

impl SignIn {
    /// A short name for logs.
    pub fn describe(&self) -> &'static str {
        match self {
            SignIn::ClientSecret { .. } => "client secret",
            SignIn::WorkloadIdentity { .. } => "workload identity",
            SignIn::ManagedIdentity { .. } => "managed identity",
        }
    }
}

/// The settings of the Azure provider.
#[derive(Debug, Clone)]
pub struct AzureSettings {
    vault: Option<String>,
    sign_in: SignIn,
    authority_host: Option<String>,
    connect_to: Option<String>,
    ca_file: Option<PathBuf>,
    timeout: Duration,
}

fn need(settings: &ProviderSettings, name: &str, why: &str) -> Result<String> {
    settings.get(name).map(str::to_string).ok_or_else(|| {
        Error::misconfigured(format!(
            "{why} needs {}",
            match name {
                "tenant_id" => "AZURE_TENANT_ID",
                _ => "AZURE_CLIENT_ID",
            }
        ))
    })
}

impl AzureSettings {
    /// How long one request may take unless [`AzureSettings::with_timeout`] says otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// From the environment (the variables of each setting).
    pub fn from_env() -> Result<Self> {
        Self::from_provider_settings(&PROVIDER.settings_from(&|name| std::env::var(name).ok()))
    }

    /// From a settings table. The sign-in is the first that is configured of: a client
    /// secret (`client_secret`, with `tenant_id` and `client_id`), workload identity
    /// (`federated_token_file`, with `tenant_id` and `client_id`), a managed identity.
    pub fn from_provider_settings(settings: &ProviderSettings) -> Result<Self> {
        let sign_in = if let Some(secret) = settings.get("client_secret") {
            SignIn::ClientSecret {
                tenant_id: need(settings, "tenant_id", "a client secret sign-in")?,
                client_id: need(settings, "client_id", "a client secret sign-in")?,
                secret: SecretString::from(secret.to_string()),
            }
        } else if let Some(file) = settings.get("federated_token_file") {
            SignIn::WorkloadIdentity {
                tenant_id: need(settings, "tenant_id", "a workload identity sign-in")?,
                client_id: need(settings, "client_id", "a workload identity sign-in")?,
                token_file: PathBuf::from(file),
            }
        } else {
            SignIn::ManagedIdentity {
                client_id: settings.get("client_id").map(str::to_string),
            }
        };
        let mut out = Self::new(sign_in);
        out.vault = settings.get("vault").map(str::to_string);
        out.authority_host = settings.get("authority_host").map(str::to_string);
        out.connect_to = settings.get("connect_to").map(str::to_string);
        out.ca_file = settings.get("ca_file").map(PathBuf::from);
        if let Some(ms) = settings.parse::<u64>("timeout_ms")? {
            out.timeout = Duration::from_millis(ms);
        }
        Ok(out)
    }

    /// Settings that sign in with `sign_in` and nothing else set.
    pub fn new(sign_in: SignIn) -> Self {
        Self {
            vault: None,
            sign_in,
            authority_host: None,
            connect_to: None,
            ca_file: None,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Sets the default vault host (`myvault.vault.azure.net`).
    pub fn with_vault(mut self, host: impl Into<String>) -> Self {
        self.vault = Some(host.into());
        self
    }

    /// Sets the Entra authority (`https://login.microsoftonline.com` unless set).
    pub fn with_authority_host(mut self, url: impl Into<String>) -> Self {
        self.authority_host = Some(url.into());
        self
    }

    /// Sends every vault request to `host_port`, with the vault's own name in its `Host`
    /// header; the certificate there must be valid for `host_port`'s host.
    pub fn with_connect_to(mut self, host_port: impl Into<String>) -> Self {
        self.connect_to = Some(host_port.into());
        self
    }

    /// Trusts the certificate authority in `path` (PEM) besides the system's.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Bounds each request (connect, send, receive) to `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The default vault host.
    pub fn vault(&self) -> Option<&str> {
        self.vault.as_deref()
    }

    /// The sign-in.
    pub fn sign_in(&self) -> &SignIn {
        &self.sign_in
    }

    /// The Entra authority override.
    pub fn authority_host(&self) -> Option<&str> {
        self.authority_host.as_deref()
    }

    /// Where vault requests are sent, when not to the vault's own address.
    pub fn connect_to(&self) -> Option<&str> {
        self.connect_to.as_deref()
    }

    /// The extra trusted certificate authority.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }

    /// The per-request time limit.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<AzureSettings> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AzureSettings::from_provider_settings(
            &PROVIDER.settings_from(&|name| {
                vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            }),
        )
    }

    #[test]
    fn the_sign_in_is_the_first_configured_and_says_what_is_missing() {
        let secret = from(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "hunter2"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
        ])
        .unwrap();
        assert!(matches!(secret.sign_in(), SignIn::ClientSecret { .. }));
        assert!(
            !format!("{secret:?}").contains("hunter2"),
            "the secret stays out of Debug"
        );
        let workload = from(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
        ])
        .unwrap();
        assert!(matches!(
            workload.sign_in(),
            SignIn::WorkloadIdentity { .. }
        ));
        let managed = from(&[("AZURE_CLIENT_ID", "c"), ("IDENTITY_ENDPOINT", "http://x")]).unwrap();
        assert!(matches!(
            managed.sign_in(),
            SignIn::ManagedIdentity { client_id: Some(id) } if id == "c"
        ));
        let err = from(&[("AZURE_CLIENT_SECRET", "s"), ("AZURE_CLIENT_ID", "c")]).unwrap_err();
        assert!(err.to_string().contains("AZURE_TENANT_ID"), "{err}");
        let err = from(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_FEDERATED_TOKEN_FILE", "f"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("AZURE_CLIENT_ID"), "{err}");
    }

    #[test]
    fn detection_needs_one_of_its_variables() {
        let none = PROVIDER.settings_from(&|_| None);
        assert!(!(PROVIDER.detect)(&none));
        let some = PROVIDER.settings_from(&|name| {
            (name == "IDENTITY_ENDPOINT").then(|| "http://169.254.0.1/msi".to_string())
        });
        assert!((PROVIDER.detect)(&some));
    }

    #[test]
    fn bad_values_are_refused() {
        let err = from(&[("SEALKIT_AZURE_TIMEOUT_MS", "soon")]).unwrap_err();
        assert!(err.to_string().contains("timeout_ms"), "{err}");
        let settings = from(&[("SEALKIT_AZURE_CONNECT_TO", "no-port")]).unwrap();
        let err = crate::client::Clients::new(&settings).unwrap_err();
        assert!(err.to_string().contains("HOST:PORT"), "{err}");
        let settings = from(&[("SEALKIT_AZURE_CA_FILE", "/nonexistent/ca.pem")]).unwrap();
        let err = crate::client::Clients::new(&settings).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
