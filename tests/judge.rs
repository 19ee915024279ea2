//! A fake LLM judge: a real HTTP server on 127.0.0.1 that speaks enough of the OpenAI Chat
//! Completions API and the Anthropic Messages API for a client written against the official
//! APIs to work against it. It answers deterministic verdicts and injects faults on demand, for
//! the `eval-runner` tests and benchmarks (the `judge-server` binary wraps it).
//!
//! Endpoints: `POST /v1/chat/completions` and `POST /chat/completions` (OpenAI; base URL
//! `http://ADDR/v1`), `POST /v1/messages` (Anthropic; base URL `http://ADDR`), `GET /healthz`.
//! Requests are validated like the real APIs and rejected with the provider's error shape.
//!
//! The *prompt text* of a request is the system prompt and every message text (string contents
//! and `text` parts or blocks), joined by newlines. It decides the answer:
//!
//! - Verdict: the first of [`JudgeConfig::verdicts`] whose needle occurs in the prompt text,
//!   else [`JudgeConfig::default_verdict`]. Answered as the JSON text
//!   `{"score":4,"label":"ok","explanation":"fine"}` in the message content, or, for an Anthropic
//!   request that forces a tool (`tool_choice` `{"type":"tool","name":N}`, or `{"type":"any"}`:
//!   the first tool), as that object in a `tool_use` block. Whole scores print as integers.
//! - Fault: the first that applies of (1) the runtime queue ([`JudgeServer::push_faults`]),
//!   (2) [`JudgeConfig::faults`] (first needle that occurs and still has times left; counted per
//!   needle), (3) a `[[fault=...]]` marker (counted per distinct prompt text). Only requests that
//!   pass authentication and validation take faults.
//!
//! Markers planted in the prompt text (the first well-formed one of each kind counts):
//!
//! ```text
//! [[score=X]]         X a finite number: replaces the score of the chosen verdict
//! [[fault=KIND]]      the fault on every request with this prompt text
//! [[fault=KIND xN]]   the fault on the first N requests with this prompt text, then answers
//!                     (the space before `x` is optional: `[[fault=429x2]]`)
//!
//! KIND := CODE             HTTP status 400-599 with the provider's error body; 429 carries
//!                          Retry-After: 0, as the real APIs send one
//!       | CODE:SECS        same, with Retry-After: SECS      e.g. [[fault=503:2x1]]
//!       | hang             never answers (until the client gives up)
//!       | malformed        200 with a truncated, non-JSON body
//!       | prose            the verdict JSON in a ```json fence inside prose
//!       | score-as-string  "score": "4"
//!       | out-of-range     "score": 42
//!       | not-json         message content "I think it is good."
//!       | latency-MSms     MS extra milliseconds, then the normal answer   e.g. [[fault=latency-300ms]]
//! ```
//!
//! `prose` and `not-json` answer a forced-tool Anthropic request with a text block instead of
//! `tool_use` (stop reason `end_turn`), as a model that ignored the tool would.
//!
//! [`JudgeConfig::latency`] delays every answer (not a hang) with a timer, so concurrent requests
//! each take about that long instead of queueing behind each other. The latency counts from the
//! request's arrival and ends within tens of microseconds of its deadline ([`Timer`]), so that
//! benchmarks against it measure the client, not the judge. Token counts in `usage` are
//! `ceil(chars / 4)` of the prompt text and of the answer content.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde::Serialize;
use serde_json::Value;

/// What the judge answers about one item.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub score: f64,
    /// Omitted from the answer when `None`.
    pub label: Option<String>,
    pub explanation: String,
}

impl Verdict {
    pub fn new(score: f64, label: Option<&str>, explanation: &str) -> Self {
        Self {
            score,
            label: label.map(str::to_owned),
            explanation: explanation.to_owned(),
        }
    }
}

