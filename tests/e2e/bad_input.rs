//! Bad input: every case gets a clear answer, and nothing else is lost — the spans of the good
//! requests sent around the bad ones are all in the store afterwards, and only they.

use std::collections::BTreeSet;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use trace2eval_tests::client::{self, Grpc, grpc_raw, http_post, protobuf, request};
use trace2eval_tests::harness::{Ingest, IngestOpts, TestResult, id_counts, local_store_rows};

const LIMIT: usize = 8 << 20;
const PB: &str = "application/x-protobuf";
const JSON: &str = "application/json";

fn span(trace: u8, id: u8, name: &str) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: name.into(),
        kind: 2,
        start_time_unix_nano: 1_772_000_000_000_000_000 + u64::from(id) * 1_000_000,
        end_time_unix_nano: 1_772_000_000_500_000_000 + u64::from(id) * 1_000_000,
        ..Default::default()
    }
}

fn ids(spans: &[Span]) -> BTreeSet<(String, String)> {
    spans
        .iter()
        .map(|s| (hex::encode(&s.trace_id), hex::encode(&s.span_id)))
        .collect()
}

fn start(dir: &std::path::Path) -> TestResult<Ingest> {
    Ingest::start(&IngestOpts::local(dir).arg("--max-request-bytes", &LIMIT.to_string()))
}

/// Stops ingest and returns the (trace_id, span_id) set in the store, failing on duplicates.
fn stored_ids(
    ingest: &mut Ingest,
    dir: &std::path::Path,
) -> TestResult<BTreeSet<(String, String)>> {
    let status = ingest.terminate()?;
    assert!(
        status.success(),
        "ingest exit {status}: {}",
        ingest.log_text()
    );
    let rows = local_store_rows(&dir.join("store"))?;
    let counts = id_counts(rows.iter().map(|(_, r)| r));
    assert!(counts.values().all(|&n| n == 1), "duplicates in store");
    Ok(counts.into_keys().collect())
}

/// Protobuf bytes of a span whose name is not UTF-8 (prost refuses to decode it).
fn non_utf8_request() -> Vec<u8> {
    let marker = "NAME_PLACEHOLDER";
    let mut bytes = protobuf(&request(vec![span(9, 9, marker)]));
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .unwrap_or(0);
    bytes[at] = 0xFF;
    bytes[at + 1] = 0xFE;
    bytes
}

/// One bad HTTP request and what its answer must say.
struct Case {
    what: &'static str,
    content_type: &'static str,
    encoding: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    needle: &'static str,
}

impl Case {
    fn new(
        what: &'static str,
        content_type: &'static str,
        body: Vec<u8>,
        status: u16,
        needle: &'static str,
    ) -> Self {
        Self {
            what,
            content_type,
            encoding: None,
            body,
            status,
            needle,
        }
    }

    fn encoding(mut self, encoding: &'static str) -> Self {
        self.encoding = Some(encoding);
        self
    }
}

