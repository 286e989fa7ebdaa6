//! Google Cloud KMS v1 over REST/JSON, as `google-cloud-kms` (REST transport) and
//! `google-cloud-kms-v1` speak it: key rings, symmetric crypto keys and their versions,
//! `:encrypt` / `:decrypt` with real AES-256-GCM and every CRC32C field, Google's error body,
//! `pageToken` paging. Built from the Cloud KMS discovery document (revision 20260219).
//!
//! Ciphertexts are `version (u32, big-endian) ‖ nonce (12) ‖ AES-256-GCM ciphertext ‖ tag`
//! under the version's own 32-byte key, with `additionalAuthenticatedData` as the AEAD's
//! associated data: opaque to clients, as the service's are.

use std::collections::BTreeMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::{Method, StatusCode};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};

use crate::gcp_auth::Auth;
use crate::http::{PeerRequest, PeerResponse, Service};
use crate::time::{now_rfc3339, rfc3339_after};

/// Largest page a list answers (the service's own limit).
const MAX_PAGE: usize = 1000;
/// The default for `destroyScheduledDuration` (30 days).
const DEFAULT_DESTROY_DELAY_SECS: u64 = 30 * 86_400;

/// The Cloud KMS test peer: anonymous by default, or requiring Google's service-account
/// authentication ([`CloudKms::with_auth`]).
pub struct CloudKms {
    state: Mutex<BTreeMap<String, KeyRing>>,
    rng: SystemRandom,
    auth: Option<Auth>,
}

impl Default for CloudKms {
    fn default() -> Self {
        Self {
            state: Mutex::new(BTreeMap::new()),
            rng: SystemRandom::new(),
            auth: None,
        }
    }
}

/// Serves, on 127.0.0.1:`port` (0: any free port), a Cloud KMS peer that requires a new
/// service account `email`, and writes that account's JSON key file for `project` (its
/// `token_uri` the peer's token endpoint) to `key_file`. Returns the address.
pub async fn serve_authenticated(
    port: u16,
    email: &str,
    project: &str,
    key_file: &std::path::Path,
) -> std::io::Result<std::net::SocketAddr> {
    let peer = std::sync::Arc::new(CloudKms::with_auth(Auth::new(vec![
        crate::gcp_auth::ServiceAccount::generate(email)?,
    ])));
    let addr = crate::http::serve(peer.clone(), port).await?;
    let token_uri = format!("http://{addr}/token");
    let auth = peer
        .auth
        .as_ref()
        .unwrap_or_else(|| unreachable!("made with auth"));
    auth.set_token_uri(token_uri.clone());
    std::fs::write(
        key_file,
        auth.accounts()[0].key_file(project, &token_uri).to_string(),
    )?;
    Ok(addr)
}

impl CloudKms {
    /// A peer that answers only requests bearing a token of `auth`'s accounts (401
    /// `UNAUTHENTICATED` otherwise), and serves their token endpoint at `POST /token`.
    pub fn with_auth(auth: Auth) -> Self {
        Self {
            auth: Some(auth),
            ..Self::default()
        }
    }
}

struct KeyRing {
    create_time: String,
    keys: BTreeMap<String, CryptoKey>,
}

struct CryptoKey {
    create_time: String,
    rotation_period: Option<String>,
    next_rotation_time: Option<String>,
    labels: Value,
    destroy_delay_secs: u64,
    primary: Option<u32>,
    versions: Vec<Version>,
}

struct Version {
    id: u32,
    state: &'static str,
    key: [u8; 32],
    create_time: String,
    destroy_time: Option<String>,
}

/// A Google API error: HTTP status, canonical code and message.
pub(crate) struct ApiError(StatusCode, &'static str, String);

type Answer = Result<Value, ApiError>;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message.into())
}

fn not_found(name: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("{name} not found."),
    )
}

fn precondition(message: impl Into<String>) -> ApiError {
    ApiError(
        StatusCode::BAD_REQUEST,
        "FAILED_PRECONDITION",
        message.into(),
    )
}

