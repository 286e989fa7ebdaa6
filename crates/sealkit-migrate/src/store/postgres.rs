//! PostgreSQL (feature `postgres`): chunks claimed with `FOR UPDATE SKIP LOCKED`, so several
//! workers run one job at once; one compare-and-swap statement per column per chunk.

use std::sync::Arc;

use async_trait::async_trait;
use sealkit::{Error, Result};

use tokio_postgres::types::ToSql;

use super::{
    Chunk, ChunkCounts, Counts, HeldChunk, JobLedger, JobStore, JobTable, KeyRange, Row, RowKey,
    Store, Update, Value, chunk_condition, first_chunk_start, now, text_chunks,
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
    /// The key's and columns' types, checked against the catalog once.
    layout: tokio::sync::OnceCell<PgLayout>,
}

/// What the catalog says about a job's table.
#[derive(Debug)]
struct PgLayout {
    /// The type keys are compared as: `bigint` for integer keys (walked in key ranges), or
    /// the key's own text-like type (`text`, `varchar`, `bpchar`, `uuid`), walked in key
    /// order.
    key_type: &'static str,
    /// Which job columns are text (the rest are `bytea`).
    text: Vec<bool>,
}

impl PgLayout {
    fn int_keys(&self) -> bool {
        self.key_type == "bigint"
    }

    /// The `n`th placeholder, as a key of the key column's type.
    fn key_param(&self, n: usize) -> String {
        if self.int_keys() {
            format!("${n}::bigint")
        } else {
            format!("${n}::text::{}", self.key_type)
        }
    }

    /// The key column as read: `bigint`, or its text form.
    fn key_read(&self, pk: &str) -> String {
        if self.int_keys() {
            format!("{pk}::bigint")
        } else {
            format!("{pk}::text")
        }
    }

    /// A key as read at `index` of `r`.
    fn key(&self, r: &tokio_postgres::Row, index: usize) -> RowKey {
        if self.int_keys() {
            RowKey::Int(r.get(index))
        } else {
            RowKey::Text(r.get(index))
        }
    }

    /// A chunk from the ledger columns `lo, hi, lo_key, hi_key` at `first`.
    fn ledger_chunk(&self, r: &tokio_postgres::Row, first: usize) -> Chunk {
        let keys = (!self.int_keys()).then(|| KeyRange {
            from: r.get::<_, Option<String>>(first + 2).map(RowKey::Text),
            to: r.get::<_, Option<String>>(first + 3).map(RowKey::Text),
        });
        Chunk {
            lo: r.get(first),
            hi: r.get(first + 1),
            keys,
        }
    }
}

/// A key to bind.
fn key_param(k: &RowKey) -> Box<dyn ToSql + Sync + Send> {
    match k {
        RowKey::Int(i) => Box::new(*i),
        RowKey::Text(t) => Box::new(t.clone()),
    }
}

