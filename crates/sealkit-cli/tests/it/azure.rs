//! Azure Key Vault through the CLI, against the Key Vault test peer `cargo xtask peers up`
//! started: the key contract and health as a managed identity (App Service's
//! `IDENTITY_ENDPOINT`), and the user's own move from AWS KMS to Azure Key Vault.

use sealkit_conformance::peers::{peer_env, unique};
use serde_json::Value;

use super::{CTX, aws_env, create_seal_rotate_rewrap, delete_key, legacy_iv16, ok, sealkit_with};

/// The peer's sign-in details (`credentials.json`) and the variables that reach a vault named
/// `vault` through it (the peer's address, its certificate authority).
fn azure_peer(vault: &str) -> Option<(Value, Vec<(String, String)>)> {
    let dir = peer_env("SEALKIT_TEST_AZURE_KV_DIR", "the Key Vault test peer")?;
    let dir = std::path::Path::new(&dir);
    let creds: Value =
        serde_json::from_slice(&std::fs::read(dir.join("credentials.json")).unwrap()).unwrap();
    let authority = creds["authority_host"].as_str().unwrap().to_string();
    let env = vec![
        ("AZURE_AUTHORITY_HOST".into(), authority.clone()),
        (
            "SEALKIT_AZURE_CONNECT_TO".into(),
            authority.trim_start_matches("https://").to_string(),
        ),
        (
            "SEALKIT_AZURE_CA_FILE".into(),
            dir.join("ca.pem").to_string_lossy().into_owned(),
        ),
        ("SEALKIT_AZURE_VAULT".into(), vault.to_string()),
    ];
    Some((creds, env))
}