/// The enums this peer reads and writes, with their numbers (clients may send and ask for
/// either: `$alt=json;enum-encoding=int`).
const ENUMS: &[(&str, &[(&str, i64)])] = &[
    (
        "purpose",
        &[
            ("ENCRYPT_DECRYPT", 1),
            ("ASYMMETRIC_SIGN", 5),
            ("ASYMMETRIC_DECRYPT", 6),
            ("RAW_ENCRYPT_DECRYPT", 7),
            ("MAC", 9),
        ],
    ),
    ("algorithm", &[("GOOGLE_SYMMETRIC_ENCRYPTION", 1)]),
    (
        "protectionLevel",
        &[("SOFTWARE", 1), ("HSM", 2), ("EXTERNAL", 3)],
    ),
    (
        "state",
        &[
            ("ENABLED", 1),
            ("DISABLED", 2),
            ("DESTROYED", 3),
            ("DESTROY_SCHEDULED", 4),
            ("PENDING_GENERATION", 5),
        ],
    ),
];

/// An enum field of a request, by name whether it came as a name or a number.
fn enum_field<'a>(body: &'a Value, field: &str) -> Option<&'a str> {
    let table = ENUMS.iter().find(|(f, _)| *f == field)?.1;
    match body.get(field)? {
        Value::String(name) => table.iter().find(|(n, _)| n == name).map(|(n, _)| *n),
        Value::Number(n) => table
            .iter()
            .find(|(_, v)| Some(*v) == n.as_i64())
            .map(|(n, _)| *n),
        _ => None,
    }
}

/// Rewrites the enum names of a response as numbers.
fn enums_as_numbers(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (field, v) in map.iter_mut() {
                if let (Some((_, table)), Value::String(name)) =
                    (ENUMS.iter().find(|(f, _)| f == field), &*v)
                    && let Some((_, n)) = table.iter().find(|(n, _)| n == name)
                {
                    *v = json!(n);
                } else {
                    enums_as_numbers(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(enums_as_numbers),
        _ => {}
    }
}

/// Google's error body.
pub(crate) fn error_body(status: StatusCode, canonical: &str, message: &str) -> Value {
    json!({ "error": { "code": status.as_u16(), "message": message, "status": canonical } })
}

/// A `bytes` field (base64) of a JSON body.
fn bytes_field(body: &Value, field: &str) -> Result<Option<Vec<u8>>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => STANDARD
            .decode(s)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
            .map(Some)
            .map_err(|_| {
                invalid(format!(
                    "Invalid value at '{field}' (TYPE_BYTES), Base64 decoding failed for \"{s}\""
                ))
            }),
        Some(_) => Err(invalid(format!("Invalid value at '{field}' (TYPE_BYTES)"))),
    }
}

/// An `int64` field (a JSON string or number).
fn int64_field(body: &Value, field: &str) -> Result<Option<u64>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| invalid(format!("Invalid value at '{field}' (TYPE_INT64), \"{s}\""))),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(format!("Invalid value at '{field}' (TYPE_INT64), {n}"))),
        Some(_) => Err(invalid(format!("Invalid value at '{field}' (TYPE_INT64)"))),
    }
}

/// Checks a request's CRC32C of `data`, if the client sent one; returns whether it did.
fn check_crc(body: &Value, field: &str, data: &[u8], data_field: &str) -> Result<bool, ApiError> {
    match int64_field(body, field)? {
        None => Ok(false),
        Some(crc) if crc == u64::from(crc32c::crc32c(data)) => Ok(true),
        Some(_) => Err(invalid(format!(
            "The checksum in field {} did not match the data in field {}.",
            snake(field),
            snake(data_field)
        ))),
    }
}

