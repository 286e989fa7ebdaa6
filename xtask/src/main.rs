//! `cargo xtask` — Sealkit's development tasks. Run `cargo xtask help`.

mod codegen;
mod peers;
mod tasks;

use std::process::ExitCode;

const HELP: &str = "\
cargo xtask <task>

  test               peers up, the whole test suite, peers down (the README's test command)
  ci                 everything CI checks: lint, test, deny, fuzz-smoke
  lint               fmt --check, clippy -D warnings, codegen --check, tidy
  codegen [--check]  regenerate golden vectors (or fail if they are out of date)
  tidy               check that sealkit-core's dependency tree holds no I/O crate
  peers up|down|status
                     install (pinned, cached) and start OpenBao, moto and PostgreSQL on
                     free 127.0.0.1 ports; addresses in target/peers/peers.env
  bench [--quick] [--peers] [FILTER]
                     criterion benchmarks (figures go to docs/performance.md); --peers runs
                     Sealkit beside tink-aead and envelopers
  fuzz-smoke         a short cargo-fuzz run of the envelope parser, where cargo-fuzz works
  deny               cargo deny check (licenses, bans, sources, advisories offline)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => tasks::test(&rest),
        Some("ci") => tasks::ci(),
        Some("lint") => tasks::lint(),
        Some("codegen") => codegen::run(rest.contains(&"--check")),
        Some("tidy") => tasks::tidy(),
        Some("peers") => match rest.first().copied() {
            Some("up") => peers::up(),
            Some("down") => peers::down(),
            Some("status") | None => peers::status(),
            Some(other) => Err(format!(
                "unknown peers action {other:?}: use up, down or status"
            )),
        },
        Some("bench") => tasks::bench(&rest),
        Some("fuzz-smoke") => tasks::fuzz_smoke(),
        Some("deny") => tasks::deny(),
        Some("help") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => Err(format!("unknown task {other:?}\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}
