//! OTLP/HTTP export against the real binary and a receiver that decodes
//! with the OpenTelemetry project's own protobuf definitions: every entry
//! of a burst arrives with its severity and attributes; with the receiver
//! down, the host keeps serving within its bounds, tells the owner what it
//! lost, counts it, and delivers again once the receiver is back.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::support::{self, HostProcess, OtlpReceiver, eventually, guest, tenant_toml};

const API_KEY: &str = "otlp-key-0123456789";

/// `hello`, exporting to 127.0.0.1:`port`, with `extra` in its export
/// table; `/metrics` on its own port.
fn host(port: u16, extra: &str) -> (HostProcess, String) {
    let hello = guest("hello");
    let config = [
        tenant_toml("hello", "alice", "active", &[("1.0.0", &hello)]),
        format!(
            "[[tenants.logs.export]]\notlp = \"http://127.0.0.1:{port}/v1/logs\"\n\
             headers = {{ \"x-api-key\" = {{ env = \"MCTX_TEST_OTLP_KEY\" }} }}\n{extra}\n"
        ),
        tenant_toml("quiet", "alice", "active", &[("1.0.0", &hello)]),
    ]
    .concat();
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let host = HostProcess::multi_with_env(
        &config,
        &["--metrics-addr", &metrics],
        &[("MCTX_TEST_OTLP_KEY", API_KEY)],
    );
    (host, metrics)
}

/// A counter of `/metrics` (0 when not there yet).
async fn counter(metrics: &str, series: &str) -> u64 {
    support::metric_sum(&support::scrape(metrics).await, series)
}

