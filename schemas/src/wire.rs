//! OTLP trace requests read in place from their protobuf bytes: no struct per span, no
//! `String` per attribute. Ingest validates every request with [`scan_request`] before it is
//! written to the WAL, and `convert` builds Arrow columns straight from the views here.
//!
//! What is accepted is exactly what prost accepts for `ExportTraceServiceRequest` (the tests
//! check this on mutated requests): wire types of known fields, UTF-8 of every string field at
//! any depth, varints of at most 10 bytes, groups in unknown fields, prost's recursion limit of
//! 100 nested messages; unknown fields are skipped. Repeated occurrences of a field follow
//! protobuf's merge rules: the last scalar wins, repeated fields and sub-messages accumulate.

use std::fmt;

use crate::convert::{SpanRejection, validate_ids};

/// Why bytes are not a valid `ExportTraceServiceRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(&'static str);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for WireError {}

type Result<T> = std::result::Result<T, WireError>;

/// prost's default recursion limit: a message nested 100 levels below the request is still
/// read, but none below it, and an unknown field in it is refused (prost's skip of an unknown
/// field checks the limit too).
const RECURSION_LIMIT: u32 = 100;

const RECURSION: WireError = WireError("recursion limit reached");

/// An unknown field of a message nested `depth` levels down: skipped, unless at the limit.
/// Only the messages that nest without bound (`AnyValue`, `ArrayValue`, `KeyValueList`,
/// `KeyValue`) can get there; the others sit at fixed depths under 10.
fn unknown_field(depth: u32) -> Result<()> {
    if depth >= RECURSION_LIMIT {
        Err(RECURSION)
    } else {
        Ok(())
    }
}

/// One field's value as it is on the wire.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
    /// A group (deprecated wire types 3/4), skipped; only unknown fields may be groups.
    Group,
}

impl<'a> Value<'a> {
    fn varint(self) -> Result<u64> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err(WireError("invalid wire type for a varint field")),
        }
    }

    fn fixed64(self) -> Result<u64> {
        match self {
            Value::Fixed64(v) => Ok(v),
            _ => Err(WireError("invalid wire type for a fixed64 field")),
        }
    }

    fn fixed32(self) -> Result<u32> {
        match self {
            Value::Fixed32(v) => Ok(v),
            _ => Err(WireError("invalid wire type for a fixed32 field")),
        }
    }

    fn bytes(self) -> Result<&'a [u8]> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(WireError("invalid wire type for a length-delimited field")),
        }
    }

    /// A string field's text when `KEEP`; otherwise only its check, and `""`.
    fn text<const KEEP: bool>(self) -> Result<&'a str> {
        text::<KEEP>(self.bytes()?)
    }
}

/// The bytes of a string field as text when `KEEP`; otherwise only their check, and `""`.
fn text<const KEEP: bool>(b: &[u8]) -> Result<&str> {
    if KEEP {
        // simdutf8 checks ASCII-heavy text several times faster than std, same verdict.
        return simdutf8::basic::from_utf8(b).map_err(|_| NOT_UTF8);
    }
    // simdutf8 hands strings under 64 bytes to std's check, which costs twice an ASCII test
    // on the short keys and values that most attributes are.
    if (b.len() < 64 && b.is_ascii()) || simdutf8::basic::from_utf8(b).is_ok() {
        Ok("")
    } else {
        Err(NOT_UTF8)
    }
}

const NOT_UTF8: WireError = WireError("invalid string value: data is not UTF-8 encoded");

/// The fields of one message, in wire order.
#[derive(Clone)]
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf, pos: 0 }
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64> {
        // Tags and most lengths fit in one byte.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(WireError("invalid varint"));
            };
            self.pos += 1;
            // The tenth byte holds only the top bit of a u64.
            if i == 9 && b > 1 {
                return Err(WireError("invalid varint"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(WireError("invalid varint"))
    }

    /// The bytes of a length-delimited field whose one-byte key is `key`, if that field is
    /// next.
    fn tagged_bytes(&mut self, key: u8) -> Option<&'a [u8]> {
        if self.buf.get(self.pos) != Some(&key) {
            return None;
        }
        self.pos += 1;
        let len = usize::try_from(self.varint().ok()?).ok()?;
        self.take(len).ok()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(WireError("buffer underflow"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn key(&mut self) -> Result<(u32, u8)> {
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| WireError("invalid key value"))?;
        let (tag, wire_type) = (key >> 3, (key & 7) as u8);
        if wire_type > 5 {
            return Err(WireError("invalid wire type value"));
        }
        if tag == 0 {
            return Err(WireError("invalid tag value: 0"));
        }
        Ok((tag, wire_type))
    }

    /// Skips a group whose start tag was `tag`, as prost does: each field inside counts one
    /// more level toward the recursion limit (`depth` is that level).
    fn skip_group(&mut self, tag: u32, depth: u32) -> Result<()> {
        loop {
            let (inner, wire_type) = self.key()?;
            if wire_type == 4 {
                return if inner == tag {
                    Ok(())
                } else {
                    Err(WireError("unexpected end group tag"))
                };
            }
            if depth >= RECURSION_LIMIT {
                return Err(RECURSION);
            }
            if wire_type == 3 {
                self.skip_group(inner, depth + 1)?;
            } else {
                self.value(wire_type)?;
            }
        }
    }

    fn value(&mut self, wire_type: u8) -> Result<Value<'a>> {
        Ok(match wire_type {
            0 => Value::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                Value::Fixed64(u64::from_le_bytes(
                    b.try_into().map_err(|_| WireError("buffer underflow"))?,
                ))
            }
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| WireError("buffer underflow"))?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes(
                    b.try_into().map_err(|_| WireError("buffer underflow"))?,
                ))
            }
            _ => Value::Group,
        })
    }

    /// The next field of a message nested `depth` levels below the request; a group is
    /// skipped whole.
    fn next_at(&mut self, depth: u32) -> Option<Result<(u32, Value<'a>)>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        Some(self.key().and_then(|(tag, wire_type)| {
            match wire_type {
                3 => self
                    .skip_group(tag, depth + 1)
                    .map(|()| (tag, Value::Group)),
                4 => Err(WireError("unexpected end group tag")),
                _ => self.value(wire_type).map(|v| (tag, v)),
            }
        }))
    }
}

