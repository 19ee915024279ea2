//! Reading a dataset written by `curate`: the `items`, `langfuse` and `phoenix` formats carry
//! the ids a score span links to; `openai-chat` lines do not, and are refused with a hint.
//!
//! A `langfuse` line is a Langfuse dataset item: input messages and context, `expectedOutput`,
//! metadata and the source ids, but no model answer (Langfuse produces answers when an
//! experiment runs the item). Its items therefore have no output, and metrics that judge an
//! output skip them with that reason (see `Metric::missing`).

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::EvalError;

/// The dataset formats of `curate --format` that eval-runner reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Items,
    Langfuse,
    Phoenix,
}

/// One dataset item, whatever format it came in.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    pub trace_id: String,
    pub span_id: String,
    pub format: Format,
    /// Input messages (`[{"role", "content"}]`), or a plain string.
    pub input: Value,
    /// The answer to judge; `None` when the line has none (null, empty, or a format without
    /// answers).
    pub output: Option<String>,
    pub context: Vec<String>,
    pub expected: Option<String>,
    pub metadata: Value,
    /// SHA-256 of everything above but the ids: what a verdict depends on.
    pub content_hash: String,
}

/// A dataset line that could not be read, with the reason.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

/// The readable items, and what was wrong with the other lines.
pub struct Dataset {
    pub items: Vec<Item>,
    pub bad_lines: Vec<BadLine>,
}

