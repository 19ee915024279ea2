//! OTLP -> Arrow: span validation, attribute rendering, and the builder that turns
//! `ResourceSpans` into span table v1 record batches, one per Hive partition.
//!
//! Attribute values become text: strings as they are, integers in decimal, doubles in their
//! shortest round-trip form (`1.0`, `2.5e-7`; non-finite as `NaN`, `Infinity`, `-Infinity`),
//! booleans `true`/`false`, bytes in standard base64, arrays and kvlists as JSON (kvlists as
//! objects in their original key order), and an empty `AnyValue` as a null map value.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Builder, ListArray, MapBuilder, MapFieldNames, RecordBatch, StringBuilder,
    StructArray, TimestampNanosecondBuilder, UInt32Builder,
};
use arrow::buffer::OffsetBuffer;
use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, span, status};

use crate::columns::{self as c, promoted};
use crate::error::SchemaError;
use crate::layout::Partition;
use crate::span_table::{
    event_fields, link_fields, list_item_field, map_key_field, map_value_field, span_schema,
};

/// Why a span is refused at ingest. The rest of its request is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanRejection {
    TraceId(usize),
    SpanId(usize),
    ParentSpanId(usize),
    TimeOutOfRange,
}

impl std::fmt::Display for SpanRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TraceId(0) => f.write_str("trace_id is missing"),
            Self::TraceId(16) => f.write_str("trace_id is all zeros"),
            Self::TraceId(n) => write!(f, "trace_id has {n} bytes, expected 16"),
            Self::SpanId(0) => f.write_str("span_id is missing"),
            Self::SpanId(8) => f.write_str("span_id is all zeros"),
            Self::SpanId(n) => write!(f, "span_id has {n} bytes, expected 8"),
            Self::ParentSpanId(n) => write!(f, "parent_span_id has {n} bytes, expected 8 or none"),
            Self::TimeOutOfRange => {
                f.write_str("start or end time is after 2262-04-11, beyond nanosecond timestamps")
            }
        }
    }
}

/// Checks what the span table requires of a span: 16-byte non-zero trace id, 8-byte non-zero
/// span id, an absent or 8-byte parent id, and times that fit a signed nanosecond timestamp.
/// An end time before the start time is accepted (`duration_ns` is clamped to 0).
pub fn validate_span(span: &Span) -> Result<(), SpanRejection> {
    let all_zero = |b: &[u8]| b.iter().all(|&x| x == 0);
    if span.trace_id.len() != 16 || all_zero(&span.trace_id) {
        return Err(SpanRejection::TraceId(span.trace_id.len()));
    }
    if span.span_id.len() != 8 || all_zero(&span.span_id) {
        return Err(SpanRejection::SpanId(span.span_id.len()));
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Err(SpanRejection::ParentSpanId(span.parent_span_id.len()));
    }
    if i64::try_from(span.start_time_unix_nano).is_err()
        || i64::try_from(span.end_time_unix_nano).is_err()
    {
        return Err(SpanRejection::TimeOutOfRange);
    }
    Ok(())
}

/// Text of a span kind as stored in `kind`.
pub fn kind_name(kind: i32) -> &'static str {
    match span::SpanKind::try_from(kind) {
        Ok(span::SpanKind::Internal) => "INTERNAL",
        Ok(span::SpanKind::Server) => "SERVER",
        Ok(span::SpanKind::Client) => "CLIENT",
        Ok(span::SpanKind::Producer) => "PRODUCER",
        Ok(span::SpanKind::Consumer) => "CONSUMER",
        Ok(span::SpanKind::Unspecified) | Err(_) => "UNSPECIFIED",
    }
}

/// Text of a status code as stored in `status_code`.
pub fn status_name(code: i32) -> &'static str {
    match status::StatusCode::try_from(code) {
        Ok(status::StatusCode::Ok) => "OK",
        Ok(status::StatusCode::Error) => "ERROR",
        Ok(status::StatusCode::Unset) | Err(_) => "UNSET",
    }
}

