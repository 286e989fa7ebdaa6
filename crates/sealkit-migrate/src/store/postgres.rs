//! PostgreSQL (feature `postgres`): chunks claimed with `FOR UPDATE SKIP LOCKED`, so several
//! workers run one job at once; one compare-and-swap statement per column per chunk.

use std::sync::Arc;

use async_trait::async_trait;
use sealkit::{Error, Result};

use super::{
    Chunk, ChunkCounts, Counts, HeldChunk, JobLedger, JobStore, JobTable, Row, Store, Update,
    Value, first_chunk_start, now,
};
use crate::spec::JobSpec;

/// A PostgreSQL database; several workers (processes or tasks) can run one job at once.
#[derive(Clone)]
pub struct PgStore {
    db: Arc<PgDb>,
}

/// The connection all of a store's jobs share.
struct PgDb {
    client: tokio::sync::Mutex<tokio_postgres::Client>,
    url: String,
}

impl PgDb {
    /// Where the URL points, without its password.
    fn host(&self) -> &str {
        self.url.rsplit('@').next().unwrap_or("")
    }
}

/// A job bound to a PostgreSQL database.
struct PgJob {
    db: Arc<PgDb>,
    spec: JobSpec,
    /// Which job columns are text (the rest are `bytea`), checked against the catalog once.
    text_columns: tokio::sync::OnceCell<Vec<bool>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("at", &self.db.host())
            .finish()
    }
}

impl std::fmt::Debug for PgJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgJob")
            .field("at", &self.db.host())
            .field("job", &self.spec.job)
            .finish()
    }
}

#[async_trait]
impl Store for PgStore {
    async fn recorded_spec(&self, job: &str) -> Result<Option<JobSpec>> {
        let client = self.db.client.lock().await;
        let exists: bool = client
            .query_one("SELECT to_regclass('sealkit_jobs') IS NOT NULL", &[])
            .await
            .map_err(|e| db_err("reading the job", e))?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let text: Option<String> = client
            .query_opt("SELECT spec FROM sealkit_jobs WHERE job = $1", &[&job])
            .await
            .map_err(|e| db_err("reading the job", e))?
            .map(|r| r.get(0));
        text.map(|t| JobSpec::recorded(job, &t)).transpose()
    }

