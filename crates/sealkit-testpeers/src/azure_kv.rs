//! Azure Key Vault (keys and secrets) over HTTPS, with the tenant of [`crate::azure_auth`] in
//! front of it: every vault request needs a bearer token from that tenant, and the first
//! request of a client without one gets the service's `401` challenge.
//!
//! Each host a client calls (`127.0.0.1:PORT`, `myvault.vault.azure.net` reached through the
//! peer) is a vault of its own; `kid`/`id` values are built from that host. Keys are RSA
//! (2048, 3072 or 4096 bits, made by `openssl`) with `key_ops`, versions (32 hex digits),
//! attributes (`enabled`, `exp`, `nbf`), tags, rotation (`rotate` and a rotation policy),
//! `wrapkey`/`unwrapkey` and `encrypt`/`decrypt` with RSA-OAEP-256, RSA-OAEP and RSA1_5, and
//! soft delete (get deleted, recover, purge). Secrets are versioned values with a content
//! type, attributes and tags. Errors are the service's `{"error": {"code", "message"}}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::{Method, StatusCode};
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, Pkcs1v15Encrypt, RsaPrivateKey};
use serde_json::{Value, json};

use crate::azure_auth::{Access, Directory, Principal, VAULT_RESOURCE, guid};
use crate::http::{PeerRequest, PeerResponse, Service};

/// The API versions the peer serves (the service's generally available ones since 7.0, and
/// the previews Azure's SDKs have sent).
pub const API_VERSIONS: &[&str] = &[
    "2016-10-01",
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6-preview.2",
    "7.6",
    "2025-06-01-preview",
    "2025-07-01",
    "2026-04-01",
];
const LATEST_API_VERSION: &str = "2026-04-01";
/// Days a deleted object stays recoverable.
const RECOVERABLE_DAYS: u64 = 90;
/// The operations an RSA key may allow.
const RSA_KEY_OPS: &[&str] = &[
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
];
/// The longest secret value the service accepts.
const MAX_SECRET_BYTES: usize = 25 * 1024;
/// Items per page of a list unless `maxresults` says otherwise.
const PAGE: usize = 25;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A version id: 32 hex digits.
fn version_id() -> String {
    guid().replace('-', "")
}

/// Object names: 1 to 127 letters, digits and dashes.
fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A failed request: status, Key Vault error code and message.
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
    inner: Option<&'static str>,
}

type Answer = Result<Value, Failure>;

fn fail(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        status,
        code,
        message: message.into(),
        inner: None,
    }
}

fn bad(message: impl Into<String>) -> Failure {
    fail(StatusCode::BAD_REQUEST, "BadParameter", message)
}

fn forbidden(message: impl Into<String>, inner: &'static str) -> Failure {
    Failure {
        inner: Some(inner),
        ..fail(StatusCode::FORBIDDEN, "Forbidden", message)
    }
}

