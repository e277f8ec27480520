//! The TCP API's bearer token: reading it from its 0600 file, deciding who may do what
//! (pure: [`Policy::decide`]), and the axum layer that refuses with 401 (or 403) before any
//! handler runs.
//!
//! Reads are `GET`/`HEAD` (status, history, events, logs, streams, `/metrics`); every other
//! method changes state. The unix socket never goes through this layer: its 0600 mode is its
//! access control.
//!
//! Reads without the token (`open_reads`) are answered only when the request names the daemon
//! by one of its own names (`Host`: `localhost`, an IP address, or one of `[daemon] http_hosts`):
//! a web page whose name an attacker re-points at 127.0.0.1 (DNS rebinding) sends its own name,
//! and is refused.

use jarfleet_core::events::EventKind;
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
    /// `[daemon] http_hosts`: names besides `localhost` and IP addresses under which reads
    /// without the token are answered (lower case, no port, no trailing dot).
    pub hosts: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The right token.
    Allow,
    /// A read without the (right) token, allowed by `open_reads` for one of the daemon's names.
    AllowOpen,
    /// 401: no `Authorization: Bearer` header.
    Missing,
    /// 401: a token that is not the daemon's.
    Wrong,
    /// 401: the daemon has no token, so no request of this kind can be allowed.
    NoTokenConfigured,
    /// 403: a read without the token that names another host than the daemon's (`Host`).
    ForeignHost,
}

impl Decision {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Decision::Allow | Decision::AllowOpen => StatusCode::OK,
            Decision::ForeignHost => StatusCode::FORBIDDEN,
            Decision::Missing | Decision::Wrong | Decision::NoTokenConfigured => {
                StatusCode::UNAUTHORIZED
            }
        }
    }
}

impl Policy {
    /// The decision for one request: its method, its `Authorization` header and the host it
    /// names (the URI's authority, else its `Host` header), if any.
    pub fn decide(
        &self,
        method: &Method,
        authorization: Option<&[u8]>,
        host: Option<&[u8]>,
    ) -> Decision {
        let given = authorization.and_then(bearer);
        if let (Some(token), Some(given)) = (&self.token, given)
            && token.matches(given)
        {
            return Decision::Allow;
        }
        let read = method == Method::GET || method == Method::HEAD;
        if read && self.open_reads {
            if self.host_allowed(host) {
                return Decision::AllowOpen;
            }
            if given.is_none() || self.token.is_none() {
                return Decision::ForeignHost;
            }
        }
        match (&self.token, given) {
            (None, _) => Decision::NoTokenConfigured,
            (Some(_), None) => Decision::Missing,
            (Some(_), Some(_)) => Decision::Wrong,
        }
    }

    /// Whether `host` (`name` or `name:port`) is one of the daemon's names: `localhost`, an
    /// IPv4 or `[IPv6]` address (a page can only send an address as its host when the user
    /// typed that address: DNS rebinding needs a name), or one of `hosts`. Any port.
    pub fn host_allowed(&self, host: Option<&[u8]>) -> bool {
        let Some(host) = host.and_then(|h| std::str::from_utf8(h).ok()) else {
            return false;
        };
        let Some(name) = without_port(host.trim()) else {
            return false;
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok() {
            return true;
        }
        if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            return v6.parse::<std::net::Ipv6Addr>().is_ok();
        }
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// `name` of `name` or `name:port` (`[v6]` or `[v6]:port`); `None` when the port is not digits.
fn without_port(host: &str) -> Option<&str> {
    let port_ok = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    if host.starts_with('[') {
        let end = host.find(']')?;
        let (name, rest) = host.split_at(end + 1);
        return match rest.strip_prefix(':') {
            None if rest.is_empty() => Some(name),
            Some(port) if port_ok(port) => Some(name),
            _ => None,
        };
    }
    match host.rsplit_once(':') {
        None => Some(host),
        Some((name, port)) if port_ok(port) && !name.contains(':') => Some(name),
        Some(_) => None,
    }
}

/// What a refused request asked for, as shown in messages: at most 80 visible ASCII characters.
fn shown(text: &[u8]) -> String {
    let mut out: String = text
        .iter()
        .take(80)
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect();
    if text.len() > 80 {
        out.push('…');
    }
    out
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

/// Refused requests become events (`security.wrong-token`, `security.refused`,
/// `security.foreign-host`), at most one per [`ALERT_EVERY`]; the next one says how many were
/// refused meanwhile, so a client hammering the API cannot flood the event store. The accept
/// loop reports its refusals through one of these too (`security.connection-limit`, …).
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
        let kind = match decision {
            Decision::Wrong => EventKind::SecurityWrongToken,
            Decision::ForeignHost => EventKind::SecurityForeignHost,
            _ => EventKind::SecurityRefused,
        };
        let status = decision.status().as_u16();
        self.emit_at(now, kind, "refused", || {
            format!("refused {method} {path} over TCP ({status}): {why}")
        });
    }

    /// Records the event `kind` with `message()` unless one was recorded less than
    /// [`ALERT_EVERY`] ago; then it is only counted, and the next recorded one ends with
    /// "; N more `what` in the 10 s before".
    pub fn emit(&self, kind: EventKind, what: &str, message: impl FnOnce() -> String) {
        self.emit_at(std::time::Instant::now(), kind, what, message);
    }

    fn emit_at(
        &self,
        now: std::time::Instant,
        kind: EventKind,
        what: &str,
        message: impl FnOnce() -> String,
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
        let mut message = message();
        if before > 0 {
            message.push_str(&format!(
                "; {before} more {what} in the {} s before",
                ALERT_EVERY.as_secs()
            ));
        }
        // Never wait on the control loop from a request: a full queue drops the event.
        let _ = self.events.try_send(
            crate::control::Notice {
                kind,
                app: None,
                message,
            }
            .into(),
        );
    }
}

/// The host a request names: its URI's authority (absolute form), else its `Host` header.
fn named_host(req: &Request) -> Option<&[u8]> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str().as_bytes()),
        None => req.headers().get(header::HOST).map(HeaderValue::as_bytes),
    }
}

