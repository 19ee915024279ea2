//! Traces with known answers for the curate rules: planted slow, costly, erroring and
//! quick-follow-up traces, their near misses (a boundary value, an 11 s follow-up, a follow-up
//! at exactly 10 s, overlapping traces of one session, a follow-up in another session, usage
//! repeated on nested spans), answers for non-default parameters (a percentile per root span
//! name, other USD and token thresholds, other follow-up gaps), two calls of one trace with
//! equal token counts, and plain traffic.

use std::collections::BTreeSet;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// "Now" of the planted store: 2026-03-10T12:00:00Z.
pub const NOW: &str = "2026-03-10T12:00:00Z";
const NOW_NS: u64 = 1_773_144_000_000_000_000;
const SEC: u64 = 1_000_000_000;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

fn s(key: &str, v: &str) -> KeyValue {
    kv(key, Value::StringValue(v.into()))
}

fn i(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}

/// One planted trace under construction.
pub struct TraceSpec {
    pub name: String,
    pub trace_id: [u8; 16],
    pub start_ns: u64,
    pub root_duration_ns: u64,
    pub spans: Vec<Span>,
}

/// The planted corpus and the traces each rule must select (by trace id hex).
pub struct Planted {
    pub request: ExportTraceServiceRequest,
    pub slow: BTreeSet<String>,
    /// `slow.percentile=50`, among the `GET /search` and `GET /report` traces.
    pub slow_p50: BTreeSet<String>,
    pub costly: BTreeSet<String>,
    /// `costly.min_usd=0.05`.
    pub costly_over_5_cents: BTreeSet<String>,
    /// `costly.min_tokens=40000`.
    pub costly_over_40k_tokens: BTreeSet<String>,
    pub errors: BTreeSet<String>,
    pub quick_followup: BTreeSet<String>,
    pub quick_followup_previous: BTreeSet<String>,
    /// `quick-followup.within=5s`.
    pub quick_followup_within_5s: BTreeSet<String>,
    /// `quick-followup.within=12s`.
    pub quick_followup_within_12s: BTreeSet<String>,
    pub negative_feedback: BTreeSet<String>,
    /// Traces scored below 0.5 on `faithfulness` by planted eval spans.
    pub low_faithfulness: BTreeSet<String>,
    /// Names by trace id, for messages.
    pub names: Vec<(String, String)>,
}

struct Builder {
    next: u8,
    traces: Vec<TraceSpec>,
}

impl Builder {
    /// A trace: SERVER root `POST /chat` of `dur_s` seconds starting `ago_s` before NOW, with one
    /// LLM call (gpt-4o-mini, 100/50 tokens) unless changed later.
    fn trace(&mut self, name: &str, ago_s: f64, dur_s: f64) -> usize {
        self.next += 1;
        let n = self.next;
        let mut trace_id = [0u8; 16];
        trace_id[0] = 0xA0;
        trace_id[15] = n;
        let start = NOW_NS - (ago_s * SEC as f64) as u64;
        let dur = (dur_s * SEC as f64) as u64;
        let root = Span {
            trace_id: trace_id.to_vec(),
            span_id: vec![n, 0, 0, 0, 0, 0, 0, 1],
            name: "POST /chat".into(),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: start + dur,
            attributes: vec![s("http.route", "/chat")],
            ..Default::default()
        };
        let llm = Span {
            trace_id: trace_id.to_vec(),
            span_id: vec![n, 0, 0, 0, 0, 0, 0, 2],
            parent_span_id: root.span_id.clone(),
            name: "chat gpt-4o-mini".into(),
            kind: 3,
            start_time_unix_nano: start + dur / 10,
            end_time_unix_nano: start + dur / 2,
            attributes: vec![
                s("gen_ai.operation.name", "chat"),
                s("gen_ai.provider.name", "openai"),
                s("gen_ai.request.model", "gpt-4o-mini"),
                i("gen_ai.usage.input_tokens", 100),
                i("gen_ai.usage.output_tokens", 50),
                s(
                    "gen_ai.input.messages",
                    &format!(
                        r#"[{{"role":"user","parts":[{{"type":"text","content":"question of {name}"}}]}}]"#
                    ),
                ),
                s(
                    "gen_ai.output.messages",
                    &format!(
                        r#"[{{"role":"assistant","parts":[{{"type":"text","content":"answer of {name}"}}]}}]"#
                    ),
                ),
            ],
            ..Default::default()
        };
        self.traces.push(TraceSpec {
            name: name.into(),
            trace_id,
            start_ns: start,
            root_duration_ns: dur,
            spans: vec![root, llm],
        });
        self.traces.len() - 1
    }

