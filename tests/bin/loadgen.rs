//! A load generator for `ingest` (or `null-receiver`, its ceiling): replays pre-encoded OTLP
//! requests of the test corpus (realistic LLM-app spans) over gRPC or HTTP/protobuf with some
//! concurrency, and reports spans/s, request latency (p50, p99, max) and, given the receiver's
//! pid, its CPU seconds per span and peak RSS (from /proc).
//!
//!   loadgen --grpc http://127.0.0.1:4317 | --http http://127.0.0.1:4318 [--seconds 20]
//!           [--concurrency 8] [--traces 3000] [--rate N] [--pid PID] [--once] [--json]
//!
//! With both `--grpc` and `--http`, gRPC is used. `--http URL --json-body` sends OTLP/JSON.
//!
//! `--once` sends every request of the corpus exactly once (unique spans, e.g. to measure
//! stored bytes per span) instead of cycling until `--seconds` have passed. When cycling, each
//! pass over the corpus gets fresh trace ids (the pass number is XORed into every trace id's
//! bytes in the encoded request), so the receiver never sees the same span twice.
//!
//! `--hours H` (default 1) moves every trace into the first H hours of the corpus day, whole
//! hours at a time: live traffic lands in one or two hourly partitions.
//!
//! `--rate N` aims at N requests/s in total: each worker sends on its own schedule of
//! `concurrency / N` seconds, the workers' schedules staggered evenly. A worker that falls
//! behind sends its late requests at once to catch up, and their latency is counted from when
//! they were due, not from when they went out: otherwise a receiver stall would hide in the
//! requests that were never sent (coordinated omission). Without `--rate` each worker sends
//! its next request as soon as the previous one is answered, and latency is send to answer.
//!
//! A failed request (transport error, gRPC error status, non-2xx HTTP status) counts in
//! `errors` and the run goes on; only accepted requests count in `spans`.
//!
//! `--json` prints the final figures as one JSON object on stdout (the human-readable lines
//! go to stderr then): protocol, concurrency, seconds, requests, spans, spans_per_s, p50_ms,
//! p99_ms, max_ms, errors, receiver_cpu_s, spans_per_cpu_s, receiver_peak_rss_mib (the last
//! three null without `--pid`; the peak is the receiver's VmHWM over its whole life).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use trace2eval_tests::client::RawGrpc;
use trace2eval_tests::corpus::{CONTEXT_BYTES, load_corpus, parse_context_bytes};
use trace2eval_tests::harness::{cpu_seconds, peak_rss_mib};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "Replays the test corpus as OTLP requests and measures the receiver")]
#[command(group(clap::ArgGroup::new("target").args(["grpc", "http"]).required(true).multiple(true)))]
struct Args {
    /// OTLP/gRPC endpoint, e.g. http://127.0.0.1:4317; wins over --http.
    #[arg(long)]
    grpc: Option<String>,
    /// OTLP/HTTP base URL, e.g. http://127.0.0.1:4318 (requests go to /v1/traces).
    #[arg(long)]
    http: Option<String>,
    /// With --http: send OTLP/JSON (`application/json`) instead of protobuf.
    #[arg(long, requires = "http")]
    json_body: bool,
    /// How long to send for.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Requests in flight at once (one connection each).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    /// Traces in the generated corpus.
    #[arg(long, default_value_t = 3000)]
    traces: usize,
    /// Requests per second in total across the workers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    rate: f64,
    /// Pid of the receiver, to read its CPU time and peak RSS from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Seed of the generated corpus: another seed gives other trace ids (several `--once`
    /// runs with different seeds build a larger store of distinct traces).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Send every request of the corpus once instead of cycling for `--seconds`.
    #[arg(long)]
    once: bool,
    /// Traces start within this many hours (1-24), so their spans land in that many hourly
    /// partitions: 1 is live traffic; 24 spreads a WAL segment over a day of partitions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=24))]
    hours: u64,
    /// Merges this many consecutive corpus requests into one (the corpus has 50-200 spans per
    /// request; exporters that batch harder send 512 or more).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    merge_requests: u64,
    /// Bytes of retrieved context in each LLM prompt, as MIN-MAX: the main lever on span
    /// size. The default gives ~1,650 request bytes per span, 0-0 ~1,020 (the nearest this
    /// corpus comes to the 918-byte spans the reference figure P was first measured on).
    /// [default: 1000-3000]
    #[arg(long, value_parser = parse_context_bytes)]
    context_bytes: Option<(usize, usize)>,
    /// Print the final figures as one JSON object on stdout, the rest on stderr.
    #[arg(long)]
    json: bool,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!("{s:?} is not a rate: give requests/s >= 0")),
    }
}

