//! Scans that need a map key read only the spans that carry it.
//!
//! A filter such as `attributes['feedback.score'] < 0` (`negative-feedback`) or
//! `attributes['gen_ai.evaluation.name'] IS NOT NULL` (the `evals` view) can only be true for
//! spans whose map holds one of a few keys. The message texts in the attribute values are
//! nearly all of a span's bytes (~1.1 KB of ~1.2 KB uncompressed in the bench corpus), while
//! the keys are a short dictionary; yet neither DataFusion nor the Parquet reader reads a map's
//! keys without its values, so such a filter used to decompress and decode every value of the
//! store.
//!
//! Before such a scan, each file's key column is read alone (the Parquet leaf with its levels,
//! [`rows_with_keys`]) to find the rows that carry a key. The scan then reads those rows only:
//! each file gets a [`ParquetAccessPlan`] of its row selections, and files without such rows
//! are left out. The file's metadata is read here with its page index and handed to the scan
//! (see `span_store`), so the reader fetches only the pages that hold selected rows.
//!
//! [`key_filter`] finds the keys: a predicate that is not true (false or null) for every row
//! whose map holds none of them. It understands comparisons, `LIKE`, `IN`, `BETWEEN`,
//! `IS NOT NULL`, `AND`, `OR`, casts and a few string functions that return null for a null
//! argument; any other expression prunes nothing.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, Bytes};
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetSource;
use datafusion::datasource::physical_plan::parquet::{
    DefaultParquetFileReaderFactory, ParquetAccessPlan, ParquetFileReaderFactory, RowGroupAccess,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection};
use datafusion::parquet::basic::Encoding;
use datafusion::parquet::column::page::{Page, PageReader};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{ColumnChunkMetaData, PageIndexPolicy, ParquetMetaData};
use datafusion::parquet::file::reader::{ChunkReader, Length};
use datafusion::parquet::file::serialized_reader::SerializedPageReader;
use datafusion::parquet::schema::types::{ColumnDescPtr, SchemaDescriptor};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use object_store::ObjectStore;
use object_store::path::Path;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Keys of one map column: a row whose map holds none of them cannot pass the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFilter {
    pub column: String,
    pub keys: BTreeSet<String>,
}

impl KeyFilter {
    fn one(column: &str, key: &str) -> Self {
        Self {
            column: column.to_string(),
            keys: BTreeSet::from([key.to_string()]),
        }
    }
}

/// Functions that return null when an argument is null, as DataFusion implements them.
const STRICT_FUNCTIONS: [&str; 11] = [
    "lower",
    "upper",
    "btrim",
    "ltrim",
    "rtrim",
    "character_length",
    "octet_length",
    "starts_with",
    "ends_with",
    "strpos",
    "substr",
];

/// Binary operators whose result is null when an operand is null.
fn strict(op: Operator) -> bool {
    use Operator::*;
    matches!(
        op,
        Eq | NotEq
            | Lt
            | LtEq
            | Gt
            | GtEq
            | Plus
            | Minus
            | Multiply
            | Divide
            | Modulo
            | LikeMatch
            | ILikeMatch
            | NotLikeMatch
            | NotILikeMatch
            | RegexMatch
            | RegexIMatch
            | RegexNotMatch
            | RegexNotIMatch
    )
}

/// The fewest keys of one of `map_columns` that a row must hold for all of `filters` (a
/// scan's conjunction) to be true; `None` when no filter needs a key.
pub fn key_filter(filters: &[Expr], map_columns: &[&str]) -> Option<KeyFilter> {
    filters
        .iter()
        .filter_map(needs)
        .filter(|k| map_columns.contains(&k.column.as_str()))
        .min_by_key(|k| k.keys.len())
}

/// Keys such that the predicate `e` is not true for a row whose map holds none of them.
fn needs(e: &Expr) -> Option<KeyFilter> {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => match (needs(left), needs(right)) {
            (Some(l), Some(r)) => Some(if r.keys.len() < l.keys.len() { r } else { l }),
            (l, r) => l.or(r),
        },
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let (mut l, r) = (needs(left)?, needs(right)?);
            (l.column == r.column).then(|| {
                l.keys.extend(r.keys);
                l
            })
        }
        Expr::IsNotNull(inner) => null_without(inner),
        // NOT of a predicate that is false without the key is true without it.
        Expr::Not(_) | Expr::IsNull(_) => None,
        other => null_without(other),
    }
}