    fn llm(&mut self, t: usize) -> &mut Span {
        &mut self.traces[t].spans[1]
    }

    fn tokens(&mut self, t: usize, model: &str, input: i64, output: i64) {
        let span = self.llm(t);
        span.attributes
            .retain(|a| !a.key.starts_with("gen_ai.usage") && a.key != "gen_ai.request.model");
        span.attributes.push(s("gen_ai.request.model", model));
        span.attributes.push(i("gen_ai.usage.input_tokens", input));
        span.attributes
            .push(i("gen_ai.usage.output_tokens", output));
    }

    /// Adds a parentless span to trace `t`, starting `after_s` after its root, lasting `dur_s`.
    fn detached(&mut self, t: usize, after_s: f64, dur_s: f64) {
        let trace = &mut self.traces[t];
        let start = trace.start_ns + (after_s * SEC as f64) as u64;
        let mut span_id = trace.spans[0].span_id.clone();
        span_id[7] = 9;
        trace.spans.push(Span {
            trace_id: trace.trace_id.to_vec(),
            span_id,
            name: "background refresh".into(),
            kind: 1,
            start_time_unix_nano: start,
            end_time_unix_nano: start + (dur_s * SEC as f64) as u64,
            ..Default::default()
        });
    }

    fn id(&self, t: usize) -> String {
        hex::encode(self.traces[t].trace_id)
    }

    fn root_name(&mut self, t: usize, name: &str) {
        self.traces[t].spans[0].name = name.into();
    }
}

/// Name of the trace with two calls of equal token counts, one after the other.
pub const EQUAL_USAGE_CALLS: &str = "two calls of 12000/9000 tokens";

