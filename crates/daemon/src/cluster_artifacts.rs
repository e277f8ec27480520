//! Cluster mode's releases by digest, on a node: the jar of an app applied here is kept in
//! this node's artifact cache and named in etcd by its sha256 (with its signature); a node
//! that runs the app fetches it by that digest from the nodes that have it (the node it was
//! applied through first), or from its https origin, and runs it from its own cache. No node
//! needs the jar at the path the apps file names, and a copy that does not hash to the digest
//! is refused, whoever served it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Instant;

use jarfleet_api::{ErrorBody, ErrorKind};
use jarfleet_cluster::ClusterApp;
use jarfleet_cluster::agent::Agent;
use jarfleet_cluster::artifacts::{ArtifactRef, MAX_SIGNATURE, SignatureRef, Source, to_hex};
use jarfleet_core::spec::Launch;
use jarfleet_host::prepare::PreparedApp;

/// The artifact of each prepared app that has a jar, put into `cache` (blocking: it hashes
/// and copies).
pub fn refs_of(
    prepared: &BTreeMap<String, PreparedApp>,
    cache: &Path,
) -> Result<BTreeMap<String, ArtifactRef>, ErrorBody> {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, p) in prepared {
        let Launch::Jar { path, url, .. } = &p.spec.launch else {
            continue;
        };
        match ref_of(
            name,
            path,
            url.as_deref(),
            !p.spec.trust_keys.is_empty(),
            cache,
        ) {
            Ok(r) => {
                out.insert(name.clone(), r);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ErrorBody {
            kind: ErrorKind::Failed,
            message: errors.join("\n"),
            hint: Some(
                "nothing was applied; free room in the state directory and apply again".into(),
            ),
        })
    }
}

fn ref_of(
    name: &str,
    jar: &Path,
    url: Option<&str>,
    signed: bool,
    cache: &Path,
) -> Result<ArtifactRef, String> {
    let kept = jarfleet_fetch::adopt(jar, cache, None).map_err(|e| {
        format!("apps.{name}.artifact: keeping it for the cluster's other nodes: {e}")
    })?;
    let signature = if signed {
        Some(signature_of(name, jar, url, cache)?)
    } else {
        None
    };
    Ok(ArtifactRef {
        sha256: kept.sha256,
        size: kept.size,
        signature,
    })
}

/// The jar's detached signature: beside it, or for an https artifact `URL.minisig`.
fn signature_of(
    name: &str,
    jar: &Path,
    url: Option<&str>,
    cache: &Path,
) -> Result<SignatureRef, String> {
    let (ext, path) = match (jarfleet_trust::signature_beside(jar), url) {
        (Some(p), _) => {
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("minisig")
                .to_string();
            (ext, p)
        }
        (None, Some(url)) => {
            let mut o = jarfleet_fetch::FetchOptions::new(cache);
            o.max_size = MAX_SIGNATURE as u64;
            let got = jarfleet_fetch::fetch(&format!("{url}.minisig"), &o)
                .map_err(|e| format!("apps.{name}.artifact: its signature: {e}"))?;
            ("minisig".to_string(), got.path)
        }
        (None, None) => {
            return Err(format!(
                "apps.{name}.artifact: {} has no signature beside it",
                jar.display()
            ));
        }
    };
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("apps.{name}.artifact: reading {}: {e}", path.display()))?;
    if bytes.len() > MAX_SIGNATURE {
        return Err(format!(
            "apps.{name}.artifact: the signature {} is larger than {MAX_SIGNATURE} bytes",
            path.display()
        ));
    }
    Ok(SignatureRef {
        ext,
        hex: to_hex(&bytes),
    })
}

/// What fetching an app's jar on this node came to, for its event.
pub struct Fetched {
    /// The app with its jar in this node's cache.
    pub app: ClusterApp,
    /// Said in a `cluster.artifact` event when the jar came over the network.
    pub note: Option<String>,
}

/// The jar of `app` into this node's `cache`, by its digest, from the nodes that have it;
/// the app comes back running it from there. An app without an artifact reference is
/// returned as it is.
pub async fn fetch_for(
    app: &ClusterApp,
    agent: Option<&Agent>,
    cache: PathBuf,
) -> Result<Fetched, ErrorBody> {
    let Some(artifact) = app.artifact.clone() else {
        return Ok(Fetched {
            app: app.clone(),
            note: None,
        });
    };
    let name = app.spec.name.clone();
    let mut sources = agent
        .map(|a| peers_of(a, app, &artifact))
        .unwrap_or_default();
    if let Launch::Jar { url: Some(url), .. } = &app.spec.launch {
        sources.push(url.clone());
    }
    let started = Instant::now();
    let digest = artifact.sha256.clone();
    let size = artifact.size;
    let task_cache = cache.clone();
    // With `[cluster] tls` the peers are asked over TLS: their certificates checked against the
    // cluster's CA, this node's presented.
    let tls = agent.and_then(|a| a.peer_tls()).map(|t| t.files.clone());
    let got = tokio::task::spawn_blocking(move || {
        let mut opts = jarfleet_fetch::FetchOptions::new(task_cache);
        if let Some(files) = tls {
            opts.extra_ca = Some(files.ca);
            opts.client_cert = Some((files.cert, files.key));
        }
        // A node that stalls or drops is left for the next one soon: what it sent is kept and
        // continued from there.
        opts.timeout = std::time::Duration::from_secs(10);
        opts.max_retries = 1;
        // A node sending more than the jar's recorded size is cut off there, not after 4 GiB.
        opts.max_size = size.max(1);
        jarfleet_fetch::fetch_by_digest(&sources, &digest, &opts)
    })
    .await
    .map_err(|e| failed(format!("a background task failed: {e}")))?
    .map_err(|e| {
        failed(format!(
            "apps.{name}: its jar (sha256 {}) could not be fetched: {e}",
            artifact.sha256
        ))
    })?;
    let blob = got.fetched.path.clone();
    if let Some((ext, bytes)) = artifact.signature_bytes() {
        let mut sig = blob.as_os_str().to_owned();
        sig.push(format!(".{ext}"));
        std::fs::write(&sig, bytes).map_err(|e| {
            failed(format!(
                "apps.{name}: writing its signature beside {}: {e}",
                blob.display()
            ))
        })?;
    }
    let mut local = app.clone();
    local.spec.launch = Launch::Jar {
        path: blob,
        url: None,
        sha256: Some(artifact.sha256.clone()),
    };
    let note = got.from.as_ref().map(|from| {
        let mut text = format!(
            "{name}: its jar (sha256 {}…, {}) fetched from {from} in {:.1} s",
            &artifact.sha256[..12],
            jarfleet_core::units::format_size(got.fetched.size),
            started.elapsed().as_secs_f64()
        );
        for (source, e) in &got.failed {
            let what = if matches!(e, jarfleet_fetch::FetchError::DigestMismatch { .. }) {
                "served a copy that does not match the digest: refused".to_string()
            } else {
                e.to_string()
            };
            text.push_str(&format!("; {source}: {what}"));
        }
        text
    });
    Ok(Fetched { app: local, note })
}

