//! Per-instance config files. `jarfleet install` renders a bundle's `config/` templates into the
//! release's `etc/` with everything but the per-instance values (`${PORT}`, `${JARFLEET_SLOT}`,
//! `${JARFLEET_INSTANCE}`, `${JARFLEET_CONFIG_DIR}`); when an instance starts, the daemon renders those into the
//! instance's own `etc/` and tells the JVM where it is (`JARFLEET_CONFIG_DIR`). The config
//! belongs to the release: a rollback brings back the old release's `etc/` with its code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

// Values a template is rendered with per instance, when it starts.
use jarfleet_core::spec::INSTANCE_VARS;

/// Set on a release (by `prepare`) whose jar comes with rendered templates.
pub const TEMPLATES_ENV: &str = "JARFLEET_CONFIG_TEMPLATES";
/// What the JVM gets: its own rendered config directory.
pub const CONFIG_DIR_ENV: &str = "JARFLEET_CONFIG_DIR";

/// The release's rendered templates (`RELEASE/etc`) when `jar` is `RELEASE/app/*.jar` of an
/// installed release.
pub fn release_templates(jar: &Path) -> Option<PathBuf> {
    let app_dir = jar.parent()?;
    if app_dir.file_name()? != "app" {
        return None;
    }
    let release = app_dir.parent()?;
    let etc = release.join("etc");
    (etc.is_dir() && release.join(crate::prepare::VERIFIED_MARKER).is_file()).then_some(etc)
}

/// Renders `templates` into `dest` (replaced whole) with this instance's values; any other
/// `${...}` is left as it is (it was resolved, or escaped, at install).
pub fn render_instance(
    templates: &Path,
    dest: &Path,
    vars: &BTreeMap<&'static str, String>,
) -> Result<(), jarfleet_shim::fdlimit::Failure> {
    use jarfleet_shim::fdlimit::{Failure, Op};
    let lookup = |name: &str| {
        Some(
            vars.get(name)
                .cloned()
                .unwrap_or_else(|| format!("${{{name}}}")),
        )
    };
    let tmp = dest.with_extension("incoming");
    let _ = std::fs::remove_dir_all(&tmp);
    if let Some(parent) = tmp.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            Failure::io(format_args!("creating {}", parent.display()), &e, Op::File)
        })?;
    }
    jarfleet_bundle::template::render_dir(templates, &tmp, &lookup).map_err(|e| Failure {
        message: format!("rendering the config of {}: {e}", templates.display()),
        shortage: jarfleet_shim::fdlimit::in_chain(&e, Op::File),
    })?;
    let _ = std::fs::remove_dir_all(dest);
    std::fs::rename(&tmp, dest)
        .map_err(|e| Failure::io(format_args!("placing {}", dest.display()), &e, Op::File))
}

/// Renders the `config` templates of every app of `spec` into `config_rendered`, with `env`
/// for the values (per-instance ones are left for instance start). Every error of every file.
///
/// An app with an etcd source keeps its templates as written (`config_templates`) with the
/// environment's values of the variables they use (`config_values`): the daemon renders them
/// with the etcd values of each release (`render_with_etcd`).
pub fn render_spec_config(
    spec: &mut jarfleet_core::spec::FleetSpec,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for app in spec.apps.values_mut() {
        let Some(dir) = app.config.clone() else {
            continue;
        };
        let mut files = Vec::new();
        if let Err(e) = collect_files(&dir, &dir, &mut files) {
            errors.push(format!("apps.{}.config: {}: {e}", app.name, dir.display()));
            continue;
        }
        let name = app.name.clone();
        if app.config_etcd.is_some() {
            keep_for_etcd(app, files, env, &mut errors);
            continue;
        }
        let lookup = |var: &str| match var {
            "JARFLEET_APP" => Some(name.clone()),
            v if INSTANCE_VARS.contains(&v) => Some(format!("${{{v}}}")),
            v => env(v),
        };
        app.config_rendered.clear();
        for (rel, path) in files {
            let Some(text) = read_template(&path, &mut errors) else {
                continue;
            };
            match jarfleet_bundle::template::render(&path, &text, &lookup) {
                Ok(out) => {
                    app.config_rendered.insert(rel, out);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A template's text; an unreadable or non-text file is an error in `errors`.
fn read_template(path: &Path, errors: &mut Vec<String>) -> Option<String> {
    std::fs::read_to_string(path)
        .map_err(|e| {
            errors.push(format!(
                "{}: {e} (config templates are text)",
                path.display()
            ))
        })
        .ok()
}

/// An etcd app's templates, checked and kept as written, with the environment's values of the
/// variables they use.
fn keep_for_etcd(
    app: &mut jarfleet_core::spec::AppSpec,
    files: Vec<(String, PathBuf)>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) {
    app.config_templates.clear();
    app.config_values.clear();
    app.config_rendered.clear();
    for (rel, path) in files {
        let Some(text) = read_template(&path, errors) else {
            continue;
        };
        match jarfleet_bundle::template::variables(&path, &text) {
            Ok(uses) => {
                for name in uses.into_iter().map(|u| u.name) {
                    if INSTANCE_VARS.contains(&name.as_str()) {
                        continue;
                    }
                    let value = if name == "JARFLEET_APP" {
                        Some(app.name.clone())
                    } else {
                        env(&name)
                    };
                    if let Some(value) = value {
                        app.config_values.insert(name, value);
                    }
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
        app.config_templates.insert(rel, text);
    }
}

/// Renders an etcd app's templates with this release's etcd values (then the loading
/// environment's) into `config_rendered`; per-instance values are left for instance start.
/// A new rendering means a new `etc/` for the release, so the previous one's is forgotten.
pub fn render_with_etcd(app: &mut jarfleet_core::spec::AppSpec) -> Result<(), String> {
    if app.config_templates.is_empty() {
        return Ok(());
    }
    let lookup = |var: &str| {
        if INSTANCE_VARS.contains(&var) {
            Some(format!("${{{var}}}"))
        } else {
            app.etcd_env
                .get(var)
                .or_else(|| app.config_values.get(var))
                .cloned()
        }
    };
    let dir = app.config.clone().unwrap_or_default();
    let mut rendered = BTreeMap::new();
    let mut errors = Vec::new();
    for (rel, text) in &app.config_templates {
        match jarfleet_bundle::template::render(&dir.join(rel), text, &lookup) {
            Ok(out) => {
                rendered.insert(rel.clone(), out);
            }
            Err(e) => errors.extend(e.0.iter().map(ToString::to_string)),
        }
    }
    if !errors.is_empty() {
        let prefix = app
            .config_etcd
            .as_ref()
            .map(|e| e.prefix.as_str())
            .unwrap_or_default();
        return Err(format!(
            "apps.{}.config: {} (values come from etcd under {prefix}, then from the environment)",
            app.name,
            errors.join("; ")
        ));
    }
    app.config_rendered = rendered;
    app.env.remove(TEMPLATES_ENV);
    Ok(())
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        if e.file_type()?.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            out.push((rel, path));
        }
    }
    Ok(())
}
