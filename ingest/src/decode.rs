//! Parsing at the edge: request bodies (protobuf or OTLP/JSON, maybe gzip) become a validated
//! set of spans, ready for the WAL, and a count of the spans refused and why.

use std::io::Read;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use schemas::convert::validate_span;
use schemas::json_wire::transcode_counted;
use schemas::wire::{Scan, scan_request};

use crate::error::IngestError;

/// Body encodings OTLP defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

/// Gunzips `body`, refusing output over `limit` bytes (gzip bombs).
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let mut reader = flate2::read::MultiGzDecoder::new(body).take(limit as u64 + 1);
    reader
        .read_to_end(&mut out)
        .map_err(|e| IngestError::Decode(format!("gzip body could not be decompressed: {e}")))?;
    if out.len() > limit {
        return Err(IngestError::TooLarge {
            what: "decompressed request body",
            limit,
        });
    }
    Ok(out)
}

fn not_protobuf(e: impl std::fmt::Display) -> IngestError {
    IngestError::Decode(format!(
        "body is not a valid OTLP protobuf ExportTraceServiceRequest: {e}"
    ))
}

fn not_json(e: impl std::fmt::Display) -> IngestError {
    IngestError::Decode(format!(
        "body is not valid OTLP/JSON (ids must be hex, enums integers, keys lowerCamelCase): {e}"
    ))
}

/// [`json_scanned`] without the counts.
fn json_to_protobuf(body: &[u8]) -> Result<Bytes, IngestError> {
    json_scanned(body).map(|(out, _)| out)
}

/// An OTLP/JSON body as the protobuf it stands for (`schemas::json_wire`), with its spans
/// counted as [`scan_request`] counts them: the transcoder's output is well-formed by
/// construction, so it is not scanned again.
fn json_scanned(body: &[u8]) -> Result<(Bytes, Scan), IngestError> {
    transcode_counted(body)
        .map(|(out, scan)| (Bytes::from(out), scan))
        .map_err(not_json)
}

/// Decodes an ExportTraceServiceRequest into prost structs.
pub fn decode(body: &[u8], encoding: Encoding) -> Result<ExportTraceServiceRequest, IngestError> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body).map_err(not_protobuf),
        Encoding::Json => {
            ExportTraceServiceRequest::decode(json_to_protobuf(body)?).map_err(not_json)
        }
    }
}

/// Validates a request body and returns what goes to the WAL. A protobuf body is checked in
/// place (`schemas::wire`) and, when every span is accepted, written as it came; a JSON body
/// is transcoded to protobuf, which counts its spans as the check would, and then takes the
/// same path. Only a request with refused spans is decoded into structs to drop them.
pub fn validate(body: Bytes, encoding: Encoding) -> Result<Accepted, IngestError> {
    let (body, scan) = match encoding {
        Encoding::Protobuf => {
            let scan = scan_request(&body).map_err(not_protobuf)?;
            (body, scan)
        }
        Encoding::Json => json_scanned(&body)?,
    };
    if scan.rejected == 0 {
        return Ok(Accepted {
            payload: if scan.accepted == 0 {
                Bytes::new()
            } else {
                body
            },
            accepted: scan.accepted,
            rejected: 0,
            message: String::new(),
        });
    }
    Ok(accept(decode(&body, Encoding::Protobuf)?))
}

/// What a request leaves after validation.
#[derive(Debug)]
pub struct Accepted {
    /// Protobuf encoding of the accepted spans, as written to the WAL; empty when no span
    /// was accepted.
    pub payload: Bytes,
    pub accepted: u64,
    pub rejected: u64,
    /// Why spans were refused (the first few reasons), for `partial_success.error_message`.
    pub message: String,
}

const MAX_REASONS: usize = 5;

/// Validates every span, drops the refused ones (and scopes/resources left empty), and returns
/// the protobuf payload for the WAL.
pub fn accept(mut req: ExportTraceServiceRequest) -> Accepted {
    let mut accepted = 0u64;
    let mut rejected = 0u64;
    let mut reasons: Vec<String> = Vec::new();
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|span| match validate_span(span) {
                Ok(()) => {
                    accepted += 1;
                    true
                }
                Err(why) => {
                    rejected += 1;
                    if reasons.len() < MAX_REASONS {
                        reasons.push(format!(
                            "span {:?} (span_id {}): {why}",
                            span.name,
                            hex::encode(&span.span_id)
                        ));
                    }
                    false
                }
            });
        }
        if rejected > 0 {
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
    }
    let payload = if accepted == 0 {
        Bytes::new()
    } else {
        req.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
        Bytes::from(req.encode_to_vec())
    };
    let mut message = String::new();
    if rejected > 0 {
        message = format!(
            "refused {rejected} of {} spans: {}",
            accepted + rejected,
            reasons.join("; ")
        );
        if rejected as usize > reasons.len() {
            message.push_str("; ...");
        }
    }
    Accepted {
        payload,
        accepted,
        rejected,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn span(trace_id: Vec<u8>, name: &str) -> Span {
        Span {
            trace_id,
            span_id: vec![1; 8],
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn refused_spans_are_dropped_and_the_rest_kept() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![
                    ScopeSpans {
                        spans: vec![span(vec![7; 16], "good"), span(vec![0; 16], "zeros")],
                        ..Default::default()
                    },
                    ScopeSpans {
                        spans: vec![span(vec![7; 12], "short")],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
        };
        let a = accept(req);
        assert_eq!((a.accepted, a.rejected), (1, 2));
        assert!(a.message.contains("trace_id is all zeros"), "{}", a.message);
        assert!(
            a.message.contains("trace_id has 12 bytes, expected 16"),
            "{}",
            a.message
        );
        let kept = ExportTraceServiceRequest::decode(a.payload).unwrap_or_default();
        assert_eq!(kept.resource_spans[0].scope_spans.len(), 1);
        assert_eq!(kept.resource_spans[0].scope_spans[0].spans[0].name, "good");
    }

    #[test]
    fn a_json_body_takes_the_protobuf_path_and_refused_spans_are_dropped() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(vec![7; 16], "good"), span(vec![0; 16], "zeros")],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let json = serde_json::to_vec(&req).unwrap_or_default();
        let a = validate(Bytes::from(json), Encoding::Json).expect("valid OTLP/JSON");
        assert_eq!((a.accepted, a.rejected), (1, 1));
        assert!(a.message.contains("trace_id is all zeros"), "{}", a.message);
        let kept = ExportTraceServiceRequest::decode(a.payload).unwrap_or_default();
        assert_eq!(kept.resource_spans[0].scope_spans[0].spans.len(), 1);
        assert_eq!(kept.resource_spans[0].scope_spans[0].spans[0].name, "good");

        let bad = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}"#;
        let err = validate(Bytes::from_static(bad), Encoding::Json)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("resourceSpans[0].scopeSpans[0].spans[0].traceId: not hex"),
            "{err}"
        );
    }

    #[test]
    fn gzip_bomb_is_refused_with_the_limit() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..8 {
            let _ = enc.write_all(&zeros);
        }
        let bomb = enc.finish().unwrap_or_default();
        let err = gunzip(&bomb, 1 << 20)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("limit of 1048576 bytes"), "{err}");
    }
}
