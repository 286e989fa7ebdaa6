//! The tasks behind `cargo xtask`: leaves, each run by `main` from the command tree.

use std::path::Path;
use std::process::Command;

use crate::flags::BenchArgs;
use crate::util::{cargo, has_cargo_subcommand, root, run};

/// The whole test suite.
pub(crate) fn test(extra: &[String]) -> Result<(), String> {
    // Peers up, every test, peers down (also when tests fail).
    let ci = std::env::var_os("CI").is_some();
    if let Err(e) = crate::peers::up() {
        if ci {
            return Err(format!("the test peers did not start: {e}"));
        }
        eprintln!("xtask: the test peers did not start ({e}); tests that need them will skip");
    }
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--all-features", "--no-fail-fast"])
        .args(extra);
    cmd.envs(crate::peers::env_vars());
    let result = run(cmd);
    crate::peers::down()?;
    result
}

/// Everything CI checks.
pub(crate) fn ci() -> Result<(), String> {
    lint()?;
    test(&[])?;
    deny()?;
    fuzz_smoke()
}

/// Formatting, clippy, golden vectors and the core's dependency check.
pub(crate) fn lint() -> Result<(), String> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;
    crate::codegen::run(true)?;
    tidy()
}

/// A build and the crates its normal dependency tree must not hold.
struct TreeRule {
    /// What the rule keeps true, for messages.
    what: &'static str,
    /// `cargo tree` arguments selecting the build.
    build: &'static [&'static str],
    /// Crates that must not be in it.
    forbidden: &'static [&'static str],
}

const TREE_RULES: &[TreeRule] = &[
    // The core is also `#![no_std]`, so the compiler rejects `std::fs`/`std::net` in its own
    // code; this covers its dependencies.
    TreeRule {
        what: "sealkit-core depends on no I/O crate",
        build: &["-p", "sealkit-core"],
        forbidden: &[
            "tokio",
            "hyper",
            "reqwest",
            "mio",
            "socket2",
            "async-std",
            "std-io",
        ],
    },
    TreeRule {
        what: "sealkit with only the aws feature compiles no local key store",
        build: &[
            "-p",
            "sealkit",
            "--no-default-features",
            "--features",
            "aws",
        ],
        forbidden: &["sealkit-local", "argon2"],
    },
    TreeRule {
        what: "a PostgreSQL-only sealkit-migrate compiles no SQLite",
        build: &[
            "-p",
            "sealkit-migrate",
            "--no-default-features",
            "--features",
            "postgres",
        ],
        forbidden: &["rusqlite", "libsqlite3-sys"],
    },
    TreeRule {
        what: "an SQLite-only sealkit-migrate compiles no PostgreSQL client",
        build: &[
            "-p",
            "sealkit-migrate",
            "--no-default-features",
            "--features",
            "sqlite,local",
        ],
        forbidden: &["tokio-postgres", "postgres-protocol"],
    },
];

