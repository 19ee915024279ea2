//! The store's span files as DataFusion reads them: its listing table, with `status_code` and
//! `trace_id` read as Arrow dictionaries.
//!
//! Ingest writes both dictionary-encoded (three statuses; a trace's spans share its id), but
//! the Parquet reader turns a dictionary-encoded column into a string array by copying each
//! row's value out of the dictionary, unless the Arrow schema it reads from the file asks for
//! a dictionary. The files' `ARROW:schema` says `Utf8`, so the table's scans read through
//! [`DictionaryHint`], which swaps a file's `ARROW:schema` for the same schema with those
//! columns as `Dictionary(Int32, Utf8)` when the file was written with [`span_schema`].
//!
//! A filter such as `status_code = 'ERROR'` then compares three dictionary values and the keys
//! instead of every row's string, and the trace ids of the rows it drops are never copied
//! (the reader decodes a filtered column for every row and drops rows afterwards): the
//! `errors` rule on the 10M-span bench store copied 10M statuses and 10M trace ids to keep
//! 643k (BENCHMARKS.md, 2026-12-07). Scans that keep every row pay about what they did: the
//! view's cast copies the same strings the reader used to.
//!
//! The catalog's `span_store` view, which every other view reads, casts these columns back to
//! `Utf8` ([`view_columns`]), so users and the views see strings; DataFusion unwraps that cast
//! in comparisons with literals, so filters still run on the dictionary.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Constraints, Result};
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    DefaultParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::datasource::physical_plan::{FileScanConfig, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::arrow::{ARROW_SCHEMA_META_KEY, encode_arrow_schema};
use datafusion::parquet::errors::Result as ParquetResult;
use datafusion::parquet::file::metadata::{FileMetaData, KeyValue, ParquetMetaData};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::future::BoxFuture;
use object_store::path::Path;
use schemas::columns as c;
use schemas::span_table::span_schema;

use crate::key_prune::key_filter;

/// String columns read as dictionaries: dictionary-encoded by ingest, and read by rules
/// that filter on them (`status_code`) or keep a few of their rows (`trace_id`).
const DICTIONARY_COLUMNS: [&str; 2] = [c::STATUS_CODE, c::TRACE_ID];

/// Top-level maps of string keys whose filters `key_prune` can serve from the keys alone.
const MAP_COLUMNS: [&str; 3] = [c::ATTRIBUTES, c::RESOURCE_ATTRIBUTES, c::SCOPE_ATTRIBUTES];

/// The span schema as the reader produces it: [`DICTIONARY_COLUMNS`] as dictionaries.
static READ_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let fields: Vec<Field> = span_schema()
        .fields()
        .iter()
        .map(|f| {
            if DICTIONARY_COLUMNS.contains(&f.name().as_str()) {
                f.as_ref().clone().with_data_type(DataType::Dictionary(
                    Box::new(DataType::Int32),
                    Box::new(f.data_type().clone()),
                ))
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
});

/// The schema of the files' columns as the table reads them.
pub fn read_schema() -> SchemaRef {
    READ_SCHEMA.clone()
}

/// The select list of the catalog's `span_store` view over this table: every file column,
/// the dictionary ones cast back to strings, then `partition_cols`.
pub fn view_columns(partition_cols: &[&str]) -> String {
    span_schema()
        .fields()
        .iter()
        .map(|f| {
            let name = f.name();
            if DICTIONARY_COLUMNS.contains(&name.as_str()) {
                format!("arrow_cast({name}, 'Utf8') AS {name}")
            } else {
                name.clone()
            }
        })
        .chain(partition_cols.iter().map(|p| p.to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The listing table, whose scans read through [`DictionaryHint`]. The catalog's
/// `span_store` view over it casts [`DICTIONARY_COLUMNS`] back to strings ([`view_columns`]).
#[derive(Debug)]
pub struct SpanStore {
    listing: ListingTable,
}

impl SpanStore {
    /// `listing` must have been built with [`read_schema`] as its file schema.
    pub fn new(listing: ListingTable) -> Self {
        Self { listing }
    }
}

/// The `ARROW:schema` of files written with [`span_schema`], and the one that replaces it.
static ENCODED: LazyLock<(String, String)> = LazyLock::new(|| {
    (
        encode_arrow_schema(&span_schema()),
        encode_arrow_schema(&read_schema()),
    )
});

/// Hands the Parquet reader [`read_schema`] for the files written with [`span_schema`], by
/// replacing their `ARROW:schema` in the metadata it reads (its own reader, cached or not,
/// does the reading). Other files keep theirs, and DataFusion casts their columns to the
/// table's types as before: a file of another schema is read, not refused.
///
/// It also hands the reader the metadata a scan already read, by file: `key_prune` reads it
/// with the page index before the scan, which then needs neither the footer again nor the
/// page index it would not have loaded itself (the reader fetches only the pages that hold
/// the selected rows).
#[derive(Debug)]
struct DictionaryHint {
    inner: Arc<dyn ParquetFileReaderFactory>,
    known: Arc<HashMap<Path, Arc<ParquetMetaData>>>,
}

impl ParquetFileReaderFactory for DictionaryHint {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let known = self.known.get(&file.object_meta.location).cloned();
        let inner = self
            .inner
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(HintedReader { inner, known }))
    }
}

struct HintedReader {
    inner: Box<dyn AsyncFileReader + Send>,
    known: Option<Arc<ParquetMetaData>>,
}

impl AsyncFileReader for HintedReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, ParquetResult<Bytes>> {
        self.inner.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, ParquetResult<Vec<Bytes>>> {
        self.inner.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, ParquetResult<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let metadata = match self.known.clone() {
                Some(known) => known,
                None => self.inner.get_metadata(options).await?,
            };
            Ok(with_read_schema(metadata))
        })
    }
}

/// `metadata` with [`read_schema`] as its `ARROW:schema` if it was [`span_schema`].
fn with_read_schema(metadata: Arc<ParquetMetaData>) -> Arc<ParquetMetaData> {
    let (written, read) = &*ENCODED;
    let file = metadata.file_metadata();
    let Some(pairs) = file.key_value_metadata() else {
        return metadata;
    };
    if !pairs
        .iter()
        .any(|kv| kv.key == ARROW_SCHEMA_META_KEY && kv.value.as_ref() == Some(written))
    {
        return metadata;
    }
    let pairs = pairs
        .iter()
        .map(|kv| match kv.key.as_str() {
            ARROW_SCHEMA_META_KEY => KeyValue::new(kv.key.clone(), read.clone()),
            _ => kv.clone(),
        })
        .collect();
    let file = FileMetaData::new(
        file.version(),
        file.num_rows(),
        file.created_by().map(String::from),
        Some(pairs),
        file.schema_descr_ptr(),
        file.column_orders().cloned(),
    );
    let patched = ParquetMetaData::new(file, metadata.row_groups().to_vec())
        .into_builder()
        .set_column_index(metadata.column_index().cloned())
        .set_offset_index(metadata.offset_index().cloned())
        .build();
    Arc::new(patched)
}

/// `plan` with the configuration of each of its Parquet scans replaced by what `edit` makes
/// of it (the scan's configuration and its Parquet source).
pub(crate) fn map_parquet_scans(
    plan: Arc<dyn ExecutionPlan>,
    mut edit: impl FnMut(&FileScanConfig, &ParquetSource) -> Result<FileScanConfig>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_down(|node| {
        let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some((config, source)) = exec.downcast_to_file_source::<ParquetSource>() else {
            return Ok(Transformed::no(node));
        };
        let exec = exec
            .clone()
            .with_data_source(Arc::new(edit(config, source)?));
        Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

/// `plan` with every Parquet scan reading through [`DictionaryHint`], which hands the reader
/// the metadata in `known`.
fn with_dictionary_hint(
    plan: Arc<dyn ExecutionPlan>,
    state: &dyn Session,
    known: HashMap<Path, Arc<ParquetMetaData>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let known = Arc::new(known);
    map_parquet_scans(plan, |config, source| {
        let inner = match source.parquet_file_reader_factory() {
            Some(inner) => inner.clone(),
            None => Arc::new(DefaultParquetFileReaderFactory::new(
                state.runtime_env().object_store(&config.object_store_url)?,
            )),
        };
        let source = source
            .clone()
            .with_parquet_file_reader_factory(Arc::new(DictionaryHint {
                inner,
                known: known.clone(),
            }));
        let mut config = config.clone();
        config.file_source = Arc::new(source);
        Ok(config)
    })
}

#[async_trait]
impl TableProvider for SpanStore {
    fn schema(&self) -> SchemaRef {
        self.listing.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.listing.constraints()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let args = ScanArgs::default()
            .with_projection(projection.map(|p| p.as_slice()))
            .with_filters(Some(filters))
            .with_limit(limit);
        Ok(self.scan_with_args(state, args).await?.into_inner())
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> Result<ScanResult> {
        let key_filter = args
            .filters()
            .and_then(|filters| key_filter(filters, &MAP_COLUMNS));
        let plan = self.listing.scan_with_args(state, args).await?.into_inner();
        let (plan, known) = match key_filter {
            Some(filter) => crate::key_prune::prune(plan, state, &filter).await?,
            None => (plan, HashMap::new()),
        };
        Ok(ScanResult::new(with_dictionary_hint(plan, state, known)?))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.listing.supports_filters_pushdown(filters)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use datafusion::arrow::util::pretty::pretty_format_batches;
    use schemas::opentelemetry_proto::tonic::trace::v1::{Span, Status};

    use super::{read_schema, span_schema};
    use datafusion::arrow::datatypes::DataType;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A store of 30 spans as ingest writes them: status ERROR for every third, OK for every
    /// fifth of the others, UNSET for the rest. Returns its files.
    fn store(dir: &std::path::Path) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
        let start = 1_772_000_000_000_000_000u64;
        let spans = (0u8..30)
            .map(|n| Span {
                trace_id: vec![n / 3 + 1; 16],
                span_id: vec![n + 1; 8],
                name: "step".into(),
                start_time_unix_nano: start,
                end_time_unix_nano: start + 1_000,
                status: Some(Status {
                    code: if n % 3 == 0 {
                        2
                    } else if n % 5 == 0 {
                        1
                    } else {
                        0
                    },
                    message: String::new(),
                }),
                ..Default::default()
            })
            .collect();
        crate::test_store::write(dir, spans)
    }

    #[tokio::test]
    async fn status_is_a_string_to_users_and_filtered_as_a_dictionary() -> TestResult {
        let dir = tempfile::tempdir()?;
        store(dir.path())?;
        let catalog = crate::test_store::open(dir.path()).await?;
        let counts = catalog
            .ctx
            .sql(
                "SELECT status_code, arrow_typeof(status_code) AS type, count(*) AS n \
                 FROM spans WHERE arrow_typeof(trace_id) = 'Utf8' GROUP BY 1, 2 ORDER BY 1",
            )
            .await?
            .collect()
            .await?;
        let counts = pretty_format_batches(&counts)?.to_string();
        for row in [
            "| ERROR       | Utf8 | 10 |",
            "| OK          | Utf8 | 4  |",
            "| UNSET       | Utf8 | 16 |",
        ] {
            assert!(counts.contains(row), "{row} not in\n{counts}");
        }
        // Every view shows the dictionary columns as strings.
        let types = catalog
            .ctx
            .sql(
                "SELECT DISTINCT data_type FROM information_schema.columns \
                 WHERE column_name IN ('status_code', 'trace_id', 'eval_trace_id', 'judged_trace_id') \
                 AND table_name <> 'span_files'",
            )
            .await?
            .collect()
            .await?;
        let types = pretty_format_batches(&types)?.to_string();
        assert!(
            types.contains("| Utf8 ") && !types.contains("Dictionary"),
            "{types}"
        );
        let errors = "SELECT DISTINCT trace_id FROM spans WHERE status_code = 'ERROR'";
        let traces = catalog.ctx.sql(errors).await?.collect().await?;
        assert_eq!(traces.iter().map(|b| b.num_rows()).sum::<usize>(), 10);
        // The filter compares the dictionary, not a string made for each row.
        let plan = catalog.ctx.sql(errors).await?.into_optimized_plan()?;
        let plan = plan.display_indent().to_string();
        assert!(
            plan.contains(r#"status_code = Dictionary(Int32, Utf8("ERROR"))"#),
            "{plan}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_file_of_another_schema_is_read_too() -> TestResult {
        use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
        use datafusion::parquet::arrow::ArrowWriter;

        let dir = tempfile::tempdir()?;
        store(dir.path())?;
        let other = RecordBatch::try_from_iter([
            (
                "trace_id",
                Arc::new(StringArray::from(vec!["ff".repeat(16)])) as ArrayRef,
            ),
            ("status_code", Arc::new(StringArray::from(vec!["ERROR"]))),
        ])?;
        let path = dir
            .path()
            .join("spans/tenant=default/date=2026-02-25/hour=06/other.parquet");
        std::fs::create_dir_all(path.parent().ok_or("no parent")?)?;
        let mut writer = ArrowWriter::try_new(std::fs::File::create(&path)?, other.schema(), None)?;
        writer.write(&other)?;
        writer.close()?;
        let catalog = crate::test_store::open(dir.path()).await?;
        let traces = catalog
            .ctx
            .sql("SELECT DISTINCT trace_id FROM spans WHERE status_code = 'ERROR'")
            .await?
            .collect()
            .await?;
        let traces = pretty_format_batches(&traces)?.to_string();
        assert_eq!(traces.matches("| ").count(), 12, "{traces}");
        assert!(traces.contains(&"ff".repeat(16)), "{traces}");
        Ok(())
    }

    #[test]
    fn ingest_files_are_read_with_status_and_trace_id_as_dictionaries() -> TestResult {
        use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
        use datafusion::parquet::file::metadata::ParquetMetaDataReader;

        let dir = tempfile::tempdir()?;
        let files = store(dir.path())?;
        let file = files.first().ok_or("no file written")?;
        let metadata = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes::Bytes::from(std::fs::read(file)?))?;
        let read = |m| ArrowReaderMetadata::try_new(m, ArrowReaderOptions::new());
        let as_written = read(Arc::new(metadata.clone()))?;
        assert_eq!(as_written.schema().fields(), span_schema().fields());
        let hinted = read(super::with_read_schema(Arc::new(metadata)))?;
        assert_eq!(hinted.schema().fields(), read_schema().fields());
        for column in ["status_code", "trace_id"] {
            assert!(matches!(
                hinted.schema().field_with_name(column)?.data_type(),
                DataType::Dictionary(..)
            ));
        }
        Ok(())
    }
}