/// Calls `f` on every field of the message `buf`, nested `depth` levels below the request,
/// after prost's recursion check.
fn each_field<'a>(
    buf: &'a [u8],
    depth: u32,
    mut f: impl FnMut(u32, Value<'a>) -> Result<()>,
) -> Result<()> {
    if depth > RECURSION_LIMIT {
        return Err(RECURSION);
    }
    let mut fields = fields(buf);
    while let Some(field) = fields.next_at(depth) {
        let (tag, v) = field?;
        f(tag, v)?;
    }
    Ok(())
}

/// An attribute value as found on the wire (the last `value` occurrence of a `KeyValue`).
#[derive(Debug, Clone, Copy)]
pub enum AnyValueRef<'a> {
    /// No value set.
    Empty,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// Arrays, kvlists, bytes and string-table indexes, rare in spans: the whole `KeyValue`
    /// bytes, rendered through prost.
    Other(&'a [u8]),
}

/// A validated `KeyValue`.
#[derive(Debug, Clone, Copy)]
pub struct KeyValueRef<'a> {
    pub key: &'a str,
    pub value: AnyValueRef<'a>,
}

/// Validates an `AnyValue` at `depth` and says what it holds.
fn any_value<const KEEP: bool>(buf: &[u8], depth: u32) -> Result<AnyValueRef<'_>> {
    let mut out = AnyValueRef::Empty;
    each_field(buf, depth, |tag, v| {
        out = match tag {
            1 => AnyValueRef::Str(v.text::<KEEP>()?),
            2 => AnyValueRef::Bool(v.varint()? != 0),
            3 => AnyValueRef::Int(v.varint()? as i64),
            4 => AnyValueRef::Double(f64::from_bits(v.fixed64()?)),
            // ArrayValue and KeyValueList: their items are field 1.
            5 => {
                each_field(v.bytes()?, depth + 1, |t, item| {
                    if t == 1 {
                        any_value::<KEEP>(item.bytes()?, depth + 2)?;
                        Ok(())
                    } else {
                        unknown_field(depth + 1)
                    }
                })?;
                AnyValueRef::Other(buf)
            }
            6 => {
                each_field(v.bytes()?, depth + 1, |t, item| {
                    if t == 1 {
                        key_value::<KEEP>(item.bytes()?, depth + 2)?;
                        Ok(())
                    } else {
                        unknown_field(depth + 1)
                    }
                })?;
                AnyValueRef::Other(buf)
            }
            7 => {
                v.bytes()?;
                AnyValueRef::Other(buf)
            }
            8 => {
                v.varint()?;
                AnyValueRef::Other(buf)
            }
            _ => {
                unknown_field(depth)?;
                out
            }
        };
        Ok(())
    })?;
    Ok(out)
}

/// Validates a `KeyValue` at `depth`.
fn key_value<const KEEP: bool>(buf: &[u8], depth: u32) -> Result<KeyValueRef<'_>> {
    // The `AnyValue` inside is one level further down.
    if depth < RECURSION_LIMIT
        && let Some(kv) = plain_key_value::<KEEP>(buf)
    {
        return Ok(kv);
    }
    let mut key = "";
    let mut value = AnyValueRef::Empty;
    let mut values = 0;
    each_field(buf, depth, |tag, v| {
        match tag {
            1 => key = v.text::<KEEP>()?,
            2 => {
                values += 1;
                value = any_value::<KEEP>(v.bytes()?, depth + 1)?;
            }
            3 => {
                v.varint()?;
            }
            _ => unknown_field(depth)?,
        }
        Ok(())
    })?;
    // Two `value` occurrences merge by protobuf's rules, and complex values are rendered
    // from prost structs: both are rare, and prost decodes the whole `KeyValue` for them.
    if values > 1 || matches!(value, AnyValueRef::Other(_)) {
        value = AnyValueRef::Other(buf);
    }
    Ok(KeyValueRef { key, value })
}

/// The `KeyValue` nearly every attribute is, read without the general field loop: field 1
/// (the key) then field 2 (the value) holding one string, bool, int or double field or
/// nothing, each tag in its one-byte form. Anything else, invalid text included, is `None`
/// and takes the general path, which gives the same value or the error.
fn plain_key_value<const KEEP: bool>(buf: &[u8]) -> Option<KeyValueRef<'_>> {
    let mut f = fields(buf);
    let key = f.tagged_bytes(0x0a)?;
    let value = f.tagged_bytes(0x12)?;
    if f.pos != buf.len() {
        return None;
    }
    let mut v = fields(value);
    let value = match value.first() {
        None => AnyValueRef::Empty,
        Some(0x0a) => AnyValueRef::Str(text::<KEEP>(v.tagged_bytes(0x0a)?).ok()?),
        Some(0x10) => {
            v.pos = 1;
            AnyValueRef::Bool(v.varint().ok()? != 0)
        }
        Some(0x18) => {
            v.pos = 1;
            AnyValueRef::Int(v.varint().ok()? as i64)
        }
        Some(0x21) => {
            v.pos = 1;
            AnyValueRef::Double(f64::from_bits(u64::from_le_bytes(
                v.take(8).ok()?.try_into().ok()?,
            )))
        }
        Some(_) => return None,
    };
    if v.pos != v.buf.len() {
        return None;
    }
    Some(KeyValueRef {
        key: text::<KEEP>(key).ok()?,
        value,
    })
}