/// `404` for a key or secret (`noun`) named `what` (`name` or `name/version`).
fn object_not_found(code: &'static str, noun: &str, what: &str) -> Failure {
    fail(
        StatusCode::NOT_FOUND,
        code,
        format!(
            "A {noun} with (name/id) {what} was not found in this key vault. If you recently \
             deleted this {noun} you may be able to recover it using the correct recovery \
             command. For help resolving this issue, please see \
             https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

fn key_not_found(what: &str) -> Failure {
    object_not_found("KeyNotFound", "key", what)
}

fn secret_not_found(what: &str) -> Failure {
    object_not_found("SecretNotFound", "secret", what)
}

fn error_body(code: &str, message: &str, inner: Option<&str>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(inner) = inner {
        error["innererror"] = json!({ "code": inner });
    }
    json!({ "error": error })
}

/// When an object or version may be used: `enabled`, `nbf`, `exp`.
#[derive(Debug, Clone)]
struct Attributes {
    enabled: bool,
    not_before: Option<u64>,
    expires: Option<u64>,
    created: u64,
    updated: u64,
}

impl Attributes {
    fn new() -> Self {
        let t = now();
        Self {
            enabled: true,
            not_before: None,
            expires: None,
            created: t,
            updated: t,
        }
    }

    /// Applies `attributes` of a request (`enabled`, `nbf`, `exp`).
    fn apply(&mut self, attributes: &Value) -> Result<(), Failure> {
        if attributes.is_null() {
            return Ok(());
        }
        if !attributes.is_object() {
            return Err(bad("attributes must be an object"));
        }
        if let Some(enabled) = attributes.get("enabled").filter(|v| !v.is_null()) {
            self.enabled = enabled
                .as_bool()
                .ok_or_else(|| bad("attributes.enabled must be a boolean"))?;
        }
        let time = |name: &str| -> Result<Option<Option<u64>>, Failure> {
            match attributes.get(name) {
                None => Ok(None),
                Some(Value::Null) => Ok(Some(None)),
                Some(v) => v
                    .as_u64()
                    .map(|t| Some(Some(t)))
                    .ok_or_else(|| bad(format!("attributes.{name} must be a Unix time"))),
            }
        };
        if let Some(nbf) = time("nbf")? {
            self.not_before = nbf;
        }
        if let Some(exp) = time("exp")? {
            self.expires = exp;
        }
        self.updated = now();
        Ok(())
    }

    fn json(&self) -> Value {
        let mut out = json!({
            "enabled": self.enabled,
            "created": self.created,
            "updated": self.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": RECOVERABLE_DAYS,
        });
        if let Some(nbf) = self.not_before {
            out["nbf"] = json!(nbf);
        }
        if let Some(exp) = self.expires {
            out["exp"] = json!(exp);
        }
        out
    }

    /// Refuses `operation` on a disabled, expired or not yet valid object.
    fn usable(&self, operation: &str, kind: &str) -> Result<(), Failure> {
        let t = now();
        let inner = if kind == "key" {
            "KeyDisabled"
        } else {
            "SecretDisabled"
        };
        if !self.enabled {
            return Err(forbidden(
                format!("Operation {operation} is not allowed on a disabled {kind}."),
                inner,
            ));
        }
        if self.expires.is_some_and(|exp| exp <= t) {
            return Err(forbidden(
                format!("Operation {operation} is not allowed on an expired {kind}."),
                inner,
            ));
        }
        if self.not_before.is_some_and(|nbf| nbf > t) {
            return Err(forbidden(
                format!("Operation {operation} is not allowed on a {kind} that is not yet valid."),
                inner,
            ));
        }
        Ok(())
    }
}

struct KeyVersion {
    id: String,
    private: RsaPrivateKey,
    key_ops: Vec<String>,
    attributes: Attributes,
    tags: Value,
}

struct KeyObject {
    versions: Vec<KeyVersion>,
    rotation_policy: Option<(Value, Option<String>, u64, u64)>,
    deleted: Option<u64>,
}

struct SecretVersion {
    id: String,
    value: String,
    content_type: Option<String>,
    attributes: Attributes,
    tags: Value,
}

struct SecretObject {
    versions: Vec<SecretVersion>,
    deleted: Option<u64>,
}

#[derive(Default)]
struct Vault {
    keys: BTreeMap<String, KeyObject>,
    secrets: BTreeMap<String, SecretObject>,
}

/// The Key Vault peer: a tenant and the vaults of every host it was called by.
pub struct KeyVault {
    directory: Directory,
    vaults: Mutex<HashMap<String, Vault>>,
    pool: std::sync::Arc<KeyPool>,
}

/// RSA keys made ahead of time by a background thread, so that creating or rotating a key
/// answers at once even on a loaded machine (a 3072-bit key takes `openssl` up to seconds).
#[derive(Default)]
struct KeyPool {
    ready: Mutex<HashMap<u32, Vec<RsaPrivateKey>>>,
}

impl KeyPool {
    /// Sizes kept ready, and how many of each.
    const KEEP: [(u32, usize); 2] = [(3072, 4), (2048, 2)];

    fn start() -> std::sync::Arc<Self> {
        let pool = std::sync::Arc::new(Self::default());
        let weak = std::sync::Arc::downgrade(&pool);
        std::thread::spawn(move || {
            // Ends with the peer.
            while let Some(pool) = weak.upgrade() {
                let short = Self::KEEP.iter().find(|(bits, keep)| {
                    pool.ready
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(bits)
                        .map_or(0, Vec::len)
                        < *keep
                });
                match short {
                    Some(&(bits, _)) => {
                        if let Ok(key) = generate_rsa(bits) {
                            pool.ready
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .entry(bits)
                                .or_default()
                                .push(key);
                        }
                    }
                    None => {
                        drop(pool);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                }
            }
        });
        pool
    }

    /// A key of `bits`: a ready one, else a new one.
    fn take(&self, bits: u32) -> Result<RsaPrivateKey, Failure> {
        let ready = self
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&bits)
            .and_then(Vec::pop);
        match ready {
            Some(key) => Ok(key),
            None => generate_rsa(bits),
        }
    }
}

/// Makes an RSA key of `bits` with the `openssl` command.
fn generate_rsa(bits: u32) -> Result<RsaPrivateKey, Failure> {
    let out = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
        .arg(format!("rsa_keygen_bits:{bits}"))
        .output()
        .map_err(|e| {
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.to_string(),
            )
        })?;
    let pem = String::from_utf8_lossy(&out.stdout);
    RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|e| {
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("openssl made no RSA key: {e}"),
        )
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a base64url field (padding tolerated, as the service does).
fn unb64(value: &Value, field: &str) -> Result<Vec<u8>, Failure> {
    let text = value
        .as_str()
        .ok_or_else(|| bad(format!("The parameter {field} is required.")))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| bad(format!("The parameter {field} is not base64url encoded.")))
}

fn string_list(value: &Value, field: &str) -> Result<Option<Vec<String>>, Failure> {
    match value {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("{field} must be a list of strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(bad(format!("{field} must be a list of strings"))),
    }
}

fn tags_of(value: &Value) -> Result<Option<Value>, Failure> {
    match value {
        Value::Null => Ok(None),
        Value::Object(map) if map.values().all(Value::is_string) && map.len() <= 15 => {
            Ok(Some(value.clone()))
        }
        _ => Err(bad("tags must be an object of at most 15 string values")),
    }
}

/// A lifetime-action duration (`P90D`, `P1Y`, `P2M`, `P12W`).
fn valid_duration(text: &str) -> bool {
    let Some(rest) = text.strip_prefix('P') else {
        return false;
    };
    let mut digits = 0;
    let mut units = 0;
    for c in rest.chars() {
        if c.is_ascii_digit() {
            digits += 1;
        } else if "YMWD".contains(c) && digits > 0 {
            digits = 0;
            units += 1;
        } else {
            return false;
        }
    }
    units > 0 && digits == 0
}

impl KeyVersion {
    fn kid(&self, base: &str, name: &str) -> String {
        format!("{base}/keys/{name}/{}", self.id)
    }

    fn bundle(&self, base: &str, name: &str) -> Value {
        let n = self.private.n().to_bytes_be();
        let e = self.private.e().to_bytes_be();
        json!({
            "key": {
                "kid": self.kid(base, name),
                "kty": "RSA",
                "key_ops": self.key_ops,
                "n": b64(&n),
                "e": b64(&e),
            },
            "attributes": self.attributes.json(),
            "tags": self.tags,
        })
    }

    fn item(&self, kid: String) -> Value {
        json!({ "kid": kid, "attributes": self.attributes.json(), "tags": self.tags })
    }
}

impl SecretVersion {
    fn id(&self, base: &str, name: &str) -> String {
        format!("{base}/secrets/{name}/{}", self.id)
    }

    fn bundle(&self, base: &str, name: &str, with_value: bool) -> Value {
        let mut out = json!({
            "id": self.id(base, name),
            "attributes": self.attributes.json(),
            "tags": self.tags,
        });
        if with_value {
            out["value"] = json!(self.value);
        }
        if let Some(ct) = &self.content_type {
            out["contentType"] = json!(ct);
        }
        out
    }
}

impl KeyObject {
    fn live(&self) -> bool {
        self.deleted.is_none()
    }

    fn latest(&self) -> Option<&KeyVersion> {
        self.versions.last()
    }

    /// The version `id`, or the latest for `""`.
    fn version(&self, name: &str, id: &str) -> Result<&KeyVersion, Failure> {
        if id.is_empty() {
            return self.latest().ok_or_else(|| key_not_found(name));
        }
        self.versions
            .iter()
            .find(|v| v.id == id)
            .ok_or_else(|| key_not_found(&format!("{name}/{id}")))
    }

    fn version_mut(&mut self, name: &str, id: &str) -> Result<&mut KeyVersion, Failure> {
        let found = if id.is_empty() {
            self.versions.last_mut()
        } else {
            self.versions.iter_mut().find(|v| v.id == id)
        };
        found.ok_or_else(|| {
            key_not_found(&if id.is_empty() {
                name.to_string()
            } else {
                format!("{name}/{id}")
            })
        })
    }
}

/// The parsed parts of a vault request.
struct VaultCall<'a> {
    base: String,
    segments: Vec<&'a str>,
    method: &'a Method,
    body: Value,
    request: &'a PeerRequest,
}

impl VaultCall<'_> {
    fn field(&self, name: &str) -> &Value {
        self.body.get(name).unwrap_or(&Value::Null)
    }
}

impl KeyVault {
    /// A peer with a new tenant.
    pub fn new(directory: Directory) -> Self {
        Self {
            directory,
            vaults: Mutex::new(HashMap::new()),
            pool: KeyPool::start(),
        }
    }

    /// The tenant.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    fn challenge(&self, message: String) -> PeerResponse {
        PeerResponse {
            status: StatusCode::UNAUTHORIZED,
            body: error_body("Unauthorized", &message, None),
            headers: vec![(
                "www-authenticate",
                format!(
                    "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"{VAULT_RESOURCE}\"",
                    self.directory.tenant()
                ),
            )],
        }
    }

    fn vault_request(
        &self,
        request: &PeerRequest,
        segments: Vec<&str>,
        host: &str,
    ) -> PeerResponse {
        let principal = match self
            .directory
            .authenticate(request.authorization.as_deref())
        {
            Ok(p) => p,
            Err(message) => return self.challenge(message),
        };
        let answer = match request.param("api-version") {
            None => Err(bad("The 'api-version' query parameter is required.")),
            Some(v) if !API_VERSIONS.contains(&v) => Err(bad(format!(
                "The specified version ({v}) is not recognized. Consider using the latest \
                 supported version ({LATEST_API_VERSION})."
            ))),
            Some(_) => {
                let body = if request.body.is_empty() {
                    Ok(Value::Null)
                } else {
                    serde_json::from_slice(&request.body)
                        .map_err(|e| bad(format!("The request body is not valid JSON: {e}")))
                };
                body.and_then(|body| {
                    let call = VaultCall {
                        base: format!("https://{host}"),
                        segments,
                        method: &request.method,
                        body,
                        request,
                    };
                    let mut vaults = self.vaults.lock().unwrap_or_else(|e| e.into_inner());
                    let vault = vaults.entry(host.to_string()).or_default();
                    self.dispatch(vault, principal, host, &call)
                })
            }
        };
        match answer {
            Ok(Value::Null) => PeerResponse {
                status: StatusCode::NO_CONTENT,
                body: Value::Null,
                headers: Vec::new(),
            },
            Ok(body) => PeerResponse::ok(body),
            Err(f) => PeerResponse {
                status: f.status,
                body: error_body(f.code, &f.message, f.inner),
                headers: Vec::new(),
            },
        }
    }

    fn dispatch(
        &self,
        vault: &mut Vault,
        who: &Principal,
        host: &str,
        call: &VaultCall<'_>,
    ) -> Answer {
        let s = &call.segments;
        let m = call.method;
        let (kind, permission) = match (s.as_slice(), m) {
            (["keys"], &Method::GET) => ("keys", "list"),
            (["keys", _, "create"], &Method::POST) => ("keys", "create"),
            (["keys", _, "rotate"], &Method::POST) => ("keys", "rotate"),
            (["keys", _, "rotationpolicy"], &Method::GET) => ("keys", "getrotationpolicy"),
            (["keys", _, "rotationpolicy"], &Method::PUT) => ("keys", "setrotationpolicy"),
            (["keys", _, "versions"], &Method::GET) => ("keys", "list"),
            (["keys", _, .., "wrapkey"], &Method::POST) => ("keys", "wrapKey"),
            (["keys", _, .., "unwrapkey"], &Method::POST) => ("keys", "unwrapKey"),
            (["keys", _, .., "encrypt"], &Method::POST) => ("keys", "encrypt"),
            (["keys", _, .., "decrypt"], &Method::POST) => ("keys", "decrypt"),
            (["keys", _] | ["keys", _, _], &Method::GET) => ("keys", "get"),
            (["keys", _] | ["keys", _, _], &Method::PATCH) => ("keys", "update"),
            (["keys", _], &Method::DELETE) => ("keys", "delete"),
            (["deletedkeys"] | ["deletedkeys", _], &Method::GET) => ("keys", "list"),
            (["deletedkeys", _], &Method::DELETE) => ("keys", "purge"),
            (["deletedkeys", _, "recover"], &Method::POST) => ("keys", "recover"),
            (["secrets"], &Method::GET) => ("secrets", "list"),
            (["secrets", _, "versions"], &Method::GET) => ("secrets", "list"),
            (["secrets", _], &Method::PUT) => ("secrets", "set"),
            (["secrets", _] | ["secrets", _, _], &Method::GET) => ("secrets", "get"),
            (["secrets", _] | ["secrets", _, _], &Method::PATCH) => ("secrets", "set"),
            (["secrets", _], &Method::DELETE) => ("secrets", "delete"),
            (["deletedsecrets"] | ["deletedsecrets", _], &Method::GET) => ("secrets", "list"),
            (["deletedsecrets", _], &Method::DELETE) => ("secrets", "purge"),
            (["deletedsecrets", _, "recover"], &Method::POST) => ("secrets", "recover"),
            _ => {
                return Err(fail(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("No such operation: {} /{}", m, s.join("/")),
                ));
            }
        };
        if who.access == Access::None {
            let vault_name = host.split('.').next().unwrap_or(host);
            return Err(forbidden(
                format!(
                    "The user, group or application 'appid={};oid={};iss=https://sts.windows.net/{}/' \
                     does not have {kind} {permission} permission on key vault \
                     '{vault_name};location=westeurope'. For help resolving this issue, please \
                     see https://go.microsoft.com/fwlink/?linkid=2125287",
                    who.client_id,
                    who.object_id,
                    self.directory.tenant()
                ),
                "AccessDenied",
            ));
        }
        if let Some(name) = s.get(1)
            && !valid_name(name)
        {
            return Err(bad(format!(
                "The request URI contains an invalid name: {name}"
            )));
        }
        if kind == "keys" {
            self.keys(vault, permission, call)
        } else {
            self.secrets(vault, permission, call)
        }
    }

    fn keys(&self, vault: &mut Vault, permission: &str, call: &VaultCall<'_>) -> Answer {
        let s = &call.segments;
        let base = &call.base;
        let name = s.get(1).copied().unwrap_or_default();
        let deleted_view = s[0] == "deletedkeys";
        match permission {
            "list" if s.len() == 1 => {
                let items = vault
                    .keys
                    .iter()
                    .filter(|(_, k)| k.live() != deleted_view)
                    .filter_map(|(n, k)| {
                        let latest = k.latest()?;
                        let mut item = latest.item(format!("{base}/keys/{n}"));
                        if let Some(at) = k.deleted {
                            item["recoveryId"] = json!(format!("{base}/deletedkeys/{n}"));
                            item["deletedDate"] = json!(at);
                            item["scheduledPurgeDate"] = json!(at + RECOVERABLE_DAYS * 86_400);
                        }
                        Some(item)
                    })
                    .collect();
                page(items, call)
            }
            "create" => self.create_key(vault, name, call),
            _ if deleted_view => {
                let key = vault
                    .keys
                    .get(name)
                    .filter(|k| !k.live())
                    .ok_or_else(|| key_not_found(name))?;
                match permission {
                    "purge" => {
                        vault.keys.remove(name);
                        Ok(Value::Null)
                    }
                    "recover" => {
                        let key = vault
                            .keys
                            .get_mut(name)
                            .ok_or_else(|| key_not_found(name))?;
                        key.deleted = None;
                        Ok(key.version(name, "")?.bundle(base, name))
                    }
                    _ => Ok(deleted_key_bundle(key, base, name)),
                }
            }
            _ => {
                let key = vault
                    .keys
                    .get_mut(name)
                    .filter(|k| k.live())
                    .ok_or_else(|| key_not_found(name))?;
                match permission {
                    "list" => {
                        let items = key
                            .versions
                            .iter()
                            .map(|v| v.item(v.kid(base, name)))
                            .collect();
                        page(items, call)
                    }
                    "get" => {
                        let version = key.version(name, s.get(2).copied().unwrap_or_default())?;
                        version.attributes.usable("get", "key")?;
                        Ok(version.bundle(base, name))
                    }
                    "update" => {
                        let version =
                            key.version_mut(name, s.get(2).copied().unwrap_or_default())?;
                        if let Some(ops) = string_list(call.field("key_ops"), "key_ops")? {
                            check_key_ops(&ops)?;
                            version.key_ops = ops;
                        }
                        if let Some(tags) = tags_of(call.field("tags"))? {
                            version.tags = tags;
                        }
                        version.attributes.apply(call.field("attributes"))?;
                        Ok(version.bundle(base, name))
                    }
                    "delete" => {
                        key.deleted = Some(now());
                        Ok(deleted_key_bundle(key, base, name))
                    }
                    "rotate" => {
                        let latest = key.latest().ok_or_else(|| key_not_found(name))?;
                        let bits = latest.private.size() as u32 * 8;
                        let version = KeyVersion {
                            id: version_id(),
                            private: self.pool.take(bits)?,
                            key_ops: latest.key_ops.clone(),
                            attributes: Attributes::new(),
                            tags: latest.tags.clone(),
                        };
                        let bundle = version.bundle(base, name);
                        key.versions.push(version);
                        Ok(bundle)
                    }
                    "getrotationpolicy" => Ok(rotation_policy(key, base, name)),
                    "setrotationpolicy" => {
                        let actions = call.field("lifetimeActions");
                        check_lifetime_actions(actions)?;
                        let expiry = match &call.field("attributes")["expiryTime"] {
                            Value::Null => None,
                            Value::String(t) if valid_duration(t) => Some(t.clone()),
                            other => {
                                return Err(bad(format!(
                                    "attributes.expiryTime {other} is not an ISO 8601 duration"
                                )));
                            }
                        };
                        let created = key.rotation_policy.as_ref().map_or(now(), |p| p.2);
                        key.rotation_policy = Some((actions.clone(), expiry, created, now()));
                        Ok(rotation_policy(key, base, name))
                    }
                    op => {
                        let version_id = if s.len() == 4 { s[2] } else { "" };
                        let version = key.version(name, version_id)?;
                        crypto(version, op, call, base, name)
                    }
                }
            }
        }
    }

    fn create_key(&self, vault: &mut Vault, name: &str, call: &VaultCall<'_>) -> Answer {
        if let Some(existing) = vault.keys.get(name)
            && !existing.live()
        {
            return Err(fail(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Key {name} is currently in a deleted but recoverable state, and its name \
                     cannot be reused; in this state, the key can only be recovered or purged."
                ),
            ));
        }
        match call.field("kty").as_str() {
            Some("RSA" | "RSA-HSM") => {}
            Some(other) => {
                return Err(bad(format!(
                    "Key type {other} is not supported by this test peer (RSA only)."
                )));
            }
            None => return Err(bad("The parameter kty is required.")),
        }
        let bits = match call.field("key_size") {
            Value::Null => 2048,
            v => match v.as_u64() {
                Some(b @ (2048 | 3072 | 4096)) => b as u32,
                _ => return Err(bad(format!("The specified key size {v} is invalid."))),
            },
        };
        if !matches!(call.field("public_exponent"), Value::Null)
            && call.field("public_exponent").as_u64() != Some(65537)
        {
            return Err(bad("Only the public exponent 65537 is supported."));
        }
        let key_ops = match string_list(call.field("key_ops"), "key_ops")? {
            Some(ops) => {
                check_key_ops(&ops)?;
                ops
            }
            None => RSA_KEY_OPS.iter().map(|s| s.to_string()).collect(),
        };
        let mut attributes = Attributes::new();
        attributes.apply(call.field("attributes"))?;
        let version = KeyVersion {
            id: version_id(),
            private: self.pool.take(bits)?,
            key_ops,
            attributes,
            tags: tags_of(call.field("tags"))?.unwrap_or_else(|| json!({})),
        };
        let bundle = version.bundle(&call.base, name);
        let key = vault.keys.entry(name.to_string()).or_insert(KeyObject {
            versions: Vec::new(),
            rotation_policy: None,
            deleted: None,
        });
        // Creating an existing key adds a version, as the service does.
        key.versions.push(version);
        Ok(bundle)
    }

    fn secrets(&self, vault: &mut Vault, permission: &str, call: &VaultCall<'_>) -> Answer {
        let s = &call.segments;
        let base = &call.base;
        let name = s.get(1).copied().unwrap_or_default();
        let deleted_view = s[0] == "deletedsecrets";
        let not_found = |name: &str| secret_not_found(name);
        match permission {
            "list" if s.len() == 1 => {
                let items = vault
                    .secrets
                    .iter()
                    .filter(|(_, o)| (o.deleted.is_none()) != deleted_view)
                    .filter_map(|(n, o)| {
                        let latest = o.versions.last()?;
                        let mut item = latest.bundle(base, n, false);
                        item["id"] = json!(format!("{base}/secrets/{n}"));
                        if let Some(at) = o.deleted {
                            item["recoveryId"] = json!(format!("{base}/deletedsecrets/{n}"));
                            item["deletedDate"] = json!(at);
                            item["scheduledPurgeDate"] = json!(at + RECOVERABLE_DAYS * 86_400);
                        }
                        Some(item)
                    })
                    .collect();
                page(items, call)
            }
            "set" if *call.method == Method::PUT => {
                if vault.secrets.get(name).is_some_and(|o| o.deleted.is_some()) {
                    return Err(fail(
                        StatusCode::CONFLICT,
                        "Conflict",
                        format!(
                            "Secret {name} is currently in a deleted but recoverable state, and \
                             its name cannot be reused; in this state, the secret can only be \
                             recovered or purged."
                        ),
                    ));
                }
                let value = call
                    .field("value")
                    .as_str()
                    .ok_or_else(|| bad("The parameter value is required."))?;
                if value.len() > MAX_SECRET_BYTES {
                    return Err(bad("The secret value is larger than 25 KB."));
                }
                let mut attributes = Attributes::new();
                attributes.apply(call.field("attributes"))?;
                let version = SecretVersion {
                    id: version_id(),
                    value: value.to_string(),
                    content_type: call.field("contentType").as_str().map(str::to_string),
                    attributes,
                    tags: tags_of(call.field("tags"))?.unwrap_or_else(|| json!({})),
                };
                let bundle = version.bundle(base, name, true);
                vault
                    .secrets
                    .entry(name.to_string())
                    .or_insert(SecretObject {
                        versions: Vec::new(),
                        deleted: None,
                    })
                    .versions
                    .push(version);
                Ok(bundle)
            }
            _ if deleted_view => {
                let object = vault
                    .secrets
                    .get(name)
                    .filter(|o| o.deleted.is_some())
                    .ok_or_else(|| not_found(name))?;
                match permission {
                    "purge" => {
                        vault.secrets.remove(name);
                        Ok(Value::Null)
                    }
                    "recover" => {
                        let object = vault.secrets.get_mut(name).ok_or_else(|| not_found(name))?;
                        object.deleted = None;
                        let latest = object.versions.last().ok_or_else(|| not_found(name))?;
                        Ok(latest.bundle(base, name, false))
                    }
                    _ => Ok(deleted_secret_bundle(object, base, name)),
                }
            }
            _ => {
                let object = vault
                    .secrets
                    .get_mut(name)
                    .filter(|o| o.deleted.is_none())
                    .ok_or_else(|| not_found(name))?;
                let version_id = s.get(2).copied().unwrap_or_default();
                match permission {
                    "list" => {
                        let items = object
                            .versions
                            .iter()
                            .map(|v| v.bundle(base, name, false))
                            .collect();
                        page(items, call)
                    }
                    "delete" => {
                        object.deleted = Some(now());
                        Ok(deleted_secret_bundle(object, base, name))
                    }
                    _ => {
                        let what = if version_id.is_empty() {
                            name.to_string()
                        } else {
                            format!("{name}/{version_id}")
                        };
                        let version = if version_id.is_empty() {
                            object.versions.last_mut()
                        } else {
                            object.versions.iter_mut().find(|v| v.id == version_id)
                        }
                        .ok_or_else(|| not_found(&what))?;
                        if permission == "get" {
                            version.attributes.usable("get", "secret")?;
                            return Ok(version.bundle(base, name, true));
                        }
                        if let Some(ct) = call.field("contentType").as_str() {
                            version.content_type = Some(ct.to_string());
                        }
                        if let Some(tags) = tags_of(call.field("tags"))? {
                            version.tags = tags;
                        }
                        version.attributes.apply(call.field("attributes"))?;
                        Ok(version.bundle(base, name, false))
                    }
                }
            }
        }
    }
}

