//! `cargo xtask` — Sealkit's development tasks. Run `cargo xtask help`.
//!
//! [`flags`] is the one command tree; [`util`] holds the helpers every task shares; the tasks
//! ([`tasks`], [`peers`], [`codegen`]) are leaves.

mod codegen;
mod flags;
mod peers;
mod tasks;
mod util;

use std::process::ExitCode;

use flags::{PeersAction, Task};

fn run(task: Task) -> Result<(), String> {
    match task {
        Task::Test { extra } => tasks::test(&extra),
        Task::Ci => tasks::ci(),
        Task::Lint => tasks::lint(),
        Task::Codegen { check } => codegen::run(check),
        Task::Tidy => tasks::tidy(),
        Task::Peers(PeersAction::Up) => peers::up(),
        Task::Peers(PeersAction::Down) => peers::down(),
        Task::Peers(PeersAction::Status) => peers::status(),
        Task::Bench(args) => tasks::bench(&args),
        Task::FuzzSmoke => tasks::fuzz_smoke(),
        Task::Deny => tasks::deny(),
        Task::Help => {
            print!("{}", flags::HELP);
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match Task::parse(&args).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}
