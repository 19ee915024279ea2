//! An OTLP receiver that decodes and counts, nothing else: the ceiling `loadgen` can reach on a
//! machine, to compare `ingest` against. It serves OTLP/gRPC (TraceService/Export, gzip or
//! identity) and OTLP/HTTP (`POST /v1/traces`, `application/x-protobuf` or `application/json`,
//! gzip or identity), decodes every request with prost into an ExportTraceServiceRequest (a
//! JSON body first goes through ingest's own JSON-to-protobuf transcoder, the cheapest JSON
//! decoding in the project), counts its spans and answers an empty
//! ExportTraceServiceResponse. No WAL, no storage.
//!
//!   null-receiver [--grpc-addr 127.0.0.1:0] [--http-addr 127.0.0.1:0]
//!
//! Prints `listening grpc=http://ADDR http=http://ADDR` once both are bound, then serves until
//! SIGTERM or SIGINT, and prints `null-receiver: N requests, M spans` to stderr.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, StatusCode, header};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tonic::codec::CompressionEncoding;

/// Largest request accepted, compressed or not (ingest's default is of the same order).
const MAX_REQUEST_BYTES: usize = 16 << 20;
/// How long in-flight requests get to finish after SIGTERM before the counts are printed.
const DRAIN: Duration = Duration::from_secs(5);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "An OTLP receiver that only decodes and counts: the ceiling for loadgen")]
struct Args {
    /// Address of the OTLP/gRPC server.
    #[arg(long, default_value = "127.0.0.1:0")]
    grpc_addr: SocketAddr,
    /// Address of the OTLP/HTTP server.
    #[arg(long, default_value = "127.0.0.1:0")]
    http_addr: SocketAddr,
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    spans: AtomicU64,
}

impl Counts {
    fn add(&self, request: &ExportTraceServiceRequest) {
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
    }
}

struct Grpc(Arc<Counts>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn http_export(
    State(counts): State<Arc<Counts>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    let text = |status, message: String| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain")],
            message.into_bytes(),
        )
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json = content_type.starts_with("application/json");
    if !json && !content_type.starts_with("application/x-protobuf") {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {content_type:?}: only application/x-protobuf or application/json\n"
            ),
        );
    }
    let body = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        None | Some("identity") => body,
        Some("gzip") => match gunzip(&body) {
            Some(body) => body,
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("bad gzip body, or over {MAX_REQUEST_BYTES} bytes decompressed\n"),
                );
            }
        },
        Some(other) => {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding {other:?}: only gzip or identity\n"),
            );
        }
    };
    let body = if json {
        match schemas::json_wire::transcode(&body) {
            Ok(protobuf) => Bytes::from(protobuf),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad OTLP/JSON: {e}\n")),
        }
    } else {
        body
    };
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            counts.add(&request);
            // An empty ExportTraceServiceResponse, in the request's encoding.
            let (content_type, body) = if json {
                ("application/json", b"{}".to_vec())
            } else {
                (
                    "application/x-protobuf",
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            };
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body)
        }
        Err(e) => text(
            StatusCode::BAD_REQUEST,
            format!("undecodable request: {e}\n"),
        ),
    }
}

/// The decompressed body, or None if it is not gzip or inflates beyond the request limit.
fn gunzip(body: &[u8]) -> Option<Bytes> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() <= MAX_REQUEST_BYTES).then(|| Bytes::from(out))
}

/// SIGTERM or SIGINT. The handlers are installed here, before the caller says it is
/// listening, so a signal sent right after that line is not fatal.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish (up to `DRAIN`).
async fn run(
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    counts: Arc<Counts>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    // Dropping `stop` tells both servers to stop accepting and drain.
    let (stop, stopped) = tokio::sync::watch::channel(());
    let stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.changed().await;
        }
    };
    let grpc = tonic::transport::Server::builder()
        .add_service(
            TraceServiceServer::new(Grpc(counts.clone()))
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY a response can wait out the client's delayed ACK (~40 ms):
            // seen here as a p99 of 50 ms and 30% fewer spans/s. A ceiling must not have it.
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            stopped(),
        );
    let router = Router::new()
        .route("/v1/traces", post(http_export))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(counts);
    let http = axum::serve(http_listener, router).with_graceful_shutdown(stopped());
    let servers = async {
        let (g, h) = tokio::join!(grpc, http);
        g?;
        h?;
        Ok::<(), BoxError>(())
    };
    tokio::pin!(servers);
    tokio::select! {
        served = &mut servers => served,
        () = shutdown => {
            drop(stop);
            match tokio::time::timeout(DRAIN, servers).await {
                Ok(served) => served,
                Err(_) => {
                    eprintln!("null-receiver: connections still open after {DRAIN:?}; not waiting");
                    Ok(())
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let shutdown = shutdown_signal()?;
    let grpc_listener = TcpListener::bind(args.grpc_addr).await?;
    let http_listener = TcpListener::bind(args.http_addr).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "listening grpc=http://{} http=http://{}",
        grpc_listener.local_addr()?,
        http_listener.local_addr()?
    )?;
    stdout.flush()?;
    drop(stdout);
    let counts = Arc::new(Counts::default());
    run(grpc_listener, http_listener, counts.clone(), shutdown).await?;
    eprintln!(
        "null-receiver: {} requests, {} spans",
        counts.requests.load(Ordering::Relaxed),
        counts.spans.load(Ordering::Relaxed)
    );
    Ok(())
}
