//! End-to-end tests of the `sealkit` binary against real key files and a real SQLite database.

mod azure;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn sealkit(home: &Path, args: &[&str], stdin: &[u8]) -> Output {
    sealkit_with(home, &[], args, stdin)
}

/// Runs `sealkit` with the test's key store and audit log, plus `env` (provider settings).
fn sealkit_with(home: &Path, env: &[(&str, &str)], args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sealkit"))
        .args(args)
        .env("SEALKIT_HOME", home.join(".sealkit"))
        .env("SEALKIT_AUDIT_LOG", home.join("audit.jsonl"))
        .env("SEALKIT_AUDIT_KEY", TEST_AUDIT_KEY)
        .env_remove("SEALKIT_CONFIG")
        .env_remove("SEALKIT_DEFAULT_KEY")
        .env_remove("SEALKIT_MODE")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sealkit binary starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// The variables that point the AWS SDK at `endpoint` (moto, or a test listener) with test
/// credentials, followed by `more`.
fn aws_env<'a>(endpoint: &'a str, more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    env.extend_from_slice(more);
    env
}

/// `plaintext` sealed as the legacy application did: AES-256-GCM, 16-byte IV, under `key`.
fn legacy_iv16(key: [u8; 32], plaintext: &[u8]) -> Vec<u8> {
    sealkit::core::legacy::seal(
        sealkit::core::legacy::LegacyFormat::AesGcmIv16,
        &sealkit::DataKey::from_bytes(key),
        &sealkit::random::OsRandom,
        plaintext,
        b"",
    )
    .unwrap()
}

/// The audit key of the tests' logs (base64 of 32 bytes).
const TEST_AUDIT_KEY: &str = "c2VhbGtpdCB0ZXN0IGF1ZGl0IGtleSwgMzIgYnl0ZXM=";

fn ok(out: &Output) -> &[u8] {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    &out.stdout
}

const CTX: &str = "table=customers,column=email,id=42";

