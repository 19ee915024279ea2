//! The catalog: the store's span files as a DataFusion listing table with the explicit v1
//! schema and Hive partitions, and the views every rule and query uses:
//!
//! - `spans`: the table within the time window (and tenant), partition-pruned.
//! - `llm_usage`: one row per span whose token usage counts toward its trace (see below):
//!   trace and span id, model, input and output tokens, cost. Typed columns only.
//! - `llm_calls`: one row per LLM call span, with messages normalised across dialects
//!   (`extract`) and whether its token usage counts toward the trace (`usage_counted`).
//! - `trace_usage`: one row per trace with token usage: LLM calls, input and output tokens,
//!   cost and models, as `traces` has them (`costly` reads it alone, without grouping every
//!   span of the store by trace).
//! - `traces`: one row per trace: root span, times, errors, counts, models, tokens and cost
//!   counted once per call, session and user from whichever span carries them, and `scores`:
//!   a `map<string, double>` of metric -> the latest score of the trace in `evals` (over all
//!   its judged spans), NULL for a trace never judged (not an empty map). Query it as
//!   `scores['faithfulness'] < 0.5`, `scores IS NULL`, `map_keys(scores)`.
//! - `evals`: one row per evaluation score span, with the judged trace and span, pruned to the
//!   partitions from the start of the window on.
//!
//! A query over `traces` that does not read `scores` (every built-in rule, the export) does not
//! scan for score spans: `scores` comes from a LEFT JOIN on a side grouped by trace id, and
//! DataFusion drops such a join when nothing reads from it (see a rule's plan with
//! `curate --sql "EXPLAIN ..."`). Reading `scores` scans the window's spans once more, for
//! their attributes.
//!
//! Token usage is counted once per call. Nested instrumentations (an app's own span,
//! OpenLLMetry's, the provider SDK's native span, OpenInference's) repeat one call's usage on
//! several spans, as parent and child or as siblings. The rule: a span with token counts is
//! skipped when one of its children has token counts too (it wraps the call or sums several),
//! and of the remaining spans of a trace, those with the same input and output counts whose
//! time ranges overlap, directly or through a chain of such spans, are one call, counted once
//! (on the one with the smallest span id), as the export (`export::calls`) groups them.
//! Instrumentations of one call, nested or siblings, always overlap in time; two calls made
//! one after the other do not, so they count twice even with equal counts. Two concurrent
//! calls of one trace with exactly equal counts are still counted once; a span summing usage
//! over grandchildren (through a span without usage) is counted as well. `usage` has the rule
//! as a function over one trace's usage spans, so `llm_usage` is one scan of the typed
//! columns and one aggregation by trace.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringBuilder, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::config::ConfigOptions;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::ObjectStore;
use schemas::columns as c;
use schemas::layout::StoreUrl;
use schemas::prices::Prices;
use schemas::span_table::span_schema;
use url::Url;

use crate::error::CurateError;
use crate::extract::{Attr, EventRef, extract};
use crate::prices::cost_udf;
use crate::window::Window;

/// Name of the store's span files as every view reads them: every span of every window, the
/// columns `span_store` reads as dictionaries cast back to strings (`span_store_view`).
pub const SPAN_STORE: &str = "span_store";

/// Name of the listing table itself (`crate::span_store::SpanStore`).
const SPAN_FILES: &str = "span_files";

/// Where a store lives, and the object store that reaches it.
#[derive(Clone)]
pub struct StoreLocation {
    /// URL of the `spans/` directory, as DataFusion lists it.
    pub spans_url: String,
    /// Base URL the object store is registered under.
    pub base: Url,
    pub store: Arc<dyn ObjectStore>,
    /// Path of `spans/` inside `store`.
    pub spans_prefix: object_store::path::Path,
}