/// Keys such that the value `e` is null for a row whose map holds none of them.
fn null_without(e: &Expr) -> Option<KeyFilter> {
    match e {
        Expr::Alias(a) => null_without(&a.expr),
        Expr::Cast(c) => null_without(&c.expr),
        Expr::TryCast(c) => null_without(&c.expr),
        Expr::Negative(x) => null_without(x),
        Expr::BinaryExpr(b) if strict(b.op) => {
            null_without(&b.left).or_else(|| null_without(&b.right))
        }
        Expr::Like(l) | Expr::SimilarTo(l) => {
            null_without(&l.expr).or_else(|| null_without(&l.pattern))
        }
        Expr::InList(l) => null_without(&l.expr),
        Expr::Between(b) => null_without(&b.expr),
        Expr::ScalarFunction(f) if f.name() == "get_field" => match f.args.as_slice() {
            [
                Expr::Column(c),
                Expr::Literal(
                    ScalarValue::Utf8(Some(k))
                    | ScalarValue::LargeUtf8(Some(k))
                    | ScalarValue::Utf8View(Some(k)),
                    _,
                ),
            ] => Some(KeyFilter::one(&c.name, k)),
            _ => None,
        },
        Expr::ScalarFunction(f) if STRICT_FUNCTIONS.contains(&f.name()) => {
            f.args.iter().find_map(null_without)
        }
        _ => None,
    }
}

/// Files whose keys are read at once, at least (more with more target partitions).
const PARALLEL_FILES: usize = 8;

/// What a file's scan reads after its keys were read.
enum Reading {
    /// All of the file, as without pruning: it has no key column to read (another schema),
    /// or its keys are in too many rows to be worth reading by rows.
    All,
    /// The rows that hold a key.
    Rows(Arc<ParquetMetaData>, ParquetAccessPlan),
    /// No row holds a key: the file is left out.
    Nothing,
}

