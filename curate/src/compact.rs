//! Compaction: the small files of a closed hour partition become files near a target size,
//! sorted by (trace_id, start_time), without a reader ever counting a span twice or missing one.
//!
//! A compaction is a record per partition, `_compaction/<tenant>.<date>T<HH>.json`, naming each
//! target file and its sources, created only if absent (a conditional put on S3) before any
//! target is written: of two runs that reach a partition together only one creates its record,
//! and the other leaves the partition alone. Readers (the catalog) list the span files through
//! [`VisibleStore`], which hides the sources of every target that exists: before a target
//! exists they read its sources, after it they read the target. Sources are deleted only
//! `grace` after the targets appeared, so a query that listed the sources just before can
//! still read them; then the record goes. Every step can be interrupted and is finished by the
//! next run: a record with a missing target is compacted again (to the same target name), a
//! record with all its targets is cleaned up.
//!
//! Readers that list `spans/` themselves (DuckDB's `read_parquet('spans/**/*.parquet')`) see
//! both the sources and the target during the grace period.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{SortColumn, concat, interleave_record_batch, lexsort_to_indices};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::{
    ParquetRecordBatchReaderBuilder, RowSelection, RowSelectionPolicy,
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
use schemas::parquet_file::SpanFileWriter;

use crate::error::CurateError;
use crate::window::parse_duration;

/// Folder of compaction records, beside `spans/`.
pub const RECORDS_DIR: &str = "_compaction";

/// A partition's compaction in progress, at [`record_path`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "RecordFile")]
pub struct Record {
    pub groups: Vec<Group>,
    pub created: DateTime<Utc>,
    /// The compaction run that created it.
    #[serde(default)]
    pub run: String,
}

/// One merged file and the files it replaces.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    /// Store-relative path of the compacted file.
    pub target: String,
    /// Store-relative paths of the files it replaces.
    pub sources: Vec<String>,
}

/// A record as stored: also the single-target records (`_compaction/<ULID>.json`) of earlier
/// versions, which are finished like the others.
#[derive(Deserialize)]
#[serde(untagged)]
enum RecordFile {
    Groups {
        groups: Vec<Group>,
        created: DateTime<Utc>,
        #[serde(default)]
        run: String,
    },
    Single {
        target: String,
        sources: Vec<String>,
        created: DateTime<Utc>,
    },
}

impl From<RecordFile> for Record {
    fn from(f: RecordFile) -> Self {
        match f {
            RecordFile::Groups {
                groups,
                created,
                run,
            } => Self {
                groups,
                created,
                run,
            },
            RecordFile::Single {
                target,
                sources,
                created,
            } => Self {
                groups: vec![Group { target, sources }],
                created,
                run: String::new(),
            },
        }
    }
}

