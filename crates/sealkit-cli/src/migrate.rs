//! `sealkit migrate plan|run|status|verify`.

use std::sync::Arc;

use clap::{Args, Subcommand};
use sealkit::{KeyUri, Keyring};
use sealkit_migrate::decode::VaultTransitDecoder;
use sealkit_migrate::{ColumnSpec, JobSpec, Migrator, SourceFormat};
use serde_json::json;

use crate::commands::Ctx;

/// What every migrate command needs to know.
#[derive(Args, Debug)]
pub(crate) struct JobArgs {
    /// The database: an SQLite path (or sqlite:PATH) or a postgres:// URL.
    #[arg(long)]
    db: String,
    /// The PostgreSQL password, from a secret: SOURCE:NAME (azure-kv-secrets:VAULT/db#password,
    /// aws-secrets:…, env:VAR) or a configured [secrets.NAME]; never on the command line.
    #[arg(long, value_name = "SECRET")]
    db_password: Option<String>,
    /// The job's name (state is kept under it in the database).
    #[arg(long)]
    job: String,
    /// The table (with --column and --to; leave all three out to use the job's recorded ones).
    #[arg(long)]
    table: Option<String>,
    /// Its primary key column (integer, text or uuid).
    #[arg(long, default_value = "id")]
    pk: String,
    /// A column and its current format: NAME=aes-gcm-iv16|aes-gcm-nonce12|fernet|
    /// vault-transit:MOUNT/NAME|plaintext|envelope (repeat for each column).
    #[arg(long = "column")]
    columns: Vec<String>,
    /// A column whose value joins the context as `tenant`.
    #[arg(long)]
    tenant_column: Option<String>,
    /// The key every value ends up under.
    #[arg(long = "to")]
    target: Option<String>,
    /// Primary-key values per chunk.
    #[arg(long, default_value_t = 1000)]
    chunk_rows: i64,
    /// Most KMS calls per second the job may cause.
    #[arg(long)]
    kms_rate: Option<f64>,
    /// Seal envelopes again under fresh data keys instead of rewrapping their data keys (after
    /// a key compromise).
    #[arg(long)]
    reseal: bool,
    /// Seal `plaintext` columns' values even when they look like ciphertexts (Fernet tokens,
    /// `vault:v…`), which are otherwise refused.
    #[arg(long)]
    force_plaintext: bool,
    /// The environment variable holding the legacy key (base64 of 32 bytes).
    #[arg(long, default_value = "ENCRYPTION_MASTER_KEY")]
    legacy_key_env: String,
    /// Convert envelopes to this layout: `compact` (DEKs in the DEK store, `[deks] store`) or
    /// `full` (self-contained, for export). Without it each envelope keeps its layout.
    #[arg(long, value_parser = ["full", "compact"])]
    layout: Option<String>,
}

/// `migrate` subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum MigrateCommand {
    /// Count rows and the formats found, estimate KMS calls.
    Plan(OtherArgs),
    /// Run (or resume) the job until every chunk is done.
    Run {
        #[command(flatten)]
        job: JobArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Show the job's progress (the job's name and --db are enough).
    Status(OtherArgs),
    /// Check that every value opens under the target key with its context.
    Verify(OtherArgs),
    /// Disable the target key's old versions, only if verify passes for this job's table
    /// (run it after the last table that uses the key).
    Retire(OtherArgs),
}

/// What only `run` uses.
#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// This worker's name (a restarted worker reclaims its chunks at once).
    #[arg(long, default_value = "worker-1")]
    worker: String,
    /// Run this many workers in this process (PostgreSQL).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Also revisit finished chunks (values written in the old format since).
    #[arg(long)]
    sweep: bool,
    /// Seconds to wait for an unavailable KMS before giving up (the job stays resumable).
    #[arg(long, default_value_t = 300)]
    max_pause: u64,
}

/// The job arguments of the commands other than `run`, which also take `run`'s own flags
/// (ignored) so that one argument list serves every command.
#[derive(Args, Debug)]
pub(crate) struct OtherArgs {
    #[command(flatten)]
    job: JobArgs,
    #[arg(long, hide = true)]
    worker: Option<String>,
    #[arg(long, hide = true)]
    workers: Option<usize>,
    #[arg(long, hide = true)]
    sweep: bool,
    #[arg(long, hide = true)]
    max_pause: Option<u64>,
}

