//! `jarfleet`: one binary that is the daemon, every client command, and the instance shim.

mod args;
mod commands;
mod completions;
mod context;
mod export;
mod install;
mod pack;
mod render;
mod sign;
mod term;
mod token;
mod up;

use std::io::Write;

use clap::Parser;
use jarfleet_api::Action;
use jarfleet_daemon::DaemonLog;

use crate::args::{Cli, Command};
use crate::context::CliError;

fn main() {
    // The shim is a small, long-lived process, one per JVM: it skips the CLI parser, the async
    // runtime and tracing, so it touches as little memory as possible.
    let mut argv = std::env::args_os().skip(1);
    if argv.next().is_some_and(|a| a == "shim")
        && let (Some(run_dir), None) = (argv.next(), argv.next())
    {
        if let Err(e) = jarfleet_shim::run_shim(std::path::Path::new(&run_dir)) {
            eprintln!("jarfleet shim: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    // The load balancer's data plane: also long-lived, also kept small (no CLI parser).
    let mut argv = std::env::args_os().skip(1);
    if argv.next().is_some_and(|a| a == "data-plane")
        && let (Some(_dir), None) = (argv.next(), argv.next())
    {
        let log = DaemonLog::stream(Box::new(std::io::stderr()));
        log.install();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("JARFLEET_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_writer(move || log.clone())
            .with_ansi(false)
            .try_init();
        if let Err(e) = jarfleet_dataplane::serve::run() {
            eprintln!("jarfleet data-plane: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let cli = Cli::parse();
    init_tracing(&cli.command);
    // One thread runs the daemon's loop, API, probes and shim connections: nothing there is
    // CPU-bound, and one thread means no cross-thread wake-ups (idle CPU is a benchmark goal).
    // Blocking work (jar hashing, log files, the store readers) goes to the blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot start the async runtime: {e}"
            );
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        e.print();
        std::process::exit(e.code);
    }
}

/// Commands that are clients of a daemon (and so may use `--api`).
fn talks_to_a_daemon(command: &Command) -> bool {
    matches!(
        command,
        Command::Down { .. }
            | Command::Upgrade { .. }
            | Command::Apply { .. }
            | Command::Status { .. }
            | Command::Start { .. }
            | Command::Stop { .. }
            | Command::Restart { .. }
            | Command::Deploy { .. }
            | Command::Rollback { .. }
            | Command::Promote { .. }
            | Command::Abort { .. }
            | Command::History { .. }
            | Command::Scale { .. }
            | Command::Logs { .. }
            | Command::Events { .. }
    ) || matches!(command, Command::Cluster { command } if !command.is_local())
}

/// Logs go to stderr, or for `daemon --log FILE` to that file, rotated by size. The writer never
/// fails: a line that cannot be written (a full disk, a closed pipe) is counted and dropped, and
/// tracing's own error report (an `eprintln!`, which panics when stderr fails too) is off.
fn init_tracing(command: &Command) {
    let default = match command {
        Command::Daemon { .. } => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("JARFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let (log, ansi) = match command {
        Command::Daemon {
            log: Some(path), ..
        } => match DaemonLog::file(path) {
            Ok(log) => (log, false),
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "jarfleet: cannot open the log file {}: {e}; logging to stderr",
                    path.display()
                );
                (DaemonLog::stream(Box::new(std::io::stderr())), false)
            }
        },
        _ => (
            DaemonLog::stream(Box::new(std::io::stderr())),
            std::env::var_os("NO_COLOR").is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ),
    };
    log.install();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || log.clone())
        .with_ansi(ansi)
        .log_internal_errors(false)
        .try_init();
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let state = cli.state_dir.as_deref();
    let remote = context::remote_client(
        cli.api.as_deref(),
        cli.token_file.as_deref(),
        cli.ca.as_deref(),
    )?;
    if remote.is_some() && !talks_to_a_daemon(&cli.command) {
        return Err(CliError::usage(
            "--api is for commands that talk to a running daemon",
            Some("this command works on this machine; drop --api (and JARFLEET_API)"),
        ));
    }
    let client = || {
        remote
            .clone()
            .unwrap_or_else(|| context::client(state, None))
    };
    match cli.command {
        Command::Up {
            spec,
            detach,
            wait,
            watch,
            prefix: None,
            new_store,
            ..
        } => up::up(state, spec.as_deref(), detach, wait, watch, new_store).await,
        Command::Up {
            spec: Some(_),
            prefix: Some(_),
            ..
        } => Err(context::CliError::usage(
            "give either a spec or --prefix",
            Some("`up --prefix DIR` installs this installer's bundle under DIR and runs it"),
        )),
        Command::Up {
            spec: None,
            detach,
            wait,
            watch,
            prefix: Some(prefix),
            trust,
            new_store,
        } => {
            install::run(install::InstallArgs {
                bundle: None,
                prefix: prefix.clone(),
                dry_run: false,
                trust,
                signature: None,
                start: false,
            })
            .await?;
            let spec = context::absolute(&prefix).join("jarfleet.toml");
            let state = context::absolute(&prefix).join("state");
            up::up(Some(&state), Some(&spec), detach, wait, watch, new_store).await
        }
        Command::Daemon {
            spec, new_store, ..
        } => up::daemon(state, spec.as_deref(), new_store).await,
        Command::Export { target } => export::run(state, target).await,
        Command::Completions { shell } => completions::completions(shell),
        Command::Man { out_dir } => completions::man(out_dir.as_deref()),
        Command::Upgrade { binary, grace } => {
            commands::upgrade(&client(), binary.as_deref(), grace).await
        }
        Command::Version { json } => commands::version(json),
        Command::Down { strays: false } => commands::down(&client()).await,
        Command::Down { strays: true } => commands::down_strays(&client()).await,
        Command::Apply {
            spec,
            dry_run,
            output,
        } => commands::apply(remote.clone(), state, spec.as_deref(), dry_run, output).await,
        Command::Validate {
            spec,
            offline,
            output,
        } => commands::validate(spec.as_deref(), offline, output).await,
        Command::Metrics => commands::metrics(&client()).await,
        Command::Status {
            app,
            watch: false,
            output,
            ..
        } => commands::status(&client(), app.as_deref(), output).await,
        Command::Status {
            app,
            watch: true,
            interval,
            output,
        } => commands::status_watch(&client(), app.as_deref(), interval, output).await,
        Command::Start { target, output } => {
            commands::action(&client(), &target, Action::Start, output).await
        }
        Command::Stop { target, output } => {
            commands::action(&client(), &target, Action::Stop, output).await
        }
        Command::Restart {
            target,
            wait: false,
            output,
        } => commands::action(&client(), &target, Action::Restart, output).await,
        Command::Restart {
            target,
            wait: true,
            output,
        } => commands::restart_wait(&client(), &target, output).await,
        Command::Deploy {
            app,
            artifact,
            version,
            strategy,
            wait,
            output,
        } => {
            let strategy = strategy.map(Into::into);
            commands::deploy(&client(), &app, &artifact, version, strategy, wait, output).await
        }
        Command::Rollback {
            app,
            to,
            wait,
            output,
        } => commands::rollback(&client(), &app, to, wait, output).await,
        Command::Promote {
            app,
            full,
            wait,
            output,
        } => commands::canary(&client(), &app, Some(full), wait, output).await,
        Command::Abort { app, wait, output } => {
            commands::canary(&client(), &app, None, wait, output).await
        }
        Command::History { app, output } => commands::history(&client(), &app, output).await,
        Command::Scale {
            app,
            instances,
            output,
        } => commands::scale(&client(), &app, instances, output).await,
        Command::Logs {
            target,
            follow,
            lines,
            output,
        } => commands::logs(&client(), &target, follow, lines, output).await,
        Command::Events {
            follow,
            lines,
            output,
        } => commands::events(&client(), follow, lines, output).await,
        Command::Doctor { output } => {
            commands::doctor(&context::state_dir(state, None), output).await
        }
        Command::Pack {
            jar,
            version,
            name,
            config,
            hooks,
            jre,
            app_spec,
            java,
            out_dir,
            installer,
        } => pack::run(pack::PackArgs {
            jar,
            name,
            version,
            config,
            hooks,
            jre,
            app_spec,
            java,
            out_dir,
            installer,
        }),
        Command::Install {
            bundle,
            prefix,
            dry_run,
            trust,
            signature,
            no_start,
        } => {
            install::run(install::InstallArgs {
                bundle,
                prefix,
                dry_run,
                trust,
                signature,
                start: !no_start,
            })
            .await
        }
        Command::Keygen {
            out,
            no_password,
            password_file,
            force,
        } => sign::keygen(&out, no_password, password_file.as_deref(), force),
        Command::Sign {
            file,
            key,
            password_file,
            comment,
        } => sign::sign(&file, &key, password_file.as_deref(), comment.as_deref()),
        Command::Verify {
            file,
            keys,
            signature,
        } => sign::verify(&file, signature.as_deref(), &keys),
        Command::Token {
            command: args::TokenCommand::New { file, force },
        } => token::new(&file, force),
        Command::Cluster {
            command: args::ClusterCommand::Ca { name, out, days },
        } => commands::cluster_ca(&name, &out, days),
        Command::Cluster {
            command:
                args::ClusterCommand::Cert {
                    node,
                    ca_dir,
                    addresses,
                    out,
                    days,
                },
        } => commands::cluster_cert(&node, &ca_dir, &addresses, &out, days),
        Command::Cluster { command } => commands::cluster(&client(), command).await,
        Command::Shim { .. } => Ok(()),
    }
}
