//! Re-encryption jobs: move the values of a table's columns to envelopes under a target key,
//! resumably and crash-safely, over SQLite (embedded) or PostgreSQL (production, several
//! workers at once).
//!
//! Three kinds of move, chosen per column by its declared source format:
//!
//! - **legacy → KMS**: `aes-gcm-iv16`, `aes-gcm-nonce12`, `fernet` (under the legacy key),
//!   `vault-transit:MOUNT/NAME` (feature `vault`) or `plaintext` values are opened and sealed
//!   as envelopes bound to `(table, column, id[, tenant])`;
//! - **KEK rotation / provider → provider**: `envelope` columns are rewrapped to the target
//!   key's primary version — only the key slot changes, the data ciphertext does not.
//!
//! How it stays correct:
//!
//! - the table is split into primary-key chunks recorded in `sealkit_chunks`; a worker claims
//!   one (`FOR UPDATE SKIP LOCKED` on PostgreSQL), converts its rows, then applies every update
//!   **and** marks the chunk done in one transaction — a crash loses at most the work of the
//!   chunk in flight, which is redone;
//! - every update is a compare-and-swap on the old value (`… WHERE id = ? AND col = old`), so
//!   a value the application changed meanwhile is re-read and converted again, never
//!   overwritten; converting is idempotent (a value already under the target is skipped);
//! - a claimed chunk has a lease; a crashed worker's chunks are claimed again when it expires
//!   (at once by a worker with the same name);
//! - a provider outage (`Unavailable`, `Throttled`) pauses the job — the chunk is released
//!   and the status says why — and the job resumes when the provider answers again;
//! - rows appended after the job started are chunked when the worker reaches them (integer
//!   keys), or fall in an open-ended chunk that a re-run runs again once it has grown (text and
//!   uuid keys, split at every `chunk_rows`th key in key order).
//!
//! Primary keys are integers, text or uuids ([`RowKey`]); columns hold BLOB/BYTEA values, or
//! text with a declared encoding ([`StoredEncoding`]).
//!
//! Databases are drivers behind features, as in sqlx: `sqlite` ([`SqliteStore`]) and
//! `postgres` ([`PgStore`]), both on by default; a PostgreSQL-only build
//! (`--no-default-features --features postgres`) compiles no SQLite. A [`Store`] binds a
//! [`JobSpec`] once into a [`JobStore`]: the job's ledger ([`JobLedger`]) and its table
//! ([`JobTable`]). Legacy values are opened by a [`Decoder`] per source format.
#![forbid(unsafe_code)]

mod convert;
pub mod decode;
mod job;
mod spec;
mod store;

pub use decode::Decoder;
pub use job::{JobStatus, Migrator, Plan, RunReport, VerifyProgress, VerifyReport};
pub use spec::{ColumnSpec, JobSpec, SourceFormat, StoredEncoding};
#[cfg(feature = "postgres")]
pub use store::PgStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{
    Chunk, ChunkCounts, Counts, HeldChunk, JobLedger, JobStore, JobTable, KeyRange, Row, RowKey,
    Store, Update, Value, open_store, open_store_with_password,
};
