//! OTLP -> Arrow: span validation, attribute rendering, and the builder that turns OTLP
//! requests into span table v1 record batches, one per Hive partition. The builder reads the
//! protobuf bytes in place through `wire` (no struct or `String` per attribute); prost structs
//! are encoded first and take the same path.
//!
//! Attribute values become text: strings as they are, integers in decimal, doubles in their
//! shortest round-trip form (`1.0`, `2.5e-7`; non-finite as `NaN`, `Infinity`, `-Infinity`),
//! booleans `true`/`false`, bytes in standard base64, arrays and kvlists as JSON (kvlists as
//! objects in their original key order), and an empty `AnyValue` as a null map value.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, Int64Builder, ListArray, MapBuilder, MapFieldNames, RecordBatch,
    StringBuilder, StructArray, TimestampNanosecondBuilder, UInt32Builder,
};
use arrow::buffer::OffsetBuffer;
use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, span, status};
use prost::Message as _;

use crate::columns::{self as c, promoted};
use crate::error::SchemaError;
use crate::layout::Partition;
use crate::span_table::{
    event_fields, link_fields, list_item_field, map_key_field, map_value_field, span_schema,
};
use crate::wire::{
    AnyValueRef, ArenaSizes, EventRef, KeyValueRef, LinkRef, Request, ScopeRef, SpanRef, WireError,
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
    validate_ids(
        &span.trace_id,
        &span.span_id,
        &span.parent_span_id,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
    )
}

/// [`validate_span`] on a span's parts, for structs and wire views alike.
pub(crate) fn validate_ids(
    trace_id: &[u8],
    span_id: &[u8],
    parent_span_id: &[u8],
    start_time_unix_nano: u64,
    end_time_unix_nano: u64,
) -> Result<(), SpanRejection> {
    let all_zero = |b: &[u8]| b.iter().all(|&x| x == 0);
    if trace_id.len() != 16 || all_zero(trace_id) {
        return Err(SpanRejection::TraceId(trace_id.len()));
    }
    if span_id.len() != 8 || all_zero(span_id) {
        return Err(SpanRejection::SpanId(span_id.len()));
    }
    if !parent_span_id.is_empty() && parent_span_id.len() != 8 {
        return Err(SpanRejection::ParentSpanId(parent_span_id.len()));
    }
    if i64::try_from(start_time_unix_nano).is_err() || i64::try_from(end_time_unix_nano).is_err() {
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

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Appends `bytes` as lowercase hex without allocating for ids of up to 32 bytes.
fn append_hex(builder: &mut StringBuilder, bytes: &[u8]) {
    let mut buf = [0u8; 64];
    if let Some(out) = buf.get_mut(..bytes.len() * 2)
        && hex::encode_to_slice(bytes, out).is_ok()
        && let Ok(text) = std::str::from_utf8(out)
    {
        builder.append_value(text);
    } else {
        builder.append_value(hex::encode(bytes));
    }
}

type AttrMapBuilder = MapBuilder<StringBuilder, StringBuilder>;

/// What one partition's finished batch held, so that its next batch starts with builders of
/// that size: builders grown from empty re-copy their buffers at every doubling and fault in
/// fresh pages each time, a visible share of ingest's CPU.
#[derive(Debug, Clone, Copy, Default)]
struct BatchSizes {
    rows: usize,
    names: usize,
    attributes: MapSizes,
    resource_attributes: MapSizes,
    scope_attributes: MapSizes,
    events: usize,
    event_names: usize,
    event_attributes: MapSizes,
}

/// Entries and key and value bytes of an attribute map column.
#[derive(Debug, Clone, Copy, Default)]
struct MapSizes {
    entries: usize,
    keys: usize,
    values: usize,
}

impl MapSizes {
    fn of(builder: &mut AttrMapBuilder) -> Self {
        Self {
            entries: builder.keys().len(),
            keys: builder.keys().values_slice().len(),
            values: builder.values().values_slice().len(),
        }
    }
}

/// Partitions whose last batch size is remembered: the sizes are only a hint, and a service
/// sees a new hourly partition per tenant every hour, so past this many the hints start over
/// instead of growing for the life of the process.
const SIZE_HINTS_MAX: usize = 1024;

/// `n` plus an eighth, so that a batch a little larger than the last one does not double.
fn headroom(n: usize) -> usize {
    n + n / 8
}

fn strings(items: usize, bytes: usize) -> StringBuilder {
    StringBuilder::with_capacity(headroom(items), headroom(bytes))
}

fn attr_map_builder(rows: usize, sizes: MapSizes) -> AttrMapBuilder {
    let names = MapFieldNames {
        entry: "entries".into(),
        key: "keys".into(),
        value: "values".into(),
    };
    let keys = strings(sizes.entries, sizes.keys);
    let values = strings(sizes.entries, sizes.values);
    MapBuilder::with_capacity(Some(names), keys, values, headroom(rows))
        .with_keys_field(Arc::new(map_key_field()))
        .with_values_field(Arc::new(map_value_field()))
}

/// A prost `AnyValue` for the rare values rendered through structs: arrays, kvlists, bytes,
/// string-table indexes and merged duplicates (`bytes` is the whole `KeyValue`).
fn other_value(bytes: &[u8]) -> Option<AnyValue> {
    KeyValue::decode(bytes).ok().and_then(|kv| kv.value)
}

/// An attribute value as stored: borrowed from the request when it is a string.
fn value_text<'a>(value: AnyValueRef<'a>) -> Option<Cow<'a, str>> {
    match value {
        AnyValueRef::Empty => None,
        AnyValueRef::Str(s) => Some(Cow::Borrowed(s)),
        AnyValueRef::Bool(b) => Some(Cow::Borrowed(if b { "true" } else { "false" })),
        AnyValueRef::Int(i) => Some(Cow::Owned(i.to_string())),
        AnyValueRef::Double(d) => {
            let mut out = String::new();
            push_double(&mut out, d);
            Some(Cow::Owned(out))
        }
        AnyValueRef::Other(kv) => other_value(kv)
            .as_ref()
            .and_then(render_value)
            .map(Cow::Owned),
    }
}

