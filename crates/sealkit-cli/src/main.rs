//! `sealkit` — envelope encryption from the command line. Run `sealkit --help`.
//!
//! Exit codes: 0 success; 2 usage error; 3 the ciphertext does not open (wrong key, wrong
//! context, altered or malformed data); 4 key, version or file not found; 5 permission denied
//! or key disabled; 6 provider unavailable or throttling; 7 misconfigured; 1 anything else.

mod commands;
mod deks;
mod metrics_export;
mod migrate;
mod progress;
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
    Migrate(Box<migrate::MigrateCommand>),
    /// Resolve a secret through a fallback chain of sources and print it to stdout.
    #[command(subcommand)]
    Secrets(commands::SecretsCommand),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(commands::AuditCommand),
    /// The DEK store of compact envelopes: list, count, rewrap (rotation and provider moves
    /// without touching data), drop old wraps.
    #[command(subcommand)]
    Deks(deks::DeksCommand),
    /// The main job on embedded defaults: local keys, an SQLite database of customers.
    Quickstart(quickstart::QuickstartArgs),
}

/// The default log filter: warnings, without the HTTP clients' own error lines (Sealkit
/// reports every failure itself, with what to do; `SEALKIT_LOG` overrides this).
const DEFAULT_LOG_FILTER: &str = "warn,vaultrs=off,rustify=off";

/// The variables the CLI itself reads (besides the library's, in
/// [`sealkit::config::ENV_VARIABLES`] and the providers' descriptors).
const CLI_ENV_VARIABLES: &[&str] = &["SEALKIT_LOG", "SEALKIT_METRICS_LISTEN"];

/// The exit code of each error kind: one code per kind. The README's exit-code table is
/// tested against this.
const EXIT_CODES: &[(u8, &[ErrorKind], &str)] = &[
    (
        1,
        &[ErrorKind::Other, ErrorKind::BudgetExhausted],
        "other failures",
    ),
    (2, &[], "usage"),
    (
        3,
        &[
            ErrorKind::InvalidCiphertext,
            ErrorKind::Malformed,
            ErrorKind::Shredded,
        ],
        "does not open (wrong key/context, altered, malformed, or its data key shredded)",
    ),
    (4, &[ErrorKind::NotFound], "not found"),
    (
        5,
        &[ErrorKind::PermissionDenied, ErrorKind::KeyDisabled],
        "permission denied or key disabled",
    ),
    (
        6,
        &[ErrorKind::Unavailable, ErrorKind::Throttled],
        "provider unavailable/throttling",
    ),
    (
        7,
        &[ErrorKind::Misconfigured, ErrorKind::InvalidInput],
        "misconfigured or invalid input",
    ),
    (8, &[ErrorKind::AlreadyExists], "already exists"),
    (
        9,
        &[ErrorKind::NotSupported],
        "not supported by the provider",
    ),
];

/// A failure the command has already reported in full (with `--json`, in its one document):
/// the process exits with the code of its kind and prints nothing more.
#[derive(Debug)]
pub(crate) struct Reported(pub(crate) ErrorKind);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (reported above)", self.0)
    }
}

impl std::error::Error for Reported {}

/// The exit code for an error kind (1 for a kind the table does not list).
pub(crate) fn exit_code_of(kind: ErrorKind) -> u8 {
    EXIT_CODES
        .iter()
        .find(|(_, kinds, _)| kinds.contains(&kind))
        .map_or(1, |(code, _, _)| *code)
}

fn exit_code(error: &anyhow::Error) -> u8 {
    error
        .downcast_ref::<Error>()
        .map_or(1, |e| exit_code_of(e.kind()))
}

