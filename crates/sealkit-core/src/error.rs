//! The one error type of the core, onto which every provider maps its failures.

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;

/// A `Result` with the core's [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// An underlying error kept as [`core::error::Error::source`].
pub type BoxedSource = Box<dyn core::error::Error + Send + Sync>;

/// Everything that can go wrong in Sealkit, as kinds a caller can act on.
///
/// Messages name what failed and what to do next. They never contain key material or
/// plaintext. The underlying error (an SDK's, an I/O error) is kept as the error's
/// [`source`](core::error::Error::source), not flattened into the message, so
/// `{:#}`-style reports (anyhow) print the whole chain. Authentication failures are deliberately
/// uninformative ([`Error::InvalidCiphertext`]): a caller cannot tell a wrong key from a wrong
/// context or a tampered byte, so the error is no oracle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is not a well-formed envelope (truncated, wrong magic, bad lengths).
    #[error(
        "malformed envelope: {reason}; the input is not a Sealkit envelope or it was truncated"
    )]
    MalformedEnvelope {
        /// Which structural check failed (never secret: the structure is public).
        reason: &'static str,
    },
    /// The envelope uses a format version this build does not know.
    #[error("unsupported envelope format version {version}; upgrade Sealkit to read it")]
    UnsupportedFormat {
        /// The version byte found.
        version: u8,
    },
    /// Authentication failed: wrong key, wrong context, or altered data.
    #[error("ciphertext could not be opened: wrong key, wrong context, or the data was altered")]
    InvalidCiphertext,
    /// A key, key version or secret does not exist.
    #[error("{what} not found in {provider}; check the name and that it was created")]
    NotFound {
        /// The provider that answered.
        provider: String,
        /// What was looked up.
        what: String,
        /// The provider's own error, where there is one.
        #[source]
        source: Option<BoxedSource>,
    },
    /// A key or secret that was to be created exists already.
    #[error("{what} already exists in {provider}; use it, or pick another name")]
    AlreadyExists {
        /// The provider that answered.
        provider: String,
        /// What was to be created.
        what: String,
        /// The provider's own error, where there is one.
        #[source]
        source: Option<BoxedSource>,
    },
    /// The provider cannot do this operation at all (not a permission question).
    #[error("{provider} does not support {operation}; see docs/providers for what it offers")]
    NotSupported {
        /// What was asked (`delete_key`, `set_rotation_period`, …).
        operation: &'static str,
        /// The provider (its key URI scheme or secret-source name).
        provider: String,
    },
    /// The provider refused the operation for lack of permission.
    #[error("{provider} denied the operation: {detail}; grant the missing permission")]
    PermissionDenied {
        /// The provider that refused.
        provider: String,
        /// What was refused and, where known, the missing capability.
        detail: String,
        /// The provider's own error, where there is one.
        #[source]
        source: Option<BoxedSource>,
    },
    /// The provider asked the caller to slow down.
    #[error("{provider} is throttling requests: {detail}; retry later or lower the request rate")]
    Throttled {
        /// The provider that throttled.
        provider: String,
        /// What was throttled.
        detail: String,
        /// The provider's own error, where there is one.
        #[source]
        source: Option<BoxedSource>,
    },
    /// The provider could not be reached or failed transiently.
    #[error("{provider} is unavailable: {detail}; check that it is running and reachable")]
    Unavailable {
        /// The provider that failed.
        provider: String,
        /// What failed (connection refused, timeout, 5xx, circuit open…).
        detail: String,
        /// The underlying error (connection, timeout, HTTP status), where there is one.
        #[source]
        source: Option<BoxedSource>,
    },
    /// The key version exists but is disabled or destroyed.
    #[error("key {key} is disabled; enable it, or re-encrypt the data under an enabled version")]
    KeyDisabled {
        /// The key (a key reference with its version where known; never a message).
        key: String,
        /// The provider's own error, where there is one.
        #[source]
        source: Option<BoxedSource>,
    },
    /// Configuration is missing or contradictory.
    #[error("misconfigured: {detail}")]
    Misconfigured {
        /// What is wrong and how to fix it.
        detail: String,
        /// The underlying error (a parse error, an unreadable file), where there is one.
        #[source]
        source: Option<BoxedSource>,
    },
    /// An argument is invalid (bad key URI, empty context, oversized input…).
    #[error("invalid input: {detail}")]
    InvalidInput {
        /// What is wrong with the input.
        detail: String,
        /// The provider's own error, where there is one.
        #[source]
        source: Option<BoxedSource>,
    },
    /// The data key has sealed as many messages as its budget allows.
    #[error("data key message budget exhausted; generate a fresh data key")]
    MessageBudgetExhausted,
    /// The value's data key was crypto-shredded: every wrap of it is destroyed, so the value
    /// never opens again (by design; this is not an outage or a wrong key).
    #[error(
        "the data key of this value was shredded ({subject}); the value cannot be opened again"
    )]
    Shredded {
        /// The subject whose keys were shredded (`tenant=42`), or the DEK id.
        subject: String,
    },
    /// Any other failure, with its source.
    #[error("{provider} failed: {detail}")]
    Other {
        /// The component that failed.
        provider: String,
        /// What was being done.
        detail: String,
        /// The underlying error.
        #[source]
        source: Option<BoxedSource>,
    },
}

