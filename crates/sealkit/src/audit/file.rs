//! [`JsonlAuditSink`]: the MAC-chained JSON-lines file.
//!
//! A caller formats its event into a shared queue (no allocation, no MAC, no system call) and
//! returns; key operations wait until their event is written. A writer thread takes the queue
//! every `flush_interval` (sooner when it grows or a key operation waits), and under an
//! exclusive lock on the file: re-reads the chain's end if another process appended, groups the
//! events into records (up to 256 per line), numbers and MACs the records, appends them, and
//! rewrites the checkpoint. Processes that share a file thus share one chain.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::checkpoint::{self, Checkpoint};
use super::key::AuditKey;
use super::record::{self, HmacSha256, QueuedEvent, RecordMac};
use super::tail::read_tail;
use super::{AuditEvent, AuditSink};
use crate::{Error, Result};

/// Queued bytes that wake the writer before its interval ends.
const WAKE_AT: usize = 128 * 1024;
/// Queued bytes at which callers wait for the writer (memory stays bounded under overload).
const MAX_QUEUED: usize = 8 * 1024 * 1024;
/// Queue buffers in rotation (see `Writer::run`): 16 × 128 KiB, twice a core's L2 here.
const POOL_BUFFERS: usize = 16;
/// Most events in one record (line).
const RECORD_EVENTS: usize = 256;
/// A record takes no further event once this long.
const RECORD_BYTES: usize = 32 * 1024;

/// When the audit file is synced to stable storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// On [`AuditSink::flush`] (`Keyring::flush_audit`) and when the sink closes. Records are
    /// still written to the file (surviving a process crash) within the flush interval, and a
    /// key operation's record before the operation returns.
    #[default]
    OnFlush,
    /// Also after every batch holding a key operation.
    KeyOperations,
    /// After every batch.
    Always,
}

/// How a [`JsonlAuditSink`] writes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AuditFileOptions {
    /// Where checkpoints go (default: the log's path with `.checkpoint` appended). Put it where
    /// the people who can edit the log cannot, or ship it elsewhere.
    pub checkpoint: Option<PathBuf>,
    /// The longest a data operation's record waits in memory before it is written.
    pub flush_interval: Duration,
    /// When the file is synced.
    pub fsync: FsyncPolicy,
}

impl Default for AuditFileOptions {
    fn default() -> Self {
        Self {
            checkpoint: None,
            flush_interval: Duration::from_millis(100),
            fsync: FsyncPolicy::OnFlush,
        }
    }
}

/// The checkpoint path of a log when none is configured.
pub fn default_checkpoint_path(log: &Path) -> PathBuf {
    let mut path = log.as_os_str().to_owned();
    path.push(".checkpoint");
    PathBuf::from(path)
}

/// What callers and the writer thread share.
struct Queue {
    /// Events as queued by [`record::push_event`].
    events: Vec<u8>,
    /// Where each event lies in `events`.
    slots: Vec<QueuedEvent>,
    memo: record::IdentityMemo,
    batches_taken: u64,
    batches_done: u64,
    urgent: bool,
    sync: bool,
    closing: bool,
    writer_gone: bool,
    last_error: Option<String>,
}

/// Event times: the kernel's coarse monotonic clock (a few nanoseconds to read, a few
/// milliseconds of resolution) plus an offset to Unix time that the writer re-measures on every
/// pass, so that wall-clock steps show up within one flush interval.
struct EventClock {
    offset_ms: AtomicU64,
}

impl EventClock {
    fn new() -> Self {
        let clock = Self {
            offset_ms: AtomicU64::new(0),
        };
        clock.resync();
        clock
    }

    fn monotonic_ms() -> u64 {
        // Seconds in the high 32 bits, the fraction of a second in the low 32.
        let ticks = coarsetime::Instant::now_without_cache_update().as_ticks();
        (ticks >> 32) * 1000 + (((ticks & 0xFFFF_FFFF) * 1000) >> 32)
    }