fn check_key_ops(ops: &[String]) -> Result<(), Failure> {
    match ops.iter().find(|op| !RSA_KEY_OPS.contains(&op.as_str())) {
        Some(op) => Err(bad(format!(
            "Invalid key operation {op} for an RSA key; allowed: {}",
            RSA_KEY_OPS.join(", ")
        ))),
        None => Ok(()),
    }
}

fn check_lifetime_actions(actions: &Value) -> Result<(), Failure> {
    let Some(actions) = actions.as_array() else {
        return Err(bad("lifetimeActions must be a list"));
    };
    for action in actions {
        let kind = action["action"]["type"].as_str().unwrap_or_default();
        if !kind.eq_ignore_ascii_case("rotate") && !kind.eq_ignore_ascii_case("notify") {
            return Err(bad(format!(
                "Invalid lifetime action type '{kind}': use Rotate or Notify"
            )));
        }
        let trigger = &action["trigger"];
        let times: Vec<&str> = ["timeAfterCreate", "timeBeforeExpiry"]
            .iter()
            .filter_map(|t| trigger[*t].as_str())
            .collect();
        if times.len() != 1 || !valid_duration(times[0]) {
            return Err(bad(
                "A lifetime action's trigger needs exactly one of timeAfterCreate and \
                 timeBeforeExpiry, as an ISO 8601 duration such as P90D",
            ));
        }
    }
    Ok(())
}

