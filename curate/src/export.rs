//! Export: the selected traces become dataset lines (one per LLM call or per trace) in one of
//! the formats, plus a manifest that says how the dataset was made.
//!
//! Nested instrumentations often record one LLM call on several spans (an app span, an
//! OpenLLMetry span, the provider SDK's span), as parent and child or as siblings. Spans are one
//! call when an LLM span is the only LLM child of its LLM parent, or when they carry the same
//! token counts in one trace and their time ranges overlap (the rule `traces` counts usage
//! by); the call's line comes from its span with the most content (input and output), the
//! innermost on a tie. Calls with no input and no output are left out of `--per call` datasets
//! (there is nothing to judge); `--json` counts them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::cli::{Format, Per};
use crate::error::CurateError;
use crate::extract::Message;
use crate::manifest::DatasetWriter;
use crate::window::Window;

/// Column reader over query results, casting to the expected type.
struct Cols<'a> {
    batch: &'a RecordBatch,
}

impl<'a> Cols<'a> {
    fn col(&self, name: &str, to: &DataType) -> Result<ArrayRef, CurateError> {
        let a = self
            .batch
            .column_by_name(name)
            .ok_or_else(|| CurateError::BadArgs(format!("query result has no column {name:?}")))?;
        Ok(cast(a, to).map_err(datafusion::error::DataFusionError::from)?)
    }

    fn strings(&self, name: &str) -> Result<Vec<Option<String>>, CurateError> {
        let a = self.col(name, &DataType::Utf8)?;
        Ok(a.as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect())
    }

    fn ints(&self, name: &str) -> Result<Vec<Option<i64>>, CurateError> {
        let a = self.col(name, &DataType::Int64)?;
        Ok(a.as_primitive::<Int64Type>().iter().collect())
    }

    fn floats(&self, name: &str) -> Result<Vec<Option<f64>>, CurateError> {
        let a = self.col(name, &DataType::Float64)?;
        Ok(a.as_primitive::<Float64Type>().iter().collect())
    }

    fn bools(&self, name: &str) -> Result<Vec<Option<bool>>, CurateError> {
        let a = self.col(name, &DataType::Boolean)?;
        let b = a.as_boolean();
        Ok((0..b.len())
            .map(|i| b.is_valid(i).then(|| b.value(i)))
            .collect())
    }
}

/// One selected trace.
#[derive(Debug, Clone)]
pub struct TraceRow {
    pub trace_id: String,
    pub tenant: Option<String>,
    pub root_span_id: Option<String>,
    pub root_name: Option<String>,
    pub root_service: Option<String>,
    pub start_ns: i64,
    /// The start of its latest-starting span.
    pub last_start_ns: i64,
    pub root_duration_ns: i64,
    pub has_error: bool,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub rules: Vec<String>,
}

/// One LLM call span of a selected trace.
#[derive(Debug, Clone)]
struct CallRow {
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    service: Option<String>,
    start_ns: i64,
    duration_ns: i64,
    status_code: String,
    model: Option<String>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cost_usd: Option<f64>,
    system: Option<String>,
    input: Vec<Message>,
    output: Vec<Message>,
    context: Vec<String>,
}

impl CallRow {
    fn content(&self) -> usize {
        usize::from(!self.input.is_empty()) + usize::from(!self.output.is_empty())
    }

    /// Whether the two spans share an instant (instrumentations of one call always do).
    fn overlaps(&self, other: &CallRow) -> bool {
        let end = |r: &CallRow| r.start_ns.saturating_add(r.duration_ns);
        self.start_ns <= end(other) && other.start_ns <= end(self)
    }
}