/// The kind of an [`Error`], for metrics labels, audit records, exit codes and retry
/// decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::MalformedEnvelope`] and [`Error::UnsupportedFormat`].
    Malformed,
    /// See [`Error::InvalidCiphertext`].
    InvalidCiphertext,
    /// See [`Error::NotFound`].
    NotFound,
    /// See [`Error::AlreadyExists`].
    AlreadyExists,
    /// See [`Error::NotSupported`].
    NotSupported,
    /// See [`Error::PermissionDenied`].
    PermissionDenied,
    /// See [`Error::Throttled`].
    Throttled,
    /// See [`Error::Unavailable`].
    Unavailable,
    /// See [`Error::KeyDisabled`].
    KeyDisabled,
    /// See [`Error::Misconfigured`].
    Misconfigured,
    /// See [`Error::InvalidInput`].
    InvalidInput,
    /// See [`Error::MessageBudgetExhausted`].
    BudgetExhausted,
    /// See [`Error::Shredded`].
    Shredded,
    /// See [`Error::Other`].
    Other,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 14] = [
        Self::Malformed,
        Self::InvalidCiphertext,
        Self::NotFound,
        Self::AlreadyExists,
        Self::NotSupported,
        Self::PermissionDenied,
        Self::Throttled,
        Self::Unavailable,
        Self::KeyDisabled,
        Self::Misconfigured,
        Self::InvalidInput,
        Self::BudgetExhausted,
        Self::Shredded,
        Self::Other,
    ];

    /// A stable snake-case label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::InvalidCiphertext => "invalid_ciphertext",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::NotSupported => "not_supported",
            Self::PermissionDenied => "permission_denied",
            Self::Throttled => "throttled",
            Self::Unavailable => "unavailable",
            Self::KeyDisabled => "key_disabled",
            Self::Misconfigured => "misconfigured",
            Self::InvalidInput => "invalid_input",
            Self::BudgetExhausted => "budget_exhausted",
            Self::Shredded => "shredded",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::MalformedEnvelope { .. } | Self::UnsupportedFormat { .. } => ErrorKind::Malformed,
            Self::InvalidCiphertext => ErrorKind::InvalidCiphertext,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Self::NotSupported { .. } => ErrorKind::NotSupported,
            Self::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Self::Throttled { .. } => ErrorKind::Throttled,
            Self::Unavailable { .. } => ErrorKind::Unavailable,
            Self::KeyDisabled { .. } => ErrorKind::KeyDisabled,
            Self::Misconfigured { .. } => ErrorKind::Misconfigured,
            Self::InvalidInput { .. } => ErrorKind::InvalidInput,
            Self::MessageBudgetExhausted => ErrorKind::BudgetExhausted,
            Self::Shredded { .. } => ErrorKind::Shredded,
            Self::Other { .. } => ErrorKind::Other,
        }
    }

    /// Whether retrying the same call later may succeed (throttling, transient outages).
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Throttled | ErrorKind::Unavailable)
    }

    /// Keeps `source` as this error's [`source`](core::error::Error::source). Kinds without a
    /// source slot (malformed envelopes, failed authentication, exhausted budgets,
    /// unsupported operations) stay as they are: their message says all there is.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxedSource>) -> Self {
        match &mut self {
            Self::NotFound { source: slot, .. }
            | Self::AlreadyExists { source: slot, .. }
            | Self::PermissionDenied { source: slot, .. }
            | Self::Throttled { source: slot, .. }
            | Self::Unavailable { source: slot, .. }
            | Self::KeyDisabled { source: slot, .. }
            | Self::Misconfigured { source: slot, .. }
            | Self::InvalidInput { source: slot, .. }
            | Self::Other { source: slot, .. } => *slot = Some(source.into()),
            Self::MalformedEnvelope { .. }
            | Self::UnsupportedFormat { .. }
            | Self::InvalidCiphertext
            | Self::NotSupported { .. }
            | Self::MessageBudgetExhausted
            | Self::Shredded { .. } => {}
        }
        self
    }

    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid_input(detail: impl Into<String>) -> Self {
        Self::InvalidInput {
            detail: detail.into(),
            source: None,
        }
    }

    /// Shorthand for [`Error::Misconfigured`].
    pub fn misconfigured(detail: impl Into<String>) -> Self {
        Self::Misconfigured {
            detail: detail.into(),
            source: None,
        }
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(provider: impl Into<String>, what: impl Into<String>) -> Self {
        Self::NotFound {
            provider: provider.into(),
            what: what.into(),
            source: None,
        }
    }

    /// Shorthand for [`Error::AlreadyExists`].
    pub fn already_exists(provider: impl Into<String>, what: impl Into<String>) -> Self {
        Self::AlreadyExists {
            provider: provider.into(),
            what: what.into(),
            source: None,
        }
    }

    /// Shorthand for [`Error::NotSupported`].
    pub fn not_supported(provider: impl Into<String>, operation: &'static str) -> Self {
        Self::NotSupported {
            operation,
            provider: provider.into(),
        }
    }

    /// Shorthand for [`Error::Unavailable`].
    pub fn unavailable(provider: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Unavailable {
            provider: provider.into(),
            detail: detail.into(),
            source: None,
        }
    }

    /// Shorthand for [`Error::PermissionDenied`].
    pub fn permission_denied(provider: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::PermissionDenied {
            provider: provider.into(),
            detail: detail.into(),
            source: None,
        }
    }

    /// Shorthand for [`Error::Throttled`].
    pub fn throttled(provider: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Throttled {
            provider: provider.into(),
            detail: detail.into(),
            source: None,
        }
    }

    /// Shorthand for [`Error::KeyDisabled`]; `key` names the key (and version), never a
    /// provider message (attach that with [`Error::with_source`]).
    pub fn key_disabled(key: impl Into<String>) -> Self {
        Self::KeyDisabled {
            key: key.into(),
            source: None,
        }
    }

    /// An [`Error::Other`]: `detail` says what was being done; attach the cause with
    /// [`Error::with_source`].
    pub fn other(provider: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Other {
            provider: provider.into(),
            detail: detail.into(),
            source: None,
        }
    }
}

/// `error` and each of its sources, joined by `": "` — for messages about errors of other
/// crates (SDK errors often keep the useful part in a source).
pub fn error_chain(error: &dyn core::error::Error) -> String {
    use core::fmt::Write;
    let mut out = String::new();
    let _ = write!(out, "{error}");
    let mut source = error.source();
    while let Some(s) = source {
        let _ = write!(out, ": {s}");
        source = s.source();
    }
    out
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl core::error::Error for Layer {
        fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn error_chain_joins_every_source() {
        let error = Layer(
            "dispatch failure",
            Some(Box::new(Layer(
                "io error",
                Some(Box::new(Layer("connection refused", None))),
            ))),
        );
        assert_eq!(
            error_chain(&error),
            "dispatch failure: io error: connection refused"
        );
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }
}
