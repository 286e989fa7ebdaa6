//! Sealkit's Google Cloud provider: Cloud KMS keys ([`GcpKms`], `gcp-kms://projects/P/
//! locations/L/keyRings/R/cryptoKeys/K`) and Secret Manager secrets ([`GcpSecrets`]).
//!
//! [`GcpSecrets`] reads secret versions (`latest`, a number, or an alias) with Google's
//! official client (`google-cloud-secretmanager-v1`) and checks each payload's CRC32C.
//! Credentials are Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, the
//! gcloud user credentials, workload identity, the metadata server);
//! `SEALKIT_GCP_SECRETS_ENDPOINT` points the client at another endpoint, such as an emulator,
//! which is called without credentials. See `docs/providers/gcp.md` for the IAM roles and the
//! emulator's differences.
#![forbid(unsafe_code)]

mod error;
mod kms;
mod secrets;
mod settings;

pub use kms::{GcpKms, SCHEME};
pub use secrets::GcpSecrets;
pub use settings::{
    GcpSettings, KMS_ENDPOINT_VARIABLE, PROJECT_VARIABLES, PROVIDER, SECRETS_ENDPOINT_VARIABLE,
};
