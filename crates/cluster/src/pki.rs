//! The cluster's own certificate authority, for mutual TLS between nodes: `jarfleet cluster ca`
//! makes it, `jarfleet cluster cert NODE` issues a node its certificate.
//!
//! - A node's certificate names the node (its DNS subject alternative name is the node name,
//!   its IP names are the addresses other nodes reach it on) and serves both ends of a
//!   connection (server and client authentication): a node proves who it is when it answers
//!   and when it asks.
//! - Keys are ECDSA P-256 and are written readable by their owner only (0600), in a new file
//!   (never over an existing one: re-issuing is a deliberate act of removing the old one).
//! - [`verify_node`] checks a presented certificate chains to the cluster's CA and names the
//!   node it claims to be.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// How long a CA is valid when not said: ten years.
pub const CA_DAYS: u32 = 3650;
/// How long a node's certificate is valid when not said: about two years.
pub const NODE_DAYS: u32 = 825;

/// What went wrong making or reading the cluster's certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} exists already; remove it first to make a new one (every node signed by the old CA must then get a new certificate)"
    )]
    Exists { path: PathBuf },
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The files of a CA in `dir`.
pub fn ca_files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("ca.pem"), dir.join("ca.key"))
}

/// The files of `node`'s certificate in `dir`.
pub fn node_files(dir: &Path, node: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{node}.pem")),
        dir.join(format!("{node}.key")),
    )
}

/// Makes a new CA for cluster `cluster` into `dir` (`ca.pem`, `ca.key`).
pub fn make_ca(dir: &Path, cluster: &str, days: u32) -> Result<(PathBuf, PathBuf), PkiError> {
    let (cert_path, key_path) = ca_files(dir);
    refuse_existing(&[&cert_path, &key_path])?;
    let key = KeyPair::generate().map_err(|e| PkiError::Invalid(e.to_string()))?;
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| PkiError::Invalid(e.to_string()))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name = name(&format!("jarfleet cluster {cluster} CA"));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days);
    let cert = params
        .self_signed(&key)
        .map_err(|e| PkiError::Invalid(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

/// Issues `node` its certificate, signed by the CA in `ca_dir`, valid for its node name and
/// `addresses`, into `out` (`NODE.pem`, `NODE.key`).
pub fn issue_node(
    ca_dir: &Path,
    node: &str,
    addresses: &[IpAddr],
    out: &Path,
    days: u32,
) -> Result<(PathBuf, PathBuf), PkiError> {
    jarfleet_core::spec::node_name(node).map_err(PkiError::Invalid)?;
    let (cert_path, key_path) = node_files(out, node);
    refuse_existing(&[&cert_path, &key_path])?;
    let (ca_cert, ca_key) = ca_files(ca_dir);
    let ca_pem = std::fs::read_to_string(&ca_cert).map_err(io(&ca_cert))?;
    let ca_key_pem = std::fs::read_to_string(&ca_key).map_err(io(&ca_key))?;
    let signer = KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| PkiError::Invalid(format!("{}: {e}", ca_key.display())))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, signer)
        .map_err(|e| PkiError::Invalid(format!("{}: {e}", ca_cert.display())))?;
    let key = KeyPair::generate().map_err(|e| PkiError::Invalid(e.to_string()))?;
    let mut params = CertificateParams::new(vec![node.to_string()])
        .map_err(|e| PkiError::Invalid(e.to_string()))?;
    for ip in addresses {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.distinguished_name = name(node);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut params, days);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| PkiError::Invalid(e.to_string()))?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    dn.push(DnType::OrganizationName, "jarfleet");
    dn
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time_now();
    // An hour back, for clocks a little behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn refuse_existing(paths: &[&Path]) -> Result<(), PkiError> {
    for p in paths {
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(PkiError::Exists {
                path: p.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Writes a new file (never over an existing one, never through a link) with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// A node's TLS material, read from its PEM files.
#[derive(Debug, Clone)]
pub struct NodeTls {
    pub ca: Vec<CertificateDer<'static>>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl NodeTls {
    /// Reads the cluster CA, the node's certificate and its key.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<NodeTls, PkiError> {
        let certs = |p: &Path| -> Result<Vec<CertificateDer<'static>>, PkiError> {
            let all: Result<Vec<_>, _> = CertificateDer::pem_file_iter(p)
                .map_err(|e| PkiError::Invalid(format!("{}: {e}", p.display())))?
                .collect();
            let all = all.map_err(|e| PkiError::Invalid(format!("{}: {e}", p.display())))?;
            if all.is_empty() {
                return Err(PkiError::Invalid(format!(
                    "{}: no CERTIFICATE in it",
                    p.display()
                )));
            }
            Ok(all)
        };
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| PkiError::Invalid(format!("{}: {e}", key.display())))?;
        Ok(NodeTls {
            ca: certs(ca)?,
            chain: certs(cert)?,
            key: Arc::new(key_der),
        })
    }
}

