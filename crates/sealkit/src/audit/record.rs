//! The exact bytes of an audit record, and their MAC.
//!
//! A record is one line: `{"seq":…,"pid":…,"time_unix_ms":…,"actor":…,"operation":…,"key":…,
//! "key_version":…,"context":…,"outcome":…,"error":…,"mac":"<64 hex>"}`. Its MAC is
//! HMAC-SHA256 under the audit key over the previous record's MAC (32 zero bytes for the first)
//! followed by the line's bytes up to `,"mac":"`. The formatter here is the only one: the
//! verifier re-formats every parsed record and requires the very same bytes, so escapes, spaces
//! or fields that the writer would not produce are refused even where the MAC holds.

use hmac::Mac;
use serde::Deserialize;
use sha2::Sha256;

use super::{AuditEvent, Operation};
use crate::EncryptionContext;

/// HMAC-SHA256, keyed once and cloned per record.
pub(super) type HmacSha256 = hmac::Hmac<Sha256>;

/// A record's MAC.
pub(super) type RecordMac = [u8; 32];

/// The chain value before the first record.
pub(super) const GENESIS: RecordMac = [0; 32];

/// What separates a record's MACed bytes from its MAC.
const MAC_FIELD: &[u8] = b",\"mac\":\"";

/// Bytes after the MACed part: `,"mac":"` + 64 hex digits + `"}`.
const MAC_SUFFIX_LEN: usize = MAC_FIELD.len() + 64 + 2;

/// The operation of the record a writer adds after finding a cut-short or foreign line at the
/// end of the log; its context names that line's length and SHA-256.
pub(super) const RECOVERY_OPERATION: &str = "recover_partial_line";

/// The context of a data operation, or the text of a parsed record's.
enum ContextText<'a> {
    Context(&'a EncryptionContext),
    Text(&'a str),
}

/// Appends the fields an event contributes (`"time_unix_ms":…` to `"error":…`), with the line
/// feed that ends it in a writer's queue. Runs on the caller's thread: no allocation.
pub(super) fn push_event(buf: &mut Vec<u8>, event: &AuditEvent<'_>, time_unix_ms: u64) {
    push_fields(
        buf,
        time_unix_ms,
        event.actor,
        event.operation.as_str(),
        event.key,
        event.key_version,
        event.context.map(ContextText::Context),
        if event.error.is_none() {
            "success"
        } else {
            "failure"
        },
        event.error.map(|kind| kind.as_str()),
    );
    buf.push(b'\n');
}

/// Appends the fields of the record that documents an unrecorded line of `len` bytes.
pub(super) fn push_recovery_event(buf: &mut Vec<u8>, time_unix_ms: u64, line: &[u8]) {
    let context = recovery_context(line);
    push_fields(
        buf,
        time_unix_ms,
        "sealkit",
        RECOVERY_OPERATION,
        None,
        None,
        Some(ContextText::Text(&context)),
        "success",
        None,
    );
    buf.push(b'\n');
}

/// The context a recovery record carries for `line`.
pub(super) fn recovery_context(line: &[u8]) -> String {
    use sha2::Digest;
    format!(
        "bytes={},sha256={}",
        line.len(),
        hex::encode(Sha256::digest(line))
    )
}

#[allow(clippy::too_many_arguments)] // one argument per field of the fixed layout
fn push_fields(
    buf: &mut Vec<u8>,
    time_unix_ms: u64,
    actor: &str,
    operation: &str,
    key: Option<&str>,
    key_version: Option<&str>,
    context: Option<ContextText<'_>>,
    outcome: &str,
    error: Option<&str>,
) {
    let mut digits = itoa::Buffer::new();
    buf.extend_from_slice(b"\"time_unix_ms\":");
    buf.extend_from_slice(digits.format(time_unix_ms).as_bytes());
    buf.extend_from_slice(b",\"actor\":");
    push_string(buf, actor);
    buf.extend_from_slice(b",\"operation\":");
    push_string(buf, operation);
    buf.extend_from_slice(b",\"key\":");
    push_optional(buf, key);
    buf.extend_from_slice(b",\"key_version\":");
    push_optional(buf, key_version);
    buf.extend_from_slice(b",\"context\":");
    match context {
        None => buf.extend_from_slice(b"null"),
        Some(ContextText::Text(text)) => push_string(buf, text),
        Some(ContextText::Context(context)) => {
            // The context's text form (`k=v,k=v`), escaped piece by piece: the same bytes as
            // escaping the joined text.
            buf.push(b'"');
            for (i, (k, v)) in context.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                push_escaped(buf, k);
                buf.push(b'=');
                push_escaped(buf, v);
            }
            buf.push(b'"');
        }
    }
    buf.extend_from_slice(b",\"outcome\":");
    push_string(buf, outcome);
    buf.extend_from_slice(b",\"error\":");
    push_optional(buf, error);
}

