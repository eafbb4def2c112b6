//! TLS client settings shared by everything that calls out over https:
//! rustls with ring and the web's roots (no OpenSSL, no system store to
//! differ between machines).

use std::sync::Arc;

/// A connector that verifies servers against the web's roots.
pub(crate) fn web_connector() -> tokio_rustls::TlsConnector {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
