//! Compaction: the small files of a closed hour partition become files near a target size,
//! sorted by (trace_id, start_time), without a reader ever counting a span twice or missing one.
//!
//! A compaction is a record, `_compaction/<target>.json`, naming the target file and its
//! sources, written (only if absent) before the target. Readers (the catalog) list the span
//! files through [`VisibleStore`], which hides the sources of every record whose target exists:
//! before the target exists they read the sources, after it they read the target. Sources are
//! deleted only `grace` after the target appeared, so a query that listed the sources just
//! before can still read them; then the record goes. Every step can be interrupted and is
//! finished by the next run: a record without its target is compacted again (to the same target
//! name), a record with its target is cleaned up.
//!
//! Readers that list `spans/` themselves (DuckDB's `read_parquet('spans/**/*.parquet')`) see
//! both the sources and the target during the grace period.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{
    SortColumn, concat_batches, lexsort_to_indices, take_record_batch,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use serde::{Deserialize, Serialize};

use schemas::layout::Partition;

use crate::error::CurateError;
use crate::window::parse_duration;

/// Folder of compaction records, beside `spans/`.
pub const RECORDS_DIR: &str = "_compaction";

/// A compaction in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Store-relative path of the compacted file.
    pub target: String,
    /// Store-relative paths of the files it replaces.
    pub sources: Vec<String>,
    pub created: DateTime<Utc>,
}

fn join(root: &ObjectPath, rel: &str) -> ObjectPath {
    if root.as_ref().is_empty() {
        ObjectPath::from(rel)
    } else {
        ObjectPath::from(format!("{}/{rel}", root.as_ref()))
    }
}

async fn records(
    store: &dyn ObjectStore,
    root: &ObjectPath,
) -> Result<Vec<(ObjectPath, Record)>, CurateError> {
    let metas: Vec<ObjectMeta> = store
        .list(Some(&join(root, RECORDS_DIR)))
        .try_collect()
        .await?;
    let mut out = Vec::new();
    for m in metas
        .into_iter()
        .filter(|m| m.location.as_ref().ends_with(".json"))
    {
        let bytes = match store.get(&m.location).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let record: Record = serde_json::from_slice(&bytes).map_err(|e| {
            CurateError::JobFailed(format!("compaction record {}: {e}", m.location))
        })?;
        out.push((m.location, record));
    }
    Ok(out)
}

/// The span files readers must not see: the sources of every record whose target exists.
/// `root` is the store's root in `store`'s namespace.
pub async fn superseded(
    store: &dyn ObjectStore,
    root: &ObjectPath,
) -> Result<HashSet<ObjectPath>, CurateError> {
    let mut hidden = HashSet::new();
    for (_, r) in records(store, root).await? {
        match store.head(&join(root, &r.target)).await {
            Ok(_) => hidden.extend(r.sources.iter().map(|s| join(root, s))),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(hidden)
}

/// An object store whose listings leave out superseded span files; everything else passes
/// through. Each listing is taken first, then the records are read, and a record's sources are
/// hidden when its target is in that listing: a target written after the listing was taken is
/// absent together with the hiding of its sources, so a listing holds either the sources or
/// the target, never both (sources are deleted only `grace` after their target appeared).
#[derive(Debug)]
pub struct VisibleStore {
    inner: Arc<dyn ObjectStore>,
    /// The store's root in `inner`'s namespace (where `spans/` and `_compaction/` are).
    root: ObjectPath,
}

impl VisibleStore {
    pub fn new(inner: Arc<dyn ObjectStore>, root: ObjectPath) -> Self {
        Self { inner, root }
    }
}

/// The files among `listed` that a record replaced with a target also in `listed`.
async fn hidden_among(
    store: &dyn ObjectStore,
    root: &ObjectPath,
    listed: &[ObjectMeta],
) -> object_store::Result<HashSet<ObjectPath>> {
    if !listed
        .iter()
        .any(|m| m.location.as_ref().ends_with(".parquet"))
    {
        return Ok(HashSet::new());
    }
    let present: HashSet<&ObjectPath> = listed.iter().map(|m| &m.location).collect();
    let records = records(store, root)
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "compaction records",
            source: Box::new(e),
        })?;
    Ok(records
        .into_iter()
        .filter(|(_, r)| present.contains(&join(root, &r.target)))
        .flat_map(|(_, r)| r.sources.into_iter().map(|s| join(root, &s)))
        .collect())
}

