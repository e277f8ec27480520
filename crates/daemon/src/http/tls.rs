//! HTTPS for the TCP API: the rustls server configuration from the spec's PEM files.
//!
//! One crypto provider for the whole tree: ring (the one ureq's rustls uses).

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key cannot be used; the text names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("cannot read the TLS private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the TLS certificate {cert} and private key {key} do not go together: {reason}")]
    Mismatch {
        cert: String,
        key: String,
        reason: String,
    },
}

impl TlsError {
    pub fn hint(&self) -> &'static str {
        match self {
            TlsError::Cert { .. } => {
                "give a PEM file holding the server certificate first, then its intermediates (BEGIN CERTIFICATE)"
            }
            TlsError::Key { .. } => {
                "give a PEM file holding the certificate's private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY), readable by the daemon"
            }
            TlsError::Mismatch { .. } => {
                "the key must be the one the certificate was issued for: check that cert and key come from the same pair"
            }
        }
    }
}

/// Loads the chain and key and builds the server configuration (HTTP/1.1 over TLS 1.2/1.3).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(pem_reason(e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(pem_reason(e)))?;
    if chain.is_empty() {
        return Err(cert_err("no certificate found in it".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: pem_reason(e),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mismatch = |e: rustls::Error| TlsError::Mismatch {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        reason: e.to_string(),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(mismatch)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(mismatch)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn pem_reason(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "no PEM item of the expected kind found in it".into(),
        other => format!("not valid PEM ({other:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let c = dir.join(format!("{name}.pem"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (c, k)
    }

    #[test]
    fn a_matching_pair_loads_and_bad_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = pair(dir.path(), "a");
        let (_, other_key) = pair(dir.path(), "b");
        server_config(&cert, &key).expect("a matching pair loads");

        let missing = dir.path().join("missing.pem");
        let err = server_config(&missing, &key).expect_err("missing cert");
        assert!(
            matches!(err, TlsError::Cert { .. }) && err.to_string().contains("missing.pem"),
            "{err}"
        );
        let err = server_config(&key, &key).expect_err("a key is not a certificate");
        assert!(matches!(err, TlsError::Cert { .. }), "{err}");
        let err = server_config(&cert, &cert).expect_err("a certificate is not a key");
        assert!(matches!(err, TlsError::Key { .. }), "{err}");
        let err = server_config(&cert, &other_key).expect_err("another pair's key");
        assert!(
            matches!(err, TlsError::Mismatch { .. })
                && err.to_string().contains("a.pem")
                && err.to_string().contains("b.key"),
            "{err}"
        );
    }
}