/// Fails when a build's normal dependency tree holds a crate it must not ([`TREE_RULES`]).
pub(crate) fn tidy() -> Result<(), String> {
    for rule in TREE_RULES {
        let output = cargo()
            .arg("tree")
            .args(rule.build)
            .args(["-e", "normal", "--prefix", "none", "--format", "{p}"])
            .output()
            .map_err(|e| format!("cargo tree: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "cargo tree {:?} failed: {}",
                rule.build,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let tree = String::from_utf8_lossy(&output.stdout);
        let mut bad: Vec<&str> = tree
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| rule.forbidden.contains(name))
            .collect();
        bad.sort_unstable();
        bad.dedup();
        if !bad.is_empty() {
            return Err(format!(
                "tidy: it must hold that {}, but the tree has {}",
                rule.what,
                bad.join(", ")
            ));
        }
        println!(
            "tidy: {} ({} crates checked)",
            rule.what,
            tree.lines().count()
        );
    }
    Ok(())
}

/// Criterion benchmarks. `providers` brings the peers up first and down after.
pub(crate) fn bench(args: &BenchArgs) -> Result<(), String> {
    if args.providers {
        crate::peers::up()?;
        let mut cmd = cargo();
        cmd.args(["bench", "-p", "sealkit-benches", "--bench", "providers"])
            .envs(crate::peers::env_vars());
        let result = run(cmd);
        crate::peers::down()?;
        return result;
    }
    let mut cmd = cargo();
    if args.peers {
        // Its own workspace: the peers' dependencies stay out of the main build and cargo-deny.
        cmd.args([
            "bench",
            "--manifest-path",
            "benches/peers/Cargo.toml",
            "--bench",
            "peers",
        ]);
    } else {
        cmd.args(["bench", "-p", "sealkit-benches"]);
    }
    cmd.arg("--");
    if args.quick {
        cmd.args(["--warm-up-time", "1", "--measurement-time", "2"]);
    }
    cmd.args(&args.filters);
    run(cmd)
}

/// Seconds each fuzz target runs in `fuzz-smoke`.
const FUZZ_SECONDS: u32 = 20;

/// A short run of every fuzz target (`fuzz/Cargo.toml`'s binaries), installing `cargo-fuzz`
/// when it is missing. The fuzz build needs the compiler's `-Z` flags (sanitizer, coverage):
/// `RUSTC_BOOTSTRAP=1` lets the installed stable compiler accept them for this build only, so
/// no nightly toolchain (which could not be downloaded here) is needed.
pub(crate) fn fuzz_smoke() -> Result<(), String> {
    if !has_cargo_subcommand("fuzz") {
        let mut install = Command::new("cargo");
        install.args(["install", "cargo-fuzz", "--locked", "--version", "^0.13"]);
        run(install)?;
    }
    let manifest = std::fs::read_to_string(root().join("fuzz/Cargo.toml"))
        .map_err(|e| format!("reading fuzz/Cargo.toml: {e}"))?;
    let targets: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|name| *name != "sealkit-fuzz")
        .collect();
    if targets.is_empty() {
        return Err("fuzz/Cargo.toml names no fuzz target".into());
    }
    let target_dir = std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".cache/sealkit-fuzz-target"))
        .unwrap_or_else(|| root().join("fuzz/target"));
    for target in &targets {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(root().join("fuzz"))
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_DIR", &target_dir)
            .args(["fuzz", "run", target, "--"])
            .arg(format!("-max_total_time={FUZZ_SECONDS}"));
        run(cmd)?;
    }
    println!(
        "fuzz-smoke: {} targets, {FUZZ_SECONDS} s each: {}",
        targets.len(),
        targets.join(", ")
    );
    Ok(())
}

/// Prepares the offline RustSec snapshot (if present) and runs `cargo deny check`.
pub(crate) fn deny() -> Result<(), String> {
    if !has_cargo_subcommand("deny") {
        return Err("cargo-deny is not installed: `cargo install cargo-deny --locked`".into());
    }
    let snapshot = root().join("../shared/advisory-db");
    let mut checks = vec!["licenses", "bans", "sources"];
    if snapshot.is_dir() {
        prepare_advisory_db(&snapshot)?;
        checks.push("advisories");
    } else {
        println!(
            "deny: no advisory snapshot at {}; advisories not checked",
            snapshot.display()
        );
    }
    // cargo-deny reads `cargo metadata` for every platform: fetch those crates first, so that
    // `--offline` only keeps cargo-deny from fetching its database.
    let mut fetch = cargo();
    fetch.arg("fetch");
    run(fetch)?;
    // The workspace without the test peers, under deny.toml (no advisory ignored): nothing
    // shipped, nor any other test, depends on what only the test peers may use.
    let mut cmd = cargo();
    cmd.args([
        "deny",
        "--offline",
        "--all-features",
        "--workspace",
        "--exclude",
        "sealkit-testpeers",
        "check",
    ])
    .args(&checks);
    run(cmd)?;
    // The test peers alone, under their own deny.toml (which allows the `rsa` timing advisory).
    let mut peers = cargo();
    peers
        .args(["deny", "--offline", "--all-features", "--manifest-path"])
        .arg(root().join("crates/sealkit-testpeers/Cargo.toml"))
        .arg("--config")
        .arg(root().join("crates/sealkit-testpeers/deny.toml"))
        .arg("check")
        .args(&checks);
    run(peers)
}

/// cargo-deny opens its database as a git repository named after the default URL's hash.
fn prepare_advisory_db(snapshot: &Path) -> Result<(), String> {
    let db = root().join("target/advisory-dbs/advisory-db-3157b0e258782691");
    if db.join(".git").is_dir() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(&db);
    std::fs::create_dir_all(db.parent().unwrap()).map_err(|e| e.to_string())?;
    let mut copy = Command::new("cp");
    copy.arg("-r").arg(snapshot).arg(&db);
    run(copy)?;
    let date = "2026-08-21T08:28:40+02:00";
    for args in [
        vec!["init", "-q"],
        vec!["add", "-A"],
        vec![
            "-c",
            "user.name=sealkit",
            "-c",
            "user.email=ci@sealkit.invalid",
            "commit",
            "-q",
            "-m",
            "snapshot",
        ],
    ] {
        let mut git = Command::new("git");
        git.current_dir(&db)
            .args(&args)
            .env("GIT_AUTHOR_DATE", date)
            .env("GIT_COMMITTER_DATE", date);
        run(git)?;
    }
    Ok(())
}
