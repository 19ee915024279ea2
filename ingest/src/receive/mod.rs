//! Receivers: OTLP/gRPC (`grpc`) and OTLP/HTTP (`http`) share one export path: check the
//! backlog, decode, validate, append to the WAL, answer.

pub mod grpc;
pub mod http;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::decode::{Accepted, Encoding, validate};
use crate::error::IngestError;
use crate::metrics::Metrics;
use crate::wal::Wal;

/// State shared by both receivers.
pub struct Receiver {
    pub wal: Wal,
    pub tenant: String,
    pub max_request_bytes: usize,
    pub metrics: Arc<Metrics>,
}

impl Receiver {
    /// Handles one export: `body` is the decompressed request. Answers once the accepted
    /// spans are fsynced to the WAL.
    pub async fn export(&self, body: Bytes, encoding: Encoding) -> Result<Accepted, IngestError> {
        self.wal.check_backlog()?;
        let accepted = validate(body, encoding)?;
        let m = &self.metrics;
        m.spans_received
            .fetch_add(accepted.accepted + accepted.rejected, Ordering::Relaxed);
        m.spans_rejected
            .fetch_add(accepted.rejected, Ordering::Relaxed);
        if accepted.accepted > 0 {
            self.wal
                .append(&self.tenant, accepted.payload.clone())
                .await?;
            m.spans_accepted
                .fetch_add(accepted.accepted, Ordering::Relaxed);
        }
        Ok(accepted)
    }

    /// Counts a finished request in the metrics.
    pub fn count(&self, protocol: &str, result: &Result<Accepted, IngestError>) {
        let outcome = match result {
            Ok(a) if a.rejected > 0 => "partial",
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics.request(protocol, outcome);
    }
}