/// Appends the record header a writer puts before an event's fields.
pub(super) fn push_header(out: &mut Vec<u8>, seq: u64, pid: u32) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(digits.format(seq).as_bytes());
    out.extend_from_slice(b",\"pid\":");
    out.extend_from_slice(digits.format(pid).as_bytes());
    out.push(b',');
}

/// MACs `out[start..]` (a header and an event's fields) chained to `prev`, appends the MAC field
/// and the line feed, and returns the MAC.
pub(super) fn seal_line(
    out: &mut Vec<u8>,
    start: usize,
    prev: &RecordMac,
    keyed: &HmacSha256,
) -> RecordMac {
    let mac = line_mac(keyed, prev, &out[start..]);
    out.extend_from_slice(MAC_FIELD);
    let mut hex_mac = [0u8; 64];
    hex::encode_to_slice(mac, &mut hex_mac).expect("64 hex digits for 32 bytes");
    out.extend_from_slice(&hex_mac);
    out.extend_from_slice(b"\"}\n");
    mac
}

fn line_mac(keyed: &HmacSha256, prev: &RecordMac, body: &[u8]) -> RecordMac {
    let mut mac = keyed.clone();
    mac.update(prev);
    mac.update(body);
    mac.finalize().into_bytes().into()
}

fn push_optional(buf: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(v) => push_string(buf, v),
        None => buf.extend_from_slice(b"null"),
    }
}

fn push_string(buf: &mut Vec<u8>, value: &str) {
    buf.push(b'"');
    push_escaped(buf, value);
    buf.push(b'"');
}

/// JSON string escaping: `"`, `\` and control characters; everything else as is.
fn push_escaped(buf: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            buf.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            buf.extend_from_slice(short);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}

/// A parsed record. Unknown fields are refused.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct Record {
    pub(super) seq: u64,
    pub(super) pid: u32,
    pub(super) time_unix_ms: u64,
    pub(super) actor: String,
    pub(super) operation: String,
    pub(super) key: Option<String>,
    pub(super) key_version: Option<String>,
    pub(super) context: Option<String>,
    pub(super) outcome: String,
    pub(super) error: Option<String>,
    pub(super) mac: String,
}

/// Why a line is not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineFault {
    /// Not a record of this format.
    NotARecord,
    /// A record whose bytes are not the ones the writer produces (spacing, escapes, order).
    NotCanonical,
    /// The MAC does not match (edited, moved, or another audit key).
    BadMac,
}

impl Record {
    /// Parses `line` (without its line feed), checks that its bytes are canonical and that its
    /// MAC chains to `prev`. Returns the record and its MAC.
    pub(super) fn check(
        line: &[u8],
        prev: &RecordMac,
        keyed: &HmacSha256,
    ) -> Result<(Self, RecordMac), LineFault> {
        let record = Self::parse(line)?;
        let mac = record.claimed_mac().ok_or(LineFault::NotARecord)?;
        if record.canonical_bytes() != line {
            return Err(LineFault::NotCanonical);
        }
        let body = &line[..line.len() - MAC_SUFFIX_LEN];
        let mut check = keyed.clone();
        check.update(prev);
        check.update(body);
        check.verify_slice(&mac).map_err(|_| LineFault::BadMac)?;
        Ok((record, mac))
    }

