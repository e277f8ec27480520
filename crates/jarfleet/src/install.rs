//! `jarfleet install [BUNDLE]`: verify a bundle (its signature against the trusted keys, then
//! every file against its manifest) before anything is written, then install it as one
//! transaction (`jarfleet_host::install_txn`): extract into a staging dir, render its config
//! templates, run its `pre_install` hook, activate the release dir, write the spec (and, from a
//! self-contained installer, the jarfleet binary), run `post_install`, then start the app or
//! roll it out to the running daemon. Any failure, or a crash at any point, leaves the previous
//! release serving and the files as they were.
//!
//! Layout under `--prefix`: `jarfleet.toml` (the spec: written at the first install, then the
//! user's; an upgrade changes only the app's `artifact` and `java.home`), `state/` (the state
//! dir), `releases/NAME/VERSION-DIGEST/` (one immutable dir per release), `bin/jarfleet` (from
//! a self-contained installer).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jarfleet_bundle::{Bundle, Hook, Manifest, embed, template};
use jarfleet_host::install_txn::{Journal, Undo};

use crate::context::{self, CliError};

use jarfleet_host::prepare::VERIFIED_MARKER;
// Per-instance values: left as `${NAME}` in the rendered config, resolved when an instance
// starts.
use jarfleet_core::spec::INSTANCE_VARS;
const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

pub struct InstallArgs {
    pub bundle: Option<PathBuf>,
    pub prefix: PathBuf,
    pub dry_run: bool,
    pub trust: Vec<PathBuf>,
    pub signature: Option<PathBuf>,
    pub start: bool,
}

/// Where the bundle comes from: a `.jfb` file, or the end of this very binary.
enum Source {
    File(PathBuf),
    Embedded { exe: PathBuf, offset: u64 },
}

impl Source {
    fn find(bundle: Option<&Path>) -> Result<Source, CliError> {
        if let Some(b) = bundle {
            return Ok(Source::File(context::absolute(b)));
        }
        let exe = std::env::current_exe()
            .map_err(|e| CliError::failed(format!("cannot find this binary: {e}")))?;
        match embed::find_embedded(&exe).map_err(|e| CliError::failed(e.to_string()))? {
            Some((offset, _)) => Ok(Source::Embedded { exe, offset }),
            None => Err(CliError::usage(
                "no bundle given",
                Some(
                    "jarfleet install NAME-VERSION.jfb --prefix DIR (or run a self-contained installer)",
                ),
            )),
        }
    }

    /// The file a signature covers.
    fn signed_file(&self) -> &Path {
        match self {
            Source::File(p) => p,
            Source::Embedded { exe, .. } => exe,
        }
    }

    fn open(&self) -> Result<Box<dyn Read>, CliError> {
        match self {
            Source::File(p) => std::fs::File::open(p)
                .map(|f| Box::new(std::io::BufReader::new(f)) as Box<dyn Read>)
                .map_err(|e| CliError::usage(format!("reading {}: {e}", p.display()), None)),
            Source::Embedded { exe, .. } => match embed::open_embedded(exe) {
                Ok(Some(r)) => Ok(Box::new(std::io::BufReader::new(r))),
                Ok(None) => Err(CliError::failed("the embedded bundle disappeared")),
                Err(e) => Err(CliError::failed(e.to_string())),
            },
        }
    }
}

/// The trusted keys: `--trust` and the installed spec's `[trust]`.
fn trusted_keys(args: &InstallArgs, spec_path: &Path) -> Result<Vec<PathBuf>, CliError> {
    let mut keys: Vec<PathBuf> = args.trust.iter().map(|k| context::absolute(k)).collect();
    if spec_path.is_file() {
        let spec = context::load_spec(Some(spec_path))?;
        keys.extend(spec.trust.keys);
    }
    Ok(keys)
}

