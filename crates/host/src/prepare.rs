//! The IO half of `apply`: check artifacts, pick a JDK per app, compute release ids. Runs outside
//! the control loop (hashing a large jar must not stall it). Every problem is collected.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use jarfleet_api::{ErrorBody, ErrorKind};
use jarfleet_core::spec::{AppSpec, FleetSpec, Launch};
use sha2::{Digest, Sha256};

use crate::launch::JavaRuntime;

/// An app as `apply` hands it to the loop, after the IO checks (artifact, JDK, release id).
#[derive(Debug, Clone)]
pub struct PreparedApp {
    pub spec: AppSpec,
    pub release: String,
    /// The id an older jarfleet gave the same release on this host (it hashed the JDK's
    /// directory too): a store written then still names the running release so.
    pub legacy_release: Option<String>,
    pub runtime: JavaRuntime,
    pub release_record: serde_json::Value,
}

pub fn prepare(spec: &FleetSpec) -> Result<BTreeMap<String, PreparedApp>, ErrorBody> {
    let jdks = jarfleet_java::discover();
    let mut errors = Vec::new();
    let mut out = BTreeMap::new();
    let cache = crate::paths::StateDir::new(&spec.daemon.state_dir).download_cache();
    for (name, app) in &spec.apps {
        let with_etcd;
        let app = match &app.config_etcd {
            Some(source) => match crate::config_center::read(source) {
                Ok(values) => {
                    let mut a = app.clone();
                    a.etcd_env = values;
                    if let Err(e) = crate::templates::render_with_etcd(&mut a) {
                        errors.push(e);
                        continue;
                    }
                    with_etcd = a;
                    &with_etcd
                }
                Err(e) => {
                    errors.push(format!(
                        "apps.{name}.config.etcd: cannot read {} from {}: {e}",
                        source.prefix,
                        source.endpoints.join(", ")
                    ));
                    continue;
                }
            },
            None => app,
        };
        let fetched = fetch_remote(app, &cache, spec.trust.ca.as_deref());
        let prepared = fetched
            .and_then(|(app, sig)| prepare_app(&app, &jdks, sig.as_deref()))
            .and_then(|mut p| {
                materialize_config(&mut p, &spec.daemon.state_dir)?;
                Ok(p)
            });
        match prepared {
            Ok(p) => {
                out.insert(name.clone(), p);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ErrorBody {
            kind: ErrorKind::Usage,
            message: errors.join("\n"),
            hint: Some("nothing was applied; fix the spec or the host and try again".into()),
        })
    }
}

/// A remote artifact downloaded into `cache` (once per digest: a pinned one is not fetched
/// again), and with `[trust]` keys its signature (`URL.minisig`) beside it in the cache; the app
/// comes back pointing at the local copy. Local artifacts pass through.
fn fetch_remote(
    app: &AppSpec,
    cache: &Path,
    ca: Option<&Path>,
) -> Result<(AppSpec, Option<PathBuf>), String> {
    let Launch::Jar {
        url: Some(url),
        sha256,
        ..
    } = &app.launch
    else {
        return Ok((app.clone(), None));
    };
    let name = &app.name;
    let options = |pin: Option<String>| {
        let mut o = jarfleet_fetch::FetchOptions::new(cache);
        o.sha256 = pin;
        o.extra_ca = ca.map(Path::to_path_buf);
        o
    };
    let mut opts = options(sha256.clone());
    opts.progress = tty_progress(url);
    let got =
        jarfleet_fetch::fetch(url, &opts).map_err(|e| format!("apps.{name}.artifact: {e}"))?;
    let mut sig = None;
    if !app.trust_keys.is_empty() {
        let sig_url = format!("{url}.minisig");
        let mut o = options(None);
        o.max_size = 1 << 20;
        let fetched = jarfleet_fetch::fetch(&sig_url, &o)
            .map_err(|e| format!("apps.{name}.artifact: its signature: {e}"))?;
        sig = Some(fetched.path);
    }
    let mut local = app.clone();
    local.launch = Launch::Jar {
        path: got.path,
        url: Some(url.clone()),
        sha256: sha256.clone(),
    };
    Ok((local, sig))
}

/// A progress line on stderr while a download runs, when stderr is a terminal (at most ten
/// updates a second).
fn tty_progress(url: &str) -> Option<jarfleet_fetch::ProgressFn> {
    use std::io::{IsTerminal, Write};
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let url = url.to_string();
    let last = std::sync::Mutex::new(None::<std::time::Instant>);
    Some(Box::new(move |p: jarfleet_fetch::Progress| {
        let done = p.total == Some(p.downloaded);
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if !done && last.is_some_and(|t| t.elapsed() < std::time::Duration::from_millis(100)) {
            return;
        }
        *last = Some(std::time::Instant::now());
        let mib = |b: u64| b as f64 / 1_048_576.0;
        let total = p
            .total
            .map(|t| format!(" of {:.1} MiB", mib(t)))
            .unwrap_or_default();
        // Not `eprint!`, which panics when the terminal is gone.
        let _ = write!(
            std::io::stderr(),
            "\r\x1b[2Kdownloading {url}: {:.1} MiB{total}{}",
            mib(p.downloaded),
            if done { "\n" } else { "" }
        );
    }))
}

fn prepare_app(
    app: &AppSpec,
    jdks: &[jarfleet_java::Jdk],
    sig: Option<&Path>,
) -> Result<PreparedApp, String> {
    // An installed release's rendered config is part of the release.
    let with_config;
    let app = match &app.launch {
        Launch::Jar { path, .. } => match crate::templates::release_templates(path) {
            Some(etc) => {
                let mut a = app.clone();
                a.env.insert(
                    crate::templates::TEMPLATES_ENV.to_string(),
                    etc.display().to_string(),
                );
                with_config = a;
                &with_config
            }
            None => app,
        },
        Launch::MainClass { .. } => app,
    };
    let name = &app.name;
    if app.deploy.strategy == jarfleet_core::spec::Strategy::Canary && app.listen.is_none() {
        return Err(format!(
            "apps.{name}.deploy.strategy = \"canary\": a canary is judged by the built-in load balancer; give the app a `listen` address, or use \"rolling\" or \"blue-green\""
        ));
    }
    let mut min_feature = 8;
    let mut digest = Sha256::new();
    match &app.launch {
        Launch::Jar { path, url, sha256 } => {
            if !path.is_file() {
                return Err(format!(
                    "apps.{name}.artifact: {} does not exist (or is not a file); build the jar or fix the path",
                    path.display()
                ));
            }
            check_signature(app, path, sig)?;
            if let (None, Some(pin)) = (url, sha256) {
                let actual = sha256_hex(path).map_err(|e| {
                    format!("apps.{name}.artifact: reading {}: {e}", path.display())
                })?;
                if &actual != pin {
                    return Err(format!(
                        "apps.{name}.artifact: {} has sha256 {actual}, the spec pins {pin}; refused",
                        path.display()
                    ));
                }
            }
            let info = jarfleet_java::inspect_jar(path)
                .map_err(|e| format!("apps.{name}.artifact: {e}"))?;
            min_feature = info.min_java_feature;
            hash_file(&mut digest, path)
                .map_err(|e| format!("apps.{name}.artifact: reading {}: {e}", path.display()))?;
        }
        Launch::MainClass { .. } if !app.trust_keys.is_empty() => {
            return Err(format!(
                "apps.{name}: [trust] lists keys, and a classpath cannot be signed; run a signed jar with `artifact = ...`"
            ));
        }
        Launch::MainClass { classpath, .. } => {
            for entry in classpath {
                let p = std::path::Path::new(entry);
                if !entry.contains('*') && !p.exists() {
                    return Err(format!("apps.{name}.classpath: {entry} does not exist"));
                }
                if p.is_file() {
                    hash_file(&mut digest, p)
                        .map_err(|e| format!("apps.{name}.classpath: reading {entry}: {e}"))?;
                }
            }
        }
    }
    if let Some(user) = &app.user {
        crate::launch::resolve_user(name, user).map_err(|e| e.explained())?;
    }
    let jdk = match &app.java.home {
        Some(home) => {
            jarfleet_java::jdk_at(home).map_err(|e| format!("apps.{name}.java.home: {e}"))?
        }
        None => jarfleet_java::select(jdks, app.java.version.as_ref(), min_feature)
            .map_err(|e| format!("apps.{name}: {e}"))?
            .clone(),
    };
    let feature = jdk.feature().unwrap_or(min_feature);
    if let Some(req) = &app.java.version
        && !req.matches(feature)
    {
        return Err(format!(
            "apps.{name}.java: {} is Java {feature}, but java.version = {:?} is required",
            jdk.home.display(),
            req.as_str()
        ));
    }
    let runtime = JavaRuntime {
        jcmd: jarfleet_java::thread_dump_tool(&jdk),
        java: jdk.java.clone(),
        home: jdk.home.clone(),
        version: jdk
            .version
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "unknown".into()),
        feature,
        vendor: jdk.vendor.clone(),
    };
    let templates = match app.env.get(crate::templates::TEMPLATES_ENV) {
        Some(etc) => Some(
            templates_digest(Path::new(etc))
                .map_err(|e| format!("apps.{name}: reading the release's config {etc}: {e}"))?,
        ),
        None => None,
    };
    let released = released_settings(app, templates.as_deref());
    let release = release_id(&digest, &released);
    let legacy_release = legacy_release_id(&digest, app, &runtime);
    let mut release_record = released;
    if let Some(map) = release_record.as_object_mut() {
        map.insert(
            "jdk".into(),
            serde_json::json!({
                "home": runtime.home,
                "version": runtime.version,
                "vendor": runtime.vendor,
            }),
        );
    }
    Ok(PreparedApp {
        spec: app.clone(),
        release,
        legacy_release: Some(legacy_release),
        runtime,
        release_record,
    })
}

