//! A store on the local disk as curate reads it: object_store's `LocalFileSystem`, with its
//! reads done on the calling thread.
//!
//! `LocalFileSystem` hands every read to tokio's blocking thread pool, and a ranged `get`
//! twice (open, then read). A query reads a few ranges of every file (its footer, then the
//! column chunks it needs), so over a store as ingest writes it (hundreds of small files per
//! day) a short query spent much of its time waking pool threads and switching to them
//! (`errors` on the 360-file bench store: a quarter of its CPU in the kernel, futex calls 85%
//! of its syscall time; inline, 0.72x the wall time, BENCHMARKS.md, 2026-12-07 ninth session). Reads of local files are page-cache copies, so
//! [`InlineLocal`] does ranged reads and `get`s in the task that asks, as DuckDB reads on its
//! worker threads. Reads of more than [`INLINE_BYTES`] (a whole large file, as compaction
//! reads its sources) still go to the pool, where the hand-off is small next to the copy
//! and the task's worker thread is not held for long. Everything else, and any read that
//! fails (so that errors are the ones `LocalFileSystem` gives), goes to `LocalFileSystem`
//! itself.

use std::fs::{File, Metadata};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// Most bytes one call reads inline: ~1-3 ms of page-cache copying. A query's footer and
/// column-chunk reads are far smaller.
pub const INLINE_BYTES: u64 = 16 << 20;

/// `LocalFileSystem` with ranged reads and `get`s done inline (see the module docs).
#[derive(Debug)]
pub struct InlineLocal {
    inner: LocalFileSystem,
    /// Most bytes a call reads inline.
    limit: u64,
}

impl InlineLocal {
    pub fn new(inner: LocalFileSystem) -> Self {
        Self::with_limit(inner, INLINE_BYTES)
    }

    /// Reads of at most `limit` bytes per call inline, larger ones on the blocking pool.
    pub(crate) fn with_limit(inner: LocalFileSystem, limit: u64) -> Self {
        Self { inner, limit }
    }

    fn open(&self, location: &ObjectPath) -> Option<File> {
        File::open(self.inner.path_to_filesystem(location).ok()?).ok()
    }

    /// A plain `get` (no preconditions, no version, not a `head`), read inline; None for
    /// anything else or any failure.
    fn get_inline(&self, location: &ObjectPath, options: &GetOptions) -> Option<GetResult> {
        let plain = !options.head
            && options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none();
        if !plain {
            return None;
        }
        let file = self.open(location)?;
        let metadata = file.metadata().ok().filter(Metadata::is_file)?;
        let size = metadata.len();
        let range = match &options.range {
            Some(r) => r.as_range(size).ok()?,
            None => 0..size,
        };
        if range.end - range.start > self.limit {
            return None;
        }
        let bytes = read_range(&file, range.clone())?;
        Some(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async { Ok(bytes) }).boxed()),
            meta: ObjectMeta {
                location: location.clone(),
                last_modified: metadata.modified().ok()?.into(),
                size,
                e_tag: Some(e_tag(&metadata)),
                version: None,
            },
            range,
            attributes: Attributes::default(),
        })
    }
}

/// `range` of `file`, None unless all of it could be read.
fn read_range(file: &File, range: Range<u64>) -> Option<Bytes> {
    let mut buf = vec![0u8; usize::try_from(range.end - range.start).ok()?];
    file.read_exact_at(&mut buf, range.start).ok()?;
    Some(buf.into())
}

/// The ETag `LocalFileSystem` gives a file: inode, modification time in microseconds, size.
fn e_tag(metadata: &Metadata) -> String {
    let inode = std::os::unix::fs::MetadataExt::ino(metadata);
    let mtime = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("{inode:x}-{mtime:x}-{:x}", metadata.len())
}

