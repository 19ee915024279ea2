//! OTLP clients used by the tests: our own gRPC (tonic) and HTTP (reqwest) senders.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use crate::harness::TestResult;

/// A request of one resource and one scope holding `spans`.
pub fn request(
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// OTLP/gRPC client.
#[derive(Clone)]
pub struct Grpc {
    inner: TraceServiceClient<Channel>,
}

impl Grpc {
    pub async fn connect(url: String) -> TestResult<Self> {
        let channel = Channel::from_shared(url)?.connect().await?;
        Ok(Self {
            inner: TraceServiceClient::new(channel).max_decoding_message_size(16 << 20),
        })
    }

    pub fn gzip(mut self) -> Self {
        self.inner = self.inner.send_compressed(CompressionEncoding::Gzip);
        self
    }

    pub async fn export(
        &mut self,
        req: ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, tonic::Status> {
        self.inner.export(req).await.map(|r| r.into_inner())
    }
}

/// What an OTLP/HTTP export answered.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub body: Bytes,
}

impl HttpAnswer {
    /// The body as an ExportTraceServiceResponse (protobuf answers).
    pub fn response(&self) -> TestResult<ExportTraceServiceResponse> {
        Ok(ExportTraceServiceResponse::decode(self.body.clone())?)
    }

    /// The body as a google.rpc.Status message text (protobuf error answers).
    pub fn status_message(&self) -> String {
        // google.rpc.Status: field 2 is the message string.
        #[derive(Clone, PartialEq, prost::Message)]
        struct Status {
            #[prost(int32, tag = "1")]
            code: i32,
            #[prost(string, tag = "2")]
            message: String,
        }
        if self.content_type.contains("json") {
            return String::from_utf8_lossy(&self.body).into_owned();
        }
        Status::decode(self.body.clone())
            .map_or_else(|e| format!("<undecodable: {e}>"), |s| s.message)
    }
}

/// Sends one OTLP/HTTP request body as is.
pub async fn http_post(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    gzip: bool,
    body: Vec<u8>,
) -> TestResult<HttpAnswer> {
    let mut req = client.post(url).header("content-type", content_type);
    let body = if gzip {
        req = req.header("content-encoding", "gzip");
        gzip_bytes(&body)
    } else {
        body
    };
    let resp = req.body(body).send().await?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    Ok(HttpAnswer {
        status,
        content_type,
        retry_after,
        body: resp.bytes().await?,
    })
}

pub fn gzip_bytes(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

pub fn protobuf(req: &ExportTraceServiceRequest) -> Vec<u8> {
    req.encode_to_vec()
}

/// A gRPC client that sends raw bytes as the Export message: for undecodable input, and for
/// load generation from pre-encoded requests.
#[derive(Clone)]
pub struct RawGrpc {
    inner: tonic::client::Grpc<Channel>,
}

impl RawGrpc {
    pub async fn connect(url: String, gzip: bool) -> TestResult<Self> {
        let channel = Channel::from_shared(url)?.connect().await?;
        let mut inner = tonic::client::Grpc::new(channel);
        if gzip {
            inner = inner.send_compressed(CompressionEncoding::Gzip);
        }
        Ok(Self { inner })
    }

    pub async fn export(&mut self, message: Bytes) -> TestResult<Result<Bytes, tonic::Status>> {
        self.inner.ready().await?;
        let path = http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        );
        Ok(self
            .inner
            .unary(tonic::Request::new(message), path, RawCodec)
            .await
            .map(|r| r.into_inner()))
    }
}

/// Sends raw bytes as the gRPC Export message on a new connection.
pub async fn grpc_raw(
    url: String,
    message: Bytes,
    gzip: bool,
) -> TestResult<Result<Bytes, tonic::Status>> {
    RawGrpc::connect(url, gzip).await?.export(message).await
}

#[derive(Clone, Copy, Default)]
struct RawCodec;
struct RawCoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCoder;
    type Decoder = RawCoder;
    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }
    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

impl tonic::codec::Encoder for RawCoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
