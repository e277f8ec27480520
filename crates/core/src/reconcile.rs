//! Desired vs. current: what `apply` changes, and which instance a rolling restart moves next.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::AppSpec;

/// An app as the planner sees it: its spec, the release id that spec makes, and the JDK this
/// host runs (or would run) it with (e.g. its home and version).
#[derive(Debug, Clone)]
pub struct AppState<'a> {
    pub spec: &'a AppSpec,
    pub release: &'a str,
    pub jdk: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum AppChange {
    Add {
        app: String,
        instances: u32,
    },
    Remove {
        app: String,
    },
    /// Instance count changed; nothing else restarts.
    Scale {
        app: String,
        from: u32,
        to: u32,
    },
    /// The release changed (artifact, args, env, JVM options, …): rolling restart.
    Roll {
        app: String,
        from: String,
        to: String,
        why: Vec<String>,
    },
    /// Settings that apply live without a restart (health, stop, logs, restart policy).
    Update {
        app: String,
        fields: Vec<String>,
    },
    /// Deployment `id` moves the app from `from` to `to` and the spec still names `from`, where
    /// it started: its release stays as the deployment takes it (`abort` goes back to `from`).
    Deploying {
        app: String,
        id: i64,
        from: String,
        to: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub changes: Vec<AppChange>,
    pub unchanged: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Diff two fleets. Only what changed is in the plan; apps not mentioned are left alone.
pub fn plan(current: &BTreeMap<String, AppState>, desired: &BTreeMap<String, AppState>) -> Plan {
    let mut out = Plan::default();
    for (name, want) in desired {
        let Some(have) = current.get(name) else {
            out.changes.push(AppChange::Add {
                app: name.clone(),
                instances: want.spec.instances,
            });
            continue;
        };
        let before = out.changes.len();
        if have.release != want.release {
            out.changes.push(AppChange::Roll {
                app: name.clone(),
                from: have.release.to_string(),
                to: want.release.to_string(),
                why: release_fields_changed(have.spec, want.spec),
            });
        } else if have.jdk != want.jdk {
            // The same release (its id does not depend on the host), another JDK picked on this
            // host: its instances restart on it, rolling, like a new release.
            out.changes.push(AppChange::Roll {
                app: name.clone(),
                from: have.release.to_string(),
                to: want.release.to_string(),
                why: vec!["jdk".to_string()],
            });
        }
        if have.spec.instances != want.spec.instances {
            out.changes.push(AppChange::Scale {
                app: name.clone(),
                from: have.spec.instances,
                to: want.spec.instances,
            });
        }
        let live = live_fields_changed(have.spec, want.spec);
        if !live.is_empty() {
            out.changes.push(AppChange::Update {
                app: name.clone(),
                fields: live,
            });
        }
        if out.changes.len() == before {
            out.unchanged.push(name.clone());
        }
    }
    for name in current.keys() {
        if !desired.contains_key(name) {
            out.changes.push(AppChange::Remove { app: name.clone() });
        }
    }
    out
}

/// Fields that make a new release (the artifact's content is compared by the caller's release id).
pub fn release_fields_changed(a: &AppSpec, b: &AppSpec) -> Vec<String> {
    let mut why = Vec::new();
    if a.launch != b.launch {
        why.push("artifact".to_string());
    }
    if a.args != b.args {
        why.push("args".to_string());
    }
    if a.env != b.env {
        why.push("env".to_string());
    }
    if a.java != b.java {
        why.push("java".to_string());
    }
    if a.workdir != b.workdir {
        why.push("workdir".to_string());
    }
    if a.user != b.user {
        why.push("user".to_string());
    }
    if a.config != b.config
        || a.config_rendered != b.config_rendered
        || a.config_etcd != b.config_etcd
        || a.config_templates != b.config_templates
        || a.config_values != b.config_values
        || a.etcd_env != b.etcd_env
    {
        why.push("config".to_string());
    }
    if why.is_empty() {
        why.push("artifact content".to_string());
    }
    why
}

/// Copies the settings that apply live (everything `live_fields_changed` looks at, and the
/// instance count) from `from` into `to`: what an app keeps from the user's current spec when
/// it moves to another release's spec (a finished deploy or rollback).
pub fn keep_live_settings(to: &mut AppSpec, from: &AppSpec) {
    to.instances = from.instances;
    to.health = from.health.clone();
    to.restart = from.restart.clone();
    to.stop = from.stop.clone();
    to.logs = from.logs.clone();
    to.ports = from.ports;
    to.listen = from.listen.clone();
    to.balancer = from.balancer.clone();
    to.deploy = from.deploy.clone();
    to.trust_keys = from.trust_keys.clone();
    to.config_on_change = from.config_on_change.clone();
    to.placement = from.placement.clone();
}

fn live_fields_changed(a: &AppSpec, b: &AppSpec) -> Vec<String> {
    let mut fields = Vec::new();
    let pairs = [
        ("health", a.health != b.health),
        ("restart", a.restart != b.restart),
        ("stop", a.stop != b.stop),
        ("logs", a.logs != b.logs),
        ("ports", a.ports != b.ports),
        ("listen", a.listen != b.listen),
        ("balancer", a.balancer != b.balancer),
        ("deploy", a.deploy != b.deploy),
        ("trust", a.trust_keys != b.trust_keys),
        ("config.on_change", a.config_on_change != b.config_on_change),
        ("placement", a.placement != b.placement),
    ];
    for (name, changed) in pairs {
        if changed {
            fields.push(name.to_string());
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::spec::AppSpec;
    use crate::testkit::{spec, spec_with};

    fn fleet<'a>(apps: &[(&str, &'a AppSpec, &'a str)]) -> BTreeMap<String, AppState<'a>> {
        fleet_on(apps, "/usr/lib/jvm/17 17.0.15")
    }

    fn fleet_on<'a>(
        apps: &[(&str, &'a AppSpec, &'a str)],
        jdk: &'a str,
    ) -> BTreeMap<String, AppState<'a>> {
        apps.iter()
            .map(|(name, spec, release)| (name.to_string(), AppState { spec, release, jdk }))
            .collect()
    }

    #[test]
    fn another_jdk_on_the_host_restarts_the_same_release() {
        let base = spec();
        let scaled = spec_with(&[("instances = 2", "instances = 5")]);
        let jdk17 = "/usr/lib/jvm/17 17.0.15";
        let jdk25 = "/usr/lib/jvm/25 25.0.1";
        let cases: Vec<(&str, &AppSpec, &str, Vec<AppChange>)> = vec![
            ("same JDK", &base, jdk17, vec![]),
            (
                "another JDK",
                &base,
                jdk25,
                vec![roll("r1", "r1", &["jdk"])],
            ),
            (
                "another JDK and more instances",
                &scaled,
                jdk25,
                vec![
                    roll("r1", "r1", &["jdk"]),
                    AppChange::Scale {
                        app: "web".into(),
                        from: 2,
                        to: 5,
                    },
                ],
            ),
        ];
        for (name, want, jdk, changes) in cases {
            let plan = plan(
                &fleet_on(&[("web", &base, "r1")], jdk17),
                &fleet_on(&[("web", want, "r1")], jdk),
            );
            assert_eq!(plan.changes, changes, "{name}");
        }
        // A new release is one roll, whatever the JDK does.
        let plan = plan(
            &fleet_on(&[("web", &base, "r1")], jdk17),
            &fleet_on(&[("web", &base, "r2")], jdk25),
        );
        assert_eq!(plan.changes, vec![roll("r1", "r2", &["artifact content"])]);
    }

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| w.to_string()).collect()
    }

    fn roll(from: &str, to: &str, why: &[&str]) -> AppChange {
        AppChange::Roll {
            app: "web".into(),
            from: from.into(),
            to: to.into(),
            why: words(why),
        }
    }

    fn update(fields: &[&str]) -> AppChange {
        AppChange::Update {
            app: "web".into(),
            fields: words(fields),
        }
    }

    #[test]
    fn plan_moves_only_what_changed() {
        let base = spec();
        let scaled = spec_with(&[("instances = 2", "instances = 5")]);
        let env = spec_with(&[("MODE = \"prod\"", "MODE = \"test\"")]);
        let health = spec_with(&[("interval = \"1s\"", "interval = \"2s\"")]);
        let args_java = spec_with(&[("--port=", "--server.port="), ("-Xmx64m", "-Xmx128m")]);
        let artifact = spec_with(&[("web.jar", "web-2.jar")]);
        let workdir = spec_with(&[("instances = 2", "instances = 2\nworkdir = \"/srv/web\"")]);
        let env_scaled = spec_with(&[
            ("MODE = \"prod\"", "MODE = \"x\""),
            ("instances = 2", "instances = 1"),
        ]);
        let everything = spec_with(&[
            ("MODE = \"prod\"", "MODE = \"x\""),
            ("instances = 2", "instances = 3"),
            ("failures = 2", "failures = 4"),
        ]);
        let live = spec_with(&[
            ("reset_after = \"30s\"", "reset_after = \"31s\""),
            ("stop_timeout = \"7s\"", "stop_timeout = \"8s\""),
            (
                "ports = \"9100-9199\"",
                "ports = \"9200-9299\"\nlisten = \"127.0.0.1:8080\"",
            ),
            (
                "[apps.web.stop]",
                "[apps.web.logs]\nkeep = 3\n\n[apps.web.stop]",
            ),
        ]);
        let deploy = spec_with(&[(
            "[apps.web.stop]",
            "[apps.web.deploy]\nstrategy = \"canary\"\n\n[apps.web.stop]",
        )]);
        let add = |app: &str, instances| AppChange::Add {
            app: app.into(),
            instances,
        };
        let remove = |app: &str| AppChange::Remove { app: app.into() };
        let scale = |from, to| AppChange::Scale {
            app: "web".into(),
            from,
            to,
        };
        type Fleet<'a> = Vec<(&'a str, &'a AppSpec, &'a str)>;
        type Case<'a> = (&'a str, Fleet<'a>, Fleet<'a>, Vec<AppChange>, &'a [&'a str]);
        let table: Vec<Case<'_>> = vec![
            (
                "same",
                vec![("web", &base, "r1")],
                vec![("web", &base, "r1")],
                vec![],
                &["web"],
            ),
            ("empty", vec![], vec![], vec![], &[]),
            (
                "add",
                vec![],
                vec![("web", &base, "r1")],
                vec![add("web", 2)],
                &[],
            ),
            (
                "remove",
                vec![("web", &base, "r1")],
                vec![],
                vec![remove("web")],
                &[],
            ),
            (
                "add, remove and keep",
                vec![("api", &base, "r1"), ("web", &base, "r1")],
                vec![("jobs", &scaled, "r9"), ("web", &base, "r1")],
                vec![add("jobs", 5), remove("api")],
                &["web"],
            ),
            // a scale-only change restarts nothing
            (
                "scale",
                vec![("web", &base, "r1")],
                vec![("web", &scaled, "r1")],
                vec![scale(2, 5)],
                &[],
            ),
            (
                "env",
                vec![("web", &base, "r1")],
                vec![("web", &env, "r2")],
                vec![roll("r1", "r2", &["env"])],
                &[],
            ),
            (
                "args and java",
                vec![("web", &base, "r1")],
                vec![("web", &args_java, "r2")],
                vec![roll("r1", "r2", &["args", "java"])],
                &[],
            ),
            (
                "artifact path",
                vec![("web", &base, "r1")],
                vec![("web", &artifact, "r2")],
                vec![roll("r1", "r2", &["artifact"])],
                &[],
            ),
            (
                "workdir",
                vec![("web", &base, "r1")],
                vec![("web", &workdir, "r2")],
                vec![roll("r1", "r2", &["workdir"])],
                &[],
            ),
            // same spec, new jar content: the release id alone tells
            (
                "artifact content",
                vec![("web", &base, "r1")],
                vec![("web", &base, "r2")],
                vec![roll("r1", "r2", &["artifact content"])],
                &[],
            ),
            // health applies live: no restart
            (
                "health",
                vec![("web", &base, "r1")],
                vec![("web", &health, "r1")],
                vec![update(&["health"])],
                &[],
            ),
            (
                "restart, stop, logs, ports, listen",
                vec![("web", &base, "r1")],
                vec![("web", &live, "r1")],
                vec![update(&["restart", "stop", "logs", "ports", "listen"])],
                &[],
            ),
            (
                "deploy",
                vec![("web", &base, "r1")],
                vec![("web", &deploy, "r1")],
                vec![update(&["deploy"])],
                &[],
            ),
            (
                "env and scale",
                vec![("web", &base, "r1")],
                vec![("web", &env_scaled, "r2")],
                vec![roll("r1", "r2", &["env"]), scale(2, 1)],
                &[],
            ),
            (
                "roll, scale and update",
                vec![("web", &base, "r1")],
                vec![("web", &everything, "r2")],
                vec![roll("r1", "r2", &["env"]), scale(2, 3), update(&["health"])],
                &[],
            ),
        ];
        for (name, current, desired, changes, unchanged) in table {
            let got = plan(&fleet(&current), &fleet(&desired));
            let want = Plan {
                changes,
                unchanged: words(unchanged),
            };
            assert_eq!(got, want, "{name}");
            assert_eq!(got.is_empty(), got.changes.is_empty(), "{name}");
        }
    }

    #[test]
    fn every_balancer_setting_changes_live_without_a_restart() {
        let base = spec();
        type Edit = fn(&mut crate::spec::BalancerSpec);
        let edits: [(&str, Edit); 16] = [
            ("balance", |b| {
                b.balance = crate::spec::Balance::LeastRequest
            }),
            ("slow_start", |b| b.slow_start = Duration::ZERO),
            ("head_timeout", |b| b.head_timeout = Duration::from_secs(3)),
            ("keepalive_timeout", |b| {
                b.keepalive_timeout = Duration::from_secs(5)
            }),
            ("body_timeout", |b| b.body_timeout = Duration::from_secs(9)),
            ("connect_timeout", |b| {
                b.connect_timeout = Duration::from_millis(300)
            }),
            ("response_timeout", |b| {
                b.response_timeout = Duration::from_secs(600)
            }),
            ("backend_idle_timeout", |b| {
                b.backend_idle_timeout = Duration::from_secs(4)
            }),
            ("tcp_idle_timeout", |b| {
                b.tcp_idle_timeout = Duration::from_secs(60)
            }),
            ("max_connections", |b| b.max_connections = 50),
            ("max_idle_per_backend", |b| b.max_idle_per_backend = 0),
            ("request_buffer", |b| b.request_buffer = 0),
            ("eject_for", |b| b.eject_for = Duration::from_secs(60)),
            ("eject_after", |b| b.eject_after = 1),
            ("stall_timeout", |b| b.stall_timeout = Duration::ZERO),
            ("stall_probe_timeout", |b| {
                b.stall_probe_timeout = Duration::from_millis(200)
            }),
        ];
        for (key, edit) in edits {
            let mut changed = base.clone();
            edit(&mut changed.balancer);
            assert_ne!(
                changed.balancer, base.balancer,
                "{key}: the edit changes nothing"
            );
            let got = plan(
                &fleet(&[("web", &base, "r1")]),
                &fleet(&[("web", &changed, "r1")]),
            );
            assert_eq!(got.changes, vec![update(&["balancer"])], "{key}");
            // and it is kept when the app moves to another release
            let mut moved = base.clone();
            keep_live_settings(&mut moved, &changed);
            assert_eq!(moved.balancer, changed.balancer, "{key}");
        }
    }

    #[test]
    fn every_spec_field_is_either_a_release_or_a_live_change() {
        // Guards against a new AppSpec field that `plan` does not look at: its change would be
        // reported as "unchanged" and never applied.
        let base = spec();
        let mut changed = base.clone();
        let AppSpec {
            name: _,
            launch,
            workdir,
            user,
            instances,
            ports,
            args,
            env,
            java,
            listen,
            health,
            restart,
            stop,
            logs,
            balancer,
            deploy,
            trust_keys,
            config,
            config_rendered,
            config_etcd,
            etcd_env,
            config_templates,
            config_values,
            config_on_change,
            placement,
        } = &mut changed;
        *launch = crate::spec::Launch::MainClass {
            main_class: "a.Main".into(),
            classpath: vec![],
        };
        *workdir = Some("/w".into());
        *user = Some("nobody".into());
        *instances += 1;
        ports.last += 1;
        args.push("-v".into());
        env.insert("X".into(), "1".into());
        java.gc_log = !java.gc_log;
        *listen = Some("127.0.0.1:1".into());
        health.failures += 1;
        restart.max_restarts = Some(1);
        stop.drain_timeout += std::time::Duration::from_secs(1);
        logs.keep += 1;
        balancer.slow_start += std::time::Duration::from_secs(1);
        deploy.max_surge += 1;
        trust_keys.push("/k.pub".into());
        *config = Some("/etc/app".into());
        config_rendered.insert("app.properties".into(), "a=1\n".into());
        placement.max_per_node = Some(1);
        *config_etcd = Some(crate::spec::EtcdSource {
            endpoints: vec!["http://e:2379".into()],
            prefix: "/p/".into(),
        });
        etcd_env.insert("A".into(), "1".into());
        config_templates.insert("app.properties".into(), "a=${A}\n".into());
        config_values.insert("A".into(), "0".into());
        *config_on_change = crate::spec::OnChange::Signal {
            signal: "HUP".into(),
        };
        let got = plan(
            &fleet(&[("web", &base, "r1")]),
            &fleet(&[("web", &changed, "r2")]),
        );
        let want = vec![
            roll(
                "r1",
                "r2",
                &[
                    "artifact", "args", "env", "java", "workdir", "user", "config",
                ],
            ),
            AppChange::Scale {
                app: "web".into(),
                from: 2,
                to: 3,
            },
            update(&[
                "health",
                "restart",
                "stop",
                "logs",
                "ports",
                "listen",
                "balancer",
                "deploy",
                "trust",
                "config.on_change",
                "placement",
            ]),
        ];
        assert_eq!(got.changes, want);

        // Everything that applies live is kept across a change of release.
        let mut moved = changed.clone();
        keep_live_settings(&mut moved, &base);
        let got = plan(
            &fleet(&[("web", &base, "r1")]),
            &fleet(&[("web", &moved, "r2")]),
        );
        assert!(
            got.changes
                .iter()
                .all(|c| matches!(c, AppChange::Roll { .. })),
            "{:?}",
            got.changes
        );
    }
}
