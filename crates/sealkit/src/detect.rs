//! Provider auto-detection from the vendors' usual environment variables.

fn set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// Vault is configured when `VAULT_ADDR` or `SEALKIT_VAULT_ADDR` is set.
#[cfg_attr(not(feature = "vault"), allow(dead_code))]
pub(crate) fn vault_configured() -> bool {
    set("SEALKIT_VAULT_ADDR") || set("VAULT_ADDR")
}

/// AWS is configured when a region or an endpoint is set in the environment.
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub(crate) fn aws_configured() -> bool {
    [
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "SEALKIT_AWS_ENDPOINT",
    ]
    .iter()
    .any(|v| set(v))
}
