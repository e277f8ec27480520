//! A node's artifacts for its peers: `GET /v1/cluster/artifacts/<sha256>` (and `HEAD`) serves
//! the content with that digest from this node's cache (`cache/sha256/<hex>`), so that a
//! release applied on one node reaches the others without a shared filesystem.
//!
//! - The digest names the content, and is its strong ETag: a transfer interrupted here is
//!   continued from another node (`Range: bytes=N-` with `If-Range: "<hex>"`), and the fetching
//!   node checks the digest of what it got, so a node can serve nothing but the bytes asked for
//!   — or be found out.
//! - Only 64 lowercase hex digits name an artifact: nothing else of the disk is reachable.
//! - At most [`MAX_TRANSFERS`] transfers run at once (more are answered 503: the fetcher asks
//!   another node), so transfers never starve the probes that share the endpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};
use tokio::sync::Semaphore;

/// An app's jar as the cluster knows it: by digest, with its signature (small enough to keep
/// in etcd beside the app; the jar itself never goes there).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArtifactRef {
    pub sha256: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureRef>,
}

/// A detached signature: its kind by file extension (`minisig`, `sig`, `asc`) and its bytes
/// in hex.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignatureRef {
    pub ext: String,
    pub hex: String,
}

/// The largest signature taken (a minisign one is ~300 bytes, an armoured OpenPGP one ~1 KiB).
pub const MAX_SIGNATURE: usize = 16 * 1024;

impl ArtifactRef {
    /// What is wrong with a stored reference, if anything.
    pub fn check(&self) -> Result<(), String> {
        if !is_digest(&self.sha256) {
            return Err(format!(
                "artifact sha256 {:?} is not 64 lowercase hex digits",
                self.sha256
            ));
        }
        if let Some(sig) = &self.signature {
            if !["minisig", "sig", "asc"].contains(&sig.ext.as_str()) {
                return Err(format!(
                    "signature kind {:?} is not minisig, sig or asc",
                    sig.ext
                ));
            }
            let hex_ok = sig.hex.len() % 2 == 0
                && sig.hex.len() <= 2 * MAX_SIGNATURE
                && sig
                    .hex
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !hex_ok {
                return Err("the signature is not hex of at most 16 KiB".into());
            }
        }
        Ok(())
    }

    /// The signature's bytes.
    pub fn signature_bytes(&self) -> Option<(String, Vec<u8>)> {
        let sig = self.signature.as_ref()?;
        let bytes = (0..sig.hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(sig.hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        Some((sig.ext.clone(), bytes))
    }
}

/// A signature's bytes as stored in [`SignatureRef::hex`].
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `name` is a sha256 as 64 lowercase hex digits.
pub fn is_digest(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A node that may serve an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub node: String,
    pub address: String,
    pub peer_port: u16,
}

/// The order in which `digest` is asked of `nodes`: the node it was applied through first
/// (it has it), then the others by rendezvous hash of (digest, node), so that the nodes
/// fetching one release spread over the nodes that have it rather than all asking one.
/// With `tls` (`[cluster] tls`) the URLs are `https`.
pub fn order(digest: &str, applied_by: &str, nodes: &[Source], tls: bool) -> Vec<String> {
    let mut ranked: Vec<(bool, std::cmp::Reverse<u64>, &Source)> = nodes
        .iter()
        .map(|n| {
            (
                n.node != applied_by,
                std::cmp::Reverse(jarfleet_core::cluster::placement::rendezvous(
                    digest, 0, &n.node,
                )),
                n,
            )
        })
        .collect();
    ranked.sort_by_key(|r| (r.0, r.1));
    ranked
        .into_iter()
        .map(|(_, _, n)| url(&n.address, n.peer_port, digest, tls))
        .collect()
}

/// Where artifacts are served.
pub const ARTIFACTS_PREFIX: &str = "/v1/cluster/artifacts/";
/// Transfers served at once.
pub const MAX_TRANSFERS: usize = 4;
/// The longest one transfer may take.
pub const TRANSFER_LIMIT: Duration = Duration::from_secs(30 * 60);

/// The endpoint's response body.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// The URL of the artifact `digest` on the node at `address`:`port` (`https` with `tls`).
pub fn url(address: &str, port: u16, digest: &str, tls: bool) -> String {
    let host = if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{host}:{port}{ARTIFACTS_PREFIX}{digest}")
}

/// A body of `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// What a request for an artifact asks, decided from its method, path and headers alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Not an artifact request.
    NotOurs,
    /// An artifact path that names no digest.
    BadName,
    MethodNotAllowed,
    /// The artifact `digest` from byte `from` (0: whole); `head`: headers only.
    Artifact {
        digest: String,
        from: u64,
        head: bool,
    },
}

/// Reads an artifact request. A `Range` other than `bytes=N-`, or with an `If-Range` that is
/// not this content's ETag, is ignored (the whole content is sent), as HTTP allows.
pub fn ask(method: &Method, path: &str, range: Option<&str>, if_range: Option<&str>) -> Ask {
    let Some(name) = path.strip_prefix(ARTIFACTS_PREFIX) else {
        return Ask::NotOurs;
    };
    let is_digest =
        name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !is_digest {
        return Ask::BadName;
    }
    let head = match *method {
        Method::GET => false,
        Method::HEAD => true,
        _ => return Ask::MethodNotAllowed,
    };
    let etag = format!("\"{name}\"");
    let validator_ok = if_range.is_none_or(|v| v.trim() == etag);
    let from = range
        .and_then(|r| r.trim().strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|_| validator_ok)
        .unwrap_or(0);
    Ask::Artifact {
        digest: name.to_string(),
        from,
        head,
    }
}

/// Serves artifacts out of a node's cache.
#[derive(Clone)]
pub struct Artifacts {
    /// The cache's root (`sha256/<hex>` below it); `None`: this node serves none.
    cache: Option<PathBuf>,
    transfers: Arc<Semaphore>,
}

impl Artifacts {
    pub fn new(cache: Option<PathBuf>) -> Artifacts {
        Artifacts {
            cache,
            transfers: Arc::new(Semaphore::new(MAX_TRANSFERS)),
        }
    }