/// A misbehaviour of the judge, in place of a normal answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// This HTTP status with the provider's error body, and `Retry-After` when given.
    Status {
        code: u16,
        retry_after_secs: Option<u64>,
    },
    /// Never answers; the connection stays open until the client gives up.
    Hang,
    /// 200 with a body that is not JSON (a truncated answer).
    Malformed,
    /// The verdict JSON inside a ```json fence inside prose, in the message content.
    Prose,
    /// `"score": "4"`.
    ScoreAsString,
    /// `"score": 42`.
    OutOfRange,
    /// A valid answer whose message content is "I think it is good.".
    NotJson,
    /// This much extra delay, then the normal answer.
    Latency(Duration),
}

#[derive(Clone, Debug)]
pub struct JudgeConfig {
    /// Delay before every answer.
    pub latency: Duration,
    /// When set, OpenAI requests need `Authorization: Bearer KEY`, Anthropic requests
    /// `x-api-key: KEY` (or the bearer header, as recent SDKs send) and an
    /// `anthropic-version` header.
    pub api_key: Option<String>,
    /// (needle, verdict): the first needle found in the prompt text decides.
    pub verdicts: Vec<(String, Verdict)>,
    pub default_verdict: Verdict,
    /// (needle, fault, times): the first `times` requests whose prompt text contains the needle
    /// get the fault; `u32::MAX` means always.
    pub faults: Vec<(String, Fault, u32)>,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            api_key: None,
            verdicts: Vec::new(),
            default_verdict: Verdict::new(4.0, None, "fine"),
            faults: Vec::new(),
        }
    }
}

/// One request the server received (not `/healthz`).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub path: String,
    /// Lower-case names; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    /// `Null` when the body is not JSON.
    pub body: Value,
    /// Empty when the request was rejected before its messages were read.
    pub prompt_text: String,
    /// The status answered, or about to be answered after the delay; 0 for a hang.
    pub answered_status: u16,
}

/// Whether the server keeps every request for [`JudgeServer::requests`] or only counts them
/// (long benchmark runs, where nobody reads them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recording {
    Requests,
    CountOnly,
}

/// The running server, on its own thread and tokio runtime so that plain `#[test]`s can use it.
/// Dropping it stops the server (hung requests included) and joins the thread.
pub struct JudgeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl JudgeServer {
    /// Starts a server on a free port of 127.0.0.1 that records every request.
    pub fn start(config: JudgeConfig) -> std::io::Result<Self> {
        Self::start_on(
            config,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Recording::Requests,
        )
    }

    /// Starts a server on `addr`. Returns once the socket is bound: requests may be sent
    /// right away.
    pub fn start_on(
        config: JudgeConfig,
        addr: SocketAddr,
        recording: Recording,
    ) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        // Two workers: the machines running the tests and benchmarks have two cores.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("judge-server")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::new(config, recording)?);
        let app = router(Arc::clone(&shared));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("judge-server".into())
            .spawn(move || {
                let served = runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?.tap_io(|tcp| {
                        // Small answers; without it Nagle and delayed ACKs add ~40 ms.
                        let _ = tcp.set_nodelay(true);
                    });
                    tokio::select! {
                        served = axum::serve(listener, app).into_future() => served,
                        _ = stopped => Ok(()),
                    }
                });
                // Dropping the runtime drops the connection tasks, hung ones included.
                drop(runtime);
                served
            })?;
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL for OpenAI clients: `http://ADDR/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL for Anthropic clients: `http://ADDR`.
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received, in arrival order (empty with [`Recording::CountOnly`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.book().requests.clone()
    }

    /// How many requests were received (not counting `/healthz`).
    pub fn request_count(&self) -> usize {
        self.shared.book().received
    }

    /// Queues faults for the next requests, one each, in arrival order.
    pub fn push_faults(&self, faults: Vec<Fault>) {
        self.shared.book().queue.extend(faults);
    }
}

impl Drop for JudgeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provider {
    OpenAi,
    Anthropic,
}

struct Shared {
    config: JudgeConfig,
    recording: Recording,
    next_id: AtomicU64,
    book: Mutex<Book>,
    timer: Timer,
}

/// Wakes tasks at their deadlines from a thread's timed wait, whose precision is tens of
/// microseconds. tokio's timer wheel rounds each sleep up to whole milliseconds and ended a
/// 50 ms sleep 1.5-2 ms late on average, which a benchmark of the client then counted as the
/// client's.
struct Timer {
    requests: mpsc::Sender<(Instant, tokio::sync::oneshot::Sender<()>)>,
}