/// Checks the signature before anything is read further; `Ok(None)` when no key is trusted.
fn check_signature(
    source: &Source,
    sig: Option<&Path>,
    keys: &[PathBuf],
) -> Result<Option<String>, CliError> {
    let file = source.signed_file();
    let sig = sig
        .map(Path::to_path_buf)
        .or_else(|| jarfleet_trust::signature_beside(file));
    if keys.is_empty() {
        if sig.is_some() {
            eprintln!(
                "warning: {} has a signature, but no key is trusted (pass --trust KEY): not checked",
                file.display()
            );
        }
        return Ok(None);
    }
    let Some(sig) = sig else {
        return Err(CliError::failed(format!(
            "refused: {} is not signed (no .minisig, .sig or .asc beside it), and keys are trusted; nothing was written",
            file.display()
        )));
    };
    let store = crate::sign::trust_store(keys)?;
    let signer = store
        .verify_artifact(file, &sig)
        .map_err(|e| CliError::failed(format!("refused: {e}; nothing was written")))?;
    Ok(Some(signer.to_string()))
}

struct Verified {
    manifest: Manifest,
    digest: String,
}

fn verify_bundle(source: &Source) -> Result<Verified, CliError> {
    let refused = |e: jarfleet_bundle::Error| {
        CliError::failed(format!(
            "refused: {}: {e}; nothing was written",
            source.signed_file().display()
        ))
    };
    let bundle = Bundle::open(source.open()?).map_err(refused)?;
    let manifest = bundle.manifest().clone();
    let digest = bundle.digest();
    bundle.verify_payload().map_err(refused)?;
    Ok(Verified { manifest, digest })
}

fn jar_name(m: &Manifest) -> Result<String, CliError> {
    m.files
        .iter()
        .filter_map(|f| f.path.strip_prefix("app/"))
        .find(|p| p.ends_with(".jar") && !p.contains('/'))
        .map(str::to_string)
        .ok_or_else(|| CliError::failed("the bundle holds no app/*.jar"))
}

pub async fn run(args: InstallArgs) -> Result<(), CliError> {
    let source = Source::find(args.bundle.as_deref())?;
    let prefix = context::absolute(&args.prefix);
    let spec_path = prefix.join("jarfleet.toml");
    let state = prefix.join("state");

    // An installer killed earlier: its transaction is undone first.
    for line in jarfleet_host::install_txn::recover(&state)? {
        eprintln!("{line}");
    }

    let keys = trusted_keys(&args, &spec_path)?;
    let signer = check_signature(&source, args.signature.as_deref(), &keys)?;
    let v = verify_bundle(&source)?;
    let name = v.manifest.name.clone();
    // The bundle's name becomes the app's name in the spec: refused here, before anything is
    // written (and by a dry run alike), not by the spec check after the release is in place.
    jarfleet_core::spec::app_name(&name).map_err(|msg| {
        CliError::usage(
            format!(
                "refused: {}: the bundle's name cannot be an app name: {msg}; nothing was written",
                source.signed_file().display()
            ),
            Some("pack it again with --name of 1-40 characters: a-z, 0-9, `-` and `_`, starting with a letter or digit"),
        )
    })?;
    let version = v.manifest.version.clone();
    let jar = jar_name(&v.manifest)?;
    let short = &v.digest[..12.min(v.digest.len())];
    let release_rel = PathBuf::from("releases")
        .join(&name)
        .join(format!("{version}-{short}"));
    let release_dir = prefix.join(&release_rel);
    let upgrade = spec_path.is_file();
    let already = release_dir.join(VERIFIED_MARKER).is_file();
    println!(
        "{name} {version}: bundle verified (digest {}){}",
        v.digest,
        signer
            .as_deref()
            .map(|s| format!(", signed by {s}"))
            .unwrap_or_default()
    );
    let txid = format!(
        "{}-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
        std::process::id()
    );
    let ctx = Ctx {
        source: &source,
        prefix: &prefix,
        spec_path: &spec_path,
        state: &state,
        manifest: &v.manifest,
        digest: &v.digest,
        signer: signer.as_deref(),
        release_dir: &release_dir,
        release_rel: &release_rel,
        jar: &jar,
        txid: &txid,
        upgrade,
        already,
        start: args.start,
    };
    if args.dry_run {
        // The spec the install would write, checked as the install checks it (in memory: the
        // release it names is not there).
        let text = if upgrade {
            let old = std::fs::read_to_string(&spec_path)
                .map_err(io_err(format!("reading {}", spec_path.display())))?;
            upgraded_spec(&old, &ctx)?
        } else {
            first_spec(&ctx)?
        };
        let env = |k: &str| std::env::var(k).ok();
        jarfleet_core::spec::load(&text, &spec_path, &env).map_err(|errors| {
            CliError::usage(
                format!("the spec this install would write does not load:\n{errors}"),
                Some("fix the bundle's app spec (pack --app-spec) or the spec in the prefix"),
            )
        })?;
        println!(
            "would {} {} into {}{}; {} {}",
            if already { "reuse" } else { "install" },
            release_rel.display(),
            prefix.display(),
            if v.manifest.jre.is_some() {
                " (with its bundled JRE)"
            } else {
                ""
            },
            if upgrade { "update" } else { "write" },
            spec_path.display()
        );
        println!("dry run: nothing was changed");
        return Ok(());
    }

    std::fs::create_dir_all(&state)
        .map_err(|e| CliError::failed(format!("creating {}: {e}", state.display())))?;
    let mut journal = Journal::begin(&state, &txid)?;
    match transaction(&ctx, &mut journal).await {
        Ok(done) => {
            journal.commit()?;
            println!("{done}");
            Ok(())
        }
        Err(e) => {
            let rolled = journal.rollback();
            let mut e = e;
            e.message = match rolled {
                Ok(()) => format!("{}; rolled back: nothing changed", e.message),
                Err(r) => format!("{}; and rolling back failed: {r:#}", e.message),
            };
            Err(e)
        }
    }
}

