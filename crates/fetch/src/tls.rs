//! Which certificate authorities are trusted, and recognising certificate errors.

use std::path::Path;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// Mozilla's roots, plus every certificate in the PEM file `extra_ca` if given, presenting the
/// client certificate `client_cert` (chain, key) if given.
/// On failure returns why a file is unusable.
pub(crate) fn config(
    extra_ca: Option<&Path>,
    client_cert: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<TlsConfig, String> {
    let roots = match extra_ca {
        None => RootCerts::WebPki,
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| e.to_string())?;
            let extra = parse_certs(&pem)?;
            let mozilla = webpki_root_certs::TLS_SERVER_ROOT_CERTS
                .iter()
                .map(|der| Certificate::from_der(der.as_ref()).to_owned());
            RootCerts::from(mozilla.chain(extra))
        }
    };
    let client = match client_cert {
        None => None,
        Some((chain, key)) => {
            let pem = std::fs::read(chain).map_err(|e| format!("{}: {e}", chain.display()))?;
            let certs = parse_certs(&pem).map_err(|e| format!("{}: {e}", chain.display()))?;
            let pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
            let key = ureq::tls::PrivateKey::from_pem(&pem)
                .map_err(|e| format!("{}: {e}", key.display()))?;
            Some(ureq::tls::ClientCert::new_with_certs(&certs, key))
        }
    };
    Ok(TlsConfig::builder()
        .root_certs(roots)
        .client_cert(client)
        .build())
}

fn parse_certs(pem: &[u8]) -> Result<Vec<Certificate<'static>>, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        // Other PEM items (a private key pasted in by mistake) are ignored.
        if let PemItem::Certificate(cert) = item.map_err(|e| format!("bad PEM: {e}"))? {
            certs.push(cert);
        }
    }
    if certs.is_empty() {
        return Err("no CERTIFICATE block in it".to_owned());
    }
    Ok(certs)
}

/// What went wrong in TLS, if `error` (or anything it wraps) is a rustls error.
pub(crate) enum TlsFailure {
    /// The peer's certificate was rejected: untrusted issuer, wrong name, expired…
    Certificate(String),
    /// Any other TLS failure.
    Other(String),
}

pub(crate) fn classify(error: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(match tls {
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                    TlsFailure::Certificate("issued by an unknown certificate authority".into())
                }
                rustls::Error::InvalidCertificate(cert) => {
                    TlsFailure::Certificate(cert.to_string())
                }
                other => TlsFailure::Other(other.to_string()),
            });
        }
        current = match e.downcast_ref::<ureq::Error>() {
            Some(ureq::Error::Rustls(tls)) => Some(tls),
            Some(ureq::Error::Io(io)) => Some(io),
            // ureq's error has no `source()`: anything else it says holds no rustls error.
            Some(_) => None,
            None => match e.downcast_ref::<std::io::Error>() {
                Some(io) => io.get_ref().map(|inner| inner as _),
                None => e.source(),
            },
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_certificates_is_refused() {
        let cases: [(&[u8], &str); 2] = [
            (b"", "no CERTIFICATE block in it"),
            (b"just text\n", "no CERTIFICATE block in it"),
        ];
        for (pem, want) in cases {
            assert_eq!(parse_certs(pem).err().as_deref(), Some(want));
        }
    }

    #[test]
    fn certificate_errors_are_found_inside_io_errors() {
        let rustls_error =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_error);
        let wrapped = ureq::Error::Io(io);
        assert!(matches!(
            classify(&wrapped),
            Some(TlsFailure::Certificate(reason)) if reason.contains("unknown certificate authority")
        ));
        let plain = ureq::Error::Io(std::io::Error::other("reset"));
        assert!(classify(&plain).is_none());
    }
}
