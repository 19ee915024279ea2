//! OTLP/JSON trace requests transcoded to OTLP protobuf bytes in one pass over the JSON, with
//! no struct tree and no allocation per string: ingest then validates the protobuf in place
//! (`wire::scan_request`) and writes it to the WAL as it is, exactly as for a protobuf body.
//!
//! The reference is what ingest did before: `serde_json::from_slice` into the
//! `opentelemetry-proto` structs (feature `with-serde`) and prost's encoding of them. A body
//! is accepted when serde accepts it, and the protobuf written here decodes to the structs
//! serde builds (the tests check this on generated and mutated requests). That is the OTLP/JSON
//! mapping (<https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding>) with
//! serde's own edges:
//!
//! - Keys are lowerCamelCase, matched after unescaping; unknown keys are skipped with their
//!   values, however deep. A known key given twice is an error, except inside an `AnyValue`,
//!   where the last non-null value wins.
//! - Ids (`traceId`, `spanId`, `parentSpanId`) are hex strings of any even length, either case,
//!   with an optional `0x` prefix; their length is checked later, per span, as for protobuf.
//! - Enums (`kind`, `code`) and the 32-bit counts and flags are JSON integers only. Timestamps
//!   and `intValue` are integers or decimal strings (Rust's integer syntax: an optional `+`,
//!   for `intValue` a `-`). `-0` and numbers with a fraction or exponent are not integers.
//!   `doubleValue` is a JSON number (not "NaN"/"Infinity"), parsed correctly rounded; serde_json
//!   without its `float_roundtrip` feature may be one ulp off for more than 15 significant
//!   digits, and the correctly rounded value is the one the sender meant.
//! - `bytesValue` is standard base64 with padding. `null` means absent where a field is a
//!   message (`resource`, `scope`, `status`, `value`) or inside an `AnyValue`, and is an error
//!   elsewhere. `key` of a `KeyValue`, `values` of `arrayValue`/`kvlistValue` and the four
//!   fields of an `EntityRef` are required.
//! - Strings are checked as serde_json checks them: escapes, surrogate pairs, UTF-8, no raw
//!   control characters. Values of unknown keys are checked for JSON syntax only (serde skips
//!   them without decoding strings), except inside an `AnyValue`, where serde decodes
//!   everything.
//! - Nesting is limited as in serde_json: 127 levels of objects and arrays, counted in what is
//!   decoded (skipped values are walked without recursion). That is stricter than prost's limit
//!   of 100 nested messages for every shape OTLP allows, so `scan_request` never refuses the
//!   output for depth, and no body can overflow the stack.
//! - One deliberate difference: serde also accepts a message written as a JSON array of its
//!   fields in declaration order; OTLP/JSON has no such form and it is refused here.
//!
//! Nested messages are written with a length slot guessed at their start (one or two bytes,
//! more for the request's top levels) and moved when the guess was wrong, so the output is
//! canonical protobuf.

use std::fmt;
use std::ops::Range;

use base64::Engine as _;
use prost::encoding::{encode_varint, encoded_len_varint};

use crate::convert::validate_ids;
use crate::wire::Scan;

/// What is wrong with a body, where: the path of keys and indexes from the request down
/// (`resourceSpans[0].scopeSpans[1].spans[3].traceId`) and the byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Innermost step first: steps are added as the error travels up.
    path: Vec<Step>,
    offset: usize,
    what: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(&'static str),
    Index(usize),
}

impl JsonError {
    #[cold]
    fn in_key(mut self: Box<Self>, key: &'static str) -> Box<Self> {
        self.path.push(Step::Key(key));
        self
    }

    #[cold]
    fn at_index(mut self: Box<Self>, index: usize) -> Box<Self> {
        self.path.push(Step::Index(index));
        self
    }

    /// The byte of the body where the problem was found.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.path.iter().rev().enumerate() {
            match step {
                Step::Key(k) if i == 0 => f.write_str(k)?,
                Step::Key(k) => write!(f, ".{k}")?,
                Step::Index(n) => write!(f, "[{n}]")?,
            }
        }
        if !self.path.is_empty() {
            f.write_str(": ")?;
        }
        write!(f, "{} (at byte {})", self.what, self.offset)
    }
}

impl std::error::Error for JsonError {}

/// Boxed, so that the `Result`s returned at every token stay small.
type Result<T> = std::result::Result<T, Box<JsonError>>;

/// Transcodes an OTLP/JSON `ExportTraceServiceRequest` to its protobuf encoding.
pub fn transcode(json: &[u8]) -> std::result::Result<Vec<u8>, JsonError> {
    transcode_counted(json).map(|(out, _)| out)
}

/// [`transcode`], with the spans the span table accepts and refuses counted as
/// [`crate::wire::scan_request`] counts them in the output, which therefore need not be
/// scanned again.
pub fn transcode_counted(json: &[u8]) -> std::result::Result<(Vec<u8>, Scan), JsonError> {
    transcode_boxed(json).map_err(|e| *e)
}

fn transcode_boxed(json: &[u8]) -> Result<(Vec<u8>, Scan)> {
    let mut t = Transcoder {
        src: json,
        pos: 0,
        out: Vec::with_capacity(json.len()),
        depth: 0,
        scratch: Vec::new(),
        spans: Scan::default(),
    };
    t.request()?;
    if t.ws().is_some() {
        return Err(t.error(format!("{} after the request object", t.found())));
    }
    Ok((t.out, t.spans))
}

/// serde_json's recursion limit: the 128th nested object or array is refused.
const DEPTH_LIMIT: u32 = 128;

/// The JSON keys of a message with their protobuf field numbers, in the order of the `.proto`
/// file, which is the order serde and most SDKs write them in.
type Names = &'static [(&'static str, u32)];

const REQUEST: Names = &[("resourceSpans", 1)];
const RESOURCE_SPANS: Names = &[("resource", 1), ("scopeSpans", 2), ("schemaUrl", 3)];
const RESOURCE: Names = &[
    ("attributes", 1),
    ("droppedAttributesCount", 2),
    ("entityRefs", 3),
];
const ENTITY_REF: Names = &[
    ("schemaUrl", 1),
    ("type", 2),
    ("idKeys", 3),
    ("descriptionKeys", 4),
];
const SCOPE_SPANS: Names = &[("scope", 1), ("spans", 2), ("schemaUrl", 3)];
const SCOPE: Names = &[
    ("name", 1),
    ("version", 2),
    ("attributes", 3),
    ("droppedAttributesCount", 4),
];
const SPAN: Names = &[
    ("traceId", 1),
    ("spanId", 2),
    ("traceState", 3),
    ("parentSpanId", 4),
    ("flags", 16),
    ("name", 5),
    ("kind", 6),
    ("startTimeUnixNano", 7),
    ("endTimeUnixNano", 8),
    ("attributes", 9),
    ("droppedAttributesCount", 10),
    ("events", 11),
    ("droppedEventsCount", 12),
    ("links", 13),
    ("droppedLinksCount", 14),
    ("status", 15),
];
const EVENT: Names = &[
    ("timeUnixNano", 1),
    ("name", 2),
    ("attributes", 3),
    ("droppedAttributesCount", 4),
];
const LINK: Names = &[
    ("traceId", 1),
    ("spanId", 2),
    ("traceState", 3),
    ("attributes", 4),
    ("droppedAttributesCount", 5),
    ("flags", 6),
];
const STATUS: Names = &[("message", 2), ("code", 3)];
const KEY_VALUE: Names = &[("key", 1), ("value", 2), ("keyStrindex", 3)];
const ANY_VALUE: Names = &[
    ("stringValue", 1),
    ("boolValue", 2),
    ("intValue", 3),
    ("doubleValue", 4),
    ("arrayValue", 5),
    ("kvlistValue", 6),
    ("bytesValue", 7),
];
/// `ArrayValue` and `KeyValueList`.
const VALUES: Names = &[("values", 1)];

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// How the values of unknown keys are checked, after what serde does with them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unknown {
    /// Skipped as `serde::de::IgnoredAny`: syntax only, no depth limit.
    Syntax,
    /// Inside an `AnyValue`, which serde buffers whole: strings decoded, numbers in range,
    /// depth counted.
    Decode,
}

/// The keys of one JSON object being read.
struct Object {
    names: Names,
    unknown: Unknown,
    /// `AnyValue` keys may repeat (the last non-null wins); others may not.
    repeats: bool,
    first: bool,
    seen: u32,
    /// Where in `names` the next key probably is.
    next: usize,
}

impl Object {
    fn new(names: Names, unknown: Unknown) -> Self {
        Self {
            names,
            unknown,
            repeats: false,
            first: true,
            seen: 0,
            next: 0,
        }
    }

    fn has(&self, tag: u32) -> bool {
        self.seen & (1 << tag) != 0
    }
}

/// An integer literal as serde_json reads it: non-negative values are u64, negative ones i64.
#[derive(Clone, Copy)]
enum Int {
    Pos(u64),
    Neg(i64),
}

struct Transcoder<'a> {
    src: &'a [u8],
    pos: usize,
    out: Vec<u8>,
    /// Objects and arrays open, as serde_json counts them.
    depth: u32,
    /// Unescaped strings that are not copied to `out` (keys, ids, numbers, base64), and the
    /// bracket stack of skipped values.
    scratch: Vec<u8>,
    /// Spans the span table accepts and refuses ([`crate::convert::validate_span`]).
    spans: Scan,
}

impl<'a> Transcoder<'a> {
    // ---- errors --------------------------------------------------------------------------

    #[cold]
    fn error(&self, what: impl Into<String>) -> Box<JsonError> {
        self.error_at(self.pos, what)
    }

    #[cold]
    fn error_at(&self, offset: usize, what: impl Into<String>) -> Box<JsonError> {
        Box::new(JsonError {
            path: Vec::new(),
            offset,
            what: what.into(),
        })
    }

    /// Names the token at the current position, for "expected X, found Y".
    #[cold]
    fn found(&self) -> String {
        match self.src.get(self.pos) {
            None => "the end of the body".into(),
            Some(b'{') => "an object".into(),
            Some(b'[') => "an array".into(),
            Some(b'"') => "a string".into(),
            Some(b'-' | b'0'..=b'9') => "a number".into(),
            Some(b'n') => "null".into(),
            Some(b't' | b'f') => "a boolean".into(),
            Some(&b) if b.is_ascii_graphic() => format!("{:?}", char::from(b)),
            Some(b) => format!("byte 0x{b:02x}"),
        }
    }