pub fn read(path: &Path, limit: Option<usize>) -> Result<Dataset, EvalError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EvalError::BadArgs(format!("dataset {}: {e}", path.display())))?;
    let mut items = Vec::new();
    let mut bad_lines = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            break;
        }
        match parse_line(line) {
            Ok(item) if !ids.insert(item.id.clone()) => bad_lines.push(BadLine {
                line: n + 1,
                reason: format!("id {:?} repeats an earlier line", item.id),
            }),
            Ok(item) => items.push(item),
            Err(reason) => bad_lines.push(BadLine {
                line: n + 1,
                reason,
            }),
        }
    }
    if items.is_empty() && !bad_lines.is_empty() {
        let first = &bad_lines[0];
        return Err(EvalError::BadArgs(format!(
            "dataset {}: no line can be judged ({} bad; line {}: {})",
            path.display(),
            bad_lines.len(),
            first.line,
            first.reason
        )));
    }
    Ok(Dataset { items, bad_lines })
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Parses one line of any supported format.
pub fn parse_line(line: &str) -> Result<Item, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    if !v.is_object() {
        return Err("not a JSON object".into());
    }
    let (format, id, trace_id, span_id, input, output, context, expected, metadata);
    if v.get("sourceTraceId").is_some() {
        // langfuse: input {messages, context}, expectedOutput, metadata, source ids; no answer.
        format = Format::Langfuse;
        id = str_of(&v, "id");
        trace_id = str_of(&v, "sourceTraceId");
        span_id = str_of(&v, "sourceObservationId");
        input = v["input"]["messages"].clone();
        context = v["input"]["context"].clone();
        output = Value::Null;
        expected = v["expectedOutput"].clone();
        metadata = v["metadata"].clone();
    } else if v["metadata"].get("trace_id").is_some() && v.get("trace_id").is_none() {
        // phoenix: input {messages, context}, output {content}, ids in metadata.
        format = Format::Phoenix;
        let m = &v["metadata"];
        id = str_of(m, "id");
        trace_id = str_of(m, "trace_id");
        span_id = str_of(m, "span_id");
        input = v["input"]["messages"].clone();
        context = v["input"]["context"].clone();
        output = v["output"]["content"].clone();
        expected = m["expected_output"].clone();
        metadata = m.clone();
    } else if v.get("messages").is_some() && v.get("trace_id").is_none() {
        return Err(
            "an openai-chat line carries no trace or span id to link a score to; \
                    export the dataset with `curate --format items`"
                .into(),
        );
    } else {
        format = Format::Items;
        id = str_of(&v, "id");
        trace_id = str_of(&v, "trace_id");
        span_id = str_of(&v, "span_id");
        input = v["input"].clone();
        context = v["context"].clone();
        output = v["output"].clone();
        expected = v["expected_output"].clone();
        metadata = v["metadata"].clone();
    }
    let trace_id = trace_id.ok_or("no trace_id")?;
    let span_id = span_id.ok_or("no span_id")?;
    if trace_id.len() != 32 || hex::decode(&trace_id).is_err() {
        return Err(format!("trace_id {trace_id:?} is not 32 hex digits"));
    }
    if span_id.len() != 16 || hex::decode(&span_id).is_err() {
        return Err(format!("span_id {span_id:?} is not 16 hex digits"));
    }
    let id = id.unwrap_or_else(|| format!("{trace_id}-{span_id}"));
    if input.is_null() {
        return Err("no input".into());
    }
    let output = match output {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    };
    let context = match context {
        Value::Array(a) => a
            .into_iter()
            .map(|c| match c {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect(),
        Value::Null => Vec::new(),
        Value::String(s) => vec![s],
        other => vec![other.to_string()],
    };
    let expected = match expected {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    };
    let content = serde_json::json!([input, output, context, expected, metadata]);
    let content_hash = hex::encode(Sha256::digest(content.to_string().as_bytes()));
    Ok(Item {
        id,
        trace_id,
        span_id,
        format,
        input,
        output,
        context,
        expected,
        metadata,
        content_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0af7651916cd43dd8448eb211c80319c";
    const S: &str = "b7ad6b7169203331";

    #[test]
    fn every_format_with_ids_reads_to_the_same_item() {
        let items = format!(
            r#"{{"id":"x","trace_id":"{T}","span_id":"{S}","input":[{{"role":"user","content":"hi"}}],"output":"hello","context":["doc"],"expected_output":null,"metadata":{{"model":"m"}}}}"#
        );
        let phoenix = format!(
            r#"{{"input":{{"messages":[{{"role":"user","content":"hi"}}],"context":["doc"]}},"output":{{"content":"hello"}},"metadata":{{"model":"m","trace_id":"{T}","span_id":"{S}","id":"x"}}}}"#
        );
        let langfuse = format!(
            r#"{{"id":"x","input":{{"messages":[{{"role":"user","content":"hi"}}],"context":["doc"]}},"expectedOutput":"hello!","metadata":{{"model":"m"}},"sourceTraceId":"{T}","sourceObservationId":"{S}"}}"#
        );
        let a = parse_line(&items).expect("items");
        let b = parse_line(&phoenix).expect("phoenix");
        let c = parse_line(&langfuse).expect("langfuse");
        assert_eq!(
            (c.id.as_str(), c.trace_id.as_str(), c.span_id.as_str()),
            ("x", T, S)
        );
        assert_eq!(
            (c.input.clone(), c.context.clone()),
            (a.input.clone(), a.context.clone())
        );
        assert_eq!(c.expected.as_deref(), Some("hello!"));
        assert_eq!((a.id.as_str(), a.output.as_deref()), ("x", Some("hello")));
        assert_eq!(b.output.as_deref(), Some("hello"));
        assert_eq!((c.format, c.output.as_deref()), (Format::Langfuse, None));
        assert_eq!((b.trace_id.as_str(), b.span_id.as_str()), (T, S));
        assert_eq!(a.input, b.input);
        assert_eq!(a.context, b.context);
    }

    #[test]
    fn lines_without_ids_say_what_is_missing() {
        let chat = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
        assert!(parse_line(chat).is_err_and(|e| e.contains("--format items")));
        assert!(parse_line("{oops").is_err_and(|e| e.starts_with("not JSON")));
        let short = format!(r#"{{"trace_id":"abc","span_id":"{S}","input":"q"}}"#);
        assert!(parse_line(&short).is_err_and(|e| e.contains("32 hex")));
    }
}