#[test]
fn encrypt_decrypt_rotate_rewrap_and_exit_codes() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    ok(&sealkit(h, &["keys", "create", "local://customers"], b""));
    let sealed = ok(&sealkit(
        h,
        &["encrypt", "--key", "local://customers", "--context", CTX],
        b"alice@example.com",
    ))
    .to_vec();
    assert_eq!(&sealed[..2], b"SK");
    assert_eq!(
        ok(&sealkit(h, &["decrypt", "--context", CTX], &sealed)),
        b"alice@example.com"
    );

    // Wrong context: exit 3, a message, no plaintext.
    let out = sealkit(
        h,
        &["decrypt", "--context", "table=customers,column=email,id=43"],
        &sealed,
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not be opened"));
    // Truncated: exit 3.
    assert_eq!(
        sealkit(
            h,
            &["decrypt", "--context", CTX],
            &sealed[..sealed.len() - 1]
        )
        .status
        .code(),
        Some(3)
    );
    // Unknown key: exit 4 with what to do.
    let out = sealkit(
        h,
        &["encrypt", "--key", "local://nope", "--context", CTX],
        b"x",
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keys create"));
    // Missing context: exit 7.
    assert_eq!(
        sealkit(
            h,
            &["encrypt", "--key", "local://customers", "--context", ""],
            b"x"
        )
        .status
        .code(),
        Some(7)
    );

    // Rotate, rewrap through files, and the result opens; v1 can then be disabled.
    ok(&sealkit(h, &["keys", "rotate", "local://customers"], b""));
    let in_file = h.join("email.sealed");
    std::fs::write(&in_file, &sealed).unwrap();
    let in_arg = in_file.to_str().unwrap();
    ok(&sealkit(
        h,
        &["rewrap", "--context", CTX, "--in", in_arg, "--out", in_arg],
        b"",
    ));
    let rewrapped = std::fs::read(&in_file).unwrap();
    assert_ne!(rewrapped, sealed);
    assert_eq!(
        rewrapped[rewrapped.len() - 16..],
        sealed[sealed.len() - 16..],
        "tag unchanged"
    );
    ok(&sealkit(
        h,
        &["keys", "disable", "local://customers#v1"],
        b"",
    ));
    assert_eq!(
        ok(&sealkit(
            h,
            &["decrypt", "--context", CTX, "--in", in_arg],
            b""
        )),
        b"alice@example.com"
    );
    // The old envelope is under the disabled version: exit 5.
    assert_eq!(
        sealkit(h, &["decrypt", "--context", CTX], &sealed)
            .status
            .code(),
        Some(5)
    );

    // JSON listing for scripts.
    let listing: serde_json::Value = serde_json::from_slice(ok(&sealkit(
        h,
        &["--json", "keys", "list", "local://customers"],
        b"",
    )))
    .unwrap();
    assert_eq!(listing["primary"], "2");
    assert_eq!(listing["versions"][0]["state"], "disabled");

    // Health and the audit chain.
    let health: serde_json::Value =
        serde_json::from_slice(ok(&sealkit(h, &["--json", "health"], b""))).unwrap();
    assert_eq!(health["healthy"], true);
    let audit: serde_json::Value =
        serde_json::from_slice(ok(&sealkit(h, &["--json", "audit", "verify"], b""))).unwrap();
    assert!(audit["records"].as_u64().unwrap() >= 8, "{audit}");
    assert_eq!(audit["checkpoint_records"], audit["records"]);
}

/// Eight CLI processes appending to one audit log at once leave one chain that verifies; the
/// head printed before more records were added is still found after.
#[test]
fn eight_processes_share_one_audit_chain() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    ok(&sealkit(h, &["keys", "create", "local://k"], b""));
    let before: serde_json::Value =
        serde_json::from_slice(ok(&sealkit(h, &["--json", "audit", "verify"], b""))).unwrap();
    let head = before["head"].as_str().unwrap().to_string();
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let home = h.to_path_buf();
            std::thread::spawn(move || {
                let context = format!("table=t,column=c,id={i}");
                for _ in 0..3 {
                    ok(&sealkit(
                        &home,
                        &["encrypt", "--key", "local://k", "--context", &context],
                        b"x",
                    ));
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let after: serde_json::Value = serde_json::from_slice(ok(&sealkit(
        h,
        &["--json", "audit", "verify", "--expect-head", &head],
        b"",
    )))
    .unwrap();
    // Each encrypt records at least its seal.
    assert!(
        after["records_after_expected_head"].as_u64().unwrap() >= 24,
        "{after}"
    );
    // Without the key there is no verdict; with another key, a clear failure.
    let out = sealkit_with(
        h,
        &[(
            "SEALKIT_AUDIT_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )],
        &["audit", "verify"],
        b"",
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("audit key"), "{err}");
}

#[test]
fn corrupt_key_file_gives_a_clear_error_and_exit_7() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    ok(&sealkit(h, &["keys", "create", "local://k"], b""));
    std::fs::write(h.join(".sealkit/keys/k.json"), b"{ torn").unwrap();
    let out = sealkit(
        h,
        &["encrypt", "--key", "local://k", "--context", CTX],
        b"x",
    );
    assert_eq!(out.status.code(), Some(7));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupt") && err.contains("restore"), "{err}");
}

#[test]
fn quickstart_runs_and_reports() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("qs");
    let out = sealkit(
        home.path(),
        &[
            "--json",
            "quickstart",
            "--rows",
            "300",
            "--dir",
            dir.to_str().unwrap(),
        ],
        b"",
    );
    let report: serde_json::Value = serde_json::from_slice(ok(&out)).unwrap();
    assert_eq!(report["rows"], 300);
    assert_eq!(report["fields"], 1200);
    assert_eq!(report["rewrapped_fields"], 1200);
    assert_eq!(report["primary_version"], "2");
    // Four columns, four DEK scopes: four data keys for all 1,200 fields (plus key creation
    // and version lookups).
    assert!(
        report["kms_calls"]["migrate"].as_u64().unwrap() <= 8,
        "{report}"
    );
    // The database holds envelopes, not plaintext.
    let db = rusqlite_free_check(&dir.join("customers.db"));
    assert!(
        !db.windows(12).any(|w| w == b"@example.com"),
        "plaintext found in the database file"
    );
}

/// Reads the database file as bytes (a plaintext scan needs no SQL).
fn rusqlite_free_check(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    if let Ok(wal) = std::fs::read(path.with_extension("db-wal")) {
        bytes.extend(wal);
    }
    bytes
}

#[test]
fn metrics_file_holds_the_prometheus_exposition() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let metrics = h.join("metrics.prom");
    let m = metrics.to_str().unwrap();
    ok(&sealkit(h, &["keys", "create", "local://customers"], b""));
    let sealed = ok(&sealkit(
        h,
        &[
            "--metrics-file",
            m,
            "encrypt",
            "--key",
            "local://customers",
            "--context",
            CTX,
        ],
        b"x",
    ))
    .to_vec();
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains(r#"sealkit_crypto_encrypt_total{provider="local",key_version="1"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"sealkit_kms_calls_total{provider="local",operation="generate_data_key"} 1"#
        ),
        "{text}"
    );
    // A failed open is counted by kind.
    let out = sealkit(
        h,
        &[
            "--metrics-file",
            m,
            "decrypt",
            "--context",
            "table=x,column=y,id=1",
        ],
        &sealed,
    );
    assert_eq!(out.status.code(), Some(3));
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("sealkit_crypto_errors_total{"), "{text}");
    assert!(
        text.contains(r#"error_type="invalid_ciphertext""#),
        "{text}"
    );
}

#[test]
fn metrics_listener_serves_prometheus_while_a_job_runs() {
    use std::io::Read;
    let home = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir = home.path().join("qs");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sealkit"))
        .args([
            "--metrics-listen",
            &addr,
            "--json",
            "quickstart",
            "--rows",
            "200000",
            "--dir",
            dir.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut scraped = None;
    for _ in 0..2400 {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if let Ok(mut conn) = std::net::TcpStream::connect(&addr) {
            let _ = conn.write_all(
                b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            );
            let mut body = String::new();
            let _ = conn.read_to_string(&mut body);
            if body.contains("sealkit_crypto_encrypt_total") {
                scraped = Some(body);
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let body = scraped.expect("no metrics scraped while the quickstart ran");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains(r#"provider="local""#));
}

/// The key contract every provider follows through the CLI: `keys create`, `encrypt`,
/// `decrypt`, `keys rotate`, then `rewrap`, which changes the key slot only. Returns the
/// envelope sealed under v1 and its rewrapped copy.
fn create_seal_rotate_rewrap(
    run: &dyn Fn(&[&str], &[u8]) -> Output,
    key: &str,
) -> (Vec<u8>, Vec<u8>) {
    ok(&run(&["keys", "create", key], b""));
    let sealed = ok(&run(
        &["encrypt", "--key", key, "--context", CTX],
        b"alice@example.com",
    ))
    .to_vec();
    assert_eq!(
        ok(&run(&["decrypt", "--context", CTX], &sealed)),
        b"alice@example.com"
    );
    ok(&run(&["keys", "rotate", key], b""));
    let rewrapped = ok(&run(&["rewrap", "--context", CTX], &sealed)).to_vec();
    assert_eq!(
        rewrapped[rewrapped.len() - 16..],
        sealed[sealed.len() - 16..],
        "data ciphertext untouched"
    );
    assert_eq!(
        ok(&run(&["decrypt", "--context", CTX], &rewrapped)),
        b"alice@example.com"
    );
    let scheme = key.split("://").next().unwrap();
    let listed = || -> Vec<String> {
        let out = ok(&run(&["--json", "keys", "list", "--scheme", scheme], b"")).to_vec();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    };
    assert!(listed().iter().any(|k| k == key), "{key} is listed");
    let again = run(&["keys", "create", key], b"");
    assert_eq!(again.status.code(), Some(8), "already exists");
    (sealed, rewrapped)
}

/// `keys delete` refuses without --yes, then deletes: the key is no longer listed and its
/// envelopes no longer open.
fn delete_key(run: &dyn Fn(&[&str], &[u8]) -> Output, key: &str, sealed: &[u8]) {
    let refused = run(&["keys", "delete", key], b"");
    assert_eq!(refused.status.code(), Some(7), "--yes is required");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    ok(&run(&["keys", "delete", key, "--yes"], b""));
    delete_key_listed_no_more(run, key);
    assert!(!run(&["decrypt", "--context", CTX], sealed).status.success());
}

/// The CLI contract with Vault Transit keys, configured only by VAULT_ADDR and VAULT_TOKEN.
#[test]
fn vault_transit_keys_through_the_cli() {
    use sealkit_conformance::peers::{unique, vault_peer};
    let Some((addr, token)) = vault_peer() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let env = [
        ("VAULT_ADDR", addr.as_str()),
        ("VAULT_TOKEN", token.as_str()),
        ("APP_DB_PASSWORD", "from-env"),
    ];
    let run = |args: &[&str], stdin: &[u8]| sealkit_with(h, &env, args, stdin);
    let key = format!("vault-transit://transit/{}", unique("cli"));
    let (sealed, _) = create_seal_rotate_rewrap(&run, &key);
    delete_key(&run, &key, &sealed);
    // A create that succeeds prints no error lines (the Vault client logs the 404 of the
    // existence check as an error; the default log level leaves it out).
    let quiet = run(
        &[
            "keys",
            "create",
            &format!("vault-transit://transit/{}", unique("quiet")),
        ],
        b"",
    );
    ok(&quiet);
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("ERROR"),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    // Asked for, the log lines come, without escape codes when stderr is not a terminal.
    let mut verbose_env = env.to_vec();
    verbose_env.push(("SEALKIT_LOG", "debug"));
    let verbose = sealkit_with(
        h,
        &verbose_env,
        &[
            "keys",
            "create",
            &format!("vault-transit://transit/{}", unique("plain")),
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&verbose.stderr);
    assert!(
        stderr.contains("ERROR") || stderr.contains("DEBUG"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "escape codes in {stderr}");
    // Local and Vault envelopes open through one invocation style.
    ok(&run(&["keys", "create", "local://customers"], b""));
    let local = ok(&run(
        &["encrypt", "--key", "local://customers", "--context", CTX],
        b"bob",
    ))
    .to_vec();
    assert_eq!(ok(&run(&["decrypt", "--context", CTX], &local)), b"bob");
    // A secret chain: Vault KV lacks it, so the env source serves (any-failure policy).
    let out = run(
        &[
            "secrets",
            "get",
            "--any-failure",
            &format!("vault-kv2:secret/{}#password", unique("none")),
            "env:APP_DB_PASSWORD",
        ],
        b"",
    );
    assert_eq!(ok(&out), b"from-env");
    assert!(String::from_utf8_lossy(&out.stderr).contains("served by env"));
}

/// The CLI contract with AWS KMS keys, configured only by the usual AWS variables.
#[test]
fn aws_kms_keys_and_secrets_through_the_cli() {
    use sealkit_conformance::peers::{peer_env, unique};
    let Some(endpoint) = peer_env("SEALKIT_TEST_AWS_ENDPOINT", "moto") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let env = aws_env(&endpoint, &[]);
    let run = |args: &[&str], stdin: &[u8]| sealkit_with(h, &env, args, stdin);
    let key = format!("aws-kms://alias/{}", unique("cli"));
    let (sealed, rewrapped) = create_seal_rotate_rewrap(&run, &key);
    ok(&run(&["keys", "disable", &format!("{key}#v1")], b""));
    assert_eq!(
        ok(&run(&["decrypt", "--context", CTX], &rewrapped)),
        b"alice@example.com"
    );
    assert_eq!(
        run(&["decrypt", "--context", CTX], &sealed).status.code(),
        Some(5),
        "v1 is disabled"
    );
    let listing: serde_json::Value =
        serde_json::from_slice(ok(&run(&["--json", "keys", "list", &key], b""))).unwrap();
    assert_eq!(listing["primary"], "2");
    // Secrets Manager through `secrets get`: a missing secret falls back to the env source.
    let out = run(
        &[
            "secrets",
            "get",
            "--any-failure",
            &format!("aws-secrets:{}#password", unique("none")),
            "env:AWS_REGION",
        ],
        b"",
    );
    assert_eq!(ok(&out), b"us-east-1");
    // Deletion is scheduled at AWS: the CLI says when.
    let out = ok(&run(&["--json", "keys", "delete", &key, "--yes"], b"")).to_vec();
    let deleted: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(deleted["deletion_unix"].as_u64().is_some(), "{deleted}");
    delete_key_listed_no_more(&run, &key);
}

/// After `keys delete`, `keys list` no longer names the key.
fn delete_key_listed_no_more(run: &dyn Fn(&[&str], &[u8]) -> Output, key: &str) {
    let out = ok(&run(&["--json", "keys", "list"], b"")).to_vec();
    assert!(
        !String::from_utf8_lossy(&out).contains(&format!("\"{key}\"")),
        "{key} is still listed"
    );
}

/// The same key contract with local keys, and `keys list` when there are none.
#[test]
fn local_keys_through_the_cli_contract() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let run = |args: &[&str], stdin: &[u8]| sealkit(h, args, stdin);
    assert_eq!(ok(&run(&["keys", "list"], b"")), b"no keys\n");
    let (sealed, _) = create_seal_rotate_rewrap(&run, "local://contract");
    delete_key(&run, "local://contract", &sealed);
}

/// Google Cloud, configured only by the usual variables plus the endpoint overrides:
/// `secrets get` by version, `health` fetching a configured secret (and listing the Cloud KMS
/// keys of the project: configuring Google Cloud configures both halves), and a Cloud KMS key
/// through the CLI contract.
#[test]
fn gcp_secret_manager_through_the_cli_and_health() {
    use sealkit_conformance::peers::{peer_env, unique};
    let Some(endpoint) = peer_env(
        "SEALKIT_TEST_GCP_SECRETS_ENDPOINT",
        "the Secret Manager emulator",
    ) else {
        return;
    };
    let Some(kms_endpoint) = peer_env("SEALKIT_TEST_GCP_KMS_ENDPOINT", "the Cloud KMS test peer")
    else {
        return;
    };
    let project = "sealkit-cli";
    let id = unique("cli-db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let source = sealkit_gcp::GcpSecrets::new(
            sealkit_gcp::GcpSettings::default()
                .with_project(project)
                .with_secrets_endpoint(endpoint.as_str()),
        );
        source.create_secret(&id).await.unwrap();
        for value in [&b"first-password"[..], b"second-password"] {
            source.add_version(&id, value).await.unwrap();
        }
    });
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let env = [
        ("GOOGLE_CLOUD_PROJECT", project),
        ("SEALKIT_GCP_SECRETS_ENDPOINT", endpoint.as_str()),
        ("SEALKIT_GCP_KMS_ENDPOINT", kms_endpoint.as_str()),
    ];
    let run = |args: &[&str]| sealkit_with(h, &env, args, b"");
    assert_eq!(
        ok(&run(&["secrets", "get", &format!("gcp-secrets:{id}@1")])),
        b"first-password"
    );
    assert_eq!(
        ok(&run(&["secrets", "get", &format!("gcp-secrets:{id}")])),
        b"second-password"
    );

    let config = h.join("sealkit.toml");
    std::fs::write(
        &config,
        format!(
            "default_key = \"local://app\"\n\n[secrets.db_password]\nsources = [\"gcp-secrets:{id}\"]\n\n[secrets.missing]\nsources = [\"gcp-secrets:{id}@7\"]\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    ok(&run(&["--config", config, "keys", "create", "local://app"]));
    let out = run(&["--config", config, "--json", "health"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "a configured secret is missing: the worst failure is not found"
    );
    // Exactly one JSON document, failure included.
    let health: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(health["kind"], "not_found", "{health}");
    assert_eq!(health["exit_code"], 4);
    let check = |component: String| {
        health["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["component"] == component.as_str())
            .unwrap_or_else(|| panic!("no {component} in {health}"))
            .clone()
    };
    assert_eq!(
        check(format!("secret db_password via gcp-secrets:{id}"))["healthy"],
        true
    );
    let missing = check(format!("secret missing via gcp-secrets:{id}"));
    assert_eq!(missing["healthy"], false);
    assert!(
        missing["problem"].as_str().unwrap().contains("not found"),
        "{missing}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("password\""));
    assert_eq!(
        check("provider gcp-kms".into())["healthy"],
        true,
        "{health}"
    );

    // A Cloud KMS key through the CLI contract.
    let key = format!(
        "gcp-kms://projects/{project}/locations/global/keyRings/cli/cryptoKeys/{}",
        unique("k")
    );
    let run_sealkit = |args: &[&str], stdin: &[u8]| sealkit_with(h, &env, args, stdin);
    let (sealed, _) = create_seal_rotate_rewrap(&run_sealkit, &key);
    delete_key(&run_sealkit, &key, &sealed);
}

/// Kill the migration worker with SIGKILL at 10 points of a 100,000-row job, restart it each
/// time: at the end every row opens under the target key with its original plaintext.
#[test]
fn migration_survives_sigkill_at_ten_points() {
    use base64::Engine;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let db_path = h.join("app.db");
    let legacy_key = [0x5Au8; 32];
    let rows = 100_000i64;
    {
        let mut db = rusqlite::Connection::open(&db_path).unwrap();
        db.execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY, email BLOB NOT NULL, phone BLOB NOT NULL)").unwrap();
        let tx = db.transaction().unwrap();
        for id in 1..=rows {
            let e = legacy_iv16(legacy_key, format!("user{id}@example.com").as_bytes());
            let p = legacy_iv16(legacy_key, format!("+1-555-{id:06}").as_bytes());
            tx.execute(
                "INSERT INTO customers VALUES (?1, ?2, ?3)",
                rusqlite::params![id, e, p],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    ok(&sealkit(h, &["keys", "create", "local://customers"], b""));
    let encoded = base64::engine::general_purpose::STANDARD.encode(legacy_key);
    let db = db_path.to_str().unwrap();
    let args = |cmd: &str| -> Vec<String> {
        [
            "migrate",
            cmd,
            "--db",
            db,
            "--job",
            "to-kms",
            "--table",
            "customers",
            "--column",
            "email=aes-gcm-iv16",
            "--column",
            "phone=aes-gcm-iv16",
            "--to",
            "local://customers",
            "--chunk-rows",
            "2000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let start = |cmd: &str| {
        Command::new(env!("CARGO_BIN_EXE_sealkit"))
            .args(args(cmd))
            .env("SEALKIT_HOME", h.join(".sealkit"))
            .env("ENCRYPTION_MASTER_KEY", &encoded)
            .env_remove("VAULT_ADDR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Ten kills at pseudo-random moments (a fixed seed keeps the test reproducible).
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut killed_mid_run = 0;
    for _ in 0..10 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = start("run");
        std::thread::sleep(std::time::Duration::from_millis(200 + seed % 1800));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().ok(); // SIGKILL
        child.wait().unwrap();
    }
    assert!(
        killed_mid_run >= 3,
        "the job was interrupted mid-run ({killed_mid_run} times)"
    );
    let status = start("run").wait().unwrap();
    assert!(status.success(), "the final run finishes the job");
    let out = Command::new(env!("CARGO_BIN_EXE_sealkit"))
        .args(args("verify"))
        .arg("--json")
        .env("SEALKIT_HOME", h.join(".sealkit"))
        .env("ENCRYPTION_MASTER_KEY", &encoded)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(ok(&out)).unwrap();
    assert_eq!(report["values"], rows * 2);
    assert_eq!(report["ok"], rows * 2);
    // Every row opens to its original plaintext: none lost, none skipped, none duplicated.
    let mut config = sealkit::Config::default();
    config
        .provider("local")
        .set("home", h.join(".sealkit").to_str().unwrap());
    let keyring = sealkit::Keyring::builder(config).build().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let count: i64 = db
        .query_row("SELECT COUNT(*) FROM customers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, rows);
    let mut stmt = db
        .prepare("SELECT id, email, phone FROM customers ORDER BY id")
        .unwrap();
    let mut cursor = stmt.query([]).unwrap();
    let mut expected_id = 1;
    while let Some(row) = cursor.next().unwrap() {
        let id: i64 = row.get(0).unwrap();
        assert_eq!(id, expected_id);
        expected_id += 1;
        for (i, column, want) in [
            (1, "email", format!("user{id}@example.com")),
            (2, "phone", format!("+1-555-{id:06}")),
        ] {
            let value: Vec<u8> = row.get(i).unwrap();
            let ctx = sealkit::EncryptionContext::parse(&format!(
                "table=customers,column={column},id={id}"
            ))
            .unwrap();
            assert_eq!(
                runtime.block_on(keyring.open(&value, &ctx)).unwrap(),
                want.as_bytes(),
                "row {id} {column}"
            );
        }
    }
}

#[test]
fn scheduled_rotation_rotates_only_due_keys() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    ok(&sealkit(h, &["keys", "create", "local://due"], b""));
    ok(&sealkit(h, &["keys", "create", "local://fresh"], b""));
    let config = h.join("sealkit.toml");
    std::fs::write(
        &config,
        "[rotation]\n\"local://due\" = \"0s\"\n\"local://fresh\" = \"90d\"\n",
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let out: serde_json::Value = serde_json::from_slice(ok(&sealkit(
        h,
        &["--config", c, "--json", "keys", "rotate-due"],
        b"",
    )))
    .unwrap();
    assert_eq!(out["checked"], 2);
    assert_eq!(out["rotated"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out["rotated"][0]["key"], "local://due");
    assert_eq!(out["rotated"][0]["primary"], "2");
    // The local provider has no native rotation: a clear refusal.
    let out = sealkit(h, &["keys", "set-rotation", "local://due", "90d"], b"");
    assert_eq!(out.status.code(), Some(9), "not supported by the provider");
    assert!(String::from_utf8_lossy(&out.stderr).contains("rotate-due"));
    std::fs::write(&config, "[rotation]\n\"local://due\" = \"ninety days\"\n").unwrap();
    assert_eq!(
        sealkit(h, &["--config", c, "keys", "rotate-due"], b"")
            .status
            .code(),
        Some(7)
    );
}

#[test]
fn vault_native_rotation_period_is_set_at_the_provider() {
    use sealkit_conformance::peers::{unique, vault_peer};
    let Some((addr, token)) = vault_peer() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sealkit"))
            .args(args)
            .env("SEALKIT_HOME", home.path().join(".sealkit"))
            .env("VAULT_ADDR", &addr)
            .env("VAULT_TOKEN", &token)
            .output()
            .unwrap()
    };
    let name = unique("auto");
    let key = format!("vault-transit://transit/{name}");
    ok(&run(&["keys", "create", &key]));
    ok(&run(&["keys", "set-rotation", &key, "90d"]));
    // Read it back from the Vault API.
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(conn, "GET /v1/transit/keys/{name} HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {token}\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = String::new();
    std::io::Read::read_to_string(&mut conn, &mut body).unwrap();
    assert!(body.contains("\"auto_rotate_period\":7776000"), "{body}");
    assert_eq!(
        run(&["keys", "set-rotation", &key, "30m"]).status.code(),
        Some(7),
        "under Vault's one-hour minimum"
    );
    ok(&run(&["keys", "set-rotation", &key, "off"]));
}

/// `--out` to a FIFO or a device node writes into it; it stays what it was (a rename over it
/// would replace the node — as root, `--out /dev/null` would replace the machine's).
#[test]
fn out_to_a_fifo_or_a_device_writes_in_place() {
    use std::os::unix::fs::FileTypeExt;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    ok(&sealkit(h, &["keys", "create", "local://io"], b""));
    let sealed = ok(&sealkit(
        h,
        &["encrypt", "--key", "local://io", "--context", CTX],
        b"alice@example.com",
    ))
    .to_vec();

    let fifo = h.join("out.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // The reading end opens without waiting for a writer (O_NONBLOCK), so a regression that
    // never opens the FIFO reads nothing instead of hanging.
    let mut reader = {
        use std::os::unix::fs::OpenOptionsExt;
        const O_NONBLOCK: i32 = 0o4000;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open(&fifo)
            .unwrap()
    };
    let fifo_arg = fifo.to_str().unwrap();
    ok(&sealkit(
        h,
        &["decrypt", "--context", CTX, "--out", fifo_arg],
        &sealed,
    ));
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut reader, &mut got);
    assert_eq!(got, b"alice@example.com");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());

    // A character device of our own (the null device's numbers), in the test's directory.
    let null = h.join("null");
    let made = Command::new("mknod")
        .arg(&null)
        .args(["c", "1", "3"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !made {
        assert!(
            std::env::var_os("CI").is_none(),
            "mknod failed: CI runs as root and must test a device node"
        );
        eprintln!("skipped the device-node half: mknod needs root");
        return;
    }
    ok(&sealkit(
        h,
        &["decrypt", "--context", CTX, "--out", null.to_str().unwrap()],
        &sealed,
    ));
    assert!(
        std::fs::metadata(&null)
            .unwrap()
            .file_type()
            .is_char_device()
    );
    // A regular file is still replaced whole.
    let file = h.join("plain.txt");
    std::fs::write(&file, b"old contents that are longer").unwrap();
    ok(&sealkit(
        h,
        &["decrypt", "--context", CTX, "--out", file.to_str().unwrap()],
        &sealed,
    ));
    assert_eq!(std::fs::read(&file).unwrap(), b"alice@example.com");
}

/// `health` contacts every configured provider, not only the default key's: a Vault that is
/// down, or that refuses the token, fails the check with its kind as the exit code.
#[test]
fn health_checks_every_configured_provider() {
    use sealkit_conformance::peers::vault_peer;
    let Some((addr, _token)) = vault_peer() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    ok(&sealkit(h, &["keys", "create", "local://app"], b""));
    let health = |env: &[(&str, &str)]| {
        let out = sealkit_with(h, env, &["--json", "health"], b"");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "one JSON document: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (out.status.code(), doc)
    };
    let vault_check = |doc: &serde_json::Value| {
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["component"] == "provider vault-transit")
            .cloned()
            .unwrap_or_else(|| panic!("no vault check in {doc}"))
    };
    // Nothing listens there.
    let (code, doc) = health(&[
        ("VAULT_ADDR", "http://127.0.0.1:1"),
        ("VAULT_TOKEN", "whatever"),
    ]);
    assert_eq!(code, Some(6), "{doc}");
    assert_eq!(vault_check(&doc)["healthy"], false);
    assert_eq!(vault_check(&doc)["kind"], "unavailable");
    // A token the server refuses.
    let (code, doc) = health(&[
        ("VAULT_ADDR", addr.as_str()),
        ("VAULT_TOKEN", "not-a-valid-token"),
    ]);
    assert_eq!(code, Some(5), "{doc}");
    assert_eq!(vault_check(&doc)["kind"], "permission_denied");
}

/// `secrets get` with a first source whose service accepts connections and never answers:
/// the call ends by its timeout and the chain's next source serves.
#[test]
fn a_silent_secret_source_falls_back_instead_of_hanging() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let silent = runtime
        .block_on(sealkit_conformance::SilentService::start())
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let url = silent.url();
    let env = aws_env(
        &url,
        &[
            ("SEALKIT_AWS_TIMEOUT_MS", "300"),
            ("APP_DB_PASSWORD", "from-env"),
        ],
    );
    let out = sealkit_with(
        home.path(),
        &env,
        &[
            "secrets",
            "get",
            "aws-secrets:app/db#password",
            "env:APP_DB_PASSWORD",
        ],
        b"",
    );
    assert_eq!(ok(&out), b"from-env");
    assert!(String::from_utf8_lossy(&out.stderr).contains("served by env"));
}

/// With `--json`, `migrate verify` and `migrate run` print exactly one JSON document, failure
/// included, and exit with the failure kind's code.
#[test]
fn migrate_json_output_is_one_document_on_failure() {
    use sealkit::core::legacy::{self, LegacyFormat};
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let db_path = h.join("app.db");
    let legacy_key = sealkit::DataKey::from_bytes([0x5A; 32]);
    {
        let db = rusqlite::Connection::open(&db_path).unwrap();
        db.execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY, email BLOB)")
            .unwrap();
        for id in 1..=20i64 {
            let value = if id == 7 {
                b"not a legacy ciphertext".to_vec()
            } else {
                legacy::seal(
                    LegacyFormat::AesGcmIv16,
                    &legacy_key,
                    &sealkit::random::OsRandom,
                    b"x",
                    b"",
                )
                .unwrap()
            };
            db.execute(
                "INSERT INTO customers VALUES (?1, ?2)",
                rusqlite::params![id, value],
            )
            .unwrap();
        }
    }
    ok(&sealkit(h, &["keys", "create", "local://customers"], b""));
    let encoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(legacy_key.expose())
    };
    let db = db_path.to_str().unwrap();
    let run = |cmd: &str| {
        sealkit_with(
            h,
            &[("ENCRYPTION_MASTER_KEY", encoded.as_str())],
            &[
                "--json",
                "migrate",
                cmd,
                "--db",
                db,
                "--job",
                "j",
                "--table",
                "customers",
                "--column",
                "email=aes-gcm-iv16",
                "--to",
                "local://customers",
            ],
            b"",
        )
    };
    for cmd in ["verify", "run"] {
        let out = run(cmd);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{cmd}: one JSON document: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert_eq!(out.status.code(), Some(7), "{cmd}: {doc}");
        assert_eq!(doc["kind"], "invalid_input", "{cmd}: {doc}");
        assert_eq!(doc["exit_code"], 7, "{cmd}: {doc}");
    }
}

/// Each failure the README's exit-code table documents gives its code, whatever the command.
#[test]
fn every_documented_exit_code_is_what_its_failure_gives() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let code = |args: &[&str], stdin: &[u8]| sealkit(h, args, stdin).status.code();
    ok(&sealkit(h, &["keys", "create", "local://codes"], b""));
    let sealed = ok(&sealkit(
        h,
        &["encrypt", "--key", "local://codes", "--context", CTX],
        b"x",
    ))
    .to_vec();
    // 2: usage.
    assert_eq!(code(&["decrypt", "--no-such-flag"], b""), Some(2));
    // 3: does not open — a context of another table (rewrap checks the DEK scope, as it
    // decrypts no data), or an altered envelope, in decrypt and rewrap alike.
    let other = "table=orders,column=email,id=42";
    assert_eq!(code(&["decrypt", "--context", other], &sealed), Some(3));
    assert_eq!(code(&["rewrap", "--context", other], &sealed), Some(3));
    let truncated = &sealed[..sealed.len() - 1];
    assert_eq!(code(&["decrypt", "--context", CTX], truncated), Some(3));
    // (rewrap reads only the key slot and its commitment: an altered commitment does not
    // open. The layout ends commitment 32, nonce 12, ciphertext 1, tag 16.)
    let mut altered_slot = sealed.clone();
    let commitment_start = sealed.len() - 16 - 1 - 12 - 32;
    altered_slot[commitment_start] ^= 1;
    assert_eq!(code(&["decrypt", "--context", CTX], &altered_slot), Some(3));
    assert_eq!(code(&["rewrap", "--context", CTX], &altered_slot), Some(3));
    // 7: not an envelope at all, in decrypt and rewrap alike (kms mode).
    assert_eq!(code(&["decrypt", "--context", CTX], b"plain text"), Some(7));
    assert_eq!(code(&["rewrap", "--context", CTX], b"plain text"), Some(7));
    // 4: not found — a key, or the --in file.
    assert_eq!(code(&["keys", "list", "local://nope"], b""), Some(4));
    let missing = h.join("missing.bin");
    assert_eq!(
        code(
            &[
                "decrypt",
                "--context",
                CTX,
                "--in",
                missing.to_str().unwrap()
            ],
            b""
        ),
        Some(4)
    );
    // 5: a disabled version.
    ok(&sealkit(h, &["keys", "rotate", "local://codes"], b""));
    ok(&sealkit(h, &["keys", "disable", "local://codes#v1"], b""));
    assert_eq!(code(&["decrypt", "--context", CTX], &sealed), Some(5));
    // 6: a provider that is down.
    let down = sealkit_with(
        h,
        &[("VAULT_ADDR", "http://127.0.0.1:1"), ("VAULT_TOKEN", "t")],
        &["keys", "list", "vault-transit://transit/k"],
        b"",
    );
    assert_eq!(down.status.code(), Some(6));
    // 7: invalid input or misconfiguration.
    assert_eq!(
        code(
            &["encrypt", "--key", "local://codes", "--context", "no-pairs"],
            b"x"
        ),
        Some(7)
    );
    // 8: already exists.
    assert_eq!(code(&["keys", "create", "local://codes"], b""), Some(8));
    // 9: not supported by the provider.
    assert_eq!(
        code(&["keys", "set-rotation", "local://codes", "90d"], b""),
        Some(9)
    );
}

/// `secrets get NAME` resolves a configured `[secrets.NAME]`; `secrets compare` says match or
/// mismatch (exit 1), never a value.
#[test]
fn secrets_by_configured_name_and_constant_time_comparison() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let config = h.join("sealkit.toml");
    std::fs::write(
        &config,
        "[secrets.db_password]\nsources = [\"env:SK_TEST_MISSING\", \"env:SK_TEST_DB\"]\nfallback = \"on-any-failure\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let env = [
        ("SEALKIT_CONFIG", config),
        ("SK_TEST_DB", "hunter2"),
        ("SK_TEST_COPY", "hunter2"),
        ("SK_TEST_OTHER", "hunter3"),
    ];
    let out = sealkit_with(h, &env, &["secrets", "get", "db_password"], b"");
    assert_eq!(ok(&out), b"hunter2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("env"));
    let unknown = sealkit_with(h, &env, &["secrets", "get", "nope"], b"");
    assert_eq!(unknown.status.code(), Some(4));
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("db_password"),
        "names the configured secrets: {err}"
    );

    let same = sealkit_with(
        h,
        &env,
        &["secrets", "compare", "db_password", "env:SK_TEST_COPY"],
        b"",
    );
    assert_eq!(ok(&same), b"match\n");
    let differ = sealkit_with(
        h,
        &env,
        &[
            "--json",
            "secrets",
            "compare",
            "env:SK_TEST_DB",
            "env:SK_TEST_OTHER",
        ],
        b"",
    );
    assert_eq!(differ.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&differ.stdout).unwrap();
    assert_eq!(doc["match"], false);
    let text = String::from_utf8_lossy(&differ.stdout) + String::from_utf8_lossy(&differ.stderr);
    assert!(!text.contains("hunter"), "never a value: {text}");
}

/// The secret move: the legacy key goes from an environment variable into AWS Secrets Manager
/// (`secrets put --from-env`), is checked against the variable (`secrets compare`), and a
/// hybrid-mode CLI then reads it from the `[legacy] key` chain to open legacy data; JSON
/// secrets take one field at a time from stdin.
#[test]
fn the_legacy_key_moves_from_env_into_secrets_manager() {
    use base64::Engine;
    use sealkit_conformance::peers::{peer_env, unique};
    let Some(endpoint) = peer_env("SEALKIT_TEST_AWS_ENDPOINT", "moto") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let legacy_key = [0x3Cu8; 32];
    let encoded = base64::engine::general_purpose::STANDARD.encode(legacy_key);
    let id = unique("legacy-key");
    let env = aws_env(&endpoint, &[("APP_LEGACY_KEY", encoded.as_str())]);
    let run = |args: &[&str], stdin: &[u8]| sealkit_with(h, &env, args, stdin);
    let target = format!("aws-secrets:{id}");
    let stored = run(
        &["secrets", "put", &target, "--from-env", "APP_LEGACY_KEY"],
        b"",
    );
    let said = String::from_utf8_lossy(ok(&stored)).to_string();
    assert!(
        said.starts_with(&format!("stored {target} (version ")),
        "{said}"
    );
    assert!(!said.contains(&encoded), "never the value: {said}");
    assert_eq!(
        ok(&run(
            &["secrets", "compare", &target, "env:APP_LEGACY_KEY"],
            b""
        )),
        b"match\n"
    );

    // A hybrid-mode CLI reads the key from the chain and opens legacy data with it.
    let config = h.join("sealkit.toml");
    std::fs::write(
        &config,
        format!("mode = \"hybrid\"\n[legacy]\nkey = [\"{target}\", \"env:UNSET_FALLBACK\"]\n"),
    )
    .unwrap();
    let old = legacy_iv16(legacy_key, b"alice@example.com");
    let config = config.to_str().unwrap();
    assert_eq!(
        ok(&run(
            &["--config", config, "decrypt", "--context", CTX],
            &old
        )),
        b"alice@example.com"
    );

    // One field of a JSON secret at a time, from stdin (the trailing newline dropped).
    let db = format!("aws-secrets:{}", unique("db"));
    ok(&run(
        &["secrets", "put", &format!("{db}#password")],
        b"s3cret\n",
    ));
    ok(&run(&["secrets", "put", &format!("{db}#user")], b"app\n"));
    assert_eq!(
        ok(&run(&["secrets", "get", &format!("{db}#password")], b"")),
        b"s3cret"
    );
    assert_eq!(
        ok(&run(&["secrets", "get", &format!("{db}#user")], b"")),
        b"app"
    );
    // Writing where no write is possible says so.
    let env_put = run(&["secrets", "put", "env:APP_LEGACY_KEY"], b"x");
    assert_eq!(
        env_put.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&env_put.stderr)
    );
}

/// Missing AWS credentials are a configuration error (exit 7, at once, saying what to set),
/// not an outage retried three times.
#[test]
fn missing_aws_credentials_are_misconfiguration_not_an_outage() {
    use sealkit_conformance::peers::peer_env;
    let Some(endpoint) = peer_env("SEALKIT_TEST_AWS_ENDPOINT", "moto") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let out = Command::new(env!("CARGO_BIN_EXE_sealkit"))
        .args(["keys", "create", "aws-kms://alias/no-credentials"])
        .env("HOME", h)
        .env("SEALKIT_HOME", h.join(".sealkit"))
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", h.join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", h.join("none"))
        .env("SEALKIT_LOG", "sealkit=debug")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    assert!(
        !err.contains("retryable provider error"),
        "not retried: {err}"
    );
}

/// `--armor`: an envelope as one line of base64 text, and back.
#[test]
fn armored_envelopes_are_base64_text() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    ok(&sealkit(h, &["keys", "create", "local://k"], b""));
    let out = sealkit(
        h,
        &["encrypt", "--key", "local://k", "--context", CTX, "--armor"],
        b"alice@example.com",
    );
    let text = String::from_utf8(ok(&out).to_vec()).unwrap();
    assert!(
        text.ends_with('\n') && text.trim_end().lines().count() == 1,
        "{text:?}"
    );
    assert!(
        text.trim_end()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    );
    let opened = sealkit(
        h,
        &["decrypt", "--context", CTX, "--armor"],
        text.as_bytes(),
    );
    assert_eq!(ok(&opened), b"alice@example.com");
    // Binary input with --armor is refused clearly (exit 7).
    let sealed = ok(&sealkit(
        h,
        &["encrypt", "--key", "local://k", "--context", CTX],
        b"x",
    ))
    .to_vec();
    assert_eq!(
        sealkit(h, &["decrypt", "--context", CTX, "--armor"], &sealed)
            .status
            .code(),
        Some(7)
    );
}

/// `migrate status` and `verify` take the job's name alone (the rest is recorded with the job)
/// or `run`'s whole argument list (its own flags ignored); `verify` reports rows deleted since.
#[test]
fn job_commands_take_the_job_name_alone_or_runs_arguments() {
    use base64::Engine;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let db_path = h.join("app.db");
    let legacy_key = [0x11u8; 32];
    {
        let db = rusqlite::Connection::open(&db_path).unwrap();
        db.execute_batch("CREATE TABLE people (id INTEGER PRIMARY KEY, email BLOB)")
            .unwrap();
        for id in 1..=20i64 {
            let sealed = legacy_iv16(legacy_key, format!("p{id}@example.com").as_bytes());
            db.execute(
                "INSERT INTO people VALUES (?1, ?2)",
                rusqlite::params![id, sealed],
            )
            .unwrap();
        }
    }
    ok(&sealkit(h, &["keys", "create", "local://people"], b""));
    let encoded = base64::engine::general_purpose::STANDARD.encode(legacy_key);
    let env = [("ENCRYPTION_MASTER_KEY", encoded.as_str())];
    let db = db_path.to_str().unwrap();
    let full = |cmd: &'static str| -> Vec<&str> {
        vec![
            "--json",
            "migrate",
            cmd,
            "--db",
            db,
            "--job",
            "people",
            "--table",
            "people",
            "--column",
            "email=aes-gcm-iv16",
            "--to",
            "local://people",
            "--worker",
            "w7",
            "--max-pause",
            "30",
        ]
    };
    ok(&sealkit_with(h, &env, &full("run"), b""));
    let status: serde_json::Value = serde_json::from_slice(ok(&sealkit_with(
        h,
        &env,
        &["--json", "migrate", "status", "--db", db, "--job", "people"],
        b"",
    )))
    .unwrap();
    assert_eq!(status["values"]["migrated"], 20, "{status}");
    let verify: serde_json::Value =
        serde_json::from_slice(ok(&sealkit_with(h, &env, &full("verify"), b""))).unwrap();
    assert_eq!(
        (verify["ok"].as_u64(), verify["vanished_rows"].as_u64()),
        (Some(20), Some(0))
    );
    rusqlite::Connection::open(&db_path)
        .unwrap()
        .execute("DELETE FROM people WHERE id IN (3, 4)", [])
        .unwrap();
    let verify: serde_json::Value = serde_json::from_slice(ok(&sealkit_with(
        h,
        &env,
        &["--json", "migrate", "verify", "--db", db, "--job", "people"],
        b"",
    )))
    .unwrap();
    assert_eq!(verify["vanished_rows"], 2, "{verify}");
    // Half a spec is an error that says what to give; an unknown job is not found (4).
    let half = sealkit(
        h,
        &[
            "migrate", "status", "--db", db, "--job", "people", "--table", "people",
        ],
        b"",
    );
    assert_eq!(half.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&half.stderr).contains("--table, --column and --to"));
    let unknown = sealkit(h, &["migrate", "status", "--db", db, "--job", "nope"], b"");
    assert_eq!(unknown.status.code(), Some(4));
}

/// A table keyed by uuid text: `migrate run` migrates it, each value bound to its key's text,
/// and `verify --json` names rows by their text keys and gone rows by key range.
#[test]
fn uuid_keyed_tables_migrate_through_the_cli() {
    use sealkit::core::legacy::{self, LegacyFormat};
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let db_path = h.join("app.db");
    let legacy_key = sealkit::DataKey::from_bytes([0x5A; 32]);
    let key = |n: u32| {
        format!(
            "{:08x}-0000-4000-8000-{:012x}",
            n.wrapping_mul(2_654_435_761),
            n
        )
    };
    {
        let db = rusqlite::Connection::open(&db_path).unwrap();
        db.execute_batch("CREATE TABLE customers (id UUID PRIMARY KEY, email BLOB)")
            .unwrap();
        for n in 0..50u32 {
            let value = legacy::seal(
                LegacyFormat::AesGcmIv16,
                &legacy_key,
                &sealkit::random::OsRandom,
                format!("user{n}@example.com").as_bytes(),
                b"",
            )
            .unwrap();
            db.execute(
                "INSERT INTO customers VALUES (?1, ?2)",
                rusqlite::params![key(n), value],
            )
            .unwrap();
        }
    }
    ok(&sealkit(h, &["keys", "create", "local://customers"], b""));
    let encoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(legacy_key.expose())
    };
    let db = db_path.to_str().unwrap();
    let migrate = |cmd: &str| {
        sealkit_with(
            h,
            &[("ENCRYPTION_MASTER_KEY", encoded.as_str())],
            &[
                "--json",
                "migrate",
                cmd,
                "--db",
                db,
                "--job",
                "uuids",
                "--table",
                "customers",
                "--column",
                "email=aes-gcm-iv16",
                "--to",
                "local://customers",
                "--chunk-rows",
                "20",
            ],
            b"",
        )
    };
    ok(&migrate("run"));
    let verify: serde_json::Value = serde_json::from_slice(ok(&migrate("verify"))).unwrap();
    assert_eq!(
        (verify["ok"].as_u64(), verify["problems"].as_u64()),
        (Some(50), Some(0))
    );
    let (k, sealed): (String, Vec<u8>) = rusqlite::Connection::open(&db_path)
        .unwrap()
        .query_row(
            "SELECT id, email FROM customers WHERE id = ?1",
            [key(7)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let opened = sealkit(
        h,
        &[
            "decrypt",
            "--context",
            &format!("table=customers,column=email,id={k}"),
        ],
        &sealed,
    );
    assert_eq!(ok(&opened), b"user7@example.com");

    let db_conn = rusqlite::Connection::open(&db_path).unwrap();
    db_conn
        .execute("UPDATE customers SET email = x'00' WHERE id = ?1", [key(3)])
        .unwrap();
    db_conn
        .execute("DELETE FROM customers WHERE id = ?1", [key(9)])
        .unwrap();
    let out = migrate("verify");
    assert_eq!(out.status.code(), Some(7));
    let verify: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verify["first_problems"][0][0], key(3), "{verify}");
    assert_eq!(verify["vanished_rows"], 1, "{verify}");
    let gone = &verify["vanished"][0];
    assert!(
        gone.get("from").is_some() && gone.get("to").is_some(),
        "{verify}"
    );
    assert!(gone.get("lo").is_none(), "{verify}");
}

/// Compact envelopes through the CLI: separate processes share a stored DEK's budget (three
/// messages each, one reserved at a time) and retire it at the limit; `deks stats` counts
/// them; a rotation rewraps the stored DEKs and leaves every envelope as it was;
/// `keys shred` makes one tenant's values fail with exit 3 while another's open.
#[test]
fn compact_envelopes_shared_budgets_rotation_and_shredding_through_the_cli() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let config = h.join("sealkit.toml");
    std::fs::write(
        &config,
        format!(
            "default_key = \"local://customers\"\n[deks]\nstore = \"sqlite:{}\"\nsubject = \"tenant\"\nmessage_limit = 3\nreserve_block = 1\n",
            h.join("app.db").display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let run = |args: &[&str], stdin: &[u8]| {
        let mut all = vec!["--config", cfg];
        all.extend_from_slice(args);
        sealkit(h, &all, stdin)
    };
    ok(&run(&["keys", "create", "local://customers"], b""));
    let ctx_of =
        |tenant: u32, id: u32| format!("tenant={tenant},table=customers,column=email,id={id}");
    // Seven processes seal for tenant 1: DEKs of three messages each.
    let mut sealed = Vec::new();
    for id in 0..7 {
        let c = ctx_of(1, id);
        let out = run(
            &["encrypt", "--compact", "--context", &c],
            b"sixty-four bytes of tenant one's data, give or take a few more...",
        );
        let envelope = ok(&out).to_vec();
        assert_eq!(envelope[3], 2, "compact layout");
        sealed.push((c, envelope));
    }
    let ids: Vec<&[u8]> = sealed.iter().map(|(_, e)| &e[5..21]).collect();
    assert!(
        ids[0] == ids[1] && ids[1] == ids[2],
        "three processes share a DEK"
    );
    assert!(ids[3] != ids[2] && ids[3] == ids[4] && ids[4] == ids[5]);
    assert!(ids[6] != ids[5]);
    let stats: serde_json::Value =
        serde_json::from_slice(ok(&run(&["--json", "deks", "stats"], b""))).unwrap();
    let count = |state: &str| {
        stats["counts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["state"] == state)
            .map(|c| c["count"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!((count("retired"), count("active")), (2, 1), "{stats}");
    let list: serde_json::Value =
        serde_json::from_slice(ok(&run(&["--json", "deks", "list"], b""))).unwrap();
    let mut used: Vec<(u64, u64)> = list["deks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["reserved"].as_u64().unwrap(), d["used"].as_u64().unwrap()))
        .collect();
    used.sort_unstable();
    assert_eq!(
        used,
        [(1, 1), (3, 3), (3, 3)],
        "each process reports what it sealed: {list}"
    );

    // Tenant 2, and a rotation that rewraps stored DEKs only.
    let c2 = ctx_of(2, 1);
    let other = ok(&run(
        &["encrypt", "--compact", "--context", &c2],
        b"tenant two",
    ))
    .to_vec();
    ok(&run(&["keys", "rotate", "local://customers"], b""));
    let rewrap: serde_json::Value = serde_json::from_slice(ok(&run(
        &["--json", "deks", "rewrap", "--from", "local://customers"],
        b"",
    )))
    .unwrap();
    assert_eq!(rewrap["rewrapped"], 4, "{rewrap}");
    ok(&run(&["keys", "disable", "local://customers#v1"], b""));
    for (c, envelope) in &sealed {
        ok(&run(&["decrypt", "--context", c], envelope));
    }
    assert_eq!(
        ok(&run(&["decrypt", "--context", &c2], &other)),
        b"tenant two"
    );

    // Shredding tenant 1.
    let refused = run(&["keys", "shred", "--scope", "tenant=1"], b"");
    assert_eq!(refused.status.code(), Some(7), "needs --yes");
    let shred: serde_json::Value = serde_json::from_slice(ok(&run(
        &["--json", "keys", "shred", "--scope", "tenant=1", "--yes"],
        b"",
    )))
    .unwrap();
    assert_eq!(shred["shredded_deks"], 3, "{shred}");
    let audit = std::fs::read_to_string(h.join("audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"shred_deks\"") && l.contains("tenant")),
        "the shred is audited with its subject"
    );
    let gone = run(&["decrypt", "--context", &sealed[0].0], &sealed[0].1);
    assert_eq!(gone.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("shredded"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
    assert_eq!(
        ok(&run(&["decrypt", "--context", &c2], &other)),
        b"tenant two"
    );
    let health = run(&["health"], b"");
    assert!(
        String::from_utf8_lossy(&health.stdout).contains("DEK store"),
        "{}",
        String::from_utf8_lossy(&health.stdout)
    );
}

/// The same compact round trip with the DEK store in PostgreSQL: several processes seal
/// under one stored DEK, `deks list` shows its shared reservations, and values open.
#[test]
fn compact_envelopes_with_a_postgresql_dek_store_through_the_cli() {
    use sealkit_conformance::peers::{peer_env, unique};
    let Some(url) = peer_env("SEALKIT_TEST_PG_URL", "PostgreSQL") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let config = h.join("sealkit.toml");
    let table = unique("cli_deks").replace('-', "_");
    std::fs::write(
        &config,
        format!("default_key = \"local://customers\"\n[deks]\nstore = \"{url}\"\ntable = \"{table}\"\nlayout = \"compact\"\nreserve_block = 2\n"),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let run = |args: &[&str], stdin: &[u8]| {
        let mut all = vec!["--config", cfg];
        all.extend_from_slice(args);
        sealkit(h, &all, stdin)
    };
    ok(&run(&["keys", "create", "local://customers"], b""));
    let mut sealed = Vec::new();
    for id in 0..4 {
        let c = format!("table=customers,column=email,id={id}");
        let envelope = ok(&run(&["encrypt", "--context", &c], b"pg")).to_vec();
        assert_eq!(envelope.len(), 2 + 49, "compact by configuration");
        sealed.push((c, envelope));
    }
    for (c, envelope) in &sealed {
        assert_eq!(ok(&run(&["decrypt", "--context", c], envelope)), b"pg");
    }
    let list: serde_json::Value =
        serde_json::from_slice(ok(&run(&["--json", "deks", "list"], b""))).unwrap();
    let deks = list["deks"].as_array().unwrap();
    assert_eq!(deks.len(), 1, "four processes, one DEK: {list}");
    assert_eq!(deks[0]["reserved"], 8, "a block of 2 per process: {list}");
    assert_eq!(
        deks[0]["used"], 4,
        "one seal per process, reported at exit: {list}"
    );
    assert_eq!(deks[0]["state"], "active", "{list}");
}