/// Resolves a store URL (`s3://bucket/prefix`, `file:///abs/dir` or a path).
pub fn locate(store: &str) -> Result<StoreLocation, CurateError> {
    let path = match StoreUrl::parse(store).map_err(|e| CurateError::BadArgs(e.to_string()))? {
        StoreUrl::S3 { bucket, prefix } => {
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(&bucket)
                .build()?;
            let spans = StoreUrl::s3_spans_path(&prefix);
            let base = Url::parse(&format!("s3://{bucket}"))
                .map_err(|e| CurateError::BadArgs(format!("store {store:?}: {e}")))?;
            return Ok(StoreLocation {
                spans_url: format!("s3://{bucket}/{spans}/"),
                base,
                store: Arc::new(s3),
                spans_prefix: object_store::path::Path::from(spans),
            });
        }
        StoreUrl::Local(path) => path,
    };
    let root = std::fs::canonicalize(&path)
        .map_err(|e| CurateError::BadArgs(format!("store {store:?}: {e}")))?;
    let spans = root.join(schemas::layout::SPANS_DIR);
    let local = object_store::local::LocalFileSystem::new();
    let spans_prefix = object_store::path::Path::from_absolute_path(&spans)
        .map_err(|e| CurateError::BadArgs(format!("store {store:?}: {e}")))?;
    Ok(StoreLocation {
        spans_url: format!("file://{}/", spans.display()),
        base: Url::parse("file:///").map_err(|e| CurateError::BadArgs(e.to_string()))?,
        store: Arc::new(crate::local_store::InlineLocal::new(local)),
        spans_prefix,
    })
}

/// What a catalog covers.
#[derive(Clone)]
pub struct CatalogOptions {
    pub window: Window,
    pub tenant: Option<String>,
    pub prices: Prices,
}

/// A session with the store's tables and views registered.
#[derive(Clone)]
pub struct Catalog {
    pub ctx: SessionContext,
    pub location: StoreLocation,
    opts: CatalogOptions,
}

fn partition_cols() -> Vec<(String, DataType)> {
    [c::TENANT, c::DATE, c::HOUR]
        .iter()
        .map(|n| (n.to_string(), DataType::Utf8))
        .collect()
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// SQL of the `spans` view.
fn spans_view(window: Window, tenant: Option<&str>) -> String {
    let mut predicate = window.predicate();
    if let Some(t) = tenant {
        predicate = format!("tenant = {} AND {predicate}", quote(t));
    }
    format!("CREATE VIEW spans AS SELECT * FROM {SPAN_STORE} WHERE {predicate}")
}

/// SQL of the `span_store` view over the listing table.
fn span_store_view() -> String {
    let partitions = partition_cols();
    let names: Vec<&str> = partitions.iter().map(|(n, _)| n.as_str()).collect();
    format!(
        "CREATE VIEW {SPAN_STORE} AS SELECT {} FROM {SPAN_FILES}",
        crate::span_store::view_columns(&names)
    )
}

/// Spans that are LLM calls: a GenAI operation that generates text, OpenInference's LLM kind,
/// or token counts.
pub const IS_LLM_CALL: &str = "(gen_ai_operation_name IN ('chat', 'text_completion', 'generate_content', 'completion') \
     OR attributes['openinference.span.kind'] = 'LLM' \
     OR gen_ai_input_tokens IS NOT NULL OR gen_ai_output_tokens IS NOT NULL)";

/// A usage span as `counted_usage` and `usage_totals` take it (`USAGE_SPAN` in the views).
const USAGE_SPAN: &str = "named_struct(
      'span_id', span_id, 'parent_span_id', parent_span_id,
      'start_ns', arrow_cast(start_time, 'Int64'), 'end_ns', arrow_cast(end_time, 'Int64'),
      'model', coalesce(gen_ai_response_model, gen_ai_request_model),
      'input_tokens', coalesce(gen_ai_input_tokens, 0),
      'output_tokens', coalesce(gen_ai_output_tokens, 0))";

/// Token usage as it counts toward traces: one row per span with token counts whose usage
/// counts (see the module docs), with its model and cost. It reads only typed columns, so the
/// totals of `traces` (and `costly`) never decode the attribute maps, where the message texts
/// are nearly all of a span's uncompressed bytes. A trace's usage spans go to `counted_usage`
/// as one list (the rule as joins took four scans of the store).
const LLM_USAGE_VIEW: &str = "CREATE VIEW llm_usage AS
SELECT trace_id, u['span_id'] AS span_id, u['model'] AS model,
  u['input_tokens'] AS input_tokens, u['output_tokens'] AS output_tokens,
  cost_usd(u['model'], u['input_tokens'], u['output_tokens']) AS cost_usd
