//! `sealkit` — envelope encryption from the command line. Run `sealkit --help`.
//!
//! Exit codes: 0 success; 2 usage error; 3 the ciphertext does not open (wrong key, wrong
//! context, altered or malformed data); 4 key, version or file not found; 5 permission denied
//! or key disabled; 6 provider unavailable or throttling; 7 misconfigured; 1 anything else.

mod commands;
mod metrics_export;
mod migrate;
mod quickstart;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sealkit::{Error, ErrorKind};

/// Envelope encryption under keys held in a KMS.
///
/// Provider settings come from the vendor's usual environment variables; Sealkit's own from
/// SEALKIT_* (SEALKIT_HOME, SEALKIT_DEFAULT_KEY, SEALKIT_MODE, SEALKIT_CONFIG…). With nothing
/// set, keys live in ./.sealkit (local://NAME).
#[derive(Parser, Debug)]
#[command(name = "sealkit", version, about, long_about = None)]
struct Cli {
    /// A TOML configuration file (also SEALKIT_CONFIG).
    #[arg(long, global = true, env = "SEALKIT_CONFIG")]
    config: Option<PathBuf>,
    /// Machine-readable output (JSON on stdout).
    #[arg(long, global = true)]
    json: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics while the command runs.
    #[arg(
        long,
        global = true,
        value_name = "ADDR",
        env = "SEALKIT_METRICS_LISTEN"
    )]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Write the Prometheus text exposition of the run's metrics to FILE when it ends.
    #[arg(long, global = true, value_name = "FILE")]
    metrics_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Seal a file or stdin under a key, bound to a context.
    Encrypt(commands::EncryptArgs),
    /// Open a sealed file or stdin (the key is found from the envelope).
    Decrypt(commands::DecryptArgs),
    /// Re-wrap a sealed file's data key under a key's current version (data untouched).
    Rewrap(commands::RewrapArgs),
    /// Create, rotate, list, enable, disable or destroy master keys.
    #[command(subcommand)]
    Keys(commands::KeysCommand),
    /// Check every configured provider, secret source ([secrets.NAME]), the legacy key and the
    /// audit sink.
    Health,
    /// Re-encrypt a table's columns: legacy formats to KMS envelopes, KEK rotation, provider to
    /// provider. Resumable; several workers may share a job on PostgreSQL.
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
    /// Resolve a secret through a fallback chain of sources and print it to stdout.
    #[command(subcommand)]
    Secrets(commands::SecretsCommand),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(commands::AuditCommand),
    /// The main job on embedded defaults: local keys, an SQLite database of customers.
    Quickstart(quickstart::QuickstartArgs),
}

fn exit_code(error: &anyhow::Error) -> u8 {
    match error.downcast_ref::<Error>().map(Error::kind) {
        Some(ErrorKind::InvalidCiphertext | ErrorKind::Malformed) => 3,
        Some(ErrorKind::NotFound) => 4,
        Some(ErrorKind::PermissionDenied | ErrorKind::KeyDisabled) => 5,
        Some(ErrorKind::Unavailable | ErrorKind::Throttled) => 6,
        Some(ErrorKind::Misconfigured | ErrorKind::InvalidInput) => 7,
        _ => 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEALKIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sealkit: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json = cli.json;
    let result = runtime.block_on(async move {
        // The recorder goes in before any keyring exists: handles bind to it at creation.
        let exporter = metrics_export::install(cli.metrics_listen, cli.metrics_file.clone())?;
        let ctx = commands::Ctx {
            config: cli.config,
            json,
        };
        let result = match cli.command {
            Command::Encrypt(a) => commands::encrypt(&ctx, a).await,
            Command::Decrypt(a) => commands::decrypt(&ctx, a).await,
            Command::Rewrap(a) => commands::rewrap(&ctx, a).await,
            Command::Keys(k) => commands::keys(&ctx, k).await,
            Command::Health => commands::health(&ctx).await,
            Command::Audit(a) => commands::audit(&ctx, a),
            Command::Secrets(s) => commands::secrets(&ctx, s).await,
            Command::Migrate(m) => migrate::run(&ctx, m).await,
            Command::Quickstart(a) => quickstart::run(&ctx, a).await,
        };
        exporter.finish()?;
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = exit_code(&e);
            if json {
                let kind = e
                    .downcast_ref::<Error>()
                    .map(|e| e.kind().as_str())
                    .unwrap_or("other");
                println!(
                    "{}",
                    serde_json::json!({ "error": format!("{e:#}"), "kind": kind, "exit_code": code })
                );
            } else {
                eprintln!("sealkit: {e:#}");
            }
            ExitCode::from(code)
        }
    }
}
