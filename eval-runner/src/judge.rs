//! The judge over HTTP: OpenAI-compatible Chat Completions or the Anthropic Messages API,
//! with structured output requested, retries with backoff and jitter on 429, 5xx, timeouts and
//! connection errors (honouring Retry-After), and requests-/tokens-per-minute limits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::cli::{Config, Provider};
use crate::metrics::{Metric, Verdict};

/// Longest wait honoured from a Retry-After header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// First backoff delay; doubles per attempt up to `MAX_BACKOFF`.
const BASE_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Name of the tool an Anthropic judge is made to call with its verdict.
const VERDICT_TOOL: &str = "record_verdict";

/// How one (item, metric) judgement ended.
#[derive(Debug, Clone)]
pub struct Judged {
    pub outcome: Result<Verdict, String>,
    /// The last answer, kept when it did not parse.
    pub raw_answer: Option<String>,
    pub attempts: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub started: std::time::SystemTime,
    pub latency: Duration,
}

/// Why a single request failed.
enum Failure {
    /// Retry after the delay (Retry-After when the server sent one).
    Retry(String, Option<Duration>),
    /// The answer came but holds no valid verdict: ask again, up to --parse-retries.
    Parse(String, String),
    /// Do not retry this item.
    Permanent(String),
    /// Stop the run: credentials refused.
    Auth(String),
}

pub struct Judge {
    http: reqwest::Client,
    provider: Provider,
    /// Parsed once: parsing it per request (IDNA included) showed in the profile.
    url: reqwest::Url,
    model: String,
    api_key: Option<crate::cli::Secret>,
    max_tokens: u32,
    temperature: f64,
    max_retries: u32,
    parse_retries: u32,
    /// Cleared when the server refuses `response_format` (some self-hosted servers do).
    structured: AtomicBool,
    limiter: Limiter,
}