    #[cold]
    fn expected(&self, what: &str) -> Box<JsonError> {
        self.error(format!("expected {what}, found {}", self.found()))
    }

    // ---- JSON tokens ---------------------------------------------------------------------

    /// Skips JSON whitespace and returns the next byte.
    #[inline]
    fn ws(&mut self) -> Option<u8> {
        while let Some(&b) = self.src.get(self.pos) {
            if !matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth >= DEPTH_LIMIT {
            return Err(self.error("objects and arrays nested deeper than 127 levels"));
        }
        Ok(())
    }

    /// Consumes `null` if it comes next.
    fn null(&mut self) -> bool {
        if self.ws() == Some(b'n') && self.src.get(self.pos..self.pos + 4) == Some(b"null") {
            self.pos += 4;
            return true;
        }
        false
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if self.src[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error("invalid literal (expected true, false or null)"))
        }
    }

    fn open_object(&mut self) -> Result<()> {
        if self.ws() != Some(b'{') {
            return Err(self.expected("an object"));
        }
        self.pos += 1;
        self.enter()
    }

    fn open_array(&mut self) -> Result<()> {
        if self.ws() != Some(b'[') {
            return Err(self.expected("an array"));
        }
        self.pos += 1;
        self.enter()
    }

    /// Moves to the next item of an open array; false (and the array closed) at its end.
    fn next_item(&mut self, first: &mut bool) -> Result<bool> {
        let b = self.ws();
        if b == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(false);
        }
        if !*first {
            if b != Some(b',') {
                return Err(self.expected("',' or ']'"));
            }
            self.pos += 1;
            if self.ws() == Some(b']') {
                return Err(self.error("trailing comma"));
            }
        }
        *first = false;
        Ok(true)
    }

    /// Reads up to the value of the next known key of an open object, skipping unknown keys
    /// and their values; `None` (and the object closed) at its end. Returns the key's field
    /// number and name.
    fn next_key(&mut self, obj: &mut Object) -> Result<Option<(u32, &'static str)>> {
        loop {
            let b = self.ws();
            if b == Some(b'}') {
                self.pos += 1;
                self.depth -= 1;
                return Ok(None);
            }
            if !obj.first {
                if b != Some(b',') {
                    return Err(self.expected("',' or '}'"));
                }
                self.pos += 1;
                if self.ws() == Some(b'}') {
                    return Err(self.error("trailing comma"));
                }
            }
            obj.first = false;
            let at = self.pos;
            let known = self.key(obj.names, &mut obj.next)?;
            if self.ws() != Some(b':') {
                return Err(self.expected("':'"));
            }
            self.pos += 1;
            match known {
                Some((tag, name)) => {
                    if obj.has(tag) && !obj.repeats {
                        return Err(self.error_at(at, format!("duplicate key {name:?}")));
                    }
                    obj.seen |= 1 << tag;
                    return Ok(Some((tag, name)));
                }
                None => match obj.unknown {
                    Unknown::Syntax => self.skip_syntax()?,
                    Unknown::Decode => self.skip_decoded()?,
                },
            }
        }
    }

    /// Reads an object key (decoded and checked as serde does) and looks it up in `names`.
    fn key(&mut self, names: Names, next: &mut usize) -> Result<Option<(u32, &'static str)>> {
        if self.ws() != Some(b'"') {
            return Err(self.expected("a string key"));
        }
        // Senders write the keys of a message in one order, mostly the table's: the entry
        // after the last match is compared in place first. Names need no escaping, so the
        // key is the name when the name is followed by the closing quote.
        if let Some(&(name, tag)) = names.get(*next) {
            let start = self.pos + 1;
            let end = start + name.len();
            if self.src.get(end) == Some(&b'"') && same(&self.src[start..end], name.as_bytes()) {
                self.pos = end + 1;
                *next += 1;
                return Ok(Some((tag, name)));
            }
        }
        let str = self.scan_string()?;
        let key: &[u8] = if str.escaped {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            let r = unescape(self.src, &str, &mut scratch);
            self.scratch = scratch;
            r.map_err(|(at, what)| self.error_at(at, what))?;
            &self.scratch
        } else {
            let key = &self.src[str.start..str.end];
            if !is_utf8(key, str.ascii) {
                return Err(self.error_at(str.start, "key is not UTF-8"));
            }
            key
        };
        Ok(names
            .iter()
            .position(|(name, _)| same(name.as_bytes(), key))
            .map(|i| {
                *next = i + 1;
                (names[i].1, names[i].0)
            }))
    }

    /// Checks that the keys `required` (field numbers) were given.
    fn require(&self, obj: &Object, required: &[u32]) -> Result<()> {
        for &tag in required {
            if !obj.has(tag) {
                let name = obj
                    .names
                    .iter()
                    .find(|(_, t)| *t == tag)
                    .map_or("?", |(n, _)| n);
                return Err(self.error_at(self.pos - 1, format!("missing key {name:?}")));
            }
        }
        Ok(())
    }

    /// Scans the string starting at the current `"`: escapes are checked for syntax, raw
    /// control characters refused; the position is then after the closing quote.
    fn scan_string(&mut self) -> Result<Scanned> {
        let src = self.src;
        let start = self.pos + 1;
        let mut i = start;
        let mut escaped = false;
        let mut high = false;
        loop {
            let Some((n, non_ascii)) = next_special(&src[i..]) else {
                return Err(self.error_at(start - 1, "string is not terminated"));
            };
            high |= non_ascii;
            i += n;
            if src[i] < 0x20 {
                return Err(self.error_at(i, "control character (U+0000 to U+001F) in a string"));
            }
            if src[i] == b'"' {
                self.pos = i + 1;
                return Ok(Scanned {
                    start,
                    end: i,
                    escaped,
                    ascii: !high,
                });
            }
            escaped = true;
            match src.get(i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') => {
                    if src.len() < i + 6 {
                        return Err(self.error_at(i, "string is not terminated"));
                    }
                    if hex4(src, i + 2).is_none() {
                        return Err(self.error_at(i, "invalid \\u escape"));
                    }
                    i += 6;
                }
                Some(_) => return Err(self.error_at(i, "invalid escape")),
                None => return Err(self.error_at(i, "string is not terminated")),
            }
        }
    }

    /// Reads a string value, decoded and checked, and calls `f` with it and the output.
    fn with_string<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&str, &mut Vec<u8>) -> std::result::Result<T, String>,
    ) -> Result<T> {
        if self.ws() != Some(b'"') {
            return Err(self.expected(what));
        }
        let at = self.pos;
        let str = self.scan_string()?;
        if str.escaped {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            let r = unescape(self.src, &str, &mut scratch);
            let r = match r {
                Ok(()) => match std::str::from_utf8(&scratch) {
                    Ok(s) => f(s, &mut self.out).map_err(|e| self.error_at(at, e)),
                    Err(_) => Err(self.error_at(at, "string is not UTF-8")),
                },
                Err((at, what)) => Err(self.error_at(at, what)),
            };
            self.scratch = scratch;
            r
        } else {
            let src = self.src;
            match utf8(&src[str.start..str.end], str.ascii) {
                Some(s) => f(s, &mut self.out).map_err(|e| self.error_at(at, e)),
                None => Err(self.error_at(at, "string is not UTF-8")),
            }
        }
    }

    /// Checks a JSON number's syntax as serde_json does and returns its text and whether it is
    /// written as an integer (no fraction, no exponent).
    fn number(&mut self) -> Result<(&'a [u8], bool)> {
        let src = self.src;
        let start = self.pos;
        let mut i = start;
        if src.get(i) == Some(&b'-') {
            i += 1;
        }
        match src.get(i) {
            Some(b'0') => {
                i += 1;
                if src.get(i).is_some_and(u8::is_ascii_digit) {
                    return Err(self.error_at(i, "invalid number (leading zero)"));
                }
            }
            Some(b'1'..=b'9') => {
                while src.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            _ => return Err(self.error_at(i, "invalid number")),
        }
        let mut integral = true;
        if src.get(i) == Some(&b'.') {
            integral = false;
            i += 1;
            let digits = i;
            while src.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == digits {
                return Err(self.error_at(i, "invalid number (no digit after '.')"));
            }
        }
        if matches!(src.get(i), Some(b'e' | b'E')) {
            integral = false;
            i += 1;
            if matches!(src.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let digits = i;
            while src.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == digits {
                return Err(self.error_at(i, "invalid number (no digit in the exponent)"));
            }
        }
        self.pos = i;
        Ok((&src[start..i], integral))
    }

    /// Reads a JSON number that serde_json reads as an integer: written without fraction or
    /// exponent, within u64 (or i64 when negative), and not `-0` (a float to serde_json).
    fn integer(&mut self) -> Result<Int> {
        if !matches!(self.ws(), Some(b'-' | b'0'..=b'9')) {
            return Err(self.expected("an integer"));
        }
        let at = self.pos;
        let (text, integral) = self.number()?;
        let shown = || String::from_utf8_lossy(text).into_owned();
        if !integral {
            return Err(self.error_at(at, format!("expected an integer, found {}", shown())));
        }
        let out_of_range = || self.error_at(at, format!("integer {} is out of range", shown()));
        match text.strip_prefix(b"-") {
            None => decimal(text).map(Int::Pos).ok_or_else(out_of_range),
            Some(b"0") => Err(self.error_at(at, "-0 is not an integer")),
            Some(digits) => decimal(digits)
                .and_then(|v| 0i64.checked_sub_unsigned(v))
                .map(Int::Neg)
                .ok_or_else(out_of_range),
        }
    }

    fn uint32(&mut self) -> Result<u32> {
        self.ws();
        let at = self.pos;
        match self.integer()? {
            Int::Pos(v) => u32::try_from(v).ok(),
            Int::Neg(_) => None,
        }
        .ok_or_else(|| self.error_at(at, "integer is out of range for a 32-bit unsigned count"))
    }

    fn int32(&mut self) -> Result<i32> {
        self.ws();
        let at = self.pos;
        match self.integer()? {
            Int::Pos(v) => i32::try_from(v).ok(),
            Int::Neg(v) => i32::try_from(v).ok(),
        }
        .ok_or_else(|| self.error_at(at, "integer is out of range for a 32-bit enum or index"))
    }

    /// A timestamp: an integer or a decimal string of a u64.
    fn uint64(&mut self) -> Result<u64> {
        if self.ws() == Some(b'"') {
            if let Some(v) = self.quoted_digits() {
                return Ok(v);
            }
            return self.with_string("a string", |s, _| {
                s.parse()
                    .map_err(|_| format!("{s:?} is not an unsigned 64-bit integer"))
            });
        }
        let at = self.pos;
        match self.integer()? {
            Int::Pos(v) => Ok(v),
            Int::Neg(_) => Err(self.error_at(at, "a timestamp cannot be negative")),
        }
    }

    /// `intValue`: an integer or a decimal string of an i64.
    fn int64(&mut self) -> Result<i64> {
        if self.ws() == Some(b'"') {
            if let Some(v) = self.quoted_digits().and_then(|v| i64::try_from(v).ok()) {
                return Ok(v);
            }
            return self.with_string("a string", |s, _| {
                s.parse()
                    .map_err(|_| format!("{s:?} is not a signed 64-bit integer"))
            });
        }
        let at = self.pos;
        match self.integer()? {
            Int::Pos(v) => i64::try_from(v).map_err(|_| {
                self.error_at(at, "integer is out of range for a signed 64-bit value")
            }),
            Int::Neg(v) => Ok(v),
        }
    }

    /// The common form of a numeric string, `"123"`, read in place; anything else (signs,
    /// escapes, errors) is left to the general path.
    fn quoted_digits(&mut self) -> Option<u64> {
        let start = self.pos + 1;
        let len = self
            .src
            .get(start..)?
            .iter()
            .take(21)
            .position(|&b| !b.is_ascii_digit())?;
        if self.src.get(start + len) != Some(&b'"') {
            return None;
        }
        let v = decimal(&self.src[start..start + len])?;
        self.pos = start + len + 1;
        Some(v)
    }

    fn double(&mut self) -> Result<f64> {
        if !matches!(self.ws(), Some(b'-' | b'0'..=b'9')) {
            return Err(self.expected("a number"));
        }
        let at = self.pos;
        let (text, _) = self.number()?;
        match float(text) {
            Some(v) if v.is_finite() => Ok(v),
            _ => Err(self.error_at(
                at,
                format!("number {} is out of range", String::from_utf8_lossy(text)),
            )),
        }
    }

    fn boolean(&mut self) -> Result<bool> {
        match self.ws() {
            Some(b't') => self.literal(b"true").map(|()| true),
            Some(b'f') => self.literal(b"false").map(|()| false),
            _ => Err(self.expected("true or false")),
        }
    }

    // ---- skipping unknown values -----------------------------------------------------------

    /// Skips a value as serde's `IgnoredAny` does: JSON syntax only (strings are not decoded),
    /// any depth, without recursion.
    fn skip_syntax(&mut self) -> Result<()> {
        let mut stack = std::mem::take(&mut self.scratch);
        stack.clear();
        let r = self.skip_syntax_with(&mut stack);
        self.scratch = stack;
        r
    }

    fn skip_syntax_with(&mut self, stack: &mut Vec<u8>) -> Result<()> {
        loop {
            // A value.
            match self.ws() {
                Some(b'{') => {
                    self.pos += 1;
                    if self.ws() == Some(b'}') {
                        self.pos += 1;
                    } else {
                        self.skip_key()?;
                        stack.push(b'}');
                        continue;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    if self.ws() == Some(b']') {
                        self.pos += 1;
                    } else {
                        stack.push(b']');
                        continue;
                    }
                }
                Some(b'"') => {
                    self.scan_string()?;
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                _ => return Err(self.expected("a value")),
            }
            // What follows it: a comma, or the ends of the containers it completes.
            loop {
                let Some(&close) = stack.last() else {
                    return Ok(());
                };
                match self.ws() {
                    Some(b',') => {
                        self.pos += 1;
                        if close == b'}' {
                            self.skip_key()?;
                        }
                        break;
                    }
                    Some(b) if b == close => {
                        self.pos += 1;
                        stack.pop();
                    }
                    _ => {
                        return Err(self.expected(if close == b'}' {
                            "',' or '}'"
                        } else {
                            "',' or ']'"
                        }));
                    }
                }
            }
        }
    }

    /// A key of a skipped object and its colon.
    fn skip_key(&mut self) -> Result<()> {
        if self.ws() != Some(b'"') {
            return Err(self.expected("a string key"));
        }
        self.scan_string()?;
        if self.ws() != Some(b':') {
            return Err(self.expected("':'"));
        }
        self.pos += 1;
        Ok(())
    }

    /// Skips a value as serde_json buffers it for an `AnyValue`: strings decoded and UTF-8,
    /// numbers within f64, objects and arrays counted toward the depth limit.
    fn skip_decoded(&mut self) -> Result<()> {
        match self.ws() {
            Some(b'{') => {
                let mut obj = Object::new(&[], Unknown::Decode);
                self.open_object()?;
                while self.next_key(&mut obj)?.is_some() {}
                Ok(())
            }
            Some(b'[') => {
                self.open_array()?;
                let mut first = true;
                while self.next_item(&mut first)? {
                    self.skip_decoded()?;
                }
                Ok(())
            }
            Some(b'"') => self.with_string("a string", |_, _| Ok(())),
            Some(b'-' | b'0'..=b'9') => {
                let at = self.pos;
                let (text, _) = self.number()?;
                // Integers within u64/i64 stay integers; others become f64, refused when
                // infinite.
                if float(text).is_some_and(f64::is_infinite) {
                    return Err(self.error_at(
                        at,
                        format!("number {} is out of range", String::from_utf8_lossy(text)),
                    ));
                }
                Ok(())
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => Err(self.expected("a value")),
        }
    }

    // ---- protobuf output -------------------------------------------------------------------

    fn put_key(&mut self, tag: u32, wire_type: u32) {
        encode_varint(u64::from(tag << 3 | wire_type), &mut self.out);
    }

    /// Starts a length-delimited field with `reserve` bytes for its length; returns where
    /// the length goes, for [`Transcoder::close`].
    fn open(&mut self, tag: u32, reserve: usize) -> usize {
        self.put_key(tag, LEN);
        let at = self.out.len();
        self.out.resize(at + reserve, 0);
        at
    }

    /// Writes the length of the field opened at `at` (see [`patch_len`]).
    fn close(&mut self, at: usize, reserve: usize) {
        patch_len(&mut self.out, at, reserve);
    }

    /// A nested message: `body` reads the JSON object and writes its fields.
    fn message(
        &mut self,
        tag: u32,
        reserve: usize,
        body: fn(&mut Self) -> Result<()>,
    ) -> Result<()> {
        let at = self.open(tag, reserve);
        body(self)?;
        self.close(at, reserve);
        Ok(())
    }

    /// A message that may be `null` (absent).
    fn optional(
        &mut self,
        tag: u32,
        reserve: usize,
        body: fn(&mut Self) -> Result<()>,
    ) -> Result<()> {
        if self.null() {
            return Ok(());
        }
        self.message(tag, reserve, body)
    }

    /// A JSON array of messages, each one field `tag`.
    fn messages(
        &mut self,
        tag: u32,
        reserve: usize,
        item: fn(&mut Self) -> Result<()>,
    ) -> Result<()> {
        self.open_array()?;
        let mut first = true;
        let mut i = 0;
        while self.next_item(&mut first)? {
            self.message(tag, reserve, item)
                .map_err(|e| e.at_index(i))?;
            i += 1;
        }
        Ok(())
    }

    /// A string field; an empty one is written only when `always` (oneof members and repeated
    /// strings), as prost does.
    fn string(&mut self, tag: u32, always: bool) -> Result<()> {
        if self.ws() != Some(b'"') {
            return Err(self.expected("a string"));
        }
        let str = self.scan_string()?;
        if str.end == str.start && !always {
            return Ok(());
        }
        let mark = self.out.len();
        if str.escaped {
            // The decoded string is at most as long as the escaped one.
            let reserve = encoded_len_varint((str.end - str.start) as u64);
            let at = self.open(tag, reserve);
            unescape(self.src, &str, &mut self.out)
                .map_err(|(at, what)| self.error_at(at, what))?;
            if self.out.len() == at + reserve && !always {
                self.out.truncate(mark);
            } else {
                self.close(at, reserve);
            }
        } else {
            let src = self.src;
            let s = &src[str.start..str.end];
            if !is_utf8(s, str.ascii) {
                return Err(self.error_at(str.start, "string is not UTF-8"));
            }
            self.put_key(tag, LEN);
            encode_varint(s.len() as u64, &mut self.out);
            self.out.extend_from_slice(s);
        }
        Ok(())
    }

    /// An id: a hex string, written as bytes when not empty.
    fn hex(&mut self, tag: u32) -> Result<()> {
        if self.ws() != Some(b'"') {
            return Err(self.expected("a hex string"));
        }
        let at = self.pos;
        let str = self.scan_string()?;
        if !str.escaped {
            // Hex is ASCII: no UTF-8 check needed to refuse what serde refuses.
            let src = self.src;
            return put_hex(&mut self.out, tag, &src[str.start..str.end])
                .map_err(|what| self.error_at(at, what));
        }
        self.pos = at;
        self.with_string("a hex string", |s, out| put_hex(out, tag, s.as_bytes()))
    }

    fn base64(&mut self, tag: u32) -> Result<()> {
        self.with_string("a base64 string", |s, out| {
            let estimate = base64::decoded_len_estimate(s.len());
            let reserve = encoded_len_varint(estimate as u64);
            encode_varint(u64::from(tag << 3 | LEN), out);
            let at = out.len();
            out.resize(at + reserve + estimate, 0);
            let n = base64::engine::general_purpose::STANDARD
                .decode_slice(s, &mut out[at + reserve..])
                .map_err(|e| format!("not base64: {e}"))?;
            out.truncate(at + reserve + n);
            patch_len(out, at, reserve);
            Ok(())
        })
    }

    fn put_uint32(&mut self, tag: u32) -> Result<()> {
        let v = self.uint32()?;
        if v != 0 {
            self.put_key(tag, VARINT);
            encode_varint(u64::from(v), &mut self.out);
        }
        Ok(())
    }

    fn put_int32(&mut self, tag: u32) -> Result<()> {
        let v = self.int32()?;
        if v != 0 {
            self.put_key(tag, VARINT);
            // int32 is sign-extended to 64 bits on the wire.
            encode_varint(i64::from(v) as u64, &mut self.out);
        }
        Ok(())
    }

    fn put_fixed32(&mut self, tag: u32) -> Result<()> {
        let v = self.uint32()?;
        if v != 0 {
            self.put_key(tag, FIXED32);
            self.out.extend_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }

    fn put_fixed64(&mut self, tag: u32) -> Result<()> {
        let v = self.uint64()?;
        if v != 0 {
            self.put_key(tag, FIXED64);
            self.out.extend_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }

    // ---- messages ------------------------------------------------------------------------

    fn request(&mut self) -> Result<()> {
        self.open_object()?;
        let mut obj = Object::new(REQUEST, Unknown::Syntax);
        while let Some((tag, name)) = self.next_key(&mut obj)? {
            let reserve = self.big_reserve();
            match tag {
                1 => self.messages(1, reserve, Self::resource_spans),
                _ => Ok(()),
            }
            .map_err(|e| e.in_key(name))?;
        }
        Ok(())
    }

    /// The length slot of a message that may hold most of the rest of the body.
    fn big_reserve(&self) -> usize {
        encoded_len_varint((self.src.len() - self.pos) as u64)
    }

    fn resource_spans(&mut self) -> Result<()> {
        self.open_object()?;
        let mut obj = Object::new(RESOURCE_SPANS, Unknown::Syntax);
        while let Some((tag, name)) = self.next_key(&mut obj)? {
            match tag {
                1 => self.optional(1, 2, Self::resource),
                2 => {
                    let reserve = self.big_reserve();
                    self.messages(2, reserve, Self::scope_spans)
                }
                3 => self.string(3, false),
                _ => Ok(()),
            }
            .map_err(|e| e.in_key(name))?;
        }
        Ok(())
    }

    fn resource(&mut self) -> Result<()> {
        self.open_object()?;
        let mut obj = Object::new(RESOURCE, Unknown::Syntax);
        while let Some((tag, name)) = self.next_key(&mut obj)? {
            match tag {
                1 => self.messages(1, 1, Self::key_value),
                2 => self.put_uint32(2),
                3 => self.messages(3, 1, Self::entity_ref),
                _ => Ok(()),
            }
            .map_err(|e| e.in_key(name))?;
        }
        Ok(())
    }

    fn entity_ref(&mut self) -> Result<()> {
        self.open_object()?;
        let mut obj = Object::new(ENTITY_REF, Unknown::Syntax);
        while let Some((tag, name)) = self.next_key(&mut obj)? {
            match tag {
                1 | 2 => self.string(tag, false),
                3 | 4 => self.strings(tag),
                _ => Ok(()),
            }
            .map_err(|e| e.in_key(name))?;
        }
        self.require(&obj, &[1, 2, 3, 4])
    }

    fn strings(&mut self, tag: u32) -> Result<()> {
        self.open_array()?;
        let mut first = true;
        let mut i = 0;
        while self.next_item(&mut first)? {
            self.string(tag, true).map_err(|e| e.at_index(i))?;
            i += 1;
        }
        Ok(())
    }

    fn scope_spans(&mut self) -> Result<()> {
        self.open_object()?;
        let mut obj = Object::new(SCOPE_SPANS, Unknown::Syntax);
        while let Some((tag, name)) = self.next_key(&mut obj)? {
            match tag {
                1 => self.optional(1, 1, Self::scope),
                2 => self.messages(2, 2, Self::span),
                3 => self.string(3, false),
                _ => Ok(()),
            }
            .map_err(|e| e.in_key(name))?;
        }
        Ok(())
    }

    fn scope(&mut self) -> Result<()> {
        self.open_object()?;
        let mut obj = Object::new(SCOPE, Unknown::Syntax);
        while let Some((tag, name)) = self.next_key(&mut obj)? {
            match tag {
                1 | 2 => self.string(tag, false),
                3 => self.messages(3, 1, Self::key_value),
                4 => self.put_uint32(4),
                _ => Ok(()),
            }
            .map_err(|e| e.in_key(name))?;
        }
        Ok(())
    }

    fn span(&mut self) -> Result<()> {
        self.open_object()?;
        let mut obj = Object::new(SPAN, Unknown::Syntax);
        let mut ids = SpanIds::default();
        while let Some((tag, name)) = self.next_key(&mut obj)? {
            let before = self.out.len();
            match tag {
                1 | 2 | 4 => self.hex(tag),
                3 | 5 => self.string(tag, false),
                6 => self.put_int32(6),
                7 | 8 => self.put_fixed64(tag),
                9 => self.messages(9, 1, Self::key_value),
                10 | 12 | 14 => self.put_uint32(tag),
                11 => self.messages(11, 1, Self::event),
                13 => self.messages(13, 1, Self::link),
                15 => self.optional(15, 1, Self::status),
                16 => self.put_fixed32(16),
                _ => Ok(()),
            }
            .map_err(|e| e.in_key(name))?;
            ids.see(tag, &self.out, before);
        }
        match ids.validate(&self.out) {
            Ok(()) => self.spans.accepted += 1,
            Err(_) => self.spans.rejected += 1,
        }
        Ok(())
    }

    fn event(&mut self) -> Result<()> {
        self.open_object()?;
        let mut obj = Object::new(EVENT, Unknown::Syntax);
        while let Some((tag, name)) = self.next_key(&mut obj)? {
            match tag {
                1 => self.put_fixed64(1),
                2 => self.string(2, false),
                3 => self.messages(3, 1, Self::key_value),
                4 => self.put_uint32(4),
                _ => Ok(()),
            }
            .map_err(|e| e.in_key(name))?;
        }
        Ok(())
    }

    fn link(&mut self) -> Result<()> {
        self.open_object()?;
        let mut obj = Object::new(LINK, Unknown::Syntax);
        while let Some((tag, name)) = self.next_key(&mut obj)? {
            match tag {
                1 | 2 => self.hex(tag),
                3 => self.string(3, false),
                4 => self.messages(4, 1, Self::key_value),
                5 => self.put_uint32(5),
                6 => self.put_fixed32(6),
                _ => Ok(()),
            }
            .map_err(|e| e.in_key(name))?;
        }
        Ok(())
    }

    fn status(&mut self) -> Result<()> {
        self.open_object()?;
        let mut obj = Object::new(STATUS, Unknown::Syntax);
        while let Some((tag, name)) = self.next_key(&mut obj)? {
            match tag {
                2 => self.string(2, false),
                3 => self.put_int32(3),
                _ => Ok(()),
            }
            .map_err(|e| e.in_key(name))?;
        }
        Ok(())
    }

    /// An attribute of a resource, scope, span, event or link.
    fn key_value(&mut self) -> Result<()> {
        self.key_value_with(Unknown::Syntax)
    }

    /// An entry of a `kvlistValue`, inside an `AnyValue`.
    fn kvlist_entry(&mut self) -> Result<()> {
        self.key_value_with(Unknown::Decode)
    }

    fn key_value_with(&mut self, unknown: Unknown) -> Result<()> {
        self.open_object()?;
        let mut obj = Object::new(KEY_VALUE, unknown);
        while let Some((tag, name)) = self.next_key(&mut obj)? {
            match tag {
                1 => self.string(1, false),
                2 => self.optional(2, 1, Self::any_value),
                3 => self.put_int32(3),
                _ => Ok(()),
            }
            .map_err(|e| e.in_key(name))?;
        }
        self.require(&obj, &[1])
    }

    /// The oneof of an `AnyValue`: of its keys, the last with a non-null value is written.
    fn any_value(&mut self) -> Result<()> {
        self.open_object()?;
        let body = self.out.len();
        let mut obj = Object::new(ANY_VALUE, Unknown::Decode);
        obj.repeats = true;
        while let Some((tag, name)) = self.next_key(&mut obj)? {
            if self.null() {
                continue;
            }
            self.out.truncate(body);
            match tag {
                1 => self.string(1, true),
                2 => self.boolean().map(|v| {
                    self.put_key(2, VARINT);
                    self.out.push(u8::from(v));
                }),
                3 => self.int64().map(|v| {
                    self.put_key(3, VARINT);
                    encode_varint(v as u64, &mut self.out);
                }),
                4 => self.double().map(|v| {
                    self.put_key(4, FIXED64);
                    self.out.extend_from_slice(&v.to_le_bytes());
                }),
                5 => self.message(5, 1, Self::array_value),
                6 => self.message(6, 1, Self::kvlist_value),
                7 => self.base64(7),
                _ => Ok(()),
            }
            .map_err(|e| e.in_key(name))?;
        }
        Ok(())
    }

    fn array_value(&mut self) -> Result<()> {
        self.values(Self::any_value)
    }

    fn kvlist_value(&mut self) -> Result<()> {
        self.values(Self::kvlist_entry)
    }

    /// `{"values": [...]}` of an `arrayValue` or `kvlistValue`.
    fn values(&mut self, item: fn(&mut Self) -> Result<()>) -> Result<()> {
        self.open_object()?;
        let mut obj = Object::new(VALUES, Unknown::Decode);
        while let Some((_, name)) = self.next_key(&mut obj)? {
            self.messages(1, 1, item).map_err(|e| e.in_key(name))?;
        }
        self.require(&obj, &[1])
    }
}

/// A string found by `scan_string`: the bounds of its content in the body, whether it has
/// escapes, and whether its raw bytes are all ASCII (then its content is UTF-8 as it is).
struct Scanned {
    start: usize,
    end: usize,
    escaped: bool,
    ascii: bool,
}

/// The first byte of `s` that ends a run of plain string content (`"`, `\\` or a control
/// character) and whether a byte before it is not ASCII; `None` when there is none.
///
/// Most strings (keys, names, ids) end within 16 bytes: those are tested 8 bytes at a time
/// in registers. Longer ones go on with memchr's vector search.
#[inline]
fn next_special(s: &[u8]) -> Option<(usize, bool)> {
    let mut seen = 0u64;
    for at in [0, 8] {
        let w = word_at(s, at);
        let found = specials(w);
        if found != 0 {
            let n = at + found.trailing_zeros() as usize / 8;
            let before = (1u64 << found.trailing_zeros()) - 1;
            // A quote past the end is padding: the string is not terminated.
            return (n < s.len()).then_some((n, (seen | w & before) & HIGH_BITS != 0));
        }
        seen |= w;
    }
    let end = memchr::memchr2(b'"', b'\\', &s[16..]).map_or(s.len(), |n| 16 + n);
    let (control, or) = classify(&s[16..end]);
    let high = (seen & HIGH_BITS != 0) | (or >= 0x80);
    if control {
        let first = s[16..end].iter().position(|&b| b < 0x20).unwrap_or(0);
        return Some((16 + first, high));
    }
    (end < s.len()).then_some((end, high))
}

/// The 8 bytes of `s` from `at` as a little-endian word, padded with quotes past its end.
#[inline]
fn word_at(s: &[u8], at: usize) -> u64 {
    if let Some(eight) = s.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        return u64::from_le_bytes(*eight);
    }
    let mut padded = [b'"'; 8];
    let tail = s.get(at..).unwrap_or_default();
    padded[..tail.len()].copy_from_slice(tail);
    u64::from_le_bytes(padded)
}

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGH_BITS: u64 = u64::from_le_bytes([0x80; 8]);

/// The high bit of each byte of `w` that is `"`, `\\` or below 0x20, exact for the lowest such
/// byte (a borrow can also mark bytes above it).
#[inline]
fn specials(w: u64) -> u64 {
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    (zero(quote) | zero(backslash) | (w.wrapping_sub(ONES * 0x20) & !w)) & HIGH_BITS
}

/// `a == b` for short slices (keys), without a call to `memcmp`.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut x, mut y) = (a.chunks_exact(8), b.chunks_exact(8));
    for (p, q) in (&mut x).zip(&mut y) {
        if word(p) != word(q) {
            return false;
        }
    }
    x.remainder().iter().zip(y.remainder()).all(|(p, q)| p == q)
}

#[inline]
fn word(eight: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(eight);
    u64::from_le_bytes(w)
}

/// Whether `run` holds a control character, and the OR of its bytes (bit 7: not ASCII), in
/// one pass the compiler vectorizes.
#[inline]
fn classify(run: &[u8]) -> (bool, u8) {
    let mut control = 0u8;
    let mut or = 0u8;
    for &b in run {
        control |= u8::from(b < 0x20);
        or |= b;
    }
    (control != 0, or)
}

fn is_utf8(bytes: &[u8], ascii: bool) -> bool {
    ascii || utf8(bytes, false).is_some()
}

/// `bytes` as UTF-8, checked unless known to be ASCII.
#[inline]
fn utf8(bytes: &[u8], ascii: bool) -> Option<&str> {
    if ascii {
        // ASCII is UTF-8; std's check of it is a quick word-at-a-time loop.
        std::str::from_utf8(bytes).ok()
    } else {
        simdutf8::basic::from_utf8(bytes).ok()
    }
}

/// A non-empty run of ASCII digits as a u64; `None` when it overflows.
fn decimal(digits: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &d in digits {
        v = v
            .checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))?;
    }
    (!digits.is_empty()).then_some(v)
}

/// A JSON number (syntax already checked) as the nearest f64.
fn float(text: &[u8]) -> Option<f64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Four hex digits at `src[i..]` as a number.
fn hex4(src: &[u8], i: usize) -> Option<u16> {
    let digits = src.get(i..i + 4)?;
    let mut v = 0u16;
    for &d in digits {
        v = v << 4 | u16::from(hex_digit(d)?);
    }
    Some(v)
}

fn hex_digit(d: u8) -> Option<u8> {
    let v = HEX[usize::from(d)];
    (v <= 0xf).then_some(v)
}

/// Hex digit values, 0xff for other bytes.
const HEX: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Appends the decoded content of the escaped string `str` (its escapes already checked for
/// syntax by `scan_string`) to `dst`, refusing what serde_json refuses: a lone surrogate, and
/// a result that is not UTF-8. Errors carry the offset.
fn unescape(
    src: &[u8],
    str: &Scanned,
    dst: &mut Vec<u8>,
) -> std::result::Result<(), (usize, &'static str)> {
    let from = dst.len();
    let end = str.end;
    let mut i = str.start;
    while i < end {
        let run = memchr::memchr(b'\\', &src[i..end]).map_or(end, |n| i + n);
        dst.extend_from_slice(&src[i..run]);
        if run == end {
            break;
        }
        let escape = run;
        i = run + 2;
        let simple = match src.get(run + 1) {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            _ => 0,
        };
        if src.get(run + 1) != Some(&b'u') {
            dst.push(simple);
            continue;
        }
        let n = hex4(src, i).ok_or((escape, "invalid \\u escape"))?;
        i += 4;
        let c = match n {
            0xDC00..=0xDFFF => return Err((escape, "lone surrogate in a \\u escape")),
            0xD800..=0xDBFF => {
                // A high surrogate must be followed by a low one as the next escape.
                if src.get(i..i + 2) != Some(b"\\u") {
                    return Err((escape, "lone surrogate in a \\u escape"));
                }
                let low = hex4(src, i + 2).ok_or((i, "invalid \\u escape"))?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err((escape, "lone surrogate in a \\u escape"));
                }
                i += 6;
                0x1_0000 + ((u32::from(n) - 0xD800) << 10 | (u32::from(low) - 0xDC00))
            }
            _ => u32::from(n),
        };
        let c = char::from_u32(c).ok_or((escape, "invalid \\u escape"))?;
        dst.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    }
    // Decoded escapes are UTF-8; raw bytes need a check unless all ASCII.
    if !is_utf8(&dst[from..], str.ascii) {
        return Err((str.start, "string is not UTF-8"));
    }
    Ok(())
}

/// Where a span's ids are in the output and its times, for the span table's checks.
#[derive(Default)]
struct SpanIds {
    trace: Range<usize>,
    span: Range<usize>,
    parent: Range<usize>,
    start: u64,
    end: u64,
}

impl SpanIds {
    /// Takes field `tag` of a span from what writing it appended to `out` after `before`: the
    /// key and value of a bytes or fixed64 field, or nothing for a default value. The bytes
    /// stay where they are until the span is done: only messages nested after them move.
    fn see(&mut self, tag: u32, out: &[u8], before: usize) {
        // Keys of fields 1-15 take one byte.
        let Some(value) = out.get(before + 1..) else {
            return;
        };
        let bytes = || {
            let mut rest = value;
            let _ = prost::encoding::decode_varint(&mut rest);
            out.len() - rest.len()..out.len()
        };
        let fixed64 = || value.try_into().map_or(0, u64::from_le_bytes);
        match tag {
            1 => self.trace = bytes(),
            2 => self.span = bytes(),
            4 => self.parent = bytes(),
            7 => self.start = fixed64(),
            8 => self.end = fixed64(),
            _ => {}
        }
    }

    fn validate(&self, out: &[u8]) -> std::result::Result<(), crate::convert::SpanRejection> {
        validate_ids(
            &out[self.trace.clone()],
            &out[self.span.clone()],
            &out[self.parent.clone()],
            self.start,
            self.end,
        )
    }
}

/// Writes `hex` (as `const_hex::decode` reads it: even length, either case, optional `0x`)
/// as bytes field `tag`, unless empty.
fn put_hex(out: &mut Vec<u8>, tag: u32, hex: &[u8]) -> std::result::Result<(), String> {
    if !hex.len().is_multiple_of(2) {
        return Err(format!("not hex: odd number of digits ({})", hex.len()));
    }
    let digits = match hex {
        [b'0', b'x' | b'X', rest @ ..] => rest,
        _ => hex,
    };
    if digits.is_empty() {
        return Ok(());
    }
    if let Some(i) = digits.iter().position(|&d| HEX[usize::from(d)] > 0xf) {
        return Err(format!("not hex: {:?} at digit {i}", char::from(digits[i])));
    }
    encode_varint(u64::from(tag << 3 | LEN), out);
    encode_varint((digits.len() / 2) as u64, out);
    out.extend(
        digits
            .chunks_exact(2)
            .map(|pair| HEX[usize::from(pair[0])] << 4 | HEX[usize::from(pair[1])]),
    );
    Ok(())
}

/// Writes the length of the length-delimited field whose body starts `reserve` bytes after
/// `at` and runs to the end of `out`, moving the body when its length takes another number of
/// bytes than reserved, so the output stays canonical protobuf.
fn patch_len(out: &mut Vec<u8>, at: usize, reserve: usize) {
    let body = at + reserve;
    let len = out.len() - body;
    let need = encoded_len_varint(len as u64);
    if need != reserve {
        let end = out.len();
        if need > reserve {
            out.resize(end + need - reserve, 0);
        }
        out.copy_within(body..end, at + need);
        out.truncate(at + need + len);
    }
    let mut v = len as u64;
    for slot in &mut out[at..at + need] {
        *slot = (v as u8 & 0x7f) | 0x80;
        v >>= 7;
    }
    if let Some(last) = out.get_mut(at + need - 1) {
        *last &= 0x7f;
    }
}

#[cfg(test)]
mod tests {
    //! serde is the reference: for generated requests, their mutations and hand-written edge
    //! cases, a body is accepted here exactly when `serde_json::from_slice` accepts it, and
    //! the protobuf written decodes (prost) to the structs serde builds.

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
        any_value::Value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
    use prost::Message;

    use super::*;
    use crate::test_rng::Rng;
    use crate::wire::scan_request;

    /// Text as LLM spans carry it: prompts and completions with quotes, newlines, non-ASCII,
    /// control characters and JSON inside strings.
    const FRAGMENTS: &[&str] = &[
        "Summarize the attached contract in three bullet points.",
        "You are a helpful assistant. Answer in French: où est la gare ?",
        "{\"role\":\"user\",\"content\":\"What's the weather in Zürich?\"}",
        "line one\nline two\r\n\ttabbed",
        "emoji 😀🚀 and CJK 中文 and RTL שלום",
        "backslash \\ slash / quote \" done",
        "control \u{1} \u{1f} \u{7f} chars",
        "",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 beyond the BMP",
    ];

    fn text(rng: &mut Rng, max_parts: usize) -> String {
        (0..rng.below(max_parts) + 1)
            .map(|_| rng.pick(FRAGMENTS))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn kv(key: &str, value: Option<Value>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.map(|v| AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    /// Doubles that serde_json (without `float_roundtrip`) also reads back exactly.
    fn double(rng: &mut Rng) -> f64 {
        let choices = [
            0.0, -0.0, 0.7, 0.25, -1.5, 1e-3, 12345.5, 3.0e10, 1e300, 5e-324,
        ];
        if rng.chance(50) {
            choices[rng.below(choices.len())]
        } else {
            (rng.below(2_000_000) as f64 - 1e6) / 64.0
        }
    }

    fn value(rng: &mut Rng, depth: usize) -> Option<Value> {
        let pick = rng.below(if depth > 3 { 6 } else { 9 });
        Some(match pick {
            0 => return None,
            1 | 2 => Value::StringValue(text(rng, 3)),
            3 => Value::BoolValue(rng.chance(50)),
            4 => Value::IntValue(match rng.below(4) {
                0 => i64::MIN,
                1 => i64::MAX,
                2 => -(rng.below(1000) as i64),
                _ => rng.next() as i64,
            }),
            5 => Value::DoubleValue(double(rng)),
            6 => {
                let n = rng.below(20);
                Value::BytesValue(rng.bytes(n))
            }
            7 => Value::ArrayValue(ArrayValue {
                values: (0..rng.below(4))
                    .map(|_| AnyValue {
                        value: value(rng, depth + 1),
                    })
                    .collect(),
            }),
            _ => Value::KvlistValue(KeyValueList {
                values: (0..rng.below(4))
                    .map(|i| kv(&format!("k{i}"), value(rng, depth + 1)))
                    .collect(),
            }),
        })
    }

    fn attributes(rng: &mut Rng, n: usize) -> Vec<KeyValue> {
        const KEYS: &[&str] = &[
            "gen_ai.request.model",
            "gen_ai.usage.input_tokens",
            "gen_ai.prompt.0.content",
            "gen_ai.completion.0.content",
            "session.id",
            "user.id",
            "llm.token_count.total",
            "http.status_code",
            "naïve.kéy",
        ];
        (0..rng.below(n + 1))
            .map(|_| {
                let mut a = kv(rng.pick(KEYS), value(rng, 0));
                if rng.chance(3) {
                    a.key_strindex = rng.below(5) as i32 - 1;
                }
                a
            })
            .collect()
    }

    fn id(rng: &mut Rng, len: usize) -> Vec<u8> {
        match rng.below(20) {
            0 => vec![],
            1 => vec![0; len],
            2 => rng.bytes(len / 2),
            // Longer than any id the span table takes.
            3 => rng.bytes(len + 9),
            _ => rng.bytes(len),
        }
    }

    fn span(rng: &mut Rng) -> Span {
        let start = if rng.chance(3) {
            // Past the span table's signed nanoseconds.
            u64::MAX - rng.below(1 << 40) as u64
        } else {
            1_772_446_530_123_456_789 + rng.below(1 << 40) as u64
        };
        Span {
            trace_id: id(rng, 16),
            span_id: id(rng, 8),
            trace_state: if rng.chance(10) {
                "k=v,a=b".into()
            } else {
                String::new()
            },
            parent_span_id: if rng.chance(30) { vec![] } else { id(rng, 8) },
            flags: [0, 0x101, 0x301, u32::MAX][rng.below(4)],
            name: text(rng, 1),
            kind: rng.below(6) as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start.saturating_add(rng.below(1 << 34) as u64),
            attributes: attributes(rng, 12),
            dropped_attributes_count: rng.below(3) as u32,
            events: (0..rng.below(3))
                .map(|_| span::Event {
                    time_unix_nano: start.saturating_add(rng.below(1000) as u64),
                    name: "gen_ai.content.prompt".into(),
                    attributes: attributes(rng, 3),
                    dropped_attributes_count: rng.below(2) as u32,
                })
                .collect(),
            dropped_events_count: rng.below(2) as u32,
            links: (0..rng.below(2))
                .map(|_| span::Link {
                    trace_id: id(rng, 16),
                    span_id: id(rng, 8),
                    trace_state: "a=b".into(),
                    attributes: attributes(rng, 2),
                    dropped_attributes_count: rng.below(2) as u32,
                    flags: rng.below(0x400) as u32,
                })
                .collect(),
            dropped_links_count: rng.below(2) as u32,
            status: match rng.below(3) {
                0 => None,
                1 => Some(Status::default()),
                _ => Some(Status {
                    message: text(rng, 1),
                    code: rng.below(3) as i32,
                }),
            },
        }
    }

    fn request(rng: &mut Rng, spans: usize) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: (0..rng.below(3) + 1)
                .map(|_| ResourceSpans {
                    resource: rng.chance(80).then(|| Resource {
                        attributes: attributes(rng, 5),
                        dropped_attributes_count: rng.below(2) as u32,
                        entity_refs: (0..rng.below(2))
                            .map(|_| EntityRef {
                                schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
                                r#type: "service".into(),
                                id_keys: vec!["service.name".into(), String::new()],
                                description_keys: vec![],
                            })
                            .collect(),
                    }),
                    scope_spans: (0..rng.below(3))
                        .map(|_| ScopeSpans {
                            scope: rng.chance(80).then(|| InstrumentationScope {
                                name: "openllmetry".into(),
                                version: "0.62".into(),
                                attributes: attributes(rng, 2),
                                dropped_attributes_count: rng.below(2) as u32,
                            }),
                            spans: (0..rng.below(spans) + 1).map(|_| span(rng)).collect(),
                            schema_url: if rng.chance(50) {
                                "https://opentelemetry.io/schemas/1.30.0".into()
                            } else {
                                String::new()
                            },
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        }
    }

    /// Asserts the same verdict as serde and, when accepted, the same structs; returns the
    /// structs.
    fn agree(json: &[u8]) -> Option<ExportTraceServiceRequest> {
        let reference = serde_json::from_slice::<ExportTraceServiceRequest>(json);
        let ours = transcode_counted(json);
        match (reference, ours) {
            (Ok(expected), Ok((bytes, counted))) => {
                let got = ExportTraceServiceRequest::decode(bytes.as_slice())
                    .expect("the output is protobuf prost decodes");
                assert_eq!(got, expected, "json {}", String::from_utf8_lossy(json));
                let scan = scan_request(&bytes).expect("the output passes the wire scan");
                assert_eq!(
                    (counted.accepted, counted.rejected),
                    (scan.accepted, scan.rejected),
                    "spans counted as the scan counts them, json {}",
                    String::from_utf8_lossy(json)
                );
                Some(got)
            }
            (Err(_), Err(_)) => None,
            (reference, ours) => panic!(
                "serde: {:?}, transcode: {:?}, json {}",
                reference.err().map(|e| e.to_string()),
                ours.err().map(|e| e.to_string()),
                String::from_utf8_lossy(json)
            ),
        }
    }

    fn accepted(json: &str) -> ExportTraceServiceRequest {
        agree(json.as_bytes()).unwrap_or_else(|| panic!("refused: {json}"))
    }

    fn refused(json: &str) {
        assert!(agree(json.as_bytes()).is_none(), "accepted: {json}");
    }

    const IDS: &str = r#""traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331""#;

    /// A request of one span whose JSON fields are `fields`.
    fn with_span(fields: &str) -> String {
        format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{{fields}}}]}}]}}]}}"#)
    }

    fn first_span(req: &ExportTraceServiceRequest) -> &Span {
        &req.resource_spans[0].scope_spans[0].spans[0]
    }

    /// A request whose one span has one attribute of value `value` (a JSON AnyValue).
    fn with_value(value: &str) -> String {
        with_span(&format!(
            r#"{IDS},"attributes":[{{"key":"a","value":{value}}}]"#
        ))
    }

    fn value_of(json: &str) -> Option<Value> {
        first_span(&accepted(&with_value(json))).attributes[0]
            .value
            .as_ref()
            .and_then(|v| v.value.clone())
    }

    #[test]
    fn generated_requests_transcode_to_what_serde_decodes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..300 {
            let req = request(&mut rng, 20);
            let json = serde_json::to_vec(&req).expect("serializes");
            assert_eq!(agree(&json).as_ref(), Some(&req));
            // Fields keep the JSON's order (prost writes them by field number): same length.
            let bytes = transcode(&json).unwrap_or_default();
            assert_eq!(bytes.len(), req.encode_to_vec().len());
            let pretty = serde_json::to_vec_pretty(&req).expect("serializes");
            assert_eq!(agree(&pretty).as_ref(), Some(&req));
        }
    }

    #[test]
    fn mutated_bodies_get_serde_verdicts_and_structs() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let bases: Vec<Vec<u8>> = (0..8)
            .map(|i| {
                let req = request(&mut rng, 2);
                if i % 2 == 0 {
                    serde_json::to_vec(&req)
                } else {
                    serde_json::to_vec_pretty(&req)
                }
                .expect("serializes")
            })
            .collect();
        const ALPHABET: &[u8] = b"{}[]\",:\\ 0123456789abcdefxuABCDEF-+.eEnultrsfz\n\t\xc3\xa9\xff";
        let mut valid = 0;
        for round in 0..20_000 {
            let mut m = bases[round % bases.len()].clone();
            for _ in 0..1 + rng.below(3) {
                if m.is_empty() {
                    break;
                }
                let i = rng.below(m.len());
                match rng.below(6) {
                    0 => m[i] = ALPHABET[rng.below(ALPHABET.len())],
                    1 => m.insert(i, ALPHABET[rng.below(ALPHABET.len())]),
                    2 => {
                        m.remove(i);
                    }
                    3 => m.truncate(i),
                    _ => {
                        // Duplicate a stretch: repeated keys and array items.
                        let j = (i + rng.below(80)).min(m.len());
                        let stretch = m[i..j].to_vec();
                        m.splice(i..i, stretch);
                    }
                }
            }
            if agree(&m).is_some() {
                valid += 1;
            }
        }
        // Enough mutants stay valid for the struct comparison to mean something.
        assert!(valid > 2_000, "only {valid} mutants were valid");
    }

    #[test]
    fn unknown_keys_are_skipped_at_every_level() {
        let unknown = r#""x-extra":{"a":[1,-2.5e400,{"b":"\ud800 lone"}],"c":null,"d":true}"#;
        let req = accepted(&format!(
            r#"{{{unknown},"resourceSpans":[{{{unknown},"resource":{{{unknown}}},
               "scopeSpans":[{{{unknown},"scope":{{{unknown},"name":"s"}},"spans":[{{{unknown},{IDS},
               "status":{{{unknown},"code":2}},"events":[{{{unknown}}}],"links":[{{{unknown}}}],
               "attributes":[{{{unknown},"key":"k","value":{{"intValue":"1"}}}}]}}]}}]}}]}}"#
        ));
        assert_eq!(first_span(&req).attributes[0].key, "k");
        // serde skips these values without decoding their strings or numbers...
        let raw = with_span(&format!("{IDS},\"x\":\"\u{1}\"")).replace('\u{1}', "\u{e9}");
        accepted(&raw);
        let mut bad_utf8 = with_span(&format!("{IDS},\"x\":\"..\"")).into_bytes();
        let at = bad_utf8.len() - 9;
        bad_utf8[at] = 0xff;
        assert!(
            agree(&bad_utf8).is_some(),
            "invalid UTF-8 in a skipped string"
        );
        accepted(&with_span(&format!("{IDS},\"x\":[1e400]")));
        // ...but an AnyValue is read whole, unknown keys included.
        refused(&with_value(r#"{"stringValue":"x","other":1e400}"#));
        refused(&with_value(r#"{"stringValue":"x","other":["\ud800"]}"#));
        refused(&with_value(
            r#"{"kvlistValue":{"values":[{"key":"k","other":"\udc00"}]}}"#,
        ));
        assert_eq!(
            value_of(r#"{"stringValueStrindex":3,"stringValue":"x","other":{"y":[1.5]}}"#),
            Some(Value::StringValue("x".into()))
        );
        // Syntax errors count everywhere.
        refused(&with_span(&format!("{IDS},\"x\":[1,]")));
        refused(&with_span(&format!("{IDS},\"x\":{{\"a\" 1}}")));
        refused(&with_span(&format!("{IDS},\"x\":\"\\q\"")));
        refused(&with_span(&format!("{IDS},\"x\":01")));
        refused(&with_span(&format!("{IDS},\"x\":tru")));
    }

    #[test]
    fn integers_and_decimal_strings_follow_serde() {
        let time = |v: &str| with_span(&format!(r#"{IDS},"startTimeUnixNano":{v}"#));
        let start = |v: &str| first_span(&accepted(&time(v))).start_time_unix_nano;
        assert_eq!(start("123"), 123);
        assert_eq!(start(r#""123""#), 123);
        assert_eq!(start(r#""+123""#), 123);
        assert_eq!(start(r#""0123""#), 123);
        assert_eq!(start(r#""\u0031\u0032""#), 12);
        assert_eq!(start("18446744073709551615"), u64::MAX);
        for bad in [
            "-1",
            r#""-1""#,
            "1.0",
            "1e3",
            "-0",
            "18446744073709551616",
            r#"" 1""#,
            r#""""#,
            "null",
            "true",
            r#""1e3""#,
        ] {
            refused(&time(bad));
        }

        assert_eq!(value_of(r#"{"intValue":"-5"}"#), Some(Value::IntValue(-5)));
        assert_eq!(value_of(r#"{"intValue":-5}"#), Some(Value::IntValue(-5)));
        assert_eq!(value_of(r#"{"intValue":"+5"}"#), Some(Value::IntValue(5)));
        assert_eq!(value_of(r#"{"intValue":"-0"}"#), Some(Value::IntValue(0)));
        assert_eq!(
            value_of(r#"{"intValue":-9223372036854775808}"#),
            Some(Value::IntValue(i64::MIN))
        );
        for bad in [
            "9223372036854775808",
            r#""9223372036854775808""#,
            "1.5",
            "-0",
            "1e2",
            "true",
            r#""x""#,
        ] {
            refused(&with_value(&format!(r#"{{"intValue":{bad}}}"#)));
        }

        let span = |f: &str| accepted(&with_span(&format!("{IDS},{f}")));
        assert_eq!(first_span(&span(r#""kind":-1"#)).kind, -1);
        assert_eq!(first_span(&span(r#""kind":2147483647"#)).kind, i32::MAX);
        assert_eq!(first_span(&span(r#""flags":4294967295"#)).flags, u32::MAX);
        assert_eq!(
            first_span(&span(r#""droppedLinksCount":4294967295"#)).dropped_links_count,
            u32::MAX
        );
        for bad in [
            r#""kind":2147483648"#,
            r#""kind":"3""#,
            r#""kind":"SPAN_KIND_SERVER""#,
            r#""flags":-1"#,
            r#""flags":"1""#,
            r#""droppedAttributesCount":4294967296"#,
            r#""droppedAttributesCount":1.0"#,
            r#""status":{"code":"STATUS_CODE_OK"}"#,
        ] {
            refused(&with_span(&format!("{IDS},{bad}")));
        }
    }

    #[test]
    fn doubles_are_json_numbers_in_range() {
        for (json, expected) in [
            ("1", 1.0),
            ("-0", -0.0),
            ("1.5e300", 1.5e300),
            ("5e-324", 5e-324),
            ("1e-400", 0.0),
            ("18446744073709551615", 18446744073709551615.0),
            ("-9223372036854775809", -9223372036854775809.0),
        ] {
            let got = value_of(&format!(r#"{{"doubleValue":{json}}}"#));
            assert_eq!(got, Some(Value::DoubleValue(expected)), "{json}");
        }
        for bad in [
            "1e400",
            "-1e309",
            r#""1.5""#,
            r#""NaN""#,
            r#""Infinity""#,
            "true",
            ".5",
            "1.",
        ] {
            refused(&with_value(&format!(r#"{{"doubleValue":{bad}}}"#)));
        }
        // Correctly rounded where serde_json's fast path is not (documented in the module).
        let json = with_value(r#"{"doubleValue":9007199254740993.000000000000000000001}"#);
        let ours = ExportTraceServiceRequest::decode(
            transcode(json.as_bytes()).expect("valid").as_slice(),
        )
        .expect("protobuf");
        assert_eq!(
            first_span(&ours).attributes[0]
                .value
                .as_ref()
                .and_then(|v| v.value.clone()),
            Some(Value::DoubleValue(9007199254740994.0))
        );
    }

    #[test]
    fn escapes_and_unicode_decode_like_serde() {
        let name = |json: &str| {
            first_span(&accepted(&with_span(&format!(r#"{IDS},"name":{json}"#))))
                .name
                .clone()
        };
        assert_eq!(name(r#""caf\u00e9""#), "café");
        assert_eq!(name(r#""\ud83d\ude00!""#), "😀!");
        assert_eq!(name(r#""\"\\\/\b\f\n\r\t""#), "\"\\/\u{8}\u{c}\n\r\t");
        assert_eq!(name("\"raw é 😀\""), "raw é 😀");
        assert_eq!(name(r#""\u0000""#), "\0");
        // Escaped keys are keys.
        let req = accepted(&with_span(&format!(r#"{IDS},"na\u006de":"n""#)));
        assert_eq!(first_span(&req).name, "n");
        for bad in [
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#""\ud800\n""#,
            r#""\x""#,
            r#""\u12""#,
            r#""\u12g4""#,
            "\"tab\tinside\"",
            "\"unterminated",
            "5",
            "null",
        ] {
            refused(&with_span(&format!(r#"{IDS},"name":{bad}"#)));
        }
        let mut bad = with_span(&format!(r#"{IDS},"name":"..""#)).into_bytes();
        let at = bad.len() - 9;
        bad[at] = 0xc3;
        assert!(agree(&bad).is_none(), "invalid UTF-8 in a name");
        let mut bad = with_span(&format!(r#"{IDS},"name":"\n..""#)).into_bytes();
        let at = bad.len() - 9;
        bad[at] = 0xff;
        assert!(agree(&bad).is_none(), "invalid UTF-8 in an escaped name");
    }

    /// Strings are searched 8 bytes at a time for their first 16 bytes and with memchr after:
    /// a quote, backslash escape, control character or non-UTF-8 byte at every position of
    /// strings of every length across those bounds gets serde's verdict and value.
    #[test]
    fn every_position_of_short_and_long_strings_is_checked() {
        for len in 0..48 {
            for at in 0..len {
                for (what, bytes) in [
                    ("escape", &b"\\n"[..]),
                    ("escaped quote", b"\\\""),
                    ("control", b"\t"),
                    ("two-byte UTF-8", "é".as_bytes()),
                    ("four-byte UTF-8", "😀".as_bytes()),
                    ("invalid UTF-8", b"\xc3"),
                    ("stray continuation", b"\x80"),
                ] {
                    let mut name = vec![b'x'; len];
                    name.splice(at..at + 1, bytes.iter().copied());
                    let mut json = with_span(&format!(r#"{IDS},"name":"NAME""#)).into_bytes();
                    let hole = json.windows(4).position(|w| w == b"NAME").unwrap_or(0);
                    json.splice(hole..hole + 4, name.iter().copied());
                    // `agree` compares the verdict and the decoded span with serde's.
                    let got = agree(&json);
                    let valid = !matches!(what, "control" | "invalid UTF-8" | "stray continuation");
                    assert_eq!(got.is_some(), valid, "{what} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn ids_are_hex_of_any_even_length() {
        let span =
            |trace: &str| with_span(&format!(r#""traceId":{trace},"spanId":"0102030405060708""#));
        let trace = |json: &str| first_span(&accepted(&span(json))).trace_id.clone();
        assert_eq!(
            trace(r#""0AF7651916CD43DD8448EB211C80319c""#),
            hex::decode("0af7651916cd43dd8448eb211c80319c").unwrap_or_default()
        );
        assert_eq!(trace(r#""0x0102""#), vec![1, 2]);
        assert_eq!(trace(r#""0X0102""#), vec![1, 2]);
        assert_eq!(trace(r#""0x""#), Vec::<u8>::new());
        assert_eq!(trace(r#""""#), Vec::<u8>::new());
        assert_eq!(trace(r#""\u0030\u0031""#), vec![1]);
        assert_eq!(trace(r#""abcd""#), vec![0xab, 0xcd]);
        for bad in [
            r#""abc""#,
            r#""0x1""#,
            r#""zz""#,
            r#""00g0""#,
            "12",
            "null",
            r#""AQID""#,
        ] {
            refused(&span(bad));
        }
    }

    #[test]
    fn bytes_values_are_standard_base64() {
        assert_eq!(
            value_of(r#"{"bytesValue":"AAEC"}"#),
            Some(Value::BytesValue(vec![0, 1, 2]))
        );
        assert_eq!(
            value_of(r#"{"bytesValue":"AA=="}"#),
            Some(Value::BytesValue(vec![0]))
        );
        assert_eq!(
            value_of(r#"{"bytesValue":""}"#),
            Some(Value::BytesValue(vec![]))
        );
        let long = format!(r#"{{"bytesValue":"{}"}}"#, "QUJD".repeat(100));
        assert_eq!(value_of(&long), Some(Value::BytesValue(b"ABC".repeat(100))));
        for bad in [r#""AAE""#, r#""AB==""#, r#""-_8=""#, r#""A A=""#, "1", "[]"] {
            refused(&with_value(&format!(r#"{{"bytesValue":{bad}}}"#)));
        }
    }

    #[test]
    fn any_value_keys_may_repeat_and_the_last_non_null_wins() {
        assert_eq!(
            value_of(r#"{"stringValue":"a","stringValue":"b"}"#),
            Some(Value::StringValue("b".into()))
        );
        assert_eq!(
            value_of(r#"{"stringValue":"a","intValue":"5"}"#),
            Some(Value::IntValue(5))
        );
        assert_eq!(
            value_of(r#"{"stringValue":"a","stringValue":null}"#),
            Some(Value::StringValue("a".into()))
        );
        assert_eq!(
            value_of(r#"{"arrayValue":{"values":[{"intValue":1}]},"arrayValue":{"values":[]}}"#),
            Some(Value::ArrayValue(ArrayValue { values: vec![] }))
        );
        assert_eq!(value_of(r#"{"stringValue":null,"boolValue":null}"#), None);
        assert_eq!(
            value_of(r#"{"stringValue":""}"#),
            Some(Value::StringValue(String::new()))
        );
        assert_eq!(
            value_of(r#"{"boolValue":false}"#),
            Some(Value::BoolValue(false))
        );
        assert_eq!(
            value_of(r#"{"doubleValue":0}"#),
            Some(Value::DoubleValue(0.0))
        );
        // A bad value counts even when a later one would replace it.
        refused(&with_value(r#"{"intValue":"x","stringValue":"a"}"#));
        // Elsewhere a repeated key is an error, null or not.
        for dup in [
            r#""name":"a","name":"b""#,
            r#""traceId":"01","traceId":"02""#,
            r#""status":null,"status":{}"#,
            r#""attributes":[],"attributes":[]"#,
        ] {
            refused(&with_span(&format!("{IDS},{dup}")));
        }
        refused(&with_value(r#"{"arrayValue":{"values":[],"values":[]}}"#));
        refused(r#"{"resourceSpans":[],"resourceSpans":[]}"#);
        refused(&with_span(&format!(
            r#"{IDS},"attributes":[{{"key":"a","key":"b"}}]"#
        )));
    }

    #[test]
    fn null_means_absent_only_for_messages_and_any_value_members() {
        let req = accepted(&format!(
            r#"{{"resourceSpans":[{{"resource":null,"scopeSpans":[{{"scope":null,
               "spans":[{{{IDS},"status":null,"attributes":[{{"key":"k","value":null}}]}}]}}]}}]}}"#
        ));
        assert_eq!(req.resource_spans[0].resource, None);
        assert_eq!(first_span(&req).status, None);
        assert_eq!(first_span(&req).attributes[0].value, None);
        // An empty object is a present, empty message.
        let req = accepted(&with_span(&format!(
            r#"{IDS},"status":{{}},"attributes":[{{"key":"k","value":{{}}}}]"#
        )));
        assert_eq!(first_span(&req).status, Some(Status::default()));
        assert_eq!(
            first_span(&req).attributes[0].value,
            Some(AnyValue { value: None })
        );
        for bad in [
            r#""name":null"#,
            r#""attributes":null"#,
            r#""kind":null"#,
            r#""startTimeUnixNano":null"#,
            r#""events":[null]"#,
            r#""attributes":[{"key":null}]"#,
        ] {
            refused(&with_span(&format!("{IDS},{bad}")));
        }
        refused(r#"{"resourceSpans":null}"#);
        refused(&with_value(r#"{"arrayValue":{"values":[null]}}"#));
        refused(&with_value(r#""text""#));
    }

    #[test]
    fn required_keys_are_required() {
        refused(&with_span(&format!(
            r#"{IDS},"attributes":[{{"value":{{"intValue":1}}}}]"#
        )));
        refused(&with_value(r#"{"arrayValue":{}}"#));
        refused(&with_value(r#"{"kvlistValue":{"other":[]}}"#));
        refused(&with_value(r#"{"kvlistValue":{"values":[{"value":{}}]}}"#));
        let entity = |fields: &str| {
            format!(r#"{{"resourceSpans":[{{"resource":{{"entityRefs":[{{{fields}}}]}}}}]}}"#)
        };
        let req = accepted(&entity(
            r#""schemaUrl":"","type":"service","idKeys":["a",""],"descriptionKeys":[]"#,
        ));
        let refs = &req.resource_spans[0]
            .resource
            .as_ref()
            .map(|r| r.entity_refs.clone());
        assert_eq!(
            refs.as_ref().map(|r| r[0].id_keys.clone()),
            Some(vec!["a".into(), String::new()])
        );
        refused(&entity(r#""schemaUrl":"","type":"service","idKeys":[]"#));
        refused(&entity(
            r#""schemaUrl":"","type":"service","idKeys":[null],"descriptionKeys":[]"#,
        ));
        // Everything else defaults.
        assert_eq!(accepted("{}"), ExportTraceServiceRequest::default());
        accepted(r#"{"resourceSpans":[{}]}"#);
        accepted(r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{}]}]}]}"#);
    }

    #[test]
    fn the_body_is_one_object_and_whitespace_goes_anywhere() {
        for bad in [
            "",
            " ",
            "null",
            "\"x\"",
            "{} x",
            "{}{}",
            "\u{feff}{}",
            "{",
            "{\"resourceSpans\":[]",
        ] {
            refused(bad);
        }
        accepted(" \t\r\n{ \"resourceSpans\" : [ ] } \n");
        let mut rng = Rng(7);
        let req = request(&mut rng, 3);
        let json = serde_json::to_string(&req).expect("serializes");
        // Whitespace after every structural character outside strings.
        let mut spaced = String::new();
        let (mut in_string, mut escaped) = (false, false);
        for c in json.chars() {
            spaced.push(c);
            if in_string {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_string = false;
                    spaced.push_str(" \n");
                }
            } else if c == '"' {
                in_string = true;
            } else if "{}[],:".contains(c) {
                spaced.push_str("\t\r\n ");
            }
        }
        assert_eq!(accepted(&spaced), req);
    }

    #[test]
    fn every_truncation_is_refused() {
        let mut rng = Rng(11);
        let json = serde_json::to_vec(&request(&mut rng, 2)).expect("serializes");
        for end in 0..json.len() {
            assert!(
                agree(&json[..end]).is_none(),
                "prefix of {end} bytes accepted"
            );
        }
    }

    #[test]
    fn nesting_is_bounded_like_serde_json() {
        let nested = |levels: usize| {
            let mut v = r#"{"intValue":1}"#.to_string();
            for _ in 0..levels {
                v = format!(r#"{{"arrayValue":{{"values":[{v}]}}}}"#);
            }
            with_value(&v)
        };
        // The first AnyValue is the 10th level, each arrayValue adds 3 and kvlistValue 4:
        // serde_json refuses the 128th.
        let limit = (0..60).find(|&n| agree(nested(n).as_bytes()).is_none());
        assert_eq!(limit, Some(40));
        let kvlists = |levels: usize| {
            let mut v = r#"{"intValue":1}"#.to_string();
            for _ in 0..levels {
                v = format!(r#"{{"kvlistValue":{{"values":[{{"key":"k","value":{v}}}]}}}}"#);
            }
            with_value(&v)
        };
        assert_eq!(
            (0..60).find(|&n| agree(kvlists(n).as_bytes()).is_none()),
            Some(30)
        );
        // Skipped values nest without limit (serde skips them without recursion), and a
        // hostile depth neither overflows the stack nor is accepted unterminated.
        let deep = 1_000_000;
        let skipped = format!(
            r#"{{"x":{}{},"resourceSpans":[]}}"#,
            "[".repeat(deep),
            "]".repeat(deep)
        );
        accepted(&skipped);
        refused(&format!(r#"{{"x":{}"#, "[{\"a\":".repeat(deep)));
        refused(&with_value(&format!(
            r#"{{"x":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        )));
        refused(&with_value(&format!(r#"{{"x":{}"#, "[".repeat(deep))));
    }

    #[test]
    fn structs_written_as_arrays_are_refused_unlike_serde() {
        // serde accepts a message as an array of its fields in declaration order; OTLP/JSON
        // has no such form (module docs).
        for json in [&br#"{"resourceSpans":[[null,[],""]]}"#[..], b"[]", b"[[]]"] {
            assert!(serde_json::from_slice::<ExportTraceServiceRequest>(json).is_ok());
            assert!(transcode(json).is_err());
        }
    }

    #[test]
    fn errors_say_where_and_what() {
        let span = |trace: &str| format!(r#"{{"traceId":"{trace}","spanId":"0102030405060708"}}"#);
        let good = span("0af7651916cd43dd8448eb211c80319c");
        let json = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[]}},{{"spans":[{good},{good},{good},{}]}}]}}]}}"#,
            span("0af7651916cd43dd8448eb211c80319")
        );
        let err = transcode(json.as_bytes())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with(
                "resourceSpans[0].scopeSpans[1].spans[3].traceId: not hex: odd number of digits (31)"
            ),
            "{err}"
        );
        let err = transcode(with_value(r#"{"bytesValue":"!"}"#).as_bytes())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with(
                "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.bytesValue: not base64"
            ),
            "{err}"
        );
        let err = transcode(b"{\"resourceSpans\":[{]}")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            err,
            "resourceSpans[0]: expected a string key, found ']' (at byte 19)"
        );
        let err = transcode(with_span(r#""kind":"SPAN_KIND_SERVER""#).as_bytes())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("spans[0].kind: expected an integer, found a string"),
            "{err}"
        );
    }
}
