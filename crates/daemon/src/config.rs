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
