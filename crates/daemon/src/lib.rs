//! The jarfleet daemon: the imperative shell around `jarfleet_core`.
//!
//! [`run`] is a library function, so tests and `jarfleet up` start the daemon in-process.
//!
//! The CLI uses this crate only to run the daemon ([`run`], [`DaemonConfig`], [`Stop`]) and
//! through the small façade below (the daemon's log writer, what `doctor` reads, the TCP API
//! settings checked before an apply). Everything else it needs is in `jarfleet-host` and
//! `jarfleet-shim`; `crates/testkit/tests/crate_rules.rs` holds it to that.

pub mod clock;
pub mod cluster_artifacts;
pub mod cluster_link;
pub mod control;
pub mod daemonlog;
pub mod etcd_watch;
pub mod http;
pub mod metrics;
pub mod persist;
pub mod probe;
pub mod reload;
pub mod sd_notify;
pub mod shim_client;
pub mod store;
pub mod storecheck;
pub mod upgrade;

use std::future::Future;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::control::{ApiRequest, Control, Event};
use jarfleet_host::paths::StateDir;
use jarfleet_host::{faststart, install_txn, paths};
use jarfleet_shim::{fdlimit, privfs};

// The façade: what the CLI may use beyond `run`, `DaemonConfig` and `Stop`.

/// The daemon's own log writer (`jarfleet daemon`, `jarfleet up`).
pub use daemonlog::DaemonLog;
/// A token file read as the daemon reads it (clients' copies of the API token).
pub use http::auth::{TokenFileError, read_secret};
/// The TCP API settings read and checked before an apply (`jarfleet apply`).
pub use http::load as load_api_settings;
/// Free space on a file system (`doctor`).
pub use persist::free_bytes;
/// The store looked at read-only (`doctor`).
pub use storecheck::{Inspection, inspect as inspect_store};

pub struct DaemonConfig {
    pub state_dir: PathBuf,
    /// The `jarfleet` binary, started as `jarfleet shim` for every instance.
    pub exe: PathBuf,
    /// A spec to apply at start when the store holds no fleet (`jarfleet daemon --spec`).
    pub spec: Option<PathBuf>,
    /// Start with a new, empty store when the one there holds no fleet while shims run, or
    /// cannot be read (`--new-store`): it is moved aside, the shims are left running as strays.
    pub new_store: bool,
    /// The arguments a new binary is started with in this daemon's place (`jarfleet upgrade`),
    /// or why this daemon cannot be replaced in place.
    pub reexec: Result<Vec<std::ffi::OsString>, String>,
}

/// Why the daemon should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Leave every JVM running under its shim (daemon restart or upgrade).
    DaemonOnly,
    /// Stop every instance gracefully first (`down`, Ctrl-C on `up`).
    Everything,
}

