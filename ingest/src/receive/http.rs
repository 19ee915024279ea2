//! OTLP/HTTP: `POST /v1/traces` with `application/x-protobuf` or `application/json`, gzip or
//! identity; plus `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use prost::Message;

use super::Receiver;
use super::grpc::response_message;
use crate::decode::{Accepted, Encoding, gunzip};
use crate::error::IngestError;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

pub fn router(receiver: Arc<Receiver>) -> Router {
    Router::new()
        .route("/v1/traces", post(export))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        // The size limit is ours (with an OTLP-shaped answer), not axum's 2 MB default.
        .layer(DefaultBodyLimit::disable())
        .with_state(receiver)
}

fn encoding_of(headers: &HeaderMap) -> Result<Encoding, IngestError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        PROTOBUF => Ok(Encoding::Protobuf),
        JSON => Ok(Encoding::Json),
        _ => Err(IngestError::Unsupported(format!(
            "Content-Type {ct:?} is not supported: send {PROTOBUF} or {JSON}"
        ))),
    }
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, IngestError> {
    let too_large = IngestError::TooLarge {
        what: "request body",
        limit,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit as u64) {
        // Read and drop a body up to twice the limit so the client, still sending, gets to
        // read the 413 instead of a broken pipe; beyond that, close the connection on it.
        if n <= 2 * limit as u64 {
            let mut body = body;
            while let Some(Ok(_)) = body.frame().await {}
        }
        return Err(too_large);
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        {
            too_large
        } else {
            IngestError::Decode(format!("reading the request body failed: {e}"))
        }
    })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(bytes),
        "gzip" => Ok(Bytes::from(gunzip(&bytes, limit)?)),
        other => Err(IngestError::Unsupported(format!(
            "Content-Encoding {other:?} is not supported: send gzip or identity"
        ))),
    }
}

fn reply(encoding: Encoding, status: StatusCode, proto: Vec<u8>, json: String) -> Response {
    let (ct, body) = match encoding {
        Encoding::Protobuf => (PROTOBUF, Body::from(proto)),
        Encoding::Json => (JSON, Body::from(json)),
    };
    (status, [(header::CONTENT_TYPE, ct)], body).into_response()
}

fn success(encoding: Encoding, a: &Accepted) -> Response {
    let msg = response_message(a);
    // OTLP: partial_success stays unset on full success; in JSON that is an absent key, not
    // `"partialSuccess": null`.
    let json = match &msg.partial_success {
        None => "{}".to_string(),
        Some(_) => serde_json::to_string(&msg).unwrap_or_else(|_| "{}".into()),
    };
    reply(encoding, StatusCode::OK, msg.encode_to_vec(), json)
}

/// OTLP/HTTP error answer: a google.rpc.Status in the request's encoding, plus Retry-After
/// for retryable refusals.
fn failure(encoding: Encoding, e: &IngestError) -> Response {
    let message = e.to_string();
    let code = e.grpc_code() as i32;
    let status = tonic_types::pb::Status {
        code,
        message: message.clone(),
        details: Vec::new(),
    };
    let json = serde_json::json!({ "code": code, "message": message }).to_string();
    let mut response = reply(encoding, e.http_status(), status.encode_to_vec(), json);
    if let Some(delay) = e.retry_after() {
        let secs = delay.as_secs().max(1).to_string();
        if let Ok(v) = HeaderValue::from_str(&secs) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    response
}

async fn export(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    let encoding = match encoding_of(&headers) {
        Ok(enc) => enc,
        Err(e) => {
            r.metrics.request("http", e.outcome());
            return failure(Encoding::Protobuf, &e);
        }
    };
    let result = match read_body(&headers, body, r.max_request_bytes).await {
        Ok(bytes) => r.export(bytes, encoding).await,
        Err(e) => Err(e),
    };
    r.count("http", &result);
    match result {
        Ok(a) => success(encoding, &a),
        Err(e) => failure(encoding, &e),
    }
}

async fn ready(State(r): State<Arc<Receiver>>) -> Response {
    if !r.wal.healthy() {
        return (StatusCode::SERVICE_UNAVAILABLE, "wal failed\n").into_response();
    }
    match r.wal.check_backlog() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn metrics(State(r): State<Arc<Receiver>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        r.metrics.render(r.wal.backlog()),
    )
        .into_response()
}