/// Borrows boxed parameters for a query.
fn params(args: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect()
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
            layout: tokio::sync::OnceCell::new(),
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
ALTER TABLE sealkit_chunks ADD COLUMN IF NOT EXISTS lo_key TEXT;
ALTER TABLE sealkit_chunks ADD COLUMN IF NOT EXISTS hi_key TEXT;
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

fn pg_row(r: &tokio_postgres::Row, layout: &PgLayout) -> Row {
    let values = layout
        .text
        .iter()
        .enumerate()
        .map(|(i, &t)| r.get::<_, Option<Vec<u8>>>(2 + i).map(|b| pg_value(b, t)))
        .collect();
    Row {
        pk: layout.key(r, 0),
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

/// Checks the job's table against the catalog: keys integers (walked in key ranges) or
/// text-like (`text`, `varchar`, `char`, `uuid`: walked in key order); columns `bytea`, or
/// text with a declared encoding.
async fn table_layout(client: &tokio_postgres::Client, spec: &JobSpec) -> Result<PgLayout> {
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
    let key_type = match pk_type.as_str() {
        "smallint" | "integer" | "bigint" => "bigint",
        "text" => "text",
        "character varying" => "varchar",
        "character" => "bpchar",
        "uuid" => "uuid",
        other => {
            return Err(Error::misconfigured(format!(
                "the key column {} of {} is {other}: jobs walk integer (smallint, integer, bigint), text (text, varchar, char) or uuid keys; add such a key column (e.g. `ALTER TABLE {} ADD COLUMN sealkit_id bigserial UNIQUE`) and pass it with --pk",
                spec.pk, spec.table, spec.table
            )));
        }
    };
    let text = spec
        .columns
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
        .collect::<Result<Vec<bool>>>()?;
    Ok(PgLayout { key_type, text })
}

impl PgStore {
    /// Connects (without TLS: for a database on a private network or loopback; put TLS in
    /// front with a proxy otherwise).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with_password(url, None).await
    }

    /// Connects as [`PgStore::connect`] does, signing in with `password` (fetched from a
    /// secret store, so that it appears in no URL, command line or log) instead of the URL's.
    pub async fn connect_with_password(url: &str, password: Option<&[u8]>) -> Result<Self> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| db_err("parsing the PostgreSQL URL", e))?;
        if let Some(password) = password {
            config.password(password);
        }
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
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
    /// The job's rows that `sql` selects, with its parameters bound to `args`.
    async fn query_rows(
        &self,
        layout: &PgLayout,
        sql: &str,
        args: &[Box<dyn ToSql + Sync + Send>],
        what: &str,
    ) -> Result<Vec<Row>> {
        let client = self.client.lock().await;
        let rows = client
            .query(sql, &params(args))
            .await
            .map_err(|e| db_err(what, e))?;
        Ok(rows.iter().map(|r| pg_row(r, layout)).collect())
    }

    fn select(spec: &JobSpec, layout: &PgLayout) -> String {
        let mut cols = vec![layout.key_read(&spec.pk)];
        cols.push(
            spec.tenant_column
                .as_ref()
                .map(|t| format!("{t}::text"))
                .unwrap_or_else(|| "NULL::text".into()),
        );
        cols.extend(
            spec.columns
                .iter()
                .zip(&layout.text)
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

    /// Rows of the table in `chunk` now.
    async fn count_in(
        client: &impl tokio_postgres::GenericClient,
        spec: &JobSpec,
        layout: &PgLayout,
        chunk: &Chunk,
    ) -> Result<i64> {
        let (condition, keys) = chunk_condition(&spec.pk, chunk, |n| layout.key_param(n));
        let sql = format!("SELECT COUNT(*) FROM {} WHERE {condition}", spec.table);
        let args: Vec<_> = keys.iter().map(key_param).collect();
        Ok(client
            .query_one(&sql, &params(&args))
            .await
            .map_err(|e| db_err("counting a chunk's rows", e))?
            .get(0))
    }

    /// Creates a new text-key job's chunks: every `chunk_rows`th key in key order starts one.
    async fn add_text_chunks(
        tx: &tokio_postgres::Transaction<'_>,
        spec: &JobSpec,
        layout: &PgLayout,
    ) -> Result<()> {
        let sql = format!(
            "SELECT k FROM (SELECT {key} AS k, row_number() OVER (ORDER BY {pk}) AS n FROM {t}) s
             WHERE n % $1 = 1 AND n > 1 ORDER BY n",
            key = layout.key_read(&spec.pk),
            pk = spec.pk,
            t = spec.table
        );
        let starts = tx
            .query(&sql, &[&spec.chunk_rows])
            .await
            .map_err(|e| db_err("chunking the table's keys", e))?
            .iter()
            .map(|r| layout.key(r, 0))
            .collect();
        let (mut from, mut to) = (Vec::new(), Vec::new());
        for (_, lo, hi) in text_chunks(starts) {
            from.push(lo.map(|k| k.to_string()));
            to.push(hi.map(|k| k.to_string()));
        }
        tx.execute(
            "INSERT INTO sealkit_chunks (job, lo, hi, state, lo_key, hi_key)
             SELECT $1, n - 1, n, 'pending', lo_key, hi_key FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u(lo_key, hi_key, n)",
            &[&spec.job, &from, &to],
        )
        .await
        .map_err(|e| db_err("creating chunks", e))?;
        Ok(())
    }

    /// Puts back to pending the finished text-key chunks that hold more rows than when they
    /// were done: rows inserted since (text keys, unlike integer ones, land anywhere).
    async fn reopen_grown(
        tx: &tokio_postgres::Transaction<'_>,
        spec: &JobSpec,
        layout: &PgLayout,
    ) -> Result<()> {
        let done = tx
            .query(
                "SELECT lo, hi, lo_key, hi_key, seen FROM sealkit_chunks WHERE job = $1 AND state = 'done' AND seen >= 0",
                &[&spec.job],
            )
            .await
            .map_err(|e| db_err("reading the chunks", e))?;
        for r in done {
            let chunk = layout.ledger_chunk(&r, 0);
            let seen: i64 = r.get(4);
            if PgDb::count_in(tx, spec, layout, &chunk).await? > seen {
                tx.execute(
                    "UPDATE sealkit_chunks SET state = 'pending', worker = NULL WHERE job = $1 AND lo = $2",
                    &[&spec.job, &chunk.lo],
                )
                .await
                .map_err(|e| db_err("reopening a chunk", e))?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl JobLedger for PgJob {
    async fn prepare(&self) -> Result<()> {
        let spec = &self.spec;
        let layout = self.layout().await?;
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
                if !layout.int_keys() {
                    PgDb::reopen_grown(&tx, spec, layout).await?;
                }
            }
            Some(_) => {
                return Err(Error::invalid_input(format!(
                    "job {} exists with another spec; use a new job name",
                    spec.job
                )));
            }
            None if !layout.int_keys() => {
                tx.execute(
                    "INSERT INTO sealkit_jobs (job, spec, max_pk) VALUES ($1, $2, -1)",
                    &[&spec.job, &spec.stored()],
                )
                .await
                .map_err(|e| db_err("creating the job", e))?;
                PgDb::add_text_chunks(&tx, spec, layout).await?;
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
        let layout = self.layout().await?;
        let mut client = self.db.client.lock().await;
        let now = now();
        let tx = client.transaction().await.map_err(|e| db_err("begin", e))?;
        // A scalar subquery (an InitPlan, evaluated once): a subquery in FROM may be rescanned
        // per row and claim every chunk.
        let claim = "UPDATE sealkit_chunks SET state = 'running', worker = $3, lease_until = $4
             WHERE job = $1 AND lo = (SELECT lo FROM sealkit_chunks WHERE job = $1 AND (state = 'pending'
                   OR (state = 'running' AND (lease_until < $2 OR worker = $3)))
                   ORDER BY lo LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING lo, hi, lo_key, hi_key";
        let args: [&(dyn ToSql + Sync); 4] = [&spec.job, &now, &worker, &(now + spec.lease_secs)];
        let mut row = tx
            .query_opt(claim, &args)
            .await
            .map_err(|e| db_err("claiming a chunk", e))?;
        if row.is_none() && layout.int_keys() {
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
        Ok(row.map(|r| layout.ledger_chunk(&r, 0)))
    }

    async fn add_counts(&self, chunk: &Chunk, counts: ChunkCounts) -> Result<()> {
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

    async fn release(&self, chunk: &Chunk) -> Result<()> {
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
        let layout = self.layout().await?;
        let mut client = self.db.client.lock().await;
        create_schema(&mut client).await?;
        let rows = client
            .query(
                "SELECT lo, hi, lo_key, hi_key, seen FROM sealkit_chunks WHERE job = $1 AND seen >= 0 ORDER BY lo",
                &[&self.spec.job],
            )
            .await
            .map_err(|e| db_err("reading the chunks", e))?;
        Ok(rows
            .iter()
            .map(|r| (layout.ledger_chunk(r, 0), r.get(4)))
            .collect())
    }

    async fn counts(&self) -> Result<Counts> {
        let job = self.spec.job.as_str();
        let note: Option<String> = {
            let mut client = self.db.client.lock().await;
            create_schema(&mut client).await?;
            client
                .query_opt("SELECT note FROM sealkit_jobs WHERE job = $1", &[&job])
                .await
                .map_err(|e| db_err("reading the job", e))?
                .ok_or_else(|| super::unknown_job(job))?
                .get(0)
        };
        // A recorded job passed the catalog check when it was prepared.
        let layout = self.layout().await?;
        let client = self.db.client.lock().await;
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
                "SELECT lo, hi, lo_key, hi_key, worker, lease_until FROM sealkit_chunks WHERE job = $1 AND state = 'running' ORDER BY lo",
                &[&job],
            )
            .await
            .map_err(|e| db_err("reading held chunks", e))?
            .iter()
            .map(|r| HeldChunk::from_lease(layout.ledger_chunk(r, 0), r.get(4), r.get(5), self.spec.lease_secs))
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
    /// The table's layout, checked against the catalog on first use.
    async fn layout(&self) -> Result<&PgLayout> {
        self.layout
            .get_or_try_init(|| async {
                let client = self.db.client.lock().await;
                table_layout(&client, &self.spec).await
            })
            .await
    }
}

#[async_trait]
impl JobTable for PgJob {
    async fn rows(&self, chunk: &Chunk) -> Result<Vec<Row>> {
        let spec = &self.spec;
        let layout = self.layout().await?;
        let (condition, keys) = chunk_condition(&spec.pk, chunk, |n| layout.key_param(n));
        let sql = format!(
            "SELECT {} FROM {} WHERE {condition} ORDER BY {pk}",
            PgDb::select(spec, layout),
            spec.table,
            pk = spec.pk
        );
        let args: Vec<_> = keys.iter().map(key_param).collect();
        self.db
            .query_rows(layout, &sql, &args, "reading a chunk")
            .await
    }

    async fn row(&self, pk: &RowKey) -> Result<Option<Row>> {
        let spec = &self.spec;
        let layout = self.layout().await?;
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = {}",
            PgDb::select(spec, layout),
            spec.table,
            spec.pk,
            layout.key_param(1)
        );
        let rows = self
            .db
            .query_rows(layout, &sql, &[key_param(pk)], "re-reading a row")
            .await?;
        Ok(rows.into_iter().next())
    }

    async fn swap(&self, u: &Update) -> Result<bool> {
        let spec = &self.spec;
        let layout = self.layout().await?;
        let text = layout.text[u.column];
        let col = &spec.columns[u.column].name;
        let sql = format!(
            "UPDATE {t} SET {col} = {new} WHERE {pk} = {key} AND {col} = {old}",
            t = spec.table,
            pk = spec.pk,
            key = layout.key_param(2),
            new = write_expr("$1::bytea", text),
            old = write_expr("$3::bytea", text),
        );
        let args: [Box<dyn ToSql + Sync + Send>; 3] = [
            Box::new(u.new.bytes().to_vec()),
            key_param(&u.pk),
            Box::new(u.old.bytes().to_vec()),
        ];
        let client = self.db.client.lock().await;
        Ok(client
            .execute(&sql, &params(&args))
            .await
            .map_err(|e| db_err("updating a value", e))?
            == 1)
    }

    async fn scan(&self, after: Option<&RowKey>, limit: i64) -> Result<Vec<Row>> {
        let spec = &self.spec;
        let layout = self.layout().await?;
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut condition = String::new();
        if let Some(after) = after {
            args.push(key_param(after));
            condition = format!("WHERE {} > {}", spec.pk, layout.key_param(1));
        }
        args.push(Box::new(limit));
        let sql = format!(
            "SELECT {} FROM {} {condition} ORDER BY {pk} LIMIT ${}",
            PgDb::select(spec, layout),
            spec.table,
            args.len(),
            pk = spec.pk
        );
        self.db.query_rows(layout, &sql, &args, "scanning").await
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

    async fn count_in(&self, chunk: &Chunk) -> Result<i64> {
        let layout = self.layout().await?;
        let client = self.db.client.lock().await;
        PgDb::count_in(&*client, &self.spec, layout, chunk).await
    }
}

#[async_trait]
impl JobStore for PgJob {
    async fn commit(
        &self,
        chunk: &Chunk,
        updates: &[Update],
        counts: ChunkCounts,
    ) -> Result<Vec<Update>> {
        let spec = &self.spec;
        let layout = self.layout().await?;
        let mut client = self.db.client.lock().await;
        let tx = client.transaction().await.map_err(|e| db_err("begin", e))?;
        // One compare-and-swap statement per column for the whole chunk.
        let mut lost = Vec::new();
        for (i, column) in spec.columns.iter().enumerate() {
            let batch: Vec<&Update> = updates.iter().filter(|u| u.column == i).collect();
            if batch.is_empty() {
                continue;
            }
            // Keys travel as text and are cast to the key's type.
            let ids: Vec<String> = batch.iter().map(|u| u.pk.to_string()).collect();
            let new: Vec<&[u8]> = batch.iter().map(|u| u.new.bytes()).collect();
            let old: Vec<&[u8]> = batch.iter().map(|u| u.old.bytes()).collect();
            let sql = format!(
                "UPDATE {t} AS t SET {col} = {new} FROM unnest($1::text[], $2::bytea[], $3::bytea[]) AS u(id, new, old)
                 WHERE t.{pk} = u.id::{key_type} AND t.{col} = {old} RETURNING {key}",
                t = spec.table,
                col = column.name,
                pk = spec.pk,
                key_type = layout.key_type,
                key = layout.key_read(&format!("t.{}", spec.pk)),
                new = write_expr("u.new", layout.text[i]),
                old = write_expr("u.old", layout.text[i]),
            );
            let done: std::collections::HashSet<RowKey> = tx
                .query(&sql, &[&ids, &new, &old])
                .await
                .map_err(|e| db_err("updating values", e))?
                .iter()
                .map(|r| layout.key(r, 0))
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