fn rotation_policy(key: &KeyObject, base: &str, name: &str) -> Value {
    let id = format!("{base}/keys/{name}/rotationpolicy");
    match &key.rotation_policy {
        None => json!({
            "id": id,
            "lifetimeActions": [
                { "trigger": { "timeBeforeExpiry": "P30D" }, "action": { "type": "Notify" } }
            ],
            "attributes": {},
        }),
        Some((actions, expiry, created, updated)) => {
            let mut attributes = json!({ "created": created, "updated": updated });
            if let Some(e) = expiry {
                attributes["expiryTime"] = json!(e);
            }
            json!({ "id": id, "lifetimeActions": actions, "attributes": attributes })
        }
    }
}

fn deleted_key_bundle(key: &KeyObject, base: &str, name: &str) -> Value {
    let mut out = key
        .latest()
        .map_or_else(|| json!({}), |v| v.bundle(base, name));
    let at = key.deleted.unwrap_or_else(now);
    out["recoveryId"] = json!(format!("{base}/deletedkeys/{name}"));
    out["deletedDate"] = json!(at);
    out["scheduledPurgeDate"] = json!(at + RECOVERABLE_DAYS * 86_400);
    out
}

fn deleted_secret_bundle(object: &SecretObject, base: &str, name: &str) -> Value {
    let mut out = object
        .versions
        .last()
        .map_or_else(|| json!({}), |v| v.bundle(base, name, false));
    let at = object.deleted.unwrap_or_else(now);
    out["recoveryId"] = json!(format!("{base}/deletedsecrets/{name}"));
    out["deletedDate"] = json!(at);
    out["scheduledPurgeDate"] = json!(at + RECOVERABLE_DAYS * 86_400);
    out
}

