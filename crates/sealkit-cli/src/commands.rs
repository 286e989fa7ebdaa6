//! The key, data, health and audit commands.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Args, Subcommand};
use sealkit::core::provider::VersionState;
use sealkit::{Config, EncryptionContext, ErrorKind, KeyUri, Keyring, RewrapOutcome};
use serde_json::json;

/// Global options every command sees.
pub(crate) struct Ctx {
    pub(crate) config: Option<PathBuf>,
    pub(crate) json: bool,
}

impl Ctx {
    /// `--config` (or `SEALKIT_CONFIG`), the `SEALKIT_*` variables and the providers
    /// detected in the environment.
    pub(crate) fn config(&self) -> anyhow::Result<Config> {
        Ok(match &self.config {
            Some(path) => Config::from_file(path)?.with_env()?,
            None => Config::from_env()?,
        })
    }

    /// The keyring of [`Ctx::config`], its audit key fetched from a secret source if so
    /// configured, and its DEK store (`[deks] store`) opened.
    pub(crate) async fn keyring(&self) -> anyhow::Result<Keyring> {
        Ok(Keyring::builder(self.resolved_config().await?)
            .build_async()
            .await?)
    }

    /// [`Ctx::config`] with the keys it names by secret reference fetched (the audit key, the
    /// legacy key).
    pub(crate) async fn resolved_config(&self) -> anyhow::Result<Config> {
        let mut config = self.config()?;
        if config.has_secret_keys_to_fetch() {
            let sources = sealkit::secrets::SecretSources::from_providers(&config.providers)?;
            config.fetch_secret_keys(&sources).await?;
        }
        Ok(config)
    }

    fn print(&self, value: serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human());
        }
    }
}

/// `secs` since the Unix epoch as ISO-8601 UTC (`2026-11-28T23:22:58Z`).
pub(crate) fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `--in`/`--out` for commands that transform bytes.
#[derive(Args, Debug)]
pub(crate) struct Io {
    /// Input file (default: stdin).
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
    /// Output file (default: stdout).
    #[arg(long = "out", value_name = "FILE")]
    output: Option<PathBuf>,
}

impl Io {
    fn read(&self) -> anyhow::Result<Vec<u8>> {
        let mut data = Vec::new();
        match &self.input {
            Some(path) => {
                data = std::fs::read(path).map_err(|e| {
                    let error = if e.kind() == std::io::ErrorKind::NotFound {
                        sealkit::Error::not_found("file", format!("input file {}", path.display()))
                    } else {
                        sealkit::Error::invalid_input(format!("cannot read {}", path.display()))
                    };
                    error.with_source(e)
                })?
            }
            None => {
                std::io::stdin()
                    .read_to_end(&mut data)
                    .context("reading stdin")?;
            }
        }
        Ok(data)
    }

    fn write(&self, data: &[u8]) -> anyhow::Result<()> {
        match &self.output {
            Some(path) => write_output(path, data),
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(data)
                    .and_then(|()| out.flush())
                    .context("writing stdout")
            }
        }
    }
}

/// Writes `--out`: a regular file (or a new one) through a temporary file and a rename, so a
/// failure never leaves half a file; anything else (a device such as `/dev/null`, a FIFO, a
/// terminal) is written in place — renaming over it would replace the device node itself.
fn write_output(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() && !meta.is_dir() => {
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            out.write_all(data)
                .and_then(|()| out.flush())
                .with_context(|| format!("writing {}", path.display()))
        }
        _ => write_atomically(path, data),
    }
}