/// The nodes that may have the jar, registered and answering this node's probes, in the order
/// to ask them.
fn peers_of(agent: &Agent, app: &ClusterApp, artifact: &ArtifactRef) -> Vec<String> {
    let Some(m) = agent.mirror() else {
        return Vec::new();
    };
    let unreachable = agent.unreachable_peers();
    let nodes: Vec<Source> = m
        .nodes
        .values()
        .filter(|r| r.record.name != agent.node() && !unreachable.contains(&r.record.name))
        .map(|r| Source {
            node: r.record.name.clone(),
            address: r.record.address.clone(),
            peer_port: r.record.peer_port,
        })
        .collect();
    jarfleet_cluster::artifacts::order(
        &artifact.sha256,
        &app.applied_by,
        &nodes,
        agent.peer_tls().is_some(),
    )
}

/// The jars a node keeps in its artifact cache for the cluster: per app, the digests of its
/// last `keep_releases` releases (at least 2), newest first — what a rollback needs, and what
/// other nodes may still ask for. Everything else in the cache can go.
#[derive(Debug, Default)]
pub struct Kept {
    by_app: BTreeMap<String, VecDeque<String>>,
}

impl Kept {
    /// Notes the cluster's apps as assigned now; the digests to keep. `None` when the
    /// assignment names no app (an emptied store is not a reason to throw anything away).
    pub fn note(&mut self, apps: &BTreeMap<String, ClusterApp>) -> Option<BTreeSet<String>> {
        if apps.is_empty() {
            return None;
        }
        self.by_app.retain(|name, _| apps.contains_key(name));
        for (name, app) in apps {
            let Some(artifact) = &app.artifact else {
                continue;
            };
            let recent = self.by_app.entry(name.clone()).or_default();
            if recent.front() != Some(&artifact.sha256) {
                recent.retain(|d| *d != artifact.sha256);
                recent.push_front(artifact.sha256.clone());
            }
            recent.truncate(app.spec.deploy.keep_releases.max(2) as usize);
        }
        Some(self.by_app.values().flatten().cloned().collect())
    }
}

fn failed(message: String) -> ErrorBody {
    ErrorBody {
        kind: ErrorKind::Failed,
        message,
        hint: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, digest: &str, keep: u32) -> ClusterApp {
        let text = format!(
            "[apps.{name}]\nartifact = \"/srv/{name}.jar\"\nports = \"9000-9099\"\n\n[apps.{name}.deploy]\nkeep_releases = {keep}\n"
        );
        let spec = jarfleet_core::spec::load(&text, Path::new("/srv/apps.toml"), &|_| None)
            .expect("the spec loads");
        ClusterApp {
            spec: spec.apps[name].clone(),
            release: "r".into(),
            applied_by: "a".into(),
            applied_ms: 0,
            artifact: Some(ArtifactRef {
                sha256: digest.repeat(64),
                size: 1,
                signature: None,
            }),
            previous: None,
        }
    }

    fn digests(set: &BTreeSet<String>) -> Vec<char> {
        set.iter().filter_map(|d| d.chars().next()).collect()
    }

    #[test]
    fn the_last_releases_of_each_app_are_kept_and_a_removed_app_s_go() {
        let mut kept = Kept::default();
        let mut apps = BTreeMap::from([("web".to_string(), app("web", "a", 2))]);
        assert_eq!(digests(&kept.note(&apps).expect("some")), vec!['a']);
        apps.insert("web".into(), app("web", "b", 2));
        apps.insert("api".into(), app("api", "c", 3));
        assert_eq!(
            digests(&kept.note(&apps).expect("some")),
            vec!['a', 'b', 'c']
        );
        // A third release of web: the oldest goes (keep_releases = 2); a rollback to b keeps
        // b and c's neighbour.
        apps.insert("web".into(), app("web", "d", 2));
        assert_eq!(
            digests(&kept.note(&apps).expect("some")),
            vec!['b', 'c', 'd']
        );
        apps.insert("web".into(), app("web", "b", 2));
        assert_eq!(
            digests(&kept.note(&apps).expect("some")),
            vec!['b', 'c', 'd']
        );
        // api removed from the cluster: its jar goes.
        apps.remove("api");
        assert_eq!(digests(&kept.note(&apps).expect("some")), vec!['b', 'd']);
        // An emptied store: nothing is thrown away.
        assert_eq!(kept.note(&BTreeMap::new()), None);
    }
}