/// `wrapKey`, `unwrapKey`, `encrypt` or `decrypt` with `version`.
fn crypto(version: &KeyVersion, op: &str, call: &VaultCall<'_>, base: &str, name: &str) -> Answer {
    version.attributes.usable(op, "key")?;
    if !version.key_ops.iter().any(|o| o == op) {
        return Err(forbidden(
            format!(
                "Operation {op} is not allowed on this key: its key_ops are [{}].",
                version.key_ops.join(", ")
            ),
            "KeyOperationForbidden",
        ));
    }
    let alg = call
        .field("alg")
        .as_str()
        .ok_or_else(|| bad("The parameter alg is required."))?;
    let value = unb64(call.field("value"), "value")?;
    let public = version.private.to_public_key();
    let mut rng = rsa::rand_core::OsRng;
    let sealing = matches!(op, "wrapKey" | "encrypt");
    let result = match (alg, sealing) {
        ("RSA-OAEP-256", true) => public.encrypt(&mut rng, Oaep::new::<rsa::sha2::Sha256>(), &value),
        ("RSA-OAEP", true) => public.encrypt(&mut rng, Oaep::new::<sha1::Sha1>(), &value),
        ("RSA1_5", true) => public.encrypt(&mut rng, Pkcs1v15Encrypt, &value),
        ("RSA-OAEP-256", false) => version
            .private
            .decrypt(Oaep::new::<rsa::sha2::Sha256>(), &value),
        ("RSA-OAEP", false) => version.private.decrypt(Oaep::new::<sha1::Sha1>(), &value),
        ("RSA1_5", false) => version.private.decrypt(Pkcs1v15Encrypt, &value),
        _ => {
            return Err(bad(format!(
                "Invalid algorithm {alg} for an RSA key: use RSA-OAEP-256, RSA-OAEP or RSA1_5."
            )));
        }
    }
    .map_err(|e| {
        if sealing {
            bad(format!("The value cannot be {op}ed with {alg}: {e}"))
        } else {
            bad("The parameter is incorrect: the value does not decrypt with this key and algorithm.")
        }
    })?;
    Ok(json!({ "kid": version.kid(base, name), "value": b64(&result) }))
}