impl Timer {
    /// The thread ends when the server's state is dropped.
    fn start() -> std::io::Result<Self> {
        let (requests, incoming) = mpsc::channel();
        std::thread::Builder::new()
            .name("judge-timer".into())
            .spawn(move || Self::run(&incoming))?;
        Ok(Self { requests })
    }

    /// Until every sender is dropped: fires each deadline, earliest first.
    fn run(incoming: &mpsc::Receiver<(Instant, tokio::sync::oneshot::Sender<()>)>) {
        let mut due: BTreeMap<(Instant, u64), tokio::sync::oneshot::Sender<()>> = BTreeMap::new();
        let mut seq = 0u64;
        loop {
            let now = Instant::now();
            while let Some(entry) = due.first_entry() {
                let &(at, _) = entry.key();
                if at > now {
                    break;
                }
                // The waiter may have gone (its connection closed): nothing to wake.
                let _ = entry.remove().send(());
            }
            let next = match due.first_key_value() {
                Some((&(at, _), _)) => incoming.recv_timeout(at - now),
                None => incoming
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            match next {
                Ok((at, wake)) => {
                    seq += 1;
                    due.insert((at, seq), wake);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Returns at `at` (or at once if the timer thread has stopped).
    async fn sleep_until(&self, at: Instant) {
        let (wake, woken) = tokio::sync::oneshot::channel();
        if self.requests.send((at, wake)).is_ok() {
            let _ = woken.await;
        }
    }
}

/// The mutable state, under one lock so that arrival order is the same for the record and for
/// the fault counters.
struct Book {
    received: usize,
    requests: Vec<RecordedRequest>,
    queue: VecDeque<Fault>,
    /// Times used, per entry of `JudgeConfig::faults`.
    needle_used: Vec<u32>,
    /// Times used, per prompt text carrying a counted `[[fault=...]]` marker.
    marker_used: HashMap<String, u32>,
}

impl Book {
    fn record(&mut self, entry: Option<RecordedRequest>, status: u16) {
        self.received += 1;
        if let Some(mut entry) = entry {
            entry.answered_status = status;
            self.requests.push(entry);
        }
    }
}

impl Shared {
    fn new(config: JudgeConfig, recording: Recording) -> std::io::Result<Self> {
        let book = Book {
            received: 0,
            requests: Vec::new(),
            queue: VecDeque::new(),
            needle_used: vec![0; config.faults.len()],
            marker_used: HashMap::new(),
        };
        Ok(Self {
            config,
            recording,
            next_id: AtomicU64::new(1),
            book: Mutex::new(book),
            timer: Timer::start()?,
        })
    }

    /// Returns `delay` after `start`.
    async fn sleep(&self, start: Instant, delay: Duration) {
        if !delay.is_zero() {
            self.timer.sleep_until(start + delay).await;
        }
    }

    /// A panic while holding the lock leaves the book consistent enough for a test double.
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The record of a request, made before taking the lock; `None` when only counting.
    fn entry(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: Value,
        prompt_text: &str,
    ) -> Option<RecordedRequest> {
        if self.recording == Recording::CountOnly {
            return None;
        }
        let mut names = BTreeMap::new();
        for (name, value) in headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            names
                .entry(name.as_str().to_owned())
                .and_modify(|v: &mut String| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        Some(RecordedRequest {
            path: path.to_owned(),
            headers: names,
            body,
            prompt_text: prompt_text.to_owned(),
            answered_status: 0,
        })
    }

    /// The fault for this request, if any, counting it where it is counted.
    fn take_fault(
        &self,
        book: &mut Book,
        prompt: &str,
        marker: Option<(Fault, u32)>,
    ) -> Option<Fault> {
        if let Some(fault) = book.queue.pop_front() {
            return Some(fault);
        }
        for (i, (needle, fault, times)) in self.config.faults.iter().enumerate() {
            let used = &mut book.needle_used[i];
            if *used < *times && prompt.contains(needle.as_str()) {
                if *times != u32::MAX {
                    *used += 1;
                }
                return Some(fault.clone());
            }
        }
        let (fault, times) = marker?;
        if times == u32::MAX {
            return Some(fault);
        }
        let used = book.marker_used.entry(prompt.to_owned()).or_insert(0);
        (*used < times).then(|| {
            *used += 1;
            fault
        })
    }

    fn verdict(&self, prompt: &str) -> &Verdict {
        self.config
            .verdicts
            .iter()
            .find(|(needle, _)| prompt.contains(needle.as_str()))
            .map_or(&self.config.default_verdict, |(_, verdict)| verdict)
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai))
        .route("/chat/completions", post(openai))
        .route("/v1/messages", post(anthropic))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        // The real APIs take requests of tens of MB (images, long documents).
        .layer(DefaultBodyLimit::max(32 << 20))
        .with_state(shared)
}

async fn openai(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&shared, Provider::OpenAi, uri.path(), &headers, &body).await
}

async fn anthropic(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&shared, Provider::Anthropic, uri.path(), &headers, &body).await
}

async fn not_found(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let entry = shared.entry(uri.path(), &headers, body, "");
    shared.book().record(entry, 404);
    let message = format!("Invalid URL ({method} {})", uri.path());
    error_response(Provider::OpenAi, &ApiError::new(404, message))
}

/// A judge request that passed validation.
struct Request {
    model: String,
    prompt_text: String,
    /// Anthropic: the tool the answer must use.
    tool: Option<String>,
}

struct ApiError {
    status: u16,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after_secs: None,
        }
    }
}

enum Plan {
    Reject(ApiError),
    Hang,
    Answer(Request, Option<Fault>),
}

async fn handle(
    shared: &Shared,
    provider: Provider,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    // The latency counts from the request's arrival, so the judge's own parsing and booking
    // are inside it, as a real API's are inside its response time.
    let arrived = Instant::now();
    let (request, body) = match serde_json::from_slice::<Value>(body) {
        Ok(body) => {
            let request =
                authorize(&shared.config, provider, headers).and_then(|()| match provider {
                    Provider::OpenAi => openai_request(&body),
                    Provider::Anthropic => anthropic_request(&body),
                });
            (request, body)
        }
        Err(e) => {
            let error = ApiError::new(400, format!("the request body is not valid JSON: {e}"));
            (Err(error), Value::Null)
        }
    };
    let plan = match request {
        Err(error) => {
            let entry = shared.entry(path, headers, body, "");
            shared.book().record(entry, error.status);
            Plan::Reject(error)
        }
        Ok(request) => {
            let marker = fault_marker(&request.prompt_text);
            let entry = shared.entry(path, headers, body, &request.prompt_text);
            let mut book = shared.book();
            let fault = shared.take_fault(&mut book, &request.prompt_text, marker);
            let status = match &fault {
                Some(Fault::Hang) => 0,
                Some(Fault::Status { code, .. }) => *code,
                _ => 200,
            };
            book.record(entry, status);
            drop(book);
            match fault {
                Some(Fault::Hang) => Plan::Hang,
                Some(Fault::Status {
                    code,
                    retry_after_secs,
                }) => Plan::Reject(ApiError {
                    status: code,
                    message: injected_message(code),
                    retry_after_secs,
                }),
                fault => Plan::Answer(request, fault),
            }
        }
    };
    let latency = shared.config.latency;
    match plan {
        Plan::Hang => std::future::pending().await,
        Plan::Reject(error) => {
            shared.sleep(arrived, latency).await;
            error_response(provider, &error)
        }
        Plan::Answer(request, fault) => {
            let extra = match fault {
                Some(Fault::Latency(extra)) => extra,
                _ => Duration::ZERO,
            };
            shared.sleep(arrived, latency + extra).await;
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            let verdict = shared.verdict(&request.prompt_text);
            answer(provider, id, &request, verdict, fault.as_ref())
        }
    }
}

fn injected_message(code: u16) -> String {
    match code {
        429 => "Rate limit reached for requests (fault injected by the fake judge)".into(),
        500..=599 => format!("The server had an error ({code}, fault injected by the fake judge)"),
        _ => format!("Request failed ({code}, fault injected by the fake judge)"),
    }
}

fn authorize(
    config: &JudgeConfig,
    provider: Provider,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(key) = &config.api_key else {
        return Ok(());
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer = header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|v| v == key);
    let ok = match provider {
        Provider::OpenAi => bearer,
        Provider::Anthropic => {
            if header("anthropic-version").is_none() {
                return Err(ApiError::new(401, "anthropic-version: header is required"));
            }
            // Recent official Anthropic SDKs send the key as a bearer token.
            bearer || header("x-api-key").is_some_and(|v| v == key)
        }
    };
    match (ok, provider) {
        (true, _) => Ok(()),
        (false, Provider::OpenAi) => Err(ApiError::new(401, "Incorrect API key provided")),
        (false, Provider::Anthropic) => Err(ApiError::new(401, "invalid x-api-key")),
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(400, message)
}

fn push_line(text: &mut String, line: &str) {
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(line);
}

/// Validates a Chat Completions request body and reads its prompt text.
fn openai_request(body: &Value) -> Result<Request, ApiError> {
    let body = body
        .as_object()
        .ok_or_else(|| invalid("the request body must be a JSON object"))?;
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("you must provide a model parameter"))?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("'messages' is a required property (an array)"))?;
    if messages.is_empty() {
        return Err(invalid(
            "'messages': expected an array with minimum length 1",
        ));
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(invalid("'stream': the fake judge does not stream"));
    }
    if let Some(format) = body.get("response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("text" | "json_object") => {}
            Some("json_schema") => {
                let named = format
                    .get("json_schema")
                    .and_then(|s| s.get("name"))
                    .is_some_and(Value::is_string);
                if !named {
                    return Err(invalid("'response_format.json_schema.name' is required"));
                }
            }
            _ => {
                return Err(invalid(
                    "'response_format.type' must be one of 'text', 'json_object', 'json_schema'",
                ));
            }
        }
    }
    let mut prompt_text = String::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        let Some(role @ ("system" | "developer" | "user" | "assistant" | "tool" | "function")) =
            role
        else {
            return Err(invalid(format!(
                "'messages.{i}.role' must be one of 'system', 'developer', 'user', 'assistant', 'tool'"
            )));
        };
        match message.get("content") {
            Some(Value::String(text)) => push_line(&mut prompt_text, text),
            Some(Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    match part.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            let text =
                                part.get("text").and_then(Value::as_str).ok_or_else(|| {
                                    invalid(format!(
                                        "'messages.{i}.content.{j}.text' must be a string"
                                    ))
                                })?;
                            push_line(&mut prompt_text, text);
                        }
                        Some(_) => {}
                        None => {
                            return Err(invalid(format!(
                                "'messages.{i}.content.{j}.type' is required"
                            )));
                        }
                    }
                }
            }
            // An assistant turn that only calls tools has no content.
            None | Some(Value::Null) if role == "assistant" => {}
            _ => {
                return Err(invalid(format!(
                    "'messages.{i}.content' must be a string or an array of content parts"
                )));
            }
        }
    }
    Ok(Request {
        model: model.to_owned(),
        prompt_text,
        tool: None,
    })
}

