//! Re-encryption jobs against real SQLite files and the PostgreSQL peer.

mod postgres;
mod sqlite;
mod support;