/// Where the attributes, events and links of a request's spans are kept, each span holding
/// ranges into them: one pass over the bytes finds and validates everything.
#[derive(Default)]
struct Arenas<'a> {
    span_attributes: Vec<KeyValueRef<'a>>,
    events: Vec<EventRef<'a>>,
    event_attributes: Vec<KeyValueRef<'a>>,
    links: Vec<LinkRef<'a>>,
    link_attributes: Vec<KeyValueRef<'a>>,
    /// A scan's verdicts on the spans, which it does not keep.
    scan: Scan,
}

/// How many items a request's arenas held (see [`Request::parse`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ArenaSizes([usize; 5]);

impl<'a> Arenas<'a> {
    /// Arenas with room for `sizes`, but never for more items than `bytes` of a request can
    /// hold (each takes at least its field's tag and length byte), so a small request after a
    /// large one does not reserve the large one's room.
    fn sized(sizes: &ArenaSizes, bytes: usize) -> Self {
        fn room<T>(items: usize, bytes: usize) -> Vec<T> {
            Vec::with_capacity(items.min(bytes / 2))
        }
        let [
            span_attributes,
            events,
            event_attributes,
            links,
            link_attributes,
        ] = sizes.0;
        Self {
            span_attributes: room(span_attributes, bytes),
            events: room(events, bytes),
            event_attributes: room(event_attributes, bytes),
            links: room(links, bytes),
            link_attributes: room(link_attributes, bytes),
            scan: Scan::default(),
        }
    }

    fn sizes(&self) -> ArenaSizes {
        ArenaSizes([
            self.span_attributes.len(),
            self.events.len(),
            self.event_attributes.len(),
            self.links.len(),
            self.link_attributes.len(),
        ])
    }
}

/// A range of one of the request's arenas.
#[derive(Debug, Clone, Copy, Default)]
pub struct Slots {
    start: u32,
    end: u32,
}

impl Slots {
    fn of<T>(self, arena: &[T]) -> &[T] {
        arena
            .get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

/// A validated `InstrumentationScope`.
#[derive(Debug, Clone, Default)]
pub struct ScopeRef<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub attributes: Vec<KeyValueRef<'a>>,
    pub dropped_attributes_count: u32,
}

/// A validated `Resource`.
#[derive(Debug, Clone, Default)]
pub struct ResourceRef<'a> {
    pub attributes: Vec<KeyValueRef<'a>>,
    pub dropped_attributes_count: u32,
}

/// The scalar fields of a validated `Span`; its attributes, events and links are in the
/// [`Request`]'s arenas.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpanRef<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a str,
    pub parent_span_id: &'a [u8],
    pub flags: u32,
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub dropped_attributes_count: u32,
    pub dropped_events_count: u32,
    pub dropped_links_count: u32,
    pub status_code: i32,
    pub status_message: &'a str,
    attributes: Slots,
    events: Slots,
    links: Slots,
}

impl SpanRef<'_> {
    /// Checks ids and times as [`crate::convert::validate_span`] does.
    pub fn validate(&self) -> std::result::Result<(), SpanRejection> {
        validate_ids(
            self.trace_id,
            self.span_id,
            self.parent_span_id,
            self.start_time_unix_nano,
            self.end_time_unix_nano,
        )
    }
}

/// A validated `Span.Event`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventRef<'a> {
    pub time_unix_nano: u64,
    pub name: &'a str,
    pub dropped_attributes_count: u32,
    attributes: Slots,
}

/// A validated `Span.Link`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkRef<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a str,
    pub dropped_attributes_count: u32,
    pub flags: u32,
    attributes: Slots,
}