impl JobArgs {
    /// The job's spec: from --table, --column and --to, or, when all three are left out, as
    /// the database recorded it when the job started.
    async fn spec(&self, store: &dyn sealkit_migrate::Store) -> anyhow::Result<JobSpec> {
        let mut spec = match (&self.table, self.columns.is_empty(), &self.target) {
            (Some(table), false, Some(target)) => {
                let columns = self
                    .columns
                    .iter()
                    .map(|c| c.parse::<ColumnSpec>())
                    .collect::<Result<Vec<_>, _>>()?;
                JobSpec::new(&self.job, table, &self.pk, columns, KeyUri::parse(target)?)?
            }
            (None, true, None) => store.recorded_spec(&self.job).await?.ok_or_else(|| {
                sealkit::Error::not_found(
                    "database",
                    format!(
                        "migration job {:?} (none is recorded in this database: check --job and --db, or start it with --table, --column and --to)",
                        self.job
                    ),
                )
            })?,
            _ => {
                return Err(sealkit::Error::invalid_input(
                    "give the job's --table, --column and --to together, or none of them to use the ones recorded with the job",
                )
                .into());
            }
        };
        if let Some(t) = &self.tenant_column {
            spec = spec.with_tenant_column(t)?;
        }
        spec.chunk_rows = self.chunk_rows.max(1);
        spec.kms_calls_per_sec = self.kms_rate;
        spec.reseal = self.reseal;
        spec.force_plaintext = self.force_plaintext;
        spec.layout = match self.layout.as_deref() {
            Some("compact") => Some(sealkit::Layout::Compact),
            Some(_) => Some(sealkit::Layout::Full),
            None => None,
        };
        Ok(spec)
    }

    async fn migrator(&self, ctx: &Ctx) -> anyhow::Result<Migrator> {
        let config = ctx.resolved_config().await?;
        // The legacy key: the job's variable if set, else the configuration's (`[legacy] key`
        // chain or its variable).
        let legacy = if std::env::var_os(&self.legacy_key_env).is_some() {
            Some(sealkit::config::legacy_key_from_env(&self.legacy_key_env)?)
        } else {
            config.legacy.key.clone()
        };
        let password = match &self.db_password {
            Some(spec) => {
                let sources = sealkit::secrets::SecretSources::from_providers(&config.providers)?;
                let chain = crate::commands::secret_chain(
                    &config,
                    &sources,
                    std::slice::from_ref(spec),
                    sealkit::secrets::FallbackPolicy::OnUnavailable,
                )?;
                let resolved = chain.resolve().await?;
                tracing::info!(source = %resolved.source, "database password");
                Some(resolved.secret)
            }
            None => None,
        };
        let keyring = Keyring::builder(config).build_async().await?;
        let store = sealkit_migrate::open_store_with_password(
            &self.db,
            password
                .as_ref()
                .map(|p| secrecy::ExposeSecret::expose_secret(&p.value).as_slice()),
        )
        .await?;
        let spec = self.spec(&*store).await?;
        let mut migrator = Migrator::new(keyring, spec, store);
        if let Some(legacy) = legacy {
            tracing::info!(source = legacy.source(), "legacy master key");
            migrator = migrator.with_legacy_key(legacy.key().clone());
        }
        // `vault-transit:` columns are decrypted by the Vault the environment names.
        let vault_columns: Vec<_> = migrator
            .spec()
            .columns
            .iter()
            .filter_map(|c| match &c.source {
                SourceFormat::VaultTransit(key) => Some((c.source.clone(), key.clone())),
                _ => None,
            })
            .collect();
        if !vault_columns.is_empty() {
            let transit = Arc::new(sealkit::vault::VaultTransit::new(
                sealkit::vault::VaultSettings::from_env()?,
            ));
            for (source, key) in vault_columns {
                let decoder = VaultTransitDecoder::new(transit.clone(), key);
                migrator = migrator.with_decoder(&source, Arc::new(decoder));
            }
        }
        Ok(migrator)
    }
}

/// Adds a failure's message, kind and exit code to a `--json` result, so that a failing
/// command still prints exactly one JSON document.
fn add_failure(doc: &mut serde_json::Value, failure: Option<&sealkit::Error>) {
    if let Some(error) = failure {
        doc["error"] = json!(error.to_string());
        doc["kind"] = json!(error.kind().as_str());
        doc["exit_code"] = json!(crate::exit_code_of(error.kind()));
    }
}

