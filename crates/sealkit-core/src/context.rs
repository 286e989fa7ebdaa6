//! The canonical encryption context: what a ciphertext belongs to.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::{Error, Result};

/// The caller's statement of what a ciphertext belongs to — for example table, column, row id
/// and tenant — bound to the ciphertext as associated data.
///
/// Opening with a different context fails. A context is a set of unique, non-empty UTF-8 keys
/// with UTF-8 values; the order in which pairs are added does not matter. Its canonical byte
/// encoding (see [`EncryptionContext::canonical_bytes`]) sorts keys by their bytes and
/// length-prefixes every field, so two different contexts never encode alike.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EncryptionContext {
    pairs: BTreeMap<String, String>,
    encoded: Vec<u8>,
}

impl EncryptionContext {
    /// Most pairs in one context.
    pub const MAX_PAIRS: usize = 64;
    /// Longest key, in bytes.
    pub const MAX_KEY_LEN: usize = 255;
    /// Longest value, in bytes.
    pub const MAX_VALUE_LEN: usize = 65_535;

    /// Starts a context.
    pub fn builder() -> ContextBuilder {
        ContextBuilder::default()
    }

    /// Builds a context from pairs.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        let mut builder = Self::builder();
        for (k, v) in pairs {
            builder = builder.with(k.as_ref(), v.as_ref());
        }
        builder.build()
    }

    /// Parses `k=v,k=v` (the CLI's `--context` syntax). Values may not contain `,`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut builder = Self::builder();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(Error::invalid_input(alloc::format!(
                    "context entry {part:?} is not KEY=VALUE; write e.g. table=customers,column=email,id=42"
                )));
            };
            builder = builder.with(k.trim(), v.trim());
        }
        builder.build()
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.get(key).map(String::as_str)
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Always false: a context has at least one pair.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The sub-context made of the listed keys that are present (at least one must be), used
    /// to bind a data key shared by many messages to what they have in common.
    pub fn project(&self, keys: &[&str]) -> Option<Self> {
        let pairs: BTreeMap<String, String> = self
            .pairs
            .iter()
            .filter(|(k, _)| keys.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if pairs.is_empty() {
            return None;
        }
        let encoded = encode(&pairs);
        Some(Self { pairs, encoded })
    }

    /// The canonical encoding bound as associated data:
    /// `u16 count ‖ (u8 key_len ‖ key ‖ u16 value_len ‖ value)*`, big-endian lengths, pairs in
    /// ascending byte order of their keys.
    pub fn canonical_bytes(&self) -> &[u8] {
        &self.encoded
    }
}

fn encode(pairs: &BTreeMap<String, String>) -> Vec<u8> {
    let size = 2 + pairs
        .iter()
        .map(|(k, v)| 3 + k.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u16).to_be_bytes());
    for (k, v) in pairs {
        out.push(k.len() as u8);
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

impl fmt::Display for EncryptionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for EncryptionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.pairs.iter()).finish()
    }
}

/// Builds an [`EncryptionContext`]; errors are reported by [`ContextBuilder::build`].
#[derive(Debug, Default, Clone)]
pub struct ContextBuilder {
    pairs: BTreeMap<String, String>,
    error: Option<String>,
}

impl ContextBuilder {
    /// Adds a pair. A repeated key is an error.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        if self.error.is_some() {
            return self;
        }
        if key.is_empty() || key.len() > EncryptionContext::MAX_KEY_LEN {
            self.error = Some(alloc::format!("context key {key:?} must be 1 to 255 bytes"));
        } else if value.len() > EncryptionContext::MAX_VALUE_LEN {
            self.error = Some(alloc::format!(
                "context value of {key:?} exceeds 65535 bytes"
            ));
        } else if self
            .pairs
            .insert(key.to_string(), value.to_string())
            .is_some()
        {
            self.error = Some(alloc::format!("context key {key:?} appears twice"));
        } else if self.pairs.len() > EncryptionContext::MAX_PAIRS {
            self.error = Some("a context holds at most 64 pairs".to_string());
        }
        self
    }

    /// Finishes the context. An empty context is refused: binding is mandatory.
    pub fn build(self) -> Result<EncryptionContext> {
        if let Some(detail) = self.error {
            return Err(Error::invalid_input(detail));
        }
        if self.pairs.is_empty() {
            return Err(Error::invalid_input(
                "an encryption context is required: name what the data belongs to, e.g. table=customers,column=email,id=42",
            ));
        }
        let encoded = encode(&self.pairs);
        Ok(EncryptionContext {
            pairs: self.pairs,
            encoded,
        })
    }
}