enum Target {
    Grpc(String),
    Http(String),
    HttpJson(String),
}

impl Target {
    fn protocol(&self) -> &'static str {
        match self {
            Target::Grpc(_) => "grpc",
            Target::Http(_) => "http",
            Target::HttpJson(_) => "http-json",
        }
    }
}

/// One worker's connection.
enum Sender {
    Grpc(RawGrpc),
    Http {
        client: reqwest::Client,
        url: String,
        content_type: &'static str,
    },
}

impl Sender {
    async fn connect(target: &Target) -> Result<Self, BoxError> {
        Ok(match target {
            Target::Grpc(url) => Sender::Grpc(
                RawGrpc::connect(url.clone(), false)
                    .await
                    .map_err(|e| format!("connecting to {url}: {e}"))?,
            ),
            Target::Http(url) | Target::HttpJson(url) => Sender::Http {
                client: reqwest::Client::new(),
                url: format!("{}/v1/traces", url.trim_end_matches('/')),
                content_type: if matches!(target, Target::HttpJson(_)) {
                    "application/json"
                } else {
                    "application/x-protobuf"
                },
            },
        })
    }

    /// Whether the receiver accepted the request.
    async fn send(&mut self, body: Bytes) -> bool {
        match self {
            Sender::Grpc(raw) => raw.export(body).await.is_ok_and(|r| r.is_ok()),
            Sender::Http {
                client,
                url,
                content_type,
            } => {
                let answer = client
                    .post(url.as_str())
                    .header("content-type", *content_type)
                    .body(body)
                    .send()
                    .await;
                match answer {
                    Ok(r) => {
                        let success = r.status().is_success();
                        // Read to the end, failed or not, so that the connection is reused.
                        let read = r.bytes().await.is_ok();
                        success && read
                    }
                    Err(_) => false,
                }
            }
        }
    }
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    requests: u64,
    spans: u64,
    errors: u64,
    /// Every request's latency in microseconds: 4 bytes a request keeps exact percentiles
    /// affordable (a million requests take 4 MB).
    latencies_us: Vec<u32>,
}

/// An encoded request, its span count, and where its trace ids are in the bytes.
struct Request {
    body: Bytes,
    spans: u64,
    trace_id_offsets: Vec<usize>,
    /// OTLP/JSON: the ids are 32 hex characters, not 16 bytes.
    json: bool,
}

impl Request {
    fn encode(req: &ExportTraceServiceRequest, json: bool) -> Self {
        let spans: Vec<_> = req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .collect();
        let body = if json {
            trace2eval_tests::corpus::to_json(req).into_bytes()
        } else {
            req.encode_to_vec()
        };
        let mut ids: Vec<Vec<u8>> = spans.iter().map(|s| s.trace_id.clone()).collect();
        ids.extend(
            spans
                .iter()
                .flat_map(|s| &s.links)
                .map(|l| l.trace_id.clone()),
        );
        ids.retain(|id| id.len() == 16);
        ids.sort();
        ids.dedup();
        // In OTLP/JSON the ids are lowercase hex.
        let needles: Vec<Vec<u8>> = if json {
            ids.iter().map(|id| hex::encode(id).into_bytes()).collect()
        } else {
            ids
        };
        let trace_id_offsets = needles
            .iter()
            .flat_map(|id| {
                let body = &body;
                body.windows(id.len())
                    .enumerate()
                    .filter(move |(_, w)| w == id)
                    .map(|(i, _)| i)
            })
            .collect();
        Self {
            body: Bytes::from(body),
            spans: spans.len() as u64,
            trace_id_offsets,
            json,
        }
    }

