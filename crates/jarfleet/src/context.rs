//! Finding the spec and the daemon; rendering errors and exit codes in one place.

use std::path::{Path, PathBuf};

use jarfleet_api::{Client, ClientError};
use jarfleet_core::spec::{self, FleetSpec};

/// Exit codes (DESIGN §2).
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_UNREACHABLE: i32 = 3;

/// The one error type of the CLI: what to print and how to exit.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn usage(message: impl Into<String>, hint: Option<&str>) -> CliError {
        CliError {
            code: EXIT_USAGE,
            message: message.into(),
            hint: hint.map(str::to_string),
        }
    }
    pub fn failed(message: impl Into<String>) -> CliError {
        CliError {
            code: EXIT_FAILED,
            message: message.into(),
            hint: None,
        }
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }
    /// Prints `error: …` (and `  hint: …`) to stderr. Spec errors are already fully formatted.
    /// A stderr that cannot be written (a full disk under `daemon.log`) costs the message, not
    /// the exit code (`eprintln!` would panic).
    pub fn print(&self) {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        if self.message.starts_with("error:") {
            let _ = writeln!(err, "{}", self.message);
        } else {
            let _ = writeln!(err, "error: {}", self.message);
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(err, "  hint: {hint}");
        }
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> CliError {
        CliError {
            code: e.exit_code(),
            hint: e.hint(),
            message: e.to_string(),
        }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> CliError {
        CliError::failed(format!("{e:#}"))
    }
}

/// `SPEC` may be a file or a directory holding `jarfleet.toml`; default `./jarfleet.toml`.
pub fn spec_path(arg: Option<&Path>) -> PathBuf {
    let p = arg
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("jarfleet.toml"));
    if p.is_dir() {
        p.join("jarfleet.toml")
    } else {
        p
    }
}

pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Reads and validates a spec; every error at once, exit code 2.
pub fn load_spec(arg: Option<&Path>) -> Result<FleetSpec, CliError> {
    let path = absolute(&spec_path(arg));
    let bytes = std::fs::read(&path).map_err(|e| {
        CliError::usage(
            format!("cannot read spec {}: {e}", path.display()),
            Some("pass the spec file (or its directory) as an argument, e.g. `jarfleet up examples/hello`"),
        )
    })?;
    let env = |k: &str| std::env::var(k).ok();
    let mut spec = spec::load_bytes(&bytes, &path, &env)
        .map_err(|errors| CliError::usage(errors.to_string(), None))?;
    render_config(&mut spec)?;
    Ok(spec)
}

/// Renders each app's `config` templates with this process's environment; every error of
/// every file at once.
fn render_config(spec: &mut FleetSpec) -> Result<(), CliError> {
    let env = |k: &str| std::env::var(k).ok();
    jarfleet_host::templates::render_spec_config(spec, &env).map_err(|errors| {
        CliError::usage(
            errors.join("\n"),
            Some(
                "set the missing values in the environment or give them defaults (${NAME:default}); a placeholder the app resolves itself is written $${NAME}, e.g. $${catalina.base}",
            ),
        )
    })
}

/// The daemon's state dir: `--state-dir`/`JARFLEET_STATE`, else the spec's, else the spec in
/// the current directory's, else `.jarfleet`.
pub fn state_dir(flag: Option<&Path>, spec: Option<&FleetSpec>) -> PathBuf {
    if let Some(dir) = flag {
        return absolute(dir);
    }
    if let Some(spec) = spec {
        return absolute(&spec.daemon.state_dir);
    }
    if Path::new("jarfleet.toml").is_file()
        && let Ok(spec) = load_spec(None)
    {
        return absolute(&spec.daemon.state_dir);
    }
    absolute(Path::new(".jarfleet"))
}

pub fn client(flag: Option<&Path>, spec: Option<&FleetSpec>) -> Client {
    Client::for_state_dir(&state_dir(flag, spec))
}

/// The client of a daemon's TCP API from `--api`, `--token-file` and `--ca` (or their
/// environment variables); `None` without `--api`. The token file is held to the daemon's rule
/// (mode 0600).
pub fn remote_client(
    api: Option<&str>,
    token_file: Option<&Path>,
    ca: Option<&Path>,
) -> Result<Option<Client>, CliError> {
    let Some(url) = api else {
        if token_file.is_some() || ca.is_some() {
            return Err(CliError::usage(
                "--token-file and --ca are for a daemon's TCP API",
                Some(
                    "add --api https://HOST:PORT (or set JARFLEET_API); the local socket needs neither",
                ),
            ));
        }
        return Ok(None);
    };
    let token = match token_file {
        Some(path) => Some(
            jarfleet_daemon::read_secret(path)
                .map_err(|e| CliError::usage(e.to_string(), Some(e.hint())))?,
        ),
        None => None,
    };
    let ca_pem = match ca {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            CliError::usage(
                format!("cannot read the CA file {}: {e}", path.display()),
                Some(
                    "--ca takes the PEM certificate of the CA that signed the daemon's certificate",
                ),
            )
        })?),
        None => None,
    };
    Ok(Some(Client::remote(url, token, ca_pem.as_deref())?))
}

/// Splits `APP` or `APP/N`.
pub fn parse_target(target: &str) -> Result<(String, Option<u32>), CliError> {
    match target.split_once('/') {
        None => Ok((target.to_string(), None)),
        Some((app, n)) => n
            .parse::<u32>()
            .map(|n| (app.to_string(), Some(n)))
            .map_err(|_| {
                CliError::usage(
                    format!("{target:?} is not APP or APP/N"),
                    Some("e.g. `orders` or `orders/1`"),
                )
            }),
    }
}
