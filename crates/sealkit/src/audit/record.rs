//! The exact bytes of an audit record, and their MAC.
//!
//! A record is one line holding the events one writer appended at once:
//! `{"seq":…,"pid":…,"events":[{"ms":…,"actor":…,"op":…,"key":…,"ver":…,"ctx":…,"ok":…,
//! "err":…},…],"mac":"<32 hex>"}`, with an event's `key`, `ver`, `ctx` and `err` left out when
//! there is none. Its `mac` is the first 16 bytes of HMAC-SHA256 under the audit key over the
//! previous record's `mac` (16 zero bytes for the first) followed by the line's bytes up to
//! `,"mac":"`.
//! The formatter here is the only one: the verifier re-formats every parsed record and requires
//! the very same bytes, so escapes, spaces or fields that the writer would not produce are
//! refused even where the MAC holds. Records are short on purpose: every byte is hashed and
//! written once per sealed or opened value.

use hmac::Mac;
use serde::Deserialize;
use sha2::Sha256;

use super::{AuditEvent, Operation};

/// HMAC-SHA256, keyed once and cloned per record.
pub(super) type HmacSha256 = hmac::Hmac<Sha256>;

/// A record's MAC: HMAC-SHA256 truncated to 128 bits, which is also the chain value.
pub(super) type RecordMac = [u8; 16];

/// The chain value before the first record.
pub(super) const GENESIS: RecordMac = [0; 16];

/// Hex digits of a MAC.
pub(super) const MAC_HEX_LEN: usize = 32;

/// What separates a record's MACed bytes from its MAC.
const MAC_FIELD: &[u8] = b",\"mac\":\"";

/// Bytes after the MACed part: `,"mac":"` + the hex MAC + `"}`.
const MAC_SUFFIX_LEN: usize = MAC_FIELD.len() + MAC_HEX_LEN + 2;

/// The operation of the record a writer adds after finding a cut-short or foreign line at the
/// end of the log; its context names that line's length and SHA-256.
pub(super) const RECOVERY_OPERATION: &str = "recover_partial_line";

/// The rendered `"actor"`, `"op"`, `"key"` and `"ver"` fields of recent events: a keyring
/// repeats them from one operation to the next, so the caller copies them in one piece.
#[derive(Default)]
pub(super) struct IdentityMemo {
    entries: Vec<Identity>,
    next: usize,
}

struct Identity {
    actor: String,
    operation: Operation,
    key: Option<String>,
    key_version: Option<String>,
    rendered: Vec<u8>,
}

impl IdentityMemo {
    const ENTRIES: usize = 8;

    fn rendered(&mut self, event: &AuditEvent<'_>) -> &[u8] {
        let found = self.entries.iter().position(|e| {
            e.operation == event.operation
                && e.actor == event.actor
                && e.key.as_deref() == event.key
                && e.key_version.as_deref() == event.key_version
        });
        let index = match found {
            Some(index) => index,
            None => {
                let mut rendered = Vec::new();
                push_identity(
                    &mut rendered,
                    event.actor,
                    event.operation.as_str(),
                    event.key,
                    event.key_version,
                );
                let identity = Identity {
                    actor: event.actor.to_string(),
                    operation: event.operation,
                    key: event.key.map(str::to_string),
                    key_version: event.key_version.map(str::to_string),
                    rendered,
                };
                if self.entries.len() < Self::ENTRIES {
                    self.entries.push(identity);
                    self.entries.len() - 1
                } else {
                    let index = self.next;
                    self.next = (self.next + 1) % Self::ENTRIES;
                    self.entries[index] = identity;
                    index
                }
            }
        };
        &self.entries[index].rendered
    }
}

/// Where a queued event lies in a writer's queue.
#[derive(Clone, Copy, Debug)]
pub(super) struct QueuedEvent {
    /// The event's first byte.
    start: usize,
    /// The raw canonical context bytes, rendered as `,"ctx":"…"` by the writer.
    context: Option<(usize, usize)>,
    /// One past the event's last byte (its closing brace).
    end: usize,
}

impl QueuedEvent {
    /// Bytes the event takes in the queue.
    pub(super) fn len(&self) -> usize {
        self.end - self.start
    }
}