struct Ctx<'a> {
    source: &'a Source,
    prefix: &'a Path,
    spec_path: &'a Path,
    state: &'a Path,
    manifest: &'a Manifest,
    digest: &'a str,
    signer: Option<&'a str>,
    release_dir: &'a Path,
    release_rel: &'a Path,
    jar: &'a str,
    txid: &'a str,
    upgrade: bool,
    already: bool,
    start: bool,
}

/// Test-only fault injection, compiled into debug builds only: `JARFLEET_FAULT_AT=STEP` kills
/// the installer with SIGKILL right after STEP's undo is journaled and before it acts;
/// `JARFLEET_FAULT_AT=STEP:enospc` makes STEP fail with "No space left on device" instead.
fn fault(step: &str) -> Result<(), CliError> {
    #[cfg(debug_assertions)]
    if let Ok(spec) = std::env::var("JARFLEET_FAULT_AT") {
        let (at, kind) = spec.split_once(':').unwrap_or((spec.as_str(), "kill"));
        if at == step {
            if kind == "enospc" {
                let e = std::io::Error::from_raw_os_error(libc::ENOSPC);
                return Err(CliError::failed(format!("{step}: {e}")));
            }
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _ = step;
    Ok(())
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> CliError {
    move |e| CliError::failed(format!("{what}: {e}"))
}

async fn transaction(c: &Ctx<'_>, j: &mut Journal) -> Result<String, CliError> {
    let name = &c.manifest.name;
    if !c.already {
        // extract
        let parent = c.release_dir.parent().unwrap_or(c.prefix);
        std::fs::create_dir_all(parent)
            .map_err(io_err(format!("creating {}", parent.display())))?;
        let staging = parent.join(format!(".staging-{}", c.txid));
        j.will(
            "extract",
            Undo::RemoveDir {
                path: staging.clone(),
            },
        )?;
        fault("extract")?;
        let bundle = Bundle::open(c.source.open()?)
            .map_err(|e| CliError::failed(format!("extracting: {e}")))?;
        bundle
            .extract_to(&staging)
            .map_err(|e| CliError::failed(format!("extracting: {e}")))?;
        // render
        render_config(c, &staging)?;
        // pre_install hook
        if let Some(hook) = &c.manifest.hooks.pre_install {
            run_hook(j, "pre_install", hook, &staging, c).await?;
        }
        // activate
        j.will(
            "activate",
            Undo::RemoveDir {
                path: c.release_dir.to_path_buf(),
            },
        )?;
        fault("activate")?;
        std::fs::rename(&staging, c.release_dir)
            .map_err(io_err(format!("activating {}", c.release_dir.display())))?;
        let marker = format!(
            "digest = {:?}\nsigner = {:?}\n",
            c.digest,
            c.signer.unwrap_or("(no trusted key configured)")
        );
        std::fs::write(c.release_dir.join(VERIFIED_MARKER), marker)
            .map_err(io_err("writing the release marker".into()))?;
    }
    // the jarfleet binary, from a self-contained installer
    let bin = match c.source {
        Source::Embedded { exe, offset } => Some(install_binary(j, exe, *offset, c.prefix)?),
        Source::File(_) => None,
    };
    // spec
    let backup = j.backup_path("spec");
    let had_spec = c.spec_path.is_file();
    if had_spec {
        std::fs::copy(c.spec_path, &backup).map_err(io_err("backing up the spec".into()))?;
    }
    j.will(
        "spec",
        Undo::RestoreFile {
            path: c.spec_path.to_path_buf(),
            backup: had_spec.then_some(backup),
        },
    )?;
    fault("spec")?;
    let text = if c.upgrade {
        let old = std::fs::read_to_string(c.spec_path)
            .map_err(io_err(format!("reading {}", c.spec_path.display())))?;
        upgraded_spec(&old, c)?
    } else {
        first_spec(c)?
    };
    write_atomically(c.spec_path, &text)?;
    // the spec must load as it will be used
    context::load_spec(Some(c.spec_path))?;
    // post_install hook
    if let Some(hook) = &c.manifest.hooks.post_install {
        run_hook(j, "post_install", hook, c.release_dir, c).await?;
    }
    // start or roll out
    let exe = match &bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .map_err(|e| CliError::failed(format!("cannot find this binary: {e}")))?,
    };
    let state_arg = c.state.display().to_string();
    let spec_arg = c.spec_path.display().to_string();
    let client = jarfleet_api::Client::for_state_dir(c.state);
    let running = client
        .get::<jarfleet_api::VersionInfo>("/v1/version")
        .await
        .is_ok();
    fault("start")?;
    if running && c.upgrade {
        let jar = c.release_dir.join("app").join(c.jar);
        let jar = jar.display().to_string();
        run_step(
            &exe,
            &[
                "--state-dir",
                &state_arg,
                "deploy",
                name,
                &jar,
                "--version",
                &c.manifest.version,
                "--wait",
            ],
            "rolling out the new release",
        )
        .await?;
        return Ok(format!(
            "{name} {} installed in {} and rolled out",
            c.manifest.version,
            c.prefix.display()
        ));
    }
    if running {
        run_step(
            &exe,
            &["--state-dir", &state_arg, "apply", &spec_arg],
            "applying the spec",
        )
        .await?;
    } else if c.start {
        let up = ["--state-dir", &state_arg, "up", "-d", "--wait", &spec_arg];
        if let Err(e) = run_step(&exe, &up, "starting").await {
            // A daemon we started for this install goes with it.
            let _ = run_step(&exe, &["--state-dir", &state_arg, "down"], "stopping").await;
            return Err(e);
        }
    }
    Ok(format!(
        "{name} {} installed in {}{}",
        c.manifest.version,
        c.prefix.display(),
        if c.start || running {
            " and running"
        } else {
            ""
        }
    ))
}

/// Runs this jarfleet binary for one step, its output passed through.
async fn run_step(exe: &Path, args: &[&str], what: &str) -> Result<(), CliError> {
    let status = tokio::process::Command::new(exe)
        .args(args)
        // The install's own state dir is passed explicitly, never inherited.
        .env_remove("JARFLEET_STATE")
        .stdin(Stdio::null())
        .status()
        .await
        .map_err(|e| CliError::failed(format!("{what}: running {}: {e}", exe.display())))?;
    if status.success() {
        Ok(())
    } else {
        Err(CliError::failed(format!("{what} failed ({status})")))
    }
}

/// Copies this binary without the bundle at its end to `PREFIX/bin/jarfleet`.
fn install_binary(
    j: &mut Journal,
    exe: &Path,
    offset: u64,
    prefix: &Path,
) -> Result<PathBuf, CliError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = prefix.join("bin");
    std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let bin = dir.join("jarfleet");
    let backup = j.backup_path("jarfleet");
    let had = bin.is_file();
    if had {
        std::fs::copy(&bin, &backup).map_err(io_err("backing up bin/jarfleet".into()))?;
    }
    j.will(
        "binary",
        Undo::RestoreFile {
            path: bin.clone(),
            backup: had.then_some(backup),
        },
    )?;
    fault("binary")?;
    let tmp = dir.join(".jarfleet.incoming");
    let copy = || -> std::io::Result<()> {
        let mut from = std::fs::File::open(exe)?.take(offset);
        let mut to = std::fs::File::create(&tmp)?;
        std::io::copy(&mut from, &mut to)?;
        to.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        to.sync_all()?;
        std::fs::rename(&tmp, &bin)
    };
    copy().map_err(io_err(format!("writing {}", bin.display())))?;
    Ok(bin)
}

/// The values templates may use: the environment, the bundle's name and version, and the
/// per-instance ones left for instance start.
fn lookup(c: &Ctx<'_>) -> impl Fn(&str) -> Option<String> {
    let name = c.manifest.name.clone();
    let version = c.manifest.version.clone();
    let release = c.release_dir.display().to_string();
    move |var: &str| match var {
        "JARFLEET_APP" => Some(name.clone()),
        "JARFLEET_VERSION" => Some(version.clone()),
        "JARFLEET_RELEASE_DIR" => Some(release.clone()),
        v if INSTANCE_VARS.contains(&v) => Some(format!("${{{v}}}")),
        v => std::env::var(v).ok(),
    }
}

/// `config/` templates rendered into `etc/` (part of the release: rollback restores them).
fn render_config(c: &Ctx<'_>, staging: &Path) -> Result<(), CliError> {
    let src = staging.join("config");
    if !src.is_dir() {
        return Ok(());
    }
    let look = lookup(c);
    template::render_dir(&src, &staging.join("etc"), &look)
        .map(|_| ())
        .map_err(|e| CliError::failed(format!("rendering the config templates: {e}")))
}

/// The user the app runs as — the `user` of its app table in the spec being installed over,
/// else the bundle's default spec — as whom its hooks run too. Only root can switch users;
/// another installer runs hooks as itself.
fn hook_user(c: &Ctx<'_>) -> Result<Option<jarfleet_shim::protocol::RunAs>, CliError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let from_spec = std::fs::read_to_string(c.spec_path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|spec| {
            spec.get("apps")?
                .get(&c.manifest.name)?
                .get("user")?
                .as_str()
                .map(str::to_string)
        });
    let name = match from_spec {
        Some(name) => name,
        None => match c.manifest.app.get("user").and_then(|u| u.as_str()) {
            Some(name) => name.to_string(),
            None => return Ok(None),
        },
    };
    let user = nix::unistd::User::from_name(&name)
        .map_err(|e| CliError::failed(format!("looking up user {name:?} for the hooks: {e}")))?
        .ok_or_else(|| {
            CliError::failed(format!(
                "the app runs as user {name:?}, and so do its hooks, but there is no such user on this host; create it (useradd --system {name}) or fix `user`"
            ))
        })?;
    Ok(Some(jarfleet_shim::protocol::RunAs {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }))
}

