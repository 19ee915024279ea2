//! A deterministic generator of realistic LLM-application traces, as OTLP export requests.
//!
//! Each trace is one user request to a RAG chat backend of three Python services:
//! `chat-api` receives it (FastAPI-like SERVER root `POST /v1/chat`), `rag-worker` retrieves
//! documents (optional embeddings call, retrieval with `retrieval.documents.N.*`, optional
//! reranking), and `agent-runner` answers with 1-3 LLM CLIENT calls in one of three attribute
//! dialects (OTel GenAI semconv, OpenLLMetry, OpenInference) and tool calls between them. Some
//! calls fail with exception events; some traces are a user's retry a few seconds after a trace
//! and link to its root. Attribute values use every `AnyValue` type and some non-ASCII text.
//!
//! Requests hold whole traces, 50-200 spans from several services each (the last one may be
//! smaller), in time order. The same [`CorpusConfig`] always gives the same requests.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusConfig {
    /// Number of traces.
    pub traces: usize,
    /// Traces start uniformly within this many days before `end_unix_ns` (0 counts as 1).
    pub days: u32,
    pub seed: u64,
    /// Every span starts and ends before this time (Unix nanoseconds).
    pub end_unix_ns: u64,
    /// Bytes of knowledge-base context in each LLM prompt, uniform in this range: the main
    /// lever on the spans' size ([`CONTEXT_BYTES`] gives ~1,650 B of OTLP protobuf per span).
    pub context_bytes: (usize, usize),
}

/// The default range of [`CorpusConfig::context_bytes`].
pub const CONTEXT_BYTES: (usize, usize) = (1000, 3000);

/// Parses a [`CorpusConfig::context_bytes`] range written `MIN-MAX` (a command-line value).
pub fn parse_context_bytes(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("{s:?} is not a byte range: give MIN-MAX, e.g. 1000-3000");
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo = lo.trim().parse::<usize>().map_err(|_| bad())?;
    let hi = hi.trim().parse::<usize>().map_err(|_| bad())?;
    if lo > hi {
        return Err(format!("{s:?}: MIN is above MAX"));
    }
    Ok((lo, hi))
}

/// Generated export requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Corpus {
    pub requests: Vec<ExportTraceServiceRequest>,
    /// Spans across all requests.
    pub spans: usize,
}

impl Corpus {
    /// `(trace_id, span_id)` of every span as lowercase hex, sorted.
    pub fn span_ids(&self) -> Vec<(String, String)> {
        let mut ids: Vec<_> = self
            .requests
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| (hex::encode(&s.trace_id), hex::encode(&s.span_id)))
            .collect();
        ids.sort();
        ids
    }
}

/// OTLP/JSON of a request, as an OTLP/HTTP client posts it with `application/json`.
///
/// opentelemetry-proto's `with-serde` derives follow the OTLP/JSON rules: lowerCamelCase keys,
/// trace and span ids as lowercase hex, enums as integers, 64-bit integers as decimal strings,
/// bytes as base64. One gap: a non-finite `doubleValue` becomes `null` (the spec wants
/// `"NaN"`/`"Infinity"`), so the generator never emits one.
pub fn to_json(req: &ExportTraceServiceRequest) -> String {
    // Cannot fail: every map key is a string and no serializer of these types returns an error.
    serde_json::to_string(req).expect("OTLP messages serialize to JSON")
}

/// Moves every trace whole hours back so that it starts in the first `hours` hours after
/// `day_start`.
pub fn fold_into_hours(requests: &mut [ExportTraceServiceRequest], day_start: u64, hours: u64) {
    let window = hours * 3_600_000_000_000;
    let mut first_start = std::collections::HashMap::new();
    for r in requests.iter() {
        for s in r
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
        {
            let e = first_start.entry(s.trace_id.clone()).or_insert(u64::MAX);
            *e = (*e).min(s.start_time_unix_nano);
        }
    }
    for r in requests.iter_mut() {
        for s in r
            .resource_spans
            .iter_mut()
            .flat_map(|rs| rs.scope_spans.iter_mut())
            .flat_map(|ss| ss.spans.iter_mut())
        {
            let first = first_start.get(&s.trace_id).copied().unwrap_or(day_start);
            let shift = (first.saturating_sub(day_start) / window) * window;
            s.start_time_unix_nano -= shift;
            s.end_time_unix_nano = s.end_time_unix_nano.saturating_sub(shift);
            for e in &mut s.events {
                e.time_unix_nano = e.time_unix_nano.saturating_sub(shift);
            }
        }
    }
}

/// The corpus `loadgen` sends (and `naive-path` measures): `traces` traces of one day, moved
/// into its first `hours` hours as [`fold_into_hours`] does.
pub fn load_corpus(traces: usize, seed: u64, context_bytes: (usize, usize), hours: u64) -> Corpus {
    const END_UNIX_NS: u64 = 1_773_100_800_000_000_000;
    let mut corpus = generate(&CorpusConfig {
        traces,
        days: 1,
        seed,
        end_unix_ns: END_UNIX_NS,
        context_bytes,
    });
    fold_into_hours(&mut corpus.requests, END_UNIX_NS - DAY, hours);
    corpus
}

/// Generates the corpus `cfg` describes.
pub fn generate(cfg: &CorpusConfig) -> Corpus {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(cfg.seed),
        sessions: Vec::new(),
        context_bytes: cfg.context_bytes,
    };
    let first = cfg
        .end_unix_ns
        .saturating_sub(DAY * u64::from(cfg.days.max(1)));
    let last = cfg.end_unix_ns.saturating_sub(HEADROOM).max(first + 1);

    let mut traces: Vec<GenTrace> = Vec::with_capacity(cfg.traces);
    for _ in 0..cfg.traces {
        // A retry follows an original trace (never another retry) within seconds.
        let retry_of = traces
            .last()
            .filter(|prev| !prev.retry)
            .filter(|_| g.chance(0.08));
        let trace = match retry_of {
            Some(prev) => {
                let start = prev.end + g.between(2 * SEC, 30 * SEC);
                g.trace(start, Some(prev))
            }
            None => {
                let start = g.between(first, last);
                g.trace(start, None)
            }
        };
        traces.push(trace);
    }
    traces.sort_by_key(|t| t.start);

    let mut requests = Vec::new();
    let mut batch: Vec<GenSpan> = Vec::new();
    let mut target = g.between_usize(REQUEST_SPANS.0, REQUEST_SPANS.1);
    for trace in traces {
        if !batch.is_empty() && batch.len() + trace.spans.len() > REQUEST_SPANS.1 {
            requests.push(request(std::mem::take(&mut batch)));
            target = g.between_usize(REQUEST_SPANS.0, REQUEST_SPANS.1);
        }
        batch.extend(trace.spans);
        if batch.len() >= target {
            requests.push(request(std::mem::take(&mut batch)));
            target = g.between_usize(REQUEST_SPANS.0, REQUEST_SPANS.1);
        }
    }
    if !batch.is_empty() {
        requests.push(request(batch));
    }
    let spans = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    Corpus { requests, spans }
}

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
const DAY: u64 = 86_400 * SEC;
/// Uniform trace starts stop this long before the end: the longest trace plus a retry of it
/// take under five minutes.
const HEADROOM: u64 = 10 * 60 * SEC;
/// Span flags: W3C `sampled` (0x1), "is_remote is known" (0x100), "parent is remote" (0x200).
const FLAGS_LOCAL_PARENT: u32 = 0x101;
const FLAGS_REMOTE_PARENT: u32 = 0x301;
/// Spans per request, before the last.
const REQUEST_SPANS: (usize, usize) = (50, 200);

struct Service {
    name: &'static str,
    version: &'static str,
    hosts: &'static [&'static str],
}

