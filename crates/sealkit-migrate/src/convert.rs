//! Converting one value: decide whether it is already under the target, and if not, produce
//! its envelope under the target.

use sealkit::core::legacy;
use sealkit::core::{Envelope, EnvelopeLayout};
use sealkit::{EncryptionContext, Error, KeyVersion, Keyring, Layout, Result, RewrapOutcome};
use zeroize::Zeroizing;

use crate::decode::Decoders;
use crate::spec::{JobSpec, SourceFormat};
use crate::store::RowKey;

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
    pub(crate) decoders: &'a Decoders,
    /// The target's primary version, for rewrap jobs.
    pub(crate) primary: &'a KeyVersion,
    /// Whether each compact envelope's stored DEK is wrapped under the target's primary
    /// version, as read from the DEK store (once per DEK per job run).
    pub(crate) current_deks: &'a CurrentDeks,
}

/// Stored DEKs known to be (or not to be) under the target's primary version.
pub(crate) type CurrentDeks = std::sync::Mutex<std::collections::HashMap<[u8; 16], bool>>;

/// The context a row's value is bound to.
pub(crate) fn context(
    spec: &JobSpec,
    column: &str,
    pk: &RowKey,
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
    /// Whether an envelope is already where the job takes it: a full one under the target's
    /// primary version (unless the job converts to compact), a compact one unless the job
    /// converts to full (a compact envelope's key lives in the DEK store, which `sealkit deks
    /// rewrap` rotates).
    fn is_done(&self, envelope: &Envelope<'_>) -> bool {
        match (envelope.layout(), self.spec.layout) {
            (EnvelopeLayout::Compact, Some(Layout::Full)) => false,
            (EnvelopeLayout::Compact, _) => true,
            (_, Some(Layout::Compact)) => false,
            _ => match envelope.key_ref() {
                Some(Ok(key)) => key.uri == self.spec.target && &key.version == self.primary,
                _ => false,
            },
        }
    }

    /// Whether a compact envelope's stored DEK is wrapped under the target's primary version.
    async fn dek_is_current(&self, envelope: &Envelope<'_>) -> Result<bool> {
        let sealkit::core::envelope::KeySlot::DekId(id) = envelope.slot() else {
            return Ok(false);
        };
        if let Some(&known) = self
            .current_deks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return Ok(known);
        }
        let store = self.keyring.dek_store().ok_or_else(|| {
            Error::misconfigured("compact envelopes need the keyring's DEK store ([deks] store)")
        })?;
        let current = store.get(id).await?.is_some_and(|r| {
            r.wraps
                .first()
                .is_some_and(|w| w.key.uri == self.spec.target && &w.key.version == self.primary)
        });
        self.current_deks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*id, current);
        Ok(current)
    }

    /// Whether the layout changes: the value must be opened and sealed again.
    fn changes_layout(&self, envelope: &Envelope<'_>) -> bool {
        matches!(
            (envelope.layout(), self.spec.layout),
            (EnvelopeLayout::Full, Some(Layout::Compact))
                | (EnvelopeLayout::Compact, Some(Layout::Full))
        )
    }

    /// Seals `plaintext` under the target in the job's layout; when the job names none, in
    /// `was` (the layout of the envelope it replaces), or as the keyring is configured.
    async fn seal(
        &self,
        plaintext: &[u8],
        ctx: &EncryptionContext,
        was: Option<EnvelopeLayout>,
    ) -> Result<Vec<u8>> {
        let target = &self.spec.target;
        match (self.spec.layout, was) {
            (Some(Layout::Compact), _) | (None, Some(EnvelopeLayout::Compact)) => {
                self.keyring.seal_compact(target, plaintext, ctx).await
            }
            (Some(Layout::Full), _) | (None, Some(EnvelopeLayout::Full)) => {
                self.keyring.seal_full(target, plaintext, ctx).await
            }
            _ => self.keyring.seal_with(target, plaintext, ctx).await,
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
            let as_envelope = self.convert_envelope(source, &envelope, value, ctx).await;
            match (&as_envelope, source) {
                // A legacy column's value may start like an envelope by chance (a random IV
                // beginning with the magic bytes): when it does not open as one, try it as
                // what the column declares.
                (
                    Err(e),
                    SourceFormat::Legacy(_) | SourceFormat::Fernet | SourceFormat::VaultTransit(_),
                ) if !e.is_retryable() => {
                    if let Ok(decision) = self.convert_legacy(source, value, ctx).await {
                        return Ok(decision);
                    }
                }
                _ => {}
            }
            return as_envelope;
        }
        self.convert_legacy(source, value, ctx).await
    }

    /// An envelope: kept when already under the target, else rewrapped (or resealed).
    async fn convert_envelope(
        &self,
        source: &SourceFormat,
        envelope: &Envelope<'_>,
        value: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Decision> {
        if self.is_done(envelope) {
            let compact = envelope.layout() == EnvelopeLayout::Compact;
            if compact && *source != SourceFormat::Envelope {
                // A legacy value can start like a compact envelope by chance: it is kept only
                // if it opens as one.
                self.keyring.open(value, ctx).await?;
            }
            // A reseal (after a key compromise) renews compact values whose DEK was made
            // under an older version: their DEKs must be assumed exposed.
            if !(compact && self.spec.reseal && !self.dek_is_current(envelope).await?) {
                return Ok(Decision::Keep);
            }
        }
        if self.spec.reseal || self.changes_layout(envelope) {
            // Fresh DEK (or another layout): open, then seal again under the target (a
            // compact reseal gets a new DEK: the sealing keyring retires DEKs made before the
            // key's rotation).
            let plaintext = Zeroizing::new(self.keyring.open(value, ctx).await?);
            return Ok(Decision::Write(
                self.seal(&plaintext, ctx, Some(envelope.layout())).await?,
            ));
        }
        // An envelope under another key or version: rewrap (data untouched).
        match self
            .keyring
            .rewrap(value, ctx, Some(&self.spec.target))
            .await?
        {
            RewrapOutcome::Rewrapped(new) => Ok(Decision::Write(new)),
            _ => Ok(Decision::Keep),
        }
    }

    /// A value of the column's declared (legacy) format: decoded, then sealed under the
    /// target.
    async fn convert_legacy(
        &self,
        source: &SourceFormat,
        value: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Decision> {
        if *source == SourceFormat::Envelope {
            return Err(Error::invalid_input(
                "the column is declared `envelope` but holds a value that is not one",
            ));
        }
        if *source == SourceFormat::Plaintext
            && !self.spec.force_plaintext
            && let Some(found) = legacy::detect(value)
        {
            return Err(Error::invalid_input(format!(
                "the column is declared `plaintext` but holds what looks like a {found:?} ciphertext; \
                 declare its format (e.g. fernet, vault-transit:MOUNT/NAME), or force with --force-plaintext"
            )));
        }
        let plaintext: Zeroizing<Vec<u8>> = self.decoders.get(source)?.decode(value).await?;
        Ok(Decision::Write(self.seal(&plaintext, ctx, None).await?))
    }
}