    /// Parses a line without checking its MAC.
    pub(super) fn parse(line: &[u8]) -> Result<Self, LineFault> {
        if line.len() < MAC_SUFFIX_LEN {
            return Err(LineFault::NotARecord);
        }
        let record: Self = serde_json::from_slice(line).map_err(|_| LineFault::NotARecord)?;
        if !known_operation(&record.operation) {
            return Err(LineFault::NotARecord);
        }
        Ok(record)
    }

    /// The MAC the record carries, if it is 64 lowercase hex digits.
    pub(super) fn claimed_mac(&self) -> Option<RecordMac> {
        if self.mac.len() != 64 || self.mac.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut mac = [0u8; 32];
        hex::decode_to_slice(&self.mac, &mut mac).ok()?;
        Some(mac)
    }

    /// The line the writer produces for this record (without the line feed).
    pub(super) fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        push_header(&mut out, self.seq, self.pid);
        push_fields(
            &mut out,
            self.time_unix_ms,
            &self.actor,
            &self.operation,
            self.key.as_deref(),
            self.key_version.as_deref(),
            self.context.as_deref().map(ContextText::Text),
            &self.outcome,
            self.error.as_deref(),
        );
        out.extend_from_slice(MAC_FIELD);
        out.extend_from_slice(self.mac.as_bytes());
        out.extend_from_slice(b"\"}");
        out
    }
}

fn known_operation(name: &str) -> bool {
    name == RECOVERY_OPERATION || Operation::ALL.iter().any(|op| op.as_str() == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::KeyInit;

    fn keyed() -> HmacSha256 {
        <HmacSha256 as KeyInit>::new_from_slice(&[7; 32]).unwrap()
    }

    fn line_for(event: &AuditEvent<'_>, prev: &RecordMac) -> (Vec<u8>, RecordMac) {
        let mut fields = Vec::new();
        push_event(&mut fields, event, 1_700_000_000_123);
        let mut out = Vec::new();
        push_header(&mut out, 3, 42);
        out.extend_from_slice(&fields[..fields.len() - 1]);
        let mac = seal_line(&mut out, 0, prev, &keyed());
        out.pop();
        (out, mac)
    }

    #[test]
    fn written_records_parse_and_verify_with_every_kind_of_character() {
        let context =
            EncryptionContext::from_pairs([("t", "a\"b\\c\nd\u{1}é\u{7f}"), ("id", "1")]).unwrap();
        let mut event = AuditEvent::new("svc \"x\"\t", Operation::Open);
        event.key = Some("local://k");
        event.key_version = Some("2");
        event.context = Some(&context);
        event.error = Some(crate::ErrorKind::InvalidInput);
        let prev = [9; 32];
        let (line, mac) = line_for(&event, &prev);
        let (record, checked) = Record::check(&line, &prev, &keyed()).unwrap();
        assert_eq!(checked, mac);
        assert_eq!(
            record.context.as_deref(),
            Some(context.to_string().as_str())
        );
        assert_eq!(record.actor, "svc \"x\"\t");
        assert_eq!(record.error.as_deref(), Some("invalid_input"));
        // serde_json reads what the formatter writes.
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["seq"], 3);
        assert_eq!(value["pid"], 42);
    }

    #[test]
    fn equivalent_json_with_other_bytes_is_refused() {
        let event = AuditEvent::new("svc", Operation::Seal);
        let (line, _) = line_for(&event, &GENESIS);
        let text = String::from_utf8(line).unwrap();
        for variant in [
            text.replacen("\"actor\":\"svc\"", "\"actor\":\"\\u0073vc\"", 1),
            text.replacen("\"actor\":", "\"actor\": ", 1),
            text.replacen("{\"seq\"", "{\"extra\":1,\"seq\"", 1),
        ] {
            let fault = Record::check(variant.as_bytes(), &GENESIS, &keyed()).unwrap_err();
            assert!(
                matches!(fault, LineFault::NotCanonical | LineFault::NotARecord),
                "{variant}: {fault:?}"
            );
        }
        assert_eq!(
            Record::check(text.as_bytes(), &[1; 32], &keyed()).unwrap_err(),
            LineFault::BadMac
        );
    }
}
