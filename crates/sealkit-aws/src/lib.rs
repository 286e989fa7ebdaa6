//! Sealkit's provider for AWS KMS and AWS Secrets Manager.
//!
//! - [`AwsKms`] serves `aws-kms://alias/NAME` keys that Sealkit manages with *versions*: each
//!   version is its own KMS key, reachable as `alias/NAME/vN`, and `alias/NAME` points at the
//!   primary one. Rotation creates the next key and moves the alias (AWS's documented manual
//!   rotation), so a version can be disabled on its own and old DEKs are rewrapped with
//!   `ReEncrypt` without their plaintext leaving KMS. `aws-kms://KEY-ID-OR-ARN` names a key
//!   Sealkit does not manage (one version, `1`; AWS's automatic rotation stays transparent).
//!   The DEK scope is the KMS encryption context.
//! - [`AwsSecrets`]: Secrets Manager values by version id or stage (`AWSCURRENT`,
//!   `AWSPREVIOUS`), string or binary, and a JSON field with `NAME#field`.
//!
//! Configuration comes from the usual variables (`AWS_REGION`, `AWS_ENDPOINT_URL`, the
//! credential chain); `SEALKIT_AWS_ENDPOINT` overrides the endpoint. See
//! `docs/providers/aws.md` for the IAM policy and the emulator's differences.
#![forbid(unsafe_code)]

mod error;
mod kms;
mod secrets;
mod settings;

pub use kms::{AwsKms, SCHEME};
pub use secrets::AwsSecrets;
pub use settings::{AwsSettings, PROVIDER};