impl Judge {
    pub fn new(cfg: &Config) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(cfg.concurrency)
            .user_agent(concat!(
                "trace2eval-eval-runner/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| e.to_string())?;
        let url = match cfg.provider {
            Provider::OpenAi => format!("{}/chat/completions", cfg.judge_url),
            // Both `https://api.anthropic.com` and `.../v1` (as OpenAI-style base URLs are
            // written) are accepted.
            Provider::Anthropic => format!(
                "{}/v1/messages",
                cfg.judge_url.strip_suffix("/v1").unwrap_or(&cfg.judge_url)
            ),
        };
        let url =
            reqwest::Url::parse(&url).map_err(|e| format!("judge URL {:?}: {e}", cfg.judge_url))?;
        Ok(Self {
            http,
            provider: cfg.provider,
            url,
            model: cfg.judge_model.clone(),
            api_key: cfg.api_key.clone(),
            max_tokens: cfg.max_tokens,
            temperature: cfg.temperature,
            max_retries: cfg.max_retries,
            parse_retries: cfg.parse_retries,
            structured: AtomicBool::new(true),
            limiter: Limiter::new(cfg.rpm, cfg.tpm),
        })
    }

    /// Judges one rendered prompt; `Err` only when the run must stop (credentials refused).
    pub async fn judge(&self, metric: &Metric, system: &str, user: &str) -> Result<Judged, String> {
        let started = std::time::SystemTime::now();
        let clock = Instant::now();
        let estimate = (system.len() + user.len()) as u64 / 4 + u64::from(self.max_tokens);
        let (mut attempts, mut retries, mut parse_failures) = (0u32, 0u32, 0u32);
        let (mut input_tokens, mut output_tokens) = (0u64, 0u64);
        let mut raw_answer = None;
        let outcome = loop {
            attempts += 1;
            self.limiter.acquire(estimate).await;
            let failure = match self.send(metric, system, user).await {
                Ok((answer, usage)) => {
                    input_tokens += usage.0;
                    output_tokens += usage.1;
                    match metric.parse_verdict(&answer) {
                        Ok(v) => break Ok(v),
                        Err(why) => Failure::Parse(why, answer_text(&answer)),
                    }
                }
                Err(f) => f,
            };
            match failure {
                Failure::Auth(why) => return Err(why),
                Failure::Permanent(why) => break Err(why),
                Failure::Parse(why, answer) => {
                    raw_answer = Some(answer);
                    parse_failures += 1;
                    if parse_failures > self.parse_retries {
                        break Err(format!("judge answer not usable: {why}"));
                    }
                }
                Failure::Retry(why, after) => {
                    retries += 1;
                    if retries > self.max_retries {
                        break Err(format!("gave up after {attempts} attempts: {why}"));
                    }
                    tokio::time::sleep(backoff(retries, after)).await;
                }
            }
        };
        let raw_answer = if outcome.is_err() { raw_answer } else { None };
        Ok(Judged {
            outcome,
            raw_answer,
            attempts,
            input_tokens,
            output_tokens,
            started,
            latency: clock.elapsed(),
        })
    }

    /// The request body, serialised from borrowed fields: the prompts are not copied into a
    /// `serde_json::Value` first (allocation was a quarter of the runner's CPU per item).
    fn body(&self, metric: &Metric, system: &str, user: &str) -> Result<String, Failure> {
        let text = match self.provider {
            Provider::OpenAi => serde_json::to_string(&OpenAiBody {
                model: &self.model,
                messages: [
                    ChatMessage {
                        role: "system",
                        content: system,
                    },
                    ChatMessage {
                        role: "user",
                        content: user,
                    },
                ],
                temperature: self.temperature,
                max_tokens: self.max_tokens,
                response_format: self.structured.load(Ordering::Relaxed).then(|| {
                    json!({
                        "type": "json_schema",
                        "json_schema": {"name": "verdict", "strict": true, "schema": metric.schema()},
                    })
                }),
            }),
            Provider::Anthropic => serde_json::to_string(&AnthropicBody {
                model: &self.model,
                max_tokens: self.max_tokens,
                temperature: self.temperature,
                system,
                messages: [ChatMessage {
                    role: "user",
                    content: user,
                }],
                tools: [json!({
                    "name": VERDICT_TOOL,
                    "description": "Record the verdict.",
                    "input_schema": metric.schema(),
                })],
                tool_choice: json!({"type": "tool", "name": VERDICT_TOOL}),
            }),
        };
        text.map_err(|e| Failure::Permanent(format!("building the request: {e}")))
    }

    /// One HTTP exchange: the answer (text or tool input) and (input, output) tokens.
    async fn send(
        &self,
        metric: &Metric,
        system: &str,
        user: &str,
    ) -> Result<(Value, (u64, u64)), Failure> {
        let body = self.body(metric, system, user)?;
        let mut req = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        req = match (self.provider, &self.api_key) {
            (Provider::OpenAi, Some(k)) => req.bearer_auth(k.expose()),
            (Provider::OpenAi, None) => req,
            (Provider::Anthropic, key) => {
                let req = req.header("anthropic-version", "2023-06-01");
                match key {
                    Some(k) => match reqwest::header::HeaderValue::from_str(k.expose()) {
                        Ok(mut v) => {
                            // Kept out of reqwest's and hyper's debug output.
                            v.set_sensitive(true);
                            req.header("x-api-key", v)
                        }
                        Err(_) => req.header("x-api-key", k.expose()),
                    },
                    None => req,
                }
            }
        };
        let resp = req.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                "timed out"
            } else {
                "request failed"
            };
            Failure::Retry(format!("{kind}: {}", error_chain(&e)), None)
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = resp.text().await.map_err(|e| {
            Failure::Retry(format!("reading the answer: {}", error_chain(&e)), None)
        })?;
        if !status.is_success() {
            let why = format!("HTTP {}: {}", status.as_u16(), excerpt(&text));
            return Err(match status.as_u16() {
                401 | 403 => Failure::Auth(why),
                408 | 409 | 429 | 500..=599 => Failure::Retry(why, retry_after),
                400 if self.provider == Provider::OpenAi
                    && self.structured.swap(false, Ordering::Relaxed) =>
                {
                    // Servers that do not know response_format refuse it with 400: ask again
                    // without it; the answer is then parsed from text.
                    Failure::Retry(why, Some(Duration::ZERO))
                }
                _ => Failure::Permanent(why),
            });
        }
        let envelope: Value = serde_json::from_str(&text).map_err(|e| {
            Failure::Parse(format!("the API answer is not JSON: {e}"), excerpt(&text))
        })?;
        let parsed = match self.provider {
            Provider::OpenAi => openai_answer(&envelope),
            Provider::Anthropic => anthropic_answer(&envelope),
        };
        parsed.ok_or_else(|| {
            Failure::Parse(
                "the API answer holds no message".into(),
                excerpt(&envelope.to_string()),
            )
        })
    }
}

fn openai_answer(v: &Value) -> Option<(Value, (u64, u64))> {
    let content = &v["choices"][0]["message"]["content"];
    let text = match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => return None,
    };
    let usage = (
        v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
    );
    Some((Value::String(text), usage))
}

