#!/usr/bin/env python3
"""Validate a curate JSONL export against the real consumer of its format, offline.

    check_formats.py FORMAT FILE      FORMAT: openai-chat | langfuse | phoenix | items

FILE must be UTF-8, one JSON object per line (LF-separated, a final newline optional, no blank
lines; NaN/Infinity and duplicate keys are rejected). An empty file is valid (0 lines). Each line
is checked against:

  openai-chat  the `openai` package's request types: `messages` is validated with
               pydantic.TypeAdapter(list[openai.types.chat.ChatCompletionMessageParam]) (the union
               of ChatCompletion{Developer,System,User,Assistant,Tool,Function}MessageParam
               TypedDicts). Keys a TypedDict does not declare are reported (pydantic would drop
               them silently). OpenAI's chat fine-tuning rule: at least one assistant message.
  langfuse     the `langfuse` package's API body model
               langfuse.api.CreateDatasetItemRequest (a pydantic model, Fern-generated), fed
               {**line, "datasetName": "x"} through langfuse's own alias handling
               (langfuse.api.core.pydantic_utilities.parse_obj_as). The model allows extra keys,
               so any key it does not declare is reported; sourceTraceId/sourceObservationId
               must survive validation and the model's own by-alias dump must give back the line.
  phoenix      arize-phoenix is too heavy to install for this, so the check is written here: the
               shape of one row of a Phoenix dataset upload (its JSON upload takes parallel
               `inputs`/`outputs`/`metadata` lists of objects): exactly the keys input, output,
               metadata, each a JSON object.
  items        trace2eval's own format, checked here: the keys and types in README.md.

On top of the consumer's check, every format is checked against the trace2eval shape described in
README.md (messages are {role, content} strings, context is a list of strings, trace ids are 32
lowercase hex, span ids 16 lowercase hex, known metadata fields have their types), and keys come
in the order README.md documents (the order curate declares them in), at every level: a consumer
that diffs or reads datasets by eye sees the same line layout every time.

Exit 0 and one JSON object on stdout: {"format": F, "lines": N, "ok": N} when every line is valid.
On the first invalid line: exit 1, "FILE:LINE: error" on stderr, and on stdout
{"format": F, "lines": N, "ok": lines-before-it, "error": {"line": LINE, "message": "..."}}.
Exit 2 for bad arguments or an unreadable file.
"""
import json
import re
import sys

FORMATS = ("openai-chat", "langfuse", "phoenix", "items")

TRACE_ID = re.compile(r"[0-9a-f]{32}")
SPAN_ID = re.compile(r"[0-9a-f]{16}")


class Invalid(Exception):
    pass


# ---------------------------------------------------------------- JSONL reading


