//! Rules: named, parameterised SQL over the views, each returning the `trace_id`s it selects.
//! Built-in rules are listed by `curate rules`; custom ones come from a TOML rules file or
//! `--where`. Comparisons are strict, so a value equal to a threshold is not selected.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::CurateError;
use crate::window::parse_duration;

/// A rule parameter: name, default (None when required), and what it means.
pub struct Param {
    pub name: &'static str,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

pub struct RuleDef {
    pub name: &'static str,
    pub help: &'static str,
    pub params: &'static [Param],
}

pub const BUILTIN: &[RuleDef] = &[
    RuleDef {
        name: "slow",
        help: "root span duration over a threshold, or over a percentile of traces with the same root span name",
        params: &[
            Param {
                name: "min_duration",
                default: Some("5s"),
                help: "root duration > this (e.g. 500ms, 5s, 2m)",
            },
            Param {
                name: "percentile",
                default: None,
                help: "instead of min_duration: root duration > this percentile (0-100) of its root span name",
            },
        ],
    },
    RuleDef {
        name: "costly",
        help: "trace cost in USD (tokens x price table) over a threshold, or total tokens over a threshold",
        params: &[
            Param {
                name: "min_usd",
                default: Some("0.10"),
                help: "trace cost > this many USD",
            },
            Param {
                name: "min_tokens",
                default: None,
                help: "instead of min_usd: input + output tokens > this",
            },
        ],
    },
    RuleDef {
        name: "errors",
        help: "any span of the trace has status ERROR",
        params: &[],
    },
    RuleDef {
        name: "quick-followup",
        help: "the later of two traces of one session that starts within a short gap after the earlier one ends (a user retrying)",
        params: &[
            Param {
                name: "within",
                default: Some("10s"),
                help: "0 <= later root start - earlier root end < this",
            },
            Param {
                name: "include_previous",
                default: Some("false"),
                help: "also select the earlier trace (or pass --include-previous)",
            },
        ],
    },
    RuleDef {
        name: "negative-feedback",
        help: "a span carries negative user feedback, as attributes or on an event: feedback.score below a threshold, or feedback.sentiment negative/thumbs_down",
        params: &[Param {
            name: "below",
            default: Some("0"),
            help: "feedback.score < this",
        }],
    },
    RuleDef {
        name: "low-score",
        help: "an earlier evaluation (eval-runner score span) of the trace scored below a threshold",
        params: &[
            Param {
                name: "metric",
                default: None,
                help: "evaluation name, e.g. faithfulness (required)",
            },
            Param {
                name: "below",
                default: Some("0.5"),
                help: "score < this",
            },
        ],
    },
];

/// A custom rule from a rules file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRule {
    #[serde(default)]
    pub description: String,
    /// A SQL boolean expression over the `traces` view.
    #[serde(rename = "where")]
    pub where_: Option<String>,
    /// A whole SQL query returning a `trace_id` column.
    pub sql: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rules: BTreeMap<String, CustomRule>,
}

/// Loads a rules file (`[rules.NAME] where = "..."` or `sql = "..."`).
pub fn load_rules_file(path: &Path) -> Result<BTreeMap<String, CustomRule>, CurateError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CurateError::BadArgs(format!("reading rules file {}: {e}", path.display())))?;
    let file: RulesFile = toml::from_str(&text)
        .map_err(|e| CurateError::BadArgs(format!("rules file {}: {e}", path.display())))?;
    for (name, r) in &file.rules {
        if r.where_.is_some() == r.sql.is_some() {
            return Err(CurateError::BadArgs(format!(
                "rules file {}: rule {name:?} needs exactly one of `where` or `sql`",
                path.display()
            )));
        }
    }
    Ok(file.rules)
}

/// `--set RULE.PARAM=VALUE` settings, checked against the rule definitions.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Settings(BTreeMap<String, BTreeMap<String, String>>);

