//! Fetching by digest from several sources (a cluster's nodes over plain HTTP, an https
//! origin): real servers on 127.0.0.1 (see `server/`), some of them hostile.

use crate::server::{FileRoute, Route, TestServer};
use jarfleet_fetch::{FetchError, FetchOptions, adopt, fetch_by_digest, prune};
use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::time::Duration;

use super::{TestResult, artifact, sha256};

const SIZE: usize = 200 * 1024;

fn options(cache: &Path) -> FetchOptions {
    let mut opts = FetchOptions::new(cache);
    opts.timeout = Duration::from_secs(10);
    opts.retry_backoff = Duration::from_millis(10);
    opts.max_retries = 0;
    opts
}

/// A node serving `bytes` at its artifact path, named by the digest as our nodes name it.
fn node_serving(bytes: &[u8], digest: &str) -> TestServer {
    let server = TestServer::start_plain();
    server.route(
        &format!("/v1/cluster/artifacts/{digest}"),
        Route::File(FileRoute::new(bytes.to_vec(), digest)),
    );
    server
}

fn url(server: &TestServer, digest: &str) -> String {
    server.url(&format!("/v1/cluster/artifacts/{digest}"))
}

#[test]
fn a_tampered_copy_is_refused_and_the_next_source_serves_it_then_the_cache_answers() -> TestResult {
    let bytes = artifact(1, SIZE);
    let digest = sha256(&bytes);
    // The first node serves other bytes under the same name; the second does not have it.
    let mut tampered = bytes.clone();
    tampered[SIZE / 3] ^= 0x01;
    let hostile = node_serving(&tampered, &digest);
    let without = TestServer::start_plain();
    without.route(
        &format!("/v1/cluster/artifacts/{digest}"),
        Route::Status(404),
    );
    let honest = node_serving(&bytes, &digest);
    let cache = tempfile::tempdir()?;
    let sources = vec![
        url(&hostile, &digest),
        url(&without, &digest),
        url(&honest, &digest),
    ];
    let got = fetch_by_digest(&sources, &digest, &options(cache.path()))?;
    assert_eq!(got.from.as_deref(), Some(sources[2].as_str()));
    assert_eq!(std::fs::read(&got.fetched.path)?, bytes);
    assert_eq!(got.fetched.path, cache.path().join("sha256").join(&digest));
    assert_eq!(got.failed.len(), 2, "{:?}", got.failed);
    assert!(
        matches!(got.failed[0].1, FetchError::DigestMismatch { .. }),
        "{:?}",
        got.failed[0]
    );
    assert!(
        matches!(got.failed[1].1, FetchError::Status { status: 404, .. }),
        "{:?}",
        got.failed[1]
    );
    // Nothing of the tampered bytes is left to be resumed.
    let partials: Vec<_> = std::fs::read_dir(cache.path().join("partial"))?.collect();
    assert!(partials.is_empty(), "{partials:?}");

    // Now it is cached: no source is asked.
    let asked = honest.seen().len();
    let again = fetch_by_digest(&sources, &digest, &options(cache.path()))?;
    assert!(again.from.is_none());
    assert_eq!(honest.seen().len(), asked);
    assert_eq!(hostile.seen().len(), 1);
    Ok(())
}

#[test]
fn bytes_from_a_node_that_dropped_are_continued_from_another() -> TestResult {
    let bytes = artifact(2, SIZE);
    let digest = sha256(&bytes);
    let dropping = TestServer::start_plain();
    let mut route = FileRoute::new(bytes.clone(), &digest);
    route.drops = VecDeque::from([80_000]);
    dropping.route(
        &format!("/v1/cluster/artifacts/{digest}"),
        Route::File(route),
    );
    let other = node_serving(&bytes, &digest);
    let cache = tempfile::tempdir()?;
    let sources = vec![url(&dropping, &digest), url(&other, &digest)];
    let got = fetch_by_digest(&sources, &digest, &options(cache.path()))?;
    assert_eq!(got.from.as_deref(), Some(sources[1].as_str()));
    assert_eq!(std::fs::read(&got.fetched.path)?, bytes);
    let seen = other.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].range.as_deref(), Some("bytes=80000-"));
    assert_eq!(seen[0].if_range, Some(format!("\"{digest}\"")));
    assert_eq!(
        other.body_bytes(),
        (SIZE - 80_000) as u64,
        "only the rest was sent"
    );
    Ok(())
}

