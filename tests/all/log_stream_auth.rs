//! Live log streams, who may watch: the session secret a multi-tenant host
//! needs, `--dev` tokens, the `token` command, and attacks on the stream
//! that are refused and leave nothing behind.

use super::log_streams::{config, host, request_id};
use crate::support;
use crate::support::HostProcess;

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
