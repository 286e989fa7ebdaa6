//! Azure's clients as Sealkit builds them: one rustls transport (the system's roots plus an
//! optional extra authority, a per-request timeout, no retries: the facade retries with
//! backoff), the sign-in the settings choose, and one Key Vault client per vault host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret as AzureSecret, TokenCredential};
use azure_core::http::{
    AsyncRawResponse, ClientOptions, HttpClient, Request, RetryOptions, Transport,
};
use azure_identity::{
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use sealkit_core::{Error, Result};
use secrecy::ExposeSecret;

use crate::{AzureSettings, SignIn};

/// Sends each request to another address, keeping the vault's name in the `Host` header (so
/// `kid`s, the challenge check and the vault's own routing still see the vault's name).
#[derive(Debug)]
struct ConnectTo {
    inner: reqwest::Client,
    host: String,
    port: u16,
}

#[async_trait]
impl HttpClient for ConnectTo {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let mut request = request.clone();
        let original = request.url().clone();
        let authority = match (original.host_str(), original.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => String::new(),
        };
        request.insert_header("host", authority);
        let url = request.url_mut();
        url.set_host(Some(&self.host)).map_err(|e| {
            azure_core::Error::with_error(azure_core::error::ErrorKind::Other, e, "connect_to host")
        })?;
        let _ = url.set_port(Some(self.port));
        self.inner.execute_request(&request).await
    }
}

fn reqwest_client(settings: &AzureSettings) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(settings.timeout())
        .connect_timeout(settings.timeout());
    if let Some(path) = settings.ca_file() {
        let pem = std::fs::read(path).map_err(|e| {
            Error::misconfigured(format!(
                "the certificate authority file {}: {e}",
                path.display()
            ))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            Error::misconfigured(format!(
                "the certificate authority file {} holds no PEM certificate: {e}",
                path.display()
            ))
        })?;
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| Error::misconfigured(format!("cannot build the HTTPS client: {e}")))
}

/// The clients of one provider instance: a transport, a credential and a client per vault.
pub(crate) struct Clients {
    sign_in: &'static str,
    /// The vault clients' pipeline options (their transport honours `connect_to`).
    vault_options: ClientOptions,
    credential: Arc<dyn TokenCredential>,
    keys: Mutex<HashMap<String, Arc<KeyClient>>>,
    secrets: Mutex<HashMap<String, Arc<SecretClient>>>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients")
            .field("sign_in", &self.sign_in)
            .finish_non_exhaustive()
    }
}

impl Clients {
    pub(crate) fn new(settings: &AzureSettings) -> Result<Self> {
        let client = reqwest_client(settings)?;
        let direct: Arc<dyn HttpClient> = Arc::new(client.clone());
        let vault_transport: Arc<dyn HttpClient> = match settings.connect_to() {
            None => direct.clone(),
            Some(target) => {
                let (host, port) = target
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
                    .ok_or_else(|| {
                        Error::misconfigured(format!("connect_to {target:?} is not HOST:PORT"))
                    })?;
                Arc::new(ConnectTo {
                    inner: client,
                    host,
                    port,
                })
            }
        };
        let credential = credential(settings, options(settings, direct.clone()))?;
        tracing::info!(
            sign_in = settings.sign_in().describe(),
            "azure: signing in to Microsoft Entra ID"
        );
        Ok(Self {
            sign_in: settings.sign_in().describe(),
            vault_options: options(settings, vault_transport),
            credential,
            keys: Mutex::new(HashMap::new()),
            secrets: Mutex::new(HashMap::new()),
        })
    }

    /// The keys client of vault `host`.
    pub(crate) fn keys(&self, host: &str) -> Result<Arc<KeyClient>> {
        per_host(&self.keys, host, |url| {
            let options = KeyClientOptions {
                client_options: self.vault_options.clone(),
                ..KeyClientOptions::default()
            };
            KeyClient::new(url, self.credential.clone(), Some(options))
        })
    }

    /// The secrets client of vault `host`.
    pub(crate) fn secrets(&self, host: &str) -> Result<Arc<SecretClient>> {
        per_host(&self.secrets, host, |url| {
            let options = SecretClientOptions {
                client_options: self.vault_options.clone(),
                ..SecretClientOptions::default()
            };
            SecretClient::new(url, self.credential.clone(), Some(options))
        })
    }
}

/// The client of vault `host` in `cache`, made by `make` (from the vault's URL) the first time.
fn per_host<T>(
    cache: &Mutex<HashMap<String, Arc<T>>>,
    host: &str,
    make: impl FnOnce(&str) -> azure_core::Result<T>,
) -> Result<Arc<T>> {
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(client) = cache.get(host) {
        return Ok(client.clone());
    }
    let client = make(&format!("https://{host}"))
        .map(Arc::new)
        .map_err(|e| Error::invalid_input(format!("vault host {host:?}: {e}")))?;
    cache.insert(host.to_string(), client.clone());
    Ok(client)
}

/// The clients of a provider, built on first use and shared by its keys and secrets halves
/// (one sign-in, one token cache).
pub(crate) struct SharedClients {
    settings: AzureSettings,
    cell: tokio::sync::OnceCell<Clients>,
}

impl SharedClients {
    pub(crate) fn new(settings: AzureSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            cell: tokio::sync::OnceCell::new(),
        })
    }

    pub(crate) fn settings(&self) -> &AzureSettings {
        &self.settings
    }

    pub(crate) async fn get(&self) -> Result<&Clients> {
        self.cell
            .get_or_try_init(|| async { Clients::new(&self.settings) })
            .await
    }
}

fn options(settings: &AzureSettings, transport: Arc<dyn HttpClient>) -> ClientOptions {
    let mut options = ClientOptions {
        transport: Some(Transport::new(transport)),
        retry: RetryOptions::none(),
        ..ClientOptions::default()
    };
    if let Some(host) = settings.authority_host() {
        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = host.to_string();
        options.cloud = Some(Arc::new(CloudConfiguration::Custom(cloud)));
    }
    options
}

fn credential(
    settings: &AzureSettings,
    options: ClientOptions,
) -> Result<Arc<dyn TokenCredential>> {
    let refused = |e: azure_core::Error| {
        Error::misconfigured(format!(
            "cannot sign in to Microsoft Entra ID with a {}: {e}",
            settings.sign_in().describe()
        ))
    };
    Ok(match settings.sign_in() {
        SignIn::ClientSecret {
            tenant_id,
            client_id,
            secret,
        } => ClientSecretCredential::new(
            tenant_id,
            client_id.clone(),
            AzureSecret::new(secret.expose_secret().to_string()),
            Some(ClientSecretCredentialOptions {
                client_options: options,
            }),
        )
        .map_err(refused)?,
        SignIn::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } => {
            let mut o = WorkloadIdentityCredentialOptions::default();
            o.credential_options.client_options = options;
            o.tenant_id = Some(tenant_id.clone());
            o.client_id = Some(client_id.clone());
            o.token_file_path = Some(token_file.clone());
            WorkloadIdentityCredential::new(Some(o)).map_err(refused)?
        }
        SignIn::ManagedIdentity { client_id } => {
            let mut o = ManagedIdentityCredentialOptions::default();
            o.user_assigned_id = client_id.clone().map(UserAssignedId::ClientId);
            o.client_options = options;
            ManagedIdentityCredential::new(Some(o)).map_err(refused)?
        }
    })
}