/// Reads the texts of an Anthropic content value (a string or an array of blocks) into `out`.
fn anthropic_blocks(content: &Value, at: &str, out: &mut String) -> Result<(), ApiError> {
    match content {
        Value::String(text) => push_line(out, text),
        Value::Array(blocks) => {
            for (j, block) in blocks.iter().enumerate() {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = block
                            .get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid(format!("{at}.{j}.text: Field required")))?;
                        push_line(out, text);
                    }
                    Some(_) => {}
                    None => return Err(invalid(format!("{at}.{j}.type: Field required"))),
                }
            }
        }
        _ => return Err(invalid(format!("{at}: Input should be a string or a list"))),
    }
    Ok(())
}

/// Validates a Messages request body and reads its prompt text and forced tool.
fn anthropic_request(body: &Value) -> Result<Request, ApiError> {
    let body = body
        .as_object()
        .ok_or_else(|| invalid("the request body must be a JSON object"))?;
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("model: Field required"))?;
    if body.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Err(invalid("max_tokens: Field required (an integer)"));
    }
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages: Field required"))?;
    if messages.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(invalid("stream: the fake judge does not stream"));
    }
    let mut prompt_text = String::new();
    if let Some(system) = body.get("system") {
        anthropic_blocks(system, "system", &mut prompt_text)?;
    }
    for (i, message) in messages.iter().enumerate() {
        match message.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            _ => {
                return Err(invalid(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                )));
            }
        }
        let content = message
            .get("content")
            .ok_or_else(|| invalid(format!("messages.{i}.content: Field required")))?;
        anthropic_blocks(content, &format!("messages.{i}.content"), &mut prompt_text)?;
    }
    let mut tools = Vec::new();
    if let Some(list) = body.get("tools") {
        let list = list
            .as_array()
            .ok_or_else(|| invalid("tools: Input should be a valid list"))?;
        for (i, tool) in list.iter().enumerate() {
            let name = tool.get("name").and_then(Value::as_str);
            let schema = tool.get("input_schema").is_some_and(Value::is_object);
            match name {
                Some(name) if schema => tools.push(name),
                _ => {
                    return Err(invalid(format!(
                        "tools.{i}: 'name' and 'input_schema' (an object) are required"
                    )));
                }
            }
        }
    }
    let tool = match body.get("tool_choice") {
        None => None,
        Some(choice) => match choice.get("type").and_then(Value::as_str) {
            Some("auto" | "none") => None,
            Some("any") => Some(
                tools
                    .first()
                    .ok_or_else(|| invalid("tool_choice: 'any' needs at least one tool"))?
                    .to_string(),
            ),
            Some("tool") => {
                let name = choice
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("tool_choice.name: Field required"))?;
                if !tools.contains(&name) {
                    return Err(invalid(format!(
                        "tool_choice: tool '{name}' is not in 'tools'"
                    )));
                }
                Some(name.to_owned())
            }
            _ => {
                return Err(invalid(
                    "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'",
                ));
            }
        },
    };
    Ok(Request {
        model: model.to_owned(),
        prompt_text,
        tool,
    })
}