    fn bind(&self, spec: &JobSpec) -> Arc<dyn JobStore> {
        Arc::new(PgJob {
            db: self.db.clone(),
            spec: spec.clone(),
            text_columns: tokio::sync::OnceCell::new(),
        })
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
ALTER TABLE sealkit_chunks ADD COLUMN IF NOT EXISTS seen BIGINT NOT NULL DEFAULT -1;
";

/// Classifies a PostgreSQL error: a lost or refused connection, a server shutting down,
/// too many connections, a serialization failure or a deadlock are outages to wait out; a
/// missing table or column, a type mismatch, a permission error and the like are for a
/// person to fix, and stop the job at once.
fn db_err(what: &str, e: tokio_postgres::Error) -> Error {
    use tokio_postgres::error::SqlState;
    let Some(state) = e.code() else {
        // No SQLSTATE: either the connection failed (closed, I/O, TLS, timeout) — an outage —
        // or the client could not encode or decode a value, which waiting will not fix.
        let connection = e.is_closed()
            || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
            || e.to_string().contains("timed out");
        return if connection {
            super::db_err(what, e)
        } else {
            Error::misconfigured(format!("{what}: {e}")).with_source(e)
        };
    };
    let outage = state.code().starts_with("08") // connection exceptions
        || state.code().starts_with("57") // operator intervention (shutdown, cancel)
        || state.code().starts_with("53") // insufficient resources
        || *state == SqlState::T_R_SERIALIZATION_FAILURE
        || *state == SqlState::T_R_DEADLOCK_DETECTED;
    // The server's own words (`column "emial" does not exist`), which the error's Display
    // leaves out.
    let message = e
        .as_db_error()
        .map(|db| db.message().to_string())
        .unwrap_or_else(|| e.to_string());
    if outage {
        super::db_err(what, message)
    } else if *state == SqlState::INSUFFICIENT_PRIVILEGE {
        Error::permission_denied(
            "database",
            format!("{what}: {message}; grant the job's role access"),
        )
    } else {
        Error::misconfigured(format!(
            "{what}: {message} (SQLSTATE {}); fix the database or the job's table and columns",
            state.code()
        ))
    }
}

/// The advisory lock that serialises creating the job tables: `CREATE TABLE IF NOT EXISTS`
/// run by several sessions at once can collide in the catalog (a duplicate `pg_type` key).
const SCHEMA_LOCK: i64 = 0x05EA_1C17;

/// Creates the job tables if they are missing, one session at a time.
async fn create_schema(client: &mut tokio_postgres::Client) -> Result<()> {
    let tx = client.transaction().await.map_err(|e| db_err("begin", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(|e| db_err("waiting for the job-tables lock", e))?;
    tx.batch_execute(PG_SCHEMA)
        .await
        .map_err(|e| db_err("preparing the job tables", e))?;
    tx.commit().await.map_err(|e| db_err("commit", e))
}

/// A value as read (`convert_to(…, 'UTF8')` for text columns, so always bytes).
fn pg_value(bytes: Vec<u8>, text: bool) -> Value {
    if text {
        match String::from_utf8(bytes) {
            Ok(t) => Value::Text(t),
            Err(e) => Value::Blob(e.into_bytes()),
        }
    } else {
        Value::Blob(bytes)
    }
}

fn pg_row(r: &tokio_postgres::Row, text: &[bool]) -> Row {
    let values = text
        .iter()
        .enumerate()
        .map(|(i, &t)| r.get::<_, Option<Vec<u8>>>(2 + i).map(|b| pg_value(b, t)))
        .collect();
    Row {
        pk: r.get(0),
        tenant: r.get::<_, Option<String>>(1),
        values,
    }
}

/// A column as read: `bytea` as is, text as its UTF-8 bytes.
fn read_expr(name: &str, text: bool) -> String {
    if text {
        format!("convert_to({name}, 'UTF8')")
    } else {
        name.to_string()
    }
}

/// A `bytea` expression as written to (or compared with) a column.
fn write_expr(expr: &str, text: bool) -> String {
    if text {
        format!("convert_from({expr}, 'UTF8')")
    } else {
        expr.to_string()
    }
}

/// Checks the job's table against the catalog and says which columns are text. Keys must be
/// integers (jobs walk key ranges); columns `bytea`, or text with a declared encoding.
async fn column_kinds(client: &tokio_postgres::Client, spec: &JobSpec) -> Result<Vec<bool>> {
    let rows = client
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1",
            &[&spec.table.to_lowercase()],
        )
        .await
        .map_err(|e| db_err("reading the table's columns", e))?;
    let types: std::collections::HashMap<String, String> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    if types.is_empty() {
        return Err(Error::misconfigured(format!(
            "table {} does not exist in the current schema; check --table",
            spec.table
        )));
    }
    let type_of = |column: &str| {
        types.get(&column.to_lowercase()).cloned().ok_or_else(|| {
            Error::misconfigured(format!(
                "table {} has no column {column}; check the job's columns",
                spec.table
            ))
        })
    };
    let pk_type = type_of(&spec.pk)?;
    if !matches!(pk_type.as_str(), "smallint" | "integer" | "bigint") {
        return Err(Error::misconfigured(format!(
            "the key column {} of {} is {pk_type}: jobs walk integer key ranges (smallint, integer, bigint); add an integer key column (e.g. `ALTER TABLE {} ADD COLUMN sealkit_id bigserial UNIQUE`) and pass it with --pk",
            spec.pk, spec.table, spec.table
        )));
    }
    spec.columns
        .iter()
        .map(|column| {
            let data_type = type_of(&column.name)?;
            match data_type.as_str() {
                "bytea" => Ok(false),
                "text" | "character varying" | "character" if column.encoding.is_text() => Ok(true),
                "text" | "character varying" | "character" => Err(Error::misconfigured(format!(
                    "column {} of {} is {data_type} and ciphertexts are bytes: declare how they are stored in it, e.g. --column {}={}@base64 (or @base64url, @hex)",
                    column.name, spec.table, column.name, column.source
                ))),
                other => Err(Error::misconfigured(format!(
                    "column {} of {} is {other}: a job migrates bytea columns, or text columns with a declared encoding",
                    column.name, spec.table
                ))),
            }
        })
        .collect()
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
            db: Arc::new(PgDb {
                client: tokio::sync::Mutex::new(client),
                url: url.to_string(),
            }),
        })
    }
}

