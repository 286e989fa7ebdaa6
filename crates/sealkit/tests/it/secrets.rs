//! Secret chains: which source serves, fallback by policy, logging without values, TTL.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sealkit::Error;
use sealkit::core::provider::{Secret, SecretSource};
use sealkit::secrets::{
    EnvSecrets, FallbackPolicy, FileSecrets, SecretChain, SecretRef, SecretSources,
};
use secrecy::ExposeSecret;

/// A source that answers from a fixed value or fails with a given kind, counting calls.
#[derive(Debug)]
struct Scripted {
    name: &'static str,
    answer: Result<&'static str, fn() -> Error>,
    calls: AtomicU32,
}

#[async_trait]
impl SecretSource for Scripted {
    fn name(&self) -> &str {
        self.name
    }
    async fn get_secret(&self, _name: &str, _version: Option<&str>) -> sealkit::Result<Secret> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match self.answer {
            Ok(v) => Ok(Secret::new(v.as_bytes().to_vec(), None)),
            Err(make) => Err(make()),
        }
    }
}

fn scripted(name: &'static str, answer: Result<&'static str, fn() -> Error>) -> Arc<Scripted> {
    Arc::new(Scripted {
        name,
        answer,
        calls: AtomicU32::new(0),
    })
}

/// Captures log lines written while `f` runs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    (out, tracing::subscriber::set_default(subscriber))
}

fn unavailable() -> Error {
    Error::unavailable("vault-kv2", "connection refused")
}
fn not_found() -> Error {
    Error::not_found("vault-kv2", "secret app/db")
}
fn denied() -> Error {
    Error::permission_denied("vault-kv2", "no read on secret/data/app/db")
}

