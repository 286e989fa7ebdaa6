//! Where an audit log's chain stands, read from its end at any record size.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::record::{GENESIS, HmacSha256, Record, RecordMac};
use crate::{Error, Result};

/// How much is read at a time, backwards from the end.
const CHUNK: u64 = 64 * 1024;

/// The end of a log.
#[derive(Debug)]
pub(super) struct Tail {
    /// The next record's sequence number.
    pub(super) next_seq: u64,
    /// The last record's MAC ([`GENESIS`] for an empty log).
    pub(super) head: RecordMac,
    /// A last line that is not a record (a write cut short by a crash, or foreign bytes); the
    /// writer documents it with a recovery record before appending.
    pub(super) unrecorded: Option<Vec<u8>>,
    /// The file does not end with a line feed.
    pub(super) missing_newline: bool,
}

/// Reads the last records of `file` (`len` bytes long) and checks the last one's MAC.
pub(super) fn read_tail(file: &File, len: u64, keyed: &HmacSha256, path: &Path) -> Result<Tail> {
    let io = |e: std::io::Error| {
        Error::unavailable("audit", format!("cannot read {}: {e}", path.display()))
    };
    // Read backwards until three complete lines are in hand (the last record, its predecessor
    // for the chain value, and one line that may not be a record) or the file starts.
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    while start > 0 && buf.iter().filter(|&&b| b == b'\n').count() < 4 {
        let from = start.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (start - from) as usize];
        file.read_exact_at(&mut chunk, from).map_err(io)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = from;
    }
    let missing_newline = buf.last().is_some_and(|&b| b != b'\n');
    let mut lines: Vec<&[u8]> = buf.split(|&b| b == b'\n').collect();
    if !missing_newline {
        lines.pop(); // the empty piece after the final line feed
    }
    if start > 0 {
        lines.remove(0); // begins mid-line
    }
    let broken = |why: &str| {
        Error::misconfigured(format!(
            "the end of audit log {} {why}: run `sealkit audit verify`, then point audit.path at a new file",
            path.display()
        ))
    };
    // The last line that parses as a record, and what follows it.
    let last_record = lines.iter().rposition(|l| Record::parse(l).is_ok());
    let after = last_record.map_or(0, |i| i + 1);
    let unrecorded = match &lines[after..] {
        [] => None,
        [line] => Some(line.to_vec()),
        _ => return Err(broken("holds several lines that are not records")),
    };
    let Some(index) = last_record else {
        if start > 0 {
            return Err(broken("holds no readable record"));
        }
        return Ok(Tail {
            next_seq: 0,
            head: GENESIS,
            unrecorded,
            missing_newline,
        });
    };
    let record = Record::parse(lines[index]).map_err(|_| broken("is unreadable"))?;
    let prev = if record.seq == 0 {
        GENESIS
    } else {
        index
            .checked_sub(1)
            .and_then(|i| Record::parse(lines[i]).ok())
            .and_then(|r| r.claimed_mac())
            .ok_or_else(|| broken("has a record whose predecessor is not a record"))?
    };
    let (_, head) = Record::check(lines[index], &prev, keyed).map_err(|_| {
        broken("has a last record that does not verify under the configured audit key (another key wrote the log, or the record was edited)")
    })?;
    Ok(Tail {
        next_seq: record.seq + 1,
        head,
        unrecorded,
        missing_newline,
    })
}
