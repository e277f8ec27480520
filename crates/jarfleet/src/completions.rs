//! Shell completions (clap_complete) and man pages (clap_mangen), both generated from the one
//! clap definition in `args`, so they cannot drift from the real command line.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::args::Cli;
use crate::context::CliError;

pub fn completions(shell: clap_complete::Shell) -> Result<(), CliError> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut visible(Cli::command()), "jarfleet", &mut out);
    print(&out)
}

/// The command line without its hidden subcommands (`shim`), which some of clap_complete's
/// shells would offer.
fn visible(cmd: clap::Command) -> clap::Command {
    let mut shown = clap::Command::new("jarfleet")
        .version(env!("CARGO_PKG_VERSION"))
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = cmd.get_about() {
        shown = shown.about(about.clone());
    }
    shown
}

/// Without a directory: the main page on stdout. With one: a page per (visible) subcommand,
/// `jarfleet.1`, `jarfleet-up.1`, `jarfleet-export-systemd.1`, …
pub fn man(out_dir: Option<&Path>) -> Result<(), CliError> {
    let cmd = Cli::command();
    let Some(dir) = out_dir else {
        let mut out = Vec::new();
        render_main(cmd, &mut out)
            .map_err(|e| CliError::failed(format!("rendering the man page: {e}")))?;
        return print(&out);
    };
    let fail = |e: std::io::Error| {
        CliError::failed(format!("writing man pages to {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    clap_mangen::generate_to(cmd.clone(), dir).map_err(fail)?;
    // The main page again, with the sections only it has.
    let mut main = Vec::new();
    render_main(cmd, &mut main).map_err(fail)?;
    std::fs::write(dir.join("jarfleet.1"), main).map_err(fail)?;
    eprintln!("wrote the man pages into {}", dir.display());
    Ok(())
}

/// The main page: clap's sections, then exit status, environment and files.
fn render_main(cmd: clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    clap_mangen::Man::new(cmd).render(out)?;
    let mut extra = roff::Roff::new();
    extra
        .control("SH", ["EXIT STATUS"])
        .control("TP", [])
        .text([roff::roman("0")])
        .text([roff::roman("success")])
        .control("TP", [])
        .text([roff::roman("1")])
        .text([roff::roman("the operation failed")])
        .control("TP", [])
        .text([roff::roman("2")])
        .text([roff::roman("usage or spec error; nothing was changed")])
        .control("TP", [])
        .text([roff::roman("3")])
        .text([roff::roman("the daemon cannot be reached")])
        .control("SH", ["ENVIRONMENT"])
        .control("TP", [])
        .text([roff::bold("JARFLEET_STATE")])
        .text([roff::roman(
            "the state dir of the daemon to talk to (like --state-dir)",
        )])
        .control("TP", [])
        .text([roff::bold("JARFLEET_LOG")])
        .text([roff::roman(
            "log filter of the daemon, e.g. info, or jarfleet_daemon=debug,jarfleet_host=debug,jarfleet_shim=debug for all of it",
        )])
        .control("TP", [])
        .text([roff::bold("NO_COLOR")])
        .text([roff::roman("no colours in the output")])
        .control("SH", ["FILES"])
        .control("TP", [])
        .text([roff::italic("./jarfleet.toml")])
        .text([roff::roman("the fleet spec, by default")])
        .control("TP", [])
        .text([roff::italic("STATE/jarfleet.sock")])
        .text([roff::roman("the daemon's API (unix socket, mode 0600)")])
        .control("TP", [])
        .text([roff::italic("STATE/state.db")])
        .text([roff::roman("the daemon's store (SQLite)")]);
    out.write_all(extra.to_roff().as_bytes())
}

fn print(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|_| stdout.flush())
        .map_err(|e| CliError::failed(format!("writing to stdout: {e}")))
}