async fn run_hook(
    j: &mut Journal,
    which: &str,
    hook: &Hook,
    root: &Path,
    c: &Ctx<'_>,
) -> Result<(), CliError> {
    let Some(program) = hook.argv.first() else {
        return Ok(());
    };
    let program = root.join(program);
    // A hook is the app's code: it runs as the app's user (when the installer can switch), and
    // never gains privileges (`PR_SET_NO_NEW_PRIVS`), like the app's JVMs.
    let run_as = hook_user(c)?;
    let mut cmd =
        tokio::process::Command::from(jarfleet_shim::spawn::child_command(&program, run_as));
    cmd.args(&hook.argv[1..])
        .current_dir(root)
        .env("JARFLEET_APP", &c.manifest.name)
        .env("JARFLEET_VERSION", &c.manifest.version)
        .env("JARFLEET_RELEASE_DIR", root)
        .env("JARFLEET_PREFIX", c.prefix)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(io_err(format!(
        "{which} hook: starting {}",
        program.display()
    )))?;
    let pgid = child.id().map_or(0, |p| p as i32);
    j.will(
        which,
        Undo::KillGroup {
            pgid,
            program: program.clone(),
        },
    )?;
    fault(which)?;
    let timeout = hook.timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT);
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(io_err(format!("{which} hook")))?,
        Err(_) => {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(CliError::failed(format!(
                "{which} hook {} did not finish within {}",
                program.display(),
                jarfleet_bundle::manifest::format_duration(timeout)
            )));
        }
    };
    // Whatever the hook left running in its group goes with it.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
    if !output.status.success() {
        let text = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(CliError::failed(format!(
            "{which} hook {} failed ({}){}",
            program.display(),
            output.status,
            if tail.is_empty() {
                String::new()
            } else {
                format!(":\n  {}", tail.join("\n  "))
            }
        )));
    }
    Ok(())
}

