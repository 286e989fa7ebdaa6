//! Where jobs read and write: SQLite and PostgreSQL behind one trait.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use sealkit::{Error, Result};

use crate::spec::JobSpec;

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
    /// The value to write.
    pub new: Vec<u8>,
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
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The database operations a job needs.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Creates the state tables and the job's chunks (idempotent; refuses another spec under
    /// the same job name).
    async fn prepare(&self, spec: &JobSpec) -> Result<()>;
    /// Claims the next chunk for `worker`, chunking rows appended since the job started.
    async fn claim(&self, spec: &JobSpec, worker: &str) -> Result<Option<Chunk>>;
    /// The chunk's rows.
    async fn rows(&self, spec: &JobSpec, chunk: Chunk) -> Result<Vec<Row>>;
    /// Applies the updates with compare-and-swap and marks the chunk done, in one transaction;
    /// returns the updates that lost the compare-and-swap.
    async fn commit(
        &self,
        spec: &JobSpec,
        chunk: Chunk,
        updates: &[Update],
        counts: ChunkCounts,
    ) -> Result<Vec<Update>>;
    /// Re-reads one value.
    async fn read(&self, spec: &JobSpec, pk: i64, column: usize) -> Result<Option<Value>>;
    /// One compare-and-swap, outside a chunk; true if it took effect.
    async fn swap(&self, spec: &JobSpec, update: &Update) -> Result<bool>;
    /// Adds to a finished chunk's counts (conflicts resolved after its commit).
    async fn add_counts(&self, spec: &JobSpec, chunk: Chunk, counts: ChunkCounts) -> Result<()>;
    /// Gives a chunk back (after a provider outage).
    async fn release(&self, spec: &JobSpec, chunk: Chunk) -> Result<()>;
    /// Puts every finished chunk back to pending, for a sweep that catches values written in
    /// the old format after their chunk was done.
    async fn reopen(&self, spec: &JobSpec) -> Result<u64>;
    /// Sets or clears the job's note (why it is paused).
    async fn set_note(&self, spec: &JobSpec, note: Option<&str>) -> Result<()>;
    /// The job's counts.
    async fn counts(&self, job: &str) -> Result<Counts>;
    /// Up to `limit` rows with a key above `after`, for plan and verify.
    async fn scan(&self, spec: &JobSpec, after: i64, limit: i64) -> Result<Vec<Row>>;
}

fn db_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::unavailable("database", format!("{what}: {e}"))
}

fn select_list(spec: &JobSpec) -> String {
    let mut cols = vec![spec.pk.clone()];
    cols.push(spec.tenant_column.clone().unwrap_or_else(|| "NULL".into()));
    cols.extend(spec.columns.iter().map(|c| c.name.clone()));
    cols.join(", ")
}

// ----- SQLite -------------------------------------------------------------------------------

/// An SQLite database (WAL mode, 10-second busy timeout, so the application can keep writing).
pub struct SqliteStore {
    conn: Mutex<rusqlite::Connection>,
    path: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sealkit_jobs (job TEXT PRIMARY KEY, spec TEXT NOT NULL, max_pk INTEGER NOT NULL, note TEXT);
CREATE TABLE IF NOT EXISTS sealkit_chunks (
    job TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL, state TEXT NOT NULL,
    worker TEXT, lease_until INTEGER NOT NULL DEFAULT 0,
    migrated INTEGER NOT NULL DEFAULT 0, skipped INTEGER NOT NULL DEFAULT 0,
    conflicts INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, lo));
";

fn sqlite_value(v: rusqlite::types::ValueRef<'_>) -> Option<Value> {
    match v {
        rusqlite::types::ValueRef::Blob(b) => Some(Value::Blob(b.to_vec())),
        rusqlite::types::ValueRef::Text(t) => {
            Some(Value::Text(String::from_utf8_lossy(t).into_owned()))
        }
        _ => None,
    }
}

fn sqlite_row(r: &rusqlite::Row<'_>, columns: usize) -> rusqlite::Result<Row> {
    let tenant = match r.get_ref(1)? {
        rusqlite::types::ValueRef::Null => None,
        v => sqlite_value(v).map(|v| String::from_utf8_lossy(v.bytes()).into_owned()),
    };
    let mut values = Vec::with_capacity(columns);
    for i in 0..columns {
        values.push(sqlite_value(r.get_ref(2 + i)?));
    }
    Ok(Row {
        pk: r.get(0)?,
        tenant,
        values,
    })
}

