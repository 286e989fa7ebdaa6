//! The file-based key store behind `local://NAME`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use sealkit_core::provider::{
    GeneratedDataKey, KeyAdmin, KeyEncryption, KeyMetadata, KeyVersionInfo, VersionState,
    refuse_retiring_primary, version_not_found,
};
use sealkit_core::{
    Algorithm, DataKey, EncryptionContext, Error, KeyRef, KeyUri, KeyVersion, PreparedAead, Result,
    WrappedKey, default_backend,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::{io_error, os_random};

/// The URI scheme of local keys.
pub const SCHEME: &str = "local";
const FILE_FORMAT: u32 = 1;
const WRAP_AAD_LABEL: &[u8] = b"sealkit-local/v1/wrap";
const SEAL_AAD_LABEL: &[u8] = b"sealkit-local/v1/material";
const NONCE_LEN: usize = 12;
/// Length of a wrapped DEK: nonce, 32-byte DEK, tag.
pub(crate) const WRAPPED_LEN: usize = NONCE_LEN + 32 + 16;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// On-disk form of one key.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    format: u32,
    name: String,
    primary: u64,
    protection: Protection,
    versions: Vec<VersionFile>,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum Protection {
    /// Material stored as base64 (protected by file permissions only).
    None,
    /// Material sealed with AES-256-GCM under an argon2id key derived from a passphrase.
    Argon2idAes256Gcm {
        salt: String,
        m_cost: u32,
        t_cost: u32,
        p_cost: u32,
    },
}

#[derive(Serialize, Deserialize)]
struct VersionFile {
    version: u64,
    state: State,
    created_unix: u64,
    /// Base64 of the key (protection `none`) or of `nonce ‖ sealed key ‖ tag`; absent once
    /// destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    material: Option<String>,
}

/// The material text is key material (or sealed key material): wiped when dropped.
impl Drop for VersionFile {
    fn drop(&mut self) {
        if let Some(material) = &mut self.material {
            material.zeroize();
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum State {
    Enabled,
    Disabled,
    Destroyed,
}

impl From<State> for VersionState {
    fn from(s: State) -> Self {
        match s {
            State::Enabled => VersionState::Enabled,
            State::Disabled => VersionState::Disabled,
            State::Destroyed => VersionState::Destroyed,
        }
    }
}

/// How often a loaded key's file is checked for changes made by another process (one `stat`):
/// a rotation, a disabled or destroyed version or a deleted key is seen within this bound.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(2);

/// How long a key loaded from its file is trusted to be complete: a version it lacks is looked
/// for in the file again (an envelope under a version created by another process) at most
/// this often, so envelopes naming versions that do not exist cost no file read each.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// What identifies one state of a key file: its modification time and length.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> Self {
        Self {
            modified: meta.modified().ok(),
            len: meta.len(),
        }
    }
}

/// A key loaded into memory: AEADs prepared per enabled version.
struct LoadedKey {
    primary: u64,
    versions: BTreeMap<u64, LoadedVersion>,
    /// The file as it was read.
    stamp: FileStamp,
    /// When it was read.
    loaded_at: Instant,
    /// When the file was last found unchanged.
    checked_at: Mutex<Instant>,
}

struct LoadedVersion {
    state: State,
    created_unix: u64,
    aead: Option<Box<dyn PreparedAead>>,
}

/// A step of a key-file update, for crash tests (feature `test-util`; not API-stable).
#[cfg(feature = "test-util")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// After the temporary file was partly written.
    MidWrite,
    /// After the temporary file was written and synced, before the rename.
    BeforeRename,
}

/// Master keys as files under a directory. See the crate docs.
pub struct LocalKeyStore {
    scheme: String,
    dir: PathBuf,
    passphrase: Option<SecretString>,
    keys: RwLock<HashMap<String, Arc<LoadedKey>>>,
    write_lock: Mutex<()>,
    /// Key files read so far.
    file_reads: AtomicU64,
    #[cfg(feature = "test-util")]
    crash_point: Mutex<Option<CrashPoint>>,
}

impl std::fmt::Debug for LocalKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyStore")
            .field("dir", &self.dir)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "[REDACTED]"),
            )
            .finish_non_exhaustive()
    }
}

