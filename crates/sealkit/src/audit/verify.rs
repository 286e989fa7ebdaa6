//! Verifying an audit log: the MAC chain, the checkpoint, an expected head.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::checkpoint;
use super::key::AuditKey;
use super::record::{GENESIS, LineFault, Record, RecordMac, recovery_context};
use crate::{Error, Result};

/// What to check besides the chain.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct VerifyOptions<'a> {
    /// A checkpoint file that must vouch for the log: the log may not hold fewer records than
    /// it counts, and the record at its count must have its head MAC. Missing is an error.
    pub checkpoint: Option<&'a Path>,
    /// A head MAC recorded elsewhere (a ticket, a log shipper) that must be in the log.
    pub expect_head: Option<&'a str>,
}

/// The outcome of verifying an audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditVerification {
    /// Records (lines) checked.
    pub records: u64,
    /// Audited operations in them.
    pub events: u64,
    /// MAC of the newest record, hex (record it elsewhere to anchor the log's end).
    pub head: String,
    /// Lines cut short by a crash that a later recovery record documents.
    pub recovered_lines: u64,
    /// Length of a last line cut short by a crash (no line feed, not a record), if any. The
    /// next writer documents it with a recovery record.
    pub partial_tail_bytes: Option<u64>,
    /// Records the checkpoint vouched for, when one was checked.
    pub checkpoint_records: Option<u64>,
    /// Records after the expected head, when one was given.
    pub records_after_expected_head: Option<u64>,
}

/// Verifies the audit log at `path` under `key`, and the checkpoint and head `options` name.
/// The error names the first broken line, or the anchor the log fails.
pub fn verify_audit_log(
    path: &Path,
    key: &AuditKey,
    options: &VerifyOptions<'_>,
) -> Result<AuditVerification> {
    let file = File::open(path)
        .map_err(|e| Error::not_found("audit", format!("audit log {} ({e})", path.display())))?;
    let label = path.display().to_string();
    let checkpoint = match options.checkpoint {
        None => None,
        Some(at) => Some(checkpoint::read(at, key)?.ok_or_else(|| {
            Error::not_found(
                "audit",
                format!(
                    "checkpoint {} (without it, records cut from the log's end go unnoticed: point --checkpoint at it, or pass --no-checkpoint to check the chain alone)",
                    at.display()
                ),
            )
        })?),
    };
    let expect_head = match options.expect_head {
        None => None,
        Some(text) => {
            let mut mac = GENESIS;
            hex::decode_to_slice(text.trim(), &mut mac).map_err(|_| {
                Error::invalid_input(format!(
                    "the expected head {text:?} is not 32 hex digits (a head as `sealkit audit verify` prints it)"
                ))
            })?;
            Some(mac)
        }
    };
    let mut anchors = Anchors {
        expect_head,
        expected_head_at: None,
        checkpoint: checkpoint.as_ref().map(|c| (c.records, c.head)),
        checkpoint_matched: checkpoint
            .as_ref()
            .map(|c| c.records == 0 && c.head == GENESIS),
    };
    let mut report = scan(BufReader::new(file), key, &label, &mut anchors)?;
    if let Some(c) = &checkpoint {
        if c.records > report.records {
            return Err(Error::invalid_input(format!(
                "audit log {label} is truncated: its checkpoint vouches for {} records and the log holds {} (records were removed from its end)",
                c.records, report.records
            )));
        }
        if anchors.checkpoint_matched != Some(true) {
            return Err(Error::invalid_input(format!(
                "audit log {label} does not match its checkpoint: record {} is not the one the checkpoint vouches for",
                c.records.saturating_sub(1)
            )));
        }
        report.checkpoint_records = Some(c.records);
    }
    if let Some(head) = options.expect_head {
        let at = anchors.expected_head_at.ok_or_else(|| {
            Error::invalid_input(format!(
                "audit log {label} does not hold the expected head {head}: records were removed from its end, or it is another log"
            ))
        })?;
        report.records_after_expected_head = Some(report.records - at);
    }
    Ok(report)
}

