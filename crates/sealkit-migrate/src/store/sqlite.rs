//! SQLite (feature `sqlite`): one connection per store, immediate transactions for claims
//! and commits, so several workers in one or more processes take turns.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use sealkit::{Error, Result};

use super::{
    Chunk, ChunkCounts, Counts, HeldChunk, JobLedger, JobStore, JobTable, KeyRange, Row, RowKey,
    Store, Update, Value, chunk_condition, db_err, first_chunk_start, now, text_chunks,
};
use crate::spec::JobSpec;

/// An SQLite database (WAL mode, 10-second busy timeout, so the application can keep writing).
#[derive(Clone)]
pub struct SqliteStore {
    db: Arc<SqliteDb>,
}

/// The connection all of a store's jobs share.
struct SqliteDb {
    conn: Mutex<rusqlite::Connection>,
    path: String,
}

/// A job bound to an SQLite database.
struct SqliteJob {
    db: Arc<SqliteDb>,
    spec: JobSpec,
    /// Whether the key column has integer affinity (walked in key ranges) or not (walked in
    /// key order), read from the table's declaration once.
    int_keys: std::sync::OnceLock<bool>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.db.path)
            .finish()
    }
}

impl std::fmt::Debug for SqliteJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteJob")
            .field("path", &self.db.path)
            .field("job", &self.spec.job)
            .finish()
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn bind(&self, spec: &JobSpec) -> Arc<dyn JobStore> {
        Arc::new(SqliteJob {
            db: self.db.clone(),
            spec: spec.clone(),
            int_keys: std::sync::OnceLock::new(),
        })
    }

    async fn recorded_spec(&self, job: &str) -> Result<Option<JobSpec>> {
        let text = self.db.with(
            |c| {
                let known: bool = c.query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sealkit_jobs')",
                    [],
                    |r| r.get(0),
                )?;
                if !known {
                    return Ok(None);
                }
                c.query_row("SELECT spec FROM sealkit_jobs WHERE job = ?1", [job], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
            },
            "reading the job",
        )?;
        text.map(|t| JobSpec::recorded(job, &t)).transpose()
    }
}

/// Classifies an SQLite error: a busy or locked database is an outage to wait out; anything
/// else (no such table or column, a read-only or corrupt file, a constraint) is for a person
/// to fix, and stops the job at once.
fn sqlite_err(what: &str, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    let code = match &e {
        rusqlite::Error::SqliteFailure(failure, _) => Some(failure.code),
        _ => None,
    };
    match code {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => db_err(what, e),
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => Error::permission_denied(
            "database",
            format!("{what}: {e}; the job needs write access to the database file"),
        ),
        _ => Error::misconfigured(format!(
            "{what}: {e}; fix the database or the job's table and columns"
        )),
    }
}

/// The columns a job reads: key, tenant (or NULL), then the job's columns.
fn select_list(spec: &JobSpec) -> String {
    let mut cols = vec![spec.pk.clone()];
    cols.push(spec.tenant_column.clone().unwrap_or_else(|| "NULL".into()));
    cols.extend(spec.columns.iter().map(|c| c.name.clone()));
    cols.join(", ")
}

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sealkit_jobs (job TEXT PRIMARY KEY, spec TEXT NOT NULL, max_pk INTEGER NOT NULL, note TEXT);
CREATE TABLE IF NOT EXISTS sealkit_chunks (
    job TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL, state TEXT NOT NULL,
    worker TEXT, lease_until INTEGER NOT NULL DEFAULT 0,
    migrated INTEGER NOT NULL DEFAULT 0, skipped INTEGER NOT NULL DEFAULT 0,
    conflicts INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
    seen INTEGER NOT NULL DEFAULT -1, lo_key, hi_key,
    PRIMARY KEY (job, lo));
";

