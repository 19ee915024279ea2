//! Round trips through the whole contract: OTLP structs -> Arrow (`to_record_batches`) ->
//! Parquet bytes (`write_span_file`) -> rows (`read_span_file`). Expected values are written
//! out as literals, never computed by the conversion code.

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, span::SpanKind, status::StatusCode,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::ReaderProperties;
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};

use crate::convert::{PartitionedBatches, SpanRejection, to_record_batches, validate_span};
use crate::layout::Partition;
use crate::parquet_file::write_span_file;
use crate::read::{Attributes, EventRow, LinkRow, SpanRow, read_span_file, rows_from_batch};
use crate::span_table::span_schema;

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const SPAN: &str = "b7ad6b7169203331";
/// 2026-03-02T10:15:30.123456789Z
const START: u64 = 1_772_446_530_123_456_789;

fn id(hex: &str) -> Vec<u8> {
    hex::decode(hex).expect("test ids are hex")
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(text: &str) -> Value {
    Value::StringValue(text.into())
}

fn any(value: Value) -> AnyValue {
    AnyValue { value: Some(value) }
}

fn kvlist(entries: Vec<KeyValue>) -> Value {
    Value::KvlistValue(KeyValueList { values: entries })
}

/// Expected attribute map entries, all with values.
fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect()
}

/// A valid span with nothing but ids and a start/end time.
fn bare_span(span_id: &str, start: u64) -> Span {
    Span {
        trace_id: id(TRACE),
        span_id: id(span_id),
        start_time_unix_nano: start,
        end_time_unix_nano: start,
        ..Default::default()
    }
}

fn with_attrs(attributes: Vec<KeyValue>) -> Span {
    Span {
        attributes,
        ..bare_span(SPAN, START)
    }
}