fn snake(camel: &str) -> String {
    let mut out = String::new();
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A page of `items`: the `pageToken` is the offset, base64-encoded.
fn page(request: &PeerRequest, items: Vec<Value>, field: &str) -> Answer {
    let size = request
        .param("pageSize")
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(MAX_PAGE)
        .min(MAX_PAGE);
    let start = match request.param("pageToken").filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => STANDARD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| invalid("Invalid page token."))?,
    };
    let total = items.len();
    let mut doc = json!({
        field: items.into_iter().skip(start).take(size).collect::<Vec<_>>(),
        "totalSize": total,
    });
    if start + size < total {
        doc["nextPageToken"] = json!(STANDARD.encode((start + size).to_string()));
    }
    Ok(doc)
}

impl CryptoKey {
    fn version(&self, name: &str, id: &str) -> Result<&Version, ApiError> {
        id.parse::<u32>()
            .ok()
            .and_then(|id| self.versions.iter().find(|v| v.id == id))
            .ok_or_else(|| not_found(name))
    }

    fn version_mut(&mut self, name: &str, id: &str) -> Result<&mut Version, ApiError> {
        id.parse::<u32>()
            .ok()
            .and_then(|id| self.versions.iter_mut().find(|v| v.id == id))
            .ok_or_else(|| not_found(name))
    }

    fn json(&self, name: &str) -> Value {
        let mut doc = json!({
            "name": name,
            "purpose": "ENCRYPT_DECRYPT",
            "createTime": self.create_time,
            "versionTemplate": { "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "protectionLevel": "SOFTWARE" },
            "destroyScheduledDuration": format!("{}s", self.destroy_delay_secs),
        });
        if let Some(p) = self
            .primary
            .and_then(|id| self.versions.iter().find(|v| v.id == id))
        {
            doc["primary"] = p.json(&format!("{name}/cryptoKeyVersions/{}", p.id));
        }
        if let Some(r) = &self.rotation_period {
            doc["rotationPeriod"] = json!(r);
        }
        if let Some(t) = &self.next_rotation_time {
            doc["nextRotationTime"] = json!(t);
        }
        if self.labels.as_object().is_some_and(|l| !l.is_empty()) {
            doc["labels"] = self.labels.clone();
        }
        doc
    }
}

impl Version {
    fn json(&self, name: &str) -> Value {
        let mut doc = json!({
            "name": name,
            "state": self.state,
            "protectionLevel": "SOFTWARE",
            "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION",
            "createTime": self.create_time,
            "generateTime": self.create_time,
        });
        if let Some(t) = &self.destroy_time {
            doc["destroyTime"] = json!(t);
        }
        doc
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &self.key)
                .unwrap_or_else(|_| unreachable!("a 32-byte key is an AES-256 key")),
        )
    }
}

/// A request path split into Cloud KMS resource parts.
struct Path<'a> {
    project: &'a str,
    location: &'a str,
    ring: Option<&'a str>,
    key: Option<&'a str>,
    version: Option<&'a str>,
    /// The `:verb` of a custom method, or `""`.
    verb: &'a str,
    /// The path names a collection (`…/keyRings`, `…/cryptoKeys`, `…/cryptoKeyVersions`).
    collection: bool,
}

fn parse_path(path: &str) -> Option<Path<'_>> {
    let rest = path.strip_prefix("/v1/")?;
    let (rest, verb) = match rest.rsplit_once(':') {
        Some((r, v)) if !v.contains('/') => (r, v),
        _ => (rest, ""),
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let at = |i: usize, name: &str| {
        (parts.get(i) == Some(&name))
            .then_some(())
            .and(parts.get(i + 1).copied())
    };
    let project = at(0, "projects")?;
    let location = at(2, "locations")?;
    let n = parts.len();
    Some(Path {
        project,
        location,
        ring: at(4, "keyRings"),
        key: at(6, "cryptoKeys"),
        version: at(8, "cryptoKeyVersions"),
        verb,
        collection: n % 2 == 1 && n >= 5,
    })
}

impl CloudKms {
    fn random_key(&self) -> [u8; 32] {
        let mut key = [0u8; 32];
        self.rng
            .fill(&mut key)
            .unwrap_or_else(|_| unreachable!("the OS random source answers"));
        key
    }

