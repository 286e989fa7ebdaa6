//! Where jobs read and write, split the way sqlx splits drivers: a [`Store`] is a database
//! driver (SQLite, PostgreSQL, each behind its feature) that binds a [`JobSpec`] once and
//! hands back a [`JobStore`]: the job's ledger ([`JobLedger`]: chunks, leases, notes, counts)
//! and its access to the application's table ([`JobTable`]: rows, re-reads, compare-and-swap),
//! plus the one operation that spans both — [`JobStore::commit`], which applies a chunk's
//! updates and marks it done in one transaction.

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sealkit::{Error, Result};

use crate::spec::JobSpec;

#[cfg(feature = "postgres")]
pub use postgres::PgStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// A stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Value {
    /// BLOB / BYTEA.
    Blob(Vec<u8>),
    /// TEXT (SQLite).
    Text(String),
}

impl Value {
    /// The value's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Blob(b) => b,
            Self::Text(t) => t.as_bytes(),
        }
    }
}

/// A row's primary key: an integer (walked in key ranges), or text — PostgreSQL `text`,
/// `varchar` or `uuid`, an SQLite key without integer affinity — walked in key order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RowKey {
    /// An integer key.
    Int(i64),
    /// A text key (a `uuid` in its canonical text form).
    Text(String),
}

impl std::fmt::Display for RowKey {
    /// The key as it goes into a value's context (`id`): the integer in decimal, the text as is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Int(i) => i.fmt(f),
            Self::Text(t) => f.write_str(t),
        }
    }
}

impl From<i64> for RowKey {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}

impl From<&str> for RowKey {
    fn from(t: &str) -> Self {
        Self::Text(t.to_string())
    }
}

/// One row of a chunk.
#[derive(Clone, Debug)]
pub struct Row {
    /// The primary key.
    pub pk: RowKey,
    /// The tenant, when the job has a tenant column.
    pub tenant: Option<String>,
    /// The job's columns, in order (`None` for NULL).
    pub values: Vec<Option<Value>>,
}

/// A compare-and-swap update.
#[derive(Clone, Debug)]
pub struct Update {
    /// The row.
    pub pk: RowKey,
    /// The column's index in the job.
    pub column: usize,
    /// The value read.
    pub old: Value,
    /// The value to write (bytes, or text for a column that stores ciphertexts as text).
    pub new: Value,
}

/// A claimed part of the table. With integer keys it is the key range `lo..hi`; with text
/// keys, `lo` is the chunk's number and [`Chunk::keys`] the key range it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// First key (integer keys), or the chunk's number (text keys).
    pub lo: i64,
    /// One past the last key (integer keys), or the chunk's number plus one (text keys).
    pub hi: i64,
    /// For text keys, the keys the chunk covers.
    pub keys: Option<KeyRange>,
}

/// The text keys a chunk covers, in the database's order for the key column: from `from`
/// (inclusive) up to `to` (exclusive); `None` leaves that end open, so the first and last
/// chunks also cover keys inserted below or above every key the job saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// The first key, or `None` for the start of the table.
    pub from: Option<RowKey>,
    /// The key after the last, or `None` for the end of the table.
    pub to: Option<RowKey>,
}

impl Chunk {
    /// A chunk of integer keys, `lo..hi`.
    pub fn ints(lo: i64, hi: i64) -> Self {
        Self { lo, hi, keys: None }
    }
}

impl std::fmt::Display for Chunk {
    /// `keys 1000..2000`, or for text keys `keys from "a1" to "c7"` (`start` and `end` for
    /// open ends).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.keys {
            None => write!(f, "keys {}..{}", self.lo, self.hi),
            Some(range) => {
                let end = |k: &Option<RowKey>, open: &str| {
                    k.as_ref()
                        .map_or_else(|| open.to_string(), |k| format!("{:?}", k.to_string()))
                };
                write!(
                    f,
                    "keys from {} to {}",
                    end(&range.from, "start"),
                    end(&range.to, "end")
                )
            }
        }
    }
}