/// The error and its causes, joined by ": ", leaving out a cause whose text is already part
/// of what was printed (Sealkit's messages often quote the cause they keep as a source).
fn error_report(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env(CLI_ENV_VARIABLES[0])
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        // No colour or escape codes unless a person is watching.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
            Command::Audit(a) => commands::audit(&ctx, a).await,
            Command::Deks(d) => deks::run(&ctx, d).await,
            Command::Secrets(s) => commands::secrets(&ctx, s).await,
            Command::Migrate(m) => migrate::run(&ctx, *m).await,
            Command::Quickstart(a) => quickstart::run(&ctx, a).await,
        };
        exporter.finish()?;
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Reported>().is_some() => {
            let Some(Reported(kind)) = e.downcast_ref::<Reported>() else {
                unreachable!()
            };
            ExitCode::from(exit_code_of(*kind))
        }
        Err(e) => {
            let code = exit_code(&e);
            if json {
                let kind = e
                    .downcast_ref::<Error>()
                    .map(|e| e.kind().as_str())
                    .unwrap_or("other");
                println!(
                    "{}",
                    serde_json::json!({ "error": error_report(&e), "kind": kind, "exit_code": code })
                );
            } else {
                eprintln!("sealkit: {}", error_report(&e));
            }
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_has_exactly_one_exit_code() {
        for kind in ErrorKind::ALL {
            let codes: Vec<u8> = EXIT_CODES
                .iter()
                .filter(|(_, kinds, _)| kinds.contains(&kind))
                .map(|(code, _, _)| *code)
                .collect();
            assert_eq!(codes.len(), 1, "{kind}: {codes:?}");
        }
    }

    /// The README's table lists exactly the codes of [`EXIT_CODES`], with the same meaning.
    #[test]
    fn the_readme_exit_code_table_matches_the_mapping() {
        let readme = include_str!("../../../README.md");
        let rows: Vec<(u8, String)> = readme
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line
                    .trim()
                    .trim_matches('|')
                    .split('|')
                    .map(str::trim)
                    .collect();
                match cells.as_slice() {
                    [code, meaning] => code.parse().ok().map(|c| (c, meaning.to_string())),
                    _ => None,
                }
            })
            .collect();
        let mut expected: Vec<(u8, String)> = vec![(0, "ok".to_string())];
        expected.extend(
            EXIT_CODES
                .iter()
                .map(|(code, _, meaning)| (*code, meaning.to_string())),
        );
        assert_eq!(
            rows, expected,
            "README.md's exit-code table and EXIT_CODES disagree"
        );
    }

    /// docs/configuration.md names every variable Sealkit reads, and no `SEALKIT_*` variable
    /// that nothing reads.
    #[test]
    fn the_configuration_doc_lists_exactly_the_variables_read() {
        let doc = include_str!("../../../docs/configuration.md");
        let mut read: Vec<&str> = sealkit::config::ENV_VARIABLES
            .iter()
            .map(|(name, _)| *name)
            .chain(CLI_ENV_VARIABLES.iter().copied())
            .collect();
        for provider in sealkit::providers::builtin() {
            for setting in provider.settings {
                read.extend(setting.variables);
                assert!(
                    doc.contains(&format!("| `{}` | `{}`", provider.name, setting.name))
                        || doc.contains(&format!("| `{}` | `{}`,", provider.name, setting.name))
                        || doc.contains(&format!(", `{}` |", setting.name)),
                    "docs/configuration.md has no row for {}.{}",
                    provider.name,
                    setting.name
                );
            }
        }
        for name in &read {
            assert!(
                doc.contains(&format!("`{name}`")),
                "docs/configuration.md does not mention `{name}`"
            );
        }
        let mut rest = doc;
        while let Some(at) = rest.find("SEALKIT_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            assert!(
                name == "SEALKIT_" || read.contains(&name),
                "docs/configuration.md mentions {name}, which nothing reads"
            );
            rest = &tail[end..];
        }
    }

    #[test]
    fn iso8601_dates() {
        assert_eq!(commands::iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(commands::iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(commands::iso8601(1_795_907_778), "2026-11-28T23:16:18Z");
    }

    #[test]
    fn secrets_get_help_lists_every_source() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("secrets")
            .and_then(|s| s.find_subcommand_mut("get"))
            .unwrap()
            .render_long_help()
            .to_string();
        let sources = sealkit::providers::builtin()
            .iter()
            .flat_map(|p| p.secret_sources.iter().copied())
            .chain(["env", "file"]);
        for source in sources {
            assert!(
                help.contains(&format!("{source}:")),
                "{source} missing from:\n{help}"
            );
        }
    }

    #[test]
    fn a_cause_already_quoted_is_printed_once() {
        let inner = std::io::Error::other("connection refused");
        let error = anyhow::Error::new(
            Error::unavailable("vault", "reading key: connection refused").with_source(inner),
        );
        let report = error_report(&error);
        assert_eq!(report.matches("connection refused").count(), 1, "{report}");
        assert_eq!(exit_code(&error), 6);
    }
}
