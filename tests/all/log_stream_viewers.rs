//! Live log streams, the viewers side: slugs never cross, fan-out in order,
//! filters applied in the host, slow viewers told what they missed, the
//! refusals before the upgrade, the viewer limit, idle and ping handling.

use super::log_streams::{config, host, request_id, seqs};
use crate::support;
use crate::support::{HostProcess, Received, Refused};

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