fn resource<'a, const KEEP: bool>(
    buf: &'a [u8],
    depth: u32,
    out: &mut ResourceRef<'a>,
) -> Result<()> {
    each_field(buf, depth, |tag, v| {
        match tag {
            1 => keep::<KEEP, _>(
                &mut out.attributes,
                key_value::<KEEP>(v.bytes()?, depth + 1)?,
            ),
            2 => out.dropped_attributes_count = v.varint()? as u32,
            // EntityRef: four string fields (two of them repeated), checked for UTF-8 only.
            3 => each_field(v.bytes()?, depth + 1, |t, x| {
                if (1..=4).contains(&t) {
                    x.text::<KEEP>()?;
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })
}

fn scope<'a, const KEEP: bool>(buf: &'a [u8], depth: u32, out: &mut ScopeRef<'a>) -> Result<()> {
    each_field(buf, depth, |tag, v| {
        match tag {
            1 => out.name = v.text::<KEEP>()?,
            2 => out.version = v.text::<KEEP>()?,
            3 => keep::<KEEP, _>(
                &mut out.attributes,
                key_value::<KEEP>(v.bytes()?, depth + 1)?,
            ),
            4 => out.dropped_attributes_count = v.varint()? as u32,
            _ => {}
        }
        Ok(())
    })
}

/// Pushes `item` when the parse keeps what it finds; a scan only checks it.
fn keep<const KEEP: bool, T>(arena: &mut Vec<T>, item: T) {
    if KEEP {
        arena.push(item);
    }
}

/// The range of `arena` pushed since it held `start` items.
fn pushed<T>(arena: &[T], start: usize) -> Slots {
    Slots {
        start: start as u32,
        end: arena.len() as u32,
    }
}

fn event<'a, const KEEP: bool>(buf: &'a [u8], depth: u32, arenas: &mut Arenas<'a>) -> Result<()> {
    let mut out = EventRef::default();
    let start = arenas.event_attributes.len();
    each_field(buf, depth, |tag, v| {
        match tag {
            1 => out.time_unix_nano = v.fixed64()?,
            2 => out.name = v.text::<KEEP>()?,
            3 => keep::<KEEP, _>(
                &mut arenas.event_attributes,
                key_value::<KEEP>(v.bytes()?, depth + 1)?,
            ),
            4 => out.dropped_attributes_count = v.varint()? as u32,
            _ => {}
        }
        Ok(())
    })?;
    out.attributes = pushed(&arenas.event_attributes, start);
    keep::<KEEP, _>(&mut arenas.events, out);
    Ok(())
}

fn link<'a, const KEEP: bool>(buf: &'a [u8], depth: u32, arenas: &mut Arenas<'a>) -> Result<()> {
    let mut out = LinkRef::default();
    let start = arenas.link_attributes.len();
    each_field(buf, depth, |tag, v| {
        match tag {
            1 => out.trace_id = v.bytes()?,
            2 => out.span_id = v.bytes()?,
            3 => out.trace_state = v.text::<KEEP>()?,
            4 => keep::<KEEP, _>(
                &mut arenas.link_attributes,
                key_value::<KEEP>(v.bytes()?, depth + 1)?,
            ),
            5 => out.dropped_attributes_count = v.varint()? as u32,
            6 => out.flags = v.fixed32()?,
            _ => {}
        }
        Ok(())
    })?;
    out.attributes = pushed(&arenas.link_attributes, start);
    keep::<KEEP, _>(&mut arenas.links, out);
    Ok(())
}

fn status<'a, const KEEP: bool>(buf: &'a [u8], depth: u32, out: &mut SpanRef<'a>) -> Result<()> {
    each_field(buf, depth, |tag, v| {
        match tag {
            2 => out.status_message = v.text::<KEEP>()?,
            3 => out.status_code = v.varint()? as i32,
            _ => {}
        }
        Ok(())
    })
}

/// Validates a `Span` at `depth`, with everything below it.
fn span<'a, const KEEP: bool>(
    buf: &'a [u8],
    depth: u32,
    arenas: &mut Arenas<'a>,
) -> Result<SpanRef<'a>> {
    let mut out = SpanRef::default();
    let starts = (
        arenas.span_attributes.len(),
        arenas.events.len(),
        arenas.links.len(),
    );
    each_field(buf, depth, |tag, v| {
        match tag {
            1 => out.trace_id = v.bytes()?,
            2 => out.span_id = v.bytes()?,
            3 => out.trace_state = v.text::<KEEP>()?,
            4 => out.parent_span_id = v.bytes()?,
            5 => out.name = v.text::<KEEP>()?,
            6 => out.kind = v.varint()? as i32,
            7 => out.start_time_unix_nano = v.fixed64()?,
            8 => out.end_time_unix_nano = v.fixed64()?,
            9 => keep::<KEEP, _>(
                &mut arenas.span_attributes,
                key_value::<KEEP>(v.bytes()?, depth + 1)?,
            ),
            10 => out.dropped_attributes_count = v.varint()? as u32,
            11 => event::<KEEP>(v.bytes()?, depth + 1, arenas)?,
            12 => out.dropped_events_count = v.varint()? as u32,
            13 => link::<KEEP>(v.bytes()?, depth + 1, arenas)?,
            14 => out.dropped_links_count = v.varint()? as u32,
            15 => status::<KEEP>(v.bytes()?, depth + 1, &mut out)?,
            16 => out.flags = v.fixed32()?,
            _ => {}
        }
        Ok(())
    })?;
    out.attributes = pushed(&arenas.span_attributes, starts.0);
    out.events = pushed(&arenas.events, starts.1);
    out.links = pushed(&arenas.links, starts.2);
    Ok(out)
}

/// One `ScopeSpans`, validated. A scope given twice merges (protobuf rules): the last name
/// and version win, attributes accumulate.
pub struct ScopeSpansRef<'a> {
    pub scope: ScopeRef<'a>,
    pub schema_url: &'a str,
    pub spans: Vec<SpanRef<'a>>,
}

/// One `ResourceSpans`, validated; a resource given twice merges like a scope.
pub struct ResourceSpansRef<'a> {
    pub resource: ResourceRef<'a>,
    pub schema_url: &'a str,
    pub scope_spans: Vec<ScopeSpansRef<'a>>,
}

