//! The hash-chained audit log: every operation recorded, tampering detected.

use sealkit::Keyring;
use sealkit::audit::verify_audit_log;

use crate::support::*;

async fn log_with_records(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("audit.jsonl");
    let mut cfg = config(dir, "local://k");
    cfg.audit.path = Some(path.clone());
    cfg.actor = "billing-service".into();
    let keyring = Keyring::builder(cfg).build().unwrap();
    if keyring.key_metadata(&uri("local://k")).await.is_err() {
        keyring.create_key(&uri("local://k")).await.unwrap();
    }
    for id in 0..5 {
        let c = ctx("t", "c", id);
        let s = keyring.seal(b"x", &c).await.unwrap();
        keyring.open(&s, &c).await.unwrap();
    }
    let _ = keyring.open(b"garbage", &ctx("t", "c", 1)).await;
    keyring.flush_audit().unwrap();
    path
}

#[tokio::test]
async fn records_every_operation_with_actor_key_context_and_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with_records(dir.path()).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ops: Vec<&str> = lines
        .iter()
        .map(|l| l["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops.iter().filter(|o| **o == "seal").count(), 5);
    assert_eq!(ops.iter().filter(|o| **o == "open").count(), 6);
    assert!(ops.contains(&"create_key") && ops.contains(&"generate_data_key"));
    let seal = lines.iter().find(|l| l["operation"] == "seal").unwrap();
    assert_eq!(seal["actor"], "billing-service");
    assert_eq!(seal["key"], "local://k");
    assert_eq!(seal["key_version"], "1");
    assert_eq!(seal["context"], "column=c,id=0,table=t");
    assert_eq!(seal["outcome"], "success");
    let failed = lines.last().unwrap();
    assert_eq!(failed["outcome"], "failure");
    assert_eq!(failed["error"], "invalid_input");
    let report = verify_audit_log(&path).unwrap();
    assert_eq!(report.records, lines.len() as u64);
    // A second keyring appends to the same chain.
    log_with_records(dir.path()).await;
    assert!(verify_audit_log(&path).unwrap().records > report.records);
}

#[tokio::test]
async fn edited_deleted_and_reordered_records_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with_records(dir.path()).await;
    let original = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let check = |content: String, expect: &str| {
        std::fs::write(&path, content).unwrap();
        let err = verify_audit_log(&path).unwrap_err().to_string();
        assert!(err.contains(expect), "{err}");
    };
    // Edit: change the outcome of record 3.
    let mut edited = lines.clone();
    let changed = edited[3].replace("\"success\"", "\"failure\"");
    edited[3] = &changed;
    check(edited.join("\n"), "line 4");
    // Delete record 2.
    let mut deleted = lines.clone();
    deleted.remove(2);
    check(deleted.join("\n"), "line 3");
    // Swap records 4 and 5.
    let mut swapped = lines.clone();
    swapped.swap(4, 5);
    check(swapped.join("\n"), "line 5");
    std::fs::write(&path, original).unwrap();
    assert!(verify_audit_log(&path).is_ok());
}