/// The first well-formed `[[key=VALUE]]` in `text`, parsed.
fn marker<T>(text: &str, key: &str, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
    let open = format!("[[{key}=");
    let mut rest = text;
    while let Some(at) = rest.find(&open) {
        rest = &rest[at + open.len()..];
        let end = rest.find("]]")?;
        if let Some(value) = parse(&rest[..end]) {
            return Some(value);
        }
    }
    None
}

fn score_marker(text: &str) -> Option<f64> {
    marker(text, "score", |v| {
        v.trim().parse::<f64>().ok().filter(|x| x.is_finite())
    })
}

/// The fault of the first `[[fault=KIND xN]]` marker, and N (`u32::MAX` without `xN`).
fn fault_marker(text: &str) -> Option<(Fault, u32)> {
    marker(text, "fault", parse_fault_spec)
}

fn parse_fault_spec(spec: &str) -> Option<(Fault, u32)> {
    let (kind, times) = match spec.rsplit_once('x') {
        Some((kind, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (kind, n.parse().ok()?)
        }
        _ => (spec, u32::MAX),
    };
    let kind = kind.trim().to_ascii_lowercase().replace('_', "-");
    let fault = match kind.as_str() {
        "hang" => Fault::Hang,
        "malformed" => Fault::Malformed,
        "prose" => Fault::Prose,
        "score-as-string" => Fault::ScoreAsString,
        "out-of-range" => Fault::OutOfRange,
        "not-json" => Fault::NotJson,
        _ => {
            if let Some(ms) = kind
                .strip_prefix("latency-")
                .and_then(|k| k.strip_suffix("ms"))
            {
                Fault::Latency(Duration::from_millis(ms.parse().ok()?))
            } else {
                let (code, retry) = match kind.split_once(':') {
                    Some((code, secs)) => (code, Some(secs.parse().ok()?)),
                    None => (kind.as_str(), None),
                };
                let code: u16 = code.parse().ok().filter(|c| (400..=599).contains(c))?;
                let retry_after_secs = retry.or((code == 429).then_some(0));
                Fault::Status {
                    code,
                    retry_after_secs,
                }
            }
        }
    };
    Some((fault, times))
}

#[derive(Serialize)]
#[serde(untagged)]
enum Score {
    Integer(i64),
    Number(f64),
    Text(String),
}

impl Score {
    /// Whole scores print as integers (`4`, not `4.0`), as a model writes them.
    fn of(score: f64) -> Self {
        if score.fract() == 0.0 && score.abs() < 1e15 {
            Score::Integer(score as i64)
        } else {
            Score::Number(score)
        }
    }
}

#[derive(Serialize)]
struct VerdictBody<'a> {
    score: Score,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    explanation: &'a str,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: OpenAiUsage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: ChatMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct OpenAiUsage {
    prompt_tokens: usize,
    completion_tokens: usize,
    total_tokens: usize,
}