/// Builds the planted corpus.
pub fn planted() -> Planted {
    let mut b = Builder {
        next: 0,
        traces: Vec::new(),
    };
    let mut slow = BTreeSet::new();
    let mut costly = BTreeSet::new();
    let mut errors = BTreeSet::new();
    let mut qf = BTreeSet::new();
    let mut qf_prev = BTreeSet::new();

    // Plain traffic: fast, cheap, fine, no session.
    for k in 0..20 {
        b.trace(&format!("plain {k}"), 3600.0 + 60.0 * k as f64, 1.2);
    }
    // slow: over 5 s; near misses exactly 5 s (strict) and 4.9 s.
    let t = b.trace("slow 6s", 7000.0, 6.0);
    slow.insert(b.id(t));
    let t = b.trace("slow 30s", 7100.0, 30.0);
    slow.insert(b.id(t));
    // Its LLM call carries no context; a retrieval span of the trace has the documents.
    let mut retrieve = b.traces[t].spans[1].clone();
    retrieve.span_id[7] = 9;
    retrieve.name = "retrieve".into();
    retrieve.kind = 1;
    retrieve.attributes = vec![
        s("openinference.span.kind", "RETRIEVER"),
        s("retrieval.documents.0.document.id", "kb-1"),
        s(
            "retrieval.documents.0.document.content",
            "Snapshots are kept thirty days.",
        ),
        s("retrieval.documents.1.document.id", "kb-2"),
        s(
            "retrieval.documents.1.document.content",
            "Egress is billed per GiB.",
        ),
    ];
    b.traces[t].spans.push(retrieve);
    b.trace("exactly 5s", 7200.0, 5.0);
    b.trace("4.9s", 7300.0, 4.9);
    // Two parentless spans (a detached background span): the earliest one is the root.
    let t = b.trace("slow root, short detached span", 7400.0, 6.0);
    b.detached(t, 1.0, 1.0);
    slow.insert(b.id(t));
    let t = b.trace("short root, slow detached span", 7500.0, 1.0);
    b.detached(t, 0.5, 8.0);

    // slow.percentile=50 is taken per root span name: of the 100..900 ms `GET /search` traces
    // those over 500 ms (500 ms itself is the percentile: strict), of the 2.1..2.9 s
    // `GET /report` traces those over 2.5 s. One percentile over both names would be 1.5 s.
    let mut slow_p50 = BTreeSet::new();
    for k in 1..=9 {
        for (route, base) in [("GET /search", 0.0), ("GET /report", 2.0)] {
            let dur = base + 0.1 * k as f64;
            let t = b.trace(
                &format!("{route} {dur:.1}s"),
                17_000.0 + 20.0 * k as f64,
                dur,
            );
            b.root_name(t, route);
            if k > 5 {
                slow_p50.insert(b.id(t));
            }
        }
    }

    // costly (default 0.10 USD): gpt-4o at 2.50/10.00 per million.
    let t = b.trace("costly 0.12", 8000.0, 1.0);
    b.tokens(t, "gpt-4o", 40_000, 2_000); // 0.10 + 0.02
    costly.insert(b.id(t));
    let t = b.trace("exactly 0.10", 8100.0, 1.0);
    b.tokens(t, "gpt-4o-2024-08-06", 40_000, 0); // 0.10, not > 0.10
    let exactly_10_cents = b.id(t);
    // Usage repeated on three nested spans of one call: 0.05 once, 0.15 if counted thrice.
    let t = b.trace("nested usage 0.05", 8200.0, 1.0);
    b.tokens(t, "gpt-4o", 20_000, 0);
    let inner = b.traces[t].spans[1].clone();
    let mut middle = inner.clone();
    middle.span_id[7] = 3;
    middle.name = "openai.chat".into();
    let mut innermost = inner.clone();
    innermost.span_id[7] = 4;
    innermost.parent_span_id = middle.span_id.clone();
    innermost.name = "POST /v1/chat/completions".into();
    middle.parent_span_id = inner.span_id.clone();
    b.traces[t].spans.push(middle);
    b.traces[t].spans.push(innermost);
    // Two calls one after the other with equal counts (12000 + 9000 tokens of gpt-4o-mini,
    // 0.0072 USD each): two calls, 42000 tokens, not one call of 21000.
    let t = b.trace(EQUAL_USAGE_CALLS, 8300.0, 3.0);
    b.tokens(t, "gpt-4o-mini", 12_000, 9_000);
    let first = b.traces[t].spans[1].clone();
    let mut second = first.clone();
    second.span_id[7] = 3;
    let after = first.end_time_unix_nano + SEC / 10;
    second.end_time_unix_nano = after + (first.end_time_unix_nano - first.start_time_unix_nano);
    second.start_time_unix_nano = after;
    for a in &mut second.attributes {
        if let Some(Value::StringValue(v)) = a.value.as_mut().and_then(|v| v.value.as_mut()) {
            *v = v.replace("question of", "second question of");
            *v = v.replace("answer of", "second answer of");
        }
    }
    b.traces[t].spans.push(second);
    let equal_calls = b.id(t);
    // Thresholds other than the default: 0.05 USD keeps the nested 0.05 trace out (strict);
    // 40000 tokens keeps "exactly 0.10" (40000 tokens) out and takes the two equal calls.
    let costly_over_5_cents: BTreeSet<String> =
        costly.iter().cloned().chain([exactly_10_cents]).collect();
    let costly_over_40k_tokens: BTreeSet<String> =
        costly.iter().cloned().chain([equal_calls]).collect();

    // errors: a child span with status ERROR; a near miss with OK and an error-ish attribute.
    let t = b.trace("tool error", 9000.0, 1.0);
    b.llm(t).status = Some(Status {
        code: 2,
        message: "rate limited".into(),
    });
    errors.insert(b.id(t));
    let t = b.trace("status ok", 9100.0, 1.0);
    b.llm(t).status = Some(Status {
        code: 1,
        message: String::new(),
    });
    b.llm(t).attributes.push(s("error.type", "none"));

    // quick-followup (default within 10 s): sessions on the LLM span, not the root.
    let session =
        |b: &mut Builder, t: usize, key: &str, id: &str| b.llm(t).attributes.push(s(key, id));
    let a = b.trace("qf first", 10_000.0, 2.0);
    session(&mut b, a, "session.id", "s-1");
    let f = b.trace("qf retry 3s later", 10_000.0 - 2.0 - 3.0, 2.0);
    session(&mut b, f, "session.id", "s-1");
    qf.insert(b.id(f));
    qf_prev.extend([b.id(a), b.id(f)]);
    let qf_5s = BTreeSet::from([b.id(f)]);
    let mut qf_12s = BTreeSet::from([b.id(f)]);
    // Same via gen_ai.conversation.id, 9.9 s gap.
    let a = b.trace("conv first", 11_000.0, 2.0);
    session(&mut b, a, "gen_ai.conversation.id", "c-7");
    let f = b.trace("conv retry 9.9s later", 11_000.0 - 2.0 - 9.9, 2.0);
    session(&mut b, f, "gen_ai.conversation.id", "c-7");
    qf.insert(b.id(f));
    qf_prev.extend([b.id(a), b.id(f)]);
    qf_12s.insert(b.id(f));
    // Near misses: 11 s later in the same session; 2 s later in another session.
    let a = b.trace("late first", 12_000.0, 2.0);
    session(&mut b, a, "session.id", "s-2");
    let f = b.trace("late retry 11s later", 12_000.0 - 2.0 - 11.0, 2.0);
    session(&mut b, f, "session.id", "s-2");
    qf_12s.insert(b.id(f));
    // Exactly 10 s later (0 <= gap < 10 s: not selected), and a second trace of a session that
    // starts while the first is still running (a negative gap: not a follow-up).
    let a = b.trace("exact first", 12_500.0, 2.0);
    session(&mut b, a, "session.id", "s-5");
    let f = b.trace("retry exactly 10s later", 12_500.0 - 2.0 - 10.0, 2.0);
    session(&mut b, f, "session.id", "s-5");
    qf_12s.insert(b.id(f));
    let a = b.trace("overlapping first", 12_800.0, 4.0);
    session(&mut b, a, "session.id", "s-6");
    let f = b.trace(
        "overlapping second, 2s after the first started",
        12_800.0 - 2.0,
        4.0,
    );
    session(&mut b, f, "session.id", "s-6");
    let a = b.trace("other session first", 13_000.0, 2.0);
    session(&mut b, a, "session.id", "s-3");
    let f = b.trace("other session 2s later", 13_000.0 - 2.0 - 2.0, 2.0);
    session(&mut b, f, "session.id", "s-4");

    // negative-feedback: a score below 0 or a thumbs-down, on any span; near misses 0 and
    // a positive sentiment.
    let mut negative = BTreeSet::new();
    let t = b.trace("feedback -1", 14_000.0, 1.0);
    b.traces[t].spans[0]
        .attributes
        .push(i("feedback.score", -1));
    negative.insert(b.id(t));
    let t = b.trace("thumbs down", 14_100.0, 1.0);
    b.llm(t)
        .attributes
        .push(s("feedback.sentiment", "thumbs_down"));
    negative.insert(b.id(t));
    let t = b.trace("thumbs down event", 14_150.0, 1.0);
    let at = b.traces[t].spans[0].end_time_unix_nano;
    b.traces[t].spans[0]
        .events
        .push(opentelemetry_proto::tonic::trace::v1::span::Event {
            time_unix_nano: at,
            name: "feedback".into(),
            attributes: vec![i("feedback.score", -2)],
            dropped_attributes_count: 0,
        });
    negative.insert(b.id(t));
    let t = b.trace("feedback 0", 14_200.0, 1.0);
    b.traces[t].spans[0].attributes.push(i("feedback.score", 0));
    let t = b.trace("feedback positive", 14_300.0, 1.0);
    b.llm(t)
        .attributes
        .push(s("feedback.sentiment", "positive"));

    // low-score: eval score spans linking to judged traces (as eval-runner writes them).
    let mut low = BTreeSet::new();
    let mut evals = Vec::new();
    for (k, (metric, score)) in [
        ("faithfulness", 0.2),
        ("faithfulness", 0.49),
        ("faithfulness", 0.5),
        ("faithfulness", 0.9),
        ("helpfulness", 0.1),
    ]
    .into_iter()
    .enumerate()
    {
        let t = b.trace(
            &format!("judged {metric} {score}"),
            15_000.0 + 100.0 * k as f64,
            1.0,
        );
        if metric == "faithfulness" && score < 0.5 {
            low.insert(b.id(t));
        }
        let judged = &b.traces[t];
        let mut eval_trace = [0u8; 16];
        eval_trace[0] = 0xE0;
        eval_trace[15] = k as u8 + 1;
        // The helpfulness trace was judged once more: an earlier run scored it 0.7 (its span
        // id sorts after the later one's), and it was scored on relevance too. Its `scores` are
        // {helpfulness: 0.1, relevance: 0.8}.
        let mut scores = vec![(1, metric, score, 1_000)];
        if metric == "helpfulness" {
            scores.extend([(2, "relevance", 0.8, 1_000), (3, "helpfulness", 0.7, 2_000)]);
        }
        for (n, metric, score, ago_s) in scores {
            evals.push(Span {
                trace_id: eval_trace.to_vec(),
                span_id: vec![0xE0, k as u8 + 1, 0, 0, 0, 0, 0, n],
                name: format!("gen_ai.evaluation {metric}"),
                kind: 1,
                start_time_unix_nano: NOW_NS - ago_s * SEC,
                end_time_unix_nano: NOW_NS - ago_s * SEC + SEC / 10,
                attributes: vec![
                    s("gen_ai.evaluation.name", metric),
                    kv("gen_ai.evaluation.score.value", Value::DoubleValue(score)),
                    s("gen_ai.request.model", "judge-model"),
                ],
                links: vec![opentelemetry_proto::tonic::trace::v1::span::Link {
                    trace_id: judged.trace_id.to_vec(),
                    span_id: judged.spans[1].span_id.clone(),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
    }

    // Not settled: slow and erroring, but ended 60 s before NOW (settle 5 min): left out.
    let t = b.trace("unsettled slow", 70.0, 10.0);
    b.llm(t).status = Some(Status {
        code: 2,
        message: "boom".into(),
    });

    let names = b
        .traces
        .iter()
        .map(|t| (hex::encode(t.trace_id), t.name.clone()))
        .collect();
    let mut spans: Vec<Span> = b.traces.into_iter().flat_map(|t| t.spans).collect();
    spans.extend(evals);
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![s("service.name", "chat-api")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Planted {
        request,
        slow,
        slow_p50,
        costly,
        costly_over_5_cents,
        costly_over_40k_tokens,
        errors,
        quick_followup: qf,
        quick_followup_previous: qf_prev,
        quick_followup_within_5s: qf_5s,
        quick_followup_within_12s: qf_12s,
        negative_feedback: negative,
        low_faithfulness: low,
        names,
    }
}
