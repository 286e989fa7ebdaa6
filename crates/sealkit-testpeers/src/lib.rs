//! Test peers: servers that speak a cloud service's real wire API with real cryptography, on
//! 127.0.0.1, for services no emulator installable from the package registries covers. Each
//! is checked against the vendor's official client (`fidelity/`, run by the tests), so it
//! cannot drift into a mock.
//!
//! - [`gcp_kms::CloudKms`]: Google Cloud KMS v1, REST/JSON, anonymous or with Google's
//!   service-account authentication ([`gcp_auth`]: self-signed JWTs and an OAuth2 token
//!   endpoint).
//!
//! - [`azure_kv::KeyVault`]: Azure Key Vault keys and secrets over HTTPS ([`tls`]), behind
//!   the Entra-style tenant of [`azure_auth`] (client secrets, federated tokens, a managed
//!   identity endpoint).
//!
//! Every peer serves through [`http::serve`], whose `POST /_peer/fault` injects the failures
//! services have (429 with `Retry-After`, 503, stalls, reset connections).
#![forbid(unsafe_code)]

pub mod azure_auth;
pub mod azure_kv;
pub mod gcp_auth;
pub mod gcp_kms;
pub mod http;
mod time;
pub mod tls;