#[tokio::test(flavor = "current_thread")]
async fn falls_back_only_as_the_policy_allows_and_logs_which_source_served() {
    let (logs, _guard) = capture();
    let primary = scripted("vault-kv2", Err(unavailable));
    let backup = scripted("env", Ok("s3cr3t-from-env"));
    let links = || {
        vec![
            SecretRef::new(primary.clone(), "secret/app/db#password", None),
            SecretRef::new(backup.clone(), "DB_PASSWORD", None),
        ]
    };

    let chain = SecretChain::new("db_password", links(), FallbackPolicy::OnUnavailable);
    let resolved = chain.resolve().await.unwrap();
    assert_eq!(resolved.source, "env");
    assert_eq!(
        resolved.secret.value.expose_secret().as_slice(),
        b"s3cr3t-from-env"
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("secret_source_unavailable_using_fallback")
            && text.contains("source=vault-kv2"),
        "{text}"
    );
    assert!(
        text.contains("secret_fetched") && text.contains("source=env"),
        "{text}"
    );
    assert!(!text.contains("s3cr3t"), "a value reached the logs: {text}");

    // Never: the first failure is the answer.
    let never = SecretChain::new("db_password", links(), FallbackPolicy::Never);
    assert!(matches!(
        never.resolve().await,
        Err(Error::Unavailable { .. })
    ));

    // NotFound is a configuration error under OnUnavailable, a reason to fall back under OnAnyFailure.
    let missing = scripted("vault-kv2", Err(not_found));
    let chain = |p| {
        SecretChain::new(
            "db_password",
            vec![
                SecretRef::new(missing.clone(), "x", None),
                SecretRef::new(backup.clone(), "y", None),
            ],
            p,
        )
    };
    assert!(matches!(
        chain(FallbackPolicy::OnUnavailable).resolve().await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        chain(FallbackPolicy::OnAnyFailure)
            .resolve()
            .await
            .unwrap()
            .source,
        "env"
    );

    // Permission denied never falls back: it must be fixed, not hidden.
    let refused = scripted("vault-kv2", Err(denied));
    let chain = SecretChain::new(
        "db_password",
        vec![
            SecretRef::new(refused, "x", None),
            SecretRef::new(backup.clone(), "y", None),
        ],
        FallbackPolicy::OnAnyFailure,
    );
    assert!(matches!(
        chain.resolve().await,
        Err(Error::PermissionDenied { .. })
    ));
}

#[tokio::test]
async fn values_are_cached_for_the_ttl() {
    let source = scripted("vault-kv2", Ok("v"));
    let chain = SecretChain::new(
        "s",
        vec![SecretRef::new(source.clone(), "a", None)],
        FallbackPolicy::Never,
    );
    for _ in 0..5 {
        chain.resolve().await.unwrap();
    }
    assert_eq!(source.calls.load(Ordering::Relaxed), 1);
    let uncached = SecretChain::new(
        "s",
        vec![SecretRef::new(source.clone(), "a", None)],
        FallbackPolicy::Never,
    )
    .with_ttl(Duration::ZERO);
    uncached.resolve().await.unwrap();
    uncached.resolve().await.unwrap();
    assert_eq!(source.calls.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn env_and_file_sources_from_text_specs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db_password"), "from-file\n").unwrap();
    let mut sources = SecretSources::builtin();
    sources.register("file", Arc::new(FileSecrets::new(dir.path())));
    let chain = sources
        .chain(
            "db_password",
            &["env:SEALKIT_TEST_SURELY_UNSET_SECRET", "file:db_password"],
            FallbackPolicy::OnAnyFailure,
        )
        .unwrap();
    let resolved = chain.resolve().await.unwrap();
    assert_eq!(resolved.source, "file");
    assert_eq!(
        resolved.secret.value.expose_secret().as_slice(),
        b"from-file"
    );
    assert!(
        sources
            .link("nope:X")
            .unwrap_err()
            .to_string()
            .contains("known: env, file")
    );
    assert!(sources.link("no-colon").is_err());
}

#[cfg(feature = "vault")]
mod vault {
    use super::*;
    use sealkit::vault::{KvVersion, VaultAuth, VaultKv, VaultSettings};
    use sealkit_conformance::peers::{unique, vault_peer};
    use sealkit_conformance::{FaultMode, FaultProxy};

    #[tokio::test(flavor = "current_thread")]
    async fn vault_kv_then_env_against_openbao() {
        let Some((addr, token)) = vault_peer() else {
            return;
        };
        let settings = vaultrs::client::VaultClientSettingsBuilder::default()
            .address(&addr)
            .token(&token)
            .build()
            .unwrap();
        let client = vaultrs::client::VaultClient::new(settings).unwrap();
        let path = unique("app");
        vaultrs::kv2::set(
            &client,
            "secret",
            &path,
            &std::collections::HashMap::from([("password", "from-vault")]),
        )
        .await
        .unwrap();

        let proxy = FaultProxy::start(addr.trim_start_matches("http://").parse().unwrap())
            .await
            .unwrap();
        let config = VaultSettings::new(proxy.url(), VaultAuth::Token(token.into()))
            .with_timeout(Duration::from_secs(2));
        let vault: Arc<dyn SecretSource> = Arc::new(VaultKv::any_mount(config, KvVersion::V2));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "from-file").unwrap();
        let file: Arc<dyn SecretSource> = Arc::new(FileSecrets::new(dir.path()));
        let links = || {
            vec![
                SecretRef::new(vault.clone(), format!("secret/{path}#password"), None),
                SecretRef::new(file.clone(), "pw", None),
            ]
        };

        let chain = SecretChain::new("db_password", links(), FallbackPolicy::OnUnavailable)
            .with_ttl(Duration::ZERO);
        let served = chain.resolve().await.unwrap();
        assert_eq!(served.source, "vault-kv2");
        assert_eq!(
            served.secret.value.expose_secret().as_slice(),
            b"from-vault"
        );

        // Vault unreachable: the file serves, and the logs say so.
        let (logs, _guard) = capture();
        proxy.set_mode(FaultMode::Reset);
        let served = chain.resolve().await.unwrap();
        assert_eq!(served.source, "file");
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("secret_source_unavailable_using_fallback"),
            "{text}"
        );
        assert!(
            !text.contains("from-vault") && !text.contains("from-file"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn configured_secrets_resolve_through_the_keyring_and_are_health_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db_password"), "from-file\n").unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut config = sealkit::Config::from_toml(
        r#"
        [secrets.db_password]
        sources = ["env:SEALKIT_TEST_SURELY_UNSET_SECRET", "file:db_password"]
        fallback = "on-any-failure"
        ttl_secs = 0

        [secrets.api_token]
        sources = ["file:api_token"]
        fallback = "never"
        "#,
    )
    .unwrap();
    config
        .provider("local")
        .set("home", home.path().to_str().unwrap());
    let mut sources = SecretSources::default();
    sources.register("env", Arc::new(EnvSecrets));
    sources.register("file", Arc::new(FileSecrets::new(dir.path())));
    let keyring = sealkit::Keyring::builder(config.clone())
        .with_secret_sources(sources.clone())
        .build()
        .unwrap();

    let resolved = keyring.secret("db_password").await.unwrap();
    assert_eq!(resolved.source, "file");
    assert_eq!(
        resolved.secret.value.expose_secret().as_slice(),
        b"from-file"
    );
    let missing = keyring.secret("api_token").await.unwrap_err();
    assert_eq!(missing.kind(), sealkit::ErrorKind::NotFound, "{missing}");
    let unknown = keyring.secret("nope").await.unwrap_err();
    assert!(unknown.to_string().contains("[secrets.nope]"), "{unknown}");

    // Health fetches from every link of every configured secret, and says which failed.
    let reports = keyring.health().await;
    let report = |component: &str| {
        reports
            .iter()
            .find(|r| r.component == component)
            .unwrap_or_else(|| panic!("no {component} in {reports:?}"))
    };
    assert!(report("secret db_password via file:db_password").is_healthy());
    let env = report("secret db_password via env:SEALKIT_TEST_SURELY_UNSET_SECRET");
    assert!(
        env.problem.as_deref().unwrap().contains("not found"),
        "{env:?}"
    );
    assert!(!report("secret api_token via file:api_token").is_healthy());
    // Nothing reports a value.
    assert!(!format!("{reports:?}").contains("from-file"));

    // A link to a source that is not configured is refused when the keyring is built.
    let mut bad = config;
    bad.secrets.get_mut("api_token").unwrap().sources = vec!["vault-kv9:x".into()];
    let error = sealkit::Keyring::builder(bad)
        .with_secret_sources(sources)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("vault-kv9"), "{error}");
}

#[tokio::test]
async fn env_and_file_pass_the_secret_source_suite() {
    // A variable every test process has (setting one in-process is unsafe in edition 2024).
    let path = std::env::var("PATH").unwrap();
    sealkit_conformance::secret_source_conforms(
        &EnvSecrets,
        &sealkit_conformance::SecretFixture {
            present: "PATH",
            value: path.as_bytes(),
            missing: "SEALKIT_TEST_SURELY_UNSET_SECRET",
            versioned: false,
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api_token"), "file-conformance-value\n").unwrap();
    sealkit_conformance::secret_source_conforms(
        &FileSecrets::new(dir.path()),
        &sealkit_conformance::SecretFixture {
            present: "api_token",
            value: b"file-conformance-value",
            missing: "no_such_file",
            versioned: false,
        },
    )
    .await;
}
