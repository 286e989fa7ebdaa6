//! Checkpoints: the record count and head MAC of a log, MACed under the audit key and kept in a
//! second file, so that cutting records off the log's end is detected.
//!
//! One line: `{"records":N,"head":"<32 hex>","key_id":"<16 hex>","time_unix_ms":T,"mac":"<64 hex>"}`,
//! the MAC being HMAC-SHA256 over `sealkit audit checkpoint\n` and the line up to `,"mac":"`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hmac::Mac;
use serde::Deserialize;

use super::key::AuditKey;
use super::record::{HmacSha256, RecordMac};
use crate::{Error, Result};

const LABEL: &[u8] = b"sealkit audit checkpoint\n";

/// A verified checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Checkpoint {
    pub(super) records: u64,
    pub(super) head: RecordMac,
    pub(super) time_unix_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    records: u64,
    head: String,
    key_id: String,
    time_unix_ms: u64,
    mac: String,
}

fn body(records: u64, head: &RecordMac, key_id: &str, time_unix_ms: u64) -> String {
    format!(
        "{{\"records\":{records},\"head\":\"{}\",\"key_id\":\"{key_id}\",\"time_unix_ms\":{time_unix_ms}",
        hex::encode(head)
    )
}

fn mac_of(keyed: &HmacSha256, body: &str) -> HmacSha256 {
    let mut mac = keyed.clone();
    mac.update(LABEL);
    mac.update(body.as_bytes());
    mac
}

/// Writes a checkpoint atomically (a temporary file renamed over `path`), syncing it first when
/// `sync` is set.
pub(super) fn write(
    path: &Path,
    keyed: &HmacSha256,
    key_id: &str,
    checkpoint: &Checkpoint,
    sync: bool,
) -> std::io::Result<()> {
    let body = body(
        checkpoint.records,
        &checkpoint.head,
        key_id,
        checkpoint.time_unix_ms,
    );
    let mac = mac_of(keyed, &body).finalize().into_bytes();
    let line = format!("{body},\"mac\":\"{}\"}}\n", hex::encode(mac));
    let mut temp = PathBuf::from(path);
    temp.as_mut_os_string().push(".tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(line.as_bytes())?;
    if sync {
        file.sync_data()?;
    }
    std::fs::rename(&temp, path)
}

/// Reads and verifies the checkpoint at `path`; `None` when there is no such file.
pub(super) fn read(path: &Path, key: &AuditKey) -> Result<Option<Checkpoint>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::unavailable(
                "audit",
                format!("cannot read checkpoint {}: {e}", path.display()),
            ));
        }
    };
    let bad = |why: &str| {
        Error::invalid_input(format!(
            "audit checkpoint {} {why}; it cannot vouch for the log",
            path.display()
        ))
    };
    let line = text.strip_suffix('\n').unwrap_or(&text);
    let stored: Stored = serde_json::from_str(line).map_err(|_| bad("is not a checkpoint"))?;
    if stored.key_id != key.id() {
        return Err(bad(&format!(
            "was written under audit key {}, not the configured key {}",
            stored.key_id,
            key.id()
        )));
    }
    let mut head = super::record::GENESIS;
    hex::decode_to_slice(&stored.head, &mut head).map_err(|_| bad("has a malformed head"))?;
    let body = body(stored.records, &head, &stored.key_id, stored.time_unix_ms);
    if format!("{body},\"mac\":\"{}\"}}", stored.mac) != line {
        return Err(bad("is not in the form Sealkit writes"));
    }
    let mac = hex::decode(&stored.mac).map_err(|_| bad("has a malformed MAC"))?;
    mac_of(&key.keyed(), &body)
        .verify_slice(&mac)
        .map_err(|_| bad("does not verify (it was edited)"))?;
    Ok(Some(Checkpoint {
        records: stored.records,
        head,
        time_unix_ms: stored.time_unix_ms,
    }))
}