/// One page of `items`: `maxresults` of them from `$skiptoken`, with a `nextLink` when more
/// follow.
fn page(items: Vec<Value>, call: &VaultCall<'_>) -> Answer {
    let size = match call.request.param("maxresults") {
        None => PAGE,
        Some(n) => match n.parse::<usize>() {
            Ok(n @ 1..=25) => n,
            _ => return Err(bad(format!("maxresults {n} must be between 1 and 25"))),
        },
    };
    let start = call
        .request
        .param("$skiptoken")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0);
    let more = start + size < items.len();
    let value: Vec<Value> = items.into_iter().skip(start).take(size).collect();
    let next = more.then(|| {
        format!(
            "{}/{}?api-version={}&$skiptoken={}&maxresults={size}",
            call.base,
            call.segments.join("/"),
            call.request
                .param("api-version")
                .unwrap_or(LATEST_API_VERSION),
            start + size
        )
    });
    Ok(json!({ "value": value, "nextLink": next }))
}

impl Service for KeyVault {
    fn handle(&self, request: &PeerRequest) -> PeerResponse {
        let host = request.header("host").unwrap_or("127.0.0.1").to_string();
        let segments: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
        match (segments.as_slice(), &request.method) {
            (["msi", "token"], &Method::GET) => self.directory.managed_identity(request),
            ([tenant, "oauth2", "v2.0", "token"], &Method::POST) => {
                self.directory.token_endpoint(tenant, request)
            }
            ([tenant, "v2.0", ".well-known", "openid-configuration"], &Method::GET) => self
                .directory
                .openid_configuration(&format!("https://{host}"), tenant),
            _ => self.vault_request(request, segments, &host),
        }
    }

