//! jarfleet-fetch against a real HTTPS server on 127.0.0.1 (see `server/`); fetching by digest
//! from several sources, plain HTTP ones among them, in `by_digest/`.

mod by_digest;
mod server;

use jarfleet_fetch::{FetchError, FetchOptions, Fetched, Progress, fetch};
use server::{FileRoute, Route, TestServer};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const SIZE: usize = 300 * 1024;

/// Deterministic bytes that differ per seed.
fn artifact(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Options trusting the server's CA, with short timeouts and backoff.
fn options(server: &TestServer, cache: &Path) -> FetchOptions {
    let mut opts = FetchOptions::new(cache);
    opts.extra_ca = Some(server.ca_path());
    opts.timeout = Duration::from_secs(10);
    opts.retry_backoff = Duration::from_millis(10);
    opts
}

fn pinned(server: &TestServer, cache: &Path, bytes: &[u8]) -> FetchOptions {
    let mut opts = options(server, cache);
    opts.sha256 = Some(sha256(bytes));
    opts
}

fn files_in(dir: PathBuf) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn assert_fetched(fetched: &Fetched, cache: &Path, bytes: &[u8]) -> TestResult {
    let digest = sha256(bytes);
    assert_eq!(fetched.sha256, digest);
    assert_eq!(fetched.size, bytes.len() as u64);
    assert_eq!(fetched.path, cache.join("sha256").join(&digest));
    assert!(
        std::fs::read(&fetched.path)? == bytes,
        "cached content differs"
    );
    Ok(())
}

/// The partial download left for `url` (there is at most one in these tests).
fn part_file(cache: &Path) -> Option<PathBuf> {
    files_in(cache.join("partial"))
        .into_iter()
        .find(|name| name.ends_with(".part"))
        .map(|name| cache.join("partial").join(name))
}

/// A message with the server's port replaced, for snapshots.
fn message(error: &FetchError, server: &TestServer) -> String {
    error
        .to_string()
        .replace(&server.port().to_string(), "PORT")
}

#[test]
fn pinned_download_is_cached_then_served_without_network_and_refetched_when_corrupt() -> TestResult
{
    let server = TestServer::start();
    let cache = tempfile::tempdir()?;
    let bytes = artifact(1, SIZE);
    server.route("/app.jar", Route::File(FileRoute::new(bytes.clone(), "v1")));
    let opts = pinned(&server, cache.path(), &bytes);

    let first = fetch(&server.url("/app.jar"), &opts)?;
    assert!(!first.from_cache);
    assert_fetched(&first, cache.path(), &bytes)?;
    assert_eq!(server.seen().len(), 1);
    assert_eq!(files_in(cache.path().join("partial")), Vec::<String>::new());

    let second = fetch(&server.url("/app.jar"), &opts)?;
    assert!(second.from_cache);
    assert_eq!(second.path, first.path);
    assert_eq!(
        server.seen().len(),
        1,
        "a cache hit must not touch the network"
    );

    // Same size, one byte flipped: only re-hashing notices.
    let mut corrupt = bytes.clone();
    corrupt[SIZE / 2] ^= 0xff;
    std::fs::write(&first.path, &corrupt)?;
    let third = fetch(&server.url("/app.jar"), &opts)?;
    assert!(!third.from_cache);
    assert_fetched(&third, cache.path(), &bytes)?;
    assert_eq!(server.seen().len(), 2);
    Ok(())
}

#[test]
fn unpinned_download_returns_the_digest_and_always_asks_the_server() -> TestResult {
    let server = TestServer::start();
    let cache = tempfile::tempdir()?;
    let bytes = artifact(2, SIZE);
    server.route("/app.jar", Route::File(FileRoute::new(bytes.clone(), "v1")));
    let opts = options(&server, cache.path());

    let fetched = fetch(&server.url("/app.jar"), &opts)?;
    assert_fetched(&fetched, cache.path(), &bytes)?;
    assert!(!fetch(&server.url("/app.jar"), &opts)?.from_cache);
    assert_eq!(server.seen().len(), 2);
    Ok(())
}

#[test]
fn wrong_pin_names_both_digests_and_leaves_nothing_behind() -> TestResult {
    let server = TestServer::start();
    let cache = tempfile::tempdir()?;
    let served = artifact(3, SIZE);
    let expected = artifact(4, SIZE);
    server.route(
        "/app.jar",
        Route::File(FileRoute::new(served.clone(), "v1")),
    );
    let opts = pinned(&server, cache.path(), &expected);

    let error = fetch(&server.url("/app.jar"), &opts).expect_err("the pin does not match");
    assert!(
        matches!(error, FetchError::DigestMismatch { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains(&sha256(&expected)), "{text}");
    assert!(text.contains(&sha256(&served)), "{text}");
    assert!(text.contains(&server.url("/app.jar")), "{text}");
    assert_eq!(files_in(cache.path().join("sha256")), Vec::<String>::new());
    assert_eq!(files_in(cache.path().join("partial")), Vec::<String>::new());
    Ok(())
}

#[test]
fn dropped_connection_is_resumed_with_range_within_one_call() -> TestResult {
    let server = TestServer::start();
    let cache = tempfile::tempdir()?;
    let bytes = artifact(5, SIZE);
    let mut route = FileRoute::new(bytes.clone(), "v1");
    route.drops = VecDeque::from([100_000]);
    server.route("/app.jar", Route::File(route));
    let seen_progress = Arc::new(Mutex::new(Vec::<Progress>::new()));
    let mut opts = pinned(&server, cache.path(), &bytes);
    let sink = seen_progress.clone();
    opts.progress = Some(Box::new(move |p| {
        sink.lock().map(|mut v| v.push(p)).unwrap_or_default()
    }));

    let fetched = fetch(&server.url("/app.jar"), &opts)?;
    assert_fetched(&fetched, cache.path(), &bytes)?;

    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].range, None);
    assert_eq!(seen[1].range.as_deref(), Some("bytes=100000-"));
    assert_eq!(seen[1].if_range.as_deref(), Some("\"v1\""));
    assert_eq!(
        server.body_bytes(),
        SIZE as u64,
        "nothing may be sent twice"
    );

    let progress = seen_progress.lock().map(|v| v.clone()).unwrap_or_default();
    let last = progress.last().copied();
    assert_eq!(
        last,
        Some(Progress {
            downloaded: SIZE as u64,
            total: Some(SIZE as u64)
        })
    );
    assert!(
        progress
            .windows(2)
            .all(|w| w[0].downloaded <= w[1].downloaded),
        "progress never goes back on a resume"
    );
    Ok(())
}

#[test]
fn a_silent_server_times_out_and_the_retry_resumes() -> TestResult {
    let server = TestServer::start();
    let cache = tempfile::tempdir()?;
    let bytes = artifact(13, SIZE);
    let mut route = FileRoute::new(bytes.clone(), "v1");
    route.stalls = VecDeque::from([50_000]);
    server.route("/app.jar", Route::File(route));
    let mut opts = pinned(&server, cache.path(), &bytes);
    opts.timeout = Duration::from_millis(300);

    let fetched = fetch(&server.url("/app.jar"), &opts)?;
    assert_fetched(&fetched, cache.path(), &bytes)?;
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].range.as_deref(), Some("bytes=50000-"));
    Ok(())
}