FROM (
  SELECT trace_id, unnest(counted) AS u
  FROM (
    SELECT trace_id, counted_usage(array_agg(USAGE_SPAN)) AS counted
    FROM spans WHERE gen_ai_input_tokens IS NOT NULL OR gen_ai_output_tokens IS NOT NULL
    GROUP BY trace_id
  )
)";

const LLM_CALLS_VIEW: &str = "CREATE VIEW llm_calls AS
WITH calls AS (
  SELECT *, llm_io(attributes, events) AS io FROM spans WHERE {IS_LLM_CALL}
)
SELECT c.trace_id, c.span_id, c.parent_span_id, c.name, c.service_name, c.start_time, c.end_time,
  c.duration_ns, c.status_code, c.status_message,
  c.gen_ai_operation_name AS operation, c.gen_ai_provider_name AS provider,
  coalesce(c.gen_ai_response_model, c.gen_ai_request_model) AS model,
  c.gen_ai_input_tokens AS input_tokens, c.gen_ai_output_tokens AS output_tokens,
  k.span_id IS NOT NULL AS usage_counted,
  CASE WHEN c.gen_ai_input_tokens IS NOT NULL OR c.gen_ai_output_tokens IS NOT NULL
    THEN cost_usd(coalesce(c.gen_ai_response_model, c.gen_ai_request_model),
                  coalesce(c.gen_ai_input_tokens, 0), coalesce(c.gen_ai_output_tokens, 0)) END AS cost_usd,
  c.io['system'] AS system_prompt, c.io['input'] AS input_messages,
  c.io['output'] AS output_messages, c.io['context'] AS context,
  c.session_id, c.user_id, c.tenant, c.date, c.hour
FROM calls c LEFT JOIN llm_usage k ON k.trace_id = c.trace_id AND k.span_id = c.span_id";

/// SQL of `trace_usage`: a trace's usage totals, as `traces` shows them, over the same usage
/// spans and rule as `llm_usage` (`usage_totals` applies `counted_usage`'s rule and sums the
/// counted spans in one pass). A trace's cost is rounded to 1e-12 USD: its calls arrive in a
/// different order from run to run, which moved the sum's last bits (and an export's SHA-256).
const TRACE_USAGE_VIEW: &str = "CREATE VIEW trace_usage AS
SELECT trace_id, t['llm_calls'] AS llm_calls, t['input_tokens'] AS input_tokens,
  t['output_tokens'] AS output_tokens, round(t['cost_usd'], 12) AS cost_usd, t['models'] AS models
FROM (
  SELECT trace_id, usage_totals(array_agg(USAGE_SPAN)) AS t
  FROM spans WHERE gen_ai_input_tokens IS NOT NULL OR gen_ai_output_tokens IS NOT NULL
  GROUP BY trace_id
)";