/// `plan` with its Parquet scans reading only the rows that hold one of `filter`'s keys, and
/// the metadata read on the way (with page indexes) of the files read by rows, for the
/// scan's reader.
pub async fn prune(
    plan: Arc<dyn ExecutionPlan>,
    state: &dyn Session,
    filter: &KeyFilter,
) -> Result<(Arc<dyn ExecutionPlan>, HashMap<Path, Arc<ParquetMetaData>>)> {
    let mut files: HashMap<Path, (Arc<dyn ObjectStore>, PartitionedFile)> = HashMap::new();
    plan.apply(|node| {
        if let Some(exec) = node.downcast_ref::<DataSourceExec>()
            && let Some((config, _)) = exec.downcast_to_file_source::<ParquetSource>()
        {
            let store = state.runtime_env().object_store(&config.object_store_url)?;
            for file in config.file_groups.iter().flat_map(|g| g.iter()) {
                let whole = PartitionedFile::from(file.object_meta.clone());
                files.insert(file.object_meta.location.clone(), (store.clone(), whole));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;

    // Files are read in parallel: on a local store the work is the decoding, which runs on
    // the runtime's threads whatever the number; on object storage the round trips
    // (metadata, one key chunk per row group) overlap.
    let filter = Arc::new(filter.clone());
    let density = Arc::new(Density::default());
    let permits = Arc::new(Semaphore::new(
        state.config().target_partitions().max(PARALLEL_FILES),
    ));
    let mut tasks = JoinSet::new();
    for (location, (store, file)) in files {
        let (filter, permits, density) = (filter.clone(), permits.clone(), density.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let reading = read_keys(store, file, &filter, &density).await;
            (location, reading)
        });
    }
    let mut readings = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (location, reading) = joined.map_err(|e| DataFusionError::External(Box::new(e)))?;
        let reading =
            reading.map_err(|e| e.context(format!("reading the map keys of {location}")))?;
        readings.insert(location, reading);
    }

    let plan = crate::span_store::map_parquet_scans(plan, |config, _| {
        let mut config = config.clone();
        config.file_groups = config
            .file_groups
            .into_iter()
            .map(|group| {
                group
                    .into_inner()
                    .into_iter()
                    .filter_map(|mut file| match readings.get(&file.object_meta.location) {
                        Some(Reading::Nothing) => None,
                        Some(Reading::Rows(_, access)) => {
                            file.extensions.insert(access.clone());
                            Some(file)
                        }
                        Some(Reading::All) | None => Some(file),
                    })
                    .collect()
            })
            .collect();
        Ok(config)
    })?;
    // Metadata with page indexes is ~0.1 MB a file here: it is kept for the files read by
    // rows, which need it to skip pages, not for files read whole.
    let metadata = readings
        .into_iter()
        .filter_map(|(location, reading)| match reading {
            Reading::Rows(m, _) => Some((location, m)),
            Reading::All | Reading::Nothing => None,
        })
        .collect();
    Ok((plan, metadata))
}

/// The leaf of `column`'s keys when `column` is a map of one level (`column.entries.keys`).
fn key_leaf(schema: &SchemaDescriptor, column: &str) -> Option<usize> {
    (0..schema.num_columns()).find(|&i| {
        let leaf = schema.column(i);
        let parts = leaf.path().parts();
        parts.len() == 3 && parts[0] == column && leaf.max_rep_level() == 1 && {
            // A map's key is its entries' first field.
            leaf.self_type().is_primitive()
                && i + 1 < schema.num_columns()
                && schema.column(i + 1).path().parts().get(..2) == parts.get(..2)
        }
    })
}

/// Row groups whose selection was worth reading rows by (sparse) and not (dense), so far.
///
/// Reading a selection costs per range of rows. On the 10M-span bench store, against reading
/// every row: a key on 0.17% of the spans took 0.55x the CPU, on 0.9% 0.65x, on 1.55% 0.73x
/// (~64 rows per range), but on 2.4% (~42 rows per range) 1.8x. A row group whose selection
/// has more than one range per [`ROWS_PER_RANGE`] rows is read whole; once most row groups
/// read are such, the other files are read whole without reading their keys.
#[derive(Default)]
struct Density {
    sparse: AtomicUsize,
    dense: AtomicUsize,
}

/// Rows per range of a selection below which a row group is scanned whole.
const ROWS_PER_RANGE: usize = 64;

impl Density {
    fn mostly_dense(&self) -> bool {
        let dense = self.dense.load(Ordering::Relaxed);
        dense >= 4 && dense > self.sparse.load(Ordering::Relaxed)
    }
}

/// Reads `file`'s metadata (with its page index) and, for each row group, the rows whose
/// `filter.column` holds one of `filter.keys`.
async fn read_keys(
    store: Arc<dyn ObjectStore>,
    file: PartitionedFile,
    filter: &KeyFilter,
    density: &Density,
) -> Result<Reading> {
    let metrics = ExecutionPlanMetricsSet::new();
    let mut reader =
        DefaultParquetFileReaderFactory::new(store).create_reader(0, file, None, &metrics)?;
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let metadata = reader.get_metadata(Some(&options)).await?;
    let schema = metadata.file_metadata().schema_descr();
    let Some(leaf) = key_leaf(schema, &filter.column) else {
        return Ok(Reading::All);
    };
    let keys: Vec<&[u8]> = filter.keys.iter().map(|k| k.as_bytes()).collect();
    let mut groups = Vec::with_capacity(metadata.num_row_groups());
    for group in metadata.row_groups() {
        if density.mostly_dense() {
            groups.push(RowGroupAccess::Scan);
            continue;
        }
        let column = group.column(leaf);
        let (start, length) = column.byte_range();
        let bytes = reader.get_bytes(start..start + length).await?;
        let rows = usize::try_from(group.num_rows()).unwrap_or_default();
        let chunk = ChunkAt { start, bytes };
        let Some(ranges) = rows_with_keys(chunk, column, &schema.column(leaf), rows, &keys)? else {
            groups.push(RowGroupAccess::Scan);
            continue;
        };
        let dense = ranges.len().saturating_mul(ROWS_PER_RANGE) > rows;
        let count = if dense {
            &density.dense
        } else {
            &density.sparse
        };
        count.fetch_add(1, Ordering::Relaxed);
        groups.push(match ranges.as_slice() {
            [] => RowGroupAccess::Skip,
            [only] if only.len() == rows => RowGroupAccess::Scan,
            _ if dense => RowGroupAccess::Scan,
            _ => RowGroupAccess::Selection(RowSelection::from_consecutive_ranges(
                ranges.into_iter(),
                rows,
            )),
        });
    }
    if groups.iter().all(|g| matches!(g, RowGroupAccess::Skip)) {
        return Ok(Reading::Nothing);
    }
    if groups.iter().all(|g| matches!(g, RowGroupAccess::Scan)) {
        return Ok(Reading::All);
    }
    Ok(Reading::Rows(metadata, ParquetAccessPlan::new(groups)))
}

/// The rows of one column chunk of a map's keys (`column`) that hold one of `keys`, as
/// ascending ranges of row numbers within the row group; `None` when a page is in an
/// encoding [`by_pages`] does not read.
fn rows_with_keys(
    chunk: ChunkAt,
    column: &ColumnChunkMetaData,
    descr: &ColumnDescPtr,
    rows: usize,
    keys: &[&[u8]],
) -> Result<Option<Vec<Range<usize>>>> {
    let pages = SerializedPageReader::new(Arc::new(chunk), column, rows, None)?;
    let Some(found) = by_pages(Box::new(pages), descr, keys)? else {
        return Ok(None);
    };
    if found.rows != rows {
        return Err(ParquetError::General(format!(
            "map keys: read {} rows of a row group of {rows}",
            found.rows
        ))
        .into());
    }
    Ok(Some(found.ranges))
}

/// Rows found so far: a repetition level of 0 starts the next row.
#[derive(Default)]
struct Found {
    rows: usize,
    ranges: Vec<Range<usize>>,
}

impl Found {
    fn level(&mut self, repetition: u32) {
        if repetition == 0 {
            self.rows += 1;
        }
    }

    /// The row of the last level holds a key.
    fn hit(&mut self) -> std::result::Result<(), ParquetError> {
        let Some(n) = self.rows.checked_sub(1) else {
            return Err(ParquetError::General(
                "map keys: a value before the first row".into(),
            ));
        };
        // Rows come in order: the row is in the last range, right after it, or later.
        match self.ranges.last_mut() {
            Some(last) if last.end > n => {}
            Some(last) if last.end == n => last.end = n + 1,
            _ => self.ranges.push(n..n + 1),
        }
        Ok(())
    }
}

/// The rows with keys, from the pages as they are: levels and dictionary indices decoded
/// here, each dictionary entry compared with the keys once. (Parquet's column reader hands
/// out each value with a reference count: 70% of this step's CPU, 3x its time.) `None` when
/// a page is in an encoding this does not read: levels other than RLE, values other than
/// plain or dictionary, such as the DELTA_BYTE_ARRAY of v2 writers (not ingest's). The row
/// group is then read whole.
fn by_pages(
    mut pages: Box<dyn PageReader>,
    descr: &ColumnDescPtr,
    keys: &[&[u8]],
) -> Result<Option<Found>> {
    let (max_def, max_rep) = (descr.max_def_level(), descr.max_rep_level());
    let mut found = Found::default();
    // Whether each entry of the chunk's dictionary is one of the keys.
    let mut dictionary: Vec<bool> = Vec::new();
    let (mut def, mut rep, mut indices, mut hits) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    while let Some(page) = pages.get_next_page()? {
        let (buf, levels, encoding, v2) = match page {
            Page::DictionaryPage {
                buf,
                num_values,
                encoding: Encoding::PLAIN | Encoding::PLAIN_DICTIONARY,
                ..
            } => {
                let mut rest = &buf[..];
                dictionary.clear();
                for _ in 0..num_values {
                    dictionary.push(keys.contains(&plain_value(&mut rest)?));
                }
                continue;
            }
            Page::DataPage {
                buf,
                num_values,
                encoding,
                def_level_encoding: Encoding::RLE,
                rep_level_encoding: Encoding::RLE,
                ..
            } => (buf, num_values as usize, encoding, None),
            Page::DataPageV2 {
                buf,
                num_values,
                encoding,
                def_levels_byte_len,
                rep_levels_byte_len,
                ..
            } => (
                buf,
                num_values as usize,
                encoding,
                Some((rep_levels_byte_len as usize, def_levels_byte_len as usize)),
            ),
            _ => return Ok(None),
        };
        let mut rest = &buf[..];
        let (rep_len, def_len) = v2.unzip();
        for (levels_out, max, v2_length) in
            [(&mut rep, max_rep, rep_len), (&mut def, max_def, def_len)]
        {
            levels_out.clear();
            if max == 0 {
                levels_out.resize(levels, 0);
                continue;
            }
            // Levels of a v1 page are prefixed with their length; v2 pages give it.
            let length = match v2_length {
                Some(length) => length,
                None => {
                    u32::from_le_bytes(take(&mut rest, 4)?.try_into().unwrap_or_default()) as usize
                }
            };
            let encoded = take(&mut rest, length)?;
            rle_hybrid(encoded, bit_width(max as u32), levels, levels_out)?;
        }
        let present = def.iter().filter(|&&d| d == max_def as u32).count();
        // Whether each value present in the page is one of the keys.
        hits.clear();
        match encoding {
            Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY => {
                let (&width, encoded) = rest.split_first().ok_or_else(short)?;
                rle_hybrid(encoded, u32::from(width), present, &mut indices)?;
                for &i in &indices {
                    hits.push(*dictionary.get(i as usize).ok_or_else(|| {
                        ParquetError::General(format!(
                            "map keys: dictionary index {i} out of range"
                        ))
                    })?);
                }
            }
            Encoding::PLAIN => {
                for _ in 0..present {
                    hits.push(keys.contains(&plain_value(&mut rest)?));
                }
            }
            _ => return Ok(None),
        }
        let mut hit = hits.iter();
        for (&d, &r) in def.iter().zip(&rep) {
            found.level(r);
            if d == max_def as u32 && *hit.next().ok_or_else(short)? {
                found.hit()?;
            }
        }
    }
    Ok(Some(found))
}

fn short() -> ParquetError {
    ParquetError::EOF("map keys: page shorter than its levels and values".into())
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> std::result::Result<&'a [u8], ParquetError> {
    let (head, tail) = rest.split_at_checked(n).ok_or_else(short)?;
    *rest = tail;
    Ok(head)
}

/// A PLAIN byte array: its length (4 bytes, little endian), then its bytes.
fn plain_value<'a>(rest: &mut &'a [u8]) -> std::result::Result<&'a [u8], ParquetError> {
    let length = u32::from_le_bytes(take(rest, 4)?.try_into().unwrap_or_default());
    take(rest, length as usize)
}

