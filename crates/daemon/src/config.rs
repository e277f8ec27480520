//! Per-instance config files. `jarfleet install` renders a bundle's `config/` templates into the
//! release's `etc/` with everything but the per-instance values (`${PORT}`, `${JARFLEET_SLOT}`,
//! `${JARFLEET_INSTANCE}`); when an instance starts, the daemon renders those into the
//! instance's own `etc/` and tells the JVM where it is (`JARFLEET_CONFIG_DIR`). The config
//! belongs to the release: a rollback brings back the old release's `etc/` with its code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
) -> Result<(), String> {
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
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    jarfleet_bundle::template::render_dir(templates, &tmp, &lookup)
        .map_err(|e| format!("rendering the config of {}: {e}", templates.display()))?;
    let _ = std::fs::remove_dir_all(dest);
    std::fs::rename(&tmp, dest).map_err(|e| format!("placing {}: {e}", dest.display()))
}

/// Renders the `config` templates of every app of `spec` into `config_rendered`, with `env`
/// for the values (per-instance ones are left for instance start). Every error of every file.
pub fn render_spec_config(
    spec: &mut jarfleet_core::spec::FleetSpec,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Vec<String>> {
    const INSTANCE_VARS: [&str; 3] = ["PORT", "JARFLEET_SLOT", "JARFLEET_INSTANCE"];
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
        let lookup = |var: &str| match var {
            "JARFLEET_APP" => Some(name.clone()),
            v if INSTANCE_VARS.contains(&v) => Some(format!("${{{v}}}")),
            v => env(v),
        };
        app.config_rendered.clear();
        for (rel, path) in files {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!(
                        "{}: {e} (config templates are text)",
                        path.display()
                    ));
                    continue;
                }
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