/// The root of a trace is its earliest span without a parent; of roots that start at the
/// same instant, the longest, then the one with the smallest span id. A trace whose root has
/// not arrived takes its span extent instead. One aggregation over the spans computes the root
/// and the trace's totals together: a window over the roots joined back to the per-trace
/// aggregate cost twice as much (measured on a 1M-span store). The root's fields come from
/// `earliest_value` (crate::earliest), `first_value(... ORDER BY start_time, duration_ns DESC,
/// span_id)` without its per-group `ScalarValue` orderings. The root's start, end and duration
/// are the same for every root that ties on start and duration, so they are taken without the
/// span ids: a query of root durations (`slow`) does not read that column.
///
/// `last_span_start` is when its last span started: with `start_time`, it bounds the start
/// times (and so the hour partitions) of its spans, whose ends may come before their starts.
///
/// `scores`: per (trace, metric) the latest score span wins (by its start, then span id); a
/// trace judged per LLM call takes the latest over all its spans. The map's keys are in
/// metric order. `scored` is grouped by trace id, so the optimizer removes its LEFT JOIN from
/// every query that does not read `scores`, as it does `trace_usage` for queries that read
/// none of the token columns.
const TRACES_VIEW: &str = "CREATE VIEW traces AS
WITH agg AS (
  SELECT trace_id, max(tenant) AS tenant, min(start_time) AS start_time, max(end_time) AS end_time,
    max(start_time) AS last_span_start,
    count(*) AS span_count, bool_or(status_code = 'ERROR') AS has_error,
    max(session_id) AS session_id, max(user_id) AS user_id,
    earliest_value(span_id, start_time, duration_ns, span_id) FILTER (WHERE parent_span_id IS NULL) AS root_span_id,
    earliest_value(name, start_time, duration_ns, span_id) FILTER (WHERE parent_span_id IS NULL) AS root_name,
    earliest_value(service_name, start_time, duration_ns, span_id) FILTER (WHERE parent_span_id IS NULL) AS root_service,
    min(start_time) FILTER (WHERE parent_span_id IS NULL) AS root_start,
    earliest_value(end_time, start_time, duration_ns) FILTER (WHERE parent_span_id IS NULL) AS root_end,
    earliest_value(duration_ns, start_time, duration_ns) FILTER (WHERE parent_span_id IS NULL) AS root_duration_ns
  FROM spans GROUP BY trace_id
),
latest AS (
  SELECT judged_trace_id AS trace_id, metric,
    first_value(score ORDER BY judged_at DESC, eval_span_id DESC) AS score
  FROM evals WHERE judged_trace_id IS NOT NULL GROUP BY judged_trace_id, metric
),
scored AS (
  SELECT trace_id, map(array_agg(metric ORDER BY metric), array_agg(score ORDER BY metric)) AS scores
  FROM latest GROUP BY trace_id
)
SELECT a.trace_id, a.tenant, a.root_span_id, a.root_name, a.root_service,
  a.start_time, a.end_time, a.last_span_start,
  arrow_cast(a.end_time, 'Int64') - arrow_cast(a.start_time, 'Int64') AS duration_ns,
  coalesce(a.root_start, a.start_time) AS root_start, coalesce(a.root_end, a.end_time) AS root_end,
  coalesce(a.root_duration_ns, arrow_cast(a.end_time, 'Int64') - arrow_cast(a.start_time, 'Int64')) AS root_duration_ns,
  a.has_error, a.span_count, coalesce(t.llm_calls, 0) AS llm_calls, t.models,
  coalesce(t.input_tokens, 0) AS input_tokens, coalesce(t.output_tokens, 0) AS output_tokens,
  coalesce(t.cost_usd, 0.0) AS cost_usd, a.session_id, a.user_id, s.scores
FROM agg a LEFT JOIN trace_usage t ON a.trace_id = t.trace_id LEFT JOIN scored s ON a.trace_id = s.trace_id";

/// SQL of the `evals` view: one row per score span (eval-runner's `gen_ai.evaluation` spans),
/// with the judged trace and span from its first link. A score span delivered twice (a runner
/// killed after its spans were acknowledged but before it recorded them re-sends the same
/// span ids) counts once. Score spans are written after the
/// traces they judge, so only the start of the window bounds them (partitions as in `spans`).
fn evals_view(opts: &CatalogOptions) -> String {
    let since = Window {
        until: None,
        ..opts.window
    }
    .predicate();
    let tenant = opts
        .tenant
        .as_ref()
        .map_or(String::new(), |t| format!(" AND tenant = {}", quote(t)));
    format!(
        "CREATE VIEW evals AS
SELECT eval_trace_id, eval_span_id, judged_trace_id, judged_span_id, metric, score, label,
  explanation, judge_model, run_id, judged_at, tenant
FROM (
  SELECT trace_id AS eval_trace_id, span_id AS eval_span_id,
    links[1]['trace_id'] AS judged_trace_id, links[1]['span_id'] AS judged_span_id,
    attributes['gen_ai.evaluation.name'] AS metric,
    try_cast(attributes['gen_ai.evaluation.score.value'] AS DOUBLE) AS score,
    attributes['gen_ai.evaluation.score.label'] AS label,
    attributes['gen_ai.evaluation.explanation'] AS explanation,
    coalesce(gen_ai_response_model, gen_ai_request_model) AS judge_model,
    attributes['trace2eval.eval.run_id'] AS run_id,
    start_time AS judged_at, tenant,
    row_number() OVER (PARTITION BY trace_id, span_id ORDER BY start_time) AS copy
  FROM {SPAN_STORE}
  WHERE attributes['gen_ai.evaluation.name'] IS NOT NULL AND {since}{tenant}
)
WHERE copy = 1"
    )
}

