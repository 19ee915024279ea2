//! A first load generator for `ingest`: replays pre-encoded OTLP requests of the test corpus
//! (realistic LLM-app spans) over gRPC or HTTP/protobuf with some concurrency, and reports
//! spans/s and, given the receiver's pid, its CPU seconds (from /proc) per span.
//!
//!   loadgen --grpc http://127.0.0.1:4317 [--http http://127.0.0.1:4318] [--seconds 20]
//!           [--concurrency 8] [--traces 3000] [--pid PID] [--once]
//!
//! `--once` sends every request of the corpus exactly once (unique spans, e.g. to measure
//! stored bytes per span) instead of cycling until `--seconds` have passed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use trace2eval_tests::corpus::{CorpusConfig, generate};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let seconds: u64 = arg("--seconds").map_or(Ok(20), |s| s.parse())?;
    let concurrency: usize = arg("--concurrency").map_or(Ok(8), |s| s.parse())?;
    let traces: usize = arg("--traces").map_or(Ok(3000), |s| s.parse())?;
    let corpus = generate(&CorpusConfig {
        traces,
        days: 1,
        seed: 1,
        end_unix_ns: 1_773_100_800_000_000_000,
    });
    let requests: Arc<Vec<(Bytes, u64)>> = Arc::new(
        corpus
            .requests
            .iter()
            .map(|r| {
                let spans = r
                    .resource_spans
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .map(|ss| ss.spans.len() as u64)
                    .sum();
                (Bytes::from(r.encode_to_vec()), spans)
            })
            .collect(),
    );
    let bytes: usize = requests.iter().map(|(b, _)| b.len()).sum();
    println!(
        "corpus: {} requests, {} spans, {:.0} protobuf bytes/span",
        requests.len(),
        corpus.spans,
        bytes as f64 / corpus.spans as f64
    );
    let grpc = arg("--grpc");
    let http = arg("--http");
    let pid = arg("--pid");
    let spans = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let cpu_before = pid.as_deref().and_then(cpu_seconds);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let once = std::env::args().any(|a| a == "--once");
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (requests, spans, failures) = (requests.clone(), spans.clone(), failures.clone());
        let (grpc, http) = (grpc.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut raw = match &grpc {
                Some(url) => trace2eval_tests::client::RawGrpc::connect(url.clone(), false)
                    .await
                    .ok(),
                None => None,
            };
            let mut i = worker;
            while Instant::now() < deadline && !(once && i >= requests.len()) {
                let (body, n) = &requests[i % requests.len()];
                i += concurrency;
                let ok = if let Some(raw) = raw.as_mut() {
                    raw.export(body.clone()).await.is_ok_and(|r| r.is_ok())
                } else if let Some(url) = &http {
                    client
                        .post(format!("{url}/v1/traces"))
                        .header("content-type", "application/x-protobuf")
                        .body(body.clone())
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                } else {
                    false
                };
                if ok {
                    spans.fetch_add(*n, Ordering::Relaxed);
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let wall = started.elapsed().as_secs_f64();
    let sent = spans.load(Ordering::Relaxed);
    println!(
        "accepted {sent} spans in {wall:.1}s: {:.0} spans/s wall, {} failed requests",
        sent as f64 / wall,
        failures.load(Ordering::Relaxed)
    );
    if let (Some(before), Some(after)) = (cpu_before, pid.as_deref().and_then(cpu_seconds)) {
        let cpu = after - before;
        println!(
            "receiver CPU {cpu:.2}s: {:.0} spans per CPU-second",
            sent as f64 / cpu
        );
    }
    Ok(())
}