/// Verifies MAC-chained audit records read from `reader` under `key` (`label` names them in
/// errors). Any input gives a verdict, never a panic.
pub fn verify_audit_records(
    reader: impl BufRead,
    key: &AuditKey,
    label: &str,
) -> Result<AuditVerification> {
    scan(reader, key, label, &mut Anchors::default())
}

const NOT_A_RECORD: &str =
    "not a record (foreign bytes or unknown fields), and no recovery record accounts for it";

#[derive(Default)]
struct Anchors {
    expect_head: Option<RecordMac>,
    /// Records up to and including the expected head.
    expected_head_at: Option<u64>,
    checkpoint: Option<(u64, RecordMac)>,
    checkpoint_matched: Option<bool>,
}

fn scan(
    mut reader: impl BufRead,
    key: &AuditKey,
    label: &str,
    anchors: &mut Anchors,
) -> Result<AuditVerification> {
    let keyed = key.keyed();
    let mut prev = GENESIS;
    let mut count = 0u64;
    let mut events = 0u64;
    let mut recovered_lines = 0u64;
    let mut partial_tail_bytes = None;
    // A line that is not a record, waiting for the recovery record that must follow it.
    let mut unrecorded: Option<(usize, Vec<u8>)> = None;
    let mut line = Vec::new();
    for line_no in 1usize.. {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::unavailable("audit", format!("reading {label}: {e}")))?;
        if read == 0 {
            break;
        }
        let terminated = line.last() == Some(&b'\n');
        if terminated {
            line.pop();
        }
        let broken = |at: usize, why: &str| {
            Error::invalid_input(format!("audit log {label} is broken at line {at}: {why}"))
        };
        let record = match Record::parse(&line) {
            Ok(record) => record,
            Err(_) if !terminated => {
                partial_tail_bytes = Some(line.len() as u64);
                break;
            }
            Err(_) => {
                if let Some((at, _)) = &unrecorded {
                    return Err(broken(*at, NOT_A_RECORD));
                }
                unrecorded = Some((line_no, line.clone()));
                continue;
            }
        };
        if let Some((at, _)) = &unrecorded
            && record.recovery().is_none()
        {
            return Err(broken(*at, NOT_A_RECORD));
        }
        if record.seq != count {
            return Err(broken(
                line_no,
                &format!(
                    "sequence {} where {count} was expected (a record was deleted, inserted or moved)",
                    record.seq
                ),
            ));
        }
        let (record, mac) = Record::check(&line, &prev, &keyed).map_err(|fault| {
            broken(
                line_no,
                match fault {
                    LineFault::NotCanonical => {
                        "its bytes are not the ones Sealkit writes (added fields, spacing or escapes)"
                    }
                    LineFault::BadMac => {
                        "its MAC does not match: the record was edited, or the log was written under another audit key"
                    }
                    LineFault::NotARecord => "not a record",
                },
            )
        })?;
        match unrecorded.take() {
            Some((at, bad)) => {
                if record.recovery() != Some(recovery_context(&bad).as_str()) {
                    return Err(broken(at, NOT_A_RECORD));
                }
                recovered_lines += 1;
            }
            None if record.has_recovery_event() => {
                return Err(broken(
                    line_no,
                    "a recovery record with no unreadable line before it (a line was removed)",
                ));
            }
            None => {}
        }
        prev = mac;
        count += 1;
        events += record.events.len() as u64;
        if anchors.expect_head == Some(mac) {
            anchors.expected_head_at = Some(count);
        }
        if let Some((records, head)) = anchors.checkpoint
            && records == count
        {
            anchors.checkpoint_matched = Some(head == mac);
        }
    }
    if let Some((at, _)) = unrecorded {
        return Err(Error::invalid_input(format!(
            "audit log {label} is broken at line {at}: {NOT_A_RECORD}"
        )));
    }
    Ok(AuditVerification {
        records: count,
        events,
        head: hex::encode(prev),
        recovered_lines,
        partial_tail_bytes,
        checkpoint_records: None,
        records_after_expected_head: None,
    })
}