fn series(port: u16, result: &str) -> String {
    format!(
        "mctx_log_export_entries_total{{destination=\"http://127.0.0.1:{port}/v1/logs\",result=\"{result}\"}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_of_a_burst_arrives_with_its_severity_and_attributes() {
    let receiver = OtlpReceiver::start(0);
    let (host, metrics) = host(receiver.port, "");
    let mut ids = Vec::new();
    for i in 0..20 {
        let reply = host.get("hello.localhost", &format!("/burst-{i}")).await;
        assert_eq!(reply.status, 200);
        ids.push(reply.header("x-request-id").unwrap().to_string());
        // Another tenant's entries go nowhere.
        assert_eq!(host.get("quiet.localhost", "/").await.status, 200);
    }
    let records: Vec<Value> = (0..20 * 7).map(|_| receiver.record()).collect();
    let seqs: BTreeSet<i64> = records
        .iter()
        .map(|r| r["attributes"]["log.seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=140).collect(), "every entry once");
    for record in &records {
        assert_eq!(record["service"], "hello");
        assert_eq!(record["version"], "1.0.0");
        assert_eq!(record["scope"], "mctx-host");
        assert_eq!(
            record["apiKey"], API_KEY,
            "the header, from the host's environment"
        );
        assert_eq!(record["contentType"], "application/x-protobuf");
        let id = record["attributes"]["request.id"].as_str().unwrap();
        assert!(ids.iter().any(|i| i == id), "{record}");
    }
    let of = |body: &str| {
        records
            .iter()
            .find(|r| r["body"].as_str().unwrap().starts_with(body))
            .unwrap_or_else(|| panic!("no record {body:?}"))
    };
    for (body, severity, text) in [
        ("hello: GET /burst-0", 9, "log"),
        ("[INFO] request received", 9, "info"),
        ("[DEBUG] headers", 5, "debug"),
        ("[WARN] this is", 13, "warn"),
        ("[ERROR] this is", 17, "error"),
    ] {
        let record = of(body);
        assert_eq!(
            (record["severity"].as_i64(), record["severityText"].as_str()),
            (Some(severity), Some(text)),
            "{record}"
        );
    }
    let event = of("GET /burst-0 200 ok");
    let attributes = &event["attributes"];
    assert_eq!(attributes["log.type"], "request");
    assert_eq!(attributes["http.request.method"], "GET");
    assert_eq!(attributes["url.path"], "/burst-0");
    assert_eq!(attributes["http.response.status_code"], 200);
    assert_eq!(attributes["mctx.outcome"], "ok");
    assert_eq!(attributes["request.id"], ids[0].as_str());
    eventually(Duration::from_millis(50), async || {
        match counter(&metrics, &series(receiver.port, "sent")).await {
            140 => Ok(()),
            n => Err(format!("{n} sent")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_receiver_down_the_host_serves_counts_tells_and_delivers_again() {
    let port = support::free_port();
    let (host, metrics) = host(port, "max_queued = 20");
    let mut viewer = host.viewer("hello", "", "alice").await;
    // Nothing listens: every request is still answered, at once.
    for i in 0..10 {
        assert_eq!(
            host.get("hello.localhost", &format!("/down-{i}"))
                .await
                .status,
            200
        );
    }
    // The owner is told, in the server's own log.
    let told = viewer
        .entries_until(|e| {
            e["level"] == "warn"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("entries not delivered"))
        })
        .await;
    let report = told.last().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        report.contains(&format!("http://127.0.0.1:{port}/v1/logs")),
        "{report}"
    );
    assert!(report.contains("max_queued"), "{report}");
    eventually(Duration::from_millis(50), async || {
        match counter(&metrics, &series(port, "dropped")).await {
            0 => Err("nothing counted as dropped yet".to_string()),
            _ => Ok(()),
        }
    })
    .await;

    // Back: what waited is delivered, and what comes next.
    let receiver = OtlpReceiver::start(port);
    let last = host
        .get("hello.localhost", "/back")
        .await
        .header("x-request-id")
        .unwrap()
        .to_string();
    let mut received = Vec::new();
    while !received.iter().any(|r: &Value| {
        r["attributes"]["request.id"] == last.as_str() && r["attributes"]["log.type"] == "request"
    }) {
        received.push(receiver.record());
    }
    // Bounded: at most the batch being retried and `max_queued` waiting
    // (20 each).
    let from_the_outage = received
        .iter()
        .filter(|r| r["attributes"]["request.id"] != last.as_str())
        .count();
    assert!(from_the_outage <= 40, "{from_the_outage} entries were held");
    // Nothing lost silently: every entry the owner saw published (the
    // reports too) was delivered or counted as dropped.
    let mut highest = told.iter().filter_map(|e| e["seq"].as_u64()).max().unwrap();
    let mut delivered = received.len() as u64;
    let (sent, dropped) = eventually(Duration::from_millis(50), async || {
        while let Some(frame) = viewer.try_frame() {
            for entry in frame["entries"].as_array().into_iter().flatten() {
                highest = highest.max(entry["seq"].as_u64().unwrap_or(0));
            }
        }
        delivered += receiver.received().len() as u64;
        let dropped = counter(&metrics, &series(port, "dropped")).await;
        let sent = counter(&metrics, &series(port, "sent")).await;
        if sent == delivered && sent + dropped == highest {
            Ok((sent, dropped))
        } else {
            Err(format!(
                "published {highest}: sent {sent} (delivered {delivered}), dropped {dropped}"
            ))
        }
    })
    .await;
    assert!(dropped > 0 && sent > 7, "sent {sent}, dropped {dropped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampling_rate_sends_whole_requests_picked_by_their_id() {
    let receiver = OtlpReceiver::start(0);
    let (host, metrics) = host(receiver.port, "sampling_rate = 0.5");
    let mut picked = BTreeSet::new();
    for i in 0..40 {
        let reply = host.get("hello.localhost", &format!("/sampled-{i}")).await;
        let id = reply.header("x-request-id").unwrap().to_string();
        // The viewers' rule: an id read as a 64-bit number below rate × 2^64.
        if u64::from_str_radix(&id, 16).unwrap() < 1 << 63 {
            picked.insert(id);
        }
    }
    assert!(
        !picked.is_empty() && picked.len() < 40,
        "{} of 40 picked",
        picked.len()
    );
    let expected = picked.len() * 7;
    let records: Vec<Value> = (0..expected).map(|_| receiver.record()).collect();
    let ids: BTreeSet<String> = records
        .iter()
        .map(|r| r["attributes"]["request.id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, picked, "exactly the picked requests");
    for id in &picked {
        let of_it = records
            .iter()
            .filter(|r| r["attributes"]["request.id"] == id.as_str());
        assert_eq!(of_it.count(), 7, "request {id} whole");
    }
    eventually(Duration::from_millis(50), async || {
        match counter(&metrics, &series(receiver.port, "sent")).await {
            n if n == expected as u64 => Ok(()),
            n => Err(format!("{n} sent, {expected} expected")),
        }
    })
    .await;
    assert!(receiver.received().is_empty(), "nothing else was sent");
}
