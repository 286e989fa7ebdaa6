//! The SQLite DEK store: one connection, immediate transactions for reservations, and
//! `secure_delete` so a shredded wrap's bytes are overwritten in the file, not left in a
//! free page.

use std::sync::Mutex;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use sealkit_core::dek_store::{DekId, DekRecord, DekStore};
use sealkit_core::{Algorithm, Error, KeyUri, Result, WrappedKey};

use crate::row::{
    COMPONENT, algorithm, dek_id, parse_wraps, state, table_name, unavailable, wraps_json,
};

/// A DEK table in an SQLite database (WAL mode, 10-second busy timeout).
pub struct SqliteDekStore {
    conn: Mutex<rusqlite::Connection>,
    path: String,
    table: String,
}

impl std::fmt::Debug for SqliteDekStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDekStore")
            .field("path", &self.path)
            .field("table", &self.table)
            .finish()
    }
}

/// Classifies an SQLite error: busy or locked is an outage to retry; anything else is for a
/// person to fix.
fn sqlite_err(what: &str, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
        {
            unavailable(what, e)
        }
        _ => Error::misconfigured(format!("{COMPONENT}: {what}: {e}")),
    }
}

const COLUMNS: &str =
    "id, key_uri, scope, subject, algorithm, wraps, created, message_limit, reserved, state, used";

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<DekRecord>> {
    let id: Vec<u8> = r.get(0)?;
    let key: String = r.get(1)?;
    let scope: String = r.get(2)?;
    let subject: Option<String> = r.get(3)?;
    let code: i64 = r.get(4)?;
    let wraps: String = r.get(5)?;
    let created: i64 = r.get(6)?;
    let limit: i64 = r.get(7)?;
    let reserved: i64 = r.get(8)?;
    let state_name: String = r.get(9)?;
    let used: i64 = r.get(10)?;
    Ok((|| {
        let mut rec = DekRecord::new(
            dek_id(&id)?,
            KeyUri::parse(&key)?,
            scope,
            algorithm(code, &id)?,
            parse_wraps(&wraps, &id)?,
            limit.max(0) as u64,
        );
        rec.subject = subject;
        rec.created_unix = created;
        rec.reserved = reserved.max(0) as u64;
        rec.used = used.max(0) as u64;
        rec.state = state(&state_name, &id)?;
        Ok(rec)
    })())
}

impl SqliteDekStore {
    /// Opens the database at `path` (creating the file if needed: the store may live in a
    /// database of its own) with the DEK table `table`.
    pub fn open(path: &str, table: &str) -> Result<Self> {
        let table = table_name(table)?;
        let conn = rusqlite::Connection::open(path)
            .map_err(|e| sqlite_err(&format!("opening {path}"), e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| sqlite_err("busy timeout", e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| sqlite_err("WAL", e))?;
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(|e| sqlite_err("secure_delete", e))?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_string(),
            table,
        })
    }