/// The error to return once the result (and, with `--json`, the failure) is printed: with
/// `--json` nothing more is printed; otherwise the message goes to stderr as usual.
fn reported(ctx: &Ctx, error: sealkit::Error) -> anyhow::Error {
    if ctx.json {
        crate::Reported(error.kind()).into()
    } else {
        error.into()
    }
}

/// A key as JSON: a number for integer keys, a string for text keys.
fn key_json(k: &sealkit_migrate::RowKey) -> serde_json::Value {
    match k {
        sealkit_migrate::RowKey::Int(i) => json!(i),
        k => json!(k.to_string()),
    }
}

/// A chunk's keys — `lo`/`hi` for integer keys, `from`/`to` (null for an open end) for text
/// keys — with the fields of `more`, as one JSON object.
fn chunk_with(c: &sealkit_migrate::Chunk, more: serde_json::Value) -> serde_json::Value {
    let mut doc = match &c.keys {
        None => json!({ "lo": c.lo, "hi": c.hi }),
        Some(range) => json!({
            "from": range.from.as_ref().map(key_json),
            "to": range.to.as_ref().map(key_json),
        }),
    };
    if let (Some(doc), serde_json::Value::Object(more)) = (doc.as_object_mut(), more) {
        doc.extend(more);
    }
    doc
}

fn counts_json(c: &sealkit_migrate::Counts) -> serde_json::Value {
    json!({
        "chunks": { "pending": c.pending, "running": c.running, "done": c.done },
        "values": { "migrated": c.migrated, "skipped": c.skipped, "conflicts": c.conflicts, "failed": c.failed },
        "note": c.note,
        "held": c.held.iter().map(|h| chunk_with(&h.chunk, json!({
            "worker": h.worker, "held_secs": h.held_secs, "lease_left_secs": h.lease_left_secs,
        }))).collect::<Vec<_>>(),
    })
}

