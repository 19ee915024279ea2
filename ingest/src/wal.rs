//! Write-ahead log: requests are answered only after their spans are fsynced here.
//!
//! One writer thread owns the active segment. Appends from concurrent requests queue on a
//! channel; the thread writes everything queued, fsyncs once, and answers all of them (group
//! commit), so a fsync is shared by every request that arrived while the previous one ran.
//! A segment is sealed when it reaches the flush size or its first record reaches the flush
//! age; sealed segments go to the flusher, which deletes them once their Parquet files are in
//! the store. At start, segments left on disk are checked record by record (a torn tail from
//! a crash is cut off) and handed to the flusher again.
//!
//! Segment file `<seq:020>.wal`: header `T2EWAL01` + u64 LE creation time (Unix ms), then
//! records `u32 LE length | u32 LE crc32 | u8 tenant length | tenant | payload`, where length
//! and crc cover the bytes after the crc, and payload is a protobuf ExportTraceServiceRequest.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc as tmpsc, oneshot};

use crate::error::IngestError;
use crate::metrics::Metrics;

const MAGIC: &[u8; 8] = b"T2EWAL01";
const HEADER_LEN: u64 = 16;
const RECORD_HEADER_LEN: usize = 8;
/// Largest record accepted when reading a segment back; larger lengths mean corruption.
const MAX_RECORD_LEN: usize = 1 << 31;
/// Most data written per group commit, so one fsync does not wait on an unbounded batch.
const MAX_GROUP_BYTES: usize = 64 << 20;
/// Group buffer kept between group commits; a larger one (a burst's) is freed after its group.
const KEPT_BUFFER_BYTES: usize = 8 << 20;
const WRITER_ID_FILE: &str = "writer-id";
const LOCK_FILE: &str = "LOCK";

/// A sealed segment, ready to flush.
#[derive(Debug, Clone)]
pub struct Segment {
    pub path: PathBuf,
    pub seq: u64,
    pub created_ms: u64,
    /// File size, counted in the backlog until the segment is retired.
    pub bytes: u64,
}

pub struct WalConfig {
    pub dir: PathBuf,
    pub segment_max_bytes: u64,
    pub segment_max_age: Duration,
    pub max_backlog: u64,
    pub retry_after: Duration,
}

enum Command {
    Append {
        /// The record up to its payload (length, crc, tenant), computed on the caller's thread.
        head: Vec<u8>,
        payload: bytes::Bytes,
        reply: oneshot::Sender<std::io::Result<()>>,
    },
    /// Seal and stop the writer thread; the sealed channel closes when it exits.
    Close {
        reply: oneshot::Sender<std::io::Result<()>>,
    },
}