    fn with<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn).map_err(|e| sqlite_err(what, e))
    }

    fn query(
        &self,
        what: &str,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<DekRecord>> {
        self.with(what, |c| {
            let mut stmt = c.prepare_cached(sql)?;
            let rows = stmt.query_map(args, record)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?
        .into_iter()
        .collect()
    }
}

#[async_trait]
impl DekStore for SqliteDekStore {
    fn describe(&self) -> String {
        format!("sqlite:{} ({})", self.path, self.table)
    }

    async fn prepare(&self) -> Result<()> {
        let t = &self.table;
        self.with("creating the DEK table", |c| {
            c.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    id BLOB PRIMARY KEY, key_uri TEXT NOT NULL, scope TEXT NOT NULL, subject TEXT,
                    algorithm INTEGER NOT NULL, wraps TEXT NOT NULL, created INTEGER NOT NULL,
                    message_limit INTEGER NOT NULL, reserved INTEGER NOT NULL, state TEXT NOT NULL,
                    used INTEGER NOT NULL DEFAULT 0);
                 CREATE INDEX IF NOT EXISTS {t}_active ON {t} (key_uri, scope, state);
                 CREATE INDEX IF NOT EXISTS {t}_subject ON {t} (subject);"
            ))
        })
    }

    async fn insert(&self, r: &DekRecord) -> Result<()> {
        let sql = format!(
            "INSERT INTO {} ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            self.table
        );
        self.with("storing a DEK", |c| {
            c.execute(
                &sql,
                params![
                    r.id.as_slice(),
                    r.key.as_str(),
                    r.scope,
                    r.subject,
                    i64::from(r.algorithm.code()),
                    wraps_json(&r.wraps),
                    r.created_unix,
                    r.message_limit as i64,
                    r.reserved as i64,
                    r.state.as_str(),
                    r.used as i64
                ],
            )
            .map(|_| ())
        })
    }

    async fn get(&self, id: &DekId) -> Result<Option<DekRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE id = ?1", self.table);
        Ok(self.query("reading a DEK", &sql, &[&id.as_slice()])?.pop())
    }

    async fn active(
        &self,
        key: &KeyUri,
        scope: &str,
        algorithm: Algorithm,
    ) -> Result<Option<DekRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE key_uri = ?1 AND scope = ?2 AND algorithm = ?3 AND state = 'active'
             ORDER BY created DESC LIMIT 1",
            self.table
        );
        Ok(self
            .query(
                "finding the active DEK",
                &sql,
                &[&key.as_str(), &scope, &i64::from(algorithm.code())],
            )?
            .pop())
    }

    async fn reserve(&self, id: &DekId, messages: u64) -> Result<u64> {
        let t = &self.table;
        self.with("reserving a DEK's messages", |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let row: Option<(i64, i64)> = tx
                .query_row(
                    &format!(
                        "SELECT reserved, message_limit FROM {t} WHERE id = ?1 AND state = 'active'"
                    ),
                    [id.as_slice()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((reserved, limit)) = row else {
                return Ok(0);
            };
            let granted = (messages as i64).min(limit - reserved).max(0);
            tx.execute(
                &format!(
                    "UPDATE {t} SET reserved = reserved + ?2,
                     state = CASE WHEN reserved + ?2 >= message_limit THEN 'retired' ELSE state END
                     WHERE id = ?1"
                ),
                params![id.as_slice(), granted],
            )?;
            tx.commit()?;
            Ok(granted as u64)
        })
    }

    async fn record_use(&self, id: &DekId, messages: u64) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET used = MIN(reserved, used + ?2) WHERE id = ?1",
            self.table
        );
        self.with("recording a DEK's use", |c| {
            c.execute(
                &sql,
                params![id.as_slice(), messages.min(i64::MAX as u64) as i64],
            )
            .map(|_| ())
        })
    }

    async fn retire(&self, id: &DekId) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET state = 'retired' WHERE id = ?1 AND state = 'active'",
            self.table
        );
        self.with("retiring a DEK", |c| {
            c.execute(&sql, [id.as_slice()]).map(|_| ())
        })
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
            "UPDATE {} SET wraps = ?3, key_uri = ?4 WHERE id = ?1 AND wraps = ?2 AND state != 'shredded'",
            self.table
        );
        self.with("replacing a DEK's wraps", |c| {
            c.execute(
                &sql,
                params![id.as_slice(), wraps_json(expected), wraps_json(wraps), key],
            )
            .map(|n| n == 1)
        })
    }

    async fn shred(&self, subject: &str) -> Result<u64> {
        let sql = format!(
            "UPDATE {} SET wraps = '[]', state = 'shredded' WHERE subject = ?1 AND state != 'shredded'",
            self.table
        );
        self.with("shredding DEKs", |c| {
            let n = c.execute(&sql, [subject])?;
            // The old row versions live on in the write-ahead log until a checkpoint.
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(n as u64)
        })
    }

    async fn list(&self, after: Option<&DekId>, limit: u64) -> Result<Vec<DekRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE id > ?1 ORDER BY id LIMIT ?2",
            self.table
        );
        let after: &[u8] = after.map_or(&[], |a| a.as_slice());
        self.query("listing DEKs", &sql, &[&after, &(limit as i64)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealkit_core::dek_store::DekState;

    #[test]
    fn table_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deks.db");
        let err = SqliteDekStore::open(path.to_str().unwrap(), "deks; DROP TABLE x").unwrap_err();
        assert_eq!(err.kind(), sealkit_core::ErrorKind::Misconfigured);
    }

    #[test]
    fn states_round_trip() {
        for s in [DekState::Active, DekState::Retired, DekState::Shredded] {
            assert_eq!(DekState::parse(s.as_str()), Some(s));
        }
    }
}