/// Queues an event: its object (`{"ms":…,"ok":…}`) with the context left as the context's raw
/// canonical bytes, which [`expand_event`] renders on the writer's thread. Runs on the caller's
/// thread: a handful of copies, no allocation once the queue has grown.
pub(super) fn push_event(
    buf: &mut Vec<u8>,
    memo: &mut IdentityMemo,
    event: &AuditEvent<'_>,
    time_unix_ms: u64,
) -> QueuedEvent {
    let start = buf.len();
    buf.push(b'{');
    push_time(buf, time_unix_ms);
    buf.extend_from_slice(memo.rendered(event));
    let context = event.context.map(|context| {
        let raw = context.canonical_bytes();
        buf.extend_from_slice(raw);
        (buf.len() - raw.len(), buf.len())
    });
    push_outcome(buf, event.error.map(|kind| kind.as_str()));
    buf.push(b'}');
    QueuedEvent {
        start,
        context,
        end: buf.len(),
    }
}

/// Appends a queued event to `out` as it is written in a record.
pub(super) fn expand_event(out: &mut Vec<u8>, queue: &[u8], event: &QueuedEvent) {
    match event.context {
        None => out.extend_from_slice(&queue[event.start..event.end]),
        Some((from, to)) => {
            out.extend_from_slice(&queue[event.start..from]);
            push_canonical_context(out, &queue[from..to]);
            out.extend_from_slice(&queue[to..event.end]);
        }
    }
}

/// Renders a context's canonical encoding (a big-endian u16 count, then per pair a u8 key
/// length, the key, a big-endian u16 value length and the value) as `,"ctx":"k=v,…"`: the same
/// bytes as the context's text form escaped.
fn push_canonical_context(out: &mut Vec<u8>, mut raw: &[u8]) {
    fn take<'a>(raw: &mut &'a [u8], n: usize) -> &'a [u8] {
        let n = n.min(raw.len());
        let (head, rest) = raw.split_at(n);
        *raw = rest;
        head
    }
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    out.extend_from_slice(b",\"ctx\":\"");
    let count = u16::from_be_bytes(take(&mut raw, 2).try_into().unwrap_or([0, 0]));
    for i in 0..count {
        if i > 0 {
            out.push(b',');
        }
        let key_len = take(&mut raw, 1).first().copied().unwrap_or(0);
        let key = take(&mut raw, usize::from(key_len));
        push_escaped_bytes(out, key, &text);
        out.push(b'=');
        let value_len = u16::from_be_bytes(take(&mut raw, 2).try_into().unwrap_or([0, 0]));
        let value = take(&mut raw, usize::from(value_len));
        push_escaped_bytes(out, value, &text);
    }
    out.push(b'"');
}

/// [`push_escaped`] for bytes that an `EncryptionContext` guarantees are UTF-8.
fn push_escaped_bytes(out: &mut Vec<u8>, bytes: &[u8], text: &dyn Fn(&[u8]) -> String) {
    match std::str::from_utf8(bytes) {
        Ok(s) => push_escaped(out, s),
        Err(_) => push_escaped(out, &text(bytes)),
    }
}

/// Appends the event that documents an unrecorded line, as [`push_event`] does.
pub(super) fn push_recovery_event(buf: &mut Vec<u8>, time_unix_ms: u64, line: &[u8]) {
    let context = recovery_context(line);
    buf.push(b'{');
    push_fields(
        buf,
        time_unix_ms,
        "sealkit",
        RECOVERY_OPERATION,
        None,
        None,
        Some(&context),
        None,
    );
    buf.push(b'}');
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
    context: Option<&str>,
    error: Option<&str>,
) {
    push_time(buf, time_unix_ms);
    push_identity(buf, actor, operation, key, key_version);
    push_context(buf, context);
    push_outcome(buf, error);
}

fn push_time(buf: &mut Vec<u8>, time_unix_ms: u64) {
    buf.extend_from_slice(b"\"ms\":");
    buf.extend_from_slice(itoa::Buffer::new().format(time_unix_ms).as_bytes());
}

fn push_identity(
    buf: &mut Vec<u8>,
    actor: &str,
    operation: &str,
    key: Option<&str>,
    key_version: Option<&str>,
) {
    buf.extend_from_slice(b",\"actor\":");
    push_string(buf, actor);
    buf.extend_from_slice(b",\"op\":");
    push_string(buf, operation);
    if let Some(key) = key {
        buf.extend_from_slice(b",\"key\":");
        push_string(buf, key);
    }
    if let Some(version) = key_version {
        buf.extend_from_slice(b",\"ver\":");
        push_string(buf, version);
    }
}