impl PgDb {
    /// The job's rows that `sql` selects, with its two parameters bound to `args`.
    async fn query_rows(
        &self,
        text: &[bool],
        sql: &str,
        args: [i64; 2],
        what: &str,
    ) -> Result<Vec<Row>> {
        let client = self.client.lock().await;
        let rows = client
            .query(sql, &[&args[0], &args[1]])
            .await
            .map_err(|e| db_err(what, e))?;
        Ok(rows.iter().map(|r| pg_row(r, text)).collect())
    }

    fn select(spec: &JobSpec, text: &[bool]) -> String {
        let mut cols = vec![format!("{}::bigint", spec.pk)];
        cols.push(
            spec.tenant_column
                .as_ref()
                .map(|t| format!("{t}::text"))
                .unwrap_or_else(|| "NULL::text".into()),
        );
        cols.extend(
            spec.columns
                .iter()
                .zip(text)
                .map(|(c, &t)| read_expr(&c.name, t)),
        );
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
impl JobLedger for PgJob {
    async fn prepare(&self) -> Result<()> {
        let spec = &self.spec;
        self.text_columns().await?;
        let mut client = self.db.client.lock().await;
        create_schema(&mut client).await?;
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
            Some(s) if s == spec.stored() => {
                // A new run retries the chunks whose values failed last time (a wrong legacy
                // key, say); their failures are counted afresh.
                tx.execute(
                    "UPDATE sealkit_chunks SET state = 'pending', worker = NULL, failed = 0 WHERE job = $1 AND state = 'failed'",
                    &[&spec.job],
                )
                .await
                .map_err(|e| db_err("retrying failed chunks", e))?;
            }
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
                PgDb::add_chunks(&tx, spec, first_chunk_start(min, spec), max).await?;
            }
        }
        tx.commit().await.map_err(|e| db_err("commit", e))
    }

