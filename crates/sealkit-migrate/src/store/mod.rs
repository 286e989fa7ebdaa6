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

/// One row of a chunk.
#[derive(Clone, Debug)]
pub struct Row {
    /// The primary key.
    pub pk: i64,
    /// The tenant, when the job has a tenant column.
    pub tenant: Option<String>,
    /// The job's columns, in order (`None` for NULL).
    pub values: Vec<Option<Value>>,
}

/// A compare-and-swap update.
#[derive(Clone, Debug)]
pub struct Update {
    /// The row.
    pub pk: i64,
    /// The column's index in the job.
    pub column: usize,
    /// The value read.
    pub old: Value,
    /// The value to write (bytes, or text for a column that stores ciphertexts as text).
    pub new: Value,
}

/// A claimed range of primary keys, `lo..hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// First key.
    pub lo: i64,
    /// One past the last key.
    pub hi: i64,
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
        lo: i64,
        hi: i64,
        worker: Option<String>,
        lease_until: i64,
        lease_secs: i64,
    ) -> Self {
        let now = now();
        Self {
            chunk: Chunk { lo, hi },
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
    async fn add_counts(&self, chunk: Chunk, counts: ChunkCounts) -> Result<()>;
    /// Gives a chunk back (after a provider outage).
    async fn release(&self, chunk: Chunk) -> Result<()>;
    /// Puts every finished chunk back to pending, for a sweep that catches values written in
    /// the old format after their chunk was done.
    async fn reopen(&self) -> Result<u64>;
    /// Sets or clears the job's note (why it is paused).
    async fn set_note(&self, note: Option<&str>) -> Result<()>;
    /// The job's counts; [`Error::NotFound`] for a job the database has no record of.
    async fn counts(&self) -> Result<Counts>;
    /// The done chunks whose row count is recorded, in key order, with that count.
    async fn seen_chunks(&self) -> Result<Vec<(Chunk, i64)>>;
}

/// The job's access to the application's table.
#[async_trait]
pub trait JobTable: Send + Sync {
    /// The chunk's rows.
    async fn rows(&self, chunk: Chunk) -> Result<Vec<Row>>;
    /// Re-reads one value.
    async fn read(&self, pk: i64, column: usize) -> Result<Option<Value>>;
    /// One compare-and-swap, outside a chunk; true if it took effect.
    async fn swap(&self, update: &Update) -> Result<bool>;
    /// Up to `limit` rows with a key above `after`, for plan and verify.
    async fn scan(&self, after: i64, limit: i64) -> Result<Vec<Row>>;
    /// Rows in the table (for progress).
    async fn count_rows(&self) -> Result<i64>;
}

/// A job bound to a database: its ledger and its table, and the commit that spans both.
#[async_trait]
pub trait JobStore: JobLedger + JobTable {
    /// Applies the updates with compare-and-swap and marks the chunk done, in one transaction;
    /// returns the updates that lost the compare-and-swap.
    async fn commit(
        &self,
        chunk: Chunk,
        updates: &[Update],
        counts: ChunkCounts,
    ) -> Result<Vec<Update>>;
}

/// Opens the store a `--db` argument names: a `postgres://` URL (feature `postgres`) or an
/// SQLite path, optionally `sqlite:PATH` (feature `sqlite`).
pub async fn open_store(db: &str) -> Result<Arc<dyn Store>> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Arc::new(PgStore::connect(db).await?));
        #[cfg(not(feature = "postgres"))]
        return Err(Error::misconfigured(
            "PostgreSQL databases need sealkit-migrate's `postgres` feature",
        ));
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

/// The chunk size a job's first chunk starts at: `min` rounded down to a chunk boundary.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn first_chunk_start(min: i64, spec: &JobSpec) -> i64 {
    min - min.rem_euclid(spec.chunk_rows)
}