fn llm_io_fields() -> Fields {
    Fields::from(vec![
        Field::new("system", DataType::Utf8, true),
        Field::new("input", DataType::Utf8, true),
        Field::new("output", DataType::Utf8, true),
        Field::new("context", DataType::Utf8, true),
    ])
}

/// The rows of a `map<string, string>` array as (key, value) pairs borrowed from it.
fn map_rows(a: &ArrayRef) -> Option<Vec<Vec<Attr<'_>>>> {
    let m = a.as_map_opt()?;
    let keys = m.keys().as_string_opt::<i32>()?;
    let values = m.values().as_string_opt::<i32>()?;
    let offsets = m.value_offsets();
    Some(
        offsets
            .windows(2)
            .map(|w| {
                (w[0] as usize..w[1] as usize)
                    .map(|j| (keys.value(j), values.is_valid(j).then(|| values.value(j))))
                    .collect()
            })
            .collect(),
    )
}

/// `llm_io(attributes, events)`: struct {system, input, output, context}, the last three as
/// JSON arrays.
fn llm_io_udf() -> Result<ScalarUDF, CurateError> {
    let schema = span_schema();
    let attr_type = schema.field_with_name(c::ATTRIBUTES)?.data_type().clone();
    let events_type = schema.field_with_name(c::EVENTS)?.data_type().clone();
    let fields = llm_io_fields();
    let out_fields = fields.clone();
    Ok(create_udf(
        "llm_io",
        vec![attr_type, events_type],
        DataType::Struct(fields),
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let bad =
                || datafusion::error::DataFusionError::Internal("llm_io: argument types".into());
            let attrs = map_rows(&arrays[0]).ok_or_else(bad)?;
            let events = arrays[1].as_list_opt::<i32>().ok_or_else(bad)?;
            let ev_struct = events.values().as_struct_opt().ok_or_else(bad)?;
            let ev_names = ev_struct
                .column_by_name(c::event::NAME)
                .and_then(|a| a.as_string_opt::<i32>())
                .ok_or_else(bad)?;
            let ev_attrs = ev_struct
                .column_by_name(c::event::ATTRIBUTES)
                .and_then(map_rows)
                .ok_or_else(bad)?;
            let ev_offsets = events.value_offsets();
            let mut cols: [StringBuilder; 4] = std::array::from_fn(|_| StringBuilder::new());
            for (row, a) in attrs.iter().enumerate() {
                let evs: Vec<EventRef<'_>> = (ev_offsets[row] as usize
                    ..ev_offsets[row + 1] as usize)
                    .map(|j| EventRef {
                        name: ev_names.value(j),
                        attributes: &ev_attrs[j],
                    })
                    .collect();
                let io = extract(a, &evs);
                // Serialising strings and plain message structs cannot fail.
                cols[0].append_option(io.system.as_deref());
                cols[1].append_value(serde_json::to_string(&io.input).unwrap_or_default());
                cols[2].append_value(serde_json::to_string(&io.output).unwrap_or_default());
                cols[3].append_value(serde_json::to_string(&io.context).unwrap_or_default());
            }
            let arrays: Vec<ArrayRef> = cols
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef)
                .collect();
            Ok(ColumnarValue::Array(Arc::new(StructArray::new(
                out_fields.clone(),
                arrays,
                None,
            ))))
        }),
    ))
}