    async fn claim(&self, worker: &str) -> Result<Option<Chunk>> {
        let spec = &self.spec;
        let mut client = self.db.client.lock().await;
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
                // New rows start after the last key the job knew. A chunk still to do may
                // already cover the first of them; a finished one may not (rows appended
                // after it was done must get a chunk of their own).
                let first_new = known + 1;
                let pending_hi: Option<i64> = tx
                    .query_one(
                        "SELECT MAX(hi) FROM sealkit_chunks WHERE job = $1 AND state IN ('pending', 'running') AND lo <= $2 AND hi > $2",
                        &[&spec.job, &first_new],
                    )
                    .await
                    .map_err(|e| db_err("reading chunks", e))?
                    .get(0);
                PgDb::add_chunks(&tx, spec, pending_hi.unwrap_or(first_new), max).await?;
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

    async fn add_counts(&self, chunk: Chunk, counts: ChunkCounts) -> Result<()> {
        let spec = &self.spec;
        let client = self.db.client.lock().await;
        client
            .execute(
                "UPDATE sealkit_chunks SET migrated = migrated + $3, skipped = skipped + $4, failed = failed + $5 WHERE job = $1 AND lo = $2",
                &[&spec.job, &chunk.lo, &counts.migrated, &counts.skipped, &counts.failed],
            )
            .await
            .map_err(|e| db_err("counting", e))?;
        Ok(())
    }

    async fn release(&self, chunk: Chunk) -> Result<()> {
        let spec = &self.spec;
        let client = self.db.client.lock().await;
        client
            .execute("UPDATE sealkit_chunks SET state = 'pending', worker = NULL WHERE job = $1 AND lo = $2", &[&spec.job, &chunk.lo])
            .await
            .map_err(|e| db_err("releasing a chunk", e))?;
        Ok(())
    }

    async fn reopen(&self) -> Result<u64> {
        let spec = &self.spec;
        let client = self.db.client.lock().await;
        client
            .execute("UPDATE sealkit_chunks SET state = 'pending', worker = NULL, failed = 0 WHERE job = $1 AND state IN ('done', 'failed')", &[&spec.job])
            .await
            .map_err(|e| db_err("reopening chunks", e))
    }

    async fn set_note(&self, note: Option<&str>) -> Result<()> {
        let spec = &self.spec;
        let client = self.db.client.lock().await;
        client
            .execute(
                "UPDATE sealkit_jobs SET note = $2 WHERE job = $1",
                &[&spec.job, &note],
            )
            .await
            .map_err(|e| db_err("noting", e))?;
        Ok(())
    }

    async fn seen_chunks(&self) -> Result<Vec<(Chunk, i64)>> {
        let mut client = self.db.client.lock().await;
        create_schema(&mut client).await?;
        let rows = client
            .query(
                "SELECT lo, hi, seen FROM sealkit_chunks WHERE job = $1 AND seen >= 0 ORDER BY lo",
                &[&self.spec.job],
            )
            .await
            .map_err(|e| db_err("reading the chunks", e))?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    Chunk {
                        lo: r.get(0),
                        hi: r.get(1),
                    },
                    r.get(2),
                )
            })
            .collect())
    }

    async fn counts(&self) -> Result<Counts> {
        let job = self.spec.job.as_str();
        let mut client = self.db.client.lock().await;
        create_schema(&mut client).await?;
        let note: Option<String> = client
            .query_opt("SELECT note FROM sealkit_jobs WHERE job = $1", &[&job])
            .await
            .map_err(|e| db_err("reading the job", e))?
            .ok_or_else(|| super::unknown_job(job))?
            .get(0);
        let r = client
            .query_one(
                "SELECT COUNT(*) FILTER (WHERE state = 'pending'), COUNT(*) FILTER (WHERE state = 'running'),
                 COUNT(*) FILTER (WHERE state IN ('done', 'failed')), COALESCE(SUM(migrated), 0)::bigint, COALESCE(SUM(skipped), 0)::bigint,
                 COALESCE(SUM(conflicts), 0)::bigint, COALESCE(SUM(failed), 0)::bigint FROM sealkit_chunks WHERE job = $1",
                &[&job],
            )
            .await
            .map_err(|e| db_err("reading the job's status", e))?;
        let held = client
            .query(
                "SELECT lo, hi, worker, lease_until FROM sealkit_chunks WHERE job = $1 AND state = 'running' ORDER BY lo",
                &[&job],
            )
            .await
            .map_err(|e| db_err("reading held chunks", e))?
            .iter()
            .map(|r| HeldChunk::from_lease(r.get(0), r.get(1), r.get(2), r.get(3), self.spec.lease_secs))
            .collect();
        Ok(Counts {
            pending: r.get(0),
            running: r.get(1),
            done: r.get(2),
            migrated: r.get(3),
            skipped: r.get(4),
            conflicts: r.get(5),
            failed: r.get(6),
            note,
            held,
        })
    }
}

impl PgJob {
    /// Which job columns are text, checked against the catalog on first use.
    async fn text_columns(&self) -> Result<&[bool]> {
        self.text_columns
            .get_or_try_init(|| async {
                let client = self.db.client.lock().await;
                column_kinds(&client, &self.spec).await
            })
            .await
            .map(Vec::as_slice)
    }
}

#[async_trait]
impl JobTable for PgJob {
    async fn rows(&self, chunk: Chunk) -> Result<Vec<Row>> {
        let spec = &self.spec;
        let text = self.text_columns().await?;
        let sql = format!(
            "SELECT {} FROM {} WHERE {pk} >= $1::bigint AND {pk} < $2::bigint ORDER BY {pk}",
            PgDb::select(spec, text),
            spec.table,
            pk = spec.pk
        );
        self.db
            .query_rows(text, &sql, [chunk.lo, chunk.hi], "reading a chunk")
            .await
    }

