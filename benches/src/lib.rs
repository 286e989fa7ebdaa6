//! Helpers shared by the criterion benchmarks in `benches/`; run them with `cargo xtask bench`.

use std::future::Future;
use std::time::{Duration, Instant};

/// The value of `var`, or else its line in `target/peers/peers.env` (written by
/// `cargo xtask peers up`); `None` when the peer is not running.
pub fn peer(var: &str) -> Option<String> {
    if let Ok(v) = std::env::var(var) {
        return Some(v);
    }
    let env = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/peers/peers.env");
    std::fs::read_to_string(env)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{var}=")).map(str::to_string))
}

/// A multi-threaded tokio runtime with `workers` threads, as every bench runs on.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Times `iters` awaits of `op()` inside one task on `rt`, as an application awaits inside
/// its own task: the executor's per-`block_on` cost is not part of what is measured.
pub fn time_in_task<Op, Fut>(rt: &tokio::runtime::Runtime, iters: u64, mut op: Op) -> Duration
where
    Op: FnMut() -> Fut,
    Fut: Future,
{
    rt.block_on(async {
        let started = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(op().await);
        }
        started.elapsed()
    })
}

/// Whether a one-shot (non-criterion) bench called `name` runs: with no filter on the command
/// line, or a filter it contains (`cargo xtask bench rotation`); `--list` lists it instead.
pub fn selected(name: &str) -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{name}: bench");
        return false;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}
