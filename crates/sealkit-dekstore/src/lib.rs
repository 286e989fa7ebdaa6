//! DEK stores for Sealkit's compact envelopes: [`SqliteDekStore`] (feature `sqlite`) and
//! [`PgDekStore`] (feature `postgres`), both implementing
//! [`DekStore`](sealkit_core::dek_store::DekStore) over one table (`sealkit_deks` by default)
//! in the application's own database.
//!
//! A row holds a DEK's id, master key, scope, subject, algorithm, wraps (a JSON array: one
//! wrap, or two during a provider move), creation time, message budget (limit and reserved)
//! and state. It never holds a key in the clear: losing the table loses the data sealed
//! compactly, so it is backed up with the data.
#![forbid(unsafe_code)]

#[cfg(feature = "postgres")]
mod postgres;
mod row;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::sync::Arc;

use sealkit_core::Result;
use sealkit_core::dek_store::DekStore;

#[cfg(feature = "postgres")]
pub use postgres::PgDekStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteDekStore;

/// The default table name.
pub const DEFAULT_TABLE: &str = "sealkit_deks";

/// Opens the DEK store `db` names — a `postgres://` URL (feature `postgres`) or an SQLite
/// path, optionally `sqlite:PATH` (feature `sqlite`) — over `table`, creating the table if it
/// is missing.
pub async fn open_dek_store(db: &str, table: &str) -> Result<Arc<dyn DekStore>> {
    let store: Arc<dyn DekStore> = if db.starts_with("postgres://")
        || db.starts_with("postgresql://")
    {
        #[cfg(feature = "postgres")]
        {
            Arc::new(PgDekStore::connect(db, table).await?)
        }
        #[cfg(not(feature = "postgres"))]
        return Err(sealkit_core::Error::misconfigured(
            "a PostgreSQL DEK store needs sealkit-dekstore's `postgres` feature",
        ));
    } else {
        #[cfg(feature = "sqlite")]
        {
            Arc::new(SqliteDekStore::open(
                db.strip_prefix("sqlite:").unwrap_or(db),
                table,
            )?)
        }
        #[cfg(not(feature = "sqlite"))]
        return Err(sealkit_core::Error::misconfigured(format!(
            "{db:?} is not a postgres:// URL, and an SQLite DEK store needs sealkit-dekstore's `sqlite` feature"
        )));
    };
    store.prepare().await?;
    Ok(store)
}