/// Runs the daemon until `stop` resolves or a client asks it to shut down.
pub async fn run(
    config: DaemonConfig,
    stop: impl Future<Output = Stop> + Send + 'static,
) -> Result<()> {
    // Before anything opens a descriptor or binds a listener: the soft open-file limit up to
    // the hard one, and the load balancer's share of it (`fdlimit`).
    // Children an earlier program in this process left (an upgrade `exec`s in place).
    upgrade::reap_inherited();
    let limits = fdlimit::raise();
    jarfleet_proxy::set_connection_budget(usize::try_from(limits.budget).unwrap_or(usize::MAX));
    let dirs = StateDir::new(&config.state_dir);
    make_private(&dirs)?;
    let _lock = lock(&dirs)?;
    for line in install_txn::recover(dirs.root())? {
        tracing::warn!("{line}");
    }
    // A store that lost the fleet's records while shims run is refused here, before anything
    // could take the shims for strays (`storecheck`). A start on a full disk: the store is
    // opened for this daemon alone, and normally again once there is room (`persist`).
    let (store, shims, degraded) = storecheck::open(&dirs, config.new_store).await?;
    let daemon_settings = store.daemon_settings()?;
    if let Some(d) = &daemon_settings {
        daemonlog::set_rotation(d.log_max_size, d.log_keep);
    }
    let (tx, rx) = mpsc::channel::<Event>(1024);
    let (events, _) = broadcast::channel(1024);
    let remote = Arc::new(http::RemoteApi::new());
    let upgrade = Arc::new(upgrade::Upgrade::new(config.reexec.clone()));
    let cluster = cluster_link::ClusterLink::new();
    let app = http::routes::router(http::routes::ApiState {
        tx: tx.clone(),
        events: events.clone(),
        dirs: dirs.clone(),
        remote: remote.clone(),
        upgrade: upgrade.clone(),
        cluster: cluster.clone(),
    });
    remote.set_api(app.clone(), tx.clone());
    // The TCP API of the last applied spec: a token file that became readable by others, or a
    // certificate gone, stops the daemon here, before it adopts anything.
    if let Some(daemon) = &daemon_settings {
        let change = remote.begin().await;
        let staged = change.stage(daemon).await.map_err(|e| {
            let hint = e.hint.map(|h| format!("\n  hint: {h}")).unwrap_or_default();
            anyhow::anyhow!("{}{hint}", e.message)
        })?;
        if let Some(news) = change.commit(staged).await {
            let _ = tx.send(crate::control::Notice::from(news).into()).await;
        }
    }
    // The load balancer runs in its own process, which outlives this daemon; one an earlier
    // daemon left running is taken back here, sockets and all.
    let data_plane =
        crate::control::data_plane::OwnProcess::attach(&config.exe, &dirs.data_plane(), tx.clone())
            .context("taking back the load balancer's data plane")?;
    let mut control = Control::with_world(
        dirs.clone(),
        store,
        tx.clone(),
        events.clone(),
        config.exe.clone(),
        degraded,
        crate::control::World::real(Arc::new(data_plane)),
    )?;
    control.spawn_generations_above(shims.max_generation);
    control.adopt().await?;

    let socket = dirs.socket();
    if socket.as_os_str().len() > paths::MAX_SOCKET_PATH {
        anyhow::bail!(
            "state dir path too long for a unix socket ({}); use a shorter state_dir",
            socket.display()
        );
    }
    let listener = bind_private(&socket)?;

    let loop_done = tokio::spawn(control.run(rx));
    let reloader = tokio::spawn(reload::on_sighup(
        tx.clone(),
        dirs.clone(),
        remote.clone(),
        cluster.clone(),
    ));
    let (server_stop_tx, server_stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop_rx.await;
            })
            .await
    });
    tracing::info!(socket = %socket.display(), "daemon listening");

    let stop_tx = tx.clone();
    let (start_failed, start_failed_rx) = oneshot::channel::<()>();
    let stopper = tokio::spawn(async move {
        let how = tokio::select! {
            how = stop => how,
            // A start that failed stops the daemon at once (nothing was started).
            Ok(()) = start_failed_rx => Stop::DaemonOnly,
        };
        let (reply, rx) = oneshot::channel();
        let _ = stop_tx
            .send(
                ApiRequest::Shutdown {
                    stop_instances: how == Stop::Everything,
                    reply,
                }
                .into(),
            )
            .await;
        let _ = rx.await;
    });
    let started = starting(&tx, &dirs, &remote, &cluster, config.spec.as_deref()).await;
    let notifier = match &started {
        Ok(done) => {
            tracing::info!("{done}");
            sd_notify::enabled().then(|| {
                sd_notify::ready(done);
                tokio::spawn(sd_notify::supervise(tx.clone(), events.subscribe()))
            })
        }
        Err(_) => {
            let _ = start_failed.send(());
            None
        }
    };
    drop(tx);
    let _ = loop_done.await;
    stopper.abort();
    reloader.abort();
    if let Some(n) = notifier {
        n.abort();
        sd_notify::stopping("daemon stopped");
    }
    // A class data archive being trained goes with the daemon (it is trained again later).
    faststart::kill_stray_trainings(&dirs);
    // Let in-flight replies (the shutdown ack) reach their clients, on both listeners.
    let _ = server_stop_tx.send(());
    let unix = tokio::time::timeout(std::time::Duration::from_secs(2), server);
    let _ = tokio::join!(unix, remote.stop());
    let _ = std::fs::remove_file(&socket);
    started?;
    if let Some(binary) = upgrade.decided() {
        tracing::info!("becoming {}", binary.display());
        drop(_lock);
        return Err(upgrade.exec(&binary));
    }
    Ok(())
}