/// DataFusion settings curate changes, unless their `DATAFUSION_*` variable is set.
const CURATE_DEFAULTS: [(&str, &str); 4] = [
    ("datafusion.execution.parquet.pushdown_filters", "true"),
    ("datafusion.execution.parquet.reorder_filters", "true"),
    ("datafusion.execution.collect_statistics", "false"),
    (
        "datafusion.execution.skip_partial_aggregation_probe_ratio_threshold",
        "0.1",
    ),
];

/// DataFusion's settings: its defaults, then any `DATAFUSION_*` environment variable (the
/// option's key in upper case, dots as underscores, e.g. `DATAFUSION_EXECUTION_TARGET_PARTITIONS=4`),
/// with curate's own defaults:
///
/// - Parquet filter pushdown on: filters are evaluated while decoding, so the columns of rows
///   they drop (an export's message texts of calls outside the selected traces) are never
///   decoded.
/// - No file statistics at planning: collecting them reads every file's footer and summarises
///   every column before the query starts, ~15% of the CPU of `errors` (perf, 10M-span store),
///   and the views' joins and aggregations leave the planner with unknown sizes anyway. Joins
///   name their small side first: the hash table is built from the first side unless the
///   planner's estimates swap them, and with unknown sizes they need not (see `export`).
/// - Partial aggregation is skipped once it has seen that it leaves more than one row in ten
///   (DataFusion's default: eight in ten; the probe is over each partition's first 100,000
///   rows). The views group by trace id, where a partial aggregation over a batch of spans
///   reduces little: for `trace_usage` it copied each trace's usage spans into lists twice,
///   through the partial and the final aggregation (`costly` on the 10M-span bench store:
///   0.88x the CPU without it, `slow` and `errors` unchanged). Traces of more than ten spans
///   each on average still aggregate in two steps.
pub fn session_config() -> Result<SessionConfig, CurateError> {
    let mut options = ConfigOptions::from_env()?;
    for (key, value) in CURATE_DEFAULTS {
        let var = key.to_uppercase().replace('.', "_");
        if std::env::var_os(var).is_none() {
            options.set(key, value)?;
        }
    }
    Ok(options.into())
}

/// Registers (or replaces) an in-memory table `name` of one batch of `columns` in `ctx`.
pub fn register_batch(
    ctx: &SessionContext,
    name: &str,
    columns: Vec<(&str, ArrayRef)>,
) -> Result<(), CurateError> {
    let batch =
        RecordBatch::try_from_iter(columns).map_err(datafusion::error::DataFusionError::from)?;
    let _ = ctx.deregister_table(name)?;
    ctx.register_table(
        name,
        Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?),
    )?;
    Ok(())
}

impl Catalog {
    /// Registers (or replaces) an in-memory table `name` of one batch of `columns`.
    pub fn register_batch(
        &self,
        name: &str,
        columns: Vec<(&str, ArrayRef)>,
    ) -> Result<(), CurateError> {
        register_batch(&self.ctx, name, columns)
    }

    /// Registers the store's span table and the views over `opts.window`.
    pub async fn open(store: &str, opts: CatalogOptions) -> Result<Self, CurateError> {
        let mut location = locate(store)?;
        // Listings leave out the files a finished compaction replaced (see `compact`).
        let root = location
            .spans_prefix
            .as_ref()
            .strip_suffix(schemas::layout::SPANS_DIR)
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        location.store = Arc::new(crate::compact::VisibleStore::new(
            location.store.clone(),
            root.as_str().into(),
        ));
        Self::with_views(location, opts.window, opts).await
    }

    /// The same store in a session of its own whose `spans` (and every view over it but
    /// `evals`) holds only the spans that start in `spans`, a window inside this catalog's: the
    /// views of the traces whose spans all start in it are the same as in this catalog, and a
    /// query of them skips the hour partitions outside it.
    pub async fn narrowed(&self, spans: Window) -> Result<Self, CurateError> {
        Self::with_views(self.location.clone(), spans, self.opts.clone()).await
    }