fn gzip_bomb() -> Vec<u8> {
    // 64 MiB of zeros compress to ~64 KiB: far under the wire limit, far over it unpacked.
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        let _ = enc.write_all(&zeros);
    }
    enc.finish().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn http_bad_bodies_get_clear_errors_and_nothing_else_is_lost() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut ingest = start(dir.path())?;
    let url = ingest.http_url("/v1/traces");
    let http = reqwest::Client::new();
    let good_before = vec![span(1, 1, "before"), span(1, 2, "before")];
    let good_after = vec![span(2, 1, "after")];
    let a = http_post(
        &http,
        &url,
        PB,
        false,
        protobuf(&request(good_before.clone())),
    )
    .await?;
    assert_eq!(a.status, 200);

    let full = protobuf(&request(vec![span(3, 3, "lost"); 3]));
    let base64_ids = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"AQEBAQEBAQEBAQEBAQEBAQ==","spanId":"AQEBAQEBAQE=","name":"b64"}]}]}]}"#;
    let cases = [
        Case::new(
            "garbage bytes",
            PB,
            b"\xff\xff\xff\xffnot protobuf".to_vec(),
            400,
            "not a valid OTLP protobuf",
        ),
        Case::new(
            "truncated protobuf",
            PB,
            full[..full.len() - 7].to_vec(),
            400,
            "not a valid OTLP protobuf",
        ),
        Case::new("non-UTF-8 string", PB, non_utf8_request(), 400, "UTF-8"),
        Case::new(
            "wrong content type",
            "text/plain",
            full.clone(),
            415,
            "Content-Type \"text/plain\" is not supported",
        ),
        Case::new(
            "invalid JSON",
            JSON,
            b"{\"resourceSpans\": [".to_vec(),
            400,
            "not valid OTLP/JSON",
        ),
        Case::new(
            "base64 ids in JSON",
            JSON,
            base64_ids.as_bytes().to_vec(),
            400,
            "ids must be hex",
        ),
        Case::new(
            "body over the limit",
            PB,
            vec![0u8; LIMIT + 1],
            413,
            "limit of 8388608 bytes",
        ),
        Case::new(
            "gzip header on plain bytes",
            PB,
            b"plain bytes".to_vec(),
            400,
            "gzip",
        )
        .encoding("gzip"),
        Case::new(
            "unknown content encoding",
            PB,
            full.clone(),
            415,
            "Content-Encoding \"br\"",
        )
        .encoding("br"),
        Case::new(
            "gzip bomb",
            PB,
            gzip_bomb(),
            413,
            "decompressed request body is larger than the limit",
        )
        .encoding("gzip"),
    ];
    for case in cases {
        let mut req = http.post(&url).header("content-type", case.content_type);
        if let Some(enc) = case.encoding {
            req = req.header("content-encoding", enc);
        }
        let resp = req.body(case.body).send().await?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let a = client::HttpAnswer {
            status,
            content_type,
            retry_after: None,
            body: resp.bytes().await?,
        };
        let message = a.status_message();
        assert_eq!(a.status, case.status, "{}: {message}", case.what);
        assert!(
            message.contains(case.needle),
            "{}: {message:?} lacks {:?}",
            case.what,
            case.needle
        );
    }

    // An empty request is a valid request with no spans.
    let a = http_post(&http, &url, PB, false, Vec::new()).await?;
    assert_eq!(a.status, 200);
    assert_eq!(a.response()?.partial_success, None);
    let a = http_post(&http, &url, JSON, false, b"{}".to_vec()).await?;
    assert_eq!(a.status, 200, "{}", a.status_message());
    assert_eq!(
        &a.body[..],
        b"{}",
        "partial_success is left unset on success"
    );

    let a = http_post(
        &http,
        &url,
        PB,
        true,
        protobuf(&request(good_after.clone())),
    )
    .await?;
    assert_eq!(a.status, 200);

    let stored = stored_ids(&mut ingest, dir.path())?;
    let expected: BTreeSet<_> = ids(&good_before)
        .union(&ids(&good_after))
        .cloned()
        .collect();
    assert_eq!(stored, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_bad_messages_get_status_codes_with_reasons() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut ingest = start(dir.path())?;
    let good = vec![span(4, 1, "good")];
    let mut client = Grpc::connect(ingest.grpc_url()).await?;
    client.export(request(good.clone())).await?;

    let garbage = grpc_raw(
        ingest.grpc_url(),
        Bytes::from_static(b"\xff\xff\xffjunk"),
        false,
    )
    .await?;
    let s = garbage.err().ok_or("garbage accepted")?;
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("not a valid OTLP protobuf"), "{s:?}");

    let s = grpc_raw(ingest.grpc_url(), Bytes::from(non_utf8_request()), false)
        .await?
        .err()
        .ok_or("non-UTF-8 accepted")?;
    assert_eq!(s.code(), tonic::Code::InvalidArgument);

    let s = grpc_raw(ingest.grpc_url(), Bytes::from(vec![0u8; LIMIT + 1]), false)
        .await?
        .err()
        .ok_or("oversized accepted")?;
    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
    assert!(s.message().contains("8388608"), "limit missing from {s:?}");

    // A 64 MiB message of zeros, gzipped by the client: refused while inflating.
    let s = grpc_raw(ingest.grpc_url(), Bytes::from(vec![0u8; 64 << 20]), true)
        .await?
        .err()
        .ok_or("gzip bomb accepted")?;
    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");

    let empty = client.export(ExportTraceServiceRequest::default()).await?;
    assert_eq!(empty.partial_success, None);

    let after = vec![span(4, 2, "after")];
    client.clone().gzip().export(request(after.clone())).await?;
    let stored = stored_ids(&mut ingest, dir.path())?;
    let expected: BTreeSet<_> = ids(&good).union(&ids(&after)).cloned().collect();
    assert_eq!(stored, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ids_are_refused_per_span_and_the_rest_of_the_request_kept() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut ingest = start(dir.path())?;
    let mut short_trace = span(5, 3, "short trace id");
    short_trace.trace_id.truncate(12);
    let zero_trace = span(0, 4, "zero trace id");
    let zero_span = span(5, 0, "zero span id");
    let mut long_span = span(5, 6, "long span id");
    long_span.span_id.push(1);
    let good = vec![span(5, 1, "kept"), span(5, 2, "kept too")];
    let mut spans = vec![short_trace, zero_trace, zero_span, long_span];
    spans.insert(2, good[0].clone());
    spans.push(good[1].clone());

    let mut client = Grpc::connect(ingest.grpc_url()).await?;
    let r = client.export(request(spans.clone())).await?;
    let partial = r.partial_success.ok_or("no partial_success")?;
    assert_eq!(partial.rejected_spans, 4);
    for needle in [
        "trace_id has 12 bytes, expected 16",
        "trace_id is all zeros",
        "span_id is all zeros",
        "span_id has 9 bytes, expected 8",
    ] {
        assert!(
            partial.error_message.contains(needle),
            "{needle:?} not in {:?}",
            partial.error_message
        );
    }

    // The same over HTTP/JSON, in another trace (all-zero trace ids stay zero).
    let mut json_spans = spans.clone();
    for s in &mut json_spans {
        if let Some(b) = s.trace_id.first_mut().filter(|b| **b != 0) {
            *b += 100;
        }
    }
    let json = serde_json::to_vec(&request(json_spans.clone()))?;
    let a = http_post(
        &reqwest::Client::new(),
        &ingest.http_url("/v1/traces"),
        JSON,
        false,
        json,
    )
    .await?;
    assert_eq!(a.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&a.body)?;
    assert_eq!(
        body["partialSuccess"]["rejectedSpans"].as_i64(),
        Some(4),
        "{body}"
    );

    let stored = stored_ids(&mut ingest, dir.path())?;
    let expected: BTreeSet<_> = ids(&good)
        .union(&ids(&[json_spans[2].clone(), json_spans[5].clone()]))
        .cloned()
        .collect();
    assert_eq!(stored, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn end_before_start_and_huge_values_are_stored_as_sent() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut ingest = start(dir.path())?;
    let mut backwards = span(6, 1, "clock skew");
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 1_000;
    let huge = "é".repeat(2 << 20); // 4 MiB of two-byte characters
    let mut big = span(6, 2, "huge attribute");
    big.attributes.push(KeyValue {
        key: "gen_ai.input.messages".into(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(huge.clone())),
        }),
    });
    let mut client = Grpc::connect(ingest.grpc_url()).await?;
    let r = client.export(request(vec![backwards.clone(), big])).await?;
    assert_eq!(r.partial_success, None);
    ingest.terminate()?;
    let rows = local_store_rows(&dir.path().join("store"))?;
    let skew = rows
        .iter()
        .find(|(_, r)| r.name == "clock skew")
        .ok_or("skewed span lost")?;
    assert_eq!(
        skew.1.end_time_ns as u64, backwards.end_time_unix_nano,
        "end time kept as sent"
    );
    assert_eq!(skew.1.duration_ns, 0, "duration clamped to 0");
    let big = rows
        .iter()
        .find(|(_, r)| r.name == "huge attribute")
        .ok_or("huge span lost")?;
    assert_eq!(
        big.1.attribute("gen_ai.input.messages"),
        Some(huge.as_str())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn backlog_over_limit_is_refused_with_a_retry_delay() -> TestResult {
    let dir = tempfile::tempdir()?;
    // A store that cannot be reached: flushes fail, the WAL backlog stays.
    let mut opts = IngestOpts::local(dir.path())
        .arg("--wal-max-backlog", "1")
        .arg("--retry-after", "7s")
        .arg("--shutdown-timeout", "1s");
    opts.store = "s3://unreachable-bucket/prefix".into();
    opts.env = vec![
        ("AWS_ENDPOINT_URL".into(), "http://127.0.0.1:9".into()),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
    ];
    let mut ingest = Ingest::start(&opts)?;
    let mut client = Grpc::connect(ingest.grpc_url()).await?;
    client.export(request(vec![span(7, 1, "first")])).await?;

    let s = client
        .export(request(vec![span(7, 2, "second")]))
        .await
        .err()
        .ok_or("accepted over the backlog limit")?;
    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
    assert!(s.message().contains("retry later"), "{s:?}");
    let details = tonic_types::StatusExt::get_details_retry_info(&s).ok_or("no RetryInfo")?;
    assert_eq!(details.retry_delay, Some(std::time::Duration::from_secs(7)));

    let a = http_post(
        &reqwest::Client::new(),
        &ingest.http_url("/v1/traces"),
        PB,
        false,
        protobuf(&request(vec![span(7, 3, "third")])),
    )
    .await?;
    assert_eq!(a.status, 429, "{}", a.status_message());
    assert_eq!(a.retry_after.as_deref(), Some("7"));
    let ready = reqwest::get(ingest.http_url("/readyz")).await?;
    assert_eq!(ready.status().as_u16(), 503);

    // The acknowledged span stays in the WAL: shutdown cannot flush it and says so.
    let status = ingest.terminate()?;
    assert!(!status.success());
    assert!(
        ingest.log_text().contains("replayed at the next start"),
        "{}",
        ingest.log_text()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn backlog_drains_when_the_store_comes_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    // A regular file where the `spans` directory must go: every flush fails until it is gone.
    std::fs::create_dir_all(&store)?;
    std::fs::write(store.join("spans"), b"in the way")?;
    let mut ingest = Ingest::start(
        &IngestOpts::local(dir.path())
            .arg("--wal-max-backlog", "1")
            .arg("--flush-max-age", "100ms"),
    )?;
    let mut client = Grpc::connect(ingest.grpc_url()).await?;
    let first = vec![span(8, 1, "while the store is down")];
    client.export(request(first.clone())).await?;
    let refused = client.export(request(vec![span(8, 2, "refused")])).await;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(tonic::Code::ResourceExhausted)
    );

    // Wait until a flush has failed, so the drain below is a retry after an outage.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let metrics = reqwest::get(ingest.http_url("/metrics"))
            .await?
            .text()
            .await?;
        if !metrics.contains("ingest_flush_errors_total 0") {
            assert!(
                !metrics.contains("ingest_wal_backlog_bytes 0\n"),
                "{metrics}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "flush never failed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        reqwest::get(ingest.http_url("/readyz"))
            .await?
            .status()
            .as_u16(),
        503
    );
    std::fs::remove_file(store.join("spans"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while reqwest::get(ingest.http_url("/readyz"))
        .await?
        .status()
        .as_u16()
        != 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "never drained: {}",
            ingest.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let metrics = reqwest::get(ingest.http_url("/metrics"))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("ingest_wal_backlog_bytes 0\n"),
        "{metrics}"
    );
    let later = vec![span(8, 3, "after the store came back")];
    client.export(request(later.clone())).await?;
    let stored = stored_ids(&mut ingest, dir.path())?;
    let expected: BTreeSet<_> = ids(&first).union(&ids(&later)).cloned().collect();
    assert_eq!(stored, expected);
    Ok(())
}