/// Columns later versions added to `sealkit_chunks`: `seen` (rows in a chunk when it was
/// last done, -1 if unknown) and a text-key chunk's bounds (untyped, so keys keep their
/// type).
const ADDED_CHUNK_COLUMNS: [(&str, &str); 3] = [
    ("seen", "seen INTEGER NOT NULL DEFAULT -1"),
    ("lo_key", "lo_key"),
    ("hi_key", "hi_key"),
];

/// Creates the job tables if missing, and adds what later versions record to tables an
/// earlier version created.
fn ensure_schema(c: &rusqlite::Connection) -> rusqlite::Result<()> {
    c.execute_batch(SQLITE_SCHEMA)?;
    for (name, definition) in ADDED_CHUNK_COLUMNS {
        let present: bool = c.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('sealkit_chunks') WHERE name = ?1)",
            [name],
            |r| r.get(0),
        )?;
        if !present {
            c.execute_batch(&format!(
                "ALTER TABLE sealkit_chunks ADD COLUMN {definition}"
            ))?;
        }
    }
    Ok(())
}

/// A key as stored: integers and text; anything else is refused with what to do.
fn sqlite_key(v: rusqlite::types::ValueRef<'_>, column: usize) -> rusqlite::Result<RowKey> {
    use rusqlite::types::{Type, ValueRef};
    let unsupported = |t: Type| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            t,
            format!("the key column holds a {t} value; jobs walk integer or text keys, so give the job an integer or text key column with --pk").into(),
        )
    };
    match v {
        ValueRef::Integer(i) => Ok(RowKey::Int(i)),
        ValueRef::Text(t) => Ok(RowKey::Text(String::from_utf8_lossy(t).into_owned())),
        other => Err(unsupported(other.data_type())),
    }
}

/// A key to bind, with its own type.
fn key_param(k: &RowKey) -> rusqlite::types::Value {
    match k {
        RowKey::Int(i) => rusqlite::types::Value::Integer(*i),
        RowKey::Text(t) => rusqlite::types::Value::Text(t.clone()),
    }
}

/// An optional stored key (a text chunk's bound), `None` for NULL.
fn optional_key(
    v: rusqlite::types::ValueRef<'_>,
    column: usize,
) -> rusqlite::Result<Option<RowKey>> {
    match v {
        rusqlite::types::ValueRef::Null => Ok(None),
        v => sqlite_key(v, column).map(Some),
    }
}

/// A chunk from its ledger columns `lo, hi, lo_key, hi_key` at `first`.
fn ledger_chunk(r: &rusqlite::Row<'_>, first: usize, int_keys: bool) -> rusqlite::Result<Chunk> {
    let keys = if int_keys {
        None
    } else {
        Some(KeyRange {
            from: optional_key(r.get_ref(first + 2)?, first + 2)?,
            to: optional_key(r.get_ref(first + 3)?, first + 3)?,
        })
    };
    Ok(Chunk {
        lo: r.get(first)?,
        hi: r.get(first + 1)?,
        keys,
    })
}

/// Whether the job's key column has integer affinity (a rowid alias counts). Any other
/// declared type walks the keys in order.
fn key_is_int(c: &rusqlite::Connection, spec: &JobSpec) -> rusqlite::Result<bool> {
    if ["rowid", "oid", "_rowid_"]
        .iter()
        .any(|alias| spec.pk.eq_ignore_ascii_case(alias))
    {
        return Ok(true);
    }
    let declared: Option<String> = c
        .query_row(
            "SELECT type FROM pragma_table_info(?1) WHERE name = ?2 COLLATE NOCASE",
            [&spec.table, &spec.pk],
            |r| r.get(0),
        )
        .optional()?;
    match declared {
        Some(t) => Ok(t.to_ascii_uppercase().contains("INT")),
        // No such table or column: the statements that use it say which.
        None => Ok(true),
    }
}

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
    let pk = sqlite_key(r.get_ref(0)?, 0)?;
    let tenant = match r.get_ref(1)? {
        rusqlite::types::ValueRef::Null => None,
        v => sqlite_value(v).map(|v| String::from_utf8_lossy(v.bytes()).into_owned()),
    };
    let mut values = Vec::with_capacity(columns);
    for i in 0..columns {
        values.push(sqlite_value(r.get_ref(2 + i)?));
    }
    Ok(Row { pk, tenant, values })
}

