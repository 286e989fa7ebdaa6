//! Running, planning, verifying and reporting on a job.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealkit::core::Envelope;
use sealkit::core::legacy::{Detected, detect};
use sealkit::{DataKey, Error, Keyring, Result};

use crate::convert::{Converter, Decision, context};
use crate::decode::Decoder;
use crate::spec::{JobSpec, SourceFormat};
use crate::store::{Chunk, ChunkCounts, Counts, JobStore, RowKey, Store, Update};

/// A job's state, as `sealkit migrate status` shows it.
pub type JobStatus = Counts;

/// What one worker's run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunReport {
    /// Chunks this worker finished.
    pub chunks: u64,
    /// Values it rewrote.
    pub migrated: u64,
    /// Values it found already under the target.
    pub skipped: u64,
    /// Values the application changed meanwhile (re-read and converted again).
    pub conflicts: u64,
    /// Values that could not be converted.
    pub failed: u64,
    /// Primary keys of the rows this worker rewrote at least one value of.
    pub rows: Vec<RowKey>,
    /// Times the job paused for a provider outage.
    pub pauses: u64,
}

/// What a job would do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Plan {
    /// Rows in the table.
    pub rows: u64,
    /// Per column: counts of values by what they are now.
    pub formats: BTreeMap<String, BTreeMap<String, u64>>,
    /// Estimated provider calls: one data key per DEK scope and message budget for sealing,
    /// plus one unwrap per legacy-free value's DEK (rewraps cost one call per distinct DEK).
    pub estimated_kms_calls: u64,
}

/// What `verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Values checked.
    pub values: u64,
    /// Values that open under the target key's primary version with their context.
    pub ok: u64,
    /// Up to 20 problems, as `(primary key, column, what)`.
    pub problems: Vec<(RowKey, String, String)>,
    /// Total number of problems.
    pub problem_count: u64,
    /// Rows the job processed that are no longer in the table (deleted since), counted per
    /// chunk against the row count recorded when the chunk was done.
    pub vanished_rows: u64,
    /// Up to 20 key ranges with rows gone, and how many.
    pub vanished: Vec<(Chunk, u64)>,
}

/// How far a [`Migrator::verify_with_progress`] has got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyProgress {
    /// Rows read so far.
    pub rows: u64,
    /// Rows in the table when the check started (or read so far, if more).
    pub total_rows: u64,
    /// Values checked so far.
    pub values: u64,
}

/// Runs one job over one store with one keyring. Several `Migrator`s (processes or tasks, each
/// with its own store connection and worker name) can run the same job on PostgreSQL.
pub struct Migrator {
    keyring: Keyring,
    spec: JobSpec,
    store: Arc<dyn JobStore>,
    decoders: crate::decode::Decoders,
    max_pause: Duration,
    current_deks: crate::convert::CurrentDeks,
}

