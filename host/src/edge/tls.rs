//! TLS at the front door: the certificate and key (`[host] tls_cert` /
//! `tls_key`, `--tls-cert` / `--tls-key`), checked at start, swapped on
//! reload without touching open connections.
//!
//! rustls with ring (no OpenSSL), TLS 1.2 and 1.3 only, ALPN `h2` then
//! `http/1.1`. The acceptor asks [`Certificates`] for the key pair on every
//! handshake, so a reload changes what the *next* handshake gets; open
//! connections and log viewers keep theirs.
//!
//! An expired certificate is refused, at start and on reload: every client
//! would reject it anyway, and refusing says so where the operator looks,
//! naming the file and the date, instead of as handshake failures on every
//! client. One that expires within [`EXPIRY_WARNING`] is served with a
//! warning.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How soon an expiry is worth a warning at start and on reload.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// The ALPN protocols offered, in order of preference.
pub(crate) const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The front door's TLS: files, the current key pair, the acceptor.
pub(crate) struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<Certificates>,
    acceptor: TlsAcceptor,
}

/// The key pair handshakes get, swappable.
#[derive(Debug)]
struct Certificates(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl Tls {
    /// Reads and checks the pair; errors name the file and the problem.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Tls> {
        let (pair, summary) = read_pair(cert, key)?;
        tracing::info!("TLS: {summary}");
        let current = Arc::new(Certificates(ArcSwap::from_pointee(pair)));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS 1.2 and 1.3 with ring")?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
        Ok(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the files again; the next handshakes get the new pair. A
    /// broken or expired pair changes nothing. Returns what is served now.
    pub(crate) fn reload(&self) -> Result<String> {
        let (pair, summary) = read_pair(&self.cert, &self.key)?;
        self.current.0.store(Arc::new(pair));
        Ok(summary)
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// The certificate chain and key from PEM files, checked: the key signs
/// for the certificate, and the certificate is in its validity period.
fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(CertifiedKey, String)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| {
            anyhow!(
                "TLS certificate {}: cannot read it: {e}",
                cert_path.display()
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("TLS certificate {}: not PEM: {e}", cert_path.display()))?;
    let Some(leaf) = chain.first() else {
        bail!(
            "TLS certificate {}: no certificate in it (expected PEM `BEGIN CERTIFICATE` blocks)",
            cert_path.display()
        );
    };
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        anyhow!(
            "TLS key {}: cannot read a PEM private key from it: {e}",
            key_path.display()
        )
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        anyhow!(
            "TLS key {}: not a key this host can use: {e}",
            key_path.display()
        )
    })?;
    let pair = CertifiedKey::new(chain.clone(), signing);
    pair.keys_match().map_err(|e| {
        anyhow!(
            "TLS key {} does not belong to the certificate in {}: {e}",
            key_path.display(),
            cert_path.display()
        )
    })?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| {
        anyhow!(
            "TLS certificate {}: cannot parse it: {e}",
            cert_path.display()
        )
    })?;
    let validity = parsed.validity();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let not_after = validity.not_after.timestamp();
    if now > not_after {
        bail!(
            "TLS certificate {} expired on {}: renew it (an expired certificate is refused, every client would reject it)",
            cert_path.display(),
            validity.not_after
        );
    }
    if now < validity.not_before.timestamp() {
        bail!(
            "TLS certificate {} is not valid before {}",
            cert_path.display(),
            validity.not_before
        );
    }
    if not_after - now < EXPIRY_WARNING.as_secs() as i64 {
        tracing::warn!(
            "TLS certificate {} expires on {}",
            cert_path.display(),
            validity.not_after
        );
    }
    let summary = format!(
        "certificate {} for {} (valid until {})",
        cert_path.display(),
        parsed.subject(),
        validity.not_after
    );
    Ok((pair, summary))
}
