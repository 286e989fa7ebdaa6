//! Tests of the Vault provider against a real OpenBao dev server (started by
//! `cargo xtask peers up`).

mod auth;
mod conformance;
mod faults;
mod secrets;
mod support;