impl std::fmt::Debug for Migrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrator")
            .field("spec", &self.spec)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Migrator {
    /// A migrator for `spec` on `store` (the spec is bound to the store once, here).
    /// `plaintext` columns need nothing more; other legacy formats need a decoder
    /// ([`Migrator::with_legacy_key`], [`Migrator::with_decoder`]).
    pub fn new(keyring: Keyring, spec: JobSpec, store: Arc<dyn Store>) -> Self {
        Self {
            keyring,
            store: store.bind(&spec),
            spec,
            decoders: crate::decode::Decoders::default(),
            max_pause: Duration::from_secs(300),
            current_deks: Default::default(),
        }
    }

    /// The legacy key: decoders for `aes-gcm-iv16`, `aes-gcm-nonce12` and `fernet` columns.
    pub fn with_legacy_key(mut self, key: DataKey) -> Self {
        self.decoders.add_legacy_key(&key);
        self
    }

    /// The decoder that opens values of `format` (e.g. a
    /// [`VaultTransitDecoder`](crate::decode::VaultTransitDecoder) for `vault-transit:`
    /// columns, or an application's own format).
    pub fn with_decoder(mut self, format: &SourceFormat, decoder: Arc<dyn Decoder>) -> Self {
        self.decoders.insert(format, decoder);
        self
    }

    /// How long a run waits, in total, for an unavailable provider before it gives up
    /// (default 5 minutes; the job stays resumable either way).
    pub fn with_max_pause(mut self, max_pause: Duration) -> Self {
        self.max_pause = max_pause;
        self
    }

    /// The keyring the job seals and opens with.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The job.
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// The target's primary version (cached by the keyring: rotate before starting a rewrap
    /// job, or allow a minute for the new version to be seen).
    async fn primary(&self) -> Result<sealkit::KeyVersion> {
        self.keyring.current_version(&self.spec.target).await
    }

    fn publish(counts: &Counts) {
        for (status, n) in [
            ("pending", counts.pending),
            ("running", counts.running),
            ("done", counts.done),
            ("migrated", counts.migrated),
            ("skipped", counts.skipped),
            ("failed", counts.failed),
        ] {
            metrics::gauge!("sealkit_reencryption_progress", "status" => status).set(n as f64);
        }
    }

    /// Runs the job as `worker` until no chunk is left. `progress` is called after each chunk
    /// with the job's counts.
    pub async fn run(
        &self,
        worker: &str,
        progress: &(dyn Fn(&Counts) + Send + Sync),
    ) -> Result<RunReport> {
        self.store.prepare().await?;
        self.probe_decoders().await?;
        let mut report = RunReport::default();
        let mut paused_for = Duration::ZERO;
        let mut backoff = Duration::from_millis(200);
        let started = Instant::now();
        let calls_at_start = self.keyring.stats().kms_calls;
        loop {
            let primary = match self.primary().await {
                Ok(p) => p,
                Err(e) if e.is_retryable() => {
                    self.pause(&e, &mut paused_for, &mut backoff, &mut report)
                        .await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(chunk) = self.store.claim(worker).await? else {
                // Done only when every chunk is: chunks other workers still hold are waited
                // for, and taken over once their lease expires (their worker died).
                let counts = self.store.counts().await?;
                if counts.pending == 0 && counts.running == 0 {
                    break;
                }
                // Poll briefly: the other workers usually finish within moments (a long sleep
                // here made a two-worker job wait a second after its last chunk), and an
                // expired lease is taken over by the next claim.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            match self.process(&chunk, &primary, &mut report).await {
                Ok(()) => {
                    backoff = Duration::from_millis(200);
                    self.store.set_note(None).await?;
                    let counts = self.store.counts().await?;
                    Self::publish(&counts);
                    progress(&counts);
                }
                Err(e) if e.is_retryable() => {
                    self.store.release(&chunk).await?;
                    self.pause(&e, &mut paused_for, &mut backoff, &mut report)
                        .await?;
                }
                Err(e) => {
                    self.store.release(&chunk).await?;
                    return Err(e);
                }
            }
            self.rate_limit(started, calls_at_start).await;
        }
        Ok(report)
    }

    /// Values of legacy-declared columns must decode before a run starts: in a sample of the
    /// table, at least one value of each such column that is not already an envelope must
    /// open. A wrong or missing legacy key refuses the run at once, with nothing changed,
    /// instead of failing every value one by one.
    async fn probe_decoders(&self) -> Result<()> {
        const SAMPLE_ROWS: i64 = 200;
        let rows = self.store.scan(None, SAMPLE_ROWS).await?;
        for (i, column) in self.spec.columns.iter().enumerate() {
            if !matches!(
                column.source,
                SourceFormat::Legacy(_) | SourceFormat::Fernet
            ) {
                continue;
            }
            let mut tried = 0u64;
            let mut opened = false;
            for value in rows.iter().filter_map(|row| row.values[i].as_ref()) {
                let Ok(bytes) = column.encoding.decode(value) else {
                    continue; // counted as a failed value by the run, with its reason
                };
                if Envelope::looks_like(&bytes) && Envelope::parse(&bytes).is_ok() {
                    continue;
                }
                let decoder = self.decoders.get(&column.source)?;
                tried += 1;
                if decoder.decode(&bytes).await.is_ok() {
                    opened = true;
                    break;
                }
            }
            if tried > 0 && !opened {
                return Err(Error::misconfigured(format!(
                    "the legacy key opens none of the {tried} sampled {} values of column {}; check the legacy key (ENCRYPTION_MASTER_KEY or --legacy-key-env): nothing was changed",
                    column.source, column.name
                )));
            }
        }
        Ok(())
    }

    async fn pause(
        &self,
        e: &Error,
        paused_for: &mut Duration,
        backoff: &mut Duration,
        report: &mut RunReport,
    ) -> Result<()> {
        let note = format!("paused: {e}");
        tracing::warn!(job = %self.spec.job, error = %e, "re-encryption paused; it resumes when the provider answers");
        self.store.set_note(Some(&note)).await?;
        report.pauses += 1;
        if *paused_for >= self.max_pause {
            return Err(Error::unavailable(
                "migrate",
                format!(
                    "job {} paused for {} s and gave up: {e}; run it again to resume",
                    self.spec.job,
                    paused_for.as_secs()
                ),
            ));
        }
        tokio::time::sleep(*backoff).await;
        *paused_for += *backoff;
        *backoff = (*backoff * 2).min(Duration::from_secs(10));
        Ok(())
    }

    async fn rate_limit(&self, started: Instant, calls_at_start: u64) {
        if let Some(rate) = self.spec.kms_calls_per_sec.filter(|r| *r > 0.0) {
            let calls = (self.keyring.stats().kms_calls - calls_at_start) as f64;
            let due = Duration::from_secs_f64(calls / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }

    fn converter<'a>(&'a self, primary: &'a sealkit::KeyVersion) -> Converter<'a> {
        Converter {
            keyring: &self.keyring,
            spec: &self.spec,
            decoders: &self.decoders,
            primary,
            current_deks: &self.current_deks,
        }
    }

    async fn process(
        &self,
        chunk: &Chunk,
        primary: &sealkit::KeyVersion,
        report: &mut RunReport,
    ) -> Result<()> {
        let converter = self.converter(primary);
        let rows = self.store.rows(chunk).await?;
        let mut updates = Vec::new();
        let mut counts = ChunkCounts {
            seen: Some(rows.len() as i64),
            ..ChunkCounts::default()
        };
        for row in &rows {
            for (i, column) in self.spec.columns.iter().enumerate() {
                let Some(value) = &row.values[i] else {
                    continue;
                };
                let ctx = context(&self.spec, &column.name, &row.pk, row.tenant.as_deref())?;
                let converted = match column.encoding.decode(value) {
                    Ok(bytes) => converter.convert(&column.source, &bytes, &ctx).await,
                    Err(e) => Err(e),
                };
                match converted {
                    Ok(Decision::Keep) => counts.skipped += 1,
                    Ok(Decision::Write(new)) => {
                        counts.migrated += 1;
                        updates.push(Update {
                            pk: row.pk.clone(),
                            column: i,
                            old: value.clone(),
                            new: column.encoding.encode(new),
                        });
                    }
                    Err(e) if e.is_retryable() => return Err(e),
                    Err(e) => {
                        counts.failed += 1;
                        tracing::error!(job = %self.spec.job, pk = %row.pk, column = %column.name, error = %e, "value not converted");
                    }
                }
            }
        }
        let lost = self.store.commit(chunk, &updates, counts).await?;
        let committed = (updates.len() - lost.len()) as u64;
        let mut rows_written: Vec<RowKey> = updates
            .iter()
            .filter(|u| !lost.iter().any(|l| l.pk == u.pk && l.column == u.column))
            .map(|u| u.pk.clone())
            .collect();
        // Values the application changed meanwhile: re-read and convert again.
        let mut late = ChunkCounts::default();
        for conflict in lost {
            report.conflicts += 1;
            let column = &self.spec.columns[conflict.column];
            let mut attempts = 0;
            loop {
                attempts += 1;
                let Some(row) = self.store.row(&conflict.pk).await? else {
                    break;
                };
                let Some(current) = row.values[conflict.column].clone() else {
                    break;
                };
                let ctx = context(&self.spec, &column.name, &row.pk, row.tenant.as_deref())?;
                let bytes = column.encoding.decode(&current)?.into_owned();
                match converter.convert(&column.source, &bytes, &ctx).await? {
                    Decision::Keep => {
                        late.skipped += 1;
                        break;
                    }
                    Decision::Write(new) => {
                        if self
                            .store
                            .swap(&Update {
                                pk: conflict.pk.clone(),
                                column: conflict.column,
                                old: current,
                                new: column.encoding.encode(new),
                            })
                            .await?
                        {
                            late.migrated += 1;
                            rows_written.push(conflict.pk.clone());
                            break;
                        }
                        if attempts >= 5 {
                            late.failed += 1;
                            tracing::warn!(job = %self.spec.job, pk = %conflict.pk, "value keeps changing; left for the next run");
                            break;
                        }
                    }
                }
            }
        }
        if late.migrated + late.skipped + late.failed > 0 {
            self.store.add_counts(chunk, late).await?;
        }
        rows_written.sort_unstable();
        rows_written.dedup();
        report.chunks += 1;
        report.migrated += committed + late.migrated as u64;
        report.skipped += (counts.skipped + late.skipped) as u64;
        report.failed += (counts.failed + late.failed) as u64;
        report.rows.extend(rows_written);
        Ok(())
    }

    /// Runs the job again over every chunk, finished ones included: a sweep for values that
    /// were written in the old format after their chunk was done (applications not yet in
    /// `hybrid` mode). Values already under the target are skipped.
    pub async fn sweep(
        &self,
        worker: &str,
        progress: &(dyn Fn(&Counts) + Send + Sync),
    ) -> Result<RunReport> {
        self.store.prepare().await?;
        self.store.reopen().await?;
        self.run(worker, progress).await
    }

    /// Retires the target key's old versions — disables every enabled version but the
    /// primary — only if `verify` finds every value of this job's table under the primary.
    /// Returns the versions disabled. It checks this table only: run it after the jobs of
    /// every table that uses the key have passed `verify`.
    pub async fn retire_old_versions(&self) -> Result<Vec<sealkit::KeyVersion>> {
        let report = self.verify().await?;
        if report.problem_count > 0 {
            return Err(Error::invalid_input(format!(
                "{} values of {}.{} still need older versions of {}; run the job (with --sweep) until verify passes",
                report.problem_count,
                self.spec.table,
                self.spec
                    .columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join("/"),
                self.spec.target
            )));
        }
        let meta = self.keyring.key_metadata(&self.spec.target).await?;
        let mut retired = Vec::new();
        for v in meta.versions.iter().filter(|v| {
            v.version != meta.primary && v.state == sealkit::core::provider::VersionState::Enabled
        }) {
            self.keyring
                .set_version_state(
                    &self.spec.target,
                    &v.version,
                    sealkit::core::provider::VersionState::Disabled,
                )
                .await?;
            retired.push(v.version.clone());
        }
        Ok(retired)
    }

    /// The job's counts.
    pub async fn status(&self) -> Result<JobStatus> {
        self.store.counts().await
    }

    /// Counts what the table holds and estimates the provider calls.
    pub async fn plan(&self) -> Result<Plan> {
        let primary = self.primary().await.ok();
        let mut plan = Plan::default();
        let mut after: Option<RowKey> = None;
        let mut to_seal = 0u64;
        let mut scopes = std::collections::HashSet::new();
        let mut deks = std::collections::HashSet::new();
        loop {
            let rows = self.store.scan(after.as_ref(), 5000).await?;
            let Some(last) = rows.last() else { break };
            after = Some(last.pk.clone());
            for row in &rows {
                plan.rows += 1;
                for (i, column) in self.spec.columns.iter().enumerate() {
                    let Some(value) = &row.values[i] else {
                        continue;
                    };
                    let Ok(bytes) = column.encoding.decode(value) else {
                        *plan
                            .formats
                            .entry(column.name.clone())
                            .or_default()
                            .entry(format!("not {} text", column.encoding))
                            .or_default() += 1;
                        continue;
                    };
                    let kind = match detect(&bytes) {
                        Some(Detected::Envelope) => {
                            let env = Envelope::parse(&bytes)?;
                            let key = env.key_ref().and_then(Result::ok);
                            match (&key, &primary) {
                                (Some(k), Some(p))
                                    if k.uri == self.spec.target && &k.version == p =>
                                {
                                    "envelope (done)".to_string()
                                }
                                (Some(k), _) => {
                                    deks.insert(env.wrapped_bytes().unwrap_or_default().to_vec());
                                    format!("envelope under {k}")
                                }
                                _ => "envelope (compact)".to_string(),
                            }
                        }
                        Some(Detected::Fernet) => {
                            to_seal += 1;
                            "fernet".to_string()
                        }
                        Some(Detected::VaultTransit) => {
                            to_seal += 1;
                            "vault-transit".to_string()
                        }
                        _ => {
                            to_seal += 1;
                            format!("{} (declared)", column.source)
                        }
                    };
                    if !kind.starts_with("envelope") {
                        scopes.insert((column.name.clone(), row.tenant.clone()));
                    }
                    *plan
                        .formats
                        .entry(column.name.clone())
                        .or_default()
                        .entry(kind)
                        .or_default() += 1;
                }
            }
        }
        let per_dek = 1_000_000u64;
        plan.estimated_kms_calls = scopes.len() as u64
            * to_seal.div_ceil(per_dek).max(u64::from(to_seal > 0))
            + 3 * deks.len() as u64;
        Ok(plan)
    }

    /// Why a compact envelope is not where the job takes values, if it is not: its DEK (read
    /// from the keyring's DEK store once per DEK) must be wrapped under the target's primary
    /// version, and the value must open.
    async fn compact_problem(
        &self,
        envelope: &Envelope<'_>,
        value: &[u8],
        ctx: &sealkit::EncryptionContext,
        primary: &sealkit::KeyVersion,
        dek_keys: &mut std::collections::HashMap<[u8; 16], Option<sealkit::KeyRef>>,
    ) -> Result<()> {
        let sealkit::core::envelope::KeySlot::DekId(id) = envelope.slot() else {
            return Ok(());
        };
        let store = self.keyring.dek_store().ok_or_else(|| {
            Error::misconfigured("compact envelopes need the keyring's DEK store ([deks] store)")
        })?;
        if !dek_keys.contains_key(id) {
            let key = store
                .get(id)
                .await?
                .and_then(|r| r.wraps.first().map(|w| w.key.clone()));
            dek_keys.insert(*id, key);
        }
        match &dek_keys[id] {
            Some(k) if k.uri == self.spec.target && &k.version == primary => {}
            Some(k) => {
                return Err(Error::invalid_input(format!(
                    "compact, its DEK under {k}, not {}#v{primary} (run `sealkit deks rewrap`)",
                    self.spec.target
                )));
            }
            None => {
                return Err(Error::invalid_input(
                    "compact, its DEK missing from the DEK store or shredded",
                ));
            }
        }
        self.keyring
            .open(value, ctx)
            .await
            .map(|_| ())
            .map_err(|e| Error::invalid_input(format!("does not open: {e}")))
    }

    /// Opens every value under the target key's primary version with its context.
    pub async fn verify(&self) -> Result<VerifyReport> {
        self.verify_with_progress(&|_| {}).await
    }

    /// [`Migrator::verify`], calling `progress` after every batch of rows.
    pub async fn verify_with_progress(
        &self,
        progress: &(dyn Fn(&VerifyProgress) + Send + Sync),
    ) -> Result<VerifyReport> {
        let primary = self.primary().await?;
        let mut report = VerifyReport::default();
        let mut seen = VerifyProgress {
            rows: 0,
            total_rows: self.store.count_rows().await?.max(0) as u64,
            values: 0,
        };
        progress(&seen);
        let mut after: Option<RowKey> = None;
        // Compact envelopes' DEKs: the key and version each is wrapped under, read once.
        let mut dek_keys = std::collections::HashMap::new();
        loop {
            let rows = self.store.scan(after.as_ref(), 5000).await?;
            let Some(last) = rows.last() else { break };
            after = Some(last.pk.clone());
            seen.rows += rows.len() as u64;
            for row in &rows {
                for (i, column) in self.spec.columns.iter().enumerate() {
                    let Some(value) = &row.values[i] else {
                        continue;
                    };
                    report.values += 1;
                    let ctx = context(&self.spec, &column.name, &row.pk, row.tenant.as_deref())?;
                    let bytes = column.encoding.decode(value);
                    let problem = match bytes.as_deref().map(Envelope::parse) {
                        Err(e) => Some(e.to_string()),
                        Ok(Err(_)) => Some("not an envelope (not migrated)".to_string()),
                        Ok(Ok(env))
                            if self.spec.layout == Some(sealkit::Layout::Compact)
                                && env.layout() == sealkit::core::EnvelopeLayout::Full =>
                        {
                            Some("full layout, not compact".to_string())
                        }
                        Ok(Ok(env)) => match env.key_ref().and_then(Result::ok) {
                            Some(k) if k.uri == self.spec.target && k.version == primary => self
                                .keyring
                                .open(bytes.as_deref().unwrap_or_default(), &ctx)
                                .await
                                .err()
                                .map(|e| format!("does not open: {e}")),
                            Some(k) => {
                                Some(format!("under {k}, not {}#v{primary}", self.spec.target))
                            }
                            None if self.spec.layout == Some(sealkit::Layout::Full) => {
                                Some("compact layout, not full".to_string())
                            }
                            None => self
                                .compact_problem(
                                    &env,
                                    bytes.as_deref().unwrap_or_default(),
                                    &ctx,
                                    &primary,
                                    &mut dek_keys,
                                )
                                .await
                                .err()
                                .map(|e| e.to_string()),
                        },
                    };
                    match problem {
                        None => report.ok += 1,
                        Some(p) => {
                            report.problem_count += 1;
                            if report.problems.len() < 20 {
                                report
                                    .problems
                                    .push((row.pk.clone(), column.name.clone(), p));
                            }
                        }
                    }
                }
            }
            seen.values = report.values;
            seen.total_rows = seen.total_rows.max(seen.rows);
            progress(&seen);
        }
        // Rows gone since the job processed them: each finished chunk's rows now against the
        // count recorded when it was done.
        for (chunk, recorded_rows) in self.store.seen_chunks().await? {
            let gone = (recorded_rows - self.store.count_in(&chunk).await?).max(0) as u64;
            if gone > 0 {
                report.vanished_rows += gone;
                if report.vanished.len() < 20 {
                    report.vanished.push((chunk, gone));
                }
            }
        }
        Ok(report)
    }
}