/// After the API is up: the spec applied if the store holds no fleet (`--spec`), and the API
/// seen answering (so `READY=1` means a client gets answers). Returns what was done.
async fn starting(
    tx: &mpsc::Sender<Event>,
    dirs: &StateDir,
    remote: &Arc<http::RemoteApi>,
    cluster: &cluster_link::ClusterLink,
    spec: Option<&std::path::Path>,
) -> Result<String> {
    let client = jarfleet_api::Client::for_state_dir(dirs.root());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Err(e) = client.get::<jarfleet_api::VersionInfo>("/v1/version").await {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the API on {} does not answer: {e}", client.target());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // A node of a cluster rejoins it (renewing its lease if it still lives) before anything
    // else: until the cluster is read, what the store holds runs on as it was.
    cluster.rejoin(tx, dirs).await?;
    let done = match spec {
        Some(path) => reload::apply_at_start(tx, dirs, remote, cluster, path).await?,
        None => "no spec given: carrying on with the stored fleet".to_string(),
    };
    Ok(format!("serving on {}; {done}", client.target()))
}

/// The state dir is private (0700; 0711 once an app runs as its own user, so its JVM can reach
/// the directories handed to it, listing nothing; 0755 from an older jarfleet becomes 0711), and
/// so is everything in it that holds
/// secrets: the store (the apps' resolved environments and config-center values) and
/// `daemon.log` are 0600. A state dir made by an older jarfleet (0755, a 0644 store) is
/// tightened here, and the daemon says so.
fn make_private(dirs: &StateDir) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let root = dirs.root();
    if !root.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .with_context(|| format!("creating state dir {}", root.display()))?;
    }
    // Group and others keep at most the search bit: JVMs of apps that run as their own user
    // (re-adopted by this daemon) reach their directories through it, and listing nothing.
    // A state dir that never had a confined app stays 0700.
    let mut notes = Vec::new();
    notes.extend(
        privfs::tighten_path(root, 0o711)
            .with_context(|| format!("making state dir {} private", root.display()))?,
    );
    let db = dirs.db();
    for path in [
        db.clone(),
        db.with_extension("db-wal"),
        db.with_extension("db-shm"),
        dirs.daemon_log(),
    ] {
        notes.extend(
            privfs::tighten_path(&path, privfs::PRIVATE_FILE_MODE).with_context(|| {
                format!("making {} private (chmod 600 it by hand)", path.display())
            })?,
        );
    }
    for note in notes {
        tracing::warn!("{note}: it may hold secrets, and was readable by others");
    }
    Ok(())
}

/// Binds the API socket so that it is never reachable with other permissions than 0600: bound
/// inside a fresh 0700 directory, restricted, then renamed into place.
fn bind_private(socket: &std::path::Path) -> Result<tokio::net::UnixListener> {
    let parent = socket.parent().unwrap_or(std::path::Path::new("."));
    let staging = parent.join(format!(".sock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))?;
    let staged = staging.join("s");
    let listener = tokio::net::UnixListener::bind(&staged)
        .with_context(|| format!("binding {}", staged.display()))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
    let _ = std::fs::remove_file(socket);
    std::fs::rename(&staged, socket).with_context(|| format!("placing {}", socket.display()))?;
    let _ = std::fs::remove_dir(&staging);
    Ok(listener)
}

/// How long a starting daemon waits for the state dir's lock: a daemon killed a moment ago can
/// leave it held for a few milliseconds by a child it was starting (forked, not yet exec'd).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// One daemon per state dir: an exclusive `flock` held for the daemon's life.
fn lock(dirs: &StateDir) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let path = dirs.lock();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let until = std::time::Instant::now() + LOCK_WAIT;
    let taken = loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(locked) => break Ok(locked),
            Err((back, _)) if std::time::Instant::now() < until => {
                file = back;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err((back, e)) => break Err((back, e)),
        }
    };
    match taken {
        Ok(mut locked) => {
            let _ = locked.set_len(0);
            let _ = writeln!(locked, "{}", std::process::id());
            Ok(locked)
        }
        Err((_, _)) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "another jarfleet daemon (pid {}) already runs for state dir {}; use `jarfleet apply` to change it or `jarfleet down` to stop it",
                pid.trim(),
                dirs.root().display()
            )
        }
    }
}
