//! TLS client settings: rustls with ring (no OpenSSL).
//!
//! Tenants' outbound calls verify against the web's roots (the same set on
//! every machine, so a tenant behaves the same on every host); the host's
//! own clients (`tail`, `deploy`, `servers`) verify against the system's
//! roots plus, with `--ca-cert`, a private CA — never skipping
//! verification.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, anyhow};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// A connector that verifies servers against the web's roots.
pub(crate) fn web_connector() -> tokio_rustls::TlsConnector {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(client_config(roots)))
}

/// Settings for the CLI's clients: the system's roots (the web's where the
/// system has none) and every certificate in `extra_ca`.
pub(crate) fn cli_client_config(extra_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs().unwrap_or_default();
    let (added, _) = roots.add_parsable_certificates(native);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = extra_ca {
        let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| anyhow!("--ca-cert {}: cannot read it: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!("--ca-cert {}: not PEM: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(anyhow!(
                "--ca-cert {}: no certificate in it (expected PEM `BEGIN CERTIFICATE` blocks)",
                path.display()
            ));
        }
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|e| anyhow!("--ca-cert {}: {e}", path.display()))?;
        }
    }
    Ok(Arc::new(client_config(roots)))
}

fn client_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}
