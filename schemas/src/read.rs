//! Reading span table rows back into plain Rust values: for tools and tests that check what a
//! store holds without a query engine.

use arrow::array::{Array, AsArray, RecordBatch, StringArray, StructArray};
use arrow::datatypes::{Int64Type, TimestampNanosecondType, UInt32Type};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::columns as c;
use crate::error::SchemaError;

/// Attribute map entries in stored order.
pub type Attributes = Vec<(String, Option<String>)>;

#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub time_ns: i64,
    pub name: String,
    pub attributes: Attributes,
    pub dropped_attributes_count: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LinkRow {
    pub trace_id: String,
    pub span_id: String,
    pub trace_state: Option<String>,
    pub attributes: Attributes,
    pub dropped_attributes_count: u32,
    pub flags: Option<u32>,
}

/// One row of span table v1 (without the partition columns, which are in the path).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRow {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub trace_state: Option<String>,
    pub flags: Option<u32>,
    pub name: String,
    pub kind: String,
    pub start_time_ns: i64,
    pub end_time_ns: i64,
    pub duration_ns: i64,
    pub status_code: String,
    pub status_message: Option<String>,
    pub service_name: Option<String>,
    pub resource_attributes: Attributes,
    pub resource_dropped_attributes_count: u32,
    pub resource_schema_url: Option<String>,
    pub scope_name: Option<String>,
    pub scope_version: Option<String>,
    pub scope_attributes: Attributes,
    pub scope_dropped_attributes_count: u32,
    pub scope_schema_url: Option<String>,
    pub attributes: Attributes,
    pub dropped_attributes_count: u32,
    pub events: Vec<EventRow>,
    pub dropped_events_count: u32,
    pub links: Vec<LinkRow>,
    pub dropped_links_count: u32,
    pub gen_ai_operation_name: Option<String>,
    pub gen_ai_provider_name: Option<String>,
    pub gen_ai_request_model: Option<String>,
    pub gen_ai_response_model: Option<String>,
    pub gen_ai_input_tokens: Option<i64>,
    pub gen_ai_output_tokens: Option<i64>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
}

impl SpanRow {
    /// Value of a span attribute, if present and non-empty.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }
}

fn bad(column: &'static str, expected: &'static str) -> SchemaError {
    SchemaError::Column { column, expected }
}

/// Columns of a struct array or a record batch, looked up by name.
trait Columns {
    fn column_named(&self, name: &str) -> Option<&dyn Array>;
}

impl Columns for RecordBatch {
    fn column_named(&self, name: &str) -> Option<&dyn Array> {
        self.column_by_name(name).map(|a| a.as_ref())
    }
}

impl Columns for StructArray {
    fn column_named(&self, name: &str) -> Option<&dyn Array> {
        self.column_by_name(name).map(|a| a.as_ref())
    }
}

fn strings<'a>(t: &'a impl Columns, name: &'static str) -> Result<&'a StringArray, SchemaError> {
    t.column_named(name)
        .and_then(|a| a.as_string_opt::<i32>())
        .ok_or_else(|| bad(name, "utf8"))
}