const CHAT_API: usize = 0;
const RAG_WORKER: usize = 1;
const AGENT_RUNNER: usize = 2;
const SERVICES: [Service; 3] = [
    Service {
        name: "chat-api",
        version: "2.14.0",
        hosts: &[
            "chat-api-7d9f8b6c4-2xkq7",
            "chat-api-7d9f8b6c4-9w4bz",
            "chat-api-7d9f8b6c4-tm5rn",
        ],
    },
    Service {
        name: "rag-worker",
        version: "1.8.3",
        hosts: &["rag-worker-0", "rag-worker-1"],
    },
    Service {
        name: "agent-runner",
        version: "0.31.2",
        hosts: &[
            "agent-runner-5b8d4f9c7-lq2mn",
            "agent-runner-5b8d4f9c7-zp8vd",
        ],
    },
];

const SCOPE_FASTAPI: usize = 0;
const SCOPE_GENAI: usize = 1;
const SCOPE_OPENLLMETRY: usize = 2;
const SCOPE_OPENINFERENCE: usize = 3;
const SCOPE_RAG: usize = 4;
const SCOPE_AGENT: usize = 5;
/// Instrumentation scopes: name, version, schema URL.
const SCOPES: [(&str, &str, &str); 6] = [
    (
        "opentelemetry.instrumentation.fastapi",
        "0.48b0",
        "https://opentelemetry.io/schemas/1.11.0",
    ),
    (
        "opentelemetry.instrumentation.openai_v2",
        "2.1b0",
        "https://opentelemetry.io/schemas/1.37.0",
    ),
    ("opentelemetry.instrumentation.openai.v1", "0.40.2", ""),
    ("openinference.instrumentation.openai", "0.1.18", ""),
    ("rag_worker.retrieval", "1.8.3", ""),
    ("agent_runner", "0.31.2", ""),
];

struct Model {
    provider: &'static str,
    /// `gen_ai.system` as OpenLLMetry writes it.
    system: &'static str,
    request: &'static str,
    response: &'static str,
    server: &'static str,
}

const MODELS: [Model; 4] = [
    Model {
        provider: "openai",
        system: "openai",
        request: "gpt-4o",
        response: "gpt-4o-2024-08-06",
        server: "api.openai.com",
    },
    Model {
        provider: "openai",
        system: "openai",
        request: "gpt-4o-mini",
        response: "gpt-4o-mini-2024-07-18",
        server: "api.openai.com",
    },
    Model {
        provider: "anthropic",
        system: "Anthropic",
        request: "claude-sonnet-4-5",
        response: "claude-sonnet-4-5-20250929",
        server: "api.anthropic.com",
    },
    Model {
        provider: "aws.bedrock",
        system: "AWS",
        request: "anthropic.claude-3-5-haiku-20241022-v1:0",
        response: "anthropic.claude-3-5-haiku-20241022-v1:0",
        server: "bedrock-runtime.us-east-1.amazonaws.com",
    },
];

struct Tool {
    name: &'static str,
    description: &'static str,
    arguments: &'static str,
    result: &'static str,
}

const TOOLS: [Tool; 5] = [
    Tool {
        name: "search_orders",
        description: "Find a customer's orders by status or date range.",
        arguments: r#"{"customer_id":"c_18273","status":"shipped","limit":5}"#,
        result: r#"{"orders":[{"id":"ord_99812","status":"shipped","eta":"2025-06-03"}]}"#,
    },
    Tool {
        name: "lookup_customer",
        description: "Fetch a customer profile by email.",
        arguments: r#"{"email":"maria.garcía@example.com"}"#,
        result: r#"{"customer_id":"c_18273","plan":"pro","region":"eu-west-1"}"#,
    },
    Tool {
        name: "create_ticket",
        description: "Open a support ticket for a human agent.",
        arguments: r#"{"subject":"Refund for duplicate charge","priority":"high"}"#,
        result: r#"{"ticket_id":"T-40417","queue":"billing"}"#,
    },
    Tool {
        name: "get_service_status",
        description: "Current status of a cloud region.",
        arguments: r#"{"region":"ap-northeast-1"}"#,
        result: r#"{"region":"ap-northeast-1","status":"degraded","incident":"INC-2291"}"#,
    },
    Tool {
        name: "calculator",
        description: "Evaluate an arithmetic expression.",
        arguments: r#"{"expression":"129.99 * 12 * 0.85"}"#,
        result: r#"{"value":1325.898}"#,
    },
];

struct Failure {
    error_type: &'static str,
    message: &'static str,
    /// Traceback frames, innermost last, without the final `Type: message` line.
    frames: &'static str,
}

const LLM_FAILURES: [Failure; 3] = [
    Failure {
        error_type: "openai.RateLimitError",
        message: "Error code: 429 - {'error': {'message': 'Rate limit reached for gpt-4o on tokens per min (TPM): Limit 30000, Used 29871, Requested 1890.', 'type': 'tokens', 'code': 'rate_limit_exceeded'}}",
        frames: "  File \"/app/agent_runner/llm.py\", line 88, in complete\n    response = await self.client.chat.completions.create(**params)\n  File \"/usr/local/lib/python3.12/site-packages/openai/resources/chat/completions/completions.py\", line 2028, in create\n    return await self._post(\n  File \"/usr/local/lib/python3.12/site-packages/openai/_base_client.py\", line 1594, in request\n    raise self._make_status_error_from_response(err.response) from None\n",
    },
    Failure {
        error_type: "openai.APITimeoutError",
        message: "Request timed out.",
        frames: "  File \"/app/agent_runner/llm.py\", line 88, in complete\n    response = await self.client.chat.completions.create(**params)\n  File \"/usr/local/lib/python3.12/site-packages/openai/_base_client.py\", line 1551, in request\n    raise APITimeoutError(request=request) from err\n",
    },
    Failure {
        error_type: "anthropic.InternalServerError",
        message: "Error code: 529 - {'type': 'error', 'error': {'type': 'overloaded_error', 'message': 'Overloaded'}}",
        frames: "  File \"/app/agent_runner/llm.py\", line 112, in complete_anthropic\n    message = await self.anthropic.messages.create(**params)\n  File \"/usr/local/lib/python3.12/site-packages/anthropic/_base_client.py\", line 1612, in request\n    raise self._make_status_error_from_response(err.response) from None\n",
    },
];

const TOOL_FAILURES: [Failure; 2] = [
    Failure {
        error_type: "TimeoutError",
        message: "tool call exceeded its 2.0 s budget",
        frames: "  File \"/app/agent_runner/tools.py\", line 41, in run_tool\n    async with asyncio.timeout(tool.budget):\n  File \"/usr/local/lib/python3.12/asyncio/timeouts.py\", line 115, in __aexit__\n    raise TimeoutError from exc_val\n",
    },
    Failure {
        error_type: "httpx.HTTPStatusError",
        message: "Server error '503 Service Unavailable' for url 'http://orders.internal:8080/v2/orders?customer=c_18273'",
        frames: "  File \"/app/agent_runner/tools.py\", line 58, in search_orders\n    resp.raise_for_status()\n  File \"/usr/local/lib/python3.12/site-packages/httpx/_models.py\", line 829, in raise_for_status\n    raise HTTPStatusError(message, request=request, response=self)\n",
    },
];

const SYSTEM_PROMPTS: [&str; 3] = [
    "You are Acme Cloud's support assistant. Answer only from the provided context, cite document ids in brackets, and say so when the context does not contain the answer.",
    "You are a concise, friendly support agent for Acme Cloud. Use the tools when the customer asks about their own account, orders or tickets. Never invent prices.",
    "Du bist der Support-Assistent von Acme Cloud. Antworte in der Sprache der Frage, knapp und höflich, und nenne die Quellen als [doc-id].",
];