    /// The body of pass `pass` over the corpus: pass 0 as generated, later passes with the
    /// pass number XORed into every trace id.
    fn body(&self, pass: u64) -> Bytes {
        if pass == 0 {
            return self.body.clone();
        }
        let mut body = self.body.to_vec();
        for &at in &self.trace_id_offsets {
            if self.json {
                // The first 16 hex digits are the id's first 8 bytes.
                let digits = &mut body[at..at + 16];
                let mut bytes = [0u8; 8];
                if hex::decode_to_slice(&digits[..], &mut bytes).is_ok() {
                    for (b, x) in bytes.iter_mut().zip(pass.to_le_bytes()) {
                        *b ^= x;
                    }
                    let _ = hex::encode_to_slice(bytes, digits);
                }
            } else {
                for (b, x) in body[at..at + 8].iter_mut().zip(pass.to_le_bytes()) {
                    *b ^= x;
                }
            }
        }
        Bytes::from(body)
    }
}

struct Plan {
    requests: Arc<Vec<Request>>,
    concurrency: usize,
    once: bool,
    deadline: tokio::time::Instant,
    /// Each worker's time between sends, None for as fast as possible.
    period: Option<Duration>,
}

async fn worker(plan: Arc<Plan>, target: Arc<Target>, index: usize) -> Result<Tally, BoxError> {
    let mut sender = Sender::connect(&target).await?;
    let mut schedule = plan.period.map(|period| {
        // Staggered so the workers together send evenly, not in bursts of `concurrency`.
        let offset = period.mul_f64(index as f64 / plan.concurrency as f64);
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        interval
    });
    let mut tally = Tally::default();
    let mut i = index;
    while !(plan.once && i >= plan.requests.len()) {
        let due = match schedule.as_mut() {
            // Not past the deadline even if the next slot is (slow rates, many workers).
            Some(schedule) => match tokio::time::timeout_at(plan.deadline, schedule.tick()).await {
                Ok(due) => due,
                Err(_) => break,
            },
            None => tokio::time::Instant::now(),
        };
        if due >= plan.deadline {
            break;
        }
        let request = &plan.requests[i % plan.requests.len()];
        let pass = (i / plan.requests.len()) as u64;
        i += plan.concurrency;
        let accepted = sender.send(request.body(pass)).await;
        let latency = due.elapsed().as_micros();
        tally
            .latencies_us
            .push(u32::try_from(latency).unwrap_or(u32::MAX));
        tally.requests += 1;
        if accepted {
            tally.spans += request.spans;
        } else {
            tally.errors += 1;
        }
    }
    Ok(tally)
}

/// The `--json` output; fields print in this order.
#[derive(serde::Serialize)]
struct Figures {
    protocol: &'static str,
    concurrency: usize,
    seconds: f64,
    requests: u64,
    spans: u64,
    spans_per_s: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    errors: u64,
    receiver_cpu_s: Option<f64>,
    spans_per_cpu_s: Option<f64>,
    receiver_peak_rss_mib: Option<f64>,
    /// OTLP protobuf bytes and spans of the corpus replayed (for bytes per span).
    corpus_bytes: usize,
    corpus_spans: u64,
}