/// Handle to the WAL, shared by the receivers.
#[derive(Clone)]
pub struct Wal {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

struct Shared {
    backlog: AtomicU64,
    failed: AtomicBool,
    max_backlog: u64,
    retry_after: Duration,
}

/// What [`open`] hands to the rest of the service.
pub struct Opened {
    pub wal: Wal,
    /// Sealed segments: those found at start first, then each one the writer seals.
    pub sealed: tmpsc::UnboundedReceiver<Segment>,
    /// 128-bit id of this WAL directory, part of every file name it produces.
    pub writer_id: u128,
    pub writer: std::thread::JoinHandle<()>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn io(context: &str, path: &Path) -> impl FnOnce(std::io::Error) -> IngestError {
    let context = format!("{context} {}", path.display());
    move |e| IngestError::io(context, e)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

/// The head of a WAL record (length, crc, tenant), which `payload` completes.
fn record_head(tenant: &str, payload: &[u8]) -> Vec<u8> {
    let tenant = &tenant.as_bytes()[..tenant.len().min(255)];
    let len = 1 + tenant.len() + payload.len();
    let mut head = Vec::with_capacity(RECORD_HEADER_LEN + 1 + tenant.len());
    head.extend_from_slice(&(len as u32).to_le_bytes());
    head.extend_from_slice(&[0; 4]);
    head.push(tenant.len() as u8);
    head.extend_from_slice(tenant);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[RECORD_HEADER_LEN..]);
    crc.update(payload);
    head[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    head
}

/// Reads a segment's records in order. Stops at the first torn or corrupt record;
/// [`SegmentReader::valid_len`] then tells where the good data ends.
pub struct SegmentReader {
    reader: BufReader<File>,
    pub created_ms: u64,
    offset: u64,
    /// The last record read (reused: records are ~100s of KiB).
    body: Vec<u8>,
}

impl SegmentReader {
    pub fn open(path: &Path) -> Result<Self, IngestError> {
        let file = File::open(path).map_err(io("opening WAL segment", path))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut header = [0u8; HEADER_LEN as usize];
        reader
            .read_exact(&mut header)
            .map_err(io("reading header of WAL segment", path))?;
        if &header[..8] != MAGIC {
            return Err(IngestError::io(
                format!("WAL segment {}", path.display()),
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad magic"),
            ));
        }
        let created_ms = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        Ok(Self {
            reader,
            created_ms,
            offset: HEADER_LEN,
            body: Vec::new(),
        })
    }

    /// Bytes of the segment up to the end of the last good record read.
    pub fn valid_len(&self) -> u64 {
        self.offset
    }

    /// The next record as (tenant, payload), or None at the end or at a bad record. Both
    /// borrow the reader's buffer, which the next call reuses.
    pub fn next_record(&mut self) -> Option<(&str, &[u8])> {
        let mut head = [0u8; RECORD_HEADER_LEN];
        self.reader.read_exact(&mut head).ok()?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 || len > MAX_RECORD_LEN {
            return None;
        }
        self.body.resize(len, 0);
        self.reader.read_exact(&mut self.body).ok()?;
        if crc32fast::hash(&self.body) != crc {
            return None;
        }
        let tlen = self.body[0] as usize;
        if 1 + tlen > len {
            return None;
        }
        let tenant = std::str::from_utf8(&self.body[1..1 + tlen]).ok()?;
        self.offset += (RECORD_HEADER_LEN + len) as u64;
        Some((tenant, &self.body[1 + tlen..]))
    }
}

fn load_writer_id(dir: &Path) -> Result<u128, IngestError> {
    let path = dir.join(WRITER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => u128::from_str_radix(text.trim(), 16).map_err(|_| {
            IngestError::Config(format!(
                "{} does not hold a 32-digit hex id",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id: u128 = rand::random();
            let tmp = dir.join(format!("{WRITER_ID_FILE}.tmp"));
            let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
            writeln!(f, "{id:032x}").map_err(io("writing", &tmp))?;
            f.sync_all().map_err(io("syncing", &tmp))?;
            std::fs::rename(&tmp, &path).map_err(io("renaming", &tmp))?;
            sync_dir(dir).map_err(io("syncing", dir))?;
            Ok(id)
        }
        Err(e) => Err(io("reading", &path)(e)),
    }
}

/// Checks the segments left in `dir`: cuts torn tails, deletes empty segments, and returns
/// the rest in order with the next free sequence number.
fn recover(dir: &Path) -> Result<(Vec<Segment>, u64), IngestError> {
    let mut seqs: Vec<u64> = std::fs::read_dir(dir)
        .map_err(io("listing", dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".wal")?.parse().ok()
        })
        .collect();
    seqs.sort_unstable();
    let mut segments = Vec::new();
    for &seq in &seqs {
        let path = segment_path(dir, seq);
        let size = std::fs::metadata(&path).map_err(io("stat", &path))?.len();
        let (created_ms, valid, records) = if size < HEADER_LEN {
            (0, 0, 0)
        } else {
            let mut r = SegmentReader::open(&path)?;
            let mut n = 0u64;
            while r.next_record().is_some() {
                n += 1;
            }
            (r.created_ms, r.valid_len(), n)
        };
        if records == 0 {
            tracing::info!(segment = %path.display(), "removing empty wal segment");
            std::fs::remove_file(&path).map_err(io("removing", &path))?;
            continue;
        }
        if valid < size {
            tracing::warn!(
                segment = %path.display(), dropped_bytes = size - valid,
                "cutting torn tail of wal segment (a write that was never acknowledged)"
            );
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io("opening", &path))?;
            f.set_len(valid).map_err(io("truncating", &path))?;
            f.sync_all().map_err(io("syncing", &path))?;
        }
        segments.push(Segment {
            path,
            seq,
            created_ms,
            bytes: valid,
        });
    }
    if !seqs.is_empty() {
        sync_dir(dir).map_err(io("syncing", dir))?;
    }
    let next = seqs.last().map_or(1, |s| s + 1);
    Ok((segments, next))
}

/// Opens (or creates) the WAL in `cfg.dir`, recovers what a previous run left, and starts the
/// writer thread.
pub fn open(cfg: WalConfig, metrics: Arc<Metrics>) -> Result<Opened, IngestError> {
    std::fs::create_dir_all(&cfg.dir).map_err(io("creating WAL directory", &cfg.dir))?;
    let lock_path = cfg.dir.join(LOCK_FILE);
    let lock = File::create(&lock_path).map_err(io("creating", &lock_path))?;
    if lock.try_lock().is_err() {
        return Err(IngestError::Config(format!(
            "WAL directory {} is in use by another ingest process; give each replica its own --wal-dir",
            cfg.dir.display()
        )));
    }
    let writer_id = load_writer_id(&cfg.dir)?;
    let (recovered, next_seq) = recover(&cfg.dir)?;
    let backlog: u64 = recovered.iter().map(|s| s.bytes).sum();
    if !recovered.is_empty() {
        tracing::info!(segments = recovered.len(), bytes = backlog, "replaying wal");
    }
    let (sealed_tx, sealed) = tmpsc::unbounded_channel();
    for s in recovered {
        let _ = sealed_tx.send(s);
    }
    let shared = Arc::new(Shared {
        backlog: AtomicU64::new(backlog),
        failed: AtomicBool::new(false),
        max_backlog: cfg.max_backlog,
        retry_after: cfg.retry_after,
    });
    let (tx, rx) = mpsc::channel();
    let writer = Writer {
        dir: cfg.dir,
        segment_max_bytes: cfg.segment_max_bytes,
        segment_max_age: cfg.segment_max_age,
        next_seq,
        active: None,
        sealed: sealed_tx,
        shared: shared.clone(),
        metrics,
        buffer: Vec::new(),
        _lock: lock,
    };
    let writer = std::thread::Builder::new()
        .name("wal-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| IngestError::io("starting the WAL writer thread", e))?;
    Ok(Opened {
        wal: Wal { tx, shared },
        sealed,
        writer_id,
        writer,
    })
}

impl Wal {
    /// Refuses with a retryable error when the unflushed backlog is over its limit.
    pub fn check_backlog(&self) -> Result<(), IngestError> {
        let backlog = self.shared.backlog.load(Ordering::Relaxed);
        if backlog > self.shared.max_backlog {
            return Err(IngestError::Backpressure {
                backlog,
                limit: self.shared.max_backlog,
                retry_after: self.shared.retry_after,
            });
        }
        Ok(())
    }

    /// Appends one record and returns once it is fsynced.
    pub async fn append(&self, tenant: &str, payload: bytes::Bytes) -> Result<(), IngestError> {
        self.check_backlog()?;
        let (reply, done) = oneshot::channel();
        let head = record_head(tenant, &payload);
        self.tx
            .send(Command::Append {
                head,
                payload,
                reply,
            })
            .map_err(|_| self.closed())?;
        done.await
            .map_err(|_| self.closed())?
            .map_err(IngestError::Wal)
    }

    /// Seals the active segment and stops the writer; later appends fail as shutting down.
    pub async fn close(&self) -> Result<(), IngestError> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send(Command::Close { reply })
            .map_err(|_| self.closed())?;
        done.await
            .map_err(|_| self.closed())?
            .map_err(IngestError::Wal)
    }

    /// Bytes written to the WAL and not yet flushed into the store.
    pub fn backlog(&self) -> u64 {
        self.shared.backlog.load(Ordering::Relaxed)
    }

    /// Called by the flusher once a segment's files are in the store and it is deleted.
    pub fn retired(&self, bytes: u64) {
        self.shared.backlog.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// False after a write to the WAL failed and could not be undone.
    pub fn healthy(&self) -> bool {
        !self.shared.failed.load(Ordering::Relaxed)
    }

    fn closed(&self) -> IngestError {
        IngestError::ShuttingDown {
            retry_after: self.shared.retry_after,
        }
    }
}

struct Active {
    file: File,
    path: PathBuf,
    seq: u64,
    created_ms: u64,
    opened: Instant,
    len: u64,
}

struct Writer {
    dir: PathBuf,
    segment_max_bytes: u64,
    segment_max_age: Duration,
    next_seq: u64,
    active: Option<Active>,
    sealed: tmpsc::UnboundedSender<Segment>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    /// The group being written, kept between groups so that each does not grow a fresh one.
    buffer: Vec<u8>,
    _lock: File,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        loop {
            let timeout = self.active.as_ref().map_or(Duration::from_secs(3600), |a| {
                self.segment_max_age.saturating_sub(a.opened.elapsed())
            });
            let first = match rx.recv_timeout(timeout) {
                Ok(cmd) => cmd,
                Err(RecvTimeoutError::Timeout) => {
                    self.seal_logged();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.seal_logged();
                    return;
                }
            };
            let mut buf = std::mem::take(&mut self.buffer);
            let mut appends = Vec::new();
            let mut close = None;
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append {
                        head,
                        payload,
                        reply,
                    } => {
                        buf.extend_from_slice(&head);
                        buf.extend_from_slice(&payload);
                        appends.push(reply);
                    }
                    Command::Close { reply } => close = Some(reply),
                }
                if buf.len() < MAX_GROUP_BYTES && close.is_none() {
                    next = rx.try_recv().ok();
                }
            }
            if !buf.is_empty() {
                let result = self.write_group(&buf);
                for reply in appends {
                    let _ = reply.send(match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                    });
                }
            }
            buf.clear();
            // A burst's buffer is given back rather than held for the life of the process.
            if buf.capacity() <= KEPT_BUFFER_BYTES {
                self.buffer = buf;
            }
            if let Some(reply) = close {
                let _ = reply.send(self.seal());
                return;
            }
            let full = self.active.as_ref().is_some_and(|a| {
                a.len >= self.segment_max_bytes || a.opened.elapsed() >= self.segment_max_age
            });
            if full {
                self.seal_logged();
            }
        }
    }

