//! The MAC-chained audit log: every operation recorded; edits, truncation and foreign bytes
//! detected; many writers, huge records and crashes mid-write handled.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sealkit::audit::{
    AuditEvent, AuditFileOptions, AuditKey, AuditSink, JsonlAuditSink, Operation, VerifyOptions,
    default_checkpoint_path, verify_audit_log,
};
use sealkit::{EncryptionContext, ErrorKind, Keyring};

use crate::support::*;

async fn log_with_records(dir: &Path) -> PathBuf {
    let path = dir.join("audit.jsonl");
    let mut cfg = with_audit_log(config(dir, "local://k"), &path);
    cfg.actor = "billing-service".into();
    let keyring = Keyring::builder(cfg).build().unwrap();
    if keyring.key_metadata(&uri("local://k")).await.is_err() {
        keyring.create_key(&uri("local://k")).await.unwrap();
    }
    for id in 0..5 {
        let c = ctx("t", "c", id);
        let s = keyring.seal(b"x", &c).await.unwrap();
        keyring.open(&s, &c).await.unwrap();
        keyring.flush_audit().unwrap(); // one record (line) per iteration
    }
    let _ = keyring.open(b"garbage", &ctx("t", "c", 1)).await;
    keyring.flush_audit().unwrap();
    path
}

fn verify(path: &Path) -> sealkit::Result<sealkit::audit::AuditVerification> {
    let checkpoint = default_checkpoint_path(path);
    let mut options = VerifyOptions::default();
    options.checkpoint = Some(&checkpoint);
    verify_audit_log(path, &audit_key(), &options)
}

fn verify_chain(path: &Path) -> sealkit::Result<sealkit::audit::AuditVerification> {
    verify_audit_log(path, &audit_key(), &VerifyOptions::default())
}

fn sink(path: &Path) -> JsonlAuditSink {
    JsonlAuditSink::open(path, &audit_key(), AuditFileOptions::default()).unwrap()
}

fn record_seal(sink: &dyn AuditSink, context: &EncryptionContext) {
    let mut event = AuditEvent::new("writer", Operation::Seal);
    event.key = Some("local://k");
    event.key_version = Some("1");
    event.context = Some(context);
    sink.record(&event);
}

#[tokio::test]
async fn records_every_operation_with_actor_key_context_and_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with_records(dir.path()).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for record in &records {
        assert_eq!(record["pid"], std::process::id());
    }
    let lines: Vec<&serde_json::Value> = records
        .iter()
        .flat_map(|r| r["events"].as_array().unwrap())
        .collect();
    let ops: Vec<&str> = lines.iter().map(|l| l["op"].as_str().unwrap()).collect();
    assert_eq!(ops.iter().filter(|o| **o == "seal").count(), 5);
    assert_eq!(ops.iter().filter(|o| **o == "open").count(), 6);
    assert!(ops.contains(&"create_key") && ops.contains(&"generate_data_key"));
    let seal = lines.iter().find(|l| l["op"] == "seal").unwrap();
    assert_eq!(seal["actor"], "billing-service");
    assert_eq!(seal["key"], "local://k");
    assert_eq!(seal["ver"], "1");
    assert_eq!(seal["ctx"], "column=c,id=0,table=t");
    assert_eq!(seal["ok"], true);
    assert!(seal["ms"].as_u64().unwrap() > 1_700_000_000_000);
    let failed = lines.last().unwrap();
    assert_eq!(failed["ok"], false);
    assert_eq!(failed["err"], "invalid_input");
    let report = verify(&path).unwrap();
    assert_eq!(report.records, records.len() as u64);
    assert_eq!(report.events, lines.len() as u64);
    assert_eq!(report.checkpoint_records, Some(report.records));
    // A second keyring appends to the same chain.
    log_with_records(dir.path()).await;
    assert!(verify(&path).unwrap().records > report.records);
}

#[tokio::test]
async fn edited_deleted_and_reordered_records_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with_records(dir.path()).await;
    let original = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let check = |content: String, expect: &str| {
        std::fs::write(&path, content + "\n").unwrap();
        let err = verify_chain(&path).unwrap_err().to_string();
        assert!(err.contains(expect), "{err}");
    };
    // Edit: change the outcome of record 3.
    let mut edited = lines.clone();
    let changed = edited[3].replace("\"ok\":true", "\"ok\":false,\"err\":\"invalid_input\"");
    edited[3] = &changed;
    check(edited.join("\n"), "line 4: its MAC does not match");
    // Delete record 2.
    let mut deleted = lines.clone();
    deleted.remove(2);
    check(deleted.join("\n"), "line 3");
    // Swap records 4 and 5.
    let mut swapped = lines.clone();
    swapped.swap(4, 5);
    check(swapped.join("\n"), "line 5");
    std::fs::write(&path, original).unwrap();
    assert!(verify(&path).is_ok());
}