/// What was released, as the release id hashes it beside the artifact's bytes: the launch
/// settings and the config. Nothing of the host is in it (no JDK, no state-dir path): the same
/// release has the same id on every host. The artifact is identified by its content, not its
/// path (the same jar copied elsewhere is the same release); the templates of an installed
/// release by theirs (`templates`, see [`templates_digest`]), not by where they were installed.
pub fn released_settings(app: &AppSpec, templates: Option<&str>) -> serde_json::Value {
    let launch = match &app.launch {
        Launch::Jar { .. } => serde_json::json!("jar"),
        other => serde_json::json!(other),
    };
    let mut env = app.env.clone();
    if let Some(t) = templates {
        env.insert(crate::templates::TEMPLATES_ENV.to_string(), t.to_string());
    }
    serde_json::json!({
        "launch": launch,
        "args": app.args,
        "env": env,
        "java": app.java,
        "workdir": app.workdir,
        "user": app.user,
        "config": app.config_rendered,
        "etcd": app.etcd_env,
    })
}

/// The release id: the first 6 bytes (12 hex digits) of SHA-256 over the artifact's bytes
/// (`artifact`, fed with them) and then the released settings.
pub fn release_id(artifact: &Sha256, released: &serde_json::Value) -> String {
    let mut digest = artifact.clone();
    digest.update(released.to_string().as_bytes());
    hex::encode(&digest.finalize()[..6])
}