fn anthropic_answer(v: &Value) -> Option<(Value, (u64, u64))> {
    let blocks = v["content"].as_array()?;
    let usage = (
        v["usage"]["input_tokens"].as_u64().unwrap_or(0),
        v["usage"]["output_tokens"].as_u64().unwrap_or(0),
    );
    if let Some(tool) = blocks.iter().find(|b| b["type"] == "tool_use") {
        return Some((tool["input"].clone(), usage));
    }
    let text: String = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
    Some((Value::String(text), usage))
}

fn answer_text(answer: &Value) -> String {
    match answer {
        Value::String(s) => excerpt(s),
        other => excerpt(&other.to_string()),
    }
}

/// At most 2000 characters of `text`, for error messages and results.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(2000) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Retry-After: seconds, or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// The delay before retry `n` (1-based): Retry-After when given (capped), else exponential
/// backoff with full jitter between half and all of the step.
fn backoff(n: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(after) = retry_after {
        return after.min(MAX_RETRY_AFTER);
    }
    let step = BASE_BACKOFF
        .saturating_mul(1 << (n - 1).min(16))
        .min(MAX_BACKOFF);
    step.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// Requests- and tokens-per-minute limits as token buckets refilled continuously, each holding
/// at most one second's worth (so a minute's budget is not spent in one burst). A request goes
/// when the request bucket holds one and the token bucket is not in debt; it then takes its
/// estimated tokens, possibly into debt, so large prompts slow later requests down. 0 means no
/// limit.
struct Limiter {
    rpm: f64,
    tpm: f64,
    /// (last refill, requests available, tokens available)
    state: Mutex<(Instant, f64, f64)>,
}

impl Limiter {
    fn new(rpm: u32, tpm: u32) -> Self {
        let (rpm, tpm) = (f64::from(rpm), f64::from(tpm));
        Self {
            rpm,
            tpm,
            state: Mutex::new((Instant::now(), (rpm / 60.0).max(1.0), (tpm / 60.0).max(1.0))),
        }
    }

    async fn acquire(&self, tokens: u64) {
        if self.rpm == 0.0 && self.tpm == 0.0 {
            return;
        }
        let mut state = self.state.lock().await;
        loop {
            let now = Instant::now();
            let dt = now.duration_since(state.0).as_secs_f64();
            state.0 = now;
            state.1 = (state.1 + dt * self.rpm / 60.0).min((self.rpm / 60.0).max(1.0));
            state.2 = (state.2 + dt * self.tpm / 60.0).min((self.tpm / 60.0).max(1.0));
            let wait_r = if self.rpm > 0.0 {
                (1.0 - state.1).max(0.0) * 60.0 / self.rpm
            } else {
                0.0
            };
            let wait_t = if self.tpm > 0.0 {
                (-state.2).max(0.0) * 60.0 / self.tpm
            } else {
                0.0
            };
            let wait = wait_r.max(wait_t);
            if wait <= 0.0 {
                state.1 -= 1.0;
                state.2 -= tokens as f64;
                return;
            }
            // Holding the lock while waiting keeps requests in arrival order.
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
}

/// An OpenAI-compatible chat completion request.
#[derive(Serialize)]
struct OpenAiBody<'a> {
    model: &'a str,
    messages: [ChatMessage<'a>; 2],
    temperature: f64,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
}

/// An Anthropic messages request with the verdict tool.
#[derive(Serialize)]
struct AnthropicBody<'a> {
    model: &'a str,
    max_tokens: u32,
    temperature: f64,
    system: &'a str,
    messages: [ChatMessage<'a>; 1],
    tools: [Value; 1],
    tool_choice: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_wins_over_backoff_and_backoff_grows_to_a_cap() {
        assert_eq!(
            backoff(3, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(backoff(1, Some(Duration::from_secs(9999))), MAX_RETRY_AFTER);
        let first = backoff(1, None);
        assert!(first >= BASE_BACKOFF / 2 && first <= BASE_BACKOFF);
        assert!(backoff(30, None) <= MAX_BACKOFF);
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn answers_are_found_in_both_api_shapes() {
        let o = json!({"choices":[{"message":{"content":"{\"score\":4}"}}],"usage":{"prompt_tokens":10,"completion_tokens":3}});
        assert_eq!(openai_answer(&o), Some((json!("{\"score\":4}"), (10, 3))));
        let a = json!({"content":[{"type":"tool_use","input":{"score":2}}],"usage":{"input_tokens":8,"output_tokens":5}});
        assert_eq!(anthropic_answer(&a), Some((json!({"score":2}), (8, 5))));
        assert_eq!(openai_answer(&json!({"choices": []})), None);
    }
}