/// Whoever can write the file cannot re-chain it: the MAC needs the audit key; and bytes the
/// writer would not produce (added fields, `\u` escapes, spaces) fail even where JSON agrees.
#[tokio::test]
async fn a_rechained_edit_and_non_canonical_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with_records(dir.path()).await;
    let original = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    // The attacker rewrites the whole log with their own key: every MAC is consistent, but not
    // under the audit key.
    let forged = dir.path().join("forged.jsonl");
    {
        let attacker = JsonlAuditSink::open(
            &forged,
            &AuditKey::from_bytes([0x13; 32]),
            AuditFileOptions::default(),
        )
        .unwrap();
        record_seal(&attacker, &ctx("t", "c", 1));
    }
    let err = verify_audit_log(&forged, &audit_key(), &VerifyOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("another audit key"), "{err}");
    // Same JSON, other bytes.
    for (from, to, expect) in [
        (
            "\"actor\":\"",
            "\"actor\": \"",
            "not the ones Sealkit writes",
        ),
        (
            "\"actor\":\"b",
            "\"actor\":\"\\u0062",
            "not the ones Sealkit writes",
        ),
        ("{\"seq\":", "{\"note\":\"x\",\"seq\":", "line 2"),
    ] {
        let mut edited = lines.clone();
        let changed = edited[1].replacen(from, to, 1);
        assert_ne!(changed, edited[1]);
        edited[1] = &changed;
        std::fs::write(&path, edited.join("\n") + "\n").unwrap();
        let err = verify_chain(&path).unwrap_err().to_string();
        assert!(err.contains(expect), "{to}: {err}");
    }
    std::fs::write(&path, original).unwrap();
    // A keyring refuses to continue a log under another key, rather than mixing two chains.
    let err = JsonlAuditSink::open(
        &path,
        &AuditKey::from_bytes([0x13; 32]),
        AuditFileOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Misconfigured, "{err}");
    assert!(err.to_string().contains("audit key"), "{err}");
}

#[tokio::test]
async fn records_cut_from_the_end_fail_against_the_checkpoint_and_an_expected_head() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with_records(dir.path()).await;
    let full = verify(&path).unwrap();
    let original = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let cut = lines[..lines.len() - 3].join("\n") + "\n";
    std::fs::write(&path, &cut).unwrap();
    // The chain alone cannot tell…
    assert_eq!(verify_chain(&path).unwrap().records, full.records - 3);
    // …the checkpoint can.
    let err = verify(&path).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
    assert!(
        err.contains(&format!("vouches for {} records", full.records)),
        "{err}"
    );
    // So can a head recorded elsewhere.
    let mut options = VerifyOptions::default();
    options.expect_head = Some(&full.head);
    let err = verify_audit_log(&path, &audit_key(), &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not hold the expected head"), "{err}");
    // An edited checkpoint vouches for nothing; a missing one is an error, not a pass.
    let checkpoint = default_checkpoint_path(&path);
    let stored = std::fs::read_to_string(&checkpoint).unwrap();
    std::fs::write(
        &checkpoint,
        stored.replace(
            &format!("\"records\":{}", full.records),
            &format!("\"records\":{}", full.records - 3),
        ),
    )
    .unwrap();
    let err = verify(&path).unwrap_err().to_string();
    assert!(err.contains("does not verify"), "{err}");
    std::fs::remove_file(&checkpoint).unwrap();
    assert_eq!(verify(&path).unwrap_err().kind(), ErrorKind::NotFound);
    // The untouched log passes both anchors, and reports what follows the head.
    std::fs::write(&path, &original).unwrap();
    std::fs::write(&checkpoint, &stored).unwrap();
    let early = lines.len() - 4;
    let early_head: serde_json::Value = serde_json::from_str(lines[early]).unwrap();
    let early_head = early_head["mac"].as_str().unwrap().to_string();
    options.expect_head = Some(&early_head);
    options.checkpoint = Some(&checkpoint);
    let report = verify_audit_log(&path, &audit_key(), &options).unwrap();
    assert_eq!(report.records_after_expected_head, Some(3));
    assert_eq!(report.checkpoint_records, Some(full.records));
}

