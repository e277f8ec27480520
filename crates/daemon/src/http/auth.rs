//! The TCP API's bearer token: reading it from its 0600 file, deciding who may do what
//! (pure: [`Policy::decide`]), and the axum layer that refuses with 401 before any handler runs.
//!
//! Reads are `GET`/`HEAD` (status, history, events, logs, streams, `/metrics`); every other
//! method changes state. The unix socket never goes through this layer: its 0600 mode is its
//! access control.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jarfleet_api::{ErrorBody, ErrorKind};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The secret, kept only as its SHA-256: comparisons then take the same time whatever the
/// length or content of what a client sends.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl Token {
    pub fn new(secret: &[u8]) -> Token {
        Token(Sha256::digest(secret).into())
    }

    fn matches(&self, given: &[u8]) -> bool {
        let given: [u8; 32] = Sha256::digest(given).into();
        self.0.ct_eq(&given).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Why a token file cannot be used; the text says what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenFileError {
    #[error("cannot read the API token file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error(
        "the API token file {path} is readable by others (mode {mode:04o}); run `chmod 600 {path}`"
    )]
    TooOpen { path: String, mode: u32 },
    #[error("the API token file {path} is empty")]
    Empty { path: String },
    #[error(
        "the API token in {path} holds spaces, control or non-ASCII characters, which cannot be sent in an HTTP header"
    )]
    NotVisibleAscii { path: String },
}

impl TokenFileError {
    pub fn hint(&self) -> &'static str {
        match self {
            TokenFileError::Unreadable { .. }
            | TokenFileError::Empty { .. }
            | TokenFileError::NotVisibleAscii { .. } => {
                "create one with `jarfleet token new FILE` (a random token, mode 0600)"
            }
            TokenFileError::TooOpen { .. } => {
                "the token gives full control of the fleet: only the daemon's user may read it"
            }
        }
    }
}

/// Reads a token file for the daemon; see [`read_secret`].
pub fn read_token_file(path: &Path) -> Result<Token, TokenFileError> {
    read_secret(path).map(|s| Token::new(s.as_bytes()))
}

