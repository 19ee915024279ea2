//! Span table v1: the Arrow schema of the Parquet files and the writer settings every writer
//! uses, so that all files of a store look alike to readers (DuckDB, pyarrow, DataFusion).

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::columns as c;

/// Version of the span table, written into every Parquet file's key-value metadata.
pub const SCHEMA_VERSION: &str = "1";
/// Key of [`SCHEMA_VERSION`] in the Parquet key-value metadata.
pub const SCHEMA_VERSION_KEY: &str = "trace2eval.schema_version";

/// Rows per Parquet row group: large enough for object storage reads (a row group of LLM spans
/// is a few MiB compressed), small enough to bound writer memory.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;

pub(crate) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

pub(crate) fn map_key_field() -> Field {
    Field::new("keys", DataType::Utf8, false)
}

pub(crate) fn map_value_field() -> Field {
    Field::new("values", DataType::Utf8, true)
}

/// `map<string, string>`: attribute values rendered as text (see [`crate::convert`]); a value
/// is null when the OTLP `AnyValue` was empty.
pub fn attribute_map_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![map_key_field(), map_value_field()])),
            false,
        )),
        false,
    )
}

pub(crate) fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new(c::event::TIME, timestamp_type(), false),
        Field::new(c::event::NAME, DataType::Utf8, false),
        Field::new(c::event::ATTRIBUTES, attribute_map_type(), false),
        Field::new(c::event::DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
    ])
}

pub(crate) fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new(c::link::TRACE_ID, DataType::Utf8, false),
        Field::new(c::link::SPAN_ID, DataType::Utf8, false),
        Field::new(c::link::TRACE_STATE, DataType::Utf8, true),
        Field::new(c::link::ATTRIBUTES, attribute_map_type(), false),
        Field::new(c::link::DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
        Field::new(c::link::FLAGS, DataType::UInt32, true),
    ])
}

pub(crate) fn list_item_field(fields: Fields) -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(fields), false))
}

static SPAN_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let count = |name: &str| Field::new(name, DataType::UInt32, false);
    let fields = vec![
        text(c::TRACE_ID, false),
        text(c::SPAN_ID, false),
        text(c::PARENT_SPAN_ID, true),
        text(c::TRACE_STATE, true),
        Field::new(c::FLAGS, DataType::UInt32, true),
        text(c::NAME, false),
        text(c::KIND, false),
        Field::new(c::START_TIME, timestamp_type(), false),
        Field::new(c::END_TIME, timestamp_type(), false),
        Field::new(c::DURATION_NS, DataType::Int64, false),
        text(c::STATUS_CODE, false),
        text(c::STATUS_MESSAGE, true),
        text(c::SERVICE_NAME, true),
        Field::new(c::RESOURCE_ATTRIBUTES, attribute_map_type(), false),
        count(c::RESOURCE_DROPPED_ATTRIBUTES_COUNT),
        text(c::RESOURCE_SCHEMA_URL, true),
        text(c::SCOPE_NAME, true),
        text(c::SCOPE_VERSION, true),
        Field::new(c::SCOPE_ATTRIBUTES, attribute_map_type(), false),
        count(c::SCOPE_DROPPED_ATTRIBUTES_COUNT),
        text(c::SCOPE_SCHEMA_URL, true),
        Field::new(c::ATTRIBUTES, attribute_map_type(), false),
        count(c::DROPPED_ATTRIBUTES_COUNT),
        Field::new(
            c::EVENTS,
            DataType::List(list_item_field(event_fields())),
            false,
        ),
        count(c::DROPPED_EVENTS_COUNT),
        Field::new(
            c::LINKS,
            DataType::List(list_item_field(link_fields())),
            false,
        ),
        count(c::DROPPED_LINKS_COUNT),
        text(c::GEN_AI_OPERATION_NAME, true),
        text(c::GEN_AI_PROVIDER_NAME, true),
        text(c::GEN_AI_REQUEST_MODEL, true),
        text(c::GEN_AI_RESPONSE_MODEL, true),
        Field::new(c::GEN_AI_INPUT_TOKENS, DataType::Int64, true),
        Field::new(c::GEN_AI_OUTPUT_TOKENS, DataType::Int64, true),
        text(c::SESSION_ID, true),
        text(c::USER_ID, true),
    ];
    Arc::new(Schema::new(fields))
});

/// The Arrow schema of span table v1 as stored in each Parquet file. The partition columns
/// `tenant`, `date`, `hour` are not in the files; readers take them from the Hive path.
pub fn span_schema() -> SchemaRef {
    SPAN_SCHEMA.clone()
}

/// Columns whose values are (nearly) all distinct, where a dictionary only costs hashing
/// before the writer gives up on it.
const UNIQUE_COLUMNS: [&str; 4] = [c::SPAN_ID, c::START_TIME, c::END_TIME, c::DURATION_NS];

/// zstd level of the files compaction and curate write: batch jobs, where smaller files
/// are worth the CPU.
const COMPACT_ZSTD_LEVEL: i32 = 3;
/// zstd level of the files ingest writes, on the path every span takes: level 1 is the
/// naive path's ("P") and costs 0.94-0.96x the CPU per span of level 3 for 1.04-1.06x the
/// bytes (BENCHMARKS.md, fourteenth session). Compaction rewrites them at level 3.
const INGEST_ZSTD_LEVEL: i32 = 1;

static WRITER_PROPERTIES: LazyLock<WriterProperties> =
    LazyLock::new(|| properties(COMPACT_ZSTD_LEVEL));
static INGEST_WRITER_PROPERTIES: LazyLock<WriterProperties> =
    LazyLock::new(|| properties(INGEST_ZSTD_LEVEL));

fn properties(zstd_level: i32) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(zstd_level).unwrap_or_default(),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_column_bloom_filter_enabled(ColumnPath::from(c::TRACE_ID), true)
        .set_column_bloom_filter_fpp(ColumnPath::from(c::TRACE_ID), 0.01)
        // Sized for a full row group (folded down when smaller), not parquet's default of a
        // million values, which every open file would hold in memory.
        .set_column_bloom_filter_max_ndv(ColumnPath::from(c::TRACE_ID), ROW_GROUP_ROWS as u64)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            SCHEMA_VERSION_KEY.to_string(),
            SCHEMA_VERSION.to_string(),
        )]));
    for name in UNIQUE_COLUMNS {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(name), false);
    }
    // Min/max of the values inside attribute maps, events and links prune nothing (no reader
    // pushes a predicate into a map or list), yet comparing every long message text for them
    // is a visible share of the encoding time. Top-level columns keep page statistics.
    if let Ok(descriptor) = parquet::arrow::ArrowSchemaConverter::new().convert(&SPAN_SCHEMA) {
        for column in descriptor.columns() {
            if column.max_rep_level() > 0 {
                builder = builder
                    .set_column_statistics_enabled(column.path().clone(), EnabledStatistics::None);
            }
        }
    }
    builder.build()
}

/// Writer settings of every span file: zstd, page-level statistics on top-level columns
/// (which also writes the page index), a bloom filter on `trace_id` for trace lookups, no
/// dictionary on columns of unique values, and the schema version. These are compaction's
/// and curate's, at zstd level 3.
pub fn writer_properties() -> WriterProperties {
    WRITER_PROPERTIES.clone()
}

/// [`writer_properties`] at zstd level 1: ingest's, where the CPU per span counts most.
pub fn ingest_writer_properties() -> WriterProperties {
    INGEST_WRITER_PROPERTIES.clone()
}
