//! Desired vs. current: what `apply` changes, and which instance a rolling restart moves next.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::instance::{Instance, Phase};
use crate::spec::AppSpec;

/// An app as the planner sees it: its spec and the release id that spec makes.
#[derive(Debug, Clone)]
pub struct AppState<'a> {
    pub spec: &'a AppSpec,
    pub release: &'a str,
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
    if why.is_empty() {
        why.push("artifact content".to_string());
    }
    why
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
    ];
    for (name, changed) in pairs {
        if changed {
            fields.push(name.to_string());
        }
    }
    fields
}

/// Rolling restart: which instances to replace now. Each entry is an instance and whether it is
/// outdated (older release, or older than a requested rolling restart).
///
/// Outdated instances that serve nothing (not ready) are replaced at once; ready ones one at a
/// time, and only while every up-to-date instance is ready and nothing else is stopping, so
/// capacity never drops by more than one instance.
pub fn next_to_roll(instances: &[(&Instance, bool)]) -> Vec<u32> {
    let idle: Vec<u32> = instances
        .iter()
        .filter(|(i, outdated)| {
            *outdated
                && !matches!(
                    i.phase,
                    Phase::Ready { .. } | Phase::Stopping { .. } | Phase::Stopped
                )
        })
        .map(|(i, _)| i.slot)
        .collect();
    if !idle.is_empty() {
        return idle;
    }
    let busy = instances.iter().any(|(i, outdated)| {
        matches!(i.phase, Phase::Stopping { .. })
            || (!outdated && !matches!(i.phase, Phase::Ready { .. } | Phase::Stopped))
    });
    if busy {
        return vec![];
    }
    instances
        .iter()
        .filter(|(i, outdated)| *outdated && i.is_ready())
        .map(|(i, _)| i.slot)
        .min()
        .into_iter()
        .collect()
}
