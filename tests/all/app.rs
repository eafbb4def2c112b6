//! The host as a library: an `App` built in-process from a configuration,
//! serving real requests on a real listener, then shut down in order. The
//! other integration tests run the real binary; this one proves that the
//! composition root is all a binary, a test or a benchmark needs.

use crate::support;

use std::path::Path;

use crate::support::{guest, send, tenant_toml};
use mctx_host::config::Config;
use mctx_host::{App, AppConfig, GuestLogFormat, PoolOptions, RoutingMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_built_in_process_serves_a_tenant_and_shuts_down() {
    let hello = guest("hello");
    let text = tenant_toml("hello", "alice", "active", &[("1.0.0", &hello)]);
    let mut config = Config::parse(&text, "in-process", Path::new("/")).unwrap();
    config.auth.session_secret = Some(support::TEST_SECRET.into());
    let state = tempfile::tempdir().unwrap();
    let app = App::build(AppConfig {
        routing: RoutingMode::Multi {
            base_domain: config.host.base_domain.clone(),
        },
        config,
        cache_dir: Some(support::target_dir().join("test-artifact-cache")),
        pool: PoolOptions::default(),
        guest_logs: GuestLogFormat::Off,
        reload_from: None,
        state_dir: Some(state.path().to_path_buf()),
    })
    .await
    .expect("the app builds");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(app.serve(listener, async {
        let _ = stopped.await;
    }));

    let host = format!("hello.localhost:{}", addr.port());
    let reply = send(
        addr,
        "GET",
        &host,
        "/v1/in-process",
        &[],
        Default::default(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json();
    assert_eq!(echo["path"], "/in-process");
    assert_eq!(echo["headers"]["x-tenant-slug"], "hello");
    assert_eq!(echo["headers"]["x-tenant-version"], "1.0.0");
    assert!(reply.header("x-request-id").is_some());

    let health = send(
        addr,
        "GET",
        "localhost",
        "/healthz",
        &[],
        Default::default(),
    )
    .await;
    assert_eq!(health.json()["tenants"], 1);

    stop.send(()).unwrap();
    serving
        .await
        .expect("the serving task ends")
        .expect("and shuts down cleanly");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}
