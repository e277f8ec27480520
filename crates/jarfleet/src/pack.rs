//! `jarfleet pack`: a signed-ready release bundle (`NAME-VERSION.jfb`), or a self-contained
//! installer (this binary with the bundle appended).

use std::path::{Path, PathBuf};

use jarfleet_bundle::{PackSpec, bundle_file_name, embed, pack};

use crate::context::CliError;

pub struct PackArgs {
    pub jar: PathBuf,
    pub name: Option<String>,
    pub version: String,
    pub config: Option<PathBuf>,
    pub hooks: Option<PathBuf>,
    pub jre: Option<PathBuf>,
    pub app_spec: Option<PathBuf>,
    pub java: Option<String>,
    pub out_dir: PathBuf,
    pub installer: bool,
}

/// The default app spec of a bundle: the `[app]` table of `--app-spec FILE` (a TOML file with
/// the keys of one `[apps.NAME]` table, without `artifact`), else a minimal one.
fn app_table(path: Option<&Path>) -> Result<toml::Table, CliError> {
    let Some(path) = path else {
        let mut t = toml::Table::new();
        t.insert("instances".into(), toml::Value::Integer(2));
        return Ok(t);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("reading {}: {e}", path.display()), None))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display()), None))?;
    if table.contains_key("artifact") {
        return Err(CliError::usage(
            format!(
                "{}: `artifact` is set by the bundle (its jar); remove it",
                path.display()
            ),
            None,
        ));
    }
    Ok(table)
}

pub fn run(a: PackArgs) -> Result<(), CliError> {
    let name = match a.name {
        Some(n) => n,
        None => a
            .jar
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .ok_or_else(|| CliError::usage("give the app's name with --name", None))?,
    };
    let spec = PackSpec {
        name: name.clone(),
        version: a.version.clone(),
        jar: a.jar,
        config_dir: a.config,
        hooks_dir: a.hooks,
        jre_dir: a.jre,
        app: app_table(a.app_spec.as_deref())?,
        java: a.java,
        ..PackSpec::default()
    };
    std::fs::create_dir_all(&a.out_dir)
        .map_err(|e| CliError::failed(format!("creating {}: {e}", a.out_dir.display())))?;
    let bundle = a.out_dir.join(bundle_file_name(&name, &a.version));
    let report = pack(&spec, &bundle).map_err(|e| CliError::failed(e.to_string()))?;
    println!(
        "{}: {} files, {} bytes, digest {}",
        bundle.display(),
        report.manifest.files.len(),
        report.bundle_bytes,
        report.digest
    );
    if a.installer {
        let exe = std::env::current_exe()
            .map_err(|e| CliError::failed(format!("cannot find the jarfleet binary: {e}")))?;
        let out = a.out_dir.join(format!("{name}-{}-installer", a.version));
        embed::append_to_binary(&exe, &bundle, &out)
            .map_err(|e| CliError::failed(e.to_string()))?;
        println!(
            "{}: self-contained installer (run `{} install --prefix DIR`)",
            out.display(),
            out.display()
        );
    }
    Ok(())
}
