//! Score spans: one span per verdict in the run's eval trace, carrying the OTel GenAI
//! evaluation attributes, a `gen_ai.evaluation.result` event with the same fields, and a link to
//! the judged span. Sent over OTLP (gRPC or HTTP/protobuf) or written into a store as Parquet.
//!
//! Ids are derived from the run id (which a rerun takes from the results file or the journaled
//! batch, see `results::InFlight`), so a resumed run continues the same eval trace and a score
//! span re-sent after a crash carries the same span id. Store files are named after their content and the batch's first send time,
//! so re-sending a batch into a store overwrites the file it wrote, not adds a copy.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::cli::Emit;
use crate::error::EvalError;
use crate::results::ResultLine;

/// Attempts to deliver one batch before the run stops with exit 3.
const SEND_ATTEMPTS: u32 = 5;

pub fn eval_trace_id(run_id: &str) -> [u8; 16] {
    let h = Sha256::digest(format!("trace2eval eval-run {run_id}").as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[..16]);
    id
}

/// Span id of the score of (item, metric) in run `run_id`.
pub fn score_span_id(run_id: &str, item_id: &str, metric: &str) -> [u8; 8] {
    let h = Sha256::digest(format!("{run_id}\u{0}{item_id}\u{0}{metric}").as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[..8]);
    id
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Where this invocation's spans hang: the eval-run trace and this invocation's root span.
pub struct RunSpans {
    pub run_id: String,
    pub trace_id: [u8; 16],
    pub root_span_id: [u8; 8],
    pub started: SystemTime,
    pub judge_model: String,
    pub provider: &'static str,
}

impl RunSpans {
    pub fn new(run_id: &str, judge_model: &str, provider: &'static str) -> Self {
        let started = SystemTime::now();
        let h = Sha256::digest(format!("{run_id}\u{0}root\u{0}{}", nanos(started)).as_bytes());
        let mut root_span_id = [0u8; 8];
        root_span_id.copy_from_slice(&h[..8]);
        Self {
            run_id: run_id.into(),
            trace_id: eval_trace_id(run_id),
            root_span_id,
            started,
            judge_model: judge_model.into(),
            provider,
        }
    }

    /// The score span of a judged result line (not of failures or skips).
    pub fn score_span(&self, r: &ResultLine, start: SystemTime, latency: Duration) -> Span {
        let span_id = score_span_id(&self.run_id, &r.item_id, &r.metric);
        let mut fields = vec![
            s("gen_ai.evaluation.name", &r.metric),
            kv(
                "gen_ai.evaluation.score.value",
                any_value::Value::DoubleValue(r.score.unwrap_or(f64::NAN)),
            ),
        ];
        if let Some(l) = &r.label {
            fields.push(s("gen_ai.evaluation.score.label", l));
        }
        if let Some(e) = &r.explanation {
            fields.push(s("gen_ai.evaluation.explanation", e));
        }
        let mut attributes = fields.clone();
        attributes.extend([
            s("gen_ai.provider.name", self.provider),
            s("gen_ai.request.model", &self.judge_model),
            s("trace2eval.eval.run_id", &self.run_id),
            s("trace2eval.eval.item_id", &r.item_id),
        ]);
        if let Some(raw) = r.raw_score {
            attributes.push(kv(
                "trace2eval.eval.raw_score",
                any_value::Value::DoubleValue(raw),
            ));
        }
        if r.reused.is_some() {
            attributes.push(kv(
                "trace2eval.eval.reused",
                any_value::Value::BoolValue(true),
            ));
        }
        let link = match (hex::decode(&r.trace_id), hex::decode(&r.span_id)) {
            (Ok(t), Ok(sp)) if t.len() == 16 && sp.len() == 8 => vec![Link {
                trace_id: t,
                span_id: sp,
                attributes: vec![s("trace2eval.link.type", "judged")],
                ..Default::default()
            }],
            _ => Vec::new(),
        };
        let start_ns = nanos(start);
        let end_ns = start_ns + latency.as_nanos() as u64;
        Span {
            trace_id: self.trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: self.root_span_id.to_vec(),
            name: format!("gen_ai.evaluation {}", r.metric),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: start_ns,
            end_time_unix_nano: end_ns,
            attributes,
            events: vec![Event {
                time_unix_nano: end_ns,
                name: "gen_ai.evaluation.result".into(),
                attributes: fields,
                dropped_attributes_count: 0,
            }],
            links: link,
            status: Some(Status {
                code: status::StatusCode::Ok as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The invocation's root span, sent when it ends.
    pub fn root_span(&self, metrics: &[String], judged: usize, failed: usize) -> Span {
        Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.root_span_id.to_vec(),
            name: "eval-run".into(),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: nanos(self.started),
            end_time_unix_nano: nanos(SystemTime::now()),
            attributes: vec![
                s("trace2eval.eval.run_id", &self.run_id),
                s("trace2eval.eval.metrics", &metrics.join(",")),
                s("gen_ai.request.model", &self.judge_model),
                kv(
                    "trace2eval.eval.judged",
                    any_value::Value::IntValue(judged as i64),
                ),
                kv(
                    "trace2eval.eval.failed",
                    any_value::Value::IntValue(failed as i64),
                ),
            ],
            status: Some(Status {
                code: if failed == 0 {
                    status::StatusCode::Ok
                } else {
                    status::StatusCode::Error
                } as i32,
                message: if failed == 0 {
                    String::new()
                } else {
                    format!("{failed} (item, metric) pairs failed")
                },
            }),
            ..Default::default()
        }
    }
}

/// The OTLP request carrying `spans`.
pub fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", "trace2eval-eval-runner"),
                    s("service.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "trace2eval.eval-runner".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Delivers span batches to the configured destination.
pub enum Emitter {
    None,
    Grpc {
        endpoint: String,
        client: Option<TraceServiceClient<tonic::transport::Channel>>,
    },
    Http {
        url: String,
        http: reqwest::Client,
    },
    Store {
        store: schemas::store::Store,
        tenant: String,
    },
}

impl Emitter {
    pub fn new(emit: &Emit, tenant: &str) -> Result<Self, EvalError> {
        Ok(match emit {
            Emit::None => Self::None,
            Emit::OtlpGrpc(endpoint) => Self::Grpc {
                endpoint: endpoint.clone(),
                client: None,
            },
            Emit::OtlpHttp(base) => Self::Http {
                url: format!("{base}/v1/traces"),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .map_err(|e| EvalError::Emit(e.to_string()))?,
            },
            Emit::Store(url) => Self::Store {
                store: schemas::store::Store::open(url)
                    .map_err(|e| EvalError::BadArgs(format!("--emit-store: {e}")))?,
                tenant: tenant.into(),
            },
        })
    }

    pub fn enabled(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// Sends `req`, retrying with backoff; an error means it was not delivered. `sent_ms`
    /// (when the batch was first sent) names store files: the same request sent again with the
    /// same `sent_ms` overwrites them.
    pub async fn send(
        &mut self,
        req: &ExportTraceServiceRequest,
        sent_ms: u64,
    ) -> Result<(), EvalError> {
        if req.resource_spans.is_empty() || !self.enabled() {
            return Ok(());
        }
        let mut last = String::new();
        for attempt in 0..SEND_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            match self.send_once(req, sent_ms).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!("sending score spans (attempt {}): {e}", attempt + 1);
                    last = e;
                }
            }
        }
        Err(EvalError::Emit(last))
    }

    async fn send_once(
        &mut self,
        req: &ExportTraceServiceRequest,
        sent_ms: u64,
    ) -> Result<(), String> {
        match self {
            Self::None => Ok(()),
            Self::Grpc { endpoint, client } => {
                if client.is_none() {
                    *client = Some(
                        TraceServiceClient::connect(endpoint.clone())
                            .await
                            .map_err(|e| format!("connecting to {endpoint}: {e}"))?,
                    );
                }
                let c = client.as_mut().ok_or("no client")?;
                let resp = c
                    .export(req.clone())
                    .await
                    .map_err(|e| format!("{endpoint}: {} {}", e.code(), e.message()));
                let resp = match resp {
                    Ok(r) => r.into_inner(),
                    Err(e) => {
                        *client = None;
                        return Err(e);
                    }
                };
                match resp.partial_success {
                    Some(p) if p.rejected_spans > 0 => Err(format!(
                        "{endpoint} rejected {} spans: {}",
                        p.rejected_spans, p.error_message
                    )),
                    _ => Ok(()),
                }
            }
            Self::Http { url, http } => {
                let resp = http
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .body(req.encode_to_vec())
                    .send()
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                let status = resp.status();
                if status.is_success() {
                    Ok(())
                } else {
                    let body = resp.text().await.unwrap_or_default();
                    Err(format!("{url}: HTTP {status}: {body}"))
                }
            }
            Self::Store { store, tenant } => {
                let mut parts = schemas::convert::PartitionedBatches::new();
                parts.append(tenant, &req.resource_spans);
                // Span ids are unique per verdict, so the request bytes name the batch.
                let h = Sha256::digest(req.encode_to_vec());
                let mut entropy = [0u8; 16];
                entropy.copy_from_slice(&h[..16]);
                let name = schemas::layout::ulid(sent_ms, u128::from_be_bytes(entropy));
                for (partition, rb) in parts.finish().map_err(|e| e.to_string())? {
                    let bytes =
                        schemas::parquet_file::write_span_file(&[rb]).map_err(|e| e.to_string())?;
                    store
                        .put(&partition.file_path(&name), bytes)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(item: &str, metric: &str, score: f64) -> ResultLine {
        let line = serde_json::json!({
            "item_id": item, "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "span_id": "b7ad6b7169203331", "metric": metric, "score": score, "raw_score": null,
            "label": "good", "explanation": "why", "judge_model": "m", "latency_ms": 5.0,
            "error": null, "skipped": null, "raw_answer": null, "attempts": 1, "reused": null,
            "input_tokens": 1, "output_tokens": 1, "run_id": "run-1", "eval_span_id": null,
            "judged_at": "2026-03-02T10:00:00.000Z",
        });
        serde_json::from_value(line).expect("a result line")
    }

    fn parquet_rows(dir: &std::path::Path) -> Vec<schemas::read::SpanRow> {
        let mut rows = Vec::new();
        for entry in std::fs::read_dir(dir).expect("store dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                rows.extend(parquet_rows(&path));
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let bytes = std::fs::read(&path).expect("span file");
                rows.extend(schemas::read::read_span_file(bytes.into()).expect("parquet"));
            }
        }
        rows
    }

    /// A run killed after its spans reached the store but before it recorded them re-sends the
    /// same batch: the store must still hold one row per verdict.
    #[tokio::test]
    async fn a_batch_sent_twice_into_a_store_leaves_one_row_per_verdict() -> Result<(), EvalError> {
        let dir = tempfile::tempdir().map_err(|e| EvalError::io("tempdir", e))?;
        let started = UNIX_EPOCH + Duration::from_secs(1_772_445_600);
        let batch = |run: &RunSpans| {
            request(vec![
                run.score_span(&verdict("a", "helpfulness", 1.0), started, Duration::ZERO),
                run.score_span(&verdict("b", "helpfulness", 0.5), started, Duration::ZERO),
            ])
        };
        let first = batch(&RunSpans::new("run-1", "m", "openai"));
        // The rerun is another process: its own RunSpans, the same run id.
        let again = batch(&RunSpans::new("run-1", "m", "openai"));
        let mut store = Emitter::new(&Emit::Store(dir.path().display().to_string()), "t")?;
        store.send(&first, 1_772_445_601_000).await?;
        store.send(&first, 1_772_445_601_000).await?;
        let rows = parquet_rows(dir.path());
        assert_eq!(rows.len(), 2, "one row per verdict");
        let ids: Vec<String> = rows.iter().map(|r| r.span_id.clone()).collect();
        for item in ["a", "b"] {
            let want = hex::encode(score_span_id("run-1", item, "helpfulness"));
            assert!(ids.contains(&want), "{want} in {ids:?}");
        }
        let span_ids = |r: &ExportTraceServiceRequest| -> Vec<Vec<u8>> {
            r.resource_spans[0].scope_spans[0]
                .spans
                .iter()
                .map(|s| s.span_id.clone())
                .collect()
        };
        assert_eq!(span_ids(&first), span_ids(&again));
        Ok(())
    }
}