/// Bits of a level or index up to `max`.
fn bit_width(max: u32) -> u32 {
    u32::BITS - max.leading_zeros()
}

/// `count` values of Parquet's RLE / bit-packed hybrid encoding of `width` bits each.
fn rle_hybrid(
    mut data: &[u8],
    width: u32,
    count: usize,
    out: &mut Vec<u32>,
) -> std::result::Result<(), ParquetError> {
    if width > 32 {
        return Err(ParquetError::General(format!("bit width {width}")));
    }
    out.clear();
    let mask = (1u64 << width) - 1;
    while out.len() < count {
        let mut header = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, tail) = data.split_first().ok_or_else(short)?;
            data = tail;
            header |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                break;
            }
        }
        let n = usize::try_from(header >> 1).unwrap_or(usize::MAX);
        if n == 0 {
            return Err(ParquetError::General("empty run".into()));
        }
        let wanted = n.min(count - out.len());
        if header & 1 == 0 {
            let bytes = take(&mut data, width.div_ceil(8) as usize)?;
            let value = bytes
                .iter()
                .rev()
                .fold(0u32, |v, &b| (v << 8) | u32::from(b));
            out.extend(std::iter::repeat_n(value, wanted));
        } else {
            // `n` groups of 8 values; a writer may leave out the bytes of unused values.
            let length = n
                .saturating_mul(8)
                .saturating_mul(width as usize)
                .div_ceil(8);
            let packed = &data[..length.min(data.len())];
            data = &data[packed.len()..];
            let wanted = n.saturating_mul(8).min(count - out.len());
            for i in 0..wanted {
                let bit = i * width as usize;
                let mut word = 0u64;
                for (k, &b) in packed.iter().skip(bit / 8).take(5).enumerate() {
                    word |= u64::from(b) << (8 * k);
                }
                out.push(((word >> (bit % 8)) & mask) as u32);
            }
        }
    }
    Ok(())
}