/// Binds an old value with its original type, so that the compare-and-swap compares alike.
fn sqlite_old(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
        Value::Text(t) => rusqlite::types::Value::Text(t.clone()),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &str) -> Result<Self> {
        let conn =
            rusqlite::Connection::open(path).map_err(|e| db_err(&format!("opening {path}"), e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| db_err("busy timeout", e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| db_err("WAL", e))?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_string(),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T>,
        what: &str,
    ) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn).map_err(|e| db_err(what, e))
    }

    /// The job's rows that `sql` selects, with its two parameters bound to `args`.
    fn query_rows(
        &self,
        spec: &JobSpec,
        sql: &str,
        args: [i64; 2],
        what: &str,
    ) -> Result<Vec<Row>> {
        self.with(
            |c| {
                let mut stmt = c.prepare_cached(sql)?;
                let rows = stmt.query_map(params![args[0], args[1]], |r| {
                    sqlite_row(r, spec.columns.len())
                })?;
                rows.collect()
            },
            what,
        )
    }

    fn add_chunks(
        tx: &rusqlite::Transaction<'_>,
        spec: &JobSpec,
        from: i64,
        to: i64,
    ) -> rusqlite::Result<()> {
        let mut lo = from;
        while lo <= to {
            tx.execute(
                "INSERT OR IGNORE INTO sealkit_chunks (job, lo, hi, state) VALUES (?1, ?2, ?3, 'pending')",
                params![spec.job, lo, lo + spec.chunk_rows],
            )?;
            lo += spec.chunk_rows;
        }
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn prepare(&self, spec: &JobSpec) -> Result<()> {
        let stored = spec.stored();
        // One immediate (write-locked) transaction: two workers starting together wait for
        // each other instead of both creating the job.
        let existing = self.with(
            |c| {
                c.execute_batch(SQLITE_SCHEMA)?;
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let existing = tx
                    .query_row(
                        "SELECT spec FROM sealkit_jobs WHERE job = ?1",
                        [&spec.job],
                        |r| r.get::<_, String>(0),
                    )
                    .optional()?;
                if existing.is_none() {
                    let (min, max): (Option<i64>, Option<i64>) = tx.query_row(
                        &format!(
                            "SELECT MIN({pk}), MAX({pk}) FROM {t}",
                            pk = spec.pk,
                            t = spec.table
                        ),
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                    let (min, max) = (min.unwrap_or(0), max.unwrap_or(-1));
                    tx.execute(
                        "INSERT INTO sealkit_jobs (job, spec, max_pk) VALUES (?1, ?2, ?3)",
                        params![spec.job, stored, max],
                    )?;
                    Self::add_chunks(&tx, spec, min - min.rem_euclid(spec.chunk_rows), max)?;
                }
                tx.commit()?;
                Ok(existing)
            },
            "preparing the job",
        )?;
        match existing {
            Some(s) if s != stored => Err(Error::invalid_input(format!(
                "job {} exists with another spec; use a new job name",
                spec.job
            ))),
            _ => Ok(()),
        }
    }

    async fn claim(&self, spec: &JobSpec, worker: &str) -> Result<Option<Chunk>> {
        self.with(
            |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let now = now();
                let pick = |tx: &rusqlite::Transaction<'_>| {
                    tx.query_row(
                        "SELECT lo, hi FROM sealkit_chunks WHERE job = ?1 AND (state = 'pending'
                         OR (state = 'running' AND (lease_until < ?2 OR worker = ?3))) ORDER BY lo LIMIT 1",
                        params![spec.job, now, worker],
                        |r| Ok(Chunk { lo: r.get(0)?, hi: r.get(1)? }),
                    )
                    .optional()
                };
                let mut chunk = pick(&tx)?;
                if chunk.is_none() {
                    // Rows appended since the job started get chunks of their own.
                    let known: i64 = tx.query_row("SELECT max_pk FROM sealkit_jobs WHERE job = ?1", [&spec.job], |r| r.get(0))?;
                    let max: Option<i64> = tx.query_row(&format!("SELECT MAX({}) FROM {}", spec.pk, spec.table), [], |r| r.get(0))?;
                    if let Some(max) = max.filter(|m| *m > known) {
                        let hi_done: Option<i64> = tx.query_row("SELECT MAX(hi) FROM sealkit_chunks WHERE job = ?1", [&spec.job], |r| r.get(0))?;
                        Self::add_chunks(&tx, spec, hi_done.unwrap_or(0).max(known + 1), max)?;
                        tx.execute("UPDATE sealkit_jobs SET max_pk = ?2 WHERE job = ?1", params![spec.job, max])?;
                        chunk = pick(&tx)?;
                    }
                }
                if let Some(ch) = chunk {
                    tx.execute(
                        "UPDATE sealkit_chunks SET state = 'running', worker = ?3, lease_until = ?4 WHERE job = ?1 AND lo = ?2",
                        params![spec.job, ch.lo, worker, now + spec.lease_secs],
                    )?;
                }
                tx.commit()?;
                Ok(chunk)
            },
            "claiming a chunk",
        )
    }

    async fn rows(&self, spec: &JobSpec, chunk: Chunk) -> Result<Vec<Row>> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {pk} >= ?1 AND {pk} < ?2 ORDER BY {pk}",
            select_list(spec),
            spec.table,
            pk = spec.pk
        );
        self.query_rows(spec, &sql, [chunk.lo, chunk.hi], "reading a chunk")
    }

    async fn commit(
        &self,
        spec: &JobSpec,
        chunk: Chunk,
        updates: &[Update],
        counts: ChunkCounts,
    ) -> Result<Vec<Update>> {
        self.with(
            |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let mut lost = Vec::new();
                for u in updates {
                    let col = &spec.columns[u.column].name;
                    let sql = format!("UPDATE {t} SET {col} = ?1 WHERE {pk} = ?2 AND {col} = ?3", t = spec.table, pk = spec.pk);
                    let n = tx.prepare_cached(&sql)?.execute(params![u.new, u.pk, sqlite_old(&u.old)])?;
                    if n == 0 {
                        lost.push(u.clone());
                    }
                }
                let migrated = counts.migrated - lost.len() as i64;
                tx.execute(
                    "UPDATE sealkit_chunks SET state = 'done', migrated = migrated + ?3, skipped = skipped + ?4,
                     conflicts = conflicts + ?5, failed = failed + ?6 WHERE job = ?1 AND lo = ?2",
                    params![spec.job, chunk.lo, migrated, counts.skipped, lost.len() as i64 + counts.conflicts, counts.failed],
                )?;
                tx.commit()?;
                Ok(lost)
            },
            "committing a chunk",
        )
    }

    async fn read(&self, spec: &JobSpec, pk: i64, column: usize) -> Result<Option<Value>> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = ?1",
            spec.columns[column].name, spec.table, spec.pk
        );
        self.with(
            |c| {
                c.query_row(&sql, [pk], |r| Ok(sqlite_value(r.get_ref(0)?)))
                    .optional()
                    .map(Option::flatten)
            },
            "re-reading a value",
        )
    }

    async fn swap(&self, spec: &JobSpec, u: &Update) -> Result<bool> {
        let col = &spec.columns[u.column].name;
        let sql = format!(
            "UPDATE {t} SET {col} = ?1 WHERE {pk} = ?2 AND {col} = ?3",
            t = spec.table,
            pk = spec.pk
        );
        self.with(
            |c| {
                c.execute(&sql, params![u.new, u.pk, sqlite_old(&u.old)])
                    .map(|n| n == 1)
            },
            "updating a value",
        )
    }

    async fn add_counts(&self, spec: &JobSpec, chunk: Chunk, counts: ChunkCounts) -> Result<()> {
        self.with(
            |c| {
                c.execute(
                    "UPDATE sealkit_chunks SET migrated = migrated + ?3, skipped = skipped + ?4, failed = failed + ?5 WHERE job = ?1 AND lo = ?2",
                    params![spec.job, chunk.lo, counts.migrated, counts.skipped, counts.failed],
                )
                .map(|_| ())
            },
            "counting",
        )
    }

    async fn release(&self, spec: &JobSpec, chunk: Chunk) -> Result<()> {
        self.with(
            |c| {
                c.execute("UPDATE sealkit_chunks SET state = 'pending', worker = NULL WHERE job = ?1 AND lo = ?2", params![spec.job, chunk.lo])
                    .map(|_| ())
            },
            "releasing a chunk",
        )
    }

    async fn reopen(&self, spec: &JobSpec) -> Result<u64> {
        self.with(
            |c| c.execute("UPDATE sealkit_chunks SET state = 'pending', worker = NULL WHERE job = ?1 AND state = 'done'", [&spec.job]).map(|n| n as u64),
            "reopening chunks",
        )
    }

    async fn set_note(&self, spec: &JobSpec, note: Option<&str>) -> Result<()> {
        self.with(
            |c| {
                c.execute(
                    "UPDATE sealkit_jobs SET note = ?2 WHERE job = ?1",
                    params![spec.job, note],
                )
                .map(|_| ())
            },
            "noting",
        )
    }

    async fn counts(&self, job: &str) -> Result<Counts> {
        self.with(
            |c| {
                c.execute_batch(SQLITE_SCHEMA)?;
                let note: Option<String> = c
                    .query_row("SELECT note FROM sealkit_jobs WHERE job = ?1", [job], |r| r.get(0))
                    .optional()?
                    .flatten();
                c.query_row(
                    "SELECT COALESCE(SUM(state = 'pending'), 0), COALESCE(SUM(state = 'running'), 0), COALESCE(SUM(state = 'done'), 0),
                     COALESCE(SUM(migrated), 0), COALESCE(SUM(skipped), 0), COALESCE(SUM(conflicts), 0), COALESCE(SUM(failed), 0)
                     FROM sealkit_chunks WHERE job = ?1",
                    [job],
                    |r| {
                        Ok(Counts {
                            pending: r.get(0)?,
                            running: r.get(1)?,
                            done: r.get(2)?,
                            migrated: r.get(3)?,
                            skipped: r.get(4)?,
                            conflicts: r.get(5)?,
                            failed: r.get(6)?,
                            note,
                        })
                    },
                )
            },
            "reading the job's status",
        )
    }

    async fn scan(&self, spec: &JobSpec, after: i64, limit: i64) -> Result<Vec<Row>> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {pk} > ?1 ORDER BY {pk} LIMIT ?2",
            select_list(spec),
            spec.table,
            pk = spec.pk
        );
        self.query_rows(spec, &sql, [after, limit], "scanning")
    }
}