fn json_list<T: serde::de::DeserializeOwned>(s: Option<String>) -> Vec<T> {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

async fn query(catalog: &Catalog, sql: &str) -> Result<Vec<RecordBatch>, CurateError> {
    Ok(catalog.ctx.sql(sql).await?.collect().await?)
}

/// `columns` of the selected traces (`traces t`, `selected s`) that satisfy `eligible`, in
/// start order.
fn settled_sql(columns: &str, eligible: &str) -> String {
    format!(
        "SELECT {columns} FROM selected s JOIN traces t ON t.trace_id = s.trace_id \
         WHERE {eligible} ORDER BY t.start_time, t.trace_id"
    )
}

/// A settled selected trace, in export order, with what it takes to settle it again among
/// the traces next to it (see [`export`]).
#[derive(Debug, Clone)]
pub struct TraceKey {
    pub trace_id: String,
    /// The rules that selected it, comma-separated (as `selected.rules`).
    pub rules: String,
    pub start_ns: i64,
    /// The start of its latest-starting span.
    pub last_start_ns: i64,
}

/// The selected traces that satisfy `eligible` (as [`selected_traces`]), in the same order,
/// without the rest of each trace's row: the `traces` view then computes only the trace's
/// start and end, not its root, usage and scores. Only the first `keep` are kept (all when
/// `None`); the second value counts them all.
pub async fn settled_keys(
    catalog: &Catalog,
    eligible: &str,
    keep: Option<usize>,
) -> Result<(Vec<TraceKey>, usize), CurateError> {
    let sql = settled_sql(
        "t.trace_id, s.rules, arrow_cast(t.start_time, 'Int64') AS start_ns, \
         arrow_cast(t.last_span_start, 'Int64') AS last_start_ns",
        eligible,
    );
    let (mut out, mut settled) = (Vec::new(), 0);
    let mut batches = catalog.ctx.sql(&sql).await?.execute_stream().await?;
    while let Some(b) = batches.next().await {
        let b = b?;
        settled += b.num_rows();
        let room = keep.map_or(b.num_rows(), |k| k.saturating_sub(out.len()));
        if room == 0 {
            continue;
        }
        let c = Cols { batch: &b };
        let (mut ids, mut rules) = (c.strings("trace_id")?, c.strings("rules")?);
        let (start, last) = (c.ints("start_ns")?, c.ints("last_start_ns")?);
        for i in 0..b.num_rows().min(room) {
            out.push(TraceKey {
                trace_id: ids[i].take().unwrap_or_default(),
                rules: rules[i].take().unwrap_or_default(),
                start_ns: start[i].unwrap_or(0),
                last_start_ns: last[i].unwrap_or(0),
            });
        }
    }
    Ok((out, settled))
}

/// The selected traces that satisfy `eligible`, a predicate over `traces t` (the settle
/// window; for a job also the trace start times of its run).
pub async fn selected_traces(
    catalog: &Catalog,
    eligible: &str,
) -> Result<Vec<TraceRow>, CurateError> {
    let sql = settled_sql(
        "t.trace_id, t.tenant, t.root_span_id, t.root_name, t.root_service, \
         arrow_cast(t.start_time, 'Int64') AS start_ns, arrow_cast(t.last_span_start, 'Int64') AS last_start_ns, \
         t.root_duration_ns, t.has_error, \
         t.input_tokens, t.output_tokens, t.cost_usd, t.session_id, t.user_id, s.rules",
        eligible,
    );
    let mut out = Vec::new();
    for b in query(catalog, &sql).await? {
        let c = Cols { batch: &b };
        let mut ids = c.strings("trace_id")?;
        let (mut tenant, mut root, mut name, mut service) = (
            c.strings("tenant")?,
            c.strings("root_span_id")?,
            c.strings("root_name")?,
            c.strings("root_service")?,
        );
        let (start, last, dur, err) = (
            c.ints("start_ns")?,
            c.ints("last_start_ns")?,
            c.ints("root_duration_ns")?,
            c.bools("has_error")?,
        );
        let (inp, outp, cost) = (
            c.ints("input_tokens")?,
            c.ints("output_tokens")?,
            c.floats("cost_usd")?,
        );
        let (mut session, mut user, rules) = (
            c.strings("session_id")?,
            c.strings("user_id")?,
            c.strings("rules")?,
        );
        for i in 0..b.num_rows() {
            out.push(TraceRow {
                trace_id: ids[i].take().unwrap_or_default(),
                tenant: tenant[i].take(),
                root_span_id: root[i].take(),
                root_name: name[i].take(),
                root_service: service[i].take(),
                start_ns: start[i].unwrap_or(0),
                last_start_ns: last[i].unwrap_or(0),
                root_duration_ns: dur[i].unwrap_or(0),
                has_error: err[i].unwrap_or(false),
                input_tokens: inp[i].unwrap_or(0),
                output_tokens: outp[i].unwrap_or(0),
                cost_usd: cost[i].unwrap_or(0.0),
                session_id: session[i].take(),
                user_id: user[i].take(),
                rules: rules[i]
                    .clone()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_string)
                    .collect(),
            });
        }
    }
    Ok(out)
}

/// The LLM calls of the export's traces, by trace (in the traces' order), then start and
/// span id; the rank is the trace's position.
const CALLS_SQL: &str = "SELECT e.rank, l.trace_id, l.span_id, l.parent_span_id, l.service_name, \
    arrow_cast(l.start_time, 'Int64') AS start_ns, l.duration_ns, l.status_code, l.model, \
    l.input_tokens, l.output_tokens, l.cost_usd, l.system_prompt, l.input_messages, \
    l.output_messages, l.context \
    FROM export_traces e JOIN llm_calls l ON l.trace_id = e.trace_id \
    ORDER BY e.rank, l.start_time, l.span_id";

fn call_rows(b: &RecordBatch) -> Result<Vec<(i64, CallRow)>, CurateError> {
    let c = Cols { batch: b };
    let rank = c.ints("rank")?;
    let (mut trace, mut span, mut parent, mut service) = (
        c.strings("trace_id")?,
        c.strings("span_id")?,
        c.strings("parent_span_id")?,
        c.strings("service_name")?,
    );
    let (start, dur, mut status, mut model) = (
        c.ints("start_ns")?,
        c.ints("duration_ns")?,
        c.strings("status_code")?,
        c.strings("model")?,
    );
    let (inp, outp, cost) = (
        c.ints("input_tokens")?,
        c.ints("output_tokens")?,
        c.floats("cost_usd")?,
    );
    let (mut system, input, output, context) = (
        c.strings("system_prompt")?,
        c.strings("input_messages")?,
        c.strings("output_messages")?,
        c.strings("context")?,
    );
    // Each value is moved out of its column once (the message texts are most of the bytes).
    let mut lists = input.into_iter().zip(output).zip(context);
    let mut out = Vec::with_capacity(b.num_rows());
    for i in 0..b.num_rows() {
        let ((input, output), context) = lists.next().unwrap_or_default();
        out.push((
            rank[i].unwrap_or(-1),
            CallRow {
                trace_id: trace[i].take().unwrap_or_default(),
                span_id: span[i].take().unwrap_or_default(),
                parent_span_id: parent[i].take(),
                service: service[i].take(),
                start_ns: start[i].unwrap_or(0),
                duration_ns: dur[i].unwrap_or(0),
                status_code: status[i].take().unwrap_or_default(),
                model: model[i].take(),
                input_tokens: inp[i],
                output_tokens: outp[i],
                cost_usd: cost[i],
                system: system[i].take(),
                input: json_list(input),
                output: json_list(output),
                context: json_list(context),
            },
        ));
    }
    Ok(out)
}

