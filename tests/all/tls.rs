//! TLS at the front door, against the real binary with certificates made
//! in the test (`support::pki`): https over HTTP/1.1 and HTTP/2, the guest
//! seeing `https`, `tail` over wss with a private CA (and refusing a wrong
//! one), plain HTTP refused on the TLS port, a certificate swapped on
//! SIGHUP while a viewer stays, the redirect listener, HSTS and the Secure
//! cookie, and broken certificates refused at start.

use crate::support;

use std::sync::Arc;

use crate::support::pki::{Ca, HostCert};
use crate::support::{HostProcess, TailProcess, guest, tenant_toml, token};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What an https exchange gave.
struct Answer {
    version: http::Version,
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
    /// The certificate the host presented.
    peer: Vec<u8>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// One request over a fresh TLS connection, HTTP/2 if ALPN picks it.
async fn https(
    host: &HostProcess,
    client: Arc<rustls::ClientConfig>,
    authority: &str,
    path: &str,
) -> Answer {
    https_form(host, client, authority, path, None).await
}

/// `https`, as a POST of an HTML form's `form` body when there is one.
async fn https_form(
    host: &HostProcess,
    client: Arc<rustls::ClientConfig>,
    authority: &str,
    path: &str,
    form: Option<&str>,
) -> Answer {
    let tcp = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .expect("the TLS handshake");
    let peer = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let port = host.addr.port();
    let request = http::Request::builder()
        .method(if form.is_some() { "POST" } else { "GET" })
        .uri(format!("https://{authority}:{port}{path}"))
        .header("host", format!("{authority}:{port}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form.unwrap_or_default().to_string())))
        .unwrap();
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        // HTTP/2 takes the authority from the URI, not a Host header.
        let (mut parts, body) = request.into_parts();
        parts.headers.remove("host");
        sender
            .send_request(http::Request::from_parts(parts, body))
            .await
            .unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let (mut parts, body) = request.into_parts();
        parts.uri = path.parse().unwrap();
        sender
            .send_request(http::Request::from_parts(parts, body))
            .await
            .unwrap()
    };
    let (parts, body) = response.into_parts();
    Answer {
        version: parts.version,
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
        peer,
    }
}

fn tls_args(cert: &HostCert) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        cert.cert.display().to_string(),
        "--tls-key".into(),
        cert.key.display().to_string(),
    ]
}

fn hello_config(extra: &str) -> String {
    format!(
        "{extra}{}",
        tenant_toml("hello", "alice", "active", &[("1.0.0", &guest("hello"))])
    )
}

