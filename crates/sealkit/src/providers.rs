//! The providers compiled into this build: one list, used by the keyring builder, the
//! secret-source defaults, health checks and the CLI.
//!
//! Each entry is the [`ProviderDescriptor`] its crate exports; a cargo feature adds it.
//! Adding a provider is one crate, one line here and one feature (see docs/architecture.md).

use sealkit_core::registry::ProviderDescriptor;

use crate::{Error, Result};

/// Every compiled-in provider, in the order detection considers them.
static BUILTIN: &[&ProviderDescriptor] = &[
    #[cfg(feature = "local")]
    &sealkit_local::PROVIDER,
    #[cfg(feature = "vault")]
    &sealkit_vault::PROVIDER,
    #[cfg(feature = "aws")]
    &sealkit_aws::PROVIDER,
    #[cfg(feature = "gcp")]
    &sealkit_gcp::PROVIDER,
    #[cfg(feature = "azure")]
    &sealkit_azure::PROVIDER,
];

/// Every compiled-in provider.
pub fn builtin() -> &'static [&'static ProviderDescriptor] {
    BUILTIN
}

/// The provider named `name` (`local`, `vault`, `aws`, `gcp`, `azure`), or an error that lists the
/// compiled-in ones.
pub fn by_name(name: &str) -> Result<&'static ProviderDescriptor> {
    BUILTIN
        .iter()
        .copied()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            Error::misconfigured(format!(
                "no provider {name:?} in this build (compiled in: {}); enable the sealkit feature `{name}`",
                names()
            ))
        })
}

/// The provider that serves `scheme://` keys, if one is compiled in.
pub fn for_scheme(scheme: &str) -> Option<&'static ProviderDescriptor> {
    BUILTIN.iter().copied().find(|p| p.scheme == Some(scheme))
}

fn names() -> String {
    let names: Vec<&str> = BUILTIN.iter().map(|p| p.name).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_schemes_and_secret_prefixes_are_unique() {
        let (mut names, mut schemes, mut sources) = (Vec::new(), Vec::new(), Vec::new());
        for p in builtin() {
            names.push(p.name);
            schemes.extend(p.scheme);
            sources.extend(p.secret_sources.iter().copied());
        }
        sources.extend(["env", "file"]);
        for list in [names, schemes, sources] {
            let mut sorted = list.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), list.len(), "{list:?}");
        }
    }

    #[test]
    fn an_unknown_provider_names_the_feature() {
        let err = by_name("hsm").unwrap_err().to_string();
        assert!(
            err.contains("`hsm`") && err.contains("compiled in"),
            "{err}"
        );
    }
}