/// Chunk and row counts of a job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Chunks not yet claimed.
    pub pending: i64,
    /// Chunks claimed and not finished.
    pub running: i64,
    /// Chunks finished.
    pub done: i64,
    /// Values rewritten.
    pub migrated: i64,
    /// Values already under the target.
    pub skipped: i64,
    /// Compare-and-swap conflicts (values the application changed meanwhile).
    pub conflicts: i64,
    /// Values that could not be converted (wrong key, corrupt).
    pub failed: i64,
    /// Why the job is paused, if it is.
    pub note: Option<String>,
    /// The chunks claimed and not finished, with who holds them.
    pub held: Vec<HeldChunk>,
}

/// A chunk a worker holds (claimed, not finished).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeldChunk {
    /// The chunk.
    pub chunk: Chunk,
    /// The worker holding it.
    pub worker: String,
    /// Seconds since it was claimed (or its lease last renewed).
    pub held_secs: i64,
    /// Seconds until its lease expires and another worker may take it over (negative once
    /// expired).
    pub lease_left_secs: i64,
}

impl HeldChunk {
    /// A held chunk from its ledger row.
    pub(crate) fn from_lease(
        chunk: Chunk,
        worker: Option<String>,
        lease_until: i64,
        lease_secs: i64,
    ) -> Self {
        let now = now();
        Self {
            chunk,
            worker: worker.unwrap_or_default(),
            held_secs: now - (lease_until - lease_secs),
            lease_left_secs: lease_until - now,
        }
    }
}

/// Per-chunk outcome, recorded with the chunk.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct ChunkCounts {
    /// Values rewritten.
    pub migrated: i64,
    /// Values already under the target.
    pub skipped: i64,
    /// Compare-and-swap conflicts.
    pub conflicts: i64,
    /// Values not converted.
    pub failed: i64,
    /// Rows the chunk held when it was processed (recorded; `None` leaves the record as is).
    pub seen: Option<i64>,
}

/// A database driver: binds job specs to the database it is connected to.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The job `spec` on this database (no I/O: the job's tables are created by
    /// [`JobLedger::prepare`]).
    fn bind(&self, spec: &JobSpec) -> Arc<dyn JobStore>;

    /// The spec job `job` was recorded with, if the database has such a job (see
    /// [`JobSpec::recorded`]).
    async fn recorded_spec(&self, job: &str) -> Result<Option<JobSpec>>;
}

/// A job's bookkeeping: its chunks, their leases, the job's note and counts.
#[async_trait]
pub trait JobLedger: Send + Sync + std::fmt::Debug {
    /// Creates the state tables and the job's chunks (idempotent; refuses another spec under
    /// the same job name).
    async fn prepare(&self) -> Result<()>;
    /// Claims the next chunk for `worker`, chunking rows appended since the job started.
    async fn claim(&self, worker: &str) -> Result<Option<Chunk>>;
    /// Adds to a finished chunk's counts (conflicts resolved after its commit).
    async fn add_counts(&self, chunk: &Chunk, counts: ChunkCounts) -> Result<()>;
    /// Gives a chunk back (after a provider outage).
    async fn release(&self, chunk: &Chunk) -> Result<()>;
    /// Puts every finished chunk back to pending, for a sweep that catches values written in
    /// the old format after their chunk was done.
    async fn reopen(&self) -> Result<u64>;
    /// Sets or clears the job's note (why it is paused).
    async fn set_note(&self, note: Option<&str>) -> Result<()>;
    /// The job's counts; [`Error::NotFound`] for a job the database has no record of.
    async fn counts(&self) -> Result<Counts>;
    /// The done chunks whose row count is recorded, in ledger order, with that count.
    async fn seen_chunks(&self) -> Result<Vec<(Chunk, i64)>>;
}

/// The job's access to the application's table.
#[async_trait]
pub trait JobTable: Send + Sync {
    /// The chunk's rows, in key order.
    async fn rows(&self, chunk: &Chunk) -> Result<Vec<Row>>;
    /// Re-reads one row (`None` if it is gone).
    async fn row(&self, pk: &RowKey) -> Result<Option<Row>>;
    /// One compare-and-swap, outside a chunk; true if it took effect.
    async fn swap(&self, update: &Update) -> Result<bool>;
    /// Up to `limit` rows with a key above `after` (from the first row if `None`), in key
    /// order, for plan and verify.
    async fn scan(&self, after: Option<&RowKey>, limit: i64) -> Result<Vec<Row>>;
    /// Rows in the table (for progress).
    async fn count_rows(&self) -> Result<i64>;
    /// Rows in the table that fall in `chunk`'s keys now.
    async fn count_in(&self, chunk: &Chunk) -> Result<i64>;
}