/// Writes through a temporary file and a rename, so a failure never leaves half a file.
fn write_atomically(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .context("writing output")?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn parse_context(text: &str) -> anyhow::Result<EncryptionContext> {
    Ok(EncryptionContext::parse(text)?)
}

/// Arguments of `encrypt`.
#[derive(Args, Debug)]
pub(crate) struct EncryptArgs {
    /// The key: local://NAME, vault-transit://MOUNT/NAME, aws-kms://…, gcp-kms://…, azure-kv://…
    /// (default: the configured default key).
    #[arg(long)]
    key: Option<String>,
    /// What the data belongs to, as k=v pairs: table=customers,column=email,id=42
    #[arg(long)]
    context: String,
    /// Write the envelope as base64 text (one line), for text columns, JSON or a terminal.
    #[arg(long)]
    armor: bool,
    /// Seal a compact envelope (a DEK id; the wrapped DEK stays in the DEK store, `[deks]
    /// store` or SEALKIT_DEK_STORE) whatever the configured layout.
    #[arg(long)]
    compact: bool,
    #[command(flatten)]
    io: Io,
}

pub(crate) async fn encrypt(ctx: &Ctx, args: EncryptArgs) -> anyhow::Result<()> {
    let keyring = ctx.keyring().await?;
    let context = parse_context(&args.context)?;
    let plaintext = args.io.read()?;
    let key = match &args.key {
        Some(key) => {
            let (uri, version) = KeyUri::parse_with_version(key)?;
            if version.is_some() {
                anyhow::bail!(sealkit::Error::invalid_input(
                    "new data is always sealed under the key's primary version; drop the #vN suffix"
                ));
            }
            uri
        }
        None => keyring.default_key().cloned().ok_or_else(|| {
            sealkit::Error::misconfigured(
                "no key: pass --key, or set default_key (SEALKIT_DEFAULT_KEY)",
            )
        })?,
    };
    let sealed = if args.compact {
        keyring.seal_compact(&key, &plaintext, &context).await?
    } else {
        keyring.seal_with(&key, &plaintext, &context).await?
    };
    keyring.flush_dek_use().await;
    keyring.flush_audit()?;
    if args.armor {
        let mut text = base64::engine::general_purpose::STANDARD.encode(&sealed);
        text.push('\n');
        return args.io.write(text.as_bytes());
    }
    args.io.write(&sealed)
}

/// Arguments of `decrypt`.
#[derive(Args, Debug)]
pub(crate) struct DecryptArgs {
    /// The context the data was sealed with.
    #[arg(long)]
    context: String,
    /// The envelope is base64 text (as `encrypt --armor` writes it; surrounding whitespace is
    /// ignored).
    #[arg(long)]
    armor: bool,
    #[command(flatten)]
    io: Io,
}

pub(crate) async fn decrypt(ctx: &Ctx, args: DecryptArgs) -> anyhow::Result<()> {
    let keyring = ctx.keyring().await?;
    let context = parse_context(&args.context)?;
    let mut sealed = args.io.read()?;
    if args.armor {
        sealed = base64::engine::general_purpose::STANDARD
            .decode(sealed.trim_ascii())
            .map_err(|_| {
                sealkit::Error::invalid_input(
                    "--armor: the input is not base64 text (drop --armor for a binary envelope)",
                )
            })?;
    }
    let plaintext = keyring.open(&sealed, &context).await?;
    keyring.flush_audit()?;
    args.io.write(&plaintext)
}

/// Arguments of `rewrap`.
#[derive(Args, Debug)]
pub(crate) struct RewrapArgs {
    /// The context the data was sealed with.
    #[arg(long)]
    context: String,
    /// Move to this key (default: the envelope's own key, at its current version).
    #[arg(long)]
    key: Option<String>,
    #[command(flatten)]
    io: Io,
}

pub(crate) async fn rewrap(ctx: &Ctx, args: RewrapArgs) -> anyhow::Result<()> {
    let keyring = ctx.keyring().await?;
    let context = parse_context(&args.context)?;
    let target = args.key.as_deref().map(KeyUri::parse).transpose()?;
    let sealed = args.io.read()?;
    let out = match keyring.rewrap(&sealed, &context, target.as_ref()).await? {
        RewrapOutcome::Rewrapped(new) => new,
        _ => sealed,
    };
    keyring.flush_audit()?;
    args.io.write(&out)
}

/// `keys` subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum KeysCommand {
    /// Create a key (version 1).
    Create {
        /// The key URI.
        key: String,
    },
    /// Add a version and make it primary.
    Rotate {
        /// The key URI.
        key: String,
    },
    /// List a key's versions or, with no key, the keys of every configured provider (or of
    /// one, with --scheme).
    List {
        /// The key URI; none lists keys.
        key: Option<String>,
        /// With no key: only the keys of this provider (`local`, `vault-transit`, …).
        #[arg(long, conflicts_with = "key")]
        scheme: Option<String>,
        /// With no key: only keys whose name starts with this (Vault: `MOUNT` or
        /// `MOUNT/NAME-PREFIX`; AWS: `alias/…`; Azure: `VAULT-HOST/keys/…`).
        #[arg(long, conflicts_with = "key")]
        prefix: Option<String>,
    },
    /// Delete a key with every version (AWS KMS and Cloud KMS schedule it, Key Vault soft-deletes
    /// it; Vault and local delete at once).
    /// Data under it can no longer be opened.
    Delete {
        /// The key URI.
        key: String,
        /// Confirms that data under the key may become unrecoverable.
        #[arg(long)]
        yes: bool,
    },
    /// Disable a version: data under it no longer opens until it is enabled again.
    Disable {
        /// The key URI with a version: local://NAME#v1
        key: String,
    },
    /// Enable a disabled version.
    Enable {
        /// The key URI with a version.
        key: String,
    },
    /// Destroy a version's key material, irreversibly.
    Destroy {
        /// The key URI with a version.
        key: String,
    },
    /// Rotate every key of the configuration's [rotation] table whose newest version is older
    /// than its period (run daily from cron); then rewrap with `sealkit migrate run`.
    RotateDue,
    /// Have the provider rotate a key by itself every PERIOD (90d, 12h; `off` to stop), where
    /// the provider can (Vault Transit, Cloud KMS, Key Vault's rotation policy).
    SetRotation {
        /// The key URI.
        key: String,
        /// The period, or `off`.
        period: String,
    },
    /// Crypto-shred a subject: destroy every wrap of its DEKs in the DEK store, so its
    /// compact values never open again (see docs/runbooks/crypto-shredding.md).
    Shred {
        /// The subject, FIELD=VALUE as `[deks] subject` names it: tenant=42
        #[arg(long)]
        scope: String,
        /// Confirms that the subject's compact values become unrecoverable.
        #[arg(long)]
        yes: bool,
    },
}