/// The id jarfleet gave the same release before ids were independent of the host: it also
/// hashed the chosen JDK's home directory and version, and the templates' path. A store written
/// then names its releases this way; `apply` keeps such an id for as long as it still describes
/// what is to run (see `Control::adopt_stored_ids`), so an upgrade restarts nothing.
pub fn legacy_release_id(artifact: &Sha256, app: &AppSpec, runtime: &JavaRuntime) -> String {
    let launch = match &app.launch {
        Launch::Jar { .. } => serde_json::json!("jar"),
        other => serde_json::json!(other),
    };
    let record = serde_json::json!({
        "launch": launch,
        "args": app.args,
        "env": app.env,
        "java": app.java,
        "workdir": app.workdir,
        "user": app.user,
        "config": app.config_rendered,
        "etcd": app.etcd_env,
        "runtime": { "home": runtime.home, "version": runtime.version },
    });
    let mut digest = artifact.clone();
    digest.update(record.to_string().as_bytes());
    hex::encode(&digest.finalize()[..6])
}

/// The content of an installed release's rendered templates (`RELEASE/etc`): SHA-256 over each
/// file's path relative to `etc` and its bytes, in path order. Symlinks are not followed.
fn templates_digest(etc: &Path) -> std::io::Result<String> {
    fn walk(dir: &Path, rel: &Path, out: &mut Vec<(PathBuf, PathBuf)>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let rel = rel.join(entry.file_name());
            if kind.is_dir() {
                walk(&entry.path(), &rel, out)?;
            } else if kind.is_file() {
                out.push((rel, entry.path()));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(etc, Path::new(""), &mut files)?;
    files.sort();
    let mut digest = Sha256::new();
    for (rel, path) in files {
        let rel = rel.to_string_lossy();
        digest.update((rel.len() as u64).to_le_bytes());
        digest.update(rel.as_bytes());
        let mut file = Sha256::new();
        hash_file(&mut file, &path)?;
        digest.update(file.finalize());
    }
    Ok(hex::encode(digest.finalize()))
}

/// The spec's rendered `config` templates become the release's `etc/`
/// (`STATE/releases/APP/RELEASE/etc`, written once, atomically), rendered again per instance.
fn materialize_config(prepared: &mut PreparedApp, state_root: &Path) -> Result<(), String> {
    let spec = &prepared.spec;
    if spec.config_rendered.is_empty() || spec.env.contains_key(crate::templates::TEMPLATES_ENV) {
        return Ok(());
    }
    let name = &spec.name;
    let release_dir = crate::paths::StateDir::new(state_root).release_dir(name, &prepared.release);
    let etc = release_dir.join("etc");
    if !etc.is_dir() {
        let tmp = release_dir.join(".etc.incoming");
        let write = || -> std::io::Result<()> {
            let _ = std::fs::remove_dir_all(&tmp);
            for (rel, text) in &spec.config_rendered {
                let rel = Path::new(rel);
                if rel.is_absolute() || rel.components().any(|c| c.as_os_str() == "..") {
                    return Err(std::io::Error::other(format!(
                        "bad config file name {}",
                        rel.display()
                    )));
                }
                let path = tmp.join(rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, text)?;
            }
            std::fs::rename(&tmp, &etc)
        };
        write().map_err(|e| format!("apps.{name}.config: writing {}: {e}", etc.display()))?;
    }
    prepared.spec.env.insert(
        crate::templates::TEMPLATES_ENV.to_string(),
        etc.display().to_string(),
    );
    Ok(())
}

/// A new release of a running app whose only change is its etcd config (or anything else the
/// caller changed in `spec`): prepared like any other, from the release's own files.
pub fn prepare_changed(
    spec: &AppSpec,
    dirs: &crate::paths::StateDir,
) -> Result<PreparedApp, ErrorBody> {
    let jdks = jarfleet_java::discover();
    let failed = |message| ErrorBody {
        kind: ErrorKind::Failed,
        message,
        hint: None,
    };
    let mut spec = spec.clone();
    crate::templates::render_with_etcd(&mut spec).map_err(failed)?;
    let mut prepared = prepare_app(&spec, &jdks, None).map_err(failed)?;
    materialize_config(&mut prepared, dirs.root()).map_err(failed)?;
    fast_start_layout(&mut prepared, dirs)?;
    Ok(prepared)
}

/// A Spring Boot jar's release runs from its extracted layout (`java.fast_start`).
pub fn fast_start_layout(
    prepared: &mut PreparedApp,
    dirs: &crate::paths::StateDir,
) -> Result<(), ErrorBody> {
    match crate::faststart::boot_launch(&prepared.spec, &prepared.release, dirs) {
        Ok(Some(launch)) => {
            prepared.spec.launch = launch;
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(message) => Err(ErrorBody {
            kind: ErrorKind::Failed,
            message,
            hint: Some(
                "nothing was applied; `java = { fast_start = false }` runs the jar as it is".into(),
            ),
        }),
    }
}

/// Written by `jarfleet install` into a release dir whose bundle it verified; the jar sits in
/// its `app/` dir.
pub const VERIFIED_MARKER: &str = ".jarfleet-verified";

/// With `[trust]` keys, the artifact must carry a good signature by one of them (checked
/// before anything is copied or started).
fn check_signature(app: &AppSpec, artifact: &Path, sig: Option<&Path>) -> Result<(), String> {
    if app.trust_keys.is_empty() {
        return Ok(());
    }
    let name = &app.name;
    // A release that `jarfleet install` verified (as a signed bundle) when it entered the host.
    if artifact
        .parent()
        .and_then(Path::parent)
        .is_some_and(|release| release.join(VERIFIED_MARKER).is_file())
    {
        return Ok(());
    }
    let mut store = jarfleet_trust::TrustStore::new();
    for key in &app.trust_keys {
        store
            .add_key_file(key)
            .map_err(|e| format!("trust.keys: {}: {e}", key.display()))?;
    }
    let Some(sig) = sig
        .map(Path::to_path_buf)
        .or_else(|| jarfleet_trust::signature_beside(artifact))
    else {
        return Err(format!(
            "apps.{name}.artifact: {} is not signed ([trust] lists keys, and there is no .minisig, .sig or .asc beside it); sign it with `jarfleet sign {0} --key KEY`",
            artifact.display()
        ));
    };
    store
        .verify_artifact(artifact, &sig)
        .map(|_| ())
        .map_err(|e| format!("apps.{name}.artifact: refused: {e}"))
}

fn sha256_hex(path: &Path) -> std::io::Result<String> {
    let mut d = Sha256::new();
    hash_file(&mut d, path)?;
    Ok(d.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn hash_file(digest: &mut Sha256, path: &std::path::Path) -> std::io::Result<()> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        digest.update(&buf[..n]);
    }
}

/// `jarfleet deploy`: the app's current spec with `artifact` as its jar, prepared like `apply`
/// does, and the jar copied into `releases/APP/RELEASE/` so the release stays runnable (and
/// rollback possible) whatever happens to the original file.
pub fn prepare_release(
    current: &AppSpec,
    artifact: &std::path::Path,
    dirs: &crate::paths::StateDir,
) -> Result<PreparedApp, ErrorBody> {
    let usage = |message: String| ErrorBody {
        kind: ErrorKind::Usage,
        message,
        hint: Some("nothing was changed".into()),
    };
    let mut spec = current.clone();
    spec.launch = Launch::Jar {
        path: artifact.to_path_buf(),
        url: None,
        sha256: None,
    };
    let jdks = jarfleet_java::discover();
    let mut prepared = prepare_app(&spec, &jdks, None)
        .map_err(|e| usage(e.replace(&format!("apps.{}.artifact", current.name), "artifact")))?;
    let dir = dirs.release_dir(&current.name, &prepared.release);
    let file = artifact
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "app.jar".into());
    let dest = dir.join(file);
    if !dest.is_file() {
        let copy = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join(".incoming.jar");
            std::fs::copy(artifact, &tmp)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            // The signature travels with the jar: the release stays verifiable.
            if let Some(sig) = jarfleet_trust::signature_beside(artifact)
                && let (Some(ext), Some(name)) = (sig.extension(), dest.file_name())
            {
                let mut sig_name = name.to_os_string();
                sig_name.push(".");
                sig_name.push(ext);
                std::fs::copy(&sig, dir.join(sig_name))?;
            }
            std::fs::rename(&tmp, &dest)
        };
        copy().map_err(|e| ErrorBody {
            kind: ErrorKind::Failed,
            message: format!("copying {} into {}: {e}", artifact.display(), dir.display()),
            hint: None,
        })?;
    }
    prepared.spec.launch = Launch::Jar {
        path: dest,
        url: None,
        sha256: None,
    };
    materialize_config(&mut prepared, dirs.root()).map_err(usage)?;
    fast_start_layout(&mut prepared, dirs)?;
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use jarfleet_core::spec::AppSpec;

    use super::*;

    /// One app run from a classpath jar in `dir` (no jar inspection, Java 8 and up).
    fn app(dir: &Path, edit: &str) -> AppSpec {
        let text = format!(
            r#"
[apps.web]
main_class = "demo.Main"
classpath = ["{}/lib.jar"]
instances = 2
ports = "9100-9199"
args = ["--port=${{PORT}}"]
env = {{ MODE = "prod" }}
java = {{ opts = ["-Xmx64m"] }}
{edit}
"#,
            dir.display()
        );
        let fleet = jarfleet_core::spec::load(&text, Path::new("/srv/jarfleet.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("test spec does not load: {e:?}"));
        fleet.apps.into_values().next().expect("one app")
    }

    /// A JDK as discovery reports it, at a path of this host (never looked at).
    fn jdk(home: &str, version: &str) -> jarfleet_java::Jdk {
        let home = PathBuf::from(home);
        jarfleet_java::Jdk {
            java: home.join("bin/java"),
            home,
            version: jarfleet_java::parse_java_version(version),
            vendor: "Eclipse Adoptium".into(),
            runtime_version: version.into(),
            is_jdk: true,
            image_type: Some("JDK".into()),
            arch: Some("x86_64".into()),
            sources: Vec::new(),
        }
    }

    fn classpath(bytes: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("lib.jar"), bytes).expect("writing the classpath jar");
        dir
    }

    #[test]
    fn the_same_release_has_the_same_id_on_hosts_with_other_jdk_paths() {
        let dir = classpath(b"the artifact");
        let spec = app(dir.path(), "");
        let host_a = [jdk("/usr/lib/jvm/java-17-openjdk-amd64", "17.0.15")];
        let host_b = [jdk("/opt/java/temurin-17", "17.0.15")];
        let a = prepare_app(&spec, &host_a, None).expect("prepared on host a");
        let b = prepare_app(&spec, &host_b, None).expect("prepared on host b");
        assert_eq!(a.release, b.release);
        assert_eq!(a.release.len(), 12);
        // The JDK is recorded beside the release, not in its id.
        assert_ne!(a.runtime.home, b.runtime.home);
        assert_eq!(
            a.release_record["jdk"]["home"],
            "/usr/lib/jvm/java-17-openjdk-amd64"
        );
        assert_eq!(a.release_record["jdk"]["vendor"], "Eclipse Adoptium");
        assert_eq!(b.release_record["jdk"]["home"], "/opt/java/temurin-17");
        // What an older jarfleet called it depended on the host.
        assert_ne!(a.legacy_release, b.legacy_release);
        // Another JDK version is not another release either.
        let host_c = [jdk("/usr/lib/jvm/temurin-25", "25.0.1")];
        let c = prepare_app(&spec, &host_c, None).expect("prepared on host c");
        assert_eq!(a.release, c.release);
    }

    #[test]
    fn each_released_input_changes_the_id() {
        let dir = classpath(b"the artifact");
        let jdks = [jdk("/usr/lib/jvm/java-17-openjdk-amd64", "17.0.15")];
        let id = |spec: &AppSpec| prepare_app(spec, &jdks, None).expect("prepared").release;
        let base = id(&app(dir.path(), ""));
        let with = |edit: &str| app(dir.path(), edit);
        let mut config = app(dir.path(), "");
        config
            .config_rendered
            .insert("application.yml".into(), "level: debug".into());
        let mut etcd = app(dir.path(), "");
        etcd.etcd_env
            .insert("DB_URL".into(), "postgres://db".into());
        let mut args = app(dir.path(), "");
        args.args.push("--verbose".into());
        let mut env = app(dir.path(), "");
        env.env.insert("MODE".into(), "test".into());
        let mut main = app(dir.path(), "");
        if let Launch::MainClass { main_class, .. } = &mut main.launch {
            *main_class = "demo.Other".into();
        }
        let cases: Vec<(&str, AppSpec)> = vec![
            ("args", args),
            ("env", env),
            ("java options", {
                let mut s = app(dir.path(), "");
                s.java.opts.push("-Xss1m".into());
                s
            }),
            ("workdir", with("workdir = \"/srv/web\"")),
            ("user", with("user = \"root\"")),
            ("config", config),
            ("etcd values", etcd),
            ("main class", main),
        ];
        for (what, spec) in cases {
            assert_ne!(id(&spec), base, "{what} is part of the release");
        }
        // The artifact's bytes, not its path or its JDK.
        std::fs::write(dir.path().join("lib.jar"), b"another artifact").expect("rewrite");
        assert_ne!(id(&app(dir.path(), "")), base, "the artifact's content");
        // Settings that apply live are not part of the release.
        let mut scaled = app(dir.path(), "");
        scaled.instances = 5;
        assert_eq!(id(&scaled), id(&app(dir.path(), "")), "instances");
    }

    #[test]
    fn the_legacy_id_is_what_older_jarfleet_stored() {
        // The id jarfleet gave this release (a wildcard classpath, so no file is read) on this
        // JDK before release ids were independent of the host: a store written then names the
        // release so, and `apply` must recognise it.
        let text = r#"
[apps.web]
main_class = "demo.Main"
classpath = ["/nonexistent-jarfleet-test/*"]
instances = 2
ports = "9100-9199"
env = { MODE = "prod" }
"#;
        let fleet = jarfleet_core::spec::load(text, Path::new("/srv/jarfleet.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("test spec does not load: {e:?}"));
        let spec = fleet.apps.into_values().next().expect("one app");
        let jdks = [jdk("/usr/lib/jvm/java-17-openjdk-amd64", "17.0.15")];
        let p = prepare_app(&spec, &jdks, None).expect("prepared");
        assert_eq!(p.legacy_release.as_deref(), Some("b6faf44b2886"));
        assert_ne!(p.release, "b6faf44b2886");
    }

    #[test]
    fn installed_templates_count_by_content_not_by_where_they_are() {
        let a = tempfile::tempdir().expect("temp dir");
        let b = tempfile::tempdir().expect("temp dir");
        for root in [a.path(), b.path()] {
            std::fs::create_dir_all(root.join("sub")).expect("mkdir");
            std::fs::write(root.join("app.yml"), "port: ${PORT}").expect("write");
            std::fs::write(root.join("sub/log.xml"), "<x/>").expect("write");
        }
        let da = templates_digest(a.path()).expect("digest a");
        assert_eq!(da, templates_digest(b.path()).expect("digest b"));
        std::fs::write(b.path().join("sub/log.xml"), "<y/>").expect("write");
        assert_ne!(da, templates_digest(b.path()).expect("digest b"));
        std::fs::rename(b.path().join("sub/log.xml"), b.path().join("sub/log2.xml"))
            .expect("rename");
        std::fs::write(b.path().join("sub/log2.xml"), "<x/>").expect("write");
        assert_ne!(da, templates_digest(b.path()).expect("digest b"));
    }
}