/// Documents of retrieval spans (not LLM calls) of the export's traces, by trace (in the
/// traces' order), in start order.
fn context_sql() -> String {
    "SELECT e.rank, llm_io(sp.attributes, sp.events)['context'] AS context \
        FROM export_traces e JOIN spans sp ON sp.trace_id = e.trace_id \
        WHERE sp.attributes['retrieval.documents.0.document.content'] IS NOT NULL \
        AND NOT coalesce({IS_LLM_CALL}, false) ORDER BY e.rank, sp.start_time"
        .replace("{IS_LLM_CALL}", crate::catalog::IS_LLM_CALL)
}

/// The window of the start times of the spans of traces that start at `starts` and whose
/// last spans start at `lasts`: from the first span's start to the last's, which skips the
/// hour partitions (and files) that hold none of them.
fn span_window(starts: impl Iterator<Item = i64>, lasts: impl Iterator<Item = i64>) -> Window {
    let at = chrono::DateTime::from_timestamp_nanos;
    Window {
        since: Some(at(starts.min().unwrap_or(0))),
        until: Some(at(lasts.max().unwrap_or(0).saturating_add(1))),
    }
}

fn context_rows(b: &RecordBatch) -> Result<Vec<(i64, Vec<String>)>, CurateError> {
    let c = Cols { batch: b };
    Ok(c.ints("rank")?
        .into_iter()
        .zip(c.strings("context")?)
        .map(|(rank, ctx)| (rank.unwrap_or(-1), json_list::<String>(ctx)))
        .collect())
}

/// Reads one result batch as (rank, row) pairs.
type Convert<T> = fn(&RecordBatch) -> Result<Vec<(i64, T)>, CurateError>;

/// Rows of a query sorted by `rank`, converted a batch at a time and handed out a rank at a
/// time.
struct Ranked<T> {
    batches: std::vec::IntoIter<RecordBatch>,
    rows: VecDeque<(i64, T)>,
    convert: Convert<T>,
}

impl<T> Ranked<T> {
    fn new(batches: Vec<RecordBatch>, convert: Convert<T>) -> Self {
        Self {
            batches: batches.into_iter(),
            rows: VecDeque::new(),
            convert,
        }
    }

    /// The rows of `rank`; ranks must be asked for in increasing order.
    fn take(&mut self, rank: i64) -> Result<Vec<T>, CurateError> {
        let mut out = Vec::new();
        loop {
            while let Some((r, _)) = self.rows.front() {
                if *r > rank {
                    return Ok(out);
                }
                if let Some((r, row)) = self.rows.pop_front()
                    && r == rank
                {
                    out.push(row);
                }
            }
            match self.batches.next() {
                Some(batch) => self.rows.extend((self.convert)(&batch)?),
                None => return Ok(out),
            }
        }
    }
}

/// The results of one chunk's queries (see [`export`]).
struct Fetched {
    calls: Vec<RecordBatch>,
    context: Vec<RecordBatch>,
}

impl Fetched {
    fn bytes(&self) -> usize {
        self.calls
            .iter()
            .chain(&self.context)
            .map(RecordBatch::get_array_memory_size)
            .sum()
    }
}

/// Runs the calls and context queries of the traces `ids` (in export order) in `catalog`
/// narrowed to `window`, where their spans start.
async fn fetch(catalog: Catalog, ids: Vec<String>, window: Window) -> Result<Fetched, CurateError> {
    let ctx = catalog.narrowed(window).await?.ctx;
    register_order(&ctx, ids.iter().map(String::as_str))?;
    Ok(Fetched {
        calls: ctx.sql(CALLS_SQL).await?.collect().await?,
        context: ctx.sql(&context_sql()).await?.collect().await?,
    })
}

/// Groups the spans of one call among one trace's LLM spans (see the module docs) and keeps
/// the best span of each.
fn calls(rows: Vec<CallRow>) -> Vec<CallRow> {
    let parents: Vec<Option<usize>> = {
        let by_id: HashMap<&str, usize> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.span_id.as_str(), i))
            .collect();
        rows.iter()
            .map(|r| {
                r.parent_span_id
                    .as_deref()
                    .and_then(|p| by_id.get(p).copied())
            })
            .collect()
    };
    let parent = |i: usize| parents[i];
    let mut llm_children = vec![0usize; rows.len()];
    for i in 0..rows.len() {
        if let Some(p) = parent(i) {
            llm_children[p] += 1;
        }
    }
    // Union-find over spans: a span joins its LLM parent when it is that parent's only LLM
    // child, and spans of one trace with the same token counts are one call when they overlap
    // in time (two calls one after the other with equal counts stay two).
    let mut group: Vec<usize> = (0..rows.len()).collect();
    fn find(g: &mut [usize], mut i: usize) -> usize {
        while g[i] != i {
            g[i] = g[g[i]];
            i = g[i];
        }
        i
    }
    let mut by_usage: HashMap<(i64, i64), Vec<usize>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if let Some(p) = parent(i).filter(|p| llm_children[*p] == 1) {
            let (a, b) = (find(&mut group, i), find(&mut group, p));
            group[a] = b;
        }
        if r.input_tokens.is_some() || r.output_tokens.is_some() {
            let k = (r.input_tokens.unwrap_or(0), r.output_tokens.unwrap_or(0));
            let same = by_usage.entry(k).or_default();
            for &j in same.iter().filter(|&&j| r.overlaps(&rows[j])) {
                let (a, b) = (find(&mut group, i), find(&mut group, j));
                group[a] = b;
            }
            same.push(i);
        }
    }
    // Bounded by the number of spans: client-sent parent ids can form a loop.
    let depth = |mut i: usize| {
        let mut d = 0;
        while let Some(p) = parent(i).filter(|_| d < rows.len()) {
            i = p;
            d += 1;
        }
        d
    };
    // Per group: the span with the most content, the innermost on a tie.
    let mut best: BTreeMap<usize, (usize, usize, usize)> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let g = find(&mut group, i);
        let cand = (row.content(), depth(i), i);
        let entry = best.entry(g).or_insert(cand);
        if (cand.0, cand.1) > (entry.0, entry.1) {
            *entry = cand;
        }
    }
    let mut keep: Vec<usize> = best.values().map(|(_, _, i)| *i).collect();
    keep.sort_unstable();
    let mut rows: Vec<Option<CallRow>> = rows.into_iter().map(Some).collect();
    keep.into_iter().filter_map(|i| rows[i].take()).collect()
}