fn client_secret(creds: &Value) -> Vec<(String, String)> {
    [
        ("AZURE_TENANT_ID", &creds["tenant_id"]),
        ("AZURE_CLIENT_ID", &creds["app"]["client_id"]),
        ("AZURE_CLIENT_SECRET", &creds["app"]["client_secret"]),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.as_str().unwrap().to_string()))
    .collect()
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Signed in as App Service's managed identity (only `IDENTITY_ENDPOINT` and
/// `IDENTITY_HEADER` set): the key contract (create, seal, rotate, rewrap, list, delete),
/// Key Vault secrets, and `health` with the provider and a configured secret.
#[test]
fn key_vault_through_the_cli_as_a_managed_identity() {
    let vault = format!("{}.vault.azure.net", unique("cli"));
    let Some((creds, mut env)) = azure_peer(&vault) else {
        return;
    };
    env.push((
        "IDENTITY_ENDPOINT".into(),
        creds["managed_identity"]["endpoint"]
            .as_str()
            .unwrap()
            .into(),
    ));
    env.push((
        "IDENTITY_HEADER".into(),
        creds["managed_identity"]["header"].as_str().unwrap().into(),
    ));
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let env = pairs(&env);
    let run = |args: &[&str], stdin: &[u8]| sealkit_with(h, &env, args, stdin);
    let key = format!("azure-kv://{vault}/keys/{}", unique("k"));
    let (sealed, _) = create_seal_rotate_rewrap(&run, &key);

    ok(&run(
        &["secrets", "put", "azure-kv-secrets:db#password"],
        b"s3cret\n",
    ));
    assert_eq!(
        ok(&run(
            &["secrets", "get", "azure-kv-secrets:db#password"],
            b""
        )),
        b"s3cret"
    );
    let config = h.join("sealkit.toml");
    std::fs::write(
        &config,
        format!(
            "default_key = \"{key}\"\n\n[secrets.db_password]\nsources = [\"azure-kv-secrets:{vault}/db#password\"]\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let out = run(&["--config", config, "--json", "health"], b"");
    let health: Value = serde_json::from_slice(ok(&out)).unwrap();
    let healthy = |component: &str| {
        health["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["component"] == component && c["healthy"] == true)
    };
    assert!(healthy("provider azure-kv"), "{health}");
    assert!(
        healthy(&format!(
            "secret db_password via azure-kv-secrets:{vault}/db#password"
        )),
        "{health}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));

    // A wrong identity header is a refusal, said as one (exit 5), not an outage.
    let wrong: Vec<(&str, &str)> = env
        .iter()
        .map(|&(k, v)| {
            if k == "IDENTITY_HEADER" {
                (k, "wrong")
            } else {
                (k, v)
            }
        })
        .collect();
    let refused = sealkit_with(h, &wrong, &["decrypt", "--context", CTX], &sealed);
    assert_eq!(
        refused.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    delete_key(&run, &key, &sealed);
}

/// The move that started the project: customer rows sealed under AWS KMS (moto), and legacy
/// rows under the application's AES key, in PostgreSQL; the legacy key and the database
/// password live in Key Vault secrets. A provider → provider job moves every value to an
/// Azure Key Vault key, signing in to the database with the password from Key Vault;
/// `verify` proves the cut-over, and the CLI without any AWS setting opens every row.
#[test]
fn the_move_from_aws_kms_to_azure_key_vault_end_to_end() {
    use base64::Engine;
    let Some(aws) = peer_env("SEALKIT_TEST_AWS_ENDPOINT", "moto") else {
        return;
    };
    let Some(pg_url) = peer_env("SEALKIT_TEST_PG_URL", "PostgreSQL") else {
        return;
    };
    let vault = format!("{}.vault.azure.net", unique("move"));
    let Some((creds, mut azure)) = azure_peer(&vault) else {
        return;
    };
    azure.extend(client_secret(&creds));
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let legacy_key = [0x4Bu8; 32];
    let encoded = base64::engine::general_purpose::STANDARD.encode(legacy_key);
    let mut both = pairs(&azure);
    both.extend(aws_env(&aws, &[("APP_LEGACY_KEY", encoded.as_str())]));
    let run = |args: &[&str], stdin: &[u8]| sealkit_with(h, &both, args, stdin);

    // The secrets move into Key Vault: the legacy key, and the database password (JSON).
    let role = unique("app").replace('-', "_");
    let password = unique("pw");
    ok(&run(
        &[
            "secrets",
            "put",
            "azure-kv-secrets:legacy-key",
            "--from-env",
            "APP_LEGACY_KEY",
        ],
        b"",
    ));
    ok(&run(
        &["secrets", "put", "azure-kv-secrets:app-db#password"],
        password.as_bytes(),
    ));

    // The application's database: its own role and schema (where the job keeps its ledger),
    // rows under AWS KMS and under the legacy key.
    let table = unique("customers").replace('-', "_");
    let aws_key = format!("aws-kms://alias/{}", unique("app"));
    ok(&run(&["keys", "create", &aws_key], b""));
    let rows = 20i64;
    let context = |id: i64, column: &str| format!("table={table},column={column},id={id}");
    let mut values = Vec::new();
    for id in 1..=rows {
        let email = ok(&run(
            &[
                "encrypt",
                "--key",
                &aws_key,
                "--context",
                &context(id, "email"),
            ],
            format!("user{id}@example.com").as_bytes(),
        ))
        .to_vec();
        let note = legacy_iv16(legacy_key, format!("note {id}").as_bytes());
        values.push((id, email, note));
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let superuser = runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&pg_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN PASSWORD '{password}';
                 CREATE SCHEMA {role} AUTHORIZATION {role};
                 CREATE TABLE {role}.{table} (id bigint PRIMARY KEY, email bytea, note bytea);
                 ALTER TABLE {role}.{table} OWNER TO {role};"
            ))
            .await
            .unwrap();
        for (id, email, note) in &values {
            client
                .execute(
                    &format!("INSERT INTO {role}.{table} VALUES ($1, $2, $3)"),
                    &[id, email, note],
                )
                .await
                .unwrap();
        }
        client
    });

    let config = h.join("sealkit.toml");
    std::fs::write(
        &config,
        "mode = \"hybrid\"\n[legacy]\nkey = [\"azure-kv-secrets:legacy-key\"]\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let azure_key = format!("azure-kv://{vault}/keys/app");
    ok(&run(&["keys", "create", &azure_key], b""));
    let (host_port, _) = pg_url
        .rsplit_once('@')
        .map(|(_, rest)| (rest.split('/').next().unwrap().to_string(), ()))
        .unwrap();
    let db = format!("postgres://{role}@{host_port}/postgres");
    let job = |cmd: &str, password: bool| {
        let mut args = vec![
            "--config",
            config,
            "--json",
            "migrate",
            cmd,
            "--db",
            &db,
            "--job",
            "to-azure",
            "--table",
            &table,
            "--column",
            "email=envelope",
            "--column",
            "note=aes-gcm-iv16",
            "--to",
            &azure_key,
        ];
        if password {
            args.extend(["--db-password", "azure-kv-secrets:app-db#password"]);
        }
        run(&args, b"")
    };
    // Without the password the database refuses the job's role.
    let refused = job("run", false);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("password"),
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
    let moved = job("run", true);
    assert!(
        moved.status.success(),
        "{}",
        String::from_utf8_lossy(&moved.stdout)
    );
    let moved: Value = serde_json::from_slice(&moved.stdout).unwrap();
    assert_eq!(moved["migrated_by_this_run"], rows * 2, "{moved}");
    let verified = job("verify", true);
    assert!(
        verified.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    let proof: Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(proof["values"], rows * 2, "{proof}");
    assert_eq!(proof["problems"], 0, "the cut-over proof: {proof}");

    // Every row now opens with Azure alone: no AWS setting, no legacy key.
    let azure_only = pairs(&azure);
    let stored = runtime.block_on(async {
        superuser
            .query(
                &format!("SELECT id, email, note FROM {role}.{table} ORDER BY id"),
                &[],
            )
            .await
            .unwrap()
    });
    assert_eq!(stored.len() as i64, rows);
    for row in stored {
        let id: i64 = row.get(0);
        for (column, want) in [
            ("email", format!("user{id}@example.com")),
            ("note", format!("note {id}")),
        ] {
            let value: Vec<u8> = row.get(column);
            let out = sealkit_with(
                h,
                &azure_only,
                &["decrypt", "--context", &context(id, column)],
                &value,
            );
            assert_eq!(ok(&out), want.as_bytes(), "row {id} {column}");
        }
    }
}