/// Checks that `presented` (a peer's chain, leaf first) chains to the cluster's CA and names
/// `node`; why not, if not.
pub fn verify_node(
    ca: &[CertificateDer<'static>],
    presented: &[CertificateDer<'_>],
    node: &str,
) -> Result<(), String> {
    let Some((leaf, intermediates)) = presented.split_first() else {
        return Err("no certificate presented".into());
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots
            .add(c.clone())
            .map_err(|e| format!("the cluster CA: {e}"))?;
    }
    let provider = rustls::crypto::ring::default_provider();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(provider),
    )
    .build()
    .map_err(|e| format!("the cluster CA: {e}"))?;
    let name = ServerName::try_from(node.to_string()).map_err(|e| e.to_string())?;
    use rustls::client::danger::ServerCertVerifier;
    verifier
        .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_names_its_node_and_chains_to_its_cluster_ca_only() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = dir.path().join("ca");
        make_ca(&ca, "prod", CA_DAYS).expect("a CA");
        let (_, ca_key) = ca_files(&ca);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ca_key)
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = make_ca(&ca, "prod", CA_DAYS).expect_err("not over an existing CA");
        assert!(err.to_string().contains("exists already"), "{err}");

        let out = dir.path().join("nodes");
        let (cert, key) = issue_node(
            &ca,
            "web-1",
            &["10.0.0.11".parse().expect("ip")],
            &out,
            NODE_DAYS,
        )
        .expect("issued");
        assert_eq!(
            std::fs::metadata(&key).expect("key").permissions().mode() & 0o777,
            0o600
        );
        let tls = NodeTls::load(&ca_files(&ca).0, &cert, &key).expect("loads");
        assert_eq!(verify_node(&tls.ca, &tls.chain, "web-1"), Ok(()));
        let wrong = verify_node(&tls.ca, &tls.chain, "web-2").expect_err("not web-2");
        assert!(wrong.contains("not valid for name \"web-2\""), "{wrong}");

        // Another cluster's CA does not vouch for it.
        let other = dir.path().join("other");
        make_ca(&other, "staging", CA_DAYS).expect("another CA");
        let other_tls = NodeTls::load(&ca_files(&other).0, &cert, &key).expect("loads");
        let refused = verify_node(&other_tls.ca, &tls.chain, "web-1").expect_err("other CA");
        assert!(refused.to_lowercase().contains("issuer"), "{refused}");
        assert!(verify_node(&tls.ca, &[], "web-1").is_err());

        // Bad names and a missing CA are refused with the path or the rule.
        assert!(issue_node(&ca, "Web_1", &[], &out, NODE_DAYS).is_err());
        let missing =
            issue_node(&dir.path().join("none"), "web-3", &[], &out, NODE_DAYS).expect_err("no CA");
        assert!(missing.to_string().contains("ca.pem"), "{missing}");
        assert!(
            issue_node(&ca, "web-1", &[], &out, NODE_DAYS).is_err(),
            "not over web-1's"
        );
    }
}