def _no_duplicates(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise Invalid(f"duplicate key {k!r}")
        obj[k] = v
    return obj


def _no_constant(name):
    raise Invalid(f"{name} is not valid JSON")


def _walk_strings(v, path="$"):
    """Reject lone surrogates (valid JSON escapes, but not Unicode: not encodable as UTF-8)."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as e:
            raise Invalid(f"{path}: string is not valid Unicode ({e.reason})") from None
    elif isinstance(v, dict):
        for k, x in v.items():
            _walk_strings(k, path)
            _walk_strings(x, f"{path}.{k}")
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _walk_strings(x, f"{path}[{i}]")


def parse_line(raw):
    if not raw.strip():
        raise Invalid("blank line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid(f"not valid UTF-8 at byte {e.start}: {e.reason}") from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise Invalid(f"not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise Invalid(f"not a JSON object but {type(obj).__name__}")
    _walk_strings(obj)
    return obj


# ---------------------------------------------------------------- shared trace2eval shape


def _type(v):
    return "null" if v is None else type(v).__name__


def want_str(v, what):
    if not isinstance(v, str):
        raise Invalid(f"{what} must be a string, got {_type(v)}")


def want_obj(v, what):
    if not isinstance(v, dict):
        raise Invalid(f"{what} must be an object, got {_type(v)}")


def want_keys(obj, keys, what):
    missing = [k for k in keys if k not in obj]
    extra = sorted(k for k in obj if k not in keys)
    if missing:
        raise Invalid(f"{what}: missing key(s) {missing}")
    if extra:
        raise Invalid(f"{what}: unexpected key(s) {extra}")


def want_order(obj, keys, what):
    """The keys of `obj` that are in `keys` come in the order of `keys`."""
    got = [k for k in obj if k in keys]
    want = [k for k in keys if k in obj]
    if got != want:
        raise Invalid(f"{what}: keys out of order: {got}, documented order {want}")


def want_id(v, pattern, what):
    want_str(v, what)
    if not pattern.fullmatch(v):
        n = 32 if pattern is TRACE_ID else 16
        raise Invalid(f"{what} must be {n} lowercase hex digits, got {v!r}")


def check_messages(msgs, what):
    """trace2eval's messages: a list of {"role": str, "content": str}."""
    if not isinstance(msgs, list):
        raise Invalid(f"{what} must be a list, got {_type(msgs)}")
    for i, m in enumerate(msgs):
        want_obj(m, f"{what}[{i}]")
        want_keys(m, ("role", "content"), f"{what}[{i}]")
        want_order(m, ("role", "content"), f"{what}[{i}]")
        want_str(m["role"], f"{what}[{i}].role")
        if not m["role"]:
            raise Invalid(f"{what}[{i}].role is empty")
        want_str(m["content"], f"{what}[{i}].content")


def check_context(ctx, what):
    if not isinstance(ctx, list):
        raise Invalid(f"{what} must be a list, got {_type(ctx)}")
    for i, c in enumerate(ctx):
        want_str(c, f"{what}[{i}]")


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


# Known metadata fields (curate/src/export.rs `Metadata`), in their order: checked when present.
META_TYPES = {
    "rules": ("list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "model": ("string or null", lambda v: v is None or isinstance(v, str)),
    "latency_ms": ("number", _is_num),
    "input_tokens": ("integer or null", lambda v: v is None or _is_int(v)),
    "output_tokens": ("integer or null", lambda v: v is None or _is_int(v)),
    "cost_usd": ("number or null", lambda v: v is None or _is_num(v)),
    "status": ("string", lambda v: isinstance(v, str)),
    "service": ("string or null", lambda v: v is None or isinstance(v, str)),
    "session_id": ("string or null", lambda v: v is None or isinstance(v, str)),
    "user_id": ("string or null", lambda v: v is None or isinstance(v, str)),
    "tenant": ("string or null", lambda v: v is None or isinstance(v, str)),
    "start_time": ("string", lambda v: isinstance(v, str)),
    "root_name": ("string or null", lambda v: v is None or isinstance(v, str)),
}


def check_metadata(meta, what):
    want_obj(meta, what)
    want_order(meta, tuple(META_TYPES), what)
    for k, (desc, ok) in META_TYPES.items():
        if k in meta and not ok(meta[k]):
            raise Invalid(f"{what}.{k} must be {desc}, got {_type(meta[k])} {meta[k]!r}")


def check_expected(v, what):
    if v is not None and not isinstance(v, str):
        raise Invalid(f"{what} must be null or a string, got {_type(v)}")


# ---------------------------------------------------------------- openai-chat

_openai = None


def _openai_adapter():
    global _openai
    if _openai is None:
        import pydantic
        from openai.types.chat import ChatCompletionMessageParam

        _openai = (pydantic, pydantic.TypeAdapter(list[ChatCompletionMessageParam]))
    return _openai


def _materialize(v, path, pydantic):
    """Consume the lazy iterators pydantic returns for Iterable[...] fields (e.g. a content-part
    list), which is when their items get validated."""
    if isinstance(v, dict):
        return {k: _materialize(x, f"{path}.{k}", pydantic) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_materialize(x, f"{path}[{i}]", pydantic) for i, x in enumerate(v)]
    if isinstance(v, (str, bytes, int, float, bool)) or v is None:
        return v
    if hasattr(v, "__iter__"):
        try:
            items = list(v)
        except pydantic.ValidationError as e:
            raise Invalid(f"openai ChatCompletionMessageParam: {path}: {_short(e)}") from None
        return [_materialize(x, f"{path}[{i}]", pydantic) for i, x in enumerate(items)]
    return v


def _dropped_keys(orig, val, path):
    """Keys of `orig` that validation dropped (TypedDicts ignore undeclared keys)."""
    if isinstance(orig, dict) and isinstance(val, dict):
        for k, x in orig.items():
            if k not in val:
                return f"{path}: key {k!r} is not declared by the openai message type"
            d = _dropped_keys(x, val[k], f"{path}.{k}")
            if d:
                return d
    elif isinstance(orig, list) and isinstance(val, list) and len(orig) == len(val):
        for i, (x, y) in enumerate(zip(orig, val)):
            d = _dropped_keys(x, y, f"{path}[{i}]")
            if d:
                return d
    return None


def validate_openai_messages(msgs, what="messages"):
    pydantic, adapter = _openai_adapter()
    if not isinstance(msgs, list):
        raise Invalid(f"{what} must be a list, got {_type(msgs)}")
    try:
        validated = adapter.validate_python(msgs)
    except pydantic.ValidationError as e:
        raise Invalid(f"openai ChatCompletionMessageParam: {what}: {_short(e)}") from None
    validated = _materialize(validated, what, pydantic)
    d = _dropped_keys(msgs, validated, what)
    if d:
        raise Invalid(f"openai ChatCompletionMessageParam: {d}")


def check_openai_chat(line):
    want_keys(line, ("messages",), "line")
    msgs = line["messages"]
    validate_openai_messages(msgs)
    if not msgs:
        raise Invalid("messages is empty")
    # OpenAI's chat fine-tuning format: each example needs an assistant message to learn from.
    if not any(m.get("role") == "assistant" for m in msgs):
        raise Invalid("no assistant message (OpenAI chat fine-tuning needs at least one)")
    # trace2eval shape: the input messages, then the output as the last (assistant) message.
    check_messages(msgs, "messages")
    if msgs[-1]["role"] != "assistant":
        raise Invalid(f"last message must be the assistant's output, got role {msgs[-1]['role']!r}")


# ---------------------------------------------------------------- langfuse

_langfuse = None

LANGFUSE_KEYS = ("id", "input", "expectedOutput", "metadata", "sourceTraceId", "sourceObservationId")


def _langfuse_model():
    global _langfuse
    if _langfuse is None:
        import pydantic
        from langfuse.api import CreateDatasetItemRequest
        from langfuse.api.core.pydantic_utilities import parse_obj_as

        _langfuse = (pydantic, CreateDatasetItemRequest, parse_obj_as)
    return _langfuse


def check_langfuse(line):
    pydantic, model, parse_obj_as = _langfuse_model()
    if "datasetName" in line:
        raise Invalid("datasetName must not be in the line (the uploader adds it)")
    body = {**line, "datasetName": "x"}
    try:
        item = parse_obj_as(model, body)
    except pydantic.ValidationError as e:
        raise Invalid(f"langfuse CreateDatasetItemRequest: {_short(e)}") from None
    # extra="allow": an undeclared or misspelt key (e.g. "sourceTraceID") would pass silently.
    extra = sorted((item.model_extra or {}).keys())
    if extra:
        raise Invalid(f"langfuse CreateDatasetItemRequest: key(s) {extra} are not API fields")
    if "sourceTraceId" in line and item.source_trace_id != line["sourceTraceId"]:
        raise Invalid(f"sourceTraceId did not survive validation: {item.source_trace_id!r}")
    if "sourceObservationId" in line and item.source_observation_id != line["sourceObservationId"]:
        raise Invalid(f"sourceObservationId did not survive validation: {item.source_observation_id!r}")
    dumped = json.loads(json.dumps(item.dict()))  # langfuse's by-alias dump, as the client sends
    if dumped != body:
        changed = sorted(k for k in set(dumped) | set(body) if dumped.get(k, ...) != body.get(k, ...))
        raise Invalid(f"langfuse CreateDatasetItemRequest does not round-trip key(s) {changed}")
    # trace2eval shape.
    want_keys(line, LANGFUSE_KEYS, "line")
    want_order(line, LANGFUSE_KEYS, "line")
    want_str(line["id"], "id")
    if not line["id"] or len(line["id"]) > 255:
        raise Invalid(f"id must be 1..255 characters (Langfuse's limit), got {len(line['id'])}")
    want_obj(line["input"], "input")
    want_keys(line["input"], ("messages", "context"), "input")
    want_order(line["input"], ("messages", "context"), "input")
    check_messages(line["input"]["messages"], "input.messages")
    check_context(line["input"]["context"], "input.context")
    check_expected(line["expectedOutput"], "expectedOutput")
    check_metadata(line["metadata"], "metadata")
    want_id(line["sourceTraceId"], TRACE_ID, "sourceTraceId")
    want_id(line["sourceObservationId"], SPAN_ID, "sourceObservationId")


# ---------------------------------------------------------------- phoenix


def check_phoenix(line):
    # No arize-phoenix here (too heavy to install): the schema of one upload row, written out.
    # Phoenix's dataset upload takes parallel inputs/outputs/metadata lists of JSON objects.
    want_keys(line, ("input", "output", "metadata"), "line")
    want_order(line, ("input", "output", "metadata"), "line")
    for k in ("input", "output", "metadata"):
        want_obj(line[k], k)
    # trace2eval shape.
    want_keys(line["input"], ("messages", "context"), "input")
    want_order(line["input"], ("messages", "context"), "input")
    check_messages(line["input"]["messages"], "input.messages")
    check_context(line["input"]["context"], "input.context")
    want_keys(line["output"], ("content",), "output")
    want_str(line["output"]["content"], "output.content")
    meta = line["metadata"]
    for k in ("id", "trace_id", "span_id"):
        if k not in meta:
            raise Invalid(f"metadata: missing key {k!r}")
    # The row's ids first, then the metadata of the other formats.
    want_order(meta, ("id", "trace_id", "span_id") + tuple(META_TYPES), "metadata")
    want_id(meta["trace_id"], TRACE_ID, "metadata.trace_id")
    want_id(meta["span_id"], SPAN_ID, "metadata.span_id")
    want_str(meta["id"], "metadata.id")
    check_metadata(meta, "metadata")


# ---------------------------------------------------------------- items

ITEMS_KEYS = ("id", "trace_id", "span_id", "input", "output", "context", "expected_output", "metadata")


def check_items(line):
    want_keys(line, ITEMS_KEYS, "line")
    want_order(line, ITEMS_KEYS, "line")
    want_str(line["id"], "id")
    if not line["id"]:
        raise Invalid("id is empty")
    want_id(line["trace_id"], TRACE_ID, "trace_id")
    want_id(line["span_id"], SPAN_ID, "span_id")
    check_messages(line["input"], "input")
    want_str(line["output"], "output")
    check_context(line["context"], "context")
    check_expected(line["expected_output"], "expected_output")
    check_metadata(line["metadata"], "metadata")


CHECKS = {
    "openai-chat": check_openai_chat,
    "langfuse": check_langfuse,
    "phoenix": check_phoenix,
    "items": check_items,
}


def _short(e):
    """A pydantic ValidationError in a few lines: for a union, the errors of every member are
    listed; keep the first few."""
    errs = e.errors(include_url=False)
    # A union member whose discriminating literal (role, type) did not match is noise: when the
    # input matched some member's literal, keep only the errors of the members it matched.
    def branch(err):
        loc = err["loc"]
        for i, x in enumerate(loc):
            if isinstance(x, str) and x[:1].isupper():  # a union member: a TypedDict's name
                return loc[: i + 1]
        return None

    mismatched = {branch(x) for x in errs if x["type"] == "literal_error" and branch(x)}
    matched = [x for x in errs if branch(x) is None or branch(x) not in mismatched]
    if matched:
        errs = matched
    parts = []
    for err in errs[:4]:
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']} (input {err.get('input')!r})"[:300])
    more = f" (+{len(errs) - 4} more)" if len(errs) > 4 else ""
    return f"{len(errs)} validation error(s): " + "; ".join(parts) + more


def main(argv):
    if len(argv) != 3 or argv[1] not in FORMATS:
        print(f"usage: {argv[0]} {{{'|'.join(FORMATS)}}} FILE", file=sys.stderr)
        return 2
    fmt, path = argv[1], argv[2]
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        print(f"{path}: {e}", file=sys.stderr)
        return 2
    raws = data.split(b"\n")
    if raws and raws[-1] == b"":
        raws.pop()  # the final newline ends the last line
    check = CHECKS[fmt]
    for n, raw in enumerate(raws, start=1):
        try:
            check(parse_line(raw))
        except Invalid as e:
            print(f"{path}:{n}: {e}", file=sys.stderr)
            print(json.dumps({"format": fmt, "lines": len(raws), "ok": n - 1,
                              "error": {"line": n, "message": str(e)}}))
            return 1
    print(json.dumps({"format": fmt, "lines": len(raws), "ok": len(raws)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