fn nanos_to_rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A dataset line of the `items` format (keys in this order).
#[derive(Serialize)]
struct Item {
    id: String,
    trace_id: String,
    span_id: String,
    input: Vec<Message>,
    output: String,
    context: Vec<String>,
    expected_output: Option<String>,
    metadata: Metadata,
}

#[derive(Serialize, Clone)]
struct Metadata {
    rules: Vec<String>,
    model: Option<String>,
    latency_ms: f64,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cost_usd: Option<f64>,
    status: String,
    service: Option<String>,
    session_id: Option<String>,
    user_id: Option<String>,
    tenant: Option<String>,
    start_time: String,
    root_name: Option<String>,
}

fn output_text(output: &[Message]) -> String {
    output
        .iter()
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn with_system(system: Option<String>, mut input: Vec<Message>) -> Vec<Message> {
    if let Some(content) = system {
        let role = "system".into();
        input.insert(0, Message { role, content });
    }
    input
}

/// The items of one trace (one per call, or one for the trace) from its calls, grouped by
/// `calls`, and its retrieved context; also how many calls had no content.
fn trace_items(
    t: &TraceRow,
    calls: Vec<CallRow>,
    trace_ctx: Vec<String>,
    per: Per,
) -> (Vec<Item>, usize) {
    let mut out = Vec::new();
    let mut empty = 0;
    let meta =
        |model: Option<String>, dur: i64, inp, outp, cost, status: String, service, start_ns| {
            Metadata {
                rules: t.rules.clone(),
                model,
                latency_ms: dur as f64 / 1e6,
                input_tokens: inp,
                output_tokens: outp,
                cost_usd: cost,
                status,
                service,
                session_id: t.session_id.clone(),
                user_id: t.user_id.clone(),
                tenant: t.tenant.clone(),
                start_time: nanos_to_rfc3339(start_ns),
                root_name: t.root_name.clone(),
            }
        };
    match per {
        Per::Call => {
            for c in calls {
                if c.content() == 0 {
                    empty += 1;
                    continue;
                }
                let context = if c.context.is_empty() {
                    trace_ctx.clone()
                } else {
                    c.context
                };
                out.push(Item {
                    id: format!("{}-{}", c.trace_id, c.span_id),
                    input: with_system(c.system, c.input),
                    output: output_text(&c.output),
                    context,
                    expected_output: None,
                    metadata: meta(
                        c.model,
                        c.duration_ns,
                        c.input_tokens,
                        c.output_tokens,
                        c.cost_usd,
                        c.status_code,
                        c.service,
                        c.start_ns,
                    ),
                    trace_id: c.trace_id,
                    span_id: c.span_id,
                });
            }
        }
        Per::Trace => {
            let first = calls.iter().find(|c| !c.input.is_empty());
            let last = calls.iter().rev().find(|c| !c.output.is_empty());
            let mut context: Vec<String> = trace_ctx.clone();
            for c in &calls {
                context.extend(c.context.iter().cloned());
            }
            context.dedup();
            let models: Vec<String> = calls.iter().filter_map(|c| c.model.clone()).collect();
            out.push(Item {
                id: t.trace_id.clone(),
                trace_id: t.trace_id.clone(),
                // A trace whose root never arrived is named by its first LLM call.
                span_id: t
                    .root_span_id
                    .clone()
                    .or_else(|| calls.first().map(|c| c.span_id.clone()))
                    .unwrap_or_default(),
                input: first
                    .map(|c| with_system(c.system.clone(), c.input.clone()))
                    .unwrap_or_default(),
                output: last.map(|c| output_text(&c.output)).unwrap_or_default(),
                context,
                expected_output: None,
                metadata: meta(
                    models.first().cloned(),
                    t.root_duration_ns,
                    Some(t.input_tokens),
                    Some(t.output_tokens),
                    Some(t.cost_usd),
                    if t.has_error {
                        "ERROR".into()
                    } else {
                        "OK".into()
                    },
                    t.root_service.clone(),
                    t.start_ns,
                ),
            });
        }
    }
    (out, empty)
}

/// `input` of the `langfuse` and `phoenix` lines: the messages and the retrieved context.
#[derive(Serialize)]
struct Input<'a> {
    messages: &'a [Message],
    context: &'a [String],
}

/// A line of the `openai-chat` format: the input messages, then the output as the assistant's.
#[derive(Serialize)]
struct OpenaiChatLine {
    messages: Vec<Message>,
}

/// A line of the `langfuse` format: the body of Langfuse's dataset item API, without
/// `datasetName` (the uploader adds it).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LangfuseLine<'a> {
    id: &'a str,
    input: Input<'a>,
    expected_output: Option<&'a str>,
    metadata: &'a Metadata,
    source_trace_id: &'a str,
    source_observation_id: &'a str,
}