    fn new_version(&self, id: u32) -> Version {
        Version {
            id,
            state: "ENABLED",
            key: self.random_key(),
            create_time: now_rfc3339(),
            destroy_time: None,
        }
    }

    fn route(&self, r: &PeerRequest) -> Answer {
        let p = parse_path(&r.path).ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("The requested URL {} was not found on this server.", r.path),
            )
        })?;
        let body: Value = if r.body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&r.body)
                .map_err(|e| invalid(format!("Invalid JSON payload received. {e}")))?
        };
        let parent = format!("projects/{}/locations/{}", p.project, p.location);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match (&r.method, p.ring, p.key, p.version, p.verb, p.collection) {
            (&Method::POST, None, _, _, "", true) => {
                let id = r
                    .param("keyRingId")
                    .filter(|id| valid_id(id))
                    .ok_or_else(|| invalid("Invalid key ring id"))?;
                let name = format!("{parent}/keyRings/{id}");
                if state.contains_key(&name) {
                    return Err(ApiError(
                        StatusCode::CONFLICT,
                        "ALREADY_EXISTS",
                        format!("KeyRing {name} already exists."),
                    ));
                }
                let create_time = now_rfc3339();
                state.insert(
                    name.clone(),
                    KeyRing {
                        create_time: create_time.clone(),
                        keys: BTreeMap::new(),
                    },
                );
                Ok(json!({ "name": name, "createTime": create_time }))
            }
            (&Method::GET, None, _, _, "", true) => {
                let prefix = format!("{parent}/keyRings/");
                let items = state
                    .iter()
                    .filter(|(n, _)| n.starts_with(&prefix))
                    .map(|(n, ring)| json!({ "name": n, "createTime": ring.create_time }))
                    .collect();
                page(r, items, "keyRings")
            }
            (&Method::GET, Some(ring), None, _, "", false) => {
                let name = format!("{parent}/keyRings/{ring}");
                let found = state.get(&name).ok_or_else(|| not_found(&name))?;
                Ok(json!({ "name": name, "createTime": found.create_time }))
            }
            (_, Some(ring), key, version, verb, collection) => {
                let ring_name = format!("{parent}/keyRings/{ring}");
                let ring = state
                    .get_mut(&ring_name)
                    .ok_or_else(|| not_found(&ring_name))?;
                self.in_ring(r, &body, &ring_name, ring, key, version, verb, collection)
            }
            _ => Err(ApiError(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("The requested URL {} was not found on this server.", r.path),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn in_ring(
        &self,
        r: &PeerRequest,
        body: &Value,
        ring_name: &str,
        ring: &mut KeyRing,
        key: Option<&str>,
        version: Option<&str>,
        verb: &str,
        collection: bool,
    ) -> Answer {
        let Some(key_id) = key else {
            // `…/keyRings/R/cryptoKeys`
            return match (&r.method, collection) {
                (&Method::POST, true) => self.create_key(r, body, ring_name, ring),
                (&Method::GET, true) => {
                    let items = ring
                        .keys
                        .iter()
                        .map(|(id, k)| k.json(&format!("{ring_name}/cryptoKeys/{id}")))
                        .collect();
                    page(r, items, "cryptoKeys")
                }
                _ => Err(invalid("Unsupported method on a key ring")),
            };
        };
        let key_name = format!("{ring_name}/cryptoKeys/{key_id}");
        let k = ring
            .keys
            .get_mut(key_id)
            .ok_or_else(|| not_found(&key_name))?;
        match (&r.method, version, verb, collection) {
            (&Method::GET, None, "", false) => Ok(k.json(&key_name)),
            (&Method::PATCH, None, "", false) => {
                for field in update_mask(r)? {
                    match field.as_str() {
                        "rotationPeriod" | "rotation_period" => {
                            k.rotation_period = body["rotationPeriod"].as_str().map(str::to_string)
                        }
                        "nextRotationTime" | "next_rotation_time" => {
                            k.next_rotation_time =
                                body["nextRotationTime"].as_str().map(str::to_string)
                        }
                        "labels" => k.labels = body["labels"].clone(),
                        other => {
                            return Err(invalid(format!(
                                "The update mask field {other} is not supported by this test peer"
                            )));
                        }
                    }
                }
                Ok(k.json(&key_name))
            }
            (&Method::POST, None, "updatePrimaryVersion", _) => {
                let id = body["cryptoKeyVersionId"]
                    .as_str()
                    .ok_or_else(|| invalid("crypto_key_version_id is required"))?;
                let v = k.version(&format!("{key_name}/cryptoKeyVersions/{id}"), id)?;
                if v.state != "ENABLED" {
                    return Err(precondition(format!(
                        "The request cannot be fulfilled. Resource {key_name}/cryptoKeyVersions/{id} has value {} in field crypto_key_version.state.",
                        v.state
                    )));
                }
                k.primary = Some(v.id);
                Ok(k.json(&key_name))
            }
            (&Method::POST, None, "encrypt", _) => self.encrypt(body, &key_name, k),
            (&Method::POST, None, "decrypt", _) => decrypt(body, &key_name, k),
            (&Method::POST, None, "", true) => {
                let id = k.versions.len() as u32 + 1;
                let v = self.new_version(id);
                let doc = v.json(&format!("{key_name}/cryptoKeyVersions/{id}"));
                k.versions.push(v);
                Ok(doc)
            }
            (&Method::GET, None, "", true) => {
                let items = k
                    .versions
                    .iter()
                    // `filter` as the service takes it for states (`state=ENABLED`); an
                    // empty one, as clients send by default, filters nothing.
                    .filter(|v| match r.param("filter").filter(|f| !f.is_empty()) {
                        Some(f) => f.contains(v.state),
                        None => true,
                    })
                    .map(|v| v.json(&format!("{key_name}/cryptoKeyVersions/{}", v.id)))
                    .collect();
                page(r, items, "cryptoKeyVersions")
            }
            (method, Some(id), verb, false) => {
                let name = format!("{key_name}/cryptoKeyVersions/{id}");
                let delay = k.destroy_delay_secs;
                let v = k.version_mut(&name, id)?;
                match (method, verb) {
                    (&Method::GET, "") => {}
                    (&Method::PATCH, "") => {
                        for field in update_mask(r)? {
                            if field != "state" {
                                return Err(invalid(format!(
                                    "The update mask field {field} is not supported by this test peer"
                                )));
                            }
                            v.state = match (enum_field(body, "state"), v.state) {
                                (Some("ENABLED"), "ENABLED" | "DISABLED") => "ENABLED",
                                (Some("DISABLED"), "ENABLED" | "DISABLED") => "DISABLED",
                                (Some(s), current) => {
                                    return Err(precondition(format!(
                                        "The request cannot be fulfilled. Resource {name} has value {current} in field crypto_key_version.state (cannot set {s})."
                                    )));
                                }
                                (None, _) => return Err(invalid("state is required")),
                            };
                        }
                    }
                    (&Method::POST, "destroy") => {
                        if !matches!(v.state, "ENABLED" | "DISABLED") {
                            return Err(precondition(format!(
                                "The request cannot be fulfilled. Resource {name} has value {} in field crypto_key_version.state.",
                                v.state
                            )));
                        }
                        v.state = "DESTROY_SCHEDULED";
                        v.destroy_time = Some(rfc3339_after(delay));
                    }
                    (&Method::POST, "restore") => {
                        if v.state != "DESTROY_SCHEDULED" {
                            return Err(precondition(format!(
                                "The request cannot be fulfilled. Resource {name} has value {} in field crypto_key_version.state.",
                                v.state
                            )));
                        }
                        v.state = "DISABLED";
                        v.destroy_time = None;
                    }
                    _ => return Err(invalid(format!("Unsupported method {method} {verb}"))),
                }
                Ok(v.json(&name))
            }
            _ => Err(invalid("Unsupported method on a crypto key")),
        }
    }

    fn create_key(
        &self,
        r: &PeerRequest,
        body: &Value,
        ring_name: &str,
        ring: &mut KeyRing,
    ) -> Answer {
        let id = r
            .param("cryptoKeyId")
            .filter(|id| valid_id(id))
            .ok_or_else(|| invalid("Invalid crypto key id"))?;
        let name = format!("{ring_name}/cryptoKeys/{id}");
        if ring.keys.contains_key(id) {
            return Err(ApiError(
                StatusCode::CONFLICT,
                "ALREADY_EXISTS",
                format!("CryptoKey {name} already exists."),
            ));
        }
        match enum_field(body, "purpose") {
            Some("ENCRYPT_DECRYPT") => {}
            Some(other) => {
                return Err(invalid(format!(
                    "This test peer supports purpose ENCRYPT_DECRYPT only, not {other}"
                )));
            }
            None => return Err(invalid("The purpose field is required.")),
        }
        if body["versionTemplate"].get("algorithm").is_some()
            && enum_field(&body["versionTemplate"], "algorithm")
                != Some("GOOGLE_SYMMETRIC_ENCRYPTION")
        {
            return Err(invalid(format!(
                "Algorithm {} is not compatible with purpose ENCRYPT_DECRYPT.",
                body["versionTemplate"]["algorithm"]
            )));
        }
        let skip = r.param("skipInitialVersionCreation") == Some("true");
        let mut key = CryptoKey {
            create_time: now_rfc3339(),
            rotation_period: body["rotationPeriod"].as_str().map(str::to_string),
            next_rotation_time: body["nextRotationTime"].as_str().map(str::to_string),
            labels: body.get("labels").cloned().unwrap_or(json!({})),
            destroy_delay_secs: body["destroyScheduledDuration"]
                .as_str()
                .and_then(|d| d.strip_suffix('s'))
                .and_then(|d| d.parse::<f64>().ok())
                .map_or(DEFAULT_DESTROY_DELAY_SECS, |d| d as u64),
            primary: None,
            versions: Vec::new(),
        };
        if !skip {
            key.versions.push(self.new_version(1));
            key.primary = Some(1);
        }
        let doc = key.json(&name);
        ring.keys.insert(id.to_string(), key);
        Ok(doc)
    }

    fn encrypt(&self, body: &Value, key_name: &str, k: &CryptoKey) -> Answer {
        let plaintext = bytes_field(body, "plaintext")?.unwrap_or_default();
        if plaintext.len() > 64 * 1024 {
            return Err(invalid("The plaintext exceeds 64 KiB."));
        }
        let aad = bytes_field(body, "additionalAuthenticatedData")?.unwrap_or_default();
        let verified_plaintext = check_crc(body, "plaintextCrc32c", &plaintext, "plaintext")?;
        let verified_aad = check_crc(
            body,
            "additionalAuthenticatedDataCrc32c",
            &aad,
            "additionalAuthenticatedData",
        )?;
        let primary = k
            .primary
            .and_then(|id| k.versions.iter().find(|v| v.id == id))
            .ok_or_else(|| precondition(format!("{key_name} has no primary version.")))?;
        let version_name = format!("{key_name}/cryptoKeyVersions/{}", primary.id);
        if primary.state != "ENABLED" {
            return Err(precondition(format!(
                "The request cannot be fulfilled. Resource {version_name} has value {} in field crypto_key_version.state.",
                primary.state
            )));
        }
        let mut nonce = [0u8; 12];
        self.rng
            .fill(&mut nonce)
            .unwrap_or_else(|_| unreachable!("the OS random source answers"));
        let mut sealed = plaintext;
        primary
            .aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut sealed,
            )
            .map_err(|_| invalid("encryption failed"))?;
        let mut ciphertext = primary.id.to_be_bytes().to_vec();
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(&sealed);
        Ok(json!({
            "name": version_name,
            "ciphertext": STANDARD.encode(&ciphertext),
            "ciphertextCrc32c": crc32c::crc32c(&ciphertext).to_string(),
            "verifiedPlaintextCrc32c": verified_plaintext,
            "verifiedAdditionalAuthenticatedDataCrc32c": verified_aad,
            "protectionLevel": "SOFTWARE",
        }))
    }
}

fn decrypt(body: &Value, key_name: &str, k: &CryptoKey) -> Answer {
    let ciphertext = bytes_field(body, "ciphertext")?
        .ok_or_else(|| invalid("The ciphertext field is required."))?;
    let aad = bytes_field(body, "additionalAuthenticatedData")?.unwrap_or_default();
    check_crc(body, "ciphertextCrc32c", &ciphertext, "ciphertext")?;
    check_crc(
        body,
        "additionalAuthenticatedDataCrc32c",
        &aad,
        "additionalAuthenticatedData",
    )?;
    let undecryptable = || invalid("Decryption failed: the ciphertext is invalid.");
    if ciphertext.len() < 4 + 12 + 16 {
        return Err(undecryptable());
    }
    let id = u32::from_be_bytes([ciphertext[0], ciphertext[1], ciphertext[2], ciphertext[3]]);
    let v = k
        .versions
        .iter()
        .find(|v| v.id == id)
        .ok_or_else(undecryptable)?;
    if v.state != "ENABLED" {
        return Err(precondition(format!(
            "The request cannot be fulfilled. Resource {key_name}/cryptoKeyVersions/{id} has value {} in field crypto_key_version.state.",
            v.state
        )));
    }
    let nonce: [u8; 12] = ciphertext[4..16].try_into().map_err(|_| undecryptable())?;
    let mut sealed = ciphertext[16..].to_vec();
    let plaintext = v
        .aead()
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad),
            &mut sealed,
        )
        .map_err(|_| undecryptable())?
        .to_vec();
    Ok(json!({
        "plaintext": STANDARD.encode(&plaintext),
        "plaintextCrc32c": crc32c::crc32c(&plaintext).to_string(),
        "usedPrimary": k.primary == Some(id),
        "protectionLevel": "SOFTWARE",
    }))
}