#[test]
fn a_resume_through_a_redirect_keeps_its_range() -> TestResult {
    let server = TestServer::start();
    let cache = tempfile::tempdir()?;
    let bytes = artifact(14, SIZE);
    let mut route = FileRoute::new(bytes.clone(), "v1");
    route.drops = VecDeque::from([70_000]);
    server.route("/app.jar", Route::File(route));
    server.route("/latest.jar", Route::Redirect("/app.jar".into()));
    let opts = pinned(&server, cache.path(), &bytes);

    let fetched = fetch(&server.url("/latest.jar"), &opts)?;
    assert_fetched(&fetched, cache.path(), &bytes)?;
    let seen = server.seen();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[3].path, "/app.jar");
    assert_eq!(seen[3].range.as_deref(), Some("bytes=70000-"));
    assert_eq!(server.body_bytes(), SIZE as u64);
    Ok(())
}

#[test]
fn interrupted_call_is_resumed_by_the_next_call() -> TestResult {
    let server = TestServer::start();
    let cache = tempfile::tempdir()?;
    let bytes = artifact(6, SIZE);
    let mut route = FileRoute::new(bytes.clone(), "v1");
    route.drops = VecDeque::from([120_000]);
    server.route("/app.jar", Route::File(route));
    let mut opts = pinned(&server, cache.path(), &bytes);
    opts.max_retries = 0;

    let error = fetch(&server.url("/app.jar"), &opts).expect_err("the connection drops");
    assert!(
        matches!(error, FetchError::Network { attempts: 1, .. }),
        "{error:?}"
    );
    assert!(error.is_transient());
    insta::assert_snapshot!("network", message(&error, &server));
    let part = part_file(cache.path()).ok_or("a .part file is kept")?;
    assert_eq!(std::fs::metadata(&part)?.len(), 120_000);
    assert!(part.with_extension("json").exists(), "the sidecar is kept");

    let fetched = fetch(&server.url("/app.jar"), &opts)?;
    assert_fetched(&fetched, cache.path(), &bytes)?;
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].range.as_deref(), Some("bytes=120000-"));
    assert_eq!(seen[1].if_range.as_deref(), Some("\"v1\""));
    assert_eq!(server.body_bytes(), SIZE as u64);
    assert_eq!(files_in(cache.path().join("partial")), Vec::<String>::new());
    Ok(())
}

