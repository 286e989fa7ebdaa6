//! PostgreSQL jobs (filled in below).