fn push_context(buf: &mut Vec<u8>, context: Option<&str>) {
    if let Some(text) = context {
        buf.extend_from_slice(b",\"ctx\":");
        push_string(buf, text);
    }
}

fn push_outcome(buf: &mut Vec<u8>, error: Option<&str>) {
    match error {
        None => buf.extend_from_slice(b",\"ok\":true"),
        Some(error) => {
            buf.extend_from_slice(b",\"ok\":false,\"err\":");
            push_string(buf, error);
        }
    }
}

/// Appends the record header a writer puts before the events (`{"seq":…,"pid":…,"events":[`).
pub(super) fn push_header(out: &mut Vec<u8>, seq: u64, pid: u32) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(digits.format(seq).as_bytes());
    out.extend_from_slice(b",\"pid\":");
    out.extend_from_slice(digits.format(pid).as_bytes());
    out.extend_from_slice(b",\"events\":[");
}

/// MACs `out[start..]` (a header and the events, `]` included) chained to `prev`, appends the
/// MAC field and the line feed, and returns the MAC.
pub(super) fn seal_line(
    out: &mut Vec<u8>,
    start: usize,
    prev: &RecordMac,
    keyed: &HmacSha256,
) -> RecordMac {
    let mac = line_mac(keyed, prev, &out[start..]);
    out.extend_from_slice(MAC_FIELD);
    let mut hex_mac = [0u8; MAC_HEX_LEN];
    hex::encode_to_slice(mac, &mut hex_mac).expect("two hex digits per byte");
    out.extend_from_slice(&hex_mac);
    out.extend_from_slice(b"\"}\n");
    mac
}

fn line_mac(keyed: &HmacSha256, prev: &RecordMac, body: &[u8]) -> RecordMac {
    let mut mac = keyed.clone();
    mac.update(prev);
    mac.update(body);
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&full[..16]);
    tag
}

fn push_string(buf: &mut Vec<u8>, value: &str) {
    buf.push(b'"');
    push_escaped(buf, value);
    buf.push(b'"');
}

