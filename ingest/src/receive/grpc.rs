//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! The request message is taken as raw bytes (tonic handles framing, gzip and the size
//! limit) so that a fully accepted request is written to the WAL exactly as received, without
//! a second protobuf encoding.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::Receiver;
use crate::decode::{Accepted, Encoding};
use crate::error::IngestError;

const SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Passes message bytes through untouched.
#[derive(Default, Clone, Copy)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The protobuf ExportTraceServiceResponse for an accepted request.
pub fn response_message(a: &Accepted) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: (a.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: a.rejected as i64,
            error_message: a.message.clone(),
        }),
    }
}

fn status(e: &IngestError) -> Status {
    let message = e.to_string();
    match e.retry_after() {
        Some(delay) => Status::with_error_details(
            e.grpc_code(),
            message,
            ErrorDetails::with_retry_info(Some(delay)),
        ),
        None => Status::new(e.grpc_code(), message),
    }
}

struct Export(Arc<Receiver>);

impl UnaryService<Bytes> for Export {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let receiver = self.0.clone();
        Box::pin(async move {
            let result = receiver
                .export(request.into_inner(), Encoding::Protobuf)
                .await;
            receiver.count("grpc", &result);
            match result {
                Ok(a) => Ok(tonic::Response::new(Bytes::from(
                    response_message(&a).encode_to_vec(),
                ))),
                Err(e) => Err(status(&e)),
            }
        })
    }
}

/// The TraceService, ready for `tonic::transport::Server::add_service`.
#[derive(Clone)]
pub struct TraceService {
    receiver: Arc<Receiver>,
}

impl TraceService {
    pub fn new(receiver: Arc<Receiver>) -> Self {
        Self { receiver }
    }
}

impl NamedService for TraceService {
    const NAME: &'static str = SERVICE;
}

impl<B> Service<http::Request<B>> for TraceService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let receiver = self.receiver.clone();
        Box::pin(async move {
            if req.uri().path() != EXPORT_PATH {
                let s = Status::unimplemented(format!("{} is not served here", req.uri().path()));
                return Ok(s.into_http());
            }
            let limit = receiver.max_request_bytes;
            let mut grpc = Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit);
            let response = grpc.unary(Export(receiver.clone()), req).await;
            // tonic refuses an oversized message with OUT_OF_RANGE before our code runs;
            // OTLP clients expect RESOURCE_EXHAUSTED for a request over the size limit.
            if response.headers().get("grpc-status").map(|v| v.as_bytes()) == Some(b"11") {
                let e = IngestError::TooLarge {
                    what: "request message",
                    limit,
                };
                receiver.metrics.request("grpc", e.outcome());
                return Ok(Status::new(Code::ResourceExhausted, e.to_string()).into_http());
            }
            Ok(response)
        })
    }
}