impl VisibleStore {
    fn visible(
        &self,
        listing: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let (inner, root) = (self.inner.clone(), self.root.clone());
        futures::stream::once(async move {
            let metas: Vec<ObjectMeta> = listing.try_collect().await?;
            let hidden = hidden_among(inner.as_ref(), &root, &metas).await?;
            Ok::<_, object_store::Error>(futures::stream::iter(
                metas
                    .into_iter()
                    .filter(move |m| !hidden.contains(&m.location))
                    .map(Ok),
            ))
        })
        .try_flatten()
        .boxed()
    }
}

impl std::fmt::Display for VisibleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Visible({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for VisibleStore {
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
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &ObjectPath,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
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
        self.visible(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&ObjectPath>,
        offset: &ObjectPath,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.visible(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        let mut r = self.inner.list_with_delimiter(prefix).await?;
        let hidden = hidden_among(self.inner.as_ref(), &self.root, &r.objects).await?;
        r.objects.retain(|m| !hidden.contains(&m.location));
        Ok(r)
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

/// What a compaction run did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub partitions: usize,
    pub files_before: usize,
    pub bytes_before: u64,
    pub files_after: usize,
    pub bytes_after: u64,
    /// Compactions whose sources wait for the grace period before deletion.
    pub awaiting_cleanup: usize,
    /// Compactions left by an interrupted run and finished by this one.
    pub resumed: usize,
}

fn parse_size(s: &str) -> Result<u64, CurateError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| CurateError::BadArgs(format!("--target-size {s:?}: expected e.g. 128MiB")))?;
    let mult = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(CurateError::BadArgs(format!(
                "--target-size {s:?}: unit B, KiB, MiB or GiB"
            )));
        }
    };
    Ok(n * mult)
}

/// Options of `curate compact`.
pub struct Options<'a> {
    pub store: &'a str,
    pub min_age: &'a str,
    pub target_size: &'a str,
    pub grace: &'a str,
    pub dry_run: bool,
    pub now: DateTime<Utc>,
    pub json: bool,
}

pub async fn run(o: Options<'_>) -> Result<String, CurateError> {
    let min_age =
        parse_duration(o.min_age).map_err(|e| CurateError::BadArgs(format!("--min-age: {e}")))?;
    let grace =
        parse_duration(o.grace).map_err(|e| CurateError::BadArgs(format!("--grace: {e}")))?;
    let target_size = parse_size(o.target_size)?;
    let store = schemas::store::Store::open(o.store)
        .map_err(|e| CurateError::BadArgs(format!("--store: {e}")))?;
    let os = store.object_store();
    let root = ObjectPath::default();
    let mut report = Report {
        dry_run: o.dry_run,
        ..Default::default()
    };

    // Records left by earlier runs: finish each.
    let mut busy = HashSet::new();
    for (path, record) in records(os.as_ref(), &root).await? {
        if let Some(p) = Partition::of_path(&record.target) {
            busy.insert(p.dir());
        }
        if o.dry_run {
            continue;
        }
        let target = ObjectPath::from(record.target.as_str());
        let written = match os.head(&target).await {
            Ok(meta) => meta.last_modified,
            Err(object_store::Error::NotFound { .. }) => {
                // Sources gone without a target (retention deleted the partition): nothing
                // to finish.
                let mut complete = true;
                for s in &record.sources {
                    if let Err(object_store::Error::NotFound { .. }) =
                        os.head(&ObjectPath::from(s.as_str())).await
                    {
                        complete = false;
                    }
                }
                if !complete {
                    tracing::warn!(record = %path, "sources gone; dropping the compaction record");
                    os.delete(&path).await?;
                    continue;
                }
                report.resumed += 1;
                write_target(&store, &record).await?;
                Utc::now()
            }
            Err(e) => return Err(e.into()),
        };
        if Utc::now() - written >= grace {
            retire(os.as_ref(), &path, &record).await?;
        } else {
            report.awaiting_cleanup += 1;
        }
    }

    // Closed partitions with several visible files.
    let hidden = superseded(os.as_ref(), &root).await?;
    let files: Vec<ObjectMeta> = os
        .list(Some(&ObjectPath::from(schemas::layout::SPANS_DIR)))
        .try_collect()
        .await?;
    let mut by_partition: BTreeMap<String, Vec<ObjectMeta>> = BTreeMap::new();
    for f in files {
        let path = f.location.to_string();
        if !path.ends_with(".parquet") || hidden.contains(&f.location) {
            continue;
        }
        if let Some(p) = Partition::of_path(&path)
            && p.end() + min_age <= o.now
            && !busy.contains(&p.dir())
        {
            by_partition.entry(p.dir()).or_default().push(f);
        }
    }
    for (partition, mut files) in by_partition {
        files.sort_by(|a, b| a.location.cmp(&b.location));
        // Groups of files up to the target size; a group of one file stays as it is.
        let mut groups: Vec<Vec<ObjectMeta>> = vec![Vec::new()];
        for f in files {
            let size: u64 = groups.last().map_or(0, |g| g.iter().map(|m| m.size).sum());
            if size + f.size > target_size && groups.last().is_some_and(|g| !g.is_empty()) {
                groups.push(Vec::new());
            }
            if let Some(g) = groups.last_mut() {
                g.push(f);
            }
        }
        let groups: Vec<_> = groups.into_iter().filter(|g| g.len() > 1).collect();
        if groups.is_empty() {
            continue;
        }
        report.partitions += 1;
        for group in groups {
            report.files_before += group.len();
            report.bytes_before += group.iter().map(|m| m.size).sum::<u64>();
            if o.dry_run {
                continue;
            }
            let name = schemas::layout::ulid(
                Utc::now().timestamp_millis().max(0) as u64,
                rand::random::<u128>(),
            );
            let record = Record {
                target: format!("{partition}/{name}.{}", schemas::layout::PARQUET_EXT),
                sources: group.iter().map(|m| m.location.to_string()).collect(),
                created: Utc::now(),
            };
            let record_path = ObjectPath::from(format!("{RECORDS_DIR}/{name}.json"));
            os.put_opts(
                &record_path,
                PutPayload::from(serde_json::to_vec_pretty(&record).unwrap_or_default()),
                PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                },
            )
            .await?;
            let bytes = write_target(&store, &record).await?;
            report.files_after += 1;
            report.bytes_after += bytes;
            if grace <= chrono::Duration::zero() {
                retire(os.as_ref(), &record_path, &record).await?;
            } else {
                report.awaiting_cleanup += 1;
            }
            tracing::info!(
                partition,
                sources = record.sources.len(),
                target = record.target,
                "compacted"
            );
        }
    }
    Ok(if o.json {
        format!("{}\n", serde_json::to_string(&report).unwrap_or_default())
    } else {
        format!(
            "{}{} partitions: {} files ({} bytes) -> {} files ({} bytes); {} compactions finished \
             from an earlier run; {} wait {} before their sources are deleted\n",
            if o.dry_run {
                "would compact "
            } else {
                "compacted "
            },
            report.partitions,
            report.files_before,
            report.bytes_before,
            report.files_after,
            report.bytes_after,
            report.resumed,
            report.awaiting_cleanup,
            o.grace
        )
    })
}