    /// A session over `location` with the views over `opts`, `spans` limited to `window`.
    async fn with_views(
        location: StoreLocation,
        window: Window,
        opts: CatalogOptions,
    ) -> Result<Self, CurateError> {
        let ctx = SessionContext::new_with_config(session_config()?.with_information_schema(true));
        ctx.register_object_store(&location.base, location.store.clone());
        let url = ListingTableUrl::parse(&location.spans_url)?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(partition_cols());
        let table = ListingTable::try_new(
            ListingTableConfig::new(url)
                .with_listing_options(options)
                .with_schema(crate::span_store::read_schema()),
        )?;
        ctx.register_table(
            SPAN_FILES,
            Arc::new(crate::span_store::SpanStore::new(table)),
        )?;
        ctx.register_udf(cost_udf(opts.prices.clone()));
        ctx.register_udf(llm_io_udf()?);
        ctx.register_udf(crate::usage::counted_usage_udf());
        ctx.register_udf(crate::usage::usage_totals_udf(opts.prices.clone()));
        ctx.register_udaf(crate::earliest::earliest_value_udaf());
        for sql in [
            span_store_view(),
            spans_view(window, opts.tenant.as_deref()),
            LLM_USAGE_VIEW.replace("USAGE_SPAN", USAGE_SPAN),
            TRACE_USAGE_VIEW.replace("USAGE_SPAN", USAGE_SPAN),
            LLM_CALLS_VIEW.replace("{IS_LLM_CALL}", IS_LLM_CALL),
            evals_view(&opts),
            TRACES_VIEW.to_string(),
        ] {
            ctx.sql(&sql).await?;
        }
        Ok(Self {
            ctx,
            location,
            opts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curate_overrides_four_datafusion_defaults() {
        let on = session_config().expect("default settings");
        assert!(on.options().execution.parquet.pushdown_filters);
        assert!(on.options().execution.parquet.reorder_filters);
        assert!(!on.options().execution.collect_statistics);
        assert_eq!(
            on.options()
                .execution
                .skip_partial_aggregation_probe_ratio_threshold,
            0.1
        );
    }

    /// A trace's root among parentless spans that start together: the longest, then the
    /// smallest span id; its start, end and duration come with it.
    #[tokio::test]
    async fn roots_that_start_together_go_to_the_longest_then_the_smallest_id()
    -> Result<(), Box<dyn std::error::Error>> {
        use datafusion::arrow::util::pretty::pretty_format_batches;
        use schemas::opentelemetry_proto::tonic::trace::v1::Span;
        let t0 = 1_772_000_000_000_000_000u64;
        let span = |trace: u8, id: u8, parent: Option<u8>, name: &str, start: u64, ms: u64| Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: name.into(),
            start_time_unix_nano: t0 + start,
            end_time_unix_nano: t0 + start + ms * 1_000_000,
            ..Default::default()
        };
        let spans = vec![
            // Trace 1: two roots at t0, the longer has the larger span id; a later, longer root.
            span(1, 0x01, None, "short", 0, 1_000),
            span(1, 0x02, None, "long", 0, 3_000),
            span(1, 0x03, None, "later", 5, 9_000),
            span(1, 0x04, Some(0x02), "child", 10, 1),
            // Trace 2: two roots alike in start and duration: the smaller span id.
            span(2, 0x06, None, "six", 0, 2_000),
            span(2, 0x05, None, "five", 0, 2_000),
        ];
        let dir = tempfile::tempdir()?;
        crate::test_store::write(dir.path(), spans)?;
        let catalog = crate::test_store::open(dir.path()).await?;
        let rows = catalog
            .ctx
            .sql(
                "SELECT root_span_id, root_name, root_duration_ns, \
                   arrow_cast(root_end, 'Int64') - arrow_cast(root_start, 'Int64') AS extent \
                 FROM traces ORDER BY trace_id",
            )
            .await?
            .collect()
            .await?;
        let rows = pretty_format_batches(&rows)?.to_string();
        for row in [
            "| 0202020202020202 | long      | 3000000000       | 3000000000 |",
            "| 0505050505050505 | five      | 2000000000       | 2000000000 |",
        ] {
            assert!(rows.contains(row), "{row} not in\n{rows}");
        }
        Ok(())
    }
}