fn rel(p: &Path) -> String {
    p.display().to_string()
}

/// The spec of a first install: the bundle's default app spec, with the release's jar and,
/// when bundled, its JRE.
fn first_spec(c: &Ctx<'_>) -> Result<String, CliError> {
    let name = &c.manifest.name;
    let mut app = c.manifest.app.clone();
    app.insert(
        "artifact".into(),
        toml::Value::String(rel(&c.release_rel.join("app").join(c.jar))),
    );
    if let Some(jre) = &c.manifest.jre {
        let java = app
            .entry("java")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = java {
            t.insert(
                "home".into(),
                toml::Value::String(rel(&c.release_rel.join(jre))),
            );
        }
    }
    let mut apps = toml::Table::new();
    apps.insert(name.clone(), toml::Value::Table(app));
    let mut daemon = toml::Table::new();
    daemon.insert("state_dir".into(), toml::Value::String("state".into()));
    let mut root = toml::Table::new();
    root.insert("daemon".into(), toml::Value::Table(daemon));
    root.insert("apps".into(), toml::Value::Table(apps));
    let body =
        toml::to_string(&root).map_err(|e| CliError::failed(format!("writing the spec: {e}")))?;
    Ok(format!(
        "# Written by `jarfleet install` from {name} {} (bundle digest {}).\n\
         # It is yours to edit: later installs change only apps.{name}.artifact and java.home.\n\n{body}",
        c.manifest.version, c.digest
    ))
}