    /// The answer to an artifact request.
    pub async fn answer(&self, ask: Ask) -> Response<Body> {
        let (digest, from, head) = match ask {
            Ask::NotOurs | Ask::BadName => return status(StatusCode::NOT_FOUND),
            Ask::MethodNotAllowed => {
                let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                return r;
            }
            Ask::Artifact { digest, from, head } => (digest, from, head),
        };
        let Some(cache) = &self.cache else {
            return status(StatusCode::NOT_FOUND);
        };
        let path = blob(cache, &digest);
        // Only a plain file: the cache is this node's own, but a link is never followed.
        let len = match tokio::fs::symlink_metadata(&path).await {
            Ok(meta) if meta.is_file() => meta.len(),
            _ => return status(StatusCode::NOT_FOUND),
        };
        if from > 0 && from >= len {
            let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
        let mut builder = Response::builder()
            .status(if from > 0 {
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            })
            .header(header::ETAG, format!("\"{digest}\""))
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, len - from)
            .header(header::ACCEPT_RANGES, "bytes");
        if from > 0 {
            builder = builder.header(
                header::CONTENT_RANGE,
                format!("bytes {from}-{}/{len}", len - 1),
            );
        }
        if head {
            return builder
                .body(empty())
                .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR));
        }
        let Ok(permit) = self.transfers.clone().try_acquire_owned() else {
            let mut r = status(StatusCode::SERVICE_UNAVAILABLE);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        };
        let file = match open_at(&path, from).await {
            Ok(f) => f,
            Err(_) => return status(StatusCode::NOT_FOUND),
        };
        use tokio::io::AsyncReadExt;
        let reader = file.take(len - from);
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024);
        // The permit goes with the body: the slot is free once the transfer ends or breaks.
        let body = StreamBody::new(futures_util::StreamExt::map(stream, move |chunk| {
            let _held = &permit;
            chunk.map(Frame::data)
        }));
        builder
            .body(BodyExt::boxed(body))
            .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR))
    }
}

/// `cache/sha256/<hex>`.
pub fn blob(cache: &Path, digest: &str) -> PathBuf {
    cache.join("sha256").join(digest)
}

