//! The command tree: every task, its arguments and its help, in one place. `main` parses
//! into a [`Task`] and runs it; the tasks themselves are leaves that know nothing of parsing.

/// One task of `cargo xtask`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Task {
    /// Peers up, the whole test suite (extra arguments go to `cargo test`), peers down.
    Test { extra: Vec<String> },
    /// Everything CI checks.
    Ci,
    /// fmt, clippy, codegen --check, tidy.
    Lint,
    /// Regenerate the golden vectors, or check them.
    Codegen { check: bool },
    /// The dependency-tree checks.
    Tidy,
    /// Manage the test peers.
    Peers(PeersAction),
    /// Criterion benchmarks.
    Bench(BenchArgs),
    /// A short fuzzing run.
    FuzzSmoke,
    /// cargo-deny.
    Deny,
    /// This help.
    Help,
}

/// What `peers` does.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum PeersAction {
    Up,
    Down,
    Status,
}

/// `bench` arguments.
#[derive(Debug, PartialEq, Eq, Default)]
pub(crate) struct BenchArgs {
    /// The providers bench against the peers.
    pub(crate) providers: bool,
    /// Sealkit beside tink-aead and envelopers.
    pub(crate) peers: bool,
    /// Shorter measurement.
    pub(crate) quick: bool,
    /// Criterion filters.
    pub(crate) filters: Vec<String>,
}

pub(crate) const HELP: &str = "\
cargo xtask <task>

  test [ARGS]        peers up, the whole test suite, peers down (the README's test command)
  ci                 everything CI checks: lint, test, deny, fuzz-smoke
  lint               fmt --check, clippy -D warnings, codegen --check, tidy
  codegen [--check]  regenerate golden vectors (or fail if they are out of date)
  tidy               dependency-tree checks: sealkit-core holds no I/O crate; an aws-only
                     sealkit has no local key store; a PostgreSQL-only sealkit-migrate no SQLite
  peers up|down|status
                     install (pinned, cached) and start OpenBao, moto, the GCP Secret Manager
                     emulator and PostgreSQL on free 127.0.0.1 ports; addresses in
                     target/peers/peers.env
  bench [providers] [--quick] [--peers] [FILTER]
                     criterion benchmarks (figures go to docs/performance.md); providers runs
                     against the peers; --peers runs Sealkit beside tink-aead and envelopers
  fuzz-smoke         a short cargo-fuzz run of the envelope parser, where cargo-fuzz works
  deny               cargo deny check (licenses, bans, sources, advisories offline)
";

impl Task {
    /// Parses the arguments after `cargo xtask`.
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let rest: Vec<String> = args.iter().skip(1).cloned().collect();
        let no_args = |task: Task| {
            if rest.is_empty() {
                Ok(task)
            } else {
                Err(format!("unexpected arguments {rest:?}\n\n{HELP}"))
            }
        };
        match args.first().map(String::as_str) {
            Some("test") => Ok(Self::Test { extra: rest }),
            Some("ci") => no_args(Self::Ci),
            Some("lint") => no_args(Self::Lint),
            Some("codegen") => match rest.as_slice() {
                [] => Ok(Self::Codegen { check: false }),
                [flag] if flag == "--check" => Ok(Self::Codegen { check: true }),
                _ => Err(format!("codegen takes only --check\n\n{HELP}")),
            },
            Some("tidy") => no_args(Self::Tidy),
            Some("peers") => match rest.first().map(String::as_str) {
                Some("up") => Ok(Self::Peers(PeersAction::Up)),
                Some("down") => Ok(Self::Peers(PeersAction::Down)),
                Some("status") | None => Ok(Self::Peers(PeersAction::Status)),
                Some(other) => Err(format!(
                    "unknown peers action {other:?}: use up, down or status"
                )),
            },
            Some("bench") => {
                let mut bench = BenchArgs::default();
                for arg in &rest {
                    match arg.as_str() {
                        "providers" if bench.filters.is_empty() => bench.providers = true,
                        "--peers" => bench.peers = true,
                        "--quick" => bench.quick = true,
                        flag if flag.starts_with("--") => {
                            return Err(format!("unknown bench flag {flag}\n\n{HELP}"));
                        }
                        filter => bench.filters.push(filter.to_string()),
                    }
                }
                Ok(Self::Bench(bench))
            }
            Some("fuzz-smoke") => no_args(Self::FuzzSmoke),
            Some("deny") => no_args(Self::Deny),
            Some("help") | None => Ok(Self::Help),
            Some(other) => Err(format!("unknown task {other:?}\n\n{HELP}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Task, String> {
        Task::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn every_task_parses_and_bad_input_is_refused() {
        assert_eq!(parse(&[]), Ok(Task::Help));
        assert_eq!(
            parse(&["test", "-p", "sealkit"]),
            Ok(Task::Test {
                extra: vec!["-p".into(), "sealkit".into()]
            })
        );
        assert_eq!(
            parse(&["codegen", "--check"]),
            Ok(Task::Codegen { check: true })
        );
        assert_eq!(parse(&["peers"]), Ok(Task::Peers(PeersAction::Status)));
        assert_eq!(
            parse(&["bench", "--quick", "field64"]),
            Ok(Task::Bench(BenchArgs {
                quick: true,
                filters: vec!["field64".into()],
                ..BenchArgs::default()
            }))
        );
        assert!(parse(&["bench", "--fast"]).is_err());
        assert!(parse(&["lint", "extra"]).is_err());
        assert!(parse(&["peers", "restart"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
    }

    #[test]
    fn the_help_names_every_task() {
        for task in [
            "test",
            "ci",
            "lint",
            "codegen",
            "tidy",
            "peers",
            "bench",
            "fuzz-smoke",
            "deny",
        ] {
            assert!(HELP.contains(&format!("  {task}")), "{task}");
        }
    }
}
