//! The store's span files as DataFusion reads them: its listing table, with the columns of a
//! handful of distinct values (`status_code`) read as Arrow dictionaries.
//!
//! Ingest writes `status_code` dictionary-encoded (three values), but the Parquet reader turns
//! a dictionary-encoded column into a string array by copying each row's value out of the
//! dictionary, unless the Arrow schema it is given asks for a dictionary. The files' own
//! `ARROW:schema` says `Utf8`, so every file of a scan is handed the span schema with those
//! columns as `Dictionary(Int32, Utf8)` (DataFusion then also skips decoding each file's
//! `ARROW:schema`). A filter such as `status_code = 'ERROR'` then compares three dictionary
//! values and the keys instead of every row's string: the `errors` rule's scan of the
//! 10M-span bench store decoded 10M strings for it (BENCHMARKS.md, 2026-12-07).
//!
//! The `spans` view casts these columns back to `Utf8` ([`view_columns`]), so users and the
//! other views see strings; DataFusion unwraps that cast in comparisons with literals, so
//! filters still run on the dictionary.
//!
//! Every file under `spans/` is written by ingest or compaction with [`span_schema`]; a file
//! of another schema fails the scan with the Parquet reader's schema error.

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Constraints, Result};
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use schemas::columns as c;
use schemas::span_table::span_schema;

/// String columns read as dictionaries: few distinct values, filtered on by rules.
const DICTIONARY_COLUMNS: [&str; 1] = [c::STATUS_CODE];

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

/// The select list of the `spans` view over this table: every file column, the dictionary
/// ones cast back to strings, then `partition_cols`.
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

/// The listing table, whose scans hand each file [`read_schema`].
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

/// `plan` with every Parquet scan's files given [`read_schema`].
fn with_read_schema(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_down(|node| {
        let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(Transformed::no(node));
        };
        let mut config = config.clone();
        for group in &mut config.file_groups {
            let files = std::mem::take(group).into_inner();
            *group = files
                .into_iter()
                .map(|f| f.with_arrow_schema(read_schema()))
                .collect::<Vec<_>>()
                .into();
        }
        let exec = exec.clone().with_data_source(Arc::new(config));
        Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
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
        let plan = self.listing.scan_with_args(state, args).await?.into_inner();
        Ok(ScanResult::new(with_read_schema(plan)?))
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
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use schemas::opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    use crate::catalog::{Catalog, CatalogOptions};
    use crate::window::Window;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A store of 30 spans as ingest writes them: status ERROR for every third, OK for every
    /// fifth of the others, UNSET for the rest.
    fn store(dir: &std::path::Path) -> TestResult {
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
        let request = [ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }];
        for (partition, batch) in schemas::convert::to_record_batches("default", &request)? {
            let path = dir.join(partition.file_path("01JTEST0000000000000000000"));
            std::fs::create_dir_all(path.parent().ok_or("no parent")?)?;
            std::fs::write(path, schemas::parquet_file::write_span_file(&[batch])?)?;
        }
        Ok(())
    }

    async fn open(dir: &std::path::Path) -> Result<Catalog, Box<dyn std::error::Error>> {
        Ok(Catalog::open(
            &dir.display().to_string(),
            CatalogOptions {
                window: Window::ALL,
                tenant: None,
                prices: schemas::prices::Prices::default_table()?,
            },
        )
        .await?)
    }

    #[tokio::test]
    async fn status_is_a_string_to_users_and_filtered_as_a_dictionary() -> TestResult {
        let dir = tempfile::tempdir()?;
        store(dir.path())?;
        let catalog = open(dir.path()).await?;
        let counts = catalog
            .ctx
            .sql(
                "SELECT status_code, arrow_typeof(status_code) AS type, count(*) AS n \
                 FROM spans GROUP BY 1, 2 ORDER BY 1",
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
}
