//! A corpus of realistic LLM-app traces sent over gRPC, HTTP/protobuf and HTTP/JSON ends up as
//! exactly the same rows, with the sender's hex ids, partitioned by UTC start hour, and
//! readable by DuckDB and pyarrow.

use std::path::Path;

use schemas::layout::{DEFAULT_TENANT, Partition};
use schemas::read::SpanRow;
use trace2eval_tests::client::{Grpc, http_post, protobuf};
use trace2eval_tests::corpus::{Corpus, CorpusConfig, generate, to_json};
use trace2eval_tests::harness::{Ingest, IngestOpts, TestResult, local_store_rows, run_python};

/// 2026-03-10T00:00:00Z
const END_NS: u64 = 1_773_100_800_000_000_000;

fn corpus() -> Corpus {
    generate(&CorpusConfig {
        traces: 2000,
        days: 3,
        seed: 42,
        end_unix_ns: END_NS,
        context_bytes: trace2eval_tests::corpus::CONTEXT_BYTES,
    })
}

#[derive(Clone, Copy)]
enum Protocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

async fn send_all(ingest: &Ingest, corpus: &Corpus, protocol: Protocol) -> TestResult {
    let http = reqwest::Client::new();
    let url = ingest.http_url("/v1/traces");
    let mut grpc = Grpc::connect(ingest.grpc_url()).await?;
    for (i, req) in corpus.requests.iter().enumerate() {
        let gzip = i % 2 == 1;
        match protocol {
            Protocol::Grpc => {
                let client = if gzip {
                    grpc.clone().gzip()
                } else {
                    grpc.clone()
                };
                let r = { client }.export(req.clone()).await?;
                assert_eq!(r.partial_success, None);
                grpc = Grpc::connect(ingest.grpc_url()).await.unwrap_or(grpc);
            }
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                let (ct, body) = match protocol {
                    Protocol::HttpJson => ("application/json", to_json(req).into_bytes()),
                    _ => ("application/x-protobuf", protobuf(req)),
                };
                let a = http_post(&http, &url, ct, gzip, body).await?;
                assert_eq!(a.status, 200, "{}", a.status_message());
            }
        }
    }
    Ok(())
}

/// Sends the corpus through a fresh ingest, stops it, and returns the stored rows sorted by
/// ids, each with its partition directory.
async fn ingest_corpus(
    dir: &Path,
    corpus: &Corpus,
    protocol: Protocol,
) -> TestResult<Vec<(String, SpanRow)>> {
    let mut ingest = Ingest::start(&IngestOpts::local(dir))?;
    send_all(&ingest, corpus, protocol).await?;
    let status = ingest.terminate()?;
    assert!(status.success(), "{}", ingest.log_text());
    let mut rows = local_store_rows(&dir.join("store"))?;
    rows.sort_by(|a, b| (&a.1.trace_id, &a.1.span_id).cmp(&(&b.1.trace_id, &b.1.span_id)));
    Ok(rows)
}

