//! Converting one value: decide whether it is already under the target, and if not, produce
//! its envelope under the target.

use sealkit::core::Envelope;
use sealkit::core::legacy::{self, fernet};
use sealkit::{DataKey, EncryptionContext, Error, KeyVersion, Keyring, Result, RewrapOutcome};
use zeroize::Zeroizing;

use crate::spec::{JobSpec, SourceFormat};

/// What to do with a value.
pub(crate) enum Decision {
    /// Already under the target: leave it.
    Keep,
    /// Write this instead.
    Write(Vec<u8>),
}

/// Everything a conversion needs besides the value.
pub(crate) struct Converter<'a> {
    pub(crate) keyring: &'a Keyring,
    pub(crate) spec: &'a JobSpec,
    pub(crate) legacy_key: Option<&'a DataKey>,
    #[cfg(feature = "vault")]
    pub(crate) vault: Option<&'a sealkit::vault::VaultTransit>,
    /// The target's primary version, for rewrap jobs.
    pub(crate) primary: &'a KeyVersion,
}

/// The context a row's value is bound to.
pub(crate) fn context(
    spec: &JobSpec,
    column: &str,
    pk: i64,
    tenant: Option<&str>,
) -> Result<EncryptionContext> {
    let mut b = EncryptionContext::builder()
        .with("table", &spec.table)
        .with("column", column)
        .with("id", &pk.to_string());
    if let Some(t) = tenant {
        b = b.with("tenant", t);
    }
    b.build()
}

impl Converter<'_> {
    fn legacy_key(&self) -> Result<&DataKey> {
        self.legacy_key.ok_or_else(|| Error::misconfigured("this column's format needs the legacy key (ENCRYPTION_MASTER_KEY or --legacy-key-env)"))
    }

    /// Whether an envelope is already where the job takes it.
    fn is_done(&self, envelope: &Envelope<'_>) -> bool {
        match envelope.key_ref() {
            Some(Ok(key)) => key.uri == self.spec.target && &key.version == self.primary,
            _ => false,
        }
    }

    pub(crate) async fn convert(
        &self,
        source: &SourceFormat,
        value: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Decision> {
        if Envelope::looks_like(value)
            && let Ok(envelope) = Envelope::parse(value)
        {
            if self.is_done(&envelope) {
                return Ok(Decision::Keep);
            }
            if self.spec.reseal {
                // Fresh DEK: open, then seal again under the target.
                let plaintext = Zeroizing::new(self.keyring.open(value, ctx).await?);
                return Ok(Decision::Write(
                    self.keyring
                        .seal_with(&self.spec.target, &plaintext, ctx)
                        .await?,
                ));
            }
            // An envelope under another key or version: rewrap (data untouched).
            return match self
                .keyring
                .rewrap(value, ctx, Some(&self.spec.target))
                .await?
            {
                RewrapOutcome::Rewrapped(new) => Ok(Decision::Write(new)),
                _ => Ok(Decision::Keep),
            };
        }
        let plaintext: Zeroizing<Vec<u8>> = Zeroizing::new(match source {
            SourceFormat::Legacy(format) => legacy::open(*format, self.legacy_key()?, value, b"")?,
            SourceFormat::Fernet => fernet::open(self.legacy_key()?, value)?,
            SourceFormat::Plaintext => value.to_vec(),
            SourceFormat::Envelope => {
                return Err(Error::invalid_input(
                    "the column is declared `envelope` but holds a value that is not one",
                ));
            }
            #[cfg(feature = "vault")]
            SourceFormat::VaultTransit(key) => {
                let vault = self
                    .vault
                    .ok_or_else(|| Error::misconfigured("vault-transit columns need VAULT_ADDR"))?;
                let text = legacy::vault::parse(value)
                    .map(|(_, t)| t)
                    .ok_or(Error::InvalidCiphertext)?;
                vault.decrypt_data(key, text, None).await?.to_vec()
            }
            #[cfg(not(feature = "vault"))]
            SourceFormat::VaultTransit(_) => {
                return Err(Error::misconfigured(
                    "vault-transit columns need sealkit-migrate's `vault` feature",
                ));
            }
        });
        Ok(Decision::Write(
            self.keyring
                .seal_with(&self.spec.target, &plaintext, ctx)
                .await?,
        ))
    }
}