impl LocalKeyStore {
    /// The key store under `home` (keys live in `home/keys`). Nothing is created until the
    /// first key is: opening a store touches no file, so a keyring that never creates a local
    /// key leaves no directory behind. With a passphrase, new keys are sealed by it and
    /// existing sealed keys need it.
    pub fn open(home: impl AsRef<Path>, passphrase: Option<SecretString>) -> Result<Self> {
        Ok(Self {
            scheme: SCHEME.to_string(),
            dir: home.as_ref().join("keys"),
            passphrase,
            keys: RwLock::new(HashMap::new()),
            write_lock: Mutex::new(()),
            file_reads: AtomicU64::new(0),
            #[cfg(feature = "test-util")]
            crash_point: Mutex::new(None),
        })
    }

    /// The store from [`LocalSettings`](crate::LocalSettings).
    pub fn from_settings(settings: &crate::LocalSettings) -> Result<Self> {
        Self::open(settings.home(), settings.passphrase().cloned())
    }

    /// Creates the key directory (mode 0700) if it does not exist yet.
    fn ensure_dir(&self) -> Result<()> {
        if self.dir.is_dir() {
            return Ok(());
        }
        fs::create_dir_all(&self.dir)
            .map_err(|e| io_error("create the key directory", &self.dir, e))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_error("restrict the key directory", &self.dir, e))
    }

    /// Serves keys under another URI scheme (e.g. `local-archive://`), so that several local
    /// stores can be registered side by side in one keyring.
    pub fn with_scheme(mut self, scheme: &str) -> Result<Self> {
        KeyUri::parse(&format!("{scheme}://x"))?;
        self.scheme = scheme.to_string();
        Ok(self)
    }

    /// The directory holding the key files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Key files read so far (each read may run argon2id for a sealed store).
    pub fn file_reads(&self) -> u64 {
        self.file_reads.load(Ordering::Relaxed)
    }

    /// Makes the next key-file write stop at `point` and fail, as a crash would (feature
    /// `test-util`; not API-stable).
    #[cfg(feature = "test-util")]
    pub fn inject_crash(&self, point: CrashPoint) {
        *self.crash_point.lock().unwrap_or_else(|e| e.into_inner()) = Some(point);
    }

    fn name_of<'k>(&self, key: &'k KeyUri) -> Result<&'k str> {
        if key.scheme() != self.scheme {
            return Err(Error::invalid_input(format!(
                "{key} is not a {}:// key",
                self.scheme
            )));
        }
        let name = key.path();
        let valid = name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !name.starts_with('.');
        if valid {
            Ok(name)
        } else {
            Err(Error::invalid_input(format!(
                "local key name {name:?} must be 1 to 128 letters, digits, '-', '_' or '.', not starting with '.'"
            )))
        }
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    fn read_file(&self, name: &str) -> Result<KeyFile> {
        let path = self.path_of(name);
        let text = match fs::read(&path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(
                    "local",
                    format!(
                        "key local://{name} (no file {}); create it with `sealkit keys create local://{name}`",
                        path.display()
                    ),
                ));
            }
            Err(e) => return Err(io_error("read", &path, e)),
        };
        let file: KeyFile = serde_json::from_slice(&text).map_err(|e| {
            Error::misconfigured(format!(
                "key file {} is corrupt ({e}); restore it from backup",
                path.display()
            ))
        })?;
        if file.format != FILE_FORMAT || file.name != name {
            return Err(Error::misconfigured(format!(
                "key file {} has format {} and name {:?}; expected format {FILE_FORMAT} and name {name:?}",
                path.display(),
                file.format,
                file.name
            )));
        }
        Ok(file)
    }

    fn material_key(&self, protection: &Protection) -> Result<Option<Box<dyn PreparedAead>>> {
        match protection {
            Protection::None => Ok(None),
            Protection::Argon2idAes256Gcm {
                salt,
                m_cost,
                t_cost,
                p_cost,
            } => {
                let passphrase = self.passphrase.as_ref().ok_or_else(|| {
                    Error::misconfigured(
                        "the local key store is sealed by a passphrase; set SEALKIT_PASSPHRASE",
                    )
                })?;
                let salt = b64()
                    .decode(salt)
                    .map_err(|_| Error::misconfigured("corrupt key file salt"))?;
                let params = argon2::Params::new(*m_cost, *t_cost, *p_cost, Some(32))
                    .map_err(|e| Error::misconfigured(format!("bad argon2 parameters: {e}")))?;
                let argon = argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    params,
                );
                let mut key = Zeroizing::new([0u8; 32]);
                argon
                    .hash_password_into(passphrase.expose_secret().as_bytes(), &salt, key.as_mut())
                    .map_err(|e| Error::misconfigured(format!("argon2 failed: {e}")))?;
                Ok(Some(default_backend().prepare(Algorithm::Aes256Gcm, &key)?))
            }
        }
    }

    fn decode_material(
        name: &str,
        version: u64,
        text: &str,
        sealer: Option<&dyn PreparedAead>,
    ) -> Result<Zeroizing<[u8; 32]>> {
        let corrupt = || {
            Error::misconfigured(format!(
                "key material of local://{name}#v{version} is corrupt; restore the key file from backup"
            ))
        };
        let raw = Zeroizing::new(b64().decode(text).map_err(|_| corrupt())?);
        let mut key = Zeroizing::new([0u8; 32]);
        match sealer {
            None => {
                if raw.len() != 32 {
                    return Err(corrupt());
                }
                key.copy_from_slice(&raw);
            }
            Some(aead) => {
                if raw.len() != WRAPPED_LEN {
                    return Err(corrupt());
                }
                let mut buf = Zeroizing::new(raw[NONCE_LEN..NONCE_LEN + 32].to_vec());
                let tag: [u8; 16] = raw[NONCE_LEN + 32..].try_into().map_err(|_| corrupt())?;
                aead.open_in_place(
                    &raw[..NONCE_LEN],
                    &material_aad(name, version),
                    &mut buf,
                    &tag,
                )
                .map_err(|_| {
                    Error::permission_denied(
                        "local",
                        format!("wrong passphrase for local://{name} (SEALKIT_PASSPHRASE)"),
                    )
                })?;
                key.copy_from_slice(&buf);
            }
        }
        Ok(key)
    }

    fn load(&self, name: &str) -> Result<Arc<LoadedKey>> {
        self.file_reads.fetch_add(1, Ordering::Relaxed);
        let stamp = fs::metadata(self.path_of(name))
            .map(|m| FileStamp::of(&m))
            .ok();
        let file = self.read_file(name)?;
        let sealer = self.material_key(&file.protection)?;
        let mut versions = BTreeMap::new();
        for v in &file.versions {
            let aead = match (&v.material, v.state) {
                (Some(text), State::Enabled | State::Disabled) => {
                    let key = Self::decode_material(name, v.version, text, sealer.as_deref())?;
                    Some(default_backend().prepare(Algorithm::Aes256Gcm, &key)?)
                }
                _ => None,
            };
            versions.insert(
                v.version,
                LoadedVersion {
                    state: v.state,
                    created_unix: v.created_unix,
                    aead,
                },
            );
        }
        let now = Instant::now();
        let loaded = Arc::new(LoadedKey {
            primary: file.primary,
            versions,
            stamp: stamp.unwrap_or(FileStamp {
                modified: None,
                len: 0,
            }),
            loaded_at: now,
            checked_at: Mutex::new(now),
        });
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), loaded.clone());
        Ok(loaded)
    }

    /// The key as loaded, re-read when its file changed (checked at most every
    /// [`RECHECK_INTERVAL`], with one `stat`) or is gone.
    fn loaded(&self, name: &str) -> Result<Arc<LoadedKey>> {
        let cached = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        let Some(key) = cached else {
            return self.load(name);
        };
        let mut checked = key.checked_at.lock().unwrap_or_else(|e| e.into_inner());
        if checked.elapsed() < RECHECK_INTERVAL {
            return Ok(key.clone());
        }
        match fs::metadata(self.path_of(name)) {
            Ok(meta) if FileStamp::of(&meta) == key.stamp => {
                *checked = Instant::now();
                Ok(key.clone())
            }
            Ok(_) => {
                drop(checked);
                self.load(name)
            }
            Err(_) => {
                drop(checked);
                self.forget(name);
                self.load(name)
            }
        }
    }

    /// Whether the key file may hold more than `loaded` (an envelope names a version it lacks or
    /// holds disabled): its stamp changed, or — for a change within the file system's timestamp
    /// granularity — it was read over [`NEGATIVE_TTL`] ago. Envelopes naming versions that do
    /// not exist thus cost a `stat`, not a file read (and argon2id) each.
    fn changed_since(&self, name: &str, loaded: &LoadedKey) -> bool {
        let stamp = fs::metadata(self.path_of(name)).map(|m| FileStamp::of(&m));
        stamp.map_or(true, |s| s != loaded.stamp) || loaded.loaded_at.elapsed() >= NEGATIVE_TTL
    }

    /// Writes a key file atomically: temporary file (0600), fsync, rename, fsync directory.
    fn write_file(&self, file: &KeyFile) -> Result<()> {
        let path = self.path_of(&file.name);
        let tmp = self
            .dir
            .join(format!(".{}.json.tmp-{}", file.name, std::process::id()));
        let bytes = Zeroizing::new(
            serde_json::to_vec_pretty(file)
                .map_err(|e| Error::other("local", "encoding a key file").with_source(e))?,
        );
        #[cfg(feature = "test-util")]
        let crash = self
            .crash_point
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_error("create", &tmp, e))?;
        #[cfg(feature = "test-util")]
        if crash == Some(CrashPoint::MidWrite) {
            let _ = out.write_all(&bytes[..bytes.len() / 2]);
            return Err(Error::unavailable("local", "simulated crash mid-write"));
        }
        out.write_all(&bytes)
            .and_then(|()| out.sync_all())
            .map_err(|e| io_error("write", &tmp, e))?;
        drop(out);
        #[cfg(feature = "test-util")]
        if crash == Some(CrashPoint::BeforeRename) {
            return Err(Error::unavailable("local", "simulated crash before rename"));
        }
        fs::rename(&tmp, &path).map_err(|e| io_error("replace", &path, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("sync", &self.dir, e))?;
        Ok(())
    }

    /// Runs `f` under the in-process lock and an exclusive file lock on the key directory, so
    /// that no two threads or processes interleave key-file changes (creates included).
    fn locked<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.ensure_dir()?;
        let lock_path = self.dir.join(".lock");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io_error("open", &lock_path, e))?;
        lock.lock().map_err(|e| io_error("lock", &lock_path, e))?;
        f()
    }

    /// Runs a read-modify-write of a key file under [`Self::locked`].
    fn update<T>(&self, name: &str, f: impl FnOnce(&mut KeyFile) -> Result<T>) -> Result<T> {
        self.locked(|| {
            let mut file = self.read_file(name)?;
            let out = f(&mut file)?;
            self.write_file(&file)?;
            self.load(name)?;
            Ok(out)
        })
    }

    /// Forgets a key loaded into memory.
    fn forget(&self, name: &str) {
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Creates a key file; the caller holds [`Self::locked`].
    fn create_locked(&self, key: &KeyUri, name: &str) -> Result<KeyMetadata> {
        if self.path_of(name).exists() {
            return Err(Error::already_exists(
                "local",
                format!("key {key} (use `sealkit keys rotate` to add a version)"),
            ));
        }
        let protection = match &self.passphrase {
            None => Protection::None,
            Some(_) => {
                let mut salt = [0u8; 16];
                os_random(&mut salt)?;
                Protection::Argon2idAes256Gcm {
                    salt: b64().encode(salt),
                    m_cost: 19_456,
                    t_cost: 2,
                    p_cost: 1,
                }
            }
        };
        let material = self.new_material(name, 1, &protection)?;
        let file = KeyFile {
            format: FILE_FORMAT,
            name: name.to_string(),
            primary: 1,
            protection,
            versions: vec![VersionFile {
                version: 1,
                state: State::Enabled,
                created_unix: now_unix(),
                material: Some(material),
            }],
        };
        self.write_file(&file)?;
        let loaded = self.load(name)?;
        tracing::info!(key = %key, "local key created");
        Ok(Self::metadata(key, &loaded))
    }

    fn new_material(&self, name: &str, version: u64, protection: &Protection) -> Result<String> {
        let mut key = Zeroizing::new([0u8; 32]);
        os_random(key.as_mut())?;
        match self.material_key(protection)? {
            None => Ok(b64().encode(key.as_ref())),
            Some(aead) => {
                let mut out = Zeroizing::new(vec![0u8; NONCE_LEN]);
                os_random(&mut out)?;
                out.extend_from_slice(key.as_ref());
                let (nonce, body) = out.split_at_mut(NONCE_LEN);
                let tag = aead.seal_in_place(nonce, &material_aad(name, version), body)?;
                out.extend_from_slice(&tag);
                Ok(b64().encode(&out))
            }
        }
    }

    fn version_aead<'a>(
        &self,
        key: &'a LoadedKey,
        name: &str,
        version: u64,
    ) -> Result<&'a dyn PreparedAead> {
        let v = key.versions.get(&version).ok_or_else(|| {
            Error::not_found("local", format!("key version local://{name}#v{version}"))
        })?;
        match (v.state, &v.aead) {
            (State::Enabled, Some(aead)) => Ok(aead.as_ref()),
            (State::Destroyed, _) | (_, None) => Err(Error::key_disabled(format!(
                "local://{name}#v{version} (destroyed)"
            ))),
            (State::Disabled, _) => Err(Error::key_disabled(format!("local://{name}#v{version}"))),
        }
    }

    fn metadata(uri: &KeyUri, key: &LoadedKey) -> KeyMetadata {
        KeyMetadata::new(
            uri.clone(),
            KeyVersion::number(key.primary),
            key.versions
                .iter()
                .map(|(n, v)| {
                    KeyVersionInfo::new(
                        KeyVersion::number(*n),
                        v.state.into(),
                        Some(v.created_unix),
                    )
                })
                .collect(),
        )
    }
}

