//! What a job moves.

use std::str::FromStr;

use sealkit::core::legacy::LegacyFormat;
use sealkit::{Error, KeyUri, Result};
use serde::{Deserialize, Serialize};

use crate::store::Value;

/// How a column's current values are encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceFormat {
    /// AES-256-GCM under the legacy key, in one of the raw layouts.
    Legacy(LegacyFormat),
    /// Fernet tokens under the legacy key (its 32 bytes are the Fernet key).
    Fernet,
    /// Transit ciphertexts (`vault:vN:…`) of this Transit key.
    VaultTransit(KeyUri),
    /// Unencrypted values.
    Plaintext,
    /// Sealkit envelopes: the job rewraps them to the target key.
    Envelope,
}

impl FromStr for SourceFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fernet" => Ok(Self::Fernet),
            "plaintext" => Ok(Self::Plaintext),
            "envelope" => Ok(Self::Envelope),
            _ => match s.strip_prefix("vault-transit:") {
                Some(key) => Ok(Self::VaultTransit(KeyUri::parse(&format!("vault-transit://{}", key.trim_start_matches("//")))?)),
                None => s.parse().map(Self::Legacy).map_err(|_| {
                    Error::invalid_input(format!(
                        "unknown source format {s:?}: use aes-gcm-iv16, aes-gcm-nonce12, fernet, vault-transit:MOUNT/NAME, plaintext or envelope"
                    ))
                }),
            },
        }
    }
}

impl std::fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Legacy(l) => write!(f, "{l}"),
            Self::Fernet => f.write_str("fernet"),
            Self::VaultTransit(k) => write!(f, "vault-transit:{}", k.path()),
            Self::Plaintext => f.write_str("plaintext"),
            Self::Envelope => f.write_str("envelope"),
        }
    }
}

/// How a column stores its (binary) ciphertexts: as bytes, or as text in an encoding. Migrated
/// values are written back the same way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoredEncoding {
    /// The bytes themselves (a `BLOB`/`bytea` column).
    #[default]
    Binary,
    /// Base64 (RFC 4648 §4), written padded; read padded or not.
    Base64,
    /// URL-safe base64 (RFC 4648 §5), written unpadded; read padded or not.
    Base64Url,
    /// Hexadecimal, written lower case; read in either case.
    Hex,
}

impl StoredEncoding {
    /// Whether values are text.
    pub fn is_text(self) -> bool {
        self != Self::Binary
    }

    /// The bytes a stored value holds.
    pub fn decode<'a>(self, stored: &'a Value) -> Result<std::borrow::Cow<'a, [u8]>> {
        use base64::Engine;
        use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
        let lenient =
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
        let text = || stored.bytes().trim_ascii();
        let decoded = match self {
            Self::Binary => return Ok(std::borrow::Cow::Borrowed(stored.bytes())),
            Self::Base64 => GeneralPurpose::new(&base64::alphabet::STANDARD, lenient)
                .decode(text())
                .ok(),
            Self::Base64Url => GeneralPurpose::new(&base64::alphabet::URL_SAFE, lenient)
                .decode(text())
                .ok(),
            Self::Hex => hex::decode(text()).ok(),
        };
        decoded.map(std::borrow::Cow::Owned).ok_or_else(|| {
            Error::invalid_input(format!(
                "the stored value is not {self} text (the column is declared @{self})"
            ))
        })
    }

    /// The stored form of `bytes`.
    pub fn encode(self, bytes: Vec<u8>) -> Value {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        match self {
            Self::Binary => Value::Blob(bytes),
            Self::Base64 => Value::Text(STANDARD.encode(bytes)),
            Self::Base64Url => Value::Text(URL_SAFE_NO_PAD.encode(bytes)),
            Self::Hex => Value::Text(hex::encode(bytes)),
        }
    }
}

impl FromStr for StoredEncoding {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "binary" => Ok(Self::Binary),
            "base64" => Ok(Self::Base64),
            "base64url" => Ok(Self::Base64Url),
            "hex" => Ok(Self::Hex),
            _ => Err(Error::invalid_input(format!(
                "unknown stored encoding {s:?}: use base64, base64url, hex (or binary, the default)"
            ))),
        }
    }
}

impl std::fmt::Display for StoredEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Binary => "binary",
            Self::Base64 => "base64",
            Self::Base64Url => "base64url",
            Self::Hex => "hex",
        })
    }
}

/// One column of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ColumnSpec {
    /// The column name.
    pub name: String,
    /// How its values are encrypted now.
    pub source: SourceFormat,
    /// How it stores them (bytes, or text in an encoding).
    pub encoding: StoredEncoding,
}

impl ColumnSpec {
    /// Column `name`, holding `source` values as bytes.
    pub fn new(name: &str, source: SourceFormat) -> Result<Self> {
        Ok(Self {
            name: identifier(name)?,
            source,
            encoding: StoredEncoding::Binary,
        })
    }