/// A job bound to a database: its ledger and its table, and the commit that spans both.
#[async_trait]
pub trait JobStore: JobLedger + JobTable {
    /// Applies the updates with compare-and-swap and marks the chunk done, in one transaction;
    /// returns the updates that lost the compare-and-swap.
    async fn commit(
        &self,
        chunk: &Chunk,
        updates: &[Update],
        counts: ChunkCounts,
    ) -> Result<Vec<Update>>;
}

/// Opens the store a `--db` argument names: a `postgres://` URL (feature `postgres`) or an
/// SQLite path, optionally `sqlite:PATH` (feature `sqlite`).
pub async fn open_store(db: &str) -> Result<Arc<dyn Store>> {
    open_store_with_password(db, None).await
}

/// Opens the store as [`open_store`] does; a PostgreSQL database is signed in to with
/// `password` (an SQLite file has none: a password for one is refused).
pub async fn open_store_with_password(db: &str, password: Option<&[u8]>) -> Result<Arc<dyn Store>> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Arc::new(
            PgStore::connect_with_password(db, password).await?,
        ));
        #[cfg(not(feature = "postgres"))]
        return Err(Error::misconfigured(
            "PostgreSQL databases need sealkit-migrate's `postgres` feature",
        ));
    }
    if password.is_some() {
        return Err(Error::invalid_input(format!(
            "{db:?} is an SQLite database, which takes no password; a password is for postgres:// URLs"
        )));
    }
    #[cfg(feature = "sqlite")]
    return Ok(Arc::new(SqliteStore::open(
        db.strip_prefix("sqlite:").unwrap_or(db),
    )?));
    #[cfg(not(feature = "sqlite"))]
    Err(Error::misconfigured(format!(
        "{db:?} is not a postgres:// URL, and SQLite databases need sealkit-migrate's `sqlite` feature"
    )))
}

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn db_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::unavailable("database", format!("{what}: {e}"))
}

/// The error for a job the database has no record of.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn unknown_job(job: &str) -> Error {
    Error::not_found(
        "database",
        format!("migration job {job:?} (check the name, or start it with `sealkit migrate run`)"),
    )
}

/// The SQL condition that selects `chunk`'s rows by the key column `pk`, with the keys to
/// bind in order; `param(n)` writes the `n`th placeholder (1-based). An open end of a text
/// chunk adds no condition, so the first and last chunks cover keys below and above all the
/// job saw.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn chunk_condition(
    pk: &str,
    chunk: &Chunk,
    param: impl Fn(usize) -> String,
) -> (String, Vec<RowKey>) {
    let (from, to) = match &chunk.keys {
        None => (Some(RowKey::Int(chunk.lo)), Some(RowKey::Int(chunk.hi))),
        Some(range) => (range.from.clone(), range.to.clone()),
    };
    let mut conditions = Vec::new();
    let mut keys = Vec::new();
    if let Some(from) = from {
        keys.push(from);
        conditions.push(format!("{pk} >= {}", param(keys.len())));
    }
    if let Some(to) = to {
        keys.push(to);
        conditions.push(format!("{pk} < {}", param(keys.len())));
    }
    if conditions.is_empty() {
        conditions.push("1 = 1".into());
    }
    (conditions.join(" AND "), keys)
}

/// Text-key chunks from the keys that start each chunk after the first (every
/// `chunk_rows`th key in key order): `(number, from, to)`, the first open below, the last
/// open above.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn text_chunks(starts: Vec<RowKey>) -> Vec<(i64, Option<RowKey>, Option<RowKey>)> {
    let mut bounds: Vec<Option<RowKey>> = Vec::with_capacity(starts.len() + 2);
    bounds.push(None);
    bounds.extend(starts.into_iter().map(Some));
    bounds.push(None);
    bounds
        .windows(2)
        .enumerate()
        .map(|(i, w)| (i as i64, w[0].clone(), w[1].clone()))
        .collect()
}

/// The chunk size a job's first chunk starts at: `min` rounded down to a chunk boundary.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn first_chunk_start(min: i64, spec: &JobSpec) -> i64 {
    min - min.rem_euclid(spec.chunk_rows)
}