impl std::fmt::Display for InlineLocal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Inline({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for InlineLocal {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        match self.get_inline(location, &options) {
            Some(result) => Ok(result),
            None => self.inner.get_opts(location, options).await,
        }
    }

    async fn get_ranges(
        &self,
        location: &ObjectPath,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let bytes: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        let inline = (bytes <= self.limit)
            .then(|| self.open(location))
            .flatten()
            .and_then(|file| {
                ranges
                    .iter()
                    .map(|r| read_range(&file, r.clone()))
                    .collect::<Option<Vec<_>>>()
            });
        match inline {
            Some(bytes) => Ok(bytes),
            None => self.inner.get_ranges(location, ranges).await,
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&ObjectPath>,
        offset: &ObjectPath,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{GetRange, ObjectStoreExt};

    /// A store with one 10,000-byte file, read through `InlineLocal` and through
    /// `LocalFileSystem` itself.
    fn stores() -> Result<
        (tempfile::TempDir, ObjectPath, InlineLocal, LocalFileSystem),
        Box<dyn std::error::Error>,
    > {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("spans.parquet");
        std::fs::write(
            &file,
            (0..10_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
        )?;
        let location = ObjectPath::from_absolute_path(&file)?;
        Ok((
            dir,
            location,
            InlineLocal::new(LocalFileSystem::new()),
            LocalFileSystem::new(),
        ))
    }

    #[tokio::test]
    async fn reads_what_the_local_file_system_reads() -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, at, inline, local) = stores()?;
        for range in [0..100, 9_990..10_000, 4_000..4_001, 0..10_000] {
            assert_eq!(
                inline.get_range(&at, range.clone()).await?,
                local.get_range(&at, range).await?
            );
        }
        let ranges = [0..8, 9_992..10_000, 100..5_000];
        assert_eq!(
            inline.get_ranges(&at, &ranges).await?,
            local.get_ranges(&at, &ranges).await?
        );
        for range in [
            None,
            Some(GetRange::Suffix(50)),
            Some(GetRange::Offset(9_000)),
            Some(GetRange::Bounded(9_000..20_000)),
        ] {
            let options = || GetOptions {
                range: range.clone(),
                ..Default::default()
            };
            let (a, b) = (
                inline.get_opts(&at, options()).await?,
                local.get_opts(&at, options()).await?,
            );
            assert_eq!((&a.meta, &a.range), (&b.meta, &b.range), "{range:?}");
            assert_eq!(a.bytes().await?, b.bytes().await?, "{range:?}");
        }
        assert_eq!(inline.head(&at).await?, local.head(&at).await?);
        Ok(())
    }

    /// Reads over the limit go to `LocalFileSystem` and read the same.
    #[tokio::test]
    async fn reads_over_the_limit_read_the_same() -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, at, _, local) = stores()?;
        let small = InlineLocal::with_limit(LocalFileSystem::new(), 1_000);
        for range in [0..999, 0..1_001, 0..10_000] {
            assert_eq!(
                small.get_range(&at, range.clone()).await?,
                local.get_range(&at, range).await?
            );
        }
        let ranges = [0..600, 1_000..1_600];
        assert_eq!(
            small.get_ranges(&at, &ranges).await?,
            local.get_ranges(&at, &ranges).await?
        );
        assert_eq!(
            small.get(&at).await?.bytes().await?,
            local.get(&at).await?.bytes().await?
        );
        Ok(())
    }

    #[tokio::test]
    async fn failed_reads_give_the_local_file_systems_errors()
    -> Result<(), Box<dyn std::error::Error>> {
        let (dir, at, inline, _local) = stores()?;
        let missing = ObjectPath::from_absolute_path(dir.path().join("gone.parquet"))?;
        for result in [
            inline.get_range(&missing, 0..10).await.map(|_| ()),
            inline
                .get_ranges(&missing, &[0..10, 20..30])
                .await
                .map(|_| ()),
            inline.get(&missing).await.map(|_| ()),
        ] {
            assert!(
                matches!(result, Err(object_store::Error::NotFound { .. })),
                "{result:?}"
            );
        }
        for result in [
            inline.get_range(&at, 10_000..10_010).await.map(|_| ()),
            inline
                .get_ranges(&at, &[0..10, 9_999..10_001])
                .await
                .map(|_| ()),
        ] {
            assert!(result.is_err(), "a range past the end: {result:?}");
        }
        Ok(())
    }
}
