//! Message extraction: the input messages, output, system prompt and retrieved context of an
//! LLM call span, normalised into one shape across the attribute dialects real
//! instrumentation emits. Dialects, in the order they are tried:
//!
//! 1. OTel GenAI semconv (current): `gen_ai.system_instructions`, `gen_ai.input.messages`,
//!    `gen_ai.output.messages`, JSON strings of `{role, parts: [{type, content}]}`.
//! 2. OTel GenAI semconv (older event form): events `gen_ai.system.message`,
//!    `gen_ai.user.message`, `gen_ai.assistant.message`, `gen_ai.tool.message` (attribute
//!    `content`) and `gen_ai.choice` (attribute `message` or `content`).
//! 3. OpenLLMetry indexed attributes: `gen_ai.prompt.N.role/content`,
//!    `gen_ai.completion.N.role/content`.
//! 4. OpenInference: `llm.input_messages.N.message.role/content`,
//!    `llm.output_messages.N.message.role/content`, then `input.value` / `output.value`.
//! 5. Traceloop entities: `traceloop.entity.input` / `traceloop.entity.output`.
//!
//! Retrieved context comes from `retrieval.documents.N.document.content` on the span itself;
//! the catalog adds the documents of retrieval spans of the same trace when the call has none.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// What an LLM call said and was told.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LlmIo {
    /// System prompt (instructions), if any.
    pub system: Option<String>,
    /// Input messages without the system ones.
    pub input: Vec<Message>,
    /// Output messages (usually one assistant message).
    pub output: Vec<Message>,
    /// Retrieved documents given to the call.
    pub context: Vec<String>,
}

/// An event of the span: name and attributes.
pub struct EventRef<'a> {
    pub name: &'a str,
    pub attributes: &'a [(String, Option<String>)],
}

fn attr<'a>(attrs: &'a [(String, Option<String>)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_deref())
        .filter(|v| !v.is_empty())
}