/// Reads a token file (the daemon's, or a client's copy): it must exist, be a regular file of
/// mode 0600 (or stricter) and hold a non-empty token of visible ASCII characters (surrounding
/// whitespace is ignored).
pub fn read_secret(path: &Path) -> Result<String, TokenFileError> {
    let shown = path.display().to_string();
    let unreadable = |e: std::io::Error| TokenFileError::Unreadable {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(TokenFileError::Unreadable {
            path: shown,
            reason: "not a regular file".into(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TokenFileError::TooOpen { path: shown, mode });
    }
    let text = std::fs::read(path).map_err(unreadable)?;
    let secret = text.trim_ascii();
    if secret.is_empty() {
        return Err(TokenFileError::Empty { path: shown });
    }
    if !secret.iter().all(u8::is_ascii_graphic) {
        return Err(TokenFileError::NotVisibleAscii { path: shown });
    }
    Ok(String::from_utf8_lossy(secret).into_owned())
}

/// Who may do what over TCP.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `None`: no `token_file`; nothing that needs the token is allowed.
    pub token: Option<Token>,
    /// Reads without the token.
    pub open_reads: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 401: no `Authorization: Bearer` header.
    Missing,
    /// 401: a token that is not the daemon's.
    Wrong,
    /// 401: the daemon has no token, so no request of this kind can be allowed.
    NoTokenConfigured,
}

impl Policy {
    /// The decision for one request: its method and its `Authorization` header, if any.
    pub fn decide(&self, method: &Method, authorization: Option<&[u8]>) -> Decision {
        let read = method == Method::GET || method == Method::HEAD;
        if read && self.open_reads {
            return Decision::Allow;
        }
        let Some(token) = &self.token else {
            return Decision::NoTokenConfigured;
        };
        let Some(given) = authorization.and_then(bearer) else {
            return Decision::Missing;
        };
        if token.matches(given) {
            Decision::Allow
        } else {
            Decision::Wrong
        }
    }
}

/// The credentials of `Bearer <token>` (the scheme is case-insensitive, RFC 7235).
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The policy in force, swapped whole when a new spec is applied.
pub type SharedPolicy = Arc<ArcSwap<Policy>>;

/// The layer's state: the policy, and where refusals are reported.
#[derive(Clone)]
pub struct Guard {
    pub policy: SharedPolicy,
    pub alerts: Arc<Alerts>,
}

/// Refused requests become events (`security.wrong-token`, `security.refused`), at most one per
/// [`ALERT_EVERY`]; the next one says how many were refused meanwhile, so a client hammering the
/// API cannot flood the event store.
pub struct Alerts {
    events: tokio::sync::mpsc::Sender<crate::control::Event>,
    last: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

/// The shortest time between two security events.
pub const ALERT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Alerts {
    pub fn new(events: tokio::sync::mpsc::Sender<crate::control::Event>) -> Alerts {
        Alerts {
            events,
            last: std::sync::Mutex::new(None),
        }
    }

    fn refused(&self, decision: &Decision, method: &Method, path: &str, why: &str) {
        self.refused_at(std::time::Instant::now(), decision, method, path, why);
    }

    fn refused_at(
        &self,
        now: std::time::Instant,
        decision: &Decision,
        method: &Method,
        path: &str,
        why: &str,
    ) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let before = match *last {
            Some((at, ref mut n)) if now.duration_since(at) < ALERT_EVERY => {
                *n += 1;
                return;
            }
            Some((_, n)) => n,
            None => 0,
        };
        *last = Some((now, 0));
        let kind = match decision {
            Decision::Wrong => "security.wrong-token",
            _ => "security.refused",
        };
        let mut message = format!("refused {method} {path} over TCP (401): {why}");
        if before > 0 {
            message.push_str(&format!(
                "; {before} more refused in the {} s before",
                ALERT_EVERY.as_secs()
            ));
        }
        // Never wait on the control loop from a request: a full queue drops the event.
        let _ = self.events.try_send(crate::control::Event::Emit {
            kind: kind.into(),
            app: None,
            message,
        });
    }
}

/// The layer: lets allowed requests through, answers the others 401 with a JSON [`ErrorBody`]
/// and `WWW-Authenticate: Bearer` (RFC 6750), and reports them (`Alerts`).
pub async fn require(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let decision = guard.policy.load().decide(req.method(), auth);
    let (message, hint, challenge) = match decision {
        Decision::Allow => return next.run(req).await,
        Decision::Missing => (
            "this request needs the API token",
            "send `Authorization: Bearer <token>` with the token from the daemon's [daemon] token_file",
            "Bearer realm=\"jarfleet\"",
        ),
        Decision::Wrong => (
            "wrong API token",
            "use the token from the daemon's [daemon] token_file",
            "Bearer realm=\"jarfleet\", error=\"invalid_token\"",
        ),
        Decision::NoTokenConfigured => (
            "this daemon has no API token, so this request is not accepted over TCP",
            "set [daemon] token_file (see `jarfleet token new`), or open_reads = true for reads only; the unix socket needs no token",
            "Bearer realm=\"jarfleet\"",
        ),
    };
    guard
        .alerts
        .refused(&decision, req.method(), req.uri().path(), message);
    let body = ErrorBody {
        kind: ErrorKind::Usage,
        message: message.into(),
        hint: Some(hint.into()),
    };
    let mut resp = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_become_events_at_most_one_per_period() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let alerts = Alerts::new(tx);
        let t0 = std::time::Instant::now();
        let post = Method::POST;
        alerts.refused_at(t0, &Decision::Wrong, &post, "/v1/scale", "wrong API token");
        for i in 1..5 {
            let at = t0 + std::time::Duration::from_secs(i);
            alerts.refused_at(
                at,
                &Decision::Missing,
                &post,
                "/v1/scale",
                "needs the token",
            );
        }
        alerts.refused_at(
            t0 + ALERT_EVERY + std::time::Duration::from_secs(1),
            &Decision::Missing,
            &Method::GET,
            "/v1/status",
            "needs the token",
        );
        let mut got = Vec::new();
        while let Ok(crate::control::Event::Emit { kind, message, .. }) = rx.try_recv() {
            got.push((kind, message));
        }
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "security.wrong-token");
        assert!(got[0].1.contains("POST /v1/scale"), "{got:?}");
        assert_eq!(got[1].0, "security.refused");
        assert!(got[1].1.contains("4 more refused"), "{got:?}");
    }

    fn policy(token: Option<&str>, open_reads: bool) -> Policy {
        Policy {
            token: token.map(|t| Token::new(t.as_bytes())),
            open_reads,
        }
    }

    /// (token, open_reads, method, Authorization header, expected decision)
    type Case<'a> = (Option<&'a str>, bool, &'a Method, Option<&'a str>, Decision);

    #[test]
    fn decisions() {
        use Decision::*;
        let get = Method::GET;
        let post = Method::POST;
        let cases: &[Case] = &[
            (Some("s3cret"), false, &get, None, Missing),
            (Some("s3cret"), false, &get, Some("Bearer s3cret"), Allow),
            (Some("s3cret"), false, &get, Some("bearer s3cret"), Allow),
            (Some("s3cret"), false, &get, Some("Bearer  s3cret "), Allow),
            (Some("s3cret"), false, &get, Some("Bearer s3cre"), Wrong),
            (Some("s3cret"), false, &get, Some("Bearer s3cret2"), Wrong),
            (Some("s3cret"), false, &get, Some("Basic s3cret"), Missing),
            (Some("s3cret"), false, &get, Some("Bearer "), Missing),
            (Some("s3cret"), false, &post, Some("Bearer s3cret"), Allow),
            (Some("s3cret"), false, &post, Some("Bearer nope"), Wrong),
            (Some("s3cret"), true, &get, None, Allow),
            (Some("s3cret"), true, &Method::HEAD, None, Allow),
            (Some("s3cret"), true, &post, None, Missing),
            (
                Some("s3cret"),
                true,
                &Method::DELETE,
                Some("Bearer x"),
                Wrong,
            ),
            (None, true, &get, None, Allow),
            (
                None,
                true,
                &post,
                Some("Bearer anything"),
                NoTokenConfigured,
            ),
            (None, false, &get, None, NoTokenConfigured),
        ];
        for (token, open, method, header, want) in cases {
            let got = policy(*token, *open).decide(method, header.map(str::as_bytes));
            assert_eq!(
                &got, want,
                "token {token:?} open_reads {open} {method} {header:?}"
            );
        }
    }

    #[test]
    fn token_files_must_be_private_and_not_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        let set_mode = |mode: u32| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        assert!(matches!(
            read_token_file(&path),
            Err(TokenFileError::Unreadable { .. })
        ));
        std::fs::write(&path, "  abc\n").expect("write");
        set_mode(0o644);
        let err = read_token_file(&path).expect_err("0644 is refused");
        assert_eq!(
            err.to_string(),
            format!(
                "the API token file {} is readable by others (mode 0644); run `chmod 600 {}`",
                path.display(),
                path.display()
            )
        );
        set_mode(0o640);
        assert!(matches!(
            read_token_file(&path),
            Err(TokenFileError::TooOpen { mode: 0o640, .. })
        ));
        set_mode(0o600);
        let token = read_token_file(&path).expect("0600 is fine");
        assert!(token.matches(b"abc"));
        assert!(!token.matches(b"abc\n"));
        std::fs::write(&path, "\n").expect("write");
        assert!(matches!(
            read_token_file(&path),
            Err(TokenFileError::Empty { .. })
        ));
        std::fs::write(&path, "two words\n").expect("write");
        assert!(matches!(
            read_token_file(&path),
            Err(TokenFileError::NotVisibleAscii { .. })
        ));
    }
}