impl Settings {
    pub fn parse(sets: &[String]) -> Result<Self, CurateError> {
        let mut s = Settings::default();
        for set in sets {
            let bad = || CurateError::BadArgs(format!("--set {set:?}: expected RULE.PARAM=VALUE"));
            let (key, value) = set.split_once('=').ok_or_else(bad)?;
            let (rule, param) = key.split_once('.').ok_or_else(bad)?;
            let def = BUILTIN
                .iter()
                .find(|d| d.name == rule)
                .ok_or_else(|| unknown(rule, []))?;
            if !def.params.iter().any(|p| p.name == param) {
                let known: Vec<_> = def.params.iter().map(|p| p.name).collect();
                return Err(CurateError::BadArgs(format!(
                    "--set {set:?}: rule {rule} has no parameter {param:?}; it has: {}",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            s.0.entry(rule.into())
                .or_default()
                .insert(param.into(), value.into());
        }
        Ok(s)
    }

    /// The value of a parameter: set, else its default.
    pub fn get(&self, rule: &str, param: &str) -> Option<String> {
        self.0
            .get(rule)
            .and_then(|m| m.get(param))
            .cloned()
            .or_else(|| {
                BUILTIN
                    .iter()
                    .find(|d| d.name == rule)
                    .and_then(|d| d.params.iter().find(|p| p.name == param))
                    .and_then(|p| p.default.map(str::to_string))
            })
    }

    /// `--include-previous` is `--set quick-followup.include_previous=true`.
    pub fn include_previous(mut self, on: bool) -> Self {
        if on {
            self.0
                .entry("quick-followup".into())
                .or_default()
                .insert("include_previous".into(), "true".into());
        }
        self
    }

    fn explicit(&self, rule: &str, param: &str) -> Option<&String> {
        self.0.get(rule).and_then(|m| m.get(param))
    }

    /// The parameters in effect for `rule` (for the manifest).
    pub fn effective(&self, rule: &str) -> BTreeMap<String, String> {
        BUILTIN
            .iter()
            .find(|d| d.name == rule)
            .map(|d| {
                d.params
                    .iter()
                    .filter_map(|p| self.get(rule, p.name).map(|v| (p.name.to_string(), v)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Whether `name` is a built-in rule.
pub fn is_builtin(name: &str) -> bool {
    BUILTIN.iter().any(|d| d.name == name)
}

/// The error for a rule that is neither built in nor in the rules file (`custom`, its names).
pub fn unknown<'a>(name: &str, custom: impl IntoIterator<Item = &'a String>) -> CurateError {
    let mut known: Vec<&str> = BUILTIN.iter().map(|d| d.name).collect();
    known.extend(custom.into_iter().map(String::as_str));
    CurateError::UnknownRule {
        name: name.to_string(),
        known: known.join(", "),
    }
}

fn number(rule: &str, param: &str, v: &str) -> Result<f64, CurateError> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .ok_or_else(|| CurateError::BadArgs(format!("{rule}.{param}={v:?} is not a number")))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn nanos(rule: &str, param: &str, v: &str) -> Result<i64, CurateError> {
    parse_duration(v)
        .ok()
        .and_then(|d| d.num_nanoseconds())
        .ok_or_else(|| {
            CurateError::BadArgs(format!("{rule}.{param}={v:?} is not a duration like 5s"))
        })
}

/// SQL of a built-in rule with its settings: a query returning `trace_id`.
pub fn builtin_sql(name: &str, s: &Settings) -> Result<String, CurateError> {
    let get = |p: &str| s.get(name, p).unwrap_or_default();
    Ok(match name {
        "slow" => match s.explicit(name, "percentile") {
            Some(pct) => {
                let pct = number(name, "percentile", pct)?;
                if !(0.0..=100.0).contains(&pct) {
                    return Err(CurateError::BadArgs(format!(
                        "slow.percentile={pct} is not in 0..100"
                    )));
                }
                format!(
                    "WITH p AS (SELECT root_name, percentile_cont(root_duration_ns, {}) AS threshold \
                     FROM traces GROUP BY root_name) \
                     SELECT t.trace_id FROM traces t JOIN p ON t.root_name = p.root_name \
                     WHERE t.root_duration_ns > p.threshold",
                    pct / 100.0
                )
            }
            None => format!(
                "SELECT trace_id FROM traces WHERE root_duration_ns > {}",
                nanos(name, "min_duration", &get("min_duration"))?
            ),
        },
        "costly" => {
            let (condition, threshold) = match s.explicit(name, "min_tokens") {
                Some(t) => (
                    "input_tokens + output_tokens",
                    number(name, "min_tokens", t)?,
                ),
                None => ("cost_usd", number(name, "min_usd", &get("min_usd"))?),
            };
            // A trace without token usage has 0 tokens and costs 0 in `traces`, so from a
            // threshold of 0 on only traces in `trace_usage` can pass: it is read alone,
            // without grouping every span by trace.
            let view = if threshold >= 0.0 {
                "trace_usage"
            } else {
                "traces"
            };
            format!("SELECT trace_id FROM {view} WHERE {condition} > {threshold}")
        }
        // The traces whose `has_error` is true, found from their ERROR spans alone: the
        // `traces` view would group every span of the store by trace id first.
        "errors" => "SELECT DISTINCT trace_id FROM spans WHERE status_code = 'ERROR'".into(),
        "quick-followup" => {
            let within = nanos(name, "within", &get("within"))?;
            let prev = matches!(get("include_previous").as_str(), "true" | "1" | "yes");
            let gap = "arrow_cast(b.root_start, 'Int64') - arrow_cast(a.root_end, 'Int64')";
            let pairs = format!(
                "FROM traces a JOIN traces b ON a.session_id = b.session_id AND a.trace_id <> b.trace_id \
                 WHERE {gap} >= 0 AND {gap} < {within}"
            );
            if prev {
                format!("SELECT b.trace_id {pairs} UNION SELECT a.trace_id AS trace_id {pairs}")
            } else {
                format!("SELECT DISTINCT b.trace_id {pairs}")
            }
        }
        "negative-feedback" => {
            // Feedback arrives as span attributes or as span events (e.g. a `feedback` event
            // added when the user clicks thumbs-down), with the same keys. Spans without
            // events unnest to no rows; a filter such as `cardinality(events) > 0` to skip them
            // cost 5x the unnest itself (DataFusion counts each row's nested list by slicing
            // it out: 3.8 of 4.5 CPU s on the 10M-span bench store).
            let below = number(name, "below", &get("below"))?;
            let negative = |m: &str| {
                format!(
                    "try_cast({m}['feedback.score'] AS DOUBLE) < {below} \
                     OR lower({m}['feedback.sentiment']) IN ('negative', 'thumbs_down', 'down')"
                )
            };
            format!(
                "SELECT trace_id FROM spans WHERE {} \
                 UNION SELECT trace_id FROM \
                 (SELECT trace_id, unnest(events) AS e FROM spans) \
                 WHERE {}",
                negative("attributes"),
                negative("e['attributes']")
            )
        }
        "low-score" => {
            let metric = s.get(name, "metric").ok_or_else(|| {
                CurateError::BadArgs(
                    "low-score needs --set low-score.metric=NAME (e.g. faithfulness)".into(),
                )
            })?;
            format!(
                "SELECT DISTINCT judged_trace_id AS trace_id FROM evals \
                 WHERE metric = {} AND score < {}",
                quote(&metric),
                number(name, "below", &get("below"))?
            )
        }
        other => return Err(unknown(other, [])),
    })
}

/// SQL of a custom rule.
pub fn custom_sql(rule: &CustomRule) -> String {
    match (&rule.where_, &rule.sql) {
        (Some(w), _) => format!("SELECT trace_id FROM traces WHERE {w}"),
        (None, Some(sql)) => format!("SELECT trace_id FROM ({sql})"),
        (None, None) => "SELECT trace_id FROM traces WHERE FALSE".into(),
    }
}

/// Text of `curate rules`.
pub fn describe(custom: &BTreeMap<String, CustomRule>) -> String {
    let mut out = String::from("Built-in rules (set parameters with --set RULE.PARAM=VALUE):\n");
    for d in BUILTIN {
        out.push_str(&format!("\n  {}\n      {}\n", d.name, d.help));
        for p in d.params {
            let default = p
                .default
                .map_or("(no default)".to_string(), |d| format!("default {d}"));
            out.push_str(&format!(
                "      {}.{}  {}; {default}\n",
                d.name, p.name, p.help
            ));
        }
    }
    if !custom.is_empty() {
        out.push_str("\nCustom rules (from --rules FILE):\n");
        for (name, r) in custom {
            let body = r.where_.as_deref().or(r.sql.as_deref()).unwrap_or_default();
            out.push_str(&format!(
                "\n  {name}\n      {}\n      {body}\n",
                r.description
            ));
        }
    }
    out.push_str("\nCustom rules also come from --where \"SQL over traces\" or --sql \"SELECT trace_id ...\" with --out.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_checks_rule_and_parameter_names() {
        assert!(Settings::parse(&["slow.min_duration=2s".into()]).is_ok());
        let e = Settings::parse(&["slow.min=2s".into()])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("has no parameter \"min\"") && e.contains("min_duration"),
            "{e}"
        );
        let e = Settings::parse(&["slo.x=1".into()])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("known rules: slow, costly"), "{e}");
        assert!(Settings::parse(&["slow".into()]).is_err());
    }

    #[test]
    fn thresholds_are_strict_and_parameters_replace_defaults() -> Result<(), CurateError> {
        let s = Settings::parse(&[
            "slow.min_duration=1500ms".into(),
            "costly.min_tokens=1000".into(),
        ])?;
        assert!(builtin_sql("slow", &s)?.ends_with("root_duration_ns > 1500000000"));
        assert!(builtin_sql("costly", &s)?.ends_with("input_tokens + output_tokens > 1000"));
        let d = Settings::default();
        assert!(builtin_sql("slow", &d)?.ends_with("> 5000000000"));
        assert!(builtin_sql("costly", &d)?.ends_with("cost_usd > 0.1"));
        assert!(builtin_sql("low-score", &d).is_err(), "metric is required");
        assert!(matches!(
            builtin_sql("nope", &d),
            Err(CurateError::UnknownRule { .. })
        ));
        Ok(())
    }
}
