//! Interop: the official OpenTelemetry Python SDK exporters (gRPC and HTTP/protobuf) send to
//! the real `ingest`, and the rows say what the SDK sent.

use std::collections::BTreeMap;

use trace2eval_tests::harness::{Ingest, IngestOpts, TestResult, local_store_rows, run_python};

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_exporters_grpc_and_http_store_what_they_sent() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut ingest = Ingest::start(&IngestOpts::local(dir.path()))?;
    let mut sent = Vec::new();
    for (protocol, endpoint) in [
        ("grpc", ingest.grpc.to_string()),
        ("http", ingest.http_url("/v1/traces")),
    ] {
        let out = dir.path().join(format!("sent-{protocol}.json"));
        let out_s = out.display().to_string();
        run_python(
            "send_otel_sdk.py",
            &[
                "--protocol",
                protocol,
                "--endpoint",
                &endpoint,
                "--traces",
                "10",
                "--service",
                protocol,
                "--out",
                &out_s,
            ],
        )?;
        let spans: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
        assert_eq!(
            spans.len(),
            30,
            "{protocol}: the script sends 3 spans per trace"
        );
        sent.extend(spans);
    }
    let status = ingest.terminate()?;
    assert!(status.success(), "{}", ingest.log_text());

    let rows: BTreeMap<_, _> = local_store_rows(&dir.path().join("store"))?
        .into_iter()
        .map(|(_, r)| ((r.trace_id.clone(), r.span_id.clone()), r))
        .collect();
    assert_eq!(rows.len(), sent.len());
    for s in &sent {
        let key = (
            s["trace_id"].as_str().unwrap_or_default().to_string(),
            s["span_id"].as_str().unwrap_or_default().to_string(),
        );
        let row = rows
            .get(&key)
            .ok_or_else(|| format!("span {key:?} not stored"))?;
        assert_eq!(Some(row.name.as_str()), s["name"].as_str());
        assert_eq!(Some(row.kind.as_str()), s["kind"].as_str());
        assert_eq!(Some(row.status_code.as_str()), s["status_code"].as_str());
        assert_eq!(row.parent_span_id.as_deref(), s["parent_span_id"].as_str());
        let attrs = s["attributes"].as_object().ok_or("no attributes")?;
        for (k, v) in attrs {
            assert_eq!(
                row.attribute(k),
                v.as_str(),
                "attribute {k} of {}",
                row.name
            );
        }
        if row.kind == "CLIENT" {
            assert_eq!(row.gen_ai_request_model.as_deref(), Some("gpt-4o-mini"));
            assert!(row.gen_ai_input_tokens.is_some() && row.session_id.is_some());
        }
    }
    Ok(())
}