    fn open_segment(&mut self) -> std::io::Result<&mut Active> {
        if self.active.is_none() {
            let seq = self.next_seq;
            // Used even if the open fails: a retry must not meet this file (create_new would
            // refuse it, and every append after one failed open would fail too).
            self.next_seq += 1;
            let path = segment_path(&self.dir, seq);
            let created_ms = now_ms();
            let mut file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            let mut header = Vec::with_capacity(HEADER_LEN as usize);
            header.extend_from_slice(MAGIC);
            header.extend_from_slice(&created_ms.to_le_bytes());
            let written = file
                .write_all(&header)
                .and_then(|()| file.sync_all())
                .and_then(|()| sync_dir(&self.dir));
            if let Err(e) = written {
                // A segment without its header holds nothing; a start would remove it too.
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            self.shared.backlog.fetch_add(HEADER_LEN, Ordering::Relaxed);
            self.active = Some(Active {
                file,
                path,
                seq,
                created_ms,
                opened: Instant::now(),
                len: HEADER_LEN,
            });
        }
        self.active
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no active segment"))
    }

    /// Writes and fsyncs one group; on failure the segment is cut back to where it was, so a
    /// refused request leaves nothing behind.
    fn write_group(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let started = Instant::now();
        let active = self.open_segment()?;
        let before = active.len;
        let result = active
            .file
            .write_all(buf)
            .and_then(|()| active.file.sync_data());
        match result {
            Ok(()) => {
                active.len += buf.len() as u64;
                self.shared
                    .backlog
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                self.metrics.wal_fsyncs.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .wal_bytes
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                self.metrics.wal_sync_seconds.observe(started.elapsed());
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, segment = %active.path.display(), "wal write failed");
                let undo = active
                    .file
                    .set_len(before)
                    .and_then(|()| active.file.seek(SeekFrom::End(0)).map(|_| ()))
                    .and_then(|()| active.file.sync_all());
                if let Err(undo) = undo {
                    tracing::error!(error = %undo, "could not undo a failed wal write; refusing further writes");
                    self.shared.failed.store(true, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }

    /// Hands the active segment to the flusher; the next append opens a new one.
    fn seal(&mut self) -> std::io::Result<()> {
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("wal is in a failed state"));
        }
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        active.file.sync_all()?;
        let segment = Segment {
            path: active.path,
            seq: active.seq,
            created_ms: active.created_ms,
            bytes: active.len,
        };
        tracing::debug!(
            seq = segment.seq,
            bytes = segment.bytes,
            "sealed wal segment"
        );
        // The flusher outlives the writer; if it is gone the segment stays for the next start.
        let _ = self.sealed.send(segment);
        Ok(())
    }

    fn seal_logged(&mut self) {
        if let Err(e) = self.seal() {
            tracing::error!(error = %e, "sealing wal segment failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One whole WAL record, as the writer lays it down.
    fn encode_record(tenant: &str, payload: &[u8]) -> Vec<u8> {
        let mut rec = record_head(tenant, payload);
        rec.extend_from_slice(payload);
        rec
    }

    /// A WAL in `dir` that seals only when closed.
    fn test_config(dir: &Path) -> WalConfig {
        WalConfig {
            dir: dir.to_path_buf(),
            segment_max_bytes: 1 << 30,
            segment_max_age: Duration::from_secs(3600),
            max_backlog: 1 << 30,
            retry_after: Duration::from_secs(1),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("wal-{name}-{}-{}", std::process::id(), now_ms()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn torn_tail_is_cut_and_good_records_kept() -> Result<(), IngestError> {
        let dir = temp_dir("torn");
        std::fs::create_dir_all(&dir).map_err(|e| IngestError::io("mkdir", e))?;
        let path = segment_path(&dir, 7);
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&42u64.to_le_bytes());
        bytes.extend(encode_record("default", b"first"));
        bytes.extend(encode_record("acme", b"second"));
        let good = bytes.len() as u64;
        let third = encode_record("default", b"third, never acknowledged");
        bytes.extend_from_slice(&third[..third.len() - 3]);
        std::fs::write(&path, &bytes).map_err(|e| IngestError::io("write", e))?;
        std::fs::write(segment_path(&dir, 8), b"").map_err(|e| IngestError::io("write", e))?;

        let (segments, next) = recover(&dir)?;
        assert_eq!(next, 9);
        assert_eq!(segments.len(), 1, "the empty segment 8 is removed");
        assert_eq!(segments[0].bytes, good);
        assert_eq!(segments[0].created_ms, 42);
        assert!(!segment_path(&dir, 8).exists());
        let mut r = SegmentReader::open(&path)?;
        assert_eq!(r.next_record(), Some(("default", &b"first"[..])));
        assert_eq!(r.next_record(), Some(("acme", &b"second"[..])));
        assert_eq!(r.next_record(), None);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// Records appended one at a time (each its own group commit) and in a burst (groups
    /// shared between requests) read back whole, each with its tenant.
    #[tokio::test]
    async fn records_alone_and_in_groups_read_back_whole() -> Result<(), IngestError> {
        let dir = temp_dir("groups");
        let opened = open(test_config(&dir), Arc::new(Metrics::default()))?;
        let mut sealed = opened.sealed;
        let payloads: Vec<Vec<u8>> = [1usize, 4071, 4096, 10_000, 3, 9 << 20]
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        let mut expected = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            let tenant = format!("t{i}");
            opened.wal.append(&tenant, p.clone().into()).await?;
            expected.push((tenant, p.clone()));
        }
        let burst = payloads.iter().enumerate().map(|(i, p)| {
            let wal = opened.wal.clone();
            async move {
                let tenant = format!("b{i}");
                wal.append(&tenant, p.clone().into())
                    .await
                    .map(|()| (tenant, p.clone()))
            }
        });
        for r in futures::future::join_all(burst).await {
            expected.push(r?);
        }
        opened.wal.close().await?;
        let segment = sealed
            .recv()
            .await
            .ok_or_else(|| IngestError::Config("no segment sealed".into()))?;
        let mut r = SegmentReader::open(&segment.path)?;
        let mut got = Vec::new();
        while let Some((tenant, payload)) = r.next_record() {
            got.push((tenant.to_string(), payload.to_vec()));
        }
        got.sort();
        expected.sort();
        assert_eq!(got, expected);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// A segment that cannot be opened fails the appends of that moment only: the next
    /// append opens the next segment instead of meeting the same file again.
    #[tokio::test]
    async fn a_failed_segment_open_does_not_wedge_the_wal() -> Result<(), IngestError> {
        let dir = temp_dir("wedge");
        let opened = open(test_config(&dir), Arc::new(Metrics::default()))?;
        let mut sealed = opened.sealed;
        // A stray file where the first segment would go makes its open fail.
        std::fs::write(segment_path(&dir, 1), b"stray").map_err(|e| IngestError::io("write", e))?;
        let first = opened
            .wal
            .append("default", b"refused".to_vec().into())
            .await;
        assert!(first.is_err(), "the open of segment 1 fails");
        opened
            .wal
            .append("default", b"kept".to_vec().into())
            .await?;
        opened.wal.close().await?;
        let segment = sealed
            .recv()
            .await
            .ok_or_else(|| IngestError::Config("no segment sealed".into()))?;
        assert_eq!(segment.seq, 2);
        let mut r = SegmentReader::open(&segment.path)?;
        assert_eq!(r.next_record(), Some(("default", &b"kept"[..])));
        assert_eq!(r.next_record(), None);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn corrupt_record_ends_the_segment() -> Result<(), IngestError> {
        let dir = temp_dir("crc");
        std::fs::create_dir_all(&dir).map_err(|e| IngestError::io("mkdir", e))?;
        let path = segment_path(&dir, 1);
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend(encode_record("default", b"ok"));
        let mut bad = encode_record("default", b"flipped");
        let last = bad.len() - 1;
        bad[last] ^= 0xFF;
        bytes.extend(bad);
        std::fs::write(&path, &bytes).map_err(|e| IngestError::io("write", e))?;
        let (segments, _) = recover(&dir)?;
        assert_eq!(
            segments[0].bytes,
            HEADER_LEN + encode_record("default", b"ok").len() as u64
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