/// Text of a message content in any of the shapes seen: a string, a list of parts
/// (`{type: "text", content|text}`), or an object with `content`/`text`.
fn content_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<String> = parts.iter().filter_map(part_text).collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        Value::Object(o) => o
            .get("content")
            .or_else(|| o.get("text"))
            .and_then(content_text),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn part_text(part: &Value) -> Option<String> {
    match part {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => {
            let kind = o.get("type").and_then(Value::as_str).unwrap_or("text");
            match kind {
                "text" | "output_text" | "input_text" => o
                    .get("content")
                    .or_else(|| o.get("text"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                // Tool calls and results keep their JSON so nothing is silently dropped.
                _ => Some(part.to_string()),
            }
        }
        _ => None,
    }
}

/// Messages from a JSON array of `{role, parts|content}` objects.
fn messages_from_json(text: &str) -> Option<Vec<Message>> {
    let v: Value = serde_json::from_str(text).ok()?;
    let items = match &v {
        Value::Array(items) => items.clone(),
        // OpenAI request bodies (`input.value`) carry `{"messages": [...]}`.
        Value::Object(o) => o.get("messages")?.as_array()?.clone(),
        _ => return None,
    };
    let msgs: Vec<Message> = items
        .iter()
        .filter_map(|m| {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
            let content = m
                .get("parts")
                .and_then(content_text)
                .or_else(|| m.get("content").and_then(content_text))?;
            Some(Message::new(role, content))
        })
        .collect();
    (!msgs.is_empty()).then_some(msgs)
}

/// Output messages from an OpenAI-style response body (`choices[].message`), an Anthropic
/// one (`content` parts), or a JSON array of messages.
fn output_from_json(text: &str) -> Option<Vec<Message>> {
    let v: Value = serde_json::from_str(text).ok()?;
    if let Some(choices) = v.get("choices").and_then(Value::as_array) {
        let msgs: Vec<Message> = choices
            .iter()
            .filter_map(|c| {
                let m = c.get("message").unwrap_or(c);
                let role = m.get("role").and_then(Value::as_str).unwrap_or("assistant");
                Some(Message::new(
                    role,
                    content_text(m.get("content").or_else(|| c.get("text"))?)?,
                ))
            })
            .collect();
        return (!msgs.is_empty()).then_some(msgs);
    }
    if v.get("type").and_then(Value::as_str) == Some("message") {
        let role = v.get("role").and_then(Value::as_str).unwrap_or("assistant");
        return Some(vec![Message::new(role, content_text(v.get("content")?)?)]);
    }
    messages_from_json(text)
}

/// Messages from indexed attributes `<prefix>.N.<role_key>` / `<prefix>.N.<content_key>`.
fn indexed(
    attrs: &[(String, Option<String>)],
    prefix: &str,
    role_key: &str,
    content_key: &str,
    default_role: &str,
) -> Vec<Message> {
    let mut by_index: BTreeMap<u32, (Option<&str>, Option<&str>)> = BTreeMap::new();
    for (k, v) in attrs {
        let Some(rest) = k.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let Some((n, field)) = rest.split_once('.') else {
            continue;
        };
        let Ok(n) = n.parse::<u32>() else {
            continue;
        };
        let slot = by_index.entry(n).or_default();
        if field == role_key {
            slot.0 = v.as_deref();
        } else if field == content_key {
            slot.1 = v.as_deref();
        }
    }
    by_index
        .into_values()
        .filter_map(|(role, content)| Some(Message::new(role.unwrap_or(default_role), content?)))
        .collect()
}

fn from_events(events: &[EventRef<'_>]) -> (Vec<Message>, Vec<Message>) {
    let mut input = Vec::new();
    let mut output = Vec::new();
    for e in events {
        let role = match e.name {
            "gen_ai.system.message" => "system",
            "gen_ai.user.message" => "user",
            "gen_ai.assistant.message" => "assistant",
            "gen_ai.tool.message" => "tool",
            "gen_ai.choice" => {
                let text = attr(e.attributes, "message")
                    .map(|m| {
                        serde_json::from_str::<Value>(m)
                            .ok()
                            .and_then(|v| content_text(&v))
                            .unwrap_or_else(|| m.to_string())
                    })
                    .or_else(|| attr(e.attributes, "content").map(str::to_string));
                if let Some(text) = text {
                    output.push(Message::new("assistant", text));
                }
                continue;
            }
            _ => continue,
        };
        if let Some(content) = attr(e.attributes, "content") {
            input.push(Message::new(role, content));
        }
    }
    (input, output)
}

/// A plain value (`input.value` that is not JSON messages) as one message.
fn plain(text: Option<&str>, role: &str) -> Option<Vec<Message>> {
    text.map(|t| vec![Message::new(role, t)])
}

/// Extracts the normalised input, output, system prompt and context of an LLM call.
pub fn extract(attrs: &[(String, Option<String>)], events: &[EventRef<'_>]) -> LlmIo {
    let (event_in, event_out) = from_events(events);
    let or_nonempty = |v: Vec<Message>| (!v.is_empty()).then_some(v);

    let input = attr(attrs, "gen_ai.input.messages")
        .and_then(messages_from_json)
        .or_else(|| or_nonempty(event_in))
        .or_else(|| or_nonempty(indexed(attrs, "gen_ai.prompt", "role", "content", "user")))
        .or_else(|| {
            or_nonempty(indexed(
                attrs,
                "llm.input_messages",
                "message.role",
                "message.content",
                "user",
            ))
        })
        .or_else(|| {
            let v = attr(attrs, "input.value");
            v.and_then(messages_from_json).or_else(|| plain(v, "user"))
        })
        .or_else(|| {
            let v = attr(attrs, "traceloop.entity.input");
            v.and_then(messages_from_json).or_else(|| plain(v, "user"))
        })
        .unwrap_or_default();

    let output = attr(attrs, "gen_ai.output.messages")
        .and_then(output_from_json)
        .or_else(|| or_nonempty(event_out))
        .or_else(|| {
            or_nonempty(indexed(
                attrs,
                "gen_ai.completion",
                "role",
                "content",
                "assistant",
            ))
        })
        .or_else(|| {
            or_nonempty(indexed(
                attrs,
                "llm.output_messages",
                "message.role",
                "message.content",
                "assistant",
            ))
        })
        .or_else(|| {
            let v = attr(attrs, "output.value");
            v.and_then(output_from_json)
                .or_else(|| plain(v, "assistant"))
        })
        .or_else(|| {
            let v = attr(attrs, "traceloop.entity.output");
            v.and_then(output_from_json)
                .or_else(|| plain(v, "assistant"))
        })
        .unwrap_or_default();

    let system_attr = attr(attrs, "gen_ai.system_instructions").map(|s| {
        serde_json::from_str::<Value>(s)
            .ok()
            .and_then(|v| content_text(&v))
            .unwrap_or_else(|| s.to_string())
    });
    let (system_msgs, input): (Vec<Message>, Vec<Message>) =
        input.into_iter().partition(|m| m.role == "system");
    let system = system_attr.or_else(|| {
        (!system_msgs.is_empty()).then(|| {
            system_msgs
                .into_iter()
                .map(|m| m.content)
                .collect::<Vec<_>>()
                .join("\n")
        })
    });
    let context = indexed(
        attrs,
        "retrieval.documents",
        "document.id",
        "document.content",
        "",
    )
    .into_iter()
    .map(|m| m.content)
    .collect();
    LlmIo {
        system,
        input,
        output,
        context,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    fn msg(role: &str, content: &str) -> Message {
        Message::new(role, content)
    }

    #[test]
    fn semconv_json_messages_with_parts_and_system_instructions() {
        let a = attrs(&[
            (
                "gen_ai.system_instructions",
                r#"[{"type":"text","content":"Be brief."}]"#,
            ),
            (
                "gen_ai.input.messages",
                r#"[{"role":"user","parts":[{"type":"text","content":"Hi"},{"type":"text","content":"there"}]}]"#,
            ),
            (
                "gen_ai.output.messages",
                r#"[{"role":"assistant","parts":[{"type":"text","content":"Hello!"}],"finish_reason":"stop"}]"#,
            ),
        ]);
        let io = extract(&a, &[]);
        assert_eq!(io.system.as_deref(), Some("Be brief."));
        assert_eq!(io.input, vec![msg("user", "Hi\nthere")]);
        assert_eq!(io.output, vec![msg("assistant", "Hello!")]);
    }

    #[test]
    fn openllmetry_indexed_prompts_in_numeric_order() {
        let a = attrs(&[
            ("gen_ai.prompt.10.role", "user"),
            ("gen_ai.prompt.10.content", "eleventh"),
            ("gen_ai.prompt.0.role", "system"),
            ("gen_ai.prompt.0.content", "Answer from context."),
            ("gen_ai.prompt.1.role", "user"),
            ("gen_ai.prompt.1.content", "second"),
            ("gen_ai.completion.0.role", "assistant"),
            ("gen_ai.completion.0.content", "done"),
        ]);
        let io = extract(&a, &[]);
        assert_eq!(io.system.as_deref(), Some("Answer from context."));
        assert_eq!(
            io.input,
            vec![msg("user", "second"), msg("user", "eleventh")]
        );
        assert_eq!(io.output, vec![msg("assistant", "done")]);
    }

    #[test]
    fn openinference_messages_and_documents() {
        let a = attrs(&[
            ("llm.input_messages.0.message.role", "system"),
            ("llm.input_messages.0.message.content", "sys"),
            ("llm.input_messages.1.message.role", "user"),
            ("llm.input_messages.1.message.content", "question"),
            ("llm.output_messages.0.message.role", "assistant"),
            ("llm.output_messages.0.message.content", "answer"),
            ("retrieval.documents.0.document.content", "doc A"),
            ("retrieval.documents.1.document.content", "doc B"),
        ]);
        let io = extract(&a, &[]);
        assert_eq!(io.system.as_deref(), Some("sys"));
        assert_eq!(io.input, vec![msg("user", "question")]);
        assert_eq!(io.output, vec![msg("assistant", "answer")]);
        assert_eq!(io.context, vec!["doc A".to_string(), "doc B".to_string()]);
    }

    #[test]
    fn openinference_input_and_output_values_as_request_and_response_bodies() {
        let a = attrs(&[
            (
                "input.value",
                r#"{"model":"gpt-4o","messages":[{"role":"user","content":"q?"}]}"#,
            ),
            (
                "output.value",
                r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"a!"}}]}"#,
            ),
        ]);
        let io = extract(&a, &[]);
        assert_eq!(io.input, vec![msg("user", "q?")]);
        assert_eq!(io.output, vec![msg("assistant", "a!")]);
        let plain = extract(&attrs(&[("input.value", "just text")]), &[]);
        assert_eq!(plain.input, vec![msg("user", "just text")]);
    }

    #[test]
    fn older_semconv_events() {
        let sys = vec![("content".to_string(), Some("be nice".to_string()))];
        let user = vec![("content".to_string(), Some("hello".to_string()))];
        let choice = vec![(
            "message".to_string(),
            Some(r#"{"role":"assistant","content":"hi!"}"#.to_string()),
        )];
        let events = [
            EventRef {
                name: "gen_ai.system.message",
                attributes: &sys,
            },
            EventRef {
                name: "gen_ai.user.message",
                attributes: &user,
            },
            EventRef {
                name: "gen_ai.choice",
                attributes: &choice,
            },
        ];
        let io = extract(&[], &events);
        assert_eq!(io.system.as_deref(), Some("be nice"));
        assert_eq!(io.input, vec![msg("user", "hello")]);
        assert_eq!(io.output, vec![msg("assistant", "hi!")]);
    }

    #[test]
    fn traceloop_entities_when_nothing_else() {
        let a = attrs(&[
            (
                "traceloop.entity.input",
                r#"[{"role":"user","content":"in"}]"#,
            ),
            ("traceloop.entity.output", "out"),
        ]);
        let io = extract(&a, &[]);
        assert_eq!(io.input, vec![msg("user", "in")]);
        assert_eq!(io.output, vec![msg("assistant", "out")]);
    }
}