fn text(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

fn u32s(t: &impl Columns, name: &'static str) -> Result<Vec<Option<u32>>, SchemaError> {
    let a = t
        .column_named(name)
        .and_then(|a| a.as_primitive_opt::<UInt32Type>())
        .ok_or_else(|| bad(name, "uint32"))?;
    Ok(a.iter().collect())
}

fn i64s(t: &impl Columns, name: &'static str) -> Result<Vec<Option<i64>>, SchemaError> {
    let a = t
        .column_named(name)
        .and_then(|a| a.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| bad(name, "int64"))?;
    Ok(a.iter().collect())
}

fn times(t: &impl Columns, name: &'static str) -> Result<Vec<i64>, SchemaError> {
    let a = t
        .column_named(name)
        .and_then(|a| a.as_primitive_opt::<TimestampNanosecondType>())
        .ok_or_else(|| bad(name, "timestamp(ns)"))?;
    Ok(a.values().to_vec())
}

fn maps(t: &impl Columns, name: &'static str) -> Result<Vec<Attributes>, SchemaError> {
    let m = t
        .column_named(name)
        .and_then(|a| a.as_map_opt())
        .ok_or_else(|| bad(name, "map<utf8, utf8>"))?;
    let keys = m
        .keys()
        .as_string_opt::<i32>()
        .ok_or_else(|| bad(name, "utf8 keys"))?;
    let values = m
        .values()
        .as_string_opt::<i32>()
        .ok_or_else(|| bad(name, "utf8 values"))?;
    let offsets = m.value_offsets();
    Ok((0..m.len())
        .map(|row| {
            (offsets[row] as usize..offsets[row + 1] as usize)
                .map(|j| (keys.value(j).to_string(), text(values, j)))
                .collect()
        })
        .collect())
}

/// Rows of a list-of-struct column, each row's items converted by `item`.
fn lists<T>(
    t: &impl Columns,
    name: &'static str,
    item: impl Fn(&StructArray) -> Result<Vec<T>, SchemaError>,
) -> Result<Vec<Vec<T>>, SchemaError> {
    let l = t
        .column_named(name)
        .and_then(|a| a.as_list_opt::<i32>())
        .ok_or_else(|| bad(name, "list<struct>"))?;
    let values = l
        .values()
        .as_struct_opt()
        .ok_or_else(|| bad(name, "list<struct>"))?;
    let mut all = item(values)?.into_iter().map(Some).collect::<Vec<_>>();
    let offsets = l.value_offsets();
    Ok((0..l.len())
        .map(|row| {
            (offsets[row] as usize..offsets[row + 1] as usize)
                .filter_map(|j| all[j].take())
                .collect()
        })
        .collect())
}

fn event_rows(s: &StructArray) -> Result<Vec<EventRow>, SchemaError> {
    let time = times(s, c::event::TIME)?;
    let name = strings(s, c::event::NAME)?;
    let attrs = maps(s, c::event::ATTRIBUTES)?;
    let dropped = u32s(s, c::event::DROPPED_ATTRIBUTES_COUNT)?;
    Ok(attrs
        .into_iter()
        .enumerate()
        .map(|(i, attributes)| EventRow {
            time_ns: time[i],
            name: name.value(i).to_string(),
            attributes,
            dropped_attributes_count: dropped[i].unwrap_or(0),
        })
        .collect())
}

fn link_rows(s: &StructArray) -> Result<Vec<LinkRow>, SchemaError> {
    let trace_id = strings(s, c::link::TRACE_ID)?;
    let span_id = strings(s, c::link::SPAN_ID)?;
    let trace_state = strings(s, c::link::TRACE_STATE)?;
    let attrs = maps(s, c::link::ATTRIBUTES)?;
    let dropped = u32s(s, c::link::DROPPED_ATTRIBUTES_COUNT)?;
    let flags = u32s(s, c::link::FLAGS)?;
    Ok(attrs
        .into_iter()
        .enumerate()
        .map(|(i, attributes)| LinkRow {
            trace_id: trace_id.value(i).to_string(),
            span_id: span_id.value(i).to_string(),
            trace_state: text(trace_state, i),
            attributes,
            dropped_attributes_count: dropped[i].unwrap_or(0),
            flags: flags[i],
        })
        .collect())
}

/// Converts a span table v1 record batch into rows.
pub fn rows_from_batch(b: &RecordBatch) -> Result<Vec<SpanRow>, SchemaError> {
    let s = |name| strings(b, name);
    let (trace_id, span_id, parent, trace_state) = (
        s(c::TRACE_ID)?,
        s(c::SPAN_ID)?,
        s(c::PARENT_SPAN_ID)?,
        s(c::TRACE_STATE)?,
    );
    let (name, kind, status_code, status_message) = (
        s(c::NAME)?,
        s(c::KIND)?,
        s(c::STATUS_CODE)?,
        s(c::STATUS_MESSAGE)?,
    );
    let (service, res_url, scope_name, scope_version, scope_url) = (
        s(c::SERVICE_NAME)?,
        s(c::RESOURCE_SCHEMA_URL)?,
        s(c::SCOPE_NAME)?,
        s(c::SCOPE_VERSION)?,
        s(c::SCOPE_SCHEMA_URL)?,
    );
    let (op, provider, req_model, resp_model, session, user) = (
        s(c::GEN_AI_OPERATION_NAME)?,
        s(c::GEN_AI_PROVIDER_NAME)?,
        s(c::GEN_AI_REQUEST_MODEL)?,
        s(c::GEN_AI_RESPONSE_MODEL)?,
        s(c::SESSION_ID)?,
        s(c::USER_ID)?,
    );
    let flags = u32s(b, c::FLAGS)?;
    let (start, end, duration) = (
        times(b, c::START_TIME)?,
        times(b, c::END_TIME)?,
        i64s(b, c::DURATION_NS)?,
    );
    let mut res_attrs = maps(b, c::RESOURCE_ATTRIBUTES)?.into_iter();
    let mut scope_attrs = maps(b, c::SCOPE_ATTRIBUTES)?.into_iter();
    let mut attrs = maps(b, c::ATTRIBUTES)?.into_iter();
    let mut events = lists(b, c::EVENTS, event_rows)?.into_iter();
    let mut links = lists(b, c::LINKS, link_rows)?.into_iter();
    let res_dropped = u32s(b, c::RESOURCE_DROPPED_ATTRIBUTES_COUNT)?;
    let scope_dropped = u32s(b, c::SCOPE_DROPPED_ATTRIBUTES_COUNT)?;
    let dropped = u32s(b, c::DROPPED_ATTRIBUTES_COUNT)?;
    let dropped_events = u32s(b, c::DROPPED_EVENTS_COUNT)?;
    let dropped_links = u32s(b, c::DROPPED_LINKS_COUNT)?;
    let input_tokens = i64s(b, c::GEN_AI_INPUT_TOKENS)?;
    let output_tokens = i64s(b, c::GEN_AI_OUTPUT_TOKENS)?;

    let mut rows = Vec::with_capacity(b.num_rows());
    for i in 0..b.num_rows() {
        rows.push(SpanRow {
            trace_id: trace_id.value(i).to_string(),
            span_id: span_id.value(i).to_string(),
            parent_span_id: text(parent, i),
            trace_state: text(trace_state, i),
            flags: flags[i],
            name: name.value(i).to_string(),
            kind: kind.value(i).to_string(),
            start_time_ns: start[i],
            end_time_ns: end[i],
            duration_ns: duration[i].unwrap_or(0),
            status_code: status_code.value(i).to_string(),
            status_message: text(status_message, i),
            service_name: text(service, i),
            resource_attributes: res_attrs.next().unwrap_or_default(),
            resource_dropped_attributes_count: res_dropped[i].unwrap_or(0),
            resource_schema_url: text(res_url, i),
            scope_name: text(scope_name, i),
            scope_version: text(scope_version, i),
            scope_attributes: scope_attrs.next().unwrap_or_default(),
            scope_dropped_attributes_count: scope_dropped[i].unwrap_or(0),
            scope_schema_url: text(scope_url, i),
            attributes: attrs.next().unwrap_or_default(),
            dropped_attributes_count: dropped[i].unwrap_or(0),
            events: events.next().unwrap_or_default(),
            dropped_events_count: dropped_events[i].unwrap_or(0),
            links: links.next().unwrap_or_default(),
            dropped_links_count: dropped_links[i].unwrap_or(0),
            gen_ai_operation_name: text(op, i),
            gen_ai_provider_name: text(provider, i),
            gen_ai_request_model: text(req_model, i),
            gen_ai_response_model: text(resp_model, i),
            gen_ai_input_tokens: input_tokens[i],
            gen_ai_output_tokens: output_tokens[i],
            session_id: text(session, i),
            user_id: text(user, i),
        });
    }
    Ok(rows)
}

/// Reads every row of a span file.
pub fn read_span_file(bytes: Bytes) -> Result<Vec<SpanRow>, SchemaError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut rows = Vec::new();
    for batch in reader {
        rows.extend(rows_from_batch(&batch?)?);
    }
    Ok(rows)
}