fn material_aad(name: &str, version: u64) -> Vec<u8> {
    let mut aad = SEAL_AAD_LABEL.to_vec();
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

fn wrap_aad(name: &str, version: u64, context: &EncryptionContext) -> Vec<u8> {
    let mut aad = WRAP_AAD_LABEL.to_vec();
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad.extend_from_slice(context.canonical_bytes());
    aad
}

fn parse_version(version: &KeyVersion, key: &KeyRef) -> Result<u64> {
    version.as_number().ok_or_else(|| {
        Error::not_found(
            "local",
            format!("key version {key} (local versions are numbers)"),
        )
    })
}

#[async_trait]
impl KeyEncryption for LocalKeyStore {
    fn scheme(&self) -> &str {
        &self.scheme
    }

    async fn generate_data_key(
        &self,
        key: &KeyUri,
        context: &EncryptionContext,
    ) -> Result<GeneratedDataKey> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        os_random(bytes.as_mut())?;
        let dek = DataKey::from_bytes(*bytes);
        let wrapped = self.wrap(key, &dek, context).await?;
        Ok(GeneratedDataKey::new(dek, wrapped))
    }

    async fn wrap(
        &self,
        key: &KeyUri,
        dek: &DataKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        let name = self.name_of(key)?;
        let loaded = self.loaded(name)?;
        let version = loaded.primary;
        let aead = self.version_aead(&loaded, name, version)?;
        let mut out = vec![0u8; NONCE_LEN];
        os_random(&mut out)?;
        out.extend_from_slice(dek.expose());
        let (nonce, body) = out.split_at_mut(NONCE_LEN);
        let tag = aead.seal_in_place(nonce, &wrap_aad(name, version, context), body)?;
        out.extend_from_slice(&tag);
        Ok(WrappedKey::new(
            KeyRef::new(key.clone(), KeyVersion::number(version)),
            out,
        ))
    }

    async fn unwrap(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<DataKey> {
        let name = self.name_of(&wrapped.key.uri)?;
        let version = parse_version(&wrapped.key.version, &wrapped.key)?;
        let mut loaded = self.loaded(name)?;
        let usable = loaded
            .versions
            .get(&version)
            .is_some_and(|v| v.state == State::Enabled);
        if !usable && self.changed_since(name, &loaded) {
            // Rotated or re-enabled by another process: read the key again.
            loaded = self.load(name)?;
        }
        let aead = self.version_aead(&loaded, name, version)?;
        if wrapped.bytes.len() != WRAPPED_LEN {
            return Err(Error::InvalidCiphertext);
        }
        let bytes = &wrapped.bytes;
        let mut buf = Zeroizing::new(bytes[NONCE_LEN..NONCE_LEN + 32].to_vec());
        let tag: [u8; 16] = bytes[NONCE_LEN + 32..]
            .try_into()
            .map_err(|_| Error::InvalidCiphertext)?;
        aead.open_in_place(
            &bytes[..NONCE_LEN],
            &wrap_aad(name, version, context),
            &mut buf,
            &tag,
        )?;
        DataKey::from_slice(&buf)
    }

    async fn key_metadata(&self, key: &KeyUri) -> Result<KeyMetadata> {
        let name = self.name_of(key)?;
        let loaded = self.load(name)?;
        Ok(Self::metadata(key, &loaded))
    }

    /// Forgets every key loaded into memory: the next use reads its file again.
    fn refresh(&self) {
        self.keys.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[async_trait]
impl KeyAdmin for LocalKeyStore {
    fn scheme(&self) -> &str {
        &self.scheme
    }

    async fn create_key(&self, key: &KeyUri) -> Result<KeyMetadata> {
        let name = self.name_of(key)?;
        self.locked(|| self.create_locked(key, name))
    }

    async fn list_keys(&self, prefix: Option<&str>) -> Result<Vec<KeyUri>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("list", &self.dir, e)),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &self.dir, e))?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if name.starts_with('.') || !prefix.is_none_or(|p| name.starts_with(p)) {
                continue;
            }
            keys.push(KeyUri::parse(&format!("{}://{name}", self.scheme))?);
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete_key(&self, key: &KeyUri) -> Result<Option<u64>> {
        let name = self.name_of(key)?;
        self.locked(|| {
            let path = self.path_of(name);
            self.read_file(name)?;
            fs::remove_file(&path).map_err(|e| io_error("delete", &path, e))?;
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("sync", &self.dir, e))?;
            self.forget(name);
            Ok(())
        })?;
        tracing::warn!(key = %key, "local key deleted");
        Ok(None)
    }

    async fn rotate_key(&self, key: &KeyUri) -> Result<KeyVersion> {
        let name = self.name_of(key)?;
        let version = self.update(name, |file| {
            let next = file.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
            let material = self.new_material(name, next, &file.protection)?;
            file.versions.push(VersionFile {
                version: next,
                state: State::Enabled,
                created_unix: now_unix(),
                material: Some(material),
            });
            file.primary = next;
            Ok(next)
        })?;
        tracing::info!(key = %key, version, "local key rotated");
        Ok(KeyVersion::number(version))
    }

    async fn list_versions(&self, key: &KeyUri) -> Result<Vec<KeyVersionInfo>> {
        Ok(self.key_metadata(key).await?.versions)
    }

    async fn set_version_state(
        &self,
        key: &KeyUri,
        version: &KeyVersion,
        state: VersionState,
    ) -> Result<()> {
        let name = self.name_of(key)?;
        let key_ref = KeyRef::new(key.clone(), version.clone());
        let number = parse_version(version, &key_ref)?;
        self.update(name, |file| {
            refuse_retiring_primary(&key_ref, file.primary == number, state)?;
            let v = file
                .versions
                .iter_mut()
                .find(|v| v.version == number)
                .ok_or_else(|| version_not_found("local", &key_ref))?;
            v.state = match (v.state, state) {
                (State::Destroyed, VersionState::Destroyed) => State::Destroyed,
                (State::Destroyed, _) => {
                    return Err(Error::invalid_input(format!(
                        "{key_ref} was destroyed and cannot change state"
                    )));
                }
                (_, VersionState::Enabled) => State::Enabled,
                (_, VersionState::Disabled) => State::Disabled,
                (_, VersionState::Destroyed) => {
                    v.material = None;
                    State::Destroyed
                }
                (_, _) => return Err(Error::invalid_input("unknown version state")),
            };
            Ok(())
        })?;
        tracing::info!(key = %key_ref, state = state.as_str(), "local key version state changed");
        Ok(())
    }
}