/// The bytes of one column chunk, read where the file has them.
struct ChunkAt {
    start: u64,
    bytes: Bytes,
}

impl ChunkAt {
    fn slice(&self, start: u64, length: usize) -> std::result::Result<Bytes, ParquetError> {
        let from = start
            .checked_sub(self.start)
            .and_then(|o| usize::try_from(o).ok())
            .filter(|&o| o <= self.bytes.len())
            .ok_or_else(|| ParquetError::EOF(format!("offset {start} outside the column chunk")))?;
        let to = from
            .checked_add(length)
            .filter(|&t| t <= self.bytes.len())
            .ok_or_else(|| {
                ParquetError::EOF(format!("{length} bytes at {start} past the chunk"))
            })?;
        Ok(self.bytes.slice(from..to))
    }
}

impl Length for ChunkAt {
    fn len(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

impl ChunkReader for ChunkAt {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> std::result::Result<Self::T, ParquetError> {
        let rest = self.len().saturating_sub(start);
        Ok(self
            .slice(start, usize::try_from(rest).unwrap_or(usize::MAX))?
            .reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> std::result::Result<Bytes, ParquetError> {
        self.slice(start, length)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use datafusion::arrow::datatypes::DataType;
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::datasource::physical_plan::ParquetSource;
    use datafusion::datasource::physical_plan::parquet::ParquetAccessPlan;
    use datafusion::datasource::source::DataSourceExec;
    use datafusion::functions::core::expr_fn::{coalesce, get_field};
    use datafusion::functions::string::expr_fn::lower;
    use datafusion::logical_expr::{Expr, Operator, cast, col, lit, try_cast};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::metadata::ParquetMetaDataReader;
    use datafusion::parquet::file::properties::{WriterProperties, WriterVersion};
    use datafusion::physical_plan::ExecutionPlan;
    use schemas::opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::{ChunkAt, key_filter, key_leaf, rows_with_keys};
    use crate::test_store::text;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const MAPS: [&str; 2] = ["attributes", "resource_attributes"];

    fn key(k: &str) -> Expr {
        get_field(col("attributes"), k)
    }

    fn keys(filters: &[Expr]) -> Option<(String, Vec<String>)> {
        key_filter(filters, &MAPS).map(|f| (f.column, f.keys.into_iter().collect()))
    }

    fn on(column: &str, k: &[&str]) -> Option<(String, Vec<String>)> {
        Some((column.into(), k.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn a_filter_needs_the_keys_without_which_it_cannot_be_true() {
        let negative_feedback = try_cast(key("feedback.score"), DataType::Float64)
            .lt(lit(0.0))
            .or(lower(key("feedback.sentiment")).in_list(vec![lit("negative")], false));
        assert_eq!(
            keys(&[negative_feedback]),
            on("attributes", &["feedback.score", "feedback.sentiment"])
        );
        assert_eq!(keys(&[key("a").is_not_null()]), on("attributes", &["a"]));
        assert_eq!(
            keys(&[col("name").eq(lit("x")), key("a").like(lit("%x%"))]),
            on("attributes", &["a"])
        );
        // Of two filters (or the two sides of AND), the one with fewer keys.
        let two = key("a").eq(lit("1")).or(key("b").eq(lit("2")));
        assert_eq!(
            keys(&[two.clone(), key("c").gt(lit("3"))]),
            on("attributes", &["c"])
        );
        assert_eq!(
            keys(&[two.and(key("c").gt(lit("3")))]),
            on("attributes", &["c"])
        );
        assert_eq!(
            keys(&[
                cast(get_field(col("resource_attributes"), "r"), DataType::Int64)
                    .between(lit(1), lit(2))
            ]),
            on("resource_attributes", &["r"])
        );
        // Filters that can be true for a span without the key prune nothing.
        for unpruned in [
            key("a").is_null(),
            datafusion::logical_expr::not(key("a").eq(lit("x"))),
            coalesce(vec![key("a"), lit("")]).eq(lit("")),
            key("a").eq(lit("x")).or(col("name").eq(lit("y"))),
            key("a")
                .eq(lit("x"))
                .or(get_field(col("resource_attributes"), "r").eq(lit("y"))),
            get_field(col("links"), "a").eq(lit("x")),
            datafusion::logical_expr::binary_expr(key("a"), Operator::IsNotDistinctFrom, lit("x")),
        ] {
            assert_eq!(keys(std::slice::from_ref(&unpruned)), None, "{unpruned}");
        }
    }

    /// Span `n` of a trace per ten spans, starting in hour `n / per_hour`; spans whose number
    /// is in `with` carry `feedback.score = -n`, every span a long message text.
    fn spans(count: u32, per_hour: u32, with: &[u32]) -> Vec<Span> {
        let start = 1_772_000_000_000_000_000u64;
        (0..count)
            .map(|n| {
                let mut attributes = vec![text("gen_ai.prompt.0.content", &"text ".repeat(40))];
                if with.contains(&n) {
                    attributes.push(text("feedback.score", &format!("-{n}")));
                }
                Span {
                    trace_id: [(n / 10 + 1).to_be_bytes(), [7; 4], [7; 4], [7; 4]].concat(),
                    span_id: [(n + 1).to_be_bytes(), [1; 4]].concat(),
                    name: "step".into(),
                    start_time_unix_nano: start + u64::from(n / per_hour) * 3_600_000_000_000,
                    end_time_unix_nano: start + u64::from(n / per_hour) * 3_600_000_000_000 + 1_000,
                    attributes,
                    ..Default::default()
                }
            })
            .collect()
    }

    /// Files of each kind of scan in `plan`: (files with an access plan, files without).
    fn scanned(
        plan: &Arc<dyn ExecutionPlan>,
    ) -> Result<(usize, usize), Box<dyn std::error::Error>> {
        let (mut planned, mut whole) = (0, 0);
        plan.apply(|node| {
            if let Some(exec) = node.downcast_ref::<DataSourceExec>()
                && let Some((config, _)) = exec.downcast_to_file_source::<ParquetSource>()
            {
                for file in config.file_groups.iter().flat_map(|g| g.iter()) {
                    if file.extensions.get::<ParquetAccessPlan>().is_some() {
                        planned += 1;
                    } else {
                        whole += 1;
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok((planned, whole))
    }

    #[tokio::test]
    async fn a_filter_on_a_key_reads_the_spans_that_carry_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        // Hours 0 and 1 have spans with the key, hour 2 none.
        let files = crate::test_store::write(dir.path(), spans(3000, 1000, &[7, 8, 9, 420, 1500]))?;
        assert_eq!(files.len(), 3);
        let catalog = crate::test_store::open(dir.path()).await?;

        let sql = "SELECT span_id, attributes['feedback.score'] AS score FROM spans \
                   WHERE try_cast(attributes['feedback.score'] AS DOUBLE) < -8 ORDER BY span_id";
        let frame = catalog.ctx.sql(sql).await?;
        let plan = frame.clone().create_physical_plan().await?;
        // The file of hour 2 is not read; the others only where the key is.
        assert_eq!(scanned(&plan)?, (2, 0));
        let rows = datafusion::arrow::util::pretty::pretty_format_batches(&frame.collect().await?)?;
        let expected = ["-9", "-420", "-1500"];
        for score in expected {
            assert!(rows.to_string().contains(score), "{score} in\n{rows}");
        }
        assert_eq!(
            rows.to_string().matches("| -").count(),
            expected.len(),
            "{rows}"
        );

        // A filter that a span without the key can pass reads every file whole.
        let all = "SELECT count(*) AS n FROM spans \
                   WHERE coalesce(attributes['feedback.score'], '0') = '0'";
        let frame = catalog.ctx.sql(all).await?;
        assert_eq!(
            scanned(&frame.clone().create_physical_plan().await?)?,
            (0, 3)
        );
        let n = frame.collect().await?;
        assert!(
            datafusion::arrow::util::pretty::pretty_format_batches(&n)?
                .to_string()
                .contains("2995"),
        );

        // A key every span carries: every file is read whole, with every row.
        let common = "SELECT count(*) AS n FROM spans \
                      WHERE attributes['gen_ai.prompt.0.content'] IS NOT NULL";
        let frame = catalog.ctx.sql(common).await?;
        assert_eq!(
            scanned(&frame.clone().create_physical_plan().await?)?,
            (0, 3)
        );
        let n = datafusion::arrow::util::pretty::pretty_format_batches(&frame.collect().await?)?;
        assert!(n.to_string().contains("| 3000 "), "{n}");

        // The rule that reads the key: the same traces as its spans say.
        let rule = crate::rules::builtin_sql("negative-feedback", &Default::default())?;
        let got = catalog
            .ctx
            .sql(&format!("SELECT count(*) AS n FROM ({rule})"))
            .await?
            .collect()
            .await?;
        assert!(
            datafusion::arrow::util::pretty::pretty_format_batches(&got)?
                .to_string()
                .contains("| 3 "),
            "spans 7, 8, 9 (trace 1), 420 (trace 43) and 1500 (trace 151): three traces, got {got:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_key_on_scattered_spans_reads_its_row_groups_whole() -> TestResult {
        let dir = tempfile::tempdir()?;
        // Every third span: more ranges of rows than one per ROWS_PER_RANGE rows.
        let with: Vec<u32> = (0..3000).step_by(3).collect();
        crate::test_store::write(dir.path(), spans(3000, 1000, &with))?;
        let catalog = crate::test_store::open(dir.path()).await?;
        let sql = "SELECT count(*) AS n, sum(try_cast(attributes['feedback.score'] AS BIGINT)) AS s \
                   FROM spans WHERE attributes['feedback.score'] IS NOT NULL";
        let frame = catalog.ctx.sql(sql).await?;
        assert_eq!(
            scanned(&frame.clone().create_physical_plan().await?)?,
            (0, 3)
        );
        let got = datafusion::arrow::util::pretty::pretty_format_batches(&frame.collect().await?)?;
        let sum: i64 = with.iter().map(|&n| -i64::from(n)).sum();
        assert!(
            got.to_string().contains(&format!("| 1000 | {sum} ")),
            "{got}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_file_that_is_not_parquet_fails_the_query_with_its_name() -> TestResult {
        let dir = tempfile::tempdir()?;
        let files = crate::test_store::write(dir.path(), spans(20, 10, &[3]))?;
        let bad = files[1].with_file_name("01JBAD00000000000000000000.parquet");
        std::fs::write(&bad, b"not a parquet file")?;
        let catalog = crate::test_store::open(dir.path()).await?;
        let sql = "SELECT count(*) FROM spans WHERE attributes['feedback.score'] IS NOT NULL";
        let error = match catalog.ctx.sql(sql).await?.collect().await {
            Ok(batches) => return Err(format!("read a broken file: {batches:?}").into()),
            Err(e) => e.to_string(),
        };
        assert!(
            error.contains("01JBAD00000000000000000000.parquet"),
            "{error}"
        );
        Ok(())
    }

    /// Parquet bytes of `spans` written with `props` (the span table's schema).
    fn file(
        spans: Vec<Span>,
        props: WriterProperties,
    ) -> Result<Bytes, Box<dyn std::error::Error>> {
        let request = [ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }];
        let mut writer =
            ArrowWriter::try_new(Vec::new(), schemas::span_table::span_schema(), Some(props))?;
        for (_, batch) in schemas::convert::to_record_batches("default", &request)? {
            writer.write(&batch)?;
        }
        Ok(Bytes::from(writer.into_inner()?))
    }

    #[test]
    fn key_rows_are_exact_in_the_encodings_read_and_others_read_whole() -> TestResult {
        let with: Vec<u32> = (0..3000)
            .filter(|n| n % 97 == 0 || (1200..1300).contains(n))
            .collect();
        let wanted: [&[u8]; 1] = [b"feedback.score"];
        let small_pages = || {
            WriterProperties::builder()
                .set_data_page_row_count_limit(100)
                .set_write_batch_size(100)
        };
        let v2 = WriterVersion::PARQUET_2_0;
        // (settings, whether the pages are in encodings the page reader reads itself: v2
        // writers fall back to DELTA_BYTE_ARRAY, which only the column reader decodes)
        for (what, props, by_page) in [
            (
                "the span table's",
                schemas::span_table::writer_properties(),
                true,
            ),
            (
                "plain",
                small_pages().set_dictionary_enabled(false).build(),
                true,
            ),
            (
                "dictionary, v2",
                small_pages().set_writer_version(v2).build(),
                false,
            ),
            (
                "plain, v2",
                small_pages()
                    .set_dictionary_enabled(false)
                    .set_writer_version(v2)
                    .build(),
                false,
            ),
        ] {
            let bytes = file(spans(3000, 1000, &with), props)?;
            let metadata = ParquetMetaDataReader::new().parse_and_finish(&bytes)?;
            let schema = metadata.file_metadata().schema_descr();
            let leaf = key_leaf(schema, "attributes").ok_or("no key leaf")?;
            let mut base = 0;
            for group in metadata.row_groups() {
                let n = usize::try_from(group.num_rows())?;
                let chunk = ChunkAt {
                    start: 0,
                    bytes: bytes.clone(),
                };
                let expected: Vec<usize> = with
                    .iter()
                    .map(|&r| r as usize)
                    .filter(|r| (base..base + n).contains(r))
                    .collect();
                match rows_with_keys(chunk, group.column(leaf), &schema.column(leaf), n, &wanted)? {
                    Some(found) => {
                        let rows: Vec<usize> =
                            found.into_iter().flatten().map(|r| base + r).collect();
                        assert_eq!(rows, expected, "{what}");
                    }
                    // The row group is then read whole.
                    None => assert!(!by_page, "{what}: pages not read"),
                }
                base += n;
            }
            assert_eq!(base, 3000, "{what}");
        }
        Ok(())
    }
}