// ----- PostgreSQL ---------------------------------------------------------------------------

/// A PostgreSQL database; several workers (processes or tasks) can run one job at once.
pub struct PgStore {
    client: tokio::sync::Mutex<tokio_postgres::Client>,
    url: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: show only where it points.
        let host = self.url.rsplit('@').next().unwrap_or("");
        f.debug_struct("PgStore").field("at", &host).finish()
    }
}

const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sealkit_jobs (job TEXT PRIMARY KEY, spec TEXT NOT NULL, max_pk BIGINT NOT NULL, note TEXT);
CREATE TABLE IF NOT EXISTS sealkit_chunks (
    job TEXT NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL, state TEXT NOT NULL,
    worker TEXT, lease_until BIGINT NOT NULL DEFAULT 0,
    migrated BIGINT NOT NULL DEFAULT 0, skipped BIGINT NOT NULL DEFAULT 0,
    conflicts BIGINT NOT NULL DEFAULT 0, failed BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job, lo));
";

fn pg_row(r: &tokio_postgres::Row, columns: usize) -> Row {
    let values = (0..columns)
        .map(|i| r.get::<_, Option<Vec<u8>>>(2 + i).map(Value::Blob))
        .collect();
    Row {
        pk: r.get(0),
        tenant: r.get::<_, Option<String>>(1),
        values,
    }
}

