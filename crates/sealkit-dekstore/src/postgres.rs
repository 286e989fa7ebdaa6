//! The PostgreSQL DEK store: reservations are one `UPDATE … RETURNING` on a row locked for
//! the statement, so processes on any host share a DEK's message budget.

use async_trait::async_trait;
use sealkit_core::dek_store::{DekId, DekRecord, DekStore};
use sealkit_core::{Algorithm, Error, KeyUri, Result, WrappedKey};

use crate::row::{
    COMPONENT, algorithm, dek_id, parse_wraps, state, table_name, unavailable, wraps_json,
};

/// A DEK table in a PostgreSQL database.
pub struct PgDekStore {
    client: tokio::sync::Mutex<tokio_postgres::Client>,
    host: String,
    table: String,
}

impl std::fmt::Debug for PgDekStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDekStore")
            .field("at", &self.host)
            .field("table", &self.table)
            .finish()
    }
}

/// Classifies a PostgreSQL error: connection failures and shutdowns are outages; the rest is
/// for a person to fix, in the server's words.
fn pg_err(what: &str, e: tokio_postgres::Error) -> Error {
    let Some(code) = e.code().map(|c| c.code().to_string()) else {
        return unavailable(what, e);
    };
    let message = e
        .as_db_error()
        .map(|db| db.message().to_string())
        .unwrap_or_else(|| e.to_string());
    if ["08", "57", "53", "40"].iter().any(|p| code.starts_with(p)) {
        unavailable(what, message)
    } else if code == "42501" {
        Error::permission_denied(
            COMPONENT,
            format!("{what}: {message}; grant the role access to the DEK table"),
        )
    } else {
        Error::misconfigured(format!("{COMPONENT}: {what}: {message} (SQLSTATE {code})"))
    }
}

const COLUMNS: &str =
    "id, key_uri, scope, subject, algorithm, wraps, created, message_limit, reserved, state, used";

fn record(r: &tokio_postgres::Row) -> Result<DekRecord> {
    let id: Vec<u8> = r.get(0);
    let mut rec = DekRecord::new(
        dek_id(&id)?,
        KeyUri::parse(r.get::<_, &str>(1))?,
        r.get(2),
        algorithm(i64::from(r.get::<_, i16>(4)), &id)?,
        parse_wraps(r.get::<_, &str>(5), &id)?,
        r.get::<_, i64>(7).max(0) as u64,
    );
    rec.subject = r.get(3);
    rec.created_unix = r.get(6);
    rec.reserved = r.get::<_, i64>(8).max(0) as u64;
    rec.used = r.get::<_, i64>(10).max(0) as u64;
    rec.state = state(r.get::<_, &str>(9), &id)?;
    Ok(rec)
}

impl PgDekStore {
    /// Connects (without TLS: for a database on a private network or loopback) to the DEK
    /// table `table`.
    pub async fn connect(url: &str, table: &str) -> Result<Self> {
        let table = table_name(table)?;
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| pg_err("connecting to PostgreSQL", e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::error!(error = %e, "DEK store connection closed");
            }
        });
        Ok(Self {
            client: tokio::sync::Mutex::new(client),
            host: url.rsplit('@').next().unwrap_or("").to_string(),
            table,
        })
    }

    async fn query(
        &self,
        what: &str,
        sql: &str,
        args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<DekRecord>> {
        let client = self.client.lock().await;
        client
            .query(sql, args)
            .await
            .map_err(|e| pg_err(what, e))?
            .iter()
            .map(record)
            .collect()
    }

    async fn execute(
        &self,
        what: &str,
        sql: &str,
        args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        let client = self.client.lock().await;
        client.execute(sql, args).await.map_err(|e| pg_err(what, e))
    }
}

#[async_trait]
impl DekStore for PgDekStore {
    fn describe(&self) -> String {
        format!("postgres://{} ({})", self.host, self.table)
    }

    async fn prepare(&self) -> Result<()> {
        let t = &self.table;
        let client = self.client.lock().await;
        // Serialised: CREATE … IF NOT EXISTS run by several sessions at once can collide.
        client
            .batch_execute(&format!(
                "BEGIN;
                 SELECT pg_advisory_xact_lock(hashtext('sealkit_dekstore:{t}'));
                 CREATE TABLE IF NOT EXISTS {t} (
                    id BYTEA PRIMARY KEY, key_uri TEXT NOT NULL, scope TEXT NOT NULL, subject TEXT,
                    algorithm SMALLINT NOT NULL, wraps TEXT NOT NULL, created BIGINT NOT NULL,
                    message_limit BIGINT NOT NULL, reserved BIGINT NOT NULL, state TEXT NOT NULL,
                    used BIGINT NOT NULL DEFAULT 0);
                 CREATE INDEX IF NOT EXISTS {t}_active ON {t} (key_uri, scope, state);
                 CREATE INDEX IF NOT EXISTS {t}_subject ON {t} (subject);
                 COMMIT;"
            ))
            .await
            .map_err(|e| pg_err("creating the DEK table", e))
    }