fn start(config: &str, cert: &HostCert) -> HostProcess {
    let args = tls_args(cert);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    HostProcess::multi(config, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_tenants_over_http1_and_http2_and_the_guest_sees_https() {
    let ca = Ca::new("test CA");
    let cert = ca.host("host");
    let host = start(&hello_config(""), &cert);

    let h1 = https(&host, ca.client(&[b"http/1.1"]), "hello.localhost", "/v1/x").await;
    let h2 = https(
        &host,
        ca.client(&[b"h2", b"http/1.1"]),
        "hello.localhost",
        "/v1/x",
    )
    .await;
    assert_eq!(
        (h1.version, h2.version),
        (http::Version::HTTP_11, http::Version::HTTP_2)
    );
    for answer in [&h1, &h2] {
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let echo = answer.json();
        assert_eq!(echo["scheme"], "https");
        assert_eq!(echo["path"], "/x");
        assert_eq!(echo["headers"]["x-tenant-slug"], "hello");
        assert!(answer.headers.get("x-request-id").is_some());
        assert!(
            answer.headers.get("strict-transport-security").is_none(),
            "hsts is off"
        );
    }

    // Many streams on one HTTP/2 connection, each a request like any other.
    let tcp = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(ca.client(&[b"h2"]))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let port = host.addr.port();
    let streams: Vec<_> = (0..20)
        .map(|i| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let request = http::Request::get(format!("https://hello.localhost:{port}/s{i}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                let status = response.status().as_u16();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
                (status, echo["path"].as_str().unwrap().to_string())
            })
        })
        .collect();
    for (i, stream) in streams.into_iter().enumerate() {
        assert_eq!(stream.await.unwrap(), (200, format!("/s{i}")));
    }

    // Plain HTTP to the TLS port: no tenant answers it.
    let mut plain = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut plain,
        b"GET /v1/x HTTP/1.1\r\nhost: hello.localhost\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut reply = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut reply);
    let _ = tokio::time::timeout(support::PATIENCE, read)
        .await
        .expect("the host closed it");
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        !reply.contains("HTTP/1.1 200") && !reply.contains("x-tenant-slug"),
        "{reply}"
    );
    // Counted by the connection's task right after it closed the socket:
    // poll until the count shows (the close and the count are not ordered).
    support::eventually(std::time::Duration::from_millis(20), async || {
        let health = https(&host, ca.client(&[b"h2"]), "localhost", "/healthz")
            .await
            .json();
        if health["refused"]["tlsHandshakeFailed"].as_u64().unwrap() >= 1 {
            Ok(())
        } else {
            Err(format!("never counted: {health}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_over_wss_with_the_ca_and_refuses_another() {
    let ca = Ca::new("test CA");
    let cert = ca.host("host");
    let host = start(&hello_config(""), &cert);
    let url = format!("https://localhost:{}", host.addr.port());
    let alice = token("alice");
    let ca_pem = ca.pem.display().to_string();

    let tail = TailProcess::start(
        &["hello", "--url", &url, "--ca-cert", &ca_pem],
        Some(&alice),
    );
    tail.stderr_line(|line| line.contains("connected to wss://"));
    let answer = https(&host, ca.client(&[b"h2"]), "hello.localhost", "/from-tail").await;
    assert_eq!(answer.status, 200);
    tail.stdout_line(|line| line.contains("hello: GET /from-tail"));

    let stranger = Ca::new("another CA");
    let other = stranger.pem.display().to_string();
    let refused = TailProcess::start(&["hello", "--url", &url, "--ca-cert", &other], Some(&alice));
    let (ok, stderr) = refused.exit();
    assert!(!ok, "a certificate from another CA is refused");
    assert!(
        stderr.contains("TLS") && stderr.contains("--ca-cert"),
        "{stderr}"
    );
    // Without --ca-cert the system's roots do not know the test CA either.
    let (ok, stderr) = TailProcess::start(&["hello", "--url", &url], Some(&alice)).exit();
    assert!(!ok && stderr.contains("TLS"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_swapped_on_disk_is_served_after_sighup_and_the_viewer_stays() {
    let ca = Ca::new("test CA");
    let first = ca.host("host");
    let host = start(&hello_config(""), &first);
    let url = format!("https://localhost:{}", host.addr.port());
    let ca_pem = ca.pem.display().to_string();
    let tail = TailProcess::start(
        &["hello", "--url", &url, "--ca-cert", &ca_pem],
        Some(&token("alice")),
    );
    tail.stderr_line(|line| line.contains("connected to wss://"));
    let before = https(&host, ca.client(&[b"h2"]), "hello.localhost", "/").await;
    assert_eq!(before.peer, first.der);

    // A renewed certificate written over the old files.
    let renewed = ca.host("renewed");
    std::fs::copy(&renewed.cert, &first.cert).unwrap();
    std::fs::copy(&renewed.key, &first.key).unwrap();
    host.signal("HUP");
    support::eventually(std::time::Duration::from_millis(20), async || {
        let answer = https(&host, ca.client(&[b"h2"]), "hello.localhost", "/after").await;
        if answer.peer == renewed.der {
            Ok(())
        } else {
            Err("the new certificate was never served".to_string())
        }
    })
    .await;
    // The viewer's connection, made before, still delivers.
    https(
        &host,
        ca.client(&[b"h2"]),
        "hello.localhost",
        "/still-watched",
    )
    .await;
    tail.stdout_line(|line| line.contains("hello: GET /still-watched"));
    let said = tail.stderr_so_far();
    assert!(
        !said
            .iter()
            .any(|line| line.contains("reconnecting") || line.contains("connected to")),
        "the viewer's connection survived the reload: {said:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_and_tls_responses_are_strict() {
    let ca = Ca::new("test CA");
    let cert = ca.host("host");
    let redirect_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let config = hello_config(&format!(
        "[host]\nhsts = true\nhttp_redirect_addr = \"127.0.0.1:{redirect_port}\"\n"
    ));
    let host = start(&config, &cert);
    let redirect_addr = std::net::SocketAddr::from(([127, 0, 0, 1], redirect_port));

    let redirected = support::send(
        redirect_addr,
        "GET",
        "hello.localhost",
        "/v1/x?y=1",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(redirected.status, 308, "{}", redirected.text());
    assert_eq!(
        redirected.header("location"),
        Some(format!("https://hello.localhost:{}/v1/x?y=1", host.addr.port()).as_str())
    );
    assert!(redirected.body.is_empty(), "nothing served in clear");
    let foreign = support::send(redirect_addr, "GET", "evil.example", "/", &[], Bytes::new()).await;
    assert_eq!(foreign.status, 421, "no open redirect");

    let answer = https(&host, ca.client(&[b"h2"]), "hello.localhost", "/").await;
    assert_eq!(
        answer.headers.get("strict-transport-security").unwrap(),
        "max-age=31536000"
    );
    let login = https_form(
        &host,
        ca.client(&[b"http/1.1"]),
        "localhost",
        "/login",
        Some(&format!("token={}", token("alice"))),
    )
    .await;
    let cookie = login.headers.get("set-cookie").unwrap().to_str().unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(part), "{cookie}");
    }
}

#[test]
fn broken_certificates_are_refused_at_start_naming_the_file() {
    let ca = Ca::new("test CA");
    let good = ca.host("good");
    let other = ca.host("other");
    let expired = ca.host_valid("expired", Some(((2020, 1, 1), (2021, 1, 1))));
    let component = guest("hello");
    let serve = |cert: &std::path::Path, key: &std::path::Path| {
        support::run_failing(&[
            "serve".into(),
            component.clone().into(),
            "--addr".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            cert.into(),
            "--tls-key".into(),
            key.into(),
        ])
    };
    let mismatched = serve(&good.cert, &other.key);
    assert!(
        mismatched.contains("does not belong to the certificate"),
        "{mismatched}"
    );
    assert!(mismatched.contains("other-key.pem"), "{mismatched}");
    let missing = serve(&ca.dir().join("nope.pem"), &good.key);
    assert!(
        missing.contains("nope.pem") && missing.contains("cannot read"),
        "{missing}"
    );
    let not_pem = serve(&component, &good.key);
    assert!(not_pem.contains("hello.wasm"), "{not_pem}");
    let old = serve(&expired.cert, &expired.key);
    assert!(old.contains("expired on") && old.contains("2021"), "{old}");
}
