//! Egress redaction: what matches is replaced before a prompt leaves for the judge. What is
//! stored (datasets, results, spans) is not changed.

use regex::Regex;

use crate::error::EvalError;

/// E-mail addresses.
const EMAIL: &str = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}";
/// Phone numbers: an optional +, then at least 8 digits with spaces, dots, dashes or
/// parentheses between them. Dates and timestamps (`2024-01-15`, `2024-01-15 10:30:00`,
/// `15.01.2024`, also in parentheses) have as many digits: they are matched first, as `keep`,
/// and left as they are.
const PHONE: &str = r"(?P<keep>\(?\b(?:\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?|\d{1,2}\.\d{1,2}\.\d{4}\b))|\+?\(?\d(?:[\s.()-]*\d){7,}";

pub struct Masker {
    rules: Vec<(Regex, &'static str)>,
}

impl Masker {
    pub fn new(kinds: &[String], regexes: &[String]) -> Result<Self, EvalError> {
        let mut rules = Vec::new();
        let compile = |re: &str| {
            Regex::new(re).map_err(|e| EvalError::BadArgs(format!("--mask-regex {re:?}: {e}")))
        };
        for k in kinds {
            match k.trim() {
                "email" => rules.push((compile(EMAIL)?, "[EMAIL]")),
                "phone" => rules.push((compile(PHONE)?, "[PHONE]")),
                other => {
                    return Err(EvalError::BadArgs(format!(
                        "--mask {other:?}: expected email or phone (or use --mask-regex)"
                    )));
                }
            }
        }
        for re in regexes {
            rules.push((compile(re)?, "[MASKED]"));
        }
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What the cache key records of the masking: the patterns, in order.
    pub fn fingerprint(&self) -> String {
        self.rules
            .iter()
            .map(|(r, _)| r.as_str())
            .collect::<Vec<_>>()
            .join("\u{0}")
    }

    /// `text` with every match replaced, except what a pattern's `keep` group matched.
    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (re, with) in &self.rules {
            out = re
                .replace_all(&out, |c: &regex::Captures| match c.name("keep") {
                    Some(kept) => kept.as_str().to_string(),
                    None => (*with).to_string(),
                })
                .into_owned();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_phones_and_custom_patterns_are_masked() -> Result<(), EvalError> {
        let m = Masker::new(&["email".into(), "phone".into()], &[r"ACCT-\d+".into()])?;
        assert_eq!(
            m.apply(
                "mail ana.lopez@example.co.uk or call +1 (415) 555-0134 about ACCT-991 in 2024"
            ),
            "mail [EMAIL] or call [PHONE] about [MASKED] in 2024"
        );
        assert!(Masker::new(&["ssn".into()], &[]).is_err());
        assert!(Masker::new(&[], &["(".into()]).is_err());
        Ok(())
    }

    #[test]
    fn dates_and_timestamps_are_not_taken_for_phone_numbers() -> Result<(), EvalError> {
        let m = Masker::new(&["phone".into()], &[])?;
        assert_eq!(
            m.apply(
                "on 2024-01-15 at 2024-01-15 10:30:00 (15.01.2024, (2024-01-16)) call 020 7946 0958"
            ),
            "on 2024-01-15 at 2024-01-15 10:30:00 (15.01.2024, (2024-01-16)) call [PHONE]"
        );
        assert_eq!(
            m.apply("2024-01-15T09:00:00Z: +44 20 7946 0958"),
            "2024-01-15T09:00:00Z: [PHONE]"
        );
        Ok(())
    }
}