#[derive(Serialize)]
struct Message<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [Block<'a>; 1],
    stop_reason: &'static str,
    stop_sequence: Option<()>,
    usage: AnthropicUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: String,
        name: &'a str,
        input: &'a VerdictBody<'a>,
    },
}

#[derive(Serialize)]
struct AnthropicUsage {
    input_tokens: usize,
    output_tokens: usize,
}

fn tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The 200 answer: the verdict, shaped as the fault (if any) says.
fn answer(
    provider: Provider,
    id: u64,
    request: &Request,
    verdict: &Verdict,
    fault: Option<&Fault>,
) -> Response {
    let score = score_marker(&request.prompt_text).unwrap_or(verdict.score);
    let body = VerdictBody {
        score: match fault {
            Some(Fault::ScoreAsString) => Score::Text(match Score::of(score) {
                Score::Integer(n) => n.to_string(),
                _ => score.to_string(),
            }),
            Some(Fault::OutOfRange) => Score::Integer(42),
            _ => Score::of(score),
        },
        label: verdict.label.as_deref(),
        explanation: &verdict.explanation,
    };
    // Serializing a struct of strings and numbers cannot fail.
    let json = serde_json::to_string(&body).unwrap_or_default();
    let text = match fault {
        Some(Fault::Prose) => {
            let pretty = serde_json::to_string_pretty(&body).unwrap_or_default();
            format!(
                "Sure! Here is my evaluation of the response.\n\n```json\n{pretty}\n```\n\n\
                 The answer addresses the question, so I scored it accordingly."
            )
        }
        Some(Fault::NotJson) => "I think it is good.".to_owned(),
        _ => json,
    };
    let prompt_tokens = tokens(&request.prompt_text);
    let completion_tokens = tokens(&text);
    let tool = match fault {
        Some(Fault::Prose | Fault::NotJson) => None,
        _ => request.tool.as_deref(),
    };
    let envelope = match provider {
        Provider::OpenAi => serde_json::to_string(&ChatCompletion {
            id: format!("chatcmpl-{id}"),
            object: "chat.completion",
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: &request.model,
            choices: [Choice {
                index: 0,
                message: ChatMessage {
                    role: "assistant",
                    content: &text,
                    refusal: None,
                },
                logprobs: None,
                finish_reason: "stop",
            }],
            usage: OpenAiUsage {
                prompt_tokens,
                completion_tokens,
                total_tokens: prompt_tokens + completion_tokens,
            },
        }),
        Provider::Anthropic => {
            let (content, stop_reason) = match tool {
                Some(name) => (
                    Block::ToolUse {
                        id: format!("toolu_{id}"),
                        name,
                        input: &body,
                    },
                    "tool_use",
                ),
                None => (Block::Text { text: &text }, "end_turn"),
            };
            serde_json::to_string(&Message {
                id: format!("msg_{id}"),
                kind: "message",
                role: "assistant",
                model: &request.model,
                content: [content],
                stop_reason,
                stop_sequence: None,
                usage: AnthropicUsage {
                    input_tokens: prompt_tokens,
                    output_tokens: completion_tokens,
                },
            })
        }
    };
    let mut envelope = envelope.unwrap_or_default();
    if fault == Some(&Fault::Malformed) {
        // Cut mid-object: never valid JSON, looks like a dropped connection or a broken proxy.
        let mut cut = envelope.len() / 2;
        while !envelope.is_char_boundary(cut) {
            cut -= 1;
        }
        envelope.truncate(cut);
    }
    json_response(StatusCode::OK, envelope)
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    error: OpenAiErrorBody<'a>,
}