/// A line of the `phoenix` format: one row of a Phoenix dataset upload.
#[derive(Serialize)]
struct PhoenixLine<'a> {
    input: Input<'a>,
    output: PhoenixOutput<'a>,
    metadata: PhoenixMetadata<'a>,
}

#[derive(Serialize)]
struct PhoenixOutput<'a> {
    content: &'a str,
}

/// Phoenix keeps no ids of its own for a row: they go first in its metadata.
#[derive(Serialize)]
struct PhoenixMetadata<'a> {
    id: &'a str,
    trace_id: &'a str,
    span_id: &'a str,
    #[serde(flatten)]
    rest: &'a Metadata,
}

/// The line of `item` in `format`. Lines are serialised from these structs, so keys come out
/// in their declared order (the order README.md shows), not sorted.
fn line(item: &Item, format: Format) -> Result<String, serde_json::Error> {
    let input = || Input {
        messages: &item.input,
        context: &item.context,
    };
    match format {
        Format::Items => serde_json::to_string(item),
        Format::OpenaiChat => {
            let mut messages = item.input.clone();
            messages.push(Message {
                role: "assistant".into(),
                content: item.output.clone(),
            });
            serde_json::to_string(&OpenaiChatLine { messages })
        }
        Format::Langfuse => serde_json::to_string(&LangfuseLine {
            id: &item.id,
            input: input(),
            expected_output: item.expected_output.as_deref(),
            metadata: &item.metadata,
            source_trace_id: &item.trace_id,
            source_observation_id: &item.span_id,
        }),
        Format::Phoenix => serde_json::to_string(&PhoenixLine {
            input: input(),
            output: PhoenixOutput {
                content: &item.output,
            },
            metadata: PhoenixMetadata {
                id: &item.id,
                trace_id: &item.trace_id,
                span_id: &item.span_id,
                rest: &item.metadata,
            },
        }),
    }
}

/// What an export wrote.
pub struct Exported {
    /// The exported traces' ids, in export order.
    pub trace_ids: Vec<String>,
    pub calls_without_content: usize,
}

/// The order of the export: each trace id's position among `trace_ids`, as table `export_traces`.
fn register_order<'a>(
    ctx: &SessionContext,
    trace_ids: impl ExactSizeIterator<Item = &'a str>,
) -> Result<(), CurateError> {
    let ranks = Int64Array::from_iter_values(0..trace_ids.len() as i64);
    let ids = StringArray::from_iter_values(trace_ids);
    crate::catalog::register_batch(
        ctx,
        "export_traces",
        vec![
            ("trace_id", Arc::new(ids) as ArrayRef),
            ("rank", Arc::new(ranks)),
        ],
    )
}

