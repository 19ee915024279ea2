//! Metrics: a judge prompt template with variables, and how to read a score from the answer.
//!
//! Built-ins (helpfulness, faithfulness, relevance, correctness) ask for an integer from 1 to
//! 5. User metrics come from a TOML file:
//!
//! ```toml
//! [metrics.tone]
//! prompt = "Is the answer polite?\n\nQuestion:\n{{input}}\n\nAnswer:\n{{output}}"
//! labels = { polite = 1.0, neutral = 0.5, rude = 0.0 }   # or: scale = [1, 10]
//! requires = ["output"]                                   # optional: context, expected
//! ```
//!
//! Variables: `{{input}}` (messages as `role: content` lines), `{{output}}`, `{{context}}`
//! (numbered documents), `{{expected}}`, `{{metadata}}` (JSON). The score a result carries is
//! normalised to 0..1: `(raw - min) / (max - min)` on a scale, the mapped value of a label.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::dataset::{Format, Item};
use crate::error::EvalError;

/// How a judge answer becomes a score.
#[derive(Debug, Clone, PartialEq)]
pub enum Scale {
    /// A number between `min` and `max` inclusive.
    Range { min: f64, max: f64 },
    /// One of the labels, each mapped to a score.
    Labels(BTreeMap<String, f64>),
}

#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub prompt: String,
    pub scale: Scale,
    /// Item fields that must be present, else the pair is skipped: `context`, `expected`.
    pub requires: Vec<String>,
    /// SHA-256 of the template and the scale: part of the verdict cache key.
    pub template_hash: String,
}

const SYSTEM: &str = "You are a careful, impartial evaluator of answers given by an AI \
assistant. Judge only what is asked. Reply with a single JSON object and nothing else.";