const QUESTIONS: [&str; 12] = [
    "How do I rotate the API keys for my production project without downtime?",
    "Why was I charged twice for the Pro plan this month?",
    "Can I move a bucket from us-east-1 to eu-west-1 and keep the same name?",
    "What is the maximum object size for multipart uploads?",
    "My deploy has been stuck in 'pending' for 40 minutes, what should I check?",
    "How do I export audit logs to my SIEM?",
    "東京リージョンで障害が発生していますか？ レイテンシが高いです。",
    "كيف يمكنني إلغاء اشتراكي واسترداد المبلغ؟",
    "Wie kann ich die Zwei-Faktor-Authentifizierung für mein Team erzwingen?",
    "Is there a way to set a spending limit so I don't get surprise bills? 😅",
    "¿Cómo cambio el método de pago de mi cuenta?",
    "Where is my order ord_99812? The tracking page says 'label created' since Monday.",
];

const DOCS: [&str; 14] = [
    "API keys can be rotated from Settings > Security. Create the new key first, deploy it to every client, then revoke the old key; both keys stay valid until the old one is revoked, so no requests fail during the switch.",
    "Duplicate charges usually come from a failed payment that was retried by the bank. The first authorization is released within 3-5 business days. If both charges settle, open a billing ticket and we refund the duplicate within 48 hours.",
    "Bucket names are global. To move data between regions, create a bucket in the target region, copy the objects with `acme storage sync --region eu-west-1`, switch clients over, and delete the source bucket; the name frees up after 24 hours.",
    "Multipart uploads accept up to 10,000 parts of 5 MiB to 5 GiB each, so one object can be at most 5 TiB. Parts can be uploaded in parallel and in any order.",
    "Deploys stay in 'pending' while the build queue is full or when the project has reached its concurrent build limit. Check `acme deploy status --verbose` for the queue position and cancel stale builds.",
    "Audit logs can be streamed to Splunk, Datadog or any HTTPS endpoint. Configure a log sink under Organization > Audit; events arrive within 60 seconds and are retained for 400 days on the Enterprise plan.",
    "東京リージョン (ap-northeast-1) では現在、一部のストレージ API でレイテンシの上昇を確認しています。ステータスページで最新情報をご確認ください。回避策として大阪リージョンへのフェイルオーバーをご利用いただけます。",
    "يمكنك إلغاء الاشتراك في أي وقت من صفحة الفوترة. يتم رد المبلغ المتبقي بشكل تناسبي خلال سبعة أيام عمل إلى وسيلة الدفع الأصلية.",
    "Administratoren können unter Organisation > Sicherheit die Zwei-Faktor-Authentifizierung für alle Mitglieder erzwingen. Mitglieder ohne 2FA werden beim nächsten Login zur Einrichtung aufgefordert.",
    "Spending limits are set per project under Billing > Budgets. When 80% is reached we email the owners 📧; at 100% you can choose to pause compute or only alert.",
    "Para cambiar el método de pago, ve a Facturación > Métodos de pago, añade la nueva tarjeta y márcala como predeterminada. Las facturas pendientes se cobrarán a la nueva tarjeta.",
    "Orders show 'label created' until the carrier scans the parcel. If there is no scan after 3 business days, support can open a trace with the carrier and offer a replacement.",
    "Rate limits are applied per API key: 600 requests per minute on Pro, 3,000 on Enterprise. Responses include `X-RateLimit-Remaining`; back off exponentially on HTTP 429.",
    "SSO with SAML 2.0 or OIDC is available on Enterprise. After SSO is enforced, password logins are disabled for members of the verified domains.",
];

const ANSWERS: [&str; 8] = [
    "Create a second key, roll it out to all clients, then revoke the old one — both stay valid in between, so there is no downtime.",
    "That looks like a retried payment: the first authorization is released automatically within 3-5 business days. If both settle, I can open a billing ticket for a refund.",
    "Bucket names are global, so you need to copy the data into a new bucket in eu-west-1 and switch over; the old name becomes available 24 hours after deletion.",
    "The maximum object size is 5 TiB (10,000 parts of up to 5 GiB).",
    "Your deploy is probably waiting in the build queue. Run `acme deploy status --verbose` to see its position and cancel stale builds.",
    "現在、東京リージョンでレイテンシの上昇が確認されています。大阪リージョンへのフェイルオーバーをご検討ください。",
    "Sie können 2FA unter Organisation > Sicherheit für alle Mitglieder erzwingen. ✅",
    "I'm sorry, the documentation I have doesn't cover that. I've opened a ticket so a human agent can follow up.",
];

const USER_AGENTS: [&str; 3] = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "AcmeSupportWidget/3.2.1 (iOS 17.5; iPhone15,2)",
    "python-httpx/0.27.0",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    GenAi,
    OpenLlmetry,
    OpenInference,
}

#[derive(Clone)]
struct Session {
    id: String,
    user: String,
    /// Older instrumentations write `enduser.id` instead of `user.id`.
    enduser: bool,
    turns: u32,
}

/// A span and where it comes from.
#[derive(Clone)]
struct GenSpan {
    service: usize,
    host: usize,
    scope: usize,
    span: Span,
}

#[derive(Clone)]
struct GenTrace {
    start: u64,
    end: u64,
    trace_id: Vec<u8>,
    root_span_id: Vec<u8>,
    trace_state: String,
    session: Option<Session>,
    question: usize,
    retry: bool,
    spans: Vec<GenSpan>,
}

/// The trace being built.
struct Ctx {
    trace_id: Vec<u8>,
    trace_state: String,
    hosts: [usize; 3],
    session: Option<Session>,
    question: &'static str,
    spans: Vec<GenSpan>,
}

impl Ctx {
    fn push(&mut self, service: usize, scope: usize, span: Span) {
        self.spans.push(GenSpan {
            service,
            host: self.hosts[service],
            scope,
            span,
        });
    }
}

