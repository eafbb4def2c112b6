//! Certificates for the TLS tests, made in the test with rcgen: a private
//! CA and host certificates it signs, written as PEM files to a temporary
//! directory. Nothing is checked in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

/// A calendar date: (year, month, day).
pub type Date = (i32, u8, u8);

/// A CA that signs host certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate as PEM, in `dir`.
    pub pem: PathBuf,
    dir: tempfile::TempDir,
}

/// A host certificate and its key, as PEM files.
pub struct HostCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate's DER, to recognise it in a handshake.
    pub der: Vec<u8>,
    /// Base64 SHA-256 of the public key (Chromium's
    /// `--ignore-certificate-errors-spki-list`).
    pub spki_sha256: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, cert.pem()).unwrap();
        Ca {
            cert,
            key,
            pem,
            dir,
        }
    }

    /// A certificate for `localhost`, `*.localhost`-style names used by the
    /// tests and 127.0.0.1, valid now; written as `{name}.pem`/`{name}-key.pem`.
    pub fn host(&self, name: &str) -> HostCert {
        self.host_valid(name, None)
    }

    /// The same, valid only between the given dates (an expired one).
    pub fn host_valid(&self, name: &str, validity: Option<(Date, Date)>) -> HostCert {
        let names = ["localhost", "hello.localhost", "everything.localhost"];
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, name);
        if let Some(((y1, m1, d1), (y2, m2, d2))) = validity {
            params.not_before = rcgen::date_time_ymd(y1, m1, d1);
            params.not_after = rcgen::date_time_ymd(y2, m2, d2);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let write = |file: &str, text: String| -> PathBuf {
            let path = self.dir.path().join(file);
            std::fs::write(&path, text).unwrap();
            path
        };
        use base64::Engine as _;
        use sha2::Digest as _;
        HostCert {
            cert: write(&format!("{name}.pem"), cert.pem()),
            key: write(&format!("{name}-key.pem"), key.serialize_pem()),
            der: cert.der().to_vec(),
            spki_sha256: base64::engine::general_purpose::STANDARD
                .encode(sha2::Sha256::digest(key.public_key_der())),
        }
    }

    /// A client configuration trusting this CA only, offering `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