fn resource_spans(
    resource: Option<Resource>,
    scope: Option<InstrumentationScope>,
    spans: Vec<Span>,
) -> ResourceSpans {
    ResourceSpans {
        resource,
        scope_spans: vec![ScopeSpans {
            scope,
            spans,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// Converts, writes one Parquet file per partition and reads each back.
fn round_trip(tenant: &str, rs: &[ResourceSpans]) -> Vec<(Partition, Vec<SpanRow>)> {
    to_record_batches(tenant, rs)
        .expect("convert")
        .into_iter()
        .map(|(partition, batch)| {
            let file = write_span_file(&[batch]).expect("write parquet");
            (partition, read_span_file(file).expect("read parquet"))
        })
        .collect()
}

/// Round trip of spans that all land in one partition.
fn rows(rs: &[ResourceSpans]) -> Vec<SpanRow> {
    let mut parts = round_trip("acme", rs);
    assert_eq!(parts.len(), 1, "expected one partition, got {parts:?}");
    parts.remove(0).1
}

fn row_of(span: Span) -> SpanRow {
    let mut rows = rows(&[resource_spans(None, None, vec![span])]);
    assert_eq!(rows.len(), 1);
    rows.remove(0)
}

fn span_file(spans: Vec<Span>) -> Bytes {
    let batches = to_record_batches("acme", &[resource_spans(None, None, spans)]).expect("convert");
    let batches: Vec<_> = batches.into_iter().map(|(_, b)| b).collect();
    write_span_file(&batches).expect("write parquet")
}

/// A row with every optional column empty, to be completed with `..` in expectations.
fn empty_row() -> SpanRow {
    SpanRow {
        trace_id: TRACE.into(),
        span_id: SPAN.into(),
        parent_span_id: None,
        trace_state: None,
        flags: None,
        name: String::new(),
        kind: "UNSPECIFIED".into(),
        start_time_ns: 1_772_446_530_123_456_789,
        end_time_ns: 1_772_446_530_123_456_789,
        duration_ns: 0,
        status_code: "UNSET".into(),
        status_message: None,
        service_name: None,
        resource_attributes: vec![],
        resource_dropped_attributes_count: 0,
        resource_schema_url: None,
        scope_name: None,
        scope_version: None,
        scope_attributes: vec![],
        scope_dropped_attributes_count: 0,
        scope_schema_url: None,
        attributes: vec![],
        dropped_attributes_count: 0,
        events: vec![],
        dropped_events_count: 0,
        links: vec![],
        dropped_links_count: 0,
        gen_ai_operation_name: None,
        gen_ai_provider_name: None,
        gen_ai_request_model: None,
        gen_ai_response_model: None,
        gen_ai_input_tokens: None,
        gen_ai_output_tokens: None,
        session_id: None,
        user_id: None,
    }
}

#[test]
fn batch_schema_is_span_schema() {
    let batches = to_record_batches(
        "acme",
        &[resource_spans(None, None, vec![bare_span(SPAN, START)])],
    )
    .expect("convert");
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].1.schema(), span_schema());

    let file = span_file(vec![bare_span(SPAN, START)]);
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).expect("open parquet");
    assert_eq!(reader.schema().fields(), span_schema().fields());
}

#[test]
fn bare_span_round_trips_with_missing_values_as_null() {
    // No resource, no scope, empty trace_state, root span, no status, zero flags, kind 0.
    assert_eq!(row_of(bare_span(SPAN, START)), empty_row());
}

#[test]
fn empty_resource_scope_and_status_are_null_too() {
    let span = Span {
        status: Some(Status::default()),
        ..bare_span(SPAN, START)
    };
    let rs = resource_spans(
        Some(Resource::default()),
        Some(InstrumentationScope::default()),
        vec![span],
    );
    assert_eq!(rows(&[rs]), vec![empty_row()]);
}

#[test]
fn all_zero_parent_span_id_is_a_root() {
    let span = Span {
        parent_span_id: vec![0; 8],
        ..bare_span(SPAN, START)
    };
    assert_eq!(row_of(span).parent_span_id, None);
}

#[test]
fn every_field_of_a_full_span_round_trips() {
    let resource = Resource {
        attributes: vec![
            kv("service.name", s("chat-api")),
            kv("service.version", s("1.4.2")),
            kv("host.cpus", Value::IntValue(8)),
        ],
        dropped_attributes_count: 2,
        ..Default::default()
    };
    let scope = InstrumentationScope {
        name: "openinference.instrumentation.openai".into(),
        version: "0.1.18".into(),
        attributes: vec![kv("scope.flag", Value::BoolValue(true))],
        dropped_attributes_count: 1,
    };
    let span = Span {
        trace_id: id(TRACE),
        span_id: id(SPAN),
        trace_state: "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".into(),
        parent_span_id: id("00f067aa0ba902b7"),
        flags: 0x301,
        name: "chat gpt-4o".into(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: START,
        end_time_unix_nano: START + 1_500_000_000,
        attributes: vec![
            kv("gen_ai.operation.name", s("chat")),
            kv("gen_ai.provider.name", s("openai")),
            kv("gen_ai.request.model", s("gpt-4o")),
            kv("gen_ai.response.model", s("gpt-4o-2024-08-06")),
            kv("gen_ai.usage.input_tokens", Value::IntValue(1200)),
            kv("gen_ai.usage.output_tokens", Value::IntValue(345)),
            kv("session.id", s("sess-42")),
            kv("user.id", s("user-7")),
            kv("http.response.status_code", Value::IntValue(429)),
        ],
        dropped_attributes_count: 3,
        events: vec![
            span::Event {
                time_unix_nano: START + 1_000,
                name: "gen_ai.content.prompt".into(),
                attributes: vec![kv("gen_ai.prompt", s("hello"))],
                dropped_attributes_count: 0,
            },
            span::Event {
                time_unix_nano: START + 2_000,
                name: "exception".into(),
                attributes: vec![
                    kv("exception.type", s("RateLimitError")),
                    kv("exception.message", s("429 Too Many Requests")),
                    kv("exception.escaped", Value::BoolValue(false)),
                ],
                dropped_attributes_count: 4,
            },
        ],
        dropped_events_count: 5,
        links: vec![
            span::Link {
                trace_id: id("4bf92f3577b34da6a3ce929d0e0e4736"),
                span_id: id("53995c3f42cd8ad8"),
                trace_state: "vendor=1".into(),
                attributes: vec![
                    kv("link.kind", s("retry_of")),
                    kv("attempt", Value::IntValue(2)),
                ],
                dropped_attributes_count: 6,
                flags: 0x101,
            },
            span::Link {
                trace_id: id("5bf92f3577b34da6a3ce929d0e0e4736"),
                span_id: id("63995c3f42cd8ad8"),
                ..Default::default()
            },
        ],
        dropped_links_count: 7,
        status: Some(Status {
            message: "rate limited".into(),
            code: StatusCode::Error as i32,
        }),
    };
    let rs = ResourceSpans {
        resource: Some(resource),
        scope_spans: vec![ScopeSpans {
            scope: Some(scope),
            spans: vec![span],
            schema_url: "https://opentelemetry.io/schemas/1.27.0".into(),
        }],
        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
    };

    let expected = SpanRow {
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        span_id: "b7ad6b7169203331".into(),
        parent_span_id: Some("00f067aa0ba902b7".into()),
        trace_state: Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".into()),
        flags: Some(769),
        name: "chat gpt-4o".into(),
        kind: "CLIENT".into(),
        start_time_ns: 1_772_446_530_123_456_789,
        end_time_ns: 1_772_446_531_623_456_789,
        duration_ns: 1_500_000_000,
        status_code: "ERROR".into(),
        status_message: Some("rate limited".into()),
        service_name: Some("chat-api".into()),
        resource_attributes: attrs(&[
            ("service.name", "chat-api"),
            ("service.version", "1.4.2"),
            ("host.cpus", "8"),
        ]),
        resource_dropped_attributes_count: 2,
        resource_schema_url: Some("https://opentelemetry.io/schemas/1.26.0".into()),
        scope_name: Some("openinference.instrumentation.openai".into()),
        scope_version: Some("0.1.18".into()),
        scope_attributes: attrs(&[("scope.flag", "true")]),
        scope_dropped_attributes_count: 1,
        scope_schema_url: Some("https://opentelemetry.io/schemas/1.27.0".into()),
        attributes: attrs(&[
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", "gpt-4o"),
            ("gen_ai.response.model", "gpt-4o-2024-08-06"),
            ("gen_ai.usage.input_tokens", "1200"),
            ("gen_ai.usage.output_tokens", "345"),
            ("session.id", "sess-42"),
            ("user.id", "user-7"),
            ("http.response.status_code", "429"),
        ]),
        dropped_attributes_count: 3,
        events: vec![
            EventRow {
                time_ns: 1_772_446_530_123_457_789,
                name: "gen_ai.content.prompt".into(),
                attributes: attrs(&[("gen_ai.prompt", "hello")]),
                dropped_attributes_count: 0,
            },
            EventRow {
                time_ns: 1_772_446_530_123_458_789,
                name: "exception".into(),
                attributes: attrs(&[
                    ("exception.type", "RateLimitError"),
                    ("exception.message", "429 Too Many Requests"),
                    ("exception.escaped", "false"),
                ]),
                dropped_attributes_count: 4,
            },
        ],
        dropped_events_count: 5,
        links: vec![
            LinkRow {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "53995c3f42cd8ad8".into(),
                trace_state: Some("vendor=1".into()),
                attributes: attrs(&[("link.kind", "retry_of"), ("attempt", "2")]),
                dropped_attributes_count: 6,
                flags: Some(257),
            },
            LinkRow {
                trace_id: "5bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "63995c3f42cd8ad8".into(),
                trace_state: None,
                attributes: vec![],
                dropped_attributes_count: 0,
                flags: None,
            },
        ],
        dropped_links_count: 7,
        gen_ai_operation_name: Some("chat".into()),
        gen_ai_provider_name: Some("openai".into()),
        gen_ai_request_model: Some("gpt-4o".into()),
        gen_ai_response_model: Some("gpt-4o-2024-08-06".into()),
        gen_ai_input_tokens: Some(1200),
        gen_ai_output_tokens: Some(345),
        session_id: Some("sess-42".into()),
        user_id: Some("user-7".into()),
    };
    let parts = round_trip("acme", &[rs]);
    assert_eq!(
        parts,
        vec![(
            Partition {
                tenant: "acme".into(),
                date: "2026-03-02".into(),
                hour: 10,
            },
            vec![expected]
        )]
    );
}

#[test]
fn spans_keep_their_own_resource_and_scope() {
    let svc = |name: &str| Resource {
        attributes: vec![kv("service.name", s(name))],
        ..Default::default()
    };
    let scope = |name: &str| InstrumentationScope {
        name: name.into(),
        ..Default::default()
    };
    let first = ResourceSpans {
        resource: Some(svc("chat-api")),
        scope_spans: vec![
            ScopeSpans {
                scope: Some(scope("fastapi")),
                spans: vec![bare_span("0000000000000001", START)],
                schema_url: String::new(),
            },
            ScopeSpans {
                scope: Some(scope("openai")),
                spans: vec![bare_span("0000000000000002", START)],
                schema_url: String::new(),
            },
        ],
        schema_url: String::new(),
    };
    let second = resource_spans(
        Some(Resource {
            attributes: vec![kv("telemetry.sdk.language", s("python"))],
            ..Default::default()
        }),
        None,
        vec![bare_span("0000000000000003", START)],
    );
    let got: Vec<_> = rows(&[first, second])
        .into_iter()
        .map(|r| (r.span_id, r.service_name, r.scope_name))
        .collect();
    let some = |x: &str| Some(x.to_string());
    assert_eq!(
        got,
        vec![
            ("0000000000000001".into(), some("chat-api"), some("fastapi")),
            ("0000000000000002".into(), some("chat-api"), some("openai")),
            // A resource without `service.name` has no service name.
            ("0000000000000003".into(), None, None),
        ]
    );
}

#[test]
fn attribute_values_render_as_text_by_type() {
    let nested = kvlist(vec![
        kv("z", Value::IntValue(1)),
        kv(
            "a",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    any(kvlist(vec![
                        kv("y", s("x")),
                        kv("b", Value::BoolValue(false)),
                        KeyValue {
                            key: "none".into(),
                            value: None,
                            ..Default::default()
                        },
                    ])),
                    any(Value::DoubleValue(f64::NAN)),
                    AnyValue { value: None },
                ],
            }),
        ),
        kv("m", kvlist(vec![])),
    ]);
    let span = with_attrs(vec![
        kv("str", s("plain \"text\"")),
        kv("empty_str", s("")),
        kv("bool_t", Value::BoolValue(true)),
        kv("bool_f", Value::BoolValue(false)),
        kv("int", Value::IntValue(-42)),
        kv("int_min", Value::IntValue(i64::MIN)),
        kv("double_one", Value::DoubleValue(1.0)),
        kv("double_frac", Value::DoubleValue(0.1)),
        kv("double_small", Value::DoubleValue(2.5e-7)),
        kv("double_neg", Value::DoubleValue(-3.75)),
        kv("nan", Value::DoubleValue(f64::NAN)),
        kv("inf", Value::DoubleValue(f64::INFINITY)),
        kv("neg_inf", Value::DoubleValue(f64::NEG_INFINITY)),
        kv("bytes", Value::BytesValue(vec![0x00, 0x01, 0x02, 0xff])),
        kv("bytes_empty", Value::BytesValue(vec![])),
        kv(
            "array",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    any(s("a\"b")),
                    any(Value::IntValue(7)),
                    any(Value::DoubleValue(2.5)),
                    any(Value::DoubleValue(1.0)),
                    any(Value::BoolValue(true)),
                    any(Value::BytesValue(b"hi".to_vec())),
                    any(Value::DoubleValue(f64::INFINITY)),
                ],
            }),
        ),
        kv(
            "array_empty",
            Value::ArrayValue(ArrayValue { values: vec![] }),
        ),
        kv("nested", nested),
        KeyValue {
            key: "empty_any".into(),
            value: Some(AnyValue { value: None }),
            ..Default::default()
        },
        KeyValue {
            key: "no_value".into(),
            value: None,
            ..Default::default()
        },
        kv("strindex", Value::StringValueStrindex(3)),
    ]);
    let some = |k: &str, v: &str| (k.to_string(), Some(v.to_string()));
    let expected: Attributes = vec![
        some("str", "plain \"text\""),
        some("empty_str", ""),
        some("bool_t", "true"),
        some("bool_f", "false"),
        some("int", "-42"),
        some("int_min", "-9223372036854775808"),
        some("double_one", "1.0"),
        some("double_frac", "0.1"),
        some("double_small", "2.5e-7"),
        some("double_neg", "-3.75"),
        some("nan", "NaN"),
        some("inf", "Infinity"),
        some("neg_inf", "-Infinity"),
        some("bytes", "AAEC/w=="),
        some("bytes_empty", ""),
        some("array", r#"["a\"b",7,2.5,1.0,true,"aGk=","Infinity"]"#),
        some("array_empty", "[]"),
        some(
            "nested",
            r#"{"z":1,"a":[{"y":"x","b":false,"none":null},"NaN",null],"m":{}}"#,
        ),
        ("empty_any".into(), None),
        ("no_value".into(), None),
        some("strindex", "3"),
    ];
    assert_eq!(row_of(span).attributes, expected);
}