#[test]
fn an_origin_with_its_own_etag_is_fetched_whole_after_a_node_dropped() -> TestResult {
    let bytes = artifact(3, SIZE);
    let digest = sha256(&bytes);
    let dropping = TestServer::start_plain();
    let mut route = FileRoute::new(bytes.clone(), &digest);
    route.drops = VecDeque::from([50_000]);
    dropping.route("/v1/cluster/artifacts/x", Route::File(route));
    let origin = TestServer::start();
    origin.route("/app.jar", Route::File(FileRoute::new(bytes.clone(), "v7")));
    let cache = tempfile::tempdir()?;
    let mut opts = options(cache.path());
    opts.extra_ca = Some(origin.ca_path());
    let sources = vec![
        dropping.url("/v1/cluster/artifacts/x"),
        origin.url("/app.jar"),
    ];
    let got = fetch_by_digest(&sources, &digest, &opts)?;
    assert_eq!(std::fs::read(&got.fetched.path)?, bytes);
    // The origin's ETag is not the nodes' one: it sends everything, and that is what is kept.
    assert_eq!(origin.body_bytes(), SIZE as u64);
    Ok(())
}

#[test]
fn every_source_failing_names_each_and_a_bad_digest_or_source_is_refused() -> TestResult {
    let bytes = artifact(4, 1000);
    let digest = sha256(&bytes);
    let cache = tempfile::tempdir()?;
    let gone = TestServer::start_plain();
    let sources = vec![
        url(&gone, &digest),
        "ftp://example.invalid/a.jar".to_string(),
    ];
    let err =
        fetch_by_digest(&sources, &digest, &options(cache.path())).expect_err("nobody has it");
    let text = err.to_string();
    assert!(text.contains("no source served sha256"), "{text}");
    assert!(text.contains("HTTP 404"), "{text}");
    assert!(text.contains("a source is an http or https URL"), "{text}");
    assert!(err.tampered().is_empty());

    for bad in ["", "abc", &digest.to_uppercase(), &format!("{digest}0")] {
        let err = fetch_by_digest(&sources, bad, &options(cache.path())).expect_err("not a digest");
        assert!(err.to_string().contains("is not a sha256"), "{err}");
    }
    let err = fetch_by_digest(&[], &digest, &options(cache.path())).expect_err("no source");
    assert!(err.to_string().starts_with("no source to fetch"), "{err}");
    Ok(())
}

#[test]
fn a_local_file_is_adopted_by_digest_checked_and_pruned() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let jar = dir.path().join("app.jar");
    let bytes = artifact(5, 5000);
    std::fs::write(&jar, &bytes)?;
    let digest = sha256(&bytes);

    let err = adopt(&jar, &cache, Some(&sha256(b"other"))).expect_err("not that digest");
    assert!(err.to_string().contains(&digest), "{err}");
    assert!(!cache.join("sha256").join(&digest).exists());

    let got = adopt(&jar, &cache, Some(&digest))?;
    assert_eq!(got.sha256, digest);
    assert_eq!(got.size, 5000);
    assert!(!got.from_cache);
    // Adopted again: already there, not copied again; a cached copy gone bad is replaced.
    assert!(adopt(&jar, &cache, None)?.from_cache);
    let mut bad = bytes.clone();
    bad[10] ^= 1;
    std::fs::write(&got.path, &bad)?;
    let again = adopt(&jar, &cache, None)?;
    assert!(!again.from_cache);
    assert_eq!(std::fs::read(&again.path)?, bytes);
    // A copy: the original may change.
    std::fs::write(&jar, b"changed")?;
    assert_eq!(std::fs::read(&got.path)?, bytes);
    // And a fetch by digest finds it without any source.
    let hit = fetch_by_digest(&[], &digest, &options(&cache))?;
    assert!(hit.from.is_none());

    let other = adopt(&jar, &cache, None)?;
    std::fs::write(cache.join("sha256").join("README"), b"not ours")?;
    let other_sig = cache
        .join("sha256")
        .join(format!("{}.minisig", other.sha256));
    let kept_sig = cache.join("sha256").join(format!("{digest}.minisig"));
    std::fs::write(&other_sig, b"sig")?;
    std::fs::write(&kept_sig, b"sig")?;
    // Nothing just written goes.
    assert!(
        prune(
            &cache,
            &BTreeSet::from([digest.clone()]),
            Duration::from_secs(600)
        )?
        .is_empty()
    );
    let removed = prune(&cache, &BTreeSet::from([digest.clone()]), Duration::ZERO)?;
    assert_eq!(removed, vec![other.sha256.clone()]);
    assert!(got.path.exists());
    assert!(!other.path.exists());
    assert!(cache.join("sha256").join("README").exists());
    assert!(!other_sig.exists(), "a pruned jar's signature goes with it");
    assert!(kept_sig.exists());
    Ok(())
}