    async fn insert(&self, r: &DekRecord) -> Result<()> {
        let sql = format!(
            "INSERT INTO {} ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            self.table
        );
        let code = i16::from(r.algorithm.code());
        let (limit, reserved, used) = (r.message_limit as i64, r.reserved as i64, r.used as i64);
        self.execute(
            "storing a DEK",
            &sql,
            &[
                &r.id.as_slice(),
                &r.key.as_str(),
                &r.scope,
                &r.subject,
                &code,
                &wraps_json(&r.wraps),
                &r.created_unix,
                &limit,
                &reserved,
                &r.state.as_str(),
                &used,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn get(&self, id: &DekId) -> Result<Option<DekRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE id = $1", self.table);
        Ok(self
            .query("reading a DEK", &sql, &[&id.as_slice()])
            .await?
            .pop())
    }

    async fn active(
        &self,
        key: &KeyUri,
        scope: &str,
        algorithm: Algorithm,
    ) -> Result<Option<DekRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE key_uri = $1 AND scope = $2 AND algorithm = $3 AND state = 'active'
             ORDER BY created DESC LIMIT 1",
            self.table
        );
        let code = i16::from(algorithm.code());
        Ok(self
            .query(
                "finding the active DEK",
                &sql,
                &[&key.as_str(), &scope, &code],
            )
            .await?
            .pop())
    }

    async fn reserve(&self, id: &DekId, messages: u64) -> Result<u64> {
        // The subquery locks the row; the grant is computed from the values it read.
        let sql = format!(
            "WITH old AS (SELECT reserved, message_limit FROM {t} WHERE id = $1 AND state = 'active' FOR UPDATE),
                  grant_ AS (SELECT GREATEST(0, LEAST($2, message_limit - reserved)) AS n, reserved, message_limit FROM old)
             UPDATE {t} SET reserved = grant_.reserved + grant_.n,
                 state = CASE WHEN grant_.reserved + grant_.n >= grant_.message_limit THEN 'retired' ELSE {t}.state END
             FROM grant_ WHERE {t}.id = $1 RETURNING grant_.n",
            t = self.table
        );
        let messages = messages.min(i64::MAX as u64) as i64;
        let client = self.client.lock().await;
        let row = client
            .query_opt(&sql, &[&id.as_slice(), &messages])
            .await
            .map_err(|e| pg_err("reserving a DEK's messages", e))?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
    }

    async fn record_use(&self, id: &DekId, messages: u64) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET used = LEAST(reserved, used + $2) WHERE id = $1",
            self.table
        );
        let messages = messages.min(i64::MAX as u64) as i64;
        self.execute("recording a DEK's use", &sql, &[&id.as_slice(), &messages])
            .await
            .map(|_| ())
    }

    async fn retire(&self, id: &DekId) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET state = 'retired' WHERE id = $1 AND state = 'active'",
            self.table
        );
        self.execute("retiring a DEK", &sql, &[&id.as_slice()])
            .await
            .map(|_| ())
    }

    async fn replace_wraps(
        &self,
        id: &DekId,
        expected: &[WrappedKey],
        wraps: &[WrappedKey],
    ) -> Result<bool> {
        let key = wraps
            .first()
            .map(|w| w.key.uri.to_string())
            .ok_or_else(|| {
                Error::invalid_input("a DEK needs at least one wrap (shred it to destroy them)")
            })?;
        let sql = format!(
            "UPDATE {} SET wraps = $3, key_uri = $4 WHERE id = $1 AND wraps = $2 AND state != 'shredded'",
            self.table
        );
        let n = self
            .execute(
                "replacing a DEK's wraps",
                &sql,
                &[
                    &id.as_slice(),
                    &wraps_json(expected),
                    &wraps_json(wraps),
                    &key,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn shred(&self, subject: &str) -> Result<u64> {
        let sql = format!(
            "UPDATE {} SET wraps = '[]', state = 'shredded' WHERE subject = $1 AND state != 'shredded'",
            self.table
        );
        let n = self.execute("shredding DEKs", &sql, &[&subject]).await?;
        // Dead row versions keep the old wraps until vacuumed.
        self.execute(
            "vacuuming the DEK table",
            &format!("VACUUM {}", self.table),
            &[],
        )
        .await?;
        Ok(n)
    }

    async fn list(&self, after: Option<&DekId>, limit: u64) -> Result<Vec<DekRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE id > $1 ORDER BY id LIMIT $2",
            self.table
        );
        let after: &[u8] = after.map_or(&[], |a| a.as_slice());
        let limit = limit.min(i64::MAX as u64) as i64;
        self.query("listing DEKs", &sql, &[&after, &limit]).await
    }
}
