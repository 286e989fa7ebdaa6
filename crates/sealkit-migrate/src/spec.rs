//! What a job moves.

use std::str::FromStr;

use sealkit::core::legacy::LegacyFormat;
use sealkit::{Error, KeyUri, Result};
use serde::{Deserialize, Serialize};

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

/// One column of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSpec {
    /// The column name.
    pub name: String,
    /// How its values are encrypted now.
    pub source: SourceFormat,
}

impl FromStr for ColumnSpec {
    type Err = Error;
    /// `NAME=FORMAT`, e.g. `email=aes-gcm-iv16`.
    fn from_str(s: &str) -> Result<Self> {
        let (name, source) = s.split_once('=').ok_or_else(|| {
            Error::invalid_input(format!(
                "column {s:?} must be NAME=FORMAT, e.g. email=aes-gcm-iv16"
            ))
        })?;
        let name = identifier(name)?;
        Ok(Self {
            name,
            source: source.parse()?,
        })
    }
}

/// A job: which rows, which columns, to which key.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    /// The job's name (several jobs can share a database).
    pub job: String,
    /// The table.
    pub table: String,
    /// Its integer primary key column.
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
        })
    }

    /// Adds the tenant column to the context.
    pub fn with_tenant_column(mut self, column: &str) -> Result<Self> {
        self.tenant_column = Some(identifier(column)?);
        Ok(self)
    }

    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn stored(&self) -> String {
        let stored = StoredSpec {
            table: self.table.clone(),
            pk: self.pk.clone(),
            columns: self
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.source.to_string()))
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
