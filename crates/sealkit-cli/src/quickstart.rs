//! `sealkit quickstart`: the main job on embedded defaults.
//!
//! Creates a local key store and an SQLite database of sample customers whose PII fields are
//! sealed the legacy way (AES-256-GCM under an env master key), migrates them to envelopes
//! under `local://customers` with a re-encryption job (each bound to table, column, row id),
//! reads everything back, rotates the master key and rewraps every data key with a second job
//! without touching the data ciphertexts, verifies every row from a cold keyring, verifies the
//! audit chain and its checkpoint and prints a report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rusqlite::{Connection, params};
use sealkit::audit::AuditKey;
use sealkit::{Config, EncryptionContext, KeyUri, Keyring, KeyringStats};
use serde_json::json;

use crate::commands::Ctx;

const COLUMNS: [&str; 4] = ["name", "email", "phone", "notes"];
const KEY: &str = "local://customers";

/// Arguments of `quickstart`.
#[derive(Args, Debug)]
pub(crate) struct QuickstartArgs {
    /// Working directory for the key store, database and audit log (default: a temporary
    /// directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Number of customer rows.
    #[arg(long, default_value_t = 100_000)]
    rows: u64,
    /// Also audit every seal and open (about 300 bytes each), not only key operations.
    #[arg(long)]
    audit_data_operations: bool,
}

/// Deterministic sample data.
fn field(id: u64, column: &str) -> String {
    const FIRST: [&str; 8] = [
        "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
    ];
    const LAST: [&str; 8] = [
        "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
    ];
    let (f, l) = (FIRST[(id % 8) as usize], LAST[(id / 8 % 8) as usize]);
    match column {
        "name" => format!("{f} {l}"),
        "email" => format!("{}.{}{id}@example.com", f.to_lowercase(), l.to_lowercase()),
        "phone" => format!("+1-555-{:04}-{:03}", id % 10_000, id % 997),
        _ => format!(
            "Customer #{id}; prefers contact by {}; account opened {}",
            if id.is_multiple_of(2) {
                "email"
            } else {
                "phone"
            },
            2000 + id % 25
        ),
    }
}

fn context(id: u64, column: &str) -> anyhow::Result<EncryptionContext> {
    Ok(EncryptionContext::builder()
        .with("table", "customers")
        .with("column", column)
        .with("id", &id.to_string())
        .build()?)
}

fn progress(ctx: &Ctx, len: u64, label: &str) -> ProgressBar {
    if ctx.json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len).with_message(label.to_string());
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} rows ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

struct Phase {
    name: &'static str,
    elapsed: Duration,
}

/// The quickstart's audit key, kept in `audit.key` (mode 0600) beside the log so that a re-run
/// in the same directory continues the chain. A deployment keeps it in a secret manager.
fn audit_key(dir: &Path) -> anyhow::Result<AuditKey> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("audit.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(AuditKey::from_base64(&path.display().to_string(), &text)?);
    }
    let key = AuditKey::generate()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(key.to_base64().as_bytes())?;
    Ok(key)
}

fn keyring_for(dir: &Path, audit_data_operations: bool) -> anyhow::Result<Keyring> {
    let mut config = Config::default();
    config.default_key = Some(KeyUri::parse(KEY)?);
    config
        .provider("local")
        .set("home", dir.join(".sealkit").to_str().unwrap());
    config.audit.path = Some(dir.join("audit.jsonl"));
    config.audit.data_operations = Some(audit_data_operations);
    config.actor = "sealkit-quickstart".into();
    Ok(Keyring::builder(config)
        .with_audit_key(audit_key(dir)?)
        .build()?)
}

/// The application's starting point: every PII field sealed by hand-rolled AES-256-GCM
/// (`16-byte IV ‖ ciphertext ‖ tag`) under a master key from an environment variable.
fn fill_legacy(
    ctx: &Ctx,
    db: &mut Connection,
    legacy_key: &sealkit::DataKey,
    rows: u64,
) -> anyhow::Result<()> {
    use sealkit::core::legacy::{self, LegacyFormat};
    db.execute_batch(
        "DROP TABLE IF EXISTS customers;
         DROP TABLE IF EXISTS sealkit_chunks; DROP TABLE IF EXISTS sealkit_jobs;
         CREATE TABLE customers (id INTEGER PRIMARY KEY, name BLOB NOT NULL, email BLOB NOT NULL, phone BLOB NOT NULL, notes BLOB NOT NULL);",
    )?;
    let bar = progress(ctx, rows, "legacy");
    let tx = db.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO customers (id, name, email, phone, notes) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let rng = sealkit::random::OsRandom;
        for id in 1..=rows {
            let mut sealed = Vec::with_capacity(4);
            for column in COLUMNS {
                sealed.push(legacy::seal(
                    LegacyFormat::AesGcmIv16,
                    legacy_key,
                    &rng,
                    field(id, column).as_bytes(),
                    b"",
                )?);
            }
            insert.execute(params![id, sealed[0], sealed[1], sealed[2], sealed[3]])?;
            bar.inc(1);
        }
    }
    tx.commit()?;
    bar.finish_and_clear();
    Ok(())
}