#[test]
fn a_partial_of_content_that_changed_is_started_over() -> TestResult {
    let server = TestServer::start();
    let cache = tempfile::tempdir()?;
    let old = artifact(7, SIZE);
    let mut route = FileRoute::new(old, "v1");
    route.drops = VecDeque::from([50_000]);
    server.route("/app.jar", Route::File(route));
    let mut opts = options(&server, cache.path());
    opts.max_retries = 0;
    fetch(&server.url("/app.jar"), &opts).expect_err("the connection drops");

    // The server now has other content under a new ETag; If-Range makes it send all of it.
    let new = artifact(8, SIZE);
    server.route("/app.jar", Route::File(FileRoute::new(new.clone(), "v2")));
    let fetched = fetch(&server.url("/app.jar"), &opts)?;
    assert_fetched(&fetched, cache.path(), &new)?;
    let seen = server.seen();
    assert_eq!(seen[1].if_range.as_deref(), Some("\"v1\""));
    Ok(())
}

#[test]
fn retries_are_bounded() -> TestResult {
    let server = TestServer::start();
    let cache = tempfile::tempdir()?;
    let bytes = artifact(9, SIZE);
    let mut route = FileRoute::new(bytes.clone(), "v1");
    route.drops = VecDeque::from([10_000, 10_000, 10_000, 10_000]);
    server.route("/app.jar", Route::File(route));
    let mut opts = pinned(&server, cache.path(), &bytes);
    opts.max_retries = 2;

    let error = fetch(&server.url("/app.jar"), &opts).expect_err("every response is cut");
    assert!(
        matches!(error, FetchError::Network { attempts: 3, .. }),
        "{error:?}"
    );
    assert_eq!(server.seen().len(), 3);
    assert_eq!(
        std::fs::metadata(part_file(cache.path()).ok_or("kept")?)?.len(),
        30_000
    );
    Ok(())
}

#[test]
fn only_https_is_accepted() -> TestResult {
    let cache = tempfile::tempdir()?;
    let opts = FetchOptions::new(cache.path());
    for url in [
        "http://127.0.0.1:1/app.jar",
        "file:///srv/app.jar",
        "ftp://example.com/app.jar",
    ] {
        let error = fetch(url, &opts).expect_err("not https");
        assert!(
            matches!(error, FetchError::HttpsRequired { .. }),
            "{error:?}"
        );
        insta::assert_snapshot!(error.to_string());
    }
    Ok(())
}

#[test]
fn an_unknown_ca_is_refused_with_a_hint() -> TestResult {
    let server = TestServer::start();
    let cache = tempfile::tempdir()?;
    let bytes = artifact(10, 1000);
    server.route("/app.jar", Route::File(FileRoute::new(bytes, "v1")));
    let mut opts = options(&server, cache.path());
    opts.extra_ca = None;

    let error = fetch(&server.url("/app.jar"), &opts).expect_err("the CA is not trusted");
    assert!(
        matches!(&error, FetchError::Certificate { host, .. } if host == "127.0.0.1"),
        "{error:?}"
    );
    assert!(!error.is_transient());
    insta::assert_snapshot!(message(&error, &server));
    assert_eq!(server.seen().len(), 0);
    Ok(())
}

#[test]
fn an_unusable_extra_ca_file_is_reported() -> TestResult {
    let server = TestServer::start();
    let cache = tempfile::tempdir()?;
    let not_pem = cache.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n")?;
    let mut opts = options(&server, cache.path());
    opts.extra_ca = Some(not_pem.clone());

    let error = fetch(&server.url("/app.jar"), &opts).expect_err("no certificate in the file");
    assert!(
        matches!(&error, FetchError::ExtraCa { path, .. } if *path == not_pem),
        "{error:?}"
    );
    assert!(error.to_string().contains("CERTIFICATE"), "{error}");
    Ok(())
}