/// `keys list` with no key: the keys of every provider with an admin side.
async fn list_keys(
    ctx: &Ctx,
    keyring: &Keyring,
    scheme: Option<&str>,
    prefix: Option<&str>,
) -> anyhow::Result<()> {
    let schemes: Vec<&str> = match scheme {
        Some(s) => vec![s],
        None => keyring.admin_schemes(),
    };
    let mut keys = Vec::new();
    for scheme in schemes {
        keys.extend(keyring.list_keys(scheme, prefix).await?);
    }
    let names: Vec<&str> = keys.iter().map(KeyUri::as_str).collect();
    ctx.print(json!({ "keys": names }), || {
        if names.is_empty() {
            "no keys".to_string()
        } else {
            names.join("\n")
        }
    });
    Ok(())
}

fn versioned(key: &str) -> anyhow::Result<(KeyUri, sealkit::KeyVersion)> {
    match KeyUri::parse_with_version(key)? {
        (uri, Some(version)) => Ok((uri, version)),
        (_, None) => anyhow::bail!(sealkit::Error::invalid_input(format!(
            "name the version: {key}#vN (see `sealkit keys list {key}`)"
        ))),
    }
}

pub(crate) async fn keys(ctx: &Ctx, command: KeysCommand) -> anyhow::Result<()> {
    let keyring = ctx.keyring().await?;
    match command {
        KeysCommand::Create { key } => {
            let meta = keyring.create_key(&KeyUri::parse(&key)?).await?;
            ctx.print(
                json!({ "key": key, "primary": meta.primary.as_str() }),
                || format!("created {key}#v{}", meta.primary),
            );
        }
        KeysCommand::Rotate { key } => {
            let version = keyring.rotate_key(&KeyUri::parse(&key)?).await?;
            ctx.print(json!({ "key": key, "primary": version.as_str() }), || {
                format!("rotated {key}: primary is now v{version}")
            });
        }
        KeysCommand::List {
            key: None,
            scheme,
            prefix,
        } => list_keys(ctx, &keyring, scheme.as_deref(), prefix.as_deref()).await?,
        KeysCommand::Delete { key, yes } => {
            let uri = KeyUri::parse(&key)?;
            if !yes {
                anyhow::bail!(sealkit::Error::invalid_input(format!(
                    "deleting {key} makes every value under it unrecoverable; add --yes to confirm"
                )));
            }
            let when = keyring.delete_key(&uri).await?;
            ctx.print(json!({ "key": key, "deletion_unix": when }), || match when {
                Some(t) => format!("{key} is scheduled for deletion at {t} (Unix time); until then it can be restored at the provider"),
                None => format!("deleted {key}"),
            });
        }
        KeysCommand::List { key: Some(key), .. } => {
            let uri = KeyUri::parse(&key)?;
            let meta = keyring.key_metadata(&uri).await?;
            let versions: Vec<_> = meta
                .versions
                .iter()
                .map(|v| json!({ "version": v.version.as_str(), "state": v.state.as_str(), "created_unix": v.created_unix, "created": v.created_unix.map(iso8601), "primary": v.version == meta.primary }))
                .collect();
            ctx.print(
                json!({ "key": key, "primary": meta.primary.as_str(), "versions": versions }),
                || {
                    let mut out = format!("{key}\n");
                    for v in &meta.versions {
                        let mark = if v.version == meta.primary {
                            " (primary)"
                        } else {
                            ""
                        };
                        let created = v
                            .created_unix
                            .map(iso8601)
                            .unwrap_or_else(|| "(unknown)".into());
                        out.push_str(&format!(
                            "  v{:<6} {:<10} created {created}{mark}\n",
                            v.version,
                            v.state.as_str(),
                        ));
                    }
                    out.trim_end().to_string()
                },
            );
        }
        KeysCommand::RotateDue => {
            let periods: Vec<_> = ctx.config()?.rotation.into_iter().collect();
            let rotated = keyring.rotate_due(&periods).await?;
            let items: Vec<_> = rotated
                .iter()
                .map(|(k, v)| json!({ "key": k.as_str(), "primary": v.as_str() }))
                .collect();
            ctx.print(
                json!({ "checked": periods.len(), "rotated": items }),
                || {
                    if rotated.is_empty() {
                        format!("{} keys checked; none due", periods.len())
                    } else {
                        rotated
                            .iter()
                            .map(|(k, v)| format!("rotated {k}: primary is now v{v}"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    }
                },
            );
        }
        KeysCommand::SetRotation { key, period } => {
            let uri = KeyUri::parse(&key)?;
            let period = if period == "off" {
                None
            } else {
                Some(sealkit::config::parse_period(&period)?)
            };
            keyring.set_rotation_period(&uri, period).await?;
            ctx.print(
                json!({ "key": key, "period_secs": period.map(|p| p.as_secs()) }),
                || match period {
                    Some(p) => format!("{key} now rotates every {} s at the provider", p.as_secs()),
                    None => format!("{key} no longer rotates at the provider"),
                },
            );
        }
        KeysCommand::Shred { scope, yes } => {
            if !yes {
                anyhow::bail!(sealkit::Error::invalid_input(format!(
                    "shredding {scope} makes every compact value of it unrecoverable; add --yes to confirm"
                )));
            }
            let shredded = keyring.shred(&scope).await?;
            ctx.print(
                json!({ "subject": scope, "shredded_deks": shredded }),
                || format!("shredded {shredded} DEKs of {scope}"),
            );
        }
        KeysCommand::Disable { key } => {
            set_state(ctx, &keyring, &key, VersionState::Disabled).await?
        }
        KeysCommand::Enable { key } => {
            set_state(ctx, &keyring, &key, VersionState::Enabled).await?
        }
        KeysCommand::Destroy { key } => {
            set_state(ctx, &keyring, &key, VersionState::Destroyed).await?
        }
    }
    keyring.flush_audit()?;
    Ok(())
}

async fn set_state(
    ctx: &Ctx,
    keyring: &Keyring,
    key: &str,
    state: VersionState,
) -> anyhow::Result<()> {
    let (uri, version) = versioned(key)?;
    keyring.set_version_state(&uri, &version, state).await?;
    ctx.print(
        json!({ "key": uri.as_str(), "version": version.as_str(), "state": state.as_str() }),
        || format!("{uri}#v{version} is now {}", state.as_str()),
    );
    Ok(())
}

/// Failure kinds from the most to the least telling, for the exit code of `health`.
const HEALTH_SEVERITY: &[ErrorKind] = &[
    ErrorKind::Misconfigured,
    ErrorKind::PermissionDenied,
    ErrorKind::KeyDisabled,
    ErrorKind::NotFound,
    ErrorKind::InvalidCiphertext,
    ErrorKind::Unavailable,
    ErrorKind::Throttled,
];

pub(crate) async fn health(ctx: &Ctx) -> anyhow::Result<()> {
    let keyring = ctx.keyring().await?;
    let reports = keyring.health().await;
    let failed: Vec<&sealkit::HealthReport> = reports.iter().filter(|r| !r.is_healthy()).collect();
    let worst = HEALTH_SEVERITY
        .iter()
        .copied()
        .find(|kind| failed.iter().any(|r| r.kind == Some(*kind)))
        .or_else(|| (!failed.is_empty()).then_some(ErrorKind::Other));
    let items: Vec<_> = reports
        .iter()
        .map(|r| json!({ "component": r.component, "healthy": r.is_healthy(), "problem": r.problem, "kind": r.kind.map(|k| k.as_str()), "latency_ms": r.latency.as_secs_f64() * 1e3 }))
        .collect();
    ctx.print(
        json!({
            "healthy": worst.is_none(),
            "checks": items,
            "kind": worst.map(|k| k.as_str()),
            "exit_code": worst.map_or(0, crate::exit_code_of),
        }),
        || {
            reports
                .iter()
                .map(|r| match &r.problem {
                    None => format!(
                        "ok    {:<40} {:>8.2} ms",
                        r.component,
                        r.latency.as_secs_f64() * 1e3
                    ),
                    Some(p) => format!("FAIL  {:<40} {p}", r.component),
                })
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
    match worst {
        None => Ok(()),
        Some(kind) => {
            if !ctx.json {
                eprintln!(
                    "sealkit: {} of {} checks failed",
                    failed.len(),
                    reports.len()
                );
            }
            Err(crate::Reported(kind).into())
        }
    }
}

/// `audit` subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// Verify a MAC-chained audit log (default: the configured one) under the audit key
    /// (SEALKIT_AUDIT_KEY or audit.key_secret), against its checkpoint and, if given, a head
    /// recorded elsewhere.
    Verify {
        /// The log file.
        path: Option<PathBuf>,
        /// The checkpoint file (default: audit.checkpoint, or the log's path + `.checkpoint`).
        #[arg(long, conflicts_with = "no_checkpoint")]
        checkpoint: Option<PathBuf>,
        /// Check the chain alone (records cut from the end then go unnoticed).
        #[arg(long)]
        no_checkpoint: bool,
        /// A head MAC recorded earlier (from this command's output) that must still be in the
        /// log.
        #[arg(long, value_name = "HEX")]
        expect_head: Option<String>,
    },
    /// Print a fresh random audit key (base64 of 32 bytes) to store in a secret manager or
    /// SEALKIT_AUDIT_KEY.
    NewKey,
}

pub(crate) async fn audit(ctx: &Ctx, command: AuditCommand) -> anyhow::Result<()> {
    use sealkit::audit::{AuditKey, VerifyOptions, default_checkpoint_path, verify_audit_log};
    match command {
        AuditCommand::Verify {
            path,
            checkpoint,
            no_checkpoint,
            expect_head,
        } => {
            let mut config = ctx.config()?;
            let path = match path {
                Some(p) => p,
                None => config.audit.path.clone().ok_or_else(|| {
                    sealkit::Error::misconfigured(
                        "no audit log configured: pass its path or set SEALKIT_AUDIT_LOG",
                    )
                })?,
            };
            let checkpoint = match (no_checkpoint, checkpoint) {
                (true, _) => None,
                (false, Some(c)) => Some(c),
                (false, None) => Some(
                    config
                        .audit
                        .checkpoint
                        .clone()
                        .unwrap_or_else(|| default_checkpoint_path(&path)),
                ),
            };
            if config.audit.path.is_none() {
                // The key settings apply to a log named on the command line too.
                config.audit.path = Some(path.clone());
                config = config.with_env()?;
            }
            let sources = sealkit::secrets::SecretSources::from_providers(&config.providers)?;
            config.legacy.key_sources.clear(); // verifying needs the audit key only
            config.fetch_secret_keys(&sources).await?;
            let key = config.audit.key.clone().ok_or_else(|| {
                sealkit::Error::misconfigured(format!(
                    "no audit key to verify {} with: export {} (base64 of 32 bytes) or name a secret with audit.key_secret",
                    path.display(),
                    config.audit.key_env
                ))
            })?;
            let mut options = VerifyOptions::default();
            options.checkpoint = checkpoint.as_deref();
            options.expect_head = expect_head.as_deref();
            let report = verify_audit_log(&path, &key, &options)
                .map_err(|e| anyhow::Error::new(e).context(format!("audit key id {}", key.id())))?;
            let partial = report.partial_tail_bytes;
            ctx.print(
                json!({
                    "path": path, "records": report.records, "events": report.events,
                    "head": report.head, "valid": true, "key_id": key.id(),
                    "checkpoint_records": report.checkpoint_records,
                    "recovered_lines": report.recovered_lines,
                    "partial_tail_bytes": partial,
                    "records_after_expected_head": report.records_after_expected_head,
                }),
                || {
                    let mut text = format!(
                        "{}: {} records, chain intact; head {}",
                        path.display(),
                        report.records,
                        report.head
                    );
                    if let Some(n) = report.checkpoint_records {
                        text.push_str(&format!("\ncheckpoint: vouches for {n} records, matched"));
                    }
                    if let Some(n) = report.records_after_expected_head {
                        text.push_str(&format!("\nexpected head found; {n} records after it"));
                    }
                    if report.recovered_lines > 0 {
                        text.push_str(&format!(
                            "\n{} line(s) cut short by a crash, each documented by a recovery record",
                            report.recovered_lines
                        ));
                    }
                    text
                },
            );
            if let Some(bytes) = partial {
                eprintln!(
                    "warning: the last line ({bytes} bytes) was cut short (a crash mid-write?); the next writer records it"
                );
            }
            Ok(())
        }
        AuditCommand::NewKey => {
            let key = AuditKey::generate()?;
            ctx.print(
                json!({ "key": key.to_base64().as_str(), "id": key.id() }),
                || key.to_base64().to_string(),
            );
            Ok(())
        }
    }
}

/// `secrets` subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum SecretsCommand {
    /// Print a secret: a configured `[secrets.NAME]` by its name, or a chain tried in order,
    /// each link SOURCE:NAME: env:VAR, file:PATH, vault-kv2:MOUNT/PATH#FIELD[@VERSION],
    /// vault-kv1:MOUNT/PATH#FIELD, aws-secrets:ID[#FIELD][@VERSION-ID-OR-STAGE],
    /// gcp-secrets:ID-OR-RESOURCE[#FIELD][@VERSION], azure-kv-secrets:[VAULT-HOST/]NAME[#FIELD][@VERSION]
    /// (each cloud source once its provider is configured; #FIELD picks a field of a JSON secret, a dotted path for nested ones). The
    /// source that served it goes to stderr (or the JSON output); the value to stdout.
    Get {
        /// A configured secret's name, or the chain, first choice first.
        #[arg(required = true)]
        specs: Vec<String>,
        /// Fall back on any failure but permission denied (default: only when a source is
        /// unavailable or throttling).
        #[arg(long)]
        any_failure: bool,
    },
    /// Store a secret as a new version in a writable source (vault-kv1:, vault-kv2:,
    /// aws-secrets:, gcp-secrets:, azure-kv-secrets:; the secret is created if needed; NAME#FIELD sets one field of
    /// a JSON object secret). The value comes from --from-env VAR, or stdin (one trailing
    /// newline dropped); it is never printed.
    Put {
        /// Where: SOURCE:NAME, e.g. aws-secrets:app/legacy-key.
        target: String,
        /// Read the value from this environment variable instead of stdin.
        #[arg(long, value_name = "VAR")]
        from_env: Option<String>,
    },
    /// Compare two secrets (each a configured name or a SOURCE:NAME link) in constant time;
    /// print `match` (exit 0) or `mismatch` (exit 1), never a value. For checking a copy before
    /// switching a reader over to it.
    Compare {
        /// The first secret.
        a: String,
        /// The second secret.
        b: String,
    },
}

/// The chain for `specs` over `sources`: one configured `[secrets.NAME]` name, or links.
pub(crate) fn secret_chain(
    config: &Config,
    sources: &sealkit::secrets::SecretSources,
    specs: &[String],
    policy: sealkit::secrets::FallbackPolicy,
) -> anyhow::Result<sealkit::secrets::SecretChain> {
    if let [name] = specs
        && !name.contains(':')
    {
        let secret = config.secrets.get(name).ok_or_else(|| {
            let known: Vec<&str> = config.secrets.keys().map(String::as_str).collect();
            sealkit::Error::not_found(
                "config",
                format!(
                    "secret {name:?}: it is neither SOURCE:NAME nor a configured [secrets.{name}] (configured: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            )
        })?;
        let links: Vec<&str> = secret.sources.iter().map(String::as_str).collect();
        return Ok(sources.chain(name, &links, secret.fallback)?);
    }
    let links: Vec<&str> = specs.iter().map(String::as_str).collect();
    Ok(sources.chain("cli", &links, policy)?)
}

pub(crate) async fn secrets(ctx: &Ctx, command: SecretsCommand) -> anyhow::Result<()> {
    use sealkit::secrets::FallbackPolicy;
    use secrecy::ExposeSecret;
    match command {
        SecretsCommand::Get { specs, any_failure } => {
            let policy = if any_failure {
                FallbackPolicy::OnAnyFailure
            } else {
                FallbackPolicy::OnUnavailable
            };
            let config = ctx.config()?;
            let sources = sealkit::secrets::SecretSources::from_providers(&config.providers)?;
            let chain = secret_chain(&config, &sources, &specs, policy)?;
            let resolved = chain.resolve().await?;
            let value = resolved.secret.value.expose_secret();
            if ctx.json {
                println!(
                    "{}",
                    json!({ "source": resolved.source, "value": String::from_utf8_lossy(value), "version": resolved.secret.version })
                );
            } else {
                eprintln!("sealkit: served by {}", resolved.source);
                let mut out = std::io::stdout().lock();
                out.write_all(value)
                    .and_then(|()| out.flush())
                    .context("writing stdout")?;
            }
            Ok(())
        }
        SecretsCommand::Put { target, from_env } => {
            let value = zeroize::Zeroizing::new(match &from_env {
                Some(var) => std::env::var(var)
                    .map_err(|_| {
                        sealkit::Error::not_found(
                            "env",
                            format!(
                                "environment variable {var} (set it, or pipe the value to stdin)"
                            ),
                        )
                    })?
                    .into_bytes(),
                None => {
                    let mut bytes = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut bytes)
                        .context("reading stdin")?;
                    if bytes.ends_with(b"\r\n") {
                        bytes.truncate(bytes.len() - 2);
                    } else if bytes.ends_with(b"\n") {
                        bytes.pop();
                    }
                    bytes
                }
            });
            if value.is_empty() {
                return Err(sealkit::Error::invalid_input(
                    "the value to store is empty; nothing was written",
                )
                .into());
            }
            let sources =
                sealkit::secrets::SecretSources::from_providers(&ctx.config()?.providers)?;
            let version = sources.link(&target)?.put(&value).await?;
            ctx.print(
                json!({ "stored": target, "version": version, "bytes": value.len() }),
                || match &version {
                    Some(v) => format!("stored {target} (version {v}, {} bytes)", value.len()),
                    None => format!("stored {target} ({} bytes)", value.len()),
                },
            );
            Ok(())
        }
        SecretsCommand::Compare { a, b } => {
            let config = ctx.config()?;
            // One set of sources (one client per provider) serves both sides.
            let sources = sealkit::secrets::SecretSources::from_providers(&config.providers)?;
            let policy = FallbackPolicy::OnUnavailable;
            let first = secret_chain(&config, &sources, &[a], policy)?
                .resolve()
                .await?;
            let second = secret_chain(&config, &sources, &[b], policy)?
                .resolve()
                .await?;
            let same = sealkit::core::ct_eq_bytes(
                first.secret.value.expose_secret(),
                second.secret.value.expose_secret(),
            );
            let verdict = if same { "match" } else { "mismatch" };
            ctx.print(
                json!({ "match": same, "a_source": first.source, "b_source": second.source }),
                || verdict.to_string(),
            );
            if same {
                Ok(())
            } else {
                Err(crate::Reported(ErrorKind::Other).into())
            }
        }
    }
}
