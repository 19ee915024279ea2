//! `ingest`: the first stage of trace2eval. OTLP spans come in over gRPC and HTTP
//! (`receive`), are parsed and validated at the edge (`decode`), made durable in a local
//! write-ahead log before the client gets its answer (`wal`), and turned by a background
//! flusher into Hive-partitioned Parquet files (`flush`) in a local directory or S3
//! (`schemas::store`). `config` holds the options, `metrics` the Prometheus counters, `error`
//! the error type and its mapping to HTTP and gRPC codes.

pub mod config;
pub mod decode;
pub mod error;
pub mod flush;
pub mod metrics;
pub mod receive;
pub mod wal;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use schemas::store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::IngestError;

use crate::metrics::Metrics;
use crate::receive::Receiver;

/// A started service: where it listens, and the task that ends when it has shut down.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    task: JoinHandle<Result<(), IngestError>>,
}

impl Running {
    /// Waits until the service has stopped and flushed.
    pub async fn wait(self) -> Result<(), IngestError> {
        self.task
            .await
            .map_err(|e| IngestError::io("ingest task", std::io::Error::other(e)))?
    }
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, IngestError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| IngestError::io(format!("binding the {what} address {addr}"), e))
}

/// Starts the service; it stops accepting, flushes everything and ends when `shutdown`
/// completes.
pub async fn start(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, IngestError> {
    let store = Store::open(&config.store).map_err(IngestError::store)?;
    let metrics = Arc::new(Metrics::default());
    let opened = wal::open(
        wal::WalConfig {
            dir: config.wal_dir.clone(),
            segment_max_bytes: config.flush_max_bytes,
            segment_max_age: config.flush_max_age,
            max_backlog: config.wal_max_backlog,
            retry_after: config.retry_after,
        },
        metrics.clone(),
    )?;
    let wal = opened.wal;
    let grpc_listener = bind(config.grpc_addr, "gRPC").await?;
    let http_listener = bind(config.http_addr, "HTTP").await?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|e| IngestError::io("gRPC address", e))?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|e| IngestError::io("HTTP address", e))?;

    let converter = flush::Converter::start(opened.writer_id)?;
    let flusher = tokio::spawn(flush::run(
        opened.sealed,
        wal.clone(),
        converter,
        store.clone(),
        metrics.clone(),
    ));
    let receiver = Arc::new(Receiver {
        wal: wal.clone(),
        tenant: config.tenant.clone(),
        max_request_bytes: config.max_request_bytes,
        metrics,
    });
    let stop = CancellationToken::new();
    let grpc = tonic::transport::Server::builder()
        .add_service(receive::grpc::TraceService::new(receiver.clone()))
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY small answers wait for the client's delayed ACK: about
            // 40 ms on the p99 of a decode-only receiver (measured with tests/bin/loadgen).
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            stop.clone().cancelled_owned(),
        );
    let http = axum::serve(http_listener, receive::http::router(receiver))
        .with_graceful_shutdown(stop.clone().cancelled_owned());
    tracing::info!(%grpc_addr, %http_addr, store = %config.store, wal_dir = %config.wal_dir.display(), "listening");

    let shutdown_timeout = config.shutdown_timeout;
    let task = tokio::spawn(async move {
        let servers = async {
            let (g, h) = tokio::join!(grpc, http);
            g.map_err(|e| IngestError::io("gRPC server", std::io::Error::other(e)))?;
            h.map_err(|e| IngestError::io("HTTP server", e))
        };
        tokio::pin!(servers);
        let served = tokio::select! {
            r = &mut servers => r,
            () = shutdown => {
                tracing::info!("shutting down: no new requests, flushing the wal");
                stop.cancel();
                servers.await
            }
        };
        wal.close().await?;
        let backlog = wal.clone();
        match tokio::time::timeout(shutdown_timeout, flusher).await {
            Ok(_) => {
                tracing::info!("flushed everything; bye");
                served
            }
            Err(_) => Err(IngestError::Config(format!(
                "shutdown timeout: {} bytes of WAL not flushed into the store; they are replayed at the next start",
                backlog.backlog()
            ))),
        }
    });
    Ok(Running {
        grpc_addr,
        http_addr,
        task,
    })
}

/// Runs the service until `shutdown` completes and everything is flushed.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), IngestError> {
    start(config, shutdown).await?.wait().await
}