/// Binds an old value with its original type, so that the compare-and-swap compares alike.
fn to_sqlite(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
        Value::Text(t) => rusqlite::types::Value::Text(t.clone()),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &str) -> Result<Self> {
        Ok(Self {
            db: Arc::new(SqliteDb::open(path)?),
        })
    }
}

impl SqliteDb {
    fn open(path: &str) -> Result<Self> {
        // An existing database only: a mistyped path must not create an empty one.
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_URI
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(|e| {
            if std::path::Path::new(path).exists() {
                sqlite_err(&format!("opening {path}"), e)
            } else {
                Error::misconfigured(format!(
                    "no SQLite database at {path}; check the --db path (a migration never creates the database it migrates)"
                ))
            }
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| sqlite_err("busy timeout", e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| sqlite_err("WAL", e))?;
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
        f(&mut conn).map_err(|e| sqlite_err(what, e))
    }

    /// The job's rows that `sql` selects, with its parameters bound to `args`.
    fn query_rows(
        &self,
        spec: &JobSpec,
        sql: &str,
        args: &[rusqlite::types::Value],
        what: &str,
    ) -> Result<Vec<Row>> {
        self.with(
            |c| {
                let mut stmt = c.prepare_cached(sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
                    sqlite_row(r, spec.columns.len())
                })?;
                rows.collect()
            },
            what,
        )
    }

    /// Rows of the table in `chunk` now.
    fn count_in(c: &rusqlite::Connection, spec: &JobSpec, chunk: &Chunk) -> rusqlite::Result<i64> {
        let (condition, keys) = chunk_condition(&spec.pk, chunk, |n| format!("?{n}"));
        let sql = format!("SELECT COUNT(*) FROM {} WHERE {condition}", spec.table);
        c.prepare_cached(&sql)?.query_row(
            rusqlite::params_from_iter(keys.iter().map(key_param)),
            |r| r.get(0),
        )
    }

    /// Creates a new text-key job's chunks: every `chunk_rows`th key in key order starts one.
    fn add_text_chunks(tx: &rusqlite::Transaction<'_>, spec: &JobSpec) -> rusqlite::Result<()> {
        let sql = format!(
            "SELECT k FROM (SELECT {pk} AS k, row_number() OVER (ORDER BY {pk}) AS n FROM {t})
             WHERE n % ?1 = 1 AND n > 1 ORDER BY n",
            pk = spec.pk,
            t = spec.table
        );
        let mut stmt = tx.prepare(&sql)?;
        let starts = stmt
            .query_map([spec.chunk_rows], |r| sqlite_key(r.get_ref(0)?, 0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (n, from, to) in text_chunks(starts) {
            tx.execute(
                "INSERT INTO sealkit_chunks (job, lo, hi, state, lo_key, hi_key) VALUES (?1, ?2, ?3, 'pending', ?4, ?5)",
                params![spec.job, n, n + 1, from.as_ref().map(key_param), to.as_ref().map(key_param)],
            )?;
        }
        Ok(())
    }

    /// Puts back to pending the finished text-key chunks that hold more rows than when they
    /// were done: rows inserted since (text keys, unlike integer ones, land anywhere).
    fn reopen_grown(tx: &rusqlite::Transaction<'_>, spec: &JobSpec) -> rusqlite::Result<()> {
        let done: Vec<(Chunk, i64)> = {
            let mut stmt = tx.prepare(
                "SELECT lo, hi, lo_key, hi_key, seen FROM sealkit_chunks WHERE job = ?1 AND state = 'done' AND seen >= 0",
            )?;
            stmt.query_map([&spec.job], |r| Ok((ledger_chunk(r, 0, false)?, r.get(4)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        for (chunk, seen) in done {
            if SqliteDb::count_in(tx, spec, &chunk)? > seen {
                tx.execute(
                    "UPDATE sealkit_chunks SET state = 'pending', worker = NULL WHERE job = ?1 AND lo = ?2",
                    params![spec.job, chunk.lo],
                )?;
            }
        }
        Ok(())
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
impl JobLedger for SqliteJob {
    async fn prepare(&self) -> Result<()> {
        let spec = &self.spec;
        let stored = spec.stored();
        let int_keys = self.int_keys()?;
        // One immediate (write-locked) transaction: two workers starting together wait for
        // each other instead of both creating the job.
        let existing = self.db.with(
            |c| {
                ensure_schema(c)?;
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let existing = tx
                    .query_row(
                        "SELECT spec FROM sealkit_jobs WHERE job = ?1",
                        [&spec.job],
                        |r| r.get::<_, String>(0),
                    )
                    .optional()?;
                if existing.is_none() && !int_keys {
                    tx.execute(
                        "INSERT INTO sealkit_jobs (job, spec, max_pk) VALUES (?1, ?2, -1)",
                        params![spec.job, stored],
                    )?;
                    SqliteDb::add_text_chunks(&tx, spec)?;
                } else if existing.is_none() {
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
                    SqliteDb::add_chunks(&tx, spec, first_chunk_start(min, spec), max)?;
                }
                if existing.as_deref() == Some(stored.as_str()) {
                    // A new run retries the chunks whose values failed last time (a wrong
                    // legacy key, say); their failures are counted afresh.
                    tx.execute(
                        "UPDATE sealkit_chunks SET state = 'pending', worker = NULL, failed = 0 WHERE job = ?1 AND state = 'failed'",
                        [&spec.job],
                    )?;
                    if !int_keys {
                        SqliteDb::reopen_grown(&tx, spec)?;
                    }
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

    async fn claim(&self, worker: &str) -> Result<Option<Chunk>> {
        let spec = &self.spec;
        let int_keys = self.int_keys()?;
        self.db.with(
            |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let now = now();
                let pick = |tx: &rusqlite::Transaction<'_>| {
                    tx.query_row(
                        "SELECT lo, hi, lo_key, hi_key FROM sealkit_chunks WHERE job = ?1 AND (state = 'pending'
                         OR (state = 'running' AND (lease_until < ?2 OR worker = ?3))) ORDER BY lo LIMIT 1",
                        params![spec.job, now, worker],
                        |r| ledger_chunk(r, 0, int_keys),
                    )
                    .optional()
                };
                let mut chunk = pick(&tx)?;
                if chunk.is_none() && int_keys {
                    // Rows appended since the job started get chunks of their own.
                    let known: i64 = tx.query_row("SELECT max_pk FROM sealkit_jobs WHERE job = ?1", [&spec.job], |r| r.get(0))?;
                    let max: Option<i64> = tx.query_row(&format!("SELECT MAX({}) FROM {}", spec.pk, spec.table), [], |r| r.get(0))?;
                    if let Some(max) = max.filter(|m| *m > known) {
                        // New rows start after the last key the job knew. A chunk still to do may
                        // already cover the first of them; a finished one may not (rows
                        // appended after it was done must get a chunk of their own).
                        let pending_hi: Option<i64> = tx.query_row(
                            "SELECT MAX(hi) FROM sealkit_chunks WHERE job = ?1 AND state IN ('pending', 'running') AND lo <= ?2 AND hi > ?2",
                            params![spec.job, known + 1],
                            |r| r.get(0),
                        )?;
                        SqliteDb::add_chunks(&tx, spec, pending_hi.unwrap_or(known + 1), max)?;
                        tx.execute("UPDATE sealkit_jobs SET max_pk = ?2 WHERE job = ?1", params![spec.job, max])?;
                        chunk = pick(&tx)?;
                    }
                }
                if let Some(ch) = &chunk {
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

    async fn add_counts(&self, chunk: &Chunk, counts: ChunkCounts) -> Result<()> {
        let spec = &self.spec;
        self.db.with(
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

    async fn release(&self, chunk: &Chunk) -> Result<()> {
        let spec = &self.spec;
        self.db.with(
            |c| {
                c.execute("UPDATE sealkit_chunks SET state = 'pending', worker = NULL WHERE job = ?1 AND lo = ?2", params![spec.job, chunk.lo])
                    .map(|_| ())
            },
            "releasing a chunk",
        )
    }

    async fn reopen(&self) -> Result<u64> {
        let spec = &self.spec;
        self.db.with(
            |c| c.execute("UPDATE sealkit_chunks SET state = 'pending', worker = NULL, failed = 0 WHERE job = ?1 AND state IN ('done', 'failed')", [&spec.job]).map(|n| n as u64),
            "reopening chunks",
        )
    }

    async fn set_note(&self, note: Option<&str>) -> Result<()> {
        let spec = &self.spec;
        self.db.with(
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

    async fn seen_chunks(&self) -> Result<Vec<(Chunk, i64)>> {
        let job = self.spec.job.as_str();
        let int_keys = self.int_keys()?;
        self.db.with(
            |c| {
                ensure_schema(c)?;
                let mut stmt = c.prepare(
                    "SELECT lo, hi, lo_key, hi_key, seen FROM sealkit_chunks WHERE job = ?1 AND seen >= 0 ORDER BY lo",
                )?;
                let rows = stmt.query_map([job], |r| Ok((ledger_chunk(r, 0, int_keys)?, r.get(4)?)))?;
                rows.collect()
            },
            "reading the chunks",
        )
    }

    async fn counts(&self) -> Result<Counts> {
        let job = self.spec.job.as_str();
        let int_keys = self.int_keys()?;
        let counts = self.db.with(
            |c| {
                ensure_schema(c)?;
                let Some(note): Option<Option<String>> = c
                    .query_row("SELECT note FROM sealkit_jobs WHERE job = ?1", [job], |r| r.get(0))
                    .optional()?
                else {
                    return Ok(None);
                };
                c.query_row(
                    "SELECT COALESCE(SUM(state = 'pending'), 0), COALESCE(SUM(state = 'running'), 0), COALESCE(SUM(state IN ('done', 'failed')), 0),
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
                            held: Vec::new(),
                        })
                    },
                )
                .and_then(|mut counts| {
                    let mut stmt = c.prepare_cached(
                        "SELECT lo, hi, lo_key, hi_key, worker, lease_until FROM sealkit_chunks WHERE job = ?1 AND state = 'running' ORDER BY lo",
                    )?;
                    counts.held = stmt
                        .query_map([job], |r| {
                            Ok(HeldChunk::from_lease(
                                ledger_chunk(r, 0, int_keys)?,
                                r.get(4)?,
                                r.get(5)?,
                                self.spec.lease_secs,
                            ))
                        })?
                        .collect::<rusqlite::Result<_>>()?;
                    Ok(Some(counts))
                })
            },
            "reading the job's status",
        )?;
        counts.ok_or_else(|| super::unknown_job(job))
    }
}

impl SqliteJob {
    /// Whether the job's key column is an integer one, read once.
    fn int_keys(&self) -> Result<bool> {
        if let Some(&known) = self.int_keys.get() {
            return Ok(known);
        }
        let found = self.db.with(
            |c| key_is_int(c, &self.spec),
            "reading the key column's type",
        )?;
        Ok(*self.int_keys.get_or_init(|| found))
    }
}

#[async_trait]
impl JobTable for SqliteJob {
    async fn rows(&self, chunk: &Chunk) -> Result<Vec<Row>> {
        let spec = &self.spec;
        let (condition, keys) = chunk_condition(&spec.pk, chunk, |n| format!("?{n}"));
        let sql = format!(
            "SELECT {} FROM {} WHERE {condition} ORDER BY {pk}",
            select_list(spec),
            spec.table,
            pk = spec.pk
        );
        let args: Vec<_> = keys.iter().map(key_param).collect();
        self.db.query_rows(spec, &sql, &args, "reading a chunk")
    }

    async fn row(&self, pk: &RowKey) -> Result<Option<Row>> {
        let spec = &self.spec;
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = ?1",
            select_list(spec),
            spec.table,
            spec.pk
        );
        let rows = self
            .db
            .query_rows(spec, &sql, &[key_param(pk)], "re-reading a row")?;
        Ok(rows.into_iter().next())
    }

    async fn swap(&self, u: &Update) -> Result<bool> {
        let spec = &self.spec;
        let col = &spec.columns[u.column].name;
        let sql = format!(
            "UPDATE {t} SET {col} = ?1 WHERE {pk} = ?2 AND {col} = ?3",
            t = spec.table,
            pk = spec.pk
        );
        self.db.with(
            |c| {
                c.execute(
                    &sql,
                    params![to_sqlite(&u.new), key_param(&u.pk), to_sqlite(&u.old)],
                )
                .map(|n| n == 1)
            },
            "updating a value",
        )
    }

    async fn scan(&self, after: Option<&RowKey>, limit: i64) -> Result<Vec<Row>> {
        let spec = &self.spec;
        let mut args = Vec::new();
        let mut condition = String::new();
        if let Some(after) = after {
            args.push(key_param(after));
            condition = format!("WHERE {} > ?1", spec.pk);
        }
        args.push(rusqlite::types::Value::Integer(limit));
        let sql = format!(
            "SELECT {} FROM {} {condition} ORDER BY {pk} LIMIT ?{}",
            select_list(spec),
            spec.table,
            args.len(),
            pk = spec.pk
        );
        self.db.query_rows(spec, &sql, &args, "scanning")
    }

    async fn count_rows(&self) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM {}", self.spec.table);
        self.db
            .with(|c| c.query_row(&sql, [], |r| r.get(0)), "counting rows")
    }

    async fn count_in(&self, chunk: &Chunk) -> Result<i64> {
        self.db.with(
            |c| SqliteDb::count_in(c, &self.spec, chunk),
            "counting a chunk's rows",
        )
    }
}

#[async_trait]
impl JobStore for SqliteJob {
    async fn commit(
        &self,
        chunk: &Chunk,
        updates: &[Update],
        counts: ChunkCounts,
    ) -> Result<Vec<Update>> {
        let spec = &self.spec;
        self.db.with(
            |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let mut lost = Vec::new();
                for u in updates {
                    let col = &spec.columns[u.column].name;
                    let sql = format!("UPDATE {t} SET {col} = ?1 WHERE {pk} = ?2 AND {col} = ?3", t = spec.table, pk = spec.pk);
                    let n = tx.prepare_cached(&sql)?.execute(params![to_sqlite(&u.new), key_param(&u.pk), to_sqlite(&u.old)])?;
                    if n == 0 {
                        lost.push(u.clone());
                    }
                }
                let migrated = counts.migrated - lost.len() as i64;
                tx.execute(
                    "UPDATE sealkit_chunks SET state = CASE WHEN ?6 > 0 THEN 'failed' ELSE 'done' END, migrated = migrated + ?3, skipped = skipped + ?4,
                     conflicts = conflicts + ?5, failed = failed + ?6, seen = COALESCE(?7, seen) WHERE job = ?1 AND lo = ?2",
                    params![spec.job, chunk.lo, migrated, counts.skipped, lost.len() as i64 + counts.conflicts, counts.failed, counts.seen],
                )?;
                tx.commit()?;
                Ok(lost)
            },
            "committing a chunk",
        )
    }
}
