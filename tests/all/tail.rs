//! `mctx-host tail` against the real host: pretty and JSON output, filters,
//! reconnecting across a host restart, and a clear error for each refusal.

use crate::support;

use crate::support::{HostProcess, TailProcess, guest, tenant_toml, token};
use serde_json::Value;

fn config(logs: &str) -> String {
    let hello = guest("hello");
    [
        format!("[logs]\n{logs}\n"),
        tenant_toml("hello", "alice", "active", &[("1.0.0", &hello)]),
        tenant_toml("bobs", "bob", "active", &[("1.0.0", &hello)]),
    ]
    .concat()
}

/// [`config`]'s tenants and `mis` (misbehave.wasm), alice's too.
fn with_misbehave() -> HostProcess {
    let misbehave = guest("misbehave");
    let config = [
        config(""),
        tenant_toml("mis", "alice", "active", &[("1.0.0", &misbehave)]),
    ]
    .concat();
    HostProcess::multi(&config, &[])
}

fn url(host: &HostProcess) -> String {
    format!("http://localhost:{}", host.addr.port())
}

fn connected(line: &str) -> bool {
    line.contains("connected to")
}

/// `mctx-host tail SLUG --url … ARGS…` as alice, once it has connected.
fn tail_connected(host: &HostProcess, slug: &str, args: &[&str]) -> TailProcess {
    let base = url(host);
    let mut all = vec![slug, "--url", &base];
    all.extend_from_slice(args);
    let tail = TailProcess::start(&all, Some(&token("alice")));
    tail.stderr_line(connected);
    tail
}

