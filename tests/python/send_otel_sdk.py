#!/usr/bin/env python3
"""Send GenAI-style traces to an OTLP endpoint with the official OpenTelemetry Python SDK.

    send_otel_sdk.py --protocol grpc --endpoint 127.0.0.1:4317 --out sent.json
    send_otel_sdk.py --protocol http --endpoint http://127.0.0.1:4318/v1/traces --out sent.json

Each trace: SERVER "POST /chat" -> INTERNAL "retrieve documents" and CLIENT "chat gpt-4o-mini".
Every 5th trace (i % 5 == 4) has status ERROR on the root and the LLM span.
Writes the exported spans as JSON (attribute values rendered as text) to --out, and exits
non-zero if any export failed or the SDK logged an error.
"""
import argparse
import json
import logging
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

UNICODE_TEXT = "héllo 世界 🙂"


class RecordingExporter(SpanExporter):
    """Wraps the real exporter: keeps every span handed to it and every failure."""

    def __init__(self, inner):
        self.inner = inner
        self.spans = []
        self.failures = []

    def export(self, spans):
        try:
            result = self.inner.export(spans)
        except Exception as e:  # the batch processor would only log it
            self.failures.append(f"export raised {e!r}")
            return SpanExportResult.FAILURE
        if result != SpanExportResult.SUCCESS:
            self.failures.append(f"export of {len(spans)} spans returned {result.name}")
        else:
            self.spans.extend(spans)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self.inner.force_flush(timeout_millis)


class ErrorLog(logging.Handler):
    """Collects ERROR records from the SDK/exporter loggers (they log failures, not raise)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(f"{record.name}: {record.getMessage()}")


def render(value):
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def span_json(span):
    ctx = span.get_span_context()
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "status_code": span.status.status_code.name,
        "status_message": span.status.description,
        "attributes": {k: render(v) for k, v in (span.attributes or {}).items()},
        "events": [
            {"name": e.name, "attributes": {k: render(v) for k, v in (e.attributes or {}).items()}}
            for e in span.events
        ],
    }


def make_exporter(protocol, endpoint, timeout):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, timeout=timeout)


def send(tracer, i):
    error = i % 5 == 4
    session = f"session-{i // 3}"
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.request.method", "POST")
        root.set_attribute("http.route", "/chat")
        root.set_attribute("session.id", session)
        with tracer.start_as_current_span("retrieve documents", kind=SpanKind.INTERNAL) as ret:
            ret.set_attribute("retrieval.documents.count", 3)
            ret.set_status(Status(StatusCode.OK))
        with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as llm:
            llm.set_attributes({
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 100 + i,
                "gen_ai.usage.output_tokens": 20 + 2 * i,
                "gen_ai.request.temperature": 0.7,
                "gen_ai.request.stream": i % 2 == 0,
                "gen_ai.response.finish_reasons": ["stop", "length"],
                "session.id": session,
                "test.unicode": UNICODE_TEXT,
            })
            llm.add_event("gen_ai.choice", {"index": 0, "finish_reason": "stop", "gen_ai.system": "openai"})
            if error:
                llm.set_status(Status(StatusCode.ERROR, "rate limited (429)"))
        if error:
            root.set_status(Status(StatusCode.ERROR, "upstream LLM call failed"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=["grpc", "http"], required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--traces", type=int, default=20)
    ap.add_argument("--service", default="trace2eval-sdk-test")
    ap.add_argument("--out", required=True, help="JSON file listing the spans sent")
    ap.add_argument("--timeout", type=float, default=10, help="export timeout, seconds")
    args = ap.parse_args()

    errors = ErrorLog()
    logging.getLogger("opentelemetry").addHandler(errors)

    exporter = RecordingExporter(make_exporter(args.protocol, args.endpoint, args.timeout))
    provider = TracerProvider(resource=Resource.create({"service.name": args.service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("trace2eval.tests.send_otel_sdk")
    for i in range(args.traces):
        send(tracer, i)

    flushed = provider.force_flush(timeout_millis=int(args.timeout * 3000) + 5000)
    provider.shutdown()

    problems = list(exporter.failures) + errors.messages
    if not flushed:
        problems.append("force_flush timed out")
    if len(exporter.spans) != 3 * args.traces:
        problems.append(f"exported {len(exporter.spans)} spans, expected {3 * args.traces}")
    if problems:
        print(f"send_otel_sdk: export to {args.endpoint} ({args.protocol}) FAILED:", file=sys.stderr)
        for p in dict.fromkeys(problems):
            print(f"  {p}", file=sys.stderr)
        return 1

    with open(args.out, "w", encoding="utf-8") as f:
        json.dump([span_json(s) for s in exporter.spans], f, ensure_ascii=False, indent=1)
    print(f"send_otel_sdk: sent {len(exporter.spans)} spans in {args.traces} traces "
          f"to {args.endpoint} ({args.protocol}); wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