    async fn read(&self, pk: i64, column: usize) -> Result<Option<Value>> {
        let spec = &self.spec;
        let text = self.text_columns().await?[column];
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = $1::bigint",
            read_expr(&spec.columns[column].name, text),
            spec.table,
            spec.pk
        );
        let client = self.db.client.lock().await;
        let row = client
            .query_opt(&sql, &[&pk])
            .await
            .map_err(|e| db_err("re-reading a value", e))?;
        Ok(row
            .and_then(|r| r.get::<_, Option<Vec<u8>>>(0))
            .map(|b| pg_value(b, text)))
    }

    async fn swap(&self, u: &Update) -> Result<bool> {
        let spec = &self.spec;
        let text = self.text_columns().await?[u.column];
        let col = &spec.columns[u.column].name;
        let sql = format!(
            "UPDATE {t} SET {col} = {new} WHERE {pk} = $2::bigint AND {col} = {old}",
            t = spec.table,
            pk = spec.pk,
            new = write_expr("$1::bytea", text),
            old = write_expr("$3::bytea", text),
        );
        let client = self.db.client.lock().await;
        Ok(client
            .execute(&sql, &[&u.new.bytes(), &u.pk, &u.old.bytes()])
            .await
            .map_err(|e| db_err("updating a value", e))?
            == 1)
    }

    async fn scan(&self, after: i64, limit: i64) -> Result<Vec<Row>> {
        let spec = &self.spec;
        let text = self.text_columns().await?;
        let sql = format!(
            "SELECT {} FROM {} WHERE {pk} > $1::bigint ORDER BY {pk} LIMIT $2",
            PgDb::select(spec, text),
            spec.table,
            pk = spec.pk
        );
        self.db
            .query_rows(text, &sql, [after, limit], "scanning")
            .await
    }

    async fn count_rows(&self) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM {}", self.spec.table);
        let client = self.db.client.lock().await;
        let row = client
            .query_one(&sql, &[])
            .await
            .map_err(|e| db_err("counting rows", e))?;
        Ok(row.get(0))
    }
}

#[async_trait]
impl JobStore for PgJob {
    async fn commit(
        &self,
        chunk: Chunk,
        updates: &[Update],
        counts: ChunkCounts,
    ) -> Result<Vec<Update>> {
        let spec = &self.spec;
        let text = self.text_columns().await?;
        let mut client = self.db.client.lock().await;
        let tx = client.transaction().await.map_err(|e| db_err("begin", e))?;
        // One compare-and-swap statement per column for the whole chunk.
        let mut lost = Vec::new();
        for (i, column) in spec.columns.iter().enumerate() {
            let batch: Vec<&Update> = updates.iter().filter(|u| u.column == i).collect();
            if batch.is_empty() {
                continue;
            }
            let ids: Vec<i64> = batch.iter().map(|u| u.pk).collect();
            let new: Vec<&[u8]> = batch.iter().map(|u| u.new.bytes()).collect();
            let old: Vec<&[u8]> = batch.iter().map(|u| u.old.bytes()).collect();
            let sql = format!(
                "UPDATE {t} AS t SET {col} = {new} FROM unnest($1::bigint[], $2::bytea[], $3::bytea[]) AS u(id, new, old)
                 WHERE t.{pk} = u.id AND t.{col} = {old} RETURNING t.{pk}::bigint",
                t = spec.table,
                col = column.name,
                pk = spec.pk,
                new = write_expr("u.new", text[i]),
                old = write_expr("u.old", text[i]),
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
            "UPDATE sealkit_chunks SET state = CASE WHEN $6::bigint > 0 THEN 'failed' ELSE 'done' END, migrated = migrated + $3, skipped = skipped + $4,
             conflicts = conflicts + $5, failed = failed + $6, seen = COALESCE($7::bigint, seen) WHERE job = $1 AND lo = $2",
            &[&spec.job, &chunk.lo, &migrated, &counts.skipped, &conflicts, &counts.failed, &counts.seen],
        )
        .await
        .map_err(|e| db_err("finishing a chunk", e))?;
        tx.commit().await.map_err(|e| db_err("commit", e))?;
        Ok(lost)
    }
}