/// The one record name of a partition's compaction: a second run cannot create it while the
/// first one's record exists.
pub fn record_path(p: &Partition) -> ObjectPath {
    ObjectPath::from(format!(
        "{RECORDS_DIR}/{}.{}T{:02}.json",
        p.tenant, p.date, p.hour
    ))
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
        for g in r.groups {
            match store.head(&join(root, &g.target)).await {
                Ok(_) => hidden.extend(g.sources.iter().map(|s| join(root, s))),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(hidden)
}

/// An object store whose listings leave out superseded span files; everything else passes
/// through. The records are read before each listing and again after it, and a record's sources
/// are hidden when its target is in the listing and either read holds the record:
/// - a target in the listing was written after its record was created, and the record is
///   deleted only after the sources, `grace` after the target appeared; so one of the reads
///   holds it unless the listing outlasted the grace;
/// - a target written after the listing is absent together with the hiding of its sources,
///   which are deleted only `grace` later.
///
/// So a listing holds either the sources or the target, never both, and never a deleted file
/// while the query is within the grace period.
#[derive(Debug, Clone)]
pub struct VisibleStore {
    inner: Arc<dyn ObjectStore>,
    /// The store's root in `inner`'s namespace (where `spans/` and `_compaction/` are).
    root: ObjectPath,
}

impl VisibleStore {
    pub fn new(inner: Arc<dyn ObjectStore>, root: ObjectPath) -> Self {
        Self { inner, root }
    }

    async fn groups(&self) -> object_store::Result<Vec<Group>> {
        let records = records(self.inner.as_ref(), &self.root)
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "compaction records",
                source: Box::new(e),
            })?;
        Ok(records.into_iter().flat_map(|(_, r)| r.groups).collect())
    }

    /// Takes `listing` between two reads of the records; returns it without the superseded
    /// files.
    async fn without_superseded<T>(
        &self,
        listing: impl Future<Output = object_store::Result<T>>,
        objects: impl Fn(&mut T) -> &mut Vec<ObjectMeta>,
    ) -> object_store::Result<T> {
        let before = self.groups().await?;
        let mut listed = listing.await?;
        let metas = objects(&mut listed);
        if metas
            .iter()
            .any(|m| m.location.as_ref().ends_with(".parquet"))
        {
            let present: HashSet<&ObjectPath> = metas.iter().map(|m| &m.location).collect();
            let hidden: HashSet<ObjectPath> = before
                .into_iter()
                .chain(self.groups().await?)
                .filter(|g| present.contains(&join(&self.root, &g.target)))
                .flat_map(|g| g.sources.into_iter().map(|s| join(&self.root, &s)))
                .collect();
            metas.retain(|m| !hidden.contains(&m.location));
        }
        Ok(listed)
    }

    /// `list` (from `offset` if given) without the superseded files.
    fn visible(
        &self,
        prefix: Option<&ObjectPath>,
        offset: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let (this, prefix, offset) = (self.clone(), prefix.cloned(), offset.cloned());
        futures::stream::once(async move {
            // Taken only when awaited, after the records were read once.
            let listing = async {
                match &offset {
                    Some(offset) => this.inner.list_with_offset(prefix.as_ref(), offset),
                    None => this.inner.list(prefix.as_ref()),
                }
                .try_collect::<Vec<ObjectMeta>>()
                .await
            };
            let metas = this.without_superseded(listing, |m| m).await?;
            Ok::<_, object_store::Error>(futures::stream::iter(metas.into_iter().map(Ok)))
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
        self.visible(prefix, None)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&ObjectPath>,
        offset: &ObjectPath,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.visible(prefix, Some(offset))
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.without_superseded(self.inner.list_with_delimiter(prefix), |r| &mut r.objects)
            .await
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
    /// Partitions left alone because another run is compacting them.
    pub busy: usize,
    /// Stored copies of spans delivered more than once, left out of the compacted files.
    pub copies_dropped: usize,
}

/// A test hook, from `CURATE_TEST_HOOK`: `stop-at=STEP` makes the run fail at STEP, leaving
/// the store as a kill there would; `pause-at=STEP,until=FILE` creates `FILE.paused` at STEP
/// and waits until FILE exists. Steps, in order: `listed` (files grouped, nothing written),
/// `recorded` (a partition's record created), `written` (its first target written),
/// `retiring` (its first source deleted).
#[derive(Debug, Default)]
struct Hook {
    stop_at: Option<String>,
    pause_at: Option<(String, std::path::PathBuf)>,
}

impl Hook {
    const VAR: &str = "CURATE_TEST_HOOK";

    fn from_env() -> Result<Self, CurateError> {
        let Ok(spec) = std::env::var(Self::VAR) else {
            return Ok(Self::default());
        };
        let bad = || CurateError::BadArgs(format!("{}={spec:?}", Self::VAR));
        let mut kv = BTreeMap::new();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(bad)?;
            kv.insert(k, v);
        }
        let hook = Self {
            stop_at: kv.get("stop-at").map(|s| s.to_string()),
            pause_at: match (kv.get("pause-at"), kv.get("until")) {
                (Some(s), Some(f)) => Some((s.to_string(), f.into())),
                (None, None) => None,
                _ => return Err(bad()),
            },
        };
        Ok(hook)
    }

    async fn at(&mut self, step: &str) -> Result<(), CurateError> {
        if self.stop_at.as_deref() == Some(step) {
            return Err(CurateError::JobFailed(format!(
                "stopped at step {step} ({})",
                Self::VAR
            )));
        }
        if let Some((_, until)) = self.pause_at.take_if(|p| p.0 == step) {
            let mut paused = until.clone().into_os_string();
            paused.push(".paused");
            std::fs::write(&paused, step).map_err(|e| CurateError::io("test hook", e))?;
            // Bounded, so a test that failed before releasing it does not leave a process.
            for _ in 0..6000 {
                if until.exists() {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            return Err(CurateError::JobFailed(format!(
                "{}: {} never appeared",
                Self::VAR,
                until.display()
            )));
        }
        Ok(())
    }
}

fn parse_size(flag: &str, s: &str) -> Result<u64, CurateError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| CurateError::BadArgs(format!("{flag} {s:?}: expected e.g. 128MiB")))?;
    let mult = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(CurateError::BadArgs(format!(
                "{flag} {s:?}: unit B, KiB, MiB or GiB"
            )));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| CurateError::BadArgs(format!("{flag} {s:?}: too large")))
}

/// Options of `curate compact`.
pub struct Options<'a> {
    pub store: &'a str,
    pub min_age: &'a str,
    pub target_size: &'a str,
    /// Decoded spans held at once while writing a merged file.
    pub memory: &'a str,
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
    let target_size = parse_size("--target-size", o.target_size)?;
    let memory = parse_size("--memory", o.memory)?;
    if memory == 0 {
        return Err(CurateError::BadArgs("--memory must be more than 0".into()));
    }
    let mut hook = Hook::from_env()?;
    let store = schemas::store::Store::open(o.store)
        .map_err(|e| CurateError::BadArgs(format!("--store: {e}")))?;
    let os = store.object_store();
    let root = ObjectPath::default();
    let run_id = schemas::layout::ulid(
        Utc::now().timestamp_millis().max(0) as u64,
        rand::random::<u128>(),
    );
    let mut report = Report {
        dry_run: o.dry_run,
        ..Default::default()
    };

    // Records left by earlier runs (or being worked on by a concurrent one): finish each.
    let mut busy = HashSet::new();
    for (path, record) in records(os.as_ref(), &root).await? {
        busy.extend(
            record
                .groups
                .iter()
                .filter_map(|g| Partition::of_path(&g.target))
                .map(|p| p.dir()),
        );
        if o.dry_run {
            continue;
        }
        let Some(written) = write_targets(
            &store,
            &path,
            &record,
            false,
            memory,
            &mut report,
            &mut hook,
        )
        .await?
        else {
            continue;
        };
        if Utc::now() - written >= grace {
            retire(os.as_ref(), &path, &record, &mut hook).await?;
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
    let mut by_partition: BTreeMap<Partition, Vec<ObjectMeta>> = BTreeMap::new();
    for f in files {
        let path = f.location.to_string();
        if !path.ends_with(".parquet") || hidden.contains(&f.location) {
            continue;
        }
        if let Some(p) = Partition::of_path(&path)
            && p.end() + min_age <= o.now
            && !busy.contains(&p.dir())
        {
            by_partition.entry(p).or_default().push(f);
        }
    }
    let mut listed = false;
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
        if o.dry_run {
            report.partitions += 1;
            report.files_before += groups.iter().map(Vec::len).sum::<usize>();
            report.bytes_before += groups.iter().flatten().map(|m| m.size).sum::<u64>();
            continue;
        }
        if !listed {
            hook.at("listed").await?;
            listed = true;
        }
        let record = Record {
            groups: groups
                .iter()
                .map(|g| Group {
                    target: partition.file_path(&schemas::layout::ulid(
                        Utc::now().timestamp_millis().max(0) as u64,
                        rand::random::<u128>(),
                    )),
                    sources: g.iter().map(|m| m.location.to_string()).collect(),
                })
                .collect(),
            created: Utc::now(),
            run: run_id.clone(),
        };
        let record_path = record_path(&partition);
        match os
            .put_opts(
                &record_path,
                PutPayload::from(serde_json::to_vec_pretty(&record).unwrap_or_default()),
                PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                },
            )
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                tracing::info!(
                    partition = partition.dir(),
                    "another run is compacting the partition"
                );
                report.busy += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        hook.at("recorded").await?;
        // Our listing may predate another run's compaction of this partition that finished
        // (sources and record deleted) before our record was created: then some of our
        // sources are gone, and the partition is left for the next run.
        if !sources_present(os.as_ref(), record.groups.iter().flat_map(|g| &g.sources)).await? {
            tracing::info!(
                partition = partition.dir(),
                "another run compacted the partition meanwhile"
            );
            delete_record(os.as_ref(), &record_path, &record).await?;
            report.busy += 1;
            continue;
        }
        report.partitions += 1;
        report.files_before += groups.iter().map(Vec::len).sum::<usize>();
        report.bytes_before += groups.iter().flatten().map(|m| m.size).sum::<u64>();
        let Some(_) = write_targets(
            &store,
            &record_path,
            &record,
            true,
            memory,
            &mut report,
            &mut hook,
        )
        .await?
        else {
            continue;
        };
        if grace <= chrono::Duration::zero() {
            retire(os.as_ref(), &record_path, &record, &mut hook).await?;
        } else {
            report.awaiting_cleanup += 1;
        }
        tracing::info!(
            partition = partition.dir(),
            sources = groups.iter().map(Vec::len).sum::<usize>(),
            targets = record.groups.len(),
            "compacted"
        );
    }
    Ok(if o.json {
        format!("{}\n", serde_json::to_string(&report).unwrap_or_default())
    } else {
        format!(
            "{}{} partitions: {} files ({} bytes) -> {} files ({} bytes); {} compactions finished \
             from an earlier run; {} wait {} before their sources are deleted; {} partitions \
             left to another run; {} copies of spans delivered twice dropped\n",
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
            o.grace,
            report.busy,
            report.copies_dropped
        )
    })
}

