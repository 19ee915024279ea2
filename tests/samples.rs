//! Real captured traces (`tests/fixtures/genai/trace_*.json`: spans as an OTLP sink decoded
//! them, with the generator's ground truth) turned back into OTLP requests.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use serde_json::Value;

fn any(v: &Value) -> Option<AnyValue> {
    let value = match v {
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) if n.is_i64() => any_value::Value::IntValue(n.as_i64().unwrap_or(0)),
        Value::Number(n) => any_value::Value::DoubleValue(n.as_f64().unwrap_or(0.0)),
        Value::Array(items) => any_value::Value::ArrayValue(ArrayValue {
            values: items.iter().filter_map(any).collect(),
        }),
        _ => return None,
    };
    Some(AnyValue { value: Some(value) })
}

fn attrs(v: &Value) -> Vec<KeyValue> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: any(v),
                    key_strindex: 0,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn id(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| hex::decode(s).ok())
        .unwrap_or_default()
}

fn kind(v: &Value) -> i32 {
    match v.as_str().unwrap_or("") {
        "INTERNAL" => 1,
        "SERVER" => 2,
        "CLIENT" => 3,
        "PRODUCER" => 4,
        "CONSUMER" => 5,
        _ => 0,
    }
}

fn status(v: &Value) -> Option<Status> {
    let code = match v["code"].as_str()? {
        "OK" => 1,
        "ERROR" => 2,
        _ => 0,
    };
    Some(Status {
        code,
        message: v["message"].as_str().unwrap_or_default().to_string(),
    })
}

/// One request holding every span of a `trace_*.json` fixture, and the fixture's `truth`.
pub fn trace_fixture(text: &str) -> Result<(ExportTraceServiceRequest, Value), serde_json::Error> {
    let doc: Value = serde_json::from_str(text)?;
    let mut resource_spans = Vec::new();
    for s in doc["spans"].as_array().into_iter().flatten() {
        let events = s["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| span::Event {
                time_unix_nano: e["time_unix_nano"].as_u64().unwrap_or(0),
                name: e["name"].as_str().unwrap_or_default().to_string(),
                attributes: attrs(&e["attributes"]),
                dropped_attributes_count: 0,
            })
            .collect();
        let span = Span {
            trace_id: id(&s["trace_id"]),
            span_id: id(&s["span_id"]),
            parent_span_id: id(&s["parent_span_id"]),
            name: s["name"].as_str().unwrap_or_default().to_string(),
            kind: kind(&s["kind"]),
            start_time_unix_nano: s["start_time_unix_nano"].as_u64().unwrap_or(0),
            end_time_unix_nano: s["end_time_unix_nano"].as_u64().unwrap_or(0),
            attributes: attrs(&s["attributes"]),
            events,
            status: status(&s["status"]),
            ..Default::default()
        };
        resource_spans.push(ResourceSpans {
            resource: Some(Resource {
                attributes: attrs(&s["resource"]),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: s["scope"]["name"].as_str().unwrap_or_default().to_string(),
                    version: s["scope"]["version"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    ..Default::default()
                }),
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    Ok((
        ExportTraceServiceRequest { resource_spans },
        doc["truth"].clone(),
    ))
}