/// Renders an attribute value as stored in the attribute maps; `None` for an empty value.
pub fn render_value(value: &AnyValue) -> Option<String> {
    let mut out = String::new();
    match value.value.as_ref()? {
        any_value::Value::StringValue(s) => return Some(s.clone()),
        any_value::Value::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
        // A string-table index only has meaning in OTLP profiles; keep the number.
        any_value::Value::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        any_value::Value::StringValueStrindex(i) => {
            let _ = write!(out, "{i}");
        }
        any_value::Value::DoubleValue(d) => push_double(&mut out, *d),
        any_value::Value::BytesValue(b) => {
            base64::engine::general_purpose::STANDARD.encode_string(b, &mut out)
        }
        any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_) => {
            push_json(&mut out, value)
        }
    }
    Some(out)
}

fn push_double(out: &mut String, d: f64) {
    if d.is_nan() {
        out.push_str("NaN");
    } else if d.is_infinite() {
        out.push_str(if d > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        // serde_json prints finite doubles in their shortest round-trip form, always with a
        // decimal point or exponent, so a double stays recognisable as one.
        out.push_str(&serde_json::Number::from_f64(d).map_or_else(String::new, |n| n.to_string()));
    }
}

fn push_json_string(out: &mut String, s: &str) {
    // Serialising a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

fn push_json(out: &mut String, value: &AnyValue) {
    match &value.value {
        None => out.push_str("null"),
        Some(any_value::Value::StringValue(s)) => push_json_string(out, s),
        Some(any_value::Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(any_value::Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(any_value::Value::StringValueStrindex(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(any_value::Value::DoubleValue(d)) if d.is_finite() => push_double(out, *d),
        Some(any_value::Value::DoubleValue(d)) => {
            let mut s = String::new();
            push_double(&mut s, *d);
            push_json_string(out, &s);
        }
        Some(any_value::Value::BytesValue(b)) => {
            push_json_string(out, &base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(any_value::Value::ArrayValue(a)) => {
            out.push('[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json(out, v);
            }
            out.push(']');
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            out.push('{');
            for (i, entry) in kv.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(out, &entry.key);
                out.push(':');
                match &entry.value {
                    Some(v) => push_json(out, v),
                    None => out.push_str("null"),
                }
            }
            out.push('}');
        }
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

type AttrMapBuilder = MapBuilder<StringBuilder, StringBuilder>;

fn attr_map_builder() -> AttrMapBuilder {
    let names = MapFieldNames {
        entry: "entries".into(),
        key: "keys".into(),
        value: "values".into(),
    };
    MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
        .with_keys_field(Arc::new(map_key_field()))
        .with_values_field(Arc::new(map_value_field()))
}

fn append_attrs(builder: &mut AttrMapBuilder, attrs: &[KeyValue]) {
    for kv in attrs {
        builder.keys().append_value(&kv.key);
        builder
            .values()
            .append_option(kv.value.as_ref().and_then(render_value));
    }
    // Only fails when keys and values differ in length, which the loop above prevents.
    let _ = builder.append(true);
}

/// Promoted column values of one span, found by the priority lists in [`promoted`].
#[derive(Default)]
struct Promoted {
    text: [Option<(usize, String)>; 6],
    tokens: [Option<(usize, i64)>; 2],
}

const TEXT_LISTS: [&[&str]; 6] = [
    promoted::OPERATION_NAME,
    promoted::PROVIDER_NAME,
    promoted::REQUEST_MODEL,
    promoted::RESPONSE_MODEL,
    promoted::SESSION_ID,
    promoted::USER_ID,
];
const TOKEN_LISTS: [&[&str]; 2] = [promoted::INPUT_TOKENS, promoted::OUTPUT_TOKENS];

/// A token count: a non-negative whole number, given as int, double or numeric string.
fn token_count(value: &AnyValue) -> Option<i64> {
    const MAX_EXACT_DOUBLE: f64 = 9_007_199_254_740_992.0; // 2^53
    let n = match value.value.as_ref()? {
        any_value::Value::IntValue(i) => *i,
        // Some SDKs record counts as doubles or strings; only whole numbers are counts.
        any_value::Value::DoubleValue(d) if d.fract() == 0.0 && d.abs() <= MAX_EXACT_DOUBLE => {
            *d as i64
        }
        any_value::Value::StringValue(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (n >= 0).then_some(n)
}

impl Promoted {
    fn from_attributes(attrs: &[KeyValue]) -> Self {
        let mut p = Promoted::default();
        for kv in attrs {
            let Some(value) = kv.value.as_ref() else {
                continue;
            };
            for (slot, keys) in p.text.iter_mut().zip(TEXT_LISTS) {
                if let Some(rank) = keys.iter().position(|k| *k == kv.key)
                    && slot.as_ref().is_none_or(|(r, _)| rank < *r)
                    && let Some(text) = render_value(value).filter(|t| !t.is_empty())
                {
                    *slot = Some((rank, text));
                }
            }
            for (slot, keys) in p.tokens.iter_mut().zip(TOKEN_LISTS) {
                if let Some(rank) = keys.iter().position(|k| *k == kv.key)
                    && slot.as_ref().is_none_or(|(r, _)| rank < *r)
                    && let Some(n) = token_count(value)
                {
                    *slot = Some((rank, n));
                }
            }
        }
        p
    }
}

/// Column builders of one record batch of span table v1.
struct SpanColumns {
    rows: usize,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    name: StringBuilder,
    kind: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    service_name: StringBuilder,
    resource_attributes: AttrMapBuilder,
    resource_dropped: UInt32Builder,
    resource_schema_url: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attributes: AttrMapBuilder,
    scope_dropped: UInt32Builder,
    scope_schema_url: StringBuilder,
    attributes: AttrMapBuilder,
    dropped_attributes: UInt32Builder,
    events: EventColumns,
    dropped_events: UInt32Builder,
    links: LinkColumns,
    dropped_links: UInt32Builder,
    promoted_text: [StringBuilder; 6],
    promoted_tokens: [Int64Builder; 2],
}

struct EventColumns {
    offsets: Vec<i32>,
    time: TimestampNanosecondBuilder,
    name: StringBuilder,
    attributes: AttrMapBuilder,
    dropped: UInt32Builder,
}

struct LinkColumns {
    offsets: Vec<i32>,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    trace_state: StringBuilder,
    attributes: AttrMapBuilder,
    dropped: UInt32Builder,
    flags: UInt32Builder,
}

fn utc_timestamps() -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::new().with_timezone("UTC")
}

fn list_array(
    offsets: &mut Vec<i32>,
    fields: arrow::datatypes::Fields,
    children: Vec<ArrayRef>,
) -> ArrayRef {
    let values = StructArray::new(fields.clone(), children, None);
    let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
    Arc::new(ListArray::new(
        list_item_field(fields),
        offsets,
        Arc::new(values),
        None,
    ))
}

/// Nanoseconds as i64; validated spans always fit, anything else saturates.
fn nanos(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

impl EventColumns {
    fn new() -> Self {
        Self {
            offsets: vec![0],
            time: utc_timestamps(),
            name: StringBuilder::new(),
            attributes: attr_map_builder(),
            dropped: UInt32Builder::new(),
        }
    }

    fn append(&mut self, events: &[span::Event]) {
        for e in events {
            self.time.append_value(nanos(e.time_unix_nano));
            self.name.append_value(&e.name);
            append_attrs(&mut self.attributes, &e.attributes);
            self.dropped.append_value(e.dropped_attributes_count);
        }
        let last = self.offsets.last().copied().unwrap_or(0);
        self.offsets.push(last + events.len() as i32);
    }

    fn finish(&mut self) -> ArrayRef {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.dropped.finish()),
        ];
        list_array(&mut self.offsets, event_fields(), children)
    }
}

impl LinkColumns {
    fn new() -> Self {
        Self {
            offsets: vec![0],
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            attributes: attr_map_builder(),
            dropped: UInt32Builder::new(),
            flags: UInt32Builder::new(),
        }
    }

    fn append(&mut self, links: &[span::Link]) {
        for l in links {
            self.trace_id.append_value(hex_lower(&l.trace_id));
            self.span_id.append_value(hex_lower(&l.span_id));
            self.trace_state.append_option(non_empty(&l.trace_state));
            append_attrs(&mut self.attributes, &l.attributes);
            self.dropped.append_value(l.dropped_attributes_count);
            self.flags.append_option((l.flags != 0).then_some(l.flags));
        }
        let last = self.offsets.last().copied().unwrap_or(0);
        self.offsets.push(last + links.len() as i32);
    }

    fn finish(&mut self) -> ArrayRef {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.dropped.finish()),
            Arc::new(self.flags.finish()),
        ];
        list_array(&mut self.offsets, link_fields(), children)
    }
}

/// What a span inherits from its `ResourceSpans` and `ScopeSpans`.
struct SpanContext<'a> {
    resource: Option<&'a Resource>,
    resource_schema_url: &'a str,
    service_name: Option<String>,
    scope: Option<&'a InstrumentationScope>,
    scope_schema_url: &'a str,
}

impl SpanColumns {
    fn new() -> Self {
        Self {
            rows: 0,
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            parent_span_id: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            flags: UInt32Builder::new(),
            name: StringBuilder::new(),
            kind: StringBuilder::new(),
            start_time: utc_timestamps(),
            end_time: utc_timestamps(),
            duration_ns: Int64Builder::new(),
            status_code: StringBuilder::new(),
            status_message: StringBuilder::new(),
            service_name: StringBuilder::new(),
            resource_attributes: attr_map_builder(),
            resource_dropped: UInt32Builder::new(),
            resource_schema_url: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            scope_attributes: attr_map_builder(),
            scope_dropped: UInt32Builder::new(),
            scope_schema_url: StringBuilder::new(),
            attributes: attr_map_builder(),
            dropped_attributes: UInt32Builder::new(),
            events: EventColumns::new(),
            dropped_events: UInt32Builder::new(),
            links: LinkColumns::new(),
            dropped_links: UInt32Builder::new(),
            promoted_text: std::array::from_fn(|_| StringBuilder::new()),
            promoted_tokens: std::array::from_fn(|_| Int64Builder::new()),
        }
    }

    fn append(&mut self, ctx: &SpanContext<'_>, s: &Span) {
        self.rows += 1;
        self.trace_id.append_value(hex_lower(&s.trace_id));
        self.span_id.append_value(hex_lower(&s.span_id));
        let parent = (!s.parent_span_id.is_empty() && s.parent_span_id.iter().any(|&b| b != 0))
            .then(|| hex_lower(&s.parent_span_id));
        self.parent_span_id.append_option(parent);
        self.trace_state.append_option(non_empty(&s.trace_state));
        self.flags.append_option((s.flags != 0).then_some(s.flags));
        self.name.append_value(&s.name);
        self.kind.append_value(kind_name(s.kind));
        let (start, end) = (nanos(s.start_time_unix_nano), nanos(s.end_time_unix_nano));
        self.start_time.append_value(start);
        self.end_time.append_value(end);
        self.duration_ns
            .append_value(end.saturating_sub(start).max(0));
        let (code, message) = s
            .status
            .as_ref()
            .map_or((0, ""), |st| (st.code, st.message.as_str()));
        self.status_code.append_value(status_name(code));
        self.status_message.append_option(non_empty(message));

        self.service_name.append_option(ctx.service_name.as_deref());
        let (res_attrs, res_dropped) = ctx.resource.map_or((&[][..], 0), |r| {
            (&r.attributes[..], r.dropped_attributes_count)
        });
        append_attrs(&mut self.resource_attributes, res_attrs);
        self.resource_dropped.append_value(res_dropped);
        self.resource_schema_url
            .append_option(non_empty(ctx.resource_schema_url));
        let scope = ctx.scope;
        self.scope_name
            .append_option(scope.and_then(|sc| non_empty(&sc.name)));
        self.scope_version
            .append_option(scope.and_then(|sc| non_empty(&sc.version)));
        append_attrs(
            &mut self.scope_attributes,
            scope.map_or(&[][..], |sc| &sc.attributes[..]),
        );
        self.scope_dropped
            .append_value(scope.map_or(0, |sc| sc.dropped_attributes_count));
        self.scope_schema_url
            .append_option(non_empty(ctx.scope_schema_url));

        append_attrs(&mut self.attributes, &s.attributes);
        self.dropped_attributes
            .append_value(s.dropped_attributes_count);
        self.events.append(&s.events);
        self.dropped_events.append_value(s.dropped_events_count);
        self.links.append(&s.links);
        self.dropped_links.append_value(s.dropped_links_count);

        let promoted = Promoted::from_attributes(&s.attributes);
        for (b, v) in self.promoted_text.iter_mut().zip(promoted.text) {
            b.append_option(v.map(|(_, t)| t));
        }
        for (b, v) in self.promoted_tokens.iter_mut().zip(promoted.tokens) {
            b.append_option(v.map(|(_, n)| n));
        }
    }

    fn finish(&mut self) -> Result<RecordBatch, SchemaError> {
        self.rows = 0;
        let [op, provider, req_model, resp_model, session, user] = &mut self.promoted_text;
        let [input_tokens, output_tokens] = &mut self.promoted_tokens;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.end_time.finish()),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.resource_attributes.finish()),
            Arc::new(self.resource_dropped.finish()),
            Arc::new(self.resource_schema_url.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            Arc::new(self.scope_attributes.finish()),
            Arc::new(self.scope_dropped.finish()),
            Arc::new(self.scope_schema_url.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.dropped_attributes.finish()),
            self.events.finish(),
            Arc::new(self.dropped_events.finish()),
            self.links.finish(),
            Arc::new(self.dropped_links.finish()),
            Arc::new(op.finish()),
            Arc::new(provider.finish()),
            Arc::new(req_model.finish()),
            Arc::new(resp_model.finish()),
            Arc::new(input_tokens.finish()),
            Arc::new(output_tokens.finish()),
            Arc::new(session.finish()),
            Arc::new(user.finish()),
        ];
        Ok(RecordBatch::try_new(span_schema(), columns)?)
    }
}

/// Builds span table rows from OTLP, routing each span to its Hive partition (tenant, UTC
/// date and hour of its start time). Spans are expected to have passed [`validate_span`].
pub struct PartitionedBatches {
    partitions: HashMap<Partition, SpanColumns>,
}

impl Default for PartitionedBatches {
    fn default() -> Self {
        Self::new()
    }
}

impl PartitionedBatches {
    pub fn new() -> Self {
        Self {
            partitions: HashMap::new(),
        }
    }

    /// Appends every span of `resource_spans` under `tenant`.
    pub fn append(&mut self, tenant: &str, resource_spans: &[ResourceSpans]) {
        for rs in resource_spans {
            let resource = rs.resource.as_ref();
            let service_name = resource.and_then(|r| {
                r.attributes
                    .iter()
                    .find(|kv| kv.key == c::SERVICE_NAME_ATTRIBUTE)
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(render_value)
                    .filter(|name| !name.is_empty())
            });
            for ss in &rs.scope_spans {
                let ctx = SpanContext {
                    resource,
                    resource_schema_url: &rs.schema_url,
                    service_name: service_name.clone(),
                    scope: ss.scope.as_ref(),
                    scope_schema_url: &ss.schema_url,
                };
                for s in &ss.spans {
                    let partition = Partition::of_span(tenant, nanos(s.start_time_unix_nano));
                    self.partitions
                        .entry(partition)
                        .or_insert_with(SpanColumns::new)
                        .append(&ctx, s);
                }
            }
        }
    }

    /// Rows buffered across all partitions.
    pub fn rows(&self) -> usize {
        self.partitions.values().map(|p| p.rows).sum()
    }

    /// Partitions that hold at least `min_rows` rows, finished as record batches.
    pub fn take_full(
        &mut self,
        min_rows: usize,
    ) -> Result<Vec<(Partition, RecordBatch)>, SchemaError> {
        let mut out = Vec::new();
        for (p, cols) in &mut self.partitions {
            if cols.rows >= min_rows.max(1) {
                out.push((p.clone(), cols.finish()?));
            }
        }
        Ok(out)
    }

    /// Every non-empty partition as a record batch, sorted by partition; leaves the builder
    /// empty.
    pub fn finish(&mut self) -> Result<Vec<(Partition, RecordBatch)>, SchemaError> {
        let mut out = self.take_full(1)?;
        self.partitions.clear();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// Converts `resource_spans` into one record batch per partition, sorted by partition.
pub fn to_record_batches(
    tenant: &str,
    resource_spans: &[ResourceSpans],
) -> Result<Vec<(Partition, RecordBatch)>, SchemaError> {
    let mut b = PartitionedBatches::new();
    b.append(tenant, resource_spans);
    b.finish()
}