    fn now_unix_ms(&self) -> u64 {
        Self::monotonic_ms().wrapping_add(self.offset_ms.load(Ordering::Relaxed))
    }

    fn resync(&self) {
        let offset = now_unix_ms().wrapping_sub(Self::monotonic_ms());
        self.offset_ms.store(offset, Ordering::Relaxed);
    }
}

struct Shared {
    clock: EventClock,
    queue: Mutex<Queue>,
    wake: Condvar,
    done: Condvar,
    fsync: FsyncPolicy,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the writer to take the queue now and waits until it has written it.
    fn write_now<'a>(&'a self, mut queue: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        queue.urgent = true;
        let ticket = queue.batches_taken + 1;
        self.wake.notify_one();
        while queue.batches_done < ticket && !queue.writer_gone {
            queue = self.done.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
        queue
    }
}

/// A JSON-lines audit file whose records are chained by HMAC-SHA256 under an [`AuditKey`].
/// Appends continue an existing chain, from this process or any other.
pub struct JsonlAuditSink {
    path: PathBuf,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for JsonlAuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlAuditSink")
            .field("path", &self.path)
            .finish()
    }
}

/// An I/O failure on the audit file or its checkpoint.
fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::unavailable("audit", format!("cannot {what} {}: {e}", path.display()))
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl JsonlAuditSink {
    /// Opens (or creates, mode 0600) the file and continues its chain. Fails when the log's last
    /// record does not verify under `key` (another key wrote it), so two keys never mix in one
    /// chain. A last line cut short by a crash is documented by a recovery record.
    pub fn open(
        path: impl Into<PathBuf>,
        key: &AuditKey,
        options: AuditFileOptions,
    ) -> Result<Self> {
        let path = path.into();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                Error::unavailable("audit", format!("cannot open {}: {e}", path.display()))
            })?;
        let mut writer = Writer {
            checkpoint: options
                .checkpoint
                .clone()
                .unwrap_or_else(|| default_checkpoint_path(&path)),
            path: path.clone(),
            file,
            keyed: key.keyed(),
            key_id: key.id(),
            pid: std::process::id(),
            next_seq: 0,
            head: record::GENESIS,
            known_end: None,
            out: Vec::new(),
            fsync: options.fsync,
            checkpointed_at: None,
            checkpoint_every: options.flush_interval,
        };
        writer.write_batch(&[], &[], false)?;
        let shared = Arc::new(Shared {
            clock: EventClock::new(),
            queue: Mutex::new(Queue {
                events: Vec::with_capacity(WAKE_AT),
                slots: Vec::with_capacity(WAKE_AT / 64),
                memo: record::IdentityMemo::default(),
                batches_taken: 0,
                batches_done: 0,
                urgent: false,
                sync: false,
                closing: false,
                writer_gone: false,
                last_error: None,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            fsync: options.fsync,
        });
        let thread_shared = Arc::clone(&shared);
        let interval = options.flush_interval.max(Duration::from_millis(1));
        let handle = std::thread::Builder::new()
            .name("sealkit-audit".into())
            .spawn(move || writer.run(&thread_shared, interval))
            .map_err(|e| {
                Error::unavailable("audit", format!("cannot start the audit writer: {e}"))
            })?;
        Ok(Self {
            path,
            shared,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AuditSink for JsonlAuditSink {
    fn record(&self, event: &AuditEvent<'_>) {
        let shared = &*self.shared;
        let time = shared.clock.now_unix_ms();
        let mut queue = shared.lock();
        while queue.events.len() >= MAX_QUEUED && !queue.writer_gone {
            queue = shared.write_now(queue);
        }
        if queue.writer_gone {
            tracing::error!(path = %self.path.display(), "audit record dropped: the audit writer has stopped");
            return;
        }
        let queue_ref = &mut *queue;
        let slot = record::push_event(&mut queue_ref.events, &mut queue_ref.memo, event, time);
        queue_ref.slots.push(slot);
        if event.operation.is_key_operation() {
            if shared.fsync == FsyncPolicy::KeyOperations {
                queue.sync = true;
            }
            drop(shared.write_now(queue));
        } else if queue.events.len() >= WAKE_AT && !queue.urgent {
            queue.urgent = true;
            shared.wake.notify_one();
        }
    }

    fn flush(&self) -> Result<()> {
        let shared = &*self.shared;
        let mut queue = shared.lock();
        queue.sync = true;
        let queue = shared.write_now(queue);
        match &queue.last_error {
            Some(e) => Err(Error::unavailable("audit", e.clone())),
            None if queue.writer_gone => Err(Error::unavailable(
                "audit",
                format!("the audit writer of {} has stopped", self.path.display()),
            )),
            None => Ok(()),
        }
    }
}

impl Drop for JsonlAuditSink {
    fn drop(&mut self) {
        {
            let mut queue = self.shared.lock();
            queue.closing = true;
            queue.sync = true;
            self.shared.wake.notify_one();
        }
        let handle = self
            .writer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// The writer thread's state: the file and where the chain stands.
struct Writer {
    path: PathBuf,
    checkpoint: PathBuf,
    file: File,
    keyed: HmacSha256,
    key_id: String,
    pid: u32,
    next_seq: u64,
    head: RecordMac,
    /// The file's length after this writer's last append; another length means another process
    /// appended (or the file changed) and the end must be read again.
    known_end: Option<u64>,
    out: Vec<u8>,
    fsync: FsyncPolicy,
    checkpointed_at: Option<Instant>,
    checkpoint_every: Duration,
}

impl Writer {
    fn run(mut self, shared: &Shared, interval: Duration) {
        // However the loop ends (a panic included), waiting callers are released.
        struct Gone<'a>(&'a Shared);
        impl Drop for Gone<'_> {
            fn drop(&mut self) {
                self.0.lock().writer_gone = true;
                self.0.done.notify_all();
            }
        }
        let _gone = Gone(shared);
        // Queue buffers rotate through a pool larger than a core's private cache, so the
        // buffer a caller fills next was last read by this thread long ago: its lines are no
        // longer held by this core, and the caller's writes do not have to take them back.
        let mut pool: std::collections::VecDeque<(Vec<u8>, Vec<QueuedEvent>)> = (0..POOL_BUFFERS)
            .map(|_| {
                (
                    Vec::with_capacity(WAKE_AT),
                    Vec::with_capacity(WAKE_AT / 64),
                )
            })
            .collect();
        loop {
            shared.clock.resync();
            let (events, slots, sync, closing, ticket) = {
                let mut queue = shared.lock();
                let deadline = Instant::now() + interval;
                while !queue.urgent && !queue.closing {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    queue = shared
                        .wake
                        .wait_timeout(queue, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                if queue.slots.is_empty() && !queue.urgent && !queue.closing {
                    continue;
                }
                let (fresh_events, fresh_slots) = pool.pop_front().unwrap_or_default();
                let events = std::mem::replace(&mut queue.events, fresh_events);
                let slots = std::mem::replace(&mut queue.slots, fresh_slots);
                queue.batches_taken += 1;
                queue.urgent = false;
                let sync = std::mem::take(&mut queue.sync) || self.fsync == FsyncPolicy::Always;
                (events, slots, sync, queue.closing, queue.batches_taken)
            };
            let written = self.write_batch(&events, &slots, sync);
            if let Err(e) = &written {
                tracing::error!(path = %self.path.display(), error = %e, "audit records could not be written");
            }
            let (mut events, mut slots) = (events, slots);
            events.clear();
            slots.clear();
            pool.push_back((events, slots));
            let mut queue = shared.lock();
            queue.batches_done = ticket;
            queue.last_error = written.err().map(|e| e.to_string());
            let finished = closing && queue.slots.is_empty();
            if finished {
                queue.writer_gone = true;
            }
            shared.done.notify_all();
            if finished {
                return;
            }
        }
    }

    /// Appends the queued events as records, under the file lock, then the checkpoint.
    fn write_batch(&mut self, events: &[u8], slots: &[QueuedEvent], sync: bool) -> Result<()> {
        self.file.lock().map_err(|e| io("lock", &self.path, e))?;
        let written = self.append_locked(events, slots, sync);
        let _ = self.file.unlock();
        if written.is_err() {
            self.known_end = None; // re-read the end before the next append
        }
        written
    }

    fn append_locked(&mut self, events: &[u8], slots: &[QueuedEvent], sync: bool) -> Result<()> {
        let len = self
            .file
            .metadata()
            .map_err(|e| io("read", &self.path, e))?
            .len();
        self.out.clear();
        if self.known_end != Some(len) {
            self.resync(len)?;
        }
        // Records of up to RECORD_EVENTS events or RECORD_BYTES bytes.
        for group in slots.chunks(RECORD_EVENTS) {
            let mut record = self.open_record();
            for (i, slot) in group.iter().enumerate() {
                if i > 0 {
                    if record.bytes >= RECORD_BYTES {
                        record.close(self);
                        record = self.open_record();
                    } else {
                        self.out.push(b',');
                    }
                }
                record.bytes += slot.len();
                record::expand_event(&mut self.out, events, slot);
            }
            record.close(self);
        }
        if !self.out.is_empty() {
            self.file
                .write_all(&self.out)
                .map_err(|e| io("append to", &self.path, e))?;
        }
        self.known_end = Some(len + self.out.len() as u64);
        if sync {
            self.file
                .sync_data()
                .map_err(|e| io("sync", &self.path, e))?;
        }
        // The checkpoint is rewritten at most once per flush interval (and at every sync), so
        // that a busy writer does not pay a file replacement per batch.
        let due = self
            .checkpointed_at
            .is_none_or(|at| at.elapsed() >= self.checkpoint_every);
        if sync || (!self.out.is_empty() && due) {
            self.checkpointed_at = Some(Instant::now());
            let checkpoint = Checkpoint {
                records: self.next_seq,
                head: self.head,
                time_unix_ms: now_unix_ms(),
            };
            checkpoint::write(
                &self.checkpoint,
                &self.keyed,
                &self.key_id,
                &checkpoint,
                sync,
            )
            .map_err(|e| io("write checkpoint", &self.checkpoint, e))?;
        }
        Ok(())
    }

    /// Reads where the chain stands; documents a last line that is not a record.
    fn resync(&mut self, len: u64) -> Result<()> {
        let tail = read_tail(&self.file, len, &self.keyed, &self.path)?;
        self.next_seq = tail.next_seq;
        self.head = tail.head;
        if tail.missing_newline {
            self.out.push(b'\n');
        }
        if let Some(line) = tail.unrecorded {
            tracing::warn!(path = %self.path.display(), bytes = line.len(), "the audit log ends with a line that is not a record (a write cut short?); a recovery record documents it");
            let open = self.open_record();
            record::push_recovery_event(&mut self.out, now_unix_ms(), &line);
            open.close(self);
        }
        Ok(())
    }

    /// Starts the next record in `out`; its events follow, separated by commas.
    fn open_record(&mut self) -> OpenRecord {
        let start = self.out.len();
        record::push_header(&mut self.out, self.next_seq, self.pid);
        OpenRecord { start, bytes: 0 }
    }
}

/// A record being assembled at the end of a writer's output.
struct OpenRecord {
    start: usize,
    /// Queued bytes of its events so far.
    bytes: usize,
}

impl OpenRecord {
    /// Ends the event list, MACs the record into the chain and ends the line.
    fn close(self, writer: &mut Writer) {
        writer.out.push(b']');
        writer.head = record::seal_line(&mut writer.out, self.start, &writer.head, &writer.keyed);
        writer.next_seq += 1;
    }
}