fn builtin(name: &str) -> Option<(&'static str, &'static [&'static str])> {
    Some(match name {
        "helpfulness" => (
            "Rate how helpful the assistant's answer is to the user: does it address the request \
fully, correctly and clearly?\n\nConversation:\n{{input}}\n\nAnswer:\n{{output}}",
            &[],
        ),
        "faithfulness" => (
            "Rate how faithful the assistant's answer is to the retrieved context: is every claim \
in the answer supported by the context? Unsupported or contradicting claims lower the \
score.\n\nContext:\n{{context}}\n\nQuestion:\n{{input}}\n\nAnswer:\n{{output}}",
            &["context"],
        ),
        "relevance" => (
            "Rate how relevant the assistant's answer is to the question: does it stay on the \
question asked?\n\nQuestion:\n{{input}}\n\nAnswer:\n{{output}}",
            &[],
        ),
        "correctness" => (
            "Rate how correct the assistant's answer is compared with the expected answer: does it \
state the same facts and conclusions?\n\nQuestion:\n{{input}}\n\nExpected answer:\n{{expected}}\n\n\
Answer:\n{{output}}",
            &["expected"],
        ),
        _ => return None,
    })
}

pub const BUILTINS: &[&str] = &["helpfulness", "faithfulness", "relevance", "correctness"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsFile {
    metrics: BTreeMap<String, MetricDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricDef {
    prompt: String,
    scale: Option<[f64; 2]>,
    labels: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    requires: Vec<String>,
}

impl Metric {
    fn new(name: &str, prompt: &str, scale: Scale, requires: Vec<String>) -> Self {
        let hash = Sha256::digest(
            json!([SYSTEM, prompt, format!("{scale:?}"), requires])
                .to_string()
                .as_bytes(),
        );
        Self {
            name: name.to_string(),
            prompt: prompt.to_string(),
            scale,
            requires,
            template_hash: hex::encode(hash),
        }
    }

    /// The metrics named on the command line, from the built-ins and the metrics file.
    pub fn resolve(names: &[String], file: Option<&Path>) -> Result<Vec<Metric>, EvalError> {
        let mut user = BTreeMap::new();
        if let Some(path) = file {
            let bad =
                |m: String| EvalError::BadArgs(format!("metrics file {}: {m}", path.display()));
            let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
            let parsed: MetricsFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
            for (name, def) in parsed.metrics {
                let scale = match (def.scale, def.labels) {
                    (Some([min, max]), None) if min < max => Scale::Range { min, max },
                    (Some(s), None) => {
                        return Err(bad(format!("metric {name}: scale {s:?} needs min < max")));
                    }
                    (None, Some(l)) if !l.is_empty() => Scale::Labels(l),
                    _ => {
                        return Err(bad(format!(
                            "metric {name}: give either scale = [MIN, MAX] or labels = {{ LABEL = SCORE }}"
                        )));
                    }
                };
                if let Some(r) = def
                    .requires
                    .iter()
                    .find(|r| !["context", "expected", "output"].contains(&r.as_str()))
                {
                    return Err(bad(format!(
                        "metric {name}: requires {r:?}: expected context, expected or output"
                    )));
                }
                user.insert(
                    name.clone(),
                    Metric::new(&name, &def.prompt, scale, def.requires),
                );
            }
        }
        names
            .iter()
            .map(|n| {
                if let Some(m) = user.get(n) {
                    return Ok(m.clone());
                }
                let (prompt, requires) = builtin(n).ok_or_else(|| {
                    let mut known: Vec<&str> = BUILTINS.to_vec();
                    known.extend(user.keys().map(String::as_str));
                    EvalError::BadArgs(format!("unknown metric {n:?}; known: {}", known.join(", ")))
                })?;
                Ok(Metric::new(
                    n,
                    prompt,
                    Scale::Range { min: 1.0, max: 5.0 },
                    requires.iter().map(|r| r.to_string()).collect(),
                ))
            })
            .collect()
    }

    /// Why this item cannot be judged on this metric, if it cannot. A template that shows
    /// `{{output}}` needs an output whether or not `requires` says so: an answer is never
    /// judged as the empty string.
    pub fn missing(&self, item: &Item) -> Option<String> {
        if item.output.is_none()
            && (self.prompt.contains("{{output}}") || self.requires.iter().any(|r| r == "output"))
        {
            return Some(match item.format {
                Format::Langfuse => "no output: a langfuse dataset item carries no model answer \
(only input and expectedOutput); export with `curate --format items` to judge answers"
                    .to_string(),
                Format::Items | Format::Phoenix => "no output".to_string(),
            });
        }
        self.requires.iter().find_map(|r| match r.as_str() {
            "context" if item.context.is_empty() => Some("no retrieved context".to_string()),
            "expected" if item.expected.is_none() => Some("no expected output".to_string()),
            _ => None,
        })
    }

    /// The system prompt and the user prompt for `item`.
    pub fn render(&self, item: &Item) -> (String, String) {
        let context = item
            .context
            .iter()
            .enumerate()
            .map(|(i, c)| format!("[{}] {c}", i + 1))
            .collect::<Vec<_>>()
            .join("\n");
        let body = fill(
            &self.prompt,
            &[
                ("input", &render_input(&item.input)),
                ("output", item.output.as_deref().unwrap_or("")),
                ("context", &context),
                ("expected", item.expected.as_deref().unwrap_or("")),
                ("metadata", &item.metadata.to_string()),
            ],
        );
        let answer = match &self.scale {
            Scale::Range { min, max } => format!(
                "Answer with a JSON object {{\"score\": <number from {min} to {max}, higher is \
better>, \"explanation\": \"<one or two sentences>\"}}."
            ),
            Scale::Labels(l) => format!(
                "Answer with a JSON object {{\"label\": <one of {}>, \"explanation\": \"<one or two \
sentences>\"}}.",
                l.keys()
                    .map(|k| format!("\"{k}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        (SYSTEM.to_string(), format!("{body}\n\n{answer}"))
    }

    /// JSON schema of the verdict object, for structured output.
    pub fn schema(&self) -> Value {
        let main = match &self.scale {
            Scale::Range { .. } => ("score", json!({"type": "number"})),
            Scale::Labels(l) => (
                "label",
                json!({"type": "string", "enum": l.keys().collect::<Vec<_>>()}),
            ),
        };
        json!({
            "type": "object",
            "properties": { main.0: main.1, "explanation": {"type": "string"} },
            "required": [main.0, "explanation"],
            "additionalProperties": false,
        })
    }

    /// Reads a verdict from a judge answer: a JSON object, possibly wrapped in prose or a
    /// code fence, with the score as a number or a numeric string.
    pub fn parse_verdict(&self, answer: &Value) -> Result<Verdict, String> {
        let obj = match answer {
            Value::Object(_) => answer.clone(),
            Value::String(text) => {
                json_object_in(text).ok_or_else(|| "the answer holds no JSON object".to_string())?
            }
            other => return Err(format!("unexpected answer {other}")),
        };
        let explanation = match &obj["explanation"] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        match &self.scale {
            Scale::Range { min, max } => {
                let raw = match &obj["score"] {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                }
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("no numeric \"score\" in {obj}"))?;
                if raw < *min || raw > *max {
                    return Err(format!("score {raw} is outside {min}..{max}"));
                }
                Ok(Verdict {
                    score: (raw - min) / (max - min),
                    raw_score: Some(raw),
                    label: None,
                    explanation,
                })
            }
            Scale::Labels(labels) => {
                let label = obj["label"]
                    .as_str()
                    .map(|l| l.trim().to_lowercase())
                    .ok_or_else(|| format!("no \"label\" in {obj}"))?;
                let (label, score) = labels
                    .iter()
                    .find(|(k, _)| k.to_lowercase() == label)
                    .ok_or_else(|| format!("label {label:?} is not one of the metric's labels"))?;
                Ok(Verdict {
                    score: *score,
                    raw_score: None,
                    label: Some(label.clone()),
                    explanation,
                })
            }
        }
    }
}

/// A parsed verdict.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// Normalised to 0..1.
    pub score: f64,
    pub raw_score: Option<f64>,
    pub label: Option<String>,
    pub explanation: String,
}

/// `template` with each `{{name}}` of `vars` replaced, in one pass: a value that itself
/// contains `{{...}}` (a user asking about templates) is inserted as it is, not filled again.
fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let var = vars.iter().find(|(name, _)| {
            after
                .strip_prefix(name)
                .is_some_and(|tail| tail.starts_with("}}"))
        });
        match var {
            Some((name, value)) => {
                out.push_str(value);
                rest = &after[name.len() + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn render_input(input: &Value) -> String {
    match input {
        Value::String(s) => s.clone(),
        Value::Array(messages) => messages
            .iter()
            .map(|m| {
                let role = m["role"].as_str().unwrap_or("user");
                let content = match &m["content"] {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                format!("{role}: {content}")
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

/// The first JSON object in `text`: the whole text, a fenced block, or the span from the first
/// `{` to the last `}`.
fn json_object_in(text: &str) -> Option<Value> {
    let as_object = |s: &str| {
        serde_json::from_str::<Value>(s.trim())
            .ok()
            .filter(Value::is_object)
    };
    if let Some(v) = as_object(text) {
        return Some(v);
    }
    if let Some(start) = text.find("```") {
        let rest = &text[start + 3..];
        let rest = rest.strip_prefix("json").unwrap_or(rest);
        if let Some(end) = rest.find("```")
            && let Some(v) = as_object(&rest[..end])
        {
            return Some(v);
        }
    }
    let (start, end) = (text.find('{')?, text.rfind('}')?);
    (start < end)
        .then(|| as_object(&text[start..=end]))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn helpfulness() -> Metric {
        Metric::resolve(&["helpfulness".into()], None)
            .expect("builtin")
            .remove(0)
    }

    #[test]
    fn verdicts_are_read_from_the_shapes_small_models_answer_in() {
        let m = helpfulness();
        let ok = |v: Value| m.parse_verdict(&v).map(|v| v.score);
        assert_eq!(ok(json!({"score": 5, "explanation": "good"})), Ok(1.0));
        assert_eq!(ok(json!("{\"score\": 3}")), Ok(0.5));
        assert_eq!(
            ok(json!(
                "Sure! ```json\n{\"score\": \"2\"}\n``` hope it helps"
            )),
            Ok(0.25)
        );
        assert_eq!(
            ok(json!(
                "My verdict: {\"score\": 4, \"explanation\": \"ok\"} done"
            )),
            Ok(0.75)
        );
        assert!(ok(json!({"score": 42})).is_err_and(|e| e.contains("outside")));
        assert!(ok(json!("I think it is good.")).is_err_and(|e| e.contains("no JSON")));
        assert!(ok(json!({"score": "high"})).is_err());
    }

    /// Variables are filled once: an answer that contains `{{context}}` reaches the judge as
    /// written, and the context is not pasted into it.
    #[test]
    fn values_that_look_like_variables_are_not_filled_again()
    -> Result<(), Box<dyn std::error::Error>> {
        let line = r#"{"id":"x","trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331","input":[{"role":"user","content":"what does {{expected}} do?"}],"output":"It is replaced by {{context}}.","context":["SECRET DOC"],"expected_output":"gold","metadata":{}}"#;
        let item = crate::dataset::parse_line(line)?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("m.toml");
        std::fs::write(
            &path,
            "[metrics.m]\nprompt = \"Q {{input}} A {{output}} C {{context}} E {{expected}} {{other}}\"\nscale = [1, 5]\n",
        )?;
        let m = Metric::resolve(&["m".into()], Some(&path))?.remove(0);
        let (_, user) = m.render(&item);
        assert!(
            user.starts_with(
                "Q user: what does {{expected}} do? A It is replaced by {{context}}. \
                 C [1] SECRET DOC E gold {{other}}"
            ),
            "{user}"
        );
        Ok(())
    }

    /// A line as `curate --format langfuse` writes it carries no answer: metrics that judge one
    /// skip it and say why, instead of judging an empty string.
    #[test]
    fn a_langfuse_item_has_no_answer_to_judge() -> Result<(), Box<dyn std::error::Error>> {
        let line = r#"{"id":"0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331","input":{"messages":[{"role":"user","content":"Is parking free?"}],"context":["Parking is free."]},"expectedOutput":null,"metadata":{"rules":["slow"],"model":"gpt-4o-mini","latency_ms":812.0,"input_tokens":812,"output_tokens":40,"cost_usd":0.000146,"status":"OK","service":"chat-api","session_id":"s-1","user_id":"u-9","tenant":"default","start_time":"2026-11-25T14:00:00.000000000Z","root_name":"POST /chat"},"sourceTraceId":"0af7651916cd43dd8448eb211c80319c","sourceObservationId":"b7ad6b7169203331"}"#;
        let item = crate::dataset::parse_line(line)?;
        for m in Metric::resolve(&["helpfulness".into(), "faithfulness".into()], None)? {
            let why = m.missing(&item).unwrap_or_default();
            assert!(
                why.contains("langfuse") && why.contains("--format items"),
                "{why}"
            );
        }
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("m.toml");
        std::fs::write(
            &path,
            "[metrics.clear]\nprompt = \"Is it clear? {{input}}\"\nscale = [1, 5]\n",
        )?;
        let clear = Metric::resolve(&["clear".into()], Some(&path))?.remove(0);
        assert_eq!(clear.missing(&item), None);
        assert!(clear.render(&item).1.contains("user: Is parking free?"));
        Ok(())
    }

    #[test]
    fn user_metrics_with_labels_map_to_scores() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("m.toml");
        std::fs::write(
            &path,
            "[metrics.tone]\nprompt = \"Is it polite? {{output}}\"\nlabels = { polite = 1.0, rude = 0.0 }\n",
        )?;
        let m = Metric::resolve(&["tone".into()], Some(&path))?.remove(0);
        let v = m.parse_verdict(&json!({"label": "Rude", "explanation": "x"}))?;
        assert_eq!((v.score, v.label.as_deref()), (0.0, Some("rude")));
        assert!(m.parse_verdict(&json!({"label": "meh"})).is_err());
        std::fs::write(&path, "[metrics.x]\nprompt = \"p\"\n")?;
        assert!(Metric::resolve(&["x".into()], Some(&path)).is_err());
        assert!(Metric::resolve(&["nope".into()], None).is_err());
        Ok(())
    }
}