    fn fault_body(&self, status: StatusCode, message: &str) -> Value {
        if status == StatusCode::TOO_MANY_REQUESTS {
            error_body(
                "Throttled",
                &format!(
                    "{message}: Request was not processed because too many requests were \
                     received. Reason: VaultRequestTypeLimitReached"
                ),
                None,
            )
        } else {
            error_body("ServiceUnavailable", message, None)
        }
    }
}

/// A running Key Vault peer: its HTTPS address, the plain-HTTP managed-identity address, and
/// the files clients need.
#[derive(Debug, Clone)]
pub struct AzurePeer {
    /// The HTTPS address (vaults and the Entra token endpoints).
    pub addr: std::net::SocketAddr,
    /// The managed-identity endpoint (`IDENTITY_ENDPOINT`), plain HTTP as App Service's is.
    pub identity_endpoint: String,
    /// The certificate authority to trust (PEM).
    pub ca_file: std::path::PathBuf,
    /// How to sign in ([`Directory::credentials`]), as JSON.
    pub credentials_file: std::path::PathBuf,
}

/// Starts a Key Vault peer with a new tenant on 127.0.0.1:`port` (0: any free port), its
/// certificate, federated token and `credentials.json` written to `dir`.
pub async fn serve_key_vault(dir: &std::path::Path, port: u16) -> std::io::Result<AzurePeer> {
    let certificate = crate::tls::PeerCertificate::generate(dir)?;
    let directory = Directory::generate();
    let token_file = dir.join("federated-token");
    std::fs::write(&token_file, directory.federated_token())?;
    let peer = std::sync::Arc::new(KeyVault::new(directory));
    let addr = crate::http::serve_tls(peer.clone(), port, certificate.acceptor()).await?;
    let identity = crate::http::serve(peer.clone(), 0).await?;
    let identity_endpoint = format!("http://{identity}/msi/token");
    let credentials = peer.directory().credentials(
        &format!("https://{addr}"),
        &identity_endpoint,
        &token_file.to_string_lossy(),
    );
    let credentials_file = dir.join("credentials.json");
    std::fs::write(&credentials_file, credentials.to_string())?;
    Ok(AzurePeer {
        addr,
        identity_endpoint,
        ca_file: certificate.ca_file,
        credentials_file,
    })
}