#[test]
fn unicode_round_trips_in_names_keys_and_values() {
    let nul = "before\0after";
    let span = Span {
        name: "résumé 検索 🔎".into(),
        attributes: vec![
            kv("multi_byte", s("naïve café 日本語")),
            kv("emoji", s("🦀 👩‍💻 🇫🇷")),
            kv("rtl", s("שלום עולם مرحبا")),
            kv("nul", s(nul)),
            kv("ключ", s("значение")),
            kv(
                "array",
                Value::ArrayValue(ArrayValue {
                    values: vec![any(s("😀")), any(s(nul)), any(s("עברית"))],
                }),
            ),
        ],
        ..bare_span(SPAN, START)
    };
    let resource = Resource {
        attributes: vec![kv("service.name", s("サービス"))],
        ..Default::default()
    };
    let row = rows(&[resource_spans(Some(resource), None, vec![span])]).remove(0);
    assert_eq!(row.name, "résumé 検索 🔎");
    assert_eq!(row.service_name.as_deref(), Some("サービス"));
    assert_eq!(
        row.attributes,
        attrs(&[
            ("multi_byte", "naïve café 日本語"),
            ("emoji", "🦀 👩‍💻 🇫🇷"),
            ("rtl", "שלום עולם مرحبا"),
            ("nul", "before\u{0}after"),
            ("ключ", "значение"),
            // JSON escapes the control character, keeps the rest as UTF-8.
            ("array", r#"["😀","before\u0000after","עברית"]"#),
        ])
    );
}

#[test]
fn huge_string_attribute_round_trips() {
    let huge: String = "0123456789abcdef".repeat(5 * 1024 * 1024 / 16);
    assert_eq!(huge.len(), 5 * 1024 * 1024);
    let row = row_of(with_attrs(vec![
        kv("gen_ai.input.messages", s(&huge)),
        kv("after", s("x")),
    ]));
    let value = row
        .attribute("gen_ai.input.messages")
        .expect("huge attribute");
    assert_eq!(value.len(), 5_242_880);
    assert!(value == huge, "huge value changed in the round trip");
    assert_eq!(row.attribute("after"), Some("x"));
}

#[test]
fn many_attributes_keep_their_order() {
    let span = with_attrs(
        (0..3000)
            .map(|i| kv(&format!("attr.{i:04}"), Value::IntValue(i)))
            .collect(),
    );
    let got = row_of(span).attributes;
    assert_eq!(got.len(), 3000);
    assert_eq!(got[0], ("attr.0000".into(), Some("0".into())));
    assert_eq!(got[1234], ("attr.1234".into(), Some("1234".into())));
    assert_eq!(got[2999], ("attr.2999".into(), Some("2999".into())));
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "order changed");
}