/// Writers in several processes share one chain: each append happens under an exclusive lock
/// on the file, after re-reading its end. (Each sink has its own open file, as a process does.)
#[test]
fn eight_writers_appending_at_once_keep_one_verifiable_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let (path, barrier) = (path.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let sink =
                    JsonlAuditSink::open(&path, &audit_key(), AuditFileOptions::default()).unwrap();
                for i in 0..200 {
                    record_seal(&sink, &ctx("t", "c", w * 1000 + i));
                    if i % 50 == 0 {
                        let event = AuditEvent::new("writer", Operation::RotateKey);
                        sink.record(&event); // written before `record` returns
                    }
                }
                sink.flush().unwrap();
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let report = verify(&path).unwrap();
    assert_eq!(report.events, 8 * (200 + 4));
    // Honest concurrency verifies; an edit still does not.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("id=3005", "id=3006", 1)).unwrap();
    assert!(verify_chain(&path).is_err());
}

/// A record larger than any read buffer (a context of three 60 KiB values) does not stop the
/// next keyring from continuing the chain.
#[test]
fn records_of_any_size_continue_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let huge = "v".repeat(60 * 1024);
    let context =
        EncryptionContext::from_pairs([("a", huge.as_str()), ("b", &huge), ("c", &huge)]).unwrap();
    for _ in 0..3 {
        let sink = sink(&path);
        record_seal(&sink, &ctx("t", "c", 1));
        record_seal(&sink, &context);
    }
    let report = verify(&path).unwrap();
    assert_eq!(report.events, 6);
}

/// A crash mid-write leaves a partial last line: verify reports it; the next writer documents
/// it with a MACed recovery record (its length and SHA-256) and carries on. A foreign line in
/// the middle is still tampering.
#[test]
fn a_partial_last_line_is_reported_recovered_and_never_hides_an_insertion() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    {
        let sink = sink(&path);
        for i in 0..4 {
            record_seal(&sink, &ctx("t", "c", i));
            sink.flush().unwrap(); // one record per event
        }
    }
    let complete = std::fs::read_to_string(&path).unwrap();
    let last = complete.lines().last().unwrap().to_string();
    // The crash: half of one more record, no line feed.
    let partial = &last[..last.len() / 2];
    std::fs::write(&path, format!("{complete}{partial}")).unwrap();
    let report = verify(&path).unwrap();
    assert_eq!(report.records, 4);
    assert_eq!(report.partial_tail_bytes, Some(partial.len() as u64));
    // The next writer carries on.
    {
        let sink = sink(&path);
        record_seal(&sink, &ctx("t", "c", 9));
    }
    let report = verify(&path).unwrap();
    assert_eq!(report.records, 6, "4 + the recovery record + 1");
    assert_eq!(report.recovered_lines, 1);
    assert_eq!(report.partial_tail_bytes, None);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"op\":\"recover_partial_line\""));
    // Replacing the documented partial line, or inserting a line elsewhere, breaks the log.
    std::fs::write(&path, text.replacen(partial, "{\"forged\":true}", 1)).unwrap();
    assert!(verify_chain(&path).is_err());
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(2, "not a record");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let err = verify_chain(&path).unwrap_err().to_string();
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn an_audit_file_without_a_key_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "local://k");
    cfg.audit.path = Some(dir.path().join("audit.jsonl"));
    let err = Keyring::builder(cfg).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Misconfigured);
    assert!(err.to_string().contains("SEALKIT_AUDIT_KEY"), "{err}");
    assert!(!dir.path().join("audit.jsonl").exists());
}

/// The key can come from a `[secrets.NAME]` chain (here a file source).
#[tokio::test]
async fn the_audit_key_can_come_from_a_secret_source() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("audit-key");
    std::fs::write(&key_file, audit_key().to_base64().as_bytes()).unwrap();
    let path = dir.path().join("audit.jsonl");
    let toml = format!(
        "default_key = \"local://k\"\n[providers.local]\nhome = {:?}\n[audit]\npath = {:?}\nkey_secret = \"audit_key\"\n[secrets.audit_key]\nsources = [\"file:{}\"]\n",
        dir.path().join(".sealkit"),
        path,
        key_file.display()
    );
    let cfg = sealkit::Config::from_toml(&toml).unwrap();
    assert!(Keyring::builder(cfg.clone()).build().is_err());
    let keyring = Keyring::builder(cfg).build_async().await.unwrap();
    keyring.create_key(&uri("local://k")).await.unwrap();
    keyring.flush_audit().unwrap();
    assert_eq!(verify(&path).unwrap().records, 1);
}
