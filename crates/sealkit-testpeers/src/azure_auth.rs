//! Microsoft Entra ID as a Key Vault peer needs it: a tenant with applications that get
//! access tokens from the token endpoint (`POST /{tenant}/oauth2/v2.0/token`, the client
//! credentials grant with a client secret or a federated client assertion, as workload
//! identity sends), an App Service style managed-identity endpoint (`GET /msi/token`,
//! checked by its `X-IDENTITY-HEADER`), and the validation of those tokens when they come
//! back to the vault.
//!
//! Tokens are JWTs signed with HMAC-SHA256 under a key only the peer holds (Entra signs with
//! RSA; the client never checks the signature, the vault does). Their claims are Entra's:
//! `aud` (the resource), `iss`, `tid`, `appid`, `oid`, `iat`, `nbf`, `exp`.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::StatusCode;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};

use crate::http::{PeerRequest, PeerResponse};

/// The resource Key Vault tokens are for.
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";
/// Lifetime of an access token.
const TOKEN_SECS: u64 = 3600;
/// Seconds of clock skew allowed on `nbf` and `exp`.
const SKEW: u64 = 300;
/// The issuer of federated tokens (the workload's own identity provider, such as a
/// Kubernetes cluster) and the audience Entra requires in them.
const FEDERATION_ISSUER: &str = "https://federation.sealkit-testpeer.local";
const FEDERATION_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The API version of App Service's managed-identity endpoint.
const MANAGED_IDENTITY_API_VERSION: &str = "2019-08-01";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // The OS random source does not fail on the platforms the peers run on; an all-zero
    // value would still be unique enough for a test peer.
    let _ = SystemRandom::new().fill(&mut out);
    out
}

/// A random GUID (`8-4-4-4-12` hex digits), as Entra names tenants and applications.
pub fn guid() -> String {
    let b: [u8; 16] = random_bytes();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// What a principal may do in the vaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every key and secret operation (Key Vault Crypto Officer and Secrets Officer).
    Full,
    /// Nothing: every vault operation answers `403 Forbidden`.
    None,
}

/// How a principal signs in.
#[derive(Debug, Clone)]
enum SignIn {
    ClientSecret(String),
    FederatedToken,
    ManagedIdentity,
}

/// An application or managed identity of the tenant.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The application (client) id.
    pub client_id: String,
    /// The object id.
    pub object_id: String,
    /// What it may do.
    pub access: Access,
    sign_in: SignIn,
}

/// The tenant: its principals and the keys that sign its tokens.
pub struct Directory {
    tenant: String,
    principals: Vec<Principal>,
    identity_header: String,
    tokens: hmac::Key,
    federation: hmac::Key,
}

fn secret_text() -> String {
    let raw: [u8; 30] = random_bytes();
    format!("peer~{}", URL_SAFE_NO_PAD.encode(raw))
}

fn sign(key: &hmac::Key, claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{claims}");
    let tag = hmac::sign(key, signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Checks a JWT's HS256 signature under `key` (in constant time) and its `nbf`/`exp`.
fn verify(key: &hmac::Key, token: &str) -> Result<Value, String> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the token is not a JWT".into());
    };
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| "the token's signature is not base64url")?;
    hmac::verify(key, format!("{h}.{c}").as_bytes(), &signature)
        .map_err(|_| "the token's signature is invalid")?;
    let claims: Value = URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|c| serde_json::from_slice(&c).ok())
        .ok_or("the token's claims are not JSON")?;
    let t = now();
    if claims["exp"].as_u64().unwrap_or(0) + SKEW < t {
        return Err("the token is expired".into());
    }
    if claims["nbf"].as_u64().unwrap_or(0) > t + SKEW {
        return Err("the token is not yet valid".into());
    }
    Ok(claims)
}

/// Entra's error body for the token endpoint.
fn entra_error(status: StatusCode, error: &str, code: u32, description: String) -> PeerResponse {
    PeerResponse {
        status,
        body: json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code],
            "timestamp": crate::time::rfc3339(now()),
        }),
        headers: Vec::new(),
    }
}

impl Directory {
    /// A new tenant with four principals: an application with a client secret and full
    /// access (`app`), one with a client secret and no access (`reader`), a workload
    /// identity signing in with federated tokens (`workload`), and a managed identity.
    pub fn generate() -> Self {
        let principal = |access, sign_in| Principal {
            client_id: guid(),
            object_id: guid(),
            access,
            sign_in,
        };
        Self {
            tenant: guid(),
            principals: vec![
                principal(Access::Full, SignIn::ClientSecret(secret_text())),
                principal(Access::None, SignIn::ClientSecret(secret_text())),
                principal(Access::Full, SignIn::FederatedToken),
                principal(Access::Full, SignIn::ManagedIdentity),
            ],
            identity_header: guid(),
            tokens: hmac::Key::new(hmac::HMAC_SHA256, &random_bytes::<32>()),
            federation: hmac::Key::new(hmac::HMAC_SHA256, &random_bytes::<32>()),
        }
    }

