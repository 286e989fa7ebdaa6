//! Tests of the facade against real key files and a real SQLite database.

mod audit;
mod compact;
mod keyring;
mod secrets;
mod support;