async fn open_at(path: &Path, from: u64) -> std::io::Result<tokio::fs::File> {
    use tokio::io::AsyncSeekExt;
    let mut file = tokio::fs::File::open(path).await?;
    if from > 0 {
        file.seek(std::io::SeekFrom::Start(from)).await?;
    }
    Ok(file)
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = code;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn path() -> String {
        format!("{ARTIFACTS_PREFIX}{D}")
    }

    #[test]
    fn only_a_digest_names_an_artifact_and_odd_ranges_get_the_whole() {
        let get = Method::GET;
        assert_eq!(ask(&get, "/v1/cluster/ping", None, None), Ask::NotOurs);
        for bad in [
            "",
            "../../etc/passwd",
            &D.to_uppercase(),
            &D[..63],
            &format!("{D}0"),
            &format!("{}/x", &D[..62]),
            "%30123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",
        ] {
            assert_eq!(
                ask(&get, &format!("{ARTIFACTS_PREFIX}{bad}"), None, None),
                Ask::BadName,
                "{bad}"
            );
        }
        assert_eq!(
            ask(&Method::POST, &path(), None, None),
            Ask::MethodNotAllowed
        );
        let from =
            |range: Option<&str>, if_range: Option<&str>| match ask(&get, &path(), range, if_range)
            {
                Ask::Artifact { from, .. } => from,
                other => panic!("{other:?}"),
            };
        assert_eq!(from(None, None), 0);
        assert_eq!(from(Some("bytes=100-"), None), 100);
        assert_eq!(from(Some("bytes=100-"), Some(&format!("\"{D}\""))), 100);
        // Another validator, a closed or multiple range, junk: the whole content.
        assert_eq!(from(Some("bytes=100-"), Some("\"v1\"")), 0);
        assert_eq!(from(Some("bytes=100-"), Some(&format!("W/\"{D}\""))), 0);
        assert_eq!(from(Some("bytes=100-199"), None), 0);
        assert_eq!(from(Some("bytes=0-1,5-"), None), 0);
        assert_eq!(from(Some("bytes=-100"), None), 0);
        assert_eq!(from(Some("bytes=+5-"), None), 0);
        assert_eq!(from(Some("bytes=99999999999999999999999-"), None), 0);
        assert_eq!(from(Some("items=5-"), None), 0);
        assert!(matches!(
            ask(&Method::HEAD, &path(), None, None),
            Ask::Artifact { head: true, .. }
        ));
    }

    #[test]
    fn the_applying_node_is_asked_first_then_the_others_spread_by_digest() {
        let nodes: Vec<Source> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| Source {
                node: n.to_string(),
                address: format!("10.0.0.{}", n.as_bytes()[0] - b'a' + 1),
                peer_port: 9901,
            })
            .collect();
        let got = order(D, "c", &nodes, false);
        assert_eq!(got.len(), 4);
        assert!(got[0].starts_with("http://10.0.0.3:9901/"), "{got:?}");
        let mut reversed = nodes.clone();
        reversed.reverse();
        assert_eq!(
            order(D, "c", &reversed, false),
            got,
            "independent of the listing order"
        );
        // Another digest ranks the others differently (over a few tries).
        let firsts: std::collections::BTreeSet<String> = (0..20)
            .map(|i| order(&format!("{:064x}", i), "none", &nodes, false)[0].clone())
            .collect();
        assert!(firsts.len() > 1, "{firsts:?}");
    }

    #[test]
    fn artifact_refs_are_checked_and_signatures_round_trip() {
        let mut r = ArtifactRef {
            sha256: D.into(),
            size: 1,
            signature: Some(SignatureRef {
                ext: "minisig".into(),
                hex: to_hex(b"untrusted comment: x\n"),
            }),
        };
        assert_eq!(r.check(), Ok(()));
        assert_eq!(
            r.signature_bytes(),
            Some(("minisig".into(), b"untrusted comment: x\n".to_vec()))
        );
        r.signature = Some(SignatureRef {
            ext: "../x".into(),
            hex: String::new(),
        });
        assert!(r.check().is_err());
        r.signature = Some(SignatureRef {
            ext: "asc".into(),
            hex: "zz".into(),
        });
        assert!(r.check().is_err());
        r.signature = None;
        r.sha256 = D.to_uppercase();
        assert!(r.check().is_err());
    }

    #[test]
    fn urls_bracket_ipv6() {
        assert_eq!(
            url("10.0.0.2", 9901, D, false),
            format!("http://10.0.0.2:9901/v1/cluster/artifacts/{D}")
        );
        assert_eq!(
            url("fd00::2", 9901, D, false),
            format!("http://[fd00::2]:9901/v1/cluster/artifacts/{D}")
        );
        assert_eq!(
            url("10.0.0.2", 9901, D, true),
            format!("https://10.0.0.2:9901/v1/cluster/artifacts/{D}")
        );
    }
}