/// Deletes a finished compaction's sources, then its record (idempotent).
async fn retire(
    os: &dyn ObjectStore,
    record_path: &ObjectPath,
    record: &Record,
) -> Result<(), CurateError> {
    for s in &record.sources {
        match os.delete(&ObjectPath::from(s.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(os.delete(record_path).await?)
}

/// Reads the record's sources, sorts their rows by (trace_id, start_time) and writes the
/// target; returns its size.
async fn write_target(store: &schemas::store::Store, record: &Record) -> Result<u64, CurateError> {
    let os = store.object_store();
    let mut batches = Vec::new();
    for s in &record.sources {
        let bytes = os.get(&ObjectPath::from(s.as_str())).await?.bytes().await?;
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                bytes,
            )
            .map_err(|e| CurateError::JobFailed(format!("reading {s}: {e}")))?
            .build()
            .map_err(|e| CurateError::JobFailed(format!("reading {s}: {e}")))?;
        for b in reader {
            batches.push(b?);
        }
    }
    let schema = schemas::span_table::span_schema();
    let all = concat_batches(&schema, &batches)?;
    let column = |name: &str| {
        all.column_by_name(name)
            .cloned()
            .ok_or_else(|| CurateError::JobFailed(format!("span file without column {name}")))
    };
    let order = lexsort_to_indices(
        &[
            SortColumn {
                values: column(schemas::columns::TRACE_ID)?,
                options: None,
            },
            SortColumn {
                values: column(schemas::columns::START_TIME)?,
                options: None,
            },
        ],
        None,
    )?;
    let sorted: RecordBatch = take_record_batch(&all, &order)?;
    let bytes = schemas::parquet_file::write_span_file(&[sorted])
        .map_err(|e| CurateError::JobFailed(format!("writing {}: {e}", record.target)))?;
    let size = bytes.len() as u64;
    store
        .put(&record.target, bytes)
        .await
        .map_err(|e| CurateError::JobFailed(format!("writing {}: {e}", record.target)))?;
    Ok(size)
}