/// Appends one attribute map entry; ints are formatted in `scratch`, not a new `String`.
fn append_entry(builder: &mut AttrMapBuilder, kv: &KeyValueRef<'_>, scratch: &mut String) {
    builder.keys().append_value(kv.key);
    let values = builder.values();
    match kv.value {
        AnyValueRef::Str(s) => values.append_value(s),
        AnyValueRef::Int(i) => {
            scratch.clear();
            let _ = write!(scratch, "{i}");
            values.append_value(&*scratch);
        }
        other => values.append_option(value_text(other)),
    }
}

fn append_attrs(builder: &mut AttrMapBuilder, attrs: &[KeyValueRef<'_>], scratch: &mut String) {
    for kv in attrs {
        append_entry(builder, kv, scratch);
    }
    // Only fails when keys and values differ in length, which append_entry prevents.
    let _ = builder.append(true);
}

/// Promoted column values of one span, found by the priority lists in [`promoted`].
#[derive(Default)]
struct Promoted<'a> {
    text: [Option<(usize, Cow<'a, str>)>; 6],
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

const MAX_EXACT_DOUBLE: f64 = 9_007_199_254_740_992.0; // 2^53

/// A prost value as a wire value; only scalars have one (anything else is `Empty`).
fn scalar_ref(value: &AnyValue) -> AnyValueRef<'_> {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => AnyValueRef::Str(s),
        Some(any_value::Value::IntValue(i)) => AnyValueRef::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => AnyValueRef::Double(*d),
        Some(any_value::Value::BoolValue(b)) => AnyValueRef::Bool(*b),
        _ => AnyValueRef::Empty,
    }
}

/// A token count: a non-negative whole number, given as int, double or numeric string.
fn token_count(value: AnyValueRef<'_>) -> Option<i64> {
    let n = match value {
        AnyValueRef::Int(i) => i,
        // Some SDKs record counts as doubles or strings; only whole numbers are counts.
        AnyValueRef::Double(d) if d.fract() == 0.0 && d.abs() <= MAX_EXACT_DOUBLE => d as i64,
        AnyValueRef::Str(s) => s.trim().parse().ok()?,
        // A `KeyValue` whose value was given twice: the merged value decides.
        AnyValueRef::Other(kv) => {
            return other_value(kv)
                .as_ref()
                .map(scalar_ref)
                .and_then(token_count);
        }
        _ => return None,
    };
    (n >= 0).then_some(n)
}

impl<'a> Promoted<'a> {
    fn see(&mut self, kv: &KeyValueRef<'a>) {
        if matches!(kv.value, AnyValueRef::Empty) {
            return;
        }
        for (slot, keys) in self.text.iter_mut().zip(TEXT_LISTS) {
            if let Some(rank) = keys.iter().position(|k| *k == kv.key)
                && slot.as_ref().is_none_or(|(r, _)| rank < *r)
                && let Some(text) = value_text(kv.value).filter(|t| !t.is_empty())
            {
                *slot = Some((rank, text));
            }
        }
        for (slot, keys) in self.tokens.iter_mut().zip(TOKEN_LISTS) {
            if let Some(rank) = keys.iter().position(|k| *k == kv.key)
                && slot.as_ref().is_none_or(|(r, _)| rank < *r)
                && let Some(n) = token_count(kv.value)
            {
                *slot = Some((rank, n));
            }
        }
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
    fn new(sizes: &BatchSizes) -> Self {
        let mut offsets = Vec::with_capacity(headroom(sizes.rows) + 1);
        offsets.push(0);
        Self {
            offsets,
            time: utc_timestamps(),
            name: strings(sizes.events, sizes.event_names),
            attributes: attr_map_builder(sizes.events, sizes.event_attributes),
            dropped: UInt32Builder::new(),
        }
    }

    fn append(&mut self, req: &Request<'_>, events: &[EventRef<'_>], scratch: &mut String) {
        for e in events {
            self.time.append_value(nanos(e.time_unix_nano));
            self.name.append_value(e.name);
            append_attrs(&mut self.attributes, req.event_attributes(e), scratch);
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
            attributes: attr_map_builder(0, MapSizes::default()),
            dropped: UInt32Builder::new(),
            flags: UInt32Builder::new(),
        }
    }

    fn append(&mut self, req: &Request<'_>, links: &[LinkRef<'_>], scratch: &mut String) {
        for l in links {
            append_hex(&mut self.trace_id, l.trace_id);
            append_hex(&mut self.span_id, l.span_id);
            self.trace_state.append_option(non_empty(l.trace_state));
            append_attrs(&mut self.attributes, req.link_attributes(l), scratch);
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

/// What a span inherits from its `ResourceSpans` and `ScopeSpans`, read once per request.
struct SpanContext<'a, 'b> {
    request: &'b Request<'a>,
    resource_attributes: &'b [KeyValueRef<'a>],
    resource_dropped: u32,
    resource_schema_url: &'a str,
    service_name: Option<Cow<'a, str>>,
    scope: &'b ScopeRef<'a>,
    scope_schema_url: &'a str,
}

impl SpanColumns {
    /// Empty columns sized for a batch like `sizes` (the partition's previous batch).
    fn new(sizes: &BatchSizes) -> Self {
        let rows = sizes.rows;
        Self {
            rows: 0,
            trace_id: strings(rows, rows * 32),
            span_id: strings(rows, rows * 16),
            parent_span_id: strings(rows, rows * 16),
            trace_state: StringBuilder::new(),
            flags: UInt32Builder::new(),
            name: strings(rows, sizes.names),
            kind: strings(rows, rows * 6),
            start_time: utc_timestamps(),
            end_time: utc_timestamps(),
            duration_ns: Int64Builder::new(),
            status_code: StringBuilder::new(),
            status_message: StringBuilder::new(),
            service_name: StringBuilder::new(),
            resource_attributes: attr_map_builder(rows, sizes.resource_attributes),
            resource_dropped: UInt32Builder::new(),
            resource_schema_url: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            scope_attributes: attr_map_builder(rows, sizes.scope_attributes),
            scope_dropped: UInt32Builder::new(),
            scope_schema_url: StringBuilder::new(),
            attributes: attr_map_builder(rows, sizes.attributes),
            dropped_attributes: UInt32Builder::new(),
            events: EventColumns::new(sizes),
            dropped_events: UInt32Builder::new(),
            links: LinkColumns::new(),
            dropped_links: UInt32Builder::new(),
            promoted_text: std::array::from_fn(|_| StringBuilder::new()),
            promoted_tokens: std::array::from_fn(|_| Int64Builder::new()),
        }
    }

    fn append<'a>(&mut self, ctx: &SpanContext<'a, '_>, s: &SpanRef<'a>, scratch: &mut String) {
        self.rows += 1;
        append_hex(&mut self.trace_id, s.trace_id);
        append_hex(&mut self.span_id, s.span_id);
        if s.parent_span_id.iter().any(|&b| b != 0) {
            append_hex(&mut self.parent_span_id, s.parent_span_id);
        } else {
            self.parent_span_id.append_null();
        }
        self.trace_state.append_option(non_empty(s.trace_state));
        self.flags.append_option((s.flags != 0).then_some(s.flags));
        self.name.append_value(s.name);
        self.kind.append_value(kind_name(s.kind));
        let (start, end) = (nanos(s.start_time_unix_nano), nanos(s.end_time_unix_nano));
        self.start_time.append_value(start);
        self.end_time.append_value(end);
        self.duration_ns
            .append_value(end.saturating_sub(start).max(0));
        self.status_code.append_value(status_name(s.status_code));
        self.status_message
            .append_option(non_empty(s.status_message));

        self.service_name.append_option(ctx.service_name.as_deref());
        append_attrs(
            &mut self.resource_attributes,
            ctx.resource_attributes,
            scratch,
        );
        self.resource_dropped.append_value(ctx.resource_dropped);
        self.resource_schema_url
            .append_option(non_empty(ctx.resource_schema_url));
        self.scope_name.append_option(non_empty(ctx.scope.name));
        self.scope_version
            .append_option(non_empty(ctx.scope.version));
        append_attrs(&mut self.scope_attributes, &ctx.scope.attributes, scratch);
        self.scope_dropped
            .append_value(ctx.scope.dropped_attributes_count);
        self.scope_schema_url
            .append_option(non_empty(ctx.scope_schema_url));

        let mut promoted = Promoted::default();
        for kv in ctx.request.attributes(s) {
            promoted.see(kv);
            append_entry(&mut self.attributes, kv, scratch);
        }
        let _ = self.attributes.append(true);
        self.dropped_attributes
            .append_value(s.dropped_attributes_count);
        self.events
            .append(ctx.request, ctx.request.events(s), scratch);
        self.dropped_events.append_value(s.dropped_events_count);
        self.links
            .append(ctx.request, ctx.request.links(s), scratch);
        self.dropped_links.append_value(s.dropped_links_count);

        for (b, v) in self.promoted_text.iter_mut().zip(promoted.text) {
            b.append_option(v.map(|(_, t)| t));
        }
        for (b, v) in self.promoted_tokens.iter_mut().zip(promoted.tokens) {
            b.append_option(v.map(|(_, n)| n));
        }
    }

    /// What the columns hold now, to size the partition's next batch.
    fn sizes(&mut self) -> BatchSizes {
        BatchSizes {
            rows: self.rows,
            names: self.name.values_slice().len(),
            attributes: MapSizes::of(&mut self.attributes),
            resource_attributes: MapSizes::of(&mut self.resource_attributes),
            scope_attributes: MapSizes::of(&mut self.scope_attributes),
            events: self.events.name.len(),
            event_names: self.events.name.values_slice().len(),
            event_attributes: MapSizes::of(&mut self.events.attributes),
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
    /// Sizes of each partition's last finished batch.
    sizes: HashMap<Partition, BatchSizes>,
    /// Formatting buffer for numbers, reused across attributes.
    scratch: String,
    /// What the last request's parse held, to size the next one's.
    arena_sizes: ArenaSizes,
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
            sizes: HashMap::new(),
            scratch: String::new(),
            arena_sizes: ArenaSizes::default(),
        }
    }

    /// Appends every span of `resource_spans` under `tenant`.
    pub fn append(&mut self, tenant: &str, resource_spans: &[ResourceSpans]) {
        let mut buf = Vec::new();
        for rs in resource_spans {
            prost::encoding::message::encode(1, rs, &mut buf);
        }
        // Bytes prost has just encoded are a valid request.
        let _ = self.append_encoded(tenant, &buf);
    }

    /// Appends every span of the protobuf `ExportTraceServiceRequest` in `request` under
    /// `tenant`, reading it in place. Nothing is appended when it is not a valid request.
    pub fn append_encoded(&mut self, tenant: &str, request: &[u8]) -> Result<(), WireError> {
        let request = Request::parse(request, &mut self.arena_sizes)?;
        // A request's spans mostly start within one hour: their partition (two strings) is
        // worked out again only when the hour changes.
        let mut current: Option<(i64, Partition)> = None;
        for rs in &request.resource_spans {
            let resource_attributes = &rs.resource.attributes;
            let service_name = resource_attributes
                .iter()
                .find(|kv| kv.key == c::SERVICE_NAME_ATTRIBUTE)
                .and_then(|kv| value_text(kv.value))
                .filter(|name| !name.is_empty());
            for ss in &rs.scope_spans {
                let ctx = SpanContext {
                    request: &request,
                    resource_attributes,
                    resource_dropped: rs.resource.dropped_attributes_count,
                    resource_schema_url: rs.schema_url,
                    service_name: service_name.clone(),
                    scope: &ss.scope,
                    scope_schema_url: ss.schema_url,
                };
                for s in &ss.spans {
                    let start = nanos(s.start_time_unix_nano);
                    let hour = Partition::hour_of(start);
                    let partition = match &current {
                        Some((h, p)) if *h == hour => p,
                        _ => &current.insert((hour, Partition::of_span(tenant, start))).1,
                    };
                    match self.partitions.get_mut(partition) {
                        Some(columns) => columns.append(&ctx, s, &mut self.scratch),
                        None => {
                            let sizes = self.sizes.get(partition).copied().unwrap_or_default();
                            let mut columns = SpanColumns::new(&sizes);
                            columns.append(&ctx, s, &mut self.scratch);
                            self.partitions.insert(partition.clone(), columns);
                        }
                    }
                }
            }
        }
        Ok(())
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
        let min_rows = min_rows.max(1);
        let mut out = Vec::new();
        // Taken out, so that the partition's next span starts a batch sized like this one
        // (partitions not reached after an error stay in place).
        for (p, mut cols) in self.partitions.extract_if(|_, cols| cols.rows >= min_rows) {
            if self.sizes.len() >= SIZE_HINTS_MAX && !self.sizes.contains_key(&p) {
                self.sizes.clear();
            }
            self.sizes.insert(p.clone(), cols.sizes());
            out.push((p, cols.finish()?));
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