#[test]
fn end_before_start_keeps_end_and_clamps_duration_to_zero() {
    let span = Span {
        end_time_unix_nano: START - 5_000,
        ..bare_span(SPAN, START)
    };
    assert_eq!(validate_span(&span), Ok(()));
    let row = row_of(span);
    assert_eq!(row.start_time_ns, 1_772_446_530_123_456_789);
    assert_eq!(row.end_time_ns, 1_772_446_530_123_451_789);
    assert_eq!(row.duration_ns, 0);
}

#[test]
fn kinds_and_status_codes_are_stored_by_name() {
    let cases = [
        (SpanKind::Unspecified as i32, "UNSPECIFIED"),
        (SpanKind::Internal as i32, "INTERNAL"),
        (SpanKind::Server as i32, "SERVER"),
        (SpanKind::Client as i32, "CLIENT"),
        (SpanKind::Producer as i32, "PRODUCER"),
        (SpanKind::Consumer as i32, "CONSUMER"),
        (42, "UNSPECIFIED"),
    ];
    let statuses = [
        (None, "UNSET"),
        (Some(StatusCode::Unset as i32), "UNSET"),
        (Some(StatusCode::Ok as i32), "OK"),
        (Some(StatusCode::Error as i32), "ERROR"),
        (Some(9), "UNSET"),
    ];
    let spans: Vec<Span> = (0..cases.len().max(statuses.len()))
        .map(|i| Span {
            kind: cases.get(i).map_or(0, |c| c.0),
            status: statuses.get(i).and_then(|s| s.0).map(|code| Status {
                code,
                message: String::new(),
            }),
            ..bare_span(&format!("{:016x}", i + 1), START)
        })
        .collect();
    let got = rows(&[resource_spans(None, None, spans)]);
    let kinds: Vec<&str> = got.iter().map(|r| r.kind.as_str()).collect();
    let codes: Vec<&str> = got.iter().map(|r| r.status_code.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "UNSPECIFIED",
            "INTERNAL",
            "SERVER",
            "CLIENT",
            "PRODUCER",
            "CONSUMER",
            "UNSPECIFIED"
        ]
    );
    assert_eq!(
        codes,
        ["UNSET", "UNSET", "OK", "ERROR", "UNSET", "UNSET", "UNSET"]
    );
}