/// [`tail_connected`] with `--format json` and these filters.
fn json_tail(host: &HostProcess, slug: &str, filters: &[&str]) -> TailProcess {
    let mut args = vec!["--format", "json"];
    args.extend_from_slice(filters);
    tail_connected(host, slug, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_is_one_entry_per_line() {
    let host = HostProcess::multi(&config(""), &[]);
    let tail = json_tail(&host, "hello", &[]);
    let id = host
        .get("hello.localhost", "/json")
        .await
        .header("x-request-id")
        .unwrap()
        .to_string();
    let mut entries = Vec::new();
    loop {
        let entry: Value =
            serde_json::from_str(&tail.stdout_line(|_| true)).expect("each line is JSON");
        let done = entry["type"] == "request";
        entries.push(entry);
        if done {
            break;
        }
    }
    assert_eq!(entries.len(), 7);
    assert!(
        entries
            .iter()
            .all(|e| e["requestId"] == id.as_str() && e["slug"] == "hello")
    );
    assert_eq!(entries[3]["level"], "warn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pretty_output_has_time_level_slug_and_message_without_colour_in_a_pipe() {
    let host = HostProcess::multi(&config(""), &[]);
    let tail = tail_connected(&host, "hello", &[]);
    host.get("hello.localhost", "/pretty").await;
    let line = tail.stdout_line(|line| line.contains("[WARN]"));
    let (time, rest) = line.split_at(12);
    assert!(
        time.len() == 12
            && time.as_bytes()[2] == b':'
            && time.as_bytes()[5] == b':'
            && time.as_bytes()[8] == b'.',
        "HH:MM:SS.mmm: {line}"
    );
    assert_eq!(
        rest,
        " WARN  [hello@1.0.0] [WARN] this is what a warning looks like"
    );
    assert!(
        !line.contains('\x1b'),
        "no colour codes when stdout is not a terminal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guests_terminal_escapes_are_shown_as_text() {
    let host = with_misbehave();
    let pretty = tail_connected(&host, "mis", &[]);
    let json = json_tail(&host, "mis", &[]);
    host.get("mis.localhost", "/escapes").await;

    let line = pretty.stdout_line(|line| line.contains("[WARN] title"));
    assert!(
        line.ends_with(
            r"[WARN] title\u{1b}]0;pwned\u{7} clear\u{1b}[2J c1\u{9b}31m bidi\u{202e}txt cr\rend"
        ),
        "{line:?}"
    );
    assert!(
        !line.contains(|c: char| c.is_control() || c == '\u{202e}'),
        "{line:?}"
    );
    // The entry itself is kept as the guest wrote it: escaping is the
    // terminal printer's, and JSON carries the text exactly.
    let entry = json.stdout_line(|line| line.contains("title"));
    let entry: Value = serde_json::from_str(&entry).unwrap();
    assert_eq!(
        entry["message"],
        "[WARN] title\x1b]0;pwned\x07 clear\x1b[2J c1\u{9b}31m bidi\u{202e}txt cr\rend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_are_passed_to_the_host() {
    let host = HostProcess::multi(&config(""), &[]);
    let tail = json_tail(&host, "hello", &["--level", "error", "--search", "PREFIX"]);
    let by_request = host
        .get("hello.localhost", "/one")
        .await
        .header("x-request-id")
        .unwrap()
        .to_string();
    let line = tail.stdout_line(|_| true);
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (entry["level"].as_str(), entry["message"].as_str()),
        (Some("error"), Some("stderr without a prefix"))
    );

    let requests = json_tail(&host, "hello", &["--type", "request"]);
    let id = host
        .get("hello.localhost", "/two")
        .await
        .header("x-request-id")
        .unwrap()
        .to_string();
    let event: Value = serde_json::from_str(&requests.stdout_line(|_| true)).unwrap();
    assert_eq!(
        (event["type"].as_str(), event["requestId"].as_str()),
        (Some("request"), Some(id.as_str()))
    );
    assert_ne!(id, by_request);

    let bad_level = TailProcess::start(
        &["hello", "--url", &url(&host), "--level", "loud"],
        Some(&token("alice")),
    );
    let (ok, stderr) = bad_level.exit();
    assert!(!ok && stderr.contains("unknown level \"loud\""), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_reconnects_when_the_host_restarts() {
    let config = config("");
    let host = HostProcess::multi(&config, &[]);
    let addr = host.addr.to_string();
    let tail = json_tail(&host, "hello", &[]);
    drop(host);
    tail.stderr_line(|line| line.contains("reconnecting in 1 s"));
    let host = HostProcess::multi(&config, &["--addr", &addr]);
    tail.stderr_line(connected);
    let id = host
        .get("hello.localhost", "/again")
        .await
        .header("x-request-id")
        .unwrap()
        .to_string();
    let line = tail.stdout_line(|line| line.contains("\"type\":\"request\""));
    assert!(line.contains(&id), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_is_a_clear_error_and_a_failed_exit() {
    let host = HostProcess::multi(&config("max_viewers_per_slug = 1"), &[]);
    let url = url(&host);
    let alice = token("alice");
    let cases: [(&str, Option<&str>, &str); 4] = [
        (
            "hello",
            Some("not-a-token"),
            "401 Unauthorized: invalid session token",
        ),
        (
            "bobs",
            Some(&alice),
            "403 Forbidden: you do not own server \"bobs\"",
        ),
        (
            "nobody",
            Some(&alice),
            "404 Not Found: unknown server \"nobody\"",
        ),
        (
            "hello",
            None,
            "no session token: pass --token or set MCTX_TOKEN",
        ),
    ];
    for (slug, token, expected) in cases {
        let (ok, stderr) = TailProcess::start(&[slug, "--url", &url], token).exit();
        assert!(!ok, "{slug}: exited successfully");
        assert!(
            stderr.contains(expected),
            "{slug}: expected {expected:?} in {stderr:?}"
        );
    }
    let _viewer = host.viewer("hello", "", "alice").await;
    let (ok, stderr) = TailProcess::start(&["hello", "--url", &url], Some(&alice)).exit();
    assert!(
        !ok && stderr.contains("429 Too Many Requests: server \"hello\" already has 1 log viewers"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampling_rate_picks_whole_requests_by_id() {
    let host = HostProcess::multi(&config(""), &[]);
    let tail = json_tail(&host, "hello", &["--sampling-rate", "0.5"]);
    // The documented rule at rate 0.5: ids below 2^63, i.e. whose first hex
    // digit is 0-7. Send until both kinds were seen and the last one sent
    // is picked, so that a wrongly delivered one would show before it.
    let picked = |id: &str| id.as_bytes()[0] < b'8';
    let (mut wanted, mut unwanted) = (Vec::new(), Vec::new());
    for _ in 0..400 {
        let reply = host.get("hello.localhost", "/").await;
        let id = reply.header("x-request-id").unwrap().to_string();
        if picked(&id) {
            wanted.push(id);
            if unwanted.len() >= 3 && wanted.len() >= 3 {
                break;
            }
        } else {
            unwanted.push(id);
        }
    }
    assert!(wanted.len() >= 3 && unwanted.len() >= 3, "both kinds seen");
    let last = wanted.last().unwrap().clone();
    let mut events = Vec::new();
    loop {
        let entry: Value = serde_json::from_str(&tail.stdout_line(|_| true)).unwrap();
        let id = entry["requestId"].as_str().unwrap().to_string();
        assert!(!unwanted.contains(&id), "{id} is not in the sample");
        if entry["type"] == "request" {
            events.push(id.clone());
            if id == last {
                break;
            }
        }
    }
    assert_eq!(events, wanted, "every picked request, whole, in order");
}

/// Reads a `--format json` tail until the event of request `last`; returns
/// each request id seen with its entries' types, in arrival order.
fn requests_until(tail: &TailProcess, last: &str) -> Vec<(String, Vec<String>)> {
    let mut seen: Vec<(String, Vec<String>)> = Vec::new();
    loop {
        let entry: Value = serde_json::from_str(&tail.stdout_line(|_| true)).unwrap();
        let id = entry["requestId"].as_str().unwrap().to_string();
        let kind = entry["type"].as_str().unwrap().to_string();
        match seen.last_mut() {
            Some((current, kinds)) if *current == id => kinds.push(kind.clone()),
            _ => seen.push((id.clone(), vec![kind.clone()])),
        }
        if kind == "request" && id == last {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_method_and_header_filters_pick_whole_requests() {
    let host = with_misbehave();
    let errors = json_tail(&host, "mis", &["--status", "error"]);
    let posts = json_tail(&host, "hello", &["--method", "post"]);
    let picked = json_tail(&host, "hello", &["--header", "X-Pick: yes"]);

    let id = |reply: support::Reply| reply.header("x-request-id").unwrap().to_string();
    host.get("mis.localhost", "/").await;
    let trap1 = id(host.get("mis.localhost", "/trap").await);
    let trap2 = id(host.request("POST", "mis.localhost", "/trap", &[]).await);
    let get_yes = id(host
        .request("GET", "hello.localhost", "/", &[("x-pick", "yes")])
        .await);
    let post_no = id(host
        .request("POST", "hello.localhost", "/", &[("x-pick", "no")])
        .await);
    host.get("hello.localhost", "/").await;
    let post_yes = id(host
        .request("POST", "hello.localhost", "/", &[("x-pick", "yes")])
        .await);

    // Each request whole: its lines (held until it ended), then its event.
    let whole = |kinds: &[String], lines: usize| {
        kinds.len() > lines
            && kinds[..kinds.len() - 1].iter().all(|k| k == "log")
            && kinds.last().unwrap() == "request"
    };
    let got = requests_until(&errors, &trap2);
    let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, [trap1.as_str(), trap2.as_str()], "only the traps");
    // "[INFO] about to trap", the panic, the host's trap entry, the event.
    assert!(got.iter().all(|(_, kinds)| whole(kinds, 3)), "{got:?}");

    let got = requests_until(&posts, &post_yes);
    let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, [post_no.as_str(), post_yes.as_str()], "only the POSTs");
    assert!(
        got.iter()
            .all(|(_, kinds)| whole(kinds, 6) && kinds.len() == 7),
        "{got:?}"
    );

    let got = requests_until(&picked, &post_yes);
    let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [get_yes.as_str(), post_yes.as_str()],
        "only x-pick: yes"
    );
    let event: Value = {
        // The event carries the headers it was picked by, credentials hidden.
        let reply = host
            .request(
                "GET",
                "hello.localhost",
                "/",
                &[("x-pick", "yes"), ("authorization", "Bearer secret-token")],
            )
            .await;
        let last = id(reply);
        loop {
            let entry: Value = serde_json::from_str(&picked.stdout_line(|_| true)).unwrap();
            if entry["type"] == "request" && entry["requestId"] == last.as_str() {
                break entry;
            }
        }
    };
    assert_eq!(event["headers"]["x-pick"], "yes");
    assert_eq!(event["headers"]["authorization"], "[REDACTED]");
}

/// MCP 2026-07-28 requests name their method and target in headers: the
/// host shows them and filters on them without reading the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_requests_show_and_filter_by_their_method_and_name() {
    let host = HostProcess::multi(&config(""), &[]);
    let tail = tail_connected(&host, "hello", &["--mcp-method", "tools/call"]);
    let mcp = |method: &'static str, name: Option<&'static str>| {
        let mut headers = vec![("mcp-method", method)];
        headers.extend(name.map(|name| ("mcp-name", name)));
        headers
    };
    host.request("POST", "hello.localhost", "/mcp", &mcp("tools/list", None))
        .await;
    host.request("POST", "hello.localhost", "/mcp", &[]).await;
    let called = host
        .request(
            "POST",
            "hello.localhost",
            "/mcp",
            &mcp("tools/call", Some("get_weather")),
        )
        .await;
    let id = called.header("x-request-id").unwrap().to_string();
    // The first event tail prints is the tools/call one, shown by what it
    // called rather than `POST /mcp`.
    let line = tail.stdout_line(|line| line.contains(" ms)"));
    assert!(
        line.contains("tools/call get_weather 200 ok"),
        "only tools/call, by name: {line}"
    );
    // And a JSON viewer sees the fields.
    let mut viewer = host.viewer("hello", "type=request", "alice").await;
    let again = host
        .request(
            "POST",
            "hello.localhost",
            "/mcp",
            &mcp("tools/call", Some("echo")),
        )
        .await;
    let event = viewer
        .request_entries(again.header("x-request-id").unwrap())
        .await
        .pop()
        .unwrap();
    assert_eq!(
        (event["mcpMethod"].as_str(), event["mcpName"].as_str()),
        (Some("tools/call"), Some("echo"))
    );
    assert_ne!(id, again.header("x-request-id").unwrap());
}