/// Runs a re-encryption job over the quickstart database.
async fn run_job(
    ctx: &Ctx,
    dir: &Path,
    keyring: &Keyring,
    job: &str,
    format: &str,
    legacy_key: Option<&sealkit::DataKey>,
    rows: u64,
) -> anyhow::Result<u64> {
    let columns = COLUMNS
        .iter()
        .map(|c| format!("{c}={format}").parse())
        .collect::<Result<Vec<sealkit_migrate::ColumnSpec>, _>>()?;
    let spec = sealkit_migrate::JobSpec::new(job, "customers", "id", columns, KeyUri::parse(KEY)?)?;
    let store =
        sealkit_migrate::open_store(dir.join("customers.db").to_str().unwrap_or("customers.db"))
            .await?;
    let mut migrator = sealkit_migrate::Migrator::new(keyring.clone(), spec, store);
    if let Some(k) = legacy_key {
        migrator = migrator.with_legacy_key(k.clone());
    }
    let bar = progress(ctx, rows, job.rsplit('-').next().unwrap_or(job));
    let report = {
        let bar = bar.clone();
        migrator
            .run("quickstart", &move |c: &sealkit_migrate::Counts| {
                bar.set_position((c.migrated + c.skipped) as u64 / COLUMNS.len() as u64)
            })
            .await?
    };
    bar.finish_and_clear();
    if report.failed > 0 {
        anyhow::bail!("{} values could not be converted", report.failed);
    }
    let verify = migrator.verify().await?;
    if verify.problem_count > 0 {
        anyhow::bail!(
            "after {job}, {} values are not under {KEY}: {:?}",
            verify.problem_count,
            verify.problems
        );
    }
    Ok(report.migrated)
}

/// The data ciphertexts (nonce, ciphertext, tag) of every value, to prove a rewrap left them.
fn bodies(db: &Connection) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut stmt = db.prepare("SELECT name, email, phone, notes FROM customers ORDER BY id")?;
    let mut out = Vec::new();
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        for i in 0..4 {
            let value: Vec<u8> = row.get(i)?;
            let env = sealkit::core::Envelope::parse(&value)?;
            out.push([env.nonce(), env.ciphertext(), env.tag()].concat());
        }
    }
    Ok(out)
}

