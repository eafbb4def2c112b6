//! Live log streams over real WebSockets against the real host and guests:
//! entries and levels, limits, request events, hubs and fan-out, slow
//! viewers, filters, authentication and the viewer limit.

use crate::support;

use crate::support::{HostProcess, Received, Refused, guest, tenant_toml};
use serde_json::Value;

fn config(host: &str, logs: &str) -> String {
    let (hello, misbehave) = (guest("hello"), guest("misbehave"));
    [
        format!("[host]\n{host}\n[logs]\n{logs}\n"),
        tenant_toml("hello", "alice", "active", &[("1.0.0", &hello)]),
        tenant_toml("bad", "alice", "active", &[("1.0.0", &misbehave)]),
        tenant_toml("bobs", "bob", "active", &[("1.0.0", &hello)]),
        tenant_toml("sleepy", "alice", "inactive", &[("1.0.0", &hello)]),
    ]
    .concat()
}

fn host() -> HostProcess {
    HostProcess::multi(&config("cpu_limit_ms = 500", ""), &[])
}

fn request_id(reply: &support::Reply) -> String {
    reply
        .header("x-request-id")
        .expect("x-request-id")
        .to_string()
}

fn levels_and_messages(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e["level"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn seqs(entries: &[Value]) -> Vec<u64> {
    entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_level_and_prefix_arrives_with_a_request_event() {
    let host = host();
    let mut viewer = host.viewer("hello", "", "alice").await;
    let reply = host.get("hello.localhost", "/path?q=1").await;
    let id = request_id(&reply);
    let entries = viewer.request_entries(&id).await;
    assert_eq!(
        levels_and_messages(&entries[..6]),
        [
            ("log", "hello: GET /path?q=1"),
            ("info", "[INFO] request received: GET /path?q=1"),
            ("debug", "[DEBUG] headers: 2"),
            ("warn", "[WARN] this is what a warning looks like"),
            ("error", "[ERROR] this is what an error looks like"),
            ("error", "stderr without a prefix"),
        ]
        .map(|(l, m)| (l.to_string(), m.to_string()))
    );
    assert_eq!(seqs(&entries), (1..=7).collect::<Vec<_>>());
    for entry in &entries {
        assert_eq!(
            (entry["slug"].as_str(), entry["version"].as_str()),
            (Some("hello"), Some("1.0.0"))
        );
        assert_eq!(entry["requestId"], id.as_str());
        assert!(
            entry["timestamp"].as_u64().unwrap() > 1_700_000_000_000,
            "ms since the epoch"
        );
    }
    let event = &entries[6];
    assert_eq!(event["type"], "request");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .starts_with("GET /path?q=1 200 ok (")
    );
    assert_eq!(
        (event["method"].as_str(), event["path"].as_str()),
        (Some("GET"), Some("/path?q=1"))
    );
    assert_eq!(
        (event["status"].as_u64(), event["outcome"].as_str()),
        (Some(200), Some("ok"))
    );
    assert!(event["wallMs"].is_u64() && event["cpuMs"].is_u64());
    assert!(entries[..6].iter().all(|e| e["type"] == "log"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_line_writes_split_and_long_lines_are_truncated() {
    let host = host();
    let mut viewer = host.viewer("bad", "", "alice").await;
    let id = request_id(&host.get("bad.localhost", "/flood?lines=3").await);
    let entries = viewer.request_entries(&id).await;
    let messages: Vec<&str> = entries[..3]
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["flood line 0", "flood line 1", "flood line 2"]);

    let id = request_id(&host.get("bad.localhost", "/big?kb=20").await);
    let entries = viewer.request_entries(&id).await;
    let big = &entries[0];
    assert_eq!(big["truncated"], true);
    assert_eq!(big["message"].as_str().unwrap().len(), 10_240);
    assert!(
        entries[1].get("truncated").is_none(),
        "only the long line is flagged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_line_arrives_structured_and_searchable() {
    let host = host();
    let mut viewer = host.viewer("hello", "", "alice").await;
    let mut searching = host.viewer("hello", "search=USER%3A42", "alice").await;
    let id = request_id(&host.get("hello.localhost", "/structured").await);
    let entries = viewer.request_entries(&id).await;
    let structured = &entries[0];
    assert_eq!(structured["level"], "warn");
    assert_eq!(structured["message"], "cache miss");
    assert_eq!(
        structured["fields"],
        serde_json::json!({ "key": "user:42", "ms": 12 })
    );
    assert_eq!(entries[1]["message"], "not JSON, a plain line");
    assert!(
        entries[1].get("fields").is_none(),
        "a plain line is untouched"
    );

    // The search looks inside the fields: only the structured line matches.
    let found = searching.frame().await;
    let found = found["entries"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["message"], "cache miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_nobody_reads_by_design_is_no_disconnection() {
    // hyper sends no body for HEAD (nor 204/304): the guest's unread body
    // must not be reported as the client going away.
    let host = host();
    let mut viewer = host.viewer("hello", "type=request", "alice").await;
    let reply = host.request("HEAD", "hello.localhost", "/", &[]).await;
    assert_eq!(reply.status, 200);
    let id = request_id(&reply);
    let event = viewer.request_entries(&id).await.pop().unwrap();
    assert_eq!(event["outcome"], "ok", "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_past_256_kib_is_dropped_with_one_warning() {
    // 40,000 writes through a debug build's WASI and capture code cost real
    // CPU, charged to the guest, and more so on a loaded machine (a short
    // poll is charged by the clock, `run::limits`): this test is about the
    // output budget, so the CPU limit is far out of its way.
    let host = HostProcess::multi(&config("cpu_limit_ms = 60000", ""), &[]);
    let mut viewer = host.viewer("bad", "type=log", "alice").await;
    // 40,000 lines of 13-17 bytes: about 640 KB, well past the budget.
    let reply = host.get("bad.localhost", "/flood?lines=40000").await;
    assert_eq!(reply.status, 200, "the guest keeps running");
    let entries = viewer.entries_until(|e| e["level"] == "warn").await;
    // The entries are exactly the first 256 KiB of what the guest wrote,
    // split into lines (the last one cut mid-line).
    let output: String = (0..40_000).map(|i| format!("flood line {i}\n")).collect();
    let expected: Vec<&str> = output[..256 * 1024].split('\n').collect();
    let got: Vec<&str> = entries[..entries.len() - 1]
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(got, expected);
    let warning = entries.last().unwrap()["message"].as_str().unwrap();
    assert!(warning.contains("output limit reached"), "{warning}");
    let dropped = output.len() - 256 * 1024;
    assert!(
        warning.contains(&format!("remaining {dropped} bytes were dropped")),
        "{warning}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_events_report_traps_and_the_cpu_limit() {
    let host = host();
    let mut viewer = host.viewer("bad", "type=request", "alice").await;
    for (path, status, outcome) in [
        ("/trap", 500, "exception"),
        ("/spin", 503, "exceededCpu"),
        ("/ok", 200, "ok"),
    ] {
        let reply = host.get("bad.localhost", path).await;
        assert_eq!(reply.status, status);
        let event = viewer
            .request_entries(&request_id(&reply))
            .await
            .pop()
            .unwrap();
        assert_eq!(
            (event["status"].as_u64(), event["outcome"].as_str()),
            (Some(u64::from(status)), Some(outcome)),
            "{path}"
        );
        assert_eq!(event["level"], if status == 200 { "info" } else { "error" });
        if outcome == "exceededCpu" {
            assert!(event["cpuMs"].as_u64().unwrap() >= 500, "{event}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_message_becomes_an_error_entry() {
    let host = host();
    let mut viewer = host.viewer("bad", "", "alice").await;
    let id = request_id(&host.get("bad.localhost", "/trap").await);
    let entries = viewer.request_entries(&id).await;
    let trap = entries
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("[mctx] the guest trapped")
        })
        .unwrap();
    assert_eq!(trap["level"], "error");
    assert!(
        trap["message"].as_str().unwrap().contains("unreachable"),
        "{trap}"
    );

    // The request event carries the exception with the guest's own
    // functions, demangled, innermost first: the panic machinery, then the
    // handler that panicked (inlined into its export,
    // `wasi:http/incoming-handler@0.2.x#handle`, in a release build).
    let event = entries.last().unwrap();
    assert_eq!(event["outcome"], "exception");
    let exception = &event["exception"];
    assert_eq!(exception["name"], "UnreachableCodeReached", "{exception}");
    assert!(
        exception["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{exception}"
    );
    let stack = support::stack_of(event);
    let handler = stack
        .iter()
        .position(|f| f.ends_with("handle"))
        .unwrap_or_else(|| panic!("the handler is in the stack: {stack:#?}"));
    assert!(
        stack[..handler].iter().any(|f| f.contains("panic")),
        "the panic comes before the handler: {stack:#?}"
    );
    assert!(
        stack
            .iter()
            .all(|f| !f.starts_with("_ZN") && !f.starts_with("_R")),
        "demangled: {stack:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slugs_never_cross_and_every_viewer_gets_everything_in_order() {
    let host = host();
    let mut hello_a = host.viewer("hello", "", "alice").await;
    let mut hello_b = host.viewer("hello", "", "alice").await;
    let mut bad = host.viewer("bad", "", "alice").await;
    let mut last_hello = String::new();
    let mut last_bad = String::new();
    for _ in 0..5 {
        last_hello = request_id(&host.get("hello.localhost", "/").await);
        last_bad = request_id(&host.get("bad.localhost", "/flood?lines=5").await);
    }
    let a = hello_a.request_entries(&last_hello).await;
    let b = hello_b.request_entries(&last_hello).await;
    assert_eq!(a.len(), 35);
    assert_eq!(a, b, "both viewers got the same entries in the same order");
    assert_eq!(seqs(&a), (1..=35).collect::<Vec<_>>(), "gapless");
    assert!(a.iter().all(|e| e["slug"] == "hello"));
    let bad_entries = bad.request_entries(&last_bad).await;
    assert!(bad_entries.iter().all(|e| e["slug"] == "bad"));
    assert_eq!(seqs(&bad_entries), (1..=30).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_nothing_of_requests_before_it_connected() {
    let host = host();
    let before = request_id(&host.get("hello.localhost", "/").await);
    let mut viewer = host.viewer("hello", "", "alice").await;
    let after = request_id(&host.get("hello.localhost", "/").await);
    let entries = viewer.request_entries(&after).await;
    assert!(
        entries.iter().all(|e| e["requestId"] == after.as_str()),
        "nothing of {before}"
    );
    assert_eq!(entries[0]["seq"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_apply_before_sending() {
    let host = host();
    let mut levels = host.viewer("hello", "level=warn,error", "alice").await;
    let mut search = host.viewer("hello", "search=WARNING", "alice").await;
    let mut requests = host.viewer("hello", "type=request", "alice").await;
    let first = request_id(&host.get("hello.localhost", "/one").await);
    let second = request_id(&host.get("hello.localhost", "/two").await);

    let got = levels
        .entries_until(|e| {
            e["requestId"] == second.as_str() && e["message"] == "stderr without a prefix"
        })
        .await;
    assert_eq!(got.len(), 6, "3 per request: {got:?}");
    assert!(
        got.iter()
            .all(|e| e["level"] == "warn" || e["level"] == "error")
    );

    let got = search
        .entries_until(|e| e["requestId"] == second.as_str())
        .await;
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|e| e["message"] == "[WARN] this is what a warning looks like")
    );

    let got = requests.request_entries(&second).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["requestId"], first.as_str());
    assert!(got.iter().all(|e| e["type"] == "request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_filter_follows_one_request() {
    let host = host();
    // A streaming request: its id is known from the response head while
    // the guest is still running.
    let (response, connection) = host.get_head("bad.localhost", "/stream").await;
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut viewer = host
        .viewer("bad", &format!("requestId={id}"), "alice")
        .await;

    // Another request of the same slug, while the stream runs: filtered out.
    let other = request_id(&host.get("bad.localhost", "/flood?lines=2").await);
    // End the stream: the guest notices, logs and finishes.
    drop(response);
    connection.abort();
    let entries = viewer.request_entries(&id).await;
    assert!(
        entries.iter().all(|e| e["requestId"] == id.as_str()),
        "nothing of {other}: {entries:?}"
    );
    assert!(
        entries[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("[INFO] client went away"),
        "{entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_viewer_is_told_what_it_missed_while_a_fast_one_misses_nothing() {
    let host = HostProcess::multi(
        &config(
            "",
            "viewer_queue_entries = 25600\nslow_viewer_grace_secs = 600",
        ),
        &[],
    );
    let mut fast = host.viewer("bad", "", "alice").await;
    // The slow viewer reads nothing until the flood is over.
    let mut slow = host.viewer("bad", "", "alice").await;
    let mut last = String::new();
    let mut total = 0;
    for _ in 0..12 {
        last = request_id(&host.get("bad.localhost", "/flood?lines=16000").await);
        // Pace the flood by the fast viewer: it must keep up, and does.
        let entries = fast.request_entries(&last).await;
        for entry in &entries {
            total += 1;
            assert_eq!(entry["seq"], total, "the fast viewer misses nothing");
        }
    }

    // Now the slow one reads: every gap in its seq is preceded by a
    // `dropped` frame counting exactly the missing entries.
    let (mut expected, mut announced, mut dropped_frames) = (1u64, 0u64, 0);
    loop {
        let frame = slow.frame().await;
        match frame["type"].as_str().unwrap() {
            "dropped" => {
                announced += frame["count"].as_u64().unwrap();
                dropped_frames += 1;
            }
            "logs" => {
                for entry in frame["entries"].as_array().unwrap() {
                    let seq = entry["seq"].as_u64().unwrap();
                    assert_eq!(seq, expected + announced, "gap not accounted for");
                    (expected, announced) = (seq + 1, 0);
                }
            }
            other => panic!("unexpected frame {other}"),
        }
        if expected + announced > total {
            break;
        }
    }
    assert!(
        dropped_frames > 0,
        "the slow viewer fell behind and was told"
    );
    let _ = last;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_before_the_upgrade_with_the_right_status() {
    use base64::Engine as _;
    let host = host();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let alice = support::token("alice");
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged_payload =
        b64(format!(r#"{{"sub":"alice","exp":{},"iat":0}}"#, exp + 3600).as_bytes());
    let parts: Vec<&str> = alice.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        forged_payload
    );
    let wrong_key = mctx_host::auth::Sessions::new(b"some-other-secret-that-is-long-enough")
        .unwrap()
        .mint("alice", std::time::Duration::from_secs(60));
    let expired = {
        use jsonwebtoken::{EncodingKey, Header, encode};
        let claims = mctx_host::auth::Claims {
            sub: "alice".into(),
            exp: exp - 3600,
            iat: exp - 7200,
        };
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(support::TEST_SECRET.as_bytes()),
        )
        .unwrap()
    };
    let cookie = |token: &str| format!("session={token}");
    let bearer = |token: &str| format!("Bearer {token}");
    let port = host.addr.port();
    let own_origin = format!("http://localhost:{port}");

    /// Path, request headers, expected status, expected words in the error.
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("/log-stream/hello", vec![], 401, "sign in"),
        (
            "/log-stream/hello",
            vec![("cookie", "session=garbage".into())],
            401,
            "invalid",
        ),
        (
            "/log-stream/hello",
            vec![("cookie", cookie(&expired))],
            401,
            "expired",
        ),
        (
            "/log-stream/hello",
            vec![("cookie", cookie(&wrong_key))],
            401,
            "invalid",
        ),
        (
            "/log-stream/hello",
            vec![("cookie", cookie(&alg_none))],
            401,
            "invalid",
        ),
        (
            "/log-stream/hello",
            vec![("cookie", cookie(&tampered))],
            401,
            "invalid",
        ),
        (
            "/log-stream/nobody",
            vec![("cookie", cookie(&alice))],
            404,
            "unknown server",
        ),
        (
            "/log-stream/bobs",
            vec![("cookie", cookie(&alice))],
            403,
            "do not own",
        ),
        (
            "/log-stream/sleepy",
            vec![("cookie", cookie(&alice))],
            403,
            "inactive",
        ),
        (
            "/log-stream/hello",
            vec![
                ("cookie", cookie(&alice)),
                ("origin", "http://evil.example".into()),
            ],
            403,
            "origin",
        ),
        (
            "/log-stream/hello?level=loud",
            vec![("cookie", cookie(&alice))],
            400,
            "unknown level",
        ),
        (
            "/log-stream/..%2Fhello",
            vec![("cookie", cookie(&alice))],
            404,
            "unknown server",
        ),
    ];
    for (path, headers, status, error) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let Err(Refused {
            status: got,
            error: message,
        }) = host.try_viewer(path, &headers).await
        else {
            panic!("{path} {headers:?} was let in");
        };
        assert_eq!(got, status, "{path} {headers:?}: {message}");
        assert!(message.contains(error), "{path}: {message}");
    }

    // The same token works as a bearer token, and from the host's own origin.
    let ok = [("authorization", bearer(&alice)), ("origin", own_origin)];
    let ok: Vec<(&str, &str)> = ok.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert!(host.try_viewer("/log-stream/hello", &ok).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eleventh_viewer_is_refused_until_a_slot_opens() {
    let host = host();
    let mut viewers = Vec::new();
    for _ in 0..10 {
        viewers.push(host.viewer("hello", "", "alice").await);
    }
    let cookie = format!("session={}", support::token("alice"));
    let refused = host
        .try_viewer("/log-stream/hello", &[("cookie", &cookie)])
        .await
        .err()
        .expect("11th refused");
    assert_eq!(refused.status, 429);
    assert!(
        refused.error.contains("10 log viewers"),
        "{}",
        refused.error
    );
    // Other slugs are unaffected.
    let _other = host.viewer("bad", "", "alice").await;
    // Closing one frees a slot (the host notices the close, then admits).
    let mut leaving = viewers.pop().unwrap();
    leaving.close().await;
    let mut admitted = None;
    for _ in 0..200 {
        match host
            .try_viewer("/log-stream/hello", &[("cookie", &cookie)])
            .await
        {
            Ok(viewer) => {
                admitted = Some(viewer);
                break;
            }
            Err(refused) => {
                assert_eq!(refused.status, 429);
                tokio::task::yield_now().await;
            }
        }
    }
    assert!(admitted.is_some(), "a slot opened after a viewer left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_viewer_is_closed_with_a_closing_frame() {
    let host = HostProcess::multi(
        &config("", "idle_timeout_secs = 1\nping_interval_secs = 600"),
        &[],
    );
    let mut viewer = host.viewer("hello", "", "alice").await;
    let closing = viewer.frame().await;
    assert_eq!(closing["type"], "closing");
    assert!(
        closing["reason"].as_str().unwrap().contains("idle"),
        "{closing}"
    );
    match viewer.receive().await {
        Received::Closed(Some((1000, reason))) => assert!(reason.contains("idle")),
        other => panic!("expected a normal close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_are_pinged_and_answering_keeps_them_open() {
    let host = HostProcess::multi(
        &config("", "idle_timeout_secs = 2\nping_interval_secs = 1"),
        &[],
    );
    let mut viewer = host.viewer("hello", "", "alice").await;
    // Four pings span more than the idle timeout; each pong counts as
    // traffic, so no closing frame comes in between.
    for _ in 0..4 {
        assert!(matches!(viewer.receive().await, Received::Ping));
    }
}

#[test]
fn multi_tenant_mode_refuses_to_start_without_a_session_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    std::fs::write(&path, config("", "")).unwrap();
    let args = [
        "serve".into(),
        "--config".into(),
        path.into_os_string(),
        "--addr".into(),
        "127.0.0.1:0".into(),
    ];
    let stderr = support::run_failing(&args);
    assert!(stderr.contains("no session secret"), "{stderr}");
    assert!(
        stderr.contains("MCTX_SESSION_SECRET") && stderr.contains("--dev"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_prints_a_working_token_per_owner() {
    let host = HostProcess::multi(&config("", ""), &["--dev"]);
    let line = host.wait_for_line(|line| line.contains("dev session token for \"alice\""));
    let token = line.rsplit(' ').next().unwrap();
    let bearer = format!("Bearer {token}");
    assert!(
        host.try_viewer("/log-stream/hello", &[("authorization", &bearer)])
            .await
            .is_ok()
    );
    // The test secret is not in use: a token signed with it is refused.
    let other = format!("Bearer {}", support::token("alice"));
    let refused = host
        .try_viewer("/log-stream/hello", &[("authorization", &other)])
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_command_mints_tokens_the_host_accepts() {
    let host = host();
    let (ok, stdout, stderr) = support::run_command(
        &["token", "--user", "alice", "--ttl", "5m"],
        &[("MCTX_SESSION_SECRET", support::TEST_SECRET)],
    );
    assert!(ok, "{stderr}");
    let cookie = format!("session={}", stdout.trim());
    assert!(
        host.try_viewer("/log-stream/hello", &[("cookie", &cookie)])
            .await
            .is_ok()
    );

    let (ok, _, stderr) = support::run_command(&["token", "--user", "alice"], &[]);
    assert!(!ok && stderr.contains("no session secret"), "{stderr}");
    let (ok, _, stderr) = support::run_command(&["token", "--user", "alice", "--ttl", "soon"], &[]);
    assert!(!ok && stderr.contains("not a duration"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_line_arrives_while_its_request_is_still_running() {
    let host = host();
    let mut viewer = host.viewer("bad", "", "alice").await;
    // The guest logs one line, then sleeps 900 ms before answering. If the
    // hub held lines for a batch interval, the answer would come first.
    let slow = host.spawn_get("bad.localhost", "/slow?ms=900");
    let first = viewer.frame().await;
    assert_eq!(first["entries"][0]["message"], "[INFO] sleeping 900 ms");
    assert!(!slow.is_finished(), "the line came before the response");
    assert_eq!(slow.await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_attacks_are_refused_and_leave_nothing_behind() {
    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, Header, encode};
    let host = host();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = EncodingKey::from_secret(support::TEST_SECRET.as_bytes());
    let cookie = |token: &str| format!("session={token}");

    // Not valid yet (nbf in an hour).
    let early = encode(
        &Header::default(),
        &serde_json::json!({ "sub": "alice", "exp": now + 7200, "iat": now, "nbf": now + 3600 }),
        &key,
    )
    .unwrap();
    // Claims RS256 in its header (signed with the secret as an HMAC key).
    let alice = support::token("alice");
    let parts: Vec<&str> = alice.split('.').collect();
    let rs256 = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"RS256","typ":"JWT"}"#),
        parts[1],
        parts[2]
    );
    // A token without `exp`.
    let forever = encode(
        &Header::default(),
        &serde_json::json!({ "sub": "alice", "iat": now }),
        &key,
    )
    .unwrap();
    for (token, words) in [
        (early, "not valid yet"),
        (rs256, "invalid"),
        (forever, "invalid"),
    ] {
        let refused = host
            .try_viewer("/log-stream/hello", &[("cookie", &cookie(&token))])
            .await
            .err()
            .unwrap();
        assert_eq!(
            (refused.status, refused.error.contains(words)),
            (401, true),
            "{}",
            refused.error
        );
    }

    // Other spellings of a slug never reach it.
    let alice_cookie = cookie(&alice);
    for path in [
        "/log-stream/h%C3%A9llo",
        "/log-stream/HELLO",
        "/log-stream/%68ello",
        "/log-stream/hello%00",
        "/log-stream/hello/",
    ] {
        let refused = host
            .try_viewer(path, &[("cookie", &alice_cookie)])
            .await
            .err()
            .expect(path);
        assert_eq!(refused.status, 404, "{path}: {}", refused.error);
    }

    // An oversized header is refused by the HTTP layer.
    let huge = format!("session={}", "x".repeat(1 << 20));
    let reply = host
        .request(
            "GET",
            "localhost",
            "/log-stream/hello",
            &[("cookie", &huge)],
        )
        .await;
    assert_eq!(reply.status, 431);

    // A flood of upgrade attempts: unauthenticated ones are all 401; with
    // the slug full, authenticated ones are all 429, and no slot leaks.
    let mut viewers = Vec::new();
    for _ in 0..10 {
        viewers.push(host.viewer("hello", "", "alice").await);
    }
    let mut attempts = Vec::new();
    let host_ref = &host;
    for i in 0..200 {
        let headers: Vec<(String, String)> = if i % 2 == 0 {
            vec![]
        } else {
            vec![("cookie".into(), alice_cookie.clone())]
        };
        let host = host_ref;
        attempts.push(async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            host.try_viewer("/log-stream/hello", &headers)
                .await
                .err()
                .map(|r| r.status)
        });
    }
    let statuses = futures_util::future::join_all(attempts).await;
    assert_eq!(statuses.iter().filter(|s| **s == Some(401)).count(), 100);
    assert_eq!(statuses.iter().filter(|s| **s == Some(429)).count(), 100);

    // Leaving frees every slot: after the ten leave, ten can join again.
    for mut viewer in viewers.drain(..) {
        viewer.close().await;
    }
    let mut joined = 0;
    while joined < 10 {
        match host
            .try_viewer("/log-stream/hello", &[("cookie", &alice_cookie)])
            .await
        {
            Ok(viewer) => {
                viewers.push(viewer);
                joined += 1;
            }
            Err(refused) => {
                assert_eq!(refused.status, 429, "{}", refused.error);
                tokio::task::yield_now().await;
            }
        }
    }
    // And they see hello's entries, nothing else.
    let id = request_id(&host.get("hello.localhost", "/").await);
    let entries = viewers[9].request_entries(&id).await;
    assert!(entries.iter().all(|e| e["slug"] == "hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_never_reads_is_closed_and_its_slot_given_back() {
    let host = HostProcess::multi(
        &config(
            "",
            "max_viewers_per_slug = 1\nslow_viewer_grace_secs = 1\nviewer_queue_bytes = 1048576",
        ),
        &[],
    );
    // Connected, then never read: the kernel's buffers fill, then the
    // host's write to it blocks.
    let _deaf = host.viewer("bad", "", "alice").await;
    let token = support::token("alice");
    let cookie = format!("session={token}");
    let mut admitted = None;
    for _ in 0..60 {
        host.get("bad.localhost", "/flood?lines=20000").await;
        match host
            .try_viewer("/log-stream/bad", &[("cookie", cookie.as_str())])
            .await
        {
            Ok(viewer) => {
                admitted = Some(viewer);
                break;
            }
            Err(refused) => assert_eq!(refused.status, 429, "{}", refused.error),
        }
    }
    assert!(
        admitted.is_some(),
        "the deaf viewer still holds the slug's only slot"
    );
    // The host serves as before.
    assert_eq!(host.get("hello.localhost", "/").await.status, 200);
}
