//! The HTTP side: the configured client, the URL rule, and reading response headers.

use crate::options::FetchOptions;
use std::time::Duration;
use ureq::http::HeaderMap;

/// Redirects followed before giving up.
pub(crate) const MAX_REDIRECTS: u32 = 5;

/// Why a URL is not acceptable.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UrlProblem {
    NotHttps(String),
    Invalid(String),
}

/// Checks the URL is https and returns its host (for messages).
pub(crate) fn check_url(url: &str) -> Result<String, UrlProblem> {
    let Some((scheme, _)) = url.split_once(':') else {
        return Err(UrlProblem::Invalid("no scheme".into()));
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return Err(UrlProblem::Invalid("no scheme".into()));
    }
    if !scheme.eq_ignore_ascii_case("https") {
        return Err(UrlProblem::NotHttps(scheme.to_ascii_lowercase()));
    }
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e: ureq::http::uri::InvalidUri| UrlProblem::Invalid(e.to_string()))?;
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(host.trim_matches(['[', ']']).to_owned()),
        _ => Err(UrlProblem::Invalid("no host".into())),
    }
}

pub(crate) fn agent(opts: &FetchOptions, tls: ureq::tls::TlsConfig) -> ureq::Agent {
    agent_with(opts, tls, true)
}

/// For a fetch by digest: http allowed (the digest is checked), and no redirects (a source
/// serves what it has, or says it has not).
pub(crate) fn digest_agent(opts: &FetchOptions, tls: ureq::tls::TlsConfig) -> ureq::Agent {
    agent_with(opts, tls, false)
}

fn agent_with(opts: &FetchOptions, tls: ureq::tls::TlsConfig, https_only: bool) -> ureq::Agent {
    let timeout = Some(opts.timeout.max(Duration::from_millis(1)));
    ureq::Agent::config_builder()
        .https_only(https_only)
        .http_status_as_error(false)
        .max_redirects(if https_only { MAX_REDIRECTS } else { 0 })
        .max_redirects_will_error(https_only)
        .timeout_resolve(timeout)
        .timeout_connect(timeout)
        .timeout_send_request(timeout)
        .timeout_recv_response(timeout)
        .timeout_per_read(timeout)
        .user_agent(concat!("jarfleet-fetch/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build()
        .new_agent()
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    header(headers, "content-length").and_then(|v| v.parse().ok())
}

/// `Content-Range: bytes <start>-<end>/<total>` as `(start, total)`; total `None` for `*`.
pub(crate) fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = header(headers, "content-range")?;
    let rest = value.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        n => Some(n.parse::<u64>().ok()?),
    };
    let consistent = start <= end && total.is_none_or(|t| end < t);
    consistent.then_some((start, total))
}

/// The value for `If-Range` when resuming: a strong ETag, else Last-Modified. A weak ETag
/// (`W/"…"`) may not be used with Range.
pub(crate) fn if_range(headers: &HeaderMap) -> Option<String> {
    let etag = header(headers, "etag").filter(|e| e.starts_with('"') && e.len() >= 2);
    etag.or_else(|| header(headers, "last-modified"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::http::HeaderValue;

    type Pairs<'a> = &'a [(&'static str, &'static str)];
    type Range = Option<(u64, Option<u64>)>;

    fn headers(pairs: Pairs<'_>) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn only_https_urls_with_a_host_pass() {
        let cases: [(&str, Result<&str, UrlProblem>); 8] = [
            ("https://example.com/a.jar", Ok("example.com")),
            ("HTTPS://127.0.0.1:8443/a.jar", Ok("127.0.0.1")),
            ("https://[::1]:8443/a.jar", Ok("::1")),
            (
                "http://example.com/a.jar",
                Err(UrlProblem::NotHttps("http".into())),
            ),
            (
                "file:///srv/a.jar",
                Err(UrlProblem::NotHttps("file".into())),
            ),
            (
                "FTP://example.com/a.jar",
                Err(UrlProblem::NotHttps("ftp".into())),
            ),
            (
                "example.com/a.jar",
                Err(UrlProblem::Invalid("no scheme".into())),
            ),
            ("/srv/a.jar", Err(UrlProblem::Invalid("no scheme".into()))),
        ];
        for (url, want) in cases {
            assert_eq!(check_url(url), want.map(str::to_owned), "{url}");
        }
    }

    #[test]
    fn content_range_is_parsed_strictly() {
        let cases: [(&'static str, Range); 6] = [
            ("bytes 100-199/200", Some((100, Some(200)))),
            ("bytes 0-0/*", Some((0, None))),
            ("bytes 100-199/150", None),
            ("bytes 200-100/300", None),
            ("bytes */200", None),
            ("items 1-2/3", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                content_range(&headers(&[("content-range", value)])),
                want,
                "{value}"
            );
        }
    }

    #[test]
    fn if_range_prefers_a_strong_etag() {
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let cases: [(Pairs<'_>, Option<&str>); 4] = [
            (
                &[("etag", "\"v1\""), ("last-modified", date)],
                Some("\"v1\""),
            ),
            (&[("etag", "W/\"v1\""), ("last-modified", date)], Some(date)),
            (&[("etag", "W/\"v1\"")], None),
            (&[], None),
        ];
        for (pairs, want) in cases {
            assert_eq!(if_range(&headers(pairs)).as_deref(), want, "{pairs:?}");
        }
    }
}