pub(crate) async fn run(ctx: &Ctx, command: MigrateCommand) -> anyhow::Result<()> {
    match command {
        MigrateCommand::Plan(OtherArgs { job: args, .. }) => {
            let plan = args.migrator(ctx).await?.plan().await?;
            if ctx.json {
                println!(
                    "{}",
                    json!({ "rows": plan.rows, "formats": plan.formats, "estimated_kms_calls": plan.estimated_kms_calls })
                );
            } else {
                println!(
                    "{} rows; about {} KMS calls",
                    plan.rows, plan.estimated_kms_calls
                );
                for (column, formats) in &plan.formats {
                    for (format, n) in formats {
                        println!("  {column:<16} {n:>10}  {format}");
                    }
                }
            }
        }
        MigrateCommand::Status(OtherArgs { job: args, .. }) => {
            let c = args.migrator(ctx).await?.status().await?;
            if ctx.json {
                println!("{}", counts_json(&c));
            } else {
                println!(
                    "chunks: {} done, {} running, {} pending; values: {} migrated, {} already done, {} conflicts re-read, {} failed{}",
                    c.done,
                    c.running,
                    c.pending,
                    c.migrated,
                    c.skipped,
                    c.conflicts,
                    c.failed,
                    c.note
                        .as_deref()
                        .map(|n| format!("\n{n}"))
                        .unwrap_or_default()
                );
                for h in &c.held {
                    println!(
                        "held: {} by {} for {} s (lease {} s)",
                        h.chunk,
                        h.worker,
                        h.held_secs,
                        if h.lease_left_secs >= 0 {
                            format!("ends in {}", h.lease_left_secs)
                        } else {
                            format!("expired {} s ago", -h.lease_left_secs)
                        }
                    );
                }
            }
        }
        MigrateCommand::Verify(OtherArgs { job: args, .. }) => {
            let bar = crate::progress::bar(ctx.json);
            let progress = {
                let bar = bar.clone();
                let rate = std::sync::Mutex::new(crate::progress::Rate::new());
                move |p: &sealkit_migrate::VerifyProgress| {
                    let line = rate.lock().unwrap_or_else(|e| e.into_inner()).line(
                        p.rows,
                        p.total_rows,
                        "rows",
                        p.values,
                        "values checked",
                    );
                    bar.set_message(line);
                }
            };
            let migrator = args.migrator(ctx).await?;
            let target = migrator.spec().target.to_string();
            let report = migrator.verify_with_progress(&progress).await;
            bar.finish_and_clear();
            let report = report?;
            let failure = (report.problem_count > 0).then(|| {
                sealkit::Error::invalid_input(format!(
                    "{} values are not under the target key yet; run the job (with --sweep) again",
                    report.problem_count
                ))
            });
            if ctx.json {
                let vanished: Vec<_> = report
                    .vanished
                    .iter()
                    .map(|(c, n)| chunk_with(c, json!({ "rows": n })))
                    .collect();
                let first_problems: Vec<_> = report
                    .problems
                    .iter()
                    .map(|(pk, column, problem)| json!([key_json(pk), column, problem]))
                    .collect();
                let mut doc = json!({ "values": report.values, "ok": report.ok, "problems": report.problem_count, "first_problems": first_problems, "vanished_rows": report.vanished_rows, "vanished": vanished });
                add_failure(&mut doc, failure.as_ref());
                println!("{doc}");
            } else {
                println!(
                    "{} of {} values open under {}",
                    report.ok, report.values, target
                );
                for (pk, column, problem) in &report.problems {
                    println!("  id {pk} {column}: {problem}");
                }
                if report.vanished_rows > 0 {
                    println!(
                        "{} rows the job processed are gone from the table (deleted since):",
                        report.vanished_rows
                    );
                    for (chunk, n) in &report.vanished {
                        println!("  {chunk}: {n}");
                    }
                }
            }
            if let Some(error) = failure {
                return Err(reported(ctx, error));
            }
        }
        MigrateCommand::Retire(OtherArgs { job: args, .. }) => {
            let migrator = args.migrator(ctx).await?;
            let target = migrator.spec().target.to_string();
            let retired = migrator.retire_old_versions().await?;
            let list: Vec<&str> = retired.iter().map(|v| v.as_str()).collect();
            if ctx.json {
                println!("{}", json!({ "key": target, "disabled_versions": list }));
            } else if list.is_empty() {
                println!("{target}: no enabled old versions");
            } else {
                println!("{target}: disabled versions {}", list.join(", "));
            }
        }
        MigrateCommand::Run {
            job,
            run:
                RunArgs {
                    worker,
                    workers,
                    sweep,
                    max_pause,
                },
        } => {
            let bar = crate::progress::bar(ctx.json);
            let progress = {
                let bar = bar.clone();
                let rate = std::sync::Mutex::new(crate::progress::Rate::new());
                move |c: &sealkit_migrate::Counts| {
                    let total = (c.done + c.running + c.pending).max(0) as u64;
                    let line = rate.lock().unwrap_or_else(|e| e.into_inner()).line(
                        c.done.max(0) as u64,
                        total,
                        "chunks",
                        c.migrated.max(0) as u64,
                        "values migrated",
                    );
                    bar.set_message(line);
                }
            };
            let progress: Arc<dyn Fn(&sealkit_migrate::Counts) + Send + Sync> = Arc::new(progress);
            let mut tasks = Vec::new();
            for w in 0..workers.max(1) {
                let migrator = job
                    .migrator(ctx)
                    .await?
                    .with_max_pause(std::time::Duration::from_secs(max_pause));
                let name = if workers > 1 {
                    format!("{worker}-{w}")
                } else {
                    worker.clone()
                };
                let progress = progress.clone();
                tasks.push(tokio::spawn(async move {
                    let report = if sweep && w == 0 {
                        migrator.sweep(&name, &*progress).await
                    } else {
                        migrator.run(&name, &*progress).await
                    };
                    migrator.keyring().flush_dek_use().await;
                    report
                }));
            }
            let mut migrated = 0;
            let mut failed = 0;
            for t in tasks {
                let report = t.await??;
                migrated += report.migrated;
                failed += report.failed;
            }
            bar.finish_and_clear();
            let status = job.migrator(ctx).await?.status().await?;
            let failure = (failed > 0).then(|| {
                sealkit::Error::invalid_input(format!(
                    "{failed} values could not be converted (see the log); they were left as they were"
                ))
            });
            if ctx.json {
                let mut doc = json!({ "migrated_by_this_run": migrated, "failed": failed, "status": counts_json(&status) });
                add_failure(&mut doc, failure.as_ref());
                println!("{doc}");
            } else {
                println!(
                    "job {} done: {migrated} values migrated by this run, {failed} could not be converted",
                    job.job
                );
            }
            if let Some(error) = failure {
                return Err(reported(ctx, error));
            }
        }
    }
    Ok(())
}