    /// The same column, its values stored as text in `encoding`.
    pub fn stored_as(mut self, encoding: StoredEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// `FORMAT` or `FORMAT@ENCODING`, as given on the command line and recorded with the job.
    fn format_text(&self) -> String {
        match self.encoding {
            StoredEncoding::Binary => self.source.to_string(),
            encoding => format!("{}@{encoding}", self.source),
        }
    }
}

impl FromStr for ColumnSpec {
    type Err = Error;
    /// `NAME=FORMAT[@ENCODING]`, e.g. `email=aes-gcm-iv16` or `email=aes-gcm-iv16@base64`.
    fn from_str(s: &str) -> Result<Self> {
        let (name, format) = s.split_once('=').ok_or_else(|| {
            Error::invalid_input(format!(
                "column {s:?} must be NAME=FORMAT[@ENCODING], e.g. email=aes-gcm-iv16 or email=aes-gcm-iv16@base64"
            ))
        })?;
        let (source, encoding) = match format.rsplit_once('@') {
            Some((source, encoding)) => (source, encoding.parse()?),
            None => (format, StoredEncoding::Binary),
        };
        Ok(Self::new(name, source.parse()?)?.stored_as(encoding))
    }
}

/// A job: which rows, which columns, to which key.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    /// The job's name (several jobs can share a database).
    pub job: String,
    /// The table.
    pub table: String,
    /// Its primary key column (integer, text or uuid).
    pub pk: String,
    /// The columns to move.
    pub columns: Vec<ColumnSpec>,
    /// A column whose value joins the context as `tenant`, if any.
    pub tenant_column: Option<String>,
    /// The key every value ends up under (its primary version).
    pub target: KeyUri,
    /// Primary-key values per chunk.
    pub chunk_rows: i64,
    /// Largest number of KMS calls per second the job may cause (none: unlimited).
    pub kms_calls_per_sec: Option<f64>,
    /// Seconds a claimed chunk stays leased to its worker.
    pub lease_secs: i64,
    /// Open and seal envelopes again under fresh DEKs instead of rewrapping their DEKs (after
    /// a key compromise, when the old DEKs must be assumed exposed).
    pub reseal: bool,
    /// Seal `plaintext` columns' values even when they look like ciphertexts (Fernet tokens,
    /// `vault:v…`): without it such values are refused, not sealed as if they were data.
    pub force_plaintext: bool,
    /// The envelope layout every value ends up in: `Some(Compact)` converts full envelopes
    /// to compact ones (their DEKs in the keyring's DEK store), `Some(Full)` the reverse (the
    /// self-contained export format). `None` keeps each envelope's layout (compact ones are
    /// rotated in the DEK store, `sealkit deks rewrap`) and seals new ones as the keyring is
    /// configured.
    pub layout: Option<sealkit::Layout>,
}

/// The stored form of a spec, to refuse resuming a job with a different one.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
#[derive(Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct StoredSpec {
    table: String,
    pk: String,
    columns: Vec<(String, String)>,
    tenant_column: Option<String>,
    target: String,
}

impl JobSpec {
    /// A job with default chunking (1,000 keys), no rate limit and a 60-second lease.
    pub fn new(
        job: &str,
        table: &str,
        pk: &str,
        columns: Vec<ColumnSpec>,
        target: KeyUri,
    ) -> Result<Self> {
        if columns.is_empty() {
            return Err(Error::invalid_input("a job needs at least one column"));
        }
        Ok(Self {
            job: job.to_string(),
            table: identifier(table)?,
            pk: identifier(pk)?,
            columns,
            tenant_column: None,
            target,
            chunk_rows: 1000,
            kms_calls_per_sec: None,
            lease_secs: 60,
            reseal: false,
            force_plaintext: false,
            layout: None,
        })
    }

    /// Adds the tenant column to the context.
    pub fn with_tenant_column(mut self, column: &str) -> Result<Self> {
        self.tenant_column = Some(identifier(column)?);
        Ok(self)
    }

    /// The spec of job `job` as the database recorded it when the job started (table, key,
    /// columns, tenant column and target; chunking and the other run settings at their
    /// defaults).
    pub fn recorded(job: &str, text: &str) -> Result<Self> {
        let stored: StoredSpec = serde_json::from_str(text).map_err(|_| {
            Error::misconfigured(format!(
                "job {job}'s recorded spec is unreadable; give its --table, --column and --to"
            ))
        })?;
        let columns = stored
            .columns
            .iter()
            .map(|(name, format)| format!("{name}={format}").parse())
            .collect::<Result<Vec<ColumnSpec>>>()?;
        let mut spec = Self::new(
            job,
            &stored.table,
            &stored.pk,
            columns,
            stored.target.parse()?,
        )?;
        if let Some(tenant) = &stored.tenant_column {
            spec = spec.with_tenant_column(tenant)?;
        }
        Ok(spec)
    }

    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn stored(&self) -> String {
        let stored = StoredSpec {
            table: self.table.clone(),
            pk: self.pk.clone(),
            columns: self
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.format_text()))
                .collect(),
            tenant_column: self.tenant_column.clone(),
            target: self.target.to_string(),
        };
        serde_json::to_string(&stored).unwrap_or_default()
    }
}

/// Table and column names are written into SQL, so they must be plain identifiers.
pub(crate) fn identifier(name: &str) -> Result<String> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63;
    if ok {
        Ok(name.to_string())
    } else {
        Err(Error::invalid_input(format!(
            "{name:?} is not a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*)"
        )))
    }
}