/// The request's `updateMask` fields (required for patches, as by the service).
fn update_mask(r: &PeerRequest) -> Result<Vec<String>, ApiError> {
    let mask = r
        .param("updateMask")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("The update_mask field is required."))?;
    Ok(mask.split(',').map(|f| f.trim().to_string()).collect())
}

/// Resource ids: letters, digits, `_` and `-`, 1 to 63 characters.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Service for CloudKms {
    fn handle(&self, request: &PeerRequest) -> PeerResponse {
        if let Some(auth) = &self.auth {
            if request.path == "/token" && request.method == Method::POST {
                return auth.token_endpoint(request);
            }
            if let Err(why) = auth.check(request.authorization.as_deref()) {
                return PeerResponse {
                    status: StatusCode::UNAUTHORIZED,
                    body: error_body(
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHENTICATED",
                        &format!(
                            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. ({why})"
                        ),
                    ),
                    headers: vec![(
                        "www-authenticate",
                        "Bearer realm=\"https://accounts.google.com/\"".into(),
                    )],
                };
            }
        }
        match self.route(request) {
            Ok(mut body) => {
                if request
                    .param("$alt")
                    .is_some_and(|alt| alt.contains("enum-encoding=int"))
                {
                    enums_as_numbers(&mut body);
                }
                PeerResponse::ok(body)
            }
            Err(ApiError(status, canonical, message)) => PeerResponse {
                status,
                body: error_body(status, canonical, &message),
                headers: Vec::new(),
            },
        }
    }

    fn fault_body(&self, status: StatusCode, message: &str) -> Value {
        let canonical = if status == StatusCode::TOO_MANY_REQUESTS {
            "RESOURCE_EXHAUSTED"
        } else {
            "UNAVAILABLE"
        };
        error_body(status, canonical, message)
    }
}