async fn sources_present(
    os: &dyn ObjectStore,
    sources: impl IntoIterator<Item = &String>,
) -> Result<bool, CurateError> {
    for s in sources {
        match os.head(&ObjectPath::from(s.as_str())).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Writes the record's missing targets; returns when the last target appeared, or `None`
/// when the record was dropped because sources of a missing target are gone (retention
/// deleted the partition, or the record came from a run that lost a race for it).
async fn write_targets(
    store: &schemas::store::Store,
    record_path: &ObjectPath,
    record: &Record,
    fresh: bool,
    memory: u64,
    report: &mut Report,
    hook: &mut Hook,
) -> Result<Option<DateTime<Utc>>, CurateError> {
    let os = store.object_store();
    let mut written = record.created;
    let mut missing = Vec::new();
    for g in &record.groups {
        match os.head(&ObjectPath::from(g.target.as_str())).await {
            Ok(meta) => written = written.max(meta.last_modified),
            Err(object_store::Error::NotFound { .. }) => missing.push(g),
            Err(e) => return Err(e.into()),
        }
    }
    // Checked before any target is written: a record dropped after writing one would leave
    // that target and its sources both visible.
    if !fresh && !sources_present(os.as_ref(), missing.iter().flat_map(|g| &g.sources)).await? {
        tracing::warn!(record = %record_path, "sources gone; dropping the compaction record");
        delete_record(os.as_ref(), record_path, record).await?;
        return Ok(None);
    }
    let mut resumed = false;
    for g in missing {
        let target = ObjectPath::from(g.target.as_str());
        match write_target(store, g, memory).await? {
            Some(Written { size, copies }) => {
                report.copies_dropped += copies;
                if fresh {
                    report.files_after += 1;
                    report.bytes_after += size;
                } else if !resumed {
                    resumed = true;
                    report.resumed += 1;
                }
                written = Utc::now();
                hook.at("written").await?;
            }
            // A concurrent run finishing the same record may have written the target and
            // deleted its sources while we read them.
            None if os.head(&target).await.is_ok() => written = Utc::now(),
            None => {
                tracing::warn!(record = %record_path, "sources gone; dropping the compaction record");
                delete_record(os.as_ref(), record_path, record).await?;
                return Ok(None);
            }
        }
    }
    Ok(Some(written))
}

/// Deletes a finished compaction's sources, then its record (idempotent).
async fn retire(
    os: &dyn ObjectStore,
    record_path: &ObjectPath,
    record: &Record,
    hook: &mut Hook,
) -> Result<(), CurateError> {
    for s in record.groups.iter().flat_map(|g| &g.sources) {
        match os.delete(&ObjectPath::from(s.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        hook.at("retiring").await?;
    }
    delete_record(os, record_path, record).await
}

/// Deletes the record at `path` if it is still `record`: the partition's record name is used
/// again by the next compaction, which a slow run must not delete.
async fn delete_record(
    os: &dyn ObjectStore,
    path: &ObjectPath,
    record: &Record,
) -> Result<(), CurateError> {
    let current = match os.get(path).await {
        Ok(r) => r.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let same = serde_json::from_slice::<Record>(&current)
        .is_ok_and(|c| c.run == record.run && c.created == record.created);
    if same {
        match os.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads the group's sources, sorts their rows by (trace_id, start_time) and writes the
/// target; returns its size, or `None` if a source is gone.
async fn write_target(
    store: &schemas::store::Store,
    group: &Group,
    memory: u64,
) -> Result<Option<Written>, CurateError> {
    let os = store.object_store();
    let mut sources = Vec::with_capacity(group.sources.len());
    for s in &group.sources {
        match os.get(&ObjectPath::from(s.as_str())).await {
            Ok(r) => sources.push(Source {
                name: s,
                bytes: r.bytes().await?,
            }),
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    // The rows are sorted by their keys alone, read first: memory holds the keys of every
    // row, and the other columns of one range of the sorted rows at a time.
    let mut keys = Vec::with_capacity(sources.len());
    for source in &sources {
        keys.push(source.keys()?);
    }
    let rows: Vec<(usize, usize)> = keys
        .iter()
        .enumerate()
        .flat_map(|(b, k)| (0..k[0].len()).map(move |r| (b, r)))
        .collect();
    let key = |i: usize| concat(&keys.iter().map(|k| k[i].as_ref()).collect::<Vec<_>>());
    let (trace, start, span) = (key(0)?, key(1)?, key(2)?);
    drop(keys);
    let order = lexsort_to_indices(
        &[trace.clone(), start, span.clone()].map(|values| SortColumn {
            values,
            options: None,
        }),
        None,
    )?;
    let (kept, copies) = without_copies(&order, &trace, &span, &rows)?;
    drop((order, trace, span, rows));

    let passes = sources
        .first()
        .map(Source::decoded_bytes_per_row)
        .transpose()?
        .map_or(1, |per_row| {
            (per_row * kept.len() as u64).div_ceil(memory).max(1)
        });
    if passes > 1 {
        tracing::info!(
            target = %group.target,
            rows = kept.len(),
            passes,
            "the merged file's spans decode to more than --memory: writing it in passes"
        );
    }
    let schema = schemas::span_table::span_schema();
    let mut writer = SpanFileWriter::new()
        .map_err(|e| CurateError::JobFailed(format!("writing {}: {e}", group.target)))?;
    let per_pass = kept.len().div_ceil(passes as usize).max(1);
    for range in kept.chunks(per_pass) {
        // Each source's rows in this range, in file order, read with all their columns.
        let mut wanted: Vec<Vec<usize>> = vec![Vec::new(); sources.len()];
        for &(b, r) in range {
            wanted[b].push(r);
        }
        let mut read = Vec::with_capacity(sources.len());
        for (source, rows) in sources.iter().zip(&mut wanted) {
            rows.sort_unstable();
            read.push(source.read(rows)?);
        }
        // (source, row in file) -> (source, row among those read).
        let at = range
            .iter()
            .map(|&(b, r)| {
                let rank = wanted[b].binary_search(&r).map_err(|_| {
                    CurateError::JobFailed(format!("{}: a sorted row was not read", group.target))
                })?;
                Ok((b, rank))
            })
            .collect::<Result<Vec<_>, CurateError>>()?;
        let read: Vec<&RecordBatch> = read.iter().collect();
        for slice in at.chunks(WRITE_SLICE_ROWS) {
            let part = interleave_record_batch(&read, slice)?;
            let part = RecordBatch::try_new(schema.clone(), part.columns().to_vec())?;
            writer
                .write(&part)
                .map_err(|e| CurateError::JobFailed(format!("writing {}: {e}", group.target)))?;
        }
    }
    let bytes = writer
        .finish()
        .map_err(|e| CurateError::JobFailed(format!("writing {}: {e}", group.target)))?;
    let size = bytes.len() as u64;
    store
        .put(&group.target, bytes)
        .await
        .map_err(|e| CurateError::JobFailed(format!("writing {}: {e}", group.target)))?;
    Ok(Some(Written { size, copies }))
}

/// A source file of a merge, in memory as stored.
struct Source<'a> {
    name: &'a str,
    bytes: Bytes,
}

/// Rows decoded to estimate a source's bytes per decoded row.
const SAMPLE_ROWS: usize = 4096;

impl Source<'_> {
    fn failed(&self, e: impl std::fmt::Display) -> CurateError {
        CurateError::JobFailed(format!("reading {}: {e}", self.name))
    }

    fn reader(&self) -> Result<ParquetRecordBatchReaderBuilder<Bytes>, CurateError> {
        ParquetRecordBatchReaderBuilder::try_new(self.bytes.clone()).map_err(|e| self.failed(e))
    }

    /// The sort keys of every row: trace id, start time, span id.
    fn keys(&self) -> Result<[ArrayRef; 3], CurateError> {
        use schemas::columns::{SPAN_ID, START_TIME, TRACE_ID};
        let builder = self.reader()?;
        let mask =
            ProjectionMask::columns(builder.parquet_schema(), [TRACE_ID, START_TIME, SPAN_ID]);
        let keys = self.read_all(builder.with_projection(mask).with_batch_size(64 * 1024))?;
        // In the order the sort wants, whatever the file's column order.
        let column = |name: &str| {
            keys.column_by_name(name).cloned().ok_or_else(|| {
                CurateError::JobFailed(format!("span file {} without column {name}", self.name))
            })
        };
        Ok([column(TRACE_ID)?, column(START_TIME)?, column(SPAN_ID)?])
    }

    /// Memory a decoded row takes, from the first rows of the file.
    fn decoded_bytes_per_row(&self) -> Result<u64, CurateError> {
        let sample = self.read_all(
            self.reader()?
                .with_batch_size(SAMPLE_ROWS)
                .with_limit(SAMPLE_ROWS),
        )?;
        Ok((sample.get_array_memory_size() / sample.num_rows().max(1)) as u64)
    }

    /// The rows at `rows` (sorted), every column, as one batch.
    fn read(&self, rows: &[usize]) -> Result<RecordBatch, CurateError> {
        // Up to the last row wanted: the reader stops there.
        let end = rows.last().map_or(0, |&r| r + 1);
        let selection = RowSelection::from_consecutive_ranges(rows.iter().map(|&r| r..r + 1), end);
        self.read_all(
            self.reader()?
                .with_row_selection(selection)
                .with_row_selection_policy(RowSelectionPolicy::Selectors)
                .with_batch_size(rows.len().max(1)),
        )
    }

    /// What `builder` reads, as one batch (a single batch read is not copied).
    fn read_all(
        &self,
        builder: ParquetRecordBatchReaderBuilder<Bytes>,
    ) -> Result<RecordBatch, CurateError> {
        let reader = builder.build().map_err(|e| self.failed(e))?;
        let schema = datafusion::arrow::array::RecordBatchReader::schema(&reader);
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.failed(e))?;
        Ok(datafusion::arrow::compute::concat_batches(
            &schema, &batches,
        )?)
    }
}

/// A compacted file: its size, and the stored copies of spans it left out.
struct Written {
    size: u64,
    copies: usize,
}

/// Rows written to the target per slice.
const WRITE_SLICE_ROWS: usize = 8192;

/// The rows of `order` (indices into `trace` and `span`, sorted by trace id, start and span
/// id) without the second and later copies of a span, as (source batch, row) through `rows`,
/// and how many copies were left out. OTLP delivery is at least once, and a client that
/// re-sends a request whose answer it lost stores its spans twice. Copies have the same trace
/// id, span id and start, so they sort next to each other.
fn without_copies(
    order: &UInt32Array,
    trace: &ArrayRef,
    span: &ArrayRef,
    rows: &[(usize, usize)],
) -> Result<(Vec<(usize, usize)>, usize), CurateError> {
    let strings = |a: &ArrayRef, name: &str| {
        a.as_string_opt::<i32>()
            .cloned()
            .ok_or_else(|| CurateError::JobFailed(format!("span file without text column {name}")))
    };
    let trace = strings(trace, schemas::columns::TRACE_ID)?;
    let span = strings(span, schemas::columns::SPAN_ID)?;
    let mut kept = Vec::with_capacity(order.len());
    let mut previous: Option<usize> = None;
    for i in order.values().iter().map(|&i| i as usize) {
        let copy = previous
            .is_some_and(|p| trace.value(i) == trace.value(p) && span.value(i) == span.value(p));
        if !copy {
            kept.push(rows[i]);
        }
        previous = Some(i);
    }
    let copies = order.len() - kept.len();
    Ok((kept, copies))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_earlier_versions_read_as_one_group() -> Result<(), serde_json::Error> {
        let old: Record = serde_json::from_str(
            r#"{"target": "spans/tenant=a/date=2026-03-02/hour=05/T.parquet",
                "sources": ["spans/tenant=a/date=2026-03-02/hour=05/S1.parquet"],
                "created": "2026-03-02T07:00:00Z"}"#,
        )?;
        assert_eq!(old.groups.len(), 1);
        assert!(old.groups[0].target.ends_with("/T.parquet"));
        assert_eq!(old.groups[0].sources.len(), 1);
        let new: Record = serde_json::from_slice(&serde_json::to_vec(&old)?)?;
        assert_eq!(new.groups[0].target, old.groups[0].target);
        assert_eq!(new.created, old.created);
        Ok(())
    }

    const PART: &str = "spans/tenant=t/date=2026-03-02/hour=05";

    async fn put(store: &dyn ObjectStore, path: &str, body: &str) -> object_store::Result<()> {
        let body = PutPayload::from(body.to_string());
        store.put(&ObjectPath::from(path), body).await.map(drop)
    }

    /// A compaction step: `Compact` creates the record and writes the target M of sources
    /// S1 and S2; `Retire` deletes the sources, then the record.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Compact,
        Retire,
    }

    async fn step(store: &dyn ObjectStore, step: Step) -> object_store::Result<()> {
        let record = Record {
            groups: vec![Group {
                target: format!("{PART}/M.parquet"),
                sources: vec![format!("{PART}/S1.parquet"), format!("{PART}/S2.parquet")],
            }],
            created: DateTime::UNIX_EPOCH,
            run: "r".into(),
        };
        let record_path = format!("{RECORDS_DIR}/t.2026-03-02T05.json");
        match step {
            Step::Compact => {
                put(
                    store,
                    &record_path,
                    &serde_json::to_string(&record).unwrap_or_default(),
                )
                .await?;
                put(store, &record.groups[0].target, "m").await
            }
            Step::Retire => {
                for s in &record.groups[0].sources {
                    store.delete(&ObjectPath::from(s.as_str())).await?;
                }
                store.delete(&ObjectPath::from(record_path)).await
            }
        }
    }

    /// The span files a reader's listing of `spans/` shows when `at` happens right before
    /// (`Compact`) or right after (`Retire`) the listing itself.
    async fn listed_when(at: Step) -> object_store::Result<Vec<String>> {
        let inner = Arc::new(object_store::memory::InMemory::new());
        for s in ["S1", "S2"] {
            put(inner.as_ref(), &format!("{PART}/{s}.parquet"), "s").await?;
        }
        if let Step::Retire = at {
            step(inner.as_ref(), Step::Compact).await?;
        }
        let visible = VisibleStore::new(inner.clone(), ObjectPath::default());
        let listing = async {
            if let Step::Compact = at {
                step(inner.as_ref(), at).await?;
            }
            let spans = ObjectPath::from("spans");
            let metas: Vec<ObjectMeta> = inner.list(Some(&spans)).try_collect().await?;
            if let Step::Retire = at {
                step(inner.as_ref(), at).await?;
            }
            Ok(metas)
        };
        let metas = visible.without_superseded(listing, |m| m).await?;
        let mut names: Vec<String> = metas
            .iter()
            .map(|m| m.location.filename().unwrap_or_default().to_string())
            .collect();
        names.sort();
        Ok(names)
    }

    /// A listing taken while compaction writes a target, or while it retires the sources, holds
    /// the sources or the target and nothing deleted: the records are read before and after it.
    #[tokio::test]
    async fn a_listing_during_compaction_holds_sources_or_target() -> object_store::Result<()> {
        assert_eq!(listed_when(Step::Compact).await?, ["M.parquet"]);
        assert_eq!(listed_when(Step::Retire).await?, ["M.parquet"]);
        Ok(())
    }

    #[test]
    fn a_partition_has_one_record_name() {
        let p = Partition::of_path("spans/tenant=acme/date=2026-03-02/hour=05/X.parquet");
        assert_eq!(
            p.as_ref().map(record_path).map(|r| r.to_string()),
            Some("_compaction/acme.2026-03-02T05.json".to_string())
        );
    }
}
