//! The fake LLM judge (`trace2eval_tests::judge`) keeps the promises the eval-runner tests rely
//! on: planted verdicts and faults, counted faults that stop, arrival-order records, hangs that
//! neither block other requests nor the server's shutdown, and latency that overlaps.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trace2eval_tests::harness::TestResult;
use trace2eval_tests::judge::{Fault, JudgeConfig, JudgeServer, Verdict};

fn runtime() -> TestResult<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Posts a one-message Chat Completions request; returns the status and the body as JSON
/// (`Null` when it is not JSON).
async fn chat(
    client: &reqwest::Client,
    server: &JudgeServer,
    text: &str,
) -> TestResult<(u16, Value)> {
    let body = json!({"model": "judge-1", "messages": [{"role": "user", "content": text}]});
    let response = client
        .post(format!("{}/chat/completions", server.openai_base_url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// The verdict JSON inside an OpenAI answer.
fn verdict(answer: &Value) -> TestResult<Value> {
    let content = answer["choices"][0]["message"]["content"]
        .as_str()
        .ok_or("no message content")?;
    Ok(serde_json::from_str(content)?)
}

#[test]
fn judge_double_plants_verdicts_and_counted_faults_in_arrival_order() -> TestResult {
    let server = JudgeServer::start(JudgeConfig {
        verdicts: vec![(
            "off-topic".into(),
            Verdict::new(1.0, Some("bad"), "off topic"),
        )],
        faults: vec![(
            "item-7".into(),
            Fault::Status {
                code: 503,
                retry_after_secs: Some(1),
            },
            2,
        )],
        ..JudgeConfig::default()
    })?;
    let client = reqwest::Client::new();
    runtime()?.block_on(async {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(chat(&client, &server, "judge item-7").await?.0);
        }
        assert_eq!(
            statuses,
            [503, 503, 200],
            "item-7 fails twice, then answers"
        );

        let (_, answer) = chat(&client, &server, "an off-topic answer").await?;
        assert_eq!(
            verdict(&answer)?,
            json!({"score": 1, "label": "bad", "explanation": "off topic"})
        );
        let (_, answer) = chat(&client, &server, "off-topic [[score=2.5]]").await?;
        assert_eq!(
            verdict(&answer)?["score"],
            2.5,
            "the marker overrides the score"
        );

        server.push_faults(vec![Fault::Malformed, Fault::OutOfRange]);
        let (status, answer) = chat(&client, &server, "queued 1").await?;
        assert_eq!((status, answer), (200, Value::Null), "malformed body");
        let (_, answer) = chat(&client, &server, "queued 2").await?;
        assert_eq!(verdict(&answer)?["score"], 42);
        let (_, answer) = chat(&client, &server, "queued 3").await?;
        assert_eq!(verdict(&answer)?["score"], 4, "the queue is used up");
        TestResult::Ok(())
    })?;

    let requests = server.requests();
    assert_eq!(requests.len(), server.request_count());
    let seen: Vec<(&str, u16)> = requests
        .iter()
        .map(|r| (r.prompt_text.as_str(), r.answered_status))
        .collect();
    assert_eq!(
        seen,
        [
            ("judge item-7", 503),
            ("judge item-7", 503),
            ("judge item-7", 200),
            ("an off-topic answer", 200),
            ("off-topic [[score=2.5]]", 200),
            ("queued 1", 200),
            ("queued 2", 200),
            ("queued 3", 200),
        ]
    );
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(
        requests[0].headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(requests[0].body["model"], "judge-1");
    Ok(())
}

#[test]
fn judge_double_hang_blocks_neither_other_requests_nor_shutdown() -> TestResult {
    let server = JudgeServer::start(JudgeConfig::default())?;
    let client = reqwest::Client::new();
    let rt = runtime()?;
    let hung = rt.block_on(async {
        let hung = tokio::spawn({
            let client = client.clone();
            let body = json!({"model": "m", "messages": [{"role": "user", "content": "[[fault=hang x1]]"}]});
            let url = format!("{}/chat/completions", server.openai_base_url());
            async move { client.post(url).body(body.to_string()).send().await }
        });
        while server.request_count() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (status, _) = chat(&client, &server, "[[fault=hang x1]]").await?;
        assert_eq!(status, 200, "the hang was counted once; others are answered");
        TestResult::Ok(hung)
    })?;
    assert_eq!(server.requests()[0].answered_status, 0);

    let stopped = Instant::now();
    drop(server);
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "drop waited on the hang"
    );
    let outcome = rt.block_on(hung)?;
    assert!(outcome.is_err(), "the hung request ends with the server");
    Ok(())
}