impl PgStore {
    /// Connects (without TLS: for a database on a private network or loopback; put TLS in
    /// front with a proxy otherwise).
    pub async fn connect(url: &str) -> Result<Self> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| db_err("connecting to PostgreSQL", e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::error!(error = %e, "PostgreSQL connection closed");
            }
        });
        Ok(Self {
            client: tokio::sync::Mutex::new(client),
            url: url.to_string(),
        })
    }

    /// The job's rows that `sql` selects, with its two parameters bound to `args`.
    async fn query_rows(
        &self,
        spec: &JobSpec,
        sql: &str,
        args: [i64; 2],
        what: &str,
    ) -> Result<Vec<Row>> {
        let client = self.client.lock().await;
        let rows = client
            .query(sql, &[&args[0], &args[1]])
            .await
            .map_err(|e| db_err(what, e))?;
        Ok(rows.iter().map(|r| pg_row(r, spec.columns.len())).collect())
    }

    fn select(spec: &JobSpec) -> String {
        let mut cols = vec![spec.pk.clone()];
        cols.push(
            spec.tenant_column
                .as_ref()
                .map(|t| format!("{t}::text"))
                .unwrap_or_else(|| "NULL::text".into()),
        );
        cols.extend(spec.columns.iter().map(|c| c.name.clone()));
        cols.join(", ")
    }

    async fn add_chunks(
        tx: &tokio_postgres::Transaction<'_>,
        spec: &JobSpec,
        from: i64,
        to: i64,
    ) -> Result<()> {
        tx.execute(
            "INSERT INTO sealkit_chunks (job, lo, hi, state)
             SELECT $1, g, g + $2, 'pending' FROM generate_series($3::bigint, $4::bigint, $2::bigint) g
             ON CONFLICT DO NOTHING",
            &[&spec.job, &spec.chunk_rows, &from, &to],
        )
        .await
        .map_err(|e| db_err("creating chunks", e))?;
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn prepare(&self, spec: &JobSpec) -> Result<()> {
        let mut client = self.client.lock().await;
        client
            .batch_execute(PG_SCHEMA)
            .await
            .map_err(|e| db_err("preparing the job tables", e))?;
        let tx = client.transaction().await.map_err(|e| db_err("begin", e))?;
        // One worker creates the chunks; the others wait for it and then find the job.
        tx.execute("LOCK TABLE sealkit_jobs IN SHARE ROW EXCLUSIVE MODE", &[])
            .await
            .map_err(|e| db_err("lock", e))?;
        let existing = tx
            .query_opt("SELECT spec FROM sealkit_jobs WHERE job = $1", &[&spec.job])
            .await
            .map_err(|e| db_err("reading the job", e))?;
        match existing.map(|r| r.get::<_, String>(0)) {
            Some(s) if s == spec.stored() => {}
            Some(_) => {
                return Err(Error::invalid_input(format!(
                    "job {} exists with another spec; use a new job name",
                    spec.job
                )));
            }
            None => {
                let r = tx
                    .query_one(
                        &format!(
                            "SELECT MIN({pk})::bigint, MAX({pk})::bigint FROM {t}",
                            pk = spec.pk,
                            t = spec.table
                        ),
                        &[],
                    )
                    .await
                    .map_err(|e| db_err("sizing the table", e))?;
                let (min, max): (Option<i64>, Option<i64>) = (r.get(0), r.get(1));
                let (min, max) = (min.unwrap_or(0), max.unwrap_or(-1));
                tx.execute(
                    "INSERT INTO sealkit_jobs (job, spec, max_pk) VALUES ($1, $2, $3)",
                    &[&spec.job, &spec.stored(), &max],
                )
                .await
                .map_err(|e| db_err("creating the job", e))?;
                Self::add_chunks(&tx, spec, min - min.rem_euclid(spec.chunk_rows), max).await?;
            }
        }
        tx.commit().await.map_err(|e| db_err("commit", e))
    }

    async fn claim(&self, spec: &JobSpec, worker: &str) -> Result<Option<Chunk>> {
        let mut client = self.client.lock().await;
        let now = now();
        let tx = client.transaction().await.map_err(|e| db_err("begin", e))?;
        // A scalar subquery (an InitPlan, evaluated once): a subquery in FROM may be rescanned
        // per row and claim every chunk.
        let claim = "UPDATE sealkit_chunks SET state = 'running', worker = $3, lease_until = $4
             WHERE job = $1 AND lo = (SELECT lo FROM sealkit_chunks WHERE job = $1 AND (state = 'pending'
                   OR (state = 'running' AND (lease_until < $2 OR worker = $3)))
                   ORDER BY lo LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING lo, hi";
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&spec.job, &now, &worker, &(now + spec.lease_secs)];
        let mut row = tx
            .query_opt(claim, &args)
            .await
            .map_err(|e| db_err("claiming a chunk", e))?;
        if row.is_none() {
            let job = tx
                .query_one(
                    "SELECT max_pk FROM sealkit_jobs WHERE job = $1 FOR UPDATE",
                    &[&spec.job],
                )
                .await
                .map_err(|e| db_err("reading the job", e))?;
            let known: i64 = job.get(0);
            let max: Option<i64> = tx
                .query_one(
                    &format!("SELECT MAX({})::bigint FROM {}", spec.pk, spec.table),
                    &[],
                )
                .await
                .map_err(|e| db_err("sizing the table", e))?
                .get(0);
            if let Some(max) = max.filter(|m| *m > known) {
                let hi: Option<i64> = tx
                    .query_one(
                        "SELECT MAX(hi) FROM sealkit_chunks WHERE job = $1",
                        &[&spec.job],
                    )
                    .await
                    .map_err(|e| db_err("reading chunks", e))?
                    .get(0);
                Self::add_chunks(&tx, spec, hi.unwrap_or(0).max(known + 1), max).await?;
                tx.execute(
                    "UPDATE sealkit_jobs SET max_pk = $2 WHERE job = $1",
                    &[&spec.job, &max],
                )
                .await
                .map_err(|e| db_err("updating the job", e))?;
                row = tx
                    .query_opt(claim, &args)
                    .await
                    .map_err(|e| db_err("claiming a chunk", e))?;
            }
        }
        tx.commit().await.map_err(|e| db_err("commit", e))?;
        Ok(row.map(|r| Chunk {
            lo: r.get(0),
            hi: r.get(1),
        }))
    }

    async fn rows(&self, spec: &JobSpec, chunk: Chunk) -> Result<Vec<Row>> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {pk} >= $1 AND {pk} < $2 ORDER BY {pk}",
            Self::select(spec),
            spec.table,
            pk = spec.pk
        );
        self.query_rows(spec, &sql, [chunk.lo, chunk.hi], "reading a chunk")
            .await
    }

    async fn commit(
        &self,
        spec: &JobSpec,
        chunk: Chunk,
        updates: &[Update],
        counts: ChunkCounts,
    ) -> Result<Vec<Update>> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.map_err(|e| db_err("begin", e))?;
        // One compare-and-swap statement per column for the whole chunk.
        let mut lost = Vec::new();
        for (i, column) in spec.columns.iter().enumerate() {
            let batch: Vec<&Update> = updates.iter().filter(|u| u.column == i).collect();
            if batch.is_empty() {
                continue;
            }
            let ids: Vec<i64> = batch.iter().map(|u| u.pk).collect();
            let new: Vec<&[u8]> = batch.iter().map(|u| u.new.as_slice()).collect();
            let old: Vec<&[u8]> = batch.iter().map(|u| u.old.bytes()).collect();
            let sql = format!(
                "UPDATE {t} AS t SET {col} = u.new FROM unnest($1::bigint[], $2::bytea[], $3::bytea[]) AS u(id, new, old)
                 WHERE t.{pk} = u.id AND t.{col} = u.old RETURNING t.{pk}",
                t = spec.table,
                col = column.name,
                pk = spec.pk
            );
            let done: std::collections::HashSet<i64> = tx
                .query(&sql, &[&ids, &new, &old])
                .await
                .map_err(|e| db_err("updating values", e))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            lost.extend(batch.into_iter().filter(|u| !done.contains(&u.pk)).cloned());
        }
        let migrated = counts.migrated - lost.len() as i64;
        let conflicts = lost.len() as i64 + counts.conflicts;
        tx.execute(
            "UPDATE sealkit_chunks SET state = 'done', migrated = migrated + $3, skipped = skipped + $4,
             conflicts = conflicts + $5, failed = failed + $6 WHERE job = $1 AND lo = $2",
            &[&spec.job, &chunk.lo, &migrated, &counts.skipped, &conflicts, &counts.failed],
        )
        .await
        .map_err(|e| db_err("finishing a chunk", e))?;
        tx.commit().await.map_err(|e| db_err("commit", e))?;
        Ok(lost)
    }

    async fn read(&self, spec: &JobSpec, pk: i64, column: usize) -> Result<Option<Value>> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = $1",
            spec.columns[column].name, spec.table, spec.pk
        );
        let client = self.client.lock().await;
        let row = client
            .query_opt(&sql, &[&pk])
            .await
            .map_err(|e| db_err("re-reading a value", e))?;
        Ok(row
            .and_then(|r| r.get::<_, Option<Vec<u8>>>(0))
            .map(Value::Blob))
    }

    async fn swap(&self, spec: &JobSpec, u: &Update) -> Result<bool> {
        let col = &spec.columns[u.column].name;
        let sql = format!(
            "UPDATE {t} SET {col} = $1 WHERE {pk} = $2 AND {col} = $3",
            t = spec.table,
            pk = spec.pk
        );
        let client = self.client.lock().await;
        Ok(client
            .execute(&sql, &[&u.new, &u.pk, &u.old.bytes()])
            .await
            .map_err(|e| db_err("updating a value", e))?
            == 1)
    }

    async fn add_counts(&self, spec: &JobSpec, chunk: Chunk, counts: ChunkCounts) -> Result<()> {
        let client = self.client.lock().await;
        client
            .execute(
                "UPDATE sealkit_chunks SET migrated = migrated + $3, skipped = skipped + $4, failed = failed + $5 WHERE job = $1 AND lo = $2",
                &[&spec.job, &chunk.lo, &counts.migrated, &counts.skipped, &counts.failed],
            )
            .await
            .map_err(|e| db_err("counting", e))?;
        Ok(())
    }

    async fn release(&self, spec: &JobSpec, chunk: Chunk) -> Result<()> {
        let client = self.client.lock().await;
        client
            .execute("UPDATE sealkit_chunks SET state = 'pending', worker = NULL WHERE job = $1 AND lo = $2", &[&spec.job, &chunk.lo])
            .await
            .map_err(|e| db_err("releasing a chunk", e))?;
        Ok(())
    }

    async fn reopen(&self, spec: &JobSpec) -> Result<u64> {
        let client = self.client.lock().await;
        client
            .execute("UPDATE sealkit_chunks SET state = 'pending', worker = NULL WHERE job = $1 AND state = 'done'", &[&spec.job])
            .await
            .map_err(|e| db_err("reopening chunks", e))
    }

    async fn set_note(&self, spec: &JobSpec, note: Option<&str>) -> Result<()> {
        let client = self.client.lock().await;
        client
            .execute(
                "UPDATE sealkit_jobs SET note = $2 WHERE job = $1",
                &[&spec.job, &note],
            )
            .await
            .map_err(|e| db_err("noting", e))?;
        Ok(())
    }

    async fn counts(&self, job: &str) -> Result<Counts> {
        let client = self.client.lock().await;
        client
            .batch_execute(PG_SCHEMA)
            .await
            .map_err(|e| db_err("preparing the job tables", e))?;
        let note: Option<String> = client
            .query_opt("SELECT note FROM sealkit_jobs WHERE job = $1", &[&job])
            .await
            .map_err(|e| db_err("reading the job", e))?
            .and_then(|r| r.get(0));
        let r = client
            .query_one(
                "SELECT COUNT(*) FILTER (WHERE state = 'pending'), COUNT(*) FILTER (WHERE state = 'running'),
                 COUNT(*) FILTER (WHERE state = 'done'), COALESCE(SUM(migrated), 0)::bigint, COALESCE(SUM(skipped), 0)::bigint,
                 COALESCE(SUM(conflicts), 0)::bigint, COALESCE(SUM(failed), 0)::bigint FROM sealkit_chunks WHERE job = $1",
                &[&job],
            )
            .await
            .map_err(|e| db_err("reading the job's status", e))?;
        Ok(Counts {
            pending: r.get(0),
            running: r.get(1),
            done: r.get(2),
            migrated: r.get(3),
            skipped: r.get(4),
            conflicts: r.get(5),
            failed: r.get(6),
            note,
        })
    }

    async fn scan(&self, spec: &JobSpec, after: i64, limit: i64) -> Result<Vec<Row>> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {pk} > $1 ORDER BY {pk} LIMIT $2",
            Self::select(spec),
            spec.table,
            pk = spec.pk
        );
        self.query_rows(spec, &sql, [after, limit], "scanning")
            .await
    }
}