#[derive(Serialize)]
struct OpenAiErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<()>,
    code: Option<()>,
}

#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicErrorBody<'a>,
}

#[derive(Serialize)]
struct AnthropicErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

fn error_response(provider: Provider, error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match provider {
        Provider::OpenAi => serde_json::to_string(&OpenAiError {
            error: OpenAiErrorBody {
                message: &error.message,
                kind: match error.status {
                    429 => "rate_limit_error",
                    500..=599 => "server_error",
                    _ => "invalid_request_error",
                },
                param: None,
                code: None,
            },
        }),
        Provider::Anthropic => serde_json::to_string(&AnthropicError {
            kind: "error",
            error: AnthropicErrorBody {
                kind: match error.status {
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    413 => "request_too_large",
                    429 => "rate_limit_error",
                    529 => "overloaded_error",
                    500..=599 => "api_error",
                    _ => "invalid_request_error",
                },
                message: &error.message,
            },
        }),
    };
    let mut response = json_response(status, body.unwrap_or_default());
    if let Some(secs) = error.retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_markers_parse_with_and_without_counts() {
        let status = |code, retry_after_secs| Fault::Status {
            code,
            retry_after_secs,
        };
        assert_eq!(parse_fault_spec("429x2"), Some((status(429, Some(0)), 2)));
        assert_eq!(parse_fault_spec("500x1"), Some((status(500, None), 1)));
        assert_eq!(
            parse_fault_spec("503:2 x3"),
            Some((status(503, Some(2)), 3))
        );
        assert_eq!(parse_fault_spec("hang x1"), Some((Fault::Hang, 1)));
        assert_eq!(
            parse_fault_spec("malformed"),
            Some((Fault::Malformed, u32::MAX))
        );
        assert_eq!(
            parse_fault_spec("score_as_string"),
            Some((Fault::ScoreAsString, u32::MAX))
        );
        assert_eq!(
            parse_fault_spec("latency-250msx1"),
            Some((Fault::Latency(Duration::from_millis(250)), 1))
        );
        assert_eq!(parse_fault_spec("teapot"), None);
        assert_eq!(parse_fault_spec("42"), None);
        assert_eq!(parse_fault_spec("200"), None);
    }

    #[test]
    fn first_well_formed_marker_wins() {
        let text = "a [[score=high]] b [[score=2.5]] c [[score=1]]";
        assert_eq!(score_marker(text), Some(2.5));
        assert_eq!(score_marker("[[score=NaN]]"), None);
        assert_eq!(score_marker("[[score=3"), None);
        assert_eq!(
            fault_marker("x [[fault=nope]] [[fault=prose x2]]"),
            Some((Fault::Prose, 2))
        );
    }

    #[test]
    fn openai_content_parts_and_anthropic_system_make_the_prompt_text() -> Result<(), String> {
        let openai = serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": "judge"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]},
        ]});
        let request = openai_request(&openai).map_err(|e| e.message)?;
        assert_eq!(request.prompt_text, "judge\na");
        let anthropic = serde_json::json!({"model": "m", "max_tokens": 10,
            "system": [{"type": "text", "text": "judge"}],
            "messages": [{"role": "user", "content": "b"}],
            "tools": [{"name": "verdict", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "verdict"}});
        let request = anthropic_request(&anthropic).map_err(|e| e.message)?;
        assert_eq!(request.prompt_text, "judge\nb");
        assert_eq!(request.tool.as_deref(), Some("verdict"));
        let no_max_tokens =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "b"}]});
        assert!(anthropic_request(&no_max_tokens).is_err());
        Ok(())
    }
}
