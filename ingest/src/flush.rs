//! Flusher: sealed WAL segments become Parquet files, one per partition, in the store; then
//! the segment is deleted.
//!
//! File names are ULIDs whose time is the segment's creation time and whose other 80 bits
//! are a hash of (writer id, segment sequence, partition). A replay of a segment after a crash
//! between "file written" and "segment deleted" therefore rewrites the same names with the
//! same rows instead of adding duplicates, while replicas (distinct writer ids) never collide.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use schemas::convert::PartitionedBatches;
use schemas::layout::{Partition, ulid};
use schemas::parquet_file::PartitionedFiles;
use schemas::store::Store;
use tokio::sync::mpsc;

use crate::error::IngestError;
use crate::metrics::Metrics;
use crate::wal::{Segment, SegmentReader, Wal};

/// One Parquet file produced from a segment.
pub struct SpanFile {
    pub path: String,
    pub bytes: Bytes,
    pub rows: usize,
}

fn fnv1a(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for part in parts {
        for b in part.iter().chain(&[0xFF]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    h
}

/// The deterministic file name of `partition`'s file from segment `seq` of `writer_id`.
pub fn file_name(writer_id: u128, seq: u64, created_ms: u64, partition: &Partition) -> String {
    let parts: [&[u8]; 5] = [
        &writer_id.to_le_bytes(),
        &seq.to_le_bytes(),
        partition.tenant.as_bytes(),
        partition.date.as_bytes(),
        &partition.hour.to_le_bytes(),
    ];
    let entropy = (u128::from(fnv1a(1, &parts)) << 64) | u128::from(fnv1a(2, &parts));
    ulid(created_ms, entropy)
}

/// Converts a segment into span files (CPU-bound; run it off the async threads).
pub fn convert_segment(segment: &Segment, writer_id: u128) -> Result<Vec<SpanFile>, IngestError> {
    let mut reader = SegmentReader::open(&segment.path)?;
    let mut batches = PartitionedBatches::new();
    let mut files = PartitionedFiles::default();
    while let Some((tenant, payload)) = reader.next_record() {
        // Records were validated before they were acknowledged; one that no longer decodes
        // means the disk corrupted it under a matching crc, which is not worth losing the
        // whole segment over.
        if let Err(e) = batches.append_encoded(tenant, payload) {
            tracing::error!(segment = %segment.path.display(), error = %e, "skipping undecodable wal record");
        }
        if batches.rows() >= PartitionedFiles::BATCH_ROWS {
            files.drain(&mut batches)?;
        }
    }
    files.drain(&mut batches)?;
    Ok(files
        .finish()?
        .into_iter()
        .map(|(partition, bytes, rows)| {
            let name = file_name(writer_id, segment.seq, segment.created_ms, &partition);
            SpanFile {
                path: partition.file_path(&name),
                bytes,
                rows,
            }
        })
        .collect())
}

type Converted = Result<Vec<SpanFile>, IngestError>;

/// The one thread segments are converted on. glibc's malloc gives each thread an arena of its
/// own and keeps each arena's peak resident, so conversions spread over the blocking pool's
/// threads held a conversion's peak once per thread: one thread holds it once. Peak RSS under
/// full load went from 323-334 MiB to 121-151 MiB at the same CPU per span (BENCHMARKS.md,
/// 2026-12-06, "one conversion thread").
pub struct Converter {
    jobs: std::sync::mpsc::Sender<(Segment, tokio::sync::oneshot::Sender<Converted>)>,
}

impl Converter {
    pub fn start(writer_id: u128) -> Result<Self, IngestError> {
        let (jobs, rx) =
            std::sync::mpsc::channel::<(Segment, tokio::sync::oneshot::Sender<Converted>)>();
        std::thread::Builder::new()
            .name("flush-convert".into())
            .spawn(move || {
                for (segment, done) in rx {
                    // A panic fails this segment's attempt (the flusher retries it, as it did
                    // a panicked blocking task) instead of ending the thread, which would
                    // leave every later segment unflushed.
                    let converted =
                        std::panic::catch_unwind(|| convert_segment(&segment, writer_id))
                            .unwrap_or_else(|_| {
                                Err(IngestError::io(
                                    format!("converting {}", segment.path.display()),
                                    std::io::Error::other("the conversion panicked"),
                                ))
                            });
                    // The flusher waits for every answer; if it is gone, so is the process.
                    let _ = done.send(converted);
                }
            })
            .map_err(|e| IngestError::io("starting the flush thread", e))?;
        Ok(Self { jobs })
    }

    async fn convert(&self, segment: &Segment) -> Converted {
        let (done, answer) = tokio::sync::oneshot::channel();
        let gone = || IngestError::io("flush thread", std::io::Error::other("stopped"));
        self.jobs
            .send((segment.clone(), done))
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Flushes one segment into the store, then deletes it.
async fn flush_segment(
    segment: &Segment,
    converter: &Converter,
    store: &Store,
    metrics: &Metrics,
) -> Result<(), IngestError> {
    let started = Instant::now();
    let files = converter.convert(segment).await?;
    let (mut rows, mut bytes) = (0usize, 0usize);
    for f in &files {
        store
            .put(&f.path, f.bytes.clone())
            .await
            .map_err(IngestError::store)?;
        rows += f.rows;
        bytes += f.bytes.len();
        metrics.files_written.fetch_add(1, Ordering::Relaxed);
        metrics
            .file_bytes_written
            .fetch_add(f.bytes.len() as u64, Ordering::Relaxed);
        metrics
            .rows_written
            .fetch_add(f.rows as u64, Ordering::Relaxed);
    }
    std::fs::remove_file(&segment.path)
        .map_err(|e| IngestError::io(format!("removing {}", segment.path.display()), e))?;
    metrics.flush_seconds.observe(started.elapsed());
    tracing::info!(
        segment = segment.seq,
        files = files.len(),
        rows,
        parquet_bytes = bytes,
        wal_bytes = segment.bytes,
        ms = started.elapsed().as_millis() as u64,
        "flushed"
    );
    Ok(())
}

/// Flushes sealed segments in order until the channel closes (the WAL writer has stopped
/// and everything it sealed is flushed). A failing store is retried with backoff; meanwhile
/// the backlog grows and the receivers push back on clients.
pub async fn run(
    mut sealed: mpsc::UnboundedReceiver<Segment>,
    wal: Wal,
    converter: Converter,
    store: Store,
    metrics: Arc<Metrics>,
) {
    while let Some(segment) = sealed.recv().await {
        let mut delay = Duration::from_millis(200);
        loop {
            match flush_segment(&segment, &converter, &store, &metrics).await {
                Ok(()) => break,
                Err(e) => {
                    metrics.flush_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(segment = segment.seq, error = %e, retry_in_ms = delay.as_millis() as u64, "flush failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
        wal.retired(segment.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_stable_per_segment_and_distinct_across_writers() {
        let p = Partition::of_span("default", 1_700_000_000_000_000_000);
        let q = Partition::of_span("default", 1_700_003_600_000_000_000);
        let a = file_name(1, 5, 1_700_000_000_000, &p);
        assert_eq!(a, file_name(1, 5, 1_700_000_000_000, &p));
        assert_ne!(a, file_name(2, 5, 1_700_000_000_000, &p));
        assert_ne!(a, file_name(1, 6, 1_700_000_000_000, &p));
        assert_ne!(a, file_name(1, 5, 1_700_000_000_000, &q));
        assert!(
            a < file_name(0, 0, 1_700_000_000_001, &p),
            "names sort by time"
        );
    }
}
