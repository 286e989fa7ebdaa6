//! The provider conformance suite: the same assertions, run against every provider's real
//! backend (local files, OpenBao, moto, …) by that provider's tests — key providers through
//! [`run_all`], secret sources through [`secret_source_conforms`]. Test support, not
//! API-stable.
//!
//! ```ignore
//! sealkit_conformance::run_all(&provider, &provider, "vault-transit://transit/conf").await;
//! ```
//!
//! Also: [`peers::peer_env`] for tests that need a running peer, and [`FaultProxy`], a loopback
//! TCP proxy that delays, resets or refuses connections to simulate a slow or failing service,
//! and [`SilentService`], which accepts connections and never answers.
#![forbid(unsafe_code)]

pub mod peers;
mod proxy;
mod silent;
mod suite;

pub use proxy::{FaultMode, FaultProxy};
pub use silent::{SilentService, ends_against_a_silent_service};
pub use suite::*;