    /// Whether `sent` equals `expected`, compared in constant time (as MACs of both).
    fn same(&self, sent: &str, expected: &str) -> bool {
        let tag = hmac::sign(&self.tokens, expected.as_bytes());
        hmac::verify(&self.tokens, sent.as_bytes(), tag.as_ref()).is_ok()
    }

    /// The tenant id.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    fn managed(&self) -> Option<&Principal> {
        self.principals
            .iter()
            .find(|p| matches!(p.sign_in, SignIn::ManagedIdentity))
    }

    /// A federated token for the workload identity, as its cluster would project into
    /// `AZURE_FEDERATED_TOKEN_FILE` (valid one hour).
    pub fn federated_token(&self) -> String {
        let t = now();
        sign(
            &self.federation,
            &json!({
                "iss": FEDERATION_ISSUER,
                "sub": "system:serviceaccount:default:sealkit",
                "aud": [FEDERATION_AUDIENCE],
                "iat": t, "nbf": t, "exp": t + TOKEN_SECS,
            }),
        )
    }

    /// How to sign in, as JSON for tests and the fidelity scripts: the tenant, the
    /// authority host, each principal's client id (and secret), the managed-identity
    /// endpoint and header, and the federated token file.
    pub fn credentials(
        &self,
        authority: &str,
        identity_endpoint: &str,
        federated_token_file: &str,
    ) -> Value {
        let secret = |i: usize| match &self.principals[i].sign_in {
            SignIn::ClientSecret(s) => Value::String(s.clone()),
            _ => Value::Null,
        };
        json!({
            "tenant_id": self.tenant,
            "authority_host": authority,
            "app": { "client_id": self.principals[0].client_id, "client_secret": secret(0) },
            "reader": { "client_id": self.principals[1].client_id, "client_secret": secret(1) },
            "workload": {
                "client_id": self.principals[2].client_id,
                "token_file": federated_token_file,
            },
            "managed_identity": {
                "client_id": self.principals[3].client_id,
                "endpoint": identity_endpoint,
                "header": self.identity_header,
            },
        })
    }

    fn issue(&self, principal: &Principal, resource: &str) -> (String, u64) {
        let t = now();
        let exp = t + TOKEN_SECS;
        let token = sign(
            &self.tokens,
            &json!({
                "aud": resource,
                "iss": format!("https://sts.windows.net/{}/", self.tenant),
                "tid": self.tenant,
                "appid": principal.client_id,
                "oid": principal.object_id,
                "sub": principal.object_id,
                "iat": t, "nbf": t, "exp": exp,
            }),
        );
        (token, exp)
    }

    /// `GET /{tenant}/v2.0/.well-known/openid-configuration`, which MSAL reads first.
    pub fn openid_configuration(&self, base: &str, tenant: &str) -> PeerResponse {
        if tenant != self.tenant {
            return self.unknown_tenant(tenant);
        }
        PeerResponse::ok(json!({
            "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
            "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/devicecode"),
            "issuer": format!("{base}/{tenant}/v2.0"),
            "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
            "token_endpoint_auth_methods_supported":
                ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "tenant_region_scope": "EU",
        }))
    }

    fn unknown_tenant(&self, tenant: &str) -> PeerResponse {
        entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID \
                 and are signing into the correct cloud."
            ),
        )
    }

    /// `POST /{tenant}/oauth2/v2.0/token`: the client credentials grant, with a client
    /// secret or a federated client assertion.
    pub fn token_endpoint(&self, tenant: &str, request: &PeerRequest) -> PeerResponse {
        if tenant != self.tenant {
            return self.unknown_tenant(tenant);
        }
        let form = request.form();
        let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
        if field("grant_type") != "client_credentials" {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                format!(
                    "The app requested an unsupported grant type '{}'.",
                    field("grant_type")
                ),
            );
        }
        let client_id = field("client_id");
        let Some(principal) = self.principals.iter().find(|p| p.client_id == client_id) else {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory \
                     '{}'.",
                    self.tenant
                ),
            );
        };
        let signed_in = match &principal.sign_in {
            SignIn::ClientSecret(secret) => {
                let sent = field("client_secret");
                if sent.is_empty() {
                    Err((
                        7000218,
                        "The request body must contain the following parameter: \
                         'client_assertion' or 'client_secret'."
                            .to_string(),
                    ))
                } else if self.same(sent, secret) {
                    Ok(())
                } else {
                    Err((
                        7000215,
                        format!(
                            "Invalid client secret provided. Ensure the secret being sent in \
                             the request is the client secret value, not the client secret ID, \
                             for a secret added to app '{client_id}'."
                        ),
                    ))
                }
            }
            SignIn::FederatedToken => self.check_assertion(&form),
            SignIn::ManagedIdentity => Err((
                700027,
                "A managed identity signs in at its identity endpoint.".to_string(),
            )),
        };
        if let Err((code, description)) = signed_in {
            return entra_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                code,
                description,
            );
        }
        let scope = field("scope");
        let Some(resource) = scope.strip_suffix("/.default") else {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {scope} is not valid. Client credential flows \
                     must have a scope value with /.default suffixed to the resource identifier \
                     (application ID URI)."
                ),
            );
        };
        let (token, _) = self.issue(principal, resource);
        PeerResponse::ok(json!({
            "token_type": "Bearer",
            "expires_in": TOKEN_SECS - 1,
            "ext_expires_in": TOKEN_SECS - 1,
            "access_token": token,
        }))
    }

    fn check_assertion(&self, form: &HashMap<String, String>) -> Result<(), (u32, String)> {
        if form.get("client_assertion_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return Err((
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or \
                 'client_secret'."
                    .into(),
            ));
        }
        let assertion = form.get("client_assertion").map_or("", String::as_str);
        let claims = verify(&self.federation, assertion).map_err(|e| {
            (
                700211,
                format!(
                    "No matching federated identity record found for presented assertion: {e}."
                ),
            )
        })?;
        let audience_ok = match &claims["aud"] {
            Value::String(a) => a == FEDERATION_AUDIENCE,
            Value::Array(a) => a.iter().any(|a| a == FEDERATION_AUDIENCE),
            _ => false,
        };
        if claims["iss"] != FEDERATION_ISSUER || !audience_ok {
            return Err((
                700212,
                "No matching federated identity record found for presented assertion audience \
                 or issuer."
                    .into(),
            ));
        }
        Ok(())
    }

    /// `GET /msi/token?api-version=2019-08-01&resource=R`: App Service's managed-identity
    /// endpoint, which requires the `X-IDENTITY-HEADER` the platform gave the application.
    pub fn managed_identity(&self, request: &PeerRequest) -> PeerResponse {
        let refuse = |status, message: String| PeerResponse {
            status,
            body: json!({ "statusCode": status.as_u16(), "message": message }),
            headers: Vec::new(),
        };
        let header = request.header("x-identity-header").unwrap_or_default();
        if !self.same(header, &self.identity_header) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "The X-IDENTITY-HEADER is missing or wrong".into(),
            );
        }
        if request.param("api-version") != Some(MANAGED_IDENTITY_API_VERSION) {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("api-version must be {MANAGED_IDENTITY_API_VERSION}"),
            );
        }
        let Some(resource) = request.param("resource").filter(|r| !r.is_empty()) else {
            return refuse(StatusCode::BAD_REQUEST, "resource is required".into());
        };
        let Some(principal) = self.managed() else {
            return refuse(StatusCode::BAD_REQUEST, "no managed identity".into());
        };
        if let Some(id) = request.param("client_id")
            && id != principal.client_id
        {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("The identity {id} is not assigned to this resource"),
            );
        }
        let (token, exp) = self.issue(principal, resource);
        PeerResponse::ok(json!({
            "access_token": token,
            "expires_on": exp.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": principal.client_id,
        }))
    }

    /// The principal a vault request's `Authorization: Bearer …` header proves, or why the
    /// token is refused (Key Vault's `AKV…` messages).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<&Principal, String> {
        let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Err("AKV10000: Request is missing a Bearer or PoP token.".into());
        };
        let claims = verify(&self.tokens, token)
            .map_err(|e| format!("AKV10016: Token validation failed: {e}."))?;
        let audience = claims["aud"].as_str().unwrap_or_default();
        if audience.trim_end_matches('/') != VAULT_RESOURCE {
            return Err(format!(
                "AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: {audience}."
            ));
        }
        if claims["tid"] != self.tenant.as_str() {
            return Err("AKV10032: Invalid issuer. The token is from another tenant.".into());
        }
        let appid = claims["appid"].as_str().unwrap_or_default();
        self.principals
            .iter()
            .find(|p| p.client_id == appid)
            .ok_or_else(|| "AKV10016: Token validation failed: unknown application.".into())
    }
}
