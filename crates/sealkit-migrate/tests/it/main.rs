//! Re-encryption jobs against real SQLite files and the PostgreSQL peer.

mod moves;
mod postgres;
mod sqlite;
mod store_suite;
mod support;
mod text_keys;