#[test]
fn provider_falls_back_to_gen_ai_system_then_llm_provider() {
    let row = row_of(with_attrs(vec![kv("gen_ai.system", s("anthropic"))]));
    assert_eq!(row.gen_ai_provider_name.as_deref(), Some("anthropic"));

    let row = row_of(with_attrs(vec![kv("llm.provider", s("azure"))]));
    assert_eq!(row.gen_ai_provider_name.as_deref(), Some("azure"));

    // Priority is by key, not by position on the span.
    let row = row_of(with_attrs(vec![
        kv("llm.provider", s("azure")),
        kv("gen_ai.system", s("openai")),
        kv("gen_ai.provider.name", s("azure.ai.openai")),
    ]));
    assert_eq!(row.gen_ai_provider_name.as_deref(), Some("azure.ai.openai"));
    assert_eq!(row.attribute("gen_ai.system"), Some("openai"));
}

#[test]
fn tokens_fall_back_to_prompt_and_completion_tokens() {
    let row = row_of(with_attrs(vec![
        kv("gen_ai.usage.prompt_tokens", Value::IntValue(11)),
        kv("gen_ai.usage.completion_tokens", Value::IntValue(22)),
    ]));
    assert_eq!(
        (row.gen_ai_input_tokens, row.gen_ai_output_tokens),
        (Some(11), Some(22))
    );

    let row = row_of(with_attrs(vec![
        kv("gen_ai.usage.prompt_tokens", Value::IntValue(11)),
        kv("gen_ai.usage.input_tokens", Value::IntValue(33)),
        kv("gen_ai.usage.completion_tokens", Value::IntValue(22)),
        kv("gen_ai.usage.output_tokens", Value::IntValue(44)),
    ]));
    assert_eq!(
        (row.gen_ai_input_tokens, row.gen_ai_output_tokens),
        (Some(33), Some(44))
    );
}

