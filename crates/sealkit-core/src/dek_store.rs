//! The DEK store: where compact-layout envelopes find their data keys (definitions only; the
//! SQLite and PostgreSQL stores live in `sealkit-dekstore`).
//!
//! A compact envelope carries a 16-byte DEK id instead of the wrapped DEK. The id is derived
//! from the DEK (HKDF-SHA256, see [`DekCipher::dek_id`](crate::DekCipher::dek_id)), so a
//! store row binds itself: the wrap of one row unwraps to a DEK whose id is that row's id, and
//! any other wrap (a row swapped for another) unwraps to a key with another id, which the
//! reader refuses. The wrap's associated data is the row's scope, so an edited scope fails to
//! unwrap at the provider.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Debug;

use async_trait::async_trait;

use crate::{Algorithm, DEK_ID_LEN, KeyUri, Result, WrappedKey};

/// A DEK id: the 16 bytes a compact envelope names its data key by.
pub type DekId = [u8; DEK_ID_LEN];

/// Where a stored DEK is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DekState {
    /// New values may be sealed under it (within its message budget).
    Active,
    /// Its budget is spent (or it was replaced): it opens values, seals none.
    Retired,
    /// Its wraps are destroyed: nothing sealed under it opens again.
    Shredded,
}

impl DekState {
    /// The state's stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Shredded => "shredded",
        }
    }

    /// The state a stored name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "active" => Some(Self::Active),
            "retired" => Some(Self::Retired),
            "shredded" => Some(Self::Shredded),
            _ => None,
        }
    }
}

/// One stored DEK: never the key itself, only its wraps.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DekRecord {
    /// The DEK's id (derived from the DEK).
    pub id: DekId,
    /// The master key the DEK belongs to: new values sealed under this key use it. After a
    /// provider move it is the new key.
    pub key: KeyUri,
    /// The DEK scope the wraps are bound to, canonical text (`column=email,table=customers`).
    pub scope: String,
    /// The subject the DEK belongs to (`tenant=42`), for crypto-shredding; `None` if the scope
    /// names none.
    pub subject: Option<String>,
    /// The AEAD the DEK seals with.
    pub algorithm: Algorithm,
    /// The DEK wrapped under one or more master keys (the first under [`DekRecord::key`]);
    /// empty once shredded.
    pub wraps: Vec<WrappedKey>,
    /// When it was made, in seconds since the Unix epoch.
    pub created_unix: i64,
    /// The most messages it may seal, across every process.
    pub message_limit: u64,
    /// Messages reserved so far by sealing processes (each seals at most what it reserved).
    pub reserved: u64,
    /// Messages sealed, as processes report them (when a block is done, and when they flush
    /// on exit): at most `reserved`, and lower while blocks are in use or when a process died
    /// before it reported.
    pub used: u64,
    /// Its state.
    pub state: DekState,
}

impl DekRecord {
    /// A new active DEK with nothing reserved, no subject and creation time 0 (set the public
    /// fields for the rest).
    pub fn new(
        id: DekId,
        key: KeyUri,
        scope: String,
        algorithm: Algorithm,
        wraps: Vec<WrappedKey>,
        message_limit: u64,
    ) -> Self {
        Self {
            id,
            key,
            scope,
            subject: None,
            algorithm,
            wraps,
            created_unix: 0,
            message_limit,
            reserved: 0,
            used: 0,
            state: DekState::Active,
        }
    }
}

/// Counts of stored DEKs by master key, its version and state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DekCount {
    /// The master key.
    pub key: String,
    /// The version of the first wrap (empty once shredded).
    pub version: String,
    /// The state.
    pub state: DekState,
    /// DEKs.
    pub count: u64,
}

impl DekCount {
    /// A count of zero for `key`, `version` and `state`.
    pub fn new(key: String, version: String, state: DekState) -> Self {
        Self {
            key,
            version,
            state,
            count: 0,
        }
    }
}

/// Stored DEKs, shared by every process that seals or opens compact envelopes. Every method
/// is one atomic statement or transaction, so processes may call them at once.
#[async_trait]
pub trait DekStore: Send + Sync + Debug {
    /// Where the store is, for errors and health reports (never a password).
    fn describe(&self) -> String;

    /// Creates the store's table if it is missing.
    async fn prepare(&self) -> Result<()>;

    /// Stores a new DEK.
    async fn insert(&self, record: &DekRecord) -> Result<()>;

    /// The DEK with this id.
    async fn get(&self, id: &DekId) -> Result<Option<DekRecord>>;

    /// The newest active DEK of `key` for `scope` and `algorithm`, if any.
    async fn active(
        &self,
        key: &KeyUri,
        scope: &str,
        algorithm: Algorithm,
    ) -> Result<Option<DekRecord>>;

    /// Reserves up to `messages` of an active DEK's budget, atomically across processes;
    /// returns how many were granted (0 when its budget is spent or it is no longer active;
    /// a DEK whose budget is spent is retired by the same statement).
    async fn reserve(&self, id: &DekId, messages: u64) -> Result<u64>;

    /// Adds `messages` to a DEK's count of messages sealed (a process reporting a block's
    /// use).
    async fn record_use(&self, id: &DekId, messages: u64) -> Result<()>;

    /// Retires an active DEK (it keeps opening values).
    async fn retire(&self, id: &DekId) -> Result<()>;

    /// Replaces a DEK's wraps (and its key, the first wrap's), if they are still `expected`;
    /// returns whether they were. Used by rotations, provider moves and dual wraps.
    async fn replace_wraps(
        &self,
        id: &DekId,
        expected: &[WrappedKey],
        wraps: &[WrappedKey],
    ) -> Result<bool>;

    /// Shreds every DEK of `subject`: destroys all its wraps and marks it shredded. Returns
    /// how many DEKs were shredded.
    async fn shred(&self, subject: &str) -> Result<u64>;

    /// Up to `limit` DEKs with an id above `after` (from the first if `None`), in id order.
    async fn list(&self, after: Option<&DekId>, limit: u64) -> Result<Vec<DekRecord>>;

    /// DEK counts by key, the first wrap's version and state, in that order. The default
    /// pages through [`DekStore::list`].
    async fn stats(&self) -> Result<Vec<DekCount>> {
        let mut out: Vec<DekCount> = Vec::new();
        let mut after = None;
        loop {
            let page = self.list(after.as_ref(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for r in &page {
                let version = r
                    .wraps
                    .first()
                    .map(|w| w.key.version.to_string())
                    .unwrap_or_default();
                let key = r.key.to_string();
                match out
                    .iter_mut()
                    .find(|c| c.key == key && c.version == version && c.state == r.state)
                {
                    Some(c) => c.count += 1,
                    None => out.push(DekCount {
                        key,
                        version,
                        state: r.state,
                        count: 1,
                    }),
                }
            }
        }
        out.sort_by(|a, b| {
            (&a.key, &a.version, a.state.as_str()).cmp(&(&b.key, &b.version, b.state.as_str()))
        });
        Ok(out)
    }
}