#[test]
fn http_errors_name_status_and_url() -> TestResult {
    let server = TestServer::start();
    let cache = tempfile::tempdir()?;
    server.route("/broken.jar", Route::Status(500));
    let opts = options(&server, cache.path());

    for (path, status) in [("/missing.jar", 404), ("/broken.jar", 500)] {
        let url = server.url(path);
        let error = fetch(&url, &opts).expect_err("an HTTP error");
        assert!(
            matches!(&error, FetchError::Status { status: s, url: u } if *s == status && *u == url),
            "{error:?}"
        );
        assert_eq!(error.is_transient(), status >= 500);
        insta::assert_snapshot!(format!("http_{status}"), message(&error, &server));
    }
    Ok(())
}

#[test]
fn redirects_are_followed_over_https_only() -> TestResult {
    let server = TestServer::start();
    let cache = tempfile::tempdir()?;
    let bytes = artifact(11, SIZE);
    server.route("/app.jar", Route::File(FileRoute::new(bytes.clone(), "v1")));
    server.route("/latest.jar", Route::Redirect(server.url("/app.jar")));
    server.route("/relative.jar", Route::Redirect("/app.jar".into()));
    server.route(
        "/insecure.jar",
        Route::Redirect(format!("http://127.0.0.1:{}/app.jar", server.port())),
    );
    server.route("/loop.jar", Route::Redirect("/loop.jar".into()));
    let opts = pinned(&server, cache.path(), &bytes);

    let fetched = fetch(&server.url("/latest.jar"), &opts)?;
    assert_fetched(&fetched, cache.path(), &bytes)?;
    let paths: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/latest.jar", "/app.jar"]);

    let unpinned = options(&server, cache.path());
    let fetched = fetch(&server.url("/relative.jar"), &unpinned)?;
    assert_fetched(&fetched, cache.path(), &bytes)?;

    let error = fetch(&server.url("/insecure.jar"), &unpinned).expect_err("http hop");
    assert!(
        matches!(error, FetchError::InsecureRedirect { .. }),
        "{error:?}"
    );
    insta::assert_snapshot!("insecure_redirect", message(&error, &server));

    let before = server.seen().len();
    let error = fetch(&server.url("/loop.jar"), &unpinned).expect_err("a loop");
    assert!(
        matches!(error, FetchError::TooManyRedirects { max: 5, .. }),
        "{error:?}"
    );
    assert_eq!(
        server.seen().len() - before,
        6,
        "the first request and 5 redirects"
    );
    Ok(())
}

#[test]
fn size_limit_is_enforced_by_content_length_and_by_body() -> TestResult {
    let server = TestServer::start();
    let cache = tempfile::tempdir()?;
    let bytes = artifact(12, SIZE);
    server.route("/big.jar", Route::File(FileRoute::new(bytes.clone(), "v1")));
    let mut unannounced = FileRoute::new(bytes.clone(), "v1");
    unannounced.no_length = true;
    server.route("/stream.jar", Route::File(unannounced));
    let mut opts = options(&server, cache.path());
    opts.max_size = 100_000;

    let error = fetch(&server.url("/big.jar"), &opts).expect_err("too large");
    assert!(
        matches!(error, FetchError::TooLarge { size, max: 100_000, .. } if size == SIZE as u64),
        "{error:?}"
    );
    insta::assert_snapshot!("too_large", message(&error, &server));

    let error = fetch(&server.url("/stream.jar"), &opts).expect_err("too large");
    // Stopped within one read chunk (64 KiB) past the limit, not at the end of the body.
    assert!(
        matches!(error, FetchError::TooLarge { size, max: 100_000, .. }
            if size > 100_000 && size <= 100_000 + 64 * 1024),
        "{error:?}"
    );
    assert_eq!(files_in(cache.path().join("partial")), Vec::<String>::new());
    assert_eq!(files_in(cache.path().join("sha256")), Vec::<String>::new());

    // Without a limit in the way, the close-delimited body downloads fine.
    opts.max_size = SIZE as u64;
    let fetched = fetch(&server.url("/stream.jar"), &opts)?;
    assert_fetched(&fetched, cache.path(), &bytes)?;
    Ok(())
}

#[test]
fn a_malformed_pin_is_refused_before_any_request() -> TestResult {
    let server = TestServer::start();
    let cache = tempfile::tempdir()?;
    let mut opts = options(&server, cache.path());
    opts.sha256 = Some("sha256:abc".into());
    let error = fetch(&server.url("/app.jar"), &opts).expect_err("bad pin");
    assert!(matches!(error, FetchError::InvalidPin { .. }), "{error:?}");
    assert_eq!(server.seen().len(), 0);
    Ok(())
}
