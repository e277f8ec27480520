//! From an app spec to the exact command line and environment of one JVM. No shell anywhere.

use std::collections::BTreeMap;
use std::path::PathBuf;

use jarfleet_core::spec::{AppSpec, Launch as LaunchKind};
use serde::{Deserialize, Serialize};

use crate::paths::StateDir;
use jarfleet_shim::protocol::Launch;

/// The JDK an app runs on, chosen at apply time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JavaRuntime {
    pub java: PathBuf,
    pub jcmd: Option<PathBuf>,
    pub home: PathBuf,
    /// e.g. `17.0.15`.
    pub version: String,
    pub feature: u32,
    pub vendor: String,
}

/// Per-instance values for `${PORT}`, `${JARFLEET_SLOT}`, `${JARFLEET_INSTANCE}` and
/// `${JARFLEET_CONFIG_DIR}` (the instance's rendered config directory).
pub fn instance_vars(
    dirs: &StateDir,
    app: &str,
    slot: u32,
    port: u16,
) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("PORT", port.to_string()),
        ("JARFLEET_SLOT", slot.to_string()),
        ("JARFLEET_INSTANCE", format!("{app}/{slot}")),
        (
            "JARFLEET_CONFIG_DIR",
            instance_config_dir(dirs, app, slot).display().to_string(),
        ),
    ])
}

fn resolve(s: &str, vars: &BTreeMap<&'static str, String>) -> String {
    jarfleet_core::interp::resolve_instance(s, vars)
}

/// Where an instance's rendered config goes: never inside a directory the app's user owns
/// (root renders it there).
pub fn instance_config_dir(dirs: &StateDir, app: &str, slot: u32) -> PathBuf {
    dirs.config_dir(app).join(slot.to_string())
}

/// The JVM flags jarfleet adds by default (each can be switched off in `java`).
pub fn default_jvm_flags(
    spec: &AppSpec,
    rt: &JavaRuntime,
    dirs: &StateDir,
    slot: u32,
) -> Vec<String> {
    let mut flags = Vec::new();
    let log_dir = dirs.jvm_log_dir(&spec.name, slot);
    if spec.java.exit_on_oom {
        flags.push("-XX:+ExitOnOutOfMemoryError".to_string());
    }
    if spec.java.heap_dump_on_oom {
        flags.push("-XX:+HeapDumpOnOutOfMemoryError".to_string());
        flags.push(format!(
            "-XX:HeapDumpPath={}",
            dirs.dumps_dir(&spec.name).display()
        ));
    }
    if spec.java.gc_log {
        let gc = log_dir.join("gc.log");
        if rt.feature >= 9 {
            flags.push(format!(
                "-Xlog:gc*:file=\"{}\":time,uptime,level,tags:filecount=5,filesize=10m",
                gc.display()
            ));
        } else {
            flags.push(format!("-Xloggc:{}", gc.display()));
        }
    }
    flags.push(format!(
        "-XX:ErrorFile={}",
        log_dir.join("hs_err_pid%p.log").display()
    ));
    flags
}

pub struct LaunchInput<'a> {
    pub spec: &'a AppSpec,
    pub runtime: &'a JavaRuntime,
    pub release: &'a str,
    pub slot: u32,
    pub port: u16,
    pub dirs: &'a StateDir,
    /// The environment the JVM inherits before the spec's `env` and jarfleet's variables.
    pub base_env: &'a [(String, String)],
    /// The spec's `user`, resolved.
    pub user: Option<&'a UserInfo>,
}