#[tokio::test(flavor = "multi_thread")]
async fn corpus_over_grpc_http_protobuf_and_json_lands_as_identical_rows() -> TestResult {
    let corpus = corpus();
    assert!(corpus.spans > 10_000, "corpus too small: {}", corpus.spans);
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let (grpc, proto, json) = tokio::try_join!(
        ingest_corpus(dirs[0].path(), &corpus, Protocol::Grpc),
        ingest_corpus(dirs[1].path(), &corpus, Protocol::HttpProtobuf),
        ingest_corpus(dirs[2].path(), &corpus, Protocol::HttpJson),
    )?;

    let stored_ids: Vec<_> = grpc
        .iter()
        .map(|(_, r)| (r.trace_id.clone(), r.span_id.clone()))
        .collect();
    assert_eq!(
        stored_ids,
        corpus.span_ids(),
        "ids differ from the sender's hex"
    );
    assert!(grpc == proto, "HTTP/protobuf rows differ from gRPC rows");
    for (a, b) in grpc.iter().zip(&json) {
        assert_eq!(a, b, "HTTP/JSON row differs from the gRPC row");
    }
    let mut hours = std::collections::BTreeSet::new();
    for (partition, row) in &grpc {
        assert_eq!(
            partition,
            &Partition::of_span(DEFAULT_TENANT, row.start_time_ns).dir()
        );
        hours.insert(partition.clone());
    }
    assert!(
        hours.len() > 48,
        "3 days of traces should fill many hourly partitions: {}",
        hours.len()
    );
    let with_tokens = grpc
        .iter()
        .filter(|(_, r)| r.gen_ai_input_tokens.is_some())
        .count();
    assert!(
        with_tokens > 1000,
        "promoted token counts missing: {with_tokens}"
    );

    // Other tools read the same files: DuckDB and pyarrow see the same spans and partitions.
    let out = run_python(
        "read_store.py",
        &[&dirs[0].path().join("store").display().to_string()],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let expected: Vec<serde_json::Value> = grpc
        .iter()
        .map(|(_, r)| {
            let part = Partition::of_span(DEFAULT_TENANT, r.start_time_ns);
            serde_json::json!([
                r.trace_id,
                r.span_id,
                r.name,
                part.tenant,
                part.date,
                part.hour
            ])
        })
        .collect();
    for reader in ["duckdb", "pyarrow"] {
        assert_eq!(
            v[reader]["rows"].as_u64(),
            Some(grpc.len() as u64),
            "{reader}"
        );
        let spans = v[reader]["spans"].as_array().ok_or("no spans")?;
        assert!(
            spans == &expected,
            "{reader} reads different spans or partitions"
        );
    }
    Ok(())
}

/// The benchmark's load generator with `--merge-requests` sends the corpus in fewer, larger
/// requests and every span still lands once.
#[test]
fn loadgen_merged_requests_land_every_span_once() -> TestResult {
    use trace2eval_tests::harness::{bin_path, output_of};
    let dir = tempfile::tempdir()?;
    let mut ingest = Ingest::start(&IngestOpts::local(dir.path()))?;
    let run = |merge: &str| {
        output_of(
            std::process::Command::new(bin_path("loadgen")?)
                .args(["--grpc", &ingest.grpc_url(), "--once", "--traces", "300"])
                .args(["--merge-requests", merge, "--json"]),
        )
    };
    let (code, out, err) = run("4")?;
    assert_eq!(code, 0, "{err}");
    let figures: serde_json::Value = serde_json::from_str(out.trim())?;
    let spans = figures["spans"].as_u64().unwrap_or_default();
    assert_eq!(figures["errors"].as_u64(), Some(0), "{out}");
    assert_eq!(Some(spans), figures["corpus_spans"].as_u64(), "{out}");
    // 300 traces make ~20 requests of 50-200 spans; merged by 4, about a quarter as many.
    let requests = figures["requests"].as_u64().unwrap_or_default();
    assert!(requests > 0 && spans / requests > 200, "{out}");
    let (code, _, err) = run("0")?;
    assert_ne!(code, 0, "--merge-requests 0 must be refused");
    assert!(err.contains("merge-requests"), "{err}");
    ingest.terminate()?;
    let rows = local_store_rows(&dir.path().join("store"))?;
    assert_eq!(rows.len() as u64, spans);
    let mut ids: Vec<_> = rows
        .iter()
        .map(|(_, r)| (&r.trace_id, &r.span_id))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, spans, "a span landed twice");
    Ok(())
}

/// The benchmarks' ceiling, `null-receiver`, decodes and counts what `loadgen` sends over gRPC,
/// HTTP/protobuf and OTLP/JSON: every span counted once, none refused, and a body that is not
/// OTLP/JSON refused with a 400 that says why.
#[test]
fn null_receiver_counts_every_span_loadgen_sends_over_each_protocol() -> TestResult {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use trace2eval_tests::harness::{bin_path, output_of};
    let mut null = Command::new(bin_path("null-receiver")?)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(null.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let url = |proto: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{proto}=")))
            .map(str::to_string)
            .ok_or(format!("no {proto} address in {line:?}"))
    };
    let mut sent = 0;
    for target in [
        vec!["--grpc".to_string(), url("grpc")?],
        vec!["--http".to_string(), url("http")?],
        vec![
            "--http".to_string(),
            url("http")?,
            "--json-body".to_string(),
        ],
    ] {
        let (code, out, err) = output_of(
            Command::new(bin_path("loadgen")?)
                .args(&target)
                .args(["--once", "--traces", "200", "--json"]),
        )?;
        assert_eq!(code, 0, "{target:?}: {err}");
        let figures: serde_json::Value = serde_json::from_str(out.trim())?;
        assert_eq!(figures["errors"].as_u64(), Some(0), "{target:?}: {out}");
        let spans = figures["spans"].as_u64().unwrap_or_default();
        assert_eq!(Some(spans), figures["corpus_spans"].as_u64(), "{out}");
        sent += spans;
    }
    let answer = tokio::runtime::Runtime::new()?.block_on(http_post(
        &reqwest::Client::new(),
        &format!("{}/v1/traces", url("http")?),
        "application/json",
        false,
        br#"{"resourceSpans": 7}"#.to_vec(),
    ))?;
    let text = String::from_utf8_lossy(&answer.body);
    assert_eq!(answer.status, 400, "{text}");
    assert!(text.contains("bad OTLP/JSON: resourceSpans"), "{text}");
    Command::new("kill").arg(null.id().to_string()).status()?;
    let out = null.wait_with_output()?;
    let err = String::from_utf8(out.stderr)?;
    assert!(
        err.contains(&format!("requests, {sent} spans")),
        "sent {sent}: {err}"
    );
    Ok(())
}