/// The latency at quantile `q` (nearest rank) of sorted microseconds, in milliseconds.
fn quantile_ms(sorted_us: &[u32], q: f64) -> Option<f64> {
    let rank = (q * sorted_us.len() as f64).ceil() as usize;
    let us = sorted_us.get(rank.saturating_sub(1))?;
    Some(f64::from(*us) / 1000.0)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    // With --json stdout holds only the JSON object.
    let say = |line: String| {
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let target = Arc::new(match (&args.grpc, &args.http) {
        (Some(url), _) => Target::Grpc(url.clone()),
        (None, Some(url)) if args.json_body => Target::HttpJson(url.clone()),
        (None, Some(url)) => Target::Http(url.clone()),
        (None, None) => return Err("give --grpc URL or --http URL".into()),
    });
    let corpus = load_corpus(
        args.traces,
        args.seed,
        args.context_bytes.unwrap_or(CONTEXT_BYTES),
        args.hours,
    );
    let requests: Vec<Request> = corpus
        .requests
        .chunks(usize::try_from(args.merge_requests)?)
        .map(|group| {
            let mut merged = ExportTraceServiceRequest::default();
            for r in group {
                merged
                    .resource_spans
                    .extend(r.resource_spans.iter().cloned());
            }
            Request::encode(&merged, args.json_body)
        })
        .collect();
    if requests.is_empty() {
        return Err("the corpus has no requests: give --traces above 0".into());
    }
    let bytes: usize = requests.iter().map(|r| r.body.len()).sum();
    let corpus_spans: u64 = requests.iter().map(|r| r.spans).sum();
    say(format!(
        "corpus: {} requests, {} spans, {:.0} request bytes/span",
        requests.len(),
        corpus.spans,
        bytes as f64 / corpus.spans as f64
    ));
    let concurrency = usize::try_from(args.concurrency)?;
    let cpu_before = args.pid.and_then(cpu_seconds);
    let started = Instant::now();
    let plan = Arc::new(Plan {
        requests: Arc::new(requests),
        concurrency,
        once: args.once,
        deadline: tokio::time::Instant::now() + Duration::from_secs(args.seconds),
        period: (args.rate > 0.0).then(|| Duration::from_secs_f64(concurrency as f64 / args.rate)),
    });
    let workers: Vec<_> = (0..concurrency)
        .map(|index| tokio::spawn(worker(plan.clone(), target.clone(), index)))
        .collect();
    let mut total = Tally::default();
    for w in workers {
        let tally = w.await??;
        total.requests += tally.requests;
        total.spans += tally.spans;
        total.errors += tally.errors;
        total.latencies_us.extend(tally.latencies_us);
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, args.pid.and_then(cpu_seconds)) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    let peak_rss = args.pid.and_then(peak_rss_mib);
    total.latencies_us.sort_unstable();
    let p50 = quantile_ms(&total.latencies_us, 0.50);
    let p99 = quantile_ms(&total.latencies_us, 0.99);
    let max = quantile_ms(&total.latencies_us, 1.0);
    let spans_per_s = total.spans as f64 / wall;
    let spans_per_cpu_s = cpu.filter(|c| *c > 0.0).map(|c| total.spans as f64 / c);

    say(format!(
        "{}: {} requests ({} failed), {} spans accepted in {wall:.1}s: {spans_per_s:.0} spans/s wall",
        target.protocol(),
        total.requests,
        total.errors,
        total.spans
    ));
    if let (Some(p50), Some(p99), Some(max)) = (p50, p99, max) {
        say(format!(
            "latency: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
        ));
    }
    if let Some(cpu) = cpu {
        let per_cpu = spans_per_cpu_s.map_or("-".to_string(), |s| format!("{s:.0}"));
        say(format!(
            "receiver CPU {cpu:.2}s: {per_cpu} spans per CPU-second"
        ));
    }
    if let Some(rss) = peak_rss {
        say(format!("receiver peak RSS {rss:.1} MiB"));
    }
    if args.json {
        let figures = Figures {
            protocol: target.protocol(),
            concurrency,
            seconds: wall,
            requests: total.requests,
            spans: total.spans,
            spans_per_s,
            p50_ms: p50,
            p99_ms: p99,
            max_ms: max,
            errors: total.errors,
            receiver_cpu_s: cpu,
            spans_per_cpu_s,
            receiver_peak_rss_mib: peak_rss,
            corpus_bytes: bytes,
            corpus_spans,
        };
        println!("{}", serde_json::to_string(&figures)?);
    }
    Ok(())
}