/// A Unix user the JVMs of an app run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Looks up `name`; `Err` says what is wrong and what to do.
pub fn resolve_user(app: &str, name: &str) -> Result<UserInfo, jarfleet_shim::fdlimit::Failure> {
    use jarfleet_shim::fdlimit::{Failure, Op, classify};
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| Failure {
            message: format!("apps.{app}.user: looking up user {name:?}: {e}"),
            // Reading the user database needs a descriptor too.
            shortage: classify(e as i32, Op::File),
        })?
        .ok_or_else(|| Failure::plain(format!("apps.{app}.user: there is no user {name:?} on this host; create it (useradd --system {name}) or fix the spec")))?;
    let me = nix::unistd::geteuid();
    if !me.is_root() && user.uid != me {
        return Err(Failure::plain(format!(
            "apps.{app}.user = {name:?}: the daemon runs as uid {me}, and only root can start processes as another user; run the daemon as root or drop `user`"
        )));
    }
    Ok(UserInfo {
        name: name.to_string(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        home: user.dir,
    })
}

pub fn build(input: &LaunchInput) -> Launch {
    let LaunchInput {
        spec,
        runtime,
        release,
        slot,
        port,
        dirs,
        base_env,
        user,
    } = *input;
    let vars = instance_vars(dirs, &spec.name, slot, port);
    let mut argv = vec![runtime.java.display().to_string()];
    argv.extend(default_jvm_flags(spec, runtime, dirs, slot));
    argv.extend(spec.java.opts.iter().map(|o| resolve(o, &vars)));
    argv.extend(crate::faststart::run_flags(spec, runtime, release, dirs));
    match &spec.launch {
        LaunchKind::Jar { path, .. } => {
            argv.push("-jar".to_string());
            argv.push(path.display().to_string());
        }
        LaunchKind::MainClass {
            main_class,
            classpath,
        } => {
            argv.push("-cp".to_string());
            argv.push(
                classpath
                    .iter()
                    .map(|c| resolve(c, &vars))
                    .collect::<Vec<_>>()
                    .join(":"),
            );
            argv.push(main_class.clone());
        }
    }
    argv.extend(spec.args.iter().map(|a| resolve(a, &vars)));

    let mut env: BTreeMap<String, String> = base_env.iter().cloned().collect();
    for (k, v) in &spec.env {
        env.insert(k.clone(), resolve(v, &vars));
    }
    // The config center's values win over the spec's own.
    for (k, v) in &spec.etcd_env {
        env.insert(k.clone(), v.clone());
    }
    if env.remove(crate::templates::TEMPLATES_ENV).is_some() {
        env.insert(
            crate::templates::CONFIG_DIR_ENV.into(),
            instance_config_dir(dirs, &spec.name, slot)
                .display()
                .to_string(),
        );
    }
    env.insert("PORT".into(), port.to_string());
    env.insert("JARFLEET_APP".into(), spec.name.clone());
    env.insert("JARFLEET_SLOT".into(), slot.to_string());
    env.insert("JARFLEET_INSTANCE".into(), format!("{}/{slot}", spec.name));
    env.insert("JARFLEET_RELEASE".into(), release.to_string());
    env.insert("JAVA_HOME".into(), runtime.home.display().to_string());
    if let Some(u) = user {
        env.insert("USER".into(), u.name.clone());
        env.insert("LOGNAME".into(), u.name.clone());
        env.insert("HOME".into(), u.home.display().to_string());
    }

    let log_dir = dirs.log_dir(&spec.name, slot);
    Launch {
        argv,
        env: env.into_iter().collect(),
        cwd: spec
            .workdir
            .clone()
            .unwrap_or_else(|| dirs.instance_dir(&spec.name, slot)),
        stdout_log: log_dir.join("stdout.log"),
        stderr_log: log_dir.join("stderr.log"),
        log_max_size: spec.logs.max_size,
        log_keep: spec.logs.keep,
        hs_err_dir: dirs.jvm_log_dir(&spec.name, slot),
        jcmd: runtime.jcmd.clone(),
        dump_dir: dirs.dumps_dir(&spec.name),
        run_as: user.map(|u| jarfleet_shim::protocol::RunAs {
            uid: u.uid,
            gid: u.gid,
        }),
    }
}