/// 128 bits of hash of an item's input, to leave out repeated inputs without keeping them.
fn input_key(input: &[Message]) -> u128 {
    let half = |seed: u8| {
        let mut h = std::hash::DefaultHasher::new();
        seed.hash(&mut h);
        input.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

/// What the queries of one chunk of an export may return, about: their sorts hold it (and
/// the Arrow arrays it is read into about as much again).
const CHUNK_BYTES: usize = 64 << 20;

/// Traces in an export's first chunk, before their size is known.
const FIRST_CHUNK_TRACES: usize = 128;

/// Traces settled at a time: their rows (root, usage) are computed by one query over the
/// spans that start in their window.
const SETTLE_TRACES: usize = 65_536;

/// How an export is cut: traces settled at a time, traces in the first chunk, bytes of query
/// results per chunk.
#[derive(Debug, Clone, Copy)]
pub struct Cuts {
    settle: usize,
    first: usize,
    chunk_bytes: usize,
}

impl Default for Cuts {
    fn default() -> Self {
        Self {
            settle: SETTLE_TRACES,
            first: FIRST_CHUNK_TRACES,
            chunk_bytes: CHUNK_BYTES,
        }
    }
}

/// What goes on from one chunk of an export to the next.
struct Chunking {
    /// Input keys written (`--per call`).
    seen: HashSet<u128>,
    /// Calls left out for having no content.
    empty: usize,
    /// Traces in the next chunk.
    next: usize,
    trace_ids: Vec<String>,
}

/// Writes the dataset lines of the traces of `keys` that still satisfy `eligible`, in the
/// order of `keys`, to `out`. Repeated inputs (`--per call`) are written once: the first.
///
/// Memory holds a group of traces, not the dataset. The traces are settled [`SETTLE_TRACES`]
/// at a time, each group in a catalog narrowed to the window its spans start in (settling
/// all 686,107 traces `slow` selects at once held ~1 GB; BENCHMARKS.md, thirteenth session).
/// A group is written in chunks of consecutive traces: a chunk's calls and retrieved context
/// come from two queries sorted by the trace's position (sorting every call of a
/// 686,107-trace export at once peaked at 8 GB; twelfth session). Each chunk holds as many
/// traces as [`CHUNK_BYTES`] fits at the previous chunks' bytes per trace, growing at most
/// 4x from one chunk to the next.
pub async fn export(
    catalog: &Catalog,
    keys: &[TraceKey],
    eligible: &str,
    format: Format,
    per: Per,
    out: &mut DatasetWriter,
    cuts: Cuts,
) -> Result<Exported, CurateError> {
    let mut state = Chunking {
        seen: HashSet::new(),
        empty: 0,
        next: cuts.first.max(1),
        trace_ids: Vec::with_capacity(keys.len()),
    };
    for group in keys.chunks(cuts.settle.max(1)) {
        let window = span_window(
            group.iter().map(|k| k.start_ns),
            group.iter().map(|k| k.last_start_ns),
        );
        let narrowed = catalog.narrowed(window).await?;
        crate::select::register_selected(
            &narrowed,
            group.iter().map(|k| &k.trace_id),
            group.iter().map(|k| &k.rules),
        )?;
        let traces = selected_traces(&narrowed, eligible).await?;
        tracing::debug!(
            keys = group.len(),
            settled = traces.len(),
            "export group settled"
        );
        export_in_chunks(
            &narrowed,
            &traces,
            format,
            per,
            out,
            cuts.chunk_bytes,
            &mut state,
        )
        .await?;
    }
    Ok(Exported {
        trace_ids: state.trace_ids,
        calls_without_content: state.empty,
    })
}

/// Writes `traces` in chunks (see [`export`]).
///
/// The next chunk's queries run while a chunk's lines are written: the queries use every
/// core, the writing one.
async fn export_in_chunks(
    catalog: &Catalog,
    traces: &[TraceRow],
    format: Format,
    per: Per,
    out: &mut DatasetWriter,
    chunk_bytes: usize,
    state: &mut Chunking,
) -> Result<(), CurateError> {
    // A task still running when the export fails is aborted with the set.
    let mut running = tokio::task::JoinSet::new();
    let spawn = |running: &mut tokio::task::JoinSet<_>, chunk: &[TraceRow]| {
        let ids = chunk.iter().map(|t| t.trace_id.clone()).collect();
        let window = span_window(
            chunk.iter().map(|t| t.start_ns),
            chunk.iter().map(|t| t.last_start_ns),
        );
        running.spawn(fetch(catalog.clone(), ids, window));
    };
    let mut chunk = &traces[..traces.len().min(state.next)];
    let mut done = chunk.len();
    if !chunk.is_empty() {
        spawn(&mut running, chunk);
    }
    while let Some(fetched) = running.join_next().await {
        let fetched = fetched.map_err(|e| DataFusionError::External(Box::new(e)))??;
        let bytes = fetched.bytes();
        tracing::debug!(traces = chunk.len(), bytes, done, "export chunk read");
        let current = chunk;
        let per_trace = (bytes / current.len()).max(1);
        state.next = (chunk_bytes / per_trace).clamp(1, current.len().saturating_mul(4));
        if done < traces.len() {
            chunk = &traces[done..traces.len().min(done + state.next)];
            done += chunk.len();
            spawn(&mut running, chunk);
        }
        write_chunk(current, fetched, format, per, out, state)?;
    }
    Ok(())
}

/// Writes the lines of `chunk` (see [`export`]) from its queries' results.
fn write_chunk(
    chunk: &[TraceRow],
    fetched: Fetched,
    format: Format,
    per: Per,
    out: &mut DatasetWriter,
    state: &mut Chunking,
) -> Result<(), CurateError> {
    let mut calls_of = Ranked::new(fetched.calls, call_rows);
    let mut context_of = Ranked::new(fetched.context, context_rows);
    for (rank, t) in (0i64..).zip(chunk) {
        let mut rows = calls_of.take(rank)?;
        // A span stored twice (an OTLP client's retry after a lost answer) is one call: its
        // copies have the same ids and sort next to each other.
        rows.dedup_by(|a, b| a.span_id == b.span_id);
        let context = context_of.take(rank)?.concat();
        let (items, e) = trace_items(t, calls(rows), context, per);
        state.empty += e;
        state.trace_ids.push(t.trace_id.clone());
        for item in items {
            if per == Per::Call && !state.seen.insert(input_key(&item.input)) {
                continue;
            }
            out.line(&line(&item, format)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const SPAN: &str = "b7ad6b7169203331";

    fn item() -> Item {
        let msg = |role: &str, content: &str| Message {
            role: role.into(),
            content: content.into(),
        };
        Item {
            id: format!("{TRACE}-{SPAN}"),
            trace_id: TRACE.into(),
            span_id: SPAN.into(),
            input: vec![
                msg("system", "Answer from the context."),
                msg("user", "How is egress billed?"),
            ],
            output: "Per GiB.".into(),
            context: vec!["Egress is billed per GiB.".into()],
            expected_output: None,
            metadata: Metadata {
                rules: vec!["slow".into()],
                model: Some("gpt-4o-mini".into()),
                latency_ms: 812.0,
                input_tokens: Some(812),
                output_tokens: Some(40),
                cost_usd: Some(0.000146),
                status: "OK".into(),
                service: Some("chat-api".into()),
                session_id: Some("s-1".into()),
                user_id: None,
                tenant: Some("default".into()),
                start_time: "2026-11-25T14:00:00.000000000Z".into(),
                root_name: Some("POST /chat".into()),
            },
        }
    }

    /// Keys come out in the declared (documented) order in every format, never sorted.
    #[test]
    fn every_format_writes_keys_in_declared_order() -> Result<(), serde_json::Error> {
        let item = item();
        let id = format!("{TRACE}-{SPAN}");
        let messages = r#"[{"role":"system","content":"Answer from the context."},{"role":"user","content":"How is egress billed?"}]"#;
        let context = r#"["Egress is billed per GiB."]"#;
        let meta = r#""rules":["slow"],"model":"gpt-4o-mini","latency_ms":812.0,"input_tokens":812,"output_tokens":40,"cost_usd":0.000146,"status":"OK","service":"chat-api","session_id":"s-1","user_id":null,"tenant":"default","start_time":"2026-11-25T14:00:00.000000000Z","root_name":"POST /chat""#;
        assert_eq!(
            line(&item, Format::Items)?,
            format!(
                r#"{{"id":"{id}","trace_id":"{TRACE}","span_id":"{SPAN}","input":{messages},"output":"Per GiB.","context":{context},"expected_output":null,"metadata":{{{meta}}}}}"#
            )
        );
        assert_eq!(
            line(&item, Format::OpenaiChat)?,
            format!(
                r#"{{"messages":{},{{"role":"assistant","content":"Per GiB."}}]}}"#,
                messages.trim_end_matches(']')
            )
        );
        assert_eq!(
            line(&item, Format::Langfuse)?,
            format!(
                r#"{{"id":"{id}","input":{{"messages":{messages},"context":{context}}},"expectedOutput":null,"metadata":{{{meta}}},"sourceTraceId":"{TRACE}","sourceObservationId":"{SPAN}"}}"#
            )
        );
        assert_eq!(
            line(&item, Format::Phoenix)?,
            format!(
                r#"{{"input":{{"messages":{messages},"context":{context}}},"output":{{"content":"Per GiB."}},"metadata":{{"id":"{id}","trace_id":"{TRACE}","span_id":"{SPAN}",{meta}}}}}"#
            )
        );
        Ok(())
    }

    fn call(
        span: &str,
        parent: Option<&str>,
        start_s: i64,
        dur_s: i64,
        tokens: (i64, i64),
    ) -> CallRow {
        CallRow {
            trace_id: TRACE.into(),
            span_id: span.into(),
            parent_span_id: parent.map(str::to_string),
            service: None,
            start_ns: start_s * 1_000_000_000,
            duration_ns: dur_s * 1_000_000_000,
            status_code: "OK".into(),
            model: Some("gpt-4o-mini".into()),
            input_tokens: Some(tokens.0),
            output_tokens: Some(tokens.1),
            cost_usd: None,
            system: None,
            input: Vec::new(),
            output: Vec::new(),
            context: Vec::new(),
        }
    }

    /// Equal token counts make one call only when the spans overlap in time.
    #[test]
    fn equal_usage_is_one_call_only_when_the_spans_overlap() {
        let spans = |rows: Vec<CallRow>| -> Vec<String> {
            calls(rows).into_iter().map(|c| c.span_id).collect()
        };
        // Two sibling instrumentations of one call (same counts, overlapping): one call.
        assert_eq!(
            spans(vec![
                call("a", Some("root"), 10, 4, (100, 50)),
                call("b", Some("root"), 10, 3, (100, 50)),
            ]),
            ["a"]
        );
        // The same counts, one call after the other: two calls.
        assert_eq!(
            spans(vec![
                call("a", Some("root"), 10, 4, (100, 50)),
                call("b", Some("root"), 15, 4, (100, 50)),
            ]),
            ["a", "b"]
        );
    }

    /// Span ids come from clients: a parent chain that loops (a span its own parent, two
    /// spans each other's) must not hang the export. Each such span is its own call.
    #[test]
    fn parent_cycles_end() {
        let spans = |rows: Vec<CallRow>| -> Vec<String> {
            calls(rows).into_iter().map(|c| c.span_id).collect()
        };
        assert_eq!(spans(vec![call("a", Some("a"), 10, 4, (100, 50))]), ["a"]);
        assert_eq!(
            spans(vec![
                call("a", Some("b"), 10, 4, (100, 50)),
                call("b", Some("a"), 20, 4, (200, 50)),
                call("c", Some("b"), 30, 4, (300, 50)),
            ])
            .len(),
            2
        );
    }
}

/// The export's joins against the store: the selected traces are the side the hash join
/// holds in memory, and the store's spans stream past it. With the store's side named first
/// in the SQL, DataFusion held the store's side once the selection was large: an export of
/// 50,000 traces from a 10M-span store grew to ~20 GB and failed with "byte array offset
/// overflow", and this test, with 50,000 selected traces, fails.
#[cfg(test)]
mod join_sides {
    use datafusion::physical_plan::displayable;
    use schemas::opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;
    use crate::test_store::text;

    /// A store of 40 traces, each a chat call with messages and a retrieval span.
    fn store(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
        let start = 1_772_000_000_000_000_000u64;
        let spans = (0u8..40)
            .flat_map(|n| {
                let span = |id: u8, name: &str, attributes| Span {
                    trace_id: vec![n + 1; 16],
                    span_id: vec![id; 8],
                    name: name.into(),
                    start_time_unix_nano: start,
                    end_time_unix_nano: start + 1_000_000,
                    attributes,
                    ..Default::default()
                };
                [
                    span(
                        1,
                        "chat",
                        vec![
                            text("gen_ai.operation.name", "chat"),
                            text(
                                "gen_ai.input.messages",
                                r#"[{"role":"user","parts":[{"type":"text","content":"hi"}]}]"#,
                            ),
                        ],
                    ),
                    span(
                        2,
                        "retrieve",
                        vec![text("retrieval.documents.0.document.content", "doc")],
                    ),
                ]
            })
            .collect();
        crate::test_store::write(dir, spans)?;
        Ok(())
    }

    #[tokio::test]
    async fn hold_the_selected_traces_not_the_store() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        store(dir.path())?;
        let catalog = crate::test_store::open(dir.path()).await?;
        // As many selected traces as the export that failed; the store has 40 of them.
        let ids: Vec<String> = (1..=50_000u32).map(|n| format!("{n:032x}")).collect();
        register_order(&catalog.ctx, ids.iter().map(String::as_str))?;
        for sql in [CALLS_SQL.to_string(), context_sql()] {
            let plan = catalog.ctx.sql(&sql).await?.create_physical_plan().await?;
            let plan = displayable(plan.as_ref()).indent(true).to_string();
            // A hash join's first input is the side it builds its table from.
            let join = plan
                .find("HashJoinExec")
                .ok_or(format!("no hash join: {plan}"))?;
            let build = plan[join..]
                .lines()
                .find(|l| l.contains("DataSourceExec"))
                .ok_or(format!("no scan: {plan}"))?;
            assert!(
                !build.contains("parquet"),
                "the join holds the store's spans: {plan}"
            );
        }
        Ok(())
    }
}

/// Exports in chunks write what one chunk writes, spans in later hour partitions included.
#[cfg(test)]
mod chunks {
    use schemas::opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;
    use crate::test_store::text;

    const MINUTE: u64 = 60_000_000_000;
    /// 2026-02-25T06:00:00Z.
    const HOUR_START: u64 = 1_771_999_200_000_000_000;

    /// Twelve traces 25 minutes apart from 06:40, each a root, a retrieval and a chat call;
    /// traces 3 and 7 have a second call that starts 70 minutes into the trace, in a later hour
    /// partition, and ends before it starts (after the trace's every other end).
    fn store(dir: &std::path::Path) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        let mut spans = Vec::new();
        let mut ids = Vec::new();
        for n in 0u8..12 {
            let at = HOUR_START + 40 * MINUTE + u64::from(n) * 25 * MINUTE;
            let span = |id: u8, name: &str, start: u64, end: u64, attributes| Span {
                trace_id: vec![n + 1; 16],
                span_id: vec![id; 8],
                parent_span_id: if id == 1 { vec![] } else { vec![1; 8] },
                name: name.into(),
                start_time_unix_nano: at + start,
                end_time_unix_nano: at + end,
                attributes,
                ..Default::default()
            };
            let chat = |input: String| {
                vec![
                    text("gen_ai.operation.name", "chat"),
                    text(
                        "gen_ai.input.messages",
                        &format!(
                            r#"[{{"role":"user","parts":[{{"type":"text","content":"{input}"}}]}}]"#
                        ),
                    ),
                ]
            };
            spans.push(span(1, "handle", 0, 10 * MINUTE, vec![]));
            let doc = text(
                "retrieval.documents.0.document.content",
                &format!("doc {n}"),
            );
            spans.push(span(2, "retrieve", MINUTE, 2 * MINUTE, vec![doc]));
            spans.push(span(
                3,
                "chat",
                3 * MINUTE,
                4 * MINUTE,
                chat(format!("question {n}")),
            ));
            if n == 3 || n == 7 {
                spans.push(span(
                    4,
                    "chat",
                    70 * MINUTE,
                    69 * MINUTE,
                    chat(format!("late {n}")),
                ));
            }
            ids.push(format!("{:02x}", n + 1).repeat(16));
        }
        crate::test_store::write(dir, spans)?;
        Ok(ids)
    }

    async fn export_with(
        catalog: &Catalog,
        keys: &[TraceKey],
        out: &std::path::Path,
        (settle, first, chunk_bytes): (usize, usize, usize),
    ) -> Result<String, Box<dyn std::error::Error>> {
        let mut dataset = DatasetWriter::create(out)?;
        let cuts = Cuts {
            settle,
            first,
            chunk_bytes,
        };
        let exported = export(
            catalog,
            keys,
            "TRUE",
            Format::Items,
            Per::Call,
            &mut dataset,
            cuts,
        )
        .await?;
        let ids: Vec<&String> = keys.iter().map(|k| &k.trace_id).collect();
        assert_eq!(exported.trace_ids.iter().collect::<Vec<_>>(), ids);
        dataset.finish()?;
        Ok(std::fs::read_to_string(out)?)
    }

    /// Settled a trace at a time, or a few, and written a trace a chunk, an export writes what
    /// settling and writing every trace at once writes.
    #[tokio::test]
    async fn chunk_by_chunk_writes_what_one_chunk_writes() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let ids = store(&dir.path().join("store"))?;
        let catalog = crate::test_store::open(&dir.path().join("store")).await?;
        crate::select::register_selected(&catalog, &ids, ids.iter().map(|_| "all"))?;
        let (keys, settled) = settled_keys(&catalog, "TRUE", None).await?;
        assert_eq!(settled, 12);
        let (first, _) = settled_keys(&catalog, "TRUE", Some(5)).await?;
        let ids = |k: &[TraceKey]| k.iter().map(|k| k.trace_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&first), ids(&keys[..5]));
        assert_eq!(keys.len(), 12);

        let whole = export_with(
            &catalog,
            &keys,
            &dir.path().join("one.jsonl"),
            (100, 100, 1 << 30),
        )
        .await?;
        // A chunk per trace: 1 byte fits none, so every chunk holds one.
        for (n, cuts) in [(1, 1, 1), (5, 2, 1), (5, 100, 1 << 30)]
            .into_iter()
            .enumerate()
        {
            let out = dir.path().join(format!("cut{n}.jsonl"));
            assert_eq!(
                export_with(&catalog, &keys, &out, cuts).await?,
                whole,
                "{cuts:?}"
            );
        }

        let lines: Vec<serde_json::Value> = whole
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        assert_eq!(lines.len(), 14, "12 calls and 2 late ones: {whole}");
        for n in 0..12 {
            assert!(
                whole.contains(&format!("question {n}")),
                "call of trace {n}: {whole}"
            );
            assert!(
                whole.contains(&format!("doc {n}")),
                "context of trace {n}: {whole}"
            );
        }
        for n in [3, 7] {
            assert!(
                whole.contains(&format!("late {n}")),
                "late call of trace {n}: {whole}"
            );
        }
        Ok(())
    }
}