#[test]
fn openinference_tokens_model_and_provider_are_promoted() {
    let row = row_of(with_attrs(vec![
        kv("openinference.span.kind", s("LLM")),
        kv("llm.model_name", s("gpt-4o-mini")),
        kv("llm.provider", s("openai")),
        kv("llm.token_count.prompt", Value::IntValue(512)),
        kv("llm.token_count.completion", Value::IntValue(64)),
    ]));
    assert_eq!(row.gen_ai_request_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(row.gen_ai_response_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(row.gen_ai_provider_name.as_deref(), Some("openai"));
    assert_eq!(
        (row.gen_ai_input_tokens, row.gen_ai_output_tokens),
        (Some(512), Some(64))
    );
    assert_eq!(row.gen_ai_operation_name, None);
    assert_eq!(row.attribute("llm.token_count.prompt"), Some("512"));
}

#[test]
fn operation_name_falls_back_to_llm_request_type() {
    let row = row_of(with_attrs(vec![kv("llm.request.type", s("completion"))]));
    assert_eq!(row.gen_ai_operation_name.as_deref(), Some("completion"));
}

#[test]
fn token_counts_given_as_string_or_whole_double_are_read() {
    let row = row_of(with_attrs(vec![
        kv("gen_ai.usage.input_tokens", s("42")),
        kv("gen_ai.usage.output_tokens", Value::DoubleValue(17.0)),
    ]));
    assert_eq!(
        (row.gen_ai_input_tokens, row.gen_ai_output_tokens),
        (Some(42), Some(17))
    );
    assert_eq!(row.attribute("gen_ai.usage.output_tokens"), Some("17.0"));

    // Not counts: a fraction, a word, NaN, a bool. An unusable preferred key yields to the next.
    let row = row_of(with_attrs(vec![
        kv("gen_ai.usage.input_tokens", Value::DoubleValue(1.5)),
        kv("gen_ai.usage.output_tokens", s("many")),
        kv(
            "gen_ai.usage.completion_tokens",
            Value::DoubleValue(f64::NAN),
        ),
        kv("llm.token_count.completion", Value::BoolValue(true)),
    ]));
    assert_eq!(
        (row.gen_ai_input_tokens, row.gen_ai_output_tokens),
        (None, None)
    );

    let row = row_of(with_attrs(vec![
        kv("gen_ai.usage.input_tokens", s("n/a")),
        kv("gen_ai.usage.prompt_tokens", Value::IntValue(5)),
    ]));
    assert_eq!(row.gen_ai_input_tokens, Some(5));
}

#[test]
fn session_id_prefers_session_id_over_conversation_id() {
    let row = row_of(with_attrs(vec![kv("gen_ai.conversation.id", s("conv-1"))]));
    assert_eq!(row.session_id.as_deref(), Some("conv-1"));

    let row = row_of(with_attrs(vec![
        kv("gen_ai.conversation.id", s("conv-1")),
        kv("session.id", s("sess-1")),
    ]));
    assert_eq!(row.session_id.as_deref(), Some("sess-1"));
    assert_eq!(row.attribute("gen_ai.conversation.id"), Some("conv-1"));

    // An empty preferred value does not hide the fallback.
    let row = row_of(with_attrs(vec![
        kv("session.id", s("")),
        kv("gen_ai.conversation.id", s("conv-2")),
    ]));
    assert_eq!(row.session_id.as_deref(), Some("conv-2"));
}

#[test]
fn user_id_prefers_user_id_over_enduser_id() {
    let row = row_of(with_attrs(vec![kv("enduser.id", s("alice"))]));
    assert_eq!(row.user_id.as_deref(), Some("alice"));

    let row = row_of(with_attrs(vec![
        kv("enduser.id", s("alice")),
        kv("user.id", Value::IntValue(1001)),
    ]));
    assert_eq!(row.user_id.as_deref(), Some("1001"));
}

#[test]
fn spans_are_routed_by_utc_start_hour() {
    // 10:59:59.999999999 and 11:00:00 on 2026-03-02, and 23:59:59 on 2025-12-31 whose end is
    // in the next year: each goes by its start.
    let last_of_year = Span {
        end_time_unix_nano: 1_767_225_601_000_000_000,
        ..bare_span("0000000000000003", 1_767_225_599_000_000_000)
    };
    let spans = vec![
        bare_span("0000000000000001", 1_772_449_199_999_999_999),
        bare_span("0000000000000002", 1_772_449_200_000_000_000),
        last_of_year,
        bare_span("0000000000000004", 1_772_449_200_500_000_000),
    ];
    let parts = round_trip("team-a", &[resource_spans(None, None, spans)]);
    let got: Vec<(Partition, Vec<String>)> = parts
        .into_iter()
        .map(|(p, rows)| (p, rows.into_iter().map(|r| r.span_id).collect()))
        .collect();
    let partition = |date: &str, hour| Partition {
        tenant: "team-a".into(),
        date: date.into(),
        hour,
    };
    assert_eq!(
        got,
        vec![
            (partition("2025-12-31", 23), vec!["0000000000000003".into()]),
            (partition("2026-03-02", 10), vec!["0000000000000001".into()]),
            (
                partition("2026-03-02", 11),
                vec!["0000000000000002".into(), "0000000000000004".into()]
            ),
        ]
    );
}

#[test]
fn parquet_file_has_schema_version_zstd_page_index_and_trace_id_bloom_filter() {
    let file = span_file(vec![bare_span(SPAN, START)]);

    let reader = ParquetRecordBatchReaderBuilder::try_new(file.clone()).expect("open parquet");
    let meta = reader.metadata();
    let kv = meta
        .file_metadata()
        .key_value_metadata()
        .expect("key-value metadata");
    let version = kv.iter().find(|e| e.key == "trace2eval.schema_version");
    assert_eq!(version.and_then(|e| e.value.as_deref()), Some("1"));

    let columns = meta.row_group(0).columns();
    let chunk = |name: &str| {
        columns
            .iter()
            .find(|c| c.column_path().string() == name)
            .expect("column chunk")
    };
    assert!(chunk("trace_id").bloom_filter_offset().is_some());
    assert!(chunk("span_id").bloom_filter_offset().is_none());
    assert!(matches!(chunk("name").compression(), Compression::ZSTD(_)));
    assert!(chunk("trace_id").column_index_offset().is_some());
    assert!(chunk("trace_id").offset_index_offset().is_some());

    // The filter answers for the stored id.
    let options = ReadOptionsBuilder::new()
        .with_reader_properties(
            ReaderProperties::builder()
                .set_read_bloom_filter(true)
                .build(),
        )
        .build();
    let reader = SerializedFileReader::new_with_options(file, options).expect("open parquet");
    let row_group = reader.get_row_group(0).expect("row group");
    let trace_id_column = columns
        .iter()
        .position(|c| c.column_path().string() == "trace_id")
        .expect("trace_id column");
    let filter = row_group
        .get_column_bloom_filter(trace_id_column)
        .expect("bloom filter");
    assert!(filter.check("0af7651916cd43dd8448eb211c80319c"));
    assert!(!filter.check("ffffffffffffffffffffffffffffffff"));
}

#[test]
fn validate_span_accepts_a_well_formed_span() {
    let span = Span {
        parent_span_id: id("00f067aa0ba902b7"),
        ..bare_span(SPAN, START)
    };
    assert_eq!(validate_span(&span), Ok(()));
}

#[test]
fn validate_span_rejects_bad_ids_and_times_with_reasons() {
    let base = bare_span(SPAN, START);
    let cases = [
        (
            Span {
                trace_id: vec![1; 15],
                ..base.clone()
            },
            SpanRejection::TraceId(15),
            "trace_id has 15 bytes, expected 16",
        ),
        (
            Span {
                trace_id: vec![],
                ..base.clone()
            },
            SpanRejection::TraceId(0),
            "trace_id is missing",
        ),
        (
            Span {
                trace_id: vec![0; 16],
                ..base.clone()
            },
            SpanRejection::TraceId(16),
            "trace_id is all zeros",
        ),
        (
            Span {
                span_id: vec![],
                ..base.clone()
            },
            SpanRejection::SpanId(0),
            "span_id is missing",
        ),
        (
            Span {
                span_id: vec![0; 8],
                ..base.clone()
            },
            SpanRejection::SpanId(8),
            "span_id is all zeros",
        ),
        (
            Span {
                parent_span_id: vec![7; 7],
                ..base.clone()
            },
            SpanRejection::ParentSpanId(7),
            "parent_span_id has 7 bytes, expected 8 or none",
        ),
        (
            Span {
                start_time_unix_nano: i64::MAX as u64 + 1,
                end_time_unix_nano: i64::MAX as u64 + 2,
                ..base.clone()
            },
            SpanRejection::TimeOutOfRange,
            "start or end time is after 2262-04-11, beyond nanosecond timestamps",
        ),
        (
            Span {
                end_time_unix_nano: u64::MAX,
                ..base.clone()
            },
            SpanRejection::TimeOutOfRange,
            "start or end time is after 2262-04-11, beyond nanosecond timestamps",
        ),
    ];
    for (span, rejection, message) in cases {
        let got = validate_span(&span);
        assert_eq!(got, Err(rejection), "{message}");
        assert_eq!(got.map_err(|e| e.to_string()), Err(message.to_string()));
    }
}

/// Span `i` of a bigger file: `i % 3` events and `i % 2` links, so list offsets vary by row.
fn numbered_span(i: u64) -> Span {
    Span {
        name: format!("span {i}"),
        attributes: vec![kv("i", Value::IntValue(i as i64))],
        events: (0..i % 3)
            .map(|e| span::Event {
                time_unix_nano: START + e,
                name: format!("event {i}.{e}"),
                attributes: vec![kv("e", Value::IntValue(e as i64))],
                dropped_attributes_count: 0,
            })
            .collect(),
        links: (0..i % 2)
            .map(|_| span::Link {
                trace_id: id("4bf92f3577b34da6a3ce929d0e0e4736"),
                span_id: id(&format!("{:016x}", i + 1)),
                ..Default::default()
            })
            .collect(),
        ..bare_span(&format!("{:016x}", i + 1), START)
    }
}

#[test]
fn several_flushed_batches_in_one_file_read_back_row_by_row() {
    // Flushing part of the builder, then appending more, must restart list offsets; reading
    // back crosses the reader's 1024-row batches.
    let mut builder = PartitionedBatches::new();
    let mut batches = Vec::new();
    for chunk in [0..700u64, 700..1500, 1500..2500] {
        let spans = chunk.map(numbered_span).collect();
        builder.append("acme", &[resource_spans(None, None, spans)]);
        batches.extend(
            builder
                .take_full(500)
                .expect("flush")
                .into_iter()
                .map(|(_, b)| b),
        );
    }
    assert_eq!(builder.rows(), 0);
    assert!(builder.finish().expect("finish").is_empty());
    assert_eq!(batches.len(), 3);

    let rows = read_span_file(write_span_file(&batches).expect("write")).expect("read");
    assert_eq!(rows.len(), 2500);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.name, format!("span {i}"));
        assert_eq!(row.attribute("i"), Some(i.to_string().as_str()));
        let events: Vec<&str> = row.events.iter().map(|e| e.name.as_str()).collect();
        let expected: Vec<String> = (0..i % 3).map(|e| format!("event {i}.{e}")).collect();
        assert_eq!(events, expected, "events of row {i}");
        assert_eq!(row.links.len(), i % 2, "links of row {i}");
    }
    assert_eq!(rows[2].events[1].attributes, attrs(&[("e", "1")]));
    assert_eq!(rows[2].events[1].time_ns, 1_772_446_530_123_456_790);
    assert_eq!(rows[2499].links[0].span_id, "00000000000009c4");
}