async fn verify_rows(
    ctx: &Ctx,
    db: &Connection,
    keyring: &Keyring,
    rows: u64,
    label: &str,
) -> anyhow::Result<()> {
    let bar = progress(ctx, rows, label);
    let mut select =
        db.prepare("SELECT id, name, email, phone, notes FROM customers ORDER BY id")?;
    let mut cursor = select.query([])?;
    let mut seen = 0u64;
    while let Some(row) = cursor.next()? {
        let id: u64 = row.get(0)?;
        for (i, column) in COLUMNS.iter().enumerate() {
            let sealed: Vec<u8> = row.get(i + 1)?;
            let opened = keyring
                .open(&sealed, &context(id, column)?)
                .await
                .with_context(|| format!("row {id}, column {column}"))?;
            if opened != field(id, column).as_bytes() {
                anyhow::bail!("row {id}, column {column} opened to the wrong plaintext");
            }
        }
        seen += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    if seen != rows {
        anyhow::bail!("expected {rows} rows, found {seen}");
    }
    Ok(())
}

pub(crate) async fn run(ctx: &Ctx, args: QuickstartArgs) -> anyhow::Result<()> {
    let temp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let rows = args.rows;
    let total = Instant::now();
    let mut phases = Vec::new();
    let mut timed = |name, started: Instant| {
        phases.push(Phase {
            name,
            elapsed: started.elapsed(),
        })
    };

    let keyring = keyring_for(&dir, args.audit_data_operations)?;
    let key = KeyUri::parse(KEY)?;
    if keyring.key_metadata(&key).await.is_err() {
        keyring.create_key(&key).await?;
    }
    let mut db =
        Connection::open(dir.join("customers.db")).context("opening the SQLite database")?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    // The legacy master key, as it would come from ENCRYPTION_MASTER_KEY.
    let legacy_key = sealkit::DataKey::generate(&sealkit::random::OsRandom)?;

    let started = Instant::now();
    fill_legacy(ctx, &mut db, &legacy_key, rows)?;
    timed("legacy fill", started);

    let started = Instant::now();
    let moved = run_job(
        ctx,
        &dir,
        &keyring,
        "quickstart-to-kms",
        "aes-gcm-iv16",
        Some(&legacy_key),
        rows,
    )
    .await?;
    timed("migrate legacy to KMS", started);
    let after_seal = keyring.stats();

    let started = Instant::now();
    verify_rows(ctx, &db, &keyring, rows, "read").await?;
    timed("read back", started);

    let started = Instant::now();
    let before = bodies(&db)?;
    let version = keyring.rotate_key(&key).await?;
    let rewrapped = run_job(
        ctx,
        &dir,
        &keyring,
        "quickstart-rotate",
        "envelope",
        None,
        rows,
    )
    .await?;
    if bodies(&db)? != before {
        anyhow::bail!("the rotation changed data ciphertexts");
    }
    timed("rotate + rewrap job", started);
    let after_rewrap = keyring.stats();
    keyring.flush_audit()?;
    let _ = moved;

    let started = Instant::now();
    let cold = keyring_for(&dir, args.audit_data_operations)?;
    verify_rows(ctx, &db, &cold, rows, "verify").await?;
    cold.flush_audit()?;
    timed("verify (cold keyring)", started);
    let cold_stats = cold.stats();
    drop(cold);
    drop(keyring);

    let started = Instant::now();
    let log = dir.join("audit.jsonl");
    let mut checked = sealkit::audit::VerifyOptions::default();
    let checkpoint = sealkit::audit::default_checkpoint_path(&log);
    checked.checkpoint = Some(&checkpoint);
    let audit = sealkit::audit::verify_audit_log(&log, &audit_key(&dir)?, &checked)?;
    timed("audit verify", started);

    let fields = rows * COLUMNS.len() as u64;
    let seconds = total.elapsed().as_secs_f64();
    report(
        ctx,
        &dir,
        rows,
        fields,
        seconds,
        &phases,
        after_seal,
        after_rewrap,
        cold_stats,
        rewrapped,
        &version.to_string(),
        audit.records,
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    ctx: &Ctx,
    dir: &Path,
    rows: u64,
    fields: u64,
    seconds: f64,
    phases: &[Phase],
    seal: KeyringStats,
    rewrap: KeyringStats,
    cold: KeyringStats,
    rewrapped: u64,
    version: &str,
    audit_records: u64,
) {
    let rate = |p: &Phase| rows as f64 / p.elapsed.as_secs_f64().max(1e-9);
    if ctx.json {
        let phases: Vec<_> = phases
            .iter()
            .map(|p| json!({ "phase": p.name, "seconds": p.elapsed.as_secs_f64(), "rows_per_second": rate(p) }))
            .collect();
        println!(
            "{}",
            json!({
                "dir": dir, "rows": rows, "fields": fields, "seconds": seconds, "phases": phases,
                "kms_calls": { "migrate": seal.kms_calls, "rotate_rewrap": rewrap.kms_calls - seal.kms_calls, "verify_cold": cold.kms_calls },
                "cache_hits": rewrap.cache_hits + cold.cache_hits,
                "rewrapped_fields": rewrapped, "primary_version": version, "audit_records": audit_records,
            })
        );
        return;
    }
    println!(
        "Sealkit quickstart — {rows} customers, {fields} sealed fields, in {}",
        dir.display()
    );
    for p in phases {
        if p.name == "audit verify" {
            println!("  {:<22} {:>8.3} s", p.name, p.elapsed.as_secs_f64());
        } else {
            println!(
                "  {:<22} {:>8.3} s  {:>10.0} rows/s",
                p.name,
                p.elapsed.as_secs_f64(),
                rate(p)
            );
        }
    }
    println!("  total                  {seconds:>8.3} s");
    println!(
        "KMS calls: {} to migrate {fields} legacy fields, {} for rotation + rewrap of {rewrapped} fields, {} for a cold read of everything",
        seal.kms_calls,
        rewrap.kms_calls - seal.kms_calls,
        cold.kms_calls
    );
    println!(
        "DEK cache: {} hits, {} misses (warm keyring); {} hits, {} misses (cold keyring)",
        rewrap.cache_hits, rewrap.cache_misses, cold.cache_hits, cold.cache_misses
    );
    println!(
        "Legacy AES-GCM data migrated to local://customers; key rotated to v{version} with data ciphertexts unchanged; every row verified from a cold keyring"
    );
    println!("Audit log: {audit_records} records, MAC chain and checkpoint intact");
}