/// Whether `bytes` holds a control character, `"` or `\`, checked a word at a time (the classic
/// "has a zero byte" and "has a byte less than n" tests, exact as booleans).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let w = u64::from_ne_bytes(word.try_into().expect("eight bytes"));
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS != 0;
        if control
            || has_zero(w ^ (ONES * u64::from(b'"')))
            || has_zero(w ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// JSON string escaping: `"`, `\` and control characters; everything else as is.
fn push_escaped(buf: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = value.as_bytes();
    // Nearly every value needs no escape: check eight bytes at a time, then copy once.
    if !needs_escape(bytes) {
        buf.extend_from_slice(bytes);
        return;
    }
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
    pub(super) events: Vec<Event>,
    pub(super) mac: String,
}

/// One audited operation in a record.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct Event {
    #[serde(rename = "ms")]
    pub(super) time_unix_ms: u64,
    pub(super) actor: String,
    #[serde(rename = "op")]
    pub(super) operation: String,
    #[serde(default)]
    pub(super) key: Option<String>,
    #[serde(rename = "ver", default)]
    pub(super) key_version: Option<String>,
    #[serde(rename = "ctx", default)]
    pub(super) context: Option<String>,
    pub(super) ok: bool,
    #[serde(rename = "err", default)]
    pub(super) error: Option<String>,
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
        check
            .verify_truncated_left(&mac)
            .map_err(|_| LineFault::BadMac)?;
        Ok((record, mac))
    }

    /// Parses a line without checking its MAC.
    pub(super) fn parse(line: &[u8]) -> Result<Self, LineFault> {
        if line.len() < MAC_SUFFIX_LEN {
            return Err(LineFault::NotARecord);
        }
        let record: Self = serde_json::from_slice(line).map_err(|_| LineFault::NotARecord)?;
        let valid = |e: &Event| known_operation(&e.operation) && e.ok == e.error.is_none();
        if record.events.is_empty() || !record.events.iter().all(valid) {
            return Err(LineFault::NotARecord);
        }
        Ok(record)
    }

    /// The context of a recovery record (one event, [`RECOVERY_OPERATION`]).
    pub(super) fn recovery(&self) -> Option<&str> {
        match self.events.as_slice() {
            [event] if event.operation == RECOVERY_OPERATION => event.context.as_deref(),
            _ => None,
        }
    }

    /// Whether any event is a recovery.
    pub(super) fn has_recovery_event(&self) -> bool {
        self.events
            .iter()
            .any(|e| e.operation == RECOVERY_OPERATION)
    }

    /// The MAC the record carries, if it is 32 lowercase hex digits.
    pub(super) fn claimed_mac(&self) -> Option<RecordMac> {
        if self.mac.len() != MAC_HEX_LEN || self.mac.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut mac = GENESIS;
        hex::decode_to_slice(&self.mac, &mut mac).ok()?;
        Some(mac)
    }

    /// The line the writer produces for this record (without the line feed).
    pub(super) fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        push_header(&mut out, self.seq, self.pid);
        for (i, event) in self.events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'{');
            push_fields(
                &mut out,
                event.time_unix_ms,
                &event.actor,
                &event.operation,
                event.key.as_deref(),
                event.key_version.as_deref(),
                event.context.as_deref(),
                event.error.as_deref(),
            );
            out.push(b'}');
        }
        out.push(b']');
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
    use crate::EncryptionContext;
    use hmac::KeyInit;

    fn keyed() -> HmacSha256 {
        <HmacSha256 as KeyInit>::new_from_slice(&[7; 32]).unwrap()
    }

    fn line_for(event: &AuditEvent<'_>, prev: &RecordMac) -> (Vec<u8>, RecordMac) {
        let mut queue = Vec::new();
        let mut memo = IdentityMemo::default();
        let other = AuditEvent::new("b", Operation::Open);
        let queued = [
            push_event(&mut queue, &mut memo, event, 1_700_000_000_123),
            push_event(&mut queue, &mut memo, &other, 1_700_000_000_124),
            push_event(&mut queue, &mut memo, event, 1_700_000_000_125),
        ];
        let mut out = Vec::new();
        push_header(&mut out, 3, 42);
        for (i, q) in queued.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            expand_event(&mut out, &queue, q);
        }
        out.push(b']');
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
        let prev = [9; 16];
        let (line, mac) = line_for(&event, &prev);
        let (record, checked) = Record::check(&line, &prev, &keyed()).unwrap();
        assert_eq!(checked, mac);
        let first = &record.events[0];
        assert_eq!(first.context.as_deref(), Some(context.to_string().as_str()));
        assert_eq!(first.actor, "svc \"x\"\t");
        assert_eq!(first.error.as_deref(), Some("invalid_input"));
        assert_eq!(record.events[1].operation, "open");
        assert_eq!(record.events[2].actor, first.actor);
        assert_eq!(record.events[2].key, first.key);
        assert_eq!(record.events[2].actor, first.actor);
        assert_eq!(record.events[2].key, first.key);
        // serde_json reads what the formatter writes.
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["seq"], 3);
        assert_eq!(value["pid"], 42);
    }

    #[test]
    fn the_word_at_a_time_check_agrees_with_the_byte_at_a_time_one() {
        let slow = |b: &[u8]| b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        let mut samples: Vec<Vec<u8>> = Vec::new();
        for special in [
            0x00u8, 0x1f, 0x20, b'"', b'\\', 0x21, 0x7f, 0x80, 0xff, b'a',
        ] {
            for len in 0..20 {
                for at in 0..len {
                    let mut v = vec![b'x'; len];
                    v[at] = special;
                    samples.push(v);
                }
            }
        }
        samples.push("é\u{2028}ü".as_bytes().to_vec());
        for sample in samples {
            assert_eq!(needs_escape(&sample), slow(&sample), "{sample:?}");
        }
    }

    #[test]
    fn equivalent_json_with_other_bytes_is_refused() {
        let event = AuditEvent::new("svc", Operation::Seal);
        let (line, _) = line_for(&event, &GENESIS);
        let text = String::from_utf8(line).unwrap();
        for variant in [
            text.replacen("\"actor\":\"svc\"", "\"actor\":\"\\u0073vc\"", 1),
            text.replacen("\"ok\":true", "\"ok\":true,\"err\":null", 1),
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
            Record::check(text.as_bytes(), &[1; 16], &keyed()).unwrap_err(),
            LineFault::BadMac
        );
    }
}