/// The user's spec with only `artifact` (and `java.home` for a bundled JRE) moved to the new
/// release; formatting and comments kept.
fn upgraded_spec(old: &str, c: &Ctx<'_>) -> Result<String, CliError> {
    let name = &c.manifest.name;
    let mut doc: toml_edit::DocumentMut = old
        .parse()
        .map_err(|e| CliError::failed(format!("{}: {e}", c.spec_path.display())))?;
    let Some(app) = doc
        .get_mut("apps")
        .and_then(|a| a.get_mut(name.as_str()))
        .and_then(|a| a.as_table_like_mut())
    else {
        return Err(CliError::usage(
            format!(
                "{} has no [apps.{name}]: this prefix holds another app",
                c.spec_path.display()
            ),
            Some("install into its own --prefix"),
        ));
    };
    app.insert(
        "artifact",
        toml_edit::value(rel(&c.release_rel.join("app").join(c.jar))),
    );
    if let Some(jre) = &c.manifest.jre {
        let home = rel(&c.release_rel.join(jre));
        match app.get_mut("java").and_then(|j| j.as_table_like_mut()) {
            Some(java) => {
                java.insert("home", toml_edit::value(home));
            }
            None => {
                let mut t = toml_edit::InlineTable::new();
                t.insert("home", home.into());
                app.insert("java", toml_edit::value(t));
            }
        }
    }
    Ok(doc.to_string())
}

fn write_atomically(path: &Path, text: &str) -> Result<(), CliError> {
    let tmp = path.with_extension("toml.incoming");
    let write = || -> std::io::Result<()> {
        std::fs::write(&tmp, text)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(io_err(format!("writing {}", path.display())))
}