/// One LLM call of an agent run.
struct LlmCall {
    model: &'static Model,
    dialect: Dialect,
    /// Tool calls the model asks for: (call id, tool).
    asks: Vec<(String, &'static Tool)>,
    /// Tool results since the previous call, sent back to the model.
    results: Vec<(String, &'static Tool)>,
}

struct Gen {
    rng: StdRng,
    sessions: Vec<Session>,
    context_bytes: (usize, usize),
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(text: impl Into<String>) -> Value {
    Value::StringValue(text.into())
}

fn int(n: u64) -> Value {
    Value::IntValue(i64::try_from(n).unwrap_or(i64::MAX))
}

fn strings(items: &[&str]) -> Value {
    Value::ArrayValue(ArrayValue {
        values: items
            .iter()
            .map(|i| AnyValue { value: Some(s(*i)) })
            .collect(),
    })
}

/// Rounded so that OTLP/JSON round-trips the value exactly.
fn double(x: f64) -> Value {
    Value::DoubleValue((x * 10_000.0).round() / 10_000.0)
}

fn tokens(text: &str) -> u64 {
    // About four bytes per token for English prose.
    (text.len() / 4) as u64 + 1
}

fn exception(time: u64, f: &Failure) -> Event {
    Event {
        time_unix_nano: time,
        name: "exception".into(),
        attributes: vec![
            kv("exception.type", s(f.error_type)),
            kv("exception.message", s(f.message)),
            kv(
                "exception.stacktrace",
                s(format!(
                    "Traceback (most recent call last):\n{}{}: {}",
                    f.frames, f.error_type, f.message
                )),
            ),
            kv("exception.escaped", Value::BoolValue(true)),
        ],
        dropped_attributes_count: 0,
    }
}

fn error_status(message: &str) -> Option<Status> {
    Some(Status {
        message: message.into(),
        code: StatusCode::Error as i32,
    })
}

impl Gen {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.rng.random_range(lo..=hi.max(lo))
    }

    fn between_usize(&mut self, lo: usize, hi: usize) -> usize {
        self.rng.random_range(lo..=hi.max(lo))
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }

    fn id(&mut self, len: usize) -> Vec<u8> {
        let mut id = vec![0u8; len];
        while id.iter().all(|&b| b == 0) {
            self.rng.fill(&mut id[..]);
        }
        id
    }

    fn hex(&mut self, len: usize) -> String {
        hex::encode(self.id(len))
    }

    fn session(&mut self) -> Option<Session> {
        if !self.chance(0.65) {
            return None;
        }
        let recent = self.sessions.len().saturating_sub(20);
        if self.sessions.len() > recent && self.chance(0.6) {
            let i = self.rng.random_range(recent..self.sessions.len());
            self.sessions[i].turns += 1;
            return Some(self.sessions[i].clone());
        }
        let session = Session {
            id: format!("sess_{}", self.hex(8)),
            user: format!("u_{}", self.between(10_000, 99_999)),
            enduser: self.chance(0.3),
            turns: 0,
        };
        self.sessions.push(session.clone());
        Some(session)
    }

    fn new_span(&mut self, ctx: &Ctx, parent: &[u8], remote: bool, start: u64, end: u64) -> Span {
        Span {
            trace_id: ctx.trace_id.clone(),
            span_id: self.id(8),
            trace_state: ctx.trace_state.clone(),
            parent_span_id: parent.to_vec(),
            flags: if remote {
                FLAGS_REMOTE_PARENT
            } else {
                FLAGS_LOCAL_PARENT
            },
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            ..Default::default()
        }
    }

    /// Knowledge-base text of about `len` bytes, each document prefixed by its id.
    fn context(&mut self, len: usize) -> String {
        let mut out = String::new();
        while out.len() < len {
            let i = self.rng.random_range(0..DOCS.len());
            out.push_str(&format!("[doc-{:05}] {}\n\n", i * 7 + 3, DOCS[i]));
        }
        out
    }

    fn trace(&mut self, start: u64, retry_of: Option<&GenTrace>) -> GenTrace {
        let (session, question) = match retry_of {
            Some(prev) => (prev.session.clone(), prev.question),
            None => (self.session(), self.rng.random_range(0..QUESTIONS.len())),
        };
        let trace_state = match retry_of {
            Some(prev) => prev.trace_state.clone(),
            None if self.chance(0.15) => format!("acme=t61rcWkgMzE,rojo={}", self.hex(8)),
            None => String::new(),
        };
        let hosts = [0, 1, 2].map(|i| self.rng.random_range(0..SERVICES[i].hosts.len()));
        let mut ctx = Ctx {
            trace_id: self.id(16),
            trace_state,
            hosts,
            session,
            question: QUESTIONS[question],
            spans: Vec::new(),
        };
        let mut root = self.new_span(&ctx, &[], false, start, start);
        let root_id = root.span_id.clone();

        let mut cursor = start + self.between(MS, 4 * MS);
        cursor = self.retrieval(&mut ctx, &root_id, cursor) + self.between(MS / 2, 3 * MS);
        if self.chance(0.7) {
            cursor = self.rerank(&mut ctx, &root_id, cursor) + self.between(MS / 2, 3 * MS);
        }
        let (agent_end, failure) = self.agent(&mut ctx, &root_id, cursor);
        let end = agent_end + self.between(2 * MS, 12 * MS);

        root.end_time_unix_nano = end;
        root.name = "POST /v1/chat".into();
        root.kind = SpanKind::Server as i32;
        root.attributes = self.root_attributes(&ctx, failure.is_some(), retry_of.is_some());
        if let Some(f) = failure {
            root.status = error_status("upstream LLM call failed");
            root.events.push(exception(end - MS, f));
        }
        if let Some(prev) = retry_of {
            root.links.push(Link {
                trace_id: prev.trace_id.clone(),
                span_id: prev.root_span_id.clone(),
                trace_state: prev.trace_state.clone(),
                attributes: vec![kv("link.reason", s("user_retry"))],
                dropped_attributes_count: 0,
                flags: FLAGS_LOCAL_PARENT,
            });
        }
        ctx.push(CHAT_API, SCOPE_FASTAPI, root);
        GenTrace {
            start,
            end,
            trace_id: ctx.trace_id,
            root_span_id: root_id,
            trace_state: ctx.trace_state,
            session: ctx.session,
            question,
            retry: retry_of.is_some(),
            spans: ctx.spans,
        }
    }

    fn root_attributes(&mut self, ctx: &Ctx, failed: bool, retry: bool) -> Vec<KeyValue> {
        let body = 200 + ctx.question.len() as u64;
        let mut a = vec![
            kv("http.request.method", s("POST")),
            kv("url.scheme", s("https")),
            kv("url.path", s("/v1/chat")),
            kv("http.route", s("/v1/chat")),
            kv("server.address", s("chat.acme.example")),
            kv("network.protocol.version", s("1.1")),
            kv(
                "client.address",
                s(format!(
                    "10.{}.{}.{}",
                    self.between(0, 255),
                    self.between(0, 255),
                    self.between(1, 254)
                )),
            ),
            kv("user_agent.original", s(*self.pick(&USER_AGENTS))),
            kv(
                "http.request.header.content-type",
                strings(&["application/json"]),
            ),
            kv("http.request.body.size", int(body)),
            kv(
                "http.response.status_code",
                int(if failed { 502 } else { 200 }),
            ),
            kv("app.question", s(ctx.question)),
        ];
        if let Some(session) = &ctx.session {
            a.push(kv("session.id", s(session.id.clone())));
            let key = if session.enduser {
                "enduser.id"
            } else {
                "user.id"
            };
            a.push(kv(key, s(session.user.clone())));
        }
        if self.chance(0.3) {
            a.push(kv(
                "app.request.fingerprint",
                Value::BytesValue(self.id(16)),
            ));
        }
        if self.chance(0.3) {
            let flags = vec![
                kv("rerank", Value::BoolValue(self.chance(0.7))),
                kv("model_tier", s(*self.pick(&["free", "pro", "enterprise"]))),
                kv("max_documents", int(self.between(3, 8))),
                kv(
                    "temperature_override",
                    double(self.rng.random_range(0.0..1.0)),
                ),
            ];
            a.push(kv(
                "app.feature_flags",
                Value::KvlistValue(KeyValueList { values: flags }),
            ));
        }
        if retry {
            a.push(kv("app.retry.attempt", int(2)));
        }
        if failed {
            a.push(kv("error.type", s("UpstreamLLMError")));
        }
        a
    }

    /// Retrieval (with an embeddings call inside, sometimes); returns its end.
    fn retrieval(&mut self, ctx: &mut Ctx, root: &[u8], start: u64) -> u64 {
        let mut span = self.new_span(ctx, root, true, start, start);
        let mut cursor = start + self.between(MS / 2, 2 * MS);
        if self.chance(0.6) {
            let end = cursor + self.between(30 * MS, 250 * MS);
            let mut embed = self.new_span(ctx, &span.span_id, false, cursor, end);
            embed.name = "embeddings text-embedding-3-small".into();
            embed.kind = SpanKind::Client as i32;
            embed.attributes = vec![
                kv("gen_ai.operation.name", s("embeddings")),
                kv("gen_ai.provider.name", s("openai")),
                kv("gen_ai.request.model", s("text-embedding-3-small")),
                kv("gen_ai.request.encoding_formats", strings(&["float"])),
                kv("gen_ai.embeddings.dimension.count", int(1536)),
                kv("gen_ai.usage.input_tokens", int(tokens(ctx.question))),
                kv("server.address", s("api.openai.com")),
            ];
            ctx.push(RAG_WORKER, SCOPE_GENAI, embed);
            cursor = end + self.between(MS / 2, 2 * MS);
        }
        let end = cursor + self.between(5 * MS, 80 * MS);
        span.end_time_unix_nano = end;
        span.name = "retrieve".into();
        span.kind = SpanKind::Internal as i32;
        span.attributes = vec![
            kv("openinference.span.kind", s("RETRIEVER")),
            kv("input.value", s(ctx.question)),
            kv("db.system.name", s("qdrant")),
            kv("db.collection.name", s("support-docs-v3")),
        ];
        let n = self.between_usize(2, 5);
        let mut score = self.rng.random_range(0.75..0.95);
        for i in 0..n {
            let doc = self.rng.random_range(0..DOCS.len());
            let p = format!("retrieval.documents.{i}.document");
            span.attributes
                .push(kv(&format!("{p}.id"), s(format!("doc-{:05}", doc * 7 + 3))));
            span.attributes
                .push(kv(&format!("{p}.content"), s(DOCS[doc])));
            span.attributes
                .push(kv(&format!("{p}.score"), double(score)));
            if self.chance(0.5) {
                let meta = json!({"source": format!("kb/articles/{doc}.md"), "lang": "auto"});
                span.attributes
                    .push(kv(&format!("{p}.metadata"), s(meta.to_string())));
            }
            score -= self.rng.random_range(0.01..0.08);
        }
        ctx.push(RAG_WORKER, SCOPE_RAG, span);
        end
    }

    fn rerank(&mut self, ctx: &mut Ctx, root: &[u8], start: u64) -> u64 {
        let end = start + self.between(20 * MS, 300 * MS);
        let mut span = self.new_span(ctx, root, true, start, end);
        span.name = "rerank".into();
        span.kind = SpanKind::Internal as i32;
        let top_k = self.between(2, 3);
        span.attributes = vec![
            kv("openinference.span.kind", s("RERANKER")),
            kv(
                "reranker.model_name",
                s("cross-encoder/ms-marco-MiniLM-L-6-v2"),
            ),
            kv("reranker.top_k", int(top_k)),
            kv("reranker.query", s(ctx.question)),
        ];
        let mut score = self.rng.random_range(4.0..9.0);
        for i in 0..top_k {
            let doc = self.rng.random_range(0..DOCS.len());
            let p = format!("reranker.output_documents.{i}.document");
            span.attributes
                .push(kv(&format!("{p}.id"), s(format!("doc-{:05}", doc * 7 + 3))));
            span.attributes
                .push(kv(&format!("{p}.score"), double(score)));
            score -= self.rng.random_range(0.5..2.0);
        }
        ctx.push(RAG_WORKER, SCOPE_RAG, span);
        end
    }

    /// The agent run: LLM calls with tool calls between them. Returns the end time and the
    /// failure that ended the run early, if any.
    fn agent(&mut self, ctx: &mut Ctx, root: &[u8], start: u64) -> (u64, Option<&'static Failure>) {
        let calls = self.between_usize(1, 3);
        let tools = self.between_usize(0, 4);
        let mut agent =
            (calls > 1 || tools > 0).then(|| self.new_span(ctx, root, true, start, start));
        let (parent, remote) = match &agent {
            Some(a) => (a.span_id.clone(), false),
            None => (root.to_vec(), true),
        };
        // Tools run after any call but the last; a single call gets them before it.
        let mut gaps = vec![Vec::new(); calls];
        for _ in 0..tools {
            let gap = if calls == 1 {
                0
            } else {
                self.rng.random_range(0..calls - 1)
            };
            let call_id = format!("call_{}", self.hex(12));
            gaps[gap].push((call_id, self.pick(&TOOLS)));
        }
        let model = self.pick(&MODELS);
        let mut cursor = start + if agent.is_some() { MS } else { 0 };
        let mut failure = None;
        let mut results = Vec::new();
        let mut dialect = Dialect::GenAi;
        if calls == 1 {
            results = std::mem::take(&mut gaps[0]);
            for (call_id, tool) in &results {
                cursor = self.tool(
                    ctx,
                    &parent,
                    remote,
                    cursor,
                    (call_id.as_str(), *tool, dialect),
                ) + MS;
            }
        }
        for (i, asks) in gaps.into_iter().enumerate() {
            dialect = *self.pick(&[
                Dialect::GenAi,
                Dialect::GenAi,
                Dialect::OpenLlmetry,
                Dialect::OpenInference,
            ]);
            let asks = if i + 1 == calls { Vec::new() } else { asks };
            let call = LlmCall {
                model,
                dialect,
                asks,
                results: std::mem::take(&mut results),
            };
            let (end, failed) = self.llm(ctx, &parent, remote, cursor, &call);
            cursor = end + self.between(MS, 5 * MS);
            if failed.is_some() {
                failure = failed;
                break;
            }
            for (call_id, tool) in &call.asks {
                cursor = self.tool(
                    ctx,
                    &parent,
                    remote,
                    cursor,
                    (call_id.as_str(), *tool, dialect),
                ) + MS;
            }
            results = call.asks;
        }
        if let Some(mut a) = agent.take() {
            a.end_time_unix_nano = cursor;
            a.name = "invoke_agent support-agent".into();
            a.kind = SpanKind::Internal as i32;
            a.attributes = vec![
                kv("gen_ai.operation.name", s("invoke_agent")),
                kv("gen_ai.agent.name", s("support-agent")),
                kv("gen_ai.agent.id", s("asst_5qBv2Jk9")),
                kv("gen_ai.provider.name", s(model.provider)),
                kv("gen_ai.request.model", s(model.request)),
            ];
            if let Some(f) = failure {
                a.status = error_status(f.message);
            }
            ctx.push(AGENT_RUNNER, SCOPE_AGENT, a);
        }
        (cursor, failure)
    }

    fn tool(
        &mut self,
        ctx: &mut Ctx,
        parent: &[u8],
        remote: bool,
        start: u64,
        (call_id, tool, dialect): (&str, &Tool, Dialect),
    ) -> u64 {
        let failure = self.chance(0.08).then(|| self.pick(&TOOL_FAILURES));
        let end = start + self.between(10 * MS, 2_000 * MS);
        let mut span = self.new_span(ctx, parent, remote, start, end);
        span.kind = SpanKind::Internal as i32;
        if dialect == Dialect::OpenInference {
            span.name = tool.name.into();
            span.attributes = vec![
                kv("openinference.span.kind", s("TOOL")),
                kv("tool.name", s(tool.name)),
                kv("tool.description", s(tool.description)),
                kv("tool.parameters", s(tool.arguments)),
                kv("input.value", s(tool.arguments)),
                kv("input.mime_type", s("application/json")),
            ];
            if failure.is_none() {
                span.attributes.push(kv("output.value", s(tool.result)));
                span.attributes
                    .push(kv("output.mime_type", s("application/json")));
            }
        } else {
            span.name = format!("execute_tool {}", tool.name);
            span.attributes = vec![
                kv("gen_ai.operation.name", s("execute_tool")),
                kv("gen_ai.tool.name", s(tool.name)),
                kv("gen_ai.tool.description", s(tool.description)),
                kv("gen_ai.tool.type", s("function")),
                kv("gen_ai.tool.call.id", s(call_id)),
                kv("gen_ai.tool.call.arguments", s(tool.arguments)),
            ];
            if failure.is_none() {
                span.attributes
                    .push(kv("gen_ai.tool.call.result", s(tool.result)));
            }
        }
        if let Some(f) = failure {
            span.attributes.push(kv("error.type", s(f.error_type)));
            span.status = error_status(f.message);
            span.events.push(exception(end, f));
        }
        ctx.push(AGENT_RUNNER, SCOPE_AGENT, span);
        end
    }

    /// One LLM call; returns its end and its failure, if it failed.
    fn llm(
        &mut self,
        ctx: &mut Ctx,
        parent: &[u8],
        remote: bool,
        start: u64,
        call: &LlmCall,
    ) -> (u64, Option<&'static Failure>) {
        let system = *self.pick(&SYSTEM_PROMPTS);
        // Prompts of 1-4 KB by default: the context alone is at least 1000 bytes.
        let target = self.between_usize(self.context_bytes.0, self.context_bytes.1);
        let context = self.context(target);
        let user = format!(
            "Answer using only the context below.\n\nContext:\n{context}Question: {}",
            ctx.question
        );
        let history = ctx
            .session
            .as_ref()
            .filter(|s| s.turns > 0)
            .map(|_| (*self.pick(&QUESTIONS), *self.pick(&ANSWERS)));
        let answer = *self.pick(&ANSWERS);
        let temperature = *self.pick(&[0.0, 0.2, 0.7]);
        let max_tokens = *self.pick(&[512u64, 1024, 4096]);
        let input_tokens =
            tokens(system) + tokens(&user) + history.map_or(0, |(q, a)| tokens(q) + tokens(a));
        let output_tokens = if call.asks.is_empty() {
            tokens(answer) + self.between(0, 20)
        } else {
            18 * call.asks.len() as u64
        };
        let failure = self.chance(0.06).then(|| self.pick(&LLM_FAILURES));
        let duration = match failure {
            Some(f) if f.error_type.ends_with("APITimeoutError") => 30 * SEC,
            Some(_) => self.between(80 * MS, 600 * MS),
            None => 400 * MS + output_tokens * self.between(15 * MS, 45 * MS),
        };
        let end = start + duration;
        let mut span = self.new_span(ctx, parent, remote, start, end);
        span.kind = SpanKind::Client as i32;
        let m = call.model;

        match call.dialect {
            Dialect::GenAi => {
                span.name = format!("chat {}", m.request);
                let mut input = Vec::new();
                if let Some((q, a)) = history {
                    input.push(json!({"role": "user", "parts": [{"type": "text", "content": q}]}));
                    input.push(
                        json!({"role": "assistant", "parts": [{"type": "text", "content": a}]}),
                    );
                }
                input.push(json!({"role": "user", "parts": [{"type": "text", "content": user}]}));
                for (id, tool) in &call.results {
                    input.push(json!({"role": "tool", "parts": [
                        {"type": "tool_call_response", "id": id, "response": tool.result}]}));
                }
                span.attributes = vec![
                    kv("gen_ai.operation.name", s("chat")),
                    kv("gen_ai.provider.name", s(m.provider)),
                    kv("gen_ai.request.model", s(m.request)),
                    kv("gen_ai.request.temperature", double(temperature)),
                    kv("gen_ai.request.max_tokens", int(max_tokens)),
                    kv("server.address", s(m.server)),
                    kv("server.port", int(443)),
                    kv(
                        "gen_ai.system_instructions",
                        s(json!([{"type": "text", "content": system}]).to_string()),
                    ),
                    kv(
                        "gen_ai.input.messages",
                        s(serde_json::Value::Array(input).to_string()),
                    ),
                ];
                if self.chance(0.3) {
                    span.attributes.push(kv(
                        "gen_ai.request.stop_sequences",
                        strings(&["\n\nUser:", "</answer>"]),
                    ));
                }
                if let Some(session) = ctx.session.as_ref().filter(|_| self.chance(0.5)) {
                    span.attributes
                        .push(kv("gen_ai.conversation.id", s(session.id.clone())));
                }
                if failure.is_none() {
                    let (parts, finish) = if call.asks.is_empty() {
                        (vec![json!({"type": "text", "content": answer})], "stop")
                    } else {
                        let calls = call.asks.iter().map(|(id, tool)| json!({
                            "type": "tool_call", "id": id, "name": tool.name,
                            "arguments": serde_json::from_str::<serde_json::Value>(tool.arguments)
                                .unwrap_or_default(),
                        }));
                        (calls.collect(), "tool_call")
                    };
                    let output =
                        json!([{"role": "assistant", "parts": parts, "finish_reason": finish}]);
                    span.attributes.extend([
                        kv(
                            "gen_ai.response.id",
                            s(format!("chatcmpl-{}", self.hex(12))),
                        ),
                        kv("gen_ai.response.model", s(m.response)),
                        kv("gen_ai.response.finish_reasons", strings(&[finish])),
                        kv("gen_ai.usage.input_tokens", int(input_tokens)),
                        kv("gen_ai.usage.output_tokens", int(output_tokens)),
                        kv("gen_ai.output.messages", s(output.to_string())),
                    ]);
                }
                ctx.push(AGENT_RUNNER, SCOPE_GENAI, self.finish_llm(span, failure));
            }
            Dialect::OpenLlmetry => {
                span.name = if m.provider == "openai" {
                    "openai.chat"
                } else {
                    "anthropic.chat"
                }
                .into();
                let mut a = vec![
                    kv("llm.request.type", s("chat")),
                    kv("gen_ai.system", s(m.system)),
                    kv("gen_ai.request.model", s(m.request)),
                    kv("gen_ai.request.temperature", double(temperature)),
                    kv("gen_ai.request.max_tokens", int(max_tokens)),
                    kv("llm.is_streaming", Value::BoolValue(self.chance(0.4))),
                    kv("gen_ai.prompt.0.role", s("system")),
                    kv("gen_ai.prompt.0.content", s(system)),
                ];
                let mut n = 1;
                if let Some((q, ans)) = history {
                    a.push(kv("gen_ai.prompt.1.role", s("user")));
                    a.push(kv("gen_ai.prompt.1.content", s(q)));
                    a.push(kv("gen_ai.prompt.2.role", s("assistant")));
                    a.push(kv("gen_ai.prompt.2.content", s(ans)));
                    n = 3;
                }
                a.push(kv(&format!("gen_ai.prompt.{n}.role"), s("user")));
                a.push(kv(&format!("gen_ai.prompt.{n}.content"), s(user.clone())));
                for (id, tool) in &call.results {
                    n += 1;
                    a.push(kv(&format!("gen_ai.prompt.{n}.role"), s("tool")));
                    a.push(kv(&format!("gen_ai.prompt.{n}.content"), s(tool.result)));
                    a.push(kv(
                        &format!("gen_ai.prompt.{n}.tool_call_id"),
                        s(id.as_str()),
                    ));
                }
                if self.chance(0.1) {
                    // Some SDK versions record an unset seed as an empty value.
                    a.push(KeyValue {
                        key: "gen_ai.request.seed".into(),
                        value: Some(AnyValue { value: None }),
                        ..Default::default()
                    });
                }
                if let Some(session) = &ctx.session {
                    a.push(kv(
                        "traceloop.association.properties.session_id",
                        s(session.id.clone()),
                    ));
                }
                if failure.is_none() {
                    a.push(kv("gen_ai.response.model", s(m.response)));
                    a.push(kv(
                        "gen_ai.response.id",
                        s(format!("chatcmpl-{}", self.hex(12))),
                    ));
                    a.push(kv("gen_ai.completion.0.role", s("assistant")));
                    if call.asks.is_empty() {
                        a.push(kv("gen_ai.completion.0.content", s(answer)));
                        a.push(kv("gen_ai.completion.0.finish_reason", s("stop")));
                    } else {
                        a.push(kv("gen_ai.completion.0.finish_reason", s("tool_calls")));
                        for (j, (id, tool)) in call.asks.iter().enumerate() {
                            let p = format!("gen_ai.completion.0.tool_calls.{j}");
                            a.push(kv(&format!("{p}.id"), s(id.as_str())));
                            a.push(kv(&format!("{p}.name"), s(tool.name)));
                            a.push(kv(&format!("{p}.arguments"), s(tool.arguments)));
                        }
                    }
                    a.push(kv("gen_ai.usage.prompt_tokens", int(input_tokens)));
                    a.push(kv("gen_ai.usage.completion_tokens", int(output_tokens)));
                    a.push(kv(
                        "llm.usage.total_tokens",
                        int(input_tokens + output_tokens),
                    ));
                }
                span.attributes = a;
                ctx.push(
                    AGENT_RUNNER,
                    SCOPE_OPENLLMETRY,
                    self.finish_llm(span, failure),
                );
            }
            Dialect::OpenInference => {
                span.name = "ChatCompletion".into();
                let mut messages = vec![json!({"role": "system", "content": system})];
                if let Some((q, ans)) = history {
                    messages.push(json!({"role": "user", "content": q}));
                    messages.push(json!({"role": "assistant", "content": ans}));
                }
                messages.push(json!({"role": "user", "content": user}));
                for (id, tool) in &call.results {
                    messages
                        .push(json!({"role": "tool", "tool_call_id": id, "content": tool.result}));
                }
                let params = json!({"model": m.request, "temperature": temperature, "max_tokens": max_tokens});
                let mut a = vec![
                    kv("openinference.span.kind", s("LLM")),
                    kv("llm.provider", s(m.provider)),
                    kv(
                        "llm.system",
                        s(if m.provider == "openai" {
                            "openai"
                        } else {
                            "anthropic"
                        }),
                    ),
                    kv(
                        "llm.model_name",
                        s(if failure.is_none() {
                            m.response
                        } else {
                            m.request
                        }),
                    ),
                    kv("llm.invocation_parameters", s(params.to_string())),
                    kv(
                        "input.value",
                        s(json!({"messages": messages, "model": m.request}).to_string()),
                    ),
                    kv("input.mime_type", s("application/json")),
                ];
                for (j, msg) in messages.iter().enumerate() {
                    let p = format!("llm.input_messages.{j}.message");
                    let role = msg["role"].as_str().unwrap_or_default();
                    let content = msg["content"].as_str().unwrap_or_default();
                    a.push(kv(&format!("{p}.role"), s(role)));
                    a.push(kv(&format!("{p}.content"), s(content)));
                }
                if let Some(session) = &ctx.session {
                    a.push(kv("session.id", s(session.id.clone())));
                    a.push(kv("user.id", s(session.user.clone())));
                }
                if failure.is_none() {
                    a.push(kv("llm.output_messages.0.message.role", s("assistant")));
                    if call.asks.is_empty() {
                        a.push(kv("output.value", s(answer)));
                        a.push(kv("output.mime_type", s("text/plain")));
                        a.push(kv("llm.output_messages.0.message.content", s(answer)));
                    } else {
                        for (j, (_, tool)) in call.asks.iter().enumerate() {
                            let p = format!(
                                "llm.output_messages.0.message.tool_calls.{j}.tool_call.function"
                            );
                            a.push(kv(&format!("{p}.name"), s(tool.name)));
                            a.push(kv(&format!("{p}.arguments"), s(tool.arguments)));
                        }
                    }
                    a.push(kv("llm.token_count.prompt", int(input_tokens)));
                    a.push(kv("llm.token_count.completion", int(output_tokens)));
                    a.push(kv(
                        "llm.token_count.total",
                        int(input_tokens + output_tokens),
                    ));
                }
                span.attributes = a;
                if failure.is_none() {
                    span.status = Some(Status {
                        message: String::new(),
                        code: StatusCode::Ok as i32,
                    });
                }
                ctx.push(
                    AGENT_RUNNER,
                    SCOPE_OPENINFERENCE,
                    self.finish_llm(span, failure),
                );
            }
        }
        (end, failure)
    }

    fn finish_llm(&mut self, mut span: Span, failure: Option<&Failure>) -> Span {
        if let Some(f) = failure {
            span.attributes.push(kv("error.type", s(f.error_type)));
            span.status = error_status(f.message);
            span.events.push(exception(span.end_time_unix_nano, f));
        } else if self.chance(0.2) {
            // Time to first token, as streaming instrumentations record it.
            let first_token = span.start_time_unix_nano + self.between(150 * MS, 900 * MS);
            span.events.push(Event {
                time_unix_nano: first_token.min(span.end_time_unix_nano),
                name: "gen_ai.first_token".into(),
                attributes: vec![kv("gen_ai.response.streaming", Value::BoolValue(true))],
                dropped_attributes_count: 0,
            });
        }
        span
    }
}

fn resource(service: usize, host: usize) -> Resource {
    let svc = &SERVICES[service];
    let host_name = svc.hosts[host];
    Resource {
        attributes: vec![
            kv("service.name", s(svc.name)),
            kv("service.version", s(svc.version)),
            kv("service.namespace", s("support-bot")),
            kv("service.instance.id", s(host_name)),
            kv("deployment.environment.name", s("production")),
            kv("host.name", s(host_name)),
            kv("k8s.pod.name", s(host_name)),
            kv("k8s.namespace.name", s("support-bot")),
            kv("process.runtime.name", s("cpython")),
            kv("process.runtime.version", s("3.12.7")),
            kv("process.pid", int(7 + 10 * (service as u64) + host as u64)),
            kv("telemetry.sdk.name", s("opentelemetry")),
            kv("telemetry.sdk.language", s("python")),
            kv("telemetry.sdk.version", s("1.27.0")),
        ],
        ..Default::default()
    }
}

/// One export request: a `ResourceSpans` per service instance, a `ScopeSpans` per
/// instrumentation scope, spans in the order they ended (as SDK batch processors send them).
fn request(spans: Vec<GenSpan>) -> ExportTraceServiceRequest {
    let mut grouped: BTreeMap<(usize, usize), BTreeMap<usize, Vec<Span>>> = BTreeMap::new();
    for g in spans {
        grouped
            .entry((g.service, g.host))
            .or_default()
            .entry(g.scope)
            .or_default()
            .push(g.span);
    }
    let resource_spans = grouped
        .into_iter()
        .map(|((service, host), scopes)| ResourceSpans {
            resource: Some(resource(service, host)),
            scope_spans: scopes
                .into_iter()
                .map(|(scope, mut spans)| {
                    spans.sort_by_key(|s| s.end_time_unix_nano);
                    let (name, version, schema_url) = SCOPES[scope];
                    ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: name.into(),
                            version: version.into(),
                            ..Default::default()
                        }),
                        spans,
                        schema_url: schema_url.into(),
                    }
                })
                .collect(),
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// 2026-03-02T00:00:00Z
    const END: u64 = 1_772_409_600_000_000_000;

    fn config(traces: usize, days: u32, seed: u64) -> CorpusConfig {
        CorpusConfig {
            traces,
            days,
            seed,
            end_unix_ns: END,
            context_bytes: CONTEXT_BYTES,
        }
    }

    fn spans(c: &Corpus) -> impl Iterator<Item = &Span> {
        c.requests
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn text<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
        match attr(span, key) {
            Some(Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn context_bytes_ranges_parse_and_bad_ones_say_why() {
        assert_eq!(parse_context_bytes("150-450"), Ok((150, 450)));
        assert_eq!(parse_context_bytes(" 0 - 0 "), Ok((0, 0)));
        let err = parse_context_bytes("450-150").err().unwrap_or_default();
        assert!(err.contains("MIN is above MAX"), "{err}");
        for bad in ["", "300", "a-b", "-5", "1000-"] {
            let err = parse_context_bytes(bad).err().unwrap_or_default();
            assert!(err.contains("give MIN-MAX"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn smaller_contexts_make_smaller_llm_spans() {
        let bytes = |context_bytes| {
            let c = generate(&CorpusConfig {
                context_bytes,
                ..config(200, 1, 3)
            });
            let total: usize = c.requests.iter().map(prost::Message::encoded_len).sum();
            total as f64 / c.spans as f64
        };
        let (default, small) = (bytes(CONTEXT_BYTES), bytes((150, 450)));
        assert!(
            small < 0.75 * default,
            "{small:.0} B/span with small contexts against {default:.0}"
        );
    }

    #[test]
    fn same_seed_gives_the_same_corpus_with_the_requested_traces() {
        let a = generate(&config(300, 5, 7));
        assert_eq!(a, generate(&config(300, 5, 7)));
        assert_ne!(a, generate(&config(300, 5, 8)));

        let ids = a.span_ids();
        assert_eq!(ids.len(), a.spans);
        let traces: BTreeSet<&str> = ids.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(traces.len(), 300);
        let unique: BTreeSet<&(String, String)> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "span ids repeat");
        assert!(
            ids.windows(2).all(|w| w[0] <= w[1]),
            "span_ids is not sorted"
        );
        assert!(ids.iter().all(|(t, s)| t.len() == 32 && s.len() == 16));
        assert!(generate(&config(0, 1, 7)).requests.is_empty());
    }

    #[test]
    fn traces_have_3_to_12_spans_under_one_server_root() {
        let c = generate(&config(400, 3, 1));
        let mut by_trace: BTreeMap<&[u8], Vec<&Span>> = BTreeMap::new();
        for s in spans(&c) {
            by_trace.entry(&s.trace_id).or_default().push(s);
        }
        for (trace, spans) in &by_trace {
            assert!(
                (3..=12).contains(&spans.len()),
                "{} has {} spans",
                hex::encode(trace),
                spans.len()
            );
            let roots: Vec<_> = spans
                .iter()
                .filter(|s| s.parent_span_id.is_empty())
                .collect();
            assert_eq!(roots.len(), 1);
            assert_eq!(roots[0].name, "POST /v1/chat");
            assert_eq!(roots[0].kind, SpanKind::Server as i32);
            let ids: BTreeSet<&[u8]> = spans.iter().map(|s| &s.span_id[..]).collect();
            for s in spans {
                assert!(s.parent_span_id.is_empty() || ids.contains(&s.parent_span_id[..]));
                assert!(s.start_time_unix_nano >= roots[0].start_time_unix_nano);
                assert!(s.end_time_unix_nano <= roots[0].end_time_unix_nano);
                assert!(s.start_time_unix_nano <= s.end_time_unix_nano);
            }
        }
    }

    #[test]
    fn requests_hold_50_to_200_spans_of_several_services() {
        let c = generate(&config(500, 2, 3));
        let (last, rest) = c.requests.split_last().expect("requests");
        for r in rest {
            let n: usize = r
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum();
            assert!((50..=200).contains(&n), "request of {n} spans");
            let services: BTreeSet<String> = r
                .resource_spans
                .iter()
                .filter_map(|rs| rs.resource.as_ref())
                .flat_map(|res| &res.attributes)
                .filter(|kv| kv.key == "service.name")
                .filter_map(|kv| kv.value.clone().and_then(|v| v.value))
                .map(|v| format!("{v:?}"))
                .collect();
            assert_eq!(services.len(), 3, "services of a request: {services:?}");
        }
        assert!(!last.resource_spans.is_empty());
    }

    #[test]
    fn spans_are_valid_and_spread_over_the_days() {
        let c = generate(&config(600, 7, 11));
        let (mut dates, mut hours) = (BTreeSet::new(), BTreeSet::new());
        for s in spans(&c) {
            assert_eq!(schemas::convert::validate_span(s), Ok(()));
            assert!(s.start_time_unix_nano >= END - 7 * DAY && s.end_time_unix_nano < END);
            let t = chrono::DateTime::from_timestamp_nanos(s.start_time_unix_nano as i64);
            dates.insert(t.format("%Y-%m-%d").to_string());
            hours.insert(t.format("%Y-%m-%d %H").to_string());
        }
        assert_eq!(dates.len(), 7, "{dates:?}");
        assert!(hours.len() > 120, "only {} hours", hours.len());
    }

    #[test]
    fn corpus_covers_dialects_errors_links_and_every_value_type() {
        let c = generate(&config(400, 3, 5));
        let all: Vec<&Span> = spans(&c).collect();
        let count = |f: &dyn Fn(&Span) -> bool| all.iter().filter(|s| f(s)).count();

        let genai = count(&|s| text(s, "gen_ai.input.messages").is_some());
        let openllmetry = count(&|s| text(s, "gen_ai.prompt.0.content").is_some());
        let openinference = count(&|s| text(s, "openinference.span.kind") == Some("LLM"));
        assert!(
            genai > 50 && openllmetry > 30 && openinference > 30,
            "{genai} {openllmetry} {openinference}"
        );
        for s in all
            .iter()
            .filter(|s| text(s, "gen_ai.input.messages").is_some())
        {
            let messages = text(s, "gen_ai.input.messages").unwrap_or_default();
            assert!(
                (1024..=5120).contains(&messages.len()),
                "input messages of {} bytes",
                messages.len()
            );
            let parsed: serde_json::Value =
                serde_json::from_str(messages).expect("messages are JSON");
            assert!(parsed.is_array());
        }
        assert!(count(&|s| text(s, "retrieval.documents.0.document.content").is_some()) == 400);
        assert!(count(&|s| text(s, "gen_ai.operation.name") == Some("execute_tool")) > 50);
        assert!(count(&|s| text(s, "session.id").is_some()) > 100);
        assert!(count(&|s| text(s, "user.id").is_some()) > 50);
        assert!(count(&|s| text(s, "enduser.id").is_some()) > 10);

        let errors: Vec<&&Span> = all
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .is_some_and(|st| st.code == StatusCode::Error as i32)
            })
            .collect();
        assert!(errors.len() > 20, "{} errors", errors.len());
        for s in errors.iter().filter(|s| s.kind == SpanKind::Client as i32) {
            let e = s
                .events
                .iter()
                .find(|e| e.name == "exception")
                .expect("exception event");
            let keys: Vec<&str> = e.attributes.iter().map(|kv| kv.key.as_str()).collect();
            assert_eq!(
                &keys[..3],
                [
                    "exception.type",
                    "exception.message",
                    "exception.stacktrace"
                ]
            );
        }

        let roots: BTreeSet<(&[u8], &[u8])> = all
            .iter()
            .filter(|s| s.parent_span_id.is_empty())
            .map(|s| (&s.trace_id[..], &s.span_id[..]))
            .collect();
        let links: Vec<_> = all.iter().flat_map(|s| &s.links).collect();
        assert!(links.len() > 10, "{} links", links.len());
        assert!(
            links
                .iter()
                .all(|l| roots.contains(&(&l.trace_id[..], &l.span_id[..])))
        );

        let mut types = BTreeSet::new();
        for kv in all.iter().flat_map(|s| &s.attributes) {
            types.insert(match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                None => "empty",
                Some(Value::StringValue(_)) => "string",
                Some(Value::BoolValue(_)) => "bool",
                Some(Value::IntValue(_)) => "int",
                Some(Value::DoubleValue(_)) => "double",
                Some(Value::ArrayValue(_)) => "array",
                Some(Value::KvlistValue(_)) => "kvlist",
                Some(Value::BytesValue(_)) => "bytes",
                Some(Value::StringValueStrindex(_)) => "strindex",
            });
        }
        let expected = [
            "array", "bool", "bytes", "double", "empty", "int", "kvlist", "string",
        ];
        assert_eq!(types, BTreeSet::from(expected));
        assert!(
            all.iter()
                .any(|s| text(s, "app.question").is_some_and(|q| q.contains("東京")))
        );
    }

    #[test]
    fn json_has_hex_ids_and_parses_back_to_the_same_request() {
        let c = generate(&config(60, 1, 9));
        let first = &c.requests[0];
        let span = &first.resource_spans[0].scope_spans[0].spans[0];
        let one = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span.clone()],
                    ..first.resource_spans[0].scope_spans[0].clone()
                }],
                ..first.resource_spans[0].clone()
            }],
        };
        let json = to_json(&one);
        let trace_id = hex::encode(&span.trace_id);
        assert_eq!(trace_id.len(), 32);
        assert!(
            trace_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert!(
            json.contains(&format!("\"traceId\":\"{trace_id}\"")),
            "{json}"
        );
        assert!(json.contains(&format!("\"spanId\":\"{}\"", hex::encode(&span.span_id))));
        assert!(json.contains(&format!("\"kind\":{}", span.kind)));
        assert!(json.contains(&format!(
            "\"startTimeUnixNano\":\"{}\"",
            span.start_time_unix_nano
        )));
        assert!(json.starts_with("{\"resourceSpans\":["));
        let back: ExportTraceServiceRequest = serde_json::from_str(&json).expect("parse OTLP/JSON");
        assert_eq!(back, one);

        for r in &c.requests {
            let back: ExportTraceServiceRequest =
                serde_json::from_str(&to_json(r)).expect("parse OTLP/JSON");
            assert_eq!(&back, r);
        }
    }
}