fn scope_spans<'a, const KEEP: bool>(
    buf: &'a [u8],
    depth: u32,
    arenas: &mut Arenas<'a>,
) -> Result<ScopeSpansRef<'a>> {
    let mut out = ScopeSpansRef {
        scope: ScopeRef::default(),
        schema_url: "",
        spans: Vec::new(),
    };
    each_field(buf, depth, |tag, v| {
        match tag {
            1 => scope::<KEEP>(v.bytes()?, depth + 1, &mut out.scope)?,
            2 => {
                let span = span::<KEEP>(v.bytes()?, depth + 1, arenas)?;
                if KEEP {
                    out.spans.push(span);
                } else if span.validate().is_ok() {
                    arenas.scan.accepted += 1;
                } else {
                    arenas.scan.rejected += 1;
                }
            }
            3 => out.schema_url = v.text::<KEEP>()?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

fn resource_spans<'a, const KEEP: bool>(
    buf: &'a [u8],
    depth: u32,
    arenas: &mut Arenas<'a>,
) -> Result<ResourceSpansRef<'a>> {
    let mut out = ResourceSpansRef {
        resource: ResourceRef::default(),
        schema_url: "",
        scope_spans: Vec::new(),
    };
    each_field(buf, depth, |tag, v| {
        match tag {
            1 => resource::<KEEP>(v.bytes()?, depth + 1, &mut out.resource)?,
            2 => out
                .scope_spans
                .push(scope_spans::<KEEP>(v.bytes()?, depth + 1, arenas)?),
            3 => out.schema_url = v.text::<KEEP>()?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

/// A validated `ExportTraceServiceRequest`, read in place.
pub struct Request<'a> {
    pub resource_spans: Vec<ResourceSpansRef<'a>>,
    arenas: Arenas<'a>,
}

impl<'a> Request<'a> {
    /// Validates `buf` whole, as prost would decode it, in one pass. The arenas are sized
    /// from the previous request's `sizes`, which this updates: a stream of similar requests
    /// is parsed without regrowing them.
    pub fn parse(buf: &'a [u8], sizes: &mut ArenaSizes) -> Result<Self> {
        let request = Self::parse_into::<true>(buf, Arenas::sized(sizes, buf.len()))?;
        *sizes = request.arenas.sizes();
        Ok(request)
    }

    /// Validates `buf` whole; only when `KEEP` does the result hold the strings, attributes,
    /// events and links (a scan checks them all the same, and counts the spans' verdicts).
    fn parse_into<const KEEP: bool>(buf: &'a [u8], mut arenas: Arenas<'a>) -> Result<Self> {
        let mut resource_spans_out = Vec::new();
        each_field(buf, 0, |tag, v| {
            if tag == 1 {
                resource_spans_out.push(resource_spans::<KEEP>(v.bytes()?, 1, &mut arenas)?);
            }
            Ok(())
        })?;
        Ok(Self {
            resource_spans: resource_spans_out,
            arenas,
        })
    }

    pub fn spans(&self) -> impl Iterator<Item = &SpanRef<'a>> {
        self.resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
    }

    pub fn attributes(&self, span: &SpanRef<'a>) -> &[KeyValueRef<'a>] {
        span.attributes.of(&self.arenas.span_attributes)
    }

    pub fn events(&self, span: &SpanRef<'a>) -> &[EventRef<'a>] {
        span.events.of(&self.arenas.events)
    }

    pub fn event_attributes(&self, event: &EventRef<'a>) -> &[KeyValueRef<'a>] {
        event.attributes.of(&self.arenas.event_attributes)
    }

    pub fn links(&self, span: &SpanRef<'a>) -> &[LinkRef<'a>] {
        span.links.of(&self.arenas.links)
    }

    pub fn link_attributes(&self, link: &LinkRef<'a>) -> &[KeyValueRef<'a>] {
        link.attributes.of(&self.arenas.link_attributes)
    }
}

/// What ingest learns of a request before writing it to the WAL.
#[derive(Debug, Default)]
pub struct Scan {
    pub accepted: u64,
    pub rejected: u64,
}

/// Validates `buf` as an `ExportTraceServiceRequest` and counts the spans the span table
/// accepts ([`SpanRef::validate`]) and refuses; the reasons are ingest's to give, from the
/// decoded structs, in the rare request that has refused spans.
pub fn scan_request(buf: &[u8]) -> Result<Scan> {
    Ok(Request::parse_into::<false>(buf, Arenas::default())?
        .arenas
        .scan)
}

#[cfg(test)]
mod tests {
    //! prost is the reference: whatever bytes it decodes, the views accept and convert to the
    //! same rows as prost's own re-encoding of them; whatever it refuses, they refuse.

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
    use prost::Message;

    use super::*;
    use crate::convert::{PartitionedBatches, validate_span};
    use crate::test_rng::Rng;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn sample_request() -> ExportTraceServiceRequest {
        let attrs = vec![
            kv("gen_ai.request.model", Value::StringValue("gpt-4o".into())),
            kv("gen_ai.usage.input_tokens", Value::IntValue(512)),
            kv("gen_ai.usage.output_tokens", Value::DoubleValue(64.0)),
            kv("ratio", Value::DoubleValue(0.25)),
            kv("ok", Value::BoolValue(true)),
            kv("raw", Value::BytesValue(vec![0, 255, 7])),
            kv(
                "list",
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(Value::IntValue(1)),
                        },
                        AnyValue {
                            value: Some(Value::StringValue("two".into())),
                        },
                    ],
                }),
            ),
            kv(
                "map",
                Value::KvlistValue(KeyValueList {
                    values: vec![kv("k", Value::StringValue("v".into()))],
                }),
            ),
            KeyValue {
                key: "empty".into(),
                value: None,
                ..Default::default()
            },
        ];
        let span = |n: u8, parent: Vec<u8>| Span {
            trace_id: vec![n; 16],
            span_id: vec![n + 1; 8],
            parent_span_id: parent,
            name: format!("span {n} ✓"),
            kind: 3,
            start_time_unix_nano: 1_772_446_530_123_456_789 + u64::from(n) * 3_600_000_000_000,
            end_time_unix_nano: 1_772_446_531_123_456_789 + u64::from(n) * 3_600_000_000_000,
            attributes: attrs.clone(),
            events: vec![span::Event {
                time_unix_nano: 5,
                name: "gen_ai.content.prompt".into(),
                attributes: vec![kv("gen_ai.prompt", Value::StringValue("hi".into()))],
                dropped_attributes_count: 1,
            }],
            links: vec![span::Link {
                trace_id: vec![9; 16],
                span_id: vec![8; 8],
                trace_state: "a=b".into(),
                attributes: vec![kv("link.kind", Value::StringValue("judged".into()))],
                dropped_attributes_count: 2,
                flags: 0x301,
            }],
            status: Some(Status {
                message: "boom".into(),
                code: 2,
            }),
            dropped_attributes_count: 3,
            dropped_events_count: 4,
            dropped_links_count: 5,
            flags: 0x100,
            trace_state: "k=v".into(),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", Value::StringValue("rag-api".into())),
                        kv("host.cpus", Value::IntValue(2)),
                    ],
                    dropped_attributes_count: 6,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "openllmetry".into(),
                        version: "0.62".into(),
                        attributes: vec![kv("scope.attr", Value::BoolValue(false))],
                        dropped_attributes_count: 7,
                    }),
                    spans: vec![span(1, vec![]), span(2, vec![2; 8]), span(3, vec![0; 8])],
                    schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
                }],
                schema_url: "https://example.com/resource".into(),
            }],
        }
    }

    fn rows(bytes: &[u8]) -> Vec<(crate::layout::Partition, arrow::array::RecordBatch)> {
        let mut b = PartitionedBatches::new();
        b.append_encoded("acme", bytes).expect("valid request");
        b.finish().expect("batches")
    }

    /// Checks `bytes` against prost: same verdict, and when valid, the same rows and span
    /// counts as prost's canonical re-encoding.
    fn agrees_with_prost(bytes: &[u8]) -> bool {
        let reference = ExportTraceServiceRequest::decode(bytes);
        let scan = scan_request(bytes);
        assert_eq!(
            reference.is_ok(),
            scan.is_ok(),
            "prost: {:?}, views: {:?}, bytes {}",
            reference.as_ref().err(),
            scan.as_ref().err(),
            hex::encode(bytes)
        );
        let (Ok(req), Ok(scan)) = (reference, scan) else {
            return false;
        };
        let spans = req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans);
        let valid = spans.clone().filter(|s| validate_span(s).is_ok()).count() as u64;
        assert_eq!(
            (scan.accepted, scan.rejected),
            (valid, spans.count() as u64 - valid)
        );
        assert_eq!(
            rows(bytes),
            rows(&req.encode_to_vec()),
            "bytes {}",
            hex::encode(bytes)
        );
        true
    }

    #[test]
    fn a_typical_request_converts_like_prost_structs() {
        let req = sample_request();
        let bytes = req.encode_to_vec();
        assert!(agrees_with_prost(&bytes));
        let batches = rows(&bytes);
        assert_eq!(batches.iter().map(|(_, b)| b.num_rows()).sum::<usize>(), 3);
        let scan = scan_request(&bytes).expect("valid");
        assert_eq!((scan.accepted, scan.rejected), (3, 0));
    }

    #[test]
    fn mutated_requests_are_accepted_and_converted_exactly_as_prost_decodes_them() {
        let base = sample_request().encode_to_vec();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut valid = 0;
        for _ in 0..30_000 {
            let mut m = base.clone();
            for _ in 0..1 + rng.below(3) {
                if m.is_empty() {
                    break;
                }
                let i = rng.below(m.len());
                match rng.below(5) {
                    0 => m[i] = rng.next() as u8,
                    1 => m[i] ^= 1 << rng.below(8),
                    2 => m.truncate(i),
                    3 => m.insert(i, rng.next() as u8),
                    _ => {
                        // Duplicate a stretch: repeated fields and merges.
                        let j = (i + rng.below(64)).min(m.len());
                        let stretch = m[i..j].to_vec();
                        m.splice(i..i, stretch);
                    }
                }
            }
            if agrees_with_prost(&m) {
                valid += 1;
            }
        }
        // Enough mutants stay decodable for the row comparison to mean something.
        assert!(valid > 1_000, "only {valid} mutants decoded");
    }

    /// Encodes `(tag, wire type, payload)` fields by hand, in the order given.
    fn message(fields: &[(u32, u8, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (tag, wt, payload) in fields {
            prost::encoding::encode_varint(u64::from(*tag << 3 | u32::from(*wt)), &mut out);
            if *wt == 2 {
                prost::encoding::encode_varint(payload.len() as u64, &mut out);
            }
            out.extend_from_slice(payload);
        }
        out
    }

    #[test]
    fn out_of_order_repeated_and_unknown_fields_follow_protobuf_rules() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "first".into(),
            status: Some(Status {
                message: "one".into(),
                code: 1,
            }),
            attributes: vec![kv("a", Value::StringValue("x".into()))],
            ..Default::default()
        }
        .encode_to_vec();
        // A second name (last wins), a second status (merged: new code, old message kept), a
        // KeyValue whose value occurs twice, an unknown group, and an unknown fixed32.
        let status2 = message(&[(3, 0, vec![2])]);
        let two_values = message(&[
            (1, 2, b"dup".to_vec()),
            (
                2,
                2,
                AnyValue {
                    value: Some(Value::IntValue(1)),
                }
                .encode_to_vec(),
            ),
            (
                2,
                2,
                AnyValue {
                    value: Some(Value::StringValue("last".into())),
                }
                .encode_to_vec(),
            ),
        ]);
        let mut span_bytes = span.clone();
        span_bytes.extend(message(&[
            (5, 2, b"second".to_vec()),
            (15, 2, status2),
            (9, 2, two_values),
        ]));
        span_bytes.extend([0xa3, 0x06, 0x08, 0x01, 0xa4, 0x06]); // group 100 { varint 1 }
        span_bytes.extend(message(&[(77, 5, vec![1, 2, 3, 4])]));
        // Scope spans with schema url first, spans before scope, and the scope given twice.
        let scope = |name: &str| {
            InstrumentationScope {
                name: name.into(),
                ..Default::default()
            }
            .encode_to_vec()
        };
        let scope_spans = message(&[
            (3, 2, b"https://schema".to_vec()),
            (2, 2, span_bytes),
            (1, 2, scope("s1")),
            (
                1,
                2,
                InstrumentationScope {
                    version: "v2".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ]);
        let resource_spans = message(&[
            (2, 2, scope_spans),
            (1, 2, Resource::default().encode_to_vec()),
        ]);
        let request = message(&[(1, 2, resource_spans)]);
        assert!(agrees_with_prost(&request));
        let req = ExportTraceServiceRequest::decode(request.as_slice()).expect("prost decodes it");
        let ss = &req.resource_spans[0].scope_spans[0];
        assert_eq!(ss.spans[0].name, "second");
        assert_eq!(
            ss.scope
                .as_ref()
                .map(|s| (s.name.as_str(), s.version.as_str())),
            Some(("s1", "v2"))
        );
    }

    #[test]
    fn bad_utf8_wrong_wire_types_and_deep_nesting_are_refused_like_prost() {
        let bad_name = message(&[
            (1, 2, vec![1; 16]),
            (2, 2, vec![2; 8]),
            (5, 2, vec![0xff, 0xfe]),
        ]);
        let wrong_type = message(&[(1, 0, vec![5])]);
        let mut deep = AnyValue {
            value: Some(Value::IntValue(1)),
        };
        for _ in 0..60 {
            deep = AnyValue {
                value: Some(Value::ArrayValue(ArrayValue { values: vec![deep] })),
            };
        }
        let deep_span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes: vec![KeyValue {
                key: "deep".into(),
                value: Some(deep),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec();
        for span in [bad_name, wrong_type, deep_span] {
            let request = message(&[(1, 2, message(&[(2, 2, message(&[(2, 2, span)]))]))]);
            assert!(ExportTraceServiceRequest::decode(request.as_slice()).is_err());
            assert!(scan_request(&request).is_err());
            assert!(
                PartitionedBatches::new()
                    .append_encoded("acme", &request)
                    .is_err()
            );
        }
    }

    /// The scan tests a string under 64 bytes for ASCII and hands the others to a UTF-8
    /// check. Around that cut, a string ending in a valid multi-byte character, an invalid
    /// byte or a cut-off character gets prost's verdict as a key, a value, a scope name and a
    /// span name; the rest of the request is valid.
    #[test]
    fn strings_around_the_ascii_cut_get_prosts_verdict() {
        let tails: [(&[u8], bool); 4] = [
            (b"", true),
            ("é✓".as_bytes(), true),
            (&[0xff], false),
            (&[0xe2, 0x9c], false),
        ];
        for len in 0..=130 {
            for (tail, valid) in tails {
                let mut text = vec![b'a'; len];
                text.extend_from_slice(tail);
                let any_value = message(&[(1, 2, text.clone())]);
                let ok_kv = message(&[(1, 2, b"k".to_vec()), (2, 2, any_value.clone())]);
                let spans = |name: Vec<u8>, kv: Vec<u8>| {
                    message(&[
                        (1, 2, vec![1; 16]),
                        (2, 2, vec![2; 8]),
                        (5, 2, name),
                        (9, 2, kv),
                    ])
                };
                let requests = [
                    spans(b"n".to_vec(), message(&[(1, 2, text.clone())])),
                    spans(b"n".to_vec(), ok_kv.clone()),
                    spans(text.clone(), message(&[(1, 2, b"k".to_vec())])),
                ]
                .map(|span| message(&[(1, 2, message(&[(2, 2, message(&[(2, 2, span)]))]))]));
                let scoped = message(&[(
                    1,
                    2,
                    message(&[(
                        2,
                        2,
                        message(&[
                            (1, 2, message(&[(1, 2, text.clone())])),
                            (2, 2, spans(b"n".to_vec(), ok_kv.clone())),
                        ]),
                    )]),
                )]);
                for request in requests.iter().chain([&scoped]) {
                    assert_eq!(agrees_with_prost(request), valid, "{len} bytes + {tail:?}");
                }
            }
        }
    }

    /// Attributes in and around the shape `plain_key_value` reads without the general loop:
    /// each converts (or is refused) as prost decodes it.
    #[test]
    fn attributes_of_every_shape_agree_with_prost() {
        let field = |tag: u32, wt: u8, payload: &[u8]| message(&[(tag, wt, payload.to_vec())]);
        let int = |v: i64| {
            let mut b = Vec::new();
            prost::encoding::encode_varint(v as u64, &mut b);
            b
        };
        let text = |n: usize| vec![b'x'; n];
        let kv = |key: &[u8], any: &[u8]| [field(1, 2, key), field(2, 2, any)].concat();
        let attributes: Vec<(Vec<u8>, bool)> = vec![
            (kv(b"k", &field(1, 2, b"v")), true),
            (kv(&text(200), &field(1, 2, &text(300))), true),
            (kv(b"k", &field(2, 0, &int(1))), true),
            (kv(b"k", &field(2, 0, &int(0))), true),
            (kv(b"k", &field(3, 0, &int(-5))), true),
            (kv(b"k", &field(4, 1, &2.5f64.to_le_bytes())), true),
            (kv(b"k", b""), true),
            (field(1, 2, b"only a key"), true),
            // the value before the key; a third field; two values; two fields in the value
            (
                [field(2, 2, &field(1, 2, b"v")), field(1, 2, b"k")].concat(),
                true,
            ),
            (
                [kv(b"k", &field(1, 2, b"v")), field(3, 0, &int(7))].concat(),
                true,
            ),
            (
                [
                    kv(b"k", &field(1, 2, b"v")),
                    field(2, 2, &field(3, 0, &int(7))),
                ]
                .concat(),
                true,
            ),
            (
                kv(b"k", &[field(1, 2, b"v"), field(3, 0, &int(7))].concat()),
                true,
            ),
            (
                kv(b"k", &field(5, 2, &field(1, 2, &field(3, 0, &int(1))))),
                true,
            ),
            // the key's tag as a two-byte varint
            (
                [vec![0x8a, 0x00, 1, b'k'], field(2, 2, &field(1, 2, b"v"))].concat(),
                true,
            ),
            (kv(&[0xff], &field(1, 2, b"v")), false),
            (kv(b"k", &field(1, 2, &[b'v', 0xc3])), false),
            (
                kv(b"k", &field(1, 2, &[&text(100)[..], &[0xff]].concat())),
                false,
            ),
            (kv(b"k", &field(4, 1, &[0; 8])[..8]), false),
            (kv(b"k", &field(1, 0, &int(1))), false),
            (
                [kv(b"k", &field(1, 2, b"v")), vec![0x12, 5, 0x0a]].concat(),
                false,
            ),
        ];
        for (attribute, valid) in attributes {
            let span = message(&[
                (1, 2, vec![1; 16]),
                (2, 2, vec![2; 8]),
                (9, 2, attribute.clone()),
            ]);
            let request = message(&[(1, 2, message(&[(2, 2, message(&[(2, 2, span)]))]))]);
            assert_eq!(
                agrees_with_prost(&request),
                valid,
                "{}",
                hex::encode(&attribute)
            );
        }
    }

    /// Attributes nested in arrays and kvlists around prost's recursion limit: a message
    /// 100 levels down is read, one below it is refused, and so is an unknown field or group
    /// at the limit; each verdict and conversion is prost's.
    #[test]
    fn nested_attributes_meet_the_recursion_limit_where_prost_does() {
        let field = |tag: u32, wt: u8, payload: Vec<u8>| message(&[(tag, wt, payload)]);
        let group = |tag: u32, inner: &[u8]| {
            let mut b = Vec::new();
            prost::encoding::encode_varint(u64::from(tag << 3 | 3), &mut b);
            b.extend_from_slice(inner);
            prost::encoding::encode_varint(u64::from(tag << 3 | 4), &mut b);
            b
        };
        let innermost: [(&str, Vec<u8>); 7] = [
            ("string", field(1, 2, b"v".to_vec())),
            ("nothing", Vec::new()),
            ("bytes", field(7, 2, vec![0, 1])),
            ("empty array", field(5, 2, Vec::new())),
            (
                "unknown field",
                [field(1, 2, b"v".to_vec()), field(9, 0, vec![1])].concat(),
            ),
            ("empty group", group(9, &[])),
            ("group", group(9, &field(1, 0, vec![1]))),
        ];
        let mut verdicts = Vec::new();
        for (what, any_value) in &innermost {
            for kvlists in 1..=2 {
                for arrays in 42..=48 {
                    let mut value = any_value.clone();
                    for _ in 0..kvlists {
                        let kv = [field(1, 2, b"k".to_vec()), field(2, 2, value)].concat();
                        value = field(6, 2, field(1, 2, kv));
                    }
                    for _ in 0..arrays {
                        value = field(5, 2, field(1, 2, value));
                    }
                    let kv = [field(1, 2, b"deep".to_vec()), field(2, 2, value)].concat();
                    let span = message(&[(1, 2, vec![1; 16]), (2, 2, vec![2; 8]), (9, 2, kv)]);
                    let request = message(&[(1, 2, message(&[(2, 2, message(&[(2, 2, span)]))]))]);
                    let ok = agrees_with_prost(&request);
                    verdicts.push((what, kvlists, arrays, ok));
                }
            }
        }
        // Each innermost value is read at some depth and refused at a deeper one.
        for (what, _) in &innermost {
            let of = |ok| verdicts.iter().any(|v| v.0 == what && v.3 == ok);
            assert!(of(true) && of(false), "{what}: {verdicts:?}");
        }
    }

    /// The next parse reserves what the last one held, but a small request after a large one
    /// reserves no more than its own bytes could hold.
    #[test]
    fn arenas_are_sized_from_the_last_request_within_the_next_ones_bytes() {
        let mut large = sample_request();
        let spans = &mut large.resource_spans[0].scope_spans[0].spans;
        let span = spans[0].clone();
        spans.extend(std::iter::repeat_n(span, 50));
        let large = large.encode_to_vec();
        let mut sizes = ArenaSizes::default();
        let first = Request::parse(&large, &mut sizes).expect("valid");
        let held = first.arenas.span_attributes.len();
        assert_eq!(held, 53 * 9);
        assert_eq!(sizes.0, first.arenas.sizes().0);
        let second = Request::parse(&large, &mut sizes).expect("valid");
        assert_eq!(second.arenas.span_attributes.capacity(), held);
        let small = message(&[(
            1,
            2,
            message(&[(
                2,
                2,
                message(&[(2, 2, message(&[(1, 2, vec![1; 16]), (2, 2, vec![2; 8])]))]),
            )]),
        )]);
        let third = Request::parse(&small, &mut sizes).expect("valid");
        assert!(third.arenas.span_attributes.capacity() <= small.len() / 2);
        assert_eq!(sizes.0, [0; 5]);
    }

    #[test]
    fn refused_spans_are_counted() {
        let mut req = sample_request();
        let spans = &mut req.resource_spans[0].scope_spans[0].spans;
        spans[0].trace_id = vec![0; 16];
        spans[1].span_id = vec![1; 4];
        let scan = scan_request(&req.encode_to_vec()).expect("valid protobuf");
        assert_eq!((scan.accepted, scan.rejected), (1, 2));
    }
}