/// The layer: lets allowed requests through, answers the others 401 with a JSON [`ErrorBody`]
/// and `WWW-Authenticate: Bearer` (RFC 6750), or 403 for a read without the token that names
/// a foreign host, and reports them (`Alerts`). A request with the right token marks its
/// connection as one never closed to make room when the connections run out (see `serve`).
pub async fn require(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let policy = guard.policy.load();
    let decision = policy.decide(req.method(), auth, named_host(&req));
    let (message, hint, challenge) = match decision {
        Decision::Allow => {
            if let Some(conn) = req.extensions().get::<super::serve::ConnTag>() {
                conn.token();
            }
            return next.run(req).await;
        }
        Decision::AllowOpen => return next.run(req).await,
        Decision::Missing => (
            "this request needs the API token".to_string(),
            "send `Authorization: Bearer <token>` with the token from the daemon's [daemon] token_file".to_string(),
            Some("Bearer realm=\"jarfleet\""),
        ),
        Decision::Wrong => (
            "wrong API token".to_string(),
            "use the token from the daemon's [daemon] token_file".to_string(),
            Some("Bearer realm=\"jarfleet\", error=\"invalid_token\""),
        ),
        Decision::NoTokenConfigured => (
            "this daemon has no API token, so this request is not accepted over TCP".to_string(),
            "set [daemon] token_file (see `jarfleet token new`), or open_reads = true for reads only; the unix socket needs no token".to_string(),
            Some("Bearer realm=\"jarfleet\""),
        ),
        Decision::ForeignHost => foreign_host(named_host(&req)),
    };
    guard
        .alerts
        .refused(&decision, req.method(), req.uri().path(), &message);
    let body = ErrorBody {
        kind: ErrorKind::Usage,
        message,
        hint: Some(hint),
    };
    let mut resp = (decision.status(), axum::Json(body)).into_response();
    if let Some(challenge) = challenge {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    resp
}

/// The message and hint of a [`Decision::ForeignHost`] refusal.
fn foreign_host(host: Option<&[u8]>) -> (String, String, Option<&'static str>) {
    let Some(host) = host else {
        return (
            "a read without the token must name the daemon's host (this request has no Host header)".to_string(),
            "send `Host:` (every HTTP/1.1 client does), or the token: `Authorization: Bearer <token>`".to_string(),
            None,
        );
    };
    let host = shown(host);
    let name = without_port(&host).unwrap_or(&host);
    (
        format!(
            "reads without the token are answered only for the daemon's own names (localhost, its IP addresses, [daemon] http_hosts), and Host `{host}` is not one: a guard against DNS rebinding"
        ),
        format!(
            "if this is a name you reach the daemon by, add it to [daemon] http_hosts, e.g. http_hosts = [\"{name}\"]; or send the token: `Authorization: Bearer <token>`"
        ),
        None,
    )
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
        while let Ok(Some(crate::control::Notice { kind, message, .. })) =
            rx.try_recv().map(|ev| ev.into_notice())
        {
            got.push((kind, message));
        }
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, EventKind::SecurityWrongToken);
        assert!(got[0].1.contains("POST /v1/scale"), "{got:?}");
        assert_eq!(got[1].0, EventKind::SecurityRefused);
        assert!(got[1].1.contains("4 more refused"), "{got:?}");
    }

    fn policy(token: Option<&str>, open_reads: bool) -> Policy {
        Policy {
            token: token.map(|t| Token::new(t.as_bytes())),
            open_reads,
            hosts: vec!["dash.example.com".into()],
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
            (Some("s3cret"), true, &get, None, AllowOpen),
            (Some("s3cret"), true, &Method::HEAD, None, AllowOpen),
            (Some("s3cret"), true, &get, Some("Bearer s3cret"), Allow),
            (Some("s3cret"), true, &post, None, Missing),
            (
                Some("s3cret"),
                true,
                &Method::DELETE,
                Some("Bearer x"),
                Wrong,
            ),
            (None, true, &get, None, AllowOpen),
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
            let host = Some(b"127.0.0.1:9900".as_slice());
            let got = policy(*token, *open).decide(method, header.map(str::as_bytes), host);
            assert_eq!(
                &got, want,
                "token {token:?} open_reads {open} {method} {header:?}"
            );
        }
    }

    /// (token, method, Authorization header, Host, expected decision), all with open_reads.
    type HostCase<'a> = (
        Option<&'a str>,
        &'a Method,
        Option<&'a str>,
        Option<&'a str>,
        Decision,
    );

    #[test]
    fn reads_without_the_token_only_for_the_daemons_own_names() {
        use Decision::*;
        let get = Method::GET;
        let post = Method::POST;
        let tok = Some("s3cret");
        let right = Some("Bearer s3cret");
        let cases: &[HostCase] = &[
            (tok, &get, None, Some("localhost"), AllowOpen),
            (tok, &get, None, Some("localhost:9900"), AllowOpen),
            (tok, &get, None, Some("LocalHost.:9900"), AllowOpen),
            (tok, &get, None, Some("127.0.0.1:9900"), AllowOpen),
            (tok, &get, None, Some("10.0.0.5:9900"), AllowOpen),
            (tok, &get, None, Some("[::1]:9900"), AllowOpen),
            (tok, &get, None, Some("[::1]"), AllowOpen),
            (tok, &get, None, Some("[fe80::1]:9900"), AllowOpen),
            (tok, &get, None, Some("dash.example.com"), AllowOpen),
            (tok, &get, None, Some("Dash.Example.COM:443"), AllowOpen),
            (
                tok,
                &Method::HEAD,
                None,
                Some("dash.example.com"),
                AllowOpen,
            ),
            // A wrong token on an open read changes nothing (as before the host check).
            (tok, &get, Some("Bearer nope"), Some("localhost"), AllowOpen),
            // DNS rebinding: the page's own name, resolved to 127.0.0.1.
            (tok, &get, None, Some("evil.example:9900"), ForeignHost),
            (tok, &get, None, Some("evil.example"), ForeignHost),
            (tok, &get, None, Some("localhost.evil.example"), ForeignHost),
            (tok, &get, None, Some("127.0.0.1.nip.io:9900"), ForeignHost),
            (tok, &get, None, Some("dash.example.com.evil"), ForeignHost),
            (tok, &get, None, None, ForeignHost),
            (tok, &get, None, Some(""), ForeignHost),
            (tok, &get, None, Some("localhost:http"), ForeignHost),
            (tok, &get, None, Some("[::1]x"), ForeignHost),
            (tok, &get, None, Some("::1"), ForeignHost),
            (None, &get, None, Some("evil.example"), ForeignHost),
            (
                None,
                &get,
                Some("Bearer x"),
                Some("evil.example"),
                ForeignHost,
            ),
            // A wrong token for a foreign host: the token is what is wrong.
            (tok, &get, Some("Bearer nope"), Some("evil.example"), Wrong),
            // The token is accepted whatever the host.
            (tok, &get, right, Some("evil.example:9900"), Allow),
            (tok, &get, right, None, Allow),
            (tok, &post, right, Some("evil.example"), Allow),
            // Changes need the token whatever the host.
            (tok, &post, None, Some("localhost"), Missing),
            (tok, &post, None, Some("evil.example"), Missing),
            (None, &post, None, Some("localhost"), NoTokenConfigured),
        ];
        for (token, method, header, host, want) in cases {
            let got = policy(*token, true).decide(
                method,
                header.map(str::as_bytes),
                host.map(str::as_bytes),
            );
            assert_eq!(
                &got, want,
                "token {token:?} {method} {header:?} Host {host:?}"
            );
        }
        // Without open_reads the host does not matter: the token decides.
        let closed = policy(tok, false);
        assert_eq!(closed.decide(&get, None, Some(b"localhost")), Missing);
        assert_eq!(
            closed.decide(&get, right.map(str::as_bytes), Some(b"evil.example")),
            Allow
        );
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