#[test]
fn rows_from_a_sliced_batch_are_the_slice() {
    let spans = (0..6).map(numbered_span).collect();
    let batches = to_record_batches("acme", &[resource_spans(None, None, spans)]).expect("convert");
    let rows = rows_from_batch(&batches[0].1.slice(2, 3)).expect("rows");
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["span 2", "span 3", "span 4"]);
    let events: Vec<usize> = rows.iter().map(|r| r.events.len()).collect();
    assert_eq!(events, [2, 0, 1]);
    assert_eq!(rows[0].events[1].name, "event 2.1");
    assert_eq!(rows[1].links[0].span_id, "0000000000000004");
    assert_eq!(rows[2].attributes, attrs(&[("i", "4")]));
}

/// Ingest writes its files at zstd level 1, compaction at level 3: the same rows, read back
/// alike, take fewer bytes once compacted.
#[test]
fn compaction_files_hold_the_same_rows_as_ingest_files_in_fewer_bytes() {
    use crate::parquet_file::PartitionedFiles;
    use crate::test_rng::Rng;
    let words: Vec<&str> = "the model answered question about retrieval context user asked which \
        document tokens"
        .split_whitespace()
        .collect();
    let mut rng = Rng(7);
    let spans: Vec<Span> = (0..2_000u64)
        .map(|i| {
            let text: Vec<&str> = (0..40).map(|_| rng.pick(&words)).collect();
            let mut span = with_attrs(vec![
                kv("gen_ai.prompt", s(&text.join(" "))),
                kv("gen_ai.request.model", s(rng.pick(&["gpt-4o", "claude"]))),
            ]);
            span.span_id = (i + 1).to_be_bytes().to_vec();
            span.start_time_unix_nano = START + i * 1_000_000;
            span.end_time_unix_nano = START + i * 1_000_000 + rng.next() % 1_000_000_000;
            span
        })
        .collect();
    let request = [resource_spans(None, None, spans)];

    let mut batches = PartitionedBatches::new();
    batches.append("acme", &request);
    let mut files = PartitionedFiles::default();
    files.drain(&mut batches).expect("encode");
    let mut ingested = files.finish().expect("finish");
    assert_eq!(ingested.len(), 1);
    let (_, ingest_file, rows) = ingested.remove(0);
    assert_eq!(rows, 2_000);

    let batches: Vec<_> = to_record_batches("acme", &request)
        .expect("convert")
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    let compacted = write_span_file(&batches).expect("write parquet");

    assert!(
        compacted.len() < ingest_file.len(),
        "compacted {} B, ingested {} B",
        compacted.len(),
        ingest_file.len()
    );
    let (a, b) = (
        read_span_file(ingest_file).expect("read ingest's file"),
        read_span_file(compacted).expect("read the compacted file"),
    );
    assert_eq!(a.len(), 2_000);
    assert_eq!(a, b);
}
